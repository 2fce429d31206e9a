//! One delivery attempt: the recipients of one message in one domain, over one connection.
//! Route → connect → EHLO → STARTTLS (required: never in clear) → MAIL → RCPT each → DATA, then
//! each recipient's outcome is classified in one place, [`classify`].

use super::RecipientStatus;
use super::notice;
use super::retry::{self, Retry};
use super::route::{self, RouteError, Target};
use super::store::{Claimed, Outcome, Queued};
use crate::config::RouteTls;
use crate::daemon::Context;
use crate::dsn::Action;
use crate::store::now_ms;
use mail_send::SmtpClient;
use serde_json::{Value, json};
use smtp_proto::{EXT_PIPELINING, EXT_START_TLS, Response};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How one recipient's attempt ended, before it is turned into a queue state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Result {
    Delivered(String),
    /// 4xx, or no conclusive answer (connection, TLS, timeout).
    Temporary(String),
    /// 5xx, or a destination that cannot exist.
    Permanent(String),
}

/// Delivers `rcpts` (one message, one domain) and records the outcome, with a notice to the
/// sender for recipients that failed or are delayed past `queue.warn_after`. Returns when the
/// first recipient it deferred is due again, for the scheduler to claim it then.
pub async fn deliver(ctx: Arc<Context>, rcpts: Vec<Claimed>) -> Option<i64> {
    let message_id = rcpts[0].message_id.clone();
    let domain = rcpts[0].domain.clone();
    let msg = match ctx.store.queued(&message_id).await {
        Ok(Some(msg)) => msg,
        Ok(None) => Queued {
            sender: String::new(),
            direction: String::new(),
            received_at: now_ms(),
            body: Vec::new(),
        },
        Err(e) => {
            // Nothing recorded: the lease runs out and the recipients are tried again.
            tracing::warn!(%message_id, error = %e, "reading a queued message");
            return None;
        }
    };
    let started = std::time::Instant::now();
    let (results, attempt) = if msg.body.is_empty() {
        let why = Result::Permanent("5.3.0 message body missing from the store".into());
        (vec![why; rcpts.len()], json!({}))
    } else {
        keep_lease(&ctx, &rcpts, attempt(&ctx, &msg, &domain, &rcpts)).await
    };
    let now = now_ms();
    let outcomes: Vec<Outcome> = rcpts
        .into_iter()
        .zip(results)
        .map(|(r, res)| classify(&ctx, r, res, &attempt, msg.received_at, now))
        .collect();
    metrics::histogram!("passerelle_delivery_seconds").record(started.elapsed().as_secs_f64());
    for o in &outcomes {
        metrics::counter!("passerelle_delivery_attempts_total", "result" => o.status.as_str())
            .increment(1);
        tracing::info!(
            message_id = %o.recipient.message_id,
            status = o.status.as_str(),
            reply = %if crate::config::redacting() { "(in the events)" } else { o.reply.as_str() },
            host = %o.attempt["host"].as_str().unwrap_or(""),
            tls = %o.attempt["tls_version"].as_str().unwrap_or(""),
            "delivery attempt"
        );
    }
    let reports: Vec<_> = outcomes
        .iter()
        .filter(|o| o.status == RecipientStatus::Failed || o.warned)
        .map(|o| {
            let action = if o.status == RecipientStatus::Failed {
                Action::Failed
            } else {
                Action::Delayed
            };
            notice::report(
                &o.recipient.address,
                action,
                &o.reply,
                o.attempt["host"].as_str(),
                now,
            )
        })
        .collect();
    let q = &ctx.config.queue;
    let until = msg.received_at + q.lifetime.as_millis() as i64;
    let host = &ctx.config.server.hostname;
    let notice = notice::build(host, &message_id, &msg, &reports, Some(until), now);
    let noticed = notice.is_some();
    let retry = outcomes
        .iter()
        .filter(|o| o.status == RecipientStatus::Deferred)
        .map(|o| o.next_attempt_at)
        .min();
    if let Err(e) = ctx.store.finish(&ctx.recorder, outcomes, notice, now).await {
        // The lease runs out and the recipients are tried again: a duplicate at worst, never a loss.
        tracing::error!(%message_id, error = %e, "recording delivery outcomes");
        return None;
    }
    if noticed {
        ctx.queue_notify.notify_one();
    }
    retry
}

/// Runs `work` while renewing the lease on `rcpts` every third of a lease, so that no other
/// node takes them over while we are still talking to the remote server.
async fn keep_lease<T>(ctx: &Context, rcpts: &[Claimed], work: impl Future<Output = T>) -> T {
    let lease = ctx.config.queue.lease;
    let ids: Vec<i64> = rcpts.iter().map(|r| r.id).collect();
    let owner = &ctx.config.server.node;
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tokio::time::sleep(lease / 3) => {
                let until = now_ms() + lease.as_millis() as i64;
                if let Err(e) = ctx.store.extend_lease(owner, &ids, until).await {
                    tracing::warn!(error = %e, "renewing a queue lease");
                }
            }
        }
    }
}

/// The one place that turns an attempt's result into a recipient's next state.
fn classify(
    ctx: &Context,
    recipient: Claimed,
    result: Result,
    attempt: &Value,
    queued_at: i64,
    now: i64,
) -> Outcome {
    let q = &ctx.config.queue;
    let mut detail = attempt.clone();
    let (status, next, reply) = match result {
        Result::Delivered(reply) => (RecipientStatus::Delivered, now, reply),
        Result::Permanent(reply) => (RecipientStatus::Failed, now, reply),
        Result::Temporary(reply) => {
            match retry::next_attempt(&q.retry, q.lifetime, recipient.attempts + 1, queued_at, now)
            {
                Retry::At(at) => (RecipientStatus::Deferred, at, reply),
                Retry::Expired => {
                    detail["expired"] = json!(true);
                    let why = format!("queue lifetime over; last error: {reply}");
                    (RecipientStatus::Failed, now, why)
                }
            }
        }
    };
    detail["reply"] = json!(reply);
    // One "still trying" notice, once the recipient has waited longer than `warn_after`.
    let warned = status == RecipientStatus::Deferred
        && !recipient.warned
        && q.warn_after
            .is_some_and(|w| now - queued_at >= w.as_millis() as i64);
    Outcome {
        recipient,
        status,
        next_attempt_at: next,
        reply,
        attempt: detail,
        warned,
    }
}

/// Tries the route's hosts in order until one gives a conclusive answer.
async fn attempt(
    ctx: &Context,
    msg: &Queued,
    domain: &str,
    rcpts: &[Claimed],
) -> (Vec<Result>, Value) {
    let all = |r: Result| vec![r; rcpts.len()];
    let targets = match route::resolve(&ctx.config, &ctx.resolver, domain).await {
        Ok(t) => t,
        Err(RouteError::Permanent(why)) => {
            return (all(Result::Permanent(format!("5.1.2 {why}"))), json!({}));
        }
        Err(RouteError::Temporary(why)) => {
            return (all(Result::Temporary(format!("4.4.3 {why}"))), json!({}));
        }
    };
    let mut last = String::from("no host to try");
    let mut detail = json!({});
    for target in targets {
        detail = json!({ "host": target.host, "address": target.addr.to_string() });
        match session(ctx, &target, msg, rcpts, &mut detail).await {
            Ok(results) => return (results, detail),
            Err(why) => {
                tracing::debug!(host = %target.addr, %why, "host failed, trying the next");
                last = why;
            }
        }
    }
    detail["error"] = json!(last);
    (all(Result::Temporary(last)), detail)
}

/// One SMTP session with one host, on a pooled connection when there is one. `Err` means "no
/// conclusive answer: try another host".
async fn session(
    ctx: &Context,
    target: &Target,
    msg: &Queued,
    rcpts: &[Claimed],
    detail: &mut Value,
) -> std::result::Result<Vec<Result>, String> {
    if let Some(mut conn) = ctx.pool.take(target) {
        conn.describe(detail, true);
        match conn.transaction(msg, rcpts, &return_path(ctx, msg)).await {
            Ok(results) => {
                ctx.pool.put(target, conn, ctx.config.delivery.idle_timeout);
                return Ok(results);
            }
            // The server may have closed an idle connection: a fresh one decides.
            Err(why) => tracing::debug!(host = %target.addr, %why, "pooled connection failed"),
        }
    }
    let mut conn = connect(ctx, target).await?;
    conn.describe(detail, false);
    let results = conn.transaction(msg, rcpts, &return_path(ctx, msg)).await?;
    ctx.pool.put(target, conn, ctx.config.delivery.idle_timeout);
    Ok(results)
}

/// The MAIL FROM of a delivery: outbound senders are signed (`batv.rs`), so that the bounces
/// real servers send back can be told from forged ones.
fn return_path(ctx: &Context, msg: &Queued) -> String {
    let sign = ctx.config.policy.sender.sign_return_path;
    if sign && msg.direction == "outbound" && !msg.sender.is_empty() {
        crate::batv::sign(&ctx.batv_key, &msg.sender, crate::batv::today())
    } else {
        msg.sender.clone()
    }
}

/// Connects, reads the greeting, says EHLO and starts TLS as the target's policy demands.
async fn connect(ctx: &Context, target: &Target) -> std::result::Result<Conn, String> {
    let d = &ctx.config.delivery;
    let me = &ctx.config.server.hostname;
    let mut client = SmtpClient::connect(target.addr, d.connect_timeout)
        .await
        .map_err(|e| format!("4.4.1 connecting to {}: {e}", target.addr))?;
    client.timeout = d.command_timeout;
    // SMTP is request/reply: Nagle's delay would hold each command for the previous ACK.
    let _ = client.stream.set_nodelay(true);
    let greeting = client
        .read()
        .await
        .map_err(|e| format!("4.4.2 greeting: {e}"))?;
    if greeting.code != 220 {
        return Err(format!("greeting: {}", text(&greeting)));
    }
    let ehlo = client
        .ehlo(me)
        .await
        .map_err(|e| format!("4.4.2 EHLO: {e}"))?;
    if !ehlo.has_capability(EXT_START_TLS) {
        if target.tls == RouteTls::Opportunistic {
            let pipelining = ehlo.has_capability(EXT_PIPELINING);
            return Ok(Conn::Plain { client, pipelining });
        }
        return Err(format!(
            "4.7.4 TLS policy {} but the server does not offer STARTTLS",
            target.tls.as_str()
        ));
    }
    let (config, verified) = match target.tls {
        RouteTls::Require | RouteTls::Opportunistic => (ctx.client_tls.any.clone(), false),
        RouteTls::RequireVerified => (ctx.client_tls.verified.clone(), true),
        RouteTls::TrustSpace => match &ctx.client_tls.trust {
            Some(c) => (c.clone(), true),
            None => return Err("4.7.5 trust-space peer but [trust] has no client TLS".into()),
        },
    };
    let mut client = client
        .start_tls(&TlsConnector::from(config), &target.host)
        .await
        .map_err(|e| format!("4.7.5 TLS with {}: {e}", target.host))?;
    let facts = crate::tls::facts(client.tls_connection());
    let ehlo = client
        .ehlo(me)
        .await
        .map_err(|e| format!("4.4.2 EHLO after STARTTLS: {e}"))?;
    Ok(Conn::Tls {
        client: Box::new(client),
        facts,
        verified,
        pipelining: ehlo.has_capability(EXT_PIPELINING),
    })
}

/// An open SMTP client connection, in clear only under the opportunistic policy.
/// `pipelining`: the server offered PIPELINING (RFC 2920) in its last EHLO.
pub enum Conn {
    Tls {
        client: Box<SmtpClient<TlsStream<TcpStream>>>,
        facts: crate::envelope::TlsFacts,
        verified: bool,
        pipelining: bool,
    },
    Plain {
        client: SmtpClient<TcpStream>,
        pipelining: bool,
    },
}

impl Conn {
    /// TLS facts for the attempt event.
    fn describe(&self, detail: &mut Value, reused: bool) {
        match self {
            Conn::Tls {
                facts, verified, ..
            } => {
                detail["tls_version"] = json!(facts.version);
                detail["tls_cipher"] = json!(facts.cipher);
                detail["tls_verified"] = json!(verified);
            }
            Conn::Plain { .. } => detail["tls_version"] = json!("none"),
        }
        detail["reused_connection"] = json!(reused);
    }

    async fn transaction(
        &mut self,
        msg: &Queued,
        rcpts: &[Claimed],
        return_path: &str,
    ) -> std::result::Result<Vec<Result>, String> {
        match self {
            Conn::Tls {
                client, pipelining, ..
            } => transaction(client, *pipelining, msg, rcpts, return_path).await,
            Conn::Plain { client, pipelining } => {
                transaction(client, *pipelining, msg, rcpts, return_path).await
            }
        }
    }

    pub async fn quit(self) {
        let _ = match self {
            Conn::Tls { client, .. } => client.quit().await,
            Conn::Plain { client, .. } => client.quit().await,
        };
    }
}

/// MAIL, RCPT for each recipient, DATA when any was accepted. Leaves the connection ready for
/// the next transaction. With PIPELINING, MAIL, the RCPTs and DATA go in one write and their
/// replies are read together (RFC 2920): two round trips per message instead of three or more,
/// each a TLS record, a write and a wake-up on both sides.
async fn transaction<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    pipelining: bool,
    msg: &Queued,
    rcpts: &[Claimed],
    return_path: &str,
) -> std::result::Result<Vec<Result>, String> {
    let io = |e: mail_send::Error| format!("4.4.2 {e}");
    let mail_cmd = format!("MAIL FROM:<{return_path}>\r\n");
    let rcpt_cmd = |r: &Claimed| format!("RCPT TO:<{}>\r\n", r.address);
    let (mail, rcpt_replies, data_reply) = if pipelining {
        let mut batch = mail_cmd;
        for r in rcpts {
            batch.push_str(&rcpt_cmd(r));
        }
        batch.push_str("DATA\r\n");
        let mut replies = exchange(client, batch.as_bytes(), rcpts.len() + 2)
            .await
            .map_err(io)?;
        let data = replies.pop();
        let mail = replies.remove(0);
        (mail, replies, data)
    } else {
        let mail = client.cmd(mail_cmd).await.map_err(io)?;
        let mut replies = Vec::with_capacity(rcpts.len());
        if mail.code < 400 {
            for r in rcpts {
                replies.push(client.cmd(rcpt_cmd(r)).await.map_err(io)?);
            }
        }
        (mail, replies, None)
    };
    if mail.code >= 400 {
        abandon(client, data_reply.as_ref()).await;
        return Ok(vec![refused(&mail); rcpts.len()]);
    }
    let results: Vec<Option<Result>> = rcpt_replies
        .iter()
        .map(|reply| (!(200..300).contains(&reply.code)).then(|| refused(reply)))
        .collect();
    if results.iter().all(Option::is_some) {
        abandon(client, data_reply.as_ref()).await;
        return Ok(results.into_iter().flatten().collect());
    }
    let data_reply = match data_reply {
        Some(reply) => reply,
        None => client.cmd("DATA\r\n").await.map_err(io)?,
    };
    let data = if data_reply.code != 354 {
        // The transaction is still open on the server: reset it for the next one.
        let _ = client.rset().await;
        refused(&data_reply)
    } else {
        match exchange(client, &data_payload(&msg.body), 1).await {
            Ok(mut replies) => match replies.pop() {
                Some(reply) if reply.code < 300 => Result::Delivered(text(&reply)),
                Some(reply) => refused(&reply),
                None => return Err("4.4.2 no reply after the message".into()),
            },
            // The data may or may not have arrived: retrying risks a duplicate, never a loss.
            Err(e) => return Err(format!("4.4.2 during DATA: {e}")),
        }
    };
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| data.clone()))
        .collect())
}

/// A refusal: permanent for a 5xx reply, temporary otherwise.
fn refused(reply: &Response<String>) -> Result {
    match reply.code {
        500.. => Result::Permanent(text(reply)),
        _ => Result::Temporary(text(reply)),
    }
}

/// Ends a transaction that has nothing to send: a pipelined DATA the server took anyway gets
/// an empty message's end (RFC 2920 §3.1: it then fails for want of recipients), else RSET.
async fn abandon<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    data_reply: Option<&Response<String>>,
) {
    if data_reply.is_some_and(|r| r.code == 354) {
        let _ = exchange(client, b".\r\n", 1).await;
    } else {
        let _ = client.rset().await;
    }
}

/// Writes `bytes` at once and reads `replies` replies, within the command timeout.
async fn exchange<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    bytes: &[u8],
    replies: usize,
) -> mail_send::Result<Vec<Response<String>>> {
    tokio::time::timeout(client.timeout, async {
        client.stream.write_all(bytes).await?;
        client.stream.flush().await?;
        client.read_many(replies).await
    })
    .await
    .map_err(|_| mail_send::Error::Timeout)?
}

/// The message as DATA carries it, in one buffer so that it leaves in as few TLS records and
/// writes as its size allows: a dot doubled at the start of the message and after every CR or
/// LF (as mail-send does, so no bare line end can be read as an end of data by the next hop),
/// then the stored message's final CRLF and `.` CRLF.
fn data_payload(body: &[u8]) -> Vec<u8> {
    let body = body.strip_suffix(b"\r\n").unwrap_or(body);
    let mut out = Vec::with_capacity(body.len() + body.len() / 256 + 8);
    // Each turn starts a line: at the message's start or after a CR or LF.
    let mut rest = body;
    loop {
        if rest.first() == Some(&b'.') {
            out.push(b'.');
        }
        match memchr::memchr2(b'\r', b'\n', rest) {
            Some(i) => {
                out.extend_from_slice(&rest[..=i]);
                rest = &rest[i + 1..];
            }
            None => {
                out.extend_from_slice(rest);
                break;
            }
        }
    }
    out.extend_from_slice(b"\r\n.\r\n");
    out
}

fn text(r: &Response<String>) -> String {
    let [a, b, c] = r.esc;
    if a == 0 {
        format!("{} {}", r.code, r.message)
    } else {
        format!("{} {a}.{b}.{c} {}", r.code, r.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_payload_stuffs_every_line_start() {
        let p = |b: &[u8]| String::from_utf8(data_payload(b)).unwrap();
        assert_eq!(p(b"a\r\n.b\r\n..c\r\n"), "a\r\n..b\r\n...c\r\n.\r\n");
        assert_eq!(p(b".first\r\n"), "..first\r\n.\r\n");
        assert_eq!(p(b".\r\n"), "..\r\n.\r\n");
        // A bare line end is a line start for some next hops: stuffed too.
        assert_eq!(p(b"a\n.b\r.c\r\n"), "a\n..b\r..c\r\n.\r\n");
        // No final CRLF: one is added before the end.
        assert_eq!(p(b"a\r\n.b"), "a\r\n..b\r\n.\r\n");
        assert_eq!(p(b""), "\r\n.\r\n");
        assert_eq!(p(b"no dots\r\n"), "no dots\r\n.\r\n");
    }
}
