//! Routing for the internet: MX by preference with A fallback, null MX and NXDOMAIN failing at
//! once, temporary DNS failure deferring, TLS verified against the MX host name. DNS answers come
//! from the in-process test server, over the wire.

mod support;

use support::client::message;
use support::{Backend, Client, Daemon, Sink, TestConfig, TestDns};

struct World {
    cfg: TestConfig,
    daemon: Daemon,
    /// Plays every remote MX (at 127.0.0.1 on its port).
    mx: Sink,
    /// Our own domain, where notices to our senders arrive.
    home: Sink,
    _dns: TestDns,
}

async fn world(backend: Backend, tls: &str) -> World {
    let mut cfg = TestConfig::new(backend).await;
    let mx = Sink::start(&cfg.ca).await;
    let home = Sink::start(&cfg.ca).await;
    let dns = TestDns::new()
        .mx("remote.test", 10, "mx1.remote.test")
        .mx("remote.test", 20, "mx2.remote.test")
        // mx1 is "down": nothing listens on 127.0.0.10.
        .a("mx1.remote.test", "127.0.0.10")
        .a("mx2.remote.test", "127.0.0.1")
        .a("bare.test", "127.0.0.1")
        .mx("nomail.test", 0, ".")
        .mx("verified.test", 10, "mx.sink.test")
        .a("mx.sink.test", "127.0.0.1")
        .mx("misnamed.test", 10, "mx.misnamed.test")
        .a("mx.misnamed.test", "127.0.0.1")
        .servfail("broken.test")
        .start()
        .await;
    cfg.nameserver = dns.addr.to_string();
    cfg.delivery = vec![
        format!("port = {}", mx.addr.port()),
        format!("tls = \"{tls}\""),
        "[delivery.tls_policy]".into(),
        "\"verified.test\" = \"require-verified\"".into(),
        "\"misnamed.test\" = \"require-verified\"".into(),
    ];
    let cfg = cfg.domain("example.test", home.addr);
    let daemon = Daemon::start(&cfg).await;
    World {
        cfg,
        daemon,
        mx,
        home,
        _dns: dns,
    }
}

/// Sends from an authorised client (outbound) and returns the id.
async fn send_out(w: &World, rcpt: &str) -> String {
    let (mut c, _) = Client::connect_from("127.0.0.2", w.daemon.mx, w.cfg.client_tls()).await;
    c.secure().await;
    c.send_mail("alice@example.test", &[rcpt], &message("out"))
        .await
        .expect(250)
        .queued_id()
}

async fn wait_kind(d: &Daemon, id: &str, kind: &str) -> serde_json::Value {
    support::eventually(&format!("{kind} for {id}"), || async {
        d.trace(id).into_iter().find(|e| e["kind"] == kind)
    })
    .await
}

async fn mx_preference_and_fallback(backend: Backend) {
    let w = world(backend, "require").await;
    let id = send_out(&w, "bob@remote.test").await;
    let got = w.mx.wait_for(1).await;
    assert_eq!(got[0].rcpts, ["bob@remote.test"]);
    let delivered = wait_kind(&w.daemon, &id, "attempt").await;
    assert_eq!(
        delivered["detail"]["host"], "mx2.remote.test",
        "mx1 is down, mx2 takes it"
    );
    // No MX at all: the domain's own address is the implicit MX.
    let id = send_out(&w, "carol@bare.test").await;
    wait_kind(&w.daemon, &id, "delivered").await;
    assert_eq!(w.mx.wait_for(2).await[1].rcpts, ["carol@bare.test"]);
}

/// NXDOMAIN and null MX fail at once, without retries, and the sender is told.
async fn undeliverable_domains_fail_at_once(backend: Backend) {
    let w = world(backend, "require").await;
    for (rcpt, why) in [
        ("x@nowhere.test", "does not exist"),
        ("x@nomail.test", "null MX"),
    ] {
        let id = send_out(&w, rcpt).await;
        let failed = wait_kind(&w.daemon, &id, "failed").await;
        let reply = failed["detail"]["reply"].as_str().unwrap();
        assert!(
            reply.starts_with("5.1.2") && reply.contains(why),
            "{rcpt}: {reply}"
        );
        assert_eq!(failed["detail"]["attempts"], 1);
        assert!(!w.daemon.trace(&id).iter().any(|e| e["kind"] == "deferred"));
    }
    let notices = w.home.wait_for(2).await;
    assert!(
        notices
            .iter()
            .all(|n| n.mail_from.is_empty() && n.rcpts == ["alice@example.test"])
    );
    assert!(w.mx.received().is_empty());
}

/// A DNS server failure is temporary: the recipient is deferred, not bounced.
async fn dns_failure_defers(backend: Backend) {
    let w = world(backend, "require").await;
    let id = send_out(&w, "x@broken.test").await;
    let deferred = wait_kind(&w.daemon, &id, "deferred").await;
    assert!(
        deferred["detail"]["reply"]
            .as_str()
            .unwrap()
            .starts_with("4.4.3")
    );
    assert!(!w.daemon.trace(&id).iter().any(|e| e["kind"] == "failed"));
}

/// `require-verified` checks the certificate against the MX host name.
async fn verified_tls_checks_the_mx_name(backend: Backend) {
    let w = world(backend, "require").await;
    let good = send_out(&w, "a@verified.test").await;
    let bad = send_out(&w, "b@misnamed.test").await;
    let attempt = wait_kind(&w.daemon, &good, "delivered").await;
    assert_eq!(attempt["kind"], "delivered");
    let a = w
        .daemon
        .trace(&good)
        .into_iter()
        .find(|e| e["kind"] == "attempt")
        .unwrap();
    assert_eq!(a["detail"]["tls_verified"], true);
    let deferred = wait_kind(&w.daemon, &bad, "deferred").await;
    let reply = deferred["detail"]["reply"].as_str().unwrap();
    assert!(
        reply.contains("4.7.5") && reply.contains("mx.misnamed.test"),
        "{reply}"
    );
    assert_eq!(w.mx.received().len(), 1);
}

on_both_stores!(
    mx_preference_and_fallback,
    undeliverable_domains_fail_at_once,
    dns_failure_defers,
    verified_tls_checks_the_mx_name,
);
