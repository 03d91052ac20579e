//! The parallel benchmark kernels, each written once against [`crate::par`].
//!
//! A kernel takes a [`Size`], uses `par::workers()` threads, and returns a checksum that must be
//! identical whatever the platform and the number of nodes or threads (the runner compares every
//! cluster run with the `std` run).
//!
//! Conventions every kernel follows, so that it stays correct and meaningful on the DSM:
//!
//! - `workers()` (like the platform mode, a per-process setting, hence per node) is read only on the
//!   calling thread and passed to the workers in their closures;
//! - shared input is built on the calling thread and handed out read-only through an `Arc`;
//! - what a worker writes lives in its own allocation (made inside the worker and returned through
//!   `join`) or in its own page (`common::PageAligned`), except where sharing a page is what the
//!   kernel measures (`false_sharing`);
//! - results are combined on the calling thread in a fixed order, and floating-point work is split
//!   so that every value is computed by the same operations whatever the split, so the checksum
//!   does not depend on the number of workers.

use crate::par::Size;

mod common;

pub mod broadcast;
pub mod false_sharing;
pub mod jacobi;
pub mod jacobi_plain;
pub mod kmeans;
pub mod lock_pingpong;
pub mod mandelbrot;
pub mod mandelbrot_bands;
pub mod matmul;
pub mod mergesort;
pub mod montecarlo_pi;
pub mod nbody;
pub mod producer_consumer;
pub mod stream_read;

/// One benchmark kernel.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// Short name, used on the command line.
    pub name: &'static str,
    /// What it exercises.
    pub about: &'static str,
    /// Runs the kernel and returns its checksum.
    pub run: fn(Size) -> u64,
}

/// Every kernel, in the order the runner reports them.
pub fn all() -> Vec<Kernel> {
    vec![
        Kernel {
            name: "matmul",
            about: "dense f64 matrix product, row bands; read-shared inputs, private outputs",
            run: matmul::run,
        },
        Kernel {
            name: "jacobi",
            about: "2-D stencil, row bands, halo rows exchanged through edge pages, a barrier per iteration",
            run: jacobi::run,
        },
        Kernel {
            name: "matmul_512",
            about: "the same product at order 512, as a new user writes it first (issue 17)",
            run: matmul::run_512,
        },
        Kernel {
            name: "jacobi_plain",
            about: "2-D stencil as a new user writes it: two heap grids, each worker allocates its band, in place",
            run: jacobi_plain::run_writer,
        },
        Kernel {
            name: "jacobi_main",
            about: "the same stencil with both grids allocated by main (every row homed on node 0)",
            run: jacobi_plain::run_main,
        },
        Kernel {
            name: "nbody",
            about: "all-pairs gravity; positions re-shared read-only every step",
            run: nbody::run,
        },
        Kernel {
            name: "mandelbrot",
            about: "compute-bound, interleaved rows, no shared writes",
            run: mandelbrot::run,
        },
        Kernel {
            name: "kmeans",
            about: "integer k-means; per-worker partial sums under locks, two barriers per iteration",
            run: kmeans::run,
        },
        Kernel {
            name: "montecarlo_pi",
            about: "embarrassingly parallel sampling, no shared data",
            run: montecarlo_pi::run,
        },
        Kernel {
            name: "mergesort",
            about: "recursive spawning; halves move to other threads and back to be merged",
            run: mergesort::run,
        },
        Kernel {
            name: "false_sharing",
            about: "worst case: private counters packed into one page",
            run: false_sharing::run,
        },
        Kernel {
            name: "lock_pingpong",
            about: "one contended mutex guarding one counter",
            run: lock_pingpong::run,
        },
        Kernel {
            name: "producer_consumer",
            about: "pairs ping-pong a value through one shared page, spinning",
            run: producer_consumer::run,
        },
        Kernel {
            name: "broadcast",
            about: "read-mostly: one table read repeatedly by every worker",
            run: broadcast::run,
        },
        Kernel {
            name: "stream_read",
            about: "cold streaming read of a large array built elsewhere",
            run: stream_read::run,
        },
    ]
}
