//! Read-mostly sharing: one table, built once on the calling thread, read over and over by every
//! worker. A fixed number of passes (each a different scrambled sum over the whole table) is dealt
//! round-robin to the workers; on the DSM every node fetches the table once and then reads its own
//! copy.

use std::sync::Arc;

use super::common::{Fnv, mix};
use crate::par::{Size, spawn, workers};

/// Table length (in `u64`s) and pass count for a size.
fn shape(size: Size) -> (usize, usize) {
    match size {
        Size::Small => (8 * 1024, 16),
        Size::Medium => (512 * 1024, 5000),
        Size::Large => (1024 * 1024, 20000),
    }
}

/// Pass `p` over `table`.
fn pass(table: &[u64], p: u64) -> u64 {
    let rot = (p % 64) as u32;
    table.iter().fold(0u64, |acc, &x| acc.wrapping_add(x.rotate_left(rot) ^ p))
}

/// Reads with `workers()` threads; the checksum hashes the passes' results in pass order.
pub fn run(size: Size) -> u64 {
    let (len, passes) = shape(size);
    let threads = workers().min(passes);
    let table: Arc<Vec<u64>> = Arc::new((0..len as u64).map(mix).collect());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let table = Arc::clone(&table);
            spawn(move || (t..passes).step_by(threads).map(|p| pass(&table, p as u64)).collect::<Vec<u64>>())
        })
        .collect();
    let per_thread: Vec<Vec<u64>> = handles.into_iter().map(|h| h.join()).collect();
    let mut h = Fnv::new();
    for p in 0..passes {
        h.word(per_thread[p % threads][p / threads]);
    }
    h.finish()
}
