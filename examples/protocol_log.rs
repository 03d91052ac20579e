//! Every step of the coherence protocol in a tiny run: 2 nodes, 2 pages.
//!
//! `cargo run --example protocol_log` prints, under the program's own step headings, one line per
//! trap, message, page install, protection change and wake-up on each node (lines starting
//! `[node N]`). A worker thread on node 1 is started, and the barriers that pace the steps are used
//! once, before the log is switched on, so the log shows only the traffic of the two pages. Read it
//! with the walkthrough in `docs/protocol.md`.

use std::sync::atomic::{AtomicU64, Ordering};

use rthreads::sync::{Arc, Barrier};

/// Exactly one page of the shared space.
#[repr(C, align(4096))]
struct Page([AtomicU64; 512]);

impl Page {
    fn new(v: u64) -> Page {
        Page(std::array::from_fn(|_| AtomicU64::new(v)))
    }
}

struct Shared {
    pages: [Page; 2],
    go: Barrier,
    done: Barrier,
}

fn read(p: &Page) -> u64 {
    p.0[0].load(Ordering::Relaxed)
}

fn write(p: &Page, v: u64) {
    p.0[0].store(v, Ordering::Relaxed);
}

#[rthreads::main(nodes = 2)]
fn main() {
    // Both pages are allocated, and so homed, on node 0, which writes them: it holds them writable.
    let s =
        Arc::new(Shared { pages: [Page::new(1), Page::new(2)], go: Barrier::new(2), done: Barrier::new(2) });
    let (a, b) = (rthreads::page_of(&s.pages[0]).unwrap(), rthreads::page_of(&s.pages[1]).unwrap());
    println!("page A is page {a}, page B is page {b}; both homed at node 0");
    let w = Arc::clone(&s);
    let worker = rthreads::Builder::new()
        .node(1)
        .spawn(move || {
            w.go.wait();
            w.done.wait();
            w.go.wait(); // step 1
            println!("node 1 read A = {}", read(&w.pages[0]));
            w.done.wait();
            w.go.wait(); // step 2
            write(&w.pages[1], 20);
            println!("node 1 wrote B = 20");
            w.done.wait();
            // Ending the thread writes its result and drops its `Arc`: wait until the log is off.
            w.go.wait();
        })
        .unwrap();
    s.go.wait();
    s.done.wait();
    let pause = || std::thread::sleep(std::time::Duration::from_millis(100));
    rthreads::log_protocol(true);

    println!("\n=== 1. node 1 reads page A: a read fault; the home sends a read copy and keeps one");
    s.go.wait();
    s.done.wait();
    pause();

    println!("\n=== 2. node 1 writes page B: a write fault; the home gives up its own copy and grants it");
    s.go.wait();
    s.done.wait();
    pause();

    println!("\n=== 3. node 0 reads page B: the home recalls it from node 1, which keeps a read copy");
    println!("node 0 read B = {}", read(&s.pages[1]));
    pause();

    println!("\n=== 4. node 0 writes page A: node 1's read copy is invalidated");
    write(&s.pages[0], 10);
    println!("node 0 wrote A = 10");
    pause();

    rthreads::log_protocol(false);
    s.go.wait();
    worker.join().unwrap();
}
