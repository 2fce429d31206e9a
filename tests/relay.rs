//! Relay rules: our domains from anyone, anywhere only from authorised networks, address tricks
//! refused. No open relay.

mod support;

use support::client::message;
use support::{Backend, Client, Daemon, Sink, TestConfig};

async fn setup(backend: Backend) -> (TestConfig, Daemon, Sink) {
    let mut cfg = TestConfig::new(backend).await;
    let sink = Sink::start(&cfg.ca).await;
    cfg = cfg.domain("example.test", sink.addr);
    // Outbound mail (any other domain) goes to the same sink, as the smarthost would.
    cfg.networks = vec!["127.0.0.2/32".into()];
    let d = Daemon::start(&cfg).await;
    (cfg, d, sink)
}

async fn unauthorised_client_reaches_only_our_domains(backend: Backend) {
    let (cfg, d, _sink) = setup(backend).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.cmd("MAIL FROM:<mallory@client.test>").await.expect(250);
    c.cmd("RCPT TO:<bob@example.test>").await.expect(250);
    c.cmd("RCPT TO:<Bob@EXAMPLE.TEST>").await.expect(250);
    let probes = [
        "<victim@elsewhere.test>",
        "<victim@elsewhere.test.>",
        "<victim%elsewhere.test@example.test>",
        "<elsewhere.test!victim@example.test>",
        "<\"victim@elsewhere.test\"@example.test>",
        "<@example.test:victim@elsewhere.test>",
        "<@elsewhere.test:bob@example.test>",
        "<victim@sub.example.test>",
        "<bob@example.test.>",
        "<postmaster>",
    ];
    for p in probes {
        let r = c.cmd(&format!("RCPT TO:{p}")).await;
        assert!(r.code >= 500, "{p} was accepted: {r}");
        if !p.contains("postmaster") && !p.ends_with(".>") {
            assert_eq!(r.code, 554, "{p}: {r}");
            assert!(r.text().starts_with("5.7.1"), "{p}: {r}");
        }
    }
    // Our own domain as the sender does not open the relay either (a new session: the probes
    // above used up most of the error allowance).
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.cmd("MAIL FROM:<ceo@example.test>").await.expect(250);
    c.cmd("RCPT TO:<victim@elsewhere.test>").await.expect(554);
}

async fn authorised_network_relays_anywhere(backend: Backend) {
    let (cfg, d, _sink) = setup(backend).await;
    let (mut c, _) = Client::connect_from("127.0.0.2", d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.cmd("MAIL FROM:<alice@example.test>").await.expect(250);
    c.cmd("RCPT TO:<carol@elsewhere.test>").await.expect(250);
    c.cmd("RCPT TO:<bob@example.test>").await.expect(250);
    // Tricks are refused even from an authorised client.
    c.cmd("RCPT TO:<x%elsewhere.test@example.test>")
        .await
        .expect(554);
}

/// Inbound mail reaches the next hop; the stored direction says inbound.
async fn direction_is_recorded(backend: Backend) {
    let (cfg, d, sink) = setup(backend).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    let id = c
        .send_mail("alice@client.test", &["bob@example.test"], &message("in"))
        .await
        .expect(250)
        .queued_id();
    sink.wait_for(1).await;
    let (mut c, _) = Client::connect_from("127.0.0.2", d.mx, cfg.client_tls()).await;
    c.secure().await;
    let out_id = c
        .send_mail("alice@example.test", &["bob@example.test"], &message("out"))
        .await
        .expect(250)
        .queued_id();
    let direction = |id: &str| {
        d.trace(id)[0]["detail"]["direction"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(direction(&id), "inbound");
    assert_eq!(direction(&out_id), "outbound");
}

on_both_stores!(
    unauthorised_client_reaches_only_our_domains,
    authorised_network_relays_anywhere,
    direction_is_recorded,
);
