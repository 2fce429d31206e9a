//! `passerelle score`, `train-spam` and `spam-report`: the spam rules and model, offline.

use crate::config::Config;
use crate::policy::spam::{Scorer, cross_validate, train};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ScoreArgs {
    /// Messages (RFC 5322 files) or folders of them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// One JSON object per message.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct Labelled {
    /// Folders of legitimate mail.
    #[arg(long, num_args = 1.., required = true)]
    ham: Vec<PathBuf>,
    /// Folders of spam.
    #[arg(long, num_args = 1.., required = true)]
    spam: Vec<PathBuf>,
}

/// Scores with the daemon's rules and model. Rules that need the network (SPF, DKIM, DMARC,
/// DNSBL) are not run offline, and the output says so.
pub fn score(config: &Config, args: ScoreArgs) -> Result<()> {
    let scorer = Scorer::new(&config.policy.spam)?;
    let mut files = Vec::new();
    for p in &args.paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = walk(p)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    if !args.json {
        eprintln!("offline: SPF, DKIM, DMARC and DNSBL rules are not run");
    }
    for f in files {
        let raw = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        let s = scorer.score(&raw, &[]);
        if args.json {
            let v = serde_json::json!({ "path": f, "total": s.total, "rules": s.rules, "offline": true });
            println!("{v}");
        } else {
            println!("{}\t{}", s.header_value(), f.display());
        }
    }
    Ok(())
}

fn walk(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

pub fn train_model(args: Labelled, out: PathBuf) -> Result<()> {
    let bytes = train(&args.ham, &args.spam)?;
    std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    println!("model written to {} ({} bytes)", out.display(), bytes.len());
    Ok(())
}

pub fn report(args: Labelled, folds: usize) -> Result<()> {
    let r = cross_validate(&args.ham, &args.spam, folds)?;
    println!("{r}");
    Ok(())
}
