//! Trains the spam model, or measures rules and model by cross-validation, on folders of labelled
//! messages (one message per file). The documented way to reproduce the figures in docs/spam.md:
//!
//! ```text
//! cargo run --release --example spam_eval -- eval --ham DIR... --spam DIR...
//!     [--folds 5] [--show 20] [--dump FILE]
//! cargo run --release --example spam_eval -- train --ham DIR... --spam DIR...
//!     --out models/spam.model
//! ```
//!
//! `--show N` lists the N worst-scored ham and best-scored spam; `--dump` writes every message's
//! score as JSON lines.

use passerelle::policy::spam;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let (mut ham, mut spam_dirs) = (Vec::new(), Vec::new());
    let (mut out, mut dump) = (None, None);
    let (mut folds, mut show) = (5, 0);
    let mut list: Option<bool> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ham" => list = Some(false),
            "--spam" => list = Some(true),
            "--out" => out = args.next().map(PathBuf::from),
            "--dump" => dump = args.next().map(PathBuf::from),
            "--folds" => folds = args.next().unwrap_or_default().parse()?,
            "--show" => show = args.next().unwrap_or_default().parse()?,
            dir if !dir.starts_with("--") => match list {
                Some(false) => ham.push(PathBuf::from(dir)),
                Some(true) => spam_dirs.push(PathBuf::from(dir)),
                None => anyhow::bail!("{dir}: --ham or --spam first"),
            },
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    match command.as_str() {
        "train" => {
            let out = out.ok_or_else(|| anyhow::anyhow!("train needs --out FILE"))?;
            let model = spam::train(&ham, &spam_dirs)?;
            std::fs::write(&out, &model)?;
            println!("{}: {} bytes", out.display(), model.len());
        }
        "eval" => {
            let started = std::time::Instant::now();
            let report = spam::cross_validate(&ham, &spam_dirs, folds)?;
            print!("{report}");
            println!("  ({:.1} s)", started.elapsed().as_secs_f64());
            let mut hams: Vec<_> = report.messages.iter().filter(|m| !m.spam).collect();
            hams.sort_by_key(|m| std::cmp::Reverse(m.score.total));
            let mut spams: Vec<_> = report.messages.iter().filter(|m| m.spam).collect();
            spams.sort_by_key(|m| m.score.total);
            for (label, list) in [("highest ham", hams), ("lowest spam", spams)] {
                if show > 0 {
                    println!("{label}:");
                }
                for m in list.iter().take(show) {
                    println!("  {}  {}", m.score.header_value(), m.path.display());
                }
            }
            if let Some(dump) = dump {
                let lines: Vec<String> = report
                    .messages
                    .iter()
                    .map(serde_json::to_string)
                    .collect::<Result<_, _>>()?;
                std::fs::write(dump, lines.join("\n") + "\n")?;
            }
        }
        _ => anyhow::bail!("usage: spam_eval train|eval --ham DIR... --spam DIR... [options]"),
    }
    Ok(())
}
