use serde::Deserialize;
use std::path::PathBuf;

/// `[tls]`: our server certificate, for STARTTLS and implicit TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// When both files are missing, make a self-signed certificate for `server.hostname` at start
    /// (the quick start). Off in production: a missing certificate is then an error.
    pub generate_if_missing: bool,
    /// Lowest TLS version accepted: "1.2" or "1.3".
    pub min_version: TlsVersion,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            certificate: PathBuf::from("/etc/passerelle/tls/cert.pem"),
            private_key: PathBuf::from("/etc/passerelle/tls/key.pem"),
            generate_if_missing: false,
            min_version: TlsVersion::V1_2,
        }
    }
}
