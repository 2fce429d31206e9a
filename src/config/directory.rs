use serde::Deserialize;
use std::time::Duration;

/// `[directory]`: the people of our domains. When enabled, a recipient in one of our domains that
/// is not in the directory is refused at RCPT (`550 5.1.1`); a directory that cannot be asked
/// gives `451 4.4.3`, so the sender's server tries again later.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Directory {
    /// Check recipients of our domains against the store's `directory` table (managed with
    /// `passerelle directory`), and against `[directory.ldap]` when it is set.
    pub enabled: bool,
    pub ldap: Option<Ldap>,
}

/// `[directory.ldap]`: an LDAP server that knows our people. An address is known when it is in
/// the store's table or when the search finds an entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ldap {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Search base, e.g. `ou=people,dc=example,dc=org`.
    pub base: String,
    /// Search filter; `{address}` is replaced by the recipient, escaped (RFC 4515).
    #[serde(default = "default_filter")]
    pub filter: String,
    /// Simple bind; anonymous when absent.
    #[serde(default)]
    pub bind_dn: Option<String>,
    #[serde(default)]
    pub bind_password: Option<String>,
    /// Connect plus search, per recipient.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_filter() -> String {
    "(mail={address})".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
