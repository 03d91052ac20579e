//! Runs one benchmark kernel once and prints one `RESULT` line: what `rthreads-bench` (the runner)
//! launches for each configuration.
//!
//! `bench_worker <kernel> <std|cluster> <small|medium|large> <threads-per-node>` (`--help` says
//! more). In `std` mode the kernel runs on `std::thread` in node 0's process with
//! `threads-per-node` threads (the other nodes idle); in `cluster` mode on `RTHREADS_NODES` nodes
//! with `threads-per-node` threads per node.

use std::time::Instant;

use clap::{Parser, ValueEnum};
use rthreads_suite::kernels;
use rthreads_suite::par::{self, Mode, Size};

/// Peak resident memory of this process, in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    rthreads_suite::bench::status_kib("VmHWM")
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "bench_worker",
    version,
    about = "Run one benchmark kernel once and print one RESULT line (what rthreads-bench runs)",
    long_about = "Run one benchmark kernel once and print one RESULT line: wall time, checksum and \
                  every node's counters, as key=value pairs. rthreads-bench, rthreads-protocols and \
                  rthreads-chaos run it. In std mode the kernel runs on std::thread in node 0's \
                  process with THREADS threads (the other nodes idle); in cluster mode on \
                  RTHREADS_NODES nodes with THREADS threads per node. BENCH_REPEAT=k (or \
                  RTHREADS_BENCH_REPEAT, which `rthreads run --hosts` passes on) runs the kernel \
                  k times."
)]
struct Cli {
    /// The kernel (`rthreads-bench --list` lists them)
    kernel: String,
    /// On std::thread in one process, or on rthreads over the cluster
    #[arg(value_enum)]
    mode: WorkerMode,
    /// Problem size
    #[arg(value_enum)]
    size: Size,
    /// Threads (std) or threads per node (cluster)
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

/// Where the kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WorkerMode {
    /// `std::thread` in node 0's process
    Std,
    /// rthreads, over every node
    Cluster,
}

#[rthreads::main]
fn main() {
    let cli = Cli::parse();
    let Some(kernel) = kernels::all().into_iter().find(|k| k.name == cli.kernel) else {
        eprintln!("bench_worker: unknown kernel {} (rthreads-bench --list lists them)", cli.kernel);
        std::process::exit(2);
    };
    let mode = match cli.mode {
        WorkerMode::Std => Mode::Std,
        WorkerMode::Cluster => Mode::Cluster,
    };
    let (size, threads) = (cli.size, usize::from(cli.threads));
    let nodes = if mode == Mode::Std { 1 } else { rthreads::node_count() };
    par::set_mode(mode);
    par::set_workers(threads * nodes);
    let before = rthreads::stats();
    let t = Instant::now();
    // `BENCH_REPEAT=k` (or `RTHREADS_BENCH_REPEAT`, which `rthreads run --hosts` passes on) runs
    // the kernel k times: the chaos runner needs runs that last.
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .or_else(|_| std::env::var("RTHREADS_BENCH_REPEAT"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut checksum = (kernel.run)(size);
    for _ in 1..repeat {
        checksum = (kernel.run)(size);
    }
    let wall = t.elapsed();
    let after = rthreads::stats();
    let rss: Vec<u64> = (0..rthreads::node_count())
        .map(|n| rthreads::Builder::new().node(n).spawn(peak_rss_kib).unwrap().join().unwrap())
        .collect();
    let mut line = format!(
        "RESULT kernel={} mode={} nodes={nodes} threads={} wall_s={:.6} checksum={checksum}",
        kernel.name,
        if mode == Mode::Std { "std" } else { "cluster" },
        threads * nodes,
        wall.as_secs_f64()
    );
    for (n, (a, b)) in after.iter().zip(&before).enumerate().take(nodes) {
        let d = |f: fn(&rthreads::NodeStats) -> u64| f(a) - f(b);
        line += &format!(
            " n{n}.read_faults={} n{n}.write_faults={} n{n}.msgs={} n{n}.bytes={} n{n}.locks={} \
             n{n}.barriers={} n{n}.fault_wait_s={:.6} n{n}.sync_wait_s={:.6} n{n}.rss_kib={}",
            d(|s| s.read_faults),
            d(|s| s.write_faults),
            d(|s| s.messages_sent()),
            d(|s| s.bytes_sent()),
            d(|s| s.lock_acquisitions),
            d(|s| s.barrier_waits),
            (a.fault_wait - b.fault_wait).as_secs_f64(),
            (a.sync_wait.saturating_sub(b.sync_wait)).as_secs_f64(),
            rss[n]
        );
    }
    println!("{line}");
}
