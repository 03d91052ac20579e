//! Copies dropped before a barrier (`RTHREADS_DROP_COPIES`) and asked for ahead at the next one
//! (`RTHREADS_BARRIER_PREFETCH`): node 0 writes a few pages it homes between barriers, node 1 reads
//! them after each barrier (a halo row, say). Checks that node 1 always reads the round's values,
//! and prints how many write faults node 0 took, how many copies node 1 dropped and how many read
//! faults it took: with drops, node 0's writes after the first rounds find no copy to revoke (and
//! mostly no trap at all); with copies asked for ahead, node 1's reads mostly find the page there.
use std::sync::atomic::{AtomicU64, Ordering};

use rthreads::sync::Arc;

mod fixture;

/// Words of one page.
const WORDS: usize = 512;
const PAGES: usize = 2;
const ROUNDS: u64 = 40;

#[rthreads::main(nodes = 2)]
fn main() {
    let data: Arc<Vec<AtomicU64>> = Arc::new((0..PAGES * WORDS).map(|_| AtomicU64::new(0)).collect());
    let before = rthreads::stats();
    let d = Arc::clone(&data);
    let write = |round: u64| {
        // Some work first (the drops, sent without waiting, arrive meanwhile).
        std::thread::sleep(std::time::Duration::from_millis(2));
        for c in data.iter() {
            c.store(round, Ordering::Relaxed);
        }
    };
    let read = move |round: u64| {
        for p in 0..PAGES {
            for w in [0, WORDS - 1] {
                let v = d[p * WORDS + w].load(Ordering::Relaxed);
                assert_eq!(v, round, "page {p} word {w} in round {round}");
            }
        }
    };
    fixture::write_then_read_rounds(1..ROUNDS + 1, write, read);
    let after = rthreads::stats();
    let drops =
        |s: &rthreads::NodeStats| s.by_kind.iter().find(|k| k.kind == "drop copy").map_or(0, |k| k.sent);
    println!("write faults on node 0: {}", after[0].write_faults - before[0].write_faults);
    println!("drops by node 1: {}", drops(&after[1]) - drops(&before[1]));
    println!("read faults on node 1: {}", after[1].read_faults - before[1].read_faults);
    println!("drops ok");
}
