//! Scans of pages homed elsewhere with read-ahead: node 0 fills an array of 600 pages, a thread on
//! node 1 reads it in order, then node 0 rewrites part of it (revoking copies node 1 holds or has
//! asked for in a read-ahead run) and node 1 reads it in order again, several rounds. Checks every
//! value and prints node 1's read faults.
use std::sync::atomic::{AtomicU64, Ordering};

use rthreads::sync::Arc;

mod fixture;

/// Words of one page.
const WORDS: usize = 512;
const PAGES: usize = 600;
const ROUNDS: u64 = 6;

fn value(round: u64, i: usize) -> u64 {
    round * 1_000_003 + i as u64
}

/// The round in which word `i` was last written, after `round`'s writes: round 0 writes
/// everything, round `r` the words of every `r + 1`-th page from page `r`.
fn written(round: u64, i: usize) -> u64 {
    let page = (i / WORDS) as u64;
    (1..=round).rev().find(|&r| page >= r && (page - r).is_multiple_of(r + 1)).unwrap_or(0)
}

#[rthreads::main(nodes = 2)]
fn main() {
    let data: Arc<Vec<AtomicU64>> =
        Arc::new((0..PAGES * WORDS).map(|i| AtomicU64::new(value(0, i))).collect());
    let before = rthreads::stats();
    let d = Arc::clone(&data);
    let write = |round: u64| {
        if round > 0 {
            let r = round as usize;
            for page in (r..PAGES).step_by(r + 1) {
                for i in page * WORDS..(page + 1) * WORDS {
                    data[i].store(value(round, i), Ordering::Relaxed);
                }
            }
        }
    };
    let read = move |round: u64| {
        for (i, word) in d.iter().enumerate() {
            let want = value(written(round, i), i);
            assert_eq!(word.load(Ordering::Relaxed), want, "word {i} (page {}) in round {round}", i / WORDS);
        }
    };
    fixture::write_then_read_rounds(0..ROUNDS, write, read);
    let after = rthreads::stats();
    println!("read faults on node 1: {}", after[1].read_faults - before[1].read_faults);
    println!("scan ok");
}
