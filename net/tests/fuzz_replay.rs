//! Replays the checked-in fuzz corpus (`fuzz/corpus/{frames,codec,hello,auth}/`) through the same
//! harnesses the fuzz targets run, and throws random inputs at them, so every test run repeats
//! what fuzzing found without needing libFuzzer.

use std::fs;
use std::path::PathBuf;

use proptest::prelude::*;

/// Every file of `fuzz/corpus/<target>/`, sorted by name.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus in {}", dir.display());
    files
}

fn replay(target: &str, harness: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        eprintln!("{}", path.display());
        harness(&bytes);
    }
}

#[test]
fn frames_corpus() {
    replay("frames", net::fuzzing::frames);
}

#[test]
fn codec_corpus() {
    replay("codec", net::fuzzing::codec);
}

#[test]
fn hello_corpus() {
    replay("hello", net::fuzzing::hello);
}

#[test]
fn auth_corpus() {
    replay("auth", net::fuzzing::auth);
}

proptest! {
    #[test]
    fn frames_random(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        net::fuzzing::frames(&data);
    }

    #[test]
    fn codec_random(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        net::fuzzing::codec(&data);
    }

    #[test]
    fn hello_random(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        net::fuzzing::hello(&data);
    }

    #[test]
    fn auth_random(data in proptest::collection::vec(any::<u8>(), 0..120)) {
        net::fuzzing::auth(&data);
    }
}
