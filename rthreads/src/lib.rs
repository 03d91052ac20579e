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
//! - **Node 0 runs `main`.** The other nodes serve pages and run threads; when `main` returns,
//!   every node exits and the process's exit code is node 0's. Output of every node goes to the
//!   launching terminal.
//!
//! Outside `#[rthreads::main]` (in a doctest, say) the API works as a one-node cluster: threads
//! are plain local threads.

mod alloc;
mod consistency;
mod launch;
mod poll;
mod rpc;
mod runtime;
mod stats;
pub mod sync;
mod thread;
mod trace;
mod wire;

pub use alloc::SharedAlloc;
pub use rthreads_macros::main;
pub use stats::{KINDS, KindStats, NodeStats, StatsTable, log_protocol, stats};
pub use thread::{Builder, JoinHandle, available_parallelism, current_node, node_count, page_of, spawn};

#[doc(hidden)]
pub mod __private {
    pub use crate::alloc::arena_high_water;
    pub use crate::launch::{run_main, run_main_with};
}
