//! The SIGSEGV handler itself.
//!
//! # Async-signal safety
//!
//! EVERYTHING IN THIS FILE RUNS INSIDE A SIGNAL HANDLER, on whatever application thread trapped,
//! possibly in the middle of `malloc`, while holding a lock, or inside the C library. Code here
//! and everything it calls must be async-signal-safe: no allocation, no locks (no `Mutex`, no
//! `std::io`, no `println!`), no formatting, no panics, no thread-locals with destructors. It may
//! read and write atomics, read `const` thread-locals, and make the system calls POSIX lists as
//! async-signal-safe, as the system call itself (`write(2)` through [`sys::raw_write`], never the
//! C library's `write`, which `interpose` replaces with a wrapper that may call the runtime).
//!
//! What it calls elsewhere keeps to the same rules and says so: `slots::claim`/`slots::wait`
//! (the hand-off to the service thread), `direct::try_read` (a read fetched by the faulting thread
//! itself), `guard::is_guard`/`guard::stack_owner`,
//! `x86::is_write`/`x86::is_atomic`, `sys::errno`/`sys::set_errno` (the thread's `errno` slot),
//! `interpose::write_directly` (one atomic store), `trace::record` (one atomic add into memory
//! reserved at start-up) and `trace::now_ns` (one `clock_gettime`).
//!
//! Faults outside the shared space go to whatever handler was installed before ours ([`chain`]);
//! std's prints "has overflowed its stack" for its guard pages.

use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;

use super::{direct, guard, slots, x86};
use crate::sys::{self, PAGE_SIZE, errno, set_errno};
use crate::trace::{self, EventKind, now_ns};

/// The action that was installed before ours; written once, by `install`, before our handler is.
pub(super) struct OldAction(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: written exactly once by `install` before the handler can run, only read afterwards.
unsafe impl Sync for OldAction {}
pub(super) static OLD: OldAction = OldAction(UnsafeCell::new(MaybeUninit::uninit()));

impl OldAction {
    /// Where `sigaction` stores the previous action.
    pub(super) fn slot(&self) -> *mut libc::sigaction {
        // SAFETY: a pointer into our own static; nothing reads it before `install` fills it.
        unsafe { (*self.0.get()).as_mut_ptr() }
    }
}

thread_local! {
    /// This thread's id, once asked: the handler needs it twice per fault, and on a VM every
    /// system call counts. A `const` thread-local without a destructor is a plain slot of the
    /// thread's static TLS block, so reading it in the handler neither allocates nor locks.
    static TID: Cell<i32> = const { Cell::new(0) };
}

/// The calling thread's id (`gettid`), cached.
pub(super) fn gettid() -> i32 {
    TID.with(|c| {
        let mut t = c.get();
        if t == 0 {
            // SAFETY: gettid has no preconditions and is async-signal-safe.
            t = unsafe { libc::syscall(libc::SYS_gettid) as i32 };
            c.set(t);
        }
        t
    })
}

/// Writes `msg` to this process's stderr with the system call itself.
fn write_stderr(msg: &[u8]) {
    // SAFETY: write(2) of a buffer of the stated length.
    unsafe { sys::raw_write(2, msg.as_ptr(), msg.len()) };
}

/// Reports a runtime bug (or a stack overflow) and ends the process.
fn die(parts: &[&[u8]]) -> ! {
    parts.iter().for_each(|p| write_stderr(p));
    // SAFETY: abort is async-signal-safe.
    unsafe { libc::abort() }
}

/// The SIGSEGV handler. See the top of this file: async-signal-safe code only.
pub(super) extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let (base, size) = super::space_bounds();
    if addr.wrapping_sub(base) >= size {
        // SAFETY: we forward the kernel's own arguments to the previous handler.
        unsafe { chain(sig, info, ctx) };
        return;
    }
    if gettid() == super::SERVICE_TID.load(std::sync::atomic::Ordering::Relaxed) {
        die(&[b"rthreads: BUG: the DSM service thread touched a protected page of the shared space\n"]);
    }
    if let Some(lock) = super::runtime_lock_held() {
        die(&[
            b"rthreads: BUG: a thread touched a protected page of the shared space while holding the runtime lock `",
            lock,
            b"`: serving the fault could need that lock (see rthreads/src/private.rs)\n",
        ]);
    }
    if guard::is_guard((addr - base) / PAGE_SIZE) {
        // The same words as std's report for its own guard pages, then ours.
        die(&[
            b"\nthread '",
            guard::stack_owner().unwrap_or(b"<unnamed>"),
            b"' has overflowed its stack\nrthreads: a thread has overflowed its stack in the shared space (it touched the guard page below it); Builder::stack_size sets its size\n",
        ]);
    }
    let saved_errno = errno();
    let started = now_ns();
    let page = ((addr - base) / PAGE_SIZE) as u64;
    let write = x86::is_write(ctx);
    let atomic = write && x86::is_atomic(ctx);
    // A read of a page homed elsewhere is fetched by this thread itself where it can be
    // (`direct.rs`); otherwise the service thread serves it.
    if write || !direct::try_read(page, base + page as usize * PAGE_SIZE) {
        let slot = slots::claim(gettid(), page, write, atomic, started);
        slots::wait(slot);
    }
    let ended = now_ns();
    super::count(write, ended.saturating_sub(started));
    let kind = if write { EventKind::WriteFault } else { EventKind::ReadFault };
    trace::record(kind, started, ended, page, 0);
    set_errno(saved_errno);
}

/// Passes a fault we do not own to the handler that was there before ours.
///
/// # Safety
/// Must be called from within a SIGSEGV handler with the kernel's arguments.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // Whatever the previous handler prints (std's "has overflowed its stack") goes straight to
    // stderr: the process is about to die, and the output hook is not async-signal-safe.
    crate::interpose::write_directly();
    // SAFETY: OLD was filled in by `install` before our handler was installed.
    let old = unsafe { (*OLD.0.get()).assume_init_ref() };
    let handler = old.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore the default action and return: the instruction traps again and the process
        // dies of SIGSEGV as it would have without us.
        // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
        let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
        dfl.sa_sigaction = libc::SIG_DFL;
        // SAFETY: sigaction is async-signal-safe.
        unsafe { libc::sigaction(sig, &dfl, std::ptr::null_mut()) };
    } else if old.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was registered as a three-argument SA_SIGINFO handler.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the previous handler was registered as a one-argument handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}
