use super::{Errors, section};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Value;

/// `[relay]`: whose mail we accept. Inbound: recipients in `domains`, from anyone.
/// Outbound: any recipient, only from a client in `networks`. Everything else: `554 5.7.1`.
#[derive(Debug, Clone, Default)]
pub struct Relay {
    /// Client networks (CIDR) allowed to relay outbound.
    pub networks: Vec<String>,
    /// Our own domains (lower case), each with its next hop.
    pub domains: BTreeMap<String, Route>,
    /// SMTP AUTH users allowed to relay outbound (login name → argon2 PHC hash).
    pub users: BTreeMap<String, User>,
    /// An authenticated user may only send as its own domain (the part after `@` of its login).
    pub sender_must_match: bool,
    /// PEM CA certificates of partner gateways: a client presenting a certificate issued by one
    /// of them may relay outbound. Certificates are asked for, never required.
    pub client_ca: Option<std::path::PathBuf>,
}

/// `[relay.users."alice@example.org"]`: one SMTP AUTH account.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// `$argon2id$…`, from `passerelle hash-password`. Never the password itself.
    pub password_hash: String,
}

/// `[relay.domains."example.org"]`: where mail for one of our domains goes.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// `host:port` of the organisation's internal mail server.
    pub next_hop: String,
    /// `require` (TLS, any certificate), `require-verified` (chain and host name checked) or
    /// `opportunistic` (TLS when offered, else in clear).
    #[serde(default)]
    pub tls: RouteTls,
}

/// TLS policy towards one destination. Whatever cannot be met is deferred, never sent in clear
/// (except under `opportunistic`, which allows clear text by definition).
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum RouteTls {
    /// STARTTLS required, any certificate (protects against passive eavesdropping).
    #[default]
    Require,
    /// STARTTLS required, chain to a trusted root and the host name checked.
    RequireVerified,
    /// STARTTLS when the server offers it, any certificate; clear text otherwise.
    Opportunistic,
    /// A trust-space peer (`[trust]`): chain to the trust space's CA and host name checked, and
    /// our own client certificate presented. Chosen for peer domains whatever else is set.
    TrustSpace,
}

impl RouteTls {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteTls::Require => "require",
            RouteTls::RequireVerified => "require-verified",
            RouteTls::Opportunistic => "opportunistic",
            RouteTls::TrustSpace => "trust-space",
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Top {
    networks: Vec<String>,
    users: BTreeMap<String, User>,
    sender_must_match: bool,
    client_ca: Option<std::path::PathBuf>,
    // Each domain is read on its own below, so that every bad one is reported.
    domains: Option<Value>,
}

pub(super) fn parse(value: Option<Value>, errors: &mut Errors) -> Relay {
    let top: Top = section(value, "relay", errors);
    let mut domains = BTreeMap::new();
    match top.domains {
        None => {}
        Some(Value::Table(t)) => {
            for (name, v) in t {
                let key = format!("relay.domains.\"{name}\"");
                let route: Route = section(Some(v), &key, errors);
                domains.insert(name.to_ascii_lowercase(), route);
            }
        }
        Some(other) => errors.add(
            "relay.domains",
            format!("expected a table of domains, got {}", other.type_str()),
        ),
    }
    Relay {
        networks: top.networks,
        domains,
        users: top.users,
        sender_must_match: top.sender_must_match,
        client_ca: top.client_ca,
    }
}
