//! An accepted message: its id and the `Received:` trace header we put on top (RFC 5321 §4.4).

use crate::envelope::Envelope;

/// A new message id: UUIDv7, time-ordered and never reused; it names the message in our
/// `250` reply, its `Received:` header, events and `passerelle trace`.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// `Received: from HELO (IP) by US with ESMTPS (TLS facts) id ID for <RCPT>; DATE`, folded.
pub fn received_header(env: &Envelope, hostname: &str, id: &str) -> String {
    let mut h = format!(
        "Received: from {} ({})\r\n\tby {hostname} (Passerelle) with {}",
        sanitize(&env.helo),
        ip_literal(env.peer.ip()),
        if env.tls.is_some() { "ESMTPS" } else { "ESMTP" },
    );
    if let Some(tls) = &env.tls {
        h.push_str(&format!(" ({} {})", tls.version, tls.cipher));
    }
    h.push_str(&format!("\r\n\tid {id}"));
    if let [only] = env.rcpts.as_slice() {
        h.push_str(&format!("\r\n\tfor <{}>", sanitize(only)));
    }
    h.push_str(&format!("; {}\r\n", chrono::Utc::now().to_rfc2822()));
    h
}

/// The fields named `name` (case-insensitive) from the message's header block, whole (folded
/// lines included) and each cut at `FIELD_MAX` octets, followed by the blank line: a small header
/// block for mail-parser to read. One linear pass, so a stranger's 10 MB header costs
/// milliseconds here, where parsing all of it would cost seconds on a runtime thread.
pub fn header_fields(raw: &[u8], name: &str) -> Vec<u8> {
    const FIELD_MAX: usize = 64 * 1024;
    let mut out = Vec::new();
    let mut keep = false;
    let mut kept = 0;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            keep = names(line, name);
            kept = 0;
        }
        if keep && kept < FIELD_MAX {
            let take = line.len().min(FIELD_MAX - kept);
            out.extend_from_slice(&line[..take]);
            kept += take;
            if take < line.len() {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// How many fields named `name` the header block of `raw` has (a linear pass, no copy).
pub fn count_fields(raw: &[u8], name: &str) -> usize {
    raw.split_inclusive(|&b| b == b'\n')
        .take_while(|line| *line != b"\r\n" && *line != b"\n")
        .filter(|line| names(line, name))
        .count()
}

/// Whether `line` begins a field named `name` (a continuation line begins with a space or tab,
/// which no name matches).
fn names(line: &[u8], name: &str) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        && line[name.len()..].trim_ascii_start().starts_with(b":")
}

/// Whether the message is one plain text part sent as it is, read from its own header fields
/// (a linear pass, no MIME parse): no multipart, no attached message, no transfer encoding, no
/// file name or disposition, no RFC 2231 parameter sections, nothing that looks encrypted
/// (inline PGP, a zip). Such a message has nothing for the limits stage to count and its raw
/// body is the only leaf the virus stage would scan, so both skip mail-parser's full parse for
/// the commonest message there is. Anything less plain, or a header that could be read two ways
/// (a field given twice), or a message over 256 KiB, is parsed as usual.
pub fn plain_text_only(raw: &[u8]) -> bool {
    // The callers run on the async threads: a few linear passes over at most this much.
    const MAX: usize = 256 << 10;
    const PGP: &[u8] = b"-----BEGIN PGP MESSAGE-----";
    if raw.len() > MAX {
        return false;
    }
    let values = |name: &str| -> Vec<String> {
        let fields = header_fields(raw, name);
        let text = String::from_utf8_lossy(&fields)
            .replace("\r\n ", " ")
            .replace("\r\n\t", " ");
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
            .collect()
    };
    let plain_type = match values("Content-Type").as_slice() {
        [] => true,
        [v] => {
            let (ctype, params) = v.split_once(';').unwrap_or((v, ""));
            matches!(ctype.trim(), "text/plain" | "text/html")
                && params.len() <= 256
                && !params.contains("name")
                && !params.contains('*')
        }
        _ => false,
    };
    let as_sent = match values("Content-Transfer-Encoding").as_slice() {
        [] => true,
        [v] => matches!(v.as_str(), "7bit" | "8bit" | "binary"),
        _ => false,
    };
    if !plain_type || !as_sent || !values("Content-Disposition").is_empty() {
        return false;
    }
    let body = memchr::memmem::find(raw, b"\r\n\r\n")
        .map(|i| &raw[i + 4..])
        .or_else(|| memchr::memmem::find(raw, b"\n\n").map(|i| &raw[i + 2..]))
        .unwrap_or(raw);
    !body.trim_ascii_start().starts_with(b"PK\x03\x04") && memchr::memmem::find(body, PGP).is_none()
}

/// Charsets in which every ASCII byte stands for itself and no other byte decodes to ASCII (not
/// UTF-7, UTF-16 or ISO-2022, where ASCII bytes can encode other characters): ASCII text in one
/// of them is its own decoding. The spam and virus stages skip a decoder with it.
pub(crate) fn keeps_ascii(charset: &str) -> bool {
    let cs = charset.trim().trim_matches('"').to_ascii_lowercase();
    matches!(cs.as_str(), "us-ascii" | "ascii" | "utf-8" | "utf8")
        || ["iso-8859-", "iso8859-", "windows-125", "cp125", "latin"]
            .iter()
            .any(|p| cs.starts_with(p))
}

/// One plain text part sent as it is ([`plain_text_only`]), for the stages' tests.
#[cfg(test)]
pub(crate) const PLAIN_SAMPLES: &[&[u8]] = &[
    b"From: a@example.org\r\nSubject: hi\r\n\r\nHello\r\n",
    b"From: a@example.org\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\
      Content-Transfer-Encoding: 8bit\r\n\r\nCaf\xe9\r\n",
    b"Content-Type: TEXT/HTML;\r\n charset=utf-8\r\nMIME-Version: 1.0\r\n\r\n<p>hi</p>\r\n",
];

#[cfg(test)]
const NOT_PLAIN_SAMPLES: &[&[u8]] = &[
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
    b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n",
    b"Content-Type: text/plain; name=notes.txt\r\n\r\nx\r\n",
    b"Content-Disposition: attachment\r\n\r\nx\r\n",
    b"Content-Type: text/plain\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\nx\r\n",
    b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nx\r\n",
    b"Content-Type: application/pdf\r\n\r\n%PDF\r\n",
    b"Subject: x\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nabc\r\n",
    b"Subject: x\n\n-----BEGIN PGP MESSAGE-----\nabc\n",
    b"Content-Type: text/plain; charset*0=us; charset*1=-ascii\r\n\r\nx\r\n",
];

fn ip_literal(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => format!("[{v4}]"),
        std::net::IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    }
}

/// What a client sent goes into a header: keep it printable and on one line.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(255)
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Direction, TlsFacts};

    #[test]
    fn fields_are_counted_in_the_header_block_only() {
        let raw = b"Received: a\r\n\tfolded\r\nreceived : b\r\nReceived-SPF: pass\r\n \
            Received: continuation\r\nX-Received: c\r\n\r\nReceived: in the body\r\n";
        assert_eq!(count_fields(raw, "Received"), 2);
        assert_eq!(
            count_fields(
                b"Received: bare LF\nReceived: x\n\nReceived: y\n",
                "Received"
            ),
            2
        );
        assert_eq!(count_fields(b"", "Received"), 0);
    }

    #[test]
    fn received_names_client_tls_id_and_single_recipient() {
        let env = Envelope {
            peer: "192.0.2.7:4000".parse().unwrap(),
            listener: "mx".into(),
            helo: "client.test\r\nX-Evil: 1".into(),
            tls: Some(TlsFacts {
                version: "TLSv1.3".into(),
                cipher: "TLS13_AES_256_GCM_SHA384".into(),
                client_certificate: false,
                ..Default::default()
            }),
            mail_from: "a@client.test".into(),
            rcpts: vec!["b@example.test".into()],
            direction: Direction::Inbound,
        };
        let h = received_header(&env, "mx.example.test", "ID1");
        assert!(
            h.starts_with(
                "Received: from client.testX-Evil: 1 ([192.0.2.7])\r\n\tby mx.example.test"
            ),
            "{h}"
        );
        assert!(
            h.contains("with ESMTPS (TLSv1.3 TLS13_AES_256_GCM_SHA384)"),
            "{h}"
        );
        assert!(h.contains("\tid ID1\r\n\tfor <b@example.test>; "), "{h}");
        assert!(h.ends_with("\r\n") && h.matches("\r\n").count() == 4, "{h}");
    }

    #[test]
    fn plain_text_over_256_kib_is_parsed_as_usual() {
        let mut raw = b"Subject: big\r\n\r\n".to_vec();
        raw.resize(256 << 10, b'a');
        assert!(plain_text_only(&raw));
        raw.push(b'a');
        assert!(!plain_text_only(&raw));
    }

    #[test]
    fn plain_text_only_reads_the_header_fields() {
        for raw in PLAIN_SAMPLES {
            assert!(plain_text_only(raw), "{}", String::from_utf8_lossy(raw));
        }
        for raw in NOT_PLAIN_SAMPLES {
            assert!(!plain_text_only(raw), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn header_fields_picks_the_named_fields_only() {
        let raw = b"Received: x\r\nSubject: a\r\n b\r\nfrom : Ann <a@x.test>\r\nFrom-Other: no\r\nX: y\r\n\r\nFrom: body@x.test\r\n";
        assert_eq!(
            header_fields(raw, "From"),
            b"from : Ann <a@x.test>\r\n\r\n".to_vec()
        );
        assert_eq!(
            header_fields(raw, "Subject"),
            b"Subject: a\r\n b\r\n\r\n".to_vec()
        );
        let huge = [
            b"Subject: ".as_slice(),
            &vec![b'a'; 10 << 20],
            b"\r\nFrom: z@y.test\r\n\r\n",
        ]
        .concat();
        assert_eq!(
            header_fields(&huge, "From"),
            b"From: z@y.test\r\n\r\n".to_vec()
        );
        assert!(header_fields(&huge, "Subject").len() <= 64 * 1024 + 4);
    }

    /// What `keeps_ascii` promises, held against mail-parser's own decoders for the charsets it
    /// knows: ASCII bytes decode to themselves, every other byte to something that is not ASCII.
    #[test]
    fn keeps_ascii_holds_for_mail_parsers_decoders() {
        use mail_parser::decoders::charsets::map::charset_decoder;
        let mut names: Vec<String> = vec!["us-ascii".into(), "ascii".into(), "latin1".into()];
        names.extend((1..=16).map(|n| format!("iso-8859-{n}")));
        names.extend((1250..=1258).map(|n| format!("windows-{n}")));
        names.extend((1250..=1258).map(|n| format!("cp{n}")));
        let mut checked = 0;
        for name in names.iter().filter(|n| keeps_ascii(n)) {
            let Some(decode) = charset_decoder(name.as_bytes()) else {
                continue; // mail-parser reads it as UTF-8, which keeps ASCII
            };
            checked += 1;
            for b in 0..=255u8 {
                let text = decode(&[b]);
                if b.is_ascii() {
                    assert_eq!(text, (b as char).to_string(), "{name} {b:#x}");
                } else {
                    assert!(!text.is_ascii(), "{name}: {b:#x} decodes to ASCII {text:?}");
                }
            }
        }
        assert!(checked >= 20, "only {checked} charsets have a decoder");
        assert!(keeps_ascii("\"Windows-1252\"") && keeps_ascii("utf-8"));
        assert!(!keeps_ascii("utf-7") && !keeps_ascii("iso-2022-jp") && !keeps_ascii("utf-16"));
    }
}
