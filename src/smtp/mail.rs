//! MAIL FROM: starts a transaction. Refused before TLS (see `session.rs`) and before EHLO.

use super::reply::{self, Reply};
use super::session::{Session, Transaction};
use crate::envelope;
use smtp_proto::MailFrom;
use std::borrow::Cow;

impl Session {
    pub(super) fn mail(&mut self, from: MailFrom<Cow<'_, str>>) -> Reply {
        if self.helo.is_none() {
            return reply::bad_sequence("send EHLO first");
        }
        if self.tx.is_some() {
            return reply::bad_sequence("nested MAIL command");
        }
        let max = self.ctx.config.session.max_message_size;
        if from.size > max {
            return reply::too_big(max);
        }
        let address = from.address.trim();
        if !address.is_empty() {
            let ok = envelope::split(address).is_some_and(|(local, domain)| {
                !local.contains(['"', ' ', '\\']) && envelope::is_domain(&domain)
            });
            if !ok || address.len() > 254 {
                return reply::bad_sender();
            }
        }
        self.tx = Some(Transaction {
            mail_from: address.to_owned(),
            ..Default::default()
        });
        reply::sender_ok()
    }
}
