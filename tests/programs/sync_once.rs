//! `rthreads::sync::Once` and `OnceLock` shared across nodes (in an `Arc`, not a `static`:
//! statics are per node).
//!
//! - `Once`: 4 threads per node race on `call_once`: the closure runs once in the cluster, and
//!   every caller returns only after it has finished; `is_completed` on every node. A closure
//!   panicking on node 1 poisons the `Once`: `call_once` then panics on another node and
//!   `is_completed` stays false.
//! - `OnceLock`: 4 threads per node race on `get_or_init`: one initialisation, and everyone gets
//!   the same value at the same address; a racing `set` from every node: exactly one wins;
//!   `get`, `set` on a full cell, `take` and `into_inner` of a value made on another node.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use fixture::Subtest;
use rthreads::sync::{Arc, Barrier, Once, OnceLock};

mod fixture;

fn once() {
    let nodes = rthreads::node_count();
    let threads = 4 * nodes;
    let once = Arc::new(Once::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let go = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (once, runs, done, go) =
                (Arc::clone(&once), Arc::clone(&runs), Arc::clone(&done), Arc::clone(&go));
            rthreads::Builder::new()
                .node(i % nodes)
                .spawn(move || {
                    go.wait();
                    once.call_once(|| {
                        runs.fetch_add(1, SeqCst);
                        // Long enough for the others to arrive and have to wait.
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        done.store(true, SeqCst);
                    });
                    assert!(done.load(SeqCst), "call_once returned before the closure ended");
                    assert!(once.is_completed());
                })
                .unwrap()
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(runs.load(SeqCst), 1, "the closure ran more than once");
    assert!(once.is_completed());
    once.call_once(|| panic!("must not run again"));
    println!("once: {threads} callers on {nodes} nodes, one run");

    // Poisoning.
    let once = Arc::new(Once::new());
    let o = Arc::clone(&once);
    let r = rthreads::Builder::new()
        .node(1 % nodes)
        .spawn(move || o.call_once(|| panic!("init fails")))
        .unwrap()
        .join();
    assert!(r.is_err());
    assert!(!once.is_completed());
    let o = Arc::clone(&once);
    let r = rthreads::Builder::new().node(2 % nodes).spawn(move || o.call_once(|| {})).unwrap().join();
    assert!(r.is_err(), "call_once on a poisoned Once must panic");
    assert!(!once.is_completed());
    println!("once ok");
}

fn once_lock() {
    let nodes = rthreads::node_count();
    let threads = 4 * nodes;
    let cell: Arc<OnceLock<Vec<u64>>> = Arc::new(OnceLock::new());
    let inits = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (cell, inits, go) = (Arc::clone(&cell), Arc::clone(&inits), Arc::clone(&go));
            rthreads::Builder::new()
                .node(i % nodes)
                .spawn(move || {
                    go.wait();
                    let v = cell.get_or_init(|| {
                        inits.fetch_add(1, SeqCst);
                        (0..1000).map(|k| k * 3 + i as u64).collect()
                    });
                    let first = v[0];
                    assert!(v.iter().enumerate().all(|(k, &x)| x == k as u64 * 3 + first));
                    v.as_ptr() as usize
                })
                .unwrap()
        })
        .collect();
    let addrs: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(inits.load(SeqCst), 1, "initialised more than once");
    assert!(addrs.iter().all(|&a| a == addrs[0]), "different values");
    let v = cell.get().expect("initialised");
    assert_eq!(v.as_ptr() as usize, addrs[0]);
    println!("once_lock: {threads} get_or_init on {nodes} nodes, one initialisation");

    // set from every node at once: one winner.
    let cell: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let go = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (cell, go) = (Arc::clone(&cell), Arc::clone(&go));
            rthreads::Builder::new()
                .node(i % nodes)
                .spawn(move || {
                    go.wait();
                    let mine = format!("thread {i}");
                    match cell.set(mine.clone()) {
                        Ok(()) => Some(mine),
                        Err(back) => {
                            assert_eq!(back, mine, "set gives the value back");
                            assert!(cell.get().is_some());
                            None
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    let winners: Vec<String> = handles.into_iter().filter_map(|h| h.join().unwrap()).collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(cell.get(), Some(&winners[0]));
    let c = Arc::clone(&cell);
    let w = winners[0].clone();
    rthreads::Builder::new()
        .node(nodes - 1)
        .spawn(move || {
            assert_eq!(c.get(), Some(&w));
            assert_eq!(c.set("late".into()), Err("late".to_string()));
        })
        .unwrap()
        .join()
        .unwrap();
    println!("once_lock: one set out of {threads} wins");

    // A value made on another node, taken and unwrapped on node 0.
    let cell: Arc<OnceLock<Vec<String>>> = Arc::new(OnceLock::new());
    let c = Arc::clone(&cell);
    rthreads::Builder::new()
        .node(2 % nodes)
        .spawn(move || c.set((0..100).map(|k| format!("item {k}")).collect()).unwrap())
        .unwrap()
        .join()
        .unwrap();
    let mut inner = Arc::try_unwrap(cell).unwrap_or_else(|_| panic!("not the last Arc"));
    let v = inner.take().expect("set on node 2");
    assert_eq!(v.len(), 100);
    assert_eq!(v[99], "item 99");
    assert!(inner.get().is_none());
    assert!(inner.set(vec!["again".into()]).is_ok());
    assert_eq!(inner.into_inner(), Some(vec!["again".to_string()]));
    println!("once_lock ok");
}

const TESTS: &[Subtest] = &[("once", |_| once()), ("once_lock", |_| once_lock())];

#[rthreads::main]
fn main() {
    fixture::run_subtests("sync_once", TESTS);
}
