//! `rthreads::sync::Condvar` across nodes.
//!
//! Sub-tests (first argument; none runs them all):
//! - `queue [items [batch]]`: producers on nodes 1 and 2 feed a bounded `Mutex<VecDeque<u64>>`
//!   (32 slots) that a consumer on node 0 drains, with one condvar for "not empty" and one for
//!   "not full"; `items` in all (default 100 000), none lost or duplicated (bitmap, count and
//!   sum). A producer pushes up to `batch` items (default 32) per turn of the lock, so producers
//!   keep finding the queue full and wait.
//! - `slow [items]`: the same, one item per turn and producers pausing after each (default
//!   2 000 items), so the consumer keeps finding the queue empty and waits.
//! - `timeout`: `wait_timeout` with nobody notifying times out (`timed_out()`, and not early),
//!   on node 0 and on another node; a waiter on node 1 notified from node 0 wakes before its
//!   (long) timeout; `wait_timeout_while` both ways.
//! - `all`: `notify_all` wakes waiters on every node; `notify_one` wakes at least one.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use fixture::Subtest;
use rthreads::sync::{Arc, Condvar, Mutex};

mod fixture;

/// Capacity of the producer/consumer queue: small, so producers do wait.
const CAPACITY: usize = 32;

struct Queue {
    items: VecDeque<u64>,
    producers_left: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    not_empty: Condvar,
    not_full: Condvar,
}

fn queue(items: u64, batch: usize, pause: Duration) {
    let nodes = rthreads::node_count();
    assert!(nodes >= 3, "the queue test wants producers on nodes 1 and 2");
    let producers: u64 = 2;
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::with_capacity(CAPACITY),
            producers_left: producers as usize,
        }),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
    });
    let start = Instant::now();
    let per = items / producers;
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let shared = Arc::clone(&shared);
            // Producer p makes items p*per .. (p+1)*per (the last one takes the remainder).
            let range = p * per..if p == producers - 1 { items } else { (p + 1) * per };
            rthreads::Builder::new()
                .node(1 + p as usize)
                .spawn(move || {
                    let mut waits = 0u64;
                    let mut range = range.peekable();
                    while range.peek().is_some() {
                        let mut q = shared.queue.lock().unwrap();
                        while q.items.len() >= CAPACITY {
                            waits += 1;
                            q = shared.not_full.wait(q).unwrap();
                        }
                        let room = (CAPACITY - q.items.len()).min(batch);
                        q.items.extend(range.by_ref().take(room));
                        drop(q);
                        shared.not_empty.notify_one();
                        if !pause.is_zero() {
                            std::thread::sleep(pause);
                        }
                    }
                    let mut q = shared.queue.lock().unwrap();
                    q.producers_left -= 1;
                    drop(q);
                    shared.not_empty.notify_all();
                    waits
                })
                .unwrap()
        })
        .collect();

    // Consumer: node 0, the main thread.
    let mut seen = vec![false; items as usize];
    let (mut count, mut sum, mut waits) = (0u64, 0u64, 0u64);
    let mut taken = Vec::with_capacity(CAPACITY);
    loop {
        let mut q = shared.queue.lock().unwrap();
        while q.items.is_empty() && q.producers_left > 0 {
            waits += 1;
            q = shared.not_empty.wait(q).unwrap();
        }
        if q.items.is_empty() {
            break; // and no producer left
        }
        taken.extend(q.items.drain(..));
        drop(q);
        shared.not_full.notify_all();
        for x in taken.drain(..) {
            assert!(x < items, "item {x} was never produced");
            assert!(!seen[x as usize], "item {x} received twice");
            seen[x as usize] = true;
            count += 1;
            sum += x;
        }
    }
    let producer_waits: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!(
        "queue: {count} items (batches of {batch}), consumer waited {waits} times, producers \
         {producer_waits:?} ({:.1} s)",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(count, items);
    assert_eq!(sum, items * (items - 1) / 2);
    assert!(seen.iter().all(|&s| s));
    println!("queue ok: {items} items, none lost or duplicated");
}

fn timeout() {
    let nodes = rthreads::node_count();
    // Nobody notifies: times out, and not before the timeout.
    let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
    let (lock, cvar) = &*pair;
    let t = Instant::now();
    let (g, r) = cvar.wait_timeout(lock.lock().unwrap(), Duration::from_millis(200)).unwrap();
    let waited = t.elapsed();
    assert!(r.timed_out());
    assert!(waited >= Duration::from_millis(200), "woke early: {waited:?}");
    assert_eq!(*g, 0);
    drop(g);
    println!("wait_timeout timed out on node 0 after {waited:?}");

    // The same on another node, with a condvar made on node 0.
    let p = Arc::clone(&pair);
    let (timed_out, waited) = rthreads::Builder::new()
        .node(1 % nodes)
        .spawn(move || {
            let (lock, cvar) = &*p;
            let t = Instant::now();
            let (_g, r) = cvar.wait_timeout(lock.lock().unwrap(), Duration::from_millis(150)).unwrap();
            (r.timed_out(), t.elapsed())
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(timed_out);
    assert!(waited >= Duration::from_millis(150), "woke early: {waited:?}");
    println!("wait_timeout timed out on node {} after {waited:?}", 1 % nodes);

    // Notified before the timeout: the waiter on node 1 says it waits, node 0 then notifies.
    #[derive(Default)]
    struct State {
        waiting: bool,
        go: bool,
    }
    let pair = Arc::new((Mutex::new(State::default()), Condvar::new()));
    let p = Arc::clone(&pair);
    let waiter = rthreads::Builder::new()
        .node(1 % nodes)
        .spawn(move || {
            let (lock, cvar) = &*p;
            let t = Instant::now();
            let mut g = lock.lock().unwrap();
            g.waiting = true;
            cvar.notify_all();
            let mut timeouts = 0;
            while !g.go {
                let (g2, r) = cvar.wait_timeout(g, Duration::from_secs(60)).unwrap();
                g = g2;
                if r.timed_out() {
                    timeouts += 1;
                }
            }
            (timeouts, t.elapsed())
        })
        .unwrap();
    {
        let (lock, cvar) = &*pair;
        let mut g = cvar.wait_while(lock.lock().unwrap(), |s| !s.waiting).unwrap();
        g.go = true;
        cvar.notify_one();
    }
    let (timeouts, waited) = waiter.join().unwrap();
    assert_eq!(timeouts, 0, "the waiter timed out instead of being notified");
    assert!(waited < Duration::from_secs(60));
    println!("wait_timeout notified before the timeout after {waited:?}");

    // wait_timeout_while: the condition never turns false -> times out, guard back.
    let pair = Arc::new((Mutex::new(true), Condvar::new()));
    let (lock, cvar) = &*pair;
    let t = Instant::now();
    let (g, r) = cvar
        .wait_timeout_while(lock.lock().unwrap(), Duration::from_millis(100), |pending| *pending)
        .unwrap();
    assert!(r.timed_out());
    assert!(*g);
    assert!(t.elapsed() >= Duration::from_millis(100));
    drop(g);
    // ... and a thread on node 2 turns it false: returns before the timeout.
    let p = Arc::clone(&pair);
    let h = rthreads::Builder::new()
        .node(2 % nodes)
        .spawn(move || {
            let (lock, cvar) = &*p;
            *lock.lock().unwrap() = false;
            cvar.notify_all();
        })
        .unwrap();
    let t = Instant::now();
    let (g, r) =
        cvar.wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(60), |pending| *pending).unwrap();
    assert!(!r.timed_out());
    assert!(!*g);
    assert!(t.elapsed() < Duration::from_secs(60));
    drop(g);
    h.join().unwrap();
    println!("wait_timeout_while ok");
    println!("timeout ok");
}

fn all() {
    let nodes = rthreads::node_count();
    // notify_all: 2 waiters per node, each announces itself, then waits for the flag.
    struct Gate {
        waiting: usize,
        open: bool,
    }
    let pair = Arc::new((Mutex::new(Gate { waiting: 0, open: false }), Condvar::new()));
    let waiters = 2 * nodes;
    let handles: Vec<_> = (0..waiters)
        .map(|i| {
            let p = Arc::clone(&pair);
            rthreads::Builder::new()
                .node(i % nodes)
                .spawn(move || {
                    let (lock, cvar) = &*p;
                    let mut g = lock.lock().unwrap();
                    g.waiting += 1;
                    cvar.notify_all();
                    let g = cvar.wait_while(g, |g| !g.open).unwrap();
                    assert!(g.open);
                    rthreads::current_node()
                })
                .unwrap()
        })
        .collect();
    {
        let (lock, cvar) = &*pair;
        let mut g = cvar.wait_while(lock.lock().unwrap(), |g| g.waiting < waiters).unwrap();
        g.open = true;
        cvar.notify_all();
    }
    let mut per_node = vec![0; nodes];
    for h in handles {
        per_node[h.join().unwrap()] += 1;
    }
    println!("notify_all woke {waiters} waiters, per node {per_node:?}");

    // notify_one, one token at a time: every notify_one lets (at least) one waiter through.
    let pair = Arc::new((Mutex::new(0usize), Condvar::new()));
    let handles: Vec<_> = (0..waiters)
        .map(|i| {
            let p = Arc::clone(&pair);
            rthreads::Builder::new()
                .node(i % nodes)
                .spawn(move || {
                    let (lock, cvar) = &*p;
                    let mut tokens = cvar.wait_while(lock.lock().unwrap(), |t| *t == 0).unwrap();
                    *tokens -= 1;
                })
                .unwrap()
        })
        .collect();
    for _ in 0..waiters {
        let (lock, cvar) = &*pair;
        *lock.lock().unwrap() += 1;
        cvar.notify_one();
    }
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(*pair.0.lock().unwrap(), 0);
    println!("notify_one passed {waiters} tokens");
    println!("notify ok");
}

const TESTS: &[Subtest] = &[
    ("queue", |n| {
        // A third argument sets the batch size.
        let batch = std::env::args().nth(3).and_then(|a| a.parse().ok());
        queue(n.unwrap_or(100_000), batch.unwrap_or(32), Duration::ZERO)
    }),
    ("slow", |n| queue(n.unwrap_or(2_000), 1, Duration::from_micros(500))),
    ("timeout", |_| timeout()),
    ("all", |_| all()),
];

#[rthreads::main]
fn main() {
    fixture::run_subtests("sync_condvar", TESTS);
}
