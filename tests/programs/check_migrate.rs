//! Issue 8, acceptance 2: a migrating thread's locals, references into its own stack and its heap
//! data are intact after moving (twice and more); what cannot move fails loudly.
use std::hint::black_box;

/// Recurses `depth` frames, each with a local that points at the previous frame's, moves at the
/// bottom, and checks every frame on the way back up (on the new node).
fn deep(depth: u32, parent: Option<&u64>, to: usize) -> u64 {
    let mine = u64::from(depth) * 1000 + parent.map_or(0, |p| *p % 1000);
    if depth == 0 {
        rthreads::migrate(to).unwrap();
        return mine;
    }
    let below = deep(depth - 1, Some(&mine), to);
    assert_eq!(parent.map_or(0, |p| *p % 1000), mine % 1000, "frame {depth} changed");
    below + black_box(mine)
}

fn journey() -> String {
    let start = rthreads::current_node();
    let name = std::thread::current().name().map(str::to_owned);
    // Locals, a reference to one of them, a big stack array, heap data.
    let mut total: u64 = 0;
    let total_ref = &mut total;
    let mut block = [0u32; 16 * 1024]; // 64 KiB on the stack
    for (i, b) in block.iter_mut().enumerate() {
        *b = i as u32;
    }
    let heap: Vec<String> = (0..1000).map(|i| format!("item {i}")).collect();
    let boxed = Box::new(0xfeed_u64);
    let mut trail = vec![start];
    for hop in 1..=3 {
        let to = (start + hop) % rthreads::node_count();
        rthreads::migrate(to).unwrap();
        trail.push(rthreads::current_node());
        *total_ref += block.iter().map(|&b| u64::from(b)).sum::<u64>();
        block[hop] += 1;
    }
    let deep_sum = deep(50, None, (start + 1) % rthreads::node_count());
    trail.push(rthreads::current_node());
    let intact = heap.iter().enumerate().all(|(i, s)| *s == format!("item {i}"))
        && *boxed == 0xfeed
        && block[1..=3] == [2, 3, 4]
        && total == 3 * (16 * 1024 * (16 * 1024 - 1) / 2) + 1 + 2
        && deep_sum == (0..=50u64).map(|d| d * 1000).sum::<u64>();
    let same_name = std::thread::current().name().map(str::to_owned) == name;
    format!("trail {trail:?}, intact: {intact}, name kept: {same_name}")
}

#[rthreads::main(nodes = 3)]
fn main() {
    let h = rthreads::Builder::new().name("traveller".into()).node(0).spawn(journey).unwrap();
    println!("thread: {}", h.join().unwrap());
    let h = rthreads::Builder::new().node(2).spawn(journey).unwrap();
    println!("thread from node 2: {}", h.join().unwrap());

    // main itself moves and comes back.
    let here = 7u64;
    rthreads::migrate(1).unwrap();
    let there = rthreads::current_node();
    rthreads::migrate(0).unwrap();
    println!("main went to node {there} and back to {} with {here}", rthreads::current_node());

    // A panic after a move comes back to join.
    let h = rthreads::spawn(|| {
        rthreads::migrate(1).unwrap();
        panic!("boom after moving to node {}", rthreads::current_node());
    });
    let err = h.join().unwrap_err();
    println!("panic after a move: {:?}", err.downcast_ref::<String>());

    // What cannot move says so.
    let e = rthreads::migrate(99).unwrap_err();
    println!("to node 99: {:?}", e.kind());
    let e = std::thread::spawn(|| rthreads::migrate(1).unwrap_err()).join().unwrap();
    println!("from a std thread: {:?}: {e}", e.kind());

    // Threads moving while others work beside them: the counts stay exact.
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let hs: Vec<_> = (0..6)
        .map(|i| {
            let c = counter.clone();
            rthreads::spawn(move || {
                for k in 0..20 {
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    rthreads::migrate((i + k) % rthreads::node_count()).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    println!("counter after 120 moves: {}", counter.load(std::sync::atomic::Ordering::SeqCst));
}
