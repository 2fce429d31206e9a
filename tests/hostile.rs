//! Hostile SMTP clients: floods of recipients, NUL bytes and invalid UTF-8, a client that never
//! reads our replies, one that trickles bytes. Each gets a definite answer or is cut off, and
//! the daemon keeps serving a well-behaved client meanwhile.

mod support;

use std::time::{Duration, Instant};
use support::client::message;
use support::{Backend, Client, Daemon, Sink, TestConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup(backend: Backend, session: &[&str]) -> (TestConfig, Daemon, Sink) {
    let mut cfg = TestConfig::new(backend).await;
    cfg.session = session.iter().map(|s| s.to_string()).collect();
    let sink = Sink::start(&cfg.ca).await;
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    (cfg, d, sink)
}

/// A well-behaved client still gets its message through.
async fn still_serving(cfg: &TestConfig, d: &Daemon) {
    let (mut c, g) = Client::connect_from("127.0.0.9", d.mx, cfg.client_tls()).await;
    g.expect(220);
    c.secure().await;
    c.send_mail("alice@client.test", &["bob@example.test"], &message("fine"))
        .await
        .expect(250);
}

/// 10,000 pipelined RCPT: the first 1,000 accepted, the rest 452 4.5.3, every one answered.
async fn ten_thousand_recipients(backend: Backend) {
    let (cfg, d, sink) = setup(backend, &[]).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.cmd("MAIL FROM:<alice@client.test>").await.expect(250);
    let mut batch = String::new();
    for i in 0..10_000 {
        batch.push_str(&format!("RCPT TO:<user{i}@example.test>\r\n"));
    }
    c.send_raw(batch.as_bytes()).await;
    let (mut ok, mut full) = (0, 0);
    for _ in 0..10_000 {
        match c.read().await.code {
            250 => ok += 1,
            452 => full += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, full), (1000, 9000));
    still_serving(&cfg, &d).await;
    drop(sink);
}

/// NUL bytes and invalid UTF-8 get a refusal, not a crash; the session goes on.
async fn nul_and_invalid_utf8(backend: Backend) {
    let (cfg, d, _sink) = setup(backend, &[]).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.send_raw(b"MAIL FROM:<a\0b@client.test>\r\n").await;
    assert!(c.read().await.code >= 500);
    c.send_raw(b"MAIL FROM:<\xff\xfe@client.test>\r\n").await;
    assert!(c.read().await.code >= 500);
    c.send_raw(b"NO\0OP\r\n").await;
    assert!(c.read().await.code >= 500);
    c.cmd("NOOP").await.expect(250);
    still_serving(&cfg, &d).await;
}

/// A client that sends and never reads: once its replies fill the socket buffers, the write
/// times out and the session ends; others are served meanwhile.
async fn client_that_never_reads(backend: Backend) {
    let (cfg, d, _sink) = setup(backend, &["command_timeout = \"1s\""]).await;
    let mut s = tokio::net::TcpStream::connect(d.mx).await.unwrap();
    let noops = "NOOP\r\n".repeat(20_000);
    let started = Instant::now();
    // Keep writing until the server gives up on us (our own writes then fail).
    let writer = async {
        for _ in 0..50 {
            if s.write_all(noops.as_bytes()).await.is_err() {
                return true;
            }
        }
        false
    };
    still_serving(&cfg, &d).await;
    let gave_up = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .unwrap_or(false);
    assert!(
        gave_up,
        "the server kept the session of a client that never reads"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    support::eventually("the session's log line", || async {
        d.log().contains("the client does not read").then_some(())
    })
    .await;
}

/// A client that trickles a byte at a time is cut off at `session.max_duration`.
async fn trickling_client(backend: Backend) {
    let (cfg, d, _sink) = setup(backend, &["max_duration = \"2s\""]).await;
    let mut s = tokio::net::TcpStream::connect(d.mx).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let _ = s.read(&mut buf).await; // the greeting
    let cut = async {
        loop {
            for b in b"NOOP\r\n" {
                if s.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut reply = [0u8; 64];
            match s.read(&mut reply).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), cut)
        .await
        .expect("never cut off");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    still_serving(&cfg, &d).await;
}

on_both_stores!(
    ten_thousand_recipients,
    nul_and_invalid_utf8,
    client_that_never_reads,
    trickling_client,
);

/// PostgreSQL stops answering while mail arrives: the client gets 451 (nothing acknowledged
/// that is not stored), and service resumes by itself when the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_tempfails_then_recovers() {
    if !support::db::postgres_available() {
        return;
    }
    let (cfg, d, sink) = setup(Backend::Postgres, &[]).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    support::db::set_reachable(&cfg.store_url, false).await;
    let r = c
        .send_mail("alice@client.test", &["bob@example.test"], &message("down"))
        .await;
    assert_eq!(r.code, 451, "{r}");
    support::db::set_reachable(&cfg.store_url, true).await;
    let mut id = None;
    for _ in 0..100 {
        let r = c
            .send_mail("alice@client.test", &["bob@example.test"], &message("up"))
            .await;
        if r.code == 250 {
            id = Some(r.queued_id());
            break;
        }
        assert_eq!(r.code, 451, "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = id.expect("service resumed once the store was back");
    let got = sink.wait_for(1).await;
    assert_eq!(got.len(), 1, "only the acknowledged message");
    assert!(got[0].text().contains(&id));
}
