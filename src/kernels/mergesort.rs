//! Parallel merge sort with recursive spawning: a task splits its vector in two, spawns a thread for
//! the right half and sorts the left half itself, then merges the two; below a depth derived from
//! `workers()` (enough leaves for every worker) a task sorts sequentially. The input is a
//! deterministic pseudo-random `Vec<u64>`; the output is checked to be sorted.

use super::common::{Fnv, Rng};
use crate::par::{Size, spawn, workers};

/// Slices this short are sorted by insertion.
const SHORT: usize = 24;

/// Element count for a size.
fn length(size: Size) -> usize {
    match size {
        Size::Small => 20_000,
        Size::Medium => 6_000_000,
        Size::Large => 40_000_000,
    }
}

/// Merges the sorted `left` and `right` into `out` (whose length is the sum of theirs).
fn merge(left: &[u64], right: &[u64], out: &mut [u64]) {
    let (mut i, mut j) = (0, 0);
    for slot in out.iter_mut() {
        if j == right.len() || (i < left.len() && left[i] <= right[j]) {
            *slot = left[i];
            i += 1;
        } else {
            *slot = right[j];
            j += 1;
        }
    }
}

/// Sequential top-down merge sort of `a`, with `buf` (as long as `a`) as scratch.
fn sort_slice(a: &mut [u64], buf: &mut [u64]) {
    let n = a.len();
    if n <= SHORT {
        for i in 1..n {
            let x = a[i];
            let mut j = i;
            while j > 0 && a[j - 1] > x {
                a[j] = a[j - 1];
                j -= 1;
            }
            a[j] = x;
        }
        return;
    }
    let mid = n / 2;
    sort_slice(&mut a[..mid], &mut buf[..mid]);
    sort_slice(&mut a[mid..], &mut buf[mid..]);
    if a[mid - 1] <= a[mid] {
        return;
    }
    buf.copy_from_slice(a);
    merge(&buf[..mid], &buf[mid..], a);
}

/// Sorts `v`, spawning a thread for the right half while `depth < max_depth`.
fn sort_task(mut v: Vec<u64>, depth: u32, max_depth: u32) -> Vec<u64> {
    if depth >= max_depth || v.len() <= SHORT {
        let mut buf = vec![0; v.len()];
        sort_slice(&mut v, &mut buf);
        return v;
    }
    let right = v.split_off(v.len() / 2);
    let other = spawn(move || sort_task(right, depth + 1, max_depth));
    let left = sort_task(v, depth + 1, max_depth);
    let right = other.join();
    let mut out = vec![0; left.len() + right.len()];
    merge(&left, &right, &mut out);
    out
}

/// Sorts with about `workers()` threads (the next power of two); the checksum hashes the sorted
/// output.
///
/// # Panics
/// If the output is not sorted or has lost elements (a bug, or broken coherence).
pub fn run(size: Size) -> u64 {
    let n = length(size);
    // ceil(log2(workers)): 2^max_depth leaves, at least one per worker.
    let max_depth = workers().next_power_of_two().trailing_zeros();
    let mut rng = Rng::new(0x736f7274);
    let data: Vec<u64> = (0..n).map(|_| rng.next_u64() >> 8).collect();
    let sorted = spawn(move || sort_task(data, 0, max_depth)).join();
    assert_eq!(sorted.len(), n, "mergesort lost elements");
    assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "mergesort output is not sorted");
    let mut h = Fnv::new();
    for &x in &sorted {
        h.word(x);
    }
    h.finish()
}
