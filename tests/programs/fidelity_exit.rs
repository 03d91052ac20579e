//! Issue 14, pattern 3: exit codes and write errors of threads on other nodes are std's.
//!
//! `fidelity_exit exit`: a thread on node 2 (or the last node) prints, then calls
//! `std::process::exit(7)` while `main` waits for it. `fidelity_exit write N`: a thread on node 1
//! prints N numbered lines to stdout; `main` joins it and unwraps the result (so a failed print
//! panics there, then in `main`). Add `std` to run the same on `std::thread` (the reference).

fn on_node(
    node: usize,
    std: bool,
    f: impl FnOnce() + Send + 'static,
) -> Box<dyn FnOnce() -> std::thread::Result<()>> {
    if std {
        let h = std::thread::spawn(f);
        Box::new(move || h.join())
    } else {
        let h = rthreads::Builder::new().node(node).spawn(f).unwrap();
        Box::new(move || h.join())
    }
}

#[rthreads::main]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let std = args.iter().any(|a| a == "std");
    let last = rthreads::node_count().saturating_sub(1);
    match args.first().map(String::as_str) {
        Some("exit") => {
            println!("main: before");
            let join = on_node(2.min(last), std, || {
                for i in 0..3 {
                    println!("worker: line {i}");
                }
                eprintln!("worker: exiting with 7");
                std::process::exit(7);
            });
            join().unwrap();
            println!("main: not reached");
        }
        Some("write") => {
            let n: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(1000);
            let join = on_node(1.min(last), std, move || {
                for i in 0..n {
                    println!("line {i}");
                }
            });
            join().unwrap();
            eprintln!("main: all written");
        }
        _ => eprintln!("usage: fidelity_exit exit|write N [std]"),
    }
}
