//! The cost of runtime calls made on a thread's own node, where issue 14 added a switch to the
//! carrier's private stack around every runtime lock (`rthreads/src/private.rs`): allocation and
//! free in the shared heap, `Mutex` lock+unlock (managed here, and managed elsewhere but kept here),
//! a channel send+receive on one node, and a local spawn+join. Run from `main` (a fiber), on 2 nodes.
//! Prints nanoseconds per operation, the best of `--rounds` (or `BENCH_ROUNDS`, default 5) rounds.
//!
//! `cargo run --release --bin bench_calls [-- --rounds N]`

use std::time::Instant;

use clap::Parser;
use rthreads::sync::{Arc, Mutex, mpsc};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "bench_calls",
    version,
    about = "The cost of runtime calls made on a thread's own node, in nanoseconds per operation",
    long_about = "The cost of runtime calls made on a thread's own node: the switch to a private \
                  stack, allocation and free in the shared heap, Mutex lock+unlock (managed here, \
                  and managed elsewhere but kept here), a channel send+receive on one node, and a \
                  local spawn+join. Runs from main on node 0 of 2 nodes and prints nanoseconds per \
                  operation, the best of --rounds rounds."
)]
struct Cli {
    /// Rounds of each measurement (the best is printed)
    #[arg(long, value_name = "N", env = "BENCH_ROUNDS", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
}

fn best(rounds: usize, n: u64, mut f: impl FnMut(u64)) -> f64 {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f(n);
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

#[rthreads::main(nodes = 2)]
fn main() {
    let rounds = usize::from(Cli::parse().rounds);
    let private = best(rounds, 1_000_000, |n| {
        std::hint::black_box(rthreads::__private::private_calls(n, std::hint::black_box));
    });
    let alloc = best(rounds, 1_000_000, |n| {
        for i in 0..n {
            std::hint::black_box(Box::new(i));
        }
    });
    let vec = best(rounds, 200_000, |n| {
        for i in 0..n {
            let v: Vec<u64> = Vec::with_capacity(64 + (i % 64) as usize);
            std::hint::black_box(v);
        }
    });
    let local = Arc::new(Mutex::new(0u64));
    let here = best(rounds, 1_000_000, |n| {
        for _ in 0..n {
            *local.lock().unwrap() += 1;
        }
    });
    // A mutex allocated by node 1 is managed there; after the first lock node 0 keeps it.
    let remote =
        rthreads::Builder::new().node(1).spawn(|| Arc::new(Mutex::new(0u64))).unwrap().join().unwrap();
    let kept = best(rounds, 1_000_000, |n| {
        for _ in 0..n {
            *remote.lock().unwrap() += 1;
        }
    });
    let (tx, rx) = mpsc::channel::<u64>();
    let chan = best(rounds, 200_000, |n| {
        for i in 0..n {
            tx.send(i).unwrap();
            std::hint::black_box(rx.recv().unwrap());
        }
    });
    let spawn = best(rounds, 2_000, |n| {
        for i in 0..n {
            let h = rthreads::Builder::new().node(0).spawn(move || i).unwrap();
            std::hint::black_box(h.join().unwrap());
        }
    });
    println!("ns per operation (best of {rounds} rounds), main on node 0 of 2:");
    println!("  switch to the private stack    {private:>9.1}");
    println!("  Box::new + drop (8 B)          {alloc:>9.1}");
    println!("  Vec::with_capacity + drop      {vec:>9.1}");
    println!("  Mutex lock+unlock, managed here {here:>8.1}");
    println!("  Mutex lock+unlock, kept here   {kept:>9.1}");
    println!("  channel send+recv, one node    {chan:>9.1}");
    println!("  spawn+join on this node        {spawn:>9.1}");
}
