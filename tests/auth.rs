//! SMTP AUTH: offered only inside TLS, PLAIN and LOGIN against argon2 hashes from the config,
//! success authorises outbound relay, failures are rate-limited, the sender's domain may be
//! tied to the login.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::io::Write;
use std::process::{Command, Stdio};
use support::{Backend, Client, Daemon, Sink, TestConfig};

fn hash(password: &str) -> String {
    let mut child = Command::new(support::daemon::binary())
        .args(["hash-password", "--config", "/nonexistent"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn setup(backend: Backend) -> (TestConfig, Daemon, Sink) {
    let mut cfg = TestConfig::new(backend).await;
    let sink = Sink::start(&cfg.ca).await;
    // Outbound mail for other domains goes to the sink, as a smarthost would.
    cfg.delivery = vec![format!("smarthost = \"{}\"", sink.addr)];
    cfg.route_tls = "require";
    cfg.policy.push_str(&format!(
        "\n[relay.users.\"alice@example.test\"]\npassword_hash = \"{}\"\n",
        hash("correct horse")
    ));
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    (cfg, d, sink)
}

fn plain(user: &str, pass: &str) -> String {
    B64.encode(format!("\0{user}\0{pass}"))
}

async fn auth_plain_authorises_relay(backend: Backend) {
    let (cfg, d, sink) = setup(backend).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    let ehlo = c.cmd("EHLO client.test").await.expect(250);
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "AUTH offered before TLS"
    );
    c.cmd(&format!(
        "AUTH PLAIN {}",
        plain("alice@example.test", "correct horse")
    ))
    .await
    .expect(530);
    c.starttls().await;
    let ehlo = c.cmd("EHLO client.test").await.expect(250);
    assert!(ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"), "{ehlo}");
    c.cmd("MAIL FROM:<alice@example.test>").await.expect(250);
    c.cmd("RCPT TO:<carol@elsewhere.test>").await.expect(554);
    c.cmd("RSET").await.expect(250);
    let r = c
        .cmd(&format!(
            "AUTH PLAIN {}",
            plain("alice@example.test", "correct horse")
        ))
        .await;
    assert!(r.expect(235).text().starts_with("2.7.0"));
    c.send_mail(
        "alice@example.test",
        &["carol@elsewhere.test"],
        "Subject: out\n\nhi\n",
    )
    .await
    .expect(250);
    assert_eq!(sink.wait_for(1).await[0].rcpts, ["carol@elsewhere.test"]);
}

async fn auth_login_and_failures(backend: Backend) {
    let (cfg, d, _sink) = setup(backend).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.cmd("AUTH LOGIN").await.expect(334);
    c.cmd(&B64.encode("alice@example.test")).await.expect(334);
    let r = c.cmd(&B64.encode("wrong")).await.expect(535);
    assert!(r.text().starts_with("5.7.8"));
    for _ in 0..4 {
        c.cmd(&format!(
            "AUTH PLAIN {}",
            plain("alice@example.test", "nope")
        ))
        .await
        .expect(535);
    }
    // Five failures: even the right password is refused for a while.
    let r = c
        .cmd(&format!(
            "AUTH PLAIN {}",
            plain("alice@example.test", "correct horse")
        ))
        .await;
    assert!(r.expect(454).text().starts_with("4.7.0"));
    // The log names the user, never the password.
    assert!(!d.log().contains("correct horse") && !d.log().contains("wrong"));
    assert!(d.log().contains("alice@example.test"));
}

async fn sender_must_match_login(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    let sink = Sink::start(&cfg.ca).await;
    cfg.relay = vec!["sender_must_match = true".into()];
    cfg.policy.push_str(&format!(
        "\n[relay.users.\"alice@example.test\"]\npassword_hash = \"{}\"\n",
        hash("pw")
    ));
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.cmd(&format!("AUTH PLAIN {}", plain("alice@example.test", "pw")))
        .await
        .expect(235);
    let r = c.cmd("MAIL FROM:<ceo@bank.test>").await.expect(553);
    assert!(r.text().starts_with("5.7.1"));
    c.cmd("MAIL FROM:<alice@example.test>").await.expect(250);
}

on_both_stores!(
    auth_plain_authorises_relay,
    auth_login_and_failures,
    sender_must_match_login
);

/// A partner gateway presenting a certificate from `relay.client_ca` may relay; the same client
/// without it may not.
async fn client_certificate_authorises(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    let sink = Sink::start(&cfg.ca).await;
    let partners_dir = cfg.dir.path().join("partners");
    std::fs::create_dir_all(&partners_dir).unwrap();
    let partners = support::TestCa::new(&partners_dir);
    let gateway = partners.leaf("gateway", &["gw.partner.test"]);
    cfg.relay = vec![format!("client_ca = \"{}\"", partners.ca_pem.display())];
    cfg.delivery = vec![format!("smarthost = \"{}\"", sink.addr)];
    cfg.route_tls = "require";
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;

    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.cmd("MAIL FROM:<a@partner.test>").await.expect(250);
    c.cmd("RCPT TO:<carol@elsewhere.test>").await.expect(554);

    let with_cert = cfg.ca.client_config_presenting(&gateway);
    let (mut c, _) = Client::connect(d.mx, with_cert).await;
    c.secure().await;
    c.send_mail(
        "a@partner.test",
        &["carol@elsewhere.test"],
        "Subject: via partner\n\nhi\n",
    )
    .await
    .expect(250);
    assert_eq!(sink.wait_for(1).await[0].rcpts, ["carol@elsewhere.test"]);
}

/// With `[log] redact = true`, log lines show addresses as `***@domain`.
async fn redacted_logs(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    let sink = Sink::start(&cfg.ca).await;
    cfg.policy.push_str(&format!(
        "\n[log]\nredact = true\n[relay.users.\"alice@example.test\"]\npassword_hash = \"{}\"\n",
        hash("pw")
    ));
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.cmd(&format!(
        "AUTH PLAIN {}",
        plain("alice@example.test", "nope")
    ))
    .await
    .expect(535);
    support::eventually("the failed AUTH log line", || async {
        d.log().contains("authentication failed").then_some(())
    })
    .await;
    assert!(d.log().contains("***@example.test"), "{}", d.log());
    assert!(!d.log().contains("alice@example.test"), "{}", d.log());
}

mod redaction {
    use super::*;
    on_both_stores!(redacted_logs);
}

mod certificates {
    use super::*;
    on_both_stores!(client_certificate_authorises);
}
