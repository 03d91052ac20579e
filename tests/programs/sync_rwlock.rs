//! `rthreads::sync::RwLock` across nodes.
//!
//! Sub-tests (first argument; none runs them all):
//! - `torn [writes]`: a `RwLock<[u64; 512]>` (4 KiB, so it straddles pages) with one writer on
//!   node 1 setting every element to v, v + 1, ... (default 1 000 writes) and two readers on each
//!   other node reading until the writer is done: every read sees all elements equal, and v never
//!   goes back for a reader.
//! - `shared`: readers on two nodes hold the read lock at the same time (`try_read` succeeds while
//!   another node reads); `try_write` is `WouldBlock` while a remote reader holds it, `try_read`
//!   and `try_write` are `WouldBlock` while a remote writer holds it; a blocked `write` waits for
//!   the readers.
//! - `poison`: a writer panicking on node 1 poisons the lock for every node (`read`, `write`,
//!   `try_read`, `try_write`, `into_inner`, `get_mut` give the data in the error); a reader
//!   panicking does not poison.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use fixture::{Subtest, node};
use rthreads::sync::{Arc, Barrier, RwLock, TryLockError};

mod fixture;

const LEN: usize = 512;

fn torn(writes: u64) {
    let nodes = rthreads::node_count();
    let lock = Arc::new(RwLock::new([0u64; LEN]));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let writer = {
        let (lock, done) = (Arc::clone(&lock), Arc::clone(&done));
        rthreads::Builder::new()
            .node(node(1))
            .spawn(move || {
                for v in 1..=writes {
                    let mut g = lock.write().unwrap();
                    assert!(g.iter().all(|&x| x == v - 1), "writer found a torn array");
                    for x in g.iter_mut() {
                        *x = v;
                    }
                }
                done.store(true, SeqCst);
            })
            .unwrap()
    };
    let readers: Vec<_> = (0..nodes)
        .filter(|&n| n != node(1) || nodes == 1)
        .flat_map(|n| [n, n])
        .map(|n| {
            let (lock, done) = (Arc::clone(&lock), Arc::clone(&done));
            rthreads::Builder::new()
                .node(n)
                .spawn(move || {
                    let (mut reads, mut last, mut changes) = (0u64, 0u64, 0u64);
                    loop {
                        let finished = done.load(SeqCst);
                        let g = lock.read().unwrap();
                        let v = g[0];
                        if let Some(i) = g.iter().position(|&x| x != v) {
                            panic!(
                                "torn read on node {}: [0] = {v}, [{i}] = {}",
                                rthreads::current_node(),
                                g[i]
                            );
                        }
                        drop(g);
                        assert!(v >= last, "went back from {last} to {v}");
                        if v != last {
                            changes += 1;
                        }
                        last = v;
                        reads += 1;
                        if finished {
                            assert_eq!(v, writes, "read after the writer finished");
                            break;
                        }
                        std::thread::yield_now();
                    }
                    (reads, changes)
                })
                .unwrap()
        })
        .collect();
    writer.join().unwrap();
    let mut total_reads = 0;
    let mut total_changes = 0;
    for h in readers {
        let (r, c) = h.join().unwrap();
        total_reads += r;
        total_changes += c;
    }
    assert_eq!(*lock.read().unwrap(), [writes; LEN]);
    println!(
        "torn: {writes} writes, {total_reads} reads seeing {total_changes} changes, never torn ({:.1} s)",
        start.elapsed().as_secs_f64()
    );
    println!("torn ok");
}

fn shared() {
    let lock = Arc::new(RwLock::new(vec![1u32, 2, 3]));
    let step = Arc::new(Barrier::new(3));
    // Node 1 reads and holds; node 2 must get a read lock meanwhile, not a write lock.
    let holder = {
        let (lock, step) = (Arc::clone(&lock), Arc::clone(&step));
        rthreads::Builder::new()
            .node(node(1))
            .spawn(move || {
                let g = lock.read().unwrap();
                step.wait(); // 1: read lock held
                step.wait(); // 2: node 2 has read too
                step.wait(); // 3: node 0 has checked
                g.len()
            })
            .unwrap()
    };
    let other = {
        let (lock, step) = (Arc::clone(&lock), Arc::clone(&step));
        rthreads::Builder::new()
            .node(node(2))
            .spawn(move || {
                step.wait();
                let g = lock.try_read().expect("try_read while another node reads");
                assert_eq!(*g, vec![1, 2, 3]);
                assert!(matches!(lock.try_write(), Err(TryLockError::WouldBlock)));
                drop(g);
                let g = lock.read().expect("read while another node reads");
                assert_eq!(g.len(), 3);
                drop(g);
                step.wait();
                step.wait();
            })
            .unwrap()
    };
    step.wait();
    step.wait();
    assert!(matches!(lock.try_write(), Err(TryLockError::WouldBlock)));
    assert_eq!(lock.try_read().map(|g| g.len()).ok(), Some(3));
    // A blocking write waits for the remote reader. (Spawned only now: a waiting writer may
    // legitimately hold new readers off.)
    let entered = Arc::new(AtomicUsize::new(0));
    let blocked_writer = {
        let (lock, entered) = (Arc::clone(&lock), Arc::clone(&entered));
        rthreads::Builder::new()
            .node(node(3))
            .spawn(move || {
                let mut g = lock.write().unwrap();
                entered.store(1, SeqCst);
                g.push(4);
            })
            .unwrap()
    };
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(entered.load(SeqCst), 0, "write() got in while node 1 read");
    step.wait();
    assert_eq!(holder.join().unwrap(), 3);
    other.join().unwrap();
    blocked_writer.join().unwrap();
    assert_eq!(*lock.read().unwrap(), vec![1, 2, 3, 4]);
    println!("readers share the lock across nodes; a writer waits for them");

    // A remote writer excludes everyone.
    let step = Arc::new(Barrier::new(2));
    let writer = {
        let (lock, step) = (Arc::clone(&lock), Arc::clone(&step));
        rthreads::Builder::new()
            .node(node(1))
            .spawn(move || {
                let mut g = lock.write().unwrap();
                g.push(5);
                step.wait(); // 1: write lock held
                step.wait(); // 2: others checked
            })
            .unwrap()
    };
    step.wait();
    assert!(matches!(lock.try_read(), Err(TryLockError::WouldBlock)));
    assert!(matches!(lock.try_write(), Err(TryLockError::WouldBlock)));
    let l2 = Arc::clone(&lock);
    rthreads::Builder::new()
        .node(node(2))
        .spawn(move || {
            assert!(matches!(l2.try_read(), Err(TryLockError::WouldBlock)));
            assert!(matches!(l2.try_write(), Err(TryLockError::WouldBlock)));
        })
        .unwrap()
        .join()
        .unwrap();
    step.wait();
    writer.join().unwrap();
    assert_eq!(lock.try_read().unwrap().len(), 5);
    lock.try_write().unwrap().push(6);
    assert_eq!(*lock.read().unwrap(), vec![1, 2, 3, 4, 5, 6]);
    println!("shared ok");
}

fn poison() {
    let nodes = rthreads::node_count();
    let lock = Arc::new(RwLock::new(String::from("abc")));

    // A reader panicking does not poison.
    let l = Arc::clone(&lock);
    let r = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            let _g = l.read().unwrap();
            panic!("reader panics");
        })
        .unwrap()
        .join();
    assert!(r.is_err());
    assert!(!lock.is_poisoned(), "a reader's panic poisoned the lock");

    // A writer panicking does.
    let l = Arc::clone(&lock);
    let r = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            let mut g = l.write().unwrap();
            g.push('d');
            panic!("writer panics");
        })
        .unwrap()
        .join();
    assert!(r.is_err());
    assert!(lock.is_poisoned());
    let e = lock.read().expect_err("read after a writer's panic");
    assert_eq!(&**e.get_ref(), "abcd");
    drop(e);
    let e = lock.write().expect_err("write after a writer's panic");
    e.into_inner().push('e');
    match lock.try_read() {
        Err(TryLockError::Poisoned(e)) => assert_eq!(&*e.into_inner(), "abcde"),
        _ => panic!("try_read on a poisoned lock must be Err(Poisoned)"),
    }
    match lock.try_write() {
        Err(TryLockError::Poisoned(e)) => assert_eq!(&*e.into_inner(), "abcde"),
        _ => panic!("try_write on a poisoned lock must be Err(Poisoned)"),
    }
    let checkers: Vec<_> = (0..nodes)
        .map(|n| {
            let l = Arc::clone(&lock);
            rthreads::Builder::new()
                .node(n)
                .spawn(move || {
                    assert!(l.is_poisoned());
                    assert!(l.read().is_err());
                    l.write().unwrap_err().into_inner().len()
                })
                .unwrap()
        })
        .collect();
    for h in checkers {
        assert_eq!(h.join().unwrap(), 5);
    }
    let mut inner = Arc::try_unwrap(lock).unwrap_or_else(|_| panic!("not the last Arc"));
    inner.get_mut().unwrap_err().into_inner().push('f');
    assert_eq!(inner.into_inner().unwrap_err().into_inner(), "abcdef");
    println!("poison ok");
}

const TESTS: &[Subtest] =
    &[("torn", |n| torn(n.unwrap_or(1000))), ("shared", |_| shared()), ("poison", |_| poison())];

#[rthreads::main]
fn main() {
    fixture::run_subtests("sync_rwlock", TESTS);
}
