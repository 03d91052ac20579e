//! Cross-node synchronisation against the raw round trip and against std inside one process, side
//! by side in one run.
//!
//! `cargo bench --bench sync` (8 local nodes). Rows:
//! - **raw loopback RTT (16 B -> 16 B)**: the transport's round trip, the yardstick;
//! - **remote lock+unlock, uncontended (kept)**: a thread on node 1 locks and unlocks a `Mutex`
//!   managed by node 0, over and over: after the first, node 1 keeps the lock (no message);
//! - **remote lock+unlock, first use (cold)**: node 1 locks each of many fresh mutexes managed by
//!   node 0 once: one round trip on a direct connection per lock;
//! - **std lock+unlock, uncontended**: `std::sync::Mutex` in this process;
//! - **lock hand-offs under contention**: one thread on each of 4 nodes increments one
//!   `Mutex<u64>`; time per acquisition, and the same with std and 4 threads in one process;
//! - **barrier, k nodes**: one thread on each of k nodes (2, 4, 8) goes through a `Barrier`;
//!   time per phase, and std's `Barrier` with k threads in one process;
//! - **channel**: 4 senders on nodes 1..=4, the receiver on node 0, `(u32, u32)` messages;
//!   messages per second, and std's `mpsc` with 4 sender threads in one process.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rthreads::sync::{Arc, Barrier, Mutex, mpsc};
use rthreads_suite::bench::{header, raw_rtt, row, us};

fn on<T: Send + 'static>(node: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    rthreads::Builder::new().node(node).spawn(f).unwrap().join().unwrap()
}

fn remote_lock(n: usize) -> Vec<Duration> {
    let m = Arc::new(Mutex::new(0u64));
    on(1, move || {
        (0..n)
            .map(|_| {
                let t = Instant::now();
                drop(black_box(m.lock().unwrap()));
                t.elapsed()
            })
            .collect()
    })
}

/// The first acquisition, by node 1, of fresh mutexes managed by node 0: nothing is kept yet, so
/// each `lock` is one round trip to the manager.
fn cold_remote_lock(n: usize, keep: &mut Vec<Arc<Vec<Mutex<u64>>>>) -> Vec<Duration> {
    let ms: Arc<Vec<Mutex<u64>>> = Arc::new((0..n).map(|_| Mutex::new(0)).collect());
    // Kept alive to the end, so later rounds get fresh addresses.
    keep.push(Arc::clone(&ms));
    on(1, move || {
        ms.iter()
            .map(|m| {
                let t = Instant::now();
                drop(black_box(m.lock().unwrap()));
                t.elapsed()
            })
            .collect()
    })
}

fn std_lock(n: usize) -> Vec<Duration> {
    let m = std::sync::Mutex::new(0u64);
    (0..n)
        .map(|_| {
            let t = Instant::now();
            drop(black_box(m.lock().unwrap()));
            t.elapsed()
        })
        .collect()
}

/// Time per acquisition with `threads` threads each doing `per` increments.
fn contended(threads: usize, per: usize) -> Duration {
    let m = Arc::new(Mutex::new(0u64));
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|i| {
            let m = Arc::clone(&m);
            rthreads::Builder::new()
                .node(1 + i % (rthreads::node_count() - 1))
                .spawn(move || {
                    for _ in 0..per {
                        *m.lock().unwrap() += 1;
                    }
                })
                .unwrap()
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(*m.lock().unwrap(), (threads * per) as u64);
    t.elapsed() / (threads * per) as u32
}

fn std_contended(threads: usize, per: usize) -> Duration {
    let m = std::sync::Arc::new(std::sync::Mutex::new(0u64));
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let m = std::sync::Arc::clone(&m);
            std::thread::spawn(move || {
                for _ in 0..per {
                    *m.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    t.elapsed() / (threads * per) as u32
}

fn barrier(nodes: usize, phases: usize) -> Duration {
    let b = Arc::new(Barrier::new(nodes));
    let t = Instant::now();
    let hs: Vec<_> = (0..nodes)
        .map(|n| {
            let b = Arc::clone(&b);
            rthreads::Builder::new()
                .node(n)
                .spawn(move || {
                    for _ in 0..phases {
                        b.wait();
                    }
                })
                .unwrap()
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    t.elapsed() / phases as u32
}

fn std_barrier(threads: usize, phases: usize) -> Duration {
    let b = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let b = std::sync::Arc::clone(&b);
            std::thread::spawn(move || {
                for _ in 0..phases {
                    b.wait();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    t.elapsed() / phases as u32
}

/// Messages per second from 4 senders to one receiver.
fn channel(per: u32) -> f64 {
    let (tx, rx) = mpsc::channel::<(u32, u32)>();
    let t = Instant::now();
    for s in 0..4u32 {
        let tx = tx.clone();
        rthreads::Builder::new()
            .node(1 + s as usize % (rthreads::node_count() - 1))
            .spawn(move || {
                for i in 0..per {
                    tx.send((s, i)).unwrap();
                }
            })
            .unwrap();
    }
    drop(tx);
    let n = rx.iter().count();
    assert_eq!(n, 4 * per as usize);
    n as f64 / t.elapsed().as_secs_f64()
}

fn std_channel(per: u32) -> f64 {
    let (tx, rx) = std::sync::mpsc::channel::<(u32, u32)>();
    let t = Instant::now();
    for s in 0..4u32 {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for i in 0..per {
                tx.send((s, i)).unwrap();
            }
        });
    }
    drop(tx);
    let n = rx.iter().count();
    n as f64 / t.elapsed().as_secs_f64()
}

#[rthreads::main(nodes = 8)]
fn main() {
    let nodes = rthreads::node_count();
    if nodes < 5 {
        eprintln!("the sync benchmark needs at least 5 nodes (RTHREADS_NODES >= 5)");
        std::process::exit(2);
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let (mut rtt, mut rl, mut cl, mut sl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut keep = Vec::new();
    for _ in 0..rounds {
        rtt.extend(raw_rtt(400, 16));
        rl.extend(remote_lock(400));
        cl.extend(cold_remote_lock(400, &mut keep));
        sl.extend(std_lock(400));
    }
    header();
    let m_rtt = row("raw loopback RTT (16 B -> 16 B)", &mut rtt);
    let m_rl = row("remote lock+unlock, uncontended (kept)", &mut rl);
    let m_cl = row("remote lock+unlock, first use (cold)", &mut cl);
    row("std lock+unlock, uncontended (one process)", &mut sl);
    println!(
        "ratio remote lock+unlock / raw RTT (medians): kept {:.2}, cold {:.2}",
        us(m_rl) / us(m_rtt),
        us(m_cl) / us(m_rtt)
    );
    println!();
    let per = 2000;
    let c = contended(4, per);
    let s = std_contended(4, per);
    println!(
        "lock hand-off under contention, 4 nodes x 1 thread: {:.1} us/acquisition ({:.0}/s); std, 4 threads: {:.3} us ({:.0}/s)",
        us(c),
        1e6 / us(c),
        us(s),
        1e6 / us(s)
    );
    for k in [2, 4, 8].into_iter().filter(|&k| k <= nodes) {
        let b = barrier(k, 500);
        let sb = std_barrier(k, 500);
        println!(
            "barrier, {k} nodes x 1 thread: {:.1} us/phase; std, {k} threads: {:.1} us/phase",
            us(b),
            us(sb)
        );
    }
    let r = channel(100_000);
    let sr = std_channel(100_000);
    println!("channel, 4 remote senders -> node 0: {r:.0} msg/s; std, 4 threads: {sr:.0} msg/s");
}
