//! Test harness: the real daemon on port 0, a test CA, an SMTP sink standing in for remote
//! servers, a line client, and a fresh database per test (SQLite always, PostgreSQL when
//! `DATABASE_URL` is set). Only the internet is faked, over the wire.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod client;
pub mod daemon;
pub mod db;
pub mod dns;
pub mod http;
pub mod ldap;
pub mod sink;

pub use certs::TestCa;
pub use client::Client;
pub use daemon::{Daemon, TestConfig};
pub use db::Backend;
pub use dns::TestDns;
pub use sink::Sink;

use std::time::Duration;

/// Generous bound for "eventually": tests wait on events, this only stops a broken test.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Runs `check` until it returns Some, or panics after `PATIENCE` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Generates one `#[tokio::test]` per store backend for each named `async fn NAME(Backend)`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::support::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if $crate::support::db::postgres_available() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            })*
        }
    };
}

/// One rustls crypto provider for the whole test process (rustls panics when two are built in
/// and none is chosen).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// clamd's address from scripts/clamd.sh, or None with a note (the test is then skipped),
/// unless `PASSERELLE_REQUIRE_CLAMD=1` (set by `scripts/test`), where a missing clamd is a failure.
pub fn clamd() -> Option<String> {
    if let Ok(address) = std::env::var("CLAMD_ADDRESS")
        && !address.is_empty()
    {
        return Some(address);
    }
    assert!(
        std::env::var("PASSERELLE_REQUIRE_CLAMD").is_err(),
        "PASSERELLE_REQUIRE_CLAMD is set but CLAMD_ADDRESS is not (. scripts/clamd.sh && clamd_start)"
    );
    eprintln!("CLAMD_ADDRESS is not set: clamd test skipped (scripts/test starts one)");
    None
}

/// An address nothing listens on, kept so while this lives: a socket bound to it that never
/// listens, so connections are refused. A port bound and let go at once can be handed to the
/// next listener on port 0 — the daemon's own among them, which then took the mail meant for a
/// next hop that is down and relayed it to itself, round and round (a failed run of
/// `delay_warning_then_expiry`).
pub struct Down {
    socket: tokio::net::TcpSocket,
    pub addr: std::net::SocketAddr,
}

impl Down {
    pub fn new() -> Down {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("binding a port nothing will listen on");
        let addr = socket.local_addr().unwrap();
        Down { socket, addr }
    }

    /// Frees the port, for a server that comes up on it.
    pub fn release(self) -> std::net::SocketAddr {
        self.addr
    }
}
