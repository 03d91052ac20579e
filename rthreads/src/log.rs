//! The runtime's own messages: one raw `write(2)` per line to this process's stderr, never through
//! std's `Stderr` (an application thread may hold its lock while it waits in a fault that the
//! service thread must serve), never through the output forwarding of application writes, and
//! without allocating for lines up to 1 KiB.
//!
//! A leaf of the module graph: everything may use it, it uses nothing of this crate.

use std::sync::atomic::{AtomicU16, Ordering};

/// This process's node number, for messages (0 until the runtime knows it).
static NODE: AtomicU16 = AtomicU16::new(0);

/// Records this process's node number (start-up).
pub(crate) fn set_node(me: dsm::NodeId) {
    NODE.store(me.0, Ordering::Relaxed);
}

/// This process's node number (0 outside a cluster).
pub(crate) fn node() -> dsm::NodeId {
    dsm::NodeId(NODE.load(Ordering::Relaxed))
}

/// Writes `msg` and a newline to stderr with one `write(2)` (for messages up to 1 KiB).
pub(crate) fn say(msg: &str) {
    let mut line = [0u8; 1024];
    if msg.len() < line.len() {
        line[..msg.len()].copy_from_slice(msg.as_bytes());
        line[msg.len()] = b'\n';
        dsm::sys::write_all_raw(2, &line[..=msg.len()]);
    } else {
        dsm::sys::write_all_raw(2, msg.as_bytes());
        dsm::sys::write_all_raw(2, b"\n");
    }
}

/// Prints a fatal runtime error naming its cause and ends this node with exit code 1, running
/// nothing else (no destructor, no `atexit` handler: one could wait for a thread stuck in a fault).
pub(crate) fn fatal(msg: &str) -> ! {
    say(&format!("rthreads: {}: fatal: {msg}", node()));
    // SAFETY: _exit ends the process at once.
    unsafe { libc::_exit(1) }
}
