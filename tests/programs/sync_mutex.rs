//! `rthreads::sync::Mutex` across nodes.
//!
//! Sub-tests (first argument; none runs them all):
//! - `count [per_thread]`: 4 threads per node, placed explicitly, each taking the lock
//!   `per_thread` times (default 10 000) to bump one counter; the total must be exact, and a
//!   "who is inside" field checks that no two threads ever hold the lock together.
//! - `pages`: the protected data spans several pages; every increment of every element made under
//!   the lock on one node is seen by the next holder on another.
//! - `poison`: a thread on node 1 panics with the lock held; node 0 then sees the poison
//!   (`lock`, `try_lock`, `is_poisoned`, `into_inner` of the error, `get_mut`, `into_inner` of the
//!   mutex) and `clear_poison` clears it, from any node. A panic without the lock held does not
//!   poison.
//! - `try_lock`: while a thread on node 1 holds the lock, `try_lock` on nodes 0 and 2 gives
//!   `WouldBlock`, and a blocking `lock` on node 2 waits for the holder's release.

use std::time::{Duration, Instant};

use fixture::{Subtest, node};
use rthreads::sync::{Arc, Barrier, Mutex, TryLockError, mpsc};

mod fixture;

/// What the counter test protects: a count and the thread now inside the critical section.
struct Counted {
    count: u64,
    inside: usize,
}

fn count(per_thread: u64) {
    let nodes = rthreads::node_count();
    let threads = nodes * 4;
    let shared = Arc::new(Mutex::new(Counted { count: 0, inside: usize::MAX }));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let shared = Arc::clone(&shared);
            rthreads::Builder::new()
                .node(i % nodes)
                .spawn(move || {
                    for _ in 0..per_thread {
                        let mut g = shared.lock().unwrap();
                        assert_eq!(g.inside, usize::MAX, "two threads inside the lock");
                        g.inside = i;
                        g.count += 1;
                        assert_eq!(g.inside, i, "two threads inside the lock");
                        g.inside = usize::MAX;
                    }
                    rthreads::current_node()
                })
                .unwrap()
        })
        .collect();
    let mut per_node = vec![0; nodes];
    for h in handles {
        per_node[h.join().unwrap()] += 1;
    }
    let total = shared.lock().unwrap().count;
    println!("mutex threads per node: {per_node:?}");
    println!("mutex total = {total} ({:.1} s)", start.elapsed().as_secs_f64());
    assert_eq!(total, per_thread * threads as u64);
    assert!(per_node.iter().all(|&c| c == 4));
    assert_eq!(Arc::strong_count(&shared), 1);
    let inner = Arc::try_unwrap(shared).ok().expect("the last Arc").into_inner().unwrap();
    assert_eq!(inner.count, total);
    println!("count ok");
}

fn pages() {
    const LEN: usize = 4096; // 32 KiB of u64: eight pages
    const ROUNDS: u64 = 25;
    let nodes = rthreads::node_count();
    let threads = 2 * nodes;
    let data = Arc::new(Mutex::new(vec![0u64; LEN]));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let data = Arc::clone(&data);
            rthreads::Builder::new()
                .node(i % nodes)
                .spawn(move || {
                    for _ in 0..ROUNDS {
                        let mut v = data.lock().unwrap();
                        let first = v[0];
                        // Whoever held the lock last left every element equal.
                        assert!(v.iter().all(|&x| x == first), "torn update");
                        for x in v.iter_mut() {
                            *x += 1;
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let v = data.lock().unwrap();
    let want = ROUNDS * threads as u64;
    assert!(v.iter().all(|&x| x == want));
    println!("pages ok: {LEN} elements each {want}");
}

fn poison() {
    let nodes = rthreads::node_count();
    let m = Arc::new(Mutex::new(vec![1u64, 2, 3]));

    // A panic while *not* holding the lock does not poison it.
    let m1 = Arc::clone(&m);
    let r = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            m1.lock().unwrap().push(0);
            m1.lock().unwrap().pop();
            panic!("panic without the lock held");
        })
        .unwrap()
        .join();
    assert!(r.is_err());
    assert!(!m.is_poisoned(), "poisoned by a panic outside the lock");
    assert_eq!(*m.lock().unwrap(), vec![1, 2, 3]);

    // A panic with the guard alive poisons it.
    let m1 = Arc::clone(&m);
    let r = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            let mut g = m1.lock().unwrap();
            g.push(4);
            panic!("poisoning the mutex on node {}", rthreads::current_node());
        })
        .unwrap()
        .join();
    let payload = r.unwrap_err();
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some(format!("poisoning the mutex on node {}", node(1)).as_str())
    );
    assert!(m.is_poisoned());
    match m.lock() {
        Ok(_) => panic!("lock() after a panic with the lock held must be Err"),
        Err(e) => {
            assert_eq!(**e.get_ref(), vec![1, 2, 3, 4]);
            let g = e.into_inner();
            assert_eq!(*g, vec![1, 2, 3, 4], "data intact behind the poison");
        }
    }
    // The guard in the error was dropped: the lock is free again, still poisoned.
    match m.try_lock() {
        Err(TryLockError::Poisoned(e)) => assert_eq!(e.into_inner().len(), 4),
        Err(TryLockError::WouldBlock) => panic!("try_lock: WouldBlock on a free lock"),
        Ok(_) => panic!("try_lock on a poisoned mutex must be Err(Poisoned)"),
    }
    // Every node sees the poison.
    let checkers: Vec<_> = (0..nodes)
        .map(|n| {
            let m = Arc::clone(&m);
            rthreads::Builder::new()
                .node(n)
                .spawn(move || {
                    assert!(m.is_poisoned());
                    let e = m.lock().expect_err("poisoned everywhere");
                    e.into_inner().len()
                })
                .unwrap()
        })
        .collect();
    for h in checkers {
        assert_eq!(h.join().unwrap(), 4);
    }

    m.clear_poison();
    assert!(!m.is_poisoned());
    m.lock().unwrap().push(5);
    assert_eq!(*m.lock().unwrap(), vec![1, 2, 3, 4, 5]);
    println!("poison seen and cleared on node 0");

    // Poisoned on node 2, cleared on node 3, seen clear on node 0 and 1.
    let m2 = Arc::clone(&m);
    assert!(
        rthreads::Builder::new()
            .node(node(2))
            .spawn(move || {
                let _g = m2.lock().unwrap();
                panic!("again");
            })
            .unwrap()
            .join()
            .is_err()
    );
    assert!(m.is_poisoned());
    let m3 = Arc::clone(&m);
    rthreads::Builder::new()
        .node(node(3))
        .spawn(move || {
            assert!(m3.is_poisoned());
            m3.clear_poison();
            assert!(!m3.is_poisoned());
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(!m.is_poisoned());
    let m1 = Arc::clone(&m);
    rthreads::Builder::new()
        .node(node(1))
        .spawn(move || assert_eq!(m1.lock().unwrap().len(), 5))
        .unwrap()
        .join()
        .unwrap();
    println!("poison cleared on another node");

    // into_inner and get_mut of a poisoned mutex give the data in the error.
    let m4 = Arc::clone(&m);
    let _ = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            let mut g = m4.lock().unwrap();
            g.push(6);
            panic!("third time");
        })
        .unwrap()
        .join();
    let mut inner = Arc::try_unwrap(m).unwrap_or_else(|_| panic!("not the last Arc"));
    assert!(inner.is_poisoned());
    match inner.get_mut() {
        Err(e) => e.into_inner().push(7),
        Ok(_) => panic!("get_mut on a poisoned mutex must be Err"),
    }
    let v = inner.into_inner().expect_err("into_inner: poisoned").into_inner();
    assert_eq!(v, vec![1, 2, 3, 4, 5, 6, 7]);
    println!("poison ok");
}

fn try_lock() {
    let m = Arc::new(Mutex::new(0u64));
    let held = Arc::new(Barrier::new(2));
    let (release_tx, release_rx) = mpsc::channel::<()>();

    let holder = {
        let (m, held) = (Arc::clone(&m), Arc::clone(&held));
        rthreads::Builder::new()
            .node(node(1))
            .spawn(move || {
                let mut g = m.lock().unwrap();
                *g = 41;
                held.wait(); // the lock is held from here...
                release_rx.recv().unwrap();
                *g = 42; // ...to here
            })
            .unwrap()
    };
    held.wait();
    assert!(matches!(m.try_lock(), Err(TryLockError::WouldBlock)));
    let m2 = Arc::clone(&m);
    rthreads::Builder::new()
        .node(node(2))
        .spawn(move || {
            assert!(matches!(m2.try_lock(), Err(TryLockError::WouldBlock)));
        })
        .unwrap()
        .join()
        .unwrap();
    println!("try_lock: WouldBlock while node {} holds it", node(1));

    // A blocking lock on node 2 waits for the release and sees the holder's last write.
    let m2 = Arc::clone(&m);
    let waiter = rthreads::Builder::new()
        .node(node(2))
        .spawn(move || {
            let t = Instant::now();
            let mut g = m2.lock().unwrap();
            let seen = *g;
            *g += 1;
            (seen, t.elapsed())
        })
        .unwrap();
    // Give the waiter time to block (only makes the test harder, not flaky).
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "lock() returned while another node held it");
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let (seen, _) = waiter.join().unwrap();
    assert_eq!(seen, 42, "the waiter saw the holder's last write");
    let g = m.try_lock().expect("try_lock on a free mutex");
    assert_eq!(*g, 43);
    drop(g);
    println!("try_lock ok");
}

const TESTS: &[Subtest] = &[
    ("count", |n| count(n.unwrap_or(10_000))),
    ("pages", |_| pages()),
    ("poison", |_| poison()),
    ("try_lock", |_| try_lock()),
];

#[rthreads::main]
fn main() {
    fixture::run_subtests("sync_mutex", TESTS);
}
