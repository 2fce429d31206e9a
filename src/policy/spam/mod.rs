//! The spam score, 0–100: named content rules plus a Bayesian classifier, as SpamAssassin adds
//! its tests' points, and the rules other stages found (SPF, DKIM, DMARC, DNSBL).
//!
//! How one message is scored:
//!
//! 1. `mime` reads the headers, the text of every inline text part (HTML reduced to text) and
//!    the links, in one linear walk over at most the first MiB;
//! 2. `rules` decide which content rules fire; `bayes` gives a spam probability from the
//!    tokens of the Subject and the text, which falls in one `BAYES_*` band;
//! 3. each fired rule gets its points from [`DEFAULT_POINTS`] or `[policy.spam.rules]`; a rule
//!    worth 0 is off and not listed;
//! 4. the content points are capped at [`CONTENT_CAP`] (99): what a sender writes in a message,
//!    however spammy, never deletes it on its own. Deleting takes the `extra` rules of the other
//!    stages (evidence about the sending server, which a sender cannot write) or GTUBE, the test
//!    string, whose points bypass the cap;
//! 5. the `extra` points are added and the total clamped to 0..=100.
//!
//! [`SpamStage`] turns the score into the pipeline's verdict; `passerelle score` calls
//! [`Scorer`] directly. The model ships in `models/spam.model` (trained on the SpamAssassin
//! public corpus; see `docs/spam.md`) and is compiled in; `policy.spam.model` names another.

mod bayes;
mod eval;
mod html;
mod mime;
mod rules;
mod stage;

pub use eval::{Report, Scored, Tally, cross_validate};
pub use stage::SpamStage;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One named rule that fired, with its points (may be negative).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub name: String,
    pub points: i32,
    pub detail: String,
}

/// Points per rule, from the policy file (`[policy.spam.rules]` names → points); defaults beside
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpamConfig {
    /// Inbound: from this score the Subject is tagged. Default 50.
    pub tag_at: u8,
    /// Inbound: from this score the message is deleted; outbound: held. Default 100.
    pub delete_at: u8,
    /// Inserted in the Subject of tagged messages. Default `Suspect Spam`.
    pub subject_tag: String,
    /// A model made by `passerelle train-spam`; default: the one compiled in.
    pub model: Option<PathBuf>,
    /// Overrides of the built-in points, by rule name; 0 turns a rule off.
    pub rules: BTreeMap<String, i32>,
    /// Inbound, from `delete_at`: `delete` (accept and drop, the default), `reject` (a 550 at the
    /// end of DATA: the sending server tells its user) or `quarantine` (held for an administrator).
    pub action: SpamAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SpamAction {
    #[default]
    Delete,
    Reject,
    Quarantine,
}

impl Default for SpamConfig {
    fn default() -> Self {
        SpamConfig {
            tag_at: 50,
            delete_at: 100,
            subject_tag: "Suspect Spam".into(),
            model: None,
            rules: BTreeMap::new(),
            action: SpamAction::Delete,
        }
    }
}

impl SpamConfig {
    /// What is wrong with these settings, as (key path, message) pairs; the model file is only
    /// read by [`Scorer::new`].
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (key, v) in [("tag_at", self.tag_at), ("delete_at", self.delete_at)] {
            if v > 100 {
                errors.push((
                    format!("policy.spam.{key}"),
                    format!("expected 0..=100, got {v}"),
                ));
            }
        }
        if self.tag_at > self.delete_at {
            errors.push((
                "policy.spam.tag_at".into(),
                format!(
                    "must not be above delete_at ({} > {})",
                    self.tag_at, self.delete_at
                ),
            ));
        }
        if self.subject_tag.chars().any(char::is_control) {
            errors.push((
                "policy.spam.subject_tag".into(),
                "must be one line of text".into(),
            ));
        }
        for name in self.rules.keys() {
            if !DEFAULT_POINTS.iter().any(|(n, _)| n == name) {
                let known: Vec<&str> = DEFAULT_POINTS.iter().map(|(n, _)| *n).collect();
                errors.push((
                    format!("policy.spam.rules.{name}"),
                    format!("unknown rule; known rules: {}", known.join(", ")),
                ));
            }
        }
        errors
    }
}

/// Every built-in rule and its default points, tuned by cross-validation (`docs/spam.md`): the
/// classifier alone tags from a spam probability of 0.8; from 0.6 it takes one header rule of 10
/// points more. A confident ham verdict takes back what header rules add, as mailing lists and
/// newsletters trip them. REPLY_TO_MISMATCH is nearly as common in ham (lists) as in spam, hence 2.
pub const DEFAULT_POINTS: &[(&str, i32)] = &[
    ("GTUBE", 1000),
    ("MISSING_DATE", 10),
    ("MISSING_MESSAGE_ID", 5),
    ("FROM_FORGED_LOOKING", 15),
    ("REPLY_TO_MISMATCH", 2),
    ("SUBJECT_ALL_CAPS", 10),
    ("HTML_ONLY", 10),
    ("SUSPICIOUS_LINK", 15),
    ("BAYES_00", -20),
    ("BAYES_05", -10),
    ("BAYES_20", -5),
    ("BAYES_40", -2),
    ("BAYES_50", 0),
    ("BAYES_60", 40),
    ("BAYES_80", 50),
    ("BAYES_95", 55),
    ("BAYES_99", 60),
    ("BAYES_999", 65),
];

/// The classifier's probability bands, SpamAssassin's: each from its lower bound to the next.
const BAYES_BANDS: &[(f64, &str)] = &[
    (0.0, "BAYES_00"),
    (0.01, "BAYES_05"),
    (0.05, "BAYES_20"),
    (0.20, "BAYES_40"),
    (0.40, "BAYES_50"),
    (0.60, "BAYES_60"),
    (0.80, "BAYES_80"),
    (0.95, "BAYES_95"),
    (0.99, "BAYES_99"),
    (0.999, "BAYES_999"),
];

/// The most the message's own content (every rule but GTUBE, classifier included) can give.
pub const CONTENT_CAP: i32 = 99;

/// The model compiled into the binary.
const BUILTIN_MODEL: &[u8] = include_bytes!("../../../models/spam.model");

/// The rules' points and the classifier's model, loaded once and shared by every session.
pub struct Scorer {
    model: bayes::Model,
    points: BTreeMap<&'static str, i32>,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (ham, spam) = self.model.messages();
        f.debug_struct("Scorer")
            .field("model_tokens", &self.model.tokens())
            .field("model_ham", &ham)
            .field("model_spam", &spam)
            .field("points", &self.points)
            .finish()
    }
}

impl Scorer {
    /// Checks the settings and loads the model (the built-in one when `model` is `None`).
    pub fn new(config: &SpamConfig) -> anyhow::Result<Scorer> {
        let errors = config.check();
        if !errors.is_empty() {
            let lines: Vec<String> = errors.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            bail!("{}", lines.join("\n"));
        }
        let model = match &config.model {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("policy.spam.model: reading {}", path.display()))?;
                bayes::Model::load(&bytes)
                    .with_context(|| format!("policy.spam.model: {}", path.display()))?
            }
            None => bayes::Model::load(BUILTIN_MODEL).context("built-in spam model")?,
        };
        Ok(Scorer::with_model(model, &config.rules))
    }

    fn with_model(model: bayes::Model, overrides: &BTreeMap<String, i32>) -> Scorer {
        let points = DEFAULT_POINTS
            .iter()
            .map(|&(name, default)| (name, overrides.get(name).copied().unwrap_or(default)))
            .collect();
        Scorer { model, points }
    }

    /// Content rules and the classifier on the raw message (RFC 5322 bytes). `extra` are rules
    /// other stages already found (SPF/DKIM/DMARC results, DNSBL weights), included in the total.
    pub fn score(&self, raw: &[u8], extra: &[Rule]) -> Score {
        self.total(&Analysis::of(raw), extra)
    }

    fn total(&self, a: &Analysis, extra: &[Rule]) -> Score {
        let mut hits = a.hits.clone();
        if let Some(p) = self.model.probability(&a.tokens) {
            let band = BAYES_BANDS
                .iter()
                .rev()
                .find(|(from, _)| p >= *from)
                .map_or("BAYES_00", |b| b.1);
            hits.push(rules::Hit {
                name: band,
                detail: format!("spam probability {p:.4}"),
            });
        }
        let mut fired: Vec<Rule> = hits
            .into_iter()
            .filter_map(|h| {
                let points = self.points.get(h.name).copied().unwrap_or(0);
                (points != 0).then(|| Rule {
                    name: h.name.to_string(),
                    points,
                    // Details quote the sender (a host, a display name): keep them short.
                    detail: h.detail.chars().take(200).collect(),
                })
            })
            .collect();
        // i64: points from the policy file and other stages may be anything an i32 holds.
        let sum = |rules: &[&Rule]| rules.iter().map(|r| i64::from(r.points)).sum::<i64>();
        let (gtube, content): (Vec<&Rule>, Vec<&Rule>) =
            fired.iter().partition(|r| r.name == "GTUBE");
        let others: Vec<&Rule> = extra.iter().collect();
        let capped = sum(&content).min(i64::from(CONTENT_CAP));
        let total = (capped + sum(&gtube) + sum(&others)).clamp(0, 100);
        fired.extend(extra.iter().cloned());
        fired.sort_by(|a, b| b.points.cmp(&a.points).then_with(|| a.name.cmp(&b.name)));
        Score {
            total: total as u8,
            rules: fired,
        }
    }
}

/// A message's score and the rules behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    /// 0..=100.
    pub total: u8,
    /// Every rule that contributed, `extra` included, highest points first.
    pub rules: Vec<Rule>,
}

impl Score {
    /// For `X-Passerelle-Score`: `62 (BAYES_80=50, HTML_ONLY=10, REPLY_TO_MISMATCH=2)`, one line.
    /// Names from other stages are reduced to header-safe characters.
    pub fn header_value(&self) -> String {
        let rules: Vec<String> = self
            .rules
            .iter()
            .map(|r| {
                let name: String = r
                    .name
                    .chars()
                    .take(64)
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                format!("{name}={}", r.points)
            })
            .collect();
        format!("{} ({})", self.total, rules.join(", "))
    }
}

/// The training command: reads every file under each labelled folder, returns the model bytes.
pub fn train(ham_dirs: &[PathBuf], spam_dirs: &[PathBuf]) -> anyhow::Result<Vec<u8>> {
    let mut counts = bayes::Counts::default();
    for (dirs, spam) in [(ham_dirs, false), (spam_dirs, true)] {
        let files = files_under(dirs)?;
        if files.is_empty() {
            bail!("no {} messages found", if spam { "spam" } else { "ham" });
        }
        for path in files {
            let raw =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            counts.add(&Analysis::of(&raw).tokens, spam);
        }
    }
    Ok(counts.into_model().save())
}

/// What scoring needs from a message, before any model: computed once per message, so that
/// cross-validation reads each message once for all its folds.
#[derive(Debug, Clone)]
struct Analysis {
    hits: Vec<rules::Hit>,
    tokens: Vec<u32>,
}

impl Analysis {
    fn of(raw: &[u8]) -> Analysis {
        let content = mime::read(raw);
        Analysis {
            hits: rules::check(raw, &content),
            tokens: bayes::tokens(&content),
        }
    }
}

/// Every regular file under `dirs`, recursively, sorted, so runs are reproducible.
fn files_under(dirs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn visit(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                visit(&entry.path(), out)?;
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for d in dirs {
        visit(d, &mut out)?;
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests;
