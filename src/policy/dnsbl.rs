//! DNS blocklists (connect phase): the client address is looked up in each zone through the one
//! resolver. Weights add up; at `reject_at` the connection is refused before the greeting,
//! below it the weights go into the spam score as `DNSBL_<ZONE>` rules.

use super::{Action, Facts, Rule, Stage, StageFuture, Verdict};
use crate::smtp::reply::Reply;
use hickory_resolver::TokioResolver;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DnsblConfig {
    /// `[[policy.dnsbl.zones]]`: each blocklist.
    pub zones: Vec<Zone>,
    /// Total weight at which a client is refused at connect.
    pub reject_at: i32,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// e.g. `zen.spamhaus.org`.
    pub zone: String,
    /// Weight of a listing whose return code is not in `codes`.
    pub weight: i32,
    /// Weight per return code, e.g. `"127.0.0.4" = 60`.
    #[serde(default)]
    pub codes: BTreeMap<String, i32>,
}

pub struct Dnsbl {
    pub config: DnsblConfig,
    pub resolver: TokioResolver,
    /// Addresses that skip DNSBL (the reputation allow list).
    pub allow: super::reputation::Networks,
}

/// `1.2.0.192.zone.` for 192.0.2.1; nibbles reversed for IPv6 (RFC 5782).
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            format!("{s}{zone}.")
        }
    }
}

impl Stage for Dnsbl {
    fn name(&self) -> &'static str {
        "dnsbl"
    }

    fn on_connect<'a>(&'a self, facts: &'a Facts) -> StageFuture<'a> {
        Box::pin(async move {
            let mut v = Verdict::new(self.name());
            if self.config.zones.is_empty() || self.allow.contains(facts.peer) {
                return Ok(v);
            }
            let mut total = 0;
            let mut listed = Vec::new();
            for z in &self.config.zones {
                let name = query_name(facts.peer, &z.zone);
                match self.resolver.ipv4_lookup(name).await {
                    Ok(found) => {
                        let codes: Vec<String> = found
                            .answers()
                            .iter()
                            .filter_map(|r| match &r.data {
                                hickory_resolver::proto::rr::RData::A(a) => Some(a.0.to_string()),
                                _ => None,
                            })
                            .collect();
                        let weight = codes
                            .iter()
                            .filter_map(|c| z.codes.get(c))
                            .max()
                            .copied()
                            .unwrap_or(z.weight);
                        total += weight;
                        listed.push(json!({ "zone": z.zone, "codes": codes, "weight": weight }));
                        v.rules.push(Rule {
                            name: format!(
                                "DNSBL_{}",
                                z.zone.to_ascii_uppercase().replace(['.', '-'], "_")
                            ),
                            points: weight,
                            detail: format!(
                                "{} listed in {} ({})",
                                facts.peer,
                                z.zone,
                                codes.join(",")
                            ),
                        });
                    }
                    Err(e) if e.is_nx_domain() || e.is_no_records_found() => {}
                    // A blocklist that does not answer must not stop mail: it counts as unlisted.
                    Err(e) => tracing::warn!(zone = %z.zone, error = %e, "DNSBL lookup failed"),
                }
            }
            v.detail = json!({ "total": total, "listed": listed });
            if !listed.is_empty() {
                v.reason = format!("listed, weight {total}");
            }
            if self.config.reject_at > 0 && total >= self.config.reject_at {
                let zones: Vec<&str> = listed.iter().filter_map(|l| l["zone"].as_str()).collect();
                let reply = Reply::new(
                    554,
                    "5.7.1",
                    format!("your address is listed by {}", zones.join(", ")),
                );
                v.action = Action::Reject(reply);
            }
            Ok(v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names() {
        assert_eq!(
            query_name("192.0.2.1".parse().unwrap(), "zen.test"),
            "1.2.0.192.zen.test."
        );
        assert_eq!(
            query_name("::ffff:127.0.0.2".parse().unwrap(), "bl.test"),
            "2.0.0.127.bl.test."
        );
        let v6 = query_name("2001:db8::1".parse().unwrap(), "bl.test");
        assert!(
            v6.starts_with("1.0.0.0.0.0.0.0") && v6.ends_with(".8.b.d.0.1.0.0.2.bl.test."),
            "{v6}"
        );
    }
}
