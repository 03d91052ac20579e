//! One cluster of `rthreads-scale` (issue 18): measures, inside one run on `RTHREADS_NODES`
//! nodes, what a cluster of that size costs, and prints one `RESULT` line of `key=value` pairs:
//!
//! - `startup_s`: from the runner's launch (`SCALE_T0`, nanoseconds since the Unix epoch) to the
//!   first line of `main`;
//! - `idle_rss_kib_max`, `idle_rss_kib_median`: resident memory of the nodes other than node 0,
//!   right after start-up (read by a thread on each node from `/proc/self/status`);
//! - `idle_cpu_pct`: how busy the machine's CPUs were (all of them, in % of their time) while the
//!   cluster idled for `SCALE_IDLE_MS` (1000) right after start-up, from `/proc/stat`: on a
//!   machine that does nothing else, what idle nodes cost it;
//! - `barrier_us`: one barrier of one thread per node, the mean of `SCALE_BARRIERS` (20);
//! - `spawn_join_us`: a trivial thread spawned on node 1 and joined, the mean of `SCALE_SPAWNS`
//!   (200);
//! - `hello_s`, `hello_ok`: `SCALE_THREADS` (1024) threads spread over the nodes, each adding
//!   its number to a shared counter; the sum must be exact;
//! - `gib_ok`: a thread on the last node could allocate 1 GiB (first and last page touched);
//! - `end_ns`: when `main` returns (the runner measures shutdown from it).
//!
//! `rthreads-scale` (the runner) starts it once per node count.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rthreads::sync::atomic::{AtomicU64, Ordering};
use rthreads::sync::{Arc, Barrier};

/// Nanoseconds since the Unix epoch.
fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// This process's resident memory now, in KiB (`VmRSS`).
fn rss_kib() -> u64 {
    rthreads_suite::bench::status_kib("VmRSS")
}

/// The machine's CPU time so far, in clock ticks: (busy, total), from the first line of
/// `/proc/stat` (busy: user, nice, system, irq, softirq, steal; total adds idle and iowait).
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    Some((busy, busy + get(3) + get(4)))
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[rthreads::main]
fn main() {
    let entered = now_ns();
    let t0: u128 = std::env::var("SCALE_T0").ok().and_then(|v| v.parse().ok()).unwrap_or(entered);
    let startup = (entered.saturating_sub(t0)) as f64 / 1e9;
    let nodes = rthreads::node_count();

    // Idle memory: every node but node 0 (which runs `main`), before any work.
    let mut rss: Vec<u64> = (1..nodes)
        .map(|n| rthreads::Builder::new().node(n).spawn(rss_kib))
        .collect::<Result<Vec<_>, _>>()
        .expect("spawn")
        .into_iter()
        .map(|h| h.join().expect("join"))
        .collect();
    rss.sort_unstable();
    let (rss_max, rss_median) =
        (rss.last().copied().unwrap_or(0), rss.get(rss.len() / 2).copied().unwrap_or(0));

    // What idle nodes cost the machine's CPUs. The first 100 ms let the last replies settle.
    let idle_ms = setting("SCALE_IDLE_MS", 1000);
    std::thread::sleep(std::time::Duration::from_millis(idle_ms.min(100)));
    let before = cpu_ticks();
    std::thread::sleep(std::time::Duration::from_millis(idle_ms));
    let after = cpu_ticks();
    let idle_cpu_pct = match (before, after) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            format!("{:.1}", 100.0 * (b1 - b0) as f64 / (t1 - t0) as f64)
        }
        _ => "-".to_owned(),
    };

    // A barrier of one thread per node.
    let rounds = setting("SCALE_BARRIERS", 20);
    let barrier = Arc::new(Barrier::new(nodes));
    let handles: Vec<_> = (0..nodes)
        .map(|n| {
            let b = Arc::clone(&barrier);
            rthreads::Builder::new()
                .node(n)
                .spawn(move || {
                    b.wait();
                    let t = Instant::now();
                    for _ in 0..rounds {
                        b.wait();
                    }
                    t.elapsed()
                })
                .expect("spawn")
        })
        .collect();
    let barrier_us =
        handles.into_iter().map(|h| h.join().expect("join")).max().unwrap_or_default().as_secs_f64() * 1e6
            / rounds as f64;

    // Remote spawn + join.
    let spawns = setting("SCALE_SPAWNS", 200);
    let target = 1 % nodes;
    let t = Instant::now();
    for i in 0..spawns {
        let h = rthreads::Builder::new().node(target).spawn(move || i + 1).expect("spawn");
        assert_eq!(h.join().expect("join"), i + 1);
    }
    let spawn_join_us = t.elapsed().as_secs_f64() * 1e6 / spawns as f64;

    // Hello from many threads, spread over the nodes, with a shared counter.
    let threads = setting("SCALE_THREADS", 1024);
    let counter = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let c = Arc::clone(&counter);
            rthreads::spawn(move || {
                c.fetch_add(i, Ordering::Relaxed);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("join");
    }
    let hello = t.elapsed().as_secs_f64();
    let hello_ok = counter.load(Ordering::Relaxed) == threads * (threads.saturating_sub(1)) / 2;

    // A gibibyte allocated on the last node (every node's share of the space is the same size);
    // its first and last pages touched.
    let gib_ok = rthreads::Builder::new()
        .node(nodes - 1)
        .spawn(|| {
            let mut v: Vec<u8> = Vec::new();
            if v.try_reserve_exact(1 << 30).is_err() {
                return false;
            }
            let spare = v.spare_capacity_mut();
            let last = spare.len() - 1;
            spare[0].write(1);
            spare[last].write(1);
            true
        })
        .expect("spawn")
        .join()
        .expect("join");

    println!(
        "RESULT nodes={nodes} startup_s={startup:.4} idle_rss_kib_max={rss_max} \
         idle_rss_kib_median={rss_median} idle_cpu_pct={idle_cpu_pct} barrier_us={barrier_us:.1} spawn_join_us={spawn_join_us:.1} \
         hello_threads={threads} hello_s={hello:.4} hello_ok={hello_ok} gib_ok={gib_ok} end_ns={}",
        now_ns()
    );
}
