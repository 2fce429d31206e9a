//! The recipient directory: recipients of our domains checked at RCPT against the store's table
//! (managed with `passerelle directory`) and a real slapd; delegation copies, each its own
//! recipient with its own events.

mod support;

use serde_json::Value;
use std::process::Output;
use support::client::message;
use support::ldap::TestLdap;
use support::{Backend, Client, Daemon, Sink, TestConfig};

async fn setup(backend: Backend, directory: &str) -> (TestConfig, Sink) {
    let mut cfg = TestConfig::new(backend).await;
    let sink = Sink::start(&cfg.ca).await;
    cfg = cfg.domain("example.test", sink.addr);
    cfg.directory = directory.to_owned();
    (cfg, sink)
}

const ENABLED: &str = "[directory]\nenabled = true\n";

#[track_caller]
fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[track_caller]
fn failed(out: Output) -> String {
    assert!(!out.status.success(), "succeeded: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The addresses of `directory list --json`.
fn listed(d: &Daemon) -> Vec<String> {
    json_lines(&ok(d.cli(&["directory", "list", "--json"])))
        .iter()
        .map(|e| e["address"].as_str().unwrap().to_owned())
        .collect()
}

async fn rcpt(d: &Daemon, cfg: &TestConfig, to: &str) -> support::client::Reply {
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.cmd("MAIL FROM:<sender@client.test>").await.expect(250);
    c.cmd(&format!("RCPT TO:<{to}>")).await
}

/// Unknown recipients of our domains get 550 5.1.1; known ones (any case) are accepted and
/// delivered; postmaster always; other domains (outbound relay) are not checked.
async fn unknown_refused_known_delivered(backend: Backend) {
    let (cfg, sink) = setup(backend, ENABLED).await;
    let d = Daemon::start(&cfg).await;
    ok(d.cli(&["directory", "add", "Alice@Example.test", "--name", "Alice"]));

    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.cmd("MAIL FROM:<sender@client.test>").await.expect(250);
    let r = c.cmd("RCPT TO:<nobody@example.test>").await.expect(550);
    assert!(r.text().starts_with("5.1.1 "), "{r}");
    c.cmd("RCPT TO:<postmaster@example.test>").await.expect(250);
    c.cmd("RCPT TO:<ALICE@example.TEST>").await.expect(250);
    c.cmd("DATA").await.expect(354);
    c.send_raw(message("known").replace('\n', "\r\n").as_bytes())
        .await;
    c.send_raw(b".\r\n").await;
    let id = c.read().await.expect(250).queued_id();
    let got = sink.wait_for(1).await;
    assert_eq!(
        got[0].rcpts,
        ["postmaster@example.test", "ALICE@example.test"]
    );
    assert!(got[0].text().contains("Subject: known"));
    let trace = ok(d.cli(&["trace", &id, "--json"]));
    assert!(!trace.contains("nobody@"), "{trace}");

    // An authorised client relaying elsewhere is not checked.
    let (mut c, _) = Client::connect_from("127.0.0.2", d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.cmd("MAIL FROM:<alice@example.test>").await.expect(250);
    c.cmd("RCPT TO:<carol@elsewhere.test>").await.expect(250);
    // Removed from the directory: refused from the next RCPT on, no restart needed.
    ok(d.cli(&["directory", "remove", "alice@example.test"]));
    rcpt(&d, &cfg, "alice@example.test").await.expect(550);
}

/// add / list / remove / delegate / undelegate / import (upsert) / import --replace.
async fn cli_manages_the_directory(backend: Backend) {
    let (cfg, _sink) = setup(backend, ENABLED).await;
    let d = Daemon::start(&cfg).await;
    assert!(listed(&d).is_empty());
    assert!(ok(d.cli(&["directory", "list"])).contains("empty"));

    ok(d.cli(&[
        "directory",
        "add",
        "Dr.Martin@example.test",
        "--name",
        "Claire Martin",
    ]));
    ok(d.cli(&["directory", "add", "desk@example.test"]));
    let again = ok(d.cli(&["directory", "add", "desk@example.test", "--name", "Desk"]));
    assert!(again.contains("already"), "{again}");
    let e = failed(d.cli(&["directory", "add", "x@elsewhere.test"]));
    assert!(e.contains("not in one of our domains"), "{e}");
    let e = failed(d.cli(&["directory", "add", "not an address"]));
    assert!(e.contains("not"), "{e}");
    ok(d.cli(&[
        "directory",
        "delegate",
        "dr.martin@example.test",
        "desk@example.test",
    ]));
    let e = failed(d.cli(&[
        "directory",
        "delegate",
        "desk@example.test",
        "Desk@example.test",
    ]));
    assert!(e.contains("its own delegate"), "{e}");

    let list = json_lines(&ok(d.cli(&["directory", "list", "--json"])));
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["address"], "desk@example.test");
    assert_eq!(list[0]["name"], "Desk");
    assert_eq!(list[1]["address"], "dr.martin@example.test");
    assert_eq!(list[1]["name"], "Claire Martin");
    assert_eq!(
        list[1]["delegates"],
        serde_json::json!(["desk@example.test"])
    );
    let text = ok(d.cli(&["directory", "list"]));
    assert!(
        text.contains("dr.martin@example.test  \"Claire Martin\"  copies to desk@example.test"),
        "{text}"
    );

    ok(d.cli(&[
        "directory",
        "undelegate",
        "dr.martin@example.test",
        "desk@example.test",
    ]));
    failed(d.cli(&[
        "directory",
        "undelegate",
        "dr.martin@example.test",
        "desk@example.test",
    ]));
    let list = json_lines(&ok(d.cli(&["directory", "list", "--json"])));
    assert_eq!(list[1]["delegates"], serde_json::json!([]));

    // Import merges: new addresses added, names updated, others kept.
    let csv = cfg.dir.path().join("people.csv");
    std::fs::write(
        &csv,
        "address,name,delegates\n\
         dr.martin@example.test,\"Martin, Claire\",desk@example.test\n\
         new@example.test,New Person,\n",
    )
    .unwrap();
    let out = ok(d.cli(&["directory", "import", csv.to_str().unwrap()]));
    assert!(out.contains("1 added, 1 updated"), "{out}");
    assert_eq!(
        listed(&d),
        [
            "desk@example.test",
            "dr.martin@example.test",
            "new@example.test"
        ]
    );
    let list = json_lines(&ok(d.cli(&["directory", "list", "--json"])));
    assert_eq!(list[1]["name"], "Martin, Claire");
    assert_eq!(
        list[1]["delegates"],
        serde_json::json!(["desk@example.test"])
    );
    rcpt(&d, &cfg, "new@example.test").await.expect(250);

    // --replace: the table becomes the file (desk@ goes, and the delegation to it).
    std::fs::write(
        &csv,
        "address\ndr.martin@example.test\nother@example.test\n",
    )
    .unwrap();
    let out = ok(d.cli(&["directory", "import", "--replace", csv.to_str().unwrap()]));
    assert!(out.contains("1 added, 1 updated, 2 removed"), "{out}");
    assert_eq!(listed(&d), ["dr.martin@example.test", "other@example.test"]);
    let list = json_lines(&ok(d.cli(&["directory", "list", "--json"])));
    assert_eq!(
        list[0]["name"], "Martin, Claire",
        "no name column: name kept"
    );
    assert_eq!(list[0]["delegates"], serde_json::json!([]));
    rcpt(&d, &cfg, "desk@example.test").await.expect(550);

    let e = failed(d.cli(&["directory", "remove", "desk@example.test"]));
    assert!(e.contains("not in the directory"), "{e}");
}

/// A bad line is named with its number, and nothing of the file is imported.
async fn bad_csv_line_imports_nothing(backend: Backend) {
    let (cfg, _sink) = setup(backend, ENABLED).await;
    let d = Daemon::start(&cfg).await;
    ok(d.cli(&["directory", "add", "kept@example.test", "--name", "Kept"]));
    let csv = cfg.dir.path().join("people.csv");
    std::fs::write(
        &csv,
        "address,name,delegates\n\
         good@example.test,Good,\n\
         kept@example.test,Renamed,good@example.test\n\
         broken-address,Bad,\n\
         also@example.test,Also,\n",
    )
    .unwrap();
    let path = csv.to_str().unwrap();
    for args in [
        vec!["directory", "import", path],
        vec!["directory", "import", "--replace", path],
    ] {
        let e = failed(d.cli(&args));
        assert!(e.contains("people.csv: line 4: "), "{e}");
        assert!(e.contains("broken-address"), "{e}");
        assert!(e.contains("nothing imported"), "{e}");
        let list = json_lines(&ok(d.cli(&["directory", "list", "--json"])));
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0]["address"], "kept@example.test");
        assert_eq!(list[0]["name"], "Kept");
        assert_eq!(list[0]["delegates"], serde_json::json!([]));
    }
    rcpt(&d, &cfg, "good@example.test").await.expect(550);
}

/// Known through a real slapd: accepted and delivered; unknown: 550; the filter cannot be
/// widened by the address; slapd stopped or not answering: 451 4.4.3 (the table still answers);
/// back: accepted.
async fn ldap_directory(backend: Backend) {
    if !support::ldap::slapd_available() {
        return;
    }
    let mut ldap = TestLdap::start(&[
        ("carol", "Carol.Ldap@example.test"),
        ("dan", "dan@example.test"),
    ])
    .await;
    let (cfg, sink) = setup(backend, &ldap.config()).await;
    let d = Daemon::start(&cfg).await;
    ok(d.cli(&["directory", "add", "table@example.test"]));

    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    c.cmd("MAIL FROM:<sender@client.test>").await.expect(250);
    let r = c.cmd("RCPT TO:<nobody@example.test>").await.expect(550);
    assert!(r.text().starts_with("5.1.1 "), "{r}");
    // `*` is a valid local-part character; unescaped it would match every mail attribute.
    c.cmd("RCPT TO:<*@example.test>").await.expect(550);
    c.cmd("RCPT TO:<carol.ldap@example.test>").await.expect(250);
    c.cmd("RCPT TO:<table@example.test>").await.expect(250);
    c.cmd("DATA").await.expect(354);
    c.send_raw(message("via ldap").replace('\n', "\r\n").as_bytes())
        .await;
    c.send_raw(b".\r\n").await;
    c.read().await.expect(250);
    let got = sink.wait_for(1).await;
    let mut rcpts = got[0].rcpts.clone();
    rcpts.sort();
    assert_eq!(rcpts, ["carol.ldap@example.test", "table@example.test"]);
    let out = ok(d.cli(&["directory", "lookup", "Dan@example.test"]));
    assert!(out.contains("known (ldap)"), "{out}");

    ldap.stop();
    let r = rcpt(&d, &cfg, "dan@example.test").await.expect(451);
    assert!(r.text().starts_with("4.4.3 "), "{r}");
    rcpt(&d, &cfg, "table@example.test").await.expect(250);
    let e = failed(d.cli(&["directory", "lookup", "dan@example.test"]));
    assert!(e.contains("451 4.4.3"), "{e}");

    ldap.restart().await;
    rcpt(&d, &cfg, "dan@example.test").await.expect(250);
    rcpt(&d, &cfg, "nobody@example.test").await.expect(550);

    // A server that accepts but does not answer: 451 after `timeout` (2s here), then it heals.
    ldap.freeze(true);
    let started = std::time::Instant::now();
    let r = rcpt(&d, &cfg, "dan@example.test").await.expect(451);
    assert!(r.text().starts_with("4.4.3 "), "{r}");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(1900),
        "{waited:?}"
    );
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    ldap.freeze(false);
    rcpt(&d, &cfg, "dan@example.test").await.expect(250);
}

/// The secretary gets a copy of the physician's inbound mail: its own recipient row (copy_of
/// the physician), its own delivery and events; no second copy when she is a recipient too;
/// fixed at acceptance; not for outbound mail.
async fn delegation_copies(backend: Backend) {
    let (cfg, sink) = setup(backend, ENABLED).await;
    let d = Daemon::start(&cfg).await;
    for a in [
        "physician@example.test",
        "secretary@example.test",
        "other@example.test",
    ] {
        ok(d.cli(&["directory", "add", a]));
    }
    ok(d.cli(&[
        "directory",
        "delegate",
        "physician@example.test",
        "secretary@example.test",
    ]));

    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    let id = c
        .send_mail(
            "lab@client.test",
            &["Physician@example.test"],
            &message("results"),
        )
        .await
        .expect(250)
        .queued_id();
    let got = sink.wait_for(1).await;
    let mut delivered: Vec<String> = sink
        .received()
        .iter()
        .flat_map(|m| m.rcpts.clone())
        .collect();
    if delivered.len() < 2 {
        delivered = sink
            .wait_for(2)
            .await
            .iter()
            .flat_map(|m| m.rcpts.clone())
            .collect();
    }
    delivered.sort();
    assert_eq!(
        delivered,
        ["Physician@example.test", "secretary@example.test"]
    );
    assert!(got[0].text().contains("Subject: results"));

    // Two recipient rows, the copy naming whose it is; both delivered.
    let rows = support::eventually("both recipients delivered", || async {
        let rows = json_lines(&ok(d.cli(&["queue", "show", &id, "--json"])));
        rows.iter()
            .all(|r| r["status"] == "delivered")
            .then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let copy = rows
        .iter()
        .find(|r| r["recipient"] == "secretary@example.test")
        .unwrap();
    assert_eq!(copy["copy_of"], "Physician@example.test");
    let original = rows
        .iter()
        .find(|r| r["recipient"] == "Physician@example.test")
        .unwrap();
    assert!(original.get("copy_of").is_none(), "{original}");

    // The received event records the copy; each recipient has its own attempt and delivery.
    let events = json_lines(&ok(d.cli(&["trace", &id, "--json"])));
    let received = events.iter().find(|e| e["kind"] == "received").unwrap();
    assert_eq!(
        received["detail"]["copies"],
        serde_json::json!([{"delegate": "secretary@example.test", "copy_of": "Physician@example.test"}])
    );
    for who in ["Physician@example.test", "secretary@example.test"] {
        let kinds: Vec<&str> = events
            .iter()
            .filter(|e| e["recipient"] == who)
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["attempt", "delivered"], "{who}: {events:?}");
    }

    // Already a recipient: no second copy.
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    let id2 = c
        .send_mail(
            "lab@client.test",
            &["physician@example.test", "secretary@example.test"],
            &message("both"),
        )
        .await
        .expect(250)
        .queued_id();
    let rows = json_lines(&ok(d.cli(&["queue", "show", &id2, "--json"])));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.get("copy_of").is_none()), "{rows:?}");

    // Fixed at acceptance: the copy still goes after the delegation is withdrawn.
    sink.script()
        .rcpt
        .insert("secretary@example.test".into(), "450 4.2.1 busy".into());
    let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
    c.secure().await;
    let id3 = c
        .send_mail(
            "lab@client.test",
            &["physician@example.test"],
            &message("later"),
        )
        .await
        .expect(250)
        .queued_id();
    support::eventually("the copy deferred", || async {
        let rows = json_lines(&ok(d.cli(&["queue", "show", &id3, "--json"])));
        rows.iter()
            .any(|r| r["recipient"] == "secretary@example.test" && r["status"] == "deferred")
            .then_some(())
    })
    .await;
    ok(d.cli(&[
        "directory",
        "undelegate",
        "physician@example.test",
        "secretary@example.test",
    ]));
    sink.script().rcpt.remove("secretary@example.test");
    support::eventually("the copy delivered", || async {
        let rows = json_lines(&ok(d.cli(&["queue", "show", &id3, "--json"])));
        rows.iter()
            .any(|r| r["recipient"] == "secretary@example.test" && r["status"] == "delivered")
            .then_some(())
    })
    .await;

    // Outbound mail from an authorised client: no copies.
    ok(d.cli(&[
        "directory",
        "delegate",
        "physician@example.test",
        "secretary@example.test",
    ]));
    let (mut c, _) = Client::connect_from("127.0.0.2", d.mx, cfg.client_tls()).await;
    c.secure().await;
    let id4 = c
        .send_mail(
            "other@example.test",
            &["physician@example.test"],
            &message("internal"),
        )
        .await
        .expect(250)
        .queued_id();
    let rows = json_lines(&ok(d.cli(&["queue", "show", &id4, "--json"])));
    assert_eq!(rows.len(), 1, "{rows:?}");
}

on_both_stores!(
    unknown_refused_known_delivered,
    cli_manages_the_directory,
    bad_csv_line_imports_nothing,
    ldap_directory,
    delegation_copies,
);
