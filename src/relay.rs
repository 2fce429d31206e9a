//! Relay rules: who may send to whom. Inbound, anyone may send to our own domains; outbound, only
//! an authorised client may send anywhere. Everything else is refused at RCPT: no open relay.

use crate::config::{Relay, Route};
use crate::envelope::{self, Direction};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct RelayRules {
    networks: Vec<IpNet>,
    domains: BTreeMap<String, Route>,
}

/// Why a recipient is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not one of our domains, and the client may not relay.
    NotOurs,
    /// A `%`, `!`, quoted `@` or source route: a way to smuggle a second hop past the rules.
    Trick,
    /// Not a deliverable address at all.
    Syntax,
}

/// A network in CIDR form; a bare address is a /32 or /128.
pub fn parse_network(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl RelayRules {
    pub fn new(relay: &Relay) -> Self {
        RelayRules {
            networks: relay
                .networks
                .iter()
                .filter_map(|n| parse_network(n))
                .collect(),
            domains: relay.domains.clone(),
        }
    }

    /// May this client relay outbound?
    pub fn authorised(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|n| n.contains(&ip))
    }

    /// The route of one of our own domains.
    pub fn route(&self, domain: &str) -> Option<&Route> {
        self.domains.get(domain)
    }

    /// Decides one recipient. `raw` is the RCPT argument as the client wrote it, since the parser
    /// has already dropped source routes and quotes by the time we see `address`.
    pub fn check_recipient(
        &self,
        raw: &str,
        address: &str,
        authorised: bool,
    ) -> Result<Direction, Refusal> {
        let raw = raw.trim_start();
        if raw.starts_with("<@") || raw.starts_with('@') || raw.contains('"') {
            return Err(Refusal::Trick);
        }
        let Some((local, domain)) = envelope::split(address) else {
            return Err(Refusal::Syntax);
        };
        if local.contains(['%', '!', '@']) {
            return Err(Refusal::Trick);
        }
        if !envelope::is_dot_atom(local) || !envelope::is_domain(&domain) {
            return Err(Refusal::Syntax);
        }
        if authorised {
            Ok(Direction::Outbound)
        } else if self.domains.contains_key(&domain) {
            Ok(Direction::Inbound)
        } else {
            Err(Refusal::NotOurs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RelayRules {
        let mut domains = BTreeMap::new();
        domains.insert("example.test".to_owned(), Route::default());
        RelayRules::new(&Relay {
            networks: vec!["192.0.2.0/24".into(), "2001:db8::1".into()],
            domains,
            ..Default::default()
        })
    }

    #[test]
    fn authorised_networks() {
        let r = rules();
        assert!(r.authorised("192.0.2.9".parse().unwrap()));
        assert!(r.authorised("::ffff:192.0.2.9".parse().unwrap()));
        assert!(r.authorised("2001:db8::1".parse().unwrap()));
        assert!(!r.authorised("198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn recipients() {
        let r = rules();
        use Refusal::*;
        let cases: &[(&str, &str, bool, Result<Direction, Refusal>)] = &[
            (
                "<bob@example.test>",
                "bob@example.test",
                false,
                Ok(Direction::Inbound),
            ),
            (
                "<bob@EXAMPLE.TEST>",
                "bob@EXAMPLE.TEST",
                false,
                Ok(Direction::Inbound),
            ),
            ("<bob@other.test>", "bob@other.test", false, Err(NotOurs)),
            (
                "<bob@other.test>",
                "bob@other.test",
                true,
                Ok(Direction::Outbound),
            ),
            (
                "<bob@example.test.>",
                "bob@example.test.",
                false,
                Err(Syntax),
            ),
            (
                "<u%other.test@example.test>",
                "u%other.test@example.test",
                false,
                Err(Trick),
            ),
            (
                "<other.test!u@example.test>",
                "other.test!u@example.test",
                false,
                Err(Trick),
            ),
            (
                "<\"u@other.test\"@example.test>",
                "u@other.test@example.test",
                false,
                Err(Trick),
            ),
            (
                "<@example.test:u@other.test>",
                "u@other.test",
                false,
                Err(Trick),
            ),
            (
                "<@other.test:u@example.test>",
                "u@example.test",
                true,
                Err(Trick),
            ),
            ("<postmaster>", "postmaster", false, Err(Syntax)),
        ];
        for (raw, addr, auth, want) in cases {
            assert_eq!(r.check_recipient(raw, addr, *auth), *want, "{raw}");
        }
    }
}
