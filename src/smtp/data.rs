//! DATA: reading the message safely, then storing it before we say `250`.
//!
//! The decoder is ours rather than smtp-proto's `DataReceiver` because it must, in the same pass,
//! (1) end only on `<CRLF>.<CRLF>` even at the very start of DATA, where `DataReceiver` misses it,
//! (2) refuse or normalise every bare CR and bare LF (SMTP smuggling, CVE-2023-51764/5/6),
//! (3) bound line length and total size without holding more than the limit in memory.
//!
//! Only a CRLF starts a new SMTP line: a dot after a bare LF is content, never an end or a stuffed
//! dot, so no reading of a bare line end can make us see a message end the sender did not mean.

use crate::config::BareLf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    LineStart,
    Mid,
    Cr,
    Dot,
    DotCr,
}

/// Why a message that was read to its end is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    TooBig,
    BareLineEnd,
    LineTooLong,
}

/// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
pub const MAX_TEXT_LINE: usize = 998;

pub struct DataDecoder {
    state: State,
    line_len: usize,
    max: usize,
    policy: BareLf,
    body: Vec<u8>,
    too_big: bool,
    bare: bool,
    long_line: bool,
}

impl DataDecoder {
    pub fn new(max: usize, policy: BareLf) -> Self {
        DataDecoder {
            state: State::LineStart,
            line_len: 0,
            max,
            policy,
            body: Vec::with_capacity(16 * 1024),
            too_big: false,
            bare: false,
            long_line: false,
        }
    }

    /// Consumes input; when the end of data is found, returns how many bytes of `input` it used.
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            // Inside a line, a run of bytes up to the next CR or LF changes nothing but the line
            // length and the body: taken at once rather than a byte at a time through `step`.
            if self.state == State::Mid || (self.state == State::LineStart && input[i] != b'.') {
                let run = memchr::memchr2(b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                if run > 0 {
                    self.line_len += run;
                    if self.line_len > MAX_TEXT_LINE {
                        self.long_line = true;
                    }
                    self.emit(&input[i..i + run]);
                    self.state = State::Mid;
                    i += run;
                    continue;
                }
            }
            if self.step(input[i]) {
                return Some(i + 1);
            }
            i += 1;
        }
        None
    }

    /// The message, unstuffed, or why it is refused.
    pub fn finish(self) -> Result<Vec<u8>, Problem> {
        if self.too_big {
            Err(Problem::TooBig)
        } else if self.bare && self.policy == BareLf::Reject {
            Err(Problem::BareLineEnd)
        } else if self.long_line {
            Err(Problem::LineTooLong)
        } else {
            Ok(self.body)
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        if self.too_big || (self.bare && self.policy == BareLf::Reject) {
            return; // refused anyway: stop keeping bytes
        }
        if self.body.len() + bytes.len() > self.max {
            self.too_big = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(bytes);
    }

    fn count(&mut self) {
        self.line_len += 1;
        if self.line_len > MAX_TEXT_LINE {
            self.long_line = true;
        }
    }

    /// A CR or LF that is not part of a CRLF.
    fn bare_line_end(&mut self) {
        self.bare = true;
        self.line_len = 0;
        if self.policy == BareLf::Normalise {
            self.emit(b"\r\n");
        }
    }

    /// A byte inside a line.
    fn mid(&mut self, b: u8) {
        match b {
            b'\r' => self.state = State::Cr,
            b'\n' => {
                self.bare_line_end();
                self.state = State::Mid;
            }
            _ => {
                self.count();
                self.emit(&[b]);
                self.state = State::Mid;
            }
        }
    }

    /// Returns true at the end of data.
    fn step(&mut self, b: u8) -> bool {
        match (self.state, b) {
            (State::LineStart, b'.') => {
                self.count();
                self.state = State::Dot;
            }
            (State::LineStart | State::Mid, _) => self.mid(b),
            (State::Cr, b'\n') => {
                self.emit(b"\r\n");
                self.line_len = 0;
                self.state = State::LineStart;
            }
            (State::Cr, _) => {
                self.bare_line_end();
                self.mid(b);
            }
            // The leading dot of a stuffed line is dropped (RFC 5321 §4.5.2).
            (State::Dot, b'\r') => self.state = State::DotCr,
            (State::Dot, _) => self.mid(b),
            (State::DotCr, b'\n') => return true,
            (State::DotCr, _) => {
                self.bare_line_end();
                self.mid(b);
            }
        }
        false
    }
}

// ---------------------------------------------------------------------------------------------
// The DATA command in the session.

use super::connection::{Connection, ReadError};
use super::reply;
use super::session::Session;
use crate::envelope::{Direction, Envelope};
use crate::policy::Action;
use crate::queue::RecipientStatus;
use crate::queue::store::NewMessage;
use crate::store::now_ms;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};

impl Session {
    /// Reads the message to its end, then refuses it or stores it; replies either way.
    pub(super) async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
    ) -> std::io::Result<()> {
        let Some(tx) = self.tx.as_ref() else {
            conn.reply(&reply::bad_sequence("send MAIL first"));
            return Ok(());
        };
        if tx.rcpts.is_empty() {
            conn.reply(&reply::no_valid_recipients());
            return Ok(());
        }
        let s = &self.ctx.config.session;
        conn.send(&reply::start_data()).await?;
        let mut decoder = DataDecoder::new(s.max_message_size, s.bare_lf);
        loop {
            let chunk = match conn.read_chunk(s.data_timeout).await {
                Ok(c) => c,
                Err(ReadError::Timeout) => {
                    conn.send(&reply::timeout()).await?;
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                Err(ReadError::Closed) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Err(ReadError::Io(e)) => return Err(e),
            };
            if let Some(used) = decoder.feed(&chunk) {
                conn.unread(&chunk[used..]);
                break;
            }
        }
        let tx = self.tx.take().expect("checked above");
        let reply = match decoder.finish() {
            Err(Problem::TooBig) => reply::too_big(s.max_message_size),
            Err(Problem::BareLineEnd) => reply::bare_lf_data(),
            Err(Problem::LineTooLong) => reply::text_line_too_long(),
            Ok(body) => self.store(tx, body).await,
        };
        conn.reply(&reply);
        Ok(())
    }

    /// Runs the data-phase policy, then writes the message (or its deletion) durably; only then
    /// is the reply `250`.
    async fn store(&mut self, tx: super::session::Transaction, body: Vec<u8>) -> reply::Reply {
        let ctx = self.ctx.clone();
        let id = crate::message::new_id();
        let direction = self.direction();
        let signed_bounce = tx.signed_bounce();
        let env = Envelope {
            peer: self.peer,
            listener: self.listener.clone(),
            helo: self.helo.clone().unwrap_or_default(),
            tls: self.tls.clone(),
            mail_from: tx.mail_from,
            rcpts: tx.rcpts,
            direction,
        };
        // The hops it took to get here, ours not counted yet.
        let hops = crate::message::count_fields(&body, "Received");
        let header = crate::message::received_header(&env, &ctx.config.server.hostname, &id);
        let mut raw = Vec::with_capacity(header.len() + body.len());
        raw.extend_from_slice(header.as_bytes());
        raw.extend_from_slice(&body);
        drop(body);

        let mut detail = json!({
            "client": self.peer.ip().to_string(),
            "helo": env.helo,
            "listener": env.listener,
            "tls_version": env.tls.as_ref().map(|t| t.version.clone()),
            "tls_cipher": env.tls.as_ref().map(|t| t.cipher.clone()),
            "client_certificate": env.tls.as_ref().is_some_and(|t| t.client_certificate),
            "user": self.user,
            "direction": direction.as_str(),
            "from": env.mail_from,
            "rcpts": env.rcpts,
            "size": raw.len(),
        });
        // A mail loop (RFC 5321 §6.3), refused before the policy stages: each turn would
        // otherwise be stored, scanned and sent again. The server that sent it bounces it.
        let max_hops = ctx.config.session.max_hops;
        if hops > max_hops {
            let r = reply::too_many_hops(hops, max_hops);
            detail["decided_by"] = json!("max_hops");
            detail["reason"] = json!(format!(
                "a mail loop: {hops} Received fields, more than session.max_hops ({max_hops})"
            ));
            return self.refuse(&id, detail, &[], r).await;
        }
        let mut facts = self.facts();
        facts.mail_from = env.mail_from.clone();
        facts.rcpts = env.rcpts.clone();
        facts.signed_bounce = signed_bounce;
        let mut outcome = ctx.pipeline(direction).data(&facts, &raw).await;
        self.apply_override(&mut outcome, &env.mail_from);
        let verdicts: Vec<serde_json::Value> = outcome.verdicts.iter().map(verdict_event).collect();
        self.feed_reputation(&outcome).await;
        record_metrics(direction, &outcome);

        let held = outcome.action == Action::Quarantine && direction == Direction::Outbound;
        let (status, message, notify) = match &outcome.action {
            Action::Reject(r) | Action::Tempfail(r) => {
                detail["decided_by"] = json!(outcome.decided_by);
                detail["reason"] = json!(outcome.reason);
                return self.refuse(&id, detail, &verdicts, r.clone()).await;
            }
            Action::Continue if direction == Direction::Outbound => {
                // Signed last, over the message exactly as it will be delivered.
                (
                    RecipientStatus::Queued,
                    ctx.dkim.sign(outcome.apply(&raw)),
                    false,
                )
            }
            Action::Continue => (RecipientStatus::Queued, outcome.apply(&raw), false),
            Action::Quarantine if direction == Direction::Outbound => {
                // Signed now, so that a release sends it exactly as it would have gone.
                (
                    RecipientStatus::Quarantined,
                    ctx.dkim.sign(outcome.apply(&raw)),
                    false,
                )
            }
            Action::Quarantine => (RecipientStatus::Quarantined, outcome.apply(&raw), false),
            // Deleted: nothing of the message is kept, only its events.
            Action::Delete { notify } => (RecipientStatus::Deleted, Vec::new(), *notify),
        };
        if status != RecipientStatus::Queued {
            detail["disposition"] = json!(status.as_str());
            detail["decided_by"] = json!(outcome.decided_by);
            detail["reason"] = json!(outcome.reason);
        }
        let new = NewMessage {
            id: id.clone(),
            direction: direction.as_str(),
            sender: env.mail_from.clone(),
            body: message,
            rcpts: env.rcpts.clone(),
            // Delegation copies, fixed as it is committed: a later change of delegations leaves
            // queued mail alone.
            copies: Vec::new(),
            delegations: direction == Direction::Inbound,
            detail,
            status,
            verdicts,
        };
        let notice = if notify {
            deletion_notice(&ctx, &id, &env, &raw, &outcome.reason)
        } else if held {
            let host = &ctx.config.server.hostname;
            let subject = subject_of(&raw);
            let why = &outcome.reason;
            crate::queue::notice::held(
                host,
                &id,
                &env.mail_from,
                &env.rcpts,
                why,
                &subject,
                now_ms(),
            )
        } else {
            None
        };
        match ctx.store.accept(&ctx.recorder, new, notice, now_ms()).await {
            Ok(()) => {
                ctx.queue_notify.notify_one();
                self.accepted.push(id.clone());
                reply::queued(&id)
            }
            Err(e) => {
                tracing::error!(error = %e, "storing an accepted message failed; client told 451");
                reply::storage_failed()
            }
        }
    }

    /// Refuses the message with `reply`: only its events are kept.
    async fn refuse(
        &self,
        id: &str,
        mut detail: serde_json::Value,
        verdicts: &[serde_json::Value],
        reply: reply::Reply,
    ) -> reply::Reply {
        detail["reply"] = json!(reply.to_string());
        let refused =
            (self.ctx.store).record_refusal(&self.ctx.recorder, id, detail, verdicts, now_ms());
        if let Err(e) = refused.await {
            tracing::error!(error = %e, "recording a refused message");
        }
        reply
    }

    /// Outbound override lists: a listed sender or client is not held for its spam score. The
    /// verdict stays in the events, with an `override` verdict after it.
    fn apply_override(&self, outcome: &mut crate::policy::Outcome, sender: &str) {
        let o = &self.ctx.config.policy.outbound;
        if self.direction() != Direction::Outbound
            || outcome.action != Action::Quarantine
            || outcome.decided_by != "spam"
        {
            return;
        }
        let ip = self.peer.ip().to_canonical();
        let by_sender = o
            .override_senders
            .iter()
            .any(|s| s.eq_ignore_ascii_case(sender));
        let by_client = o
            .override_networks
            .iter()
            .filter_map(|n| crate::relay::parse_network(n))
            .any(|n| n.contains(&ip));
        if by_sender || by_client {
            let why = if by_sender {
                "sender on the override list"
            } else {
                "client on the override list"
            };
            let mut v = crate::policy::Verdict::new("override");
            v.reason = format!("{why}: {}", outcome.reason);
            outcome.verdicts.push(v);
            outcome.action = Action::Continue;
            outcome.decided_by = "";
        }
    }

    /// Bad points for an address that sent a virus or certain spam (see `policy/reputation.rs`).
    async fn feed_reputation(&self, outcome: &crate::policy::Outcome) {
        let cfg = &self.ctx.config.policy.reputation;
        let points: f64 = outcome
            .verdicts
            .iter()
            .map(|v| match (v.stage, &v.action) {
                ("virus", Action::Delete { .. }) => cfg.virus_points,
                ("virus", _) if !v.changes.is_empty() => cfg.virus_points,
                ("spam", Action::Delete { .. } | Action::Quarantine) => cfg.spam_points,
                _ => 0.0,
            })
            .sum();
        if points > 0.0 {
            let ip = self.peer.ip();
            if let Err(e) = self
                .ctx
                .store
                .add_reputation(ip, points, cfg.half_life)
                .await
            {
                tracing::warn!(error = %e, "updating reputation");
            }
        }
    }
}

/// Messages by direction and outcome, verdicts by stage, and the spam score distribution.
fn record_metrics(direction: Direction, outcome: &crate::policy::Outcome) {
    let d = direction.as_str();
    let outcome_name = match &outcome.action {
        Action::Continue => "queued",
        other => other.name(),
    };
    metrics::counter!("passerelle_messages_total", "direction" => d, "outcome" => outcome_name)
        .increment(1);
    for v in &outcome.verdicts {
        metrics::counter!("passerelle_verdicts_total", "stage" => v.stage, "action" => v.action.name())
            .increment(1);
        if let Some(total) = v
            .detail
            .get("total")
            .and_then(|t| t.as_f64())
            .filter(|_| v.stage == "spam")
        {
            metrics::histogram!("passerelle_spam_score", "direction" => d).record(total);
        }
    }
}

/// The Subject, for notices (empty when there is none).
fn subject_of(raw: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse_headers(&crate::message::header_fields(raw, "Subject"))
        .and_then(|m| m.subject().map(str::to_owned))
        .unwrap_or_default()
}

/// One verdict as the event records it.
fn verdict_event(v: &crate::policy::Verdict) -> serde_json::Value {
    json!({
        "stage": v.stage,
        "action": v.action.name(),
        "reason": v.reason,
        "rules": v.rules,
        "detail": v.detail,
    })
}

/// The notice telling an outbound sender their message was deleted, and why.
fn deletion_notice(
    ctx: &crate::daemon::Context,
    id: &str,
    env: &Envelope,
    raw: &[u8],
    reason: &str,
) -> Option<NewMessage> {
    let now = now_ms();
    let why = format!("5.7.1 deleted by the gateway: {reason}");
    let reports: Vec<_> = env
        .rcpts
        .iter()
        .map(|r| crate::queue::notice::report(r, crate::dsn::Action::Failed, &why, None, now))
        .collect();
    let msg = crate::queue::store::Queued {
        sender: env.mail_from.clone(),
        direction: env.direction.as_str().to_owned(),
        received_at: now,
        body: raw.to_vec(),
    };
    crate::queue::notice::build(&ctx.config.server.hostname, id, &msg, &reports, None, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], policy: BareLf) -> (Option<usize>, Result<Vec<u8>, Problem>) {
        let mut d = DataDecoder::new(1 << 20, policy);
        let end = d.feed(input);
        (end, d.finish())
    }

    #[test]
    fn ends_only_on_crlf_dot_crlf() {
        use BareLf::*;
        type Case = (
            &'static [u8],
            BareLf,
            Option<usize>,
            Result<&'static [u8], Problem>,
        );
        let cases: &[Case] = &[
            (b".\r\n", Reject, Some(3), Ok(b"")),
            (b"a\r\n.\r\n", Reject, Some(6), Ok(b"a\r\n")),
            (b"a\r\n.\r\nMAIL", Reject, Some(6), Ok(b"a\r\n")),
            (b"..x\r\n.\r\n", Reject, Some(8), Ok(b".x\r\n")),
            (b"a\r\n..\r\n.\r\n", Reject, Some(10), Ok(b"a\r\n.\r\n")),
            // Smuggling variants never end the message.
            (b"a\n.\nb", Reject, None, Err(Problem::BareLineEnd)),
            (b"a\r\n.\nb", Reject, None, Err(Problem::BareLineEnd)),
            (b"a\n.\r\nb", Reject, None, Err(Problem::BareLineEnd)),
            (b"a\r.\rb", Reject, None, Err(Problem::BareLineEnd)),
            (b"a\r\n.\rb", Reject, None, Err(Problem::BareLineEnd)),
            // ...and once the real end comes, the message is refused (or normalised).
            (
                b"a\n.\nb\r\n.\r\n",
                Reject,
                Some(10),
                Err(Problem::BareLineEnd),
            ),
            (
                b"a\n.\nb\r\n.\r\n",
                Normalise,
                Some(10),
                Ok(b"a\r\n.\r\nb\r\n"),
            ),
            (b"a\rb\r\n.\r\n", Normalise, Some(8), Ok(b"a\r\nb\r\n")),
            (
                b"a\r\n.\rb\r\n.\r\n",
                Normalise,
                Some(11),
                Ok(b"a\r\n\r\nb\r\n"),
            ),
        ];
        for (input, policy, end, want) in cases {
            let (got_end, got) = run(input, *policy);
            assert_eq!(got_end, *end, "{:?}", String::from_utf8_lossy(input));
            if end.is_some() {
                assert_eq!(
                    got,
                    want.map(|b| b.to_vec()),
                    "{:?}",
                    String::from_utf8_lossy(input)
                );
            } else {
                assert!(got.is_err() || *policy == Normalise);
            }
        }
    }

    #[test]
    fn split_anywhere_gives_the_same_result() {
        let input = b"Subject: x\r\n\r\n..a\r\nb\r\n.\r\nQUIT\r\n";
        for cut in 0..input.len() {
            let mut d = DataDecoder::new(1 << 20, BareLf::Reject);
            let first = d.feed(&input[..cut]);
            let end = first.or_else(|| d.feed(&input[cut..]).map(|n| n + cut));
            assert_eq!(end, Some(input.len() - 6), "cut at {cut}");
            assert_eq!(d.finish().unwrap(), b"Subject: x\r\n\r\n.a\r\nb\r\n");
        }
    }

    /// The run-at-once path of `feed` decides as `step` does byte by byte, whatever the input
    /// and wherever it is cut.
    #[test]
    fn runs_decode_as_single_bytes_do() {
        let alphabet = [&b"ab"[..], b".", b"\r", b"\n", b"\r\n", b"xyz"];
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..rng.random_range(0..12) {
                input.extend_from_slice(alphabet[rng.random_range(0..alphabet.len())]);
            }
            let cut = rng.random_range(0..=input.len());
            for policy in [BareLf::Reject, BareLf::Normalise] {
                let mut one = DataDecoder::new(12, policy);
                let end_one = (0..input.len())
                    .find(|&i| one.step(input[i]))
                    .map(|i| i + 1);
                let mut runs = DataDecoder::new(12, policy);
                let end_runs = runs
                    .feed(&input[..cut])
                    .or_else(|| runs.feed(&input[cut..]).map(|n| n + cut));
                assert_eq!(end_runs, end_one, "{input:?} cut at {cut}");
                assert_eq!(runs.line_len, one.line_len, "{input:?}");
                assert_eq!(runs.finish(), one.finish(), "{input:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn limits() {
        let long = [vec![b'x'; 999], b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(run(&long, BareLf::Reject).1, Err(Problem::LineTooLong));
        let ok = [vec![b'x'; 998], b"\r\n.\r\n".to_vec()].concat();
        assert!(run(&ok, BareLf::Reject).1.is_ok());
        let mut d = DataDecoder::new(10, BareLf::Reject);
        assert_eq!(d.feed(b"0123456789\r\n.\r\n"), Some(15));
        assert_eq!(d.finish(), Err(Problem::TooBig));
    }
}
