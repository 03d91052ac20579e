//! Replays the checked-in fuzz corpus (`fuzz/corpus/sc_protocol/`) through the same harness the
//! fuzz target runs, and throws random inputs at it, so every test run repeats what fuzzing found
//! without needing libFuzzer.

use std::fs;
use std::path::PathBuf;

use proptest::prelude::*;

#[test]
fn sc_protocol_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/sc_protocol");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus in {}", dir.display());
    for path in files {
        eprintln!("{}", path.display());
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        dsm::fuzzing::sc_protocol(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sc_protocol_random(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        dsm::fuzzing::sc_protocol(&data);
    }
}
