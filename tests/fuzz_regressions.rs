//! The fuzz targets' seed corpus and every input a fuzz run ever crashed on, fed through the same
//! checks as the targets (`passerelle::fuzzing`) on stable Rust, so that they run with
//! `cargo test` and need neither nightly nor cargo-fuzz. See fuzz/README.md.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Runs `check` on every file in `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/`;
/// fails naming each file that fails. A target without a single input is a failure too.
fn run(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_file() {
                inputs.push(path);
            }
        }
    }
    inputs.sort();
    assert!(!inputs.is_empty(), "no inputs for {target} under {root:?}");
    let mut failed = Vec::new();
    for path in &inputs {
        let bytes = std::fs::read(path).expect("readable");
        if catch_unwind(AssertUnwindSafe(|| check(&bytes))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs fail:\n  {}",
        failed.len(),
        inputs.len(),
        failed.join("\n  ")
    );
}

#[test]
fn smtp_command() {
    run("smtp_command", passerelle::fuzzing::smtp_command);
}

#[test]
fn data_codec() {
    run("data_codec", passerelle::fuzzing::data_codec);
}

#[test]
fn mime_walk() {
    run("mime_walk", passerelle::fuzzing::mime_walk);
}

#[test]
fn archive() {
    run("archive", passerelle::fuzzing::archive);
}

#[test]
fn config() {
    run("config", passerelle::fuzzing::config);
}
