//! k-means (Lloyd's algorithm) on 2-D points with integer coordinates, so every sum is exact.
//!
//! The points are built once on the calling thread and shared read-only; each worker owns a
//! contiguous range of them for the whole run. Per iteration: every worker reads the centroids,
//! assigns its points to the nearest one (ties to the lower index) and writes its per-cluster sums
//! and counts into its own page-aligned slot under a [`Mutex`]; after a [`Barrier`], worker 0 adds
//! the slots up in worker order and publishes the new centroids (integer means; an empty cluster
//! keeps its centroid); a second barrier lets everyone read them.

use std::sync::Arc;

use super::common::{Fnv, PageAligned, Rng, band};
use crate::par::{Barrier, Mutex, Size, spawn, workers};

/// Number of clusters.
const K: usize = 8;

/// Per-cluster sums of x, sums of y and counts, cluster by cluster.
type Partial = [i64; 3 * K];

/// Point count and iteration count for a size.
fn shape(size: Size) -> (usize, usize) {
    match size {
        Size::Small => (4000, 5),
        Size::Medium => (3_000_000, 40),
        Size::Large => (12_000_000, 80),
    }
}

/// `n` points scattered around `K` fixed centres.
fn points(n: usize) -> Vec<[i32; 2]> {
    let mut rng = Rng::new(0x6b6d);
    (0..n)
        .map(|i| {
            let c = (i * 5 + i / 7) % K;
            let (cx, cy) = (100_000 + 100_000 * c as i64, 800_000 - 90_000 * ((c * 3) % K) as i64);
            let dx = (rng.next_u64() % 120_001) as i64 - 60_000;
            let dy = (rng.next_u64() % 120_001) as i64 - 60_000;
            [(cx + dx) as i32, (cy + dy) as i32]
        })
        .collect()
}

/// Index of the centroid nearest `p` (the lowest index among equals).
fn nearest(p: [i64; 2], centroids: &[[i64; 2]; K]) -> usize {
    let mut best = 0;
    let mut best_d = i64::MAX;
    for (k, c) in centroids.iter().enumerate() {
        let (dx, dy) = (p[0] - c[0], p[1] - c[1]);
        let d = dx * dx + dy * dy;
        if d < best_d {
            best_d = d;
            best = k;
        }
    }
    best
}

/// Clusters with `workers()` threads; the checksum hashes the final centroids and cluster sizes.
pub fn run(size: Size) -> u64 {
    let (n, iterations) = shape(size);
    let threads = workers().min(n);
    let pts = Arc::new(points(n));
    let start: [[i64; 2]; K] = std::array::from_fn(|k| pts[k * n / K].map(i64::from));
    let centroids = Arc::new(PageAligned(Mutex::new(start)));
    let slots: Arc<Vec<PageAligned<Mutex<Partial>>>> =
        Arc::new((0..threads).map(|_| PageAligned(Mutex::new([0; 3 * K]))).collect());
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (pts, centroids, slots, barrier) =
                (Arc::clone(&pts), Arc::clone(&centroids), Arc::clone(&slots), Arc::clone(&barrier));
            let mine = band(n, threads, t);
            spawn(move || {
                let mut sizes = [0i64; K];
                for _ in 0..iterations {
                    let cs = *centroids.0.lock();
                    let mut part: Partial = [0; 3 * K];
                    for &p in &pts[mine.clone()] {
                        let p = p.map(i64::from);
                        let k = nearest(p, &cs);
                        part[3 * k] += p[0];
                        part[3 * k + 1] += p[1];
                        part[3 * k + 2] += 1;
                    }
                    *slots[t].0.lock() = part;
                    barrier.wait();
                    if t == 0 {
                        let mut total: Partial = [0; 3 * K];
                        for s in slots.iter() {
                            for (a, b) in total.iter_mut().zip(s.0.lock().iter()) {
                                *a += b;
                            }
                        }
                        let mut c = centroids.0.lock();
                        for k in 0..K {
                            sizes[k] = total[3 * k + 2];
                            if sizes[k] > 0 {
                                c[k] = [total[3 * k] / sizes[k], total[3 * k + 1] / sizes[k]];
                            }
                        }
                    }
                    barrier.wait();
                }
                sizes
            })
        })
        .collect();
    let sizes: Vec<[i64; K]> = handles.into_iter().map(|h| h.join()).collect();
    let mut h = Fnv::new();
    for (c, s) in centroids.0.lock().iter().zip(sizes[0]) {
        h.word(c[0] as u64);
        h.word(c[1] as u64);
        h.word(s as u64);
    }
    h.finish()
}
