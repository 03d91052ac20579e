//! Pages follow their writer under release consistency: an array built by `main` (homed on node
//! 0) and written round after round by a thread on node 1, with a release (an unlock) after each
//! round, is handed over to node 1 after two rounds (`RTHREADS_OWN_AFTER`), so node 1's later
//! releases send nothing for it; read back on node 0 afterwards, it holds the last round's
//! values. Prints the release-consistency messages node 1 sent.
use rthreads::sync::{Arc, Mutex};

const PAGES: usize = 64;
const ROUNDS: u64 = 20;

#[rthreads::main(protocol = "lrc")]
fn main() {
    let mut data = vec![0u64; PAGES * 512];
    let lock = Arc::new(Mutex::new(0u64));
    let before = rthreads::stats();
    rthreads::scope(|s| {
        let (data, lock) = (&mut data, &lock);
        rthreads::Builder::new()
            .node(1)
            .spawn_scoped(s, move || {
                for round in 1..=ROUNDS {
                    for (i, x) in data.iter_mut().enumerate() {
                        *x = round * 1_000_000 + i as u64;
                    }
                    *lock.lock().unwrap() += 1;
                }
            })
            .unwrap();
    });
    assert_eq!(*lock.lock().unwrap(), ROUNDS);
    for (i, &x) in data.iter().enumerate() {
        assert_eq!(x, ROUNDS * 1_000_000 + i as u64, "element {i}");
    }
    let after = rthreads::stats();
    let sent = |s: &rthreads::NodeStats| {
        s.by_kind.iter().filter(|k| k.kind == "release consistency").map(|k| k.sent).sum::<u64>()
    };
    println!("node 1 sent {} release-consistency messages", sent(&after[1]) - sent(&before[1]));
    println!("own ok");
}
