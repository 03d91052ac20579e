//! The std-mirroring API: names, `is_finished`, `node()`, placement, `available_parallelism`,
//! errors, handles joined on another node, and node 0's exit code.
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[rthreads::main]
fn main() -> ExitCode {
    let nodes = rthreads::node_count();
    assert_eq!(rthreads::current_node(), 0);

    // available_parallelism sums the nodes'.
    let one = std::thread::available_parallelism().unwrap().get();
    assert_eq!(rthreads::available_parallelism().unwrap().get(), one * nodes);

    // Default placement: round-robin starting at the spawning node.
    let placed: Vec<usize> = (0..2 * nodes)
        .map(|_| rthreads::spawn(rthreads::current_node))
        .map(|h| {
            let n = h.node();
            assert_eq!(h.join().unwrap(), n, "node() tells where the thread ran");
            n
        })
        .collect();
    let want: Vec<usize> = (0..2 * nodes).map(|k| k % nodes).collect();
    assert_eq!(placed, want);

    // Names travel with the thread.
    let name = rthreads::Builder::new()
        .name("far-away".into())
        .node(nodes - 1)
        .spawn(|| std::thread::current().name().map(str::to_owned))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(name.as_deref(), Some("far-away"));

    // A node that does not exist is an error, not a hang.
    let err = rthreads::Builder::new().node(nodes + 5).spawn(|| ()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    println!("bad node: {err}");

    // is_finished, from the spawning node and from another node holding the handle.
    let gate = Arc::new(AtomicBool::new(false));
    let g = Arc::clone(&gate);
    let h = rthreads::Builder::new()
        .node(1)
        .spawn(move || {
            while !g.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            41 + 1
        })
        .unwrap();
    assert!(!h.is_finished());
    gate.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !h.is_finished() {
        assert!(Instant::now() < deadline, "is_finished never became true");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(h.join().unwrap(), 42);

    // A handle made on node 0 for a thread on node 1, joined by a thread on node 2.
    let inner = rthreads::Builder::new().node(1).spawn(|| String::from("joined elsewhere")).unwrap();
    let outer = rthreads::Builder::new()
        .node(2 % nodes)
        .spawn(move || {
            assert!(!inner.is_finished() || inner.is_finished());
            inner.join().unwrap()
        })
        .unwrap();
    assert_eq!(outer.join().unwrap(), "joined elsewhere");

    // Closures and results travel inside the spawn and end messages when small, through the
    // shared heap when large; both ways give the same answers.
    let words: Vec<String> = (0..5).map(|i| format!("w{i}")).collect();
    let h = rthreads::Builder::new()
        .node(1)
        .spawn(move || words.iter().rev().cloned().collect::<Vec<_>>())
        .unwrap();
    assert_eq!(h.join().unwrap(), ["w4", "w3", "w2", "w1", "w0"]);
    let big = [7u64; 1024];
    let h = rthreads::Builder::new().node(1).spawn(move || big.iter().sum::<u64>()).unwrap();
    assert_eq!(h.join().unwrap(), 7 * 1024, "a closure of 8 KiB");
    let h = rthreads::Builder::new().node(1).spawn(|| [3u8; 8192]).unwrap();
    assert!(h.join().unwrap().iter().all(|&b| b == 3), "a result of 8 KiB");
    let h = rthreads::Builder::new()
        .node(1)
        .spawn(|| -> u32 { panic!("remote {}", rthreads::current_node()) })
        .unwrap();
    assert_eq!(h.join().unwrap_err().downcast_ref::<String>().map(String::as_str), Some("remote 1"));

    // Every thread starts with fresh thread-locals and a thread id of its own, as in std, even
    // though carriers are started ahead of need.
    thread_local! {
        static TOUCHED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        let h = rthreads::Builder::new()
            .node(1)
            .spawn(|| (TOUCHED.with(|t| t.replace(true)), format!("{:?}", std::thread::current().id())))
            .unwrap();
        let (touched, id) = h.join().unwrap();
        assert!(!touched, "a thread saw the thread-locals of an earlier one");
        assert!(ids.insert(id), "a thread id came twice");
    }

    // The results of threads whose handles are dropped are dropped too: before they end, after
    // they end, on the spawning node and on another.
    struct Counted(Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for node in [0, 1, nodes - 1] {
        let d = Arc::clone(&dropped);
        drop(rthreads::Builder::new().node(node).spawn(move || Counted(d)).unwrap());
        let d = Arc::clone(&dropped);
        let h = rthreads::Builder::new().node(node).spawn(move || Counted(d)).unwrap();
        while !h.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(h);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while dropped.load(Ordering::SeqCst) < 6 {
        assert!(
            Instant::now() < deadline,
            "{} of 6 detached results dropped",
            dropped.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(1));
    }

    // Detached threads are fine.
    drop(rthreads::spawn(|| 1));
    println!("api ok");
    ExitCode::from(7)
}
