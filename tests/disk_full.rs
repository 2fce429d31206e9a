//! The disk under the embedded SQLite store fills up while mail arrives: clients get a 4xx, every
//! message acknowledged before is intact and delivered, the database passes its integrity check,
//! and once there is room again the daemon accepts mail by itself.
//!
//! The store lives on a 3 MiB tmpfs the test mounts (root is needed; `scripts/test` runs as
//! root in CI). Without the right to mount, the test says so and passes only when
//! `PASSERELLE_REQUIRE_MOUNT` is unset.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::{Backend, Client, Daemon, Sink, TestConfig};

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_owned()))
    }

    fn resize(&self, size: &str) {
        let s = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(s.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A body of `kib` KiB in 76-character lines, different each time so nothing compresses it away.
fn body(i: usize, kib: usize) -> String {
    let mut s = format!("Subject: filler {i}\n\n");
    let mut n = i as u64 * 7919;
    while s.len() < kib * 1024 {
        for _ in 0..76 {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push((b'a' + (n >> 59) as u8 % 26) as char);
        }
        s.push('\n');
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_tempfails_and_corrupts_nothing() {
    let mut cfg = TestConfig::new(Backend::Sqlite).await;
    let Some(disk) = Tmpfs::mount(&cfg.dir.path().join("disk"), "3m") else {
        assert!(
            std::env::var("PASSERELLE_REQUIRE_MOUNT").is_err(),
            "PASSERELLE_REQUIRE_MOUNT is set but mounting a tmpfs failed"
        );
        eprintln!("cannot mount a tmpfs here (not root?): disk-full test skipped");
        return;
    };
    let db = disk.0.join("passerelle.db");
    cfg.store_url = format!("sqlite://{}", db.display());
    let sink = Sink::start(&cfg.ca).await;
    // Deliveries wait: the queue keeps every body while the disk fills.
    sink.script()
        .rcpt
        .insert("bob@example.test".into(), "451 4.3.0 not now".into());
    cfg.retry = vec!["1h"];
    let cfg = cfg.domain("example.test", sink.addr);
    let d = Daemon::start(&cfg).await;

    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..200 {
        let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
        c.secure().await;
        let r = c
            .send_mail("alice@client.test", &["bob@example.test"], &body(i, 64))
            .await;
        match r.code {
            250 => acked.push(r.queued_id()),
            code => {
                refusal = Some((code, r.text()));
                break;
            }
        }
        c.cmd("QUIT").await;
    }
    let (code, text) = refusal.expect("the 3 MiB disk filled up");
    eprintln!("disk full after {} messages: {code} {text}", acked.len());
    assert!(code == 451 || code == 452, "{code} {text}");
    assert!(
        acked.len() >= 5,
        "only {} messages before the disk filled",
        acked.len()
    );

    // Room again: the same daemon accepts mail, without a restart.
    disk.resize("64m");
    let mut after = None;
    for _ in 0..100 {
        let (mut c, _) = Client::connect(d.mx, cfg.client_tls()).await;
        c.secure().await;
        let r = c
            .send_mail("alice@client.test", &["bob@example.test"], &body(999, 4))
            .await;
        if r.code == 250 {
            after = Some(r.queued_id());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after = after.expect("a message accepted once there is room");
    acked.push(after);
    d.stop().await;

    // Nothing acknowledged is missing, and the database is sound.
    let found = support::db::ints(&cfg.store_url, "SELECT COUNT(*) FROM messages").await;
    assert!(
        found[0] >= acked.len() as i64,
        "{found:?} < {}",
        acked.len()
    );
    for id in &acked {
        let n = support::db::ints(
            &cfg.store_url,
            &format!("SELECT COUNT(*) FROM recipients WHERE message_id = '{id}'"),
        )
        .await;
        assert_eq!(n, [1], "{id}");
    }
    {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::SqliteConnection::connect(&cfg.store_url)
            .await
            .unwrap();
        let rows = sqlx::query("PRAGMA integrity_check")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let result: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(result, ["ok"]);
    }

    // And the next hop, once it takes mail, gets every one of them.
    sink.script().rcpt.clear();
    let d = Daemon::start(&cfg).await;
    let out = d.cli(&["queue", "retry", "--all"]);
    assert!(out.status.success());
    sink.wait_for(acked.len()).await;
}

/// The store alone, with commits failing one after another as the disk fills (a group commit
/// writes again job by job when its first try fails): every message it acknowledges — before,
/// and after there is room again — is in the database. A failed COMMIT once left the single
/// writing connection inside a transaction that never committed, and every later
/// acknowledgement was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_store_acknowledges_after_a_full_disk_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), "1m") else {
        assert!(std::env::var("PASSERELLE_REQUIRE_MOUNT").is_err());
        eprintln!("cannot mount a tmpfs here (not root?): test skipped");
        return;
    };
    let url = format!("sqlite://{}", disk.0.join("s.db").display());
    let store = passerelle::store::Store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    let rec = support::db::recorder();
    let message = |id: String, size: usize| {
        passerelle::queue::store::NewMessage::sample(&id, vec![b'x'; size])
    };
    let mut acked = 0;
    let mut full = false;
    for i in 0..200 {
        match store
            .accept(&rec, message(format!("m{i}"), 20_000), None, 1)
            .await
        {
            Ok(()) => acked += 1,
            Err(_) => {
                full = true;
                break;
            }
        }
    }
    assert!(full, "the 1 MiB disk filled up");
    disk.resize("64m");
    for i in 0..20 {
        store
            .accept(&rec, message(format!("a{i}"), 100), None, 1)
            .await
            .expect("room again");
        acked += 1;
    }
    store.close().await;
    let found = support::db::ints(&url, "SELECT COUNT(*) FROM messages").await;
    assert_eq!(found, [acked]);
}
