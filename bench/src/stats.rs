//! Figures: our own CPU time, latency percentiles, errors by reply code, and the sink's counter
//! served on a small TCP port (one line per connection, then close).

use anyhow::{Context as _, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// User + system CPU time of this process so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Latencies in microseconds, sorted once for percentiles.
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn new(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        Latencies(samples)
    }

    /// The `p`th percentile (nearest rank), in milliseconds; 0 without samples.
    pub fn ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1] as f64 / 1000.0
    }
}

/// Failures by what went wrong: a reply code ("451") or a stage ("connect", "tls", "io",
/// "timeout"), each with its count and the first text seen.
#[derive(Default)]
pub struct Errors(BTreeMap<String, (u64, String)>);

impl Errors {
    pub fn add(&mut self, what: &str, text: &str) {
        let entry = self
            .0
            .entry(what.to_owned())
            .or_insert_with(|| (0, text.to_owned()));
        entry.0 += 1;
    }

    pub fn merge(&mut self, other: Errors) {
        for (k, (n, text)) in other.0 {
            self.0.entry(k).or_insert((0, text)).0 += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().map(|(n, _)| n).sum()
    }

    /// `451:3,connect:1`, or `none`.
    pub fn summary(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(k, (n, _))| format!("{k}:{n}"))
            .collect();
        parts.join(",")
    }

    /// One line per kind: count and the first text seen.
    pub fn details(&self) -> impl Iterator<Item = String> + '_ {
        self.0
            .iter()
            .map(|(k, (n, text))| format!("  {k} × {n}, first: {text}"))
    }
}

/// What the sink has received so far.
#[derive(Default)]
pub struct Counter {
    pub messages: AtomicU64,
    pub recipients: AtomicU64,
    pub bytes: AtomicU64,
    /// Connections accepted: messages per connection shows a relay's connection reuse.
    pub connections: AtomicU64,
}

impl Counter {
    pub fn line(&self) -> String {
        format!(
            "messages={} recipients={} bytes={} connections={}\n",
            self.messages.load(Ordering::Relaxed),
            self.recipients.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed)
        )
    }
}

/// Serves `Counter::line` to every connection on `listener`.
pub async fn serve_counter(listener: TcpListener, counter: Arc<Counter>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let line = counter.line();
        tokio::spawn(async move {
            let _ = stream.write_all(line.as_bytes()).await;
        });
    }
}

/// Asks a sink's stats port how many messages it has received.
pub async fn sink_messages(addr: &str) -> Result<u64> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the sink's stats port {addr}"))?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix("messages="))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected answer from {addr}: {text:?}"))
}
