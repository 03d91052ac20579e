//! The benchmark kernels in `std` mode: each kernel's `small` checksum must not depend on the
//! number of worker threads.
//!
//! The platform mode and the worker count are process-wide settings, so everything that sets them
//! is in one test, run sequentially (correct under `cargo test`'s threads as under nextest).

use std::time::Instant;

use rthreads_suite::kernels;
use rthreads_suite::par::{self, Mode, Size};

#[test]
fn every_kernel_has_a_unique_name_and_a_description() {
    let all = kernels::all();
    assert_eq!(all.len(), 15);
    for (i, k) in all.iter().enumerate() {
        assert!(!k.name.is_empty() && !k.about.is_empty());
        assert!(all[..i].iter().all(|o| o.name != k.name), "duplicate kernel name {}", k.name);
    }
}

#[test]
fn small_checksums_do_not_depend_on_the_worker_count() {
    for k in kernels::all() {
        let counts: &[usize] = if k.name == "mergesort" { &[1, 2, 3, 4] } else { &[1, 2, 3] };
        let mut first = None;
        for &w in counts {
            par::set_mode(Mode::Std);
            par::set_workers(w);
            let t = Instant::now();
            let sum = (k.run)(Size::Small);
            println!("{:<18} workers={w}  checksum={sum:#018x}  {:?}", k.name, t.elapsed());
            match first {
                None => first = Some(sum),
                Some(f) => assert_eq!(sum, f, "{}: checksum with {w} workers differs from 1 worker", k.name),
            }
        }
        // Running again gives the same answer (no hidden state between runs).
        par::set_mode(Mode::Std);
        par::set_workers(2);
        assert_eq!(Some((k.run)(Size::Small)), first, "{}: a second run differs", k.name);
    }
}
