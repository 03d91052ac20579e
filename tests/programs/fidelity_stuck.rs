//! Issue 14: what a user sees when a program cannot go on.
//!
//! `fidelity_stuck deadlock`: two threads on two nodes take two `rthreads::sync::Mutex`es in
//! opposite orders (a barrier makes sure each holds its first before it asks for the second): a
//! real deadlock, which the runtime must report (locks and threads) instead of hanging.
//! `fidelity_stuck slow`: one thread holds a lock for longer than the failure timeout while another
//! waits for it: not a deadlock, and must not be reported as one.
//! `fidelity_stuck wedge`: spawns and joins threads; run with `RTHREADS_TEST_WEDGE=<node>` to wedge
//! that node's service thread (a test hook), which the watchdog must report.

use rthreads::sync::{Arc, Barrier, Mutex};

#[rthreads::main]
fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let last = rthreads::node_count() - 1;
    match mode.as_str() {
        "deadlock" => {
            let a = Arc::new(Mutex::new(1u32));
            let b = Arc::new(Mutex::new(2u32));
            let both = Arc::new(Barrier::new(2));
            println!("locks at {:p} and {:p}", &*a, &*b);
            let left = {
                let (a, b, both) = (Arc::clone(&a), Arc::clone(&b), Arc::clone(&both));
                rthreads::Builder::new()
                    .name("left".into())
                    .node(1.min(last))
                    .spawn(move || {
                        let ga = a.lock().unwrap();
                        both.wait();
                        let gb = b.lock().unwrap();
                        *ga + *gb
                    })
                    .unwrap()
            };
            let right = rthreads::Builder::new()
                .name("right".into())
                .node(2.min(last))
                .spawn(move || {
                    let gb = b.lock().unwrap();
                    both.wait();
                    let ga = a.lock().unwrap();
                    *ga + *gb
                })
                .unwrap();
            println!("never: {} {}", left.join().unwrap(), right.join().unwrap());
        }
        "slow" => {
            let m = Arc::new(Mutex::new(0u64));
            let held = Arc::new(Barrier::new(2));
            let hold_for: f64 = std::env::args().nth(2).and_then(|v| v.parse().ok()).unwrap_or(3.0);
            let holder = {
                let (m, held) = (Arc::clone(&m), Arc::clone(&held));
                rthreads::Builder::new()
                    .node(1.min(last))
                    .spawn(move || {
                        let mut g = m.lock().unwrap();
                        held.wait();
                        let until = std::time::Instant::now() + std::time::Duration::from_secs_f64(hold_for);
                        while std::time::Instant::now() < until {
                            *g += 1;
                            std::hint::black_box(&mut *g);
                        }
                    })
                    .unwrap()
            };
            let waiter = rthreads::Builder::new()
                .node(2.min(last))
                .spawn(move || {
                    held.wait();
                    let g = m.lock().unwrap();
                    *g > 0
                })
                .unwrap();
            holder.join().unwrap();
            println!("slow: waiter got the lock: {}", waiter.join().unwrap());
        }
        "wedge" => {
            for round in 0..3 {
                let hs: Vec<_> = (0..rthreads::node_count())
                    .map(|n| rthreads::Builder::new().node(n).spawn(move || n).unwrap())
                    .collect();
                let sum: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
                println!("round {round}: {sum}");
            }
        }
        _ => eprintln!("usage: fidelity_stuck deadlock|slow [seconds]|wedge"),
    }
}
