use serde::Deserialize;
use std::path::PathBuf;

/// `[trust]`: the trust space — peer gateways of other organisations, each proven by a
/// certificate from the trust space's CA. Mail to a peer domain goes only over verified TLS with
/// our own client certificate; mail claiming a peer domain as sender is accepted only from a
/// client whose certificate (issued by `ca`) names that domain.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Trust {
    /// Peer domains (lower case). A subdomain of a listed domain is a peer too.
    pub domains: Vec<String>,
    /// PEM CA certificate(s) issuing the peers' gateway certificates.
    pub ca: Option<PathBuf>,
    /// Our gateway's certificate chain (PEM), presented to peers when we deliver to them.
    pub certificate: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

impl Trust {
    pub fn enabled(&self) -> bool {
        !self.domains.is_empty()
    }

    /// The listed peer domain that `domain` is, or is a subdomain of.
    pub fn peer_domain(&self, domain: &str) -> Option<&str> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.domains
            .iter()
            .find(|d| domain == **d || domain.ends_with(&format!(".{d}")))
            .map(String::as_str)
    }
}
