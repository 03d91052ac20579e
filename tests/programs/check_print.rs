//! Acceptance 4: `println!` from threads on every node reaches the launching terminal.
#[rthreads::main]
fn main() {
    let handles: Vec<_> = (0..rthreads::node_count())
        .map(|n| {
            rthreads::Builder::new()
                .node(n)
                .spawn(move || {
                    println!("hello from node {} (asked for {n})", rthreads::current_node());
                    eprintln!("stderr from node {}", rthreads::current_node());
                })
                .unwrap()
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
