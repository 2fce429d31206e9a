//! MAIL FROM: starts a transaction. Refused before TLS (see `session.rs`) and before EHLO.

use super::reply::{self, Reply};
use super::session::{Session, Transaction};
use crate::envelope;
use crate::policy::Action;
use smtp_proto::MailFrom;
use std::borrow::Cow;

impl Session {
    pub(super) async fn mail(&mut self, from: MailFrom<Cow<'_, str>>) -> Reply {
        if self.helo.is_none() {
            return reply::bad_sequence("send EHLO first");
        }
        if self.tx.is_some() {
            return reply::bad_sequence("nested MAIL command");
        }
        if !self.authorised && !self.ctx.message_rate.allow(self.peer.ip().to_canonical()) {
            return reply::sending_too_fast();
        }
        let max = self.ctx.config.session.max_message_size;
        let must_match = self
            .user
            .as_deref()
            .filter(|_| self.ctx.config.relay.sender_must_match);
        if let Some(refusal) = check_sender(&from, max, must_match) {
            return refusal;
        }
        let address = from.address.trim();
        self.tx = Some(Transaction {
            mail_from: address.to_owned(),
            ..Default::default()
        });
        let outcome = self
            .ctx
            .pipeline(self.direction())
            .mail(&self.facts())
            .await;
        match outcome.action {
            Action::Reject(r) | Action::Tempfail(r) => {
                tracing::info!(peer = %self.peer, stage = outcome.decided_by, reason = %outcome.reason, "MAIL refused");
                self.tx = None;
                r
            }
            _ => reply::sender_ok(),
        }
    }
}

/// The checks of MAIL FROM's argument, in order: the declared size, the address's syntax, and
/// (for a user under `relay.sender_must_match`) its domain. None: acceptable.
pub(crate) fn check_sender(
    from: &MailFrom<Cow<'_, str>>,
    max_size: usize,
    must_match: Option<&str>,
) -> Option<Reply> {
    if from.size > max_size {
        return Some(reply::too_big(max_size));
    }
    let address = from.address.trim();
    if !address.is_empty() {
        let ok = envelope::split(address).is_some_and(|(local, domain)| {
            !local.contains(['"', ' ', '\\']) && envelope::is_domain(&domain)
        });
        if !ok || address.len() > 254 {
            return Some(reply::bad_sender());
        }
    }
    let user = must_match?;
    let own = user.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
    let sender = envelope::split(address).map(|(_, d)| d);
    (own.is_none() || own != sender)
        .then(|| Reply::new(553, "5.7.1", format!("{user} may not send as <{address}>")))
}
