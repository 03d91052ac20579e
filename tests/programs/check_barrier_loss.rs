//! Issue 18: one thread per node passing a barrier over every node again and again, until the
//! test kills one node in the middle of it (or the time limit, 120 s by default, ends the run).
use std::time::{Duration, Instant};

use rthreads::sync::atomic::{AtomicUsize, Ordering};
use rthreads::sync::{Arc, Barrier};

#[rthreads::main]
fn main() {
    let secs = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(120);
    let n = rthreads::node_count();
    let barrier = Arc::new(Barrier::new(n));
    let rounds = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..n)
        .map(|node| {
            let (barrier, rounds) = (Arc::clone(&barrier), Arc::clone(&rounds));
            rthreads::Builder::new()
                .node(node)
                .spawn(move || {
                    let end = Instant::now() + Duration::from_secs(secs);
                    while Instant::now() < end {
                        if barrier.wait().is_leader() {
                            rounds.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    while rounds.load(Ordering::SeqCst) < 3 {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("running");
    for h in handles {
        let _ = h.join();
    }
    println!("finished without losing a node");
}
