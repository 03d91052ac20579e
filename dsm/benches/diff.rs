//! Diffs of release consistency (`dsm::protocol::lrc::diff`): encoding at the writer, checking and
//! applying at the home, for three kinds of change to a 4 KiB page, with the 64-byte AVX-512 path
//! (where the CPU has it) and with the portable word-at-a-time path, side by side.
//!
//! `cargo bench -p dsm --bench diff`. The pages:
//! - `stencil`: 512 `f64` each nudged by 1e-9, as a Jacobi sweep changes its rows: the low bytes
//!   of every value change, the high ones do not (the mask format);
//! - `sparse`: 16 scattered 8-byte values (the runs format);
//! - `whole`: every byte (the runs format, one run).

// A benchmark prints its page sizes; it installs no fault handler, so std's stdout lock is safe here.
#![allow(clippy::disallowed_macros)]

use std::hint::black_box;

use criterion::Criterion;
use dsm::protocol::lrc::diff;

const PAGE: usize = 4096;

fn pages() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let values = |nudge: f64| -> Vec<u8> {
        (0..PAGE / 8).flat_map(|i| (1.0 + i as f64 * 0.001 + nudge).to_ne_bytes()).collect()
    };
    let stencil = (values(0.0), values(1e-9));
    let mut sparse = stencil.0.clone();
    for k in 0..16 {
        let at = k * 256 + 8;
        sparse[at..at + 8].copy_from_slice(&(k as f64).to_ne_bytes());
    }
    let whole: Vec<u8> = stencil.0.iter().map(|b| !b).collect();
    vec![
        ("stencil", stencil.0.clone(), stencil.1),
        ("sparse", stencil.0.clone(), sparse),
        ("whole", stencil.0, whole),
    ]
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    for (name, twin, current) in pages() {
        for (path, wide) in [("word", false), ("wide", true)] {
            diff::use_wide(wide);
            let mut d = Vec::with_capacity(2 * PAGE);
            diff::encode(&twin, &current, &mut d);
            if !wide {
                println!("{name}: diff of {} bytes, format {}", d.len(), ["runs", "mask"][usize::from(d[0])]);
            }
            c.bench_function(&format!("{name}: encode, {path}"), |b| {
                b.iter(|| {
                    d.clear();
                    diff::encode(black_box(&twin), black_box(&current), &mut d);
                })
            });
            c.bench_function(&format!("{name}: validate, {path}"), |b| {
                b.iter(|| diff::validate(black_box(&d), PAGE).map(|s| s.bytes))
            });
            let mut page = twin.clone();
            c.bench_function(&format!("{name}: apply, {path}"), |b| {
                b.iter(|| diff::apply(black_box(&d), &mut page).map(|s| s.bytes))
            });
            assert_eq!(page, current);
        }
    }
    diff::use_wide(true);
    c.final_summary();
}
