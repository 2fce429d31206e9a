//! See fuzz/README.md and `passerelle::fuzzing::archive` for the input format and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| passerelle::fuzzing::archive(data));
