use serde::Deserialize;
use std::time::Duration;

/// `[dns]`: the one resolver every lookup goes through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// `ip:port` of recursive resolvers. Empty: the system's /etc/resolv.conf.
    pub nameservers: Vec<String>,
    /// Per query.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Tries per query.
    pub attempts: usize,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}
