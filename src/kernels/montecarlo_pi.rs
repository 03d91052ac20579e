//! Monte Carlo estimate of π, embarrassingly parallel: a fixed number of work items, each drawing
//! its own points from a generator seeded with the item's index, dealt round-robin to the workers.
//! A point `(x, y)` with 32-bit integer coordinates hits when `x² + y² < 2⁶⁴` (exact integer test).

use super::common::Rng;
use crate::par::{Size, spawn, workers};

/// Number of work items, whatever the number of workers.
const ITEMS: u64 = 64;

/// Points per work item for a size.
fn samples(size: Size) -> u64 {
    match size {
        Size::Small => 2_000,
        Size::Medium => 8_000_000,
        Size::Large => 50_000_000,
    }
}

/// Hits among `samples` points of work item `item`.
fn hits(item: u64, samples: u64) -> u64 {
    let mut rng = Rng::new(item);
    let mut hits = 0;
    for _ in 0..samples {
        let r = rng.next_u64();
        let (x, y) = (u128::from(r >> 32), u128::from(r & 0xffff_ffff));
        hits += u64::from(x * x + y * y < 1u128 << 64);
    }
    hits
}

/// Draws with `workers()` threads; the checksum is the total number of hits.
pub fn run(size: Size) -> u64 {
    let per_item = samples(size);
    let threads = workers() as u64;
    let handles: Vec<_> = (0..threads.min(ITEMS))
        .map(|t| {
            spawn(move || (t..ITEMS).step_by(threads as usize).map(|item| hits(item, per_item)).sum::<u64>())
        })
        .collect();
    handles.into_iter().map(|h| h.join()).sum()
}
