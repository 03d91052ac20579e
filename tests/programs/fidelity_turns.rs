//! Issue 14, pattern 2: worker threads take turns through a `Mutex` (with a `Condvar` saying whose
//! turn it is); each prints a block of lines while it holds the lock; then `main` joins them and
//! prints a line. The output is fully determined by the program's synchronisation, so it must be
//! the same as std's, line for line, whatever node each worker runs on.
//!
//! Arguments: `[workers] [rounds] [lines] [quiet] [busy] [std]`. With `quiet` the workers print
//! nothing (the cost of ordered output when nothing is written); with `busy` two threads of node 0
//! spin meanwhile (a loaded machine: an output path that depends on timing shows it); with `std`
//! the same program runs on `std::thread` (the reference).

use std::io::Write;

fn args() -> (usize, usize, usize, bool) {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: usize| a.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    (num(0, 8), num(1, 3), num(2, 30), a.iter().any(|v| v == "quiet"))
}

macro_rules! turns {
    ($spawn:path, $mutex:ty, $condvar:ty) => {{
        let (workers, rounds, lines, quiet) = args();
        let state = std::sync::Arc::new((<$mutex>::new(0usize), <$condvar>::new()));
        let started = std::time::Instant::now();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = std::env::args().any(|a| a == "busy");
        let spinners: Vec<_> = (0..if busy { 2 } else { 0 })
            .map(|_| {
                let stop = std::sync::Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let state = std::sync::Arc::clone(&state);
                $spawn(move || {
                    let (turn, cv) = &*state;
                    for r in 0..rounds {
                        let mut t = turn.lock().unwrap();
                        while *t % workers != w {
                            t = cv.wait(t).unwrap();
                        }
                        if !quiet {
                            let out = std::io::stdout();
                            let mut out = out.lock();
                            for i in 0..lines {
                                writeln!(out, "worker {w} round {r} line {i}").unwrap();
                            }
                        }
                        *t += 1;
                        cv.notify_all();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for s in spinners {
            s.join().unwrap();
        }
        println!("main: all {workers} workers joined after {} turns", *state.0.lock().unwrap());
        eprintln!("elapsed: {:.3} s", started.elapsed().as_secs_f64());
    }};
}

fn std_main() {
    turns!(std::thread::spawn, std::sync::Mutex<usize>, std::sync::Condvar);
}

#[rthreads::main]
fn main() {
    if std::env::args().any(|a| a == "std") {
        return std_main();
    }
    turns!(rthreads::spawn, rthreads::sync::Mutex<usize>, rthreads::sync::Condvar);
}
