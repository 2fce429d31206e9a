//! The policy file: TOML, one struct per section, sections in the order a message meets them.
//!
//! [`load`] reports **every** error at once, each with its key path
//! (`listeners[1].address: invalid socket address "x"`), and never half-loads a file: ops edit the
//! file, run `passerelle check-config`, and restart only once it is clean.
//!
//! How errors are collected: serde stops at the first bad key, so each section (and each listener,
//! each relay domain) is deserialised on its own; when one fails, the offending key is removed and
//! the section is tried again, so the next bad key is found too. Then [`validate`] checks what
//! serde cannot (addresses, networks, files, ranges) and adds its own errors to the same list.

mod admin;
mod delivery;
pub mod diff;
mod directory;
mod dns;
mod listeners;
mod policy;
mod queue;
mod relay;
mod server;
mod store;
mod tls;
mod trust;
mod validate;

pub use admin::{Admin, Log, redacting, show_address};
pub use delivery::Delivery;
pub use directory::{Directory, Ldap};
pub use dns::Dns;
pub use listeners::{BareLf, Listener, ListenerTls, Session};
pub use policy::{Policy, Stages};
pub use queue::Queue;
pub use relay::{Relay, Route, RouteTls};
pub use server::Server;
pub use store::Store;
pub use tls::{Tls, TlsVersion};
pub use trust::Trust;
pub use validate::redact_url;

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// The whole policy, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub listeners: Vec<Listener>,
    pub session: Session,
    pub tls: Tls,
    pub relay: Relay,
    pub trust: Trust,
    pub directory: Directory,
    pub policy: Policy,
    pub queue: Queue,
    pub delivery: Delivery,
    /// `[dkim."domain"]`: signing keys for outbound mail.
    pub dkim: std::collections::BTreeMap<String, crate::dkim::DkimKey>,
    pub store: Store,
    pub dns: Dns,
    pub admin: Admin,
    pub log: Log,
    /// SHA-256 of the file's bytes (hex, 16 digits): recorded with every event.
    pub hash: String,
    /// Where the file was read from: relative paths inside it are relative to the working directory.
    pub path: PathBuf,
}

/// One problem in the file, with the key path that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// All the problems of one file; `Display` prints one per line, prefixed with the file name.
#[derive(Debug)]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(
            f,
            "{}: {n} error{} in the policy file",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors while a file is read.
#[derive(Default)]
pub(crate) struct Errors(Vec<ConfigError>);

impl Errors {
    pub(crate) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }
}

const SECTIONS: &[&str] = &[
    "server",
    "listeners",
    "session",
    "tls",
    "relay",
    "trust",
    "directory",
    "policy",
    "queue",
    "delivery",
    "dkim",
    "store",
    "dns",
    "admin",
    "log",
];

/// Reads, parses and validates the policy file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        path: path.to_owned(),
        errors,
    };
    let bytes = std::fs::read(path).map_err(|e| {
        fail(vec![ConfigError {
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    let mut config = parse(&bytes).map_err(fail)?;
    config.path = path.to_owned();
    Ok(config)
}

/// Parses and validates a policy file's bytes.
pub fn parse(bytes: &[u8]) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Errors::default();
    let text = std::str::from_utf8(bytes).map_err(|e| {
        vec![ConfigError {
            key: String::new(),
            message: format!("the file is not UTF-8: {e}"),
        }]
    })?;
    let mut root: Table = toml::from_str(text).map_err(|e| {
        vec![ConfigError {
            key: String::new(),
            message: format!("TOML syntax: {}", e.to_string().trim_end()),
        }]
    })?;
    for key in root.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            errors.add(
                key.clone(),
                format!("unknown section, expected one of: {}", SECTIONS.join(", ")),
            );
        }
    }
    let mut take = |name: &str| root.remove(name);

    let server: Server = section(take("server"), "server", &mut errors);
    let listeners = listeners::parse(take("listeners"), &mut errors);
    let session: Session = section(take("session"), "session", &mut errors);
    let tls: Tls = section(take("tls"), "tls", &mut errors);
    let relay = relay::parse(take("relay"), &mut errors);
    let trust: Trust = section(take("trust"), "trust", &mut errors);
    let directory: Directory = section(take("directory"), "directory", &mut errors);
    let policy: Policy = section(take("policy"), "policy", &mut errors);
    let queue: Queue = section(take("queue"), "queue", &mut errors);
    let delivery: Delivery = section(take("delivery"), "delivery", &mut errors);
    let dkim = section(take("dkim"), "dkim", &mut errors);
    let store: Store = section(take("store"), "store", &mut errors);
    let dns: Dns = section(take("dns"), "dns", &mut errors);
    let admin: Admin = section(take("admin"), "admin", &mut errors);
    let log: Log = section(take("log"), "log", &mut errors);

    let config = Config {
        server,
        listeners,
        session,
        tls,
        relay,
        trust,
        directory,
        policy,
        queue,
        delivery,
        dkim,
        store,
        dns,
        admin,
        log,
        hash: hash(bytes),
        path: PathBuf::new(),
    };
    validate::validate(&config, &mut errors);
    if errors.0.is_empty() {
        Ok(config)
    } else {
        Err(errors.0)
    }
}

/// The hash a node logs at start and records with every event, of a file's bytes.
pub fn file_hash(bytes: &[u8]) -> String {
    hash(bytes)
}

fn hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// Deserialises one table, collecting every bad key: after an error, the key it names is removed
/// and the table is tried again, so that the next bad key is reported too. Falls back to the
/// default when the table cannot be read at all.
pub(crate) fn section<T: DeserializeOwned + Default>(
    value: Option<Value>,
    prefix: &str,
    errors: &mut Errors,
) -> T {
    let Some(value) = value else {
        return T::default();
    };
    let Value::Table(mut table) = value else {
        errors.add(
            prefix,
            format!("expected a table, got {}", value.type_str()),
        );
        return T::default();
    };
    // Each round removes one key, so this ends; the bound is a guard.
    for _ in 0..=table.len() + 1 {
        let de = Value::Table(table.clone());
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) => return v,
            Err(e) => {
                let inner = e.inner().to_string();
                let path: Vec<String> = e
                    .path()
                    .iter()
                    .map(|s| s.to_string())
                    .filter(|s| s != "?")
                    .collect();
                // "unknown field `x`" names a key that the path does not reach.
                let unknown = inner
                    .strip_prefix("unknown field `")
                    .and_then(|s| s.split('`').next())
                    .map(str::to_owned);
                let mut key_path = path.clone();
                if let Some(u) = unknown.as_ref().filter(|_| path.is_empty()) {
                    key_path.push(u.clone());
                }
                errors.add(join_key(prefix, &key_path), clean_message(&inner));
                let top = match (path.first(), &unknown) {
                    (Some(first), _) => first.clone(),
                    (None, Some(u)) => u.clone(),
                    (None, None) => return T::default(),
                };
                if table.remove(&top).is_none() {
                    return T::default();
                }
            }
        }
    }
    T::default()
}

pub(crate) fn join_key(prefix: &str, path: &[String]) -> String {
    let mut key = prefix.to_owned();
    for seg in path {
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(seg);
    }
    key
}

fn clean_message(inner: &str) -> String {
    // toml's errors repeat the TOML snippet on several lines; the first line says what is wrong.
    inner.lines().next().unwrap_or(inner).trim().to_owned()
}

#[cfg(test)]
mod tests;
