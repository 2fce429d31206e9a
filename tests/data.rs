//! DATA: only <CRLF>.<CRLF> ends a message; bare LF/CR refused (or normalised by config);
//! dot-unstuffing exact; pipelined commands after the end are served; a mail loop is refused.

mod support;

use support::{Backend, Client, Daemon, Sink, TestConfig};

/// A daemon with this `[session]` line, relaying example.test to a sink.
async fn setup(backend: Backend, session: &str) -> (TestConfig, Daemon, Sink) {
    let mut cfg = TestConfig::new(backend).await;
    cfg.session = vec![session.into()];
    let sink = Sink::start(&cfg.ca).await;
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    (cfg, d, sink)
}

async fn start_data(c: &mut Client) {
    c.cmd("MAIL FROM:<alice@client.test>").await.expect(250);
    c.cmd("RCPT TO:<bob@example.test>").await.expect(250);
    c.cmd("DATA").await.expect(354);
}

/// Each smuggling variant: the fake end does not end the message, the smuggled MAIL is never
/// run as a command, and the whole message is refused with 550 5.5.2 at the real end.
async fn smuggling_is_refused(backend: Backend) {
    let (cfg, d, sink) = setup(backend, "bare_lf = \"reject\"").await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    for fake_end in ["\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r"] {
        start_data(&mut c).await;
        let smuggled = format!(
            "Subject: a\r\n\r\nbody{fake_end}MAIL FROM:<evil@client.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n\
             Subject: smuggled\r\n\r\nevil\r\n.\r\n"
        );
        c.send_raw(smuggled.as_bytes()).await;
        let r = c.read().await.expect(550);
        assert!(r.text().starts_with("5.5.2"), "{fake_end:?}: {r}");
        // The next reply is to our NOOP: nothing smuggled was taken as a command.
        c.cmd("NOOP").await.expect(250);
    }
    c.send_mail(
        "alice@client.test",
        &["bob@example.test"],
        "Subject: good\n\nok\n",
    )
    .await
    .expect(250);
    let got = sink.wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].text().contains("Subject: good"));
}

/// With `bare_lf = "normalise"`, bare line ends become CRLF and the message is kept whole.
async fn bare_lf_normalised(backend: Backend) {
    let (cfg, d, sink) = setup(backend, "bare_lf = \"normalise\"").await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    start_data(&mut c).await;
    c.send_raw(b"Subject: n\nX-A: 1\r\n\r\nline one\nline two\r.\nstill body\r\n.\r\n")
        .await;
    c.read().await.expect(250);
    let got = sink.wait_for(1).await;
    let text = got[0].text();
    let body = &text[text.find("Subject: n").unwrap()..];
    assert_eq!(
        body,
        "Subject: n\r\nX-A: 1\r\n\r\nline one\r\nline two\r\n.\r\nstill body\r\n"
    );
}

/// Dot-stuffed lines arrive unstuffed, and a message that is only a dot line is empty.
async fn dot_unstuffing(backend: Backend) {
    let (cfg, d, sink) = setup(backend, "bare_lf = \"reject\"").await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    start_data(&mut c).await;
    // Pipelined: the message, its end, and the next command in one write.
    c.send_raw(b"Subject: dots\r\n\r\n..leading dot\r\n...\r\n.\r\nNOOP\r\n")
        .await;
    c.read().await.expect(250);
    c.read().await.expect(250);
    let got = sink.wait_for(1).await;
    let text = got[0].text();
    assert!(
        text.ends_with("Subject: dots\r\n\r\n.leading dot\r\n..\r\n"),
        "{text:?}"
    );
}

/// DATA over the size limit is refused at its end with 552 5.3.4 naming the limit.
async fn oversized_message(backend: Backend) {
    let (cfg, d, _sink) = setup(backend, "max_message_size = 10000").await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    start_data(&mut c).await;
    let line = format!("{}\r\n", "z".repeat(98));
    c.send_raw(format!("Subject: big\r\n\r\n{}.\r\n", line.repeat(200)).as_bytes())
        .await;
    let r = c.read().await.expect(552);
    assert!(
        r.text().starts_with("5.3.4") && r.text().contains("10000"),
        "{r}"
    );
    c.cmd("NOOP").await.expect(250);
}

/// A message that already carries more than `session.max_hops` `Received:` fields is a mail
/// loop: refused with 554 5.4.6, and the refusal is in its events with the count. Exactly the
/// limit passes; other fields (`Received-SPF:`, a folded line, the body) do not count.
async fn mail_loop_refused(backend: Backend) {
    let (cfg, d, sink) = setup(backend, "max_hops = 5").await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    let hops = |n: usize| {
        "Received: from a.test by b.test;\r\n\tMon, 7 Dec 2026 10:00:00 +0000\r\n".repeat(n)
    };
    let others = "Received-SPF: pass\r\nSubject: hops\r\n\r\nReceived: from body.test\r\n";
    start_data(&mut c).await;
    c.send_raw(format!("{}{others}.\r\n", hops(5)).as_bytes())
        .await;
    c.read().await.expect(250);
    start_data(&mut c).await;
    c.send_raw(format!("{}{others}.\r\n", hops(6)).as_bytes())
        .await;
    let r = c.read().await.expect(554);
    assert!(
        r.text().starts_with("5.4.6") && r.text().contains("6 Received fields"),
        "{r}"
    );
    c.cmd("NOOP").await.expect(250);
    // The refused message's id is only in its events.
    let got = sink.wait_for(1).await;
    assert_eq!(got.len(), 1);
    let id = support::db::strs(
        &cfg.store_url,
        "SELECT message_id FROM events WHERE kind = 'refused'",
    )
    .await;
    assert_eq!(id.len(), 1, "{id:?}");
    let refused = d.trace(&id[0]);
    let e = refused.iter().find(|e| e["kind"] == "refused").unwrap();
    assert_eq!(e["detail"]["decided_by"], "max_hops", "{e}");
    assert!(
        e["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("6 Received fields"),
        "{e}"
    );
}

on_both_stores!(
    smuggling_is_refused,
    bare_lf_normalised,
    dot_unstuffing,
    oversized_message,
    mail_loop_refused
);
