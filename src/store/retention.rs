//! Retention: a message's body is kept `store.retention` after its last recipient reached a final
//! state (delivered, bounced, deleted), then purged; its events are kept for good, so its story
//! can still be traced. Quarantined and queued messages are never purged.

use super::Store;
use super::events::{EventKind, Recorder};
use anyhow::Result;
use serde::Serialize;
use serde_json::json;
use sqlx::Row;

/// Messages purged per transaction.
const BATCH: i64 = 500;

/// A message whose body may go.
#[derive(Debug, Clone, Serialize)]
pub struct Purgeable {
    pub message_id: String,
    pub direction: String,
    pub size: i64,
    /// Unix ms: when its last recipient reached its final state.
    pub final_at: i64,
}

impl Store {
    /// Messages whose every recipient has been final since before `before` (unix ms), body
    /// not purged yet, oldest first, at most `limit`.
    pub async fn purgeable(&self, before: i64, limit: i64) -> Result<Vec<Purgeable>> {
        let rows = sqlx::query(
            "SELECT m.id, m.direction, m.size, MAX(r.updated_at) AS final_at FROM messages m \
             JOIN recipients r ON r.message_id = m.id WHERE m.purged_at IS NULL \
             GROUP BY m.id, m.direction, m.size \
             HAVING SUM(CASE WHEN r.status IN ('delivered', 'failed', 'deleted') THEN 0 ELSE 1 END) = 0 \
             AND MAX(r.updated_at) < $1 ORDER BY final_at LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Purgeable {
                    message_id: r.try_get("id")?,
                    direction: r.try_get("direction")?,
                    size: r.try_get("size")?,
                    final_at: r.try_get("final_at")?,
                })
            })
            .collect()
    }

    /// Purges every body that is due (final before `before`), each with a `purged` event.
    /// Returns how many messages were purged.
    pub async fn purge(&self, rec: &Recorder, before: i64, now: i64) -> Result<u64> {
        let mut purged = 0;
        loop {
            let due = self.purgeable(before, BATCH).await?;
            let mut tx = self.begin_write().await?;
            for p in &due {
                // The state is checked again under the update: nothing was released meanwhile.
                let done = sqlx::query(
                    "UPDATE messages SET body = NULL, purged_at = $1 \
                     WHERE id = $2 AND purged_at IS NULL AND NOT EXISTS (SELECT 1 FROM recipients r \
                     WHERE r.message_id = messages.id \
                     AND r.status NOT IN ('delivered', 'failed', 'deleted'))",
                )
                .bind(now)
                .bind(&p.message_id)
                .execute(&mut **tx)
                .await?;
                if done.rows_affected() == 1 {
                    let detail = json!({ "size": p.size, "final_at": p.final_at });
                    rec.record(&mut tx, &p.message_id, None, EventKind::Purged, detail)
                        .await?;
                    purged += 1;
                }
            }
            tx.commit().await?;
            if (due.len() as i64) < BATCH {
                return Ok(purged);
            }
        }
    }
}
