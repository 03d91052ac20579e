//! Remote fault latency against the raw loopback round trip, side by side in one run.
//!
//! `cargo bench --bench faults` (4 local nodes; nodes 0, 1 and 2 take part). Each round measures,
//! in turn:
//! - **raw RTT**: a 16-byte request answered with 4 KiB over a blocking TCP loopback connection
//!   with `TCP_NODELAY` (two plain threads; the transport the DSM uses, minus the DSM);
//! - **read fault**: a thread on node 1 loads one byte from a page last written on node 0 (its
//!   home): trap, request, page sent, installed, access opened (pages in descending order, so
//!   that no read-ahead serves one, and each opened page joins its opened neighbour in one kernel
//!   mapping, as in a scan: skipping every other page instead would leave alternating protections,
//!   one mapping per page, and every `mprotect` would split mappings: 2–8 µs more per fault here);
//! - **write fault, 1 reader**: a thread on node 1 stores to a page held read-only by node 2 and
//!   the home (node 0): the home invalidates both copies, then grants write access with the bytes;
//! - **spawn+join**: node 0 spawns a trivial thread on node 1 and joins it;
//! - **cold sequential read**: a thread on node 1 reads one byte of each of 4096 pages homed at
//!   node 0, in order (what read-ahead is for): the time per page, once per round.
//!
//! `BENCH_ONLY=reads` runs the first two only (for a profiler). Medians and 90th percentiles over all rounds, the ratio read fault / raw RTT, and the CPU time a
//! read fault costs each of the three threads it involves (from the scheduler's own accounting).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rthreads_suite::bench::{header, raw_rtt_cpu, row, schedstat_ns, us};

const PAGE: usize = 4096;

/// Pages homed at node 0 and written there last.
fn fresh_pages(n: usize) -> Arc<Vec<u8>> {
    let mut v = vec![0u8; (n + 1) * PAGE];
    for p in 0..=n {
        v[p * PAGE] = p as u8;
    }
    Arc::new(v)
}

fn page_addr(v: &[u8], i: usize) -> *const u8 {
    let base = (v.as_ptr() as usize).next_multiple_of(PAGE);
    (base + i * PAGE) as *const u8
}

fn on<T: Send + 'static>(node: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    rthreads::Builder::new().node(node).spawn(f).unwrap().join().unwrap()
}

/// CPU time, in nanoseconds, used so far by this process's service thread and by all its other
/// threads (from `/proc/self/task/*/schedstat`, which the scheduler keeps to the nanosecond).
fn cpu_ns() -> [u64; 2] {
    let mut out = [0u64; 2];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        out[usize::from(!comm.starts_with("rthreads-servic"))] += schedstat_ns(task.path().join("schedstat"));
    }
    out
}

/// Read-fault latencies, and the CPU time the faults cost: [faulting node's service thread,
/// faulting thread, home's service thread] in nanoseconds, summed over the `n` faults. The pages
/// are read last to first, so that no read-ahead serves a fault: each is a single fault.
fn read_faults(n: usize) -> (Vec<Duration>, [u64; 3]) {
    let pages = fresh_pages(n);
    let home0 = cpu_ns();
    let (times, there) = on(1, move || {
        let before = cpu_ns();
        let times = (0..n)
            .map(|i| {
                let p = page_addr(&pages, n - 1 - i);
                let t = Instant::now();
                // SAFETY: p lies inside the vector, which outlives this closure.
                black_box(unsafe { std::ptr::read_volatile(p) });
                t.elapsed()
            })
            .collect();
        let after = cpu_ns();
        (times, [after[0] - before[0], after[1] - before[1]])
    });
    let home1 = cpu_ns();
    (times, [there[0], there[1], home1[0] - home0[0]])
}

/// A cold sequential read of `n` pages homed at node 0, by a thread on node 1, one byte per page
/// in page order: the time per page.
fn sequential_read(n: usize) -> Duration {
    let pages = fresh_pages(n);
    on(1, move || {
        let t = Instant::now();
        for i in 0..n {
            // SAFETY: inside the vector, which outlives this closure.
            black_box(unsafe { std::ptr::read_volatile(page_addr(&pages, i)) });
        }
        t.elapsed() / n as u32
    })
}

/// Write-fault latencies (last page first, as for reads: no write-ahead serves one).
fn write_faults(n: usize) -> Vec<Duration> {
    let pages = fresh_pages(n);
    let p2 = Arc::clone(&pages);
    on(2, move || {
        for i in 0..n {
            // SAFETY: inside the vector.
            black_box(unsafe { std::ptr::read_volatile(page_addr(&p2, i)) });
        }
    });
    for i in 0..n {
        // The home keeps a read copy too.
        // SAFETY: inside the vector.
        black_box(unsafe { std::ptr::read_volatile(page_addr(&pages, i)) });
    }
    on(1, move || {
        (0..n)
            .map(|i| {
                let p = page_addr(&pages, n - 1 - i) as *mut u8;
                let t = Instant::now();
                // SAFETY: inside the vector; the bench owns it and nobody else writes it now.
                unsafe { std::ptr::write_volatile(p, 1) };
                t.elapsed()
            })
            .collect()
    })
}

fn spawn_join(n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            black_box(on(1, || 1u32));
            t.elapsed()
        })
        .collect()
}

/// Nanoseconds per call of the trace recorder with tracing off (the default), against an empty
/// loop of the same shape: what the fault path and the service thread pay for tracing not being on.
fn trace_off_cost() -> (f64, f64) {
    const N: u64 = 50_000_000;
    let t = Instant::now();
    for i in 0..N {
        black_box(i);
    }
    let empty = t.elapsed().as_nanos() as f64 / N as f64;
    let t = Instant::now();
    for i in 0..N {
        dsm::trace::record(dsm::trace::EventKind::MessageSent, i, i, black_box(i), 0);
    }
    (t.elapsed().as_nanos() as f64 / N as f64, empty)
}

#[rthreads::main]
fn main() {
    if rthreads::node_count() < 3 {
        eprintln!("the fault benchmark needs at least 3 nodes (RTHREADS_NODES >= 3)");
        std::process::exit(2);
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let per = 400;
    // `BENCH_ONLY=reads`: the round trip and the read faults only (for a profiler).
    let only_reads = std::env::var("BENCH_ONLY").is_ok_and(|v| v == "reads");
    let (mut rtt, mut rf, mut wf, mut sj, mut seq) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut cpu, mut rtt_cpu) = ([0u64; 3], [0u64; 2]);
    for _ in 0..rounds {
        let (times, client, server) = raw_rtt_cpu(per, PAGE);
        rtt.extend(times);
        rtt_cpu[0] += client;
        rtt_cpu[1] += server;
        let (times, used) = read_faults(per);
        rf.extend(times);
        for (c, u) in cpu.iter_mut().zip(used) {
            *c += u;
        }
        if !only_reads {
            wf.extend(write_faults(per));
            sj.extend(spawn_join(per / 4));
            seq.push(sequential_read(4096));
        }
    }
    header();
    // A phase that did not run (`BENCH_ONLY`) prints no row.
    let row = |name: &str, v: &mut Vec<Duration>| if v.is_empty() { Duration::ZERO } else { row(name, v) };
    let medians = [
        row("raw loopback RTT (16 B -> 4 KiB)", &mut rtt),
        row("remote read fault", &mut rf),
        row("remote write fault, 1 reader", &mut wf),
        row("remote spawn + join", &mut sj),
        row("cold sequential read, per page (4096)", &mut seq),
    ];
    if !dsm::trace::enabled() {
        let (rec, empty) = trace_off_cost();
        println!("trace record with tracing off: {rec:.2} ns/call (empty loop {empty:.2} ns/iteration)");
    }
    println!("ratio read fault / raw RTT (medians): {:.2}", us(medians[1]) / us(medians[0]));
    let per_fault = |ns: u64| ns as f64 / 1e3 / rf.len() as f64;
    let per_rtt = |ns: u64| ns as f64 / 1e3 / rtt.len() as f64;
    println!(
        "CPU per raw round trip (mean; the server's includes 20 warm-up trips per round): client {:.1} us, server {:.1} us; sum {:.1} us",
        per_rtt(rtt_cpu[0]),
        per_rtt(rtt_cpu[1]),
        per_rtt(rtt_cpu[0] + rtt_cpu[1])
    );
    println!(
        "CPU per read fault (mean): faulting node's service thread {:.1} us, faulting thread {:.1} us, home's service thread {:.1} us; sum {:.1} us",
        per_fault(cpu[0]),
        per_fault(cpu[1]),
        per_fault(cpu[2]),
        per_fault(cpu.iter().sum())
    );
    println!("ratio write fault / raw RTT (medians): {:.2}", us(medians[2]) / us(medians[0]));
}
