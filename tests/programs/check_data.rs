//! Acceptance 2: an 8 MiB `Vec<u64>` built on node 0 and summed in slices on every node; a `Vec`,
//! `String` and `HashMap` built in remote threads come back intact through `join`.
use std::collections::HashMap;
use std::sync::Arc;

#[rthreads::main]
fn main() {
    let nodes = rthreads::node_count();
    let data: Arc<Vec<u64>> = Arc::new((0..1u64 << 20).map(|x| x * 3 + 1).collect());
    let local: u64 = data.iter().sum();
    let parts = nodes * 4;
    let chunk = data.len() / parts;
    let handles: Vec<_> = (0..parts)
        .map(|i| {
            let d = Arc::clone(&data);
            rthreads::spawn(move || {
                (rthreads::current_node(), d[i * chunk..(i + 1) * chunk].iter().sum::<u64>())
            })
        })
        .collect();
    let mut remote = 0;
    let mut on = vec![0; nodes];
    for h in handles {
        let (node, s) = h.join().unwrap();
        on[node] += 1;
        remote += s;
    }
    println!("slices per node: {on:?}");
    assert!(on.iter().all(|&n| n > 0), "every node summed a slice");
    assert_eq!(remote, local);
    println!("sum ok: {local}");

    // The space is 64 GiB of addresses on every node, reserved, not committed: resident memory
    // follows what each node touched.
    let rss: Vec<u64> = (0..nodes)
        .map(|n| rthreads::Builder::new().node(n).spawn(resident_kib).unwrap().join().unwrap())
        .collect();
    println!("resident KiB per node: {rss:?}");
    assert!(rss.iter().all(|&r| r < 256 * 1024), "resident memory should follow use: {rss:?}");

    let built: Vec<_> = (0..nodes)
        .map(|n| {
            rthreads::Builder::new()
                .node(n)
                .spawn(move || {
                    let v: Vec<u32> = (0..100_000).map(|x| x ^ n as u32).collect();
                    let s = format!("made on node {} with {} items", rthreads::current_node(), v.len());
                    let m: HashMap<String, usize> = (0..1000).map(|k| (format!("key{k}"), k * n)).collect();
                    (v, s, m)
                })
                .unwrap()
        })
        .collect();
    for (n, h) in built.into_iter().enumerate() {
        let (v, s, m) = h.join().unwrap();
        assert_eq!(v.len(), 100_000);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32 ^ n as u32));
        assert_eq!(s, format!("made on node {n} with 100000 items"));
        assert_eq!(m.len(), 1000);
        assert!((0..1000).all(|k| m[&format!("key{k}")] == k * n));
        println!("{s}: intact");
    }
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
