//! Entry points for the fuzz targets in `fuzz/` and for `tests/fuzz_regressions.rs`: one function
//! per target, each feeding arbitrary bytes to the code that reads hostile input and asserting
//! the invariants that code promises. A failed assertion or a panic is a finding. Not an API:
//! hidden from the docs, and nothing in the daemon calls it.
//!
//! - [`smtp_command`]: command lines framed by [`Connection::read_line`] in fuzzer-chosen reads,
//!   then the checks of `session.rs`, smtp-proto's parser, and the MAIL and RCPT argument checks
//!   (relay rules, signed return paths).
//! - [`data_codec`]: [`DataDecoder`] fed in fuzzer-chosen chunks, against one-shot feeding.
//! - [`mime_walk`]: the limits stage's walk, the virus stage's walk and cleaning, the spam
//!   stage's reading of the message.
//! - [`archive`]: the limits stage's zip inspector and the virus stage's encrypted-zip check.
//! - [`config`]: the policy file parser.
//!
//! The first bytes of an smtp_command or data_codec input are settings (see each function), so
//! every input is a valid one.

use crate::config::{BareLf, Relay, Route};
use crate::envelope::{self, Direction};
use crate::policy::limits::{self, Inspection, LimitsConfig};
use crate::policy::spam::{Scorer, SpamConfig};
use crate::policy::virus;
use crate::relay::{Refusal, RelayRules};
use crate::smtp::connection::{Connection, Line, MAX_COMMAND_LINE, ReadError};
use crate::smtp::data::{DataDecoder, MAX_TEXT_LINE, Problem};
use crate::smtp::reply::{self, Reply};
use smtp_proto::{MailFrom, RcptTo, Request};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// ---------------------------------------------------------------------------------------------
// Chunking.

/// Read sizes chosen by one seed byte: 0 reads everything at once; any other seed gives a
/// pseudo-random sequence of sizes from 1 to 700 octets, so that reads split command lines,
/// CRLFs and the end-of-data dot everywhere.
struct Splits(Option<u32>);

impl Splits {
    fn new(seed: u8) -> Splits {
        Splits((seed != 0).then_some(u32::from(seed)))
    }

    fn next(&mut self) -> usize {
        let Some(state) = self.0.as_mut() else {
            return usize::MAX;
        };
        *state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        1 + (*state >> 16) as usize % 700
    }
}

/// A client stream that delivers its bytes in the reads `Splits` chooses, and swallows replies.
struct Reads<'a> {
    data: &'a [u8],
    splits: Splits,
}

impl AsyncRead for Reads<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.splits.next().min(self.data.len()).min(buf.remaining());
        let (now, rest) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Reads<'_> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    /// `read_line` runs under a timeout, so it needs a runtime with a timer.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
}

/// Every line `read_line` gives for `input` read in the given splits, until the client closes.
fn frame(input: &[u8], seed: u8) -> Vec<Line> {
    let stream = Reads {
        data: input,
        splits: Splits::new(seed),
    };
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let mut conn = Connection::new(stream, Duration::from_secs(60));
            let mut lines = Vec::new();
            loop {
                match conn.read_line(Duration::from_secs(60)).await {
                    Ok(line) => lines.push(line),
                    Err(ReadError::Closed) => return lines,
                    Err(e) => panic!("reading from memory failed: {e:?}"),
                }
            }
        })
    })
}

/// A reply as it goes on the wire: lines of at most 512 octets (RFC 5321 §4.5.3.1.5), each
/// `NNN-` or `NNN ` and ending in its only CRLF.
fn assert_wire(r: &Reply) {
    let wire = r.to_wire();
    assert!(
        (200..600).contains(&r.code),
        "reply code {} out of range",
        r.code
    );
    assert!(wire.ends_with(b"\r\n"), "reply {r:?} does not end in CRLF");
    for line in wire.split_inclusive(|&b| b == b'\n') {
        let text = &line[..line.len() - 2];
        assert!(line.ends_with(b"\r\n"), "reply line without CRLF: {r:?}");
        assert!(
            !text.contains(&b'\r') && !text.contains(&b'\n'),
            "bare CR or LF in reply {r:?}"
        );
        assert!(line.len() <= 512, "reply line over 512 octets: {r:?}");
        assert!(
            text.len() >= 4
                && text[..3].iter().all(u8::is_ascii_digit)
                && matches!(text[3], b' ' | b'-'),
            "malformed reply line in {r:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// smtp_command

/// The signed-return-path key and the day the target uses (fixed, so runs repeat).
const BATV_KEY: &[u8] = b"fuzz key";
const BATV_DAY: u64 = 20_000;
const BATV_DAYS: u64 = 7;
/// The message size limit MAIL's SIZE is checked against.
const MAX_MESSAGE: usize = 50 * 1024 * 1024;
const OUR_DOMAIN: &str = "example.test";

/// Input: `[flags, read seed, client bytes…]`. Flag bit 0: the client may relay (authorised
/// network); bit 1: it authenticated as `user@example.test` with `sender_must_match` on.
///
/// Checks: reads split anywhere give the same lines as one read; each command line is at most
/// 512 octets and ends in its only CRLF; each line then goes through the session's checks
/// (control bytes, UTF-8), smtp-proto's parser and our reply for its error, and MAIL and RCPT
/// through the argument checks of `mail.rs` and `rcpt.rs` (relay rules, signed return paths);
/// every reply is well formed; an unauthorised client never gets a recipient outside our
/// domains accepted, nor one with `%`, `!`, `@` or quotes in its local part; a signed return
/// path verifies back to the address it signed.
pub fn smtp_command(data: &[u8]) {
    let [flags, seed, input @ ..] = data else {
        return;
    };
    let authorised = flags & 1 != 0;
    let user = (flags & 2 != 0).then_some("user@example.test");

    let lines = frame(input, *seed);
    assert_eq!(
        lines,
        frame(input, 0),
        "the lines depend on how the input was read"
    );
    let mut domains = BTreeMap::new();
    domains.insert(OUR_DOMAIN.to_owned(), Route::default());
    let rules = RelayRules::new(&Relay {
        domains,
        ..Default::default()
    });
    for line in &lines {
        let Line::Command(bytes) = line else {
            continue;
        };
        assert!(bytes.len() <= MAX_COMMAND_LINE, "command line over 512");
        assert!(bytes.ends_with(b"\r\n"), "command line without CRLF");
        assert_eq!(
            bytes.iter().filter(|&&b| b == b'\n').count(),
            1,
            "a command line holds one LF"
        );
        if let Some(r) = command(bytes, &rules, authorised, user) {
            assert_wire(&r);
        }
    }
}

/// What `Session::command` does with a line before any state or I/O is involved; `None` for the
/// commands whose reply depends only on the session state (or that the target leaves out: AUTH).
fn command(line: &[u8], rules: &RelayRules, authorised: bool, user: Option<&str>) -> Option<Reply> {
    let text = &line[..line.len().saturating_sub(2)];
    if text
        .iter()
        .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
    {
        return Some(reply::control_characters());
    }
    if std::str::from_utf8(text).is_err() {
        return Some(reply::invalid_utf8());
    }
    let request = match Request::parse(&mut line.iter()) {
        Ok(r) => r,
        Err(e) => return Some(crate::smtp::session::parse_error(line, e)),
    };
    match request {
        Request::Mail { from } => Some(mail(&from, user)),
        Request::Rcpt { to } => Some(rcpt(&to, line, rules, authorised)),
        _ => None,
    }
}

/// The argument checks of `Session::mail`: the same function (`mail.rs`).
fn mail(from: &MailFrom<Cow<'_, str>>, user: Option<&str>) -> Reply {
    crate::smtp::mail::check_sender(from, MAX_MESSAGE, user).unwrap_or_else(reply::sender_ok)
}

/// The argument handling of `Session::rcpt` (`rcpt.rs`): the raw argument, the signed return
/// path, the relay rules, and the address kept.
fn rcpt(to: &RcptTo<Cow<'_, str>>, line: &[u8], rules: &RelayRules, authorised: bool) -> Reply {
    let raw = String::from_utf8_lossy(line);
    let raw = raw.split_once(':').map_or("", |(_, arg)| arg);
    let signed = crate::batv::verify(BATV_KEY, &to.address, BATV_DAY, BATV_DAYS);
    let address = signed
        .as_ref()
        .map_or(to.address.to_string(), |(a, _)| a.clone());
    batv_round_trip(&address);
    match rules.check_recipient(raw, &address, authorised) {
        Ok(direction) => {
            let (local, domain) = envelope::split(&address).expect("checked");
            assert!(
                envelope::is_dot_atom(local)
                    && envelope::is_domain(&domain)
                    && !local.contains(['%', '!', '@', '"']),
                "accepted a relay trick: {address:?} from {raw:?}"
            );
            if !authorised {
                assert_eq!(direction, Direction::Inbound);
                assert_eq!(domain, OUR_DOMAIN, "open relay: {address:?} from {raw:?}");
            }
            let trimmed = raw.trim_start();
            assert!(
                !trimmed.starts_with('@') && !trimmed.starts_with("<@"),
                "accepted a source route: {raw:?}"
            );
            reply::recipient_ok()
        }
        Err(Refusal::NotOurs) => reply::relay_denied(),
        Err(Refusal::Trick) => reply::relay_trick(),
        Err(Refusal::Syntax) => reply::bad_recipient(),
    }
}

/// A return path we sign verifies back to itself.
fn batv_round_trip(address: &str) {
    let Some((local, _)) = address.rsplit_once('@') else {
        return;
    };
    if local.starts_with("prvs=") {
        return;
    }
    let signed = crate::batv::sign(BATV_KEY, address, BATV_DAY);
    assert_eq!(
        crate::batv::verify(BATV_KEY, &signed, BATV_DAY, BATV_DAYS),
        Some((address.to_owned(), true)),
        "signed {address:?} as {signed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// data_codec

/// Input: `[flags, read seed, size byte, client bytes…]`. Flag bit 0: bare line ends are
/// normalised (otherwise refused); bit 1: the size limit is `size byte × 4` octets (otherwise
/// 1 MiB).
///
/// Checks: `feed` never reports an end past its input; the end and the result are the same
/// whatever the chunking (against one-shot feeding); the data ends at `<CRLF>.<CRLF>` (or `.`
/// CRLF at the very start); an accepted message is within the size limit, has CRLF line ends
/// only, lines of at most 998 octets, ends in CRLF, and decodes back to itself once
/// dot-stuffed again.
pub fn data_codec(data: &[u8]) {
    let [flags, seed, size, input @ ..] = data else {
        return;
    };
    let policy = if flags & 1 != 0 {
        BareLf::Normalise
    } else {
        BareLf::Reject
    };
    let max = if flags & 2 != 0 {
        usize::from(*size) * 4
    } else {
        1 << 20
    };

    let (end, result) = decode(input, Splits::new(*seed), max, policy);
    let (whole_end, whole) = decode(input, Splits::new(0), max, policy);
    assert_eq!(end, whole_end, "the end depends on the chunking");
    assert_eq!(result, whole, "the result depends on the chunking");

    let Some(end) = end else {
        return;
    };
    assert!(end <= input.len());
    let used = &input[..end];
    assert!(
        used == b".\r\n" || used.ends_with(b"\r\n.\r\n"),
        "ended without <CRLF>.<CRLF>"
    );
    let Ok(body) = result else {
        return;
    };
    assert!(
        body.len() <= max,
        "accepted {} octets over {max}",
        body.len()
    );
    assert!(body.is_empty() || body.ends_with(b"\r\n"));
    for (i, &b) in body.iter().enumerate() {
        match b {
            b'\n' => assert!(i > 0 && body[i - 1] == b'\r', "bare LF at {i} accepted"),
            b'\r' => assert!(body.get(i + 1) == Some(&b'\n'), "bare CR at {i} accepted"),
            _ => {}
        }
    }
    let lines: Vec<&[u8]> = body
        .split_inclusive(|&b| b == b'\n')
        .map(|l| &l[..l.len() - 2])
        .collect();
    for l in &lines {
        assert!(l.len() <= MAX_TEXT_LINE, "a line of {} octets", l.len());
    }

    // Stuffed again, the message reads back the same (unless a stuffed line gets too long).
    let mut stuffed = Vec::with_capacity(body.len() + 16);
    for l in &lines {
        if l.starts_with(b".") {
            if l.len() + 1 > MAX_TEXT_LINE {
                return;
            }
            stuffed.push(b'.');
        }
        stuffed.extend_from_slice(l);
        stuffed.extend_from_slice(b"\r\n");
    }
    stuffed.extend_from_slice(b".\r\n");
    let (again_end, again) = decode(&stuffed, Splits::new(0), max, policy);
    assert_eq!(
        again_end,
        Some(stuffed.len()),
        "re-stuffed data ends elsewhere"
    );
    assert_eq!(again, Ok(body), "re-stuffed data reads differently");
}

/// Feeds `input` in chunks until the end of data; the offset of the end in `input`.
fn decode(
    input: &[u8],
    mut splits: Splits,
    max: usize,
    policy: BareLf,
) -> (Option<usize>, Result<Vec<u8>, Problem>) {
    let mut d = DataDecoder::new(max, policy);
    let mut at = 0;
    let mut end = None;
    while at < input.len() {
        let n = splits.next().min(input.len() - at);
        let chunk = &input[at..at + n];
        if let Some(used) = d.feed(chunk) {
            assert!(
                used >= 1 && used <= chunk.len(),
                "feed used {used} of {}",
                chunk.len()
            );
            end = Some(at + used);
            break;
        }
        at += n;
    }
    (end, d.finish())
}

// ---------------------------------------------------------------------------------------------
// mime_walk

/// The limits configurations the walk runs under: the defaults, and tight ones that the fuzzer
/// reaches with small inputs.
fn limits_configs() -> [LimitsConfig; 2] {
    [
        LimitsConfig::default(),
        LimitsConfig {
            max_attachments: 3,
            max_archive_files: 4,
            max_archive_depth: 2,
            max_expansion_ratio: 10,
            max_expanded_size: 1 << 16,
            max_mime_depth: 4,
            max_parts: 16,
        },
    ]
}

/// Input: a raw message.
///
/// Checks: the limits stage's [`limits::inspect`] stays within its configuration when it finds
/// no violation, keeps at most [`limits::MAX_NAMES`] names, and words its refusal as one
/// printable reply line; its walk in place finds the same or gives up; the virus stage's walk
/// (mail-parser's full parse, as the stage reads it) gives parts that lie inside the message,
/// and cutting all of them out never panics; the spam score is 0 to 100 and its header value
/// one line.
pub fn mime_walk(raw: &[u8]) {
    for cfg in limits_configs() {
        let found = limits::inspect(raw, &cfg);
        check_inspection(&found, &cfg);
        if let Some(in_place) = limits::inspect_in_place(raw, &cfg) {
            assert_eq!(format!("{in_place:?}"), format!("{found:?}"), "in place");
        }
    }

    if let Some(message) = virus::parser().parse(raw) {
        let walk = virus::walk(&message, 1000);
        assert!(walk.leaves.len() <= 1000);
        let mut units: Vec<(virus::Unit, Vec<String>)> = Vec::new();
        for unit in walk.leaves.iter().filter_map(|l| l.unit.as_ref()) {
            if !units.iter().any(|(u, _)| u.span == unit.span) {
                units.push((unit.clone(), vec!["Fuzz.Test".to_owned()]));
            }
        }
        if let Some(cleaned) = virus::remove_parts(raw, &units) {
            let cut: usize = units.iter().map(|(u, _)| u.span.len()).sum();
            assert!(cleaned.len() + cut >= raw.len());
        }
    }

    static SCORER: OnceLock<Scorer> = OnceLock::new();
    let scorer = SCORER.get_or_init(|| Scorer::new(&SpamConfig::default()).expect("built-in"));
    let score = scorer.score(raw, &[]);
    assert!(score.total <= 100);
    let header = score.header_value();
    assert!(!header.contains(['\r', '\n']), "header value {header:?}");
}

fn check_inspection(found: &Inspection, cfg: &LimitsConfig) {
    assert!(found.encrypted.len() <= limits::MAX_NAMES);
    assert!(found.unreadable.len() <= limits::MAX_NAMES);
    for a in &found.archives {
        assert!(
            a.depth >= 1 && a.depth <= cfg.max_archive_depth,
            "archive depth {} with max {}",
            a.depth,
            cfg.max_archive_depth
        );
    }
    match &found.violation {
        Some(v) => {
            let (code, _) = v.code();
            let reply = Reply::new(code, "5.0.0", v.text());
            assert!(matches!(code, 552 | 554));
            assert_wire(&reply);
            assert!(v.text().is_ascii());
        }
        None => {
            assert!(found.attachments <= cfg.max_attachments);
            let declared: u64 = found.archives.iter().map(|a| a.declared_size).sum();
            assert!(declared <= cfg.max_expanded_size);
            for a in &found.archives {
                assert!(a.files <= cfg.max_archive_files, "{} files", a.files);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// archive

/// Input: the bytes of a zip file.
///
/// The bytes go into a message as a base64 attachment named `a.zip`, so the limits stage
/// always opens them as an archive; the virus stage's encrypted-zip check reads them directly.
/// Checks: one archive is recorded (unless the part reads as PGP armour), within the
/// configured depth, and the configuration's file, size and ratio limits hold unless a
/// violation says otherwise.
pub fn archive(zip: &[u8]) {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(zip);
    let mut raw = b"From: a@example.test\r\nSubject: zip\r\nMIME-Version: 1.0\r\n\
        Content-Type: application/zip; name=\"a.zip\"\r\n\
        Content-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    for line in encoded.as_bytes().chunks(76) {
        raw.extend_from_slice(line);
        raw.extend_from_slice(b"\r\n");
    }
    for cfg in limits_configs() {
        let found = limits::inspect(&raw, &cfg);
        check_inspection(&found, &cfg);
        let armoured = zip
            .trim_ascii_start()
            .starts_with(b"-----BEGIN PGP MESSAGE-----");
        assert_eq!(
            found.archives.len(),
            usize::from(!armoured),
            "the zip was not opened"
        );
        assert!(found.archives.iter().all(|a| a.filename == "a.zip"));
    }
    let _ = virus::zip_has_encrypted(zip, 3);
}

// ---------------------------------------------------------------------------------------------
// config

/// Input: a policy file.
///
/// Checks: [`crate::config::parse`] returns a configuration or errors, never panics; a refusal
/// has at least one error and none is empty; an accepted file's hash is its bytes' and its
/// relay rules can be built.
pub fn config(bytes: &[u8]) {
    match crate::config::parse(bytes) {
        Ok(c) => {
            assert_eq!(c.hash, crate::config::file_hash(bytes));
            let _ = RelayRules::new(&c.relay);
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without an error");
            for e in &errors {
                assert!(!e.message.is_empty(), "an empty error for {}", e.key);
            }
        }
    }
}
