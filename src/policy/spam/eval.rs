//! Cross-validation: how the rules and the classifier do on labelled mail they were not trained
//! on. Each class is split into `folds` parts by position in its sorted file list; each part is
//! scored by a model trained on the other parts, with the default points.

use super::{Analysis, Score, Scorer, SpamConfig, bayes, files_under};
use anyhow::{Context, ensure};
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// The figures of one cross-validation run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub folds: usize,
    /// The thresholds the figures count against: the defaults, 50 and 100.
    pub tag_at: u8,
    pub delete_at: u8,
    pub ham: Tally,
    pub spam: Tally,
    /// Every message with the score its fold's model gave, in input order.
    pub messages: Vec<Scored>,
}

/// How one class fared.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Tally {
    pub messages: usize,
    /// Scored at or above `tag_at`.
    pub tagged: usize,
    /// Scored at or above `delete_at`.
    pub deleted: usize,
}

/// One message of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub path: PathBuf,
    pub spam: bool,
    pub score: Score,
}

/// Runs `folds`-fold cross-validation on every file under the labelled folders.
pub fn cross_validate(ham: &[PathBuf], spam: &[PathBuf], folds: usize) -> anyhow::Result<Report> {
    ensure!(folds >= 2, "cross-validation needs at least 2 folds");
    let mut corpus = Vec::new();
    for (dirs, is_spam) in [(ham, false), (spam, true)] {
        let files = files_under(dirs)?;
        ensure!(
            files.len() >= folds,
            "{} {} messages for {folds} folds",
            files.len(),
            if is_spam { "spam" } else { "ham" }
        );
        for (i, path) in files.into_iter().enumerate() {
            let raw =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            corpus.push((path, is_spam, i % folds, Analysis::of(&raw)));
        }
    }

    let config = SpamConfig::default();
    let mut scores: Vec<Option<Score>> = vec![None; corpus.len()];
    for fold in 0..folds {
        let mut counts = bayes::Counts::default();
        for (_, is_spam, f, a) in &corpus {
            if *f != fold {
                counts.add(&a.tokens, *is_spam);
            }
        }
        let scorer = Scorer::with_model(counts.into_model(), &config.rules);
        for (i, (_, _, f, a)) in corpus.iter().enumerate() {
            if *f == fold {
                scores[i] = Some(scorer.total(a, &[]));
            }
        }
    }

    let mut report = Report {
        folds,
        tag_at: config.tag_at,
        delete_at: config.delete_at,
        ham: Tally::default(),
        spam: Tally::default(),
        messages: Vec::with_capacity(corpus.len()),
    };
    for ((path, is_spam, _, _), score) in corpus.into_iter().zip(scores) {
        let score = score.expect("every message is in one fold");
        let o = if is_spam {
            &mut report.spam
        } else {
            &mut report.ham
        };
        o.messages += 1;
        o.tagged += usize::from(score.total >= config.tag_at);
        o.deleted += usize::from(score.total >= config.delete_at);
        report.messages.push(Scored {
            path,
            spam: is_spam,
            score,
        });
    }
    Ok(report)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}-fold cross-validation: {} ham, {} spam",
            self.folds, self.ham.messages, self.spam.messages
        )?;
        let share = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
        for (label, o) in [("spam", self.spam), ("ham", self.ham)] {
            for (what, n) in [
                (format!(">= {}", self.tag_at), o.tagged),
                (format!("at {}", self.delete_at), o.deleted),
            ] {
                writeln!(
                    f,
                    "  {label:<4} scored {what:<6} {:>6.2} %  ({n} of {})",
                    share(n, o.messages),
                    o.messages
                )?;
            }
        }
        Ok(())
    }
}
