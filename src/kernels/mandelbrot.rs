//! The Mandelbrot set on a `w`×`h` grid over [-2, 1] × [-1.5, 1.5]: each worker takes every
//! `workers()`-th row (interleaved, which balances the costly rows through the set's middle) and
//! returns its rows' escape-iteration totals; no shared writes at all.

use super::common::Fnv;
use crate::par::{Size, spawn, workers};

/// Width, height and iteration cap for a size.
fn shape(size: Size) -> (usize, usize, u32) {
    match size {
        Size::Small => (96, 64, 200),
        Size::Medium => (1600, 1200, 1000),
        Size::Large => (2400, 1800, 2000),
    }
}

/// Escape iterations of the point `(cx, cy)`, at most `cap`.
pub(super) fn escape(cx: f64, cy: f64, cap: u32) -> u32 {
    let (mut x, mut y) = (0.0f64, 0.0f64);
    let mut k = 0;
    while k < cap && x * x + y * y <= 4.0 {
        let t = x * x - y * y + cx;
        y = 2.0 * x * y + cy;
        x = t;
        k += 1;
    }
    k
}

/// Renders with `workers()` threads; the checksum hashes the per-row totals in row order.
pub fn run(size: Size) -> u64 {
    let (w, h, cap) = shape(size);
    let threads = workers().min(h);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            spawn(move || {
                (t..h)
                    .step_by(threads)
                    .map(|row| {
                        let cy = -1.5 + 3.0 * row as f64 / h as f64;
                        (0..w).map(|col| u64::from(escape(-2.0 + 3.0 * col as f64 / w as f64, cy, cap))).sum()
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let per_thread: Vec<Vec<u64>> = handles.into_iter().map(|handle| handle.join()).collect();
    let mut hash = Fnv::new();
    for row in 0..h {
        hash.word(per_thread[row % threads][row / threads]);
    }
    hash.finish()
}
