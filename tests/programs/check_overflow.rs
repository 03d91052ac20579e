//! A thread that overflows its stack in the shared space is stopped with a message, as std stops
//! one that overflows its own stack: the guard page below every rthread stack.
use std::hint::black_box;

fn recurse(n: u64) -> u64 {
    let pad = black_box([n; 64]);
    if n == u64::MAX { 0 } else { recurse(n + 1) + pad[3] }
}

#[rthreads::main(nodes = 2)]
fn main() {
    println!("recursing on node 1");
    let h = rthreads::Builder::new().node(1).stack_size(128 << 10).spawn(|| recurse(0)).unwrap();
    println!("unreachable: {:?}", h.join());
}
