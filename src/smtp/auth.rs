//! AUTH PLAIN and LOGIN (RFC 4954, 4616): offered only inside TLS, against the argon2 hashes of
//! `[relay.users]`; success makes the client authorised to relay outbound. Failures are counted
//! per address, and an address with too many is refused for a while.

use super::connection::{Connection, Line};
use super::reply::{self, Reply};
use super::session::Session;
use crate::config::show_address;
use argon2::{Argon2, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// Failed attempts allowed per address within `WINDOW`.
const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Failed AUTH attempts per client address.
#[derive(Default)]
pub struct Failures(Mutex<HashMap<IpAddr, (u32, Instant)>>);

impl Failures {
    fn blocked(&self, ip: IpAddr) -> bool {
        let mut map = self.0.lock().expect("not poisoned");
        map.retain(|_, (_, since)| since.elapsed() < WINDOW);
        map.get(&ip).is_some_and(|(n, _)| *n >= MAX_FAILURES)
    }

    fn failed(&self, ip: IpAddr) {
        let mut map = self.0.lock().expect("not poisoned");
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        entry.0 += 1;
    }
}

impl Session {
    pub(super) async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mechanism: u64,
        initial: &str,
        conn: &mut Connection<S>,
    ) -> std::io::Result<Reply> {
        let ctx = self.ctx.clone();
        let users = &ctx.config.relay.users;
        if users.is_empty() {
            return Ok(reply::not_implemented("AUTH"));
        }
        if self.user.is_some() {
            return Ok(reply::bad_sequence("already authenticated"));
        }
        if self.tx.is_some() {
            return Ok(reply::bad_sequence(
                "AUTH is not allowed during a mail transaction",
            ));
        }
        let ip = self.peer.ip().to_canonical();
        if self.ctx.auth_failures.blocked(ip) {
            return Ok(Reply::new(
                454,
                "4.7.0",
                "too many failed attempts, try again later",
            ));
        }
        let credentials = match mechanism {
            AUTH_PLAIN => {
                let response = match initial {
                    "" => match self.challenge(conn, "").await? {
                        Some(r) => r,
                        None => return Ok(cancelled()),
                    },
                    "=" => String::new(),
                    r => r.to_owned(),
                };
                decode(&response).and_then(|b| plain(&b))
            }
            AUTH_LOGIN => {
                let user = match initial {
                    "" => match self.challenge(conn, "VXNlcm5hbWU6").await? {
                        Some(u) => u,
                        None => return Ok(cancelled()),
                    },
                    u => u.to_owned(),
                };
                let Some(pass) = self.challenge(conn, "UGFzc3dvcmQ6").await? else {
                    return Ok(cancelled());
                };
                match (decode(&user), decode(&pass)) {
                    (Some(u), Some(p)) => Some((u, p)),
                    _ => None,
                }
                .and_then(|(u, p)| Some((String::from_utf8(u).ok()?, String::from_utf8(p).ok()?)))
            }
            _ => return Ok(reply::auth_unavailable()),
        };
        let Some((user, password)) = credentials else {
            return Ok(Reply::new(501, "5.5.2", "cannot decode the credentials"));
        };
        let hash = users.get(&user).map(|u| u.password_hash.clone());
        // Verify even for an unknown user, so that timing does not tell which names exist.
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let known = users.contains_key(&user);
        let ok = tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .unwrap_or(false);
        if ok && known {
            tracing::info!(peer = %self.peer, user = %show_address(&user), "authenticated");
            self.user = Some(user);
            self.authorised = true;
            Ok(Reply::new(235, "2.7.0", "authentication succeeded"))
        } else {
            // The name is logged, never the password.
            tracing::warn!(peer = %self.peer, user = %show_address(&user), "authentication failed");
            self.ctx.auth_failures.failed(ip);
            Ok(Reply::new(
                535,
                "5.7.8",
                "authentication credentials invalid",
            ))
        }
    }

    /// Sends `334 text` and reads the client's answer; None when it cancels with `*`.
    async fn challenge<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: &mut Connection<S>,
        text: &str,
    ) -> std::io::Result<Option<String>> {
        conn.send(&Reply::new(334, "", text)).await?;
        let timeout = self.ctx.config.session.command_timeout;
        let line = match conn.read_line(timeout).await {
            Ok(Line::Command(l)) => l,
            Ok(_) => return Ok(None),
            Err(_) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
        };
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        Ok((text != "*").then_some(text))
    }
}

fn cancelled() -> Reply {
    Reply::new(501, "5.0.0", "authentication cancelled")
}

fn decode(s: &str) -> Option<Vec<u8>> {
    B64.decode(s.trim()).ok()
}

/// `authzid NUL authcid NUL password` (RFC 4616); an authzid other than the user is refused.
fn plain(b: &[u8]) -> Option<(String, String)> {
    let mut parts = b.split(|c| *c == 0);
    let (authz, user, pass) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || (!authz.is_empty() && authz != user) {
        return None;
    }
    Some((
        String::from_utf8(user.to_vec()).ok()?,
        String::from_utf8(pass.to_vec()).ok()?,
    ))
}

/// A valid hash of a random password, verified for unknown users.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$8bRz0yVnQmQwYCuSJ2+0qsyIeIeR0GpMOBWi6cM1Vus";

/// A PHC hash of a password, for `[relay.users]`.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::PasswordHasher;
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_credentials() {
        assert_eq!(plain(b"\0alice\0pw"), Some(("alice".into(), "pw".into())));
        assert_eq!(
            plain(b"alice\0alice\0pw"),
            Some(("alice".into(), "pw".into()))
        );
        assert_eq!(plain(b"bob\0alice\0pw"), None);
        assert_eq!(plain(b"alice\0pw"), None);
    }

    #[test]
    fn hashes_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"s3cret", h.as_str())
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong", h.as_str())
                .is_err()
        );
        assert!(argon2::PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
