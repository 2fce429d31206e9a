//! The rows that queue writes add — messages, recipients, outcomes, events — gathered first and
//! then written with a few multi-row statements. On SQLite every statement is a round trip to
//! sqlx's worker thread (two thread wake-ups), and one accepted and delivered message used to
//! cost a dozen of them; a group of writes now costs four or five in all (`group.rs`). Events
//! keep the order in which they were added: their ids, and so `trace`, follow it.

use super::RecipientStatus;
use super::handoff::Lease;
use super::store::{Claimed, NewMessage, Outcome};
use crate::store::chain::{Chain, Fields};
use crate::store::events::{EventKind, Recorder};
use crate::store::{Backend, now_ms};
use anyhow::Result;
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

/// Rows per statement at most: well under SQLite's 32,766 and PostgreSQL's 65,535 parameters.
const CHUNK: usize = 400;

struct Event<'a> {
    rec: &'a Recorder,
    message_id: &'a str,
    recipient: Option<&'a str>,
    kind: EventKind,
    detail: String,
}

struct Recipient<'a> {
    now: i64,
    message_id: &'a str,
    address: &'a str,
    status: &'static str,
    copy_of: Option<&'a str>,
}

#[derive(Default)]
pub(super) struct Rows<'a> {
    /// Written on the queued recipients, which are then handed to this node's scheduler.
    pub(super) lease: Option<Lease>,
    messages: Vec<(&'a Recorder, &'a NewMessage, i64)>,
    recipients: Vec<Recipient<'a>>,
    outcomes: Vec<(&'a Outcome, i64)>,
    events: Vec<Event<'a>>,
}

impl Event<'_> {
    fn fields(&self, at: i64) -> Fields<'_> {
        Fields {
            id: 0,
            message_id: self.message_id,
            recipient: self.recipient,
            at,
            node: &self.rec.node,
            kind: self.kind.as_str(),
            detail: &self.detail,
            config_hash: &self.rec.config_hash,
        }
    }
}

impl<'a> Rows<'a> {
    fn event(
        &mut self,
        rec: &'a Recorder,
        message_id: &'a str,
        recipient: Option<&'a str>,
        kind: EventKind,
        detail: String,
    ) {
        self.events.push(Event {
            rec,
            message_id,
            recipient,
            kind,
            detail,
        });
    }

    /// A message, its recipients, its `received` event and its verdicts.
    pub(super) fn message(&mut self, rec: &'a Recorder, m: &'a NewMessage, now: i64) {
        self.messages.push((rec, m, now));
        let status = m.status.as_str();
        for address in &m.rcpts {
            self.recipients.push(Recipient {
                now,
                message_id: &m.id,
                address,
                status,
                copy_of: None,
            });
        }
        for c in &m.copies {
            self.recipients.push(Recipient {
                now,
                message_id: &m.id,
                address: &c.delegate,
                status,
                copy_of: Some(&c.copy_of),
            });
        }
        self.event(rec, &m.id, None, EventKind::Received, m.detail.to_string());
        for v in &m.verdicts {
            self.event(rec, &m.id, None, EventKind::Verdict, v.to_string());
        }
    }

    /// A notice to the sender of `original`, and the event on `original` that says so.
    pub(super) fn notice(
        &mut self,
        rec: &'a Recorder,
        original: &'a str,
        n: &'a NewMessage,
        now: i64,
    ) {
        self.message(rec, n, now);
        let detail = json!({ "notice_id": n.id, "to": n.rcpts, "kind": n.detail["notice"] });
        self.event(rec, original, None, EventKind::Notice, detail.to_string());
    }

    /// A message accepted, and the notice about it if any.
    pub(super) fn accept(
        &mut self,
        rec: &'a Recorder,
        m: &'a NewMessage,
        notice: Option<&'a NewMessage>,
        now: i64,
    ) {
        self.message(rec, m, now);
        if let Some(n) = notice {
            self.notice(rec, &m.id, n, now);
        }
    }

    /// A delivery attempt's outcomes (new states, `attempt` and result events) and its notice.
    pub(super) fn finish(
        &mut self,
        rec: &'a Recorder,
        outcomes: &'a [Outcome],
        notice: Option<&'a NewMessage>,
        now: i64,
    ) {
        if let (Some(n), Some(o)) = (notice, outcomes.first()) {
            self.notice(rec, &o.recipient.message_id, n, now);
        }
        for o in outcomes {
            let r = &o.recipient;
            self.outcomes.push((o, now));
            let who = Some(r.address.as_str());
            self.event(
                rec,
                &r.message_id,
                who,
                EventKind::Attempt,
                o.attempt.to_string(),
            );
            let kind = match o.status {
                RecipientStatus::Delivered => EventKind::Delivered,
                RecipientStatus::Failed => EventKind::Failed,
                _ => EventKind::Deferred,
            };
            let mut detail = json!({ "reply": o.reply, "attempts": r.attempts + 1 });
            if o.status == RecipientStatus::Deferred {
                detail["next_attempt_at"] = json!(o.next_attempt_at);
            }
            self.event(rec, &r.message_id, who, kind, detail.to_string());
        }
    }

    /// Writes every row inside the caller's transaction: messages first (recipients refer to
    /// them), then recipients, outcomes and events. Returns the recipients written with
    /// `lease`, for the scheduler once the transaction is committed.
    pub(super) async fn write(
        &self,
        b: Backend,
        tx: &mut Transaction<'_, Any>,
    ) -> Result<Vec<Claimed>> {
        let mut batch = Batch::default();
        for chunk in self.messages.chunks(CHUNK) {
            let slots = slots(b, chunk.len());
            let sql = insert(
                b,
                "messages (id, direction, sender, size, body, received_at, node, config_hash)",
                8,
                slots,
            );
            let mut args = Vec::with_capacity(slots * 8);
            for (rec, m, now) in chunk {
                args.extend([
                    Arg::Text(&m.id),
                    Arg::Text(m.direction),
                    Arg::Text(&m.sender),
                    Arg::Int(m.body.len() as i64),
                    Arg::Bytes(&m.body),
                    Arg::Int(*now),
                    Arg::Text(&rec.node),
                    Arg::Text(&rec.config_hash),
                ]);
            }
            pad(&mut args, slots * 8);
            batch.push(sql, args);
        }
        for chunk in self.recipients.chunks(CHUNK) {
            let slots = slots(b, chunk.len());
            let mut sql = insert(
                b,
                "recipients (message_id, address, domain, status, attempts, next_attempt_at, \
                 updated_at, copy_of, lease_owner, lease_until)",
                10,
                slots,
            );
            if self.lease.is_some() {
                sql.push_str(" RETURNING id, message_id, address, domain, lease_owner");
            }
            let mut args = Vec::with_capacity(slots * 10);
            for r in chunk {
                let domain = r.address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                let lease = self
                    .lease
                    .as_ref()
                    .filter(|_| r.status == RecipientStatus::Queued.as_str());
                args.extend([
                    Arg::Text(r.message_id),
                    Arg::Text(r.address),
                    Arg::Text(domain),
                    Arg::Text(r.status),
                    Arg::Int(0),
                    Arg::Int(r.now),
                    Arg::Int(r.now),
                    Arg::MaybeText(r.copy_of),
                    Arg::MaybeText(lease.map(|l| l.owner.as_str())),
                    Arg::MaybeInt(lease.map(|l| l.until)),
                ]);
            }
            pad(&mut args, slots * 10);
            batch.push(sql, args);
        }
        for chunk in self.outcomes.chunks(CHUNK) {
            let slots = slots(b, chunk.len());
            // One UPDATE for many recipients, each with its own values; both SQLite (3.33+) and
            // PostgreSQL take UPDATE … FROM.
            let sql = format!(
                "WITH v (id, status, next_attempt_at, last_reply, warned, updated_at) AS ({}) \
                 UPDATE recipients SET status = v.status, attempts = attempts + 1, \
                 next_attempt_at = v.next_attempt_at, last_reply = v.last_reply, \
                 lease_owner = NULL, lease_until = NULL, updated_at = v.updated_at, \
                 warned = v.warned FROM v WHERE recipients.id = v.id",
                b.values(6, slots, 1)
            );
            let mut args = Vec::with_capacity(slots * 6);
            for (o, now) in chunk {
                args.extend([
                    Arg::Int(o.recipient.id),
                    Arg::Text(o.status.as_str()),
                    Arg::Int(o.next_attempt_at),
                    Arg::Text(&o.reply),
                    Arg::Int(i64::from(o.recipient.warned || o.warned)),
                    Arg::Int(*now),
                ]);
            }
            // A padded row's id is NULL, which no recipient has.
            pad(&mut args, slots * 6);
            batch.push(sql, args);
        }
        let at = now_ms();
        // Each event is linked into its node's chain as it is written, unless the chain's lock
        // is taken (chain.rs).
        let nodes: Vec<&str> = self.events.iter().map(|e| e.rec.node.as_str()).collect();
        let chain = match nodes.is_empty() {
            true => None,
            false => Chain::load(tx, &nodes, self.events.len()).await?,
        };
        let links = match chain {
            Some(mut chain) => self
                .events
                .iter()
                .map(|e| chain.link(e.fields(at)))
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let width = if links.is_empty() { 7 } else { 11 };
        for (i, chunk) in self.events.chunks(CHUNK).enumerate() {
            let slots = slots(b, chunk.len());
            let columns = if links.is_empty() {
                "events (message_id, recipient, at, node, kind, detail, config_hash)"
            } else {
                "events (id, message_id, recipient, at, node, kind, detail, config_hash, seq, \
                 prev_hash, hash)"
            };
            let sql = insert(b, columns, width, slots);
            let mut args = Vec::with_capacity(slots * width);
            for (j, e) in chunk.iter().enumerate() {
                let link = links.get(i * CHUNK + j);
                if let Some(l) = link {
                    args.push(Arg::Int(l.id));
                }
                args.extend([
                    Arg::Text(e.message_id),
                    Arg::MaybeText(e.recipient),
                    Arg::Int(at),
                    Arg::Text(&e.rec.node),
                    Arg::Text(e.kind.as_str()),
                    Arg::Text(&e.detail),
                    Arg::Text(&e.rec.config_hash),
                ]);
                if let Some(l) = link {
                    args.extend([Arg::Int(l.seq), Arg::Text(&l.prev_hash), Arg::Text(&l.hash)]);
                }
            }
            pad(&mut args, slots * width);
            batch.push(sql, args);
        }
        let rows = batch.execute(b, tx).await?;
        leased(&rows)
    }
}

/// The recipients a write returned that carry a lease.
fn leased(rows: &[AnyRow]) -> Result<Vec<Claimed>> {
    let mut claimed = Vec::new();
    for r in rows {
        if r.try_get::<Option<String>, _>("lease_owner")?.is_some() {
            claimed.push(Claimed {
                id: r.try_get("id")?,
                message_id: r.try_get("message_id")?,
                address: r.try_get("address")?,
                domain: r.try_get("domain")?,
                attempts: 0,
                warned: false,
            });
        }
    }
    Ok(claimed)
}

/// A value bound to a statement of the batch.
enum Arg<'a> {
    Text(&'a str),
    MaybeText(Option<&'a str>),
    Int(i64),
    MaybeInt(Option<i64>),
    Bytes(&'a [u8]),
}

/// The statements of one write. On SQLite they go to sqlx's worker thread as one query — sqlx
/// runs the statements of a query in turn, each with its share of the arguments — so a group
/// commit is three round trips to that thread (BEGIN, this, COMMIT) instead of six or more.
/// PostgreSQL prepares one statement per query: there they go one by one.
#[derive(Default)]
struct Batch<'a> {
    statements: Vec<(String, Vec<Arg<'a>>)>,
}

impl<'a> Batch<'a> {
    fn push(&mut self, sql: String, args: Vec<Arg<'a>>) {
        self.statements.push((sql, args));
    }

    /// Runs the statements; returns the rows they return (recipients' `RETURNING`).
    async fn execute(self, b: Backend, tx: &mut Transaction<'_, Any>) -> Result<Vec<AnyRow>> {
        let run = |sql: String, args: Vec<Arg<'a>>| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for a in args {
                q = match a {
                    Arg::Text(v) => q.bind(v),
                    Arg::MaybeText(v) => q.bind(v),
                    Arg::Int(v) => q.bind(v),
                    Arg::MaybeInt(v) => q.bind(v),
                    Arg::Bytes(v) => q.bind(v),
                };
            }
            q
        };
        match b {
            Backend::Sqlite if !self.statements.is_empty() => {
                let mut sql = String::new();
                let mut args = Vec::new();
                for (s, a) in self.statements {
                    sql.push_str(&s);
                    sql.push_str(";\n");
                    args.extend(a);
                }
                Ok(run(sql, args).fetch_all(&mut **tx).await?)
            }
            _ => {
                let mut rows = Vec::new();
                for (sql, args) in self.statements {
                    rows.extend(run(sql, args).fetch_all(&mut **tx).await?);
                }
                Ok(rows)
            }
        }
    }
}

/// The fewest rows a padded statement has room for.
const MIN_SLOTS: usize = 8;

/// Rows a statement has room for. On SQLite, a power of two and at least [`MIN_SLOTS`], the rest
/// filled by [`pad`]: a group commit's batch is one query text, and with exact row counts nearly
/// every commit had a new one, which sqlx prepared afresh (`sqlite3_prepare` was 4 % of the
/// daemon's CPU, with 80 texts for 141 commits). Padded, a few texts serve most commits and
/// stay prepared on the writing connection. PostgreSQL types a `VALUES` list from its
/// parameters, and NULLs there have none: it gets exact counts.
fn slots(b: Backend, rows: usize) -> usize {
    match b {
        Backend::Sqlite => rows.next_power_of_two().max(MIN_SLOTS),
        Backend::Postgres => rows,
    }
}

/// Fills `args` up to `len` with NULLs: the padding rows, which the statements skip.
fn pad(args: &mut Vec<Arg<'_>>, len: usize) {
    args.resize_with(len, || Arg::MaybeText(None));
}

/// `INSERT INTO table (columns) VALUES (…), (…)` with `rows` tuples of `width` placeholders; on
/// SQLite, rows whose first value is NULL (the padding of [`slots`]) are left out. Every table
/// written here has a first column that is never NULL.
fn insert(b: Backend, table: &str, width: usize, rows: usize) -> String {
    match b {
        Backend::Sqlite => format!(
            "INSERT INTO {table} SELECT * FROM ({}) WHERE column1 IS NOT NULL",
            b.values(width, rows, 1)
        ),
        Backend::Postgres => format!("INSERT INTO {table} {}", b.values(width, rows, 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::store::Claimed;

    async fn commit(store: &crate::store::Store, rows: Rows<'_>) {
        let mut tx = store.begin_write().await.unwrap();
        rows.write(Backend::Sqlite, &mut tx).await.unwrap();
        tx.commit().await.unwrap();
    }

    async fn column<T>(store: &crate::store::Store, sql: &'static str) -> Vec<T>
    where
        T: for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any>,
    {
        let rows = sqlx::query(sql).fetch_all(&store.pool).await.unwrap();
        rows.iter().map(|r| r.get::<T, _>(0)).collect()
    }

    /// A batch of three rows per table takes a statement of eight on SQLite: only the three are
    /// written, events in the order added, and the outcomes change only their own recipients.
    #[tokio::test]
    async fn padded_statements_write_only_their_rows_in_order() {
        assert_eq!(
            [3, 8, 9, 400].map(|n| slots(Backend::Sqlite, n)),
            [8, 8, 16, 512]
        );
        assert_eq!(slots(Backend::Postgres, 3), 3);
        let (_dir, store, rec) = crate::store::scratch().await;
        let messages: Vec<NewMessage> = (0..3)
            .map(|i| NewMessage::sample(&format!("m{i}"), b"Subject: x\r\n\r\nhi\r\n".to_vec()))
            .collect();
        let mut rows = Rows::default();
        for m in &messages {
            rows.message(&rec, m, 5);
        }
        commit(&store, rows).await;
        let count = async |sql: &'static str| column::<i64>(&store, sql).await[0];
        assert_eq!(count("SELECT COUNT(*) FROM messages").await, 3);
        assert_eq!(count("SELECT COUNT(*) FROM recipients").await, 3);
        let order: Vec<String> = column(&store, "SELECT message_id FROM events ORDER BY id").await;
        assert_eq!(order, ["m0", "m1", "m2"]);

        // Outcomes for two of the three recipients.
        let ids: Vec<i64> = column(&store, "SELECT id FROM recipients ORDER BY id").await;
        let outcome = |id: i64| Outcome {
            recipient: Claimed {
                id,
                message_id: "m0".into(),
                address: "b@example.test".into(),
                domain: "example.test".into(),
                attempts: 0,
                warned: false,
            },
            status: RecipientStatus::Delivered,
            next_attempt_at: 0,
            reply: "250 ok".into(),
            attempt: json!({}),
            warned: false,
        };
        let outcomes: Vec<Outcome> = ids[..2].iter().map(|&id| outcome(id)).collect();
        let mut rows = Rows::default();
        rows.finish(&rec, &outcomes, None, 6);
        commit(&store, rows).await;
        assert_eq!(
            count("SELECT COUNT(*) FROM recipients WHERE status = 'delivered'").await,
            2
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM recipients WHERE status = 'queued' AND attempts = 0").await,
            1
        );
        // Two outcomes, two events each: 3 + 4.
        assert_eq!(count("SELECT COUNT(*) FROM events").await, 7);
        // Each linked into the node's chain as it was written, in order: no sealer ran.
        let c = &store.verify_events().await.unwrap()[0];
        assert!(c.broken.is_none(), "{c:?}");
        assert_eq!((c.sealed, c.unsealed), (7, 0));
        let seqs: Vec<i64> = column(&store, "SELECT seq FROM events ORDER BY id").await;
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);

        // 300 recipients take a statement of 512 rows: past SQLite's 500 terms of a compound
        // SELECT, which a multi-row VALUES is not held to.
        let mut wide = NewMessage::sample("wide", b"Subject: x\r\n\r\nhi\r\n".to_vec());
        wide.rcpts = (0..300).map(|i| format!("r{i}@example.test")).collect();
        let mut rows = Rows::default();
        rows.message(&rec, &wide, 7);
        commit(&store, rows).await;
        assert_eq!(
            count("SELECT COUNT(*) FROM recipients WHERE message_id = 'wide'").await,
            300
        );
    }
}
