//! The scheduler: wakes when a message is queued, a retry falls due or a delivery ends; claims a
//! bounded batch of due recipients with a lease; starts one delivery per message and domain, at
//! most `queue.concurrency` in all and `queue.per_destination` per domain. What it claimed but
//! cannot start now goes back at once, and busy domains are not claimed, so nothing waits while
//! holding a lease. At shutdown it lets deliveries finish (bounded) and gives back its leases.

use super::delivery;
use super::store::Claimed;
use crate::daemon::Context;
use crate::store::now_ms;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// How long deliveries in flight may take to finish at shutdown before they are cut off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

pub async fn run(ctx: Arc<Context>) {
    let q = &ctx.config.queue;
    let owner = ctx.config.server.node.clone();
    let lease_ms = q.lease.as_millis() as i64;
    let mut tasks: JoinSet<String> = JoinSet::new();
    // Deliveries in flight per destination domain.
    let mut active: HashMap<String, usize> = HashMap::new();
    let mut shutdown = ctx.shutdown.subscribe();
    let finished = |active: &mut HashMap<String, usize>, domain: String| {
        if let Some(n) = active.get_mut(&domain) {
            *n -= 1;
            if *n == 0 {
                active.remove(&domain);
            }
        }
    };
    while !ctx.shutdown.is_triggered() {
        while let Some(Ok(domain)) = tasks.try_join_next() {
            finished(&mut active, domain);
        }
        ctx.pool.expire();
        let free = q.concurrency.saturating_sub(tasks.len());
        let busy: Vec<String> = active
            .iter()
            .filter(|(_, n)| **n >= q.per_destination)
            .map(|(d, _)| d.clone())
            .collect();
        let claimed = if free == 0 {
            Vec::new()
        } else {
            let limit = q.batch as i64;
            match ctx
                .store
                .claim(&owner, now_ms(), lease_ms, limit, &busy)
                .await
            {
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
                Some(Ok(domain)) = tasks.join_next(), if !tasks.is_empty() => {
                    finished(&mut active, domain);
                }
                _ = shutdown.recv() => break,
            }
            continue;
        }
        let mut put_back = Vec::new();
        for group in group(claimed) {
            let domain = group[0].domain.clone();
            let n = active.entry(domain.clone()).or_default();
            if tasks.len() >= q.concurrency || *n >= q.per_destination {
                put_back.extend(group.iter().map(|c| c.id));
                continue;
            }
            *n += 1;
            let ctx = ctx.clone();
            tasks.spawn(async move {
                delivery::deliver(ctx, group).await;
                domain
            });
        }
        active.retain(|_, n| *n > 0);
        if let Err(e) = ctx.store.release_ids(&owner, &put_back).await {
            tracing::warn!(error = %e, "giving back claimed recipients");
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
    ctx.pool.close().await;
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
        // Due already but not claimed: its domain is busy; a delivery ending wakes us.
        Ok(Some(due)) if due > now_ms() => {
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
