//! DKIM signing of outbound mail: a message from a domain with a key in `[dkim]` arrives signed,
//! and mail-auth verifies the signature against the key published in (test) DNS.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::KeyPair;
use support::client::message;
use support::{Backend, Client, Daemon, Sink, TestConfig, TestDns};

async fn outbound_mail_is_signed(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    let pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let public = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        B64.encode(pkcs8.as_ref())
    );
    let key = cfg.dir.path().join("dkim.pem");
    std::fs::write(&key, pem).unwrap();
    let dns = TestDns::new()
        .txt(
            "s1._domainkey.example.test",
            &format!(
                "v=DKIM1; k=ed25519; p={}",
                B64.encode(public.public_key().as_ref())
            ),
        )
        .start()
        .await;
    let sink = Sink::start(&cfg.ca).await;
    cfg.delivery = vec![format!("smarthost = \"{}\"", sink.addr)];
    cfg.route_tls = "require";
    cfg.policy.push_str(&format!(
        "\n[dkim.\"example.test\"]\nselector = \"s1\"\nprivate_key = \"{}\"\n",
        key.display()
    ));
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    let (mut c, _) = Client::connect_from("127.0.0.2", d.mx, cfg.client_tls()).await;
    c.secure().await;
    let body = message("signed").replace("alice@client.test", "alice@example.test");
    c.send_mail("alice@example.test", &["carol@elsewhere.test"], &body)
        .await
        .expect(250);
    let got = sink.wait_for(1).await;
    let text = got[0].text();
    assert!(
        text.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;"),
        "{text}"
    );
    assert!(
        text.contains("d=example.test") && text.contains("s=s1"),
        "{text}"
    );

    let resolver = passerelle::dns::resolver(&passerelle::config::Dns {
        nameservers: vec![dns.addr.to_string()],
        timeout: std::time::Duration::from_secs(2),
        attempts: 1,
    })
    .unwrap();
    let auth = mail_auth::MessageAuthenticator(resolver);
    let msg = mail_auth::AuthenticatedMessage::parse(&got[0].data).unwrap();
    let results = auth.verify_dkim(&msg).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].result(), &mail_auth::DkimResult::Pass, "{text}");
}

on_both_stores!(outbound_mail_is_signed);
