//! A 2-D Jacobi stencil (each interior cell becomes the mean of its four neighbours) on an `n`×`n`
//! grid with a fixed border, iterated with a [`Barrier`] between iterations.
//!
//! The grid is cut into row bands, one per worker. A worker keeps its band (plus one halo row above
//! and below) in two buffers of its own that it swaps every iteration; the only data that crosses
//! between workers are the band's first and last rows, which it publishes after each iteration into
//! page-aligned edge slots (double-buffered by iteration parity, so one barrier per iteration is
//! enough) and which its neighbours copy into their halos at the start of the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::common::{Fnv, PageAligned, band};
use crate::par::{Barrier, Size, spawn, workers};

/// `f64`s per page of an edge slot.
const PER_PAGE: usize = 512;

/// One published row: whole pages of its own, holding the `f64` bits.
type Edge = Vec<PageAligned<[AtomicU64; PER_PAGE]>>;

/// Grid order and iteration count for a size.
fn shape(size: Size) -> (usize, usize) {
    match size {
        Size::Small => (32, 20),
        Size::Medium => (1024, 1500),
        Size::Large => (2048, 3000),
    }
}

/// The starting value of cell `(i, j)`: the top edge is hot, the rest a fixed pattern.
pub(super) fn initial(n: usize, i: usize, j: usize) -> f64 {
    if i == 0 {
        100.0
    } else if i == n - 1 || j == 0 || j == n - 1 {
        0.0
    } else {
        ((i * 31 + j * 17) % 11) as f64 * 0.5
    }
}

/// A new, zeroed edge slot for rows of `n` cells.
fn new_edge(n: usize) -> Edge {
    (0..n.div_ceil(PER_PAGE)).map(|_| PageAligned(std::array::from_fn(|_| AtomicU64::new(0)))).collect()
}

/// Stores `row` into `edge`.
fn publish(edge: &Edge, row: &[f64]) {
    for (k, &x) in row.iter().enumerate() {
        edge[k / PER_PAGE].0[k % PER_PAGE].store(x.to_bits(), Ordering::Relaxed);
    }
}

/// Copies `edge` into `row`.
fn fetch(edge: &Edge, row: &mut [f64]) {
    for (k, x) in row.iter_mut().enumerate() {
        *x = f64::from_bits(edge[k / PER_PAGE].0[k % PER_PAGE].load(Ordering::Relaxed));
    }
}

/// Index of band `t`'s edge slot for iteration parity `parity`, top (`bottom` false) or bottom row.
fn slot(t: usize, parity: usize, bottom: bool) -> usize {
    t * 4 + parity * 2 + usize::from(bottom)
}

/// Runs the stencil with `workers()` threads; the checksum hashes the final grid row by row.
pub fn run(size: Size) -> u64 {
    let (n, iterations) = shape(size);
    let threads = workers().min(n);
    let edges: Arc<Vec<Edge>> = Arc::new((0..threads * 4).map(|_| new_edge(n)).collect());
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (edges, barrier) = (Arc::clone(&edges), Arc::clone(&barrier));
            let rows = band(n, threads, t);
            spawn(move || {
                let len = rows.len();
                // Local row r + 1 is global row rows.start + r; local rows 0 and len + 1 are halos.
                let mut cur = vec![0.0f64; (len + 2) * n];
                for (r, i) in rows.clone().enumerate() {
                    for j in 0..n {
                        cur[(r + 1) * n + j] = initial(n, i, j);
                    }
                }
                let mut next = cur.clone();
                publish(&edges[slot(t, 0, false)], &cur[n..2 * n]);
                publish(&edges[slot(t, 0, true)], &cur[len * n..(len + 1) * n]);
                barrier.wait();
                for it in 0..iterations {
                    let parity = it % 2;
                    if t > 0 {
                        fetch(&edges[slot(t - 1, parity, true)], &mut cur[..n]);
                    }
                    if t + 1 < threads {
                        fetch(&edges[slot(t + 1, parity, false)], &mut cur[(len + 1) * n..]);
                    }
                    for (r, i) in rows.clone().enumerate() {
                        let at = (r + 1) * n;
                        if i == 0 || i == n - 1 {
                            next[at..at + n].copy_from_slice(&cur[at..at + n]);
                            continue;
                        }
                        next[at] = cur[at];
                        next[at + n - 1] = cur[at + n - 1];
                        for j in 1..n - 1 {
                            let c = at + j;
                            next[c] = 0.25 * (cur[c - n] + cur[c + n] + cur[c - 1] + cur[c + 1]);
                        }
                    }
                    std::mem::swap(&mut cur, &mut next);
                    publish(&edges[slot(t, 1 - parity, false)], &cur[n..2 * n]);
                    publish(&edges[slot(t, 1 - parity, true)], &cur[len * n..(len + 1) * n]);
                    barrier.wait();
                }
                cur.truncate((len + 1) * n);
                cur.drain(..n);
                cur
            })
        })
        .collect();
    let mut h = Fnv::new();
    for handle in handles {
        for &x in &handle.join() {
            h.float(x, 1e9);
        }
    }
    h.finish()
}
