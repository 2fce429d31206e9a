//! Nothing lost: SIGKILL at a random moment while mail arrives, and two nodes sharing one
//! PostgreSQL queue (exactly once normally; a killed node's recipients taken over after its lease).

mod support;

use rand::Rng;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::client::message;
use support::{Backend, Client, Daemon, Sink, TestConfig};

/// Clients send as fast as they can; the daemon is killed with SIGKILL at a random moment and
/// started again. Every message that got 250 reaches the sink.
async fn sigkill_loses_no_acknowledged_message(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    cfg.retry = vec!["200ms"];
    cfg.lease = "2s";
    let sink = Sink::start(&cfg.ca).await;
    let cfg = Arc::new(cfg.domain("example.test", sink.addr));
    let d = Daemon::start(&cfg).await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for n in 0..4 {
        let (cfg, acked, mx) = (cfg.clone(), acked.clone(), d.mx);
        clients.push(tokio::spawn(async move {
            for i in 0..200 {
                let Ok(stream) = tokio::net::TcpStream::connect(mx).await else {
                    return;
                };
                drop(stream);
                let (mut c, g) = Client::connect(mx, cfg.client_tls()).await;
                if g.code != 220 {
                    return;
                }
                if !try_send(&mut c, &format!("c{n}-m{i}"), &acked).await {
                    return;
                }
            }
        }));
    }
    let wait = rand::rng().random_range(100..600);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    d.kill();
    for c in clients {
        let _ = c.await;
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(
        !acked.is_empty(),
        "no message was acknowledged before the kill ({wait} ms)"
    );
    let _d = Daemon::start(&cfg).await;
    support::eventually("every acknowledged message at the sink", || async {
        let at_sink: HashSet<String> = sink
            .received()
            .iter()
            .map(|m| received_id(&m.text()))
            .collect();
        acked.iter().all(|id| at_sink.contains(id)).then_some(())
    })
    .await;
    eprintln!(
        "killed after {wait} ms; {} messages acknowledged, all delivered",
        acked.len()
    );
}

/// One transaction on an open session; false when the connection died (the daemon was killed).
async fn try_send(c: &mut Client, subject: &str, acked: &Mutex<Vec<String>>) -> bool {
    for (line, code) in [("EHLO client.test", 250)] {
        if c.cmd(line).await.code != code {
            return false;
        }
    }
    if c.cmd("STARTTLS").await.code != 220 {
        return false;
    }
    c.handshake().await;
    let steps = [
        ("EHLO client.test", 250),
        ("MAIL FROM:<alice@client.test>", 250),
        ("RCPT TO:<bob@example.test>", 250),
        ("DATA", 354),
    ];
    for (line, code) in steps {
        if c.cmd(line).await.code != code {
            return false;
        }
    }
    let body = message(subject).replace('\n', "\r\n");
    c.send_raw(format!("{body}.\r\n").as_bytes()).await;
    let r = c.read().await;
    if r.code != 250 {
        return false;
    }
    acked.lock().unwrap().push(r.queued_id());
    true
}

/// Our id, from the `Received:` header we put on top.
fn received_id(text: &str) -> String {
    let i = text.find("\tid ").map(|i| i + 4).unwrap_or(0);
    text[i..]
        .split(['\r', ';'])
        .next()
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Concurrent acceptances are committed together, on either store; one that cannot be written
/// (its id is taken) fails alone, and every other one is on disk with its `received` event,
/// linked into the node's chain. (On PostgreSQL the group's first attempt is rolled back before
/// the retry begins: a failed run of CI found one event unlinked when the retry, on another
/// connection, found the chain's lock still held by the dropped transaction.)
async fn a_bad_write_fails_alone_in_its_group(backend: Backend) {
    use passerelle::queue::store::NewMessage;
    use support::db::recorder;
    let cfg = TestConfig::new(backend).await;
    passerelle::tls::install_provider();
    let store = passerelle::store::Store::connect(&cfg.store_url, 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let rec = recorder();
    let message = |id: &str| NewMessage::sample(id, b"Subject: x\r\n\r\nhi\r\n".to_vec());
    store.accept(&rec, message("taken"), None, 1).await.unwrap();
    let mut waits = Vec::new();
    for i in 0..40 {
        let (store, rec) = (store.clone(), rec.clone());
        let id = if i == 17 {
            "taken".to_owned()
        } else {
            format!("m{i}")
        };
        let m = message(&id);
        waits.push(tokio::spawn(async move {
            (i, store.accept(&rec, m, None, 2).await)
        }));
    }
    for w in waits {
        let (i, result) = w.await.unwrap();
        assert_eq!(result.is_err(), i == 17, "message {i}: {result:?}");
    }
    let count = |sql: &'static str| async { support::db::ints(&cfg.store_url, sql).await[0] };
    assert_eq!(
        count("SELECT COUNT(*) FROM messages").await,
        40,
        "39 new ones and the first"
    );
    assert_eq!(count("SELECT COUNT(*) FROM recipients").await, 40);
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE kind = 'received'").await,
        40,
        "the failed one left no event behind"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE seq IS NULL").await,
        0,
        "each event linked into the chain as it was written, with no sealer"
    );
    store.close().await;
}

on_both_stores!(
    sigkill_loses_no_acknowledged_message,
    a_bad_write_fails_alone_in_its_group
);

async fn pg_config(store_url: Option<String>, node: &str, sink: &Sink) -> TestConfig {
    let mut cfg = TestConfig::new(Backend::Postgres).await;
    if let Some(url) = store_url {
        cfg.store_url = url;
    }
    cfg.node = node.into();
    // The sink's certificate comes from another test CA than this config's.
    cfg.route_tls = "require";
    cfg.retry = vec!["200ms"];
    cfg.lease = "2s";
    cfg.domain("example.test", sink.addr)
}

/// Two nodes on one PostgreSQL: every recipient delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_each_recipient_once() {
    if !support::db::postgres_available() {
        return;
    }
    support::install_provider();
    let ca_cfg = TestConfig::new(Backend::Postgres).await;
    let sink = Sink::start(&ca_cfg.ca).await;
    let a_cfg = pg_config(None, "node-a", &sink).await;
    let b_cfg = pg_config(Some(a_cfg.store_url.clone()), "node-b", &sink).await;
    let a = Daemon::start(&a_cfg).await;
    let b = Daemon::start(&b_cfg).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let (d, cfg) = if i % 2 == 0 {
            (&a, &a_cfg)
        } else {
            (&b, &b_cfg)
        };
        let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
        c.secure().await;
        let rcpts = ["bob@example.test", "carol@example.test"];
        ids.push(
            c.send_mail("alice@client.test", &rcpts, &message("two"))
                .await
                .expect(250)
                .queued_id(),
        );
    }
    sink.wait_for(20).await;
    let nodes: HashSet<String> = support::eventually("every delivery recorded", || async {
        let mut nodes = HashSet::new();
        for id in &ids {
            let t = String::from_utf8_lossy(&a.cli(&["trace", id, "--json"]).stdout).into_owned();
            let delivered: Vec<serde_json::Value> = t
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|e| e["kind"] == "delivered")
                .collect();
            if delivered.len() != 2 {
                return None;
            }
            nodes.extend(
                delivered
                    .iter()
                    .map(|e| e["node"].as_str().unwrap().to_owned()),
            );
        }
        Some(nodes)
    })
    .await;
    // Each recipient exactly once. (Two nodes may split one message's recipients between them:
    // it then arrives twice, each time for different recipients.)
    let mut seen = HashSet::new();
    for m in &sink.received() {
        for r in &m.rcpts {
            assert!(
                seen.insert((received_id(&m.text()), r.clone())),
                "{r} delivered twice"
            );
        }
    }
    assert_eq!(seen.len(), 40, "every recipient of the 20 messages");
    eprintln!("delivering nodes: {nodes:?}");
}

/// A node killed with SIGKILL in the middle of a delivery: the other node takes its recipients
/// over once the lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_nodes_recipients_are_taken_over() {
    if !support::db::postgres_available() {
        return;
    }
    support::install_provider();
    let ca_cfg = TestConfig::new(Backend::Postgres).await;
    let sink = Sink::start(&ca_cfg.ca).await;
    sink.script().data_delay = Some(Duration::from_secs(30));
    let a_cfg = pg_config(None, "node-a", &sink).await;
    let b_cfg = pg_config(Some(a_cfg.store_url.clone()), "node-b", &sink).await;
    let a = Daemon::start(&a_cfg).await;
    let (mut c, _) = Client::connect(a.mx, a_cfg.client_tls()).await;
    c.secure().await;
    let id = c
        .send_mail("alice@client.test", &["bob@example.test"], &message("m"))
        .await
        .expect(250)
        .queued_id();
    support::eventually("node-a in the middle of DATA", || async {
        (sink.data_started.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    a.kill();
    sink.script().data_delay = None;
    let b = Daemon::start(&b_cfg).await;
    let delivered = support::eventually("node-b delivers it", || async {
        let t = String::from_utf8_lossy(&b.cli(&["trace", &id, "--json"]).stdout).into_owned();
        t.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|e| e["kind"] == "delivered")
    })
    .await;
    assert_eq!(delivered["node"], "node-b");
    assert!(!sink.received().is_empty());
}
