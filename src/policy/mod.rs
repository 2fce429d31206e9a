//! Policy stages: what is decided about a connection, a sender and a message.
//!
//! A [`Stage`] has a hook per SMTP phase, each defaulting to "no opinion"; it returns a
//! [`Verdict`] and never changes the message itself. The [`Pipeline`] of a direction runs its
//! stages in the configured order, each within a time bound (a stage that errs or is too slow
//! makes the message temp-fail, never pass), merges the verdicts (reject > tempfail > delete >
//! quarantine > tag) and applies the changes once. Every noteworthy verdict becomes an event.
//!
//! How to add a stage: a file here with a struct holding its config, `impl Stage` for the
//! phases it cares about, a name in [`StageName`], and a line in `Pipeline::build`.

pub mod auth;
mod clamd;
pub mod dnsbl;
pub mod limits;
pub mod pipeline;
pub mod reputation;
pub mod sender;
pub mod spam;
pub mod trust;
pub mod verdict;
pub mod virus;

pub use pipeline::{Outcome, Pipeline};
pub use verdict::{Action, Change, Rule, Verdict};

use crate::envelope::Direction;
use serde::Deserialize;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// Messages up to this size are read by the limits and virus stages on the task's own thread:
/// handing one to a blocking thread (a copy, two thread wake-ups) costs more than reading it.
/// The bound is mail-parser's worst case, whose time grows with the square of the size on
/// sibling multiparts whose boundaries never come (measured, release build: 16 KiB 1.7 ms,
/// 32 KiB 5 ms, 128 KiB 87 ms). The limits stage's own walk gives up in place before any work
/// that is not linear (`limits::inspect_in_place`): the slowest 16 KiB found for it, 1,000
/// parts each with 60 RFC 2231 sections, takes 0.26 ms.
pub(crate) const INLINE_READ: usize = 16 << 10;

/// The stages that exist, by the names the policy file uses.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum StageName {
    Reputation,
    Dnsbl,
    Spf,
    Sender,
    Limits,
    Virus,
    Spam,
}

/// What a stage may know about the session so far.
#[derive(Debug, Clone)]
pub struct Facts {
    pub peer: IpAddr,
    pub helo: String,
    pub tls: bool,
    /// The client may relay (network, AUTH or certificate).
    pub authorised: bool,
    pub direction: Direction,
    /// Empty for `<>`.
    pub mail_from: String,
    pub rcpts: Vec<String>,
    /// Spam-score contributions found before DATA (DNSBL weights), carried to the spam stage.
    pub early_rules: Vec<Rule>,
    /// Every recipient was a return path we signed, with a valid recent signature (`batv.rs`).
    pub signed_bounce: bool,
    /// Trust-space peer domains the client's certificate proves (`trust.rs`).
    pub peer_domains: Vec<String>,
    pub certificate_name: Option<String>,
}

pub type StageFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Verdict>> + Send + 'a>>;

/// A policy stage. Every hook defaults to "no opinion".
pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;

    /// Before the greeting.
    fn on_connect<'a>(&'a self, _facts: &'a Facts) -> StageFuture<'a> {
        let name = self.name();
        Box::pin(async move { Ok(Verdict::new(name)) })
    }

    /// After a syntactically good MAIL FROM.
    fn on_mail<'a>(&'a self, _facts: &'a Facts) -> StageFuture<'a> {
        let name = self.name();
        Box::pin(async move { Ok(Verdict::new(name)) })
    }

    /// After the message's end. `raw` is the message as received (our `Received:` on top);
    /// `before` are the verdicts of the stages that ran earlier in this phase.
    fn on_data<'a>(
        &'a self,
        _facts: &'a Facts,
        _raw: &'a [u8],
        _before: &'a [Verdict],
    ) -> StageFuture<'a> {
        let name = self.name();
        Box::pin(async move { Ok(Verdict::new(name)) })
    }
}

/// Builds the inbound and outbound pipelines the policy file asks for; each stage is made once
/// and shared by both directions.
pub fn build(
    config: &crate::config::Config,
    store: &crate::store::Store,
    resolver: &hickory_resolver::TokioResolver,
) -> anyhow::Result<(Pipeline, Pipeline)> {
    use std::collections::HashMap;
    use std::sync::Arc;
    let p = &config.policy;
    let wanted: Vec<StageName> = p
        .inbound
        .stages
        .iter()
        .chain(&p.outbound.stages)
        .copied()
        .collect();
    let mut made: HashMap<StageName, Arc<dyn Stage>> = HashMap::new();
    for name in wanted {
        if made.contains_key(&name) {
            continue;
        }
        let stage: Arc<dyn Stage> = match name {
            StageName::Reputation => Arc::new(reputation::Reputation {
                allow: reputation::Networks::parse(&p.reputation.allow),
                deny: reputation::Networks::parse(&p.reputation.deny),
                config: p.reputation.clone(),
                store: store.clone(),
            }),
            StageName::Dnsbl => Arc::new(dnsbl::Dnsbl {
                config: p.dnsbl.clone(),
                resolver: resolver.clone(),
                allow: reputation::Networks::parse(&p.reputation.allow),
            }),
            StageName::Spf => Arc::new(auth::Auth {
                config: p.spf.clone(),
                authenticator: mail_auth::MessageAuthenticator(resolver.clone()),
                hostname: config.server.hostname.clone(),
            }),
            StageName::Sender => Arc::new(sender::Sender {
                config: p.sender.clone(),
            }),
            StageName::Limits => Arc::new(limits::LimitsStage {
                config: p.limits.clone(),
            }),
            StageName::Virus => Arc::new(virus::VirusStage::new(&p.virus)),
            StageName::Spam => Arc::new(spam::SpamStage::new(&p.spam)?),
        };
        made.insert(name, stage);
    }
    let trust: Option<Arc<dyn Stage>> = config.trust.enabled().then(|| {
        Arc::new(trust::TrustStage {
            config: config.trust.clone(),
        }) as Arc<dyn Stage>
    });
    let pick = |names: &[StageName]| {
        let listed = names.iter().map(|n| made[n].clone());
        let stages = trust.iter().cloned().chain(listed).collect();
        Pipeline::new(stages, p.stage_timeout)
    };
    Ok((pick(&p.inbound.stages), pick(&p.outbound.stages)))
}
