//! The directory of our domains' people, and who gets a copy of their mail.
//!
//! At RCPT, a recipient in one of our domains (`relay.domains`) is looked up when
//! `[directory] enabled = true`: it is known when the store's `directory` table has it (managed
//! with `passerelle directory`), or else when `[directory.ldap]` is set and an LDAP search under
//! its base with its filter finds an entry. Unknown: `550 5.1.1`. A directory that cannot be
//! asked (LDAP unreachable or slower than its timeout, the store down): `451 4.4.3`, so the
//! sending server tries again later; never an unchecked accept.
//!
//! Addresses are compared in lower case, **local part included**: `Dr.Martin@example.org` and
//! `dr.martin@example.org` are the same person. RFC 5321 lets a local part be case-sensitive,
//! but no directory of people relies on it, and a sender's capitalisation must not bounce mail.
//! `postmaster@` each of our domains is always known (RFC 5321 §4.5.1).
//!
//! Delegation copies: an address may have delegates (a physician's secretary). When an inbound
//! message is accepted, each recipient with delegates gives one more recipient per delegate,
//! with `recipients.copy_of` naming the delegating address. Each copy is a recipient of its own,
//! with its own attempts and events. The expansion happens once, at acceptance, so a later
//! change of delegations does not alter mail already queued. A delegate who is already a
//! recipient, or the delegate of two recipients, gets one copy. Copies are not expanded again
//! (the secretary's own delegates get nothing).

mod csv;
mod ldap;
mod store;

pub use csv::{Line, LineError, Parsed, parse as parse_csv};
pub use store::{Entry, Imported};

use crate::config;
use crate::store::Store;
use std::collections::HashSet;

/// Whether an address is known, and by what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// In the store's `directory` table.
    Table,
    /// Found by the LDAP search.
    Ldap,
    /// `postmaster@` one of our domains: always accepted.
    Postmaster,
    Unknown,
}

impl Known {
    pub fn is_known(self) -> bool {
        self != Known::Unknown
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Known::Table => "table",
            Known::Ldap => "ldap",
            Known::Postmaster => "postmaster",
            Known::Unknown => "unknown",
        }
    }
}

/// The directory could not be asked: the caller answers `451 4.4.3`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the directory table: {0:#}")]
    Store(anyhow::Error),
    #[error("asking the LDAP directory: {0}")]
    Ldap(String),
}

/// A delegation copy made at acceptance: `delegate` receives a copy of what came for `copy_of`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Copy {
    pub delegate: String,
    pub copy_of: String,
}

/// The directory as the daemon uses it: built once at boot from `[directory]` and the store.
pub struct Directory {
    enabled: bool,
    store: Store,
    ldap: Option<ldap::LdapDirectory>,
}

impl Directory {
    pub fn new(config: &config::Directory, store: Store) -> Directory {
        Directory {
            enabled: config.enabled,
            store,
            ldap: config.ldap.clone().map(ldap::LdapDirectory::new),
        }
    }

    /// Whether recipients of our domains are checked at RCPT.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Is `address` one of our people? The table first (cheap, and it holds the exceptions),
    /// then LDAP when configured.
    pub async fn lookup(&self, address: &str) -> Result<Known, Error> {
        let address = normalise(address);
        if address.starts_with("postmaster@") {
            return Ok(Known::Postmaster);
        }
        if self
            .store
            .directory_has(&address)
            .await
            .map_err(Error::Store)?
        {
            return Ok(Known::Table);
        }
        match &self.ldap {
            Some(l) if l.find(&address).await.map_err(Error::Ldap)? => Ok(Known::Ldap),
            _ => Ok(Known::Unknown),
        }
    }
}

/// The delegation copies for a message to `rcpts`, in recipient order, given the delegations
/// `(address, delegate)` of its recipients (and maybe of others): one per delegate, none for a
/// delegate who is already a recipient or already has a copy. `copy_of` is the recipient as it
/// appears in `rcpts` (the address of its own recipient row).
pub fn copies_from(rcpts: &[String], pairs: &[(String, String)]) -> Vec<Copy> {
    if pairs.is_empty() {
        return Vec::new();
    }
    let lower: Vec<String> = rcpts.iter().map(|r| normalise(r)).collect();
    let mut seen: HashSet<&str> = lower.iter().map(String::as_str).collect();
    let mut copies = Vec::new();
    for (rcpt, low) in rcpts.iter().zip(&lower) {
        for (_, delegate) in pairs.iter().filter(|(a, _)| a == low) {
            if seen.insert(delegate) {
                copies.push(Copy {
                    delegate: delegate.clone(),
                    copy_of: rcpt.clone(),
                });
            }
        }
    }
    copies
}

/// The form addresses are kept and compared in: trimmed, lower case (local part too).
pub fn normalise(address: &str) -> String {
    address.trim().to_lowercase()
}

/// A normalised address fit for the directory, or why not.
pub fn check_address(address: &str) -> Result<String, String> {
    let address = normalise(address);
    let Some((local, domain)) = crate::envelope::split(&address) else {
        return Err(format!("\"{address}\" is not an address (local@domain)"));
    };
    if !crate::envelope::is_dot_atom(local) || !crate::envelope::is_domain(&domain) {
        return Err(format!("\"{address}\" is not a valid address"));
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_per_delegate_never_to_a_recipient() {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, d)| (a.to_string(), d.to_string()))
                .collect()
        };
        let rcpts = [
            "Dr.Martin@example.org".to_string(),
            "nurse@example.org".to_string(),
        ];
        let delegations = pairs(&[
            ("dr.martin@example.org", "sec@example.org"),
            ("dr.martin@example.org", "nurse@example.org"),
            ("nurse@example.org", "sec@example.org"),
            ("someone.else@example.org", "other@example.org"),
        ]);
        let copies = copies_from(&rcpts, &delegations);
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(copies[0].delegate, "sec@example.org");
        assert_eq!(
            copies[0].copy_of, "Dr.Martin@example.org",
            "as the recipient was written"
        );
        assert!(copies_from(&rcpts, &[]).is_empty());
    }

    #[test]
    fn addresses_are_compared_in_lower_case() {
        assert_eq!(
            normalise(" Dr.Martin@Example.ORG "),
            "dr.martin@example.org"
        );
        assert_eq!(
            check_address("Bob@Example.test"),
            Ok("bob@example.test".into())
        );
        for bad in [
            "bob",
            "@example.test",
            "bob@",
            "a b@example.test",
            "bob@localhost",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }
}
