//! Start, stop and restart: a bad policy file is refused with every error named; SIGTERM drains
//! and exits 0; a restart loses nothing and delivers nothing twice.

mod support;

use support::client::message;
use support::daemon::run_cli;
use support::{Backend, Client, Daemon, Sink, TestConfig};

const BROKEN: &str = r#"
[[listeners]]
name = "mx"
address = "127.0.0.1:99999"
tls = "sometimes"

[session]
max_message_size = -1

[relay]
networks = ["not-a-network"]

[store]
url = "ftp://nowhere"
"#;

/// `check-config` prints every error with its key path and exits 1; `serve` refuses the same
/// file the same way before binding anything.
#[test]
fn bad_policy_file_is_refused_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, BROKEN).unwrap();
    for cmd in ["check-config", "serve", "migrate"] {
        let out = run_cli(&path, &[cmd]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        for key in [
            "listeners[0].tls: unknown variant `sometimes`",
            "listeners[0].address: expected ip:port",
            "session.max_message_size: invalid value",
            "relay.networks[0]: expected a network",
            "store.url: expected sqlite://PATH or postgres://",
            "tls.certificate: file not found",
        ] {
            assert!(err.contains(key), "{cmd}: {key:?} missing from:\n{err}");
        }
        assert!(err.contains("bad.toml: 7 errors"), "{cmd}: {err}");
    }
}

#[tokio::test]
async fn good_policy_file_passes_check() {
    let cfg = TestConfig::new(Backend::Sqlite).await;
    let out = run_cli(&cfg.write(), &["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": OK ("));
}

/// Messages accepted while the next hop is down survive a graceful stop and a restart, and are
/// delivered exactly once when the next hop comes back.
async fn restart_loses_nothing(backend: Backend) {
    let mut cfg = TestConfig::new(backend).await;
    cfg.retry = vec!["300ms"];
    // A port with nothing listening: the next hop is down.
    let down = support::Down::new();
    let cfg = cfg.domain("example.test", down.addr);
    let d = Daemon::start(&cfg).await;
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = c
            .send_mail(
                "alice@client.test",
                &["bob@example.test"],
                &message(&format!("m{i}")),
            )
            .await
            .expect(250);
        ids.push(r.queued_id());
    }
    for id in &ids {
        support::eventually("a failed attempt while the next hop is down", || async {
            let trace = String::from_utf8_lossy(&d.cli(&["trace", id]).stdout).into_owned();
            trace.contains(" deferred ").then_some(())
        })
        .await;
    }
    // A session still open at shutdown is told 421 and closed.
    let status = d.stop().await;
    assert_eq!(status.code(), Some(0), "graceful stop exits 0");
    assert!(c.read().await.code == 421 || c.read().await.code == 0);

    let sink = Sink::start_on(&cfg.ca, &down.release().to_string()).await;
    let d = Daemon::start(&cfg).await;
    let got = sink.wait_for(5).await;
    for id in &ids {
        let trace = support::eventually("the delivered event", || async {
            let t = String::from_utf8_lossy(&d.cli(&["trace", id]).stdout).into_owned();
            t.contains(" delivered ").then_some(t)
        })
        .await;
        assert!(
            trace.contains(" deferred "),
            "deferred before the restart:\n{trace}"
        );
        assert_eq!(trace.matches(" delivered ").count(), 1, "{trace}");
        assert_eq!(
            got.iter()
                .filter(|m| m.text().contains(&format!("id {id}")))
                .count(),
            1,
            "{id}"
        );
    }
    // Every recipient is now final, so nothing can be sent again: the count is the count.
    assert_eq!(sink.received().len(), 5, "each message exactly once");
}

/// `migrate` prepares the store; `trace` of an unknown id says so and exits 2.
async fn migrate_and_trace_unknown(backend: Backend) {
    let cfg = TestConfig::new(backend).await;
    let path = cfg.write();
    let out = run_cli(&path, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_cli(&path, &["migrate"]);
    assert!(out.status.success(), "migrate twice is harmless");
    let out = run_cli(&path, &["trace", "0193d1b0-0000-7000-8000-000000000000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no events"));
}

on_both_stores!(restart_loses_nothing, migrate_and_trace_unknown);

/// `check-config --against RUNNING` names what the new file changes before a restart.
#[tokio::test]
async fn check_config_shows_changes_against_the_running_file() {
    let cfg = TestConfig::new(Backend::Sqlite).await;
    let old = cfg.dir.path().join("running.toml");
    std::fs::write(&old, cfg.toml()).unwrap();
    let new = cfg.write();
    let changed = std::fs::read_to_string(&new)
        .unwrap()
        .replace("max_connections = 5", "max_connections = 7")
        + "\n[relay.domains.\"new.test\"]\nnext_hop = \"127.0.0.1:2600\"\n";
    std::fs::write(&new, changed).unwrap();
    let out = run_cli(&new, &["check-config", "--against", old.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("~ store.max_connections: 5 → 7"), "{text}");
    assert!(
        text.contains("+ relay.domains.new.test.next_hop = \"127.0.0.1:2600\""),
        "{text}"
    );
    assert!(text.contains("(hash "), "{text}");
}
