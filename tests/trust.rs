//! The trust space: a peer domain's mail is accepted only from its gateway, proven by a client
//! certificate from the trust space's CA (550 5.7.1 otherwise, for the envelope and for From:);
//! accepted mail is stamped `X-Passerelle-Trust:`; mail to a peer goes over verified TLS with
//! our own client certificate, past the smarthost, and never to a server the trust CA did not
//! certify.

mod support;

use support::certs::LeafFiles;
use support::client::message;
use support::{Backend, Client, Daemon, Sink, TestCa, TestConfig};

const PEER: &str = "hopital-a.example";

struct Space {
    ca: TestCa,
    /// The peer's gateway certificate, and one for another member.
    peer_gateway: LeafFiles,
    other_member: LeafFiles,
}

fn space(cfg: &mut TestConfig) -> Space {
    let dir = cfg.dir.path().join("trust");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new(&dir);
    let ours = ca.leaf("ours", &["mx.test"]);
    cfg.policy.push_str(&format!(
        "\n[trust]\ndomains = [\"{PEER}\", \"clinique-b.example\"]\nca = \"{}\"\n\
         certificate = \"{}\"\nkey = \"{}\"\n",
        ca.ca_pem.display(),
        ours.cert.display(),
        ours.key.display()
    ));
    Space {
        peer_gateway: ca.leaf("peer", &[&format!("mx.{PEER}")]),
        other_member: ca.leaf("other", &["mx.clinique-b.example"]),
        ca,
    }
}

fn refused(r: &support::client::Reply) {
    assert!(
        r.code == 550 && r.text().starts_with("5.7.1"),
        "{} {}",
        r.code,
        r.text()
    );
}

async fn inbound_from_a_peer_needs_its_certificate(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    let home = Sink::start(&cfg.ca).await;
    let space = space(&mut cfg);
    let cfg = cfg.domain("example.test", home.addr);
    let d = Daemon::start(&cfg).await;
    let dr = format!("dr@{PEER}");

    // No certificate: the envelope sender, a subdomain of the peer, and From: are each refused.
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    let r = c.cmd(&format!("MAIL FROM:<{dr}>")).await;
    refused(&r);
    let r = c.cmd(&format!("MAIL FROM:<lab@lab.{PEER}>")).await;
    refused(&r);
    let forged = format!("From: Dr A <{dr}>\nSubject: results\n\nforged\n");
    let r = c
        .send_mail("bounces@elsewhere.test", &["bob@example.test"], &forged)
        .await;
    refused(&r);
    c.cmd("QUIT").await;

    // Another member's certificate does not prove this peer.
    let (mut c, _) =
        Client::connect(d.mx, cfg.ca.client_config_presenting(&space.other_member)).await;
    c.secure().await;
    let r = c.cmd(&format!("MAIL FROM:<{dr}>")).await;
    refused(&r);
    c.cmd("QUIT").await;

    // The peer's own gateway: accepted, stamped, recorded.
    let (mut c, _) =
        Client::connect(d.mx, cfg.ca.client_config_presenting(&space.peer_gateway)).await;
    c.secure().await;
    let body = format!("From: Dr A <{dr}>\nSubject: results\n\nthe real one\n");
    let id = c
        .send_mail(&dr, &["bob@example.test"], &body)
        .await
        .expect(250)
        .queued_id();
    c.cmd("QUIT").await;

    // Ordinary mail is stamped too, with nothing proven.
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.send_mail("a@elsewhere.test", &["bob@example.test"], &message("plain"))
        .await
        .expect(250);
    c.cmd("QUIT").await;

    let got = home.wait_for(2).await;
    let real = got
        .iter()
        .find(|m| m.mail_from == dr)
        .expect("the peer's message");
    let text = real.text();
    let stamp = format!("X-Passerelle-Trust: pass peer={PEER} certificate=mx.{PEER}");
    assert!(text.contains(&stamp), "{text}");
    assert!(!text.contains("forged"));
    let plain = got
        .iter()
        .find(|m| m.mail_from == "a@elsewhere.test")
        .unwrap();
    assert!(
        plain.text().contains("X-Passerelle-Trust: none"),
        "{}",
        plain.text()
    );

    let events = d.trace(&id);
    let verdict = events
        .iter()
        .find(|e| e["kind"] == "verdict" && e["detail"]["stage"] == "trust")
        .expect("a trust verdict event");
    assert!(
        verdict["detail"]["reason"].as_str().unwrap().contains(PEER),
        "{verdict}"
    );
}

/// Outbound to a peer: its route, not the smarthost; our client certificate presented (the
/// peer's server requires one from the trust CA); its server certificate verified against the
/// trust CA. A server certified by someone else gets nothing: the recipient is deferred.
async fn outbound_to_a_peer_is_mutual_verified_tls(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    let home = Sink::start(&cfg.ca).await;
    let internet = Sink::start(&cfg.ca).await;
    let space = space(&mut cfg);
    let peer = Sink::start_requiring_client_cert(&space.ca, &space.ca).await;
    let impostor = Sink::start(&cfg.ca).await;
    cfg.retry = vec!["1h"];
    cfg.route_tls = "require";
    cfg.delivery = vec![
        format!("smarthost = \"{}\"", internet.addr),
        format!(
            "[delivery.routes]\n\"{PEER}\" = \"{}\"\n\"clinique-b.example\" = \"{}\"",
            peer.addr, impostor.addr
        ),
    ];
    let cfg = cfg.domain("example.test", home.addr);
    let d = Daemon::start(&cfg).await;

    let (mut c, _) = Client::connect_from("127.0.0.2", d.mx, cfg.client_tls()).await;
    c.secure().await;
    let to_peer = c
        .send_mail(
            "alice@example.test",
            &[&format!("dr@{PEER}")],
            "From: alice@example.test\nSubject: referral\n\nhello\n",
        )
        .await
        .expect(250)
        .queued_id();
    let to_impostor = c
        .send_mail(
            "alice@example.test",
            &["dr@clinique-b.example"],
            "From: alice@example.test\nSubject: referral\n\nhello\n",
        )
        .await
        .expect(250)
        .queued_id();
    c.cmd("QUIT").await;

    let got = peer.wait_for(1).await;
    assert_eq!(got[0].rcpts, [format!("dr@{PEER}")]);
    assert!(got[0].tls);
    let attempt = support::eventually("the attempt event", || async {
        d.trace(&to_peer)
            .into_iter()
            .find(|e| e["kind"] == "attempt")
    })
    .await;
    assert_eq!(attempt["detail"]["tls_verified"], true, "{attempt}");

    let deferred = support::eventually("the impostor's recipient deferred", || async {
        d.trace(&to_impostor)
            .into_iter()
            .find(|e| e["kind"] == "deferred")
    })
    .await;
    assert!(
        deferred["detail"]["reply"]
            .as_str()
            .unwrap()
            .contains("4.7.5"),
        "{deferred}"
    );
    assert!(impostor.received().is_empty());
    assert!(
        internet.received().is_empty(),
        "peer mail never goes to the smarthost"
    );
}

on_both_stores!(
    inbound_from_a_peer_needs_its_certificate,
    outbound_to_a_peer_is_mutual_verified_tls
);
