//! Issue 14, pattern 1: workers on other nodes read a closure through a raw pointer into the
//! parent's stack and write disjoint slices of a buffer the parent owns, in place, then the parent
//! joins them; 40 rounds. The buffer lives where the first argument says: `stack` (an array local
//! to `main`), `heap` (a `Vec`) or `both` (one round of each per iteration).
//!
//! Prints one line per layout with the checksum a plain std run prints too.

struct Racy<T>(T);
// SAFETY: test program: the pointers are used by workers that the parent joins before the
// pointees go out of scope, and each worker writes its own slice.
unsafe impl<T> Send for Racy<T> {}

const N: usize = 4096;
const ROUNDS: usize = 40;

fn fill(out: &mut [f64], workers: usize) {
    let scale = 0.5f64;
    let f = move |i: usize| (i as f64) * scale + 1.0;
    let fp = Racy(&f as *const _ as *const (dyn Fn(usize) -> f64 + Sync));
    let chunk = out.len() / workers;
    let base = Racy(out.as_mut_ptr());
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let fp = Racy(fp.0);
            let base = Racy(base.0);
            rthreads::spawn(move || {
                let (fp, base) = (fp, base);
                // SAFETY: `f` and `out` outlive the join below; worker `w` writes its own chunk.
                let f = unsafe { &*fp.0 };
                for i in w * chunk..(w + 1) * chunk {
                    // SAFETY: as above.
                    unsafe { *base.0.add(i) = f(i) };
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn checksum(v: &[f64]) -> f64 {
    v.iter().enumerate().map(|(i, x)| x * ((i % 7) as f64 + 1.0)).sum()
}

#[rthreads::main]
fn main() {
    let layout = std::env::args().nth(1).unwrap_or_else(|| "both".into());
    let workers = (rthreads::node_count() * 2).clamp(2, 8);
    let started = std::time::Instant::now();
    if layout == "stack" || layout == "both" {
        let mut total = 0.0;
        for r in 0..ROUNDS {
            let mut buf = [0.0f64; N];
            fill(&mut buf, workers);
            total += checksum(&buf) + r as f64;
        }
        println!("stack: {total}");
    }
    if layout == "heap" || layout == "both" {
        let mut total = 0.0;
        let mut buf = vec![0.0f64; N];
        for r in 0..ROUNDS {
            buf.iter_mut().for_each(|x| *x = 0.0);
            fill(&mut buf, workers);
            total += checksum(&buf) + r as f64;
        }
        println!("heap: {total}");
    }
    eprintln!("elapsed: {:.3} s", started.elapsed().as_secs_f64());
}
