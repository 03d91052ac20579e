//! Work the launch and failure tests run on a cluster: shared data read on every node, and a lock
//! every node increments under.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rthreads::sync::Mutex;

/// `threads_per_node` threads on every node each sum their slice of a vector built on node 0 and
/// add 1 000 times to a counter behind one cluster-wide mutex. Returns the line to print and
/// whether every figure is right. The line is the same whatever launched the cluster.
pub fn sums_and_locks(threads_per_node: usize) -> (String, bool) {
    let n = rthreads::node_count();
    let threads = threads_per_node * n;
    let data: Arc<Vec<u64>> = Arc::new((0..(threads as u64 * 10_000)).collect());
    let total = Arc::new(Mutex::new(0u64));
    let counter = Arc::new(Mutex::new(0u64));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (data, total, counter) = (Arc::clone(&data), Arc::clone(&total), Arc::clone(&counter));
            rthreads::spawn(move || {
                let sum: u64 = data[t * 10_000..(t + 1) * 10_000].iter().sum();
                *total.lock().unwrap() += sum;
                for _ in 0..1000 {
                    *counter.lock().unwrap() += 1;
                }
                rthreads::current_node()
            })
        })
        .collect();
    let mut nodes_used = vec![false; n];
    for h in handles {
        nodes_used[h.join().unwrap()] = true;
    }
    let expected: u64 = data.iter().sum();
    let (total, counter) = (*total.lock().unwrap(), *counter.lock().unwrap());
    let ok = total == expected && counter == threads as u64 * 1000 && nodes_used.iter().all(|&u| u);
    (
        format!(
            "nodes {n}, threads {threads}, sum {total} (expected {expected}), counter {counter} (expected {}), every node used: {}",
            threads * 1000,
            nodes_used.iter().all(|&u| u)
        ),
        ok,
    )
}

/// Keeps every node busy with faults and lock hand-offs for up to `limit`: threads on every node
/// increment a shared counter under a mutex and write their own words of shared pages. Prints
/// `running` once every thread has started. For tests that kill or cut off a node meanwhile.
pub fn keep_busy(limit: Duration) {
    let n = rthreads::node_count();
    let counter = Arc::new(Mutex::new(0u64));
    let pages = Arc::new((0..n * 2).map(|_| std::sync::atomic::AtomicU64::new(0)).collect::<Vec<_>>());
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<_> = (0..n * 2)
        .map(|t| {
            let (counter, pages, started) = (Arc::clone(&counter), Arc::clone(&pages), Arc::clone(&started));
            rthreads::Builder::new()
                .node(t % n)
                .spawn(move || {
                    started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let end = Instant::now() + limit;
                    while Instant::now() < end {
                        *counter.lock().unwrap() += 1;
                        pages[t].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
                .unwrap()
        })
        .collect();
    while started.load(std::sync::atomic::Ordering::SeqCst) < n * 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("running");
    for h in handles {
        let _ = h.join();
    }
    println!("finished without losing a node");
}
