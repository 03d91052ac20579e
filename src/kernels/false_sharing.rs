//! False sharing, the DSM's worst case: a fixed set of counters, each incremented a fixed number of
//! times by the one worker that owns it, but all of them packed into one small array of atomics
//! that sits alone in a single page (and cache line). Every worker's increments fight for that page.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::common::{Fnv, PageAligned};
use crate::par::{Size, spawn, workers};

/// Number of counters, whatever the number of workers (counter `c` belongs to worker
/// `c % workers()`).
const COUNTERS: usize = 8;

/// Increments per counter for a size.
fn increments(size: Size) -> u64 {
    match size {
        Size::Small => 5_000,
        Size::Medium => 8_000_000,
        Size::Large => 50_000_000,
    }
}

/// Counts with `workers()` threads; the checksum hashes the final counters in order.
pub fn run(size: Size) -> u64 {
    let per_counter = increments(size);
    let threads = workers().min(COUNTERS);
    let counters: Arc<PageAligned<[AtomicU64; COUNTERS]>> =
        Arc::new(PageAligned(std::array::from_fn(|_| AtomicU64::new(0))));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let counters = Arc::clone(&counters);
            spawn(move || {
                for _ in 0..per_counter {
                    for c in (t..COUNTERS).step_by(threads) {
                        counters.0[c].fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join();
    }
    let mut h = Fnv::new();
    for c in &counters.0 {
        h.word(c.load(Ordering::Relaxed));
    }
    h.finish()
}
