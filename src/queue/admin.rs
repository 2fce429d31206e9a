//! Queue operations for administrators (`passerelle queue …`), like Postfix's postqueue and
//! postsuper. They act on the store, so they work against running nodes: the schedulers see
//! the change at their next look. Every action is an event.

use super::RecipientStatus;
use crate::store::events::{EventKind, Recorder};
use crate::store::{Store, now_ms};
use anyhow::Result;
use serde::Serialize;
use serde_json::json;
use sqlx::Row;

/// Which recipients a command applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub message_ids: Vec<String>,
    /// Statuses; empty means the ones still in the queue (queued, deferred, held, quarantined).
    pub statuses: Vec<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    pub domain: Option<String>,
}

/// One recipient line of `queue list`.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub message_id: String,
    pub received_at: i64,
    pub direction: String,
    pub sender: String,
    pub size: i64,
    pub recipient: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_reply: Option<String>,
    /// A delegation copy: the recipient whose copy this is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
}

/// An administrator's action on recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Due now (deferred and queued recipients).
    Retry,
    /// Kept in the queue, not delivered, until released.
    Hold,
    /// Held → due now.
    Release,
    /// Failed now; the sender gets a notice.
    Bounce,
    /// Removed from the queue without a notice (the events stay).
    Delete,
}

impl Action {
    /// The statuses an action applies to, and the status it sets.
    fn transition(self) -> (&'static [&'static str], RecipientStatus) {
        use RecipientStatus::*;
        match self {
            Action::Retry => (&["deferred"], Deferred),
            Action::Hold => (&["queued", "deferred"], Held),
            Action::Release => (&["held", "quarantined"], Deferred),
            Action::Bounce => (&["queued", "deferred", "held", "quarantined"], Failed),
            Action::Delete => (&["queued", "deferred", "held", "quarantined"], Deleted),
        }
    }

    fn event(self) -> EventKind {
        match self {
            Action::Retry => EventKind::AdminRetry,
            Action::Hold => EventKind::Held,
            Action::Release => EventKind::Released,
            Action::Bounce => EventKind::Failed,
            Action::Delete => EventKind::Deleted,
        }
    }
}

const PENDING: [&str; 4] = ["queued", "deferred", "held", "quarantined"];

impl Store {
    pub async fn list(&self, f: &Filter) -> Result<Vec<Entry>> {
        let statuses: Vec<String> = if f.statuses.is_empty() {
            PENDING.iter().map(|s| s.to_string()).collect()
        } else {
            f.statuses.clone()
        };
        // Filters are bound, never spliced: only placeholders are built here.
        let mut sql = String::from(
            "SELECT r.message_id, m.received_at, m.direction, m.sender, m.size, r.address, \
             r.status, r.attempts, r.next_attempt_at, r.last_reply, r.copy_of \
             FROM recipients r JOIN messages m ON m.id = r.message_id WHERE 1 = 1",
        );
        let mut binds: Vec<String> = Vec::new();
        let placeholders = |values: &[String], binds: &mut Vec<String>| {
            let marks: Vec<String> = values
                .iter()
                .map(|v| {
                    binds.push(v.clone());
                    format!("${}", binds.len())
                })
                .collect();
            marks.join(", ")
        };
        sql.push_str(&format!(
            " AND r.status IN ({})",
            placeholders(&statuses, &mut binds)
        ));
        if !f.message_ids.is_empty() {
            let marks = placeholders(&f.message_ids, &mut binds);
            sql.push_str(&format!(" AND r.message_id IN ({marks})"));
        }
        if let Some(s) = &f.sender {
            binds.push(s.to_lowercase());
            sql.push_str(&format!(" AND LOWER(m.sender) = ${}", binds.len()));
        }
        if let Some(r) = &f.recipient {
            binds.push(r.to_lowercase());
            sql.push_str(&format!(" AND LOWER(r.address) = ${}", binds.len()));
        }
        if let Some(d) = &f.domain {
            binds.push(d.to_lowercase());
            sql.push_str(&format!(" AND r.domain = ${}", binds.len()));
        }
        sql.push_str(" ORDER BY m.received_at, r.message_id, r.id");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(Entry {
                    message_id: r.try_get("message_id")?,
                    received_at: r.try_get("received_at")?,
                    direction: r.try_get("direction")?,
                    sender: r.try_get("sender")?,
                    size: r.try_get("size")?,
                    recipient: r.try_get("address")?,
                    status: r.try_get("status")?,
                    attempts: r.try_get("attempts")?,
                    next_attempt_at: r.try_get("next_attempt_at")?,
                    last_reply: r.try_get("last_reply")?,
                    copy_of: r.try_get("copy_of")?,
                })
            })
            .collect()
    }

    /// Applies `action` to the recipients `f` selects (among those it applies to), one event
    /// each, in one transaction. Returns the recipients changed.
    pub async fn apply(
        &self,
        rec: &Recorder,
        action: Action,
        f: &Filter,
        by: &str,
    ) -> Result<Vec<Entry>> {
        let (from, to) = action.transition();
        let mut f = f.clone();
        f.statuses = from.iter().map(|s| s.to_string()).collect();
        let targets = self.list(&f).await?;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        for t in &targets {
            let reply = match action {
                Action::Bounce => Some(format!(
                    "5.0.0 returned to the sender by the administrator ({by})"
                )),
                Action::Delete => Some(format!("deleted by the administrator ({by})")),
                _ => t.last_reply.clone(),
            };
            sqlx::query(
                "UPDATE recipients SET status = $1, next_attempt_at = $2, last_reply = $3, \
                 lease_owner = NULL, lease_until = NULL, updated_at = $2 \
                 WHERE message_id = $4 AND address = $5 AND status = $6",
            )
            .bind(to.as_str())
            .bind(now)
            .bind(&reply)
            .bind(&t.message_id)
            .bind(&t.recipient)
            .bind(&t.status)
            .execute(&mut **tx)
            .await?;
            let detail = json!({ "by": by, "admin": true, "reply": reply });
            rec.record(
                &mut tx,
                &t.message_id,
                Some(&t.recipient),
                action.event(),
                detail,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(targets)
    }
}
