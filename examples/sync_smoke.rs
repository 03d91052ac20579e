use rthreads::sync::mpsc;
use rthreads::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::Instant;

#[rthreads::main]
fn main() {
    let n = rthreads::node_count();
    let m = Arc::new(Mutex::new(0u64));
    let t = Instant::now();
    let hs: Vec<_> = (0..n * 4)
        .map(|i| {
            let m = Arc::clone(&m);
            rthreads::Builder::new()
                .node(i % n)
                .spawn(move || {
                    for _ in 0..2000 {
                        *m.lock().unwrap() += 1;
                    }
                })
                .unwrap()
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    println!("mutex total {} in {:?}", *m.lock().unwrap(), t.elapsed());

    let b = Arc::new(Barrier::new(n * 2));
    let t = Instant::now();
    let hs: Vec<_> = (0..n * 2)
        .map(|i| {
            let b = Arc::clone(&b);
            rthreads::Builder::new()
                .node(i % n)
                .spawn(move || (0..50).filter(|_| b.wait().is_leader()).count())
                .unwrap()
        })
        .collect();
    let leaders: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
    println!("barrier leaders {leaders} in {:?}", t.elapsed());

    let (tx, rx) = mpsc::channel();
    let t = Instant::now();
    for s in 0..n {
        let tx = tx.clone();
        rthreads::Builder::new()
            .node(s)
            .spawn(move || {
                for i in 0..50_000u32 {
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
    println!("mpsc {count} in {:?}", t.elapsed());

    let pair = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
    let p2 = Arc::clone(&pair);
    let c = rthreads::Builder::new()
        .node(1)
        .spawn(move || {
            let (l, cv) = &*p2;
            let mut got = 0;
            while got < 1000 {
                let mut q = cv
                    .wait_while(l.lock().unwrap(), |q: &mut Vec<u32>| q.is_empty())
                    .unwrap();
                got += q.len();
                q.clear();
            }
            got
        })
        .unwrap();
    for i in 0..1000u32 {
        let (l, cv) = &*pair;
        l.lock().unwrap().push(i);
        cv.notify_one();
    }
    println!("condvar consumer got {}", c.join().unwrap());
}
