//! An unbalanced workload for the placement policies: the Mandelbrot image of `mandelbrot`, cut into
//! bands of consecutive rows whose costs differ by two orders of magnitude (a band through the
//! set's middle iterates to the cap at most of its points; one near the top or bottom escapes at
//! once), handed out in a seeded pseudo-random order. Which node gets the costly bands then depends
//! on the placement: round-robin ignores the cost, so one node often gets more work than another.
//!
//! Written against rthreads directly rather than `par` (placement has no `std` counterpart), and not
//! one of the suite's kernels: the placement benchmark (`rthreads-placement`) runs it under each
//! policy and checks every checksum against [`serial`].

use std::ops::Range;

use rthreads::{Builder, JoinHandle, Placement};

use super::common::{Fnv, Rng, band};
use super::mandelbrot::escape;
use crate::par::Size;

/// The image and how it is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Points per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Iteration cap.
    pub cap: u32,
    /// Bands of consecutive rows.
    pub bands: usize,
}

/// The shape for a size: the `mandelbrot` kernel's image, in 8, 24 or 36 bands.
pub fn shape(size: Size) -> Shape {
    match size {
        Size::Small => Shape { width: 96, height: 64, cap: 200, bands: 8 },
        Size::Medium => Shape { width: 1600, height: 1200, cap: 1000, bands: 24 },
        Size::Large => Shape { width: 2400, height: 1800, cap: 2000, bands: 36 },
    }
}

/// How the bands are spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// At most this many bands run at a time: the next band is spawned as soon as one finishes
    /// (each band says so on a channel), the way a work queue feeds a pool.
    InFlight(usize),
    /// Every band at once. With `yields`, each band calls `rthreads::yield_now` after every row: a
    /// safe point where rebalancing may move it.
    AllAtOnce {
        /// Call `rthreads::yield_now` after every row.
        yields: bool,
    },
}

/// What a run computed and where its bands ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Hash of every row's escape-iteration total, in row order (the same for every schedule).
    pub checksum: u64,
    /// Bands spawned on each node.
    pub placed: Vec<usize>,
    /// Bands that finished on another node than the one they started on.
    pub moved: usize,
}

/// The order bands are handed out in for `seed`: a permutation of `0..bands`.
pub fn order(bands: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..bands).collect();
    let mut rng = Rng::new(seed);
    for i in (1..bands).rev() {
        v.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    v
}

fn rows_of(s: Shape, b: usize) -> Range<usize> {
    band(s.height, s.bands, b)
}

/// Escape-iteration totals of `rows`, calling `rthreads::yield_now` after each row if `yields`.
fn render(s: Shape, rows: Range<usize>, yields: bool) -> Vec<u64> {
    rows.map(|row| {
        let cy = -1.5 + 3.0 * row as f64 / s.height as f64;
        let total = (0..s.width)
            .map(|col| u64::from(escape(-2.0 + 3.0 * col as f64 / s.width as f64, cy, s.cap)))
            .sum();
        if yields {
            rthreads::yield_now();
        }
        total
    })
    .collect()
}

fn checksum(rows: impl IntoIterator<Item = u64>) -> u64 {
    let mut hash = Fnv::new();
    for r in rows {
        hash.word(r);
    }
    hash.finish()
}

/// The checksum computed on the calling thread alone.
pub fn serial(size: Size) -> u64 {
    let s = shape(size);
    checksum(render(s, 0..s.height, false))
}

/// A band's result: the node it started on, the node it ended on, its row totals.
type Band = (usize, usize, Vec<u64>);

fn spawn_band(
    s: Shape,
    b: usize,
    placement: Placement,
    yields: bool,
    done: Option<rthreads::sync::mpsc::Sender<usize>>,
) -> JoinHandle<Band> {
    Builder::new()
        .placement(placement)
        .spawn(move || {
            let start = rthreads::current_node();
            let rows = render(s, rows_of(s, b), yields);
            if let Some(done) = done {
                done.send(b).expect("the spawning thread waits for every band");
            }
            (start, rthreads::current_node(), rows)
        })
        .expect("spawn a band")
}

/// Renders the image in bands handed out in [`order`]`(bands, seed)`, spawned per `schedule` with
/// `placement`.
///
/// # Panics
/// If a band cannot be spawned or panics.
pub fn run(size: Size, seed: u64, schedule: Schedule, placement: Placement) -> Outcome {
    let s = shape(size);
    let order = order(s.bands, seed);
    let mut handles: Vec<Option<JoinHandle<Band>>> = (0..s.bands).map(|_| None).collect();
    let mut results: Vec<Option<Band>> = (0..s.bands).map(|_| None).collect();
    let mut placed = vec![0; rthreads::node_count()];
    match schedule {
        Schedule::InFlight(k) => {
            let (tx, rx) = rthreads::sync::mpsc::channel();
            let mut next = order.iter();
            let mut start = |handles: &mut Vec<Option<JoinHandle<Band>>>, placed: &mut Vec<usize>| {
                if let Some(&b) = next.next() {
                    let h = spawn_band(s, b, placement, false, Some(tx.clone()));
                    placed[h.node()] += 1;
                    handles[b] = Some(h);
                }
            };
            for _ in 0..k.max(1) {
                start(&mut handles, &mut placed);
            }
            for _ in 0..s.bands {
                let b = rx.recv().expect("a band finished");
                // `join` returns once the band's node has reported its load, so the next decision
                // knows that node has room.
                results[b] = Some(handles[b].take().expect("spawned").join().expect("band"));
                start(&mut handles, &mut placed);
            }
        }
        Schedule::AllAtOnce { yields } => {
            for &b in &order {
                let h = spawn_band(s, b, placement, yields, None);
                placed[h.node()] += 1;
                handles[b] = Some(h);
            }
            for b in 0..s.bands {
                results[b] = Some(handles[b].take().expect("spawned").join().expect("band"));
            }
        }
    }
    let results: Vec<Band> = results.into_iter().map(|r| r.expect("every band ran")).collect();
    Outcome {
        checksum: checksum(results.iter().flat_map(|(_, _, rows)| rows.iter().copied())),
        placed,
        moved: results.iter().filter(|(from, to, _)| from != to).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_that_depend_on_the_seed() {
        let a = order(24, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..24).collect::<Vec<_>>());
        assert_eq!(a, order(24, 1));
        assert_ne!(a, order(24, 2));
    }

    #[test]
    fn band_costs_differ_a_lot() {
        let s = shape(Size::Small);
        let costs: Vec<u64> = (0..s.bands).map(|b| render(s, rows_of(s, b), false).iter().sum()).collect();
        let (lo, hi) = (costs.iter().min().unwrap(), costs.iter().max().unwrap());
        assert!(*hi > 20 * lo, "{costs:?}");
    }

    #[test]
    fn every_schedule_computes_the_serial_checksum() {
        // Outside a cluster: one node, plain threads.
        let want = serial(Size::Small);
        for schedule in [Schedule::InFlight(3), Schedule::AllAtOnce { yields: true }] {
            for p in Placement::ALL {
                let out = run(Size::Small, 7, schedule, p);
                assert_eq!(out.checksum, want, "{schedule:?} {p}");
                assert_eq!(out.placed, [8]);
                assert_eq!(out.moved, 0);
            }
        }
    }
}
