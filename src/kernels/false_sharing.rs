//! False sharing, the DSM's worst case: a fixed set of per-worker result slots packed into one
//! small array that sits alone in a single page (and cache line). Each worker computes a chunk of
//! work, adds its result to its own slot, and goes on to the next chunk: every worker's updates
//! fight for that one page.
//!
//! The slots are plain words, each written only by its owner and read only after `join`: a
//! data-race-free program. Under the sequentially consistent protocol nearly every update moves
//! the page between nodes; under release consistency each node writes its own copy and sends one
//! diff when its thread ends (TreadMarks' classic case).

use std::cell::UnsafeCell;
use std::sync::Arc;

use super::common::{Fnv, PageAligned, mix};
use crate::par::{Size, spawn, workers};

/// Number of counters, whatever the number of workers (counter `c` belongs to worker
/// `c % workers()`).
const COUNTERS: usize = 8;

/// Steps of local work per counter for a size, in all.
fn steps(size: Size) -> u64 {
    match size {
        Size::Small => 40_000,
        Size::Medium => 4_000_000,
        Size::Large => 40_000_000,
    }
}

/// Steps of local work per chunk by default (a few nanoseconds: a worker updates its counter
/// hundreds of millions of times a second).
const WORK: u64 = 2;

/// Steps of local work per chunk: `RTHREADS_FS_WORK` (one step is a few nanoseconds), else
/// [`WORK`]. More work per chunk means fewer, sparser updates of the shared page for the same
/// total work; `rthreads-protocols --fs-work` sweeps it.
fn work() -> u64 {
    std::env::var("RTHREADS_FS_WORK").ok().and_then(|v| v.parse().ok()).filter(|&w| w > 0).unwrap_or(WORK)
}

/// One chunk of local work, touching no shared memory.
fn chunk(seed: u64, work: u64) -> u64 {
    let mut x = seed;
    for _ in 0..work {
        x = mix(x);
    }
    x & 0xffff
}

/// The counters: each written by one worker only, read after every worker has been joined.
struct Counters([UnsafeCell<u64>; COUNTERS]);

// SAFETY: counter `c` is only ever touched by worker `c % threads` until every worker is joined;
// the final reads happen after the joins.
unsafe impl Sync for Counters {}

/// Counts with `workers()` threads; the checksum hashes the final counters in order.
pub fn run(size: Size) -> u64 {
    let work = work();
    let per_counter = (steps(size) / work).max(1);
    let threads = workers().min(COUNTERS);
    let counters: Arc<PageAligned<Counters>> =
        Arc::new(PageAligned(Counters(std::array::from_fn(|_| UnsafeCell::new(0)))));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let counters = Arc::clone(&counters);
            spawn(move || {
                for i in 0..per_counter {
                    for c in (t..COUNTERS).step_by(threads) {
                        let add = chunk(i ^ ((c as u64) << 40), work);
                        let p = counters.0.0[c].get();
                        // SAFETY: only this worker touches counter `c` (see `Counters`). Volatile,
                        // so every update is a store to the shared page, as in a real program
                        // whose slot the compiler cannot keep in a register.
                        unsafe { p.write_volatile(p.read_volatile().wrapping_add(add)) };
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
