use rthreads::sync::mpsc;
#[rthreads::main]
fn main() {
    let n = rthreads::node_count();
    for round in 0..20 {
        let (tx, rx) = mpsc::channel();
        for s in 0..n {
            let tx = tx.clone();
            rthreads::Builder::new()
                .node(s)
                .spawn(move || {
                    for i in 0..20_000u32 {
                        tx.send((s as u32, i)).unwrap()
                    }
                })
                .unwrap();
        }
        drop(tx);
        let mut next = vec![0u32; n];
        let mut count = 0;
        for (s, i) in rx.iter() {
            assert_eq!(next[s as usize], i);
            next[s as usize] += 1;
            count += 1;
        }
        println!("round {round}: {count}");
    }
}
