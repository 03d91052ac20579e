//! Every node talks to every other at once: a thread on each node spawns a thread on every other
//! node, which reads a vector its spawner's node allocated (faults served by that home) and writes
//! its result to a cell of a shared table. Under lazy connections (`RTHREADS_CONNECT=lazy`) the
//! pairs of nodes other than node 0 first meet here, many dialing each other at the same moment.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// This process's open TCP sockets (and any other socket), from `/proc/self/fd`.
fn sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[rthreads::main]
fn main() {
    let nodes = rthreads::node_count();
    let table: Arc<Vec<AtomicU64>> = Arc::new((0..nodes * nodes).map(|_| AtomicU64::new(0)).collect());
    let start = Arc::new(rthreads::sync::Barrier::new(nodes));
    let spawners: Vec<_> = (0..nodes)
        .map(|k| {
            let (table, start) = (Arc::clone(&table), Arc::clone(&start));
            rthreads::Builder::new()
                .node(k)
                .spawn(move || {
                    // Before this node talks to any node but node 0.
                    let open = sockets();
                    let mine: Arc<Vec<u64>> = Arc::new((0..4096).map(|i| i * (k as u64 + 1)).collect());
                    start.wait();
                    let handles: Vec<_> = (0..nodes)
                        .filter(|&m| m != k)
                        .map(|m| {
                            let (table, mine) = (Arc::clone(&table), Arc::clone(&mine));
                            rthreads::Builder::new()
                                .node(m)
                                .spawn(move || {
                                    let sum: u64 = mine.iter().sum();
                                    table[k * nodes + m].store(sum, Ordering::SeqCst);
                                    rthreads::current_node()
                                })
                                .unwrap()
                        })
                        .collect();
                    (open, handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>())
                })
                .unwrap()
        })
        .collect();
    let mut open = Vec::new();
    for (k, h) in spawners.into_iter().enumerate() {
        let (sockets, ran_on) = h.join().unwrap();
        assert_eq!(ran_on, (0..nodes).filter(|&m| m != k).collect::<Vec<_>>());
        open.push(sockets);
    }
    // Nodes other than 0, before they talk among themselves (the fewest: a node may already have
    // accepted the barrier's direct connections when it counts): eager connections hold a socket
    // pair per peer, lazy ones only node 0's.
    println!(
        "sockets before traffic, fewest on a node other than 0: {}",
        open[1..].iter().min().unwrap_or(&0)
    );
    let sum = |k: usize| (0..4096u64).sum::<u64>() * (k as u64 + 1);
    for k in 0..nodes {
        for m in (0..nodes).filter(|&m| m != k) {
            assert_eq!(table[k * nodes + m].load(Ordering::SeqCst), sum(k), "pair {k} -> {m}");
        }
    }
    println!("links ok: {} pairs", nodes * (nodes - 1));
}
