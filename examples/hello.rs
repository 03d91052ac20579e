//! The main example: sum slices of a shared vector on threads spread over the cluster.
//!
//! `cargo run --release --example hello` starts an embedded cluster of 4 local nodes
//! (`RTHREADS_NODES=N` for another count).

use std::sync::Arc;

#[rthreads::main]
fn main() {
    let data = Arc::new((0..1_000_000u64).collect::<Vec<_>>());
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let data = Arc::clone(&data);
            rthreads::spawn(move || (rthreads::current_node(), data[i * 1000..][..1000].iter().sum::<u64>()))
        })
        .collect();
    for h in handles {
        println!("{:?}", h.join().unwrap());
    }
}
