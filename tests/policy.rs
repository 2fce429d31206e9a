//! The inbound policy end to end, against the real daemon: reputation and DNSBL at connect, SPF
//! at MAIL, the spam score (tag at 50–99, delete at 100), virus cleaning with a real clamd, the
//! empty-sender rule, and a scanner that is down making the message temp-fail.

mod support;

use support::client::message;
use support::{Backend, Client, Daemon, Sink, TestConfig, TestDns};

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

use support::clamd;

struct World {
    cfg: TestConfig,
    d: Daemon,
    sink: Sink,
    _dns: TestDns,
}

async fn world(backend: Backend, stages: &str, extra: &str) -> World {
    let mut cfg = TestConfig::new(backend).await;
    let sink = Sink::start(&cfg.ca).await;
    let dns = TestDns::new()
        .txt("client.test", "v=spf1 ip4:127.0.0.1 -all")
        .txt("forged.test", "v=spf1 ip4:192.0.2.0/24 -all")
        .dnsbl_listed("block.test", "127.0.0.3", "127.0.0.2")
        .dnsbl_listed("grey.test", "127.0.0.1", "127.0.0.2")
        .start()
        .await;
    cfg.nameserver = dns.addr.to_string();
    cfg.policy =
        format!("[policy.inbound]\nstages = [{stages}]\n[policy.outbound]\nstages = []\n{extra}\n");
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    World {
        cfg,
        d,
        sink,
        _dns: dns,
    }
}

async fn send(w: &World, from: &str, body: &str) -> support::client::Reply {
    let (mut c, g) = Client::connect(w.d.mx, w.cfg.client_tls()).await;
    g.expect(220);
    c.secure().await;
    c.send_mail(from, &["bob@example.test"], body).await
}

/// GTUBE scores 100 and is deleted (accepted, never delivered); a plain message is delivered
/// with its score in `X-Passerelle-Score`; a spammy one is tagged `[Suspect Spam]`.
async fn spam_score_decides(backend: Backend) {
    let w = world(backend, "\"spam\"", "").await;
    let plain = send(&w, "alice@client.test", &message("Meeting notes"))
        .await
        .expect(250)
        .queued_id();
    let gtube = format!("Subject: offer\nFrom: a@client.test\n\n{GTUBE}\n");
    let deleted = send(&w, "alice@client.test", &gtube)
        .await
        .expect(250)
        .queued_id();
    let got = w.sink.wait_for(1).await;
    let text = got[0].text();
    assert!(text.contains("X-Passerelle-Score: "), "{text}");
    let t = w.d.trace(&deleted);
    let verdict = t
        .iter()
        .find(|e| e["kind"] == "verdict")
        .expect("a verdict event");
    assert_eq!(verdict["detail"]["stage"], "spam");
    assert_eq!(verdict["detail"]["action"], "delete");
    assert!(
        verdict["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("GTUBE"),
        "{verdict}"
    );
    assert_eq!(t[0]["detail"]["disposition"], "deleted");
    // The sink has it; the attempt is recorded just after the sink's reply.
    support::eventually("the plain message's delivery recorded", || async {
        w.d.trace(&plain)
            .iter()
            .any(|e| e["kind"] == "delivered" || e["kind"] == "attempt")
            .then_some(())
    })
    .await;
    // Nothing of the GTUBE message reaches the sink.
    assert!(
        w.sink
            .received()
            .iter()
            .all(|m| !m.text().contains("GTUBE"))
    );
}

/// `action = "reject"`: certain spam is refused at the end of DATA instead of deleted.
/// DKIM and DMARC on inbound mail: a message signed by its domain's published key passes, and
/// the results are in the Authentication-Results header we add.
async fn dkim_and_dmarc_inbound(backend: Backend) {
    use base64::Engine;
    use ring::signature::KeyPair;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let mut cfg = TestConfig::new(backend).await;
    let sink = Sink::start(&cfg.ca).await;
    let dns = TestDns::new()
        .txt("client.test", "v=spf1 ip4:127.0.0.1 -all")
        .txt("_dmarc.client.test", "v=DMARC1; p=reject")
        .txt(
            "k1._domainkey.client.test",
            &format!(
                "v=DKIM1; k=ed25519; p={}",
                b64.encode(pair.public_key().as_ref())
            ),
        )
        .start()
        .await;
    cfg.nameserver = dns.addr.to_string();
    cfg.policy = "[policy.inbound]\nstages = [\"spf\"]\n[policy.outbound]\nstages = []\n".into();
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    let key = mail_auth::common::crypto::Ed25519Key::from_pkcs8_der(pkcs8.as_ref()).unwrap();
    let body = message("signed").replace('\n', "\r\n");
    let signature = mail_auth::dkim::DkimSigner::from_key(key)
        .domain("client.test")
        .selector("k1")
        .headers(["From", "To", "Subject", "Message-ID"])
        .sign(body.as_bytes())
        .unwrap();
    use mail_auth::common::headers::HeaderWriter;
    let signed = format!("{}{body}", signature.to_header());
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.send_mail("alice@client.test", &["bob@example.test"], &signed)
        .await
        .expect(250);
    let got = sink.wait_for(1).await;
    let text = got[0].text();
    assert!(text.contains("dkim=pass"), "{text}");
    assert!(text.contains("dmarc=pass"), "{text}");
}

async fn spam_reject_action(backend: Backend) {
    let w = world(backend, "\"spam\"", "[policy.spam]\naction = \"reject\"\n").await;
    let gtube = format!("Subject: offer\nFrom: a@client.test\n\n{GTUBE}\n");
    let r = send(&w, "alice@client.test", &gtube).await.expect(550);
    assert!(
        r.text().starts_with("5.7.1") && r.text().contains("spam"),
        "{r}"
    );
}

async fn spam_tagging(backend: Backend) {
    // A DNSBL listing worth 60 points, below reject_at: a plain message lands in 50–99, so it is
    // delivered with its Subject tagged, whatever the model says about its words.
    let extra = "[policy.dnsbl]\nreject_at = 100\n[[policy.dnsbl.zones]]\nzone = \"grey.test\"\nweight = 60\n";
    let w = world(backend, "\"dnsbl\", \"spam\"", extra).await;
    send(&w, "alice@client.test", &message("Quarterly report"))
        .await
        .expect(250);
    let got = w.sink.wait_for(1).await;
    assert!(
        got[0]
            .text()
            .contains("Subject: [Suspect Spam] Quarterly report"),
        "{}",
        got[0].text()
    );
}

/// An empty envelope sender: accepted, deleted, no notice; the event says why.
async fn empty_sender_is_deleted_silently(backend: Backend) {
    let w = world(backend, "\"sender\"", "").await;
    let id = send(&w, "", &message("bounce?"))
        .await
        .expect(250)
        .queued_id();
    let t = w.d.trace(&id);
    assert_eq!(t[0]["detail"]["disposition"], "deleted");
    assert!(
        t.iter()
            .any(|e| e["kind"] == "verdict" && e["detail"]["reason"] == "empty envelope sender")
    );
    assert!(!t.iter().any(|e| e["kind"] == "notice"));
    // A normal message after it is delivered, and it is the only one.
    send(&w, "alice@client.test", &message("real"))
        .await
        .expect(250);
    assert_eq!(w.sink.wait_for(1).await.len(), 1);
}

/// SPF fail is refused at MAIL; a pass is recorded in Authentication-Results.
async fn spf_at_mail_and_authentication_results(backend: Backend) {
    let w = world(backend, "\"spf\"", "").await;
    let (mut c, _) = Client::connect(w.d.mx, w.cfg.client_tls()).await;
    c.secure().await;
    let r = c.cmd("MAIL FROM:<mallory@forged.test>").await.expect(550);
    assert!(r.text().starts_with("5.7.23"), "{r}");
    c.send_mail("alice@client.test", &["bob@example.test"], &message("spf"))
        .await
        .expect(250);
    let got = w.sink.wait_for(1).await;
    let text = got[0].text();
    assert!(text.contains("Authentication-Results: mx.test;"), "{text}");
    assert!(text.contains("spf=pass"), "{text}");
}

/// Reputation: a deny-listed address is refused before the greeting. DNSBL: a listing at or
/// above `reject_at` is refused, a lighter one only scores.
async fn connect_phase(backend: Backend) {
    let extra = "[policy.reputation]\ndeny = [\"127.0.0.4/32\"]\n\
                 [policy.dnsbl]\nreject_at = 100\n\
                 [[policy.dnsbl.zones]]\nzone = \"block.test\"\nweight = 100\n\
                 [[policy.dnsbl.zones]]\nzone = \"grey.test\"\nweight = 7\n";
    let w = world(backend, "\"reputation\", \"dnsbl\", \"spam\"", extra).await;
    let (_c, g) = Client::connect_from("127.0.0.4", w.d.mx, w.cfg.client_tls()).await;
    assert_eq!(g.code, 554, "deny list: {g}");
    let (_c, g) = Client::connect_from("127.0.0.3", w.d.mx, w.cfg.client_tls()).await;
    assert_eq!(g.code, 554, "DNSBL: {g}");
    assert!(g.text().contains("block.test"), "{g}");
    // 127.0.0.1 is only on the grey list: it scores.
    send(&w, "alice@client.test", &message("grey"))
        .await
        .expect(250);
    let got = w.sink.wait_for(1).await;
    assert!(
        got[0].text().contains("DNSBL_GREY_TEST=7"),
        "{}",
        got[0].text()
    );
}

/// Viruses: an infected attachment is removed and the rest delivered; an infected body is
/// deleted; the sender's address gains bad points; clamd down makes the message temp-fail.
async fn virus_cleaning(backend: Backend) {
    let Some(clamd) = clamd() else { return };
    let extra = format!("[policy.virus]\nclamd = \"{clamd}\"\ntimeout = \"5s\"\n");
    let w = world(backend, "\"virus\"", &extra).await;
    let attached = format!(
        "From: a@client.test\nSubject: invoice\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain\n\n\
         Please find the invoice attached.\n--b1\nContent-Type: application/octet-stream; name=\"invoice.com\"\n\
         Content-Disposition: attachment; filename=\"invoice.com\"\n\n{EICAR}\n--b1--\n"
    );
    let cleaned = send(&w, "alice@client.test", &attached)
        .await
        .expect(250)
        .queued_id();
    let got = w.sink.wait_for(1).await;
    let text = got[0].text();
    assert!(text.contains("Please find the invoice attached."), "{text}");
    assert!(
        !text.contains("EICAR-STANDARD"),
        "the virus must be gone: {text}"
    );
    assert!(
        text.contains("invoice.com"),
        "the replacement names the file: {text}"
    );
    assert!(
        w.d.trace(&cleaned)
            .iter()
            .any(|e| e["kind"] == "verdict" && e["detail"]["stage"] == "virus")
    );

    let body = format!("From: a@client.test\nSubject: plain\n\n{EICAR}\n");
    let deleted = send(&w, "alice@client.test", &body)
        .await
        .expect(250)
        .queued_id();
    assert_eq!(w.d.trace(&deleted)[0]["detail"]["disposition"], "deleted");
}

/// An address that sent a virus gains bad points; at the threshold it is refused at connect.
/// An encrypted zip is delivered untouched and recorded as unscanned.
async fn reputation_learns_and_encrypted_passes(backend: Backend) {
    let Some(clamd) = clamd() else { return };
    let extra = format!(
        "[policy.virus]\nclamd = \"{clamd}\"\n[policy.reputation]\nthreshold = 4.0\nvirus_points = 5.0\n"
    );
    let w = world(backend, "\"reputation\", \"limits\", \"virus\"", &extra).await;
    let zip = encrypted_zip();
    let body = format!(
        "From: a@client.test\nSubject: secret\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain\n\nsee attached\n\
         --b1\nContent-Type: application/zip; name=\"records.zip\"\nContent-Transfer-Encoding: base64\n\
         Content-Disposition: attachment; filename=\"records.zip\"\n\n{zip}\n--b1--\n"
    );
    let (mut c, _) = Client::connect_from("127.0.0.6", w.d.mx, w.cfg.client_tls()).await;
    c.secure().await;
    let id = c
        .send_mail("alice@client.test", &["bob@example.test"], &body)
        .await
        .expect(250)
        .queued_id();
    let got = w.sink.wait_for(1).await;
    assert!(
        got[0].text().contains(&zip[..60]),
        "the encrypted zip is delivered untouched"
    );
    let t = w.d.trace(&id);
    assert!(
        t.iter().any(|e| e["kind"] == "verdict"
            && e["detail"]["reason"]
                .as_str()
                .unwrap_or("")
                .contains("unscanned: encrypted")),
        "{t:#?}"
    );
    // Now a virus from the same address...
    let infected = format!("From: a@client.test\nSubject: x\n\n{EICAR}\n");
    c.send_mail("alice@client.test", &["bob@example.test"], &infected)
        .await
        .expect(250);
    c.cmd("QUIT").await;
    // ...and the address is refused before the greeting.
    let (_c, g) = Client::connect_from("127.0.0.6", w.d.mx, w.cfg.client_tls()).await;
    assert_eq!(g.code, 554, "{g}");
    assert!(g.text().contains("reputation"), "{g}");
    let (_c, g) = Client::connect_from("127.0.0.7", w.d.mx, w.cfg.client_tls()).await;
    assert_eq!(g.code, 220, "another address is not affected");
}

/// Too many attachments, or too many files in one zip: refused at the end of DATA with a reply
/// that names the rule, and nothing is kept but the events.
async fn content_limits(backend: Backend) {
    let w = world(backend, "\"limits\"", "").await;
    let mut many = String::from(
        "From: a@client.test\nSubject: many\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nhi\n",
    );
    for i in 0..51 {
        many.push_str(&format!(
            "--b\nContent-Type: application/octet-stream; name=\"f{i}.bin\"\nContent-Disposition: attachment; filename=\"f{i}.bin\"\n\nx\n"
        ));
    }
    many.push_str("--b--\n");
    let r = send(&w, "alice@client.test", &many).await.expect(552);
    assert!(
        r.text().starts_with("5.3.4") && r.text().contains("51 attachments"),
        "{r}"
    );

    let zip = {
        use base64::Engine;
        use std::io::Write;
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut buf);
        for i in 0..33 {
            z.start_file(
                format!("scan{i}.txt"),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            z.write_all(b"page").unwrap();
        }
        z.finish().unwrap();
        wrap(&base64::engine::general_purpose::STANDARD.encode(buf.into_inner()))
    };
    let archive = format!(
        "From: a@client.test\nSubject: zip\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n\
         --b\nContent-Type: text/plain\n\nscans\n--b\nContent-Type: application/zip; name=\"scans.zip\"\n\
         Content-Transfer-Encoding: base64\n\n{zip}\n--b--\n"
    );
    let r = send(&w, "alice@client.test", &archive).await.expect(552);
    assert!(
        r.text().contains("scans.zip") && r.text().contains("32"),
        "{r}"
    );
    send(&w, "alice@client.test", &message("fine"))
        .await
        .expect(250);
    assert_eq!(w.sink.wait_for(1).await.len(), 1);
}

/// Base64 in lines of 76, as MIME wants it.
fn wrap(b64: &str) -> String {
    b64.as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A zip with one AES-encrypted entry, base64.
fn encrypted_zip() -> String {
    use base64::Engine;
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .with_aes_encryption(zip::AesMode::Aes256, "patient-secret");
        z.start_file("records.txt", opts).unwrap();
        z.write_all(b"confidential medical record").unwrap();
        z.finish().unwrap();
    }
    wrap(&base64::engine::general_purpose::STANDARD.encode(buf.into_inner()))
}

async fn scanner_down_tempfails(backend: Backend) {
    let refused = support::Down::new();
    let dead = refused.addr;
    let extra = format!("[policy.virus]\nclamd = \"{dead}\"\ntimeout = \"2s\"\n");
    let w = world(backend, "\"virus\"", &extra).await;
    let r = send(&w, "alice@client.test", &message("x"))
        .await
        .expect(451);
    assert!(r.text().starts_with("4.7.1"), "{r}");
    assert!(w.sink.received().is_empty());
}

on_both_stores!(
    spam_score_decides,
    spam_tagging,
    spam_reject_action,
    dkim_and_dmarc_inbound,
    empty_sender_is_deleted_silently,
    spf_at_mail_and_authentication_results,
    connect_phase,
    virus_cleaning,
    reputation_learns_and_encrypted_passes,
    content_limits,
    scanner_down_tempfails,
);
