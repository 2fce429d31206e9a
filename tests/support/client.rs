//! A line client for tests, in the domain's words: `c.cmd("MAIL FROM:<a@b>").await.expect(250)`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A server reply: code and its lines' texts.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// Asserts the code and returns the reply.
    #[track_caller]
    pub fn expect(self, code: u16) -> Reply {
        assert_eq!(self.code, code, "unexpected reply: {self}");
        self
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The id in "250 2.0.0 queued as <id>".
    pub fn queued_id(&self) -> String {
        let t = self.text();
        t.rsplit(' ').next().unwrap().trim().to_owned()
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" | "))
    }
}

pub struct Client {
    io: Option<BufReader<Box<dyn Io>>>,
    tls: Arc<rustls::ClientConfig>,
}

impl Client {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr, tls: rustls::ClientConfig) -> (Client, Reply) {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self::start(Box::new(stream), tls).await
    }

    /// Connects from a chosen loopback address (127.0.0.2, …), to be another client.
    pub async fn connect_from(
        local: &str,
        addr: SocketAddr,
        tls: rustls::ClientConfig,
    ) -> (Client, Reply) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        Self::start(Box::new(stream), tls).await
    }

    /// Connects to an implicit-TLS listener.
    pub async fn connect_tls(addr: SocketAddr, tls: rustls::ClientConfig) -> (Client, Reply) {
        let tls = Arc::new(tls);
        let stream = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await
            .unwrap();
        let mut c = Client {
            io: Some(BufReader::new(Box::new(stream))),
            tls,
        };
        let greeting = c.read().await;
        (c, greeting)
    }

    async fn start(stream: Box<dyn Io>, tls: rustls::ClientConfig) -> (Client, Reply) {
        let mut c = Client {
            io: Some(BufReader::new(stream)),
            tls: Arc::new(tls),
        };
        let greeting = c.read().await;
        (c, greeting)
    }

    fn io(&mut self) -> &mut BufReader<Box<dyn Io>> {
        self.io.as_mut().unwrap()
    }

    /// Reads one (possibly multi-line) reply; code 0 when the server closed the connection.
    pub async fn read(&mut self) -> Reply {
        read_reply(self.io(), super::PATIENCE).await
    }

    /// Sends raw bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let io = self.io();
        io.get_mut().write_all(bytes).await.unwrap();
        io.get_mut().flush().await.unwrap();
    }

    /// Sends one command line (CRLF added) and reads the reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        self.read().await
    }

    /// STARTTLS and the handshake; the EHLO after it is left to the test.
    pub async fn starttls(&mut self) {
        self.cmd("STARTTLS").await.expect(220);
        self.handshake().await;
    }

    /// The TLS handshake alone (after a STARTTLS the test sent itself).
    pub async fn handshake(&mut self) {
        let io = self.io.take().unwrap();
        assert!(io.buffer().is_empty(), "bytes after the 220 to STARTTLS");
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = TlsConnector::from(self.tls.clone())
            .connect(name, io.into_inner())
            .await
            .unwrap();
        self.io = Some(BufReader::new(Box::new(stream)));
    }

    /// EHLO, STARTTLS, EHLO: ready for MAIL.
    pub async fn secure(&mut self) {
        self.cmd("EHLO client.test").await.expect(250);
        self.starttls().await;
        self.cmd("EHLO client.test").await.expect(250);
    }

    /// One transaction; returns the reply after the final dot.
    pub async fn send_mail(&mut self, from: &str, rcpts: &[&str], body: &str) -> Reply {
        self.cmd(&format!("MAIL FROM:<{from}>")).await.expect(250);
        for r in rcpts {
            self.cmd(&format!("RCPT TO:<{r}>")).await.expect(250);
        }
        self.cmd("DATA").await.expect(354);
        let mut data = body.replace("\r\n", "\n").replace('\n', "\r\n");
        if !data.ends_with("\r\n") {
            data.push_str("\r\n");
        }
        let stuffed = data.replace("\r\n.", "\r\n..");
        let stuffed = if stuffed.starts_with('.') {
            format!(".{stuffed}")
        } else {
            stuffed
        };
        self.send_raw(format!("{stuffed}.\r\n").as_bytes()).await;
        self.read().await
    }
}

/// A plain test message.
pub fn message(subject: &str) -> String {
    format!(
        "From: Alice <alice@client.test>\nTo: Bob <bob@example.test>\nSubject: {subject}\n\
         Message-ID: <{}@client.test>\n\nHello Bob,\nthis is a test.\n",
        uuid::Uuid::new_v4()
    )
}

/// Reads one (possibly multi-line) SMTP reply from `r`, waiting at most `wait` for each line;
/// code 0 when the server closed the connection.
pub async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, wait: Duration) -> Reply {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(wait, r.read_line(&mut line))
            .await
            .expect("no reply from the server")
            .unwrap_or(0);
        if n == 0 {
            return Reply { code: 0, lines };
        }
        let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        let more = line.as_bytes().get(3) == Some(&b'-');
        lines.push(line.get(4..).unwrap_or("").trim_end().to_owned());
        if !more {
            return Reply { code, lines };
        }
    }
}
