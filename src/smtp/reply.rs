//! Every reply the server sends, in one place, each with its enhanced status code (RFC 3463).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced,
            text: text.into(),
        }
    }

    /// The wire form, CRLF-terminated; multi-line texts become `250-` continuation lines.
    pub fn to_wire(&self) -> Vec<u8> {
        let lines: Vec<&str> = self.text.lines().collect();
        let mut out = Vec::with_capacity(self.text.len() + 16 * lines.len().max(1));
        let last = lines.len().saturating_sub(1);
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            // EHLO keyword lines carry no enhanced code (RFC 2034 §3 exempts the greeting and EHLO).
            if self.enhanced.is_empty() {
                out.extend_from_slice(format!("{}{sep}{line}\r\n", self.code).as_bytes());
            } else {
                out.extend_from_slice(
                    format!("{}{sep}{} {line}\r\n", self.code, self.enhanced).as_bytes(),
                );
            }
        }
        if lines.is_empty() {
            out.extend_from_slice(format!("{} {}\r\n", self.code, self.enhanced).as_bytes());
        }
        out
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

pub fn greeting(host: &str) -> Reply {
    Reply::new(220, "", format!("{host} ESMTP Passerelle"))
}
pub fn ok() -> Reply {
    Reply::new(250, "2.0.0", "OK")
}
pub fn helo(host: &str, peer: &str) -> Reply {
    Reply::new(250, "", format!("{host} greets {peer}"))
}
pub fn sender_ok() -> Reply {
    Reply::new(250, "2.1.0", "sender OK")
}
pub fn recipient_ok() -> Reply {
    Reply::new(250, "2.1.5", "recipient OK")
}
pub fn queued(id: &str) -> Reply {
    Reply::new(250, "2.0.0", format!("queued as {id}"))
}
pub fn bye(host: &str) -> Reply {
    Reply::new(221, "2.0.0", format!("{host} closing connection"))
}
pub fn vrfy() -> Reply {
    Reply::new(
        252,
        "2.5.0",
        "cannot verify the user, but will accept the message and attempt delivery",
    )
}
pub fn help() -> Reply {
    Reply::new(214, "2.0.0", "see RFC 5321")
}
pub fn start_tls() -> Reply {
    Reply::new(220, "2.0.0", "ready to start TLS")
}
pub fn start_data() -> Reply {
    Reply::new(354, "2.0.0", "end data with <CR><LF>.<CR><LF>")
}

pub fn too_many_connections() -> Reply {
    Reply::new(421, "4.7.0", "too many connections, try again later")
}
pub fn internal_error() -> Reply {
    Reply::new(
        421,
        "4.3.0",
        "internal error, closing the connection; try again later",
    )
}

pub fn connecting_too_fast() -> Reply {
    Reply::new(
        421,
        "4.7.0",
        "too many connections from your address in the last minute, try again later",
    )
}

pub fn sending_too_fast() -> Reply {
    Reply::new(
        450,
        "4.7.1",
        "too many messages from your address in the last minute, try again later",
    )
}

pub fn too_many_from_you() -> Reply {
    Reply::new(
        421,
        "4.7.0",
        "too many connections from your address, try again later",
    )
}
pub fn timeout() -> Reply {
    Reply::new(421, "4.4.2", "timeout, closing connection")
}
pub fn too_many_errors() -> Reply {
    Reply::new(421, "4.7.0", "too many errors, closing connection")
}
pub fn shutting_down() -> Reply {
    Reply::new(421, "4.3.2", "service shutting down, try again later")
}
pub fn storage_failed() -> Reply {
    Reply::new(451, "4.3.0", "local error in processing, try again later")
}
pub fn too_many_recipients() -> Reply {
    Reply::new(452, "4.5.3", "too many recipients")
}

pub fn line_too_long() -> Reply {
    Reply::new(
        500,
        "5.5.2",
        "line too long (512 octets at most for a command)",
    )
}
pub fn bare_lf_command() -> Reply {
    Reply::new(500, "5.5.2", "commands must end with <CR><LF>")
}
pub fn control_characters() -> Reply {
    Reply::new(
        500,
        "5.5.2",
        "NUL and control characters are not allowed in commands",
    )
}
pub fn invalid_utf8() -> Reply {
    Reply::new(
        500,
        "5.5.2",
        "commands must be ASCII, or UTF-8 with SMTPUTF8",
    )
}
pub fn unknown_command() -> Reply {
    Reply::new(500, "5.5.1", "command not recognised")
}
pub fn syntax(what: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("syntax error: {what}"))
}
pub fn bad_sender() -> Reply {
    Reply::new(501, "5.1.7", "bad sender address syntax")
}
pub fn bad_recipient() -> Reply {
    Reply::new(501, "5.1.3", "bad recipient address syntax")
}
pub fn not_implemented(cmd: &str) -> Reply {
    Reply::new(502, "5.5.1", format!("{cmd} not implemented"))
}
pub fn bad_sequence(what: &str) -> Reply {
    Reply::new(503, "5.5.1", what.to_owned())
}
pub fn param_not_supported(p: &str) -> Reply {
    Reply::new(555, "5.5.4", format!("parameter {p} not supported"))
}
pub fn auth_unavailable() -> Reply {
    Reply::new(504, "5.5.4", "authentication mechanism not supported")
}
pub fn tls_required() -> Reply {
    Reply::new(530, "5.7.0", "must issue a STARTTLS command first")
}
pub fn tls_already() -> Reply {
    Reply::new(503, "5.5.1", "TLS already active")
}
pub fn tls_unavailable() -> Reply {
    Reply::new(454, "4.7.0", "TLS not available")
}
pub fn bare_lf_data() -> Reply {
    Reply::new(
        550,
        "5.5.2",
        "message refused: bare LF or bare CR in the message (lines must end with <CR><LF>)",
    )
}
pub fn text_line_too_long() -> Reply {
    Reply::new(
        550,
        "5.5.2",
        "message refused: a line is longer than 1000 octets",
    )
}
/// RFC 3463 X.4.6: routing loop detected.
pub fn too_many_hops(hops: usize, max: usize) -> Reply {
    Reply::new(
        554,
        "5.4.6",
        format!("message refused: {hops} Received fields, more than {max}: a mail loop"),
    )
}
pub fn too_big(max: usize) -> Reply {
    Reply::new(
        552,
        "5.3.4",
        format!("message too big: the limit is {max} octets"),
    )
}
pub fn relay_denied() -> Reply {
    Reply::new(554, "5.7.1", "relay not permitted")
}
pub fn relay_trick() -> Reply {
    Reply::new(
        554,
        "5.7.1",
        "relay not permitted: source routes, %, ! and quoted @ are refused",
    )
}
pub fn unknown_recipient() -> Reply {
    Reply::new(550, "5.1.1", "recipient unknown: not in our directory")
}
pub fn directory_unavailable() -> Reply {
    Reply::new(
        451,
        "4.4.3",
        "directory temporarily unavailable, try again later",
    )
}
pub fn no_valid_recipients() -> Reply {
    Reply::new(554, "5.5.1", "no valid recipients")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        assert_eq!(ok().to_wire(), b"250 2.0.0 OK\r\n");
        assert_eq!(
            greeting("mx.test").to_wire(),
            b"220 mx.test ESMTP Passerelle\r\n"
        );
        let multi = Reply::new(250, "", "mx.test\nPIPELINING\nSTARTTLS");
        assert_eq!(
            multi.to_wire(),
            b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
        );
    }

    #[test]
    fn every_error_reply_has_an_enhanced_code() {
        for r in [
            too_many_connections(),
            timeout(),
            storage_failed(),
            too_many_recipients(),
            line_too_long(),
            unknown_command(),
            syntax("x"),
            bad_sender(),
            bad_recipient(),
            not_implemented("X"),
            bad_sequence("x"),
            tls_required(),
            bare_lf_data(),
            too_big(1),
            relay_denied(),
            relay_trick(),
            no_valid_recipients(),
            unknown_recipient(),
            directory_unavailable(),
            vrfy(),
            queued("x"),
        ] {
            let wire = String::from_utf8(r.to_wire()).unwrap();
            let enhanced = wire.split(' ').nth(1).unwrap();
            let class = enhanced.as_bytes()[0];
            assert_eq!(class, wire.as_bytes()[0], "{wire}");
            assert_eq!(enhanced.split('.').count(), 3, "{wire}");
        }
    }
}
