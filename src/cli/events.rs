//! `passerelle events verify`: checks every node's hash chain of events.

use crate::store::Store;
use crate::store::chain::NodeChain;
use anyhow::Result;

/// Prints each node's chain; Ok(false) when one is broken.
pub async fn verify(store: &Store, json: bool) -> Result<bool> {
    let chains = store.verify_events().await?;
    let holds = chains.iter().all(|c| c.broken.is_none());
    if json {
        println!("{}", serde_json::json!({ "holds": holds, "nodes": chains }));
        return Ok(holds);
    }
    if chains.is_empty() {
        println!("no events");
    }
    for c in &chains {
        println!("{}", line(c));
    }
    Ok(holds)
}

fn line(c: &NodeChain) -> String {
    let mut out = match &c.broken {
        Some(b) => format!(
            "node {}: BROKEN at event {} (seq {}): {}; {} events before it hold",
            c.node, b.event_id, b.seq, b.problem, c.sealed
        ),
        None => format!("node {}: {} events, chain holds", c.node, c.sealed),
    };
    if let (Some(h), None) = (&c.head, &c.broken) {
        out.push_str(&format!("; head seq {} hash {}", h.seq, h.hash));
    }
    if c.unsealed > 0 {
        out.push_str(&format!("; {} not sealed yet", c.unsealed));
    }
    out
}
