//! Starts the real `passerelle` binary with a generated config, every listener on port 0; learns
//! the bound ports from its JSON log; keeps the log, and prints it when a test fails.

use super::certs::TestCa;
use super::db::{self, Backend};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A test's configuration: the fields tests vary, with test-friendly defaults (short retries).
pub struct TestConfig {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub store_url: String,
    pub node: String,
    /// Client networks allowed to relay; 127.0.0.1 (the tests' default source) is not in it.
    pub networks: Vec<String>,
    /// Own domains and their next hops.
    pub domains: Vec<(String, String)>,
    pub route_tls: &'static str,
    pub retry: Vec<&'static str>,
    pub lifetime: &'static str,
    pub lease: &'static str,
    /// `queue.poll_interval`: how often the scheduler claims from the store unprompted.
    pub poll_interval: &'static str,
    /// Extra `key = value` lines for `[session]`.
    pub session: Vec<String>,
    pub min_tls: &'static str,
    /// Extra `key = value` lines for `[queue]` and `[delivery]`.
    pub queue: Vec<String>,
    pub delivery: Vec<String>,
    /// Extra `key = value` lines for `[relay]`.
    pub relay: Vec<String>,
    /// The `[policy…]` tables, as TOML. By default no stage runs, so that tests of the SMTP
    /// core need no scanner; policy tests set their own.
    pub policy: String,
    /// Where the daemon's resolver asks: a `TestDns`; by default a port where nothing answers.
    pub nameserver: String,
    /// Extra lines in `[store]`.
    pub store_extra: Vec<String>,
    /// The `[directory]` tables, as TOML; empty by default (no recipient check).
    pub directory: String,
    server_cert: (PathBuf, PathBuf),
}

impl TestConfig {
    pub async fn new(backend: Backend) -> TestConfig {
        crate::support::install_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path());
        let leaf = ca.leaf("server", &["localhost", "127.0.0.1", "mx.test"]);
        let store_url = db::fresh(backend, dir.path()).await;
        TestConfig {
            store_url,
            node: "test-node".into(),
            networks: vec!["127.0.0.2/32".into()],
            domains: Vec::new(),
            route_tls: "require-verified",
            retry: vec!["1s"],
            lifetime: "1h",
            lease: "10s",
            poll_interval: "200ms",
            session: Vec::new(),
            min_tls: "1.2",
            queue: Vec::new(),
            delivery: Vec::new(),
            nameserver: "127.0.0.1:9".into(),
            store_extra: Vec::new(),
            relay: Vec::new(),
            directory: String::new(),
            policy: "[policy.inbound]\nstages = []\n[policy.outbound]\nstages = []\n".into(),
            server_cert: (leaf.cert, leaf.key),
            dir,
            ca,
        }
    }

    /// Routes `domain` to `next_hop` (a sink's address).
    pub fn domain(mut self, domain: &str, next_hop: SocketAddr) -> Self {
        self.domains.push((domain.into(), next_hop.to_string()));
        self
    }

    pub fn toml(&self) -> String {
        let q = |s: &str| format!("{s:?}");
        let list = |v: &[String]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
        let mut t = format!(
            r#"[server]
hostname = "mx.test"
node = {node}

[[listeners]]
name = "mx"
address = "127.0.0.1:0"
tls = "starttls"

[[listeners]]
name = "submission"
address = "127.0.0.1:0"
tls = "implicit"

[session]
{session}

[tls]
certificate = {cert}
private_key = {key}
min_version = {min_tls}

[relay]
networks = [{networks}]
{relay}
"#,
            node = q(&self.node),
            session = self.session.join("\n"),
            cert = q(&self.server_cert.0.display().to_string()),
            key = q(&self.server_cert.1.display().to_string()),
            min_tls = q(self.min_tls),
            networks = list(&self.networks),
            relay = self.relay.join("\n"),
        );
        for (d, hop) in &self.domains {
            t.push_str(&format!(
                "\n[relay.domains.{}]\nnext_hop = {}\ntls = {}\n",
                q(d),
                q(hop),
                q(self.route_tls)
            ));
        }
        t.push_str(&format!("\n{}\n", self.policy));
        t.push_str(&format!("\n{}\n", self.directory));
        t.push_str(&format!(
            r#"
[queue]
retry = [{retry}]
lifetime = {lifetime}
lease = {lease}
poll_interval = {poll}
{queue}

[delivery]
connect_timeout = "2s"
command_timeout = "10s"
trusted_ca = {ca}
{delivery}

[store]
url = {url}
max_connections = 5
{store_extra}

[admin]
listen = "127.0.0.1:0"

[dns]
nameservers = [{nameserver}]
timeout = "1s"
attempts = 1
"#,
            retry = self
                .retry
                .iter()
                .map(|s| q(s))
                .collect::<Vec<_>>()
                .join(", "),
            lifetime = q(self.lifetime),
            lease = q(self.lease),
            poll = q(self.poll_interval),
            ca = q(&self.ca.ca_pem.display().to_string()),
            url = q(&self.store_url),
            queue = self.queue.join("\n"),
            delivery = self.delivery.join("\n"),
            nameserver = q(&self.nameserver),
            store_extra = self.store_extra.join("\n"),
        ));
        t
    }

    /// Writes the config file and returns its path.
    pub fn write(&self) -> PathBuf {
        let path = self.dir.path().join("passerelle.toml");
        std::fs::write(&path, self.toml()).unwrap();
        path
    }

    pub fn client_tls(&self) -> rustls::ClientConfig {
        self.ca.client_config()
    }
}

pub struct Daemon {
    child: Child,
    pub mx: SocketAddr,
    pub submission: SocketAddr,
    /// The admin HTTP listener (/metrics, /healthz, /readyz).
    pub admin: SocketAddr,
    pub log: Arc<Mutex<String>>,
    pub config: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_passerelle")
}

impl Daemon {
    /// Starts `passerelle serve` and waits until every listener is bound and it says "ready".
    pub async fn start(cfg: &TestConfig) -> Daemon {
        let config = cfg.write();
        let mut child = Command::new(binary())
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&config)
            .current_dir(cfg.dir.path())
            .env("RUST_LOG", "info,passerelle=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<serde_json::Value>();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let (mut mx, mut submission, mut admin) = (None, None, None);
        let rx = Arc::new(Mutex::new(rx));
        let waited = tokio::task::spawn_blocking(move || {
            let rx = rx.lock().unwrap();
            loop {
                let v = rx.recv_timeout(Duration::from_secs(30)).ok()?;
                match v["message"].as_str() {
                    Some("listening") => {
                        let addr: SocketAddr = v["address"].as_str()?.parse().ok()?;
                        match v["listener"].as_str() {
                            Some("mx") => mx = Some(addr),
                            Some("submission") => submission = Some(addr),
                            Some("admin") => admin = Some(addr),
                            _ => {}
                        }
                    }
                    Some("ready") => return Some((mx?, submission?, admin?)),
                    _ => {}
                }
            }
        })
        .await
        .unwrap();
        let Some((mx, submission, admin)) = waited else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!("the daemon did not start:\n{}", log.lock().unwrap());
        };
        Daemon {
            child,
            mx,
            submission,
            admin,
            log,
            config,
        }
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop(mut self) -> ExitStatus {
        signal(&self.child, libc::SIGTERM);
        let mut child = std::mem::replace(&mut self.child, dummy_child());
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        std::mem::forget(self);
        status
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The daemon's process id (for /proc/<pid>/status).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs another `passerelle` command against the same config.
    pub fn cli(&self, args: &[&str]) -> Output {
        run_cli(&self.config, args)
    }

    /// `passerelle trace ID --json`: the message's events, one JSON object each.
    pub fn trace(&self, id: &str) -> Vec<serde_json::Value> {
        let out = self.cli(&["trace", id, "--json"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

pub fn run_cli(config: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .current_dir(config.parent().unwrap())
        .output()
        .unwrap()
}

fn dummy_child() -> Child {
    Command::new("true").spawn().unwrap()
}

fn signal(child: &Child, sig: i32) {
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- daemon log ----\n{}", self.log.lock().unwrap());
        }
    }
}

/// A rustls server config from PEM files (for the sink).
pub fn server_tls(cert: &Path, key: &Path) -> rustls::ServerConfig {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap()
}
