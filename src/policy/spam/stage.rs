//! The spam stage (data phase): scores the message with what earlier stages found, and asks for
//! the outcome the policy sets. Inbound: from `delete_at` deleted, from `tag_at` the Subject
//! tagged. Outbound: from `delete_at` held in quarantine; never tagged, as the recipients are
//! not ours. Every message gets `X-Passerelle-Score` with the per-rule breakdown.
//!
//! Scoring runs inline: it reads at most the first MiB of the message plus one linear scan for
//! GTUBE, a few milliseconds even for a 50 MB message.

use super::{Scorer, SpamConfig};
use crate::envelope::Direction;
use crate::policy::{Action, Change, Facts, Stage, StageFuture, Verdict};

pub struct SpamStage {
    config: SpamConfig,
    scorer: Scorer,
}

impl SpamStage {
    /// Loads the model; fails on the errors [`SpamConfig::check`] finds.
    pub fn new(config: &SpamConfig) -> anyhow::Result<SpamStage> {
        Ok(SpamStage {
            config: config.clone(),
            scorer: Scorer::new(config)?,
        })
    }
}

impl Stage for SpamStage {
    fn name(&self) -> &'static str {
        "spam"
    }

    fn on_data<'a>(
        &'a self,
        facts: &'a Facts,
        raw: &'a [u8],
        before: &'a [Verdict],
    ) -> StageFuture<'a> {
        Box::pin(async move {
            let extra: Vec<_> = facts
                .early_rules
                .iter()
                .chain(before.iter().flat_map(|v| &v.rules))
                .cloned()
                .collect();
            let score = self.scorer.score(raw, &extra);
            let header = score.header_value();
            let mut v = Verdict::new(self.name());
            v.changes.push(Change::AddHeader(
                "X-Passerelle-Score".into(),
                header.clone(),
            ));
            v.detail = serde_json::to_value(&score)?;
            let c = &self.config;
            match facts.direction {
                Direction::Inbound if score.total >= c.delete_at => {
                    let action = match c.action {
                        super::SpamAction::Delete => Action::Delete { notify: false },
                        super::SpamAction::Quarantine => Action::Quarantine,
                        super::SpamAction::Reject => {
                            Action::Reject(crate::smtp::reply::Reply::new(
                                550,
                                "5.7.1",
                                format!("message refused as spam (score {})", score.total),
                            ))
                        }
                    };
                    v = v.action(action, format!("spam score {header}"));
                }
                Direction::Outbound if score.total >= c.delete_at => {
                    v = v.action(Action::Quarantine, format!("spam score {header}"));
                }
                Direction::Inbound if score.total >= c.tag_at => {
                    v.changes.push(Change::TagSubject(c.subject_tag.clone()));
                    v.reason = format!("spam score {header}");
                }
                _ => {}
            }
            Ok(v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Rule;

    fn facts(direction: Direction, early: &[(&str, i32)]) -> Facts {
        Facts {
            peer: "192.0.2.1".parse().unwrap(),
            helo: "client.test".into(),
            tls: true,
            authorised: direction == Direction::Outbound,
            direction,
            mail_from: "a@client.test".into(),
            rcpts: vec!["b@example.test".into()],
            early_rules: early
                .iter()
                .map(|(name, points)| Rule {
                    name: name.to_string(),
                    points: *points,
                    detail: String::new(),
                })
                .collect(),
            signed_bounce: false,
            peer_domains: Vec::new(),
            certificate_name: None,
        }
    }

    #[tokio::test]
    async fn outcome_by_direction_and_score() {
        let stage = SpamStage::new(&SpamConfig::default()).unwrap();
        let raw = b"From: a@client.test\r\nSubject: hello\r\n\r\nhello\r\n";
        let tag = Change::TagSubject("Suspect Spam".into());
        // Earlier verdicts' rules count too.
        let mut spf = Verdict::new("spf");
        spf.rules.push(Rule {
            name: "SPF_FAIL".into(),
            points: 20,
            detail: String::new(),
        });
        let cases: &[(Direction, i32, &[Verdict], Action, bool)] = &[
            (Direction::Inbound, 0, &[], Action::Continue, false),
            (Direction::Inbound, 60, &[], Action::Continue, true),
            (
                Direction::Inbound,
                40,
                std::slice::from_ref(&spf),
                Action::Continue,
                true,
            ),
            (
                Direction::Inbound,
                150,
                &[],
                Action::Delete { notify: false },
                false,
            ),
            (Direction::Outbound, 60, &[], Action::Continue, false),
            (Direction::Outbound, 150, &[], Action::Quarantine, false),
        ];
        for (direction, points, before, action, tagged) in cases {
            let f = facts(*direction, &[("DNSBL_TEST", *points)]);
            let v = stage.on_data(&f, raw, before).await.unwrap();
            assert_eq!(&v.action, action, "{direction:?} {points}");
            assert_eq!(v.changes.contains(&tag), *tagged, "{direction:?} {points}");
            assert!(
                matches!(&v.changes[0], Change::AddHeader(n, _) if n == "X-Passerelle-Score"),
                "{:?}",
                v.changes
            );
        }
    }
}
