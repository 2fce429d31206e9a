//! The trust space: mail that claims a peer domain of `[trust]` as its sender — in the envelope
//! or in `From:` — is accepted only from that peer's gateway, proven by a client certificate
//! issued by the trust space's CA and naming the domain (or a host under it). Anything else is
//! refused `550 5.7.1`: no one may pass for a member. Each message is stamped with
//! `X-Passerelle-Trust:` saying what was proven, and the verdict is recorded.
//!
//! Runs first in the inbound and outbound pipelines whenever `[trust]` names peers; it is not
//! listed in `stages`, so that it cannot be left out by mistake.

use super::{Action, Change, Facts, Stage, StageFuture, Verdict};
use crate::config::Trust;
use crate::smtp::reply::Reply;
use serde_json::json;

pub const HEADER: &str = "X-Passerelle-Trust";

pub struct TrustStage {
    pub config: Trust,
}

impl TrustStage {
    /// The peer domain `address` claims, when the client has not proven it.
    fn unproven<'a>(&'a self, facts: &Facts, address: &str) -> Option<&'a str> {
        let domain = address.rsplit_once('@')?.1;
        let peer = self.config.peer_domain(domain)?;
        (!facts.peer_domains.iter().any(|p| p == peer)).then_some(peer)
    }

    fn refuse(&self, v: Verdict, peer: &str, what: &str) -> Verdict {
        let reply = Reply::new(
            550,
            "5.7.1",
            format!("{peer} is a trust-space member: its mail must come from its own gateway"),
        );
        v.action(
            Action::Reject(reply),
            format!("{what} claims trust-space peer {peer} without its gateway's certificate"),
        )
    }
}

impl Stage for TrustStage {
    fn name(&self) -> &'static str {
        "trust"
    }

    fn on_mail<'a>(&'a self, facts: &'a Facts) -> StageFuture<'a> {
        Box::pin(async move {
            let v = Verdict::new(self.name());
            Ok(match self.unproven(facts, &facts.mail_from) {
                Some(peer) => self.refuse(v, peer, "the envelope sender"),
                None => v,
            })
        })
    }

    fn on_data<'a>(&'a self, facts: &'a Facts, raw: &'a [u8], _: &'a [Verdict]) -> StageFuture<'a> {
        Box::pin(async move {
            let mut v = Verdict::new(self.name());
            for from in from_addresses(raw) {
                if let Some(peer) = self.unproven(facts, &from) {
                    return Ok(self.refuse(v, peer, "From:"));
                }
            }
            let stamp = if facts.peer_domains.is_empty() {
                "none".to_owned()
            } else {
                let cert = facts.certificate_name.as_deref().unwrap_or("?");
                v.reason = format!(
                    "trust-space peer {} proven by certificate {cert}",
                    facts.peer_domains.join(", ")
                );
                v.detail = json!({ "peers": facts.peer_domains, "certificate": cert });
                format!(
                    "pass peer={} certificate={cert}",
                    facts.peer_domains.join(",")
                )
            };
            v.changes.push(Change::AddHeader(HEADER.into(), stamp));
            Ok(v)
        })
    }
}

/// The addresses of every `From:` header (a message may carry several, to confuse filters).
fn from_addresses(raw: &[u8]) -> Vec<String> {
    let from = crate::message::header_fields(raw, "From");
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(&from) else {
        return Vec::new();
    };
    msg.header_values("From")
        .filter_map(|h| h.as_address())
        .flat_map(|a| a.iter())
        .filter_map(|a| a.address().map(str::to_ascii_lowercase))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Direction;

    fn stage() -> TrustStage {
        TrustStage {
            config: Trust {
                domains: vec!["hopital-a.example".into()],
                ..Trust::default()
            },
        }
    }

    fn facts(from: &str, peers: &[&str]) -> Facts {
        Facts {
            peer: "192.0.2.1".parse().unwrap(),
            helo: "mx.hopital-a.example".into(),
            tls: true,
            authorised: false,
            direction: Direction::Inbound,
            mail_from: from.into(),
            rcpts: vec!["dr@example.org".into()],
            early_rules: Vec::new(),
            signed_bounce: false,
            peer_domains: peers.iter().map(|p| p.to_string()).collect(),
            certificate_name: peers.first().map(|p| format!("mx.{p}")),
        }
    }

    #[tokio::test]
    async fn a_peer_sender_needs_the_peers_certificate() {
        let s = stage();
        let forged = s.on_mail(&facts("x@hopital-a.example", &[])).await.unwrap();
        assert!(
            matches!(forged.action, Action::Reject(ref r) if r.to_string().starts_with("550 5.7.1"))
        );
        let sub = s
            .on_mail(&facts("x@lab.hopital-a.example", &[]))
            .await
            .unwrap();
        assert!(
            matches!(sub.action, Action::Reject(_)),
            "a subdomain is the peer too"
        );
        let proven = facts("x@hopital-a.example", &["hopital-a.example"]);
        assert_eq!(s.on_mail(&proven).await.unwrap().action, Action::Continue);
        let other = s.on_mail(&facts("x@elsewhere.example", &[])).await.unwrap();
        assert_eq!(other.action, Action::Continue);
    }

    #[tokio::test]
    async fn from_header_is_checked_and_the_message_stamped() {
        let s = stage();
        let raw = b"From: Dr A <a@hopital-a.example>\r\nSubject: x\r\n\r\nhi\r\n";
        let v = s
            .on_data(&facts("bounce@elsewhere.example", &[]), raw, &[])
            .await
            .unwrap();
        assert!(matches!(v.action, Action::Reject(_)), "{v:?}");

        let two = b"From: ok@elsewhere.example\r\nFrom: a@HOPITAL-A.example\r\n\r\nhi\r\n";
        let v = s
            .on_data(&facts("ok@elsewhere.example", &[]), two, &[])
            .await
            .unwrap();
        assert!(
            matches!(v.action, Action::Reject(_)),
            "the second From: counts: {v:?}"
        );

        let proven = facts("a@hopital-a.example", &["hopital-a.example"]);
        let v = s.on_data(&proven, raw, &[]).await.unwrap();
        assert_eq!(v.action, Action::Continue);
        assert_eq!(
            v.changes,
            [Change::AddHeader(
                HEADER.into(),
                "pass peer=hopital-a.example certificate=mx.hopital-a.example".into()
            )]
        );
        let plain = b"From: a@elsewhere.example\r\n\r\nhi\r\n";
        let v = s
            .on_data(&facts("a@elsewhere.example", &[]), plain, &[])
            .await
            .unwrap();
        assert_eq!(v.changes, [Change::AddHeader(HEADER.into(), "none".into())]);
    }
}
