//! Soak run: a million faults and a hundred thousand lock hand-offs across the cluster, with every
//! node's resident memory and open descriptors sampled after warm-up and at the end.
//!
//! ```text
//! cargo run --release --bin rthreads-soak -- [--faults 1000000] [--handoffs 100000]
//! ```
//! (4 local nodes unless `RTHREADS_NODES` says otherwise.) Exit code 1 if memory or descriptors
//! grew after warm-up, or a count is wrong. Shows its progress on stderr when that is a terminal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::ProgressBar;
use rthreads::sync::{Condvar, Mutex};
use rthreads_suite::progress;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "rthreads-soak",
    version,
    about = "Soak run: a million page faults and a hundred thousand lock hand-offs across the cluster",
    long_about = "Soak run: page faults (every node writes its own byte of the same pages in turn) \
                  and lock hand-offs (a mutex and a condition variable passed round the nodes), with \
                  every node's resident memory and open descriptors sampled after a warm-up of a \
                  tenth of each and at the end. Exit code 1 if memory or descriptors grew after \
                  the warm-up, or a count is wrong. Runs on RTHREADS_NODES local nodes (default \
                  4, at least 2)."
)]
struct Cli {
    /// Page faults to cause, over all nodes
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    faults: u64,
    /// Lock hand-offs between nodes
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    handoffs: u64,
}

/// Resident memory in KiB and open descriptors of the calling node's process.
fn usage() -> (u64, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    (rss, fds)
}

fn usage_everywhere() -> Vec<(u64, usize)> {
    (0..rthreads::node_count())
        .map(|n| rthreads::Builder::new().node(n).spawn(usage).unwrap().join().unwrap())
        .collect()
}

fn faults_so_far() -> u64 {
    rthreads::stats().iter().map(|s| s.read_faults + s.write_faults).sum()
}

const PAGES: usize = 256;

/// One round: every node writes its own byte of every page (so every write takes the page away
/// from the node that wrote it last).
fn fault_round(pages: &Arc<Vec<AtomicU8>>) {
    let n = rthreads::node_count();
    let hs: Vec<_> = (0..n)
        .map(|node| {
            let pages = Arc::clone(pages);
            rthreads::Builder::new()
                .node(node)
                .spawn(move || {
                    for round in 0..16 {
                        for p in 0..PAGES {
                            pages[p * 4096 + node].store(round as u8, Ordering::Relaxed);
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

/// Faults until `target` more have happened, advancing `bar` by the faults; returns (faults,
/// rounds).
fn fault_phase(pages: &Arc<Vec<AtomicU8>>, target: u64, bar: &ProgressBar) -> (u64, u64) {
    let start = faults_so_far();
    let mut rounds = 0;
    let mut done = 0;
    while done < target {
        fault_round(pages);
        rounds += 1;
        let now = faults_so_far() - start;
        bar.inc((now - done).min(target - done));
        done = now;
    }
    (done, rounds)
}

/// `count` lock hand-offs: node `i` may increment only when the count is `i` modulo the node
/// count, so every increment needs the lock (and the condition variable) to move to another node.
/// `bar` advances every 1 024 hand-offs.
fn handoff_phase(count: u64, bar: &ProgressBar) -> u64 {
    let n = rthreads::node_count();
    let state = Arc::new((Mutex::new(0u64), Condvar::new()));
    // What `bar` shows, published by the threads now and then (a shared page of its own).
    let shown = Arc::new(AtomicU64::new(0));
    let hs: Vec<_> = (0..n)
        .map(|node| {
            let (state, shown) = (Arc::clone(&state), Arc::clone(&shown));
            rthreads::Builder::new()
                .node(node)
                .spawn(move || {
                    let (lock, cv) = &*state;
                    let mut g = lock.lock().unwrap();
                    loop {
                        while *g < count && *g % n as u64 != node as u64 {
                            g = cv.wait(g).unwrap();
                        }
                        if *g >= count {
                            cv.notify_all();
                            return;
                        }
                        *g += 1;
                        if *g % 1024 == 0 {
                            shown.store(*g, Ordering::Relaxed);
                        }
                        cv.notify_all();
                    }
                })
                .unwrap()
        })
        .collect();
    let mut was = 0;
    while !hs.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        let now = shown.load(Ordering::Relaxed);
        bar.inc(now.saturating_sub(was));
        was = was.max(now);
    }
    for h in hs {
        h.join().unwrap();
    }
    let g = state.0.lock().unwrap();
    bar.inc(g.saturating_sub(was));
    *g
}

#[rthreads::main]
fn main() {
    let cli = Cli::parse();
    let n = rthreads::node_count();
    if n < 2 {
        eprintln!("the soak run needs at least 2 nodes");
        std::process::exit(2);
    }
    let (target_faults, target_handoffs) = (cli.faults, cli.handoffs);
    let pages: Arc<Vec<AtomicU8>> = Arc::new((0..PAGES * 4096).map(|_| AtomicU8::new(0)).collect());

    // Warm-up: a tenth of each, so that pools, tables and caches reach their working size.
    let bar = progress::bar(target_faults / 10, "faults (warm-up)");
    let t = Instant::now();
    let (mut faults, mut rounds) = fault_phase(&pages, target_faults / 10, &bar);
    let mut fault_time = t.elapsed();
    bar.finish_and_clear();
    let bar = progress::bar(target_handoffs / 10, "lock hand-offs (warm-up)");
    let t = Instant::now();
    let mut handoffs = handoff_phase(target_handoffs / 10, &bar);
    let mut handoff_time = t.elapsed();
    bar.finish_and_clear();
    let warm_usage = usage_everywhere();
    let warm_faults = faults;

    let bar = progress::bar(target_faults - faults, "faults");
    let t = Instant::now();
    let (f, r) = fault_phase(&pages, target_faults - faults, &bar);
    (faults, rounds) = (faults + f, rounds + r);
    fault_time += t.elapsed();
    bar.finish_and_clear();
    let bar = progress::bar(target_handoffs - handoffs, "lock hand-offs");
    let t = Instant::now();
    handoffs += handoff_phase(target_handoffs - handoffs, &bar);
    handoff_time += t.elapsed();
    bar.finish_and_clear();
    let end = usage_everywhere();

    println!("rthreads soak run, {n} nodes");
    println!(
        "faults: {faults} in {rounds} rounds, {:.1} s ({:.1} us each, all nodes together)",
        fault_time.as_secs_f64(),
        fault_time.as_secs_f64() * 1e6 / faults as f64
    );
    println!(
        "lock hand-offs: {handoffs} in {:.1} s ({:.1} us each)",
        handoff_time.as_secs_f64(),
        handoff_time.as_secs_f64() * 1e6 / handoffs.max(1) as f64
    );
    println!(
        "node  rss after warm-up ({warm_faults} faults, {} hand-offs)  rss at end  fds after warm-up  fds at end",
        target_handoffs / 10
    );
    let mut flat = true;
    for (i, (w, e)) in warm_usage.iter().zip(&end).enumerate() {
        // Flat: within 10 % (and 2 MiB) of the warm-up figure, and not one descriptor more.
        let grew = e.0 > w.0 + w.0 / 10 + 2048 || e.1 > w.1;
        flat &= !grew;
        println!(
            "{i:>4}  {:>43} KiB  {:>8} KiB  {:>17}  {:>10}{}",
            w.0,
            e.0,
            w.1,
            e.1,
            if grew { "  GREW" } else { "" }
        );
    }
    let ok = flat && faults >= target_faults && handoffs == target_handoffs;
    println!("verdict: {}", if ok { "flat, counts right" } else { "FAILED" });
    if !ok {
        std::process::exit(1);
    }
}
