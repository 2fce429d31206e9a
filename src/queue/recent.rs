//! Messages this node has just committed, kept in memory for the delivery that follows a few
//! milliseconds later, so that it need not read back from the store what was just written (one
//! more statement and a copy of the whole body through sqlx). Only a shortcut: the store stays
//! the truth, an entry lives at most [`LIFETIME`], the whole is bounded in bytes, and a miss
//! reads the store as before. Bodies never change once committed, so an entry cannot go stale.

use super::store::{NewMessage, Queued};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const LIFETIME: Duration = Duration::from_secs(10);
/// Bytes of bodies kept at most.
const BYTES: usize = 8 << 20;

#[derive(Default)]
pub struct Recent {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Queued>,
    /// Insertion order, for expiry and for the byte bound.
    order: VecDeque<(Instant, String)>,
    bytes: usize,
}

impl Recent {
    /// Keeps `m`, committed at `received_at`.
    pub fn keep(&self, m: NewMessage, received_at: i64) {
        if m.body.len() > BYTES / 8 {
            return;
        }
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.expire(Instant::now());
        while inner.bytes + m.body.len() > BYTES {
            if !inner.pop() {
                break;
            }
        }
        inner.bytes += m.body.len();
        inner.order.push_back((Instant::now(), m.id.clone()));
        let queued = Queued {
            sender: m.sender,
            direction: m.direction.to_owned(),
            received_at,
            body: m.body,
        };
        if let Some(old) = inner.by_id.insert(m.id, queued) {
            inner.bytes -= old.body.len();
        }
    }

    pub fn get(&self, id: &str) -> Option<Queued> {
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.expire(Instant::now());
        inner.by_id.get(id).cloned()
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > LIFETIME)
        {
            self.pop();
        }
    }

    /// Drops the oldest entry; false when there is none.
    fn pop(&mut self) -> bool {
        let Some((_, id)) = self.order.pop_front() else {
            return false;
        };
        if let Some(q) = self.by_id.remove(&id) {
            self.bytes -= q.body.len();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, size: usize) -> NewMessage {
        NewMessage::sample(id, vec![b'x'; size])
    }

    #[test]
    fn kept_until_the_byte_bound_pushes_the_oldest_out() {
        let recent = Recent::default();
        let size = BYTES / 10;
        for i in 0..12 {
            recent.keep(message(&format!("m{i}"), size), i);
        }
        assert!(recent.get("m0").is_none(), "the oldest went first");
        assert!(recent.get("m1").is_none());
        let q = recent.get("m11").expect("the newest is kept");
        assert_eq!(
            (q.sender.as_str(), q.received_at, q.body.len()),
            ("a@client.test", 11, size)
        );
        assert!(recent.inner.lock().unwrap().bytes <= BYTES);
    }

    #[test]
    fn expired_entries_are_gone() {
        let recent = Recent::default();
        recent.keep(message("old", 10), 1);
        recent.inner.lock().unwrap().order[0].0 -= LIFETIME + Duration::from_secs(1);
        recent.keep(message("new", 10), 2);
        assert!(recent.get("old").is_none());
        assert!(recent.get("new").is_some());
        assert_eq!(recent.inner.lock().unwrap().bytes, 10);
    }
}
