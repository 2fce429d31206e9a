//! Operations: the admin listener's /healthz, /readyz (red when clamd is down) and /metrics
//! (changing as mail flows), JSON log lines, and the systemd unit.

mod support;

use support::client::message;
use support::http::{get, metric};
use support::{Backend, Client, Daemon, Sink, TestConfig};

async fn metrics_follow_the_mail(backend: Backend) {
    let cfg = TestConfig::new(backend).await;
    let sink = Sink::start(&cfg.ca).await;
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;
    assert_eq!(get(d.admin, "/healthz").await.0, 200);
    let (code, body) = get(d.admin, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["checks"]["store"], "ok");
    assert_eq!(get(d.admin, "/nowhere").await.0, 404);

    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    for i in 0..3 {
        c.send_mail(
            "alice@client.test",
            &["bob@example.test"],
            &message(&format!("m{i}")),
        )
        .await
        .expect(250);
    }
    c.cmd("QUIT").await;
    sink.wait_for(3).await;
    let text = support::eventually("delivery metrics", || async {
        let (_, text) = get(d.admin, "/metrics").await;
        let delivered = metric(
            &text,
            "passerelle_delivery_attempts_total{result=\"delivered\"}",
        );
        // The queue gauge is read from the store, where the outcome is committed just after.
        let depth = metric(&text, "passerelle_queue_recipients{status=\"delivered\"}");
        (delivered >= 3.0 && depth >= 3.0).then_some(text)
    })
    .await;
    assert_eq!(
        metric(
            &text,
            "passerelle_messages_total{direction=\"inbound\",outcome=\"queued\"}"
        ),
        3.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "passerelle_connections_total{listener=\"mx\",result=\"accepted\"}"
        ) >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "passerelle_tls_sessions_total{version=\"TLSv1.3\"}") >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "passerelle_queue_recipients{status=\"delivered\"}"),
        3.0,
        "{text}"
    );

    // Every log line is JSON, and each session ends with one line naming peer, TLS and outcome.
    let log = d.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ended = lines
        .iter()
        .find(|l| l["message"] == "session ended")
        .expect("a session line");
    assert_eq!(ended["tls"], "TLSv1.3");
    assert!(ended["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "delivery attempt" && l["status"] == "delivered")
    );
}

/// /readyz turns red when clamd is down and says which check fails.
async fn readyz_names_the_failing_check(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    let refused = support::Down::new();
    let dead = refused.addr;
    cfg.policy = format!(
        "[policy.inbound]\nstages = [\"virus\"]\n[policy.outbound]\nstages = []\n[policy.virus]\nclamd = \"{dead}\"\ntimeout = \"1s\"\n"
    );
    let d = Daemon::start(&cfg).await;
    let (code, body) = get(d.admin, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["checks"]["store"], "ok");
    assert!(
        v["checks"]["clamd"]
            .as_str()
            .unwrap()
            .starts_with("failing"),
        "{body}"
    );
}

on_both_stores!(metrics_follow_the_mail, readyz_names_the_failing_check);

/// The systemd unit passes `systemd-analyze verify` where the tool exists (the binary path it
/// names is not installed here, so that one complaint is expected and filtered out).
#[test]
fn systemd_unit_verifies() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .args([
            "verify",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/systemd/passerelle.service"
            ),
        ])
        .output()
    else {
        eprintln!("systemd-analyze not found: unit not verified");
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    let real: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("/usr/local/bin/passerelle") && !l.trim().is_empty())
        .collect();
    assert!(real.is_empty(), "{err}");
}

/// /readyz turns red when the store stops answering and green when it is back (PostgreSQL: the
/// test closes the database to new connections and ends the daemon's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_store() {
    if !support::db::postgres_available() {
        return;
    }
    let cfg = TestConfig::new(Backend::Postgres).await;
    let d = Daemon::start(&cfg).await;
    assert_eq!(get(d.admin, "/readyz").await.0, 200);
    support::db::set_reachable(&cfg.store_url, false).await;
    let body = support::eventually("/readyz red", || async {
        let (code, body) = get(d.admin, "/readyz").await;
        (code == 503).then_some(body)
    })
    .await;
    assert!(body.contains("\"store\":\"failing"), "{body}");
    support::db::set_reachable(&cfg.store_url, true).await;
    support::eventually("/readyz green again", || async {
        (get(d.admin, "/readyz").await.0 == 200).then_some(())
    })
    .await;
}
