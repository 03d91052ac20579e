//! Issue 7: `main` returns while threads on every node are still faulting on shared pages (some
//! blocked in the fault handler at that moment). The process must end promptly with `main`'s exit
//! code, leaving nothing behind.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[rthreads::main]
fn main() {
    let n = rthreads::node_count();
    // Two words on one page: every write by one node invalidates the others' copies.
    let words = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let hot = Arc::new(vec![0u64; 512 * 64]);
    for t in 0..n * 2 {
        let (words, hot) = (Arc::clone(&words), Arc::clone(&hot));
        // Detached: nobody joins these threads.
        rthreads::Builder::new()
            .node(t % n)
            .spawn(move || {
                let mut i = 0usize;
                loop {
                    words[t % 2].fetch_add(1, Ordering::Relaxed);
                    std::hint::black_box(hot[(i * 512) % hot.len()]);
                    i += 1;
                }
            })
            .unwrap();
    }
    while words[0].load(Ordering::Relaxed) + words[1].load(Ordering::Relaxed) < 2000 {
        std::thread::yield_now();
    }
    println!("main returns while {} threads fault", n * 2);
}
