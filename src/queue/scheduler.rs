//! The scheduler: wakes when a message is queued or a retry falls due, claims a bounded batch
//! of due recipients with a lease, and hands them to deliveries, at most `queue.concurrency` at
//! once. At shutdown it lets deliveries in flight finish (bounded) and gives back its leases.

use super::delivery;
use super::store::Claimed;
use crate::daemon::Context;
use crate::store::now_ms;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How long deliveries in flight may take to finish at shutdown before they are cut off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

pub async fn run(ctx: Arc<Context>) {
    let q = &ctx.config.queue;
    let owner = ctx.config.server.node.clone();
    let permits = Arc::new(Semaphore::new(q.concurrency));
    let mut tasks = JoinSet::new();
    let mut shutdown = ctx.shutdown.subscribe();
    let lease_ms = q.lease.as_millis() as i64;
    loop {
        while tasks.try_join_next().is_some() {}
        let free = permits.available_permits();
        let claimed = if free == 0 {
            Vec::new()
        } else {
            match ctx.store.claim(&owner, now_ms(), lease_ms, q.batch as i64).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming due recipients");
                    Vec::new()
                }
            }
        };
        if claimed.is_empty() {
            let wait = sleep_for(&ctx, free == 0).await;
            tokio::select! {
                _ = ctx.queue_notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = shutdown.recv() => break,
            }
            continue;
        }
        for group in group(claimed) {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("never closed"),
                _ = shutdown.recv() => break,
            };
            let ctx = ctx.clone();
            tasks.spawn(async move {
                delivery::deliver(ctx, group).await;
                drop(permit);
            });
        }
        if ctx.shutdown.is_triggered() {
            break;
        }
    }
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!("deliveries still in flight at shutdown were stopped");
        tasks.shutdown().await;
    }
    match ctx.store.release(&owner).await {
        Ok(n) if n > 0 => tracing::info!(recipients = n, "released queue leases"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "releasing queue leases"),
    }
}

/// Until the next recipient falls due, at most `poll_interval`.
async fn sleep_for(ctx: &Context, busy: bool) -> Duration {
    let poll = ctx.config.queue.poll_interval;
    if busy {
        return poll;
    }
    match ctx.store.next_due().await {
        Ok(Some(due)) => {
            let ms = (due - now_ms()).clamp(10, poll.as_millis() as i64);
            Duration::from_millis(ms as u64)
        }
        _ => poll,
    }
}

/// One delivery per message and domain: its recipients share a connection.
fn group(claimed: Vec<Claimed>) -> Vec<Vec<Claimed>> {
    let mut groups: BTreeMap<(String, String), Vec<Claimed>> = BTreeMap::new();
    for c in claimed {
        groups
            .entry((c.message_id.clone(), c.domain.clone()))
            .or_default()
            .push(c);
    }
    groups.into_values().collect()
}
