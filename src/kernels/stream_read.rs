//! A cold streaming read: a large array built on the calling thread, each worker reading its
//! contiguous slice exactly once. On the DSM nearly every page is a remote read fault, so this
//! measures page transfer throughput.

use std::sync::Arc;

use super::common::{band, mix};
use crate::par::{Size, spawn, workers};

/// Array length in `u64`s for a size (2 MiB, 64 MiB, 512 MiB).
fn length(size: Size) -> usize {
    match size {
        Size::Small => 1 << 18,
        Size::Medium => 1 << 23,
        Size::Large => 1 << 26,
    }
}

/// Sums with `workers()` threads; the checksum is the wrapping sum of `x[i] * (2i + 1)`.
pub fn run(size: Size) -> u64 {
    let n = length(size);
    let threads = workers().min(n);
    let data: Arc<Vec<u64>> = Arc::new((0..n as u64).map(mix).collect());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let data = Arc::clone(&data);
            let mine = band(n, threads, t);
            spawn(move || {
                let start = mine.start as u64;
                data[mine]
                    .iter()
                    .enumerate()
                    .fold(0u64, |acc, (k, &x)| acc.wrapping_add(x.wrapping_mul(2 * (start + k as u64) + 1)))
            })
        })
        .collect();
    handles.into_iter().fold(0u64, |acc, h| acc.wrapping_add(h.join()))
}
