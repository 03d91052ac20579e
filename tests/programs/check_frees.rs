//! Memory allocated on node 0 and freed on node 1 goes back to node 0's arena and is reused.
#[rthreads::main]
fn main() {
    let mut marks = Vec::new();
    for round in 0..60 {
        let big = vec![round as u8; 1 << 20];
        let small: Vec<Box<[u64; 4]>> = (0..2000).map(|i| Box::new([i; 4])).collect();
        let s = format!("round {round}");
        rthreads::Builder::new()
            .node(1)
            .spawn(move || {
                assert!(big.iter().all(|&b| b == round as u8));
                assert_eq!(small.len(), 2000);
                drop((big, small, s));
            })
            .unwrap()
            .join()
            .unwrap();
        marks.push(rthreads::__private::arena_high_water());
    }
    println!("arena high-water after rounds 1, 10, 60: {} {} {} bytes", marks[0], marks[9], marks[59]);
    assert!(marks[59] <= marks[9] + (1 << 20), "memory freed on node 1 was not reused: {marks:?}");
    println!("frees reused");
}
