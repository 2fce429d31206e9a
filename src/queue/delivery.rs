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
use smtp_proto::{EXT_START_TLS, Response};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
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
/// sender for recipients that failed or are delayed past `queue.warn_after`.
pub async fn deliver(ctx: Arc<Context>, rcpts: Vec<Claimed>) {
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
            return;
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
    if let Err(e) = ctx.store.finish(&ctx.recorder, outcomes, notice, now).await {
        // The lease runs out and the recipients are tried again: a duplicate at worst, never a loss.
        tracing::error!(%message_id, error = %e, "recording delivery outcomes");
    }
    if noticed {
        ctx.queue_notify.notify_one();
    }
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
            return Ok(Conn::Plain(client));
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
    client
        .ehlo(me)
        .await
        .map_err(|e| format!("4.4.2 EHLO after STARTTLS: {e}"))?;
    Ok(Conn::Tls {
        client: Box::new(client),
        facts,
        verified,
    })
}

/// An open SMTP client connection, in clear only under the opportunistic policy.
pub enum Conn {
    Tls {
        client: Box<SmtpClient<TlsStream<TcpStream>>>,
        facts: crate::envelope::TlsFacts,
        verified: bool,
    },
    Plain(SmtpClient<TcpStream>),
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
            Conn::Plain(_) => detail["tls_version"] = json!("none"),
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
            Conn::Tls { client, .. } => transaction(client, msg, rcpts, return_path).await,
            Conn::Plain(client) => transaction(client, msg, rcpts, return_path).await,
        }
    }

    pub async fn quit(self) {
        let _ = match self {
            Conn::Tls { client, .. } => client.quit().await,
            Conn::Plain(client) => client.quit().await,
        };
    }
}

/// MAIL, RCPT for each recipient, DATA when any was accepted. Leaves the connection ready for
/// the next transaction.
async fn transaction<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    msg: &Queued,
    rcpts: &[Claimed],
    return_path: &str,
) -> std::result::Result<Vec<Result>, String> {
    let io = |e: mail_send::Error| format!("4.4.2 {e}");
    let mail = client
        .cmd(format!("MAIL FROM:<{return_path}>\r\n"))
        .await
        .map_err(io)?;
    if mail.code >= 400 {
        let _ = client.rset().await;
        return match mail.code {
            500.. => Ok(vec![Result::Permanent(text(&mail)); rcpts.len()]),
            _ => Ok(vec![Result::Temporary(text(&mail)); rcpts.len()]),
        };
    }
    let mut results: Vec<Option<Result>> = Vec::with_capacity(rcpts.len());
    for r in rcpts {
        let reply = client
            .cmd(format!("RCPT TO:<{}>\r\n", r.address))
            .await
            .map_err(io)?;
        results.push(match reply.code {
            200..=299 => None,
            500.. => Some(Result::Permanent(text(&reply))),
            _ => Some(Result::Temporary(text(&reply))),
        });
    }
    if results.iter().all(Option::is_some) {
        client.rset().await.map_err(io)?;
        return Ok(results.into_iter().flatten().collect());
    }
    // mail-send appends CRLF.CRLF itself; our stored message already ends with CRLF.
    let body = msg.body.strip_suffix(b"\r\n").unwrap_or(&msg.body);
    let data = match client.data(body).await {
        Ok(reply) => Result::Delivered(text(&reply)),
        Err(mail_send::Error::UnexpectedReply(reply)) if reply.code >= 500 => {
            Result::Permanent(text(&reply))
        }
        Err(mail_send::Error::UnexpectedReply(reply)) => Result::Temporary(text(&reply)),
        // The data may or may not have arrived: retrying risks a duplicate, never a loss.
        Err(e) => return Err(format!("4.4.2 during DATA: {e}")),
    };
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| data.clone()))
        .collect())
}

fn text(r: &Response<String>) -> String {
    let [a, b, c] = r.esc;
    if a == 0 {
        format!("{} {}", r.code, r.message)
    } else {
        format!("{} {a}.{b}.{c} {}", r.code, r.message)
    }
}
