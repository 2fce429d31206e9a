//! The daemon's background upkeep: seals its events into their hash chain, checkpoints the
//! SQLite write-ahead log, keeps the accounting figure that must stay 0, and purges the bodies
//! that are past their retention.

use crate::daemon::Context;
use crate::store::chain::Head;
use crate::store::now_ms;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{MissedTickBehavior, interval};

const SEAL_EVERY: Duration = Duration::from_secs(1);
const ACCOUNT_EVERY: Duration = Duration::from_secs(60);
const PURGE_EVERY: Duration = Duration::from_secs(3600);

pub async fn run(ctx: Arc<Context>) {
    let mut shutdown = ctx.shutdown.subscribe();
    let mut seal = interval(SEAL_EVERY);
    let mut account = interval(ACCOUNT_EVERY);
    let mut purge = interval(PURGE_EVERY);
    let mut logged = None;
    for t in [&mut seal, &mut account, &mut purge] {
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = seal.tick() => {
                seal_events(&ctx, &mut logged).await;
                if let Err(e) = ctx.store.checkpoint().await {
                    tracing::warn!(error = %e, "checkpointing the store's log failed; will try again");
                }
            }
            _ = account.tick() => account_messages(&ctx).await,
            _ = purge.tick() => purge_bodies(&ctx).await,
        }
    }
}

/// Seals what this node wrote; the daemon calls it once more after its last session ended.
/// The chain's head goes to the log whenever it moved since `logged` (sealed here, or linked as
/// written on SQLite): kept apart from the store, it shows if the newest events were later cut
/// off.
pub async fn seal_events(ctx: &Context, logged: &mut Option<Head>) {
    let node = &ctx.recorder.node;
    if let Err(e) = ctx.store.seal(node).await {
        tracing::warn!(error = %e, "sealing events failed; will try again");
        return;
    }
    match ctx.store.chain_head(node).await {
        Ok(head) if head != *logged => {
            if let Some(h) = &head {
                tracing::debug!(seq = h.seq, hash = %h.hash, "events sealed");
            }
            *logged = head;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "reading the events' chain head failed"),
    }
}

async fn account_messages(ctx: &Context) {
    match ctx.store.unaccounted(i64::MIN).await {
        Ok(list) => {
            metrics::gauge!("passerelle_unaccounted_messages").set(list.len() as f64);
            for u in list.iter().take(10) {
                tracing::error!(message_id = %u.message_id, problem = %u.problem, "message not accounted for");
            }
        }
        Err(e) => tracing::warn!(error = %e, "accounting for messages failed"),
    }
}

async fn purge_bodies(ctx: &Context) {
    let now = now_ms();
    let before = now - ctx.config.store.retention.as_millis() as i64;
    match ctx.store.purge(&ctx.recorder, before, now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(messages = n, "purged bodies past their retention"),
        Err(e) => tracing::warn!(error = %e, "purging bodies failed; will try again"),
    }
}
