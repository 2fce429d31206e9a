//! A buffered SMTP stream shared by the load client and the sink: lines in, replies out,
//! pipelined input kept in the buffer until it is asked for.

use anyhow::{Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest command or reply line we accept before calling the peer broken.
const MAX_LINE: usize = 4096;

pub struct Conn<S> {
    pub stream: S,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    pos: usize,
    out: Vec<u8>,
}

/// One SMTP reply: its code and the text of its last line.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S) -> Self {
        Conn {
            stream,
            buf: Vec::with_capacity(8192),
            pos: 0,
            out: Vec::with_capacity(1024),
        }
    }

    /// Bytes received but not consumed yet (pipelined input).
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads more bytes into the buffer; false at end of stream.
    pub async fn fill(&mut self) -> Result<bool> {
        if self.pos > 0 && self.pos * 2 > self.buf.capacity() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.reserve(8192);
        }
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }

    /// The next line without its CRLF, reading as needed; None at end of stream.
    pub async fn line(&mut self) -> Result<Option<String>> {
        loop {
            if let Some(i) = self.pending().iter().position(|&b| b == b'\n') {
                let raw = &self.pending()[..i];
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                let line = String::from_utf8_lossy(raw).into_owned();
                self.consume(i + 1);
                return Ok(Some(line));
            }
            if self.pending().len() > MAX_LINE {
                bail!("line longer than {MAX_LINE} octets");
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Reads one (possibly multi-line) reply; its text is every line's, joined by `\n`.
    pub async fn reply(&mut self) -> Result<Reply> {
        let mut text = String::new();
        loop {
            let Some(line) = self.line().await? else {
                bail!("connection closed while waiting for a reply");
            };
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let Some(code) = code else {
                bail!("malformed reply {line:?}");
            };
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(line.get(4..).unwrap_or(""));
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, text });
            }
        }
    }

    /// Queues bytes to send with the next flush.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    pub async fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Swaps the stream (after a TLS handshake), refusing bytes sent ahead of the handshake.
    pub fn into_stream(self) -> Result<S> {
        if !self.pending().is_empty() {
            bail!("data pipelined before the TLS handshake");
        }
        Ok(self.stream)
    }
}
