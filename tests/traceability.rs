//! Traceability: every accepted message accounted for (`report`, the metric) after a mixed
//! workload with SIGKILL restarts; the hash chain of events catching a changed, deleted or
//! reordered row (`events verify`), with several nodes; bodies purged after their retention.

mod support;

use passerelle::store::Store;
use passerelle::store::events::{EventKind, Recorder};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::client::message;
use support::http::{get, metric};
use support::{Backend, Client, Daemon, Sink, TestConfig};

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

fn cli_json(d: &Daemon, args: &[&str]) -> (i32, Value) {
    let out = d.cli(args);
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// What each client sends in turn: a clean message, certain spam (deleted), an empty sender
/// (deleted silently), a recipient the next hop refuses (bounced), one it defers (queued).
fn nth_mail(i: usize) -> (&'static str, &'static str, String) {
    match i % 5 {
        0 => ("alice@client.test", "bob@example.test", message("clean")),
        1 => (
            "alice@client.test",
            "bob@example.test",
            format!("Subject: offer\nFrom: a@client.test\n\n{GTUBE}\n"),
        ),
        2 => ("", "bob@example.test", message("forged bounce")),
        3 => ("alice@client.test", "gone@example.test", message("bounced")),
        _ => (
            "alice@client.test",
            "later@example.test",
            message("deferred"),
        ),
    }
}

/// Sends until the connection dies or `n` messages went; pushes each acknowledged id.
async fn send_some(
    cfg: Arc<TestConfig>,
    mx: std::net::SocketAddr,
    n: usize,
    acked: Arc<Mutex<Vec<String>>>,
) {
    for i in 0..n {
        let (from, to, body) = nth_mail(i);
        let Ok(stream) = tokio::net::TcpStream::connect(mx).await else {
            return;
        };
        drop(stream);
        let (mut c, g) = Client::connect(mx, cfg.client_tls()).await;
        if g.code != 220 || c.cmd("EHLO client.test").await.code != 250 {
            return;
        }
        if c.cmd("STARTTLS").await.code != 220 {
            return;
        }
        c.handshake().await;
        if c.cmd("EHLO client.test").await.code != 250 {
            return;
        }
        // A client cut off by the kill panics here, inside its own task.
        let r = c.send_mail(from, &[to], &body).await;
        match r.code {
            250 => acked.lock().unwrap().push(r.queued_id()),
            _ => return,
        }
    }
}

/// Accepted = delivered + bounced + deleted + quarantined + queued, per direction, with no
/// message unaccounted for, after clients were cut off by SIGKILL twice; the metric says 0. Then
/// a `received` event removed behind the daemon's back: the report names the message and exits
/// 3, and the metric says 1.
async fn every_message_is_accounted_for(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    cfg.retry = vec!["1h"];
    cfg.lease = "2s";
    let sink = Sink::start(&cfg.ca).await;
    {
        let mut s = sink.script();
        s.rcpt
            .insert("gone@example.test".into(), "550 5.1.1 no such user".into());
        s.rcpt
            .insert("later@example.test".into(), "451 4.3.0 try later".into());
    }
    cfg.policy = "[policy.inbound]\nstages = [\"sender\", \"spam\"]\n\
                  [policy.outbound]\nstages = [\"spam\"]\n"
        .into();
    let cfg = Arc::new(cfg.domain("example.test", sink.addr));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));

    for round in 0..2 {
        let d = Daemon::start(&cfg).await;
        let clients: Vec<_> = (0..3)
            .map(|_| tokio::spawn(send_some(cfg.clone(), d.mx, 40, acked.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(300 + 200 * round)).await;
        d.kill();
        for c in clients {
            let _ = c.await;
        }
    }
    let d = Daemon::start(&cfg).await;
    // Outbound spam is held in quarantine (and its sender told).
    let (mut c, _) = Client::connect_from("127.0.0.2", d.mx, cfg.client_tls()).await;
    c.secure().await;
    let held = c
        .send_mail(
            "alice@example.test",
            &["carol@elsewhere.test"],
            &format!("From: alice@example.test\nSubject: offer\n\n{GTUBE}\n"),
        )
        .await
        .expect(250)
        .queued_id();
    c.cmd("QUIT").await;
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 5,
        "only {} messages acknowledged",
        acked.len()
    );

    // Wait until nothing is in flight: every recipient tried at least once, none leased.
    support::eventually("the queue to settle", || async {
        let busy = support::db::ints(
            &cfg.store_url,
            "SELECT COUNT(*) FROM recipients WHERE status = 'queued' OR lease_owner IS NOT NULL",
        )
        .await;
        (busy == [0]).then_some(())
    })
    .await;
    let (code, report) = cli_json(&d, &["report", "--json"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["unaccounted"], json!([]), "{report}");
    for (direction, f) in report["directions"].as_object().unwrap() {
        let deleted: i64 = f["deleted"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .sum();
        let placed = ["delivered", "bounced", "quarantined", "queued"]
            .iter()
            .map(|k| f[k].as_i64().unwrap())
            .sum::<i64>()
            + deleted;
        assert_eq!(f["accepted"].as_i64().unwrap(), placed, "{direction}: {f}");
    }
    let inbound = &report["directions"]["inbound"];
    // Every acknowledged message is in the store (a few more may be: stored, then killed
    // before the 250 reached the client).
    assert!(
        inbound["accepted"].as_i64().unwrap() >= acked.len() as i64,
        "{report}"
    );
    assert!(
        inbound["deleted"]["spam"].as_i64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(
        inbound["deleted"]["sender"].as_i64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(inbound["bounced"].as_i64().unwrap() > 0, "{report}");
    assert!(inbound["queued"].as_i64().unwrap() > 0, "{report}");
    assert_eq!(
        report["directions"]["outbound"]["quarantined"], 1,
        "{report}"
    );
    let (_, metrics) = get(d.admin, "/metrics").await;
    assert_eq!(
        metric(&metrics, "passerelle_unaccounted_messages "),
        0.0,
        "{metrics}"
    );

    // A message whose `received` event is gone is not accounted for.
    let victim = acked[0].clone();
    let removed = support::db::exec(
        &cfg.store_url,
        &format!("DELETE FROM events WHERE message_id = '{victim}' AND kind = 'received'"),
    )
    .await;
    assert_eq!(removed, 1);
    let (code, r) = cli_json(&d, &["report", "--json"]);
    assert_eq!(code, 3, "{r}");
    assert_eq!(r["unaccounted"][0]["message_id"], victim.as_str(), "{r}");
    let text = String::from_utf8_lossy(&d.cli(&["report"]).stdout).into_owned();
    assert!(
        text.contains(&format!("{victim} has no `received` event")),
        "{text}"
    );
    d.stop().await;
    let d = Daemon::start(&cfg).await;
    let m = support::eventually("the metric to count it", || async {
        let (_, m) = get(d.admin, "/metrics").await;
        m.contains("passerelle_unaccounted_messages ").then_some(m)
    })
    .await;
    assert_eq!(metric(&m, "passerelle_unaccounted_messages "), 1.0, "{m}");
    let _ = held;
}

/// The daemon seals its events; `events verify` finds the chain whole, then names the first
/// event when a row is changed, and the first one after a deleted row.
async fn tampering_breaks_the_chain(backend: Backend) {
    let cfg = TestConfig::new(backend).await;
    let sink = Sink::start(&cfg.ca).await;
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    for i in 0..3 {
        let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
        c.secure().await;
        c.send_mail(
            "alice@client.test",
            &["bob@example.test"],
            &message(&format!("m{i}")),
        )
        .await
        .expect(250);
        c.cmd("QUIT").await;
    }
    sink.wait_for(3).await;
    let (code, v) = support::eventually("every event sealed", || async {
        let (code, v) = cli_json(&d, &["events", "verify", "--json"]);
        (v["nodes"][0]["unsealed"] == 0 && v["nodes"][0]["sealed"].as_i64() >= Some(9))
            .then_some((code, v))
    })
    .await;
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["holds"], true);
    assert_eq!(v["nodes"][0]["node"], "test-node");
    d.stop().await;

    let ids = support::db::ints(&cfg.store_url, "SELECT id FROM events ORDER BY seq").await;
    let middle = ids[ids.len() / 2];
    support::db::exec(
        &cfg.store_url,
        &format!("UPDATE events SET detail = '{{\"forged\":true}}' WHERE id = {middle}"),
    )
    .await;
    let out = run(&cfg, &["events", "verify"]);
    assert_eq!(out.0, 3, "{}", out.1);
    assert!(
        out.1.contains(&format!("BROKEN at event {middle} ")) && out.1.contains("changed"),
        "{}",
        out.1
    );

    // Put it back as it was? The hash cannot be matched by guessing; delete it instead: the
    // chain then breaks at the row after it, as a gap.
    support::db::exec(
        &cfg.store_url,
        &format!("DELETE FROM events WHERE id = {middle}"),
    )
    .await;
    let next = ids[ids.len() / 2 + 1];
    let out = run(&cfg, &["events", "verify"]);
    assert_eq!(out.0, 3, "{}", out.1);
    assert!(
        out.1.contains(&format!("BROKEN at event {next} ")) && out.1.contains("missing"),
        "{}",
        out.1
    );
}

fn run(cfg: &TestConfig, args: &[&str]) -> (i32, String) {
    let out = support::daemon::run_cli(&cfg.write(), args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// An event written without its link, as PostgreSQL writes them (the sealer links them after
/// the commit) and as SQLite did before it linked them in the writing transaction.
async fn unlinked(cfg: &TestConfig, node: &str, i: usize) {
    support::db::exec(
        &cfg.store_url,
        &format!(
            "INSERT INTO events (message_id, recipient, at, node, kind, detail, config_hash) \
             VALUES ('m{i}', NULL, {i}, '{node}', 'received', '{{\"i\":{i}}}', 'test')"
        ),
    )
    .await;
}

/// Two nodes writing to one store each keep their own chain; swapping two rows of one node's
/// chain breaks that chain only.
async fn each_node_keeps_its_chain(backend: Backend) {
    let cfg = TestConfig::new(backend).await;
    passerelle::tls::install_provider();
    let store = Store::connect(&cfg.store_url, 2).await.unwrap();
    store.migrate().await.unwrap();
    for i in 0..20 {
        unlinked(&cfg, if i % 3 == 0 { "node-b" } else { "node-a" }, i).await;
        if i == 10 {
            // Sealing as the events come, in two rounds, makes one chain all the same.
            store.seal("node-a").await.unwrap();
        }
    }
    let head_a = store
        .seal("node-a")
        .await
        .unwrap()
        .expect("node-a had events to seal");
    let head_b = store
        .seal("node-b")
        .await
        .unwrap()
        .expect("node-b had events to seal");
    assert_eq!((head_a.seq, head_b.seq), (13, 7));
    assert_eq!(
        store.seal("node-b").await.unwrap(),
        None,
        "nothing left to seal"
    );
    let chains = store.verify_events().await.unwrap();
    assert_eq!(chains.len(), 2);
    assert!(
        chains.iter().all(|c| c.broken.is_none() && c.unsealed == 0),
        "{chains:?}"
    );
    assert_eq!(chains[0].head.as_ref(), Some(&head_a));

    // Reorder node-b's second and third events (their contents change places).
    let b_ids = support::db::ints(
        &cfg.store_url,
        "SELECT id FROM events WHERE node = 'node-b' ORDER BY seq",
    )
    .await;
    let (x, y) = (b_ids[1], b_ids[2]);
    support::db::exec(
        &cfg.store_url,
        &format!(
            "UPDATE events SET seq = CASE WHEN id = {x} THEN -1 ELSE seq END WHERE id = {x};\n\
             UPDATE events SET seq = 2 WHERE id = {y};\n\
             UPDATE events SET seq = 3 WHERE id = {x};"
        ),
    )
    .await;
    let chains = store.verify_events().await.unwrap();
    assert!(
        chains[0].broken.is_none(),
        "node-a untouched: {:?}",
        chains[0]
    );
    let broken = chains[1].broken.as_ref().expect("node-b's chain is broken");
    assert_eq!((broken.event_id, broken.seq), (y, 2), "{broken:?}");
    store.close().await;
}

/// With `store.retention` short, the body of a delivered message is purged (a `purged` event
/// says so), a deferred one's is kept; `purge --dry-run` lists before, changes nothing.
async fn bodies_are_purged_after_retention(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    cfg.retry = vec!["1h"];
    let sink = Sink::start(&cfg.ca).await;
    sink.script()
        .rcpt
        .insert("later@example.test".into(), "451 4.3.0 try later".into());
    cfg.store_extra = vec!["retention = \"1s\"".into()];
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    let mut ids = Vec::new();
    for to in ["bob@example.test", "later@example.test"] {
        let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
        c.secure().await;
        ids.push(
            c.send_mail("alice@client.test", &[to], &message("kept a while"))
                .await
                .expect(250)
                .queued_id(),
        );
        c.cmd("QUIT").await;
    }
    sink.wait_for(1).await;
    let (delivered, deferred) = (&ids[0], &ids[1]);
    let listed = support::eventually("the delivered message to be due", || async {
        let (_, v) = cli_json(&d, &["purge", "--dry-run", "--json"]);
        (v.as_array().map(Vec::len) == Some(1)).then_some(v)
    })
    .await;
    assert_eq!(listed[0]["message_id"], delivered.as_str());
    let bodies =
        |id: &str| format!("SELECT COUNT(*) FROM messages WHERE id = '{id}' AND body IS NOT NULL");
    assert_eq!(
        support::db::ints(&cfg.store_url, &bodies(delivered)).await,
        [1]
    );
    let (code, v) = cli_json(&d, &["purge", "--json"]);
    assert_eq!((code, &v["purged"]), (0, &json!(1)), "{v}");
    assert_eq!(
        support::db::ints(&cfg.store_url, &bodies(delivered)).await,
        [0]
    );
    assert_eq!(
        support::db::ints(&cfg.store_url, &bodies(deferred)).await,
        [1]
    );
    let trace = d.cli(&["trace", delivered]);
    let trace = String::from_utf8_lossy(&trace.stdout);
    assert!(trace.contains(" purged "), "{trace}");
    assert!(trace.contains(" delivered "), "the events stay: {trace}");
}

/// Seals are written without a sync of their own (SQLite, for events written unlinked): one lost
/// in a crash leaves its events unsealed, and sealing them again makes the very same chain.
async fn a_lost_seal_is_made_again_the_same(backend: Backend) {
    let cfg = TestConfig::new(backend).await;
    passerelle::tls::install_provider();
    let store = Store::connect(&cfg.store_url, 2).await.unwrap();
    store.migrate().await.unwrap();
    for i in 0..12 {
        unlinked(&cfg, "node-a", i).await;
    }
    let head = store.seal("node-a").await.unwrap().expect("events to seal");
    let chain = "SELECT hash FROM events WHERE node = 'node-a' ORDER BY seq";
    let before = support::db::strs(&cfg.store_url, chain).await;
    // The newest seals never reached the disk.
    let lost = support::db::exec(
        &cfg.store_url,
        "UPDATE events SET seq = NULL, prev_hash = NULL, hash = NULL \
         WHERE node = 'node-a' AND seq > 5",
    )
    .await;
    assert_eq!(lost, 7);
    assert_eq!(store.seal("node-a").await.unwrap(), Some(head));
    assert_eq!(support::db::strs(&cfg.store_url, chain).await, before);
    let chains = store.verify_events().await.unwrap();
    assert!(
        chains[0].broken.is_none() && chains[0].unsealed == 0,
        "{chains:?}"
    );
    store.close().await;
}

/// Events a node writes join its chain in the transaction that writes them (never open to an
/// unnoticed edit), after one written unlinked; on PostgreSQL, those written while another
/// transaction holds the chain's lock are written unlinked and join it when the sealer comes by.
async fn written_events_join_the_chain(backend: Backend) {
    let cfg = TestConfig::new(backend).await;
    passerelle::tls::install_provider();
    let store = Store::connect(&cfg.store_url, 2).await.unwrap();
    store.migrate().await.unwrap();
    let rec = Recorder {
        node: "node-a".into(),
        config_hash: "test".into(),
    };
    let record = |from: usize, to: usize| {
        let (store, rec) = (&store, &rec);
        async move {
            for i in from..=to {
                let detail = json!({ "i": i });
                store
                    .record(rec, &format!("m{i}"), EventKind::Received, detail)
                    .await
                    .unwrap();
            }
        }
    };
    // One written unlinked first (an older version's): the chain goes on after it.
    unlinked(&cfg, "node-a", 0).await;
    store.seal("node-a").await.unwrap();
    record(1, 10).await;
    let before = &store.verify_events().await.unwrap()[0];
    assert_eq!((before.sealed, before.unsealed), (11, 0), "{before:?}");
    let mut sealed = 11;
    if backend == Backend::Postgres {
        // The chain's lock, held by another session: the next events do not wait for it.
        use sqlx::Connection;
        let mut holder = sqlx::PgConnection::connect(&cfg.store_url).await.unwrap();
        let hold = "SELECT pg_advisory_lock(1885434739, hashtext('node-a'))";
        sqlx::query(hold).execute(&mut holder).await.unwrap();
        record(11, 13).await;
        let held = &store.verify_events().await.unwrap()[0];
        assert_eq!((held.sealed, held.unsealed), (11, 3), "{held:?}");
        holder.close().await.unwrap();
        sealed = 14;
    }
    store.seal("node-a").await.unwrap();
    let after = &store.verify_events().await.unwrap()[0];
    assert!(after.broken.is_none(), "{after:?}");
    assert_eq!((after.sealed, after.unsealed), (sealed, 0));
    assert_eq!(after.head.as_ref().map(|h| h.seq), Some(sealed));
    store.close().await;
}

on_both_stores!(
    written_events_join_the_chain,
    every_message_is_accounted_for,
    tampering_breaks_the_chain,
    each_node_keeps_its_chain,
    bodies_are_purged_after_retention,
    a_lost_seal_is_made_again_the_same
);
