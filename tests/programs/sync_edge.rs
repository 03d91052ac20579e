//! Corner cases of `rthreads::sync` across nodes, each in its own sub-test (first argument; none
//! runs them all). A sub-test that hangs is reported (`HANG: ...`, exit code 3) after a bound
//! instead of blocking the suite.
//!
//! - `causal_lock`: a lock released on node 1 before a flag is set is free for a `try_lock` on
//!   node 2 that saw the flag (no stale `WouldBlock`).
//! - `causal_lock_send`: the same with a channel message as the signal (receiver on node 0,
//!   which manages the mutex and the channel, then on node 2).
//! - `causal_send`: sends from different nodes ordered by a token (a shared atomic passed round
//!   nodes 1, 2, 3) arrive in that order.
//! - `causal_recv`: a message sent on node 1 before a flag is set is there for a `try_recv` on
//!   node 0 that saw the flag (no stale `Empty`).
//! - `stale_timeout`: a `wait_timeout` that timed out on node 1 does not swallow a later
//!   `notify_one` meant for a waiter on node 2.
//! - `poison_wait`: `Condvar::wait` returns `Err` (with the guard) when the mutex was poisoned
//!   while the thread waited; a panicking `wait_while` condition poisons the mutex; a thread queued
//!   in `lock()` on node 2 gets `Err` when the holder on node 1 panics.
//! - `reuse`: mutexes, barriers (with a different thread count) and channels made again and
//!   again at the same addresses start fresh.
//! - `once_lock_panic`: an initialiser panicking on node 1 leaves the cell empty; `get_or_init`
//!   on node 2 then runs its own.
//! - `rendezvous_try_send`: `try_send` on `sync_channel(0)` succeeds once a receiver on another
//!   node is blocked in `recv`.
//! - `last_sender`: `Disconnected` comes only after the last of many sender clones, dropped on
//!   different nodes, is gone.
//! - `drop_queued`: messages still queued when the receiver is dropped are dropped (their
//!   destructors run, `Arc` counts come back).
//! - `big_messages`: 512 KiB messages by value, over-aligned messages, zero-sized messages;
//!   `recv_timeout(Duration::MAX)`.
//! - `foreign_home`: a mutex, condvar and channel made by a thread on node 3 (so managed there),
//!   used by nodes 0, 1 and 2 after that thread has ended.
//! - `static_mutex_condvar`: a condvar in the shared heap (made on node 0) used by two threads on
//!   node 1 with a mutex that is a `static` (per node, so node 1's own).
//! - `local_mutex_shared_condvar`: `wait_timeout` on node 1 with a mutex on the thread's stack and
//!   a condvar made on node 0 returns after its timeout.
//! - `barrier_zero`: `Barrier::new(0)` behaves as `Barrier::new(1)`, as in std.
//! - `barrier_pairs`: a barrier for 2 used by 6 threads on every node, each waiting once per round
//!   (a barrier for all 6 separates rounds), 20 rounds: every phase lets two threads go, one of
//!   them leading (60 phases), as std's barrier does; arrivals beyond the count wait for the next
//!   phase (through a barrier tree, a release of fewer arrivals than a node reported).
//! - `recv_timeout_race`: `recv_timeout` with tiny timeouts racing sends from node 1 loses
//!   nothing, with the receiver on the channel's own node (0) and on another (2).
//! - `wait_timeout_race`: `wait_timeout` with tiny timeouts racing `notify_one`/`notify_all`
//!   keeps mutual exclusion.
//! - `three_homes`: a mutex made on node 2 and a condvar made on node 3, used by waiters on nodes
//!   0 and 1 and a notifier on node 2.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use fixture::{Subtest, node, wait_until};
use rthreads::sync::mpsc::{self, RecvTimeoutError, TryRecvError, TrySendError};
use rthreads::sync::{Arc, Barrier, Condvar, Mutex, OnceLock};

mod fixture;

/// Runs `f` on `on`, reporting a hang (and ending the cluster with code 3) past `secs`.
fn bounded<T: Send + 'static>(what: &str, on: usize, secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let h = rthreads::Builder::new().node(on).spawn(f).unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !h.is_finished() {
        if Instant::now() > deadline {
            println!("HANG: {what}");
            std::process::exit(3);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match h.join() {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}

fn causal_lock() {
    const N: usize = 300;
    let locks: Arc<Vec<Mutex<u32>>> = Arc::new((0..N).map(|_| Mutex::new(0)).collect());
    let flags: Arc<Vec<AtomicBool>> = Arc::new((0..N).map(|_| AtomicBool::new(false)).collect());
    let (l, f) = (Arc::clone(&locks), Arc::clone(&flags));
    let releaser = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            for i in 0..N {
                *l[i].lock().unwrap() += 1;
                f[i].store(true, SeqCst);
            }
        })
        .unwrap();
    let (l, f) = (Arc::clone(&locks), Arc::clone(&flags));
    let stale = bounded("causal_lock", node(2), 60, move || {
        let mut stale = Vec::new();
        for i in 0..N {
            wait_until("the flag", || f[i].load(SeqCst));
            match l[i].try_lock() {
                Ok(g) => assert_eq!(*g, 1),
                Err(_) => stale.push(i),
            }
        }
        stale
    });
    releaser.join().unwrap();
    println!("causal_lock: {} of {N} try_lock after a causally earlier unlock failed", stale.len());
    assert!(stale.is_empty(), "stale WouldBlock at {stale:?}");
    println!("causal_lock ok");
}

fn causal_lock_send() {
    // The signal is a channel message this time: unlock on node 1, then send; whoever receives
    // the message (node 0, which manages both the mutex and the channel, then node 2) must find
    // the lock free.
    const N: usize = 300;
    for receiver in [0, node(2)] {
        let locks: Arc<Vec<Mutex<u32>>> = Arc::new((0..N).map(|_| Mutex::new(0)).collect());
        let (tx, rx) = mpsc::channel::<usize>();
        let (ack_tx, ack_rx) = mpsc::channel::<()>();
        let l = Arc::clone(&locks);
        let releaser = rthreads::Builder::new()
            .node(node(1))
            .spawn(move || {
                for i in 0..N {
                    *l[i].lock().unwrap() += 1;
                    tx.send(i).unwrap();
                    ack_rx.recv().unwrap(); // one at a time
                }
            })
            .unwrap();
        let l = Arc::clone(&locks);
        let check = move || {
            let mut stale = Vec::new();
            for i in 0..N {
                assert_eq!(rx.recv(), Ok(i));
                if l[i].try_lock().is_err() {
                    stale.push(i);
                }
                ack_tx.send(()).unwrap();
            }
            stale
        };
        let stale = if receiver == 0 {
            check()
        } else {
            rthreads::Builder::new().node(receiver).spawn(check).unwrap().join().unwrap()
        };
        releaser.join().unwrap();
        println!(
            "causal_lock_send: receiver on node {receiver}: {} of {N} try_lock after an unlock \
             and a send were WouldBlock",
            stale.len()
        );
        assert!(stale.is_empty(), "stale WouldBlock at {:?}", &stale[..stale.len().min(10)]);
    }
    println!("causal_lock_send ok");
}

fn causal_send() {
    const N: usize = 3000;
    let (tx, rx) = mpsc::channel::<(usize, usize)>();
    let turn = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..3)
        .map(|k| {
            let (tx, turn) = (tx.clone(), Arc::clone(&turn));
            rthreads::Builder::new()
                .node(node(1 + k))
                .spawn(move || {
                    let mut t = k;
                    while t < N {
                        wait_until("my turn", || turn.load(SeqCst) == t);
                        tx.send((t, rthreads::current_node())).unwrap();
                        turn.store(t + 1, SeqCst);
                        t += 3;
                    }
                })
                .unwrap()
        })
        .collect();
    drop(tx);
    let got: Vec<usize> = rx.iter().map(|(t, _)| t).collect();
    for h in handles {
        h.join().unwrap();
    }
    let out_of_order = got.windows(2).filter(|w| w[1] < w[0]).count();
    println!("causal_send: {} messages, {out_of_order} out of causal order", got.len());
    assert_eq!(got.len(), N);
    assert_eq!(out_of_order, 0, "causally ordered sends arrived out of order");
    println!("causal_send ok");
}

fn causal_recv() {
    const N: usize = 300;
    let (tx, rx) = mpsc::channel::<usize>();
    let sent = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&sent);
    let sender = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            for i in 0..N {
                // One message at a time: wait until node 0 has taken the previous one.
                wait_until("node 0", || s.load(SeqCst) == 2 * i);
                tx.send(i).unwrap();
                s.store(2 * i + 1, SeqCst);
            }
        })
        .unwrap();
    let mut stale = 0;
    for i in 0..N {
        wait_until("the send", || sent.load(SeqCst) == 2 * i + 1);
        let got = match rx.try_recv() {
            Ok(v) => v,
            Err(TryRecvError::Empty) => {
                stale += 1;
                rx.recv().unwrap()
            }
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(got, i);
        sent.store(2 * i + 2, SeqCst);
    }
    sender.join().unwrap();
    println!("causal_recv: {stale} of {N} try_recv after a causally earlier send were Empty");
    assert_eq!(stale, 0, "stale Empty");
    println!("causal_recv ok");
}

fn stale_timeout() {
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let p = Arc::clone(&pair);
    let timed_out = bounded("the timed wait", node(1), 60, move || {
        let (m, c) = &*p;
        let (_g, r) = c.wait_timeout(m.lock().unwrap(), Duration::from_millis(50)).unwrap();
        r.timed_out()
    });
    assert!(timed_out);
    let waiting = Arc::new(AtomicBool::new(false));
    let (p, w) = (Arc::clone(&pair), Arc::clone(&waiting));
    let waiter = rthreads::Builder::new()
        .node(node(2))
        .spawn(move || {
            let (m, c) = &*p;
            let mut g = m.lock().unwrap();
            w.store(true, SeqCst);
            while !*g {
                g = c.wait(g).unwrap();
            }
        })
        .unwrap();
    wait_until("the waiter", || waiting.load(SeqCst));
    {
        let (m, c) = &*pair;
        *m.lock().unwrap() = true; // the waiter is in wait() once we get the lock
        c.notify_one();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !waiter.is_finished() {
        if Instant::now() > deadline {
            println!("HANG: notify_one went to a waiter that had timed out");
            std::process::exit(3);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    waiter.join().unwrap();
    println!("stale_timeout ok");
}

fn poison_wait() {
    // The mutex is poisoned while a thread on node 1 waits on the condvar.
    let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
    let waiting = Arc::new(AtomicBool::new(false));
    let (p, w) = (Arc::clone(&pair), Arc::clone(&waiting));
    let waiter = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            let (m, c) = &*p;
            let mut g = m.lock().unwrap();
            w.store(true, SeqCst);
            loop {
                match c.wait(g) {
                    Ok(g2) => {
                        assert_eq!(*g2, 0, "woken with the value set but no poison");
                        g = g2;
                    }
                    Err(e) => return *e.into_inner(),
                }
            }
        })
        .unwrap();
    wait_until("the waiter", || waiting.load(SeqCst));
    let p = Arc::clone(&pair);
    let r = rthreads::Builder::new()
        .node(node(2))
        .spawn(move || {
            let (m, c) = &*p;
            let mut g = m.lock().unwrap(); // the waiter is in wait() once we get the lock
            *g = 7;
            c.notify_all();
            panic!("poisoning while a thread waits");
        })
        .unwrap()
        .join();
    assert!(r.is_err());
    assert_eq!(waiter.join().unwrap(), 7, "wait returned Err with the guard");
    println!("poison_wait: wait returned Err after a remote panic");

    // A panicking wait_while condition poisons the mutex.
    let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
    let p = Arc::clone(&pair);
    let r = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            let (m, c) = &*p;
            let _g = c.wait_while(m.lock().unwrap(), |_| panic!("condition panics")).unwrap();
        })
        .unwrap()
        .join();
    assert!(r.is_err());
    assert!(pair.0.is_poisoned());
    println!("poison_wait: a panicking wait_while condition poisons");

    // A thread queued in lock() when the holder panics gets Err.
    let m = Arc::new(Mutex::new(String::from("x")));
    let held = Arc::new(Barrier::new(2));
    let queued = Arc::new(AtomicBool::new(false));
    let (m1, h1, q1) = (Arc::clone(&m), Arc::clone(&held), Arc::clone(&queued));
    let holder = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            let mut g = m1.lock().unwrap();
            g.push('y');
            h1.wait();
            wait_until("the queued thread", || q1.load(SeqCst));
            std::thread::sleep(Duration::from_millis(30));
            panic!("holder panics");
        })
        .unwrap();
    held.wait();
    let (m2, q2) = (Arc::clone(&m), Arc::clone(&queued));
    let queued_res = bounded("a queued lock()", node(2), 60, move || {
        q2.store(true, SeqCst);
        match m2.lock() {
            Ok(_) => None,
            Err(e) => Some(e.into_inner().clone()),
        }
    });
    assert!(holder.join().is_err());
    assert_eq!(queued_res.as_deref(), Some("xy"));
    println!("poison_wait ok");
}

fn reuse() {
    let nodes = rthreads::node_count();
    let mut addrs = std::collections::HashSet::new();
    for round in 0..40 {
        let m = Arc::new(Mutex::new(round));
        addrs.insert(Arc::as_ptr(&m) as usize);
        assert!(!m.is_poisoned(), "round {round}: a fresh mutex is poisoned");
        assert!(m.try_lock().is_ok(), "round {round}: a fresh mutex is locked");
        let m2 = Arc::clone(&m);
        let r = rthreads::Builder::new()
            .node(1 + round % (nodes - 1))
            .spawn(move || {
                let _g = m2.lock().unwrap();
                if round % 2 == 0 {
                    panic!("round {round}");
                }
            })
            .unwrap()
            .join();
        assert_eq!(r.is_err(), round % 2 == 0);
        assert_eq!(m.is_poisoned(), round % 2 == 0);
    }
    println!("reuse: 40 mutexes at {} distinct addresses", addrs.len());

    addrs.clear();
    for round in 0..40 {
        let n = 2 + round % 3;
        let b = Arc::new(Barrier::new(n));
        addrs.insert(Arc::as_ptr(&b) as usize);
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let b = Arc::clone(&b);
                rthreads::Builder::new()
                    .node((round + i) % nodes)
                    .spawn(move || b.wait().is_leader())
                    .unwrap()
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !handles.iter().all(|h| h.is_finished()) {
            if Instant::now() > deadline {
                println!("HANG: barrier of {n} in round {round}");
                std::process::exit(3);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let leaders = handles.into_iter().map(|h| h.join().unwrap()).filter(|&l| l).count();
        assert_eq!(leaders, 1, "round {round}, barrier of {n}");
    }
    println!("reuse: 40 barriers of 2, 3, 4 threads at {} distinct addresses", addrs.len());

    for round in 0..40u32 {
        let (tx, rx) = mpsc::channel::<u32>();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        let h = rthreads::Builder::new()
            .node(1 + round as usize % (nodes - 1))
            .spawn(move || {
                tx.send(round).unwrap();
                tx.send(round + 1).unwrap();
            })
            .unwrap();
        assert_eq!(rx.recv(), Ok(round));
        if round % 2 == 0 {
            assert_eq!(rx.recv(), Ok(round + 1));
        }
        h.join().unwrap();
    }
    println!("reuse ok");
}

fn once_lock_panic() {
    let cell: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let c = Arc::clone(&cell);
    let r = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            c.get_or_init(|| panic!("initialiser fails"));
        })
        .unwrap()
        .join();
    assert!(r.is_err());
    assert!(cell.get().is_none());
    let c = Arc::clone(&cell);
    let v = bounded("get_or_init after a failed one", node(2), 30, move || {
        c.get_or_init(|| format!("from node {}", rthreads::current_node())).clone()
    });
    assert_eq!(v, format!("from node {}", node(2)));
    assert_eq!(cell.get(), Some(&v));
    println!("once_lock_panic ok");
}

fn rendezvous_try_send() {
    let (tx, rx) = mpsc::sync_channel::<u32>(0);
    assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
    let receiver = rthreads::Builder::new().node(node(2)).spawn(move || rx.recv()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut fulls = 0;
    loop {
        match tx.try_send(2) {
            Ok(()) => break,
            Err(TrySendError::Full(_)) => fulls += 1,
            Err(e) => panic!("{e:?}"),
        }
        if Instant::now() > deadline {
            println!("HANG: try_send never met the blocked receiver");
            std::process::exit(3);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(receiver.join().unwrap(), Ok(2));
    println!("rendezvous_try_send ok (Full {fulls} times first)");
}

fn last_sender() {
    let nodes = rthreads::node_count();
    let (tx, rx) = mpsc::channel::<usize>();
    let release = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..2 * nodes)
        .map(|i| {
            let (tx, release) = (tx.clone(), Arc::clone(&release));
            rthreads::Builder::new()
                .node(i % nodes)
                .spawn(move || {
                    let extra = tx.clone();
                    tx.send(i).unwrap();
                    drop(tx);
                    wait_until("my turn to drop", || release.load(SeqCst) > i);
                    extra.send(100 + i).unwrap();
                })
                .unwrap()
        })
        .collect();
    drop(tx);
    let mut got = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        // Every sender before i is gone, i and the later ones live.
        loop {
            match rx.try_recv() {
                Ok(v) => got.push(v),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => panic!("Disconnected with sender {i} alive"),
            }
        }
        release.store(i + 1, SeqCst);
        h.join().unwrap();
    }
    loop {
        match rx.try_recv() {
            Ok(v) => got.push(v),
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => panic!("Empty with every sender gone"),
        }
    }
    got.sort_unstable();
    let want: Vec<usize> = (0..2 * nodes).chain(100..100 + 2 * nodes).collect();
    assert_eq!(got, want);
    assert_eq!(rx.recv_timeout(Duration::from_secs(1)), Err(RecvTimeoutError::Disconnected));
    println!("last_sender ok");
}

/// Counts its drops.
struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

fn drop_queued() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<Tracked>();
    let handles: Vec<_> = (1..=3)
        .map(|k| {
            let (tx, drops) = (tx.clone(), Arc::clone(&drops));
            rthreads::Builder::new()
                .node(node(k))
                .spawn(move || {
                    for _ in 0..100 {
                        tx.send(Tracked(Arc::clone(&drops))).unwrap();
                    }
                })
                .unwrap()
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for _ in 0..50 {
        drop(rx.recv().unwrap());
    }
    assert_eq!(drops.load(SeqCst), 50);
    // Dropped on node 2 with 250 messages queued.
    rthreads::Builder::new().node(node(2)).spawn(move || drop(rx)).unwrap().join().unwrap();
    assert_eq!(drops.load(SeqCst), 300, "queued messages not dropped");
    let r = tx.send(Tracked(Arc::clone(&drops)));
    assert!(r.is_err());
    drop(r);
    drop(tx);
    assert_eq!(drops.load(SeqCst), 301);
    assert_eq!(Arc::strong_count(&drops), 1);

    // A sync_channel with a full buffer and a blocked sender.
    let (tx, rx) = mpsc::sync_channel::<Tracked>(4);
    let sent = Arc::new(AtomicUsize::new(0));
    let (d, s) = (Arc::clone(&drops), Arc::clone(&sent));
    let sender = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            let mut errs = 0;
            for _ in 0..6 {
                match tx.send(Tracked(Arc::clone(&d))) {
                    Ok(()) => drop(s.fetch_add(1, SeqCst)),
                    Err(e) => {
                        errs += 1;
                        drop(e);
                    }
                }
            }
            errs
        })
        .unwrap();
    wait_until("the buffer to fill", || sent.load(SeqCst) == 4);
    std::thread::sleep(Duration::from_millis(50)); // the sender blocks in its 5th send
    drop(rx);
    let errs = sender.join().unwrap();
    assert_eq!(errs, 2, "sends after the buffer filled and the receiver left");
    assert_eq!(drops.load(SeqCst), 301 + 6);
    assert_eq!(Arc::strong_count(&drops), 1);
    println!("drop_queued ok");
}

#[derive(Clone, Copy, PartialEq, Debug)]
#[repr(align(64))]
struct Aligned([u32; 3]);

fn big_messages() {
    const BIG: usize = 64 * 1024; // u64s: 512 KiB
    let (tx, rx) = mpsc::channel::<Box<[u64; BIG]>>();
    drop(tx);
    drop(rx);
    // By value, on threads with room for them.
    let (tx, rx) = mpsc::channel::<[u64; BIG]>();
    let sender = rthreads::Builder::new()
        .node(node(1))
        .stack_size(16 << 20)
        .spawn(move || {
            for k in 0..40u64 {
                let mut a = [0u64; BIG];
                a[0] = k;
                a[BIG - 1] = k * 2;
                tx.send(a).unwrap();
            }
        })
        .unwrap();
    let receiver = rthreads::Builder::new()
        .node(node(0))
        .stack_size(16 << 20)
        .spawn(move || {
            sender.join().unwrap(); // all 40 queued: 20 MiB waiting
            let mut k = 0;
            for a in rx.iter() {
                assert_eq!((a[0], a[BIG - 1]), (k, 2 * k));
                k += 1;
            }
            k
        })
        .unwrap();
    assert_eq!(receiver.join().unwrap(), 40);
    println!("big_messages: 40 messages of 512 KiB by value");

    let (tx, rx) = mpsc::channel::<(u8, Aligned, u128)>();
    let h = rthreads::Builder::new()
        .node(node(2))
        .spawn(move || {
            for k in 0..200u32 {
                tx.send((k as u8, Aligned([k, k + 1, k + 2]), u128::from(k) << 70)).unwrap();
            }
        })
        .unwrap();
    h.join().unwrap();
    for k in 0..200u32 {
        let (a, b, c) = rx.recv().unwrap();
        assert_eq!((a, b, c), (k as u8, Aligned([k, k + 1, k + 2]), u128::from(k) << 70));
    }
    println!("big_messages: over-aligned messages");

    let (tx, rx) = mpsc::sync_channel::<()>(3);
    let h = rthreads::Builder::new()
        .node(node(3))
        .spawn(move || (0..1000).for_each(|_| tx.send(()).unwrap()))
        .unwrap();
    assert_eq!(rx.iter().count(), 1000);
    h.join().unwrap();
    println!("big_messages: zero-sized messages");

    let (tx, rx) = mpsc::channel::<u8>();
    let h = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(9).unwrap();
        })
        .unwrap();
    assert_eq!(rx.recv_timeout(Duration::MAX), Ok(9));
    h.join().unwrap();
    assert_eq!(rx.recv_timeout(Duration::MAX), Err(RecvTimeoutError::Disconnected));
    println!("big_messages ok");
}

fn foreign_home() {
    type Parts = (Arc<(Mutex<Vec<usize>>, Condvar)>, mpsc::Sender<usize>, mpsc::Receiver<usize>);
    let (pair, tx, rx): Parts = rthreads::Builder::new()
        .node(node(3))
        .spawn(|| {
            let (tx, rx) = mpsc::channel();
            (Arc::new((Mutex::new(Vec::new()), Condvar::new())), tx, rx)
        })
        .unwrap()
        .join()
        .unwrap();
    let handles: Vec<_> = (1..=2)
        .map(|k| {
            let (pair, tx) = (Arc::clone(&pair), tx.clone());
            rthreads::Builder::new()
                .node(node(k))
                .spawn(move || {
                    for i in 0..100 {
                        let (m, c) = &*pair;
                        m.lock().unwrap().push(k * 1000 + i);
                        c.notify_all();
                        tx.send(k * 1000 + i).unwrap();
                    }
                })
                .unwrap()
        })
        .collect();
    drop(tx);
    {
        let (m, c) = &*pair;
        let g = c.wait_while(m.lock().unwrap(), |v| v.len() < 200).unwrap();
        assert_eq!(g.len(), 200);
    }
    assert_eq!(rx.iter().count(), 200);
    for h in handles {
        h.join().unwrap();
    }
    println!("foreign_home ok");
}

fn static_mutex_condvar() {
    static LOCK: Mutex<bool> = Mutex::new(false);
    let cv = Arc::new(Condvar::new());
    let waiting = Arc::new(AtomicBool::new(false));
    let (c, w) = (Arc::clone(&cv), Arc::clone(&waiting));
    let waiter = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            let mut g = LOCK.lock().unwrap();
            w.store(true, SeqCst);
            while !*g {
                g = c.wait(g).unwrap();
            }
        })
        .unwrap();
    let (c, w) = (Arc::clone(&cv), Arc::clone(&waiting));
    bounded("the notifier on node 1", node(1), 10, move || {
        wait_until("the waiter", || w.load(SeqCst));
        *LOCK.lock().unwrap() = true;
        c.notify_all();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !waiter.is_finished() {
        if Instant::now() > deadline {
            println!("HANG: the waiter on node 1 was never woken");
            std::process::exit(3);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    waiter.join().unwrap();
    println!("static_mutex_condvar ok");
}

fn local_mutex_shared_condvar() {
    fn timed_wait(c: &Condvar) -> bool {
        let m = Mutex::new(0u32); // on this thread's stack: not shared memory
        let (_g, r) = c.wait_timeout(m.lock().unwrap(), Duration::from_millis(50)).unwrap();
        r.timed_out()
    }
    let cv = Arc::new(Condvar::new()); // in the shared heap, made (so managed) on node 0
    assert!(timed_wait(&cv));
    let r = bounded("condvar made on node 1", node(1), 20, || timed_wait(&Arc::new(Condvar::new())));
    assert!(r);
    let c = Arc::clone(&cv);
    let r = bounded(
        "wait_timeout(50 ms) on node 1 with a condvar made on node 0 and a mutex on the stack",
        node(1),
        10,
        move || timed_wait(&c),
    );
    assert!(r);
    println!("local_mutex_shared_condvar ok");
}

fn barrier_zero() {
    // std treats a barrier of 0 like a barrier of 1.
    let b = Arc::new(Barrier::new(0));
    assert!(b.wait().is_leader());
    let b2 = Arc::clone(&b);
    let leads = bounded("Barrier::new(0).wait() on node 1", node(1), 20, move || b2.wait().is_leader());
    assert!(leads);
    println!("barrier_zero ok");
}

fn barrier_pairs() {
    // Each thread waits once per round at the pair barrier, so every round has 6 arrivals and 3
    // phases whatever the order (with several waits per round, std's barrier could strand the last
    // thread: its partners may all have finished).
    let led = bounded("6 threads through a barrier for 2", node(0), 60, || {
        let pairs = Arc::new(Barrier::new(2));
        let all = Arc::new(Barrier::new(6));
        let leaders = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..6)
            .map(|i| {
                let (pairs, all, l) = (Arc::clone(&pairs), Arc::clone(&all), Arc::clone(&leaders));
                rthreads::Builder::new()
                    .node(node(i))
                    .spawn(move || {
                        for _ in 0..20 {
                            if pairs.wait().is_leader() {
                                l.fetch_add(1, SeqCst);
                            }
                            all.wait();
                        }
                    })
                    .unwrap()
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        leaders.load(SeqCst)
    });
    assert_eq!(led, 60, "one leader per phase of two");
    println!("barrier_pairs ok");
}

fn recv_timeout_race() {
    // recv_timeout with tiny timeouts racing remote sends: no message lost, none reordered. The
    // channel is made on node 0; received on node 0 (its manager) and then on node 2.
    fn race(receiver_node: usize) -> (u32, u32) {
        const N: u32 = 20_000;
        let (tx, rx) = mpsc::channel::<u32>();
        let sender = rthreads::Builder::new()
            .node(node(1))
            .spawn(move || {
                for i in 0..N {
                    tx.send(i).unwrap();
                    if i % 4 == 0 {
                        std::thread::sleep(Duration::from_micros(120));
                    }
                }
            })
            .unwrap();
        let receive = move || {
            let (mut next, mut timeouts, mut missing) = (0u32, 0u32, Vec::new());
            loop {
                match rx.recv_timeout(Duration::from_micros(100)) {
                    Ok(v) => {
                        assert!(v >= next, "message {v} after {next}: reordered or duplicated");
                        missing.extend(next..v);
                        next = v + 1;
                    }
                    Err(RecvTimeoutError::Timeout) => timeouts += 1,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            assert!(
                missing.is_empty(),
                "receiver on node {}: {} of {N} messages lost around timeouts, first: {:?}",
                rthreads::current_node(),
                missing.len(),
                &missing[..missing.len().min(10)]
            );
            (next, timeouts)
        };
        let r = if receiver_node == 0 {
            receive()
        } else {
            rthreads::Builder::new().node(receiver_node).spawn(receive).unwrap().join().unwrap()
        };
        sender.join().unwrap();
        r
    }
    for n in [0, node(2)] {
        let (got, timeouts) = race(n);
        println!("recv_timeout_race: receiver on node {n}: {got} messages, {timeouts} timeouts in between");
    }
    println!("recv_timeout_race ok");
}

fn wait_timeout_race() {
    // Condvar timeouts racing notifications: mutual exclusion holds throughout.
    struct State {
        inside: bool,
        count: u64,
    }
    let pair = Arc::new((Mutex::new(State { inside: false, count: 0 }), Condvar::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let enter = |s: &mut State| {
        assert!(!s.inside, "two threads inside the mutex");
        s.inside = true;
        s.count += 1;
        s.inside = false;
    };
    let waiters: Vec<_> = (0..3)
        .map(|k| {
            let p = Arc::clone(&pair);
            rthreads::Builder::new()
                .node(node(1 + k))
                .spawn(move || {
                    let (m, c) = &*p;
                    let mut timed_out = 0;
                    for i in 0..300u64 {
                        let mut g = m.lock().unwrap();
                        enter(&mut g);
                        let (mut g, r) = c.wait_timeout(g, Duration::from_micros((i % 4) * 100)).unwrap();
                        enter(&mut g);
                        timed_out += u32::from(r.timed_out());
                    }
                    timed_out
                })
                .unwrap()
        })
        .collect();
    let p = Arc::clone(&pair);
    let st = Arc::clone(&stop);
    let notifier = rthreads::Builder::new()
        .node(node(0))
        .spawn(move || {
            let (m, c) = &*p;
            let mut i = 0u64;
            while !st.load(SeqCst) {
                enter(&mut m.lock().unwrap());
                if i.is_multiple_of(3) {
                    c.notify_all();
                } else {
                    c.notify_one();
                }
                i += 1;
                std::thread::sleep(Duration::from_micros(150));
            }
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !waiters.iter().all(|h| h.is_finished()) {
        if Instant::now() > deadline {
            println!("HANG: wait_timeout racing notifications");
            std::process::exit(3);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let timed_out: Vec<u32> = waiters.into_iter().map(|h| h.join().unwrap()).collect();
    stop.store(true, SeqCst);
    notifier.join().unwrap();
    println!("wait_timeout_race: condvar waits timed out {timed_out:?} times of 300 each");
    println!("wait_timeout_race ok");
}

fn three_homes() {
    // Mutex made on node 2, condvar on node 3, waiters on nodes 0 and 1, notifier on node 2.
    let m: Arc<Mutex<u32>> =
        rthreads::Builder::new().node(node(2)).spawn(|| Arc::new(Mutex::new(0))).unwrap().join().unwrap();
    let c: Arc<Condvar> =
        rthreads::Builder::new().node(node(3)).spawn(|| Arc::new(Condvar::new())).unwrap().join().unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|k| {
            let (m, c) = (Arc::clone(&m), Arc::clone(&c));
            rthreads::Builder::new()
                .node(node(k))
                .spawn(move || {
                    for round in 1..=50 {
                        let mut g = m.lock().unwrap();
                        *g += 1;
                        c.notify_all();
                        let g = c.wait_while(g, |v| *v < 3 * round).unwrap();
                        drop(g);
                    }
                })
                .unwrap()
        })
        .collect();
    let (m2, c2) = (Arc::clone(&m), Arc::clone(&c));
    bounded("three homes", node(2), 60, move || {
        for round in 1..=50 {
            let mut g = c2.wait_while(m2.lock().unwrap(), |v| *v < 3 * round - 1).unwrap();
            *g += 1;
            c2.notify_all();
        }
    });
    for h in waiters {
        h.join().unwrap();
    }
    assert_eq!(*m.lock().unwrap(), 150);
    println!("three_homes ok");
}

const TESTS: &[Subtest] = &[
    ("causal_lock", |_| causal_lock()),
    ("causal_lock_send", |_| causal_lock_send()),
    ("causal_send", |_| causal_send()),
    ("causal_recv", |_| causal_recv()),
    ("stale_timeout", |_| stale_timeout()),
    ("poison_wait", |_| poison_wait()),
    ("reuse", |_| reuse()),
    ("once_lock_panic", |_| once_lock_panic()),
    ("rendezvous_try_send", |_| rendezvous_try_send()),
    ("last_sender", |_| last_sender()),
    ("drop_queued", |_| drop_queued()),
    ("big_messages", |_| big_messages()),
    ("foreign_home", |_| foreign_home()),
    ("static_mutex_condvar", |_| static_mutex_condvar()),
    ("local_mutex_shared_condvar", |_| local_mutex_shared_condvar()),
    ("barrier_zero", |_| barrier_zero()),
    ("barrier_pairs", |_| barrier_pairs()),
    ("recv_timeout_race", |_| recv_timeout_race()),
    ("wait_timeout_race", |_| wait_timeout_race()),
    ("three_homes", |_| three_homes()),
];

#[rthreads::main]
fn main() {
    fixture::run_subtests("sync_edge", TESTS);
}
