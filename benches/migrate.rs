//! Migration latency against the raw loopback round trip and a remote spawn + join, side by side
//! in one run.
//!
//! `cargo bench --bench migrate` (3 local nodes). Each round measures, in turn:
//! - **raw RTT**: a 16-byte request answered with 4 KiB over a blocking TCP loopback connection
//!   (two plain threads; the transport, minus the runtime);
//! - **remote spawn + join**: node 0 spawns a trivial thread on node 1 and joins it;
//! - **migrate there and back**: a thread on node 0 calls `migrate(1)` then `migrate(0)`, with 0, 64
//!   or 256 KiB of live stack (an array in the calling frame, one byte of each page written after each
//!   move, so those pages follow it on demand). Half the round trip is one move.
//!
//! It also prints the live stack bytes each move carried and the pages the node received, from
//! the runtime's statistics.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rthreads_suite::bench::{header, raw_rtt, row, us};

const PAGE: usize = 4096;

fn spawn_join(n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            black_box(rthreads::Builder::new().node(1).spawn(|| 1u32).unwrap().join().unwrap());
            t.elapsed()
        })
        .collect()
}

/// `n` round trips 0 -> 1 -> 0 with `BYTES` bytes of live stack written after every move.
fn round_trips<const BYTES: usize>(n: usize) -> Vec<Duration> {
    rthreads::Builder::new()
        .node(0)
        .spawn(move || {
            let mut block = [0u8; BYTES];
            for (i, b) in block.iter_mut().enumerate() {
                *b = i as u8;
            }
            (0..n)
                .map(|_| {
                    let t = Instant::now();
                    rthreads::migrate(1).unwrap();
                    for p in block.chunks_mut(PAGE) {
                        p[0] = black_box(p[0]).wrapping_add(1);
                    }
                    rthreads::migrate(0).unwrap();
                    for p in block.chunks_mut(PAGE) {
                        p[0] = black_box(p[0]).wrapping_add(1);
                    }
                    t.elapsed()
                })
                .collect()
        })
        .unwrap()
        .join()
        .unwrap()
}

#[rthreads::main(nodes = 3)]
fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let per = 100;
    let (mut rtt, mut sj, mut m0, mut m64, mut m256) = (vec![], vec![], vec![], vec![], vec![]);
    let before = rthreads::stats();
    for _ in 0..rounds {
        rtt.extend(raw_rtt(per, PAGE));
        sj.extend(spawn_join(per));
        m0.extend(round_trips::<0>(per));
        m64.extend(round_trips::<{ 64 << 10 }>(per / 2));
        m256.extend(round_trips::<{ 256 << 10 }>(per / 4));
    }
    let after = rthreads::stats();
    header();
    let medians = [
        row("raw loopback RTT (16 B -> 4 KiB)", &mut rtt),
        row("remote spawn + join", &mut sj),
        row("migrate 0->1->0, no stack array", &mut m0),
        row("migrate 0->1->0, 64 KiB stack array", &mut m64),
        row("migrate 0->1->0, 256 KiB stack array", &mut m256),
    ];
    let moves: u64 = after.iter().zip(&before).map(|(a, b)| a.threads_moved_out - b.threads_moved_out).sum();
    let stack: u64 =
        after.iter().zip(&before).map(|(a, b)| a.stack_bytes_arrived - b.stack_bytes_arrived).sum();
    let pages: u64 = after.iter().zip(&before).map(|(a, b)| a.pages_received - b.pages_received).sum();
    println!("moves: {moves}, live stack carried per move: {} bytes (mean)", stack / moves.max(1));
    println!(
        "pages received by all nodes during the run: {pages} ({:.1} per move)",
        pages as f64 / moves.max(1) as f64
    );
    println!("ratio one move (no array) / raw RTT (medians): {:.2}", us(medians[2]) / 2.0 / us(medians[0]));
    println!(
        "ratio one move (no array) / remote spawn + join (medians): {:.2}",
        us(medians[2]) / 2.0 / us(medians[1])
    );
}
