//! The append-only event log: every step of every message, so that its fate can be traced.

use super::chain::{Chain, Fields};
use super::{Store, now_ms};
use anyhow::Result;
use serde_json::Value;
use sqlx::{Any, Row, Transaction};

/// What happened. The string forms are stable: they are stored and printed by `trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Accepted and queued (we said 250).
    Received,
    /// One delivery attempt to one recipient, with the remote reply and TLS facts.
    Attempt,
    Delivered,
    Deferred,
    /// Failed for good (5xx, the queue lifetime ran out, or bounced by an administrator).
    Failed,
    /// A policy stage's verdict on the message, with its reason and score rules.
    Verdict,
    /// Refused at the end of DATA by a policy verdict: the client got a 4xx/5xx, nothing kept.
    Refused,
    /// A delivery status notice about this message was queued for its sender.
    Notice,
    /// An administrator made the recipient due now.
    AdminRetry,
    Held,
    Released,
    /// Removed from the queue by an administrator, without a notice.
    Deleted,
    /// The body was purged after `store.retention`; the events stay.
    Purged,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Received => "received",
            EventKind::Attempt => "attempt",
            EventKind::Delivered => "delivered",
            EventKind::Deferred => "deferred",
            EventKind::Failed => "failed",
            EventKind::Verdict => "verdict",
            EventKind::Refused => "refused",
            EventKind::Notice => "notice",
            EventKind::AdminRetry => "retry",
            EventKind::Held => "held",
            EventKind::Released => "released",
            EventKind::Deleted => "deleted",
            EventKind::Purged => "purged",
        }
    }
}

/// One event as stored.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: i64,
    pub message_id: String,
    pub recipient: Option<String>,
    pub at: i64,
    pub node: String,
    pub kind: String,
    pub detail: Value,
}

/// Who writes events: the node name and the hash of its configuration go into every row.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub node: String,
    pub config_hash: String,
}

impl Recorder {
    /// Appends one event inside the caller's transaction, so it commits with what it records;
    /// linked into the node's chain as it is written (`chain.rs`).
    pub async fn record(
        &self,
        tx: &mut Transaction<'_, Any>,
        message_id: &str,
        recipient: Option<&str>,
        kind: EventKind,
        detail: Value,
    ) -> Result<()> {
        let (at, detail) = (now_ms(), detail.to_string());
        let link = match Chain::load(tx, &[&self.node], 1).await? {
            Some(mut chain) => Some(chain.link(Fields {
                id: 0,
                message_id,
                recipient,
                at,
                node: &self.node,
                kind: kind.as_str(),
                detail: &detail,
                config_hash: &self.config_hash,
            })?),
            None => None,
        };
        let sql = match link {
            Some(_) => {
                "INSERT INTO events (id, message_id, recipient, at, node, kind, detail, \
                 config_hash, seq, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            }
            None => {
                "INSERT INTO events (message_id, recipient, at, node, kind, detail, config_hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)"
            }
        };
        let mut q = sqlx::query(sql);
        if let Some(l) = &link {
            q = q.bind(l.id);
        }
        q = q
            .bind(message_id)
            .bind(recipient)
            .bind(at)
            .bind(&self.node)
            .bind(kind.as_str())
            .bind(&detail)
            .bind(&self.config_hash);
        if let Some(l) = &link {
            q = q.bind(l.seq).bind(&l.prev_hash).bind(&l.hash);
        }
        q.execute(&mut **tx).await?;
        Ok(())
    }
}

impl Store {
    /// Records one event on its own, in its own transaction.
    pub async fn record(
        &self,
        rec: &Recorder,
        message_id: &str,
        kind: EventKind,
        detail: Value,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        rec.record(&mut tx, message_id, None, kind, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A message's events in the order they were written.
    pub async fn trace(&self, message_id: &str) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT id, message_id, recipient, at, node, kind, detail FROM events \
             WHERE message_id = $1 ORDER BY id",
        )
        .bind(message_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get("detail")?;
                Ok(Event {
                    id: r.try_get("id")?,
                    message_id: r.try_get("message_id")?,
                    recipient: r.try_get("recipient")?,
                    at: r.try_get("at")?,
                    node: r.try_get("node")?,
                    kind: r.try_get("kind")?,
                    detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
                })
            })
            .collect()
    }
}
