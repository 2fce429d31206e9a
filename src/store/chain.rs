//! Tamper-evident events: each node's events form a hash chain.
//!
//! Events are written inside the transactions they record (the `250` waits for that commit), so
//! chaining them there would serialise every commit of a node behind one lock. Instead a sealer
//! gives the node's new events, in the order it finds them committed, the next sequence numbers
//! and a SHA-256 over the previous event's hash and the row's content. A changed row no longer
//! matches its hash, a deleted row leaves a gap in the sequence, a reordered row breaks the link
//! to its predecessor. An event is open to an undetected edit only until it is sealed (the daemon
//! seals every second); cutting off the newest events is caught by comparing the chain's head,
//! which the daemon logs at every seal, with what `events verify` reports.

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

/// The hash of one event: every stored field, each length-prefixed so that no two rows can
/// encode alike, after the previous event's hash and this event's place in the chain.
fn hash(prev: &str, seq: i64, r: &AnyRow) -> Result<String> {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(prev.as_bytes());
    field(&seq.to_le_bytes());
    field(&r.try_get::<i64, _>("id")?.to_le_bytes());
    field(r.try_get::<String, _>("message_id")?.as_bytes());
    match r.try_get::<Option<String>, _>("recipient")? {
        Some(rcpt) => {
            field(b"1");
            field(rcpt.as_bytes());
        }
        None => field(b"0"),
    }
    field(&r.try_get::<i64, _>("at")?.to_le_bytes());
    field(r.try_get::<String, _>("node")?.as_bytes());
    field(r.try_get::<String, _>("kind")?.as_bytes());
    field(r.try_get::<String, _>("detail")?.as_bytes());
    field(r.try_get::<String, _>("config_hash")?.as_bytes());
    Ok(hex::encode(h.finalize()))
}

impl Store {
    /// Seals `node`'s unsealed events, oldest row first. Returns the new head when anything was
    /// sealed. Two sealers of one node (the daemon and a CLI command) cannot both win: the
    /// second one's sequence numbers collide on the unique index and its transaction fails.
    pub async fn seal(&self, node: &str) -> Result<Option<Head>> {
        let mut sealed = None;
        loop {
            // Read and hashed beside the writers, in a snapshot of its own; only the UPDATE
            // takes the writers' turn (it held back every commit for the whole read, 4 ms a
            // second under load).
            let mut read = self.pool.begin().await?;
            let (mut seq, mut prev) = head(&mut read, node).await?;
            // Built from constants only.
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM events WHERE node = $1 AND seq IS NULL ORDER BY id LIMIT $2"
            )))
            .bind(node)
            .bind(BATCH)
            .fetch_all(&mut *read)
            .await?;
            read.rollback().await?;
            if rows.is_empty() {
                return Ok(sealed);
            }
            let start = (seq, prev.clone());
            // One UPDATE for the whole batch (each statement is a round trip to the store's
            // thread; one per event cost more than the events themselves).
            let mut sealed_rows = Vec::with_capacity(rows.len());
            for r in &rows {
                seq += 1;
                let h = hash(&prev, seq, r)?;
                sealed_rows.push((r.try_get::<i64, _>("id")?, seq, prev, h.clone()));
                prev = h;
            }
            // Unsynced: a seal lost in a crash leaves its events unsealed, and sealing them again
            // gives the same chain (the same events after the same durable head, in id order).
            let mut tx = self.begin_unsynced_write().await?;
            if head(&mut tx, node).await? != start {
                anyhow::bail!("another sealer of node {node} sealed events meanwhile");
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
            sealed = Some(Head { seq, hash: prev });
            if (rows.len() as i64) < BATCH {
                return Ok(sealed);
            }
        }
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
                } else if hash(&prev, seq, r)? != stored {
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
    use crate::store::events::EventKind;

    /// Two sealers of one node at once (a daemon and `passerelle events seal`): whichever loses
    /// a race stops with an error, and the chain they leave holds every event once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_sealers_at_once_leave_one_chain() {
        let (_dir, store, rec) = crate::store::scratch().await;
        for i in 0..1_200 {
            let detail = serde_json::json!({ "i": i });
            store
                .record(&rec, &format!("m{i}"), EventKind::Received, detail)
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
