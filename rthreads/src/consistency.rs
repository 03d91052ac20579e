//! The release and acquire points of the release-consistent protocol.
//!
//! Under `RTHREADS_PROTOCOL=lrc` a node's writes reach other nodes only at a **release** (its dirty
//! pages' diffs go to their homes, and copies elsewhere are marked stale), and a node drops its
//! stale copies only at an **acquire**. The synchronisation operations of this crate call these two
//! functions where `rthreads::sync`'s consistency contract puts its release and acquire points:
//! before a lock leaves the thread, a condition-variable wait, a barrier arrival, a channel send, a
//! `spawn` and the end of a thread; after a lock is granted, a wait or barrier returns, a message
//! is received, a thread starts and `join` returns.
//!
//! Both return at once under the sequentially consistent protocol, and under the relaxed one when
//! the protocol state says there is nothing to do (no page written since the last release; no
//! stale copy to drop). Otherwise the calling thread waits for the service thread: a release until
//! every diff is acknowledged by its home, an acquire until the stale copies are closed.

use crate::runtime::{self, Cmd};

/// A release point: every write this node made before it becomes visible to whoever acquires
/// after it.
pub(crate) fn release() {
    // Output written before a release reaches the terminal before anything written after the
    // matching acquire, on any node.
    crate::output::flush();
    if let Some(rt) = runtime::get() {
        rt.consistency(Cmd::Release);
    }
}

/// Before a barrier arrival, after its release: asks the service thread to drop the read copies
/// that other nodes' writes will revoke (`Coherence::drop_copies`), so that their writes after the
/// barrier do not wait for this node. Never waits: dropping a copy changes no value anyone reads.
/// Returns at once when there is none to drop (`RTHREADS_DROP_COPIES=0`: never any).
pub(crate) fn before_barrier() {
    if let Some(rt) = runtime::get() {
        rt.consistency(Cmd::DropCopies);
    }
}

/// After a barrier returns, before its acquire: the thread is no longer in a barrier (the count
/// `before_barrier` raised; see `Coherence::barriers_shared`).
pub(crate) fn after_barrier() {
    if let Some(rt) = runtime::get() {
        rt.left_barrier();
    }
}

/// An acquire point: writes released before the synchronisation that led here are visible after
/// it.
pub(crate) fn acquire() {
    if let Some(rt) = runtime::get() {
        rt.consistency(Cmd::Acquire);
    }
}
