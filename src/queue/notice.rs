//! Which failures and delays the sender hears about, as one delivery status notice per event.
//! The notice itself is built by `dsn.rs`; here it becomes a queued message with an empty
//! envelope sender (so that it can never cause a notice in turn), addressed to the sender.

use super::store::{NewMessage, Queued};
use crate::dsn::{self, Action, Notice, RecipientReport};
use crate::message::new_id;
use serde_json::json;

/// The notice for `reports` about message `id`, or None when there is nobody to tell: a message
/// with an empty sender (itself a notice) never gets one (RFC 5321 §4.5.5).
pub fn build(
    hostname: &str,
    id: &str,
    msg: &Queued,
    reports: &[RecipientReport],
    retry_until: Option<i64>,
    now: i64,
) -> Option<NewMessage> {
    if msg.sender.is_empty() || reports.is_empty() {
        return None;
    }
    let body = dsn::build(&Notice {
        reporting_mta: hostname,
        queue_id: id,
        sender: &msg.sender,
        arrival: msg.received_at,
        recipients: reports,
        original: &msg.body,
        now,
        retry_until,
    });
    let failed = reports.iter().any(|r| matches!(r.action, Action::Failed));
    let kind = if failed { "failed" } else { "delayed" };
    let rcpt = match crate::envelope::split(&msg.sender) {
        Some((local, domain)) => format!("{local}@{domain}"),
        None => msg.sender.clone(),
    };
    Some(NewMessage {
        id: new_id(),
        direction: "notice",
        sender: String::new(),
        body,
        rcpts: vec![rcpt],
        copies: Vec::new(),
        delegations: false,
        detail: json!({ "notice": kind, "about": id, "from": "", "direction": "notice" }),
        status: super::RecipientStatus::Queued,
        verdicts: Vec::new(),
    })
}

/// A report line for one recipient.
pub fn report(
    address: &str,
    action: Action,
    reply: &str,
    remote: Option<&str>,
    at: i64,
) -> RecipientReport {
    RecipientReport {
        address: address.to_owned(),
        action,
        status: dsn::status_of(reply),
        diagnostic: reply.to_owned(),
        remote_mta: remote.map(str::to_owned),
        last_attempt: Some(at),
    }
}

/// The notice telling an outbound sender that their message is held in quarantine, why, and
/// that their administrator can release it. Plain text, built with mail-builder; queued with an
/// empty envelope sender like every notice.
pub fn held(
    hostname: &str,
    id: &str,
    sender: &str,
    rcpts: &[String],
    reason: &str,
    subject: &str,
    now: i64,
) -> Option<NewMessage> {
    use mail_builder::MessageBuilder;
    use mail_builder::headers::raw::Raw;
    if sender.is_empty() {
        return None;
    }
    let text = format!(
        "Your message \"{subject}\" to {} was not delivered: the mail gateway at {hostname} \
         held it in quarantine.\r\n\r\nWhy: {reason}.\r\n\r\nNothing more will happen to it \
         unless your mail administrator releases it. If you think this is a mistake, ask them, \
         quoting this reference: {id}\r\n",
        rcpts.join(", ")
    );
    let mut body = Vec::new();
    MessageBuilder::new()
        .header(
            "From",
            Raw::new(format!("Mail Delivery System <MAILER-DAEMON@{hostname}>")),
        )
        .to(sender)
        .subject("Message held: not delivered")
        .date(mail_builder::headers::date::Date::new(now.div_euclid(1000)))
        .message_id(format!("{id}.held.{now}@{hostname}"))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .text_body(text)
        .write_to(&mut body)
        .ok()?;
    Some(NewMessage {
        id: new_id(),
        direction: "notice",
        sender: String::new(),
        body,
        rcpts: vec![sender.to_owned()],
        copies: Vec::new(),
        delegations: false,
        detail: json!({ "notice": "held", "about": id, "from": "", "direction": "notice" }),
        status: super::RecipientStatus::Queued,
        verdicts: Vec::new(),
    })
}
