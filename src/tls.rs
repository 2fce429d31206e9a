//! rustls everywhere: our server certificate for STARTTLS and implicit TLS, and the client
//! configurations our delivery uses (`require`: any certificate; `require-verified`: chain and
//! host name checked against the web PKI roots and `[delivery] trusted_ca`).

use crate::config::{Config, TlsVersion};
use crate::envelope::TlsFacts;
use anyhow::{Context, Result, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// Installs ring as the process's one crypto provider. Called first thing by `main` and the tests.
pub fn install_provider() {
    let _ = ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY_13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        TlsVersion::V1_2 => &BOTH,
        TlsVersion::V1_3 => &ONLY_13,
    }
}

/// Makes a self-signed certificate for `hostname` when neither file exists and the config asks
/// for it (the quick start). The key is written readable by its owner only.
pub fn ensure_certificate(config: &Config) -> Result<()> {
    let t = &config.tls;
    if !t.generate_if_missing || t.certificate.exists() || t.private_key.exists() {
        return Ok(());
    }
    let host = config.server.hostname.clone();
    let cert = rcgen::generate_simple_self_signed(vec![host.clone()])
        .context("generating a self-signed certificate")?;
    for path in [&t.certificate, &t.private_key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    std::fs::write(&t.certificate, cert.cert.pem())
        .with_context(|| format!("writing {}", t.certificate.display()))?;
    write_private(&t.private_key, cert.signing_key.serialize_pem().as_bytes())?;
    tracing::warn!(
        certificate = %t.certificate.display(),
        %host,
        "made a self-signed certificate (tls.generate_if_missing); use a real one in production"
    );
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

pub fn server_config(config: &Config) -> Result<Arc<rustls::ServerConfig>> {
    let t = &config.tls;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.certificate)
        .with_context(|| format!("reading {}", t.certificate.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", t.certificate.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in the file", t.certificate.display());
    }
    let key = PrivateKeyDer::from_pem_file(&t.private_key)
        .with_context(|| format!("reading the private key {}", t.private_key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(t.min_version))?;
    // Client certificates are asked for, never required (ordinary MX clients have none), when
    // partner gateways (relay.client_ca) or trust-space peers (trust.ca) may present one; the
    // handshake accepts either, and `ClientCerts::facts` tells afterwards which CA issued it.
    let cas: Vec<&Path> = [&config.relay.client_ca, &config.trust.ca]
        .into_iter()
        .flatten()
        .map(|p| p.as_path())
        .collect();
    let builder = if cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let verifier = client_verifier(&cas)?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .context("the certificate does not match the private key")?;
    server.ignore_client_order = true;
    Ok(Arc::new(server))
}

fn roots(cas: &[&Path]) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            roots
                .add(cert.with_context(|| format!("reading {}", ca.display()))?)
                .with_context(|| format!("{}: not a usable CA certificate", ca.display()))?;
        }
    }
    Ok(roots)
}

fn client_verifier(cas: &[&Path]) -> Result<Arc<dyn ClientCertVerifier>> {
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(cas)?), provider())
        .allow_unauthenticated()
        .build()
        .with_context(|| format!("client certificate CA {}", cas[0].display()))
}

/// Which CA issued a client's certificate: the handshake accepted any of them; these tell
/// them apart, each checking the chain against its own roots only.
#[derive(Clone, Default)]
pub struct ClientCerts {
    /// `relay.client_ca`: the client may relay outbound.
    relay: Option<Arc<dyn ClientCertVerifier>>,
    /// `trust.ca`, and the peer domains of `[trust]`.
    trust: Option<(Arc<dyn ClientCertVerifier>, crate::config::Trust)>,
}

impl ClientCerts {
    pub fn new(config: &Config) -> Result<ClientCerts> {
        let relay = match &config.relay.client_ca {
            Some(ca) => Some(client_verifier(&[ca])?),
            None => None,
        };
        let trust = match (&config.trust.ca, config.trust.enabled()) {
            (Some(ca), true) => Some((client_verifier(&[ca])?, config.trust.clone())),
            _ => None,
        };
        Ok(ClientCerts { relay, trust })
    }

    /// The facts of a server-side session, with what its client certificate proves.
    pub fn facts(&self, conn: &rustls::CommonState) -> TlsFacts {
        let mut facts = facts(conn);
        facts.client_certificate = false;
        let Some((leaf, chain)) = conn.peer_certificates().and_then(|c| c.split_first()) else {
            return facts;
        };
        let now = UnixTime::now();
        let issued_by =
            |v: &Arc<dyn ClientCertVerifier>| v.verify_client_cert(leaf, chain, now).is_ok();
        facts.client_certificate = self.relay.as_ref().is_some_and(issued_by);
        if let Some((verifier, trust)) = &self.trust
            && issued_by(verifier)
            && let Ok(cert) = webpki::EndEntityCert::try_from(leaf)
        {
            // A name in the certificate that is a peer domain or a host under one proves it.
            let names: Vec<String> = cert
                .valid_dns_names()
                .map(str::to_ascii_lowercase)
                .collect();
            for name in &names {
                if let Some(peer) = trust.peer_domain(name)
                    && !facts.peer_domains.iter().any(|p| p == peer)
                {
                    facts.peer_domains.push(peer.to_owned());
                }
            }
            facts.certificate_name = names.into_iter().next();
        }
        facts
    }
}

/// Client configurations for delivery, built once at start.
#[derive(Clone)]
pub struct ClientTls {
    /// Any certificate: TLS protects against passive eavesdropping only.
    pub any: Arc<rustls::ClientConfig>,
    /// Certificate chain to a trusted root and host name checked.
    pub verified: Arc<rustls::ClientConfig>,
    /// Toward trust-space peers: chain to `trust.ca` only, host name checked, and our own
    /// certificate (`trust.certificate`) presented.
    pub trust: Option<Arc<rustls::ClientConfig>>,
}

pub fn client_configs(config: &Config) -> Result<ClientTls> {
    let extra: Vec<&Path> = config
        .delivery
        .trusted_ca
        .iter()
        .map(|p| p.as_path())
        .collect();
    let mut web = roots(&extra)?;
    web.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let verified = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(TlsVersion::V1_2))?
        .with_root_certificates(web)
        .with_no_client_auth();
    let any = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(TlsVersion::V1_2))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth();
    let trust = match (
        &config.trust.ca,
        &config.trust.certificate,
        &config.trust.key,
    ) {
        (Some(ca), Some(cert), Some(key)) if config.trust.enabled() => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading {}", cert.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("reading {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading the private key {}", key.display()))?;
            let c = rustls::ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(versions(TlsVersion::V1_2))?
                .with_root_certificates(roots(&[ca])?)
                .with_client_auth_cert(chain, key)
                .context("trust.certificate does not match trust.key")?;
            Some(Arc::new(c))
        }
        _ => None,
    };
    Ok(ClientTls {
        any: Arc::new(any),
        verified: Arc::new(verified),
        trust,
    })
}

/// `require`: the handshake must succeed and be signed by the certificate's key, but the
/// certificate itself is not judged, as with Postfix's `smtp_tls_security_level = encrypt`.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Version and cipher of an established connection, for events and `Received:`; whether the
/// peer presented a certificate our client CA verified.
pub fn facts(conn: &rustls::CommonState) -> TlsFacts {
    TlsFacts {
        peer_domains: Vec::new(),
        certificate_name: None,
        client_certificate: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
        version: conn
            .protocol_version()
            .map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default(),
        cipher: conn
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str())
            .unwrap_or("")
            .to_owned(),
    }
}
