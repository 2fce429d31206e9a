use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[delivery]`: our SMTP client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Opening the TCP connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Each command's reply, and the whole DATA transfer.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// `host:port` that takes every recipient outside our own domains. Empty: MX lookup.
    pub smarthost: String,
    /// TLS for the smarthost: `require` or `require-verified`.
    pub smarthost_tls: super::RouteTls,
    /// Port for destinations found by MX lookup.
    pub port: u16,
    /// Extra PEM trust anchors for `require-verified`, beside the public web PKI roots.
    pub trusted_ca: Option<PathBuf>,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            smarthost: String::new(),
            smarthost_tls: super::RouteTls::Require,
            port: 25,
            trusted_ca: None,
        }
    }
}
