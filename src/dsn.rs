//! Delivery status notifications (RFC 3464): the bounce or delay warning we send to a message's
//! envelope sender when a recipient fails, expires or is still waiting.
//!
//! A notice is a `multipart/report` (RFC 6522) in three parts: words for a person, the
//! machine-readable `message/delivery-status`, and the original's header block as
//! `text/rfc822-headers`. Only the headers go back, never the body: the gateway carries health
//! data, and an envelope sender is an address nobody has verified.
//!
//! The caller queues the result with an empty envelope sender (RFC 5321 §4.5.5) so a notice can
//! never bounce in turn; `Auto-Submitted` tells autoresponders not to answer it (RFC 3834).
//!
//! mail-builder writes the MIME structure. We choose the boundary, so the same inputs give the
//! same bytes (golden files), and the transfer encoding of the two report parts: left to itself,
//! mail-builder encodes any part with a line over 77 octets as quoted-printable, and RFC 3464
//! wants the status part in 7bit.

use chrono::DateTime;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;

/// What became of a recipient, as RFC 3464's `Action` field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// We gave up: a permanent refusal, or the queue lifetime ran out.
    Failed,
    /// Still queued; the notice is a warning.
    Delayed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
        }
    }
}

/// One recipient's entry in a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The recipient we tried to deliver to.
    pub address: String,
    pub action: Action,
    /// Enhanced status code (RFC 3463) such as `5.1.1`; [`status_of`] reads it from a reply,
    /// and replaces a value that is not a code.
    pub status: String,
    /// The remote reply or our own reason, e.g. `550 5.1.1 no such user`.
    pub diagnostic: String,
    /// Host name of the server that gave that reply, if one did.
    pub remote_mta: Option<String>,
    /// Unix milliseconds of the last attempt, if there was one.
    pub last_attempt: Option<i64>,
}

/// Everything one notice says. Times are unix milliseconds, passed in so output is reproducible.
#[derive(Debug, Clone, Copy)]
pub struct Notice<'a> {
    /// Our host name: the notice comes from `MAILER-DAEMON@` it.
    pub reporting_mta: &'a str,
    /// Our id for the original message.
    pub queue_id: &'a str,
    /// The original envelope sender, to whom the notice goes; never empty (nothing bounces to `<>`).
    pub sender: &'a str,
    /// When we accepted the original.
    pub arrival: i64,
    pub recipients: &'a [RecipientReport],
    /// The original message as queued; only its header block is copied into the notice.
    pub original: &'a [u8],
    /// The notice's `Date`, also part of its `Message-ID` so two notices for one message differ.
    pub now: i64,
    /// For delay warnings: when we will give up.
    pub retry_until: Option<i64>,
}

/// The notice as an RFC 5322 message, CRLF line ends, ready to be queued with an empty envelope
/// sender.
pub fn build(n: &Notice) -> Vec<u8> {
    let text = human_text(n);
    let status = delivery_status(n);
    let headers = header_block(n.original);
    let boundary = boundary(n, &[text.as_bytes(), status.as_bytes(), &headers]);
    let subject = if n.recipients.iter().any(|r| r.action == Action::Failed) {
        "Undelivered Mail Returned to Sender"
    } else {
        "Delayed Mail (still being retried)"
    };
    let report = MimePart::new(
        ContentType::new("multipart/report")
            .attribute("report-type", "delivery-status")
            .attribute("boundary", boundary),
        vec![
            MimePart::new(
                ContentType::new("text/plain").attribute("charset", "utf-8"),
                text,
            ),
            // Bytes, not text: mail-builder would add a meaningless charset to a text body.
            MimePart::new("message/delivery-status", status.into_bytes()).transfer_encoding("7bit"),
            headers_part(headers),
        ],
    );
    let mut out = Vec::new();
    MessageBuilder::new()
        // Raw: mail-builder's Address would quote the display name, which is valid but reads
        // worse in a header every mail client shows.
        .header(
            "From",
            Raw::new(format!(
                "Mail Delivery System <MAILER-DAEMON@{}>",
                n.reporting_mta
            )),
        )
        .to(Address::new_address(None::<&str>, one_line(n.sender)))
        .subject(subject)
        .date(Date::new(n.now.div_euclid(1000)))
        .message_id(format!("{}.dsn.{}@{}", n.queue_id, n.now, n.reporting_mta))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .header("MIME-Version", Raw::new("1.0"))
        .body(report)
        .serialize(&mut out);
    out
}

/// The enhanced status code (RFC 3463) in a reply or reason: `550 5.1.1 no such user` → `5.1.1`,
/// `4.4.1 connecting to …` → `4.4.1`. A reply with a basic code only gives its class
/// (`451 try later` → `4.0.0`), as does one whose enhanced code contradicts it: the basic code is
/// what the server meant. Text with no code at all, empty included, gives `5.0.0`: a reason we
/// cannot read promises nothing about retrying, and a caller warning of a delay passes its own
/// `4.x.x` reason.
pub fn status_of(reply: &str) -> String {
    let reply = reply.trim_start();
    let basic = reply
        .get(..3)
        .filter(|code| code.bytes().all(|b| b.is_ascii_digit()))
        .filter(|_| matches!(reply.as_bytes().get(3), None | Some(b' ' | b'-')));
    let rest = match basic {
        Some(_) => reply[3..].trim_start_matches([' ', '-']),
        None => reply,
    };
    let enhanced = rest.split_whitespace().next().filter(|w| is_enhanced(w));
    match (basic.map(|b| b.as_bytes()[0]), enhanced) {
        (Some(class), Some(code)) if code.as_bytes()[0] == class => code.to_string(),
        (None, Some(code)) => code.to_string(),
        (Some(b'4'), _) => "4.0.0".to_string(),
        _ => "5.0.0".to_string(),
    }
}

/// `class.subject.detail` as RFC 3463 writes it: class 2, 4 or 5, then one to three digits twice.
fn is_enhanced(code: &str) -> bool {
    let parts: Vec<&str> = code.split('.').collect();
    matches!(parts.as_slice(), [class, subject, detail]
    if matches!(*class, "2" | "4" | "5")
        && [subject, detail].iter().all(|p| {
            (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
        }))
}

/// Part one, for a person: what happened to whom and why, in plain words.
fn human_text(n: &Notice) -> String {
    let mut paras = vec![wrap(
        "",
        &format!(
            "This is an automatic message from the mail gateway at {}.",
            n.reporting_mta
        ),
        72,
        "",
    )];
    let of = |action| n.recipients.iter().filter(move |r| r.action == action);
    if of(Action::Failed).next().is_some() {
        paras.push(wrap(
            "",
            "Your message could not be delivered to the recipients below. The gateway has \
             given up: it will not be delivered to them.",
            72,
            "",
        ));
        paras.extend(of(Action::Failed).map(recipient_entry));
    }
    if of(Action::Delayed).next().is_some() {
        let promise = match n.retry_until {
            Some(until) => format!(
                "The gateway keeps trying until {}; you do not need to send it again. If it \
                 has not succeeded by then, you will receive another message.",
                readable(until)
            ),
            None => "The gateway keeps trying; you do not need to send it again.".to_string(),
        };
        paras.push(wrap(
            "",
            &format!("Your message has not yet been delivered to the recipients below. {promise}"),
            72,
            "",
        ));
        paras.extend(of(Action::Delayed).map(recipient_entry));
    }
    paras.push(wrap(
        "",
        &format!(
            "Your message was received on {}. A copy of its headers (sender, recipients, \
             subject, date) is attached below, but not its contents.",
            readable(n.arrival)
        ),
        72,
        "",
    ));
    paras.push(format!(
        "If you ask your mail administrator for help, quote this reference:\r\n  {}",
        one_line(n.queue_id)
    ));
    paras.join("\r\n\r\n") + "\r\n"
}

fn recipient_entry(r: &RecipientReport) -> String {
    let reason = match &r.remote_mta {
        Some(host) => format!("{} answered: {}", one_line(host), r.diagnostic),
        None => format!("Reason: {}", r.diagnostic),
    };
    format!(
        "{}\r\n{}",
        wrap("  ", &r.address, 72, "  "),
        wrap("    ", &reason, 72, "    ")
    )
}

/// Part two, RFC 3464's fields: per message, then one block per recipient.
fn delivery_status(n: &Notice) -> String {
    let mut s = String::new();
    field(
        &mut s,
        "Reporting-MTA",
        &format!("dns; {}", n.reporting_mta),
    );
    field(&mut s, "Arrival-Date", &rfc5322(n.arrival));
    // Extension fields come last in the per-message block (RFC 3464 §2.2).
    field(&mut s, "X-Passerelle-Queue-ID", n.queue_id);
    for r in n.recipients {
        let status = if is_enhanced(&r.status) {
            r.status.clone()
        } else {
            status_of(&r.diagnostic)
        };
        s.push_str("\r\n");
        field(&mut s, "Final-Recipient", &format!("rfc822; {}", r.address));
        field(&mut s, "Action", r.action.as_str());
        field(&mut s, "Status", &status);
        if let Some(host) = &r.remote_mta {
            field(&mut s, "Remote-MTA", &format!("dns; {host}"));
        }
        field(&mut s, "Diagnostic-Code", &diagnostic_code(&r.diagnostic));
        if let Some(at) = r.last_attempt {
            field(&mut s, "Last-Attempt-Date", &rfc5322(at));
        }
        if let (Action::Delayed, Some(until)) = (r.action, n.retry_until) {
            field(&mut s, "Will-Retry-Until", &rfc5322(until));
        }
    }
    s
}

/// `smtp; …` when the diagnostic is a server's reply (it starts with a reply code); our own
/// reasons are not SMTP replies and get our own type, as Postfix writes `X-Postfix; …`.
fn diagnostic_code(diagnostic: &str) -> String {
    let d = diagnostic.trim_start();
    let is_reply = d.len() >= 3
        && d.as_bytes()[..3].iter().all(u8::is_ascii_digit)
        && matches!(d.as_bytes().get(3), None | Some(b' ' | b'-'));
    let kind = if is_reply { "smtp" } else { "X-Passerelle" };
    format!("{kind}; {diagnostic}")
}

/// `Name: value` in 7-bit ASCII, folded at spaces to 78 columns: RFC 3464 wants the status part
/// in 7bit. Non-ASCII characters are written `\x{HEX}` (RFC 6533's escape) and a value is cut
/// at 990 octets, so even an unbreakable word keeps within RFC 5322's 998-octet line.
fn field(out: &mut String, name: &str, value: &str) {
    let mut value: String = one_line(value)
        .chars()
        .map(|c| match c.is_ascii() {
            true => c.to_string(),
            false => format!("\\x{{{:X}}}", u32::from(c)),
        })
        .collect();
    value.truncate(990);
    out.push_str(&wrap("", &format!("{name}: {value}"), 78, " "));
    out.push_str("\r\n");
}

/// Part three: the original's header fields, CRLF-terminated, at most 64 KiB. Lines are taken
/// while they look like a field or its continuation, so no body line follows even when the
/// blank line that should end the headers is missing. Control characters other than tab are
/// dropped: a text part may not carry them.
fn header_block(original: &[u8]) -> Vec<u8> {
    const MAX: usize = 64 * 1024;
    let mut out = Vec::new();
    for line in original.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let is_field = line
            .iter()
            .position(|&b| b == b':')
            .is_some_and(|colon| colon > 0 && line[..colon].iter().all(u8::is_ascii_graphic));
        let is_continuation = !out.is_empty() && matches!(line.first(), Some(b' ' | b'\t'));
        if !(is_field || is_continuation) {
            break;
        }
        let kept: Vec<u8> = line
            .iter()
            .copied()
            .filter(|&b| b == b'\t' || !b.is_ascii_control())
            .collect();
        if out.len() + kept.len() + 2 > MAX {
            break;
        }
        out.extend_from_slice(&kept);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The header block as `text/rfc822-headers`: as it is (7bit) when it is ASCII within 998-octet
/// lines; otherwise mail-builder's quoted-printable or base64, which a text part allows.
fn headers_part(block: Vec<u8>) -> MimePart<'static> {
    let plain = block.is_ascii() && block.split(|&b| b == b'\n').all(|l| l.len() <= 999);
    let part = MimePart::new("text/rfc822-headers", block);
    if plain {
        part.transfer_encoding("7bit")
    } else {
        part
    }
}

/// A boundary made from the inputs, so golden files are stable, and found in no part: `=_`
/// cannot occur in quoted-printable or base64, and the raw contents are searched.
fn boundary(n: &Notice, contents: &[&[u8]]) -> String {
    let id: String = n
        .queue_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(36)
        .collect();
    let base = format!("=_report.{id}.{}", n.now);
    let found = |b: &str| {
        contents
            .iter()
            .any(|c| c.windows(b.len()).any(|w| w == b.as_bytes()))
    };
    let mut candidate = base.clone();
    let mut i = 0;
    while found(&candidate) {
        i += 1;
        candidate = format!("{base}.{i}");
    }
    candidate
}

/// Printable text on one line with single spaces: a reply or address can start no header or MIME
/// line of its own.
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text`'s words in lines of at most `width` characters, the first line after `prefix`, the
/// others after `indent`; a longer word gets a line of its own. Lines are joined with CRLF.
fn wrap(prefix: &str, text: &str, width: usize, indent: &str) -> String {
    let mut out = String::from(prefix);
    let mut col = prefix.chars().count();
    let mut fresh = true;
    for word in one_line(text).split(' ').filter(|w| !w.is_empty()) {
        let len = word.chars().count();
        if !fresh && col + 1 + len > width {
            out.push_str("\r\n");
            out.push_str(indent);
            col = indent.chars().count();
            fresh = true;
        }
        if !fresh {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += len;
        fresh = false;
    }
    out
}

/// RFC 5322 date, as in `Date:` headers.
fn rfc5322(ms: i64) -> String {
    Date::new(ms.div_euclid(1000)).to_rfc822()
}

/// A date for people: `Monday 1 June 2026, 09:00 UTC`.
fn readable(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%A %-d %B %Y, %H:%M UTC").to_string())
        .unwrap_or_else(|| rfc5322(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};
    use std::path::Path;

    const QUEUE_ID: &str = "0197a5c2-6f00-7c3e-9a41-5b2d8e0f1a77";
    const ARRIVAL: i64 = 1_780_304_400_000; // Mon 1 Jun 2026 09:00:00 UTC
    const SECRET: &str = "SECRET-BODY-7f3a";
    const ORIGINAL: &[u8] = b"Received: from client.example.org ([192.0.2.7])\r\n\
        \tby mx.example.org (Passerelle) with ESMTPS id 0197a5c2-6f00-7c3e-9a41-5b2d8e0f1a77\r\n\
        From: Ann Example <ann@example.org>\r\n\
        To: bob@example.net, carol@example.com\r\n\
        Subject: Quarterly figures\r\n\
        Date: Mon, 1 Jun 2026 10:59:58 +0200\r\n\
        Message-ID: <q2-figures@example.org>\r\n\
        \r\n\
        Patient record SECRET-BODY-7f3a: do not disclose.\r\n";

    fn failed() -> Vec<RecipientReport> {
        vec![
            RecipientReport {
                address: "bob@example.net".into(),
                action: Action::Failed,
                status: "5.1.1".into(),
                diagnostic: "550 5.1.1 <bob@example.net>: Recipient address rejected: User \
                             unknown in virtual mailbox table"
                    .into(),
                remote_mta: Some("mx1.example.net".into()),
                last_attempt: Some(ARRIVAL + 20 * 60_000),
            },
            RecipientReport {
                address: "carol@example.com".into(),
                action: Action::Failed,
                status: "5.1.2".into(),
                diagnostic: "5.1.2 domain example.com does not exist".into(),
                remote_mta: None,
                last_attempt: Some(ARRIVAL + 20 * 60_000),
            },
        ]
    }

    fn delayed() -> Vec<RecipientReport> {
        vec![
            RecipientReport {
                address: "bob@example.net".into(),
                action: Action::Delayed,
                status: "4.7.1".into(),
                diagnostic: "451 4.7.1 Greylisted, please try again later".into(),
                remote_mta: Some("mx1.example.net".into()),
                last_attempt: Some(ARRIVAL + 225 * 60_000),
            },
            RecipientReport {
                address: "carol@example.com".into(),
                action: Action::Delayed,
                status: "4.4.1".into(),
                diagnostic: "4.4.1 connecting to mx.example.com: connection refused".into(),
                remote_mta: None,
                last_attempt: None,
            },
        ]
    }

    fn notice<'a>(recipients: &'a [RecipientReport], original: &'a [u8]) -> Notice<'a> {
        let delay = recipients.iter().all(|r| r.action == Action::Delayed);
        Notice {
            reporting_mta: "mx.example.org",
            queue_id: QUEUE_ID,
            sender: "ann@example.org",
            arrival: ARRIVAL,
            recipients,
            original,
            now: ARRIVAL
                + if delay {
                    4 * 3_600_000
                } else {
                    20 * 60_000 + 1_234
                },
            retry_until: delay.then_some(ARRIVAL + 5 * 86_400_000),
        }
    }

    /// The three leaf parts' content types and decoded contents.
    fn parts(raw: &[u8]) -> Vec<(String, String)> {
        let msg = MessageParser::default().parse(raw).expect("parses");
        msg.parts
            .iter()
            .skip(1)
            .map(|p| {
                let ct = p.content_type().expect("content type");
                let ct = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""));
                (ct, String::from_utf8_lossy(p.contents()).into_owned())
            })
            .collect()
    }

    #[test]
    fn failure_notice_parses_back_as_a_delivery_report() {
        let recipients = failed();
        let raw = build(&notice(&recipients, ORIGINAL));
        let msg = MessageParser::default().parse(&raw).expect("parses");
        assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));
        assert_eq!(
            msg.from().and_then(|a| a.first()).and_then(|a| a.address()),
            Some("MAILER-DAEMON@mx.example.org")
        );
        assert_eq!(
            msg.to().and_then(|a| a.first()).and_then(|a| a.address()),
            Some("ann@example.org")
        );
        assert_eq!(
            msg.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
        assert_eq!(
            msg.message_id(),
            Some(
                format!(
                    "{QUEUE_ID}.dsn.{}@mx.example.org",
                    ARRIVAL + 20 * 60_000 + 1_234
                )
                .as_str()
            )
        );
        let ct = msg.content_type().expect("content type");
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));

        let parts = parts(&raw);
        let types: Vec<&str> = parts.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            types,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );

        let text = &parts[0].1;
        for needle in [
            "bob@example.net",
            "mx1.example.net answered: 550 5.1.1",
            "User unknown in virtual mailbox table",
            "carol@example.com",
            "Reason: 5.1.2 domain example.com does not exist",
            "will not be delivered",
            "mail gateway at mx.example.org",
            QUEUE_ID,
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert!(!text.contains("DSN"), "{text}");

        // Unfold as a reader of the fields would, then look for whole lines.
        let status = parts[1].1.replace("\r\n ", " ");
        let lines: Vec<&str> = status.lines().collect();
        for line in [
            "Reporting-MTA: dns; mx.example.org",
            &format!("X-Passerelle-Queue-ID: {QUEUE_ID}"),
            "Arrival-Date: Mon, 1 Jun 2026 09:00:00 +0000",
            "Final-Recipient: rfc822; bob@example.net",
            "Action: failed",
            "Status: 5.1.1",
            "Remote-MTA: dns; mx1.example.net",
            "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table",
            "Last-Attempt-Date: Mon, 1 Jun 2026 09:20:00 +0000",
            "Final-Recipient: rfc822; carol@example.com",
            "Status: 5.1.2",
            "Diagnostic-Code: X-Passerelle; 5.1.2 domain example.com does not exist",
        ] {
            assert!(lines.contains(&line), "{line:?} missing from:\n{status}");
        }
        assert!(!status.contains("Will-Retry-Until"), "{status}");
        assert_eq!(status.matches("Remote-MTA").count(), 1, "{status}");
        assert_eq!(
            status.split("\r\n\r\n").count(),
            3,
            "one block per message and recipient: {status}"
        );

        let headers = &parts[2].1;
        assert!(
            headers.contains("Subject: Quarterly figures\r\n"),
            "{headers}"
        );
        assert!(
            headers.ends_with("Message-ID: <q2-figures@example.org>\r\n"),
            "{headers}"
        );
        assert!(!String::from_utf8_lossy(&raw).contains(SECRET));
    }

    #[test]
    fn delay_warning_says_until_when() {
        let recipients = delayed();
        let raw = build(&notice(&recipients, ORIGINAL));
        let msg = MessageParser::default().parse(&raw).expect("parses");
        assert_eq!(msg.subject(), Some("Delayed Mail (still being retried)"));
        let parts = parts(&raw);
        let text = &parts[0].1.replace("\r\n", " ");
        assert!(
            text.contains("keeps trying until Saturday 6 June 2026, 09:00 UTC"),
            "{text}"
        );
        assert!(text.contains("connection refused"), "{text}");
        let status = &parts[1].1;
        assert_eq!(status.matches("Action: delayed").count(), 2, "{status}");
        assert_eq!(
            status
                .matches("Will-Retry-Until: Sat, 6 Jun 2026 09:00:00 +0000")
                .count(),
            2,
            "{status}"
        );
        assert_eq!(status.matches("Last-Attempt-Date:").count(), 1, "{status}");
    }

    #[test]
    fn one_failure_among_delays_makes_it_a_bounce() {
        let mut recipients = delayed();
        recipients.extend(failed().into_iter().take(1));
        let raw = build(&notice(&recipients, ORIGINAL));
        let msg = MessageParser::default().parse(&raw).expect("parses");
        assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));
        let status = &parts(&raw)[1].1;
        assert_eq!(
            status.matches("Will-Retry-Until").count(),
            0,
            "only a warning carries it: {status}"
        );
    }

    fn assert_golden(name: &str, built: &[u8]) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dsn")
            .join(name);
        let failed = path.with_file_name(format!("{name}.failed"));
        if std::fs::read(&path).ok().as_deref() == Some(built) {
            let _ = std::fs::remove_file(&failed);
            return;
        }
        std::fs::write(&failed, built).expect("write .failed");
        panic!(
            "{} is missing or differs from the notice built now, which is in {}: \
             compare them, and if the new one is right, move it over the fixture",
            path.display(),
            failed.display()
        );
    }

    #[test]
    fn golden_notices() {
        let recipients = failed();
        assert_golden("failed.eml", &build(&notice(&recipients, ORIGINAL)));
        let recipients = delayed();
        assert_golden("delayed.eml", &build(&notice(&recipients, ORIGINAL)));
    }

    #[test]
    fn status_codes() {
        for (reply, status) in [
            ("550 5.1.1 no such user", "5.1.1"),
            ("550-5.1.1 no such user", "5.1.1"),
            ("451 try later", "4.0.0"),
            ("554", "5.0.0"),
            ("450 5.7.1 contradicts the basic code", "4.0.0"),
            ("4.4.1 connecting to x: refused", "4.4.1"),
            ("5.1.2 domain does not exist", "5.1.2"),
            ("421 4.4.2 idle too long", "4.4.2"),
            ("550 5.1.1234 detail too long", "5.0.0"),
            ("connection reset", "5.0.0"),
            ("", "5.0.0"),
        ] {
            assert_eq!(status_of(reply), status, "{reply:?}");
        }
    }

    #[test]
    fn only_header_lines_go_back() {
        // No blank line before the body: stop at the first line that is not a header field.
        assert_eq!(
            header_block(b"Subject: hi\r\n\tthere\r\nX-Ok: 1\nPatient data: none\r\nX: y\r\n"),
            b"Subject: hi\r\n\tthere\r\nX-Ok: 1\r\n"
        );
        assert_eq!(header_block(b"\r\nSubject: body"), b"");
        assert_eq!(header_block(b" starts folded: no"), b"");
        assert_eq!(header_block(b"A: 1\r\nB: 2"), b"A: 1\r\nB: 2\r\n");
        assert_eq!(header_block(b"A: 1\x00\r\x1b\r\n"), b"A: 1\r\n");
        let huge = "X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(2000);
        let block = header_block(huge.as_bytes());
        assert!(block.len() <= 64 * 1024 && block.len() > 60 * 1024 && block.ends_with(b"\r\n"));
    }

    #[test]
    fn boundary_avoids_what_the_original_spells() {
        let would_be = format!("=_report.{QUEUE_ID}.{}", ARRIVAL + 20 * 60_000 + 1_234);
        let original = format!("Subject: x\r\nX-Trap: --{would_be}--\r\n\r\n");
        let recipients = failed();
        let raw = build(&notice(&recipients, original.as_bytes()));
        let msg = MessageParser::default().parse(&raw).expect("parses");
        let ct = msg.content_type().expect("content type");
        assert_eq!(
            ct.attribute("boundary"),
            Some(format!("{would_be}.1").as_str())
        );
        let parts = parts(&raw);
        assert_eq!(parts.len(), 3);
        assert!(parts[2].1.contains("X-Trap"), "{}", parts[2].1);
    }

    #[test]
    fn hostile_input_stays_inside_its_part() {
        // An injected header in the sender and the reply, 8-bit and an over-long line in the
        // original: still three parts, the status part 7bit, the headers part encoded.
        let long = "y".repeat(200);
        let original = format!("Subject: Grüße\r\nX-Long: {long}\r\n\r\n{SECRET}\r\n");
        let mut recipients = failed();
        recipients[0].diagnostic = "550 5.1.1 nope\r\nBcc: victim@example.net Ünïcode".into();
        recipients[0].status = "bogus".into();
        let mut n = notice(&recipients, original.as_bytes());
        n.sender = "ann@example.org>\r\nBcc: <victim@example.net";
        let raw = build(&n);
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains("\r\nBcc:"), "{text}");
        assert!(
            text.contains("Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: quoted-printable\r\n"),
            "{text}"
        );
        assert!(!text.contains(SECRET), "{text}");
        let parts = parts(&raw);
        assert_eq!(parts.len(), 3, "{text}");
        assert!(
            parts[2].1.contains("Subject: Grüße") && parts[2].1.contains(&long),
            "{}",
            parts[2].1
        );
        let status = &parts[1].1;
        assert!(
            status.is_ascii() && status.lines().all(|l| l.len() <= 78),
            "{status}"
        );
        assert!(
            status.contains("Status: 5.1.1\r\n"),
            "falls back to the reply's code: {status}"
        );
        assert!(status.contains("\\x{DC}n\\x{EF}code"), "{status}");
    }
}
