//! `passerelle trace ID`: a message's whole story, one event a line, oldest first.

use crate::store::Store;
use crate::store::events::Event;
use anyhow::Result;
use serde_json::Value;

/// Prints the events; false when the store knows nothing of the id.
pub async fn print(store: &Store, message_id: &str, json: bool) -> Result<bool> {
    let events = store.trace(message_id).await?;
    if events.is_empty() {
        eprintln!("no events for message {message_id}");
        return Ok(false);
    }
    for e in &events {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "id": e.id, "message_id": e.message_id, "at": time(e.at), "node": e.node,
                    "kind": e.kind, "recipient": e.recipient, "detail": e.detail,
                })
            );
        } else {
            println!("{}", line(e));
        }
    }
    Ok(true)
}

pub(super) fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// `TIME NODE KIND [RECIPIENT] key=value …`
fn line(e: &Event) -> String {
    let mut out = format!("{} {} {:<9}", time(e.at), e.node, e.kind);
    if let Some(r) = &e.recipient {
        out.push_str(&format!(" <{r}>"));
    }
    if let Value::Object(map) = &e.detail {
        for (k, v) in map {
            let v = match v {
                Value::Null => continue,
                Value::String(s) if s.contains(' ') => format!("{s:?}"),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!(" {k}={v}"));
        }
    }
    out
}
