//! `std::thread` semantics over a cluster: threads spawned with [`spawn`] run on other nodes
//! (processes, on this machine or others), over a page-granular distributed shared memory.
//!
//! A program swaps `std::thread::spawn` for `rthreads::spawn` and marks `main` with
//! `#[rthreads::main]`:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! #[rthreads::main]
//! fn main() {
//!     let data = Arc::new((0..1_000_000u64).collect::<Vec<_>>());
//!     let handles: Vec<_> = (0..16)
//!         .map(|i| {
//!             let data = Arc::clone(&data);
//!             rthreads::spawn(move || (rthreads::current_node(), data[i * 1000..][..1000].iter().sum::<u64>()))
//!         })
//!         .collect();
//!     for h in handles {
//!         println!("{:?}", h.join().unwrap());
//!     }
//! }
//! ```
//!
//! # The model
//! - **One address space.** The heap (everything `Box`, `Vec`, `Arc`, `String` allocate) lies in a
//!   range mapped at the same virtual address on every node; pages move between nodes on demand,
//!   kept coherent by a sequentially consistent write-invalidate protocol (single writer, many
//!   readers per page, a home node per page). Atomics in shared memory work across nodes.
//! - **One binary.** Every node runs the same executable, loaded at the same address, so code
//!   pointers, vtables and `&'static` data mean the same everywhere. The handshake refuses a node
//!   running anything else.
//! - **Per-node state.** Thread stacks, thread-locals and mutable `static`s are per node: a
//!   `static AtomicUsize` counts per node, not per cluster. Put shared state in the heap
//!   (e.g. an `Arc`). File descriptors and other OS handles also belong to the node that opened
//!   them. `std::sync::Mutex`/`Condvar` wake only threads of one node: do not wait on one from
//!   another node.
//! - **Placement.** A spawned thread goes where the run's [`Placement`] policy sends it
//!   (round-robin unless `RTHREADS_PLACEMENT` says `least-loaded` or `local-first`), or where
//!   [`Builder::placement`] or [`Builder::node`] says; nodes tell each other their load. With
//!   rebalancing on, [`yield_now`] is a safe point where a thread may move off a busy node (see
//!   [`placement`]).
//! - **Node 0 runs `main`.** The other nodes serve pages and run threads; when `main` returns,
//!   every node exits and the process's exit code is node 0's. Output of every node goes to the
//!   launching terminal.
//!
//! Outside `#[rthreads::main]` (in a doctest, say) the API works as a one-node cluster: threads
//! are plain local threads.

mod alloc;
mod consistency;
mod counters;
mod fiber;
mod launch;
mod log;
mod output;
pub mod placement;
mod poll;
mod private;
mod runtime;
mod stats;
pub mod sync;
mod thread;
mod topology;
mod trace;

pub use alloc::SharedAlloc;
pub use placement::Placement;
pub use rthreads_macros::main;
pub use stats::{KINDS, KindStats, NodeStats, StatsTable, log_protocol, stats};
pub use thread::scope::{Scope, ScopedJoinHandle, scope};
pub use thread::{
    Builder, JoinHandle, available_parallelism, current_node, migrate, node_count, page_of, spawn, yield_now,
};

#[doc(hidden)]
pub mod __private {
    pub use crate::alloc::arena_high_water;
    pub use crate::launch::{run_main, run_main_with};

    /// Runs `f` through the runtime's switch to a private stack `n` times (for `bench_calls`).
    pub fn private_calls(n: u64, f: fn(u64) -> u64) -> u64 {
        (0..n).map(|i| crate::private::private(move || f(i))).sum()
    }
}

/// The fuzz harness of the runtime's message decoder (the `wire_decode` target in `fuzz/`, and
/// `tests/fuzz_replay.rs`), with the `fuzzing` feature. Not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz {
    /// Decodes a frame body as the runtime would (whichever module owns its tag), re-encodes it
    /// and decodes that again: `true` if the bytes were a message, `false` if they were refused.
    ///
    /// # Panics
    /// If the decoder panics, or the re-encoded message decodes differently: a bug.
    pub fn wire_decode(bytes: &[u8]) -> bool {
        use crate::runtime::wire::{Field, round_trip_of as of};
        use crate::{output, placement, stats, sync, thread};
        type RoundTrip = fn(&[u8]) -> Option<Result<Vec<u8>, net::DecodeError>>;
        let owners: [RoundTrip; 6] = [
            crate::runtime::wire::round_trip,
            |b| of(b, &thread::wire::TAGS, thread::wire::ThreadMsg::decode, thread::wire::ThreadMsg::encode),
            |b| of(b, &sync::wire::TAGS, sync::wire::SyncMsg::decode, sync::wire::SyncMsg::encode),
            |b| of(b, &placement::TAGS, placement::PlacementMsg::decode, placement::PlacementMsg::encode),
            |b| of(b, &output::TAGS, output::OutputMsg::decode, output::OutputMsg::encode),
            |b| of(b, &stats::TAGS, stats::StatsMsg::decode, stats::StatsMsg::encode),
        ];
        let Some(Ok(encoded)) = owners.iter().find_map(|f| f(bytes)) else { return false };
        let again = owners
            .iter()
            .find_map(|f| f(&encoded))
            .unwrap_or_else(|| panic!("{bytes:?} re-encoded as {encoded:?} has no owner"))
            .unwrap_or_else(|e| panic!("{bytes:?} re-encoded as {encoded:?} does not decode: {e}"));
        assert_eq!(again, encoded, "re-encoding changed the message");
        true
    }
}
