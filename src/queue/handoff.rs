//! Recipients this node has just committed with a lease of its own, handed to its scheduler in
//! memory. Without this the scheduler found every new recipient by claiming it: an UPDATE over
//! the due index under the writers' turn about once per group commit, and a release of what it
//! could not start, ≈ 0.1 ms of CPU per message and a turn taken from the commits that clients
//! wait on. The store stays the truth: the lease is written with the recipient, in the same
//! commit, so after a crash this node takes its leases back when it starts (and another node
//! takes them when the lease runs out), as for any claimed recipient.

use super::store::Claimed;
use std::sync::Mutex;

#[derive(Default)]
pub struct Handoff {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Set while a scheduler takes what is handed over: (owner, lease in ms, room).
    open: Option<(String, i64, usize)>,
    ready: Vec<Claimed>,
    /// What the scheduler took and still holds, not started: it counts against the room.
    held: usize,
    /// Queued recipients were committed without a lease (no room) since the last `take`.
    missed: bool,
}

/// The lease written with the recipients of one commit.
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: String,
    pub until: i64,
}

impl Handoff {
    /// From now on queued recipients are committed leased to `owner` for `lease_ms` and handed
    /// over, while fewer than `room` wait to be taken.
    pub fn open(&self, owner: &str, lease_ms: i64, room: usize) {
        self.lock().open = Some((owner.to_owned(), lease_ms, room));
    }

    /// No more leases at commit: the scheduler is stopping (it gives back what it holds).
    pub fn close(&self) {
        self.lock().open = None;
    }

    /// The lease for the queued recipients of a commit made at `now`, or None: they are
    /// committed unleased, for the scheduler to claim (told by `take`). One commit may take a
    /// group's worth of recipients past the room.
    pub(crate) fn lease(&self, now: i64) -> Option<Lease> {
        let mut inner = self.lock();
        let (owner, lease_ms, room) = inner.open.clone()?;
        if inner.ready.len() + inner.held >= room {
            inner.missed = true;
            return None;
        }
        Some(Lease {
            owner,
            until: now + lease_ms,
        })
    }

    /// Recipients committed with a lease from `lease`.
    pub(crate) fn push(&self, claimed: Vec<Claimed>) {
        if !claimed.is_empty() {
            self.lock().ready.extend(claimed);
        }
    }

    /// What was handed over, in commit order, and whether queued recipients were committed
    /// unleased meanwhile.
    pub fn take(&self) -> (Vec<Claimed>, bool) {
        let mut inner = self.lock();
        let missed = std::mem::take(&mut inner.missed);
        (std::mem::take(&mut inner.ready), missed)
    }

    /// The scheduler holds `n` recipients it took and has not started.
    pub fn holding(&self, n: usize) {
        self.lock().held = n;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("not poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(id: i64) -> Claimed {
        Claimed {
            id,
            message_id: format!("m{id}"),
            address: "b@example.test".into(),
            domain: "example.test".into(),
            attempts: 0,
            warned: false,
        }
    }

    #[test]
    fn leases_only_while_open_and_with_room() {
        let h = Handoff::default();
        assert!(h.lease(1).is_none(), "no scheduler: nothing leased");
        assert!(!h.take().1, "and nothing missed: there is no one to tell");
        h.open("node-a", 300_000, 2);
        let lease = h.lease(1_000).expect("room");
        assert_eq!((lease.owner.as_str(), lease.until), ("node-a", 301_000));
        h.push(vec![claimed(1), claimed(2)]);
        assert!(h.lease(2_000).is_none(), "two waiting fill the room");
        let (ready, missed) = h.take();
        assert_eq!(ready.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2]);
        assert!(missed, "the scheduler learns it must claim");
        assert!(!h.take().1, "told once");
        h.holding(2);
        assert!(h.lease(3_000).is_none(), "what the scheduler holds counts");
        h.holding(1);
        assert!(h.lease(3_000).is_some(), "room again once started");
        h.close();
        assert!(h.lease(4_000).is_none());
    }
}
