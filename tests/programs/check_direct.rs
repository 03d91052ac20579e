//! Direct page reads (`RTHREADS_DIRECT_READS`): a thread that faults on a page homed elsewhere
//! fetches it itself. Checks that such reads happen (or not, when turned off), that they return
//! what was written, and that they stay coherent while the home keeps writing the pages: every
//! reader sees each page's counter only grow, and the last value at the end.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rthreads::sync::Arc;

/// One counter per page (a page holds 512 of these words).
const WORDS: usize = 512;
const PAGES: usize = 48;
const ROUNDS: u64 = 150;
/// Reads the readers make, together, while the home writes.
const READS: u64 = 6000;

/// `check_direct forever` (3 nodes): pages homed at node 2, written there without end, read
/// scattered by two threads of node 1 without end (direct reads out most of the time); prints
/// `running`. For a test that kills node 2 under them.
fn forever() -> ! {
    let data: Arc<Vec<AtomicU64>> = rthreads::Builder::new()
        .node(2)
        .spawn(|| Arc::new((0..PAGES * WORDS).map(|_| AtomicU64::new(0)).collect::<Vec<_>>()))
        .unwrap()
        .join()
        .unwrap();
    let d = Arc::clone(&data);
    let _writer = rthreads::Builder::new().node(2).spawn(move || {
        loop {
            for c in d.iter().step_by(WORDS) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let _readers: Vec<_> = (0..2u64)
        .map(|r| {
            let d = Arc::clone(&data);
            rthreads::Builder::new().node(1).spawn(move || {
                let mut x = 0x2545_F491_4F6C_DD1Du64 ^ r;
                loop {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    std::hint::black_box(d[(x % PAGES as u64) as usize * WORDS].load(Ordering::Relaxed));
                }
            })
        })
        .collect();
    println!("running");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

#[rthreads::main]
fn main() {
    if std::env::args().nth(1).as_deref() == Some("forever") {
        forever();
    }
    let sc = std::env::var("RTHREADS_PROTOCOL").map_or(true, |p| p != "lrc");
    let before = rthreads::stats();
    // Pages written on node 0 (their home), then read one word each by a thread on node 1, last
    // page first: no read-ahead serves these, each is a fault of its own.
    let data: Arc<Vec<AtomicU64>> = Arc::new((0..PAGES * WORDS).map(|i| AtomicU64::new(i as u64)).collect());
    let d = Arc::clone(&data);
    let ok = rthreads::Builder::new()
        .node(1)
        .spawn(move || (0..PAGES).rev().all(|p| d[p * WORDS].load(Ordering::Relaxed) == (p * WORDS) as u64))
        .unwrap()
        .join()
        .unwrap();
    assert!(ok, "a page read on node 1 did not hold what node 0 wrote");
    let after = rthreads::stats();
    let direct = after[1].direct_reads - before[1].direct_reads;
    println!("direct reads on node 1: {direct}");

    // The home writes every page round after round while two threads of node 1 read them in a
    // scattered order: a read copy fetched directly races the invalidations of the next round.
    for c in data.iter().step_by(WORDS) {
        c.store(0, Ordering::Relaxed);
    }
    let done = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let (d, done, progress) = (Arc::clone(&data), Arc::clone(&done), Arc::clone(&progress));
            rthreads::Builder::new()
                .node(1)
                .spawn(move || {
                    let mut seen = [0u64; PAGES];
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ r;
                    let mut reads = 0u64;
                    while !done.load(Ordering::Relaxed) || reads < 1000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let p = (x % PAGES as u64) as usize;
                        let v = d[p * WORDS].load(Ordering::Relaxed);
                        if sc {
                            assert!(v >= seen[p], "page {p} went back from {} to {v}", seen[p]);
                        }
                        seen[p] = v;
                        reads += 1;
                        if reads.is_multiple_of(100) {
                            progress.fetch_add(100, Ordering::Relaxed);
                        }
                    }
                    reads
                })
                .unwrap()
        })
        .collect();
    // At least ROUNDS rounds, and on until the readers have read a while beside them.
    let mut rounds = 0;
    while rounds < ROUNDS || progress.load(Ordering::Relaxed) < READS {
        for c in data.iter().step_by(WORDS) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        rounds += 1;
    }
    done.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
    let d = Arc::clone(&data);
    let last = rthreads::Builder::new()
        .node(1)
        .spawn(move || (0..PAGES).map(|p| d[p * WORDS].load(Ordering::SeqCst)).collect::<Vec<_>>())
        .unwrap()
        .join()
        .unwrap();
    assert!(last.iter().all(|&v| v == rounds), "final values {last:?}, expected {rounds} each");
    let end = rthreads::stats();
    println!(
        "reads while writing: {reads} over {rounds} rounds; direct reads in all: {}",
        end[1].direct_reads - before[1].direct_reads
    );
    println!("direct ok");
}
