use super::{Errors, section};
use serde::Deserialize;
use std::time::Duration;
use toml::Value;

/// One `[[listeners]]` entry: an address and how TLS starts on it.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// A name for logs and events (`mx`, `submission`).
    pub name: String,
    /// `ip:port`; port 0 picks a free port (the bound address is logged).
    pub address: String,
    /// `starttls`: plaintext greeting, STARTTLS required before MAIL (MX, port 25).
    /// `implicit`: TLS from the first byte (submission, RFC 8314, port 465).
    #[serde(default)]
    pub tls: ListenerTls,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerTls {
    #[default]
    Starttls,
    Implicit,
}

pub(super) fn parse(value: Option<Value>, errors: &mut Errors) -> Vec<Listener> {
    match value {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| section(Some(item), &format!("listeners[{i}]"), errors))
            .collect(),
        Some(other) => {
            errors.add(
                "listeners",
                format!(
                    "expected an array of tables ([[listeners]]), got {}",
                    other.type_str()
                ),
            );
            Vec::new()
        }
    }
}

/// `[session]`: limits and timeouts of an SMTP session, on every listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Session {
    /// Connections open at once, all listeners together; more get `421` and are closed.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_ip: usize,
    /// New connections per minute from one IP address (a burst of as many, then evenly);
    /// 0: no limit. Clients in `relay.networks` are not limited.
    pub max_connection_rate_per_ip: u32,
    /// Messages (MAIL commands) per minute from one IP address; 0: no limit. Clients in
    /// `relay.networks` and authenticated senders are not limited.
    pub max_message_rate_per_ip: u32,
    /// Waiting for a command (RFC 5321 §4.5.3.2.7: 5 minutes).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Waiting for the next chunk of DATA (RFC 5321 §4.5.3.2.5: 3 minutes).
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// The whole session, however busy: a client trickling bytes cannot hold a connection longer.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// The TLS handshake after STARTTLS or on an implicit-TLS listener.
    #[serde(with = "humantime_serde")]
    pub tls_timeout: Duration,
    /// Largest message in octets, as received (advertised as SIZE). Default 50 MB.
    pub max_message_size: usize,
    /// A technical bound on RCPT per message (`452 4.5.3` beyond).
    pub max_recipients: usize,
    /// Bad commands tolerated before the session is closed with `421`.
    pub max_errors: usize,
    /// A bare LF or bare CR in DATA: `reject` (`550 5.5.2`) or `normalise` (to CRLF).
    pub bare_lf: BareLf,
    /// `Received:` fields a message may already carry; more is a mail loop, refused with
    /// `554 5.4.6` (RFC 5321 §6.3 asks for at least 100).
    pub max_hops: usize,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BareLf {
    Reject,
    #[serde(alias = "normalize")]
    Normalise,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            max_connections: 1000,
            max_connections_per_ip: 20,
            max_connection_rate_per_ip: 0,
            max_message_rate_per_ip: 0,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            tls_timeout: Duration::from_secs(30),
            max_duration: Duration::from_secs(3600),
            max_message_size: 52_428_800,
            max_recipients: 1000,
            max_errors: 10,
            bare_lf: BareLf::Reject,
            max_hops: 100,
        }
    }
}
