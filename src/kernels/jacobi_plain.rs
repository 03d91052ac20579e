//! Jacobi as a new user writes it (issue 17): two `n`×`n` grids of `f64` in the heap, rows split
//! into one band per worker, each sweep reads the old grid (its band and one halo row above and
//! below, from its neighbours' bands) and writes its band of the new one in place, then a
//! [`Barrier`]; the grids swap roles every sweep.
//!
//! Two layouts of the same program:
//! - **writer** ([`run_writer`]): every worker allocates its own band of both grids (rows are homed
//!   where they are written: the best layout);
//! - **main** ([`run_main`]): `main` allocates both whole grids and hands them to the workers (the
//!   common layout: every row homed on the node that runs `main`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::common::{Fnv, band};
use super::jacobi::initial;
use crate::par::{Barrier, Size, spawn, workers};

/// Grid order and sweeps for a size.
fn shape(size: Size) -> (usize, usize) {
    match size {
        Size::Small => (64, 10),
        Size::Medium => (1024, 50),
        Size::Large => (2048, 100),
    }
}

/// Where the bands of both grids live (rows of a band are contiguous).
struct Rows {
    /// Per band and grid, the address of the band's first row (published before the first sweep).
    bands: Vec<[AtomicUsize; 2]>,
    /// The band each row belongs to, and its first row.
    starts: Vec<usize>,
}

/// One sweep of band `rows` from grid `from` into grid `to`.
///
/// # Safety
/// Every pointer names a live row of `n` cells; no other thread writes `to`'s rows of this band or
/// reads them during the sweep, and nobody writes `from` during it (the barrier separates sweeps).
unsafe fn sweep(
    n: usize,
    rows: std::ops::Range<usize>,
    row: &dyn Fn(usize, usize) -> *mut f64,
    from: usize,
    to: usize,
) {
    for i in rows {
        // SAFETY: as the caller promises.
        let out = unsafe { std::slice::from_raw_parts_mut(row(to, i), n) };
        if i == 0 || i == n - 1 {
            // SAFETY: as above.
            out.copy_from_slice(unsafe { std::slice::from_raw_parts(row(from, i), n) });
            continue;
        }
        // SAFETY: as above.
        let (up, mid, down) = unsafe {
            (
                std::slice::from_raw_parts(row(from, i - 1), n),
                std::slice::from_raw_parts(row(from, i), n),
                std::slice::from_raw_parts(row(from, i + 1), n),
            )
        };
        out[0] = mid[0];
        out[n - 1] = mid[n - 1];
        for j in 1..n - 1 {
            out[j] = (up[j] + down[j] + mid[j - 1] + mid[j + 1]) * 0.25;
        }
    }
}

/// Runs the stencil with `workers()` threads, the grids allocated by the workers (`by_writer`) or by
/// the calling thread; the checksum hashes the final grid row by row.
fn stencil(size: Size, by_writer: bool) -> u64 {
    let (n, sweeps) = shape(size);
    let threads = workers().min(n);
    let starts: Vec<usize> = (0..threads).map(|t| band(n, threads, t).start).collect();
    let rows = Arc::new(Rows {
        bands: (0..threads).map(|_| [AtomicUsize::new(0), AtomicUsize::new(0)]).collect(),
        starts,
    });
    // The main layout: both grids built here, whole.
    let mut whole: Vec<Vec<f64>> = Vec::new();
    if !by_writer {
        for _ in 0..2 {
            let mut g = vec![0.0f64; n * n];
            for i in 0..n {
                for j in 0..n {
                    g[i * n + j] = initial(n, i, j);
                }
            }
            whole.push(g);
        }
        for t in 0..threads {
            let s = band(n, threads, t).start;
            for (g, grid) in whole.iter_mut().enumerate() {
                rows.bands[t][g].store(grid[s * n..].as_mut_ptr() as usize, Ordering::Release);
            }
        }
    }
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (rows, barrier) = (Arc::clone(&rows), Arc::clone(&barrier));
            let mine = band(n, threads, t);
            spawn(move || {
                // The writer layout: this worker's band of both grids, allocated here.
                let mut own: Vec<Vec<f64>> = Vec::new();
                if by_writer {
                    for g in 0..2 {
                        let mut b = vec![0.0f64; mine.len() * n];
                        for (r, i) in mine.clone().enumerate() {
                            for j in 0..n {
                                b[r * n + j] = initial(n, i, j);
                            }
                        }
                        rows.bands[t][g].store(b.as_mut_ptr() as usize, Ordering::Release);
                        own.push(b);
                    }
                }
                barrier.wait();
                let row = |g: usize, i: usize| {
                    let b = rows.starts.partition_point(|&s| s <= i) - 1;
                    let base = rows.bands[b][g].load(Ordering::Acquire) as *mut f64;
                    // SAFETY: row `i` is row `i - start` of band `b`, inside its allocation.
                    unsafe { base.add((i - rows.starts[b]) * n) }
                };
                for s in 0..sweeps {
                    let (from, to) = (s % 2, (s + 1) % 2);
                    // SAFETY: this worker writes only its band of `to`; the barrier below keeps
                    // every read of `from` in this sweep before any write of it in the next.
                    unsafe { sweep(n, mine.clone(), &row, from, to) };
                    barrier.wait();
                }
                // The result: this band of the last grid written.
                let last = sweeps % 2;
                let mut out = vec![0.0f64; mine.len() * n];
                for (r, i) in mine.clone().enumerate() {
                    // SAFETY: the band's rows are live until `own` drops below.
                    out[r * n..(r + 1) * n]
                        .copy_from_slice(unsafe { std::slice::from_raw_parts(row(last, i), n) });
                }
                // Every band is copied out before any worker frees its rows.
                barrier.wait();
                drop(own);
                out
            })
        })
        .collect();
    let mut h = Fnv::new();
    for handle in handles {
        for &x in &handle.join() {
            h.float(x, 1e6);
        }
    }
    drop(whole);
    h.finish()
}

/// Every worker allocates its own band of both grids.
pub fn run_writer(size: Size) -> u64 {
    stencil(size, true)
}

/// `main` allocates both grids, whole.
pub fn run_main(size: Size) -> u64 {
    stencil(size, false)
}
