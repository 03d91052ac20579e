//! Replays the checked-in fuzz corpus (`fuzz/corpus/{sc_protocol,lrc_protocol}/`) through the same
//! harnesses the fuzz targets run, and throws random inputs at them, so every test run repeats
//! what fuzzing found without needing libFuzzer.

// Tests print as they like: the rule against std's print macros is the runtime's.
#![allow(clippy::disallowed_macros)]

use std::fs;
use std::path::PathBuf;

use proptest::prelude::*;

/// Runs `harness` on every file of `fuzz/corpus/<target>/`, in name order.
fn replay(target: &str, harness: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus in {}", dir.display());
    for path in files {
        eprintln!("{}", path.display());
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        harness(&bytes);
    }
}

#[test]
fn sc_protocol_corpus() {
    replay("sc_protocol", dsm::fuzzing::sc_protocol);
}

#[test]
fn lrc_protocol_corpus() {
    replay("lrc_protocol", dsm::fuzzing::lrc_protocol);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sc_protocol_random(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        dsm::fuzzing::sc_protocol(&data);
    }

    #[test]
    fn lrc_protocol_random(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        dsm::fuzzing::lrc_protocol(&data);
    }
}
