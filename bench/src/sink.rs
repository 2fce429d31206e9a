//! The sink: an SMTP server that requires STARTTLS, counts messages and throws them away. It is
//! the next hop in relay benchmarks and, measured directly, the ceiling for TLS SMTP on the
//! machine: the same handshake and protocol work as a gateway, with no policy and no storage.

use crate::conn::Conn;
use crate::stats::{self, Counter};
use crate::tls::{self, CertArgs};
use anyhow::{Context as _, Result};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// Where to accept SMTP (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:2526")]
    pub listen: String,
    /// Where to serve the counter: each connection gets one line
    /// `messages=N recipients=N bytes=N connections=N`.
    #[arg(long, default_value = "127.0.0.1:2527")]
    pub stats: String,
    /// Our name in the greeting and the generated certificate.
    #[arg(long, default_value = "sink.test")]
    pub hostname: String,
    #[command(flatten)]
    pub cert: CertArgs,
}

/// What the client may do next.
enum Next {
    StartTls,
    Done,
}

pub async fn run(args: SinkArgs) -> Result<()> {
    let acceptor = TlsAcceptor::from(tls::server_config(&args.cert, &args.hostname)?);
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let stats_listener = TcpListener::bind(&args.stats)
        .await
        .with_context(|| format!("binding {}", args.stats))?;
    let counter = Arc::new(Counter::default());
    println!(
        "sink: smtp on {}, stats on {}",
        listener.local_addr()?,
        stats_listener.local_addr()?
    );
    tokio::spawn(stats::serve_counter(stats_listener, counter.clone()));
    let hostname: Arc<str> = args.hostname.into();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, most likely: say so and keep serving the others.
                eprintln!("sink: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        counter.connections.fetch_add(1, Ordering::Relaxed);
        let (acceptor, counter, hostname) = (acceptor.clone(), counter.clone(), hostname.clone());
        tokio::spawn(async move {
            let _ = session(stream, acceptor, &counter, &hostname).await;
        });
    }
}

async fn session(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    counter: &Counter,
    hostname: &str,
) -> Result<()> {
    let mut conn = Conn::new(stream);
    conn.queue(format!("220 {hostname} ESMTP bench sink\r\n").as_bytes());
    if let Next::Done = dialogue(&mut conn, false, counter, hostname).await? {
        return Ok(());
    }
    let tls = acceptor.accept(conn.into_stream()?).await?;
    let mut conn = Conn::new(tls);
    dialogue(&mut conn, true, counter, hostname).await?;
    Ok(())
}

/// Answers commands until the client quits or, before TLS, asks for STARTTLS. Replies are
/// flushed only when no further pipelined command is waiting.
async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    secure: bool,
    counter: &Counter,
    hostname: &str,
) -> Result<Next> {
    let mut mail = false;
    let mut rcpts = 0u64;
    loop {
        if !conn.pending().contains(&b'\n') {
            conn.flush().await?;
        }
        let Some(line) = conn.line().await? else {
            return Ok(Next::Done);
        };
        let verb = line.get(..4).unwrap_or(&line).to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => {
                let tail = if secure {
                    "250 SMTPUTF8\r\n"
                } else {
                    "250 STARTTLS\r\n"
                };
                let ehlo = format!(
                    "250-{hostname}\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n\
                     250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n{tail}"
                );
                conn.queue(ehlo.as_bytes());
                continue;
            }
            "STAR" if !secure => {
                conn.queue(b"220 2.0.0 ready to start TLS\r\n");
                conn.flush().await?;
                return Ok(Next::StartTls);
            }
            "QUIT" => {
                conn.queue(b"221 2.0.0 bye\r\n");
                conn.flush().await?;
                return Ok(Next::Done);
            }
            "NOOP" => b"250 2.0.0 OK\r\n",
            "RSET" => {
                (mail, rcpts) = (false, 0);
                b"250 2.0.0 OK\r\n"
            }
            "MAIL" | "RCPT" | "DATA" if !secure => {
                b"530 5.7.0 Must issue a STARTTLS command first\r\n"
            }
            "MAIL" => {
                (mail, rcpts) = (true, 0);
                b"250 2.1.0 OK\r\n"
            }
            "RCPT" if mail => {
                rcpts += 1;
                b"250 2.1.5 OK\r\n"
            }
            "DATA" if rcpts > 0 => {
                conn.queue(b"354 end with <CRLF>.<CRLF>\r\n");
                conn.flush().await?;
                let size = read_data(conn).await?;
                counter.messages.fetch_add(1, Ordering::Relaxed);
                counter.recipients.fetch_add(rcpts, Ordering::Relaxed);
                counter.bytes.fetch_add(size, Ordering::Relaxed);
                (mail, rcpts) = (false, 0);
                b"250 2.0.0 OK queued\r\n"
            }
            "RCPT" | "DATA" => b"503 5.5.1 bad sequence of commands\r\n",
            _ => b"502 5.5.2 command not recognised\r\n",
        };
        conn.queue(reply);
    }
}

/// Reads and discards a message up to `<CRLF>.<CRLF>`; returns its size as sent.
async fn read_data<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<S>) -> Result<u64> {
    const END: &[u8] = b"\r\n.\r\n";
    // DATA starts at a line start: as if a CRLF had just been seen.
    let mut matched = 2;
    let mut size = 0u64;
    loop {
        let input = conn.pending();
        let mut i = 0;
        while i < input.len() {
            if matched == 0 {
                // Skip to the next CR: the only byte that can start the end sequence.
                match input[i..].iter().position(|&b| b == b'\r') {
                    Some(n) => i += n,
                    None => {
                        i = input.len();
                        break;
                    }
                }
            }
            let b = input[i];
            i += 1;
            if b == END[matched] {
                matched += 1;
                if matched == END.len() {
                    size += i as u64;
                    conn.consume(i);
                    return Ok(size);
                }
            } else {
                matched = usize::from(b == b'\r');
            }
        }
        size += i as u64;
        conn.consume(i);
        if !conn.fill().await? {
            anyhow::bail!("connection closed inside DATA");
        }
    }
}
