//! Replays the checked-in fuzz corpus (`fuzz/corpus/wire_decode/`) through the same harness the
//! fuzz target runs, and throws random inputs at it, so every test run repeats what fuzzing found
//! without needing libFuzzer.

// Tests print as they like: the rule against std's print macros is the runtime's.
#![allow(clippy::disallowed_macros)]

use std::fs;
use std::path::PathBuf;

use proptest::prelude::*;

#[test]
fn wire_decode_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wire_decode");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus in {}", dir.display());
    let mut decoded = 0;
    for path in files {
        eprintln!("{}", path.display());
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        decoded += usize::from(rthreads::__fuzz::wire_decode(&bytes));
    }
    // The corpus holds messages of every kind, not only garbage.
    assert!(decoded >= 10, "only {decoded} corpus files decode");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn wire_decode_random(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        rthreads::__fuzz::wire_decode(&data);
    }

    /// Random bytes rarely start with a valid tag: these do.
    #[test]
    fn wire_decode_random_tagged(tag in 0x10u8..0x28, kind in 0u8..20, rest in proptest::collection::vec(any::<u8>(), 0..80)) {
        let mut data = vec![tag, kind];
        data.extend(rest);
        rthreads::__fuzz::wire_decode(&data);
    }
}
