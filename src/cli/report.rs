//! `passerelle report`: every accepted message accounted for, per direction; and
//! `passerelle purge`: the bodies past their retention.

use super::trace::time;
use crate::config::Config;
use crate::store::events::Recorder;
use crate::store::report::Report;
use crate::store::{Store, now_ms};
use anyhow::{Context, Result, bail};

/// `--since`: a duration back from now (`24h`, `7d`), a date (`2026-11-01`, UTC) or an
/// RFC 3339 time. Returns unix ms.
pub fn parse_since(s: &str) -> Result<i64> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now_ms() - d.as_millis() as i64);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
            .unwrap_or(0));
    }
    bail!(
        "--since: expected a duration (24h, 7d), a date (2026-11-01) or an RFC 3339 time, got {s:?}"
    )
}

/// Prints the report; Ok(false) when some message is not accounted for.
pub async fn report(store: &Store, since: Option<i64>, json: bool) -> Result<bool> {
    let r = store.report(since).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", text(&r));
    }
    Ok(r.unaccounted.is_empty())
}

fn text(r: &Report) -> String {
    let mut out = match r.since {
        Some(t) => format!("messages received since {}\n", time(t)),
        None => "all messages in the store\n".to_owned(),
    };
    if r.directions.is_empty() {
        out.push_str("  none\n");
    }
    for (direction, f) in &r.directions {
        let placed = f.placed();
        let sums = if placed == f.accepted {
            "= accepted"
        } else {
            "≠ accepted"
        };
        out.push_str(&format!("{direction}: {} accepted\n", f.accepted));
        out.push_str(&format!("  delivered    {}\n", f.delivered));
        out.push_str(&format!("  bounced      {}\n", f.bounced));
        let deleted: i64 = f.deleted.values().sum();
        out.push_str(&format!("  deleted      {deleted}"));
        if !f.deleted.is_empty() {
            let why: Vec<String> = f.deleted.iter().map(|(k, n)| format!("{k} {n}")).collect();
            out.push_str(&format!(" ({})", why.join(", ")));
        }
        out.push('\n');
        out.push_str(&format!("  quarantined  {}\n", f.quarantined));
        out.push_str(&format!("  queued       {}\n", f.queued));
        out.push_str(&format!("  sum          {placed} {sums}\n"));
    }
    out.push_str(&format!(
        "refused at end of data (not accepted): {}\n",
        r.refused
    ));
    if r.unaccounted.is_empty() {
        out.push_str("unaccounted: 0\n");
    } else {
        out.push_str(&format!("unaccounted: {}\n", r.unaccounted.len()));
        for u in &r.unaccounted {
            out.push_str(&format!("  {} {}\n", u.message_id, u.problem));
        }
    }
    out
}

/// Purges (or, with `dry_run`, lists) the bodies past `store.retention`.
pub async fn purge(store: &Store, config: &Config, dry_run: bool, json: bool) -> Result<()> {
    let now = now_ms();
    let before = now - config.store.retention.as_millis() as i64;
    if dry_run {
        let due = store.purgeable(before, i64::MAX).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&due)?);
            return Ok(());
        }
        for p in &due {
            println!(
                "{} {:<8} {:>9} bytes, final since {}",
                p.message_id,
                p.direction,
                p.size,
                time(p.final_at)
            );
        }
        let bytes: i64 = due.iter().map(|p| p.size).sum();
        println!(
            "{} messages ({bytes} bytes) would be purged (final before {}; retention {})",
            due.len(),
            time(before),
            humantime::format_duration(config.store.retention)
        );
        return Ok(());
    }
    let rec = Recorder {
        node: config.server.node.clone(),
        config_hash: config.hash.clone(),
    };
    let n = store
        .purge(&rec, before, now)
        .await
        .context("purging bodies")?;
    // The daemon seals too; if it is running and wins, this one simply finds nothing to do.
    let _ = store.seal(&config.server.node).await;
    if json {
        println!("{}", serde_json::json!({ "purged": n }));
    } else {
        println!("{n} messages purged (final before {})", time(before));
    }
    Ok(())
}
