//! Lock contention: every worker repeatedly takes one shared [`Mutex`] to add to the counter it
//! guards, so the lock (and, on the DSM, the page holding the counter) moves between threads and
//! nodes all the time. The total number of increments is fixed and split evenly.

use std::sync::Arc;

use super::common::{PageAligned, band, mix};
use crate::par::{Mutex, Size, spawn, workers};

/// Total lock acquisitions for a size.
fn total(size: Size) -> usize {
    match size {
        Size::Small => 1_000,
        Size::Medium => 50_000,
        Size::Large => 400_000,
    }
}

/// Contends with `workers()` threads; the checksum is the final counter: the sum of `mix(i)` over
/// every increment number `i` (addition commutes, so the order of the turns does not matter).
pub fn run(size: Size) -> u64 {
    let n = total(size);
    let threads = workers().min(n);
    let counter = Arc::new(PageAligned(Mutex::new(0u64)));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let counter = Arc::clone(&counter);
            let mine = band(n, threads, t);
            spawn(move || {
                for i in mine {
                    let v = mix(i as u64);
                    let mut c = counter.0.lock();
                    *c = c.wrapping_add(v);
                }
            })
        })
        .collect();
    for h in handles {
        h.join();
    }
    *counter.0.lock()
}
