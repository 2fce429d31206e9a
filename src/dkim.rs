//! DKIM signing of outbound mail (RFC 6376, mail-auth): a message whose `From:` domain has a key
//! in `[dkim]` gets a `DKIM-Signature` before it is queued, after every policy change, so that
//! receivers can verify it. Keys are PKCS#8 (RSA or Ed25519) or PKCS#1 (RSA) PEM files.

use anyhow::{Context, Result};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `[dkim."example.org"]`: the key our outbound mail from that domain is signed with.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    /// Published as `<selector>._domainkey.<domain>` TXT.
    pub selector: String,
    pub private_key: PathBuf,
}

/// The header fields signed, when present (RFC 6376 §5.4.1's recommendations).
const SIGNED: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// Every domain's signer, loaded at start (a bad key stops the start with its file named).
#[derive(Default)]
pub struct Signers(BTreeMap<String, Signer>);

impl Signers {
    pub fn load(keys: &BTreeMap<String, DkimKey>) -> Result<Signers> {
        let mut out = BTreeMap::new();
        for (domain, k) in keys {
            let key = PrivateKeyDer::from_pem_file(&k.private_key).with_context(|| {
                format!("dkim.\"{domain}\": reading {}", k.private_key.display())
            })?;
            let headers = SIGNED.iter().copied();
            let ed25519 = match &key {
                PrivateKeyDer::Pkcs8(der) => {
                    Ed25519Key::from_pkcs8_der(der.secret_pkcs8_der()).ok()
                }
                _ => None,
            };
            let signer = match ed25519 {
                Some(ed) => Signer::Ed25519(
                    DkimSigner::from_key(ed)
                        .domain(domain)
                        .selector(&k.selector)
                        .headers(headers),
                ),
                None => {
                    let rsa = RsaKey::<Sha256>::from_key_der(key).map_err(|e| {
                        anyhow::anyhow!("dkim.\"{domain}\": {}: {e}", k.private_key.display())
                    })?;
                    Signer::Rsa(
                        DkimSigner::from_key(rsa)
                            .domain(domain)
                            .selector(&k.selector)
                            .headers(headers),
                    )
                }
            };
            out.insert(domain.to_ascii_lowercase(), signer);
        }
        Ok(Signers(out))
    }

    /// The message with a `DKIM-Signature` on top when its `From:` domain has a key; unchanged
    /// otherwise (and when signing fails, which is logged: an unsigned message still goes).
    pub fn sign(&self, message: Vec<u8>) -> Vec<u8> {
        if self.0.is_empty() {
            return message;
        }
        let Some(domain) = from_domain(&message) else {
            return message;
        };
        let Some(signer) = self.0.get(&domain) else {
            return message;
        };
        let signed = match signer {
            Signer::Rsa(s) => s.sign(&message).map(|sig| sig.to_header()),
            Signer::Ed25519(s) => s.sign(&message).map(|sig| sig.to_header()),
        };
        match signed {
            Ok(header) => [header.as_bytes(), &message].concat(),
            Err(e) => {
                tracing::warn!(%domain, error = %e, "DKIM signing failed; sent unsigned");
                message
            }
        }
    }
}

fn from_domain(message: &[u8]) -> Option<String> {
    let from = crate::message::header_fields(message, "From");
    let parsed = mail_parser::MessageParser::default().parse_headers(&from)?;
    let address = parsed.from()?.first()?.address()?;
    Some(address.rsplit_once('@')?.1.to_ascii_lowercase())
}
