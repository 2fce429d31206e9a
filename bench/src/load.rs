//! The load generator: N messages over C concurrent connections, K per connection, each
//! connection EHLO → STARTTLS → EHLO (or implicit TLS) → MAIL → RCPT → DATA, one step at a time
//! or, with `--pipelining`, MAIL, RCPT and DATA in one write as a relaying MTA sends them.
//! Also the idle mode: N TLS sessions opened and held, to measure a server's memory per session.

use crate::conn::{Conn, Reply};
use crate::message::{Shape, Template};
use crate::stats::{self, Errors, Latencies};
use crate::tls;
use anyhow::{Context as _, Result};
use rustls::pki_types::ServerName;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The server under test, host:port.
    pub target: String,
    /// Messages to send in all.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub messages: u64,
    /// Connections open at once.
    #[arg(short = 'c', long, default_value_t = 10)]
    pub concurrency: usize,
    /// Messages per connection (then QUIT and a new connection).
    #[arg(short = 'k', long, default_value_t = 1)]
    pub per_connection: u64,
    /// Message size in octets, headers included.
    #[arg(long, default_value_t = 10 * 1024)]
    pub size: usize,
    /// What the messages look like: one plain text part, text with its HTML version, or a
    /// short note with a PDF attached (message.rs).
    #[arg(long, value_enum, default_value_t = Shape::Text)]
    pub shape: Shape,
    /// EHLO, STARTTLS, EHLO (the default).
    #[arg(long, conflicts_with = "implicit_tls")]
    pub starttls: bool,
    /// TLS from the first byte (port 465).
    #[arg(long)]
    pub implicit_tls: bool,
    /// Local address to connect from.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Accept any server certificate (the default unless --ca is given); the handshake
    /// signature is still verified.
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// Verify the server's certificate against these roots (PEM).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// TLS name to ask for (SNI); default: the target's host when it is a name.
    #[arg(long)]
    pub sni: Option<String>,
    /// Send MAIL, RCPT and DATA in one write and then read their three replies (RFC 2920), as
    /// Postfix's and Exim's SMTP clients do with a server that announces PIPELINING (refused
    /// when it does not). Off: one command, one reply.
    #[arg(long)]
    pub pipelining: bool,
    /// Resume TLS sessions across connections (off: every connection is a new client).
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value = "client.bench.test")]
    pub ehlo: String,
    #[arg(long, default_value = "sender@bench.test")]
    pub from: String,
    #[arg(long, default_value = "rcpt@example.test")]
    pub to: String,
    /// A sink's stats port: after sending, wait until the sink has received every accepted
    /// message and report the end-to-end rate.
    #[arg(long)]
    pub sink_stats: Option<String>,
    /// Longest wait for the sink, in seconds.
    #[arg(long, default_value_t = 300)]
    pub e2e_timeout: u64,
    /// Longest wait for one reply, connect or handshake, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Idle mode: open this many TLS sessions (to after the second EHLO) and hold them.
    #[arg(long)]
    pub idle: Option<usize>,
    /// Idle mode: how long to hold them, in seconds (default: until killed).
    #[arg(long, requires = "idle")]
    pub hold: Option<u64>,
}

/// What every connection task shares.
struct Shared {
    args: LoadArgs,
    addr: SocketAddr,
    tls: TlsConnector,
    name: ServerName<'static>,
    /// Messages not yet started.
    left: AtomicU64,
    /// Numbers each message (its Message-ID).
    seq: AtomicU64,
    template: Template,
}

impl Shared {
    /// Takes one message to send; false when none is left.
    fn take(&self) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    fn wait(&self) -> Duration {
        Duration::from_secs(self.args.timeout)
    }
}

/// What one connection task measured.
#[derive(Default)]
struct Tally {
    accepted: u64,
    latencies_us: Vec<u64>,
    errors: Errors,
    last_accept: Option<Instant>,
}

/// Why a message failed: a reply code or a stage, and the text.
struct Fail(&'static str, String);

impl Fail {
    fn io(e: impl std::fmt::Display) -> Fail {
        Fail("io", e.to_string())
    }
}

pub async fn run(args: LoadArgs) -> Result<()> {
    let (host, _) = args
        .target
        .rsplit_once(':')
        .context("the target must be host:port")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addr = tokio::net::lookup_host(&args.target)
        .await?
        .next()
        .with_context(|| format!("no address for {}", args.target))?;
    let name = ServerName::try_from(args.sni.clone().unwrap_or(host))?.to_owned();
    let tls = TlsConnector::from(tls::client_config(args.ca.as_ref(), args.resume)?);
    let template = Template::new(args.shape, args.size);
    let shared = Arc::new(Shared {
        left: AtomicU64::new(args.messages),
        seq: AtomicU64::new(0),
        args,
        addr,
        tls,
        name,
        template,
    });
    match shared.args.idle {
        Some(n) => idle(shared, n).await,
        None => load(shared).await,
    }
}

async fn load(shared: Arc<Shared>) -> Result<()> {
    let a = &shared.args;
    let mode = if a.implicit_tls {
        "implicit TLS"
    } else {
        "STARTTLS"
    };
    println!(
        "load: {} messages of {} octets, {} connections, {} per connection, {mode}, to {}",
        a.messages, a.size, a.concurrency, a.per_connection, a.target
    );
    let baseline = match &a.sink_stats {
        Some(s) => Some(stats::sink_messages(s).await?),
        None => None,
    };
    let cpu0 = stats::cpu_time();
    let start = Instant::now();
    let tasks: Vec<_> = (0..a.concurrency)
        .map(|_| tokio::spawn(worker(shared.clone())))
        .collect();
    let mut total = Tally::default();
    for t in tasks {
        let t = t.await?;
        total.accepted += t.accepted;
        total.latencies_us.extend(t.latencies_us);
        total.errors.merge(t.errors);
        total.last_accept = total.last_accept.max(t.last_accept);
    }
    let cpu = stats::cpu_time() - cpu0;
    let secs = total
        .last_accept
        .map_or(start.elapsed(), |t| t - start)
        .as_secs_f64();
    let rate = total.accepted as f64 / secs;
    let lat = Latencies::new(total.latencies_us);
    let what = if a.per_connection == 1 {
        "connect → 250"
    } else {
        "MAIL → 250"
    };
    println!(
        "accepted: {} of {} in {secs:.2} s: {rate:.1} msg/s",
        total.accepted, a.messages
    );
    println!(
        "latency ({what}): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.ms(50.0),
        lat.ms(95.0),
        lat.ms(99.0),
        lat.ms(100.0)
    );
    println!("errors: {}", total.errors.summary());
    for line in total.errors.details() {
        println!("{line}");
    }
    let (mut e2e_rate, mut e2e_secs) = (0.0, 0.0);
    if let (Some(addr), Some(base)) = (&a.sink_stats, baseline) {
        let want = base + total.accepted;
        let deadline = start + Duration::from_secs(a.e2e_timeout);
        let mut got = stats::sink_messages(addr).await?;
        while got < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            got = stats::sink_messages(addr).await?;
        }
        e2e_secs = start.elapsed().as_secs_f64();
        e2e_rate = (got - base) as f64 / e2e_secs;
        println!(
            "end to end: {} of {} at the sink in {e2e_secs:.2} s: {e2e_rate:.1} msg/s",
            got - base,
            total.accepted
        );
    }
    let cpu_s = cpu.as_secs_f64();
    println!(
        "client CPU: {cpu_s:.2} s ({:.3} ms per message)",
        cpu_s * 1000.0 / a.messages.max(1) as f64
    );
    println!(
        "result: accepted={} failed={} seconds={secs:.3} rate={rate:.1} p50_ms={:.2} \
         p95_ms={:.2} p99_ms={:.2} e2e_seconds={e2e_secs:.3} e2e_rate={e2e_rate:.1} \
         client_cpu_s={cpu_s:.3} errors={}",
        total.accepted,
        total.errors.total(),
        lat.ms(50.0),
        lat.ms(95.0),
        lat.ms(99.0),
        total.errors.summary()
    );
    Ok(())
}

/// Opens connections one after the other until no message is left.
async fn worker(shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    while shared.take() {
        if let Err(Fail(what, text)) = connection(&shared, &mut tally).await {
            tally.errors.add(what, &text);
        }
    }
    tally
}

/// One connection: up to K messages, the first already taken. A failure ends the connection
/// and counts against the message in progress.
async fn connection(shared: &Shared, tally: &mut Tally) -> Result<(), Fail> {
    let t0 = Instant::now();
    let mut conn = open(shared).await?;
    let k = shared.args.per_connection.max(1);
    for i in 0..k {
        if i > 0 && !shared.take() {
            break;
        }
        let t = if i == 0 && k == 1 { t0 } else { Instant::now() };
        send(shared, &mut conn).await?;
        let now = Instant::now();
        tally.accepted += 1;
        tally.latencies_us.push((now - t).as_micros() as u64);
        tally.last_accept = Some(now);
    }
    // QUIT without waiting for 221: the server's reply is not part of any figure.
    conn.queue(b"QUIT\r\n");
    let _ = conn.flush().await;
    Ok(())
}

/// Connects, greets and starts TLS: the session is ready for MAIL.
async fn open(shared: &Shared) -> Result<Conn<TlsStream<TcpStream>>, Fail> {
    let a = &shared.args;
    let tcp = timeout(shared.wait(), connect(shared.addr, a.bind))
        .await
        .map_err(|_| Fail("timeout", "connect".into()))?
        .map_err(|e| Fail("connect", e.to_string()))?;
    let tcp = if a.implicit_tls {
        tcp
    } else {
        let mut plain = Conn::new(tcp);
        expect(shared, &mut plain, None, 220).await?;
        expect(shared, &mut plain, Some(&format!("EHLO {}", a.ehlo)), 250).await?;
        expect(shared, &mut plain, Some("STARTTLS"), 220).await?;
        plain.into_stream().map_err(Fail::io)?
    };
    let handshake = shared.tls.connect(shared.name.clone(), tcp);
    let tls = timeout(shared.wait(), handshake)
        .await
        .map_err(|_| Fail("timeout", "TLS handshake".into()))?
        .map_err(|e| Fail("tls", e.to_string()))?;
    let mut conn = Conn::new(tls);
    if a.implicit_tls {
        expect(shared, &mut conn, None, 220).await?;
    }
    let ehlo = expect(shared, &mut conn, Some(&format!("EHLO {}", a.ehlo)), 250).await?;
    if a.pipelining
        && !ehlo
            .text
            .lines()
            .any(|l| l.eq_ignore_ascii_case("PIPELINING"))
    {
        return Err(Fail(
            "ehlo",
            "--pipelining: the server does not announce PIPELINING".into(),
        ));
    }
    Ok(conn)
}

async fn connect(addr: SocketAddr, bind: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}

/// One transaction: MAIL, RCPT, DATA, the message, and its final `250`.
async fn send(shared: &Shared, conn: &mut Conn<TlsStream<TcpStream>>) -> Result<(), Fail> {
    let a = &shared.args;
    let mail = format!("MAIL FROM:<{}>", a.from);
    let rcpt = format!("RCPT TO:<{}>", a.to);
    if a.pipelining {
        for cmd in [&mail, &rcpt, "DATA"] {
            conn.queue(cmd.as_bytes());
            conn.queue(b"\r\n");
        }
        conn.flush().await.map_err(Fail::io)?;
        expect(shared, conn, None, 250).await?;
        expect(shared, conn, None, 250).await?;
        expect(shared, conn, None, 354).await?;
    } else {
        expect(shared, conn, Some(&mail), 250).await?;
        expect(shared, conn, Some(&rcpt), 250).await?;
        expect(shared, conn, Some("DATA"), 354).await?;
    }
    let n = shared.seq.fetch_add(1, Ordering::Relaxed);
    conn.queue(&shared.template.render(n, &a.from, &a.to));
    conn.queue(b".\r\n");
    conn.flush().await.map_err(Fail::io)?;
    expect(shared, conn, None, 250).await.map(drop)
}

/// Sends `cmd` (or nothing) and requires a reply with `code`.
async fn expect<S>(
    shared: &Shared,
    conn: &mut Conn<S>,
    cmd: Option<&str>,
    code: u16,
) -> Result<Reply, Fail>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let step = async {
        if let Some(cmd) = cmd {
            conn.queue(cmd.as_bytes());
            conn.queue(b"\r\n");
            conn.flush().await?;
        }
        conn.reply().await
    };
    let reply = timeout(shared.wait(), step)
        .await
        .map_err(|_| Fail("timeout", cmd.unwrap_or("greeting").to_owned()))?
        .map_err(Fail::io)?;
    if reply.code == code {
        return Ok(reply);
    }
    let what: &'static str = match reply.code {
        421 => "421",
        450 => "450",
        451 => "451",
        452 => "452",
        454 => "454",
        530 => "530",
        550 => "550",
        552 => "552",
        554 => "554",
        c if c >= 500 => "5xx",
        _ => "4xx",
    };
    Err(Fail(
        what,
        format!(
            "{} {} {}",
            cmd.unwrap_or("greeting"),
            reply.code,
            reply.text
        ),
    ))
}

/// Opens `n` sessions, C at a time, and holds them.
async fn idle(shared: Arc<Shared>, n: usize) -> Result<()> {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(shared.args.concurrency.max(1)));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (shared, gate) = (shared.clone(), gate.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire().await;
                open(&shared).await
            })
        })
        .collect();
    let mut held = Vec::with_capacity(n);
    let mut errors = Errors::default();
    for t in tasks {
        match t.await? {
            Ok(conn) => held.push(conn),
            Err(Fail(what, text)) => errors.add(what, &text),
        }
    }
    println!(
        "idle: {} of {n} TLS sessions open in {:.1} s, errors: {}",
        held.len(),
        started.elapsed().as_secs_f64(),
        errors.summary()
    );
    for line in errors.details() {
        println!("{line}");
    }
    println!("idle: holding");
    match shared.args.hold {
        Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
        None => std::future::pending().await,
    }
    drop(held);
    Ok(())
}
