//! An SMTP sink standing in for a remote server: STARTTLS with a certificate from the test CA,
//! records every message it accepts, and answers what the test scripts (per recipient, at DATA,
//! or no STARTTLS at all).

use super::certs::TestCa;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
    pub tls: bool,
    /// The first RCPT had arrived with MAIL, before MAIL's reply (PIPELINING).
    pub pipelined: bool,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

#[derive(Default)]
pub struct Script {
    /// Reply to RCPT TO for this address, e.g. "450 4.2.1 mailbox busy".
    pub rcpt: HashMap<String, String>,
    /// Reply after the message's end, instead of 250.
    pub data: Option<String>,
    /// Do not offer STARTTLS.
    pub no_starttls: bool,
    /// Do not offer PIPELINING.
    pub no_pipelining: bool,
    /// Wait this long after the message's end before answering (a slow server).
    pub data_delay: Option<std::time::Duration>,
}

/// Sessions waiting in a `data_delay` now, and the most there ever were (per test process).
pub static IN_DATA: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
pub static MAX_IN_DATA: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub struct Sink {
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Messages fully received but not yet answered (with `data_delay`).
    pub data_started: Arc<std::sync::atomic::AtomicUsize>,
    pub messages: Arc<Mutex<Vec<Received>>>,
    pub script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Sink {
    pub async fn start(ca: &TestCa) -> Sink {
        Self::start_on(ca, "127.0.0.1:0").await
    }

    /// On a given address: used to bring a "down" next hop back on the port the config names.
    pub async fn start_on(ca: &TestCa, addr: &str) -> Sink {
        let leaf = ca.leaf("sink", &["localhost", "127.0.0.1", "mx.sink.test"]);
        let server = crate::support::daemon::server_tls(&leaf.cert, &leaf.key);
        Self::start_with(server, addr).await
    }

    /// A trust-space peer's gateway: its certificate from `ca`, and a client certificate issued
    /// by `client_ca` required in every handshake.
    pub async fn start_requiring_client_cert(ca: &TestCa, client_ca: &TestCa) -> Sink {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let leaf = ca.leaf("peer-sink", &["localhost", "127.0.0.1"]);
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&client_ca.ca_pem).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        let certs = CertificateDer::pem_file_iter(&leaf.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let server = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, PrivateKeyDer::from_pem_file(&leaf.key).unwrap())
            .unwrap();
        Self::start_with(server, "127.0.0.1:0").await
    }

    async fn start_with(server: rustls::ServerConfig, addr: &str) -> Sink {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(Script::default()));
        let (m, s) = (messages.clone(), script.clone());
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        let data_started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = data_started.clone();
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (m, s, acceptor) = (m.clone(), s.clone(), acceptor.clone());
                let started = started.clone();
                tokio::spawn(async move {
                    let _ = session(Box::new(stream), acceptor, m, s, started).await;
                });
            }
        });
        Sink {
            addr,
            connections,
            data_started,
            messages,
            script,
            task,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until `n` messages have arrived, and returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        super::eventually(&format!("{n} messages at the sink"), || async {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
        .await
    }

    pub fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }
}

async fn session(
    stream: Box<dyn Io>,
    acceptor: TlsAcceptor,
    messages: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
    data_started: Arc<std::sync::atomic::AtomicUsize>,
) -> std::io::Result<()> {
    let mut io = BufReader::new(stream);
    let mut tls = false;
    io.get_mut().write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut from = String::new();
    let mut rcpts = Vec::new();
    let mut pipelined = false;
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            let script = script.lock().unwrap();
            let mut caps = vec!["8BITMIME"];
            if !script.no_pipelining {
                caps.push("PIPELINING");
            }
            if !tls && !script.no_starttls {
                caps.push("STARTTLS");
            }
            let mut reply = String::from("250-sink.test");
            for (i, cap) in caps.iter().enumerate() {
                reply.push_str(if i + 1 == caps.len() {
                    "\r\n250 "
                } else {
                    "\r\n250-"
                });
                reply.push_str(cap);
            }
            reply
        } else if upper.starts_with("STARTTLS") {
            io.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await?;
            let stream = io.into_inner();
            let tls_stream = acceptor.accept(stream).await?;
            io = BufReader::new(Box::new(tls_stream));
            tls = true;
            continue;
        } else if upper.starts_with("MAIL FROM:") {
            from = addr_of(&line);
            rcpts.clear();
            pipelined = io.buffer().to_ascii_uppercase().starts_with(b"RCPT TO:");
            "250 2.1.0 ok".into()
        } else if upper.starts_with("RCPT TO:") {
            let to = addr_of(&line);
            let scripted = script.lock().unwrap().rcpt.get(&to).cloned();
            match scripted {
                Some(r) => r,
                None => {
                    rcpts.push(to);
                    "250 2.1.5 ok".into()
                }
            }
        } else if upper.starts_with("DATA") && rcpts.is_empty() {
            // As Postfix answers a pipelined DATA after every RCPT was refused.
            "554 5.5.1 no valid recipients".into()
        } else if upper.starts_with("DATA") {
            io.get_mut().write_all(b"354 go ahead\r\n").await?;
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if io.read_until(b'\n', &mut l).await? == 0 {
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                let l = if l.starts_with(b".") { &l[1..] } else { &l[..] };
                data.extend_from_slice(l);
            }
            let delay = script.lock().unwrap().data_delay;
            if let Some(d) = delay {
                use std::sync::atomic::Ordering::SeqCst;
                data_started.fetch_add(1, SeqCst);
                let now = IN_DATA.fetch_add(1, SeqCst) + 1;
                MAX_IN_DATA.fetch_max(now, SeqCst);
                tokio::time::sleep(d).await;
                IN_DATA.fetch_sub(1, SeqCst);
            }
            let scripted = script.lock().unwrap().data.clone();
            match scripted {
                Some(r) => r,
                None => {
                    messages.lock().unwrap().push(Received {
                        mail_from: from.clone(),
                        rcpts: std::mem::take(&mut rcpts),
                        data,
                        tls,
                        pipelined,
                    });
                    "250 2.0.0 accepted by sink".into()
                }
            }
        } else if upper.starts_with("RSET") {
            rcpts.clear();
            "250 2.0.0 ok".into()
        } else if upper.starts_with("QUIT") {
            io.get_mut().write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else {
            "250 2.0.0 ok".into()
        };
        io.get_mut()
            .write_all(format!("{reply}\r\n").as_bytes())
            .await?;
    }
}

fn addr_of(line: &str) -> String {
    let start = line.find('<').map(|i| i + 1).unwrap_or(0);
    let end = line[start..]
        .find('>')
        .map(|i| i + start)
        .unwrap_or(line.len());
    line[start..end].to_owned()
}
