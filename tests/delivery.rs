//! Accepted mail is stored, delivered to its route over TLS, and every step is an event.

mod support;

use support::client::message;
use support::{Backend, Client, Daemon, Sink, TestConfig};

async fn setup(backend: Backend) -> (TestConfig, Sink) {
    let cfg = TestConfig::new(backend).await;
    let sink = Sink::start(&cfg.ca).await;
    let cfg = cfg.domain("example.test", sink.addr);
    (cfg, sink)
}

/// Sends one message from alice over STARTTLS; returns its queue id.
async fn send(cfg: &TestConfig, daemon: &Daemon, rcpts: &[&str], subject: &str) -> String {
    let (mut c, _) = Client::connect(daemon.mx, cfg.client_tls()).await;
    c.secure().await;
    c.send_mail("alice@client.test", rcpts, &message(subject))
        .await
        .expect(250)
        .queued_id()
}

/// 250 only after the commit, an id in the reply and in Received:, delivered over TLS, traced.
async fn inbound_message_is_delivered_and_traced(backend: Backend) {
    let (cfg, sink) = setup(backend).await;
    let daemon = Daemon::start(&cfg).await;
    let (mut c, greeting) = Client::connect(daemon.mx, cfg.client_tls()).await;
    greeting.expect(220);
    c.secure().await;
    let reply = c
        .send_mail(
            "alice@client.test",
            &["bob@example.test"],
            &message("hello"),
        )
        .await
        .expect(250);
    assert!(reply.text().starts_with("2.0.0 queued as "), "{reply}");
    let id = reply.queued_id();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    c.cmd("QUIT").await.expect(221);

    let got = sink.wait_for(1).await;
    assert_eq!(got[0].mail_from, "alice@client.test");
    assert_eq!(got[0].rcpts, ["bob@example.test"]);
    assert!(got[0].tls, "delivery must use STARTTLS");
    assert!(got[0].pipelined, "the sink offers PIPELINING");
    let text = got[0].text();
    assert!(
        text.starts_with("Received: from client.test ([127.0.0.1])\r\n\tby mx.test"),
        "{text}"
    );
    assert!(text.contains(&format!("\tid {id}\r\n")), "{text}");
    assert!(text.contains("with ESMTPS (TLSv1.3"), "{text}");
    assert!(
        text.ends_with("Hello Bob,\r\nthis is a test.\r\n"),
        "{text:?}"
    );

    let trace = support::eventually("the delivered event", || async {
        let out = daemon.cli(&["trace", &id]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains(" delivered ").then_some(text)
    })
    .await;
    let kinds: Vec<&str> = trace
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(kinds, ["received", "attempt", "delivered"], "{trace}");
    assert!(trace.contains("test-node"), "{trace}");
    assert!(trace.contains("tls_version=TLSv1.3"), "{trace}");
    assert!(trace.contains("<bob@example.test>"), "{trace}");
    assert!(trace.contains("accepted by sink"), "{trace}");
}

/// Each recipient has its own fate: 4xx deferred and retried, 5xx failed, 250 delivered.
async fn per_recipient_outcomes(backend: Backend) {
    let (cfg, sink) = setup(backend).await;
    sink.script()
        .rcpt
        .insert("busy@example.test".into(), "450 4.2.1 mailbox busy".into());
    sink.script()
        .rcpt
        .insert("gone@example.test".into(), "550 5.1.1 no such user".into());
    let daemon = Daemon::start(&cfg).await;
    let rcpts = ["bob@example.test", "busy@example.test", "gone@example.test"];
    let id = send(&cfg, &daemon, &rcpts, "three").await;
    let first = sink.wait_for(1).await;
    assert_eq!(first[0].rcpts, ["bob@example.test"]);

    // The busy mailbox frees up: the next retry (1s in the test config) delivers it.
    sink.script().rcpt.remove("busy@example.test");
    let both = sink.wait_for(2).await;
    assert_eq!(both[1].rcpts, ["busy@example.test"]);

    let trace = support::eventually("every outcome traced", || async {
        let out = daemon.cli(&["trace", &id, "--json"]);
        let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let n = |kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
        (n("delivered") == 2 && n("failed") == 1).then_some(events)
    })
    .await;
    let of = |kind: &str, rcpt: &str| {
        trace
            .iter()
            .find(|e| e["kind"] == kind && e["recipient"] == rcpt)
            .unwrap_or_else(|| panic!("no {kind} event for {rcpt}: {trace:#?}"))
            .clone()
    };
    assert!(
        of("failed", "gone@example.test")["detail"]["reply"]
            .as_str()
            .unwrap()
            .starts_with("550 5.1.1")
    );
    assert!(
        of("deferred", "busy@example.test")["detail"]["reply"]
            .as_str()
            .unwrap()
            .starts_with("450 4.2.1")
    );
    of("delivered", "busy@example.test");
    assert!(
        !trace
            .iter()
            .any(|e| e["kind"] == "deferred" && e["recipient"] == "bob@example.test")
    );
}

/// A next hop that offers no STARTTLS is never sent to in clear: the recipient is deferred.
async fn no_delivery_in_clear(backend: Backend) {
    let (cfg, sink) = setup(backend).await;
    sink.script().no_starttls = true;
    let daemon = Daemon::start(&cfg).await;
    let (mut c, _) = Client::connect(daemon.mx, cfg.client_tls()).await;
    c.secure().await;
    let id = c
        .send_mail(
            "alice@client.test",
            &["bob@example.test"],
            &message("secret"),
        )
        .await
        .expect(250)
        .queued_id();
    let trace = support::eventually("a deferral", || async {
        let out = String::from_utf8_lossy(&daemon.cli(&["trace", &id]).stdout).into_owned();
        out.contains(" deferred ").then_some(out)
    })
    .await;
    assert!(trace.contains("does not offer STARTTLS"), "{trace}");
    assert!(sink.received().is_empty());
    // Once it offers TLS, the message goes.
    sink.script().no_starttls = false;
    assert!(sink.wait_for(1).await[0].tls);
}

/// Lines that start with a dot reach the next hop as they were written (stuffed on the way in,
/// stored plain, stuffed again on the way out), the message's first line included.
async fn dotted_lines_arrive_as_written(backend: Backend) {
    let (cfg, sink) = setup(backend).await;
    let daemon = Daemon::start(&cfg).await;
    let (mut c, _) = Client::connect(daemon.mx, cfg.client_tls()).await;
    c.secure().await;
    let body =
        "From: alice@client.test\r\nSubject: dots\r\n\r\n.one\r\n..two\r\n.\r\n...\r\nend\r\n";
    c.send_mail("alice@client.test", &["bob@example.test"], body)
        .await
        .expect(250);
    let got = sink.wait_for(1).await;
    assert!(got[0].text().ends_with(body), "{:?}", got[0].text());
}

/// A next hop without PIPELINING gets one command at a time, and each recipient still its own
/// fate.
async fn one_command_at_a_time_without_pipelining(backend: Backend) {
    let (cfg, sink) = setup(backend).await;
    sink.script().no_pipelining = true;
    sink.script()
        .rcpt
        .insert("gone@example.test".into(), "550 5.1.1 no such user".into());
    let daemon = Daemon::start(&cfg).await;
    let rcpts = ["gone@example.test", "bob@example.test"];
    let id = send(&cfg, &daemon, &rcpts, "one by one").await;
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].rcpts, ["bob@example.test"]);
    assert!(!got[0].pipelined);
    support::eventually("the failed event", || async {
        let out = daemon.cli(&["trace", &id]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.contains(" failed ") && text.contains(" delivered ")).then_some(())
    })
    .await;
}

on_both_stores!(
    inbound_message_is_delivered_and_traced,
    per_recipient_outcomes,
    one_command_at_a_time_without_pipelining,
    dotted_lines_arrive_as_written,
    no_delivery_in_clear
);
