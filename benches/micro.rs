//! Criterion microbenchmarks of the DSM and the runtime, each next to the raw loopback round trip
//! measured in the same run.
//!
//! `cargo bench --bench micro` (5 local nodes; criterion's usual arguments work, e.g.
//! `cargo bench --bench micro -- "read fault"`). Every measurement is taken by criterion's
//! `iter_custom`: a thread on the measuring node does `iters` operations on fresh pages (so each
//! one really is remote) and reports the time they took.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use criterion::Criterion;
use rthreads::sync::{Arc, Barrier, Mutex, mpsc};

const PAGE: usize = 4096;

/// `n` pages, page-aligned, written last by the calling node (their home).
fn pages(n: usize) -> Arc<Vec<u8>> {
    let mut v = vec![0u8; (n + 1) * PAGE];
    for p in 0..n {
        v[p * PAGE + PAGE - 1] = 1;
    }
    Arc::new(v)
}

fn page(v: &[u8], i: usize) -> *mut u8 {
    ((v.as_ptr() as usize).next_multiple_of(PAGE) + i * PAGE) as *mut u8
}

fn on<T: Send + 'static>(node: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    rthreads::Builder::new().node(node).spawn(f).unwrap().join().unwrap()
}

fn raw_rtt(c: &mut Criterion, when: &str) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let reply = vec![7u8; PAGE];
        let mut req = [0u8; 16];
        while s.read_exact(&mut req).is_ok() {
            s.write_all(&reply).unwrap();
        }
    });
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; PAGE];
    c.bench_function(&format!("raw loopback RTT (16 B -> 4 KiB), {when}"), |b| {
        b.iter(|| {
            s.write_all(&[1; 16]).unwrap();
            s.read_exact(&mut buf).unwrap();
        })
    });
    drop(s);
    server.join().unwrap();
}

fn read_fault(c: &mut Criterion) {
    c.bench_function("remote read fault", |b| {
        b.iter_custom(|iters| {
            let v = pages(iters as usize);
            on(1, move || {
                let t = Instant::now();
                for i in 0..iters as usize {
                    // SAFETY: inside the vector, which the closure keeps alive.
                    black_box(unsafe { page(&v, i).read_volatile() });
                }
                t.elapsed()
            })
        })
    });
}

fn write_fault(c: &mut Criterion, readers: usize) {
    c.bench_function(&format!("remote write fault, {readers} reader(s) to invalidate"), |b| {
        b.iter_custom(|iters| {
            let v = pages(iters as usize);
            for r in 0..readers {
                let v = Arc::clone(&v);
                on(2 + r, move || {
                    for i in 0..iters as usize {
                        // SAFETY: inside the vector.
                        black_box(unsafe { page(&v, i).read_volatile() });
                    }
                });
            }
            on(1, move || {
                let t = Instant::now();
                for i in 0..iters as usize {
                    // SAFETY: inside the vector; nobody else touches it during the measurement.
                    unsafe { page(&v, i).write_volatile(2) };
                }
                t.elapsed()
            })
        })
    });
}

fn locks(c: &mut Criterion) {
    c.bench_function("remote lock+unlock, kept", |b| {
        let m = Arc::new(Mutex::new(0u64));
        b.iter_custom(|iters| {
            let m = Arc::clone(&m);
            on(1, move || {
                let t = Instant::now();
                for _ in 0..iters {
                    *m.lock().unwrap() += 1;
                }
                t.elapsed()
            })
        })
    });
    let mut keep = Vec::new();
    c.bench_function("remote lock+unlock, first use", |b| {
        b.iter_custom(|iters| {
            let ms: Arc<Vec<Mutex<u64>>> = Arc::new((0..iters).map(|_| Mutex::new(0)).collect());
            keep.push(Arc::clone(&ms));
            on(1, move || {
                let t = Instant::now();
                for m in ms.iter() {
                    drop(black_box(m.lock().unwrap()));
                }
                t.elapsed()
            })
        })
    });
}

fn barrier(c: &mut Criterion) {
    c.bench_function("barrier, 4 nodes", |b| {
        b.iter_custom(|iters| {
            let bar = Arc::new(Barrier::new(4));
            let hs: Vec<_> = (1..4)
                .map(|n| {
                    let bar = Arc::clone(&bar);
                    rthreads::Builder::new()
                        .node(n)
                        .spawn(move || {
                            for _ in 0..iters {
                                bar.wait();
                            }
                        })
                        .unwrap()
                })
                .collect();
            let t = Instant::now();
            for _ in 0..iters {
                bar.wait();
            }
            let d = t.elapsed();
            for h in hs {
                h.join().unwrap();
            }
            d
        })
    });
}

fn spawn_join(c: &mut Criterion) {
    c.bench_function("remote spawn + join", |b| b.iter(|| black_box(on(1, || 1u32))));
}

fn channel_round_trip(c: &mut Criterion) {
    let (to_1, from_0) = mpsc::channel::<u64>();
    let (to_0, from_1) = mpsc::channel::<u64>();
    let echo = rthreads::Builder::new()
        .node(1)
        .spawn(move || {
            for v in from_0.iter() {
                if to_0.send(v + 1).is_err() {
                    break;
                }
            }
        })
        .unwrap();
    c.bench_function("channel round trip, node 0 <-> node 1", |b| {
        b.iter(|| {
            to_1.send(1).unwrap();
            black_box(from_1.recv().unwrap())
        })
    });
    drop(to_1);
    echo.join().unwrap();
}

#[rthreads::main(nodes = 5)]
fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    raw_rtt(&mut c, "first");
    read_fault(&mut c);
    write_fault(&mut c, 1);
    write_fault(&mut c, 3);
    locks(&mut c);
    barrier(&mut c);
    spawn_join(&mut c);
    channel_round_trip(&mut c);
    raw_rtt(&mut c, "again at the end");
    c.final_summary();
}
