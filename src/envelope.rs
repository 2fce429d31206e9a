//! What the SMTP dialogue establishes about a message before its bytes arrive.

use std::net::SocketAddr;

/// Which way a message goes, decided by who sent it (see `relay.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the internet to one of our domains.
    Inbound,
    /// From an authorised client to anywhere.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Facts about the TLS session a message arrived over, for `Received:` and events.
#[derive(Debug, Clone, Default)]
pub struct TlsFacts {
    pub version: String,
    pub cipher: String,
    /// The client presented a certificate issued by `relay.client_ca` (verified in the handshake).
    pub client_certificate: bool,
    /// Trust-space peer domains the client's certificate (issued by `trust.ca`) proves.
    pub peer_domains: Vec<String>,
    /// The first DNS name of a trust-space certificate, for the header and the event.
    pub certificate_name: Option<String>,
}

/// The SMTP envelope of one transaction.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub peer: SocketAddr,
    pub listener: String,
    pub helo: String,
    pub tls: Option<TlsFacts>,
    /// Empty for the null reverse-path `<>`.
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub direction: Direction,
}

/// An address split at its last `@`; the domain lower-cased.
pub fn split(address: &str) -> Option<(&str, String)> {
    let at = address.rfind('@')?;
    let (local, domain) = (&address[..at], &address[at + 1..]);
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    Some((local, domain.to_ascii_lowercase()))
}

/// A fully qualified domain name: LDH labels of 1–63 octets, 253 in all, no trailing dot.
pub fn is_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A dot-atom local part (RFC 5321 §4.1.2) with UTF-8 allowed (SMTPUTF8).
/// Quoted strings are not accepted: they are how relay tricks hide an `@`.
pub fn is_dot_atom(local: &str) -> bool {
    const SPECIALS: &[u8] = b"!#$%&'*+-/=?^_`{|}~";
    !local.is_empty()
        && local.len() <= 64
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || SPECIALS.contains(&b) || b >= 0x80)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        for ok in ["example.test", "a-b.c.example", "xn--bcher-kva.test"] {
            assert!(is_domain(ok), "{ok}");
        }
        for bad in [
            "",
            "localhost",
            "example.test.",
            "-a.test",
            "a..test",
            "a_b.test",
            "a b.test",
        ] {
            assert!(!is_domain(bad), "{bad}");
        }
    }

    #[test]
    fn local_parts() {
        for ok in ["alice", "a.b", "x+tag", "o'brien", "jos\u{e9}"] {
            assert!(is_dot_atom(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "a\"b", "a@b", "a,b", "a:b"] {
            assert!(!is_dot_atom(bad), "{bad}");
        }
    }

    #[test]
    fn split_lowercases_domain_only() {
        assert_eq!(
            split("Bob@Example.TEST"),
            Some(("Bob", "example.test".into()))
        );
        assert_eq!(split("nobody"), None);
        assert_eq!(split("@x.test"), None);
    }
}
