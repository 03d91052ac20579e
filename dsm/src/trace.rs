//! The trace buffer: fixed-size event records in memory reserved at start-up, written without
//! allocation or locks, so the fault handler itself can record into it.
//!
//! Recording claims a slot with one atomic add and writes the record; with tracing off (the
//! default) it is one atomic load. Records are read once, at exit, when the runtime formats them.
//! A full buffer drops further events and counts them.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EventKind {
    /// A thread trapped on a load and waited for the page (`t0..t1`).
    ReadFault = 1,
    /// A thread trapped on a store and waited for write access (`t0..t1`).
    WriteFault = 2,
    /// A protocol message left this node (`arg`: peer << 8 | message kind).
    MessageSent = 3,
    /// A protocol message arrived (`arg`: peer << 8 | message kind).
    MessageReceived = 4,
    /// A thread waited in a synchronisation operation (`t0..t1`).
    SyncWait = 5,
    /// A thread started on this node.
    ThreadStart = 6,
}

/// One event. `t0`/`t1` are `CLOCK_MONOTONIC` nanoseconds (equal for instants).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Event {
    /// Start.
    pub t0: u64,
    /// End.
    pub t1: u64,
    /// The page concerned (`u64::MAX`: none).
    pub page: u64,
    /// Kind-specific detail.
    pub arg: u64,
    /// An [`EventKind`] as a number.
    pub kind: u32,
    /// The OS thread id.
    pub tid: u32,
}

static BUF: AtomicPtr<Event> = AtomicPtr::new(std::ptr::null_mut());
static CAP: AtomicUsize = AtomicUsize::new(0);
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Reserves room for `cap` events (not committed until used) and starts recording.
///
/// # Errors
/// If the memory cannot be reserved.
pub fn enable(cap: usize) -> std::io::Result<()> {
    let p = crate::sys::map_anon(cap * std::mem::size_of::<Event>())?;
    CAP.store(cap, Ordering::SeqCst);
    BUF.store(p.cast(), Ordering::SeqCst);
    Ok(())
}

/// Whether events are being recorded.
pub fn enabled() -> bool {
    !BUF.load(Ordering::Relaxed).is_null()
}

/// Monotonic nanoseconds (`CLOCK_MONOTONIC`); async-signal-safe: a plain `clock_gettime`.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Monotonic milliseconds (see [`now_ns`]).
pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// Records an event. Async-signal-safe: no allocation, no lock.
pub fn record(kind: EventKind, t0: u64, t1: u64, page: u64, arg: u64) {
    let buf = BUF.load(Ordering::Relaxed);
    if buf.is_null() {
        return;
    }
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    if i >= CAP.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    // SAFETY: `i < CAP`, so the slot lies in the mapping, and no other writer claimed it.
    unsafe { buf.add(i).write(Event { t0, t1, page, arg, kind: kind as u32, tid }) };
}

/// The events recorded so far and how many were dropped for lack of room. Call when recording
/// threads are quiet (at exit): a slot being written meanwhile may read half-written.
pub fn events() -> (Vec<Event>, usize) {
    let buf = BUF.load(Ordering::SeqCst);
    if buf.is_null() {
        return (Vec::new(), 0);
    }
    let claimed = NEXT.load(Ordering::SeqCst);
    let cap = CAP.load(Ordering::SeqCst);
    let n = claimed.min(cap);
    // SAFETY: the first `n` slots lie in the mapping and were written by `record`.
    let v = unsafe { std::slice::from_raw_parts(buf, n) }.to_vec();
    (v, claimed - n)
}
