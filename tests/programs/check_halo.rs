//! A halo exchange over four nodes, as Jacobi does it with two buffers: every round, each node's
//! thread writes its band of the round's buffer and reads its neighbours' bands of the other
//! buffer (written in the round before), a barrier between rounds. Each band is allocated by the
//! thread that writes it, so its pages are homed there. With copies asked for ahead at barriers
//! (`RTHREADS_BARRIER_PREFETCH`), each home answers its neighbours' requests at its own arrival.
//! Checks every value read and prints the read faults of all nodes.
use std::sync::atomic::{AtomicU64, Ordering};

use rthreads::sync::{Arc, Barrier, Mutex};

mod fixture;

/// Words of one band of one buffer: two pages.
const WORDS: usize = 1024;
const ROUNDS: u64 = 40;

fn value(round: u64, node: usize, w: usize) -> u64 {
    round << 32 | (node as u64) << 16 | w as u64
}

/// One node's band of each buffer.
struct Band([Vec<AtomicU64>; 2]);

#[rthreads::main(nodes = 4)]
fn main() {
    let nodes = rthreads::node_count();
    let bands: Arc<Mutex<Vec<Option<Arc<Band>>>>> = Arc::new(Mutex::new(vec![None; nodes]));
    let barrier = Arc::new(Barrier::new(nodes));
    let before = rthreads::stats();
    let handles: Vec<_> = (0..nodes)
        .map(|k| {
            let (bands, barrier) = (Arc::clone(&bands), Arc::clone(&barrier));
            rthreads::Builder::new()
                .node(fixture::node(k))
                .spawn(move || {
                    let fresh = || (0..WORDS).map(|_| AtomicU64::new(0)).collect();
                    let mine = Arc::new(Band([fresh(), fresh()]));
                    bands.lock().unwrap()[k] = Some(Arc::clone(&mine));
                    barrier.wait();
                    let all: Vec<Arc<Band>> =
                        bands.lock().unwrap().iter().map(|b| Arc::clone(b.as_ref().unwrap())).collect();
                    let neighbours = [(k + nodes - 1) % nodes, (k + 1) % nodes];
                    for round in 1..=ROUNDS {
                        let (now, before) = ((round % 2) as usize, ((round - 1) % 2) as usize);
                        for (w, word) in mine.0[now].iter().enumerate() {
                            word.store(value(round, k, w), Ordering::Relaxed);
                        }
                        if round > 1 {
                            for &n in &neighbours {
                                for w in [0, WORDS / 2, WORDS - 1] {
                                    let got = all[n].0[before][w].load(Ordering::Relaxed);
                                    let want = value(round - 1, n, w);
                                    assert_eq!(
                                        got, want,
                                        "node {k}, round {round}: word {w} of node {n}'s band"
                                    );
                                }
                            }
                        }
                        barrier.wait();
                    }
                })
                .expect("a thread on every node")
        })
        .collect();
    for h in handles {
        h.join().expect("a halo thread");
    }
    let after = rthreads::stats();
    let faults: u64 = after.iter().zip(&before).map(|(a, b)| a.read_faults - b.read_faults).sum();
    println!("read faults: {faults}");
    println!("halo ok");
}
