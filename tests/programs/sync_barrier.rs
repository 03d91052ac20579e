//! `rthreads::sync::Barrier` across nodes.
//!
//! Arguments: `[threads [phases]]`, default 64 threads (spread round-robin over the cluster's
//! nodes, 8 in the test) through 100 phases. In each phase every thread writes its slot
//! (`Relaxed` stores: the barrier alone must order them), waits, counts itself if it is the
//! leader, and then reads every slot, which must hold this phase's value. Slots are double
//! buffered by the phase's parity, so one wait per phase suffices: a thread can only write the
//! buffer of phase p + 2 after every thread has passed the barrier of phase p + 1, that is after
//! every thread has finished reading phase p.
//! Exactly one leader per phase; a one-thread barrier always leads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use rthreads::sync::{Arc, Barrier};

fn value(phase: usize, thread: usize) -> u64 {
    (phase as u64 + 1) << 32 | thread as u64
}

#[rthreads::main]
fn main() {
    let nodes = rthreads::node_count();
    let threads: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let phases: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let start = Instant::now();

    // A barrier of one: every wait leads, on any node.
    let single = Arc::new(Barrier::new(1));
    assert!(single.wait().is_leader());
    for n in 0..nodes {
        let single = Arc::clone(&single);
        let leads = rthreads::Builder::new()
            .node(n)
            .spawn(move || (0..3).all(|_| single.wait().is_leader()))
            .unwrap()
            .join()
            .unwrap();
        assert!(leads, "a one-thread barrier always leads (node {n})");
    }

    let barrier = Arc::new(Barrier::new(threads));
    let leaders: Arc<Vec<AtomicUsize>> = Arc::new((0..phases).map(|_| AtomicUsize::new(0)).collect());
    let slots: Arc<[Vec<AtomicU64>; 2]> = Arc::new([
        (0..threads).map(|_| AtomicU64::new(0)).collect(),
        (0..threads).map(|_| AtomicU64::new(0)).collect(),
    ]);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (barrier, leaders, slots) = (Arc::clone(&barrier), Arc::clone(&leaders), Arc::clone(&slots));
            rthreads::Builder::new()
                .node(t % nodes)
                .spawn(move || {
                    let mut led = 0;
                    for p in 0..phases {
                        let buf = &slots[p % 2];
                        buf[t].store(value(p, t), Relaxed);
                        if barrier.wait().is_leader() {
                            leaders[p].fetch_add(1, Relaxed);
                            led += 1;
                        }
                        for (j, slot) in buf.iter().enumerate() {
                            let v = slot.load(Relaxed);
                            assert_eq!(
                                v,
                                value(p, j),
                                "thread {t} on node {} in phase {p}: slot {j} holds {v:#x}",
                                rthreads::current_node()
                            );
                        }
                    }
                    (rthreads::current_node(), led)
                })
                .unwrap()
        })
        .collect();
    let mut per_node = vec![0; nodes];
    let mut led = 0;
    for h in handles {
        let (n, l) = h.join().unwrap();
        per_node[n] += 1;
        led += l;
    }
    let counts: Vec<usize> = leaders.iter().map(|c| c.load(Relaxed)).collect();
    println!("threads per node: {per_node:?}");
    println!("leaders per phase: {:?}", &counts[..counts.len().min(10)]);
    assert!(
        counts.iter().all(|&c| c == 1),
        "phases without exactly one leader: {:?}",
        counts.iter().enumerate().filter(|&(_, &c)| c != 1).collect::<Vec<_>>()
    );
    assert_eq!(led, phases);
    println!("exactly one leader in each of {phases} phases");
    println!(
        "{threads} threads on {nodes} nodes saw every slot after each of {phases} barriers ({:.1} s)",
        start.elapsed().as_secs_f64()
    );

    // The barrier is reusable after all that, by a new set of threads.
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = Arc::clone(&barrier);
            rthreads::Builder::new().node((t + 1) % nodes).spawn(move || barrier.wait().is_leader()).unwrap()
        })
        .collect();
    let leaders = handles.into_iter().map(|h| h.join().unwrap()).filter(|&l| l).count();
    assert_eq!(leaders, 1);
    println!("barrier ok");
}
