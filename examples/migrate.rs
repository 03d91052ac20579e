//! A thread that migrates mid-computation: it runs a few steps of the Collatz sequence, moves to
//! the next node after every step, and prints where each step ran. Its stack array, a reference
//! into its own stack and a heap vector it fills go along with it.
//!
//! `cargo run --release --example migrate` (4 local nodes; `RTHREADS_NODES=N` for another count).

#[rthreads::main]
fn main() {
    let h = rthreads::Builder::new()
        .name("traveller".into())
        .node(0)
        .spawn(|| {
            let nodes = rthreads::node_count();
            let mut values = [0u64; 512]; // 4 KiB on the thread's own stack
            let mut sum = 0u64;
            let acc = &mut sum; // a reference into that stack, used across every move
            let mut log: Vec<String> = Vec::new(); // heap data made on one node, grown on the others
            let mut x = 27u64;
            for (step, slot) in values.iter_mut().enumerate().take(9).skip(1) {
                x = if x.is_multiple_of(2) { x / 2 } else { 3 * x + 1 };
                *slot = x;
                *acc += x;
                log.push(format!("step {step}: x = {x:>3}, computed on node {}", rthreads::current_node()));
                rthreads::migrate(step % nodes).expect("migrate");
            }
            (log, values[1..=8].to_vec(), sum, rthreads::current_node())
        })
        .unwrap();
    let (log, values, sum, node) = h.join().unwrap();
    for line in &log {
        println!("{line}");
    }
    println!("the thread ended on node {node}; its stack array holds {values:?} (sum {sum})");
}
