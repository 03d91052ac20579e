//! Distributed shared memory for rthreads: one address range at the same virtual address on every
//! node, kept coherent page by page.
//!
//! - [`space`] maps the range twice (an application view whose protections follow the protocol and
//!   an always-accessible runtime view) over one memory file.
//! - [`fault`] is the SIGSEGV handler: it hands traps on the range to the node's service thread.
//! - [`protocol`] holds the coherence protocols as pure state machines
//!   (`state + message -> new state + actions`), free of sockets and `mprotect`.
//! - [`interpose`] redefines the C library's I/O calls so that system calls can read and write
//!   shared pages.
//! - [`sys`] wraps the system calls all of this needs.
//! - [`trace`] is the event buffer the fault handler and the runtime record into.
//! - `sim` (in tests, and with the `sim` feature) is a simulated cluster that runs any protocol
//!   the way the runtime does and checks it: the protocols' unit tests, model checks and fuzz
//!   harnesses all run in it.
//! - `fuzzing` (with the `fuzzing` feature) holds the harnesses the fuzz targets and the corpus
//!   replay test share.

pub mod fault;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub mod interpose;
pub mod protocol;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod space;
pub mod sys;
pub mod trace;

pub use ids::{Access, FaultKind, NodeId, PageId};
pub use space::{Space, SpaceLayout};
