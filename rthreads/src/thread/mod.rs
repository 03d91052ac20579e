//! Threads that run on any node: `spawn`, `Builder`, `JoinHandle`, and the per-node table that
//! tells joiners when a thread has finished.
//!
//! A closure spawned on another node travels inside the spawn message: its bytes (it is a moved
//! value: nobody else can see it meanwhile) and the address of a function, `build_box::<F>`, that
//! moves them into a box on the node that runs it. This works because every node runs the same
//! binary loaded at the same address (function and vtable pointers mean the same everywhere) and
//! because everything the closure captured by reference is in the shared space. The result of a
//! thread spawned with `spawn` comes back the same way, inside the message that says the thread
//! ended, and waits in the origin's table for `join`. So a remote spawn + join is two messages
//! and no page fault. Large closures (over [`INLINE_MAX`] bytes) stay in the shared heap and
//! travel as their address, and the results of large types and of scoped threads go through a
//! shared `Packet` (a scope counts its packets, as std's does).
//!
//! A result nobody will join (its handle was dropped first) is dropped on a thread of its own on
//! the node that holds it ([`orphan`]): it may run user code, which the service thread must not.

use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::io;
use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar};

use dsm::NodeId;

use crate::alloc::{InternalAlloc, private_internal};
use crate::fiber::{self, Fiber};
use crate::log::{node as me, say};
use crate::placement::Placement;
use crate::private::{ServiceLock, private};
use crate::runtime;
mod pool;
pub(crate) mod scope;
pub(crate) mod wire;

use scope::{Scope, ScopeData, ScopedJoinHandle};
use wire::ThreadMsg;

/// Where each node's finished-thread bookkeeping lives (private memory of the node). The service
/// thread takes its lock too, so every method runs on the private stack (`crate::private`).
pub(crate) struct ThreadTable {
    map: ServiceLock<BTreeMap<u64, Entry>>,
    cv: Condvar,
}

#[derive(Default)]
struct Entry {
    finished: bool,
    started: bool,
    /// (On a node that is not the thread's origin) a `Watch`, and a `Watch` that takes the
    /// result, have been sent to the origin.
    watching: bool,
    taking: bool,
    forgotten: bool,
    watchers: Vec<NodeId>,
    /// (On the origin) the node joining the thread elsewhere, which gets the result.
    taker: Option<NodeId>,
    /// The thread's result, when it travels in messages.
    result: Option<Returned>,
}

/// The largest closure, and the largest result, that travel inside the spawn and end messages.
pub(crate) const INLINE_MAX: usize = 4096;

/// A thread's closure as it reaches the node that runs it.
pub(crate) enum Closure {
    /// A `Box<Box<dyn FnOnce() + Send>>` at this address of the shared space.
    Boxed(usize),
    /// The closure's bytes (private memory) and `build_box::<F>` for its type.
    Bytes { build: usize, bytes: Vec<u8> },
}

impl Closure {
    /// The closure of a `Spawn` message (on the service thread: copies the bytes privately).
    pub(crate) fn from_wire(closure: u64, build: u64, bytes: &[u8]) -> Closure {
        if build == 0 {
            Closure::Boxed(closure as usize)
        } else {
            Closure::Bytes { build: build as usize, bytes: InternalAlloc::with(|| bytes.to_vec()) }
        }
    }

    /// Boxes the closure (in the heap of the calling thread's node) and returns the box's address.
    fn into_box(self) -> usize {
        match self {
            Closure::Boxed(p) => p,
            Closure::Bytes { build, bytes } => {
                // SAFETY: `build` is the address of `build_box::<F>` in this same binary, loaded at
                // the same address on every node (the spawner took it with the closure's bytes);
                // the bytes are those of an `F` moved out of the spawning thread and handed to
                // this node alone, so they are moved back into a value exactly once.
                let b = unsafe {
                    let f: unsafe fn(*const u8, usize) -> usize = std::mem::transmute(build);
                    f(bytes.as_ptr(), bytes.len())
                };
                private_internal(move || drop(bytes));
                if b == 0 {
                    say(&format!(
                        "rthreads: {}: a spawn message's closure has the wrong size; not started",
                        me()
                    ));
                }
                b
            }
        }
    }

    /// Drops a closure that will never run.
    fn discard(self) {
        let b = self.into_box();
        if b != 0 {
            // SAFETY: a box made by `Builder::spawn` or `into_box`, owned by this node alone.
            drop(unsafe { Box::from_raw(b as *mut Box<dyn FnOnce() + Send>) });
        }
    }
}

// SAFETY: both symbols are defined by the linker for every executable; only their addresses
// are ever taken, never their bytes.
unsafe extern "C" {
    /// The first byte of the program's image and the end of its code (both set by the linker).
    static __executable_start: u8;
    static etext: u8;
}

/// Whether `addr` lies in this program's code: a function address that came in a message (a
/// closure's `build_box`, a result's `drop_result`) must, or the message is malformed.
pub(crate) fn in_program_code(addr: u64) -> bool {
    // Only the addresses of the linker's symbols are taken, never their bytes.
    let (start, end) = (&raw const __executable_start as u64, &raw const etext as u64);
    (start..end).contains(&addr)
}

/// Moves the `len` bytes of an `F` at `bytes` into a `Box<Box<dyn FnOnce() + Send>>`; returns its
/// address, or 0 (and nothing is read) when `len` is not the size of an `F`.
///
/// # Safety
/// `bytes` holds `len` readable bytes; when they are the size of an `F`, they are those of a live
/// `F` that nothing else will use or drop (possibly unaligned), and everything `F` borrows
/// outlives the thread that runs it.
unsafe fn build_box<'a, F: FnOnce() + Send + 'a>(bytes: *const u8, len: usize) -> usize {
    if len != size_of::<F>() {
        return 0;
    }
    // SAFETY: see the contract above.
    let f = unsafe { std::ptr::read_unaligned(bytes.cast::<F>()) };
    let b: Box<dyn FnOnce() + Send + 'a> = Box::new(f);
    // SAFETY: only the lifetime is erased; the spawner promised what `F` borrows lives long enough.
    let b: Box<dyn FnOnce() + Send + 'static> = unsafe { std::mem::transmute(b) };
    Box::into_raw(Box::new(b)) as usize
}

/// A thread's result moved out of it: the bytes of its `std::thread::Result<T>` (private memory)
/// and `drop_result::<T>` (0 when there is nothing to drop).
pub(crate) struct Returned {
    drop_fn: usize,
    bytes: Vec<u8>,
}

impl Returned {
    /// A result that came in a message (on the service thread: copies the bytes privately).
    pub(crate) fn from_wire(c: wire::Carried<'_>) -> Returned {
        Returned { drop_fn: c.drop_fn as usize, bytes: InternalAlloc::with(|| c.bytes.to_vec()) }
    }

    fn carried(&self) -> wire::Carried<'_> {
        wire::Carried { drop_fn: self.drop_fn as u64, bytes: &self.bytes }
    }

    /// Moves the result out as a `std::thread::Result<T>`, if it has the size of one.
    ///
    /// # Safety
    /// The bytes are those of a `std::thread::Result<T>` of this very `T`.
    unsafe fn take<T>(self) -> Option<std::thread::Result<T>> {
        let v = (self.bytes.len() == size_of::<std::thread::Result<T>>())
            // SAFETY: see the contract above; the bytes are read once, then only freed.
            .then(|| unsafe {
                std::ptr::read_unaligned(self.bytes.as_ptr().cast::<std::thread::Result<T>>())
            });
        private_internal(move || drop(self.bytes));
        v
    }

    /// Drops the result (on an application thread: it may run the result's `Drop`).
    fn dispose(self) {
        if self.drop_fn != 0 {
            // SAFETY: `drop_fn` is `drop_result::<T>` of this binary for the `T` whose bytes these
            // are, sent along with them (it checks their length); they are dropped once, here.
            unsafe {
                let f: unsafe fn(*const u8, usize) = std::mem::transmute(self.drop_fn);
                f(self.bytes.as_ptr(), self.bytes.len());
            }
        }
        private_internal(move || drop(self.bytes));
    }
}

/// Drops the `std::thread::Result<T>` whose `len` bytes are at `p`; nothing when `len` is not its
/// size (a malformed message: the bytes are only freed).
///
/// # Safety
/// `p` holds `len` readable bytes; when they are the size of a `std::thread::Result<T>`, they are
/// those of a live one that nothing else will use or drop.
unsafe fn drop_result<T>(p: *const u8, len: usize) {
    if len != size_of::<std::thread::Result<T>>() {
        return;
    }
    // SAFETY: see the contract above.
    drop(unsafe { std::ptr::read_unaligned(p.cast::<std::thread::Result<T>>()) });
}

/// Drops a result whose handle is gone, from any thread (the service thread included): on a
/// thread of its own when dropping it runs code.
pub(crate) fn orphan(r: Returned) {
    if r.drop_fn == 0 {
        return private_internal(move || drop(r));
    }
    private_internal(move || {
        // `carrier` counts a thread running on this node; this one counts itself out when done.
        let drop_it = move || {
            r.dispose();
            crate::placement::thread_left();
        };
        if let Err(e) = carrier(Some("rthreads-drop".into()), 0, drop_it) {
            say(&format!(
                "rthreads: {}: cannot start a thread to drop a detached thread's result: {e}",
                me()
            ));
        }
    });
}

thread_local! {
    /// The result of the rthread this carrier has just run, when it travels in the end message.
    static RESULT: std::cell::RefCell<Option<Returned>> = const { std::cell::RefCell::new(None) };
}

/// Moves `r`, the result of the rthread the calling carrier runs, out of it, for its end message.
#[inline(never)]
fn stash_result<T>(r: std::thread::Result<T>) {
    let drop_fn =
        if r.is_ok() && !std::mem::needs_drop::<T>() { 0 } else { drop_result::<T> as *const () as usize };
    let r = std::mem::ManuallyDrop::new(r);
    let size = size_of::<std::thread::Result<T>>();
    let at = (&raw const *r) as usize;
    // Runtime memory is allocated on the carrier's private stack (the fiber's is shared).
    private_internal(move || {
        let mut v = Vec::<u8>::with_capacity(size);
        // SAFETY: copies the value's `size` bytes (padding included, read back only as the value's
        // type by `Returned::take`) into a buffer of that capacity; the value, alive on the
        // caller's stack until this returns, is never used again (it is in a `ManuallyDrop`): the
        // bytes own it now.
        unsafe {
            std::ptr::copy_nonoverlapping(at as *const u8, v.as_mut_ptr(), size);
            v.set_len(size);
        }
        RESULT.with(|c| *c.borrow_mut() = Some(Returned { drop_fn, bytes: v }));
    });
}

/// The result the calling carrier's rthread left with [`stash_result`], if any.
fn stashed_result() -> Option<Returned> {
    RESULT.with(|c| c.borrow_mut().take())
}

pub(crate) static TABLE: ThreadTable =
    ThreadTable { map: ServiceLock::new("thread.table", BTreeMap::new()), cv: Condvar::new() };

fn send(to: NodeId, frame: Vec<u8>) {
    if let Some(rt) = runtime::get() {
        rt.send(to, frame);
    }
}

impl ThreadTable {
    fn register(&'static self, tid: u64) {
        private_internal(move || {
            self.map.lock().insert(tid, Entry::default());
        });
    }

    /// The thread `tid` has ended (`started == false`: it could not be started at all), with its
    /// result when that travels in messages.
    pub(crate) fn finish(&'static self, tid: u64, started: bool, result: Option<Returned>) {
        private_internal(move || {
            let mut map = self.map.lock();
            let Some(e) = map.get_mut(&tid) else {
                drop(map);
                if let Some(r) = result {
                    orphan(r);
                }
                return;
            };
            e.finished = true;
            e.started = started;
            if result.is_some() {
                e.result = result;
            }
            let watchers = std::mem::take(&mut e.watchers);
            let taker = e.taker.take();
            let given = taker.and_then(|_| e.result.take());
            let orphaned = if e.forgotten { map.remove(&tid).and_then(|e| e.result) } else { None };
            drop(map);
            self.cv.notify_all();
            for w in watchers.into_iter().filter(|&w| Some(w) != taker) {
                send(w, ThreadMsg::Finished { tid, started, result: None }.encode());
            }
            if let Some(t) = taker {
                let result = given.as_ref().map(Returned::carried);
                send(t, ThreadMsg::Finished { tid, started, result }.encode());
            }
            if let Some(r) = orphaned {
                orphan(r);
            }
        });
    }

    /// Node `from` holds the handle of `tid` (spawned here) and wants to hear when it ends; with
    /// `take`, it joins the thread and gets the result.
    pub(crate) fn watch(&'static self, tid: u64, from: NodeId, take: bool) {
        private_internal(move || {
            let mut map = self.map.lock();
            match map.get_mut(&tid) {
                Some(e) if e.finished => {
                    let started = e.started;
                    let given = if take { e.result.take() } else { None };
                    drop(map);
                    let result = given.as_ref().map(Returned::carried);
                    send(from, ThreadMsg::Finished { tid, started, result }.encode());
                }
                Some(e) if take => e.taker = Some(from),
                Some(e) => e.watchers.push(from),
                None => {}
            }
        });
    }

    /// The handle of `tid` (spawned here) was joined or dropped: returns the result that nobody
    /// will take now, if the thread has ended.
    pub(crate) fn forget(&'static self, tid: u64) -> Option<Returned> {
        private_internal(move || {
            let mut map = self.map.lock();
            let e = map.get_mut(&tid)?;
            if e.finished {
                map.remove(&tid).and_then(|e| e.result)
            } else {
                e.forgotten = true;
                None
            }
        })
    }

    /// Makes sure this node hears of the end of `tid`, spawned on `origin` (and, with `take`, gets
    /// its result).
    fn ensure_known(&self, map: &mut BTreeMap<u64, Entry>, tid: u64, origin: NodeId, take: bool) {
        if origin == me() {
            return;
        }
        let e = map.entry(tid).or_default();
        if !e.watching || (take && !e.taking) {
            e.watching = true;
            e.taking |= take;
            send(origin, ThreadMsg::Watch { tid, take }.encode());
        }
    }

    fn is_finished(&'static self, tid: u64, origin: NodeId) -> bool {
        private_internal(move || {
            let mut map = self.map.lock();
            self.ensure_known(&mut map, tid, origin, false);
            map.get(&tid).is_some_and(|e| e.finished)
        })
    }

    /// Blocks until `tid` has ended (and, with `take`, until its result is here); returns whether
    /// it ever started, and its result when that travels in messages.
    fn wait(&'static self, tid: u64, origin: NodeId, take: bool) -> (bool, Option<Returned>) {
        private_internal(move || {
            let mut map = self.map.lock();
            self.ensure_known(&mut map, tid, origin, take);
            let started = std::time::Instant::now();
            let _count = WaitTimer(started);
            // A thread that started has a result; elsewhere than the origin it comes with the
            // answer to the taking `Watch`, which may follow a plain `Finished`.
            let remote = origin != me();
            loop {
                match map.get(&tid) {
                    Some(e) if e.finished && !(take && remote && e.started && e.result.is_none()) => break,
                    Some(_) => map = map.wait(&self.cv),
                    None => return (false, None),
                }
            }
            let (started, result) = map.remove(&tid).map_or((false, None), |e| (e.started, e.result));
            drop(map);
            if remote {
                send(origin, ThreadMsg::Forget { tid }.encode());
            }
            (started, result)
        })
    }

    /// The handle of `tid` was dropped: returns the thread's result if it is here and nobody will
    /// take it now.
    fn drop_handle(&'static self, tid: u64, origin: NodeId) -> Option<Returned> {
        if origin == me() {
            self.forget(tid)
        } else {
            private_internal(move || {
                let result = self.map.lock().remove(&tid).and_then(|e| e.result);
                send(origin, ThreadMsg::Forget { tid }.encode());
                result
            })
        }
    }
}

/// Adds the time until it is dropped to the node's synchronisation wait time.
struct WaitTimer(std::time::Instant);

impl Drop for WaitTimer {
    fn drop(&mut self) {
        crate::counters::sync_waited(self.0.elapsed(), crate::counters::Wait::Join);
    }
}

/// Starts an OS thread on this node, a carrier, that runs `closure` on a new fiber with a stack of
/// `stack` bytes (0: the default) in the shared space. The closure comes back if no thread starts.
fn start_thread(
    tid: u64,
    origin: NodeId,
    closure: Closure,
    stack: usize,
    name: Option<String>,
) -> Result<(), (io::Error, Option<Closure>)> {
    // The closure waits in a private cell until the carrier takes it, so that a carrier that never
    // starts gives it back.
    let cell = private_internal(move || Arc::new(ServiceLock::new("thread.closure", Some(closure))));
    let theirs = Arc::clone(&cell);
    let started = private_internal(move || {
        carrier(name.clone(), if fiber::SUPPORTED { fiber::CARRIER_STACK } else { stack }, move || {
            crate::counters::thread_started();
            // The start of a spawned thread is an acquire: the closure and what it captured, written
            // before `spawn`, are visible.
            crate::consistency::acquire();
            let taken = private_internal(|| theirs.lock().take());
            InternalAlloc::with(|| drop(theirs));
            let Some(closure) = taken else { return };
            let closure = closure.into_box();
            if closure == 0 {
                // A malformed spawn message (said by `into_box`): `join` reports the thread as
                // not started.
                crate::placement::thread_left();
                thread_done(tid, origin, false, None);
                return;
            }
            if !fiber::SUPPORTED {
                // SAFETY: `closure` came from `Box::into_raw` on a `Box<Box<dyn FnOnce() + Send>>` in
                // `Builder::spawn` or `build_box` of this same binary, loaded at the same address on
                // every node; it is handed to exactly one node, which takes ownership here once.
                let f = unsafe { Box::from_raw(closure as *mut Box<dyn FnOnce() + Send>) };
                f();
                crate::consistency::release();
                crate::placement::thread_left();
                thread_done(tid, origin, true, stashed_result());
                return;
            }
            let stack = if stack == 0 { fiber::default_stack() } else { stack };
            match Fiber::new(stack, tid, origin, closure) {
                // SAFETY: a new fiber, carried by this thread only.
                Ok(f) => unsafe { carry(f, name.as_deref()) },
                Err(e) => {
                    say(&format!("rthreads: {}: cannot make a stack for a thread: {e}", me()));
                    // The closure never ran, and is dropped here instead.
                    Closure::Boxed(closure).discard();
                    crate::placement::thread_left();
                    thread_done(tid, origin, false, None);
                }
            }
        })
    });
    match started {
        Ok(()) => Ok(()),
        Err(e) => {
            let closure = private_internal(|| cell.lock().take());
            private_internal(move || drop(cell));
            Err((e, closure))
        }
    }
}

/// Runs `body` on a carrier of its own named `name` with a stack of `stack` bytes (0: std's
/// default): a waiting one from the pool when it fits (unnamed, the carrier stack of fibers), else
/// a new OS thread. Either way the carrier starts the next waiting carrier once `body` has run.
fn carrier(name: Option<String>, stack: usize, body: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let _internal = InternalAlloc::new();
    // Counted from now, not from when the new thread first runs: a spawn decision made right after
    // this one (here, or on a node that gets this node's next load report) must see it.
    crate::placement::thread_arrived();
    let poolable = name.is_none() && fiber::SUPPORTED && stack == fiber::CARRIER_STACK;
    let body: pool::Job = Box::new(body);
    let body = if poolable {
        match pool::hand(body) {
            Ok(()) => return Ok(()),
            Err(body) => body,
        }
    } else {
        body
    };
    let mut b = std::thread::Builder::new();
    let named = name.is_some();
    if let Some(n) = name {
        b = b.name(n);
    }
    if stack > 0 {
        b = b.stack_size(stack);
    }
    let spawned = b.spawn(move || {
        if !named {
            name_carrier();
        }
        body();
        if poolable {
            pool::refill();
        }
    });
    if spawned.is_err() {
        crate::placement::thread_left();
    }
    spawned.map(drop)
}

/// Gives an unnamed carrier an OS name of its own for debuggers and `top` (it would inherit the
/// creating thread's, often the service thread's); std's name stays unset.
fn name_carrier() {
    // SAFETY: PR_SET_NAME with a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"rthreads-thread".as_ptr()) };
}

/// What `fiber::carry` returned, after telling the runtime about the stack's former guard page.
fn carried((outcome, unguarded): (fiber::Outcome, Option<usize>)) -> fiber::Outcome {
    if let (Some(page), Some(rt)) = (unguarded, runtime::get()) {
        rt.unguarded(page);
    }
    outcome
}

/// Runs the fiber `f` on the calling carrier until it ends (then reports it to its origin) or
/// leaves (then sends it to its target).
///
/// # Safety
/// `f` must be a suspended fiber that no other thread runs.
unsafe fn carry(f: *mut Fiber, name: Option<&str>) {
    // SAFETY: the caller hands us a live, suspended fiber.
    let (tid, origin) = unsafe { ((*f).tid, (*f).origin) };
    crate::sync::watch::thread_starts(tid, name);
    // SAFETY: as above.
    match carried(unsafe { fiber::carry(f, name) }) {
        fiber::Outcome::Finished => {
            // The end of a thread is a release: its result and everything it wrote reach `join`.
            crate::consistency::release();
            crate::placement::thread_left();
            thread_done(tid, origin, true, stashed_result());
        }
        fiber::Outcome::Leaving(target) => {
            crate::placement::thread_left();
            send_away(target, tid, origin, f, name.unwrap_or(""));
        }
    }
}

/// Sends the fiber `f` of thread `tid` (of node `origin`), which left its carrier, to `target`.
fn send_away(target: NodeId, tid: u64, origin: NodeId, f: *mut Fiber, name: &str) {
    // Everything the thread wrote here, its stack included, must reach the target.
    crate::consistency::release();
    crate::counters::thread_moved();
    let frame = InternalAlloc::with(|| ThreadMsg::Migrate { tid, origin, fiber: f as u64, name }.encode());
    send(target, frame);
}

fn thread_done(tid: u64, origin: NodeId, started: bool, result: Option<Returned>) {
    // The origin learns this node's load before it learns of the end (same connection).
    crate::placement::report_to(origin);
    if origin == me() {
        TABLE.finish(tid, started, result);
    } else {
        InternalAlloc::with(|| {
            let frame =
                ThreadMsg::Done { tid, started, result: result.as_ref().map(Returned::carried) }.encode();
            drop(result);
            send(origin, frame);
        });
    }
}

/// Called by the service thread for a `Spawn` message from `origin`.
pub(crate) fn start_remote(tid: u64, origin: NodeId, closure: Closure, stack: usize, name: &str) {
    let name = (!name.is_empty()).then(|| name.to_owned());
    if let Err((e, closure)) = start_thread(tid, origin, closure, stack, name) {
        say(&format!("rthreads: {}: cannot start a thread for {origin}: {e}", me()));
        // The closure itself is not dropped (that may run code, which the service thread must
        // not): it leaks, with everything it owns; only its private copy is freed.
        InternalAlloc::with(|| drop(closure));
        thread_done(tid, origin, false, None);
    }
}

/// Called by the service thread for a `Migrate` message: thread `tid` of node `origin`, suspended
/// in the fiber at `fiber`, goes on here.
pub(crate) fn resume_remote(tid: u64, origin: NodeId, fiber: usize, name: &str) {
    let plausible = fiber.is_multiple_of(64) && runtime::get().and_then(|r| r.page_index(fiber)).is_some();
    if !plausible || !fiber::SUPPORTED {
        say(&format!(
            "rthreads: {}: ignoring a migration of thread {tid:#x} to {fiber:#x}: not a fiber",
            me()
        ));
        return;
    }
    let name = (!name.is_empty()).then(|| name.to_owned());
    let started = carrier(name.clone(), fiber::CARRIER_STACK, move || {
        let f = fiber as *mut Fiber;
        // Arriving is an acquire: what the thread (and others before it) released is visible.
        crate::consistency::acquire();
        // SAFETY: the address lies in the shared space; the fields are read like any shared data.
        let (t, o) = unsafe { ((*f).tid, (*f).origin) };
        if (t, o) != (tid, origin) {
            say(&format!(
                "rthreads: {}: a migration of thread {tid:#x} names a fiber of thread {t:#x}; dropped",
                me()
            ));
            crate::placement::thread_left();
            return;
        }
        // SAFETY: the fiber switched out on its old node and was sent to us alone.
        let live = unsafe { fiber::prefetch(f) };
        crate::counters::stack_moved(live);
        // SAFETY: as above.
        unsafe { carry(f, name.as_deref()) };
    });
    if let Err(e) = started {
        say(&format!("rthreads: {}: cannot resume a thread that moved here from another node: {e}", me()));
        thread_done(tid, origin, false, None);
    }
}

/// Runs `body` (the body of `#[rthreads::main]`) on a fiber carried by the calling thread, so that
/// scoped threads on other nodes can borrow its locals and it can migrate. Returns its result, or
/// its panic.
pub(crate) fn run_main_fiber<R>(body: impl FnOnce() -> R) -> std::thread::Result<R> {
    if !fiber::SUPPORTED || runtime::get().is_none() {
        return panic::catch_unwind(AssertUnwindSafe(body));
    }
    struct AssertSend<T>(T);
    // SAFETY: the body stays one logical thread: it runs on one node at a time, handed over with
    // release/acquire, as a migrating rthread does.
    unsafe impl<T> Send for AssertSend<T> {}
    let mut slot: Box<Option<std::thread::Result<R>>> = Box::new(None);
    let at = AssertSend(&raw mut *slot);
    let run = AssertSend(body);
    let main: Box<dyn FnOnce() + Send + '_> = Box::new(move || {
        let (at, run) = (at, run);
        let r = panic::catch_unwind(AssertUnwindSafe(run.0));
        // SAFETY: `slot` outlives the fiber (we wait for it below) and only the fiber writes it.
        unsafe { *at.0 = Some(r) };
    });
    // SAFETY: only the lifetime is erased: this function does not return before the body ended.
    let main: Box<dyn FnOnce() + Send + 'static> = unsafe { std::mem::transmute(main) };
    let closure = Box::into_raw(Box::new(main)) as usize;
    let me = me();
    let tid = new_tid(me);
    let f = match Fiber::new(fiber::MAIN_STACK, tid, me, closure) {
        Ok(f) => f,
        Err(e) => {
            say(&format!("rthreads: {me}: main runs on its own stack: {e}"));
            // SAFETY: the box was made above and never handed to anyone.
            let main = unsafe { Box::from_raw(closure as *mut Box<dyn FnOnce() + Send>) };
            main();
            return slot.take().unwrap_or_else(|| Err(Box::new("main ended without a result")));
        }
    };
    crate::sync::watch::thread_starts(tid, Some("main"));
    // SAFETY: a new fiber, carried by this thread only; our own stack is private.
    match carried(unsafe { fiber::carry(f, Some("main")) }) {
        fiber::Outcome::Finished => {}
        fiber::Outcome::Leaving(target) => {
            // Registered before the fiber goes, so that its end, wherever it comes, is heard here.
            TABLE.register(tid);
            send_away(target, tid, me, f, "main");
            TABLE.wait(tid, me, false);
            crate::consistency::acquire();
        }
    }
    slot.take().unwrap_or_else(|| Err(Box::new("rthreads: main could not be resumed on another node")))
}

pub(crate) struct Packet<T> {
    result: UnsafeCell<Option<std::thread::Result<T>>>,
    /// The scope of a scoped thread, told when the packet goes (as in std: a scope waits until
    /// every packet of its threads is gone, and a result still holding a panic then is a panic
    /// nobody joined).
    scope: Option<Arc<ScopeData>>,
}

impl<T> Drop for Packet<T> {
    fn drop(&mut self) {
        let unhandled = matches!(self.result.get_mut(), Some(Err(_)));
        // Drop the result now, on this thread, before the scope may end.
        let dropped = panic::catch_unwind(AssertUnwindSafe(|| *self.result.get_mut() = None));
        if dropped.is_err() {
            say("rthreads: the result of a thread panicked while being dropped; aborting");
            std::process::abort();
        }
        if let Some(scope) = &self.scope {
            scope.thread_gone(unhandled);
        }
    }
}

// SAFETY: the result cell is written once by the spawned thread before it reports completion, and
// read only by the joiner after it has learnt of that completion; the two never overlap.
unsafe impl<T: Send> Sync for Packet<T> {}

/// A thread factory, as `std::thread::Builder`, that also chooses the node, or the placement policy
/// that chooses it.
///
/// # Examples
/// ```
/// let h = rthreads::Builder::new().name("worker".into()).node(0).spawn(|| 6 * 7).unwrap();
/// assert_eq!(h.node(), 0);
/// assert_eq!(h.join().unwrap(), 42);
/// ```
#[derive(Debug, Default)]
#[must_use = "a Builder does nothing until spawn is called"]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
    node: Option<usize>,
    placement: Option<Placement>,
}

impl Builder {
    /// A builder with std's defaults and the default placement.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the thread (shown in panic messages, as in std).
    pub fn name(mut self, name: String) -> Builder {
        self.name = Some(name);
        self
    }

    /// Sets the stack size of the thread, in bytes.
    pub fn stack_size(mut self, size: usize) -> Builder {
        self.stack_size = Some(size);
        self
    }

    /// Runs the thread on node `node` instead of where the placement policy would put it.
    pub fn node(mut self, node: usize) -> Builder {
        self.node = Some(node);
        self
    }

    /// Chooses the node with `placement` instead of the run's policy (`RTHREADS_PLACEMENT`);
    /// [`node`](Builder::node) still wins over both.
    ///
    /// # Examples
    /// ```
    /// use rthreads::{Builder, Placement};
    ///
    /// let h = Builder::new().placement(Placement::LocalFirst).spawn(rthreads::current_node).unwrap();
    /// assert_eq!(h.join().unwrap(), 0); // one node outside a cluster
    /// ```
    pub fn placement(mut self, placement: Placement) -> Builder {
        self.placement = Some(placement);
        self
    }

    /// Spawns the thread, on the chosen node or where the placement policy puts it (see
    /// [`Placement`]; the default, round-robin, goes over all nodes starting with the spawning node
    /// itself: the k-th spawn from node `m` of an `n`-node cluster goes to node `(m + k) % n`).
    ///
    /// Spawning is a release point: everything the spawning thread wrote before `spawn` is visible
    /// to the new thread (under the sequentially consistent protocol every write is visible at
    /// once anyway).
    ///
    /// # Errors
    /// `InvalidInput` for a node that does not exist; the OS error if a thread on this node cannot
    /// be created. A thread that cannot be created on a remote node is reported by `join`, which
    /// returns `Err` (the remote node also prints the cause).
    ///
    /// # Examples
    /// ```
    /// let h = rthreads::Builder::new().stack_size(1 << 20).spawn(|| "done").unwrap();
    /// assert_eq!(h.join().unwrap(), "done");
    /// assert!(rthreads::Builder::new().node(999).spawn(|| ()).is_err());
    /// ```
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // SAFETY: `F` and `T` are 'static, so nothing they borrow can end before the thread.
        unsafe { self.spawn_unchecked(f, None) }
    }

    /// Spawns the thread of a scope: as [`Builder::spawn`], but the closure may borrow from the
    /// scope's environment (see [`crate::scope`]).
    ///
    /// # Errors
    /// As [`Builder::spawn`].
    ///
    /// # Examples
    /// ```
    /// let mut v = vec![1, 2, 3];
    /// rthreads::scope(|s| {
    ///     let h = rthreads::Builder::new().name("adder".into()).spawn_scoped(s, || v.iter().sum::<i32>()).unwrap();
    ///     assert_eq!(h.join().unwrap(), 6);
    /// });
    /// v.push(4);
    /// ```
    pub fn spawn_scoped<'scope, 'env, F, T>(
        self,
        scope: &'scope Scope<'scope, 'env>,
        f: F,
    ) -> io::Result<ScopedJoinHandle<'scope, T>>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let mut b = self;
        if b.node.is_none() && !scope.remote {
            // The scope's owner runs on a private stack: its locals exist on its node only.
            b.node = Some(scope.owner);
        }
        // SAFETY: the scope waits, before it returns, until this thread's packet is gone, which
        // is after the thread has run `f` and dropped everything `f` borrowed or returned.
        unsafe { b.spawn_unchecked(f, Some(Arc::clone(&scope.data))) }.map(ScopedJoinHandle::new)
    }

    /// # Safety
    /// Everything `f` and `T` borrow must outlive the thread (up to the drop of its packet).
    unsafe fn spawn_unchecked<'a, F, T>(
        self,
        f: F,
        scope: Option<Arc<ScopeData>>,
    ) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'a,
        T: Send + 'a,
    {
        let (me, nodes) = (me(), node_count());
        let target = match self.node {
            Some(n) if n < nodes => NodeId(n as u16),
            Some(n) => return Err(no_such_node(n, nodes)),
            None => crate::placement::choose(me, nodes, self.placement),
        };
        if let Some(s) = &scope {
            s.thread_added();
        }
        // The result travels in the end message unless the thread belongs to a scope (which
        // counts packets) or the result is large.
        let inline = scope.is_none() && size_of::<std::thread::Result<T>>() <= INLINE_MAX;
        let tid = new_tid(me);
        TABLE.register(tid);
        let stack = self.stack_size.unwrap_or(0);
        let hold = if inline {
            let main = move || stash_result(panic::catch_unwind(AssertUnwindSafe(f)));
            self.launch(tid, target, stack, main)?;
            Hold::Table(std::marker::PhantomData)
        } else {
            let packet: Arc<Packet<T>> = Arc::new(Packet { result: UnsafeCell::new(None), scope });
            let theirs = Arc::clone(&packet);
            let main = move || {
                let r = panic::catch_unwind(AssertUnwindSafe(f));
                // SAFETY: only this thread writes the packet, before it reports completion.
                unsafe { *theirs.result.get() = Some(r) };
                drop(theirs);
            };
            self.launch(tid, target, stack, main)?;
            Hold::Packet(packet)
        };
        Ok(JoinHandle { tid, origin: me, node: target, hold })
    }

    /// Starts `main` as thread `tid` on `target`: on this node, or with a spawn message that
    /// carries the closure's bytes (or its address in the shared heap, when it is large).
    fn launch<'a, M: FnOnce() + Send + 'a>(
        self,
        tid: u64,
        target: NodeId,
        stack: usize,
        main: M,
    ) -> io::Result<()> {
        let boxed = |main: M| {
            let main: Box<dyn FnOnce() + Send + 'a> = Box::new(main);
            // SAFETY: only the lifetime is erased; the caller of `spawn_unchecked` promises that
            // what `main` borrows lives long enough.
            let main: Box<dyn FnOnce() + Send + 'static> = unsafe { std::mem::transmute(main) };
            Box::into_raw(Box::new(main)) as usize
        };
        if target == me() {
            return start_thread(tid, target, Closure::Boxed(boxed(main)), stack, self.name).map_err(
                |(e, c)| {
                    // The thread did not start, so the closure was never handed to anyone.
                    if let Some(c) = c {
                        c.discard();
                    }
                    let _ = TABLE.forget(tid);
                    TABLE.finish(tid, false, None);
                    e
                },
            );
        }
        let Some(rt) = runtime::get() else { return Ok(()) };
        let (closure, build, main) = if size_of::<M>() <= INLINE_MAX {
            (0, build_box::<M> as *const () as usize as u64, Some(std::mem::ManuallyDrop::new(main)))
        } else {
            (boxed(main) as u64, 0, None)
        };
        // A release point: what the closure captured by reference must reach the other node.
        crate::consistency::release();
        let name = self.name;
        let bytes = main.as_ref().map_or(&[][..], |m| {
            // SAFETY: the closure's own bytes (padding included, read back only as an `M` by
            // `build_box`); it is in a `ManuallyDrop` and never used here again: the message owns it.
            unsafe { std::slice::from_raw_parts((&raw const **m).cast::<u8>(), size_of::<M>()) }
        });
        let (ptr, len) = (bytes.as_ptr() as usize, bytes.len());
        private(move || {
            // SAFETY: the bytes of `main`, alive on the caller's stack until `private` returns.
            let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
            let name = name.as_deref().unwrap_or("");
            let frame = InternalAlloc::with(|| {
                ThreadMsg::Spawn { tid, closure, build, stack: stack as u64, name, bytes }.encode()
            });
            rt.send(target, frame);
        });
        crate::placement::sent(target);
        Ok(())
    }
}

/// Where a thread's result waits for `join`.
enum Hold<T> {
    /// In a shared cell the thread writes.
    Packet(Arc<Packet<T>>),
    /// In this node's thread table (it travels in messages). The marker keeps the handle's auto
    /// traits those of the packet's.
    Table(std::marker::PhantomData<Arc<Packet<T>>>),
    /// Joined.
    Gone,
}

/// A new thread id of this node: its number in the high 16 bits.
fn new_tid(me: NodeId) -> u64 {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let seq = runtime::get().map_or(&SEQ, |r| &r.next_seq).fetch_add(1, Ordering::Relaxed);
    (u64::from(me.0) << 48) | seq
}

/// Spawns a thread on some node of the cluster, as `std::thread::spawn` does on this machine.
///
/// The closure and its result must be `Send + 'static`, as in std. The run's placement policy
/// chooses the node (`RTHREADS_PLACEMENT`, round-robin by default: see [`Placement`]).
///
/// # Panics
/// If the thread cannot be created on this node (as std's `spawn`); use [`Builder::spawn`] to get
/// the error instead.
///
/// # Examples
/// ```
/// let h = rthreads::spawn(|| (rthreads::current_node(), 2 + 2));
/// let (node, sum) = h.join().unwrap();
/// assert!(node < rthreads::node_count());
/// assert_eq!(sum, 4);
/// ```
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new().spawn(f).expect("failed to spawn thread")
}

/// An owned permission to join a thread, on whatever node it runs; as `std::thread::JoinHandle`.
/// It may be sent to and joined on any node. Dropping it detaches the thread.
pub struct JoinHandle<T> {
    tid: u64,
    origin: NodeId,
    node: NodeId,
    hold: Hold<T>,
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle").field("tid", &self.tid).field("node", &self.node).finish_non_exhaustive()
    }
}

impl<T> std::fmt::Debug for Packet<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Packet")
    }
}

impl<T> JoinHandle<T> {
    /// Waits for the thread to finish and returns its result; `Err` with the panic payload if it
    /// panicked (a `String` or `&'static str` for `panic!` messages, as in std).
    ///
    /// The thread's completion synchronizes-with the return of `join`: everything the thread wrote
    /// is visible to the caller afterwards, on any node.
    ///
    /// # Errors
    /// The payload of the thread's panic, or a `String` saying the thread could not be started on
    /// its node.
    ///
    /// # Examples
    /// ```
    /// let h = rthreads::spawn(|| panic!("boom"));
    /// let err = h.join().unwrap_err();
    /// assert_eq!(err.downcast_ref::<&str>(), Some(&"boom"));
    /// ```
    pub fn join(mut self) -> std::thread::Result<T> {
        let hold = std::mem::replace(&mut self.hold, Hold::Gone);
        let (started, returned) = TABLE.wait(self.tid, self.origin, matches!(hold, Hold::Table(_)));
        crate::consistency::acquire();
        if !started {
            return Err(Box::new(format!("rthreads: the thread could not be started on {}", self.node)));
        }
        let r = match hold {
            // SAFETY: the thread has finished: it wrote the packet before reporting completion,
            // and nobody else reads it (the handle is consumed).
            Hold::Packet(packet) => unsafe { (*packet.result.get()).take() },
            // SAFETY: the result of this thread, a `std::thread::Result<T>` moved out of it.
            Hold::Table(_) => returned.and_then(|r| unsafe { r.take::<T>() }),
            Hold::Gone => None,
        };
        r.unwrap_or_else(|| Err(Box::new(String::from("rthreads: the thread ended without a result"))))
    }

    /// Whether the thread has finished running (without blocking, as std's). Asking about a thread
    /// spawned on another node may take a message round trip before it can say `true`.
    pub fn is_finished(&self) -> bool {
        TABLE.is_finished(self.tid, self.origin)
    }

    /// The node the thread runs on.
    pub fn node(&self) -> usize {
        self.node.index()
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if !matches!(self.hold, Hold::Gone)
            && let Some(r) = TABLE.drop_handle(self.tid, self.origin)
        {
            r.dispose();
        }
    }
}

/// The node the calling thread runs on (`0` outside a cluster).
///
/// # Examples
/// ```
/// assert_eq!(rthreads::current_node(), 0); // no #[rthreads::main] here: a one-node cluster
/// ```
pub fn current_node() -> usize {
    me().index()
}

/// The number of nodes in the cluster (`1` outside a cluster).
///
/// # Examples
/// ```
/// assert!(rthreads::node_count() >= 1);
/// ```
pub fn node_count() -> usize {
    runtime::get().map_or(1, |r| usize::from(r.nodes))
}

/// The parallelism of the whole cluster: the sum of every node's
/// `std::thread::available_parallelism`.
///
/// # Errors
/// As std's, outside a cluster.
///
/// # Examples
/// ```
/// assert!(rthreads::available_parallelism().unwrap().get() >= 1);
/// ```
pub fn available_parallelism() -> io::Result<NonZeroUsize> {
    match runtime::get() {
        Some(r) => NonZeroUsize::new(r.parallelism.iter().map(|&p| p.max(1) as usize).sum())
            .ok_or_else(|| io::Error::other("no parallelism")),
        None => std::thread::available_parallelism(),
    }
}

/// The number of the shared-space page holding `ptr` (the numbers the protocol log prints), or
/// `None` for memory outside the shared space (a stack, a `static`, anything before start-up).
///
/// # Examples
/// ```
/// let on_stack = 5u32;
/// assert_eq!(rthreads::page_of(&on_stack), None);
/// ```
pub fn page_of<T: ?Sized>(ptr: *const T) -> Option<u64> {
    runtime::get()?.page_index(ptr.cast::<u8>() as usize)
}

/// Moves the calling thread to node `node`: it stops on its node and goes on running on `node`
/// from the statement after the call, with the same stack, locals and heap. Every address stays
/// valid: the stack lives in the shared space, and its pages follow the thread on demand (the few
/// around the stack pointer come at once). Moving to the node the thread is on does nothing.
///
/// The move is a release on the old node and an acquire on the new one: everything the thread
/// wrote before is visible to it after, whatever the protocol.
///
/// What does not move:
/// - thread-locals: the thread sees the values of the node it runs on (each node's runtime thread
///   carrying it has its own); in particular `std::thread::current()` is a different `Thread` (of
///   the same name) after a move. Do not use a thread-local in one function both before and after
///   `migrate`: the compiler may keep the old node's thread-local address across the call;
/// - operating-system handles: files, sockets, pipes, child processes, memory mappings outside the
///   shared space stay with the old node's process; their descriptor numbers mean something else,
///   or nothing, on the new node;
/// - `static` items with interior mutability: each node has its own;
/// - the answer of [`JoinHandle::node`], which names the node the thread started on.
///
/// Locks (`rthreads::sync`) and channels are cluster-wide and may be held across a move.
///
/// # Errors
/// - `InvalidInput` for a node that does not exist;
/// - `Unsupported` for a thread that `rthreads` did not start (a thread of its own made with
///   `std::thread::spawn`, whose stack is private to its node), or on an architecture without
///   stack switching (x86-64 only, for now).
///
/// # Examples
/// ```
/// // Outside a cluster (no `#[rthreads::main]`) there is nowhere to go.
/// assert!(rthreads::migrate(0).is_err());
/// ```
/// In a cluster:
/// ```no_run
/// #[rthreads::main(nodes = 3)]
/// fn main() {
///     let h = rthreads::Builder::new().node(0).spawn(|| {
///         let mut trail = vec![rthreads::current_node()];
///         let local = 42;
///         let r = &local; // a reference into this thread's stack, held across the moves
///         for node in [1, 2] {
///             rthreads::migrate(node).unwrap();
///             trail.push(rthreads::current_node());
///         }
///         assert_eq!(*r, 42);
///         trail
///     }).unwrap();
///     assert_eq!(h.join().unwrap(), [0, 1, 2]);
/// }
/// ```
pub fn migrate(node: usize) -> io::Result<()> {
    let nodes = node_count();
    if node >= nodes {
        return Err(no_such_node(node, nodes));
    }
    let f = fiber::current();
    if f.is_null() || !fiber::on_shared_stack() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "rthreads::migrate: only a thread started by rthreads (spawn, scope, #[rthreads::main]) can move: this one's stack is private to its node",
        ));
    }
    if node == current_node() {
        return Ok(());
    }
    // SAFETY: `f` is the fiber this thread runs on.
    unsafe { fiber::leave(f, NodeId(node as u16)) };
    Ok(())
}

fn no_such_node(node: usize, nodes: usize) -> io::Error {
    let e = format!("node {node} does not exist: the cluster has {nodes} node(s)");
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

/// A safe point: gives up the CPU, as `std::thread::yield_now` does, and, when rebalancing is on
/// ([`set_rebalancing`](crate::placement::set_rebalancing), `RTHREADS_REBALANCE=1`) and this node runs more threads than it has CPUs
/// while another node has a CPU to spare, moves the calling thread there ([`migrate`](crate::migrate)).
///
/// A *safe point* is a place where the thread can go on running on another node without the program
/// noticing anything but [`current_node`](crate::current_node): its stack, locals and everything in
/// the shared heap move with it, but per-node things stay behind. So call it only where the thread
/// holds no `std::sync` guard, no thread-local or `static` state it relies on afterwards, and no
/// file or socket it goes on using (`rthreads::sync` guards are fine: they work on every node).
/// Long computations call it between steps (a row, a block, an iteration).
///
/// Only as many threads move as the other nodes can take: each move first claims a slot, counted
/// at once on both sides. A move that fails (an `Err` from `migrate`) leaves the thread where it
/// was. Node 0's `main` thread never moves. Costs one or two atomic loads when there is nothing to
/// do (besides the `sched_yield`).
///
/// # Examples
/// ```
/// let h = rthreads::spawn(|| {
///     let mut sum = 0u64;
///     for row in 0..100u64 {
///         sum += row * row;
///         rthreads::yield_now(); // may continue on another node
///     }
///     sum
/// });
/// assert_eq!(h.join().unwrap(), 328_350);
/// ```
pub fn yield_now() {
    if let Some((claim, target)) = crate::placement::claim_move() {
        let from = me();
        match migrate(target.index()) {
            Ok(()) => {
                // Running on `target` now: tell the node we left, which settles the claim there.
                if let Some(rt) = runtime::get().filter(|r| r.me != from) {
                    crate::placement::send_report(rt, from, claim);
                }
                return;
            }
            Err(_) => crate::placement::cancel_move(claim, target),
        }
    }
    std::thread::yield_now();
}
