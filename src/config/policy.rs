use crate::policy::StageName;
use crate::policy::auth::SpfConfig;
use crate::policy::dnsbl::DnsblConfig;
use crate::policy::limits::LimitsConfig;
use crate::policy::reputation::ReputationConfig;
use crate::policy::sender::SenderConfig;
use crate::policy::spam::SpamConfig;
use crate::policy::virus::VirusConfig;
use serde::Deserialize;
use std::time::Duration;

/// `[policy]`: the stages each direction runs, in order, and each stage's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Longest any one stage may take; a slower or failing stage makes the message temp-fail.
    #[serde(with = "humantime_serde")]
    pub stage_timeout: Duration,
    /// `[policy.inbound] stages = [...]`: mail from the internet to our domains.
    pub inbound: Stages,
    /// `[policy.outbound] stages = [...]`: mail from our authorised clients.
    pub outbound: Stages,
    pub reputation: ReputationConfig,
    pub dnsbl: DnsblConfig,
    pub spf: SpfConfig,
    pub sender: SenderConfig,
    pub limits: LimitsConfig,
    pub virus: VirusConfig,
    pub spam: SpamConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    pub stages: Vec<StageName>,
    /// Outbound override: these senders' mail is not held for its spam score (recorded as an
    /// `override` verdict).
    #[serde(default)]
    pub override_senders: Vec<String>,
    /// The same for clients in these networks.
    #[serde(default)]
    pub override_networks: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        use StageName::*;
        Policy {
            stage_timeout: Duration::from_secs(60),
            inbound: Stages {
                // Limits first among the content stages: its walk is linear and bounded, and what it
                // refuses never reaches a parser.
                stages: vec![Reputation, Dnsbl, Spf, Limits, Sender, Virus, Spam],
                override_senders: Vec::new(),
                override_networks: Vec::new(),
            },
            outbound: Stages {
                stages: vec![Limits, Virus, Spam],
                override_senders: Vec::new(),
                override_networks: Vec::new(),
            },
            reputation: Default::default(),
            dnsbl: Default::default(),
            spf: Default::default(),
            sender: Default::default(),
            limits: Default::default(),
            virus: Default::default(),
            spam: Default::default(),
        }
    }
}
