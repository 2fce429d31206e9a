//! `[directory.ldap]`: is there an entry for this address? One connection is kept and shared by
//! every session (ldap3 multiplexes operations on it); when it breaks, the next lookup connects
//! again once. Each lookup, connection included, is bounded by `timeout`.

use crate::config::Ldap;
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchOptions};
use tokio::sync::Mutex;

/// LDAP result codes we read (RFC 4511 §4.1.9).
const SUCCESS: u32 = 0;
const SIZE_LIMIT_EXCEEDED: u32 = 4;

pub(super) struct LdapDirectory {
    config: Ldap,
    conn: Mutex<Option<ldap3::Ldap>>,
}

impl LdapDirectory {
    pub fn new(config: Ldap) -> Self {
        LdapDirectory {
            config,
            conn: Mutex::new(None),
        }
    }

    /// True when the search finds an entry for `address` (already lower case); Err when the
    /// server cannot be asked, or answers with an error.
    pub async fn find(&self, address: &str) -> Result<bool, String> {
        let timeout = self.config.timeout;
        match tokio::time::timeout(timeout, self.find_now(address)).await {
            Ok(found) => found,
            Err(_) => {
                // A server that stopped answering: do not reuse its connection.
                *self.conn.lock().await = None;
                Err(format!(
                    "{}: no answer within {}",
                    self.config.url,
                    humantime::format_duration(timeout)
                ))
            }
        }
    }

    async fn find_now(&self, address: &str) -> Result<bool, String> {
        let cached = self.conn.lock().await.clone();
        if let Some(mut ldap) = cached {
            match self.search(&mut ldap, address).await {
                Ok(found) => return Ok(found),
                Err(e) => {
                    tracing::debug!(error = %e, "LDAP connection lost; connecting again");
                    *self.conn.lock().await = None;
                }
            }
        }
        let mut ldap = self.connect().await?;
        let found = self.search(&mut ldap, address).await?;
        *self.conn.lock().await = Some(ldap);
        Ok(found)
    }

    async fn connect(&self) -> Result<ldap3::Ldap, String> {
        let url = &self.config.url;
        let settings = LdapConnSettings::new().set_conn_timeout(self.config.timeout);
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection closed");
            }
        });
        if let (Some(dn), Some(password)) = (&self.config.bind_dn, &self.config.bind_password) {
            ldap.simple_bind(dn, password)
                .await
                .and_then(|r| r.success())
                .map_err(|e| format!("{url}: bind as {dn}: {e}"))?;
        }
        Ok(ldap)
    }

    async fn search(&self, ldap: &mut ldap3::Ldap, address: &str) -> Result<bool, String> {
        let filter = filter(&self.config.filter, address);
        let result = ldap
            .with_search_options(SearchOptions::new().sizelimit(1))
            .search(&self.config.base, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .map_err(|e| {
                format!(
                    "{}: search under {}: {e}",
                    self.config.url, self.config.base
                )
            })?;
        let ldap3::SearchResult(entries, res) = result;
        match res.rc {
            SUCCESS => Ok(!entries.is_empty()),
            SIZE_LIMIT_EXCEEDED => Ok(true),
            rc => Err(format!(
                "{}: search under {}: result {rc} {}",
                self.config.url, self.config.base, res.text
            )),
        }
    }
}

/// The configured filter with `{address}` replaced by the address, escaped (RFC 4515 §3:
/// `*`, `(`, `)`, `\` and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`), so that an address
/// can never change the filter's structure.
pub(super) fn filter(template: &str, address: &str) -> String {
    template.replace("{address}", &ldap3::ldap_escape(address))
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn the_address_is_escaped_in_the_filter() {
        let cases = [
            (
                "(mail={address})",
                "bob@example.test",
                "(mail=bob@example.test)",
            ),
            (
                "(mail={address})",
                "*@example.test",
                "(mail=\\2a@example.test)",
            ),
            (
                "(mail={address})",
                "a)(uid=*)(x=@example.test",
                "(mail=a\\29\\28uid=\\2a\\29\\28x=@example.test)",
            ),
            (
                "(mail={address})",
                "a\\b@example.test",
                "(mail=a\\5cb@example.test)",
            ),
            (
                "(|(mail={address})(mailAlternateAddress={address}))",
                "é@example.test",
                "(|(mail=é@example.test)(mailAlternateAddress=é@example.test))",
            ),
        ];
        for (template, address, want) in cases {
            assert_eq!(filter(template, address), want, "{address}");
        }
    }
}
