//! What the rules and the classifier read from a message: a few header facts, the readable text
//! of every text part (HTML reduced to text), the links, and a note of each part's MIME type.
//!
//! mail-parser parses each header block; the MIME tree is walked here. mail-parser's full parse
//! rescans to the end of the message for every multipart whose boundary never appears, so a 1 MB
//! message of such parts took 12 s (measured, 0.11.9 release build). Here each nesting level scans
//! its own body once, depth and part count are capped, and only the first [`SCAN_LIMIT`] octets
//! are read: at most `MAX_DEPTH` × 1 MiB of scanning whatever the input.

use super::html::{self, Link};
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::{HeaderName, MessageParser, MimeHeaders};

/// Octets of a message read for content: SpamAssassin and Rspamd skip large messages altogether;
/// we read the start, where the text parts are, and ignore the tail of big attachments.
pub(super) const SCAN_LIMIT: usize = 1 << 20;
/// A header block longer than this is hostile; the rest of it is not parsed.
const HEADER_LIMIT: usize = 256 << 10;
const MAX_DEPTH: usize = 16;
const MAX_PARTS: usize = 256;
/// Decoded text kept from all parts together.
const TEXT_LIMIT: usize = 256 << 10;

/// The facts one message gives the rules and the tokenizer.
#[derive(Debug, Default)]
pub(super) struct Content {
    pub subject: String,
    /// From's display name and address, the first mailbox only.
    pub from_name: String,
    pub from_addr: String,
    pub reply_to: String,
    pub has_date: bool,
    pub has_message_id: bool,
    /// Readable text of every inline text part, one after the other.
    pub text: String,
    pub links: Vec<Link>,
    pub has_plain: bool,
    pub has_html: bool,
    /// For the classifier: each part's `type/subtype`, `charset:`, `cte:`, `ext:` (attachment
    /// file extension), and the header notes of [`Content::top_headers`].
    pub notes: Vec<String>,
    parts: usize,
}

/// Reads a raw message (RFC 5322). Never fails: what cannot be read is left out.
pub(super) fn read(raw: &[u8]) -> Content {
    let raw = strip_mbox_line(raw);
    let raw = &raw[..raw.len().min(SCAN_LIMIT)];
    let mut c = Content::default();
    c.walk(raw, 0, false);
    c
}

/// mail-parser as the spam stage reads a header block: the MIME fields, and the few that
/// [`Content::top_headers`] reads as values (Subject, From, Reply-To, To, Cc); the others it
/// looks at only for their presence or their raw text, and `Received:` not at all, so they are
/// skipped to their end rather than parsed as dates, ids or trace fields.
fn parser() -> &'static MessageParser {
    static PARSER: std::sync::LazyLock<MessageParser> = std::sync::LazyLock::new(|| {
        MessageParser::new()
            .with_mime_headers()
            .header_text(HeaderName::Subject)
            .header_address(HeaderName::From)
            .header_address(HeaderName::ReplyTo)
            .header_address(HeaderName::To)
            .header_address(HeaderName::Cc)
            .default_header_ignore()
    });
    &PARSER
}

/// Files from an mbox (the training corpus) start with a `From sender date` line; a header name
/// cannot contain a space, so such a line is never a header.
fn strip_mbox_line(raw: &[u8]) -> &[u8] {
    if raw.starts_with(b"From ") {
        raw.iter()
            .position(|&b| b == b'\n')
            .map_or(&[][..], |i| &raw[i + 1..])
    } else {
        raw
    }
}

impl Content {
    fn walk(&mut self, entity: &[u8], depth: usize, in_digest: bool) {
        self.parts += 1;
        if self.parts > MAX_PARTS {
            return;
        }
        let (head, body) = split_headers(entity);
        let head = &head[..head.len().min(HEADER_LIMIT)];
        let headers = parser().parse_headers(head);
        let headers = headers.as_ref();
        if depth == 0
            && let Some(h) = headers
        {
            self.top_headers(h);
        }

        let ct = headers.and_then(|h| h.content_type());
        let (ctype, subtype) = match ct {
            Some(ct) => (
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or("").to_ascii_lowercase(),
            ),
            None if in_digest => ("message".into(), "rfc822".into()),
            None => ("text".into(), "plain".into()),
        };
        self.note("", &format!("{ctype}/{subtype}"));
        let cte = headers
            .and_then(|h| h.content_transfer_encoding())
            .unwrap_or("7bit")
            .trim()
            .to_ascii_lowercase();
        if cte != "7bit" {
            self.note("cte:", &cte);
        }
        let attachment = headers
            .and_then(|h| h.content_disposition())
            .is_some_and(|d| d.is_attachment());
        if let Some(name) = headers.and_then(|h| h.attachment_name())
            && let Some((_, ext)) = name.rsplit_once('.')
        {
            self.note("ext:", ext);
        }

        match ctype.as_str() {
            "multipart" if depth < MAX_DEPTH => {
                let boundary = ct.and_then(|ct| ct.attribute("boundary")).unwrap_or("");
                let parts = if boundary.is_empty() {
                    Vec::new()
                } else {
                    split_multipart(body, boundary.as_bytes())
                };
                if parts.is_empty() {
                    // A multipart with no parts hides its text from a reader that trusts MIME;
                    // read it as text.
                    self.add_text(body, &cte, None, false);
                }
                for part in parts {
                    self.walk(part, depth + 1, subtype == "digest");
                }
            }
            "message" if depth < MAX_DEPTH && matches!(subtype.as_str(), "rfc822" | "global") => {
                let inner = decode(body, &cte);
                self.walk(&inner, depth + 1, false);
            }
            "text" if !attachment => {
                let charset = ct.and_then(|ct| ct.attribute("charset"));
                if let Some(cs) = charset {
                    self.note("charset:", cs);
                }
                self.add_text(body, &cte, charset, subtype == "html");
            }
            _ => {}
        }
    }

    /// The header facts of the message itself (not of parts or attached messages), and a few
    /// header notes that separate spam in the training corpus and are not peculiar to it: who
    /// the sender says it is, the mailer, how many visible recipients, hidden recipients, a
    /// sender address with a run of digits, a priority flag.
    fn top_headers(&mut self, h: &mail_parser::Message) {
        self.subject = h.subject().unwrap_or("").to_string();
        if let Some(from) = h.from().and_then(|a| a.first()) {
            self.from_name = from.name().unwrap_or("").to_string();
            self.from_addr = from.address().unwrap_or("").to_string();
        }
        if let Some(rt) = h.reply_to().and_then(|a| a.first()) {
            self.reply_to = rt.address().unwrap_or("").to_string();
        }
        self.has_date = h.header(HeaderName::Date).is_some();
        self.has_message_id = h.header(HeaderName::MessageId).is_some();

        let name = self.from_name.clone();
        for w in name.split_whitespace().take(8) {
            self.note("from-name:", w);
        }
        let mailer = h
            .header_raw("X-Mailer")
            .or_else(|| h.header_raw("User-Agent"))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("none");
        self.note("x-mailer:", mailer);
        let count = |a: Option<&mail_parser::Address>| a.map_or(0, |a| a.iter().count());
        let rcpts = count(h.to()) + count(h.cc());
        self.notes.push(format!("rcpts:{}", rcpts.min(5)));
        if h.header_raw("To")
            .is_some_and(|t| t.to_ascii_lowercase().contains("undisclosed"))
        {
            self.notes.push("to:undisclosed".into());
        }
        let local = self.from_addr.split('@').next().unwrap_or("");
        if local
            .as_bytes()
            .windows(3)
            .any(|w| w.iter().all(u8::is_ascii_digit))
        {
            self.notes.push("from:digits".into());
        }
        if let Some(p) = h.header_raw("X-Priority") {
            let level = p.trim().chars().next().unwrap_or(' ');
            self.notes.push(format!("x-priority:{level}"));
        }
    }

    /// A note for the classifier: lower-cased, and short whatever the sender wrote.
    fn note(&mut self, kind: &str, value: &str) {
        let value: String = value.chars().take(40).collect();
        self.notes.push(format!("{kind}{}", value.to_lowercase()));
    }

    fn add_text(&mut self, body: &[u8], cte: &str, charset: Option<&str>, html: bool) {
        let room = TEXT_LIMIT.saturating_sub(self.text.len());
        if room == 0 {
            return;
        }
        // Encoded text is longer than what it decodes to: base64 by 4/3, QP by at most 3.
        let body = &body[..body.len().min(room.saturating_mul(3))];
        let bytes = decode(body, cte);
        // ASCII text in a charset that leaves ASCII as it is needs no decoder (mail-parser's
        // single-byte ones build the string a character at a time).
        let charset = charset.filter(|cs| !(bytes.is_ascii() && crate::message::keeps_ascii(cs)));
        let text = match charset.and_then(|cs| charset_decoder(cs.as_bytes())) {
            Some(decoder) => decoder(&bytes),
            // `from_utf8` first: it checks ASCII a word at a time, where `from_utf8_lossy` walks
            // every byte (a tenth of the stage on a 10 KiB text, benches/spam.rs).
            None => match std::str::from_utf8(&bytes) {
                Ok(text) => text.to_owned(),
                Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
            },
        };
        let text = if html {
            self.has_html = true;
            html::to_text(&text, &mut self.links)
        } else {
            self.has_plain |= !text.trim().is_empty();
            text
        };
        let mut end = text.len().min(room);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&text[..end]);
        self.text.push('\n');
    }
}

/// The header block (with its last line break) and the body after the empty line.
fn split_headers(b: &[u8]) -> (&[u8], &[u8]) {
    if let Some(rest) = b.strip_prefix(b"\r\n").or_else(|| b.strip_prefix(b"\n")) {
        return (&[], rest);
    }
    let mut i = 0;
    while let Some(p) = b[i..].iter().position(|&c| c == b'\n') {
        let nl = i + p;
        let next = &b[nl + 1..];
        if next.starts_with(b"\n") {
            return (&b[..nl + 1], &b[nl + 2..]);
        }
        if next.starts_with(b"\r\n") {
            return (&b[..nl + 1], &b[nl + 3..]);
        }
        i = nl + 1;
    }
    (b, &[])
}

/// The parts of a multipart body (RFC 2046 §5.1.1): what lies between delimiter lines, each
/// without the line break that belongs to the next delimiter. One pass over the lines.
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut open: Option<usize> = None;
    let mut line = 0;
    while line < body.len() && parts.len() < MAX_PARTS {
        let end = body[line..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(body.len(), |p| line + p + 1);
        let l = &body[line..end];
        if let Some(after) = l.strip_prefix(b"--").and_then(|r| r.strip_prefix(boundary)) {
            let closing = after.starts_with(b"--");
            if closing || after.iter().all(|c| c.is_ascii_whitespace()) {
                if let Some(start) = open.take() {
                    let part = &body[start..line.max(start)];
                    let part = part
                        .strip_suffix(b"\r\n")
                        .or_else(|| part.strip_suffix(b"\n"))
                        .unwrap_or(part);
                    parts.push(part);
                }
                if closing {
                    return parts;
                }
                open = Some(end);
            }
        }
        line = end;
    }
    if let Some(start) = open {
        parts.push(&body[start..]);
    }
    parts
}

/// Content-Transfer-Encoding, leniently: spam is often badly encoded and still displayed.
fn decode<'a>(body: &'a [u8], cte: &str) -> std::borrow::Cow<'a, [u8]> {
    match cte {
        "base64" => base64(body).into(),
        "quoted-printable" => quoted_printable(body).into(),
        _ => body.into(),
    }
}

/// Base64 ignoring anything outside the alphabet, stopping at padding.
fn base64(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in b {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Quoted-printable; a malformed escape is kept as written.
fn quoted_printable(b: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(b'\n'), _) => {
                    i += 2;
                    continue;
                }
                (Some(b'\r'), Some(b'\n')) => {
                    i += 3;
                    continue;
                }
                (Some(&h), Some(&l)) => {
                    if let (Some(h), Some(l)) = (hex(h), hex(l)) {
                        out.push(h << 4 | l);
                        i += 3;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoders() {
        let cases: &[(&[u8], &str, &[u8])] = &[
            (b"SGVsbG8g\r\nd29ybGQ=", "base64", b"Hello world"),
            (b"SGV*sbG8", "base64", b"Hello"),
            (
                b"caf=C3=A9 =\r\nsoft=\nx =ZZ=",
                "quoted-printable",
                "café softx =ZZ=".as_bytes(),
            ),
            (b"as is=41", "8bit", b"as is=41"),
        ];
        for (input, cte, want) in cases {
            assert_eq!(&*decode(input, cte), *want, "{cte} {input:?}");
        }
    }

    /// ASCII text skips the decoder only where ASCII stands for itself: UTF-7 is still decoded.
    #[test]
    fn ascii_text_and_its_charset() {
        let text = |charset: &str, body: &str| {
            let raw = format!("Content-Type: text/plain; charset={charset}\r\n\r\n{body}");
            read(raw.as_bytes()).text
        };
        assert_eq!(text("us-ascii", "plain words"), "plain words\n");
        assert_eq!(text("ISO-8859-1", "plain words"), "plain words\n");
        assert_eq!(text("utf-7", "caf+AOk-"), "café\n");
        assert_eq!(text("iso-8859-1", "caf\u{e9}"), "caf\u{c3}\u{a9}\n");
    }

    #[test]
    fn multipart_split() {
        let body = b"preamble\r\n--b\r\nA\r\n--bb\r\n--b \r\nB\r\n--b--\r\nepilogue\r\n--b\r\nC";
        assert_eq!(
            split_multipart(body, b"b"),
            vec![&b"A\r\n--bb"[..], &b"B"[..]]
        );
        // Unterminated: the last part runs to the end.
        assert_eq!(
            split_multipart(b"--x\nA\n--x\nB", b"x"),
            vec![&b"A"[..], &b"B"[..]]
        );
        assert!(split_multipart(b"no delimiter", b"x").is_empty());
    }

    #[test]
    fn reads_headers_text_and_structure() {
        let raw = b"From sender@x Tue Aug  6 11:51:02 2002\n\
From: \"Bank\" <a@b.test>\n\
Reply-To: c@d.test\n\
Subject: =?utf-8?q?Caf=C3=A9?=\n\
Content-Type: multipart/alternative; boundary=\"zz\"\n\
\n\
--zz\n\
Content-Type: text/plain; charset=iso-8859-1\n\
Content-Transfer-Encoding: quoted-printable\n\
\n\
caf=E9 plain\n\
--zz\n\
Content-Type: text/html\n\
Content-Transfer-Encoding: base64\n\
\n\
PGEgaHJlZj0iaHR0cDovL2UudGVzdCI+bGluazwvYT4=\n\
--zz--\n";
        let c = read(raw);
        assert_eq!(c.subject, "Café");
        assert_eq!(
            (c.from_name.as_str(), c.from_addr.as_str()),
            ("Bank", "a@b.test")
        );
        assert_eq!(c.reply_to, "c@d.test");
        assert!(!c.has_date && !c.has_message_id);
        assert!(c.has_plain && c.has_html);
        assert_eq!(c.text, "café plain\nlink\n");
        assert_eq!(c.links[0].href, "http://e.test");
        assert!(
            c.notes.contains(&"charset:iso-8859-1".to_string()),
            "{:?}",
            c.notes
        );
    }
}
