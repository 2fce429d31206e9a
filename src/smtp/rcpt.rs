//! RCPT TO: the relay rules decide, per recipient (see `relay.rs`).

use super::reply::{self, Reply};
use super::session::Session;
use crate::relay::Refusal;
use smtp_proto::RcptTo;
use std::borrow::Cow;

impl Session {
    pub(super) fn rcpt(&mut self, to: RcptTo<Cow<'_, str>>, line: &[u8]) -> Reply {
        let max = self.ctx.config.session.max_recipients;
        let authorised = self.authorised;
        let Some(tx) = self.tx.as_mut() else {
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
        match self.ctx.relay.check_recipient(raw, &address, authorised) {
            Ok(direction) => {
                tx.direction = Some(direction);
                if let Some((_, valid)) = signed {
                    tx.signed += 1;
                    tx.signed_valid += usize::from(valid);
                }
                let (local, domain) = crate::envelope::split(&address).expect("checked");
                let address = format!("{local}@{domain}");
                if !tx.rcpts.contains(&address) {
                    tx.rcpts.push(address);
                    self.recipients += 1;
                }
                reply::recipient_ok()
            }
            Err(Refusal::NotOurs) => reply::relay_denied(),
            Err(Refusal::Trick) => reply::relay_trick(),
            Err(Refusal::Syntax) => reply::bad_recipient(),
        }
    }
}
