//! What the cluster programs in `tests/programs/` share. Each program includes this file with
//! `mod fixture;` and uses only part of it.
//!
//! - [`node`], [`wait_until`], [`poll_until`]: placing threads on a cluster of any size, and
//!   waiting, bounded, for something another node does;
//! - [`run_subtests`]: the `PROGRAM [SUB-TEST [SIZE]]` command line of the `sync_*` programs;
//! - [`sums_and_locks`], [`keep_busy`]: the work the launch and failure tests run on a cluster
//!   (shared data read on every node, a lock every node increments under).

#![allow(dead_code, reason = "each program uses only part of this module")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rthreads::sync::Mutex;

/// How long [`wait_until`] and [`poll_until`] wait before failing.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Node `i` of the cluster, wrapping round when the cluster is smaller.
pub fn node(i: usize) -> usize {
    i % rthreads::node_count()
}

/// Polls `cond` until it holds, yielding the CPU between polls.
///
/// # Panics
/// After a minute, naming `what`.
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    poll_until(what, Duration::ZERO, cond);
}

/// Polls `cond` until it holds, sleeping `pause` between polls (yielding the CPU if it is zero).
///
/// # Panics
/// After a minute, naming `what`.
pub fn poll_until(what: &str, pause: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT_LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        if pause.is_zero() {
            std::thread::yield_now();
        } else {
            std::thread::sleep(pause);
        }
    }
}

/// A sub-test of a program: its name, and what runs it, given the size on the command line (the
/// second argument) if there is one.
pub type Subtest = (&'static str, fn(Option<u64>));

/// Runs the sub-test named by the program's first argument, with the size its second argument
/// gives, or every sub-test in order (each with its default size) when there is no argument; then
/// prints `PROGRAM done in S s`.
///
/// # Panics
/// If no sub-test has that name.
pub fn run_subtests(program: &str, tests: &[Subtest]) {
    let mut args = std::env::args().skip(1);
    let name = args.next();
    let size = args.next().and_then(|a| a.parse().ok());
    let start = Instant::now();
    match &name {
        Some(name) => {
            let (_, test) =
                tests.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("unknown sub-test {name:?}"));
            test(size);
        }
        None => tests.iter().for_each(|(_, test)| test(None)),
    }
    println!("{program} done in {:.1} s", start.elapsed().as_secs_f64());
}

/// `threads_per_node` threads on every node each sum their slice of a vector built on node 0 and
/// add 1 000 times to a counter behind one cluster-wide mutex. Returns the line to print and
/// whether every figure is right. The line is the same whatever launched the cluster.
pub fn sums_and_locks(threads_per_node: usize) -> (String, bool) {
    let n = rthreads::node_count();
    let threads = threads_per_node * n;
    let data: Arc<Vec<u64>> = Arc::new((0..(threads as u64 * 10_000)).collect());
    let total = Arc::new(Mutex::new(0u64));
    let counter = Arc::new(Mutex::new(0u64));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (data, total, counter) = (Arc::clone(&data), Arc::clone(&total), Arc::clone(&counter));
            rthreads::spawn(move || {
                let sum: u64 = data[t * 10_000..(t + 1) * 10_000].iter().sum();
                *total.lock().unwrap() += sum;
                for _ in 0..1000 {
                    *counter.lock().unwrap() += 1;
                }
                rthreads::current_node()
            })
        })
        .collect();
    let mut nodes_used = vec![false; n];
    for h in handles {
        nodes_used[h.join().unwrap()] = true;
    }
    let expected: u64 = data.iter().sum();
    let (total, counter) = (*total.lock().unwrap(), *counter.lock().unwrap());
    let ok = total == expected && counter == threads as u64 * 1000 && nodes_used.iter().all(|&u| u);
    (
        format!(
            "nodes {n}, threads {threads}, sum {total} (expected {expected}), counter {counter} (expected {}), every node used: {}",
            threads * 1000,
            nodes_used.iter().all(|&u| u)
        ),
        ok,
    )
}

/// Keeps every node busy with faults and lock hand-offs for up to `limit`: threads on every node
/// increment a shared counter under a mutex and write their own words of shared pages. Prints
/// `running` once every thread has started. For tests that kill or cut off a node meanwhile.
pub fn keep_busy(limit: Duration) {
    let n = rthreads::node_count();
    let counter = Arc::new(Mutex::new(0u64));
    let pages = Arc::new((0..n * 2).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
    let started = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..n * 2)
        .map(|t| {
            let (counter, pages, started) = (Arc::clone(&counter), Arc::clone(&pages), Arc::clone(&started));
            rthreads::Builder::new()
                .node(t % n)
                .spawn(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    let end = Instant::now() + limit;
                    while Instant::now() < end {
                        *counter.lock().unwrap() += 1;
                        pages[t].fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
                .unwrap()
        })
        .collect();
    while started.load(Ordering::SeqCst) < n * 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("running");
    for h in handles {
        let _ = h.join();
    }
    println!("finished without losing a node");
}

/// Rounds of writing here and reading on node 1 (a halo row, a buffer filled then read): for
/// each round, `write(round)` on the calling thread, a barrier, `read(round)` on a thread of node
/// 1, a barrier. Returns once that thread is joined.
///
/// # Panics
/// If the reader panics (its own message comes first).
pub fn write_then_read_rounds(
    rounds: std::ops::Range<u64>,
    mut write: impl FnMut(u64),
    read: impl Fn(u64) + Send + 'static,
) {
    let barrier = rthreads::sync::Arc::new(rthreads::sync::Barrier::new(2));
    let b = rthreads::sync::Arc::clone(&barrier);
    let reader_rounds = rounds.clone();
    let reader = rthreads::Builder::new()
        .node(1)
        .spawn(move || {
            for round in reader_rounds {
                b.wait(); // the round is written
                read(round);
                b.wait(); // the round is read
            }
        })
        .expect("a reader on node 1");
    for round in rounds {
        write(round);
        barrier.wait();
        barrier.wait();
    }
    reader.join().expect("the reader");
}
