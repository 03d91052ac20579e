//! Statistics count what happened: known page traffic, locks and barriers show up per node.
use rthreads::sync::{Arc, Barrier, Mutex};

const PAGES: usize = 64;

#[rthreads::main]
fn main() {
    let before = rthreads::stats();
    assert_eq!(before.len(), rthreads::node_count());
    // 64 pages written on node 0, then read once each by a thread on node 1.
    let data = Arc::new(vec![7u8; PAGES * 4096]);
    let d = Arc::clone(&data);
    let sum = rthreads::Builder::new()
        .node(1)
        .spawn(move || d.iter().step_by(4096).map(|&b| u64::from(b)).sum::<u64>())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(sum, 7 * PAGES as u64);
    // A mutex managed by node 0, locked 20 times by node 1: the first needs node 0, the rest are
    // kept on node 1.
    let m = Arc::new(Mutex::new(0u32));
    let m1 = Arc::clone(&m);
    rthreads::Builder::new()
        .node(1)
        .spawn(move || {
            for _ in 0..20 {
                *m1.lock().unwrap() += 1;
            }
        })
        .unwrap()
        .join()
        .unwrap();
    let b = Arc::new(Barrier::new(2));
    let hs: Vec<_> = (0..2)
        .map(|n| {
            let b = Arc::clone(&b);
            rthreads::Builder::new().node(n).spawn(move || b.wait().is_leader()).unwrap()
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let after = rthreads::stats();
    print!("{}", rthreads::StatsTable(&after));
    let delta = |n: usize, f: fn(&rthreads::NodeStats) -> u64| f(&after[n]) - f(&before[n]);
    assert!(delta(1, |s| s.read_faults) >= PAGES as u64, "node 1 faulted on every page");
    assert!(delta(1, |s| s.pages_received) >= PAGES as u64);
    assert!(delta(0, |s| s.pages_sent) >= PAGES as u64);
    // Page requests: "read request" under the sequentially consistent protocol, fetches (counted
    // as "release consistency") under the relaxed one.
    let read_requests = |s: &rthreads::NodeStats| {
        s.by_kind
            .iter()
            .filter(|k| k.kind == "read request" || k.kind == "release consistency")
            .map(|k| k.sent)
            .sum::<u64>()
    };
    // A direct read (sc) is a read request the faulting thread sent itself.
    let direct = after[1].direct_reads - before[1].direct_reads;
    assert!(read_requests(&after[1]) - read_requests(&before[1]) + direct >= PAGES as u64);
    assert_eq!(delta(1, |s| s.lock_acquisitions), 20);
    assert_eq!(delta(1, |s| s.remote_lock_acquisitions), 1, "later locks are kept on node 1");
    assert_eq!(delta(0, |s| s.barrier_waits) + delta(1, |s| s.barrier_waits), 2);
    assert!(after[1].fault_wait > before[1].fault_wait);
    assert!(after.iter().all(|s| s.messages_sent() > 0 && s.bytes_received() > 0));
    println!("stats ok");
}
