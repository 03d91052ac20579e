//! Branch and bound with a racy bound: the TreadMarks TSP lesson, on rthreads.
//!
//! Workers on every node search chunks of a space for the smallest cost. An item is skipped when
//! its lower bound is no better than the best cost found so far. Workers read that best cost
//! *without* taking the lock (a relaxed atomic load: fast, and still correct, since a stale bound
//! only prunes less), and lower it under a lock after each chunk if they found better. The best
//! solution sits in the first chunk, which is quick to search, and every other item's lower bound
//! is above it, so with a fresh bound the other workers prune almost everything.
//!
//! ```text
//! RTHREADS_PROTOCOL=sc  cargo run --release --example stale_bound
//! RTHREADS_PROTOCOL=lrc cargo run --release --example stale_bound
//! ```
//!
//! Both print the same answer. They do not do the same work:
//! - under sequential consistency every node sees the new bound as soon as it is stored, so the
//!   other workers stop evaluating chunks as soon as the best one is known;
//! - under release consistency a node sees other nodes' writes only at its next acquire. The
//!   bound lives in a bulk allocation (more than 2 KiB, so release consistent) and is lowered with
//!   a plain store, which the runtime cannot tell from ordinary data (only atomic
//!   read-modify-writes make a page sequentially consistent). A worker that does not take the lock
//!   (it finds nothing better than the bound it sees) keeps reading the bound it fetched first, and
//!   evaluates chunks that a fresh bound would have pruned.
//!
//! The lesson: under a relaxed protocol, data read outside synchronisation can be arbitrarily old.
//! To get the fast behaviour back, keep the shared bound in a small allocation (which rthreads keeps
//! sequentially consistent), lower it with `fetch_min` (an atomic read-modify-write, which makes its
//! page sequentially consistent), or take the lock now and then to refresh it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rthreads::sync::Mutex;

const CHUNKS: u64 = 64;
const ITEMS: u64 = 16384;

/// A page-aligned, page-sized cell: a bulk allocation of its own.
#[repr(align(4096))]
struct Bound(AtomicU64);

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A lower bound on the cost of item `i` of chunk `c`: chunk 0 holds the best solutions, every
/// other item costs at least 1 000 000 more.
fn lower_bound(c: u64, i: u64) -> u64 {
    if c == 0 { 0 } else { 1_000_000 + mix(c << 32 | i) % 1_000_000 }
}

/// The cost of item `i` of chunk `c` (at least its lower bound), and some work to find it; chunk 0
/// is quick.
fn cost(c: u64, i: u64) -> u64 {
    let mut x = c << 32 | i;
    for _ in 0..if c == 0 { 1 } else { 200 } {
        x = mix(x);
    }
    lower_bound(c, i) + x % 1000
}

#[rthreads::main]
fn main() {
    let workers = rthreads::node_count() * 2;
    let best = Arc::new(Bound(AtomicU64::new(u64::MAX)));
    let lock = Arc::new(Mutex::new(()));
    // Everybody starts together, with the same (empty) bound.
    let start = Arc::new(rthreads::sync::Barrier::new(workers));
    let t = std::time::Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let (best, lock, start) = (Arc::clone(&best), Arc::clone(&lock), Arc::clone(&start));
            rthreads::spawn(move || {
                std::hint::black_box(best.0.load(Ordering::Relaxed));
                start.wait();
                let mut evaluated = 0u64;
                for c in (w as u64..CHUNKS).step_by(workers) {
                    let mut found = u64::MAX;
                    for i in 0..ITEMS {
                        // The racy read: no lock.
                        if lower_bound(c, i) >= best.0.load(Ordering::Relaxed) {
                            continue;
                        }
                        evaluated += 1;
                        found = found.min(cost(c, i));
                    }
                    if found < best.0.load(Ordering::Relaxed) {
                        let _g = lock.lock().unwrap();
                        if found < best.0.load(Ordering::Relaxed) {
                            best.0.store(found, Ordering::Relaxed);
                        }
                    }
                }
                evaluated
            })
        })
        .collect();
    let evaluated: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let answer = {
        let _g = lock.lock().unwrap();
        best.0.load(Ordering::Relaxed)
    };
    let protocol = std::env::var("RTHREADS_PROTOCOL").unwrap_or_else(|_| "sc".into());
    println!("answer {answer}");
    println!(
        "protocol {protocol}: {evaluated} of {} items evaluated by {workers} workers on {} nodes, {:.2} s",
        CHUNKS * ITEMS,
        rthreads::node_count(),
        t.elapsed().as_secs_f64()
    );
}
