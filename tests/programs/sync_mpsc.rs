//! `rthreads::sync::mpsc` across nodes.
//!
//! Sub-tests (first argument; none runs them all):
//! - `flood [per_sender]`: `channel()` with one sender thread on each of 4 nodes, each sending
//!   `(sender, seq)` for seq in 0..per_sender (default 250 000: 1 000 000 messages); the receiver on
//!   node 0 checks each sender's order and that nothing is lost, and the iteration ends when every
//!   sender is gone.
//! - `heap`: messages owning heap data (`Vec`, `String`) made on one node, read and freed on another.
//! - `bounded`: `sync_channel(0)` is a rendezvous and `sync_channel(k)` holds exactly k messages
//!   (the sender blocks beyond), with sender and receiver on different nodes; `try_send` gives
//!   `Full` and `Disconnected`.
//! - `try_recv`: `Empty` while a remote sender lives, `Disconnected` once none is left, after the
//!   messages still queued.
//! - `timeout`: `recv_timeout` gives `Timeout` (not early), a message sent from another node in
//!   time, and `Disconnected`.
//! - `iter`: `iter` ends when every sender is dropped; `try_iter` drains without blocking;
//!   `into_iter` on a receiver moved to another node.
//! - `send_error`: `SendError` (with the value back) once the receiver is dropped on another node,
//!   also for a sender blocked on a full `sync_channel`.
//! - `moved`: a `Receiver` moved to another node, used there, returned and used again, and sent
//!   through a channel to a third node.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use fixture::{Subtest, node};
use rthreads::sync::mpsc::{
    self, Receiver, RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError,
};
use rthreads::sync::{Arc, Barrier};

mod fixture;

/// Polls `cond` until it holds, sleeping 200 µs between polls; fails after a minute.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    fixture::poll_until(what, Duration::from_micros(200), cond);
}

fn flood(per_sender: u32) {
    let senders = 4;
    let (tx, rx) = mpsc::channel::<(u32, u32)>();
    let start = Instant::now();
    let handles: Vec<_> = (0..senders)
        .map(|s| {
            let tx = tx.clone();
            rthreads::Builder::new()
                .node(node(s))
                .spawn(move || {
                    for seq in 0..per_sender {
                        tx.send((s as u32, seq)).unwrap();
                    }
                    rthreads::current_node()
                })
                .unwrap()
        })
        .collect();
    drop(tx);
    let mut next = vec![0u32; senders];
    let mut total = 0u64;
    for (s, seq) in rx.iter() {
        let s = s as usize;
        assert!(s < senders, "unknown sender {s}");
        assert_eq!(seq, next[s], "sender {s}: order broken or message lost");
        next[s] += 1;
        total += 1;
    }
    let on: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!("flood: {total} messages from senders on nodes {on:?} ({:.1} s)", start.elapsed().as_secs_f64());
    assert!(next.iter().all(|&n| n == per_sender), "{next:?}");
    assert_eq!(total, u64::from(per_sender) * senders as u64);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    println!("flood ok: {total} messages in order, none lost");
}

fn heap() {
    let nodes = rthreads::node_count();
    let (tx, rx) = mpsc::channel::<(usize, Vec<u64>, String)>();
    let handles: Vec<_> = (0..nodes)
        .map(|n| {
            let tx = tx.clone();
            rthreads::Builder::new()
                .node(n)
                .spawn(move || {
                    for i in 0..500 {
                        let v: Vec<u64> = (0..100).map(|k| (n * 1000 + i) as u64 * k).collect();
                        tx.send((n, v, format!("node {n} message {i}"))).unwrap();
                    }
                })
                .unwrap()
        })
        .collect();
    drop(tx);
    let mut next = vec![0; nodes];
    for (n, v, s) in rx {
        let i = next[n];
        assert_eq!(s, format!("node {n} message {i}"));
        assert!(v.iter().enumerate().all(|(k, &x)| x == (n * 1000 + i) as u64 * k as u64));
        next[n] += 1;
    }
    for h in handles {
        h.join().unwrap();
    }
    assert!(next.iter().all(|&c| c == 500));
    println!("heap ok: {} messages with heap data", 500 * nodes);
}

/// `sync_channel(cap)`: sender on `from`, receiver on `to`, `n` messages.
fn bounded_once(cap: usize, from: usize, to: usize, n: usize) {
    let (tx, rx) = mpsc::sync_channel::<usize>(cap);
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let sent = Arc::clone(&sent);
        rthreads::Builder::new()
            .node(from)
            .spawn(move || {
                for k in 0..n {
                    tx.send(k).unwrap();
                    sent.fetch_add(1, SeqCst);
                }
            })
            .unwrap()
    };
    let receiver = rthreads::Builder::new()
        .node(to)
        .spawn(move || {
            // Nobody receives yet: exactly `cap` sends complete, and no more.
            wait_until("the buffer to fill", || sent.load(SeqCst) == cap);
            std::thread::sleep(Duration::from_millis(30));
            assert_eq!(sent.load(SeqCst), cap, "a send completed beyond the capacity");
            for k in 0..n {
                let s = sent.load(SeqCst);
                assert!(s <= k + cap, "{s} sends done before receiving message {k}");
                if k % 16 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                assert_eq!(rx.recv(), Ok(k));
            }
            assert_eq!(rx.recv(), Err(RecvError));
        })
        .unwrap();
    receiver.join().unwrap();
    sender.join().unwrap();
}

fn bounded() {
    bounded_once(0, node(1), node(0), 100);
    bounded_once(0, node(1), node(2), 100);
    println!("sync_channel(0) is a rendezvous across nodes");
    bounded_once(4, node(2), node(0), 200);
    bounded_once(3, node(0), node(3), 200);
    println!("sync_channel(k) holds k messages, the sender waits beyond");

    // try_send on a rendezvous channel with nobody receiving: Full.
    let (tx, rx) = mpsc::sync_channel::<u8>(0);
    assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
    drop(rx);
    assert_eq!(tx.try_send(2), Err(TrySendError::Disconnected(2)));

    // try_send from other nodes on a full, then freed, then orphaned channel.
    let (tx, rx) = mpsc::sync_channel::<u32>(2);
    let tx = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            assert_eq!(tx.try_send(1), Ok(()));
            assert_eq!(tx.try_send(2), Ok(()));
            assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
            tx
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(rx.try_recv(), Ok(1));
    let tx2 = tx.clone();
    rthreads::Builder::new()
        .node(node(2))
        .spawn(move || assert_eq!(tx2.try_send(3), Ok(())))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(rx.recv(), Ok(2));
    assert_eq!(rx.recv(), Ok(3));
    drop(rx);
    rthreads::Builder::new()
        .node(node(3))
        .spawn(move || {
            assert_eq!(tx.try_send(4), Err(TrySendError::Disconnected(4)));
            assert_eq!(tx.send(5), Err(SendError(5)));
        })
        .unwrap()
        .join()
        .unwrap();
    println!("bounded ok");
}

fn try_recv() {
    let (tx, rx) = mpsc::channel::<String>();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    let step = Arc::new(Barrier::new(2));
    let holder = {
        let step = Arc::clone(&step);
        rthreads::Builder::new()
            .node(node(1))
            .spawn(move || {
                tx.send("one".to_string()).unwrap();
                step.wait(); // 1: sent
                step.wait(); // 2: node 0 has seen Empty
                tx.send("two".to_string()).unwrap();
                drop(tx);
            })
            .unwrap()
    };
    step.wait();
    assert_eq!(rx.try_recv().as_deref(), Ok("one"));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "the sender on node 1 lives");
    step.wait();
    holder.join().unwrap();
    assert_eq!(rx.try_recv().as_deref(), Ok("two"), "queued before the sender left");
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    println!("try_recv ok");
}

fn timeout() {
    let (tx, rx) = mpsc::channel::<u32>();
    let step = Arc::new(Barrier::new(2));
    let holder = {
        let step = Arc::clone(&step);
        rthreads::Builder::new()
            .node(node(1))
            .spawn(move || {
                step.wait();
                tx.send(7).unwrap();
                // tx dropped here
            })
            .unwrap()
    };
    let t = Instant::now();
    assert_eq!(rx.recv_timeout(Duration::from_millis(150)), Err(RecvTimeoutError::Timeout));
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(150), "woke early: {waited:?}");
    println!("recv_timeout timed out after {waited:?}");
    step.wait();
    let t = Instant::now();
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(7));
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Err(RecvTimeoutError::Disconnected));
    assert!(t.elapsed() < Duration::from_secs(60));
    holder.join().unwrap();
    println!("timeout ok");
}

fn iter() {
    let nodes = rthreads::node_count();
    // iter: three remote senders, 100 messages each; ends when all are dropped.
    let (tx, rx) = mpsc::channel::<(usize, u32)>();
    for s in 1..=3 {
        let tx = tx.clone();
        drop(
            rthreads::Builder::new()
                .node(s % nodes)
                .spawn(move || {
                    for k in 0..100 {
                        tx.send((s, k)).unwrap();
                    }
                })
                .unwrap(),
        );
    }
    drop(tx);
    let got: Vec<(usize, u32)> = rx.iter().collect();
    assert_eq!(got.len(), 300);
    for s in 1..=3 {
        let mine: Vec<u32> = got.iter().filter(|m| m.0 == s).map(|m| m.1).collect();
        assert_eq!(mine, (0..100).collect::<Vec<_>>());
    }
    println!("iter ended after 300 messages");

    // try_iter: takes what is there, never blocks (a sender still lives).
    let (tx, rx) = mpsc::channel::<u32>();
    assert_eq!(rx.try_iter().next(), None);
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let tx = tx.clone();
            rthreads::Builder::new()
                .node(node(1 + i))
                .spawn(move || (0..50).for_each(|k| tx.send(k).unwrap()))
                .unwrap()
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(rx.try_iter().count(), 100);
    assert_eq!(rx.try_iter().next(), None);
    tx.send(5).unwrap();
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![5]);
    drop(tx);
    println!("try_iter ok");

    // into_iter, on a receiver moved to node 2; senders on nodes 0 and 1.
    let (tx, rx) = mpsc::channel::<u64>();
    let consumer = rthreads::Builder::new()
        .node(node(2))
        .spawn(move || {
            let mut n = 0;
            let mut sum = 0;
            for x in rx {
                n += 1;
                sum += x;
            }
            (n, sum)
        })
        .unwrap();
    let tx1 = tx.clone();
    let remote = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || (1..=100).for_each(|x| tx1.send(x).unwrap()))
        .unwrap();
    (101..=200).for_each(|x| tx.send(x).unwrap());
    drop(tx);
    remote.join().unwrap();
    assert_eq!(consumer.join().unwrap(), (200, 200 * 201 / 2));
    println!("iter ok");
}

fn send_error() {
    // Receiver dropped on node 1 after one message.
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let h = rthreads::Builder::new()
        .node(node(1))
        .spawn(move || {
            assert_eq!(rx.recv(), Ok(vec![1]));
            drop(rx);
        })
        .unwrap();
    tx.send(vec![1]).unwrap();
    h.join().unwrap();
    assert_eq!(tx.send(vec![2, 3]), Err(SendError(vec![2, 3])));
    let e = tx.send(vec![4]).unwrap_err();
    assert_eq!(e.0, vec![4], "the value comes back in the error");

    // A sender on node 2 gets SendError once the receiver on node 0 is gone.
    let (tx, rx) = mpsc::channel::<String>();
    drop(rx);
    let r = rthreads::Builder::new()
        .node(node(2))
        .spawn(move || tx.send("lost".to_string()).map_err(|SendError(s)| s))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(r, Err("lost".to_string()));

    // A sender blocked on a full sync_channel is released by the receiver's drop.
    let (tx, rx) = mpsc::sync_channel::<u32>(1);
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let sent = Arc::clone(&sent);
        rthreads::Builder::new()
            .node(node(1))
            .spawn(move || {
                tx.send(1).unwrap();
                sent.store(1, SeqCst);
                tx.send(2) // blocks: full
            })
            .unwrap()
    };
    let dropper = rthreads::Builder::new()
        .node(node(2))
        .spawn(move || {
            wait_until("the first send", || sent.load(SeqCst) == 1);
            std::thread::sleep(Duration::from_millis(50));
            drop(rx);
        })
        .unwrap();
    dropper.join().unwrap();
    assert_eq!(sender.join().unwrap(), Err(SendError(2)));
    println!("send_error ok");
}

fn moved() {
    let (tx, rx) = mpsc::channel::<u64>();
    for x in 1..=3 {
        tx.send(x).unwrap();
    }
    // Used on node 2, returned.
    let rx = rthreads::Builder::new()
        .node(node(2))
        .spawn(move || {
            assert_eq!(rx.recv(), Ok(1));
            assert_eq!(rx.recv(), Ok(2));
            rx
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(rx.recv(), Ok(3));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));

    // Sent through a channel of receivers to node 3, which then receives from nodes 0 and 1.
    let (rtx, rrx) = mpsc::channel::<Receiver<u64>>();
    let user = rthreads::Builder::new()
        .node(node(3))
        .spawn(move || {
            let rx = rrx.recv().unwrap();
            let mut got: Vec<u64> = rx.iter().collect();
            got.sort_unstable();
            (rthreads::current_node(), got)
        })
        .unwrap();
    tx.send(10).unwrap();
    rtx.send(rx).unwrap();
    let tx1 = tx.clone();
    rthreads::Builder::new().node(node(1)).spawn(move || tx1.send(11).unwrap()).unwrap().join().unwrap();
    tx.send(12).unwrap();
    drop(tx);
    let (n, got) = user.join().unwrap();
    assert_eq!(n, node(3));
    assert_eq!(got, vec![10, 11, 12]);
    println!("moved ok");
}

const TESTS: &[Subtest] = &[
    ("flood", |n| flood(n.map_or(250_000, |n| n as u32))),
    ("heap", |_| heap()),
    ("bounded", |_| bounded()),
    ("try_recv", |_| try_recv()),
    ("timeout", |_| timeout()),
    ("iter", |_| iter()),
    ("send_error", |_| send_error()),
    ("moved", |_| moved()),
];

#[rthreads::main]
fn main() {
    fixture::run_subtests("sync_mpsc", TESTS);
}
