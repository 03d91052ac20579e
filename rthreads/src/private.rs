//! The rule that keeps the service thread from ever waiting for an application thread, and the
//! two tools that make it structural: [`private`] and [`ServiceLock`].
//!
//! # The rule
//! **Every lock the service thread takes is taken by application threads only on a private stack,
//! and nothing inside it touches the shared space.** A fault needs the service thread; if an
//! application thread could fault while it holds a lock the service thread also takes, the fault
//! would wait for the service thread and the service thread for the lock: the node hangs. Runtime
//! code runs on application threads all the time (`spawn`, `join`, every lock and channel
//! operation, the allocator), and application threads run on stacks in the shared space (fibers),
//! which other nodes read and write: a scoped thread elsewhere reading a local of its parent
//! makes the parent's stack page read-only here, and the parent's next push traps. So:
//!
//! - runtime code that takes such a lock runs inside [`private`], which moves the calling thread
//!   onto its carrier's private stack for the duration (a few instructions; nothing when it is
//!   already on one). Arguments reach it by value (a `move` closure), copied off the shared stack
//!   before any lock is taken; runtime-internal data lives in private memory
//!   ([`crate::alloc::InternalAlloc`]);
//! - such a lock is a [`ServiceLock`], which refuses to be taken anywhere but on a private stack
//!   (a missing [`private`] fails every time its code path runs, not once in a while);
//! - the C library's allocator has locks of its own, so runtime-internal allocations are made on a
//!   private stack too (`InternalAlloc::new` checks it), and so is every call into the shared
//!   heap's allocator;
//! - a fault while a runtime lock is held is reported by the fault handler as a bug, naming the
//!   lock, instead of hanging (`dsm::fault::runtime_lock_taken`);
//! - locks that application code holds (std's `Stdout` and `Stderr` among them: a thread printing
//!   a `String` in the shared heap holds one while it faults) are never taken by the service
//!   thread: it writes its messages with one `write(2)` ([`crate::log::say`]); the
//!   `disallowed-macros` lint in `rthreads/clippy.toml` keeps `println!` and friends out of the
//!   runtime.
//!
//! What remains outside the rule: C library code called by *user* code on a shared stack (a user
//! `std::thread::spawn` holds glibc's stack-cache lock for a moment, and C libraries call
//! `malloc`): a fault there while the service thread needs the same glibc lock would still hang.
//! The runtime's own `pthread_create` calls come from the service thread for remote spawns.
//!
//! See docs/architecture.md, "The service thread never waits".

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

thread_local! {
    /// How many [`private`] calls the thread is inside.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// A cluster runs in this process: from now on fibers live in the shared space.
static CLUSTER: AtomicBool = AtomicBool::new(false);

/// Records that the runtime started (its stacks and heap are shared from now on).
pub(crate) fn cluster_started() {
    CLUSTER.store(true, Ordering::SeqCst);
}

/// Whether the calling thread runs on a stack that no other node can touch: not on a fiber, or
/// inside [`private`] (or outside a cluster, where nothing is shared).
#[inline]
pub(crate) fn on_private_stack() -> bool {
    DEPTH.with(Cell::get) > 0 || crate::fiber::current().is_null() || !CLUSTER.load(Ordering::Relaxed)
}

/// Runs `f` on the calling thread's private stack and returns its result. On a fiber (a thread
/// whose stack is in the shared space) it switches to the carrier's own stack for the call; on
/// any other thread, or when already there, it just calls `f`.
///
/// `f` must touch no shared memory while it holds a [`ServiceLock`]; it may touch shared memory
/// otherwise (such a fault is served like any other). Panics inside `f` propagate to the caller.
pub(crate) fn private<F: FnOnce() -> R, R>(f: F) -> R {
    let top = crate::fiber::private_top();
    if top == 0 || on_private_stack() || !crate::fiber::SUPPORTED {
        return f();
    }
    struct Call<F, R> {
        f: Option<F>,
        r: Option<std::thread::Result<R>>,
    }
    extern "C" fn trampoline<F: FnOnce() -> R, R>(data: *mut u8) {
        // SAFETY: `data` is the `Call` below, alive for the whole switch; moving `f` out copies its
        // captures onto this (private) stack before it runs.
        let call = unsafe { &mut *data.cast::<Call<F, R>>() };
        let f = call.f.take().expect("called once");
        let r = panic::catch_unwind(AssertUnwindSafe(f));
        call.r = Some(r);
    }
    let mut call = Call { f: Some(f), r: None };
    DEPTH.with(|d| d.set(d.get() + 1));
    // SAFETY: `top` is free stack of this OS thread (below the carrier's suspended frames), the
    // trampoline is an `extern "C"` function taking one pointer, and `call` outlives the switch.
    unsafe { crate::fiber::on_stack(top, (&raw mut call).cast(), trampoline::<F, R>) };
    DEPTH.with(|d| d.set(d.get() - 1));
    match call.r.take().expect("the trampoline ran") {
        Ok(r) => r,
        Err(payload) => panic::resume_unwind(payload),
    }
}

/// Reports a broken rule of this module (a runtime bug) with a backtrace, and aborts.
pub(crate) fn bug(what: &str) -> ! {
    thread_local!(static IN_BUG: Cell<bool> = const { Cell::new(false) });
    if IN_BUG.with(|b| b.replace(true)) {
        // Reporting the first broke the rule again: say it without a backtrace.
        crate::log::fatal(&format!("BUG: {what} (while reporting another)"));
    }
    let trace = std::backtrace::Backtrace::force_capture();
    crate::log::fatal(&format!("BUG: {what}\n{trace}"))
}

/// A lock that the service thread takes and application threads take only on a private stack
/// (see the module docs). Taking it on a shared stack is a runtime bug, reported at once.
pub(crate) struct ServiceLock<T> {
    name: &'static str,
    inner: Mutex<T>,
}

/// The guard of a [`ServiceLock`]: the lock is held, and the fault handler knows it, until drop.
pub(crate) struct ServiceGuard<'a, T> {
    guard: Option<MutexGuard<'a, T>>,
    name: &'static str,
}

impl<T> ServiceLock<T> {
    pub(crate) const fn new(name: &'static str, value: T) -> ServiceLock<T> {
        ServiceLock { name, inner: Mutex::new(value) }
    }

    /// Takes the lock.
    ///
    /// # Panics
    /// Never: called on a shared stack, it ends the process with a message naming the lock (a
    /// runtime bug: a missing [`private`]).
    pub(crate) fn lock(&self) -> ServiceGuard<'_, T> {
        if !on_private_stack() {
            bug(&format!(
                "the runtime lock `{}` was taken on a stack in the shared space (outside `private`)",
                self.name
            ));
        }
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        dsm::fault::runtime_lock_taken(self.name);
        ServiceGuard { guard: Some(guard), name: self.name }
    }
}

impl<'a, T> ServiceGuard<'a, T> {
    /// Waits on `cv`, releasing the lock meanwhile (as `Condvar::wait`).
    pub(crate) fn wait(self, cv: &Condvar) -> ServiceGuard<'a, T> {
        self.unlocked(|g| cv.wait(g).unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits on `cv` for at most `d`, releasing the lock meanwhile (as `Condvar::wait_timeout`).
    pub(crate) fn wait_timeout(self, cv: &Condvar, d: Duration) -> ServiceGuard<'a, T> {
        self.unlocked(|g| cv.wait_timeout(g, d).unwrap_or_else(|e| e.into_inner()).0)
    }

    /// Runs `wait` (which gives the lock up while it waits) with the lock not counted as held.
    fn unlocked(mut self, wait: impl FnOnce(MutexGuard<'a, T>) -> MutexGuard<'a, T>) -> ServiceGuard<'a, T> {
        let g = self.guard.take().expect("held");
        dsm::fault::runtime_lock_released();
        let g = wait(g);
        dsm::fault::runtime_lock_taken(self.name);
        ServiceGuard { guard: Some(g), name: self.name }
    }
}

impl<T> Deref for ServiceGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("held")
    }
}

impl<T> DerefMut for ServiceGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("held")
    }
}

impl<T> Drop for ServiceGuard<'_, T> {
    fn drop(&mut self) {
        if self.guard.take().is_some() {
            dsm::fault::runtime_lock_released();
        }
    }
}
