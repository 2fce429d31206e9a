//! Idle outbound connections kept for the next message to the same host, so a burst to one
//! destination pays for TCP, EHLO and the TLS handshake once. Bounded per host (as many as
//! deliveries may run to one destination, `queue.per_destination`, so that none of them has
//! to shake hands again) and in all; a connection idle longer than `delivery.idle_timeout` is
//! closed with QUIT.

use super::delivery::Conn;
use super::route::Target;
use crate::config::RouteTls;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Idle connections kept in all, at least.
const TOTAL: usize = 64;

/// Address, TLS policy and the name the certificate was checked against.
type Key = (SocketAddr, RouteTls, String);

pub struct Pool {
    idle: Mutex<HashMap<Key, Vec<(Instant, Conn)>>>,
    per_host: usize,
}

fn key(t: &Target) -> Key {
    (t.addr, t.tls, t.host.clone())
}

impl Pool {
    pub fn new(per_host: usize) -> Pool {
        Pool {
            idle: Mutex::default(),
            per_host,
        }
    }

    /// A live idle connection to this target under the same TLS policy, if any.
    pub fn take(&self, target: &Target) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("not poisoned");
        let list = idle.get_mut(&key(target))?;
        while let Some((until, conn)) = list.pop() {
            if until > Instant::now() {
                return Some(conn);
            }
            tokio::spawn(conn.quit());
        }
        None
    }

    pub fn put(&self, target: &Target, conn: Conn, idle_timeout: Duration) {
        let mut idle = self.idle.lock().expect("not poisoned");
        let total: usize = idle.values().map(Vec::len).sum();
        let list = idle.entry(key(target)).or_default();
        if list.len() >= self.per_host || total >= TOTAL.max(self.per_host) {
            tokio::spawn(conn.quit());
            return;
        }
        list.push((Instant::now() + idle_timeout, conn));
    }

    /// Closes connections idle too long; the scheduler calls this as it loops.
    pub fn expire(&self) {
        let mut idle = self.idle.lock().expect("not poisoned");
        let now = Instant::now();
        for list in idle.values_mut() {
            for (_, conn) in list.extract_if(.., |(until, _)| *until <= now) {
                tokio::spawn(conn.quit());
            }
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Closes every idle connection (shutdown).
    pub async fn close(&self) {
        let all: Vec<Conn> = {
            let mut idle = self.idle.lock().expect("not poisoned");
            idle.drain()
                .flat_map(|(_, l)| l.into_iter().map(|(_, c)| c))
                .collect()
        };
        for conn in all {
            conn.quit().await;
        }
    }
}
