//! A buffered SMTP connection: reads command lines with a hard length bound and writes replies.
//!
//! Written by hand rather than with smtp-proto's `RequestReceiver` framing because we need three
//! things it does not do: a 512-octet bound (it allows 4096), bare-LF command endings refused
//! rather than accepted, and the read buffer thrown away on STARTTLS (CVE-2011-0411), which is
//! only safe when we own the buffer. smtp-proto still parses each complete line.

use super::reply::Reply;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with its CRLF.
pub const MAX_COMMAND_LINE: usize = 512;

pub struct Connection<S> {
    stream: S,
    buf: Vec<u8>,
    /// Start of unread bytes in `buf`.
    pos: usize,
    out: Vec<u8>,
    /// A client that stops reading our replies must not hold its session forever.
    write_timeout: Duration,
}

/// One command line, or why it is not one.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Ends in CRLF (included).
    Command(Vec<u8>),
    /// Longer than the bound; consumed up to and including its LF.
    TooLong,
    /// Ends in a bare LF.
    BareLf,
}

#[derive(Debug)]
pub enum ReadError {
    Closed,
    Timeout,
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S, write_timeout: Duration) -> Self {
        Connection {
            stream,
            buf: Vec::with_capacity(4096),
            pos: 0,
            out: Vec::with_capacity(1024),
            write_timeout,
        }
    }

    /// Queues a reply; it is sent at the next `flush`, or before we wait for input.
    pub fn reply(&mut self, r: &Reply) {
        self.out.extend_from_slice(&r.to_wire());
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        let write = async {
            if !self.out.is_empty() {
                self.stream.write_all(&self.out).await?;
                self.out.clear();
            }
            self.stream.flush().await
        };
        tokio::time::timeout(self.write_timeout, write)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the client does not read"))?
    }

    /// Sends a reply at once.
    pub async fn send(&mut self, r: &Reply) -> io::Result<()> {
        self.reply(r);
        self.flush().await
    }

    /// Whether the client has sent bytes we have not read yet (pipelining).
    pub fn has_buffered_input(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Reads more bytes; replies queued so far go out first, so a pipelining client gets its
    /// replies in one write and a lock-step client never waits for them.
    async fn fill(&mut self, timeout: Duration) -> Result<(), ReadError> {
        self.flush().await?;
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(timeout, self.stream.read(&mut chunk))
            .await
            .map_err(|_| ReadError::Timeout)??;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads one command line of at most `MAX_COMMAND_LINE` octets.
    pub async fn read_line(&mut self, timeout: Duration) -> Result<Line, ReadError> {
        let mut too_long = false;
        loop {
            let pending = &self.buf[self.pos..];
            if let Some(i) = memchr(b'\n', pending) {
                let line = pending[..=i].to_vec();
                self.pos += i + 1;
                if too_long || line.len() > MAX_COMMAND_LINE {
                    return Ok(Line::TooLong);
                }
                if line.len() < 2 || line[line.len() - 2] != b'\r' {
                    return Ok(Line::BareLf);
                }
                return Ok(Line::Command(line));
            }
            if pending.len() > MAX_COMMAND_LINE {
                // Keep reading to find the line's end, but do not keep its bytes.
                too_long = true;
                self.pos = self.buf.len();
            }
            self.fill(timeout).await?;
        }
    }

    /// Reads whatever the client sent next (for DATA), at most what `fill` reads at once.
    pub async fn read_chunk(&mut self, timeout: Duration) -> Result<Vec<u8>, ReadError> {
        if !self.has_buffered_input() {
            self.fill(timeout).await?;
        }
        let chunk = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        Ok(chunk)
    }

    /// Gives back bytes read past the end of DATA (pipelined commands).
    pub fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut rest = bytes.to_vec();
        rest.extend_from_slice(&self.buf[self.pos..]);
        self.buf = rest;
        self.pos = 0;
    }

    /// The stream, for the TLS handshake. Anything the client pipelined after STARTTLS is dropped
    /// here: it was sent in plaintext and must not be taken as coming over TLS (CVE-2011-0411).
    pub fn into_inner(self) -> S {
        self.stream
    }
}

fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&x| x == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8]) -> Vec<Line> {
        let (mut client, server) = tokio::io::duplex(4096);
        let input = input.to_vec();
        tokio::spawn(async move { client.write_all(&input).await.unwrap() });
        let mut c = Connection::new(server, Duration::from_secs(5));
        let mut out = Vec::new();
        while let Ok(l) = c.read_line(Duration::from_secs(5)).await {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn framing() {
        let long = format!("NOOP {}\r\n", "x".repeat(600));
        let exact = format!("NOOP {}\r\n", "x".repeat(MAX_COMMAND_LINE - 7));
        let mut input = b"EHLO a\r\nNOOP\nRSET\r\n".to_vec();
        input.extend_from_slice(long.as_bytes());
        input.extend_from_slice(exact.as_bytes());
        input.extend_from_slice(b"QUIT\r\n");
        let got = lines(&input).await;
        assert_eq!(
            got,
            vec![
                Line::Command(b"EHLO a\r\n".to_vec()),
                Line::BareLf,
                Line::Command(b"RSET\r\n".to_vec()),
                Line::TooLong,
                Line::Command(exact.into_bytes()),
                Line::Command(b"QUIT\r\n".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn very_long_line_is_not_kept() {
        let mut input = vec![b'x'; 100_000];
        input.extend_from_slice(b"\r\nQUIT\r\n");
        let got = lines(&input).await;
        assert_eq!(
            got,
            vec![Line::TooLong, Line::Command(b"QUIT\r\n".to_vec())]
        );
    }
}
