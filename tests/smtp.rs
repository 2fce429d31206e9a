//! The SMTP dialogue (RFC 5321): extensions, commands, enhanced codes, line limits, timeouts,
//! connection limits, mandatory TLS.

mod support;

use support::{Backend, Client, Daemon, Sink, TestConfig};

async fn daemon(backend: Backend, session: &[&str]) -> (TestConfig, Daemon, Sink) {
    let mut cfg = TestConfig::new(backend).await;
    cfg.session = session.iter().map(|s| s.to_string()).collect();
    let sink = Sink::start(&cfg.ca).await;
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    (cfg, d, sink)
}

fn has(reply: &support::client::Reply, ext: &str) -> bool {
    reply
        .lines
        .iter()
        .any(|l| l == ext || l.starts_with(&format!("{ext} ")))
}

/// EHLO offers the extensions, STARTTLS only before TLS; the other commands answer as RFC 5321
/// says, each with an enhanced status code.
async fn ehlo_and_basic_commands(backend: Backend) {
    let (cfg, d, _sink) = daemon(backend, &[]).await;
    let (mut c, greeting) = Client::connect(d.mx, cfg.client_tls()).await;
    assert!(greeting.expect(220).text().starts_with("mx.test ESMTP"));
    let ehlo = c.cmd("EHLO client.test").await.expect(250);
    for ext in [
        "PIPELINING",
        "SIZE 52428800",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "STARTTLS",
    ] {
        assert!(has(&ehlo, ext), "{ext} missing from {ehlo}");
    }
    assert!(c.cmd("NOOP").await.expect(250).text().starts_with("2.0.0"));
    assert!(c.cmd("RSET").await.expect(250).text().starts_with("2.0.0"));
    assert!(
        c.cmd("VRFY bob")
            .await
            .expect(252)
            .text()
            .starts_with("2.5.0")
    );
    assert!(
        c.cmd("HELO client.test")
            .await
            .expect(250)
            .text()
            .contains("mx.test")
    );
    assert!(
        c.cmd("FOO bar")
            .await
            .expect(500)
            .text()
            .starts_with("5.5.1")
    );
    assert!(
        c.cmd("BDAT 10 LAST")
            .await
            .expect(502)
            .text()
            .starts_with("5.5.1")
    );
    c.starttls().await;
    let ehlo = c.cmd("EHLO client.test").await.expect(250);
    assert!(!has(&ehlo, "STARTTLS"), "STARTTLS offered twice: {ehlo}");
    assert!(has(&ehlo, "PIPELINING"));
    assert!(
        c.cmd("STARTTLS")
            .await
            .expect(503)
            .text()
            .starts_with("5.5.1")
    );
    assert!(
        c.cmd("MAIL FROM:<a@client.test> SIZE=60000000")
            .await
            .expect(552)
            .text()
            .starts_with("5.3.4")
    );
    assert!(
        c.cmd("RCPT TO:<bob@example.test>")
            .await
            .expect(503)
            .text()
            .starts_with("5.5.1")
    );
    assert!(c.cmd("DATA").await.expect(503).text().starts_with("5.5.1"));
    assert!(c.cmd("QUIT").await.expect(221).text().starts_with("2.0.0"));
}

/// MAIL, RCPT, DATA and AUTH before STARTTLS get 530 5.7.0 on the MX listener.
async fn tls_is_required_before_mail(backend: Backend) {
    let (cfg, d, _sink) = daemon(backend, &[]).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.cmd("EHLO client.test").await.expect(250);
    for cmd in [
        "MAIL FROM:<a@client.test>",
        "RCPT TO:<bob@example.test>",
        "DATA",
        "AUTH PLAIN AGFsaWNlAHNlY3JldA==",
    ] {
        let r = c.cmd(cmd).await.expect(530);
        assert!(r.text().starts_with("5.7.0"), "{cmd}: {r}");
    }
}

/// Commands pipelined after STARTTLS in plaintext are discarded, never run inside TLS
/// (CVE-2011-0411).
async fn plaintext_injected_after_starttls_is_discarded(backend: Backend) {
    let (cfg, d, sink) = daemon(backend, &[]).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.cmd("EHLO client.test").await.expect(250);
    c.send_raw(b"STARTTLS\r\nMAIL FROM:<evil@client.test>\r\nRCPT TO:<bob@example.test>\r\n")
        .await;
    c.read().await.expect(220);
    c.handshake().await;
    // Had the injected MAIL survived, this would be a "nested MAIL" error or RCPT would pass.
    c.cmd("EHLO client.test").await.expect(250);
    c.cmd("RCPT TO:<bob@example.test>").await.expect(503);
    c.cmd("MAIL FROM:<alice@client.test>").await.expect(250);
    drop(sink);
}

/// The implicit-TLS listener (RFC 8314) greets inside TLS and needs no STARTTLS.
async fn implicit_tls_submission(backend: Backend) {
    let (cfg, d, sink) = daemon(backend, &[]).await;
    let (mut c, greeting) = Client::connect_tls(d.submission, cfg.client_tls()).await;
    greeting.expect(220);
    let ehlo = c.cmd("EHLO client.test").await.expect(250);
    assert!(!has(&ehlo, "STARTTLS"));
    c.send_mail(
        "alice@client.test",
        &["bob@example.test"],
        &support::client::message("s"),
    )
    .await
    .expect(250);
    assert_eq!(sink.wait_for(1).await[0].rcpts, ["bob@example.test"]);
}

/// Command lines over 512 octets and text lines over 1000 octets are refused.
async fn line_limits(backend: Backend) {
    let (cfg, d, sink) = daemon(backend, &[]).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    let long = format!("MAIL FROM:<{}@client.test>", "a".repeat(500));
    assert!(c.cmd(&long).await.expect(500).text().starts_with("5.5.2"));
    c.cmd("NOOP").await.expect(250);
    c.cmd("MAIL FROM:<alice@client.test>").await.expect(250);
    c.cmd("RCPT TO:<bob@example.test>").await.expect(250);
    c.cmd("DATA").await.expect(354);
    c.send_raw(format!("Subject: x\r\n\r\n{}\r\n.\r\n", "y".repeat(1001)).as_bytes())
        .await;
    assert!(
        c.read()
            .await
            .expect(550)
            .text()
            .contains("longer than 1000")
    );
    // The session goes on, and a good message passes.
    c.send_mail(
        "alice@client.test",
        &["bob@example.test"],
        "Subject: ok\n\nfine\n",
    )
    .await
    .expect(250);
    assert_eq!(sink.wait_for(1).await.len(), 1);
}

/// An idle client is told 421 4.4.2 after the command timeout.
async fn idle_client_times_out(backend: Backend) {
    let (cfg, d, _sink) = daemon(backend, &["command_timeout = \"1s\""]).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    let r = c.read().await.expect(421);
    assert!(r.text().starts_with("4.4.2"), "{r}");
    assert_eq!(c.read().await.code, 0, "connection closed");
}

/// More connections than allowed, from one address or in all, get 421 and are closed.
async fn connection_limits(backend: Backend) {
    let (cfg, d, _sink) = daemon(
        backend,
        &["max_connections = 3", "max_connections_per_ip = 2"],
    )
    .await;
    let tls = || cfg.client_tls();
    let (mut a, _) = Client::connect(d.mx, tls()).await;
    let (_b, g) = Client::connect(d.mx, tls()).await;
    g.expect(220);
    let (_c, g) = Client::connect(d.mx, tls()).await;
    assert!(g.expect(421).text().starts_with("4.7.0"), "per-IP limit");
    let (_d, g) = Client::connect_from("127.0.0.3", d.mx, tls()).await;
    g.expect(220);
    let (_e, g) = Client::connect_from("127.0.0.4", d.mx, tls()).await;
    assert!(g.expect(421).text().starts_with("4.7.0"), "global limit");
    // A place freed is a place taken again.
    a.cmd("QUIT").await.expect(221);
    drop(a);
    support::eventually("a freed connection slot", || async {
        let (_f, g) = Client::connect_from("127.0.0.5", d.mx, tls()).await;
        (g.code == 220).then_some(())
    })
    .await;
}

/// Too many bad commands end the session.
async fn too_many_errors(backend: Backend) {
    let (cfg, d, _sink) = daemon(backend, &["max_errors = 3"]).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.cmd("FOO").await.expect(500);
    c.cmd("BAR").await.expect(500);
    c.cmd("BAZ").await.expect(500);
    let r = c.read().await.expect(421);
    assert!(r.text().starts_with("4.7.0"));
}

on_both_stores!(
    ehlo_and_basic_commands,
    tls_is_required_before_mail,
    plaintext_injected_after_starttls_is_discarded,
    implicit_tls_submission,
    line_limits,
    idle_client_times_out,
    connection_limits,
    too_many_errors,
);
