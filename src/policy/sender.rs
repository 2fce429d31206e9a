//! Sender rules (data phase): a message whose envelope sender or `From:` address is empty is
//! accepted and then deleted without any notice — the rule of the service Passerelle replaces,
//! where such mail is overwhelmingly backscatter. The event records it.

use super::{Action, Facts, Stage, StageFuture, Verdict};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SenderConfig {
    /// Delete messages with an empty envelope sender or `From:` address.
    pub drop_empty: bool,
    /// Sign the return path of outbound mail (`prvs=…`, see `batv.rs`).
    pub sign_return_path: bool,
    /// Deliver a bounce whose recipients are all return paths we signed in the last
    /// `signed_bounce_days` days, despite its empty sender: real bounces reach our senders.
    pub allow_signed_bounces: bool,
    pub signed_bounce_days: u64,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            drop_empty: true,
            sign_return_path: true,
            allow_signed_bounces: true,
            signed_bounce_days: 7,
        }
    }
}

pub struct Sender {
    pub config: SenderConfig,
}

impl Stage for Sender {
    fn name(&self) -> &'static str {
        "sender"
    }

    fn on_data<'a>(&'a self, facts: &'a Facts, raw: &'a [u8], _: &'a [Verdict]) -> StageFuture<'a> {
        Box::pin(async move {
            let v = Verdict::new(self.name());
            if !self.config.drop_empty {
                return Ok(v);
            }
            let signed = facts.signed_bounce && self.config.allow_signed_bounces;
            if facts.mail_from.is_empty() && signed {
                let why = "bounce to a return path we signed: delivered";
                return Ok(v.action(Action::Continue, why));
            }
            let why = if facts.mail_from.is_empty() {
                "empty envelope sender"
            } else if from_is_empty(raw) {
                "empty From: address"
            } else {
                return Ok(v);
            };
            Ok(v.action(Action::Delete { notify: false }, why))
        })
    }
}

/// No `From:` header, or one without an address in it.
fn from_is_empty(raw: &[u8]) -> bool {
    let from = crate::message::header_fields(raw, "From");
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(&from) else {
        return true;
    };
    match msg.from() {
        None => true,
        Some(from) => !from
            .iter()
            .any(|a| a.address().is_some_and(|x| x.contains('@'))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_from_addresses() {
        for (raw, empty) in [
            (&b"From: Alice <alice@example.test>\r\n\r\nx"[..], false),
            (b"From: <>\r\n\r\nx", true),
            (b"From: undisclosed\r\n\r\nx", true),
            (b"Subject: no from\r\n\r\nx", true),
        ] {
            assert_eq!(
                from_is_empty(raw),
                empty,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
