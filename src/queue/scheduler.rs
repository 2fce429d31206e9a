//! The scheduler: starts one delivery per message and domain, at most `queue.concurrency` in all
//! and `queue.per_destination` per domain. Recipients reach it two ways: those this node has just
//! committed are handed over already leased (`handoff.rs`); the others are claimed from the store
//! in bounded batches, with a lease, when something there may be due — at start, after a claim
//! that came back full, when a retry this node scheduled falls due, when a commit found no room
//! in the hand-off, and every `poll_interval` (other nodes, administrators). What it holds but
//! cannot start yet (no free slot) waits in memory at most [`WAIT`], then goes back to the store,
//! so nothing waits long while holding a lease. At shutdown it lets deliveries finish (bounded)
//! and gives back its leases.

use super::delivery;
use super::store::Claimed;
use crate::daemon::Context;
use crate::store::now_ms;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long deliveries in flight may take to finish at shutdown before they are cut off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// How long a recipient may wait for a free slot while this node holds its lease.
const WAIT: Duration = Duration::from_secs(1);

/// The recipients of one message in one domain, leased to this node and waiting for a slot:
/// one delivery, over one connection.
struct Waiting {
    since: Instant,
    rcpts: Vec<Claimed>,
}

/// What waits, in the order it will start.
type Ready = VecDeque<Waiting>;
/// A delivery's domain, and when the first recipient it deferred is due again.
type Ended = (String, Option<i64>);

pub async fn run(ctx: Arc<Context>) {
    let q = &ctx.config.queue;
    let owner = ctx.config.server.node.clone();
    let lease_ms = q.lease.as_millis() as i64;
    let handoff = &ctx.store.handoff;
    handoff.open(&owner, lease_ms, q.batch.max(q.concurrency));
    let mut tasks: JoinSet<Ended> = JoinSet::new();
    // Deliveries in flight per destination domain.
    let mut active: HashMap<String, usize> = HashMap::new();
    let mut ready = Ready::new();
    // When the store may next hold something due that this node does not hold already.
    let mut claim_at = Instant::now();
    let mut shutdown = ctx.shutdown.subscribe();
    let ended = |active: &mut HashMap<String, usize>, claim_at: &mut Instant, e: Ended| {
        let (domain, retry) = e;
        if let Some(n) = active.get_mut(&domain) {
            *n -= 1;
            if *n == 0 {
                active.remove(&domain);
            }
        }
        if let Some(at) = retry {
            *claim_at = (*claim_at).min(instant_at(at));
        }
    };
    while !ctx.shutdown.is_triggered() {
        while let Some(Ok(e)) = tasks.try_join_next() {
            ended(&mut active, &mut claim_at, e);
        }
        ctx.pool.expire();
        let now = Instant::now();
        let (fresh, missed) = handoff.take();
        metrics::counter!("passerelle_queue_taken_total", "from" => "handoff")
            .increment(fresh.len() as u64);
        ready.extend(group(fresh, now));
        let held = count(&ready);
        if missed {
            claim_at = now;
        }
        if q.concurrency > tasks.len() && claim_at <= now && held < q.batch {
            let busy: Vec<String> = active
                .iter()
                .filter(|(_, n)| **n >= q.per_destination)
                .map(|(d, _)| d.clone())
                .collect();
            let limit = q.batch;
            match ctx
                .store
                .claim(&owner, now_ms(), lease_ms, limit as i64, &busy)
                .await
            {
                Ok(claimed) => {
                    metrics::counter!("passerelle_queue_taken_total", "from" => "claim")
                        .increment(claimed.len() as u64);
                    claim_at = if claimed.len() >= limit {
                        now
                    } else {
                        next_claim(&ctx).await
                    };
                    // Due before anything just committed: first in line.
                    for w in group(claimed, now).into_iter().rev() {
                        ready.push_front(w);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming due recipients");
                    claim_at = now + q.poll_interval;
                }
            }
        }
        start(&ctx, &mut ready, &mut tasks, &mut active);
        let stale: Vec<i64> = take_stale(&mut ready, Instant::now());
        if !stale.is_empty() {
            // Due again in the store, for a claim when a slot frees or for another node.
            if let Err(e) = ctx.store.release_ids(&owner, &stale).await {
                tracing::warn!(error = %e, "giving back recipients that waited for a slot");
            }
            claim_at = Instant::now();
        }
        let held = count(&ready);
        handoff.holding(held);
        // Sleep until a claim may find something, a held recipient must go back, or a commit
        // or a delivery ending wakes us. A claim cannot run with no free slot or a full hand.
        let can_claim = q.concurrency > tasks.len() && held < q.batch;
        let mut until = Instant::now() + q.poll_interval;
        if can_claim {
            if claim_at <= Instant::now() {
                continue;
            }
            until = until.min(claim_at);
        }
        if let Some(at) = ready.iter().map(|w| w.since).min() {
            until = until.min(at + WAIT);
        }
        tokio::select! {
            _ = ctx.queue_notify.notified() => {}
            _ = tokio::time::sleep_until(until) => {}
            Some(Ok(e)) = tasks.join_next(), if !tasks.is_empty() => {
                ended(&mut active, &mut claim_at, e);
            }
            _ = shutdown.recv() => break,
        }
    }
    handoff.close();
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!("deliveries still in flight at shutdown were stopped");
        tasks.shutdown().await;
    }
    ctx.pool.close().await;
    // Also what was held, or handed over, and not started.
    match ctx.store.release(&owner).await {
        Ok(n) if n > 0 => tracing::info!(recipients = n, "released queue leases"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "releasing queue leases"),
    }
}

/// Starts a delivery for each message and domain in `ready` that has a free slot, in order;
/// keeps the rest.
fn start(
    ctx: &Arc<Context>,
    ready: &mut Ready,
    tasks: &mut JoinSet<Ended>,
    active: &mut HashMap<String, usize>,
) {
    let q = &ctx.config.queue;
    let mut kept = Ready::new();
    while tasks.len() < q.concurrency {
        let Some(w) = ready.pop_front() else { break };
        let domain = w.rcpts[0].domain.clone();
        let n = active.entry(domain.clone()).or_default();
        if *n >= q.per_destination {
            kept.push_back(w);
            continue;
        }
        *n += 1;
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let retry = delivery::deliver(ctx, w.rcpts).await;
            (domain, retry)
        });
    }
    kept.append(ready);
    *ready = kept;
    active.retain(|_, n| *n > 0);
}

/// Recipients waiting in `ready`.
fn count(ready: &Ready) -> usize {
    ready.iter().map(|w| w.rcpts.len()).sum()
}

/// Takes out of `ready` what waited [`WAIT`] or more; their ids.
fn take_stale(ready: &mut Ready, now: Instant) -> Vec<i64> {
    let mut ids = Vec::new();
    ready.retain(|w| {
        let stale = now.duration_since(w.since) >= WAIT;
        if stale {
            ids.extend(w.rcpts.iter().map(|c| c.id));
        }
        !stale
    });
    ids
}

/// The instant of unix time `ms`.
fn instant_at(ms: i64) -> Instant {
    Instant::now() + Duration::from_millis((ms - now_ms()).max(0) as u64)
}

/// When to claim next after a claim that found everything due: when the next recipient falls
/// due, at most `poll_interval` from now.
async fn next_claim(ctx: &Context) -> Instant {
    let poll = ctx.config.queue.poll_interval;
    match ctx.store.next_due().await {
        // Due already but not claimed: its domain is busy; claim again shortly.
        Ok(Some(due)) => {
            let ms = (due - now_ms()).clamp(10, poll.as_millis() as i64);
            Instant::now() + Duration::from_millis(ms as u64)
        }
        _ => Instant::now() + poll,
    }
}

/// One delivery per message and domain, in the order first seen: its recipients share a
/// connection. A message's recipients come together (one commit, or next to each other in a
/// claim), so the group to join is looked for from the last one.
fn group(claimed: Vec<Claimed>, since: Instant) -> Vec<Waiting> {
    let mut groups: Vec<Waiting> = Vec::new();
    for c in claimed {
        let same = |w: &&mut Waiting| {
            let first = &w.rcpts[0];
            first.message_id == c.message_id && first.domain == c.domain
        };
        match groups.iter_mut().rev().find(same) {
            Some(w) => w.rcpts.push(c),
            None => groups.push(Waiting {
                since,
                rcpts: vec![c],
            }),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(id: i64, message: &str, domain: &str) -> Claimed {
        Claimed {
            id,
            message_id: message.into(),
            address: format!("r{id}@{domain}"),
            domain: domain.into(),
            attempts: 0,
            warned: false,
        }
    }

    fn ids(ready: impl IntoIterator<Item = Waiting>) -> Vec<Vec<i64>> {
        ready
            .into_iter()
            .map(|w| w.rcpts.iter().map(|c| c.id).collect())
            .collect()
    }

    #[test]
    fn one_delivery_per_message_and_domain_in_the_order_first_seen() {
        let claimed = vec![
            claimed(1, "m2", "b.test"),
            claimed(2, "m1", "a.test"),
            claimed(3, "m2", "b.test"),
            claimed(4, "m2", "c.test"),
            claimed(5, "m1", "a.test"),
        ];
        let groups = group(claimed, Instant::now());
        assert_eq!(ids(groups), [vec![1, 3], vec![2, 5], vec![4]]);
    }

    #[test]
    fn what_waited_too_long_is_taken_out() {
        let now = Instant::now();
        let waiting = |since, id| Waiting {
            since,
            rcpts: vec![claimed(id, &format!("m{id}"), "a.test")],
        };
        let mut ready: Ready = [
            waiting(now - WAIT, 1),
            waiting(now, 2),
            waiting(now - WAIT * 2, 3),
        ]
        .into_iter()
        .collect();
        assert_eq!(take_stale(&mut ready, now), [1, 3]);
        assert_eq!(ids(ready), [vec![2]]);
    }
}
