//! `sign`: the cost of the server's one signature per full TLS handshake, with the same rustls
//! (ring) code the servers under test run, on a key file of the benchmark. It tells how much of a
//! handshake's CPU is the certificate type, and sets ring's figure beside OpenSSL's (which
//! Postfix signs with): `openssl speed rsa2048 ecdsap256`.

use anyhow::{Context, Result, bail};
use clap::Args;
use rustls::SignatureScheme;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct SignArgs {
    /// A PEM private key (RSA or ECDSA), e.g. the certificate set `compare.sh KEEP=1` leaves.
    #[arg(long)]
    key: PathBuf,
    /// Signatures to time.
    #[arg(short, long, default_value_t = 2000)]
    n: u32,
}

pub fn run(args: SignArgs) -> Result<()> {
    let der = PrivateKeyDer::from_pem_file(&args.key)
        .with_context(|| format!("reading {}", args.key.display()))?;
    let key = rustls::crypto::ring::sign::any_supported_type(&der)
        .with_context(|| format!("{}: not a key rustls can sign with", args.key.display()))?;
    // What a TLS 1.3 server picks for each key type.
    let offered = [
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::ED25519,
        SignatureScheme::RSA_PSS_SHA256,
    ];
    let Some(signer) = key.choose_scheme(&offered) else {
        bail!(
            "{}: no TLS 1.3 signature scheme for this key",
            args.key.display()
        );
    };
    // A handshake signs about 130 octets (the transcript hash with its context string).
    let message = [0x20u8; 130];
    signer.sign(&message)?;
    let started = Instant::now();
    for _ in 0..args.n {
        signer.sign(&message)?;
    }
    let ms = started.elapsed().as_secs_f64() * 1e3 / f64::from(args.n.max(1));
    println!(
        "sign: scheme={:?} signatures={} ms_per_signature={ms:.4}",
        signer.scheme(),
        args.n
    );
    Ok(())
}
