//! Per-address rate limits: connections and messages per minute from one client address, as a
//! token bucket each (a burst of up to the per-minute figure, refilled evenly). Clients in
//! `relay.networks` and authenticated senders are our own and are not limited here.
//!
//! Written by hand: the whole of it is a map and two numbers per address, bounded in size.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Addresses tracked at most; past it, buckets that have refilled (idle clients) are dropped,
/// and if that is not enough the oldest half goes: a flood of spoofed-looking sources cannot
/// grow the map without end.
const MAX_TRACKED: usize = 100_000;

pub struct RateLimit {
    /// Per minute; 0: no limit.
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    pub fn new(per_minute: u32) -> Self {
        RateLimit {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip`; false when its bucket is empty (over the rate).
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.allow_at(ip, Instant::now())
    }

    fn allow_at(&self, ip: IpAddr, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let cap = f64::from(self.per_minute);
        let refill = |b: &Bucket| {
            let secs = now.saturating_duration_since(b.at).as_secs_f64();
            (b.tokens + secs * cap / 60.0).min(cap)
        };
        let mut map = self.buckets.lock().expect("not poisoned");
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, b| refill(b) < cap);
            if map.len() >= MAX_TRACKED {
                let mut ages: Vec<Instant> = map.values().map(|b| b.at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                map.retain(|_, b| b.at > cut);
            }
        }
        let b = map.entry(ip).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        let tokens = refill(b);
        if tokens < 1.0 {
            return false;
        }
        *b = Bucket {
            tokens: tokens - 1.0,
            at: now,
        };
        true
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let r = RateLimit::new(6);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t = Instant::now();
        assert!((0..6).all(|_| r.allow_at(a, t)));
        assert!(!r.allow_at(a, t), "the seventh in the same instant");
        assert!(r.allow_at(b, t), "another address has its own bucket");
        // One token back every 10 s.
        assert!(!r.allow_at(a, t + Duration::from_secs(9)));
        assert!(r.allow_at(a, t + Duration::from_secs(11)));
        assert!(!r.allow_at(a, t + Duration::from_secs(12)));
    }

    #[test]
    fn zero_is_no_limit() {
        let r = RateLimit::new(0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..10_000).all(|_| r.allow(a)));
        assert_eq!(r.tracked(), 0);
    }

    #[test]
    fn the_map_stays_bounded() {
        let r = RateLimit::new(10);
        let t = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 5_000) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            r.allow_at(ip, t + Duration::from_micros(u64::from(i)));
        }
        assert!(r.tracked() <= MAX_TRACKED, "{}", r.tracked());
    }
}
