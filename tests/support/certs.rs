//! A test CA made at start, and certificates it signs (rcgen), written as PEM files.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};

pub struct TestCa {
    pub ca_pem: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
}

pub struct LeafFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Passerelle Test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, cert.pem()).unwrap();
        TestCa {
            ca_pem,
            issuer: Issuer::new(params, key),
            dir: dir.to_owned(),
        }
    }

    /// A leaf certificate for these names (DNS names or IP addresses), signed by the CA.
    pub fn leaf(&self, file_stem: &str, names: &[&str]) -> LeafFiles {
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = LeafFiles {
            cert: self.dir.join(format!("{file_stem}.pem")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// A rustls client config that trusts this CA only and presents `leaf` (from any CA) as
    /// its client certificate.
    pub fn client_config_presenting(&self, leaf: &LeafFiles) -> rustls::ClientConfig {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(&leaf.cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
        rustls::ClientConfig::builder()
            .with_root_certificates(self.roots())
            .with_client_auth_cert(certs, key)
            .unwrap()
    }

    fn roots(&self) -> rustls::RootCertStore {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.ca_pem).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    }

    /// A rustls client config that trusts this CA only.
    pub fn client_config(&self) -> rustls::ClientConfig {
        rustls::ClientConfig::builder()
            .with_root_certificates(self.roots())
            .with_no_client_auth()
    }
}
