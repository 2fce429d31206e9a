//! EHLO and HELO: who the client says it is, and what we offer it.

use super::reply::{self, Reply};
use super::session::Session;

impl Session {
    pub(super) fn ehlo(&mut self, host: &str, extended: bool) -> Reply {
        if host.is_empty() || host.len() > 255 || host.contains(|c: char| c.is_control()) {
            return reply::syntax("EHLO needs a domain or address literal");
        }
        // Test builds only (`debug_assertions`): a way for the tests to make a session panic
        // and see that only that session ends (`tests/hostile.rs`). Not in release builds.
        #[cfg(debug_assertions)]
        if host == "panic.passerelle.invalid" {
            panic!("test hook: a session panicked on purpose");
        }
        self.helo = Some(host.to_owned());
        self.tx = None;
        let me = &self.ctx.config.server.hostname;
        if !extended {
            return reply::helo(me, &self.peer.ip().to_string());
        }
        let mut lines = vec![
            format!("{me} greets {}", self.peer.ip()),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.ctx.config.session.max_message_size),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "SMTPUTF8".to_owned(),
        ];
        if self.tls.is_none() {
            lines.push("STARTTLS".to_owned());
        } else if !self.ctx.config.relay.users.is_empty() {
            // Passwords travel only inside TLS.
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        Reply::new(250, "", lines.join("\n"))
    }
}
