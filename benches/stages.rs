//! What each data-phase stage costs Passerelle per message, without clamd and without the rest
//! of the daemon (issue #8): the limits stage's walk, the virus stage's MIME reading (its parse
//! and walk; clamd's own work is apart, `bench/clamd_protocols.py`) and the spam score, on the
//! three message shapes `passerelle-bench load` sends (`benches/messages/*.eml`: written by
//! `passerelle-bench sample --shape … --number 7`, with three `Received:` fields on top as a
//! relayed message has them).
//!
//! Run: `cargo bench --bench stages` (`-- alternative` for one shape). Timings on a shared
//! machine move by tens of percent from one run to the next; instruction counts do not:
//! `STAGES=virus SHAPE=alternative valgrind --tool=callgrind target/release/deps/stages-…`
//! counts one stage on one shape (see bench/README.md, "Stages alone"). Under
//! `cargo test --all-targets` (no `--bench` argument) it makes one quick pass.

use passerelle::policy::limits::{self, LimitsConfig};
use passerelle::policy::spam::{Scorer, SpamConfig};
use passerelle::policy::virus;
use std::hint::black_box;
use std::time::Instant;

const SHAPES: [&str; 3] = ["text", "alternative", "attachment"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = !args.iter().any(|a| a == "--bench");
    let only_shape = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .cloned()
        .or_else(|| std::env::var("SHAPE").ok());
    let stages = std::env::var("STAGES").unwrap_or_else(|_| "limits virus spam".into());
    // Under callgrind: ROUNDS=1 PER_ROUND=50 keeps it short.
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = env("ROUNDS", if quick { 1 } else { 15 });
    let per_round = env("PER_ROUND", if quick { 5 } else { 1_000 });
    let scorer = Scorer::new(&SpamConfig::default()).expect("built-in model");
    let cfg = LimitsConfig::default();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/messages");
    for shape in SHAPES {
        if only_shape.as_deref().is_some_and(|w| w != shape) {
            continue;
        }
        let raw = std::fs::read(format!("{dir}/{shape}.eml")).expect("a sample message");
        // What each stage finds, so that a change that makes one cheaper by reading less shows.
        let found = limits::inspect(&raw, &cfg);
        assert!(found.violation.is_none(), "{shape}: {found:?}");
        let leaves = virus::read_leaves(&raw, 1000);
        let total = scorer.score(&raw, &[]).total;
        let mut line = format!("{shape} ({} octets):", raw.len());
        for stage in stages.split_whitespace() {
            let run: &dyn Fn() = match stage {
                "limits" => &|| {
                    black_box(limits::inspect_in_place(black_box(&raw), &cfg));
                },
                "virus" => &|| {
                    black_box(virus::read_leaves(black_box(&raw), 1000));
                },
                "spam" => &|| {
                    black_box(scorer.score(black_box(&raw), &[]));
                },
                other => panic!("STAGES: no stage {other:?} (limits, virus, spam)"),
            };
            let mut best = f64::INFINITY;
            for _ in 0..rounds {
                let t = Instant::now();
                for _ in 0..per_round {
                    run();
                }
                best = best.min(t.elapsed().as_secs_f64() * 1e6 / per_round as f64);
            }
            line += &format!(" {stage} {best:.1} µs");
        }
        println!("{line} (best of {rounds} rounds of {per_round}; {leaves} leaves, score {total})");
    }
}
