//! The queue's SQL: enqueue in one transaction, claim due recipients with a lease, record the
//! outcome of each attempt with its events, release leases at shutdown.

use super::RecipientStatus;
use super::group::Work;
use super::rows::Rows;
use crate::store::events::{EventKind, Recorder};
use crate::store::{Backend, Store};
use anyhow::Result;
use serde_json::Value;
use sqlx::Row;

/// A message ready to be queued.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub direction: &'static str,
    pub sender: String,
    /// The message as it will be delivered, our `Received:` header first.
    pub body: Vec<u8>,
    /// Addresses with the domain lower-cased.
    pub rcpts: Vec<String>,
    /// Delegation copies: more recipients, each naming whose copy it is (`recipients.copy_of`).
    pub copies: Vec<crate::directory::Copy>,
    /// Inbound: `copies` are looked up as the message is committed, in one read for all the
    /// messages committed together (`expand`).
    pub delegations: bool,
    /// What the `received` event says (client, TLS, listener, …).
    pub detail: Value,
    /// Where the recipients start: queued, or quarantined / deleted by a policy verdict.
    pub status: RecipientStatus,
    /// The policy verdicts, one `verdict` event each.
    pub verdicts: Vec<Value>,
}

impl NewMessage {
    /// An inbound message from a@client.test to b@example.test, queued: for the tests that
    /// write to a store directly (unit and integration tests alike).
    #[doc(hidden)]
    pub fn sample(id: &str, body: Vec<u8>) -> NewMessage {
        NewMessage {
            id: id.into(),
            direction: "inbound",
            sender: "a@client.test".into(),
            body,
            rcpts: vec!["b@example.test".into()],
            copies: Vec::new(),
            delegations: false,
            detail: serde_json::json!({}),
            status: RecipientStatus::Queued,
            verdicts: Vec::new(),
        }
    }
}

/// A recipient this node now holds a lease on.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub message_id: String,
    pub address: String,
    pub domain: String,
    pub attempts: i64,
    /// The sender was already told this recipient is delayed.
    pub warned: bool,
}

/// The result of one attempt for one recipient.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub recipient: Claimed,
    pub status: RecipientStatus,
    /// For `Deferred`: when to try again (unix ms).
    pub next_attempt_at: i64,
    pub reply: String,
    /// The attempt event's detail: host, TLS version, cipher, …
    pub attempt: Value,
    /// This attempt's notice tells the sender the recipient is delayed.
    pub warned: bool,
}

/// A queued message's envelope and bytes, for delivery.
#[derive(Debug, Clone)]
pub struct Queued {
    pub sender: String,
    /// `inbound`, `outbound` or `notice`.
    pub direction: String,
    pub received_at: i64,
    pub body: Vec<u8>,
}

impl Store {
    /// Writes `rows` in a transaction of their own, queued recipients leased to this node's
    /// scheduler when it takes them (`handoff.rs`); returns those, for `handoff.push`.
    async fn write_rows(&self, mut rows: Rows<'_>) -> Result<Vec<Claimed>> {
        rows.lease = self.handoff.lease(crate::store::now_ms());
        let mut tx = self.begin_write().await?;
        let leased = rows.write(self.backend, &mut tx).await?;
        tx.commit().await?;
        Ok(leased)
    }

    /// Queues an accepted message (and the notice about it), committed together with the other
    /// writes waiting at that moment (`group.rs`). When this returns Ok, it is on disk and the
    /// client may be told `250`.
    pub async fn accept(
        &self,
        rec: &Recorder,
        message: NewMessage,
        notice: Option<NewMessage>,
        now: i64,
    ) -> Result<()> {
        self.grouped(rec, Work::Accept { message, notice }, now)
            .await
    }

    /// Fills in the delegation copies of the messages that ask for them (`delegations`), with
    /// one read for all, and lists them in their `received` event. Delegations are read when
    /// the message is committed, so a change applies to the next message.
    pub(super) async fn expand<'m>(
        &self,
        messages: impl IntoIterator<Item = &'m mut NewMessage>,
    ) -> Result<()> {
        let mut messages: Vec<&mut NewMessage> =
            messages.into_iter().filter(|m| m.delegations).collect();
        let mut addresses: Vec<String> = messages
            .iter()
            .flat_map(|m| m.rcpts.iter().map(|r| crate::directory::normalise(r)))
            .collect();
        if addresses.is_empty() {
            return Ok(());
        }
        addresses.sort();
        addresses.dedup();
        let pairs = self.delegations_of(&addresses).await?;
        for m in &mut messages {
            m.copies = crate::directory::copies_from(&m.rcpts, &pairs);
            if !m.copies.is_empty() {
                m.detail["copies"] = serde_json::json!(m.copies);
            }
        }
        Ok(())
    }

    /// Hands `work` to the group committer and waits for the commit that holds it.
    async fn grouped(&self, rec: &Recorder, work: Work, now: i64) -> Result<()> {
        let group = self.group.get_or_init(|| {
            let mut alone = self.clone();
            alone.group = Default::default();
            super::group::start(alone)
        });
        let stopped = || anyhow::anyhow!("the group committer has stopped");
        let (done, result) = tokio::sync::oneshot::channel();
        let job = super::group::Job {
            rec: rec.clone(),
            work,
            now,
            done,
        };
        group.send(job).await.map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }

    /// A message refused at the end of DATA: nothing is kept but its events (the client was told
    /// why, so its sender hears of it from its own server).
    pub async fn record_refusal(
        &self,
        rec: &Recorder,
        id: &str,
        detail: Value,
        verdicts: &[Value],
        _now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for v in verdicts {
            rec.record(&mut tx, id, None, EventKind::Verdict, v.clone())
                .await?;
        }
        rec.record(&mut tx, id, None, EventKind::Refused, detail)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` due recipients for `owner` until `now + lease_ms`. A lease that ran
    /// out (its node died) makes the recipient claimable again. PostgreSQL skips rows another
    /// node is claiming at the same moment, so no two nodes get the same recipient.
    /// Domains in `busy` (at their concurrency limit on this node) are left for later.
    pub async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
        busy: &[String],
    ) -> Result<Vec<Claimed>> {
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let skip = if busy.is_empty() {
            String::new()
        } else {
            let marks: Vec<String> = (0..busy.len()).map(|i| format!("${}", i + 5)).collect();
            format!("AND domain NOT IN ({})", marks.join(", "))
        };
        let sql = format!(
            "UPDATE recipients SET lease_owner = $1, lease_until = $2 WHERE id IN ( \
               SELECT id FROM recipients \
               WHERE status IN ('queued', 'deferred') AND next_attempt_at <= $3 \
                 AND (lease_until IS NULL OR lease_until < $3) {skip} \
               ORDER BY next_attempt_at, id LIMIT $4 {lock}) \
             RETURNING id, message_id, address, domain, attempts, warned"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit);
        for d in busy {
            query = query.bind(d);
        }
        let _turn = self.turn().await;
        let rows = query.fetch_all(&self.leases).await?;
        rows.iter()
            .map(|r| {
                Ok(Claimed {
                    id: r.try_get("id")?,
                    message_id: r.try_get("message_id")?,
                    address: r.try_get("address")?,
                    domain: r.try_get("domain")?,
                    attempts: r.try_get("attempts")?,
                    warned: r.try_get::<i64, _>("warned")? != 0,
                })
            })
            .collect()
    }

    /// The earliest time a recipient becomes due, to know how long the scheduler may sleep.
    pub async fn next_due(&self) -> Result<Option<i64>> {
        // Three small reads, each served by an index, rather than one MIN over the whole queue
        // (a million deferred recipients made that a 170 ms scan at every idle turn).
        let mut due: Option<i64> = None;
        for status in ["queued", "deferred"] {
            let first = sqlx::query(
                "SELECT next_attempt_at FROM recipients WHERE status = $1 \
                 AND lease_until IS NULL ORDER BY next_attempt_at LIMIT 1",
            )
            .bind(status)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(r) = first {
                let at: i64 = r.try_get("next_attempt_at")?;
                due = Some(due.map_or(at, |d| d.min(at)));
            }
        }
        // Leased ones are due again when their lease runs out (a node that died), if later.
        // Few rows, through the partial index on leases. SQLite has to be told: left alone it
        // picks an index on `status` and reads every pending recipient (98 ms at 1,000,000).
        let from = match self.backend {
            Backend::Sqlite => "recipients INDEXED BY recipients_leased",
            Backend::Postgres => "recipients",
        };
        let leased = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT MIN(CASE WHEN lease_until > next_attempt_at THEN lease_until \
                        ELSE next_attempt_at END) AS due \
             FROM {from} WHERE lease_until IS NOT NULL AND status IN ('queued', 'deferred')"
        )))
        .fetch_one(&self.pool)
        .await?;
        if let Some(at) = leased.try_get::<Option<i64>, _>("due")? {
            due = Some(due.map_or(at, |d| d.min(at)));
        }
        Ok(due)
    }

    pub async fn queued(&self, message_id: &str) -> Result<Option<Queued>> {
        if let Some(q) = self.recent.get(message_id) {
            return Ok(Some(q));
        }
        let row =
            sqlx::query("SELECT sender, direction, received_at, body FROM messages WHERE id = $1")
                .bind(message_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(Queued {
                sender: r.try_get("sender")?,
                direction: r.try_get("direction")?,
                received_at: r.try_get("received_at")?,
                body: r.try_get::<Option<Vec<u8>>, _>("body")?.unwrap_or_default(),
            })
        })
        .transpose()
    }

    /// Records the outcomes of one attempt: each recipient's new state and its events, and the
    /// notice to the sender if there is one, in one transaction with the other writes waiting
    /// (`group.rs`); gives up the lease.
    pub async fn finish(
        &self,
        rec: &Recorder,
        outcomes: Vec<Outcome>,
        notice: Option<NewMessage>,
        now: i64,
    ) -> Result<()> {
        self.grouped(rec, Work::Finish { outcomes, notice }, now)
            .await
    }

    /// Keeps the lease on recipients still being delivered (a long transfer outlives a lease).
    pub async fn extend_lease(&self, owner: &str, ids: &[i64], until: i64) -> Result<()> {
        self.update_leases(owner, Some(until), ids).await
    }

    /// Gives back the leases on these recipients (claimed, but not started: no free slot).
    pub async fn release_ids(&self, owner: &str, ids: &[i64]) -> Result<()> {
        self.update_leases(owner, None, ids).await
    }

    /// Extends the leases until `until`, or gives them back. One statement per few hundred
    /// recipients, not one per recipient: the scheduler gives back most of a claim when its
    /// destinations are busy.
    async fn update_leases(&self, owner: &str, until: Option<i64>, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let b = self.backend;
        let (set, first) = match until {
            Some(_) => (format!("lease_until = {}", b.marks(1, 1)), 2),
            None => ("lease_owner = NULL, lease_until = NULL".to_string(), 1),
        };
        let _turn = self.turn().await;
        for chunk in ids.chunks(500) {
            // Built from constants and placeholders only, bound in the order of the text.
            let sql = format!(
                "UPDATE recipients SET {set} WHERE lease_owner = {} AND id IN ({})",
                b.marks(first, 1),
                b.marks(first + 1, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            if let Some(u) = until {
                q = q.bind(u);
            }
            q = q.bind(owner);
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&self.leases).await?;
        }
        Ok(())
    }

    /// Gives back every lease `owner` holds, so the recipients are due again at once (graceful
    /// shutdown, and start-up after a crash of this same node).
    pub async fn release(&self, owner: &str) -> Result<u64> {
        let _turn = self.turn().await;
        let done = sqlx::query(
            "UPDATE recipients SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1 AND status IN ('queued', 'deferred')",
        )
        .bind(owner)
        .execute(&self.leases)
        .await?;
        Ok(done.rows_affected())
    }
}

impl Store {
    /// Queues a notice about `original` on its own (an administrator's bounce).
    pub async fn enqueue_notice(
        &self,
        rec: &Recorder,
        original: &str,
        notice: &NewMessage,
        now: i64,
    ) -> Result<()> {
        let mut rows = Rows::default();
        rows.notice(rec, original, notice, now);
        self.handoff.push(self.write_rows(rows).await?);
        Ok(())
    }
}
