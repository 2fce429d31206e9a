//! Group commit for both stores. SQLite has one writer and syncs its WAL at every commit
//! (`synchronous=FULL`), so concurrent acceptances and delivery outcomes would each wait for a
//! commit and an fsync of their own, in turn: about 3.5 ms each here, which capped the queue at
//! ≈ 280 writes a second whatever the CPU. Instead one task takes every write waiting, does them
//! in one transaction — written again with a savepoint each if it fails, so that a bad row fails
//! only its own job — and commits once: one fsync for the group. A client gets its `250` only
//! after that commit, as before.
//! PostgreSQL groups the WAL flushes of concurrent commits itself, but a transaction of its own
//! per message and per delivery cost five statements each, every one a round trip and a parse:
//! grouped, PostgreSQL's CPU per message fell from 1.0 to 0.4 ms and ours from 1.0 to 0.66
//! (bench/README, item 32).

use super::handoff::Lease;
use super::rows::Rows;
use super::store::{Claimed, NewMessage, Outcome};
use crate::store::Store;
use crate::store::events::Recorder;
use anyhow::{Result, anyhow};
use sqlx::Acquire;
use tokio::sync::{mpsc, oneshot};

/// Jobs written per transaction at most.
const GROUP: usize = 64;

/// What one job writes.
pub enum Work {
    /// A message accepted (and the notice about it, if any).
    Accept {
        message: NewMessage,
        notice: Option<NewMessage>,
    },
    /// The outcomes of one delivery attempt (and the notice to the sender, if any).
    Finish {
        outcomes: Vec<Outcome>,
        notice: Option<NewMessage>,
    },
}

pub struct Job {
    pub rec: Recorder,
    pub work: Work,
    pub now: i64,
    pub done: oneshot::Sender<Result<()>>,
}

pub type Sender = mpsc::Sender<Job>;

/// Starts the committer for `store` (a clone without its own committer).
pub fn start(store: Store) -> Sender {
    let (tx, rx) = mpsc::channel(GROUP * 4);
    tokio::spawn(run(store, rx));
    tx
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(GROUP);
    while rx.recv_many(&mut jobs, GROUP).await > 0 {
        let accepted = jobs.iter_mut().filter_map(|j| match &mut j.work {
            Work::Accept { message, .. } => Some(message),
            Work::Finish { .. } => None,
        });
        if let Err(e) = store.expand(accepted).await {
            // A message whose delegations cannot be read is not committed (its copies would be
            // missing): its client is told 451. Delivery outcomes need none and go on.
            let (refused, rest): (Vec<Job>, Vec<Job>) = jobs.drain(..).partition(
                |j| matches!(&j.work, Work::Accept { message, .. } if message.delegations),
            );
            for job in refused {
                let _ = job.done.send(Err(anyhow!("reading delegations: {e}")));
            }
            jobs = rest;
        }
        let lease = store.handoff.lease(crate::store::now_ms());
        let (results, leased) = commit(&store, &jobs, lease).await;
        let mut replies = Vec::with_capacity(jobs.len());
        for (job, result) in jobs.drain(..).zip(results) {
            let Job {
                work, now, done, ..
            } = job;
            if result.is_ok() {
                let (message, notice) = match work {
                    Work::Accept { message, notice } => (Some(message), notice),
                    Work::Finish { notice, .. } => (None, notice),
                };
                for m in message.into_iter().chain(notice) {
                    store.recent.keep(m, now);
                }
            }
            replies.push((done, result));
        }
        // After their bodies are kept (the delivery reads them there) and before any client
        // hears of its commit (which wakes the scheduler).
        store.handoff.push(leased);
        for (done, result) in replies {
            let _ = done.send(result);
        }
    }
}

/// One transaction for the group; per job, Ok only if its rows are in the committed
/// transaction. Also the recipients committed with `lease`.
async fn commit(
    store: &Store,
    jobs: &[Job],
    lease: Option<Lease>,
) -> (Vec<Result<()>>, Vec<Claimed>) {
    let b = store.backend;
    let failed = |e: String| jobs.iter().map(|_| Err(anyhow!("{e}"))).collect();
    // Every job's rows in a few statements, no savepoint (it would copy every page it touches
    // to a sub-journal). If that fails, the group is rolled back and written again with one
    // savepoint per job, so that a bad row fails only its own job.
    let all = async {
        let mut tx = store.begin_write().await?;
        match rows(jobs, lease.clone()).write(b, &mut tx).await {
            Ok(leased) => tx.commit().await.map(|()| leased),
            // Rolled back before the retry begins, which would otherwise find the chain's lock
            // still held and write every event of the group unlinked.
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    };
    if let Ok(leased) = all.await {
        return (jobs.iter().map(|_| Ok(())).collect(), leased);
    }
    let mut tx = match store.begin_write().await {
        Ok(tx) => tx,
        Err(e) => return (failed(e.to_string()), Vec::new()),
    };
    let mut results = Vec::with_capacity(jobs.len());
    let mut leased = Vec::new();
    for job in jobs {
        let one = async {
            let mut sp = tx.begin().await?;
            let mine = rows(std::slice::from_ref(job), lease.clone())
                .write(b, &mut sp)
                .await?;
            sp.commit().await?;
            anyhow::Ok(mine)
        };
        results.push(one.await.map(|mine| leased.extend(mine)));
    }
    match tx.commit().await {
        Ok(()) => (results, leased),
        Err(e) => (failed(format!("commit: {e}")), Vec::new()),
    }
}

fn rows(jobs: &[Job], lease: Option<Lease>) -> Rows<'_> {
    let mut rows = Rows::default();
    rows.lease = lease;
    for job in jobs {
        match &job.work {
            Work::Accept { message, notice } => {
                rows.accept(&job.rec, message, notice.as_ref(), job.now)
            }
            Work::Finish { outcomes, notice } => {
                rows.finish(&job.rec, outcomes, notice.as_ref(), job.now)
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    fn message(id: &str) -> NewMessage {
        NewMessage::sample(id, b"Subject: x\r\n\r\nhi\r\n".to_vec())
    }

    /// With a scheduler taking them, queued recipients are committed leased to it and handed
    /// over with their rows' ids; quarantined ones are neither.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_recipients_are_committed_leased_and_handed_over() {
        let (_dir, store, rec) = crate::store::scratch().await;
        store.handoff.open("n", 60_000, 10);
        let mut queued = message("q");
        queued.rcpts.push("c@other.test".into());
        let mut held = message("h");
        held.status = crate::queue::RecipientStatus::Quarantined;
        store.accept(&rec, queued, None, 1).await.unwrap();
        store.accept(&rec, held, None, 1).await.unwrap();
        let (taken, missed) = store.handoff.take();
        assert!(!missed);
        let rows = sqlx::query(
            "SELECT id, message_id, domain, lease_owner, lease_until FROM recipients ORDER BY id",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let leased: Vec<(i64, String, String)> = rows
            .iter()
            .filter(|r| r.get::<Option<String>, _>("lease_owner").as_deref() == Some("n"))
            .map(|r| (r.get("id"), r.get("message_id"), r.get("domain")))
            .collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(leased.len(), 2, "the quarantined one is not leased");
        assert!(leased.iter().all(|(_, m, _)| m == "q"));
        let handed: Vec<(i64, String, String)> = taken
            .iter()
            .map(|c| (c.id, c.message_id.clone(), c.domain.clone()))
            .collect();
        assert_eq!(handed, leased);
        let until: Option<i64> = rows[0].get("lease_until");
        assert!(until.unwrap() > crate::store::now_ms() + 50_000);
    }
}
