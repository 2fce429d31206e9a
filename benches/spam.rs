//! The spam stage's cost per message, apart from the rest of the daemon (issue #8): the full
//! runs of `bench/compare.sh` move by 10–20 % with the machine's other load, too much to see a
//! change of a few percent in one stage; this measures `Scorer::score` alone, with the built-in
//! model and default rules, on the same 10 KiB message of plain prose that `passerelle-bench load`
//! sends, on an HTML newsletter, and on a message of long lines with links and addresses.
//!
//! Run: `cargo bench --bench spam` (`-- prose` for one message). Under `cargo test --all-targets` (no `--bench` argument) it
//! makes one quick pass, so that the test suite stays fast.

use passerelle::policy::spam::{Scorer, SpamConfig};
use std::hint::black_box;
use std::time::Instant;

/// The load generator's prose (bench/src/load.rs), one paragraph a line: the same words, so the
/// same tokens, as the message `passerelle-bench load` sends (which wraps them at 76 octets).
fn prose(size: usize) -> Vec<u8> {
    const TEXT: &str = "Hello team, please find below the notes from this week's planning \
        meeting. The delivery schedule for the northern warehouse moves to Tuesday, and the \
        new invoices will be sent to the accounting office before the end of the month. \
        Maria will share the updated spreadsheet with the regional managers tomorrow. If you \
        have questions about the budget, contact the finance desk. Thank you for your work.";
    let mut out = b"From: Bench Sender <a@bench.test>\r\nTo: <b@example.test>\r\n\
        Subject: Quarterly figures, part 1\r\nDate: Thu, 01 Jan 2026 12:00:00 +0000\r\n\
        Message-ID: <bench-1@bench.test>\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        .to_vec();
    while out.len() < size {
        out.extend_from_slice(TEXT.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn newsletter(size: usize) -> Vec<u8> {
    let mut out = b"From: News <news@shop.test>\r\nTo: <b@example.test>\r\n\
        Subject: =?UTF-8?Q?Derni=C3=A8res_offres?=\r\nDate: Thu, 01 Jan 2026 12:00:00 +0000\r\n\
        Message-ID: <n-1@shop.test>\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/html; charset=utf-8\r\n\r\n<html><body>\r\n"
        .to_vec();
    let mut i = 0;
    while out.len() < size {
        out.extend_from_slice(
            format!(
                "<p>Réduction de {i} % sur <a href=\"https://shop.test/offre/{i}?src=mail\">\
                 nos articles</a> — écrivez à <b>contact{i}@shop.test</b>.</p>\r\n"
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.extend_from_slice(b"</body></html>\r\n");
    out
}

fn links(size: usize) -> Vec<u8> {
    let mut out = b"From: <x@links.test>\r\nTo: <b@example.test>\r\nSubject: see\r\n\
        MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        .to_vec();
    let mut i = 0;
    while out.len() < size {
        out.extend_from_slice(
            format!(
                "http://www.site{i}.test/a/b/c?d={i} mail{i}@site{i}.test \
                 Supercalifragilistic{i} naïve Ünïcödé…\r\n"
            )
            .as_bytes(),
        );
        i += 1;
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = !args.iter().any(|a| a == "--bench");
    // `cargo bench --bench spam -- prose`: only the messages whose name has that word.
    let only = args.iter().find(|a| !a.starts_with('-'));
    let scorer = Scorer::new(&SpamConfig::default()).expect("built-in model");
    let rounds = if quick { 1 } else { 5 };
    let per_round = if quick { 20 } else { 2_000 };
    for (name, msg) in [
        ("10 KiB prose (the load generator's)", prose(10_240)),
        ("10 KiB HTML newsletter", newsletter(10_240)),
        ("10 KiB links and addresses", links(10_240)),
    ] {
        if only.is_some_and(|w| !name.contains(w.as_str())) {
            continue;
        }
        let mut best = f64::INFINITY;
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..per_round {
                black_box(scorer.score(black_box(&msg), &[]));
            }
            best = best.min(t.elapsed().as_secs_f64() * 1e6 / per_round as f64);
        }
        let total = scorer.score(&msg, &[]).total;
        println!(
            "spam score, {name}: {best:.1} µs per message (best of {rounds} rounds of {per_round}; score {total})"
        );
    }
}
