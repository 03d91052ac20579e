//! `std::sync::atomic` types in the shared heap under the sequentially consistent DSM.
//!
//! Sub-tests (first argument; none runs them all):
//! - `rmw [per_thread]`: 4 threads per node doing `fetch_add`, `fetch_sub` and `fetch_or` on shared
//!   atomics (default 10 000 each): the results are exact.
//! - `cas [per_thread]`: a counter bumped only by `compare_exchange` (and `_weak`) retry loops;
//!   every successful exchange claims the value it replaced, and the claims over all threads are
//!   exactly 0..total, each once.
//! - `handoff [rounds]`: a thread on node 1 fills a `Vec` with plain writes and then sets an
//!   `AtomicBool` (`Release`); a thread on node 2 waits for the flag (`Acquire`) and must see every
//!   element (default 20 rounds, fresh data each round).
//! - `dekker [rounds]`: store buffering across two nodes, `SeqCst`: `x = 1; r1 = y` against
//!   `y = 1; r2 = x` never gives r1 == r2 == 0 (default 200 rounds, fresh variables each round,
//!   on one page or on two).
//! - `arc`: `Arc` clones made and dropped on every node leave `strong_count` / `weak_count`
//!   exact; the last strong reference dropped on another node frees the value (`Weak::upgrade`
//!   is `None`).

use std::cell::UnsafeCell;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst},
};
use std::sync::{Arc, Weak};

use fixture::{Subtest, node, wait_until};

mod fixture;

fn rmw(per_thread: u64) {
    let nodes = rthreads::node_count();
    let threads = 4 * nodes;
    assert!(threads <= 64);
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicI64::new(0));
    let bits = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (up, down, bits) = (Arc::clone(&up), Arc::clone(&down), Arc::clone(&bits));
            rthreads::Builder::new()
                .node(i % nodes)
                .spawn(move || {
                    for _ in 0..per_thread {
                        up.fetch_add(1, SeqCst);
                        down.fetch_sub(1, Relaxed);
                    }
                    bits.fetch_or(1 << i, SeqCst);
                })
                .unwrap()
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let total = per_thread * threads as u64;
    println!("fetch_add total = {}", up.load(SeqCst));
    assert_eq!(up.load(SeqCst), total);
    assert_eq!(down.load(SeqCst), -(total as i64));
    let want_bits = if threads == 64 { u64::MAX } else { (1 << threads) - 1 };
    assert_eq!(bits.load(SeqCst), want_bits);
    println!("rmw ok");
}

fn cas(per_thread: u64) {
    let nodes = rthreads::node_count();
    let threads = 4 * nodes;
    let counter = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let counter = Arc::clone(&counter);
            rthreads::Builder::new()
                .node(i % nodes)
                .spawn(move || {
                    let mut claimed = Vec::with_capacity(per_thread as usize);
                    let mut retries = 0u64;
                    let mut cur = counter.load(Relaxed);
                    for _ in 0..per_thread {
                        loop {
                            let r = if i % 2 == 0 {
                                counter.compare_exchange(cur, cur + 1, SeqCst, Relaxed)
                            } else {
                                counter.compare_exchange_weak(cur, cur + 1, AcqRel, Acquire)
                            };
                            match r {
                                Ok(old) => {
                                    claimed.push(old);
                                    cur = old + 1;
                                    break;
                                }
                                Err(actual) => {
                                    retries += 1;
                                    cur = actual;
                                }
                            }
                        }
                    }
                    (claimed, retries)
                })
                .unwrap()
        })
        .collect();
    let total = per_thread * threads as u64;
    let mut seen = vec![false; total as usize];
    let mut retries = 0;
    for h in handles {
        let (claimed, r) = h.join().unwrap();
        retries += r;
        assert_eq!(claimed.len() as u64, per_thread);
        assert!(claimed.is_sorted(), "a thread's claims must increase");
        for v in claimed {
            assert!(v < total, "claimed {v} beyond the total");
            assert!(!seen[v as usize], "value {v} claimed twice");
            seen[v as usize] = true;
        }
    }
    assert_eq!(counter.load(SeqCst), total);
    assert!(seen.iter().all(|&s| s));
    println!("cas total = {total}, each value claimed once ({retries} retries)");
    println!("cas ok");
}

/// One round of the handoff: a flag and the data it publishes.
struct Mailbox {
    ready: AtomicBool,
    data: UnsafeCell<Vec<u64>>,
}

// SAFETY: `data` is written only by the one writer before it sets `ready` (Release), and read only
// by readers after they see `ready` (Acquire): the flag orders every access.
unsafe impl Sync for Mailbox {}

fn handoff(rounds: u64) {
    const LEN: u64 = 50_000;
    for round in 0..rounds {
        let mb = Arc::new(Mailbox { ready: AtomicBool::new(false), data: UnsafeCell::new(Vec::new()) });
        let reader = {
            let mb = Arc::clone(&mb);
            rthreads::Builder::new()
                .node(node(2))
                .spawn(move || {
                    wait_until("the flag", || mb.ready.load(Acquire));
                    // SAFETY: the writer is done with `data` (the Acquire load saw its flag).
                    let data = unsafe { &*mb.data.get() };
                    assert_eq!(data.len() as u64, LEN);
                    for (i, &x) in data.iter().enumerate() {
                        assert_eq!(x, round * LEN + i as u64, "round {round}, element {i}");
                    }
                    data.iter().sum::<u64>()
                })
                .unwrap()
        };
        let writer = {
            let mb = Arc::clone(&mb);
            rthreads::Builder::new()
                .node(node(1))
                .spawn(move || {
                    let v: Vec<u64> = (0..LEN).map(|i| round * LEN + i).collect();
                    // SAFETY: nobody reads `data` before `ready` is set, below.
                    unsafe { *mb.data.get() = v };
                    mb.ready.store(true, Release);
                })
                .unwrap()
        };
        writer.join().unwrap();
        let sum = reader.join().unwrap();
        assert_eq!(sum, (0..LEN).map(|i| round * LEN + i).sum::<u64>());
    }
    println!("handoff: {rounds} rounds from node {} to node {}, every element seen", node(1), node(2));
    println!("handoff ok");
}

fn dekker(rounds: usize) {
    let (na, nb) = if rthreads::node_count() >= 3 { (1, 2) } else { (0, node(1)) };
    // Fresh variables every round: 8 KiB each, x at the start; y next to x (even rounds, same
    // page) or 8 KiB - 8 bytes further (odd rounds, another page).
    let vars: Arc<Vec<Box<[AtomicU64; 1024]>>> =
        Arc::new((0..rounds).map(|_| Box::new(std::array::from_fn(|_| AtomicU64::new(0)))).collect());
    let arrived: Arc<Vec<AtomicUsize>> = Arc::new((0..rounds).map(|_| AtomicUsize::new(0)).collect());
    let side = |who: usize| {
        let (vars, arrived) = (Arc::clone(&vars), Arc::clone(&arrived));
        rthreads::Builder::new()
            .node(if who == 0 { na } else { nb })
            .spawn(move || {
                let mut seen = Vec::with_capacity(rounds);
                for r in 0..rounds {
                    let v = &vars[r];
                    let (x, y) = (&v[0], if r % 2 == 0 { &v[1] } else { &v[1023] });
                    let (mine, theirs) = if who == 0 { (x, y) } else { (y, x) };
                    arrived[r].fetch_add(1, SeqCst);
                    wait_until("the other side", || arrived[r].load(SeqCst) == 2);
                    mine.store(1, SeqCst);
                    seen.push(theirs.load(SeqCst));
                }
                seen
            })
            .unwrap()
    };
    let a = side(0);
    let b = side(1);
    let (ra, rb) = (a.join().unwrap(), b.join().unwrap());
    let mut outcomes = [[0usize; 2]; 2];
    for r in 0..rounds {
        outcomes[ra[r] as usize][rb[r] as usize] += 1;
        assert!(ra[r] == 1 || rb[r] == 1, "round {r}: both sides read 0 (store buffering under SeqCst)");
    }
    println!(
        "dekker: {rounds} rounds on nodes {na} and {nb}: (r1, r2) = (0, 1) x{}, (1, 0) x{}, (1, 1) x{}, (0, 0) x{}",
        outcomes[0][1], outcomes[1][0], outcomes[1][1], outcomes[0][0]
    );
    println!("dekker ok");
}

fn arc() {
    let nodes = rthreads::node_count();
    let threads = 4 * nodes;
    const CLONES: usize = 100;
    let a = Arc::new(vec![7u8; 1000]);
    let weak = Arc::downgrade(&a);
    let holding = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (a, holding, release) = (Arc::clone(&a), Arc::clone(&holding), Arc::clone(&release));
            rthreads::Builder::new()
                .node(i % nodes)
                .spawn(move || {
                    let clones: Vec<Arc<Vec<u8>>> = (0..CLONES).map(|_| Arc::clone(&a)).collect();
                    let w = Arc::downgrade(&a);
                    holding.fetch_add(1, SeqCst);
                    wait_until("the release", || release.load(SeqCst));
                    assert!(clones.iter().all(|c| c[999] == 7));
                    drop(clones);
                    drop(w);
                    a // goes back to node 0 with the result
                })
                .unwrap()
        })
        .collect();
    wait_until("every thread to hold its clones", || holding.load(SeqCst) == threads);
    assert_eq!(Arc::strong_count(&a), 1 + threads * (CLONES + 1));
    assert_eq!(Arc::weak_count(&a), 1 + threads);
    println!("while held: strong {} weak {}", Arc::strong_count(&a), Arc::weak_count(&a));
    release.store(true, SeqCst);
    let back: Vec<Arc<Vec<u8>>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(Arc::strong_count(&a), 1 + threads);
    assert_eq!(Arc::weak_count(&a), 1);
    // Clones made on node 0, dropped on the last node.
    let many: Vec<Arc<Vec<u8>>> = back.iter().flat_map(|b| [Arc::clone(b), Arc::clone(b)]).collect();
    assert_eq!(Arc::strong_count(&a), 1 + 3 * threads);
    rthreads::Builder::new().node(nodes - 1).spawn(move || drop(many)).unwrap().join().unwrap();
    drop(back);
    assert_eq!(Arc::strong_count(&a), 1);
    assert_eq!(Arc::weak_count(&a), 1);

    // The last strong reference dropped on another node frees the value.
    let dropped = Arc::new(AtomicUsize::new(0));
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }
    let t = Arc::new(Tracked(Arc::clone(&dropped)));
    let wt: Weak<Tracked> = Arc::downgrade(&t);
    rthreads::Builder::new().node(node(2)).spawn(move || drop(t)).unwrap().join().unwrap();
    assert_eq!(dropped.load(SeqCst), 1);
    assert!(wt.upgrade().is_none());
    assert_eq!(wt.strong_count(), 0);
    drop(a);
    assert!(weak.upgrade().is_none());
    println!("arc ok: counts exact after clones and drops on {nodes} nodes");
}

const TESTS: &[Subtest] = &[
    ("rmw", |n| rmw(n.unwrap_or(10_000))),
    ("cas", |n| cas(n.unwrap_or(2_000))),
    ("handoff", |n| handoff(n.unwrap_or(20))),
    ("dekker", |n| dekker(n.unwrap_or(200) as usize)),
    ("arc", |_| arc()),
];

#[rthreads::main]
fn main() {
    fixture::run_subtests("sync_atomics", TESTS);
}
