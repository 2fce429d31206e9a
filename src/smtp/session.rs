//! One SMTP session: reads commands, keeps the state, dispatches to one file per command.
//!
//! A session runs over a plaintext stream first (MX listener) and is run again over the TLS
//! stream after STARTTLS: [`Session::serve`] returns [`Next::StartTls`] and the listener does the
//! handshake, so the two streams are two types and plaintext bytes can never leak into the TLS
//! phase.

use super::connection::{Connection, Line, ReadError};
use super::reply::{self, Reply};
use crate::daemon::Context;
use crate::envelope::{Direction, TlsFacts};
use crate::policy::{Action, Facts};
use smtp_proto::Request;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// What the listener should do when `serve` returns.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Close,
    StartTls,
}

impl Transaction {
    /// Every recipient is a return path we signed, and every signature is valid.
    pub fn signed_bounce(&self) -> bool {
        !self.rcpts.is_empty()
            && self.signed == self.rcpts.len()
            && self.signed_valid == self.signed
    }
}

/// A mail transaction in progress (between MAIL and the end of DATA).
#[derive(Debug, Default)]
pub(super) struct Transaction {
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub direction: Option<Direction>,
    /// Recipients written as signed return paths: how many, and how many verified.
    pub signed: usize,
    pub signed_valid: usize,
}

pub struct Session {
    pub(super) ctx: Arc<Context>,
    pub(super) peer: SocketAddr,
    pub(super) listener: String,
    /// On an MX listener, MAIL is refused until this is set.
    pub(super) tls: Option<TlsFacts>,
    pub(super) helo: Option<String>,
    pub(super) authorised: bool,
    pub(super) tx: Option<Transaction>,
    errors: usize,
    /// Counts for the session's log line.
    pub(super) accepted: Vec<String>,
    /// Spam-score rules found at connect (DNSBL), carried to the spam stage.
    pub(super) early_rules: Vec<crate::policy::Rule>,
    /// The SMTP AUTH login, once authenticated.
    pub(super) user: Option<String>,
    pub(super) recipients: usize,
}

impl Session {
    pub fn new(ctx: Arc<Context>, peer: SocketAddr, listener: String) -> Self {
        let authorised = ctx.relay.authorised(peer.ip());
        Session {
            ctx,
            peer,
            listener,
            tls: None,
            helo: None,
            authorised,
            tx: None,
            errors: 0,
            accepted: Vec::new(),
            early_rules: Vec::new(),
            user: None,
            recipients: 0,
        }
    }

    /// After the TLS handshake: RFC 3207 §4.2, forget everything learnt in plaintext.
    pub fn tls_started(&mut self, facts: TlsFacts) {
        // A partner gateway's verified certificate authorises outbound relay, like a network.
        if facts.client_certificate {
            self.authorised = true;
        }
        self.tls = Some(facts);
        self.helo = None;
        self.tx = None;
        self.user = None;
    }

    pub fn accepted(&self) -> &[String] {
        &self.accepted
    }

    /// The SMTP AUTH login, if the client authenticated.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Recipients accepted over the whole session, for its log line.
    pub fn recipients(&self) -> usize {
        self.recipients
    }

    /// Which way mail from this client goes: authorised clients send outbound.
    pub fn direction(&self) -> Direction {
        if self.authorised {
            Direction::Outbound
        } else {
            Direction::Inbound
        }
    }

    /// What the policy stages may know about this session now.
    pub fn facts(&self) -> Facts {
        let tx = self.tx.as_ref();
        Facts {
            peer: self.peer.ip().to_canonical(),
            helo: self.helo.clone().unwrap_or_default(),
            tls: self.tls.is_some(),
            authorised: self.authorised,
            direction: self.direction(),
            mail_from: tx.map(|t| t.mail_from.clone()).unwrap_or_default(),
            rcpts: tx.map(|t| t.rcpts.clone()).unwrap_or_default(),
            early_rules: self.early_rules.clone(),
            signed_bounce: tx.is_some_and(Transaction::signed_bounce),
            peer_domains: self
                .tls
                .as_ref()
                .map(|t| t.peer_domains.clone())
                .unwrap_or_default(),
            certificate_name: self.tls.as_ref().and_then(|t| t.certificate_name.clone()),
        }
    }

    /// The connect phase, before the greeting: None to go on, or the refusal to send.
    pub async fn connect_policy(&mut self) -> Option<Reply> {
        let outcome = self
            .ctx
            .pipeline(self.direction())
            .connect(&self.facts())
            .await;
        self.early_rules = outcome
            .verdicts
            .iter()
            .flat_map(|v| v.rules.clone())
            .collect();
        match outcome.action {
            Action::Reject(r) => Some(r),
            Action::Tempfail(r) => Some(Reply::new(421, "4.7.0", r.text)),
            _ => None,
        }
    }

    /// Serves commands until the client quits, the connection ends, or STARTTLS.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
    ) -> std::io::Result<Next> {
        let timeout = self.ctx.config.session.command_timeout;
        let mut shutdown = self.ctx.shutdown.subscribe();
        loop {
            let line = tokio::select! {
                line = conn.read_line(timeout) => line,
                _ = shutdown.recv() => {
                    conn.send(&reply::shutting_down()).await?;
                    return Ok(Next::Close);
                }
            };
            let line = match line {
                Ok(l) => l,
                Err(ReadError::Timeout) => {
                    conn.send(&reply::timeout()).await?;
                    return Ok(Next::Close);
                }
                Err(ReadError::Closed) => return Ok(Next::Close),
                Err(ReadError::Io(e)) => return Err(e),
            };
            let reply = match line {
                Line::TooLong => Some(reply::line_too_long()),
                Line::BareLf => Some(reply::bare_lf_command()),
                Line::Command(bytes) => match self.command(&bytes, conn).await? {
                    Step::Reply(r) => Some(r),
                    Step::Replied => None,
                    Step::Quit => {
                        conn.send(&reply::bye(&self.ctx.config.server.hostname))
                            .await?;
                        return Ok(Next::Close);
                    }
                    Step::StartTls => {
                        conn.send(&reply::start_tls()).await?;
                        return Ok(Next::StartTls);
                    }
                },
            };
            if let Some(r) = reply {
                if r.code >= 500 {
                    self.errors += 1;
                }
                conn.reply(&r);
                if self.errors >= self.ctx.config.session.max_errors {
                    conn.send(&reply::too_many_errors()).await?;
                    return Ok(Next::Close);
                }
            }
        }
    }

    async fn command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        line: &[u8],
        conn: &mut Connection<S>,
    ) -> std::io::Result<Step> {
        // The parser lets NUL, control bytes and broken UTF-8 through into addresses.
        let text = &line[..line.len().saturating_sub(2)];
        if text
            .iter()
            .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
        {
            return Ok(Step::Reply(reply::control_characters()));
        }
        if std::str::from_utf8(text).is_err() {
            return Ok(Step::Reply(reply::invalid_utf8()));
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r,
            Err(e) => return Ok(Step::Reply(parse_error(line, e))),
        };
        Ok(Step::Reply(match request {
            Request::Ehlo { host } => self.ehlo(&host, true),
            Request::Helo { host } => self.ehlo(&host, false),
            Request::StartTls if self.tls.is_some() => reply::tls_already(),
            Request::StartTls => return Ok(Step::StartTls),
            // Implicit-TLS sessions have `tls` set before the first command, so this one guard
            // serves both listener kinds.
            Request::Mail { .. } | Request::Rcpt { .. } | Request::Data | Request::Auth { .. }
                if self.tls.is_none() =>
            {
                reply::tls_required()
            }
            Request::Mail { from } => self.mail(from).await,
            Request::Rcpt { to } => self.rcpt(to, line).await,
            Request::Data => {
                self.data(conn).await?;
                return Ok(Step::Replied);
            }
            Request::Auth {
                mechanism,
                initial_response,
            } => {
                let initial = initial_response.to_string();
                return Ok(Step::Reply(self.auth(mechanism, &initial, conn).await?));
            }
            Request::Rset => {
                self.tx = None;
                reply::ok()
            }
            Request::Noop { .. } => reply::ok(),
            Request::Vrfy { .. } => reply::vrfy(),
            Request::Help { .. } => reply::help(),
            Request::Quit => return Ok(Step::Quit),
            other => reply::not_implemented(other.name()),
        }))
    }
}

enum Step {
    Reply(Reply),
    Replied,
    Quit,
    StartTls,
}

pub(crate) fn parse_error(line: &[u8], e: smtp_proto::Error) -> Reply {
    use smtp_proto::Error::*;
    let verb = line
        .split(|b| *b == b' ' || *b == b':' || *b == b'\r')
        .next()
        .map(|v| v.to_ascii_uppercase())
        .unwrap_or_default();
    match e {
        UnknownCommand => reply::unknown_command(),
        InvalidSenderAddress => reply::bad_sender(),
        InvalidRecipientAddress => reply::bad_recipient(),
        UnsupportedParameter { param } => reply::param_not_supported(&param),
        InvalidParameter { param } => reply::syntax(&format!("invalid parameter {param}")),
        SyntaxError { syntax } => reply::syntax(syntax),
        _ if verb == b"MAIL" => reply::bad_sender(),
        _ => reply::syntax("command not understood"),
    }
}
