use super::RouteTls;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `[delivery]`: our SMTP client, and where mail for other domains goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Opening the TCP connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Each command's reply, and the whole DATA transfer.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// `host:port` that takes every recipient outside our own domains and `routes`. Empty: MX.
    pub smarthost: String,
    /// TLS towards the smarthost.
    pub smarthost_tls: RouteTls,
    /// Port for hosts found by MX lookup.
    pub port: u16,
    /// TLS towards destinations found by MX lookup, unless `tls_policy` names the domain.
    pub tls: RouteTls,
    /// Per-domain TLS policy overrides: `"partner.example" = "require-verified"`.
    pub tls_policy: BTreeMap<String, RouteTls>,
    /// Static routes, like Postfix's transport map: `"legacy.example" = "10.0.0.5:25"`.
    pub routes: BTreeMap<String, String>,
    /// Extra PEM trust anchors for `require-verified`, beside the public web PKI roots.
    pub trusted_ca: Option<PathBuf>,
    /// How long an idle outbound connection is kept for the next message to the same host.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            smarthost: String::new(),
            smarthost_tls: RouteTls::Require,
            port: 25,
            tls: RouteTls::Require,
            tls_policy: BTreeMap::new(),
            routes: BTreeMap::new(),
            trusted_ca: None,
            idle_timeout: Duration::from_secs(30),
        }
    }
}
