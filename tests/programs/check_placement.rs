//! Placement policies on a real cluster: `check_placement <scenario>`, one scenario per run (the
//! tests in `tests/placement.rs` start each on a cluster of its own). Every scenario prints what it
//! saw and `placement ok` at the end; a wrong placement fails an assertion (exit code 101).
//!
//! Threads that must stay running while a decision is made wait on a gate (a flag in the shared
//! heap), so the run-queue lengths the decisions see are known exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rthreads::placement::{self, NodeLoad};
use rthreads::{Builder, JoinHandle, Placement};

/// A thread that runs until its gate opens.
struct Held {
    gate: Arc<AtomicBool>,
    handle: JoinHandle<usize>,
}

impl Held {
    fn spawn(b: Builder) -> Held {
        let gate = Arc::new(AtomicBool::new(false));
        let g = Arc::clone(&gate);
        let handle = b
            .spawn(move || {
                while !g.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                rthreads::current_node()
            })
            .unwrap();
        Held { gate, handle }
    }

    fn node(&self) -> usize {
        self.handle.node()
    }

    /// Opens the gate and joins; returns the node the thread ended on.
    fn release(self) -> usize {
        self.gate.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

/// Waits (20 s at most, then fails naming `what`) until this node's view of the loads satisfies
/// `ok`.
fn wait_for_loads(what: &str, ok: impl Fn(&[NodeLoad]) -> bool) -> Vec<NodeLoad> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let loads = placement::loads();
        if ok(&loads) {
            return loads;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {loads:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn count(nodes: &[usize], n: usize) -> usize {
    nodes.iter().filter(|&&m| m == n).count()
}

/// Least-loaded avoids the node kept busy, spreads a burst, and sends the next thread to the node
/// whose threads just ended. Three nodes.
fn least_loaded() {
    let busy: Vec<Held> = (0..2).map(|_| Held::spawn(Builder::new().node(1))).collect();
    // At once, before node 1 has reported anything: the two spawns sent there count as pending.
    let burst: Vec<Held> =
        (0..4).map(|_| Held::spawn(Builder::new().placement(Placement::LeastLoaded))).collect();
    let nodes: Vec<usize> = burst.iter().map(Held::node).collect();
    println!("burst of 4 with node 1 busy: {nodes:?}");
    assert_eq!((count(&nodes, 0), count(&nodes, 1), count(&nodes, 2)), (2, 0, 2));
    // Node 1's reports show its two threads; node 2's show its two.
    wait_for_loads("the reports of nodes 1 and 2", |l| {
        l[1].running == 2 && l[2].running == 2 && l.iter().all(|n| n.pending == 0)
    });
    // The threads on node 2 end; `join` returns after node 2's report of that, so the very next
    // decision sees node 2 empty.
    let (on0, on2): (Vec<Held>, Vec<Held>) = burst.into_iter().partition(|h| h.node() == 0);
    for h in on2 {
        assert_eq!(h.release(), 2);
    }
    let next = Held::spawn(Builder::new().placement(Placement::LeastLoaded));
    println!("after node 2's threads ended: {}", next.node());
    assert_eq!(next.node(), 2);
    for h in busy.into_iter().chain(on0).chain([next]) {
        h.release();
    }
    wait_for_loads("every node idle again", |l| l.iter().all(|n| n.running == 0 && n.pending == 0));
}

/// The run's policy is local-first (`RTHREADS_PLACEMENT`): threads stay on node 0 until it runs
/// one per CPU, then go elsewhere; per-spawn choices override it, and `Builder::node` beats both.
fn local_first() {
    assert_eq!(placement::policy(), Placement::LocalFirst);
    let cpus = placement::loads()[0].parallelism as usize;
    let home: Vec<Held> = (0..cpus).map(|_| Held::spawn(Builder::new())).collect();
    let nodes: Vec<usize> = home.iter().map(Held::node).collect();
    println!("{cpus} spawns with node 0 free: {nodes:?}");
    assert!(nodes.iter().all(|&n| n == 0), "{nodes:?}");
    let away = Held::spawn(Builder::new());
    println!("with node 0's {cpus} CPUs taken: {}", away.node());
    assert_ne!(away.node(), 0);
    // Per spawn: round-robin covers every node, twice in 2n consecutive spawns.
    let n = rthreads::node_count();
    let rr: Vec<usize> = (0..2 * n)
        .map(|_| {
            let h = Builder::new().placement(Placement::RoundRobin).spawn(rthreads::current_node).unwrap();
            let node = h.node();
            assert_eq!(h.join().unwrap(), node);
            node
        })
        .collect();
    println!("round-robin per spawn: {rr:?}");
    assert!((0..n).all(|k| count(&rr, k) == 2), "{rr:?}");
    // Builder::node wins over a per-spawn policy.
    let pinned =
        Builder::new().node(n - 1).placement(Placement::LocalFirst).spawn(rthreads::current_node).unwrap();
    assert_eq!(pinned.join().unwrap(), n - 1);
    for h in home.into_iter().chain([away]) {
        h.release();
    }
}

/// Nodes report their run-queue length and CPU use to each other.
fn reports() {
    let held: Vec<Held> = (0..3).map(|_| Held::spawn(Builder::new().node(1))).collect();
    wait_for_loads("node 1 running 3", |l| l[1].running == 3 && l[1].pending == 0 && l[1].reported.is_some());
    for h in held {
        h.release();
    }
    wait_for_loads("node 1 idle", |l| l[1].running == 0);
    // A thread spinning on node 1 shows as CPU use there.
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let spinner = Builder::new()
        .node(1)
        .spawn(move || {
            let mut x = 0u64;
            while !s.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            x
        })
        .unwrap();
    let seen = wait_for_loads("node 1 using CPU", |l| l[1].cpu >= 0.2);
    println!("node 1 busy: running {}, cpu {:.2}", seen[1].running, seen[1].cpu);
    stop.store(true, Ordering::Relaxed);
    spinner.join().unwrap();
    // And node 1 sees node 0's report too.
    let from1 = Builder::new()
        .node(1)
        .spawn(|| wait_for_loads("node 0's report on node 1", |l| l[0].reported.is_some()).len())
        .unwrap();
    assert_eq!(from1.join().unwrap(), rthreads::node_count());
}

/// `RTHREADS_PIN=1`: each node runs on one CPU of its own.
fn pin() {
    let n = rthreads::node_count();
    for node in 0..n {
        let (cpus, parallelism) = Builder::new()
            .node(node)
            .spawn(|| {
                // SAFETY: an all-zero `cpu_set_t` is the empty set, and sched_getaffinity writes one.
                let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                // SAFETY: as above; the size is the struct's.
                let r =
                    unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
                assert_eq!(r, 0);
                // SAFETY: indices below CPU_SETSIZE.
                let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                    .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
                    .collect();
                (cpus, std::thread::available_parallelism().unwrap().get())
            })
            .unwrap()
            .join()
            .unwrap();
        println!("node {node} on cpus {cpus:?}, parallelism {parallelism}");
    }
    assert_eq!(rthreads::available_parallelism().unwrap().get(), n);
}

/// Rebalancing switched on for the run (`RTHREADS_REBALANCE=1`): threads on an overloaded node
/// call `yield_now` and move only as far as there is room (not at all while `migrate` is not
/// available); their work is exact either way, and no claim is left behind.
fn rebalance() {
    assert!(placement::rebalancing());
    let cpus1 = placement::loads()[1].parallelism as usize;
    let room0 = placement::loads()[0].parallelism as usize;
    let workers: Vec<_> = (0..cpus1 + 2)
        .map(|t| {
            Builder::new()
                .node(1)
                .spawn(move || {
                    assert!(placement::rebalancing(), "switched on everywhere");
                    let start = rthreads::current_node();
                    let mut sum = 0u64;
                    for step in 0..200u64 {
                        sum += step * t as u64;
                        std::thread::sleep(Duration::from_micros(500));
                        rthreads::yield_now();
                    }
                    (start, rthreads::current_node(), sum)
                })
                .unwrap()
        })
        .collect();
    let mut moved = 0;
    for (t, h) in workers.into_iter().enumerate() {
        let (start, end, sum) = h.join().unwrap();
        assert_eq!(start, 1);
        assert!(end == 0 || end == 1, "{end}");
        assert_eq!(sum, 19_900 * t as u64);
        moved += usize::from(end != start);
    }
    // Node 1 was overloaded and node 0 had room, so moves were claimed; those `migrate` did not
    // refuse are the threads that moved.
    let (claimed, refused) = Builder::new().node(1).spawn(placement::move_counts).unwrap().join().unwrap();
    println!("threads moved: {moved}, moves claimed {claimed}, refused {refused}");
    assert!(claimed >= 1);
    assert_eq!(claimed - refused, moved as u64);
    // Migration works, so nothing was refused and the claimed threads really moved.
    assert_eq!(refused, 0);
    assert!(moved >= 1);
    assert!(moved <= room0, "{moved} moved, room for {room0}");
    // Nothing stays counted as leaving on node 1 or pending on node 0.
    let idle = |l: &[NodeLoad]| l.iter().all(|n| n.running == 0 && n.pending == 0);
    wait_for_loads("every node idle on node 0", idle);
    let on1 = Builder::new()
        .node(1)
        .spawn(move || {
            wait_for_loads("node 1 idle but for this thread", |l| l[1].running == 1 && l[0].running == 0)
        })
        .unwrap();
    on1.join().unwrap();
    placement::set_rebalancing(false);
    let off = Builder::new().node(1).spawn(placement::rebalancing).unwrap();
    assert!(!off.join().unwrap(), "switched off everywhere");
}

/// Above 16 nodes the load reports reach node 0 up a tree (the test runs it with fan-out 2, so
/// node 19's report passes nodes 9, 4 and 1). Threads held on nodes deep in it, spawned and joined
/// by a thread on node 3 so that no report of theirs comes to node 0 directly, show up at node 0,
/// and so does their end.
fn tree() {
    let n = rthreads::node_count();
    assert!(n > 16, "the tree scenario needs more than 16 nodes, not {n}");
    let deep = [n - 1, n - 2, 9];
    let go = Arc::new(AtomicBool::new(false));
    let g = Arc::clone(&go);
    let spawner = Builder::new()
        .node(3)
        .spawn(move || {
            let held: Vec<Held> = deep.iter().map(|&d| Held::spawn(Builder::new().node(d))).collect();
            while !g.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            held.into_iter().map(Held::release).sum::<usize>()
        })
        .unwrap();
    let seen = wait_for_loads("the deep nodes running", |l| {
        deep.iter().all(|&d| l[d].running == 1 && l[d].reported.is_some())
    });
    let shown: Vec<String> = deep.iter().map(|&d| format!("node {d} running {}", seen[d].running)).collect();
    println!("through the tree: {}", shown.join(", "));
    go.store(true, Ordering::SeqCst);
    assert_eq!(spawner.join().unwrap(), deep.iter().sum::<usize>());
    wait_for_loads("the deep nodes idle again", |l| deep.iter().all(|&d| l[d].running == 0));
    println!("their end reached node 0 too");
}

#[rthreads::main]
fn main() {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    match scenario.as_str() {
        "least-loaded" => least_loaded(),
        "local-first" => local_first(),
        "reports" => reports(),
        "pin" => pin(),
        "rebalance" => rebalance(),
        "tree" => tree(),
        other => panic!("unknown scenario {other:?}"),
    }
    println!("placement ok");
}
