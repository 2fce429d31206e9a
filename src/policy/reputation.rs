//! IP reputation (connect phase): static allow and deny lists, and bad points the gateway gives
//! an address itself when it sends viruses or certain spam. Points halve every `half_life`;
//! above `threshold` the connection is refused before the greeting (`554 5.7.1`).

use super::{Action, Facts, Stage, StageFuture, Verdict};
use crate::relay::parse_network;
use crate::smtp::reply::Reply;
use crate::store::{Store, now_ms};
use anyhow::Result;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::json;
use sqlx::Row;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReputationConfig {
    /// Never refused by reputation or DNSBL (partners, monitoring).
    pub allow: Vec<String>,
    /// Always refused at connect.
    pub deny: Vec<String>,
    /// Bad points at or above which an address is refused.
    pub threshold: f64,
    /// Points halve after this long.
    #[serde(with = "humantime_serde")]
    pub half_life: Duration,
    /// Points for a message with a virus.
    pub virus_points: f64,
    /// Points for a message scored at the spam delete threshold.
    pub spam_points: f64,
}

impl Default for ReputationConfig {
    fn default() -> Self {
        ReputationConfig {
            allow: Vec::new(),
            deny: Vec::new(),
            threshold: 10.0,
            half_life: Duration::from_secs(24 * 3600),
            virus_points: 5.0,
            spam_points: 3.0,
        }
    }
}

/// Networks parsed once, at start, rather than for every connection.
#[derive(Debug, Clone, Default)]
pub struct Networks(Vec<IpNet>);

impl Networks {
    pub fn parse(list: &[String]) -> Networks {
        Networks(list.iter().filter_map(|n| parse_network(n)).collect())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

pub struct Reputation {
    pub config: ReputationConfig,
    /// `config.allow`, which also exempts from DNSBL.
    pub allow: Networks,
    pub deny: Networks,
    pub store: Store,
}

impl Stage for Reputation {
    fn name(&self) -> &'static str {
        "reputation"
    }

    fn on_connect<'a>(&'a self, facts: &'a Facts) -> StageFuture<'a> {
        Box::pin(async move {
            let v = Verdict::new(self.name());
            let ip = facts.peer;
            if self.allow.contains(ip) {
                return Ok(v);
            }
            if self.deny.contains(ip) {
                let reply = Reply::new(554, "5.7.1", "your address is refused by local policy");
                return Ok(v.action(Action::Reject(reply), "deny list"));
            }
            let points = self.store.reputation(ip, self.config.half_life).await?;
            if points >= self.config.threshold {
                let reply = Reply::new(554, "5.7.1", "your address has a poor reputation here");
                let mut v = v.action(Action::Reject(reply), format!("reputation {points:.1}"));
                v.detail = json!({ "points": points, "threshold": self.config.threshold });
                return Ok(v);
            }
            Ok(v)
        })
    }
}

/// Points now, after decay since `updated_at`.
fn decayed(points: f64, updated_at: i64, now: i64, half_life: Duration) -> f64 {
    let age = (now - updated_at).max(0) as f64;
    points * 0.5f64.powf(age / half_life.as_millis().max(1) as f64)
}

impl Store {
    /// An address's bad points now.
    pub async fn reputation(&self, ip: IpAddr, half_life: Duration) -> Result<f64> {
        let row = sqlx::query("SELECT points, updated_at FROM reputation WHERE ip = $1")
            .bind(ip.to_canonical().to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => decayed(
                r.try_get("points")?,
                r.try_get("updated_at")?,
                now_ms(),
                half_life,
            ),
            None => 0.0,
        })
    }

    /// Adds bad points to an address (after decaying what it had).
    pub async fn add_reputation(
        &self,
        ip: IpAddr,
        points: f64,
        half_life: Duration,
    ) -> Result<f64> {
        let now = now_ms();
        let total = self.reputation(ip, half_life).await? + points;
        let _turn = self.turn().await;
        sqlx::query(
            "INSERT INTO reputation (ip, points, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (ip) DO UPDATE SET points = $2, updated_at = $3",
        )
        .bind(ip.to_canonical().to_string())
        .bind(total)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_halve_each_half_life() {
        let day = Duration::from_secs(86400);
        let d = 86_400_000;
        assert_eq!(decayed(8.0, 0, 0, day), 8.0);
        assert_eq!(decayed(8.0, 0, d, day), 4.0);
        assert_eq!(decayed(8.0, 0, 3 * d, day), 1.0);
    }

    #[test]
    fn lists() {
        let c = Networks::parse(&["192.0.2.0/24".into(), "not a network".into()]);
        assert!(c.contains("192.0.2.9".parse().unwrap()));
        assert!(c.contains("::ffff:192.0.2.9".parse().unwrap()));
        assert!(!c.contains("198.51.100.1".parse().unwrap()));
    }
}
