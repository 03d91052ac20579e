//! The fault path: traps on the shared space are handed to the node's service thread.
//!
//! A thread that touches a page it may not (the protocol has not given this node the access) traps
//! into the SIGSEGV handler, which hands the fault to the service thread and waits; the service
//! thread runs the protocol and, once the page is accessible, lets the thread go; it returns from
//! the handler and the faulting instruction runs again. If the access is still not allowed (say it
//! needed write access and got a read copy), it traps again and asks again. A read of a page homed
//! elsewhere may instead be served by the faulting thread itself, which asks the home directly
//! (`direct.rs`): two thread wake-ups on the way instead of four.
//!
//! - `handler.rs`: the handler itself, and only what runs inside it: async-signal-safe code (read
//!   its top before touching anything it reaches).
//! - `slots.rs`: the hand-off between a faulting thread and the service thread ([`FaultReceiver`],
//!   [`complete`]), and how waiting threads sleep ([`set_wake_pipes`], [`set_spin`]).
//! - `direct.rs`: direct page reads, where the faulting thread fetches a page itself, and the
//!   per-page byte that tells it and the service thread apart.
//! - `guard.rs`: guard pages of stacks in the shared space ([`set_guard`]) and their owners' names.
//! - `x86.rs`: reading the faulting instruction: a store? an atomic ([`decode_atomic`])?
//! - this file: installing the handler ([`install`]) and what it knows of the process: where the
//!   space is, which thread is the service thread, which runtime locks a thread holds; counters.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

use crate::space::SpaceLayout;

pub mod direct;
mod guard;
mod handler;
mod slots;
mod x86;

pub use guard::{set_guard, set_stack_owner};
pub use slots::{
    FaultReceiver, PendingFault, SLOTS, SlotId, Wakeup, complete, notify, nudge, pending, set_dozing,
    set_spin, set_wake_pipes,
};
pub use x86::decode_atomic;

static BASE: AtomicUsize = AtomicUsize::new(0);
static SIZE: AtomicUsize = AtomicUsize::new(0);
/// Thread id of the service thread: a trap there would wait for itself, so it is reported instead.
/// 0 before [`register_service_thread`]; read by the (async-signal-safe) handler.
static SERVICE_TID: AtomicI32 = AtomicI32::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Traps served, by kind, and the time application threads spent blocked in them (nanoseconds).
static READ_FAULTS: AtomicU64 = AtomicU64::new(0);
static WRITE_FAULTS: AtomicU64 = AtomicU64::new(0);
static FAULT_WAIT_NS: AtomicU64 = AtomicU64::new(0);

/// What the handler has counted on this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    /// Traps on loads.
    pub read: u64,
    /// Traps on stores.
    pub write: u64,
    /// Total time application threads spent in the handler, in nanoseconds.
    pub wait_ns: u64,
}

/// The handler's counters so far.
pub fn counters() -> FaultCounters {
    FaultCounters {
        read: READ_FAULTS.load(Ordering::Relaxed),
        write: WRITE_FAULTS.load(Ordering::Relaxed),
        wait_ns: FAULT_WAIT_NS.load(Ordering::Relaxed),
    }
}

/// Counts one trap served after `waited_ns`. Async-signal-safe.
fn count(write: bool, waited_ns: u64) {
    if write { &WRITE_FAULTS } else { &READ_FAULTS }.fetch_add(1, Ordering::Relaxed);
    FAULT_WAIT_NS.fetch_add(waited_ns, Ordering::Relaxed);
}

/// The shared space as the handler knows it: `(base, size)`, `(0, 0)` before [`install`].
pub fn space_bounds() -> (usize, usize) {
    (BASE.load(Ordering::Relaxed), SIZE.load(Ordering::Relaxed))
}

/// Records the calling thread as the service thread (a trap there is a bug, reported loudly).
pub fn register_service_thread() {
    SERVICE_TID.store(handler::gettid(), Ordering::Relaxed);
}

thread_local! {
    /// How many runtime locks the calling thread holds, and the name of the last one taken: a
    /// fault while one is held would wait for the service thread, which may wait for that lock.
    static RUNTIME_LOCKS: Cell<(u32, *const u8, usize)> = const { Cell::new((0, std::ptr::null(), 0)) };
}

/// The calling thread took the runtime lock `name` (a lock the service thread also takes). Until
/// the matching [`runtime_lock_released`], a trap on the shared space by this thread is a runtime
/// bug: the handler reports it, naming the lock, and aborts, instead of hanging the node.
#[inline]
pub fn runtime_lock_taken(name: &'static str) {
    RUNTIME_LOCKS.with(|c| {
        let (n, _, _) = c.get();
        c.set((n + 1, name.as_ptr(), name.len()));
    });
}

/// The calling thread let go of a runtime lock (see [`runtime_lock_taken`]).
#[inline]
pub fn runtime_lock_released() {
    RUNTIME_LOCKS.with(|c| {
        let (n, p, l) = c.get();
        c.set((n.saturating_sub(1), p, l));
    });
}

/// The name of the last runtime lock the calling thread took, if it holds any. Async-signal-safe
/// (a `const` thread-local without a destructor).
fn runtime_lock_held() -> Option<&'static [u8]> {
    let (n, name, len) = RUNTIME_LOCKS.with(|c| c.get());
    // SAFETY: `runtime_lock_taken` stores a `&'static str`.
    (n > 0).then(|| unsafe { std::slice::from_raw_parts(name, len) })
}

/// Installs the handler for the space described by `layout`. Call once per process.
///
/// # Errors
/// Fails if called twice or if the kernel refuses the pipe, the mapping or the signal action.
pub fn install(layout: SpaceLayout) -> io::Result<FaultReceiver> {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Err(io::Error::other("the fault handler is already installed"));
    }
    let receiver = FaultReceiver::open()?;
    guard::map_bitmap(layout)?;
    BASE.store(layout.base, Ordering::SeqCst);
    SIZE.store(layout.size, Ordering::SeqCst);
    // SAFETY: a zeroed sigaction is a valid value; every field we rely on is set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    let on_segv: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = handler::on_segv;
    action.sa_sigaction = on_segv as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
    // SAFETY: sa_mask is a valid sigset to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: OLD is written here, once, before our handler is live; the kernel fills it in.
    crate::sys::check(unsafe { libc::sigaction(libc::SIGSEGV, &action, handler::OLD.slot()) })?;
    Ok(receiver)
}
