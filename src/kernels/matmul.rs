//! Dense `f64` matrix product `C = A * B`: `A` and `B` are built once on the calling thread and
//! shared read-only; the rows of `C` are split into one contiguous band per worker, and each worker
//! builds its band in its own allocation and returns it through `join`.

use std::sync::Arc;

use super::common::{Fnv, band};
use crate::par::{Size, spawn, workers};

/// The matrices' order for a size.
fn order(size: Size) -> usize {
    match size {
        Size::Small => 48,
        Size::Medium => 1536,
        Size::Large => 3072,
    }
}

/// Element `(i, j)` of `A` (`which` = 0) or `B` (`which` = 1): small multiples of 1/8, so every
/// product and partial sum is exact.
fn element(which: usize, i: usize, j: usize) -> f64 {
    let v = (i * (7 + which) + j * (3 + 2 * which) + which) % 17;
    v as f64 * 0.125 - 1.0
}

/// Multiplies two `n`×`n` matrices with `workers()` threads; the checksum hashes `C` row by row.
pub fn run(size: Size) -> u64 {
    product(order(size))
}

/// The same product at the order a new user tries first (issue 17's table): 512 for `medium`.
pub fn run_512(size: Size) -> u64 {
    product(match size {
        Size::Small => 32,
        Size::Medium => 512,
        Size::Large => 1024,
    })
}

fn product(n: usize) -> u64 {
    let threads = workers().min(n);
    let a: Arc<Vec<f64>> = Arc::new((0..n * n).map(|k| element(0, k / n, k % n)).collect());
    let b: Arc<Vec<f64>> = Arc::new((0..n * n).map(|k| element(1, k / n, k % n)).collect());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (a, b) = (Arc::clone(&a), Arc::clone(&b));
            let rows = band(n, threads, t);
            spawn(move || {
                let mut c = vec![0.0f64; rows.len() * n];
                for (ci, i) in c.chunks_exact_mut(n).zip(rows) {
                    for (k, &aik) in a[i * n..(i + 1) * n].iter().enumerate() {
                        for (cij, &bkj) in ci.iter_mut().zip(&b[k * n..(k + 1) * n]) {
                            *cij += aik * bkj;
                        }
                    }
                }
                c
            })
        })
        .collect();
    let mut h = Fnv::new();
    for handle in handles {
        for &x in &handle.join() {
            h.float(x, 1e6);
        }
    }
    h.finish()
}
