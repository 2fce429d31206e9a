//! Tamper-evident events: each node's events form a hash chain.
//!
//! Each event gets its node's next sequence number and a SHA-256 over the previous event's hash
//! and the row's content. A changed row no longer matches its hash, a deleted row leaves a gap
//! in the sequence, a reordered row breaks the link to its predecessor. Cutting off the newest
//! events is caught by comparing the chain's head, which `events verify` reports, with a copy
//! kept elsewhere.
//!
//! An event is linked in the transaction that writes it ([`Chain`]), under a lock on its node's
//! chain: it is never open to an undetected edit, and no second write is needed. (Sealing
//! afterwards rewrote every event row a second after it was written: ≈ 9 % of the daemon's CPU
//! on SQLite, ≈ 10 % of ours and PostgreSQL's together there: bench/README.md.) On SQLite the
//! lock is the store's own write lock; on PostgreSQL an advisory lock per node, which a write
//! only tries to take, so that nothing ever waits for it while holding rows: an event written
//! while another transaction holds it, or by a version before this one, is written unlinked
//! and the sealer (every second in the daemon) gives it its link afterwards.

use super::Store;
use anyhow::Result;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

/// Events sealed per transaction.
const BATCH: i64 = 500;
/// Rows per UPDATE (4 parameters each).
const CHUNK: usize = 250;
/// Rows read per page when verifying.
const PAGE: i64 = 5_000;

/// The chain's last sealed event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

/// One node's chain, as `events verify` found it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeChain {
    pub node: String,
    /// Sealed events checked.
    pub sealed: i64,
    /// Events written but not sealed yet (the node is running, or stopped before sealing them).
    pub unsealed: i64,
    pub head: Option<Head>,
    /// The first event where the chain does not hold, and why.
    pub broken: Option<Break>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Break {
    /// The event's row id (`trace` shows it), and its place in the chain.
    pub event_id: i64,
    pub seq: i64,
    pub problem: String,
}

const COLUMNS: &str = "id, message_id, recipient, at, node, kind, detail, config_hash";

/// One event's stored fields, the ones its hash covers.
pub(crate) struct Fields<'a> {
    pub id: i64,
    pub message_id: &'a str,
    pub recipient: Option<&'a str>,
    pub at: i64,
    pub node: &'a str,
    pub kind: &'a str,
    pub detail: &'a str,
    pub config_hash: &'a str,
}

/// The hash of one event: every stored field, each length-prefixed so that no two rows can
/// encode alike, after the previous event's hash and this event's place in the chain.
fn hash(prev: &str, seq: i64, e: &Fields<'_>) -> String {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(prev.as_bytes());
    field(&seq.to_le_bytes());
    field(&e.id.to_le_bytes());
    field(e.message_id.as_bytes());
    match e.recipient {
        Some(rcpt) => {
            field(b"1");
            field(rcpt.as_bytes());
        }
        None => field(b"0"),
    }
    field(&e.at.to_le_bytes());
    field(e.node.as_bytes());
    field(e.kind.as_bytes());
    field(e.detail.as_bytes());
    field(e.config_hash.as_bytes());
    hex::encode(h.finalize())
}

/// [`hash`] over a row read back (`COLUMNS`).
fn hash_row(prev: &str, seq: i64, r: &AnyRow) -> Result<String> {
    let recipient: Option<String> = r.try_get("recipient")?;
    let (message_id, node, kind, detail, config_hash): (String, String, String, String, String) = (
        r.try_get("message_id")?,
        r.try_get("node")?,
        r.try_get("kind")?,
        r.try_get("detail")?,
        r.try_get("config_hash")?,
    );
    let fields = Fields {
        id: r.try_get("id")?,
        message_id: &message_id,
        recipient: recipient.as_deref(),
        at: r.try_get("at")?,
        node: &node,
        kind: &kind,
        detail: &detail,
        config_hash: &config_hash,
    };
    Ok(hash(prev, seq, &fields))
}

/// An event's place in its chain, made as it is written.
pub(crate) struct Link {
    pub id: i64,
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
}

/// The chains a write transaction extends: the ids its events get and each node's head, read
/// under the chain's lock ([`lock`]), so no other writer can come between. Ids are given
/// explicitly because the hash covers them.
pub(crate) struct Chain {
    ids: std::vec::IntoIter<i64>,
    heads: Vec<(String, i64, String)>,
}

/// PostgreSQL advisory locks are two 32-bit keys: this class, and the hash of the node's name.
const LOCK_CLASS: i32 = 0x7061_7373;

/// Takes the lock on `node`'s chain for the rest of the transaction; with `wait` false, only if
/// it is free at once. On SQLite the transaction holds the store's write lock already
/// ([`Store::begin_write`] begins `IMMEDIATE`).
async fn lock(conn: &mut sqlx::AnyConnection, node: &str, wait: bool) -> Result<bool> {
    if conn.backend_name() == "SQLite" {
        return Ok(true);
    }
    let sql = match wait {
        true => "SELECT pg_advisory_xact_lock($1, hashtext($2)) IS NOT NULL AS locked",
        false => "SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS locked",
    };
    let row = sqlx::query(sql)
        .bind(LOCK_CLASS)
        .bind(node)
        .fetch_one(conn)
        .await?;
    Ok(row.try_get("locked")?)
}

impl Chain {
    /// The chains of `nodes`, for `count` events; `None` when a chain's lock is taken (on
    /// PostgreSQL): the events are then written unlinked, for the sealer.
    pub(crate) async fn load(
        conn: &mut sqlx::AnyConnection,
        nodes: &[&str],
        count: usize,
    ) -> Result<Option<Chain>> {
        let mut heads: Vec<(String, i64, String)> = Vec::with_capacity(1);
        for node in nodes {
            if heads.iter().any(|(n, _, _)| n == node) {
                continue;
            }
            if !lock(conn, node, false).await? {
                return Ok(None);
            }
            let (seq, hash) = head(conn, node).await?;
            heads.push((node.to_string(), seq, hash));
        }
        let ids: Vec<i64> = if conn.backend_name() == "SQLite" {
            // AUTOINCREMENT keeps the highest id ever given in sqlite_sequence.
            let first: i64 = sqlx::query(
                "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0), \
                 COALESCE((SELECT MAX(id) FROM events), 0)) + 1 AS id",
            )
            .fetch_one(&mut *conn)
            .await?
            .try_get("id")?;
            (first..first + count as i64).collect()
        } else {
            // From the sequence, as unlinked events written meanwhile take theirs.
            let rows = sqlx::query(
                "SELECT nextval(pg_get_serial_sequence('events', 'id')) AS id \
                 FROM generate_series(1, $1)",
            )
            .bind(count as i64)
            .fetch_all(&mut *conn)
            .await?;
            let mut ids = rows
                .iter()
                .map(|r| r.try_get("id"))
                .collect::<Result<Vec<i64>, _>>()?;
            ids.sort_unstable();
            ids
        };
        Ok(Some(Chain {
            ids: ids.into_iter(),
            heads,
        }))
    }

    /// The link of the next event written (in this order, with the id given here). `e.id` is
    /// ignored; `e.node` must be one of the nodes loaded.
    pub(crate) fn link(&mut self, e: Fields<'_>) -> Result<Link> {
        let Some((_, seq, prev)) = self.heads.iter_mut().find(|(n, _, _)| n == e.node) else {
            anyhow::bail!("node {} was not loaded into the chain", e.node);
        };
        let Some(id) = self.ids.next() else {
            anyhow::bail!("more events linked than loaded for");
        };
        *seq += 1;
        let h = hash(prev, *seq, &Fields { id, ..e });
        let prev_hash = std::mem::replace(prev, h.clone());
        Ok(Link {
            id,
            seq: *seq,
            prev_hash,
            hash: h,
        })
    }
}

impl Store {
    /// Seals `node`'s unsealed events, oldest row first. Returns the new head when anything was
    /// sealed. Two sealers of one node (the daemon and a CLI command) take turns on the chain's
    /// lock; one of a version without it loses on the unique index and its transaction fails.
    pub async fn seal(&self, node: &str) -> Result<Option<Head>> {
        let mut sealed = None;
        loop {
            // Looked for beside the writers first: usually there is nothing to seal, and then
            // the writers' turn is not taken at all.
            let mut read = self.pool.acquire().await?;
            if unsealed(&mut read, node).await?.is_empty() {
                return Ok(sealed);
            }
            drop(read);
            // Unsynced: a seal lost in a crash leaves its events unsealed, and sealing them again
            // gives the same chain (the same events after the same durable head, in id order).
            // Read again under the chain's lock: events written meanwhile moved the head.
            let mut tx = self.begin_unsynced_write().await?;
            lock(&mut tx, node, true).await?;
            let rows = unsealed(&mut tx, node).await?;
            let (mut seq, mut prev) = head(&mut tx, node).await?;
            // One UPDATE per chunk (each statement is a round trip to the store; one per event
            // cost more than the events themselves).
            let mut sealed_rows = Vec::with_capacity(rows.len());
            for r in &rows {
                seq += 1;
                let h = hash_row(&prev, seq, r)?;
                sealed_rows.push((r.try_get::<i64, _>("id")?, seq, prev, h.clone()));
                prev = h;
            }
            for chunk in sealed_rows.chunks(CHUNK) {
                let sql = format!(
                    "WITH v (id, seq, prev_hash, hash) AS ({}) \
                     UPDATE events SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash \
                     FROM v WHERE events.id = v.id AND events.seq IS NULL",
                    self.backend.values(4, chunk.len(), 1)
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (id, seq, prev, hash) in chunk {
                    q = q.bind(id).bind(seq).bind(prev).bind(hash);
                }
                let done = q.execute(&mut **tx).await?;
                if done.rows_affected() != chunk.len() as u64 {
                    anyhow::bail!("another sealer of node {node} sealed some of these events");
                }
            }
            tx.commit().await?;
            if !sealed_rows.is_empty() {
                sealed = Some(Head { seq, hash: prev });
            }
            if (rows.len() as i64) < BATCH {
                return Ok(sealed);
            }
        }
    }

    /// The last linked event of `node`, if any.
    pub async fn chain_head(&self, node: &str) -> Result<Option<Head>> {
        let mut conn = self.pool.acquire().await?;
        let (seq, hash) = head(&mut conn, node).await?;
        Ok((seq > 0).then_some(Head { seq, hash }))
    }

    /// Checks every node's chain from its first event; names the first event that breaks it.
    pub async fn verify_events(&self) -> Result<Vec<NodeChain>> {
        let nodes = sqlx::query("SELECT DISTINCT node FROM events ORDER BY node")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for n in nodes {
            let node: String = n.try_get("node")?;
            out.push(self.verify_node(&node).await?);
        }
        Ok(out)
    }

    async fn verify_node(&self, node: &str) -> Result<NodeChain> {
        let unsealed: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM events WHERE node = $1 AND seq IS NULL")
                .bind(node)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
        let mut chain = NodeChain {
            node: node.to_owned(),
            sealed: 0,
            unsealed,
            head: None,
            broken: None,
        };
        let (mut expected, mut prev) = (1_i64, String::new());
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS}, seq, prev_hash, hash FROM events \
                 WHERE node = $1 AND seq >= $2 ORDER BY seq LIMIT $3"
            )))
            .bind(node)
            .bind(expected)
            .bind(PAGE)
            .fetch_all(&self.pool)
            .await?;
            for r in &rows {
                let seq: i64 = r.try_get("seq")?;
                let id: i64 = r.try_get("id")?;
                let stored: String = r.try_get::<Option<String>, _>("hash")?.unwrap_or_default();
                let stored_prev: String = r
                    .try_get::<Option<String>, _>("prev_hash")?
                    .unwrap_or_default();
                let problem = if seq != expected {
                    Some(format!(
                        "sequence jumps from {} to {seq}: events are missing",
                        expected - 1
                    ))
                } else if stored_prev != prev {
                    Some("does not follow the previous event (removed or reordered)".into())
                } else if hash_row(&prev, seq, r)? != stored {
                    Some("content does not match its hash (the row was changed)".into())
                } else {
                    None
                };
                if let Some(problem) = problem {
                    chain.broken = Some(Break {
                        event_id: id,
                        seq,
                        problem,
                    });
                    return Ok(chain);
                }
                chain.sealed += 1;
                chain.head = Some(Head {
                    seq,
                    hash: stored.clone(),
                });
                prev = stored;
                expected += 1;
            }
            if (rows.len() as i64) < PAGE {
                return Ok(chain);
            }
        }
    }
}

/// Up to [`BATCH`] events of `node` without a link, oldest first.
async fn unsealed(conn: &mut sqlx::AnyConnection, node: &str) -> Result<Vec<AnyRow>> {
    // Built from constants only.
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE node = $1 AND seq IS NULL ORDER BY id LIMIT $2"
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(node)
        .bind(BATCH)
        .fetch_all(conn)
        .await?)
}

/// The last sealed event of `node`: its sequence number and hash; (0, "") before the first.
async fn head(conn: &mut sqlx::AnyConnection, node: &str) -> Result<(i64, String)> {
    let last = sqlx::query(
        "SELECT seq, hash FROM events WHERE node = $1 AND seq IS NOT NULL \
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(node)
    .fetch_optional(conn)
    .await?;
    Ok(match last {
        Some(r) => (r.try_get("seq")?, r.try_get("hash")?),
        None => (0, String::new()),
    })
}

#[cfg(test)]
mod tests {

    /// Two sealers of one node at once (a daemon and `passerelle events seal`): whichever loses
    /// a race stops with an error, and the chain they leave holds every event once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_sealers_at_once_leave_one_chain() {
        let (_dir, store, _) = crate::store::scratch().await;
        // Written unlinked, as a version before links were made at write time left them.
        for i in 0..1_200 {
            sqlx::query(
                "INSERT INTO events (message_id, at, node, kind, detail, config_hash) \
                 VALUES ($1, 0, 'n', 'received', $2, 'h')",
            )
            .bind(format!("m{i}"))
            .bind(serde_json::json!({ "i": i }).to_string())
            .execute(&store.pool)
            .await
            .unwrap();
        }
        let (a, b) = tokio::join!(store.seal("n"), store.seal("n"));
        assert!(a.is_ok() || b.is_ok(), "{a:?} {b:?}");
        store.seal("n").await.unwrap();
        let chains = store.verify_events().await.unwrap();
        assert_eq!(chains.len(), 1);
        let c = &chains[0];
        assert!(c.broken.is_none(), "{:?}", c.broken);
        assert_eq!((c.sealed, c.unsealed), (1_200, 0));
    }
}
