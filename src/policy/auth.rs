//! Sender authentication with mail-auth through the one resolver: SPF at MAIL (a `fail` is
//! refused there by default), then at DATA SPF, DKIM and DMARC together, their results as spam
//! rules and in an `Authentication-Results` header we add (RFC 8601). Inbound only: outbound
//! mail comes from our own authorised clients.

use super::{Action, Facts, Rule, Stage, StageFuture, Verdict};
use crate::envelope::Direction;
use crate::smtp::reply::Reply;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfOutput, SpfResult, dmarc::verify::DmarcParameters, spf::verify::SpfParameters,
};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpfConfig {
    /// Refuse an SPF `fail` at MAIL (`550 5.7.23`); false: it only scores.
    pub reject_fail: bool,
    /// Points per result rule, overriding the defaults in [`default_points`].
    pub points: BTreeMap<String, i32>,
}

impl Default for SpfConfig {
    fn default() -> Self {
        SpfConfig {
            reject_fail: true,
            points: BTreeMap::new(),
        }
    }
}

/// Built-in points: failures push towards spam, aligned passes pull away from it.
pub fn default_points(rule: &str) -> i32 {
    match rule {
        "SPF_FAIL" => 30,
        "SPF_SOFTFAIL" => 10,
        "SPF_PASS" => -5,
        "DKIM_FAIL" => 15,
        "DKIM_PASS" => -5,
        "DMARC_FAIL_REJECT" => 50,
        "DMARC_FAIL" => 20,
        "DMARC_PASS" => -10,
        _ => 0,
    }
}

pub struct Auth {
    pub config: SpfConfig,
    pub authenticator: MessageAuthenticator,
    pub hostname: String,
}

impl Auth {
    fn rule(&self, name: &str, detail: String) -> Option<Rule> {
        let points = self
            .config
            .points
            .get(name)
            .copied()
            .unwrap_or_else(|| default_points(name));
        (points != 0).then(|| Rule {
            name: name.to_owned(),
            points,
            detail,
        })
    }

    async fn spf(&self, f: &Facts) -> SpfOutput {
        let helo = &f.helo;
        if f.mail_from.is_empty() {
            let p = SpfParameters::verify_ehlo(f.peer, helo, &self.hostname);
            self.authenticator.verify_spf(p).await
        } else {
            let p = SpfParameters::verify_mail_from(f.peer, helo, &self.hostname, &f.mail_from);
            self.authenticator.verify_spf(p).await
        }
    }
}

fn spf_name(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

impl Stage for Auth {
    fn name(&self) -> &'static str {
        "spf"
    }

    fn on_mail<'a>(&'a self, f: &'a Facts) -> StageFuture<'a> {
        Box::pin(async move {
            let v = Verdict::new(self.name());
            if f.direction == Direction::Outbound || !self.config.reject_fail {
                return Ok(v);
            }
            let spf = self.spf(f).await;
            if spf.result() == SpfResult::Fail {
                let reply = Reply::new(
                    550,
                    "5.7.23",
                    format!(
                        "SPF: {} is not allowed to send for {}",
                        f.peer,
                        spf.domain()
                    ),
                );
                return Ok(v.action(Action::Reject(reply), "SPF fail"));
            }
            Ok(v)
        })
    }

    fn on_data<'a>(&'a self, f: &'a Facts, raw: &'a [u8], _: &'a [Verdict]) -> StageFuture<'a> {
        Box::pin(async move {
            let mut v = Verdict::new(self.name());
            if f.direction == Direction::Outbound {
                return Ok(v);
            }
            let spf = self.spf(f).await;
            let Some(msg) = AuthenticatedMessage::parse(raw) else {
                v.reason = "unparseable message: no DKIM/DMARC".into();
                return Ok(v);
            };
            let dkim = self.authenticator.verify_dkim(&msg).await;
            let mail_from_domain = f
                .mail_from
                .rsplit_once('@')
                .map(|(_, d)| d)
                .unwrap_or(&f.helo);
            let dmarc = self
                .authenticator
                .verify_dmarc(DmarcParameters::new(&msg, &dkim, mail_from_domain, &spf))
                .await;

            let spf_result = spf.result();
            let spf_rule = match spf_result {
                SpfResult::Pass => Some("SPF_PASS"),
                SpfResult::Fail => Some("SPF_FAIL"),
                SpfResult::SoftFail => Some("SPF_SOFTFAIL"),
                _ => None,
            };
            let dkim_pass = dkim.iter().any(|d| matches!(d.result(), DkimResult::Pass));
            let dkim_fail = !dkim_pass
                && dkim
                    .iter()
                    .any(|d| matches!(d.result(), DkimResult::Fail(_) | DkimResult::Neutral(_)));
            let dmarc_pass = matches!(dmarc.spf_result(), DmarcResult::Pass)
                || matches!(dmarc.dkim_result(), DmarcResult::Pass);
            let dmarc_fail = matches!(dmarc.dkim_result(), DmarcResult::Fail(_))
                && matches!(dmarc.spf_result(), DmarcResult::Fail(_));
            let strict = matches!(
                dmarc.policy(),
                mail_auth::dmarc::Policy::Reject | mail_auth::dmarc::Policy::Quarantine
            );
            let mut rules = Vec::new();
            if let Some(name) = spf_rule {
                rules.extend(self.rule(
                    name,
                    format!("SPF {} for {}", spf_name(spf_result), spf.domain()),
                ));
            }
            if dkim_pass {
                rules.extend(self.rule("DKIM_PASS", "a valid DKIM signature".into()));
            } else if dkim_fail {
                rules
                    .extend(self.rule("DKIM_FAIL", "a DKIM signature that does not verify".into()));
            }
            if dmarc_pass {
                rules.extend(self.rule("DMARC_PASS", format!("DMARC pass for {}", dmarc.domain())));
            } else if dmarc_fail {
                let name = if strict {
                    "DMARC_FAIL_REJECT"
                } else {
                    "DMARC_FAIL"
                };
                rules.extend(self.rule(name, format!("DMARC fail for {}", dmarc.domain())));
            }
            v.rules = rules;
            let header_from = msg.from();
            let results = AuthenticationResults::new(&self.hostname)
                .with_spf_mailfrom_result(&spf, f.peer, &f.mail_from, &f.helo)
                .with_dkim_results(&dkim, header_from)
                .with_dmarc_result(&dmarc)
                .to_string();
            let value = results
                .trim()
                .strip_prefix("Authentication-Results:")
                .unwrap_or(results.trim())
                .trim()
                .to_owned();
            v.changes.push(super::Change::AddHeader(
                "Authentication-Results".into(),
                value,
            ));
            v.detail = json!({
                "spf": spf_name(spf_result),
                "dkim": if dkim_pass { "pass" } else if dkim_fail { "fail" } else { "none" },
                "dmarc": if dmarc_pass { "pass" } else if dmarc_fail { "fail" } else { "none" },
            });
            Ok(v)
        })
    }
}
