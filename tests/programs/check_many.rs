//! Acceptance 5: 256 threads over 16 nodes all finish with correct results.
use std::sync::Arc;

#[rthreads::main]
fn main() {
    let nodes = rthreads::node_count();
    let threads = 256;
    let input: Arc<Vec<u64>> = Arc::new((0..threads as u64 * 1000).collect());
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let input = Arc::clone(&input);
            rthreads::spawn(move || {
                let s: u64 = input[i * 1000..(i + 1) * 1000].iter().map(|x| x * x).sum();
                (i, rthreads::current_node(), s)
            })
        })
        .collect();
    let mut per_node = vec![0; nodes];
    for h in handles {
        let (i, node, s) = h.join().unwrap();
        let want: u64 = (i as u64 * 1000..(i as u64 + 1) * 1000).map(|x| x * x).sum();
        assert_eq!(s, want, "thread {i}");
        per_node[node] += 1;
    }
    println!("threads per node: {per_node:?}");
    assert!(per_node.iter().all(|&c| c == threads / nodes));
    println!("all {threads} threads correct on {nodes} nodes");
}
