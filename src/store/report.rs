//! Accounting: every accepted message is in exactly one place — delivered, bounced, deleted (and
//! why), quarantined, or still queued — and the store can prove it.
//!
//! A message's place follows from its recipients' states, in this order: any recipient still in
//! the queue (queued, deferred, held) makes it *queued*; else any in quarantine, *quarantined*;
//! else any failed, *bounced*; else any delivered, *delivered*; else (all deleted) *deleted*.
//! What cannot be placed, because the store contradicts itself, is *unaccounted* and listed by id:
//! a message without recipients or without its `received` event, a `received` event without its
//! message, a recipient in an unknown state, a delivered or bounced recipient without the event
//! that says so.

use super::Store;
use anyhow::Result;
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

/// One direction's figures: `accepted` is the sum of the rest.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Figures {
    pub accepted: i64,
    pub delivered: i64,
    pub bounced: i64,
    /// By reason: the deciding stage (`spam`, `virus`, `sender`, `limits`…) or `administrator`.
    pub deleted: BTreeMap<String, i64>,
    pub quarantined: i64,
    pub queued: i64,
}

impl Figures {
    pub fn placed(&self) -> i64 {
        self.delivered
            + self.bounced
            + self.deleted.values().sum::<i64>()
            + self.quarantined
            + self.queued
    }
}

/// A message the store cannot place, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unaccounted {
    pub message_id: String,
    pub problem: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Unix ms: only messages received since then (all when absent).
    pub since: Option<i64>,
    /// `inbound`, `outbound`, `notice` (the notices we wrote to senders).
    pub directions: BTreeMap<String, Figures>,
    /// Refused at the end of DATA: never accepted, so not in the figures (the client was told).
    pub refused: i64,
    pub unaccounted: Vec<Unaccounted>,
}

const QUEUED: &[&str] = &["queued", "deferred", "held"];
const KNOWN: &[&str] = &[
    "queued",
    "deferred",
    "held",
    "quarantined",
    "failed",
    "delivered",
    "deleted",
];

impl Store {
    /// Where every message received since `since` (unix ms) is now.
    pub async fn report(&self, since: Option<i64>) -> Result<Report> {
        let since_ms = since.unwrap_or(i64::MIN);
        let rows = sqlx::query(
            "SELECT m.id, m.direction, r.status, COUNT(r.id) AS n FROM messages m \
             LEFT JOIN recipients r ON r.message_id = m.id WHERE m.received_at >= $1 \
             GROUP BY m.id, m.direction, r.status",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut messages: HashMap<String, (String, Vec<String>)> = HashMap::new();
        for r in &rows {
            let id: String = r.try_get("id")?;
            let entry = messages
                .entry(id)
                .or_insert_with(|| (r.try_get("direction").unwrap_or_default(), Vec::new()));
            if let Some(status) = r.try_get::<Option<String>, _>("status")? {
                entry.1.push(status);
            }
        }

        let mut report = Report {
            since,
            unaccounted: self.unaccounted(since_ms).await?,
            ..Report::default()
        };
        let bad: std::collections::HashSet<&str> = report
            .unaccounted
            .iter()
            .map(|u| u.message_id.as_str())
            .collect();
        let mut deleted_ids = Vec::new();
        for (id, (direction, statuses)) in &messages {
            let figures = report.directions.entry(direction.clone()).or_default();
            figures.accepted += 1;
            if bad.contains(id.as_str()) {
                continue;
            }
            let any = |set: &[&str]| statuses.iter().any(|s| set.contains(&s.as_str()));
            if any(QUEUED) {
                figures.queued += 1;
            } else if any(&["quarantined"]) {
                figures.quarantined += 1;
            } else if any(&["failed"]) {
                figures.bounced += 1;
            } else if any(&["delivered"]) {
                figures.delivered += 1;
            } else {
                deleted_ids.push((direction.clone(), id.clone()));
            }
        }
        let reasons = self.deletion_reasons(since_ms).await?;
        for (direction, id) in deleted_ids {
            let reason = reasons.get(&id).cloned().unwrap_or_else(|| "policy".into());
            let figures = report.directions.entry(direction).or_default();
            *figures.deleted.entry(reason).or_default() += 1;
        }
        report.refused =
            sqlx::query("SELECT COUNT(*) AS n FROM events WHERE kind = 'refused' AND at >= $1")
                .bind(since_ms)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
        Ok(report)
    }

    /// Messages received since `since` (unix ms) that the store cannot place; empty when every
    /// one is accounted for. Cheap enough to run every minute for the metric.
    pub async fn unaccounted(&self, since: i64) -> Result<Vec<Unaccounted>> {
        let statuses = KNOWN
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        // Each query names messages; the problem says what is missing.
        let checks = [
            (
                "SELECT m.id AS id FROM messages m WHERE m.received_at >= $1 AND NOT EXISTS \
                 (SELECT 1 FROM recipients r WHERE r.message_id = m.id)"
                    .to_owned(),
                "has no recipients",
            ),
            (
                "SELECT m.id AS id FROM messages m WHERE m.received_at >= $1 AND NOT EXISTS \
                 (SELECT 1 FROM events e WHERE e.message_id = m.id AND e.kind = 'received')"
                    .to_owned(),
                "has no `received` event",
            ),
            (
                "SELECT e.message_id AS id FROM events e WHERE e.kind = 'received' \
                 AND e.at >= $1 AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = e.message_id)"
                    .to_owned(),
                "was received but its message row is gone",
            ),
            (
                format!(
                    "SELECT DISTINCT r.message_id AS id FROM recipients r JOIN messages m \
                     ON m.id = r.message_id WHERE m.received_at >= $1 \
                     AND r.status NOT IN ({statuses})"
                ),
                "has a recipient in an unknown state",
            ),
            (
                "SELECT DISTINCT r.message_id AS id FROM recipients r JOIN messages m \
                 ON m.id = r.message_id WHERE m.received_at >= $1 \
                 AND r.status IN ('delivered', 'failed') AND NOT EXISTS (SELECT 1 FROM events e \
                 WHERE e.message_id = r.message_id AND e.recipient = r.address \
                 AND e.kind = r.status)"
                    .to_owned(),
                "has a delivered or bounced recipient without the event that says so",
            ),
        ];
        let mut out = Vec::new();
        for (sql, problem) in checks {
            // Built from constants only (the status names above).
            for r in sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(since)
                .fetch_all(&self.pool)
                .await?
            {
                out.push(Unaccounted {
                    message_id: r.try_get("id")?,
                    problem: problem.to_owned(),
                });
            }
        }
        out.sort();
        out.dedup_by(|a, b| a.message_id == b.message_id);
        Ok(out)
    }

    /// Why each message whose recipients were all deleted was deleted: an administrator's
    /// `deleted` event, or else the stage that decided it at acceptance. One query for all.
    async fn deletion_reasons(&self, since: i64) -> Result<HashMap<String, String>> {
        let rows = sqlx::query(
            "SELECT e.message_id, e.kind, e.detail FROM events e JOIN messages m \
             ON m.id = e.message_id WHERE m.received_at >= $1 \
             AND e.kind IN ('received', 'deleted') AND NOT EXISTS (SELECT 1 FROM recipients r \
             WHERE r.message_id = m.id AND r.status <> 'deleted')",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut reasons = HashMap::new();
        for r in &rows {
            let id: String = r.try_get("message_id")?;
            if r.try_get::<String, _>("kind")? == "deleted" {
                reasons.insert(id, "administrator".to_owned());
                continue;
            }
            let stage = r
                .try_get::<String, _>("detail")
                .ok()
                .and_then(|d| serde_json::from_str::<Value>(&d).ok())
                .and_then(|d| d["decided_by"].as_str().map(str::to_owned));
            if let Some(stage) = stage {
                reasons.entry(id).or_insert(stage);
            }
        }
        Ok(reasons)
    }
}
