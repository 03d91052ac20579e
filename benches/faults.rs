//! Remote fault latency against the raw loopback round trip, side by side in one run.
//!
//! `cargo bench --bench faults` (4 local nodes; nodes 0, 1 and 2 take part). Each round measures,
//! in turn:
//! - **raw RTT**: a 16-byte request answered with 4 KiB over a blocking TCP loopback connection
//!   with `TCP_NODELAY` (two plain threads; the transport the DSM uses, minus the DSM);
//! - **read fault**: a thread on node 1 loads one byte from a page last written on node 0 (its
//!   home): trap, request, page sent, installed, access opened;
//! - **write fault, 1 reader**: a thread on node 1 stores to a page held read-only by node 2 and
//!   the home (node 0): the home invalidates both copies, then grants write access with the bytes;
//! - **spawn+join**: node 0 spawns a trivial thread on node 1 and joins it.
//!
//! Medians and 90th percentiles over all rounds, and the ratio read fault / raw RTT.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rthreads_suite::bench::{header, raw_rtt, row, us};

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

fn read_faults(n: usize) -> Vec<Duration> {
    let pages = fresh_pages(n);
    on(1, move || {
        (0..n)
            .map(|i| {
                let p = page_addr(&pages, i);
                let t = Instant::now();
                // SAFETY: p lies inside the vector, which outlives this closure.
                black_box(unsafe { std::ptr::read_volatile(p) });
                t.elapsed()
            })
            .collect()
    })
}

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
                let p = page_addr(&pages, i) as *mut u8;
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
    let (mut rtt, mut rf, mut wf, mut sj) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        rtt.extend(raw_rtt(per, PAGE));
        rf.extend(read_faults(per));
        wf.extend(write_faults(per));
        sj.extend(spawn_join(per / 4));
    }
    header();
    let medians = [
        row("raw loopback RTT (16 B -> 4 KiB)", &mut rtt),
        row("remote read fault", &mut rf),
        row("remote write fault, 1 reader", &mut wf),
        row("remote spawn + join", &mut sj),
    ];
    if !dsm::trace::enabled() {
        let (rec, empty) = trace_off_cost();
        println!("trace record with tracing off: {rec:.2} ns/call (empty loop {empty:.2} ns/iteration)");
    }
    println!("ratio read fault / raw RTT (medians): {:.2}", us(medians[1]) / us(medians[0]));
    println!("ratio write fault / raw RTT (medians): {:.2}", us(medians[2]) / us(medians[0]));
}
