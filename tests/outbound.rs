//! Outbound protection: spam held in quarantine with a notice to the sender and released by an
//! administrator; override lists; a virus deleted with a notice naming it.

mod support;

use support::{Backend, Client, Daemon, Sink, TestConfig};

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

struct World {
    cfg: TestConfig,
    d: Daemon,
    /// The internet (smarthost) and our own domain (where notices to our senders arrive).
    internet: Sink,
    home: Sink,
}

async fn world(backend: Backend, stages: &str, extra: &str) -> World {
    let mut cfg = TestConfig::new(backend).await;
    let internet = Sink::start(&cfg.ca).await;
    let home = Sink::start(&cfg.ca).await;
    cfg.delivery = vec![format!("smarthost = \"{}\"", internet.addr)];
    cfg.route_tls = "require";
    cfg.policy =
        format!("[policy.inbound]\nstages = []\n[policy.outbound]\nstages = [{stages}]\n{extra}\n");
    let cfg = cfg.domain("example.test", home.addr);
    let d = Daemon::start(&cfg).await;
    World {
        cfg,
        d,
        internet,
        home,
    }
}

async fn world_with_override(backend: Backend) -> World {
    let mut cfg = TestConfig::new(backend).await;
    let internet = Sink::start(&cfg.ca).await;
    let home = Sink::start(&cfg.ca).await;
    cfg.delivery = vec![format!("smarthost = \"{}\"", internet.addr)];
    cfg.route_tls = "require";
    cfg.policy = "[policy.inbound]\nstages = []\n[policy.outbound]\nstages = [\"spam\"]\n\
                  override_senders = [\"ceo@example.test\"]\n"
        .into();
    let cfg = cfg.domain("example.test", home.addr);
    let d = Daemon::start(&cfg).await;
    World {
        cfg,
        d,
        internet,
        home,
    }
}

async fn send_out(w: &World, from: &str, body: &str) -> String {
    let (mut c, _) = Client::connect_from("127.0.0.2", w.d.mx, w.cfg.client_tls()).await;
    c.secure().await;
    c.send_mail(from, &["carol@elsewhere.test"], body)
        .await
        .expect(250)
        .queued_id()
}

async fn outbound_spam_is_held_then_released(backend: Backend) {
    let w = world(backend, "\"spam\"", "").await;
    let body = format!("From: alice@example.test\nSubject: Great offer\n\n{GTUBE}\n");
    let id = send_out(&w, "alice@example.test", &body).await;
    let notice = w.home.wait_for(1).await;
    assert!(notice[0].mail_from.is_empty());
    assert_eq!(notice[0].rcpts, ["alice@example.test"]);
    let text = notice[0].text();
    assert!(
        text.contains("Message held") && text.contains("administrator") && text.contains(&id),
        "{text}"
    );
    let list = w.d.cli(&["quarantine", "list", "--json"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains(&id));
    assert!(w.internet.received().is_empty(), "held, not delivered");
    let out = w.d.cli(&["quarantine", "release", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = w.internet.wait_for(1).await;
    assert_eq!(got[0].rcpts, ["carol@elsewhere.test"]);
    let t = w.d.trace(&id);
    let released = t
        .iter()
        .find(|e| e["kind"] == "released")
        .expect("a released event");
    assert!(
        released["detail"]["by"]
            .as_str()
            .is_some_and(|b| !b.is_empty())
    );
}

async fn override_list_lets_a_sender_through(backend: Backend) {
    // The override list sits in [policy.outbound], beside its stages.
    let w = world_with_override(backend).await;
    let body = format!("From: ceo@example.test\nSubject: test\n\n{GTUBE}\n");
    let id = send_out(&w, "ceo@example.test", &body).await;
    let got = w.internet.wait_for(1).await;
    assert!(got[0].text().contains("X-Passerelle-Score: 100"));
    let t = w.d.trace(&id);
    assert!(
        t.iter()
            .any(|e| e["kind"] == "verdict" && e["detail"]["stage"] == "override"),
        "{t:#?}"
    );
}

async fn outbound_virus_is_deleted_with_a_notice(backend: Backend) {
    let Ok(clamd) = std::env::var("CLAMD_ADDRESS") else {
        assert!(
            std::env::var("PASSERELLE_REQUIRE_CLAMD").is_err(),
            "CLAMD_ADDRESS missing"
        );
        eprintln!("CLAMD_ADDRESS is not set: skipped (scripts/test runs it)");
        return;
    };
    let w = world(
        backend,
        "\"virus\"",
        &format!("[policy.virus]\nclamd = \"{clamd}\"\n"),
    )
    .await;
    let body = format!(
        "From: alice@example.test\nSubject: report\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n\
         --b\nContent-Type: text/plain\n\nsee attached\n--b\nContent-Type: application/octet-stream; name=\"tool.com\"\n\
         Content-Disposition: attachment; filename=\"tool.com\"\n\n{EICAR}\n--b--\n"
    );
    let id = send_out(&w, "alice@example.test", &body).await;
    let notice = w.home.wait_for(1).await;
    let text = notice[0].text();
    assert!(
        text.contains("Undelivered") && text.to_lowercase().contains("eicar"),
        "{text}"
    );
    assert_eq!(w.d.trace(&id)[0]["detail"]["disposition"], "deleted");
    assert!(w.internet.received().is_empty());
}

/// Our outbound mail carries a signed return path; a bounce to it is delivered to the sender,
/// while an unsigned or forged bounce is deleted by the empty-sender rule.
async fn signed_bounces_reach_the_sender(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    let internet = Sink::start(&cfg.ca).await;
    let home = Sink::start(&cfg.ca).await;
    cfg.delivery = vec![format!("smarthost = \"{}\"", internet.addr)];
    cfg.route_tls = "require";
    cfg.policy = "[policy.inbound]\nstages = [\"sender\"]\n[policy.outbound]\nstages = []\n".into();
    let cfg = cfg.domain("example.test", home.addr);
    let d = Daemon::start(&cfg).await;
    let w = World {
        cfg,
        d,
        internet,
        home,
    };
    send_out(
        &w,
        "alice@example.test",
        "From: alice@example.test\nSubject: hi\n\nhello\n",
    )
    .await;
    let out = w.internet.wait_for(1).await;
    let return_path = out[0].mail_from.clone();
    assert!(
        return_path.starts_with("prvs=0") && return_path.ends_with("=alice@example.test"),
        "{return_path}"
    );

    // The remote server bounces it, to the return path it saw.
    let bounce = "From: MAILER-DAEMON@elsewhere.test\nSubject: Undelivered\n\nno such user carol\n";
    let (mut c, _) = Client::connect(w.d.mx, w.cfg.client_tls()).await;
    c.secure().await;
    let real = c
        .send_mail("", &[&return_path], bounce)
        .await
        .expect(250)
        .queued_id();
    let forged = c
        .send_mail("", &["alice@example.test"], bounce)
        .await
        .expect(250)
        .queued_id();
    let tampered_rcpt = return_path.replacen("prvs=0", "prvs=1", 1);
    let tampered = c
        .send_mail("", &[&tampered_rcpt], bounce)
        .await
        .expect(250)
        .queued_id();
    let got = w.home.wait_for(1).await;
    assert_eq!(
        got[0].rcpts,
        ["alice@example.test"],
        "delivered to the real address"
    );
    assert!(got[0].text().contains("no such user carol"));
    for id in [&forged, &tampered] {
        assert_eq!(w.d.trace(id)[0]["detail"]["disposition"], "deleted", "{id}");
    }
    support::eventually("the real bounce's delivery recorded", || async {
        w.d.trace(&real)
            .iter()
            .any(|e| e["kind"] == "delivered" || e["kind"] == "attempt")
            .then_some(())
    })
    .await;
    assert_eq!(
        w.home.received().len(),
        1,
        "only the signed bounce was delivered"
    );
}

on_both_stores!(
    signed_bounces_reach_the_sender,
    outbound_spam_is_held_then_released,
    override_list_lets_a_sender_through,
    outbound_virus_is_deleted_with_a_notice,
);
