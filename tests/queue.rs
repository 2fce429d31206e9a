//! The queue: notices to the sender (failure, expiry, delay), queue operations, connection
//! reuse, outbound TLS policy. Retry and expiry use short schedules from the config.

mod support;

use support::client::message;
use support::http::{get, metric};
use support::{Backend, Client, Daemon, Sink, TestCa, TestConfig};

/// Sends one message from `from` to `rcpts` through the MX listener; returns its id.
async fn send(d: &Daemon, cfg: &TestConfig, from: &str, rcpts: &[&str]) -> String {
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    let id = c
        .send_mail(from, rcpts, &message("queue test"))
        .await
        .expect(250)
        .queued_id();
    c.cmd("QUIT").await;
    id
}

async fn wait_event(d: &Daemon, id: &str, kind: &str) -> Vec<serde_json::Value> {
    support::eventually(&format!("a {kind} event for {id}"), || async {
        let t = d.trace(id);
        t.iter().any(|e| e["kind"] == kind).then_some(t)
    })
    .await
}

fn queue_list(d: &Daemon, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["queue", "list", "--json"];
    all.extend_from_slice(args);
    let out = d.cli(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A recipient refused with 5xx fails at once, and the sender gets one RFC 3464 report, sent
/// with an empty envelope sender; the original's body is not copied into it.
async fn failure_notifies_the_sender(backend: Backend) {
    let cfg = TestConfig::new(backend).await;
    let sink = Sink::start(&cfg.ca).await;
    sink.script()
        .rcpt
        .insert("gone@example.test".into(), "550 5.1.1 no such user".into());
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    let id = send(
        &d,
        &cfg,
        "alice@example.test",
        &["gone@example.test", "bob@example.test"],
    )
    .await;
    let got = sink.wait_for(2).await;
    let original = got.iter().find(|m| !m.mail_from.is_empty()).unwrap();
    assert_eq!(original.rcpts, ["bob@example.test"]);
    let notice = got
        .iter()
        .find(|m| m.mail_from.is_empty())
        .expect("a notice with MAIL FROM:<>");
    assert_eq!(notice.rcpts, ["alice@example.test"]);
    let text = notice.text();
    assert!(text.contains("multipart/report"), "{text}");
    assert!(
        text.contains("report-type=delivery-status")
            || text.contains("report-type=\"delivery-status\""),
        "{text}"
    );
    assert!(
        text.contains("gone@example.test") && text.contains("5.1.1"),
        "{text}"
    );
    assert!(
        !text.contains("this is a test"),
        "the original body must not be copied back"
    );
    let t = wait_event(&d, &id, "notice").await;
    assert_eq!(t.iter().filter(|e| e["kind"] == "notice").count(), 1);
}

/// A message with an empty sender never causes a notice.
async fn no_notice_for_null_sender(backend: Backend) {
    let cfg = TestConfig::new(backend).await;
    let sink = Sink::start(&cfg.ca).await;
    sink.script()
        .rcpt
        .insert("gone@example.test".into(), "550 5.1.1 no such user".into());
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    let id = send(&d, &cfg, "", &["gone@example.test", "bob@example.test"]).await;
    let t = wait_event(&d, &id, "failed").await;
    sink.wait_for(1).await;
    assert!(!t.iter().any(|e| e["kind"] == "notice"), "{t:#?}");
    assert_eq!(sink.received().len(), 1);
}

/// Past `queue.lifetime` a deferred recipient fails and the sender is told; before that, after
/// `queue.warn_after`, the sender is told once that delivery is delayed.
async fn delay_warning_then_expiry(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    cfg.retry = vec!["300ms"];
    cfg.lifetime = "3s";
    cfg.queue = vec!["warn_after = \"1s\"".into()];
    let senders = Sink::start(&cfg.ca).await;
    let down = support::Down::new();
    let cfg = cfg
        .domain("example.test", down.addr)
        .domain("client.test", senders.addr);
    let d = Daemon::start(&cfg).await;
    let id = send(&d, &cfg, "alice@client.test", &["bob@example.test"]).await;
    let notices = senders.wait_for(2).await;
    let (delayed, failed) = (notices[0].text(), notices[1].text());
    assert!(delayed.contains("Subject: Delayed Mail"), "{delayed}");
    assert!(delayed.contains("Action: delayed"), "{delayed}");
    assert!(failed.contains("Subject: Undelivered Mail"), "{failed}");
    assert!(failed.contains("Action: failed"), "{failed}");
    let t = wait_event(&d, &id, "failed").await;
    let failed_event = t.iter().find(|e| e["kind"] == "failed").unwrap();
    assert!(
        failed_event["detail"]["reply"]
            .as_str()
            .unwrap()
            .contains("lifetime")
    );
    assert_eq!(
        t.iter().filter(|e| e["kind"] == "notice").count(),
        2,
        "one delay, one failure"
    );
}

/// A route that leads back to the gateway itself: the message goes round, a `Received:` field
/// more each turn, until it carries more than `session.max_hops`; that turn is refused with
/// 554 5.4.6, and the sender gets one bounce saying so. Nothing goes round after it.
async fn a_mail_loop_ends_in_one_bounce(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    cfg.session = vec!["max_hops = 4".into()];
    let senders = Sink::start(&cfg.ca).await;
    // The next hop of example.test: a plain TCP relay to the daemon's own MX, whose port is
    // only known once it runs.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = cfg
        .domain("example.test", relay.local_addr().unwrap())
        .domain("client.test", senders.addr);
    let d = Daemon::start(&cfg).await;
    let mx = d.mx;
    let relaying = tokio::spawn(async move {
        while let Ok((mut from, _)) = relay.accept().await {
            tokio::spawn(async move {
                if let Ok(mut to) = tokio::net::TcpStream::connect(mx).await {
                    let _ = tokio::io::copy_bidirectional(&mut from, &mut to).await;
                }
            });
        }
    });
    send(&d, &cfg, "alice@client.test", &["bob@example.test"]).await;
    let got = senders.wait_for(1).await;
    assert!(got[0].mail_from.is_empty(), "a bounce, from <>");
    assert_eq!(got[0].rcpts, ["alice@client.test"]);
    let text = got[0].text();
    assert!(
        text.contains("Action: failed") && text.contains("5.4.6") && text.contains("mail loop"),
        "{text}"
    );
    // Accepted with 0 to 4 Received fields, refused with 5.
    let count = |sql: &'static str| async { support::db::ints(&cfg.store_url, sql).await[0] };
    assert_eq!(
        count("SELECT COUNT(*) FROM messages WHERE sender = 'alice@client.test'").await,
        5
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE kind = 'refused'").await,
        1
    );
    relaying.abort();
}

/// hold, release, retry, bounce and delete, against a running daemon, each an event.
async fn queue_operations(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    cfg.retry = vec!["1h"];
    let senders = Sink::start(&cfg.ca).await;
    let down = support::Down::new();
    let cfg = cfg
        .domain("example.test", down.addr)
        .domain("client.test", senders.addr);
    let d = Daemon::start(&cfg).await;
    let a = send(&d, &cfg, "alice@client.test", &["bob@example.test"]).await;
    let b = send(&d, &cfg, "alice@client.test", &["carol@example.test"]).await;
    let c = send(&d, &cfg, "alice@client.test", &["dave@example.test"]).await;
    for id in [&a, &b, &c] {
        wait_event(&d, id, "deferred").await;
    }
    let listed = queue_list(&d, &["--domain", "example.test"]);
    assert_eq!(listed.len(), 3, "{listed:#?}");
    assert!(listed.iter().all(|e| e["status"] == "deferred"));
    assert_eq!(
        queue_list(&d, &["--recipient", "carol@example.test"]).len(),
        1
    );

    assert!(d.cli(&["queue", "hold", &a]).status.success());
    assert_eq!(
        queue_list(&d, &["--status", "held"])[0]["message_id"],
        a.as_str()
    );
    assert!(d.cli(&["queue", "delete", &c]).status.success());
    assert!(
        d.cli(&["queue", "retry"]).status.code() != Some(0),
        "retry needs ids or --all"
    );

    // The next hop comes back; with a 1h schedule only an administrator's retry sends now.
    let sink = Sink::start_on(&cfg.ca, &down.release().to_string()).await;
    assert!(d.cli(&["queue", "retry", "--all"]).status.success());
    let got = sink.wait_for(1).await;
    assert_eq!(
        got[0].rcpts,
        ["carol@example.test"],
        "held and deleted stay put"
    );
    assert!(d.cli(&["queue", "release", &a]).status.success());
    let got = sink.wait_for(2).await;
    assert_eq!(got[1].rcpts, ["bob@example.test"]);

    sink.script()
        .rcpt
        .insert("erin@example.test".into(), "451 4.3.0 later".into());
    let e = send(&d, &cfg, "alice@client.test", &["erin@example.test"]).await;
    wait_event(&d, &e, "deferred").await;
    let out = d.cli(&["queue", "bounce", &e]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let notice = senders.wait_for(1).await;
    assert!(notice[0].text().contains("erin@example.test"));
    assert!(notice[0].text().contains("administrator"));

    let kinds = |id: &str| -> Vec<String> {
        d.trace(id)
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(kinds(&a).contains(&"held".into()) && kinds(&a).contains(&"released".into()));
    assert!(kinds(&b).contains(&"retry".into()));
    assert!(kinds(&c).contains(&"deleted".into()));
    assert!(!kinds(&c).contains(&"delivered".into()));
    assert!(kinds(&e).contains(&"failed".into()) && kinds(&e).contains(&"notice".into()));
    let shown = d.cli(&["queue", "show", &c]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("deleted"));
}

/// Messages to one host in a row reuse one connection (and its TLS session).
async fn connections_are_reused(backend: Backend) {
    let cfg = TestConfig::new(backend).await;
    let sink = Sink::start(&cfg.ca).await;
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(send(&d, &cfg, "alice@client.test", &["bob@example.test"]).await);
        sink.wait_for(i).await;
    }
    assert_eq!(
        sink.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let t = wait_event(&d, &ids[2], "attempt").await;
    let attempt = t.iter().find(|e| e["kind"] == "attempt").unwrap();
    assert_eq!(attempt["detail"]["reused_connection"], true);
    assert_eq!(attempt["detail"]["tls_version"], "TLSv1.3");
}

/// `require-verified` defers a host whose certificate is not trusted; `require` accepts it;
/// `opportunistic` sends in clear only when TLS is not offered.
async fn outbound_tls_policy(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    let stranger = TestCa::new(&cfg.dir.path().join("stranger").tap_mkdir());
    let untrusted = Sink::start(&stranger).await;
    let clear = Sink::start(&cfg.ca).await;
    clear.script().no_starttls = true;
    cfg.route_tls = "require-verified";
    cfg.delivery = vec![
        "[delivery.routes]".into(),
        format!("\"any.test\" = \"{}\"", untrusted.addr),
        format!("\"clear.test\" = \"{}\"", clear.addr),
        "[delivery.tls_policy]".into(),
        "\"clear.test\" = \"opportunistic\"".into(),
    ];
    let cfg = cfg.domain("verified.test", untrusted.addr);
    let d = Daemon::start(&cfg).await;
    let (mut c, _) = Client::connect_from("127.0.0.2", d.mx, cfg.client_tls()).await;
    c.secure().await;
    let v = c
        .send_mail("a@verified.test", &["x@verified.test"], &message("v"))
        .await
        .expect(250)
        .queued_id();
    let a = c
        .send_mail("a@verified.test", &["x@any.test"], &message("a"))
        .await
        .expect(250)
        .queued_id();
    let o = c
        .send_mail("a@verified.test", &["x@clear.test"], &message("o"))
        .await
        .expect(250)
        .queued_id();
    let t = wait_event(&d, &v, "deferred").await;
    let reply = t.iter().find(|e| e["kind"] == "deferred").unwrap()["detail"]["reply"].to_string();
    assert!(reply.contains("4.7.5") && reply.contains("TLS"), "{reply}");
    wait_event(&d, &a, "delivered").await;
    let t = wait_event(&d, &o, "delivered").await;
    assert_eq!(
        t.iter().find(|e| e["kind"] == "attempt").unwrap()["detail"]["tls_version"],
        "none"
    );
    let got = untrusted.wait_for(1).await;
    assert_eq!(
        got.len(),
        1,
        "only the any.test message reached the untrusted host"
    );
    assert!(got[0].tls);
    assert!(!clear.wait_for(1).await[0].tls);
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}
impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// A message this node has just committed goes to its scheduler in memory, leased in the same
/// commit: it is delivered with no claim from the store, though the scheduler would not look
/// there unprompted for an hour. A recipient it deferred is claimed back when its retry is due.
async fn new_mail_is_handed_over_and_retries_are_claimed_when_due(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    cfg.poll_interval = "1h";
    cfg.retry = vec!["300ms"];
    let sink = Sink::start(&cfg.ca).await;
    sink.script()
        .rcpt
        .insert("later@example.test".into(), "451 4.3.0 try later".into());
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    for _ in 0..3 {
        send(&d, &cfg, "alice@client.test", &["bob@example.test"]).await;
    }
    sink.wait_for(3).await;
    let taken = |text: &str, from: &str| {
        metric(
            text,
            &format!("passerelle_queue_taken_total{{from=\"{from}\"}}"),
        )
    };
    let (_, text) = get(d.admin, "/metrics").await;
    assert_eq!(taken(&text, "handoff"), 3.0, "{text}");
    assert_eq!(taken(&text, "claim"), 0.0, "{text}");

    let id = send(&d, &cfg, "alice@client.test", &["later@example.test"]).await;
    wait_event(&d, &id, "deferred").await;
    sink.script().rcpt.remove("later@example.test");
    wait_event(&d, &id, "delivered").await;
    let (_, text) = get(d.admin, "/metrics").await;
    assert_eq!(taken(&text, "handoff"), 4.0, "{text}");
    assert_eq!(
        taken(&text, "claim"),
        1.0,
        "the retry came from the store: {text}"
    );
}

on_both_stores!(
    new_mail_is_handed_over_and_retries_are_claimed_when_due,
    failure_notifies_the_sender,
    no_notice_for_null_sender,
    delay_warning_then_expiry,
    a_mail_loop_ends_in_one_bounce,
    queue_operations,
    connections_are_reused,
    outbound_tls_policy,
);

/// `queue.per_destination` bounds deliveries in flight to one domain: with a slow server and a
/// limit of 1, messages go one at a time, and all of them arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_destination_limit() {
    let mut cfg = TestConfig::new(Backend::Sqlite).await;
    cfg.queue = vec!["per_destination = 1".into(), "concurrency = 10".into()];
    let sink = Sink::start(&cfg.ca).await;
    sink.script().data_delay = Some(std::time::Duration::from_millis(300));
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    for _ in 0..4 {
        send(&d, &cfg, "alice@client.test", &["bob@example.test"]).await;
    }
    sink.wait_for(4).await;
    let max = support::sink::MAX_IN_DATA.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(max, 1, "deliveries to one domain overlapped");
}
