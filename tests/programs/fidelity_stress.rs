//! Issue 14, acceptance 2: other nodes keep reading and writing a thread's stack while that thread
//! spawns, joins, locks, sends on channels and allocates. Every read of a stack page by another
//! node takes write access away from the thread's node, so the thread's next push onto that page
//! traps, inside whatever runtime code it is running: the runtime must never wait for the service
//! thread while it holds a lock the service thread needs.
//!
//! `fidelity_stress [ops]`: `main` does `ops` operations (default 2000) from a deep frame while a
//! "pest" thread on every other node reads the pages below that frame (where the runtime's own
//! frames go) and writes a scratch array in it. Prints a checksum that std would print too.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use rthreads::sync::{Arc, Mutex, mpsc};

struct Target {
    /// An address in the working frame: the pests read the 64 KiB below it.
    probe: AtomicUsize,
    /// The scratch array in that frame, which the pests write (one word each, by node).
    scratch: AtomicUsize,
    stop: AtomicBool,
    reads: AtomicU64,
    writes: AtomicU64,
}

fn pest(t: Arc<Target>, me: usize) {
    let mut sink = 0u64;
    while !t.stop.load(Ordering::SeqCst) {
        let probe = t.probe.load(Ordering::SeqCst);
        let scratch = t.scratch.load(Ordering::SeqCst);
        if probe == 0 {
            std::hint::spin_loop();
            continue;
        }
        for k in 0..16 {
            let at = (probe & !4095) - k * 4096;
            // SAFETY: test program: the address is in the working thread's stack in the shared
            // space (mapped on every node); reading it races with nothing that matters here.
            sink = sink.wrapping_add(u64::from(unsafe { std::ptr::read_volatile(at as *const u8) }));
        }
        t.reads.fetch_add(16, Ordering::Relaxed);
        if scratch != 0 {
            // SAFETY: the scratch array lives until `stop` is set; word `me` is this pest's alone.
            unsafe { std::ptr::write_volatile((scratch as *mut u64).add(me * 8), sink) };
            t.writes.fetch_add(1, Ordering::Relaxed);
        }
        // Leave the CPUs to the working thread and the service threads (two vCPUs carry all the
        // nodes here): what matters is that the pages keep moving, not how fast.
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::hint::black_box(sink);
}

#[inline(never)]
fn work(t: &Target, ops: usize) -> u64 {
    let mut scratch = [0u64; 1024];
    let here = 0u64;
    t.scratch.store(scratch.as_mut_ptr() as usize, Ordering::SeqCst);
    t.probe.store(std::hint::black_box(&here) as *const u64 as usize, Ordering::SeqCst);
    let m = Arc::new(Mutex::new(0u64));
    let (tx, rx) = mpsc::channel::<u64>();
    let mut sum = 0u64;
    for i in 0..ops as u64 {
        match i % 5 {
            0 => {
                let h = rthreads::spawn(move || i * 2);
                sum += h.join().unwrap();
            }
            1 => {
                let mut g = m.lock().unwrap();
                *g += i;
                sum += *g % 7;
            }
            2 => {
                tx.send(i).unwrap();
                sum += rx.recv().unwrap();
            }
            3 => {
                let v: Vec<u64> = (0..64 + i % 512).collect();
                sum += v.iter().sum::<u64>() % 1000;
            }
            _ => {
                let s = format!("op {i}");
                sum += s.len() as u64;
            }
        }
    }
    t.probe.store(0, Ordering::SeqCst);
    t.scratch.store(0, Ordering::SeqCst);
    std::hint::black_box(&mut scratch);
    sum
}

#[rthreads::main]
fn main() {
    let ops: usize = std::env::args().nth(1).and_then(|v| v.parse().ok()).unwrap_or(2000);
    let t = Arc::new(Target {
        probe: AtomicUsize::new(0),
        scratch: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        reads: AtomicU64::new(0),
        writes: AtomicU64::new(0),
    });
    let pests = if std::env::args().any(|a| a == "no-pests") { 1 } else { rthreads::node_count() };
    let pests: Vec<_> = (1..pests)
        .map(|n| {
            let t = Arc::clone(&t);
            rthreads::Builder::new().node(n).spawn(move || pest(t, n)).unwrap()
        })
        .collect();
    let started = std::time::Instant::now();
    let sum = work(&t, ops);
    t.stop.store(true, Ordering::SeqCst);
    for p in pests {
        p.join().unwrap();
    }
    println!("stress: {ops} operations, checksum {sum}");
    eprintln!(
        "elapsed {:.2} s; the pests read {} stack pages and wrote {} words",
        started.elapsed().as_secs_f64(),
        t.reads.load(Ordering::Relaxed),
        t.writes.load(Ordering::Relaxed)
    );
}
