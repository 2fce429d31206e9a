//! Where a recipient's domain is delivered, first match wins, as with Postfix's transport map:
//! our own domains to their next hop; `[delivery.routes]`; the smarthost; else the domain's MX
//! hosts (RFC 5321 §5.1). All names are looked up through the one resolver.

use crate::config::{Config, RouteTls};
use hickory_resolver::TokioResolver;
use rand::seq::SliceRandom;
use std::net::{IpAddr, SocketAddr};

/// One host to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The name the certificate must match under `require-verified`.
    pub host: String,
    pub addr: SocketAddr,
    pub tls: RouteTls,
}

/// Why a domain has no targets now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Will not change by waiting: the domain does not exist, or accepts no mail (null MX).
    Permanent(String),
    Temporary(String),
}

/// `host:port`, with `[v6]:port` for IPv6 literals.
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let ok = crate::envelope::is_domain(host) || host == "localhost";
    ok.then(|| (host.to_ascii_lowercase(), port))
}

pub async fn resolve(
    config: &Config,
    resolver: &TokioResolver,
    domain: &str,
) -> Result<Vec<Target>, RouteError> {
    if let Some(route) = config.relay.domains.get(domain) {
        return host_targets(resolver, &route.next_hop, route.tls).await;
    }
    let d = &config.delivery;
    // A trust-space peer is reached directly (its route or its MX), never through the
    // smarthost, and only with mutual, verified TLS.
    let peer = config.trust.peer_domain(domain).is_some();
    let tls = match peer {
        true => RouteTls::TrustSpace,
        false => d.tls_policy.get(domain).copied().unwrap_or(d.tls),
    };
    if let Some(hop) = d.routes.get(domain) {
        return host_targets(resolver, hop, tls).await;
    }
    if peer {
        return mx_targets(resolver, domain, d.port, tls).await;
    }
    if !d.smarthost.is_empty() {
        return host_targets(resolver, &d.smarthost, d.smarthost_tls).await;
    }
    mx_targets(resolver, domain, d.port, tls).await
}

async fn host_targets(
    resolver: &TokioResolver,
    host_port: &str,
    tls: RouteTls,
) -> Result<Vec<Target>, RouteError> {
    let (host, port) = parse_host_port(host_port)
        .ok_or_else(|| RouteError::Permanent(format!("bad next hop {host_port}")))?;
    let ips = addresses(resolver, &host).await?;
    Ok(ips
        .into_iter()
        .map(|ip| Target {
            host: host.clone(),
            addr: SocketAddr::new(ip, port),
            tls,
        })
        .collect())
}

async fn addresses(resolver: &TokioResolver, host: &str) -> Result<Vec<IpAddr>, RouteError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    match resolver.lookup_ip(format!("{host}.")).await {
        Ok(found) => Ok(found.iter().collect()),
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => {
            Err(RouteError::Permanent(format!("host {host} has no address")))
        }
        Err(e) => Err(RouteError::Temporary(format!("looking up {host}: {e}"))),
    }
}

async fn mx_targets(
    resolver: &TokioResolver,
    domain: &str,
    port: u16,
    tls: RouteTls,
) -> Result<Vec<Target>, RouteError> {
    let hosts: Vec<String> = match resolver.mx_lookup(format!("{domain}.")).await {
        Ok(lookup) => {
            let mut mx: Vec<(u16, String)> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_resolver::proto::rr::RData::MX(mx) => Some((
                        mx.preference,
                        mx.exchange
                            .to_ascii()
                            .trim_end_matches('.')
                            .to_ascii_lowercase(),
                    )),
                    _ => None,
                })
                .collect();
            if mx.len() == 1 && mx[0].1.is_empty() {
                return Err(RouteError::Permanent(format!(
                    "{domain} accepts no mail (null MX, RFC 7505)"
                )));
            }
            // Equal preferences in random order, to spread load (RFC 5321 §5.1).
            mx.shuffle(&mut rand::rng());
            mx.sort_by_key(|(pref, _)| *pref);
            mx.into_iter()
                .map(|(_, h)| h)
                .filter(|h| !h.is_empty())
                .collect()
        }
        Err(e) if e.is_nx_domain() => {
            return Err(RouteError::Permanent(format!(
                "domain {domain} does not exist"
            )));
        }
        // No MX: the domain itself is the implicit MX (RFC 5321 §5.1).
        Err(e) if e.is_no_records_found() => vec![domain.to_owned()],
        Err(e) => {
            return Err(RouteError::Temporary(format!(
                "MX lookup for {domain}: {e}"
            )));
        }
    };
    let mut targets = Vec::new();
    let mut last_err = None;
    for host in hosts {
        match addresses(resolver, &host).await {
            Ok(ips) => targets.extend(ips.into_iter().map(|ip| Target {
                host: host.clone(),
                addr: SocketAddr::new(ip, port),
                tls,
            })),
            Err(e) => last_err = Some(e),
        }
    }
    match (targets.is_empty(), last_err) {
        (false, _) => Ok(targets),
        (true, Some(e)) => Err(e),
        (true, None) => Err(RouteError::Permanent(format!("{domain} has no mail host"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports() {
        assert_eq!(
            parse_host_port("127.0.0.1:25"),
            Some(("127.0.0.1".into(), 25))
        );
        assert_eq!(parse_host_port("[::1]:2526"), Some(("::1".into(), 2526)));
        assert_eq!(
            parse_host_port("Mail.Example.org:587"),
            Some(("mail.example.org".into(), 587))
        );
        assert_eq!(
            parse_host_port("localhost:25"),
            Some(("localhost".into(), 25))
        );
        for bad in ["", "host", "host:0", "host:x", "a b:25", ":25"] {
            assert_eq!(parse_host_port(bad), None, "{bad}");
        }
    }
}
