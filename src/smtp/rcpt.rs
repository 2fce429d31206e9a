//! RCPT TO: the relay rules decide, per recipient (see `relay.rs`); then, for a recipient in one
//! of our domains, the directory (see `directory/`): unknown `550 5.1.1`, unreachable `451 4.4.3`.

use super::reply::{self, Reply};
use super::session::Session;
use crate::config::show_address;
use crate::relay::Refusal;
use smtp_proto::RcptTo;
use std::borrow::Cow;

impl Session {
    pub(super) async fn rcpt(&mut self, to: RcptTo<Cow<'_, str>>, line: &[u8]) -> Reply {
        let max = self.ctx.config.session.max_recipients;
        let authorised = self.authorised;
        let Some(tx) = self.tx.as_ref() else {
            return reply::bad_sequence("send MAIL first");
        };
        if tx.rcpts.len() >= max {
            return reply::too_many_recipients();
        }
        // The argument as written, after "RCPT TO:", for the checks the parser has erased.
        let raw = String::from_utf8_lossy(line);
        let raw = raw.split_once(':').map_or("", |(_, arg)| arg);
        // A signed return path (`prvs=…=alice@ours`) stands for alice@ours.
        let days = self.ctx.config.policy.sender.signed_bounce_days;
        let today = crate::batv::today();
        let signed = crate::batv::verify(&self.ctx.batv_key, &to.address, today, days);
        let address = signed
            .as_ref()
            .map_or(to.address.to_string(), |(a, _)| a.clone());
        let direction = match self.ctx.relay.check_recipient(raw, &address, authorised) {
            Ok(direction) => direction,
            Err(Refusal::NotOurs) => return reply::relay_denied(),
            Err(Refusal::Trick) => return reply::relay_trick(),
            Err(Refusal::Syntax) => return reply::bad_recipient(),
        };
        let (local, domain) = crate::envelope::split(&address).expect("checked");
        let address = format!("{local}@{domain}");
        if let Some(refused) = self.check_directory(&address, &domain).await {
            return refused;
        }
        let tx = self.tx.as_mut().expect("checked above");
        tx.direction = Some(direction);
        if let Some((_, valid)) = signed {
            tx.signed += 1;
            tx.signed_valid += usize::from(valid);
        }
        if !tx.rcpts.contains(&address) {
            tx.rcpts.push(address);
            self.recipients += 1;
        }
        reply::recipient_ok()
    }

    /// A recipient in one of our domains must be in the directory, when it is enabled; other
    /// domains (outbound relay) are not checked. None to accept, or the refusal.
    async fn check_directory(&self, address: &str, domain: &str) -> Option<Reply> {
        let directory = &self.ctx.directory;
        if !directory.enabled() || self.ctx.relay.route(domain).is_none() {
            return None;
        }
        match directory.lookup(address).await {
            Ok(known) if known.is_known() => {
                tracing::debug!(rcpt = %show_address(address), by = known.as_str(), "recipient in the directory");
                None
            }
            Ok(_) => {
                tracing::info!(rcpt = %show_address(address), peer = %self.peer, "recipient not in the directory");
                Some(reply::unknown_recipient())
            }
            Err(e) => {
                tracing::warn!(rcpt = %show_address(address), error = %e, "directory unavailable; recipient deferred");
                Some(reply::directory_unavailable())
            }
        }
    }
}
