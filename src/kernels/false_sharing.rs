//! False sharing, the DSM's worst case: a fixed set of counters, each incremented a fixed number of
//! times by the one worker that owns it, but all of them packed into one small array that sits
//! alone in a single page (and cache line). Every worker's increments fight for that page.
//!
//! The counters are plain words, each written only by its owner and read only after `join`: a
//! data-race-free program. Under the sequentially consistent protocol every increment on another
//! node than the page's last writer moves the page; under release consistency each node writes its
//! own copy and sends one diff when its thread ends (TreadMarks' classic case).

use std::cell::UnsafeCell;
use std::sync::Arc;

use super::common::{Fnv, PageAligned};
use crate::par::{Size, spawn, workers};

/// Number of counters, whatever the number of workers (counter `c` belongs to worker
/// `c % workers()`).
const COUNTERS: usize = 8;

/// Increments per counter for a size.
fn increments(size: Size) -> u64 {
    match size {
        Size::Small => 5_000,
        Size::Medium => 2_000_000,
        Size::Large => 20_000_000,
    }
}

/// The counters: each written by one worker only, read after every worker has been joined.
struct Counters([UnsafeCell<u64>; COUNTERS]);

// SAFETY: counter `c` is only ever touched by worker `c % threads` until every worker is joined;
// the final reads happen after the joins.
unsafe impl Sync for Counters {}

/// Counts with `workers()` threads; the checksum hashes the final counters in order.
pub fn run(size: Size) -> u64 {
    let per_counter = increments(size);
    let threads = workers().min(COUNTERS);
    let counters: Arc<PageAligned<Counters>> =
        Arc::new(PageAligned(Counters(std::array::from_fn(|_| UnsafeCell::new(0)))));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let counters = Arc::clone(&counters);
            spawn(move || {
                for _ in 0..per_counter {
                    for c in (t..COUNTERS).step_by(threads) {
                        let p = counters.0.0[c].get();
                        // SAFETY: only this worker touches counter `c` (see `Counters`). Volatile,
                        // so every increment is a store to the shared page, as in a real program
                        // whose counter the compiler cannot keep in a register.
                        unsafe { p.write_volatile(p.read_volatile() + 1) };
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join();
    }
    let mut h = Fnv::new();
    for c in &counters.0.0 {
        // SAFETY: every worker has been joined; nobody writes any more.
        h.word(unsafe { *c.get() });
    }
    h.finish()
}
