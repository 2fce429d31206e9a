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
            keep = line.len() > name.len()
                && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
                && line[name.len()..].trim_ascii_start().starts_with(b":");
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
}
