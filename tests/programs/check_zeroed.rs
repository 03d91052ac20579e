//! Zeroed allocations (`vec![0; n]`, `alloc_zeroed`): a large block from fresh memory is not
//! written, so it costs no memory until used (as the C library's `calloc` does), and a block that
//! reuses memory handed out before is zeroed all the same, on the node that made it and after a
//! round trip through another node. Prints "zeroed ok".
use rthreads::sync::Arc;

const BIG: usize = 256 << 20;

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm.split_whitespace().nth(1).expect("resident").parse().expect("a number");
    pages * 4096
}

#[rthreads::main(nodes = 2)]
fn main() {
    // Fresh: 256 MiB of zeros cost (almost) nothing until touched.
    let before = rss();
    let big = vec![0u8; BIG];
    let grown = rss().saturating_sub(before);
    assert!(grown < 16 << 20, "a fresh zeroed block of 256 MiB made the node grow by {grown} bytes");
    assert!(big.iter().step_by(1 << 20).all(|&b| b == 0));
    println!("256 MiB of zeros: resident memory grew by {} KiB", grown >> 10);
    drop(big);
    // Reused: written, freed, and taken again zeroed.
    for round in 0..3u8 {
        let mut v = vec![0u8; 8 << 20];
        assert!(v.iter().all(|&b| b == 0), "round {round}: a reused zeroed block is not zero");
        v.iter_mut().step_by(4096).for_each(|b| *b = round + 1);
        drop(v);
    }
    // Made here, written and freed on node 1 (it goes back to this node), then taken again here.
    let shared = Arc::new(std::sync::Mutex::new(Some(vec![0u64; 1 << 20])));
    let s = Arc::clone(&shared);
    rthreads::Builder::new()
        .node(1)
        .spawn(move || {
            let mut v = s.lock().unwrap().take().unwrap();
            v.iter_mut().for_each(|x| *x = 7);
            drop(v);
        })
        .unwrap()
        .join()
        .unwrap();
    for _ in 0..3 {
        let v = vec![0u64; 1 << 20];
        assert!(v.iter().all(|&x| x == 0), "a block freed on node 1 came back dirty");
    }
    // A zeroed block made on node 1 from its fresh memory, read here.
    let remote = rthreads::Builder::new().node(1).spawn(|| vec![0u32; 1 << 20]).unwrap().join().unwrap();
    assert!(remote.iter().all(|&x| x == 0));
    println!("zeroed ok");
}
