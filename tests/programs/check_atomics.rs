//! Acceptance 1: 4 nodes x 4 threads x 10 000 `fetch_add(1)` on one shared `AtomicU64`.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[rthreads::main]
fn main() {
    let nodes = rthreads::node_count();
    let per_thread: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let counter = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..nodes * 4)
        .map(|i| {
            let c = Arc::clone(&counter);
            rthreads::Builder::new()
                .node(i % nodes)
                .spawn(move || {
                    for _ in 0..per_thread {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                    rthreads::current_node()
                })
                .unwrap()
        })
        .collect();
    let mut seen = vec![0; nodes];
    for h in handles {
        seen[h.join().unwrap()] += 1;
    }
    let total = counter.load(Ordering::SeqCst);
    println!("threads per node: {seen:?}");
    println!("total = {total}");
    assert_eq!(total, per_thread * 4 * nodes as u64);
    // Arc clones and drops on every node keep the count exact too.
    assert_eq!(Arc::strong_count(&counter), 1);
}
