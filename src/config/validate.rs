//! What serde cannot check: addresses, networks, files, ranges, and rules between sections.

use super::{Config, Errors};
use std::collections::HashSet;
use std::net::SocketAddr;

pub(super) fn validate(c: &Config, e: &mut Errors) {
    if c.server.hostname.trim().is_empty() || c.server.hostname.contains(char::is_whitespace) {
        e.add("server.hostname", "must be a host name without spaces");
    }
    if c.server.node.trim().is_empty() || c.server.node.contains(char::is_whitespace) {
        e.add("server.node", "must be a name without spaces");
    }

    if c.listeners.is_empty() {
        e.add("listeners", "at least one [[listeners]] entry is needed");
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in c.listeners.iter().enumerate() {
        let key = |k: &str| format!("listeners[{i}].{k}");
        if l.name.is_empty() {
            e.add(key("name"), "must not be empty");
        } else if !names.insert(&l.name) {
            e.add(key("name"), format!("\"{}\" is used twice", l.name));
        }
        match l.address.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 && !addrs.insert(a) => {
                e.add(key("address"), format!("{a} is used twice"))
            }
            Ok(_) => {}
            Err(_) => e.add(
                key("address"),
                format!("expected ip:port, got \"{}\"", l.address),
            ),
        }
    }

    let s = &c.session;
    positive(e, "session.max_connections", s.max_connections);
    positive(
        e,
        "session.max_connections_per_ip",
        s.max_connections_per_ip,
    );
    positive(e, "session.max_recipients", s.max_recipients);
    positive(e, "session.max_errors", s.max_errors);
    positive(e, "session.max_hops", s.max_hops);
    if s.max_message_size < 1024 {
        e.add("session.max_message_size", "must be at least 1024 octets");
    }
    for (k, d) in [
        ("session.command_timeout", s.command_timeout),
        ("session.data_timeout", s.data_timeout),
        ("session.tls_timeout", s.tls_timeout),
        ("session.max_duration", s.max_duration),
    ] {
        if d.is_zero() {
            e.add(k, "must be longer than 0s");
        }
    }

    let t = &c.tls;
    let (cert, key) = (t.certificate.exists(), t.private_key.exists());
    if !(t.generate_if_missing && !cert && !key) {
        if !cert {
            e.add(
                "tls.certificate",
                format!("file not found: {}", t.certificate.display()),
            );
        }
        if !key {
            e.add(
                "tls.private_key",
                format!("file not found: {}", t.private_key.display()),
            );
        }
    }

    for (i, n) in c.relay.networks.iter().enumerate() {
        if crate::relay::parse_network(n).is_none() {
            e.add(
                format!("relay.networks[{i}]"),
                format!("expected a network like 192.0.2.0/24 or 2001:db8::/32, got \"{n}\""),
            );
        }
    }
    for (domain, route) in &c.relay.domains {
        let key = |k: &str| format!("relay.domains.\"{domain}\".{k}");
        if !crate::envelope::is_domain(domain) {
            e.add(
                format!("relay.domains.\"{domain}\""),
                "not a valid domain name",
            );
        }
        if crate::queue::route::parse_host_port(&route.next_hop).is_none() {
            e.add(
                key("next_hop"),
                format!("expected host:port, got \"{}\"", route.next_hop),
            );
        }
    }

    if let Some(ca) = c.relay.client_ca.as_ref().filter(|ca| !ca.exists()) {
        e.add(
            "relay.client_ca",
            format!("file not found: {}", ca.display()),
        );
    }
    for (name, user) in &c.relay.users {
        if argon2::PasswordHash::new(&user.password_hash).is_err() {
            e.add(
                format!("relay.users.\"{name}\".password_hash"),
                "not an argon2 hash in PHC form (make one with `passerelle hash-password`)",
            );
        }
    }

    validate_trust(&c.trust, e);
    validate_trust_routes(c, e);
    for (i, d) in c.trust.domains.iter().enumerate() {
        if c.relay.domains.contains_key(d) {
            e.add(
                format!("trust.domains[{i}]"),
                format!("\"{d}\" is one of our own domains (relay.domains); list only peers"),
            );
        }
    }
    validate_directory(&c.directory, e);
    validate_policy(&c.policy, e);

    let q = &c.queue;
    if q.retry.is_empty() || q.retry.iter().any(|d| d.is_zero()) {
        e.add(
            "queue.retry",
            "needs at least one wait, each longer than 0s",
        );
    }
    if q.lifetime.is_zero() {
        e.add("queue.lifetime", "must be longer than 0s");
    }
    if q.lease < std::time::Duration::from_secs(1) {
        e.add("queue.lease", "must be at least 1s");
    }
    if q.poll_interval.is_zero() {
        e.add("queue.poll_interval", "must be longer than 0s");
    }
    positive(e, "queue.concurrency", q.concurrency);
    positive(e, "queue.batch", q.batch);
    positive(e, "queue.per_destination", q.per_destination);

    let d = &c.delivery;
    if !d.smarthost.is_empty() && crate::queue::route::parse_host_port(&d.smarthost).is_none() {
        e.add(
            "delivery.smarthost",
            format!("expected host:port, got \"{}\"", d.smarthost),
        );
    }
    if let Some(ca) = d.trusted_ca.as_ref().filter(|ca| !ca.exists()) {
        e.add(
            "delivery.trusted_ca",
            format!("file not found: {}", ca.display()),
        );
    }
    for (domain, hop) in &d.routes {
        if crate::queue::route::parse_host_port(hop).is_none() {
            e.add(
                format!("delivery.routes.\"{domain}\""),
                format!("expected host:port, got \"{hop}\""),
            );
        }
    }
    let routes = d.routes.keys().map(|k| ("routes", k));
    let policies = d.tls_policy.keys().map(|k| ("tls_policy", k));
    for (table, domain) in routes.chain(policies) {
        let lower = !domain.chars().any(|c| c.is_ascii_uppercase());
        if !crate::envelope::is_domain(domain) || !lower {
            let key = format!("delivery.{table}.\"{domain}\"");
            e.add(key, "not a lower-case domain name");
        }
    }
    if d.idle_timeout.is_zero() {
        e.add("delivery.idle_timeout", "must be longer than 0s");
    }
    if d.port == 0 {
        e.add("delivery.port", "must not be 0");
    }

    for (domain, k) in &c.dkim {
        if !crate::envelope::is_domain(domain) {
            e.add(format!("dkim.\"{domain}\""), "not a valid domain name");
        }
        if k.selector.is_empty()
            || k.selector
                .contains(|ch: char| ch.is_whitespace() || ch == '.')
        {
            e.add(
                format!("dkim.\"{domain}\".selector"),
                "a selector like \"s2026\"",
            );
        }
        if !k.private_key.exists() {
            e.add(
                format!("dkim.\"{domain}\".private_key"),
                format!("file not found: {}", k.private_key.display()),
            );
        }
    }

    let url = &c.store.url;
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        e.add(
            "store.url",
            format!(
                "expected sqlite://PATH or postgres://…, got \"{}\"",
                redact_url(url)
            ),
        );
    }
    if c.store.retention < std::time::Duration::from_secs(1) {
        e.add(
            "store.retention",
            "must be at least 1s (bodies are purged this long after their final state)",
        );
    }
    if c.store.max_connections == 0 {
        e.add("store.max_connections", "must be at least 1");
    }

    for (i, ns) in c.dns.nameservers.iter().enumerate() {
        if ns.parse::<SocketAddr>().is_err() {
            e.add(
                format!("dns.nameservers[{i}]"),
                format!("expected ip:port, got \"{ns}\""),
            );
        }
    }
    positive(e, "dns.attempts", c.dns.attempts);
    if !c.admin.listen.is_empty() && c.admin.listen.parse::<SocketAddr>().is_err() {
        e.add(
            "admin.listen",
            format!("expected ip:port, got \"{}\"", c.admin.listen),
        );
    }
    if c.dns.timeout.is_zero() {
        e.add("dns.timeout", "must be longer than 0s");
    }
}

fn validate_policy(p: &super::Policy, e: &mut Errors) {
    for (key, msg) in p.spam.check() {
        e.add(key, msg);
    }
    if let Some(model) = p.spam.model.as_ref().filter(|m| !m.exists()) {
        e.add(
            "policy.spam.model",
            format!("file not found: {}", model.display()),
        );
    }
    for (list, nets) in [("allow", &p.reputation.allow), ("deny", &p.reputation.deny)] {
        for (i, n) in nets.iter().enumerate() {
            if crate::relay::parse_network(n).is_none() {
                e.add(
                    format!("policy.reputation.{list}[{i}]"),
                    format!("expected a network like 192.0.2.0/24, got \"{n}\""),
                );
            }
        }
    }
    if p.reputation.threshold <= 0.0 || p.reputation.half_life.is_zero() {
        e.add(
            "policy.reputation",
            "threshold and half_life must be above 0",
        );
    }
    for (i, z) in p.dnsbl.zones.iter().enumerate() {
        if !crate::envelope::is_domain(&z.zone) {
            e.add(
                format!("policy.dnsbl.zones[{i}].zone"),
                format!("not a domain: \"{}\"", z.zone),
            );
        }
        for code in z.codes.keys() {
            if code.parse::<std::net::Ipv4Addr>().is_err() {
                e.add(
                    format!("policy.dnsbl.zones[{i}].codes"),
                    format!("\"{code}\" is not an IPv4 return code like 127.0.0.2"),
                );
            }
        }
    }
    let clamd = &p.virus.clamd;
    if !(clamd.starts_with('/') || clamd.parse::<SocketAddr>().is_ok()) {
        e.add(
            "policy.virus.clamd",
            format!("expected ip:port or the absolute path of clamd's socket, got \"{clamd}\""),
        );
    }
    if p.virus.timeout.is_zero() || p.stage_timeout.is_zero() {
        e.add(
            "policy",
            "virus.timeout and stage_timeout must be longer than 0s",
        );
    }
}

fn positive(e: &mut Errors, key: &str, n: usize) {
    if n == 0 {
        e.add(key, "must be at least 1");
    }
}

/// A store URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// `trust-space` TLS is for peers of `[trust]`, which chooses it by itself.
fn validate_trust_routes(c: &Config, e: &mut Errors) {
    use super::RouteTls::TrustSpace;
    let d = &c.delivery;
    let mut uses: Vec<String> = Vec::new();
    if d.tls == TrustSpace {
        uses.push("delivery.tls".into());
    }
    if d.smarthost_tls == TrustSpace {
        uses.push("delivery.smarthost_tls".into());
    }
    for (domain, tls) in &d.tls_policy {
        if *tls == TrustSpace {
            uses.push(format!("delivery.tls_policy.\"{domain}\""));
        }
    }
    for (domain, route) in &c.relay.domains {
        if route.tls == TrustSpace {
            uses.push(format!("relay.domains.\"{domain}\".tls"));
        }
    }
    for key in uses {
        e.add(
            key,
            "\"trust-space\" is chosen by itself for the domains of [trust]; use require-verified",
        );
    }
}

fn validate_trust(t: &super::Trust, e: &mut Errors) {
    for (i, d) in t.domains.iter().enumerate() {
        if !crate::envelope::is_domain(d) || *d != d.to_ascii_lowercase() {
            e.add(
                format!("trust.domains[{i}]"),
                format!("\"{d}\" is not a lower-case domain name"),
            );
        }
    }
    if !t.enabled() {
        return;
    }
    // A trust space without its CA could not tell a peer from anyone else.
    for (key, path) in [
        ("ca", &t.ca),
        ("certificate", &t.certificate),
        ("key", &t.key),
    ] {
        match path {
            None => e.add(format!("trust.{key}"), "required when trust.domains is set"),
            Some(p) if !p.exists() => e.add(
                format!("trust.{key}"),
                format!("file not found: {}", p.display()),
            ),
            Some(_) => {}
        }
    }
}

fn validate_directory(d: &super::Directory, e: &mut Errors) {
    let Some(ldap) = &d.ldap else { return };
    if !(ldap.url.starts_with("ldap://") || ldap.url.starts_with("ldaps://")) {
        e.add(
            "directory.ldap.url",
            format!(
                "expected ldap://host:port or ldaps://host:port, got \"{}\"",
                ldap.url
            ),
        );
    }
    if !ldap.filter.contains("{address}") {
        e.add("directory.ldap.filter", "must contain {address}");
    }
    if ldap.bind_dn.is_some() != ldap.bind_password.is_some() {
        e.add(
            "directory.ldap.bind_password",
            "bind_dn and bind_password go together",
        );
    }
    if ldap.timeout.is_zero() {
        e.add("directory.ldap.timeout", "must be longer than 0s");
    }
}
