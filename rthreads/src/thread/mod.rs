//! Threads that run on any node: `spawn`, `Builder`, `JoinHandle`, and the per-node table that
//! tells joiners when a thread has finished.
//!
//! A spawned closure travels as a pointer: it is boxed in the shared heap, and the target node
//! rebuilds the box from that address and calls it. This works because every node runs the same
//! binary loaded at the same address (the vtable pointer inside the box means the same everywhere)
//! and because the box's bytes, and everything it captured, are in the shared space. The result
//! comes back the same way: the thread writes it into a shared `Packet`, then tells the spawning
//! node (the thread's *origin*) that it has finished.

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
    watching: bool,
    forgotten: bool,
    watchers: Vec<NodeId>,
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

    /// The thread `tid` has ended (`started == false`: it could not be started at all).
    pub(crate) fn finish(&'static self, tid: u64, started: bool) {
        private_internal(move || {
            let mut map = self.map.lock();
            let Some(e) = map.get_mut(&tid) else { return };
            e.finished = true;
            e.started = started;
            let watchers = std::mem::take(&mut e.watchers);
            if e.forgotten {
                map.remove(&tid);
            }
            drop(map);
            self.cv.notify_all();
            for w in watchers {
                send(w, ThreadMsg::Finished { tid, started }.encode());
            }
        });
    }

    /// Node `from` holds the handle of `tid` (spawned here) and wants to hear when it ends.
    pub(crate) fn watch(&'static self, tid: u64, from: NodeId) {
        private_internal(move || {
            let mut map = self.map.lock();
            match map.get_mut(&tid) {
                Some(e) if e.finished => {
                    let started = e.started;
                    drop(map);
                    send(from, ThreadMsg::Finished { tid, started }.encode());
                }
                Some(e) => e.watchers.push(from),
                None => {}
            }
        });
    }

    /// The handle of `tid` (spawned here) was joined or dropped elsewhere.
    pub(crate) fn forget(&'static self, tid: u64) {
        private_internal(move || {
            let mut map = self.map.lock();
            if let Some(e) = map.get_mut(&tid) {
                if e.finished {
                    map.remove(&tid);
                } else {
                    e.forgotten = true;
                }
            }
        });
    }

    /// Makes sure this node hears of the end of `tid`, spawned on `origin`.
    fn ensure_known(&self, map: &mut BTreeMap<u64, Entry>, tid: u64, origin: NodeId) {
        if origin == me() {
            return;
        }
        let e = map.entry(tid).or_default();
        if !e.watching {
            e.watching = true;
            send(origin, ThreadMsg::Watch { tid }.encode());
        }
    }

    fn is_finished(&'static self, tid: u64, origin: NodeId) -> bool {
        private_internal(move || {
            let mut map = self.map.lock();
            self.ensure_known(&mut map, tid, origin);
            map.get(&tid).is_some_and(|e| e.finished)
        })
    }

    /// Blocks until `tid` has ended; returns whether it ever started.
    fn wait(&'static self, tid: u64, origin: NodeId) -> bool {
        private_internal(move || {
            let mut map = self.map.lock();
            self.ensure_known(&mut map, tid, origin);
            let started = std::time::Instant::now();
            let _count = WaitTimer(started);
            loop {
                match map.get(&tid) {
                    Some(e) if e.finished => break,
                    Some(_) => map = map.wait(&self.cv),
                    None => return false,
                }
            }
            let started = map.remove(&tid).is_some_and(|e| e.started);
            drop(map);
            if origin != me() {
                send(origin, ThreadMsg::Forget { tid }.encode());
            }
            started
        })
    }

    fn drop_handle(&'static self, tid: u64, origin: NodeId) {
        if origin == me() {
            self.forget(tid);
        } else {
            private_internal(move || {
                self.map.lock().remove(&tid);
                send(origin, ThreadMsg::Forget { tid }.encode());
            });
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

/// Starts an OS thread on this node, a carrier, that runs the boxed closure at `closure` on a new
/// fiber with a stack of `stack` bytes (0: the default) in the shared space.
fn start_thread(
    tid: u64,
    origin: NodeId,
    closure: usize,
    stack: usize,
    name: Option<String>,
) -> io::Result<()> {
    private_internal(move || {
        carrier(name.clone(), if fiber::SUPPORTED { fiber::CARRIER_STACK } else { stack }, move || {
            crate::counters::thread_started();
            // The start of a spawned thread is an acquire: the closure and what it captured, written
            // before `spawn`, are visible.
            crate::consistency::acquire();
            if !fiber::SUPPORTED {
                // SAFETY: `closure` came from `Box::into_raw` on a `Box<Box<dyn FnOnce() + Send>>` in
                // `Builder::spawn` of this same binary, loaded at the same address on every node; it
                // is handed to exactly one node, which takes ownership here exactly once.
                let f = unsafe { Box::from_raw(closure as *mut Box<dyn FnOnce() + Send>) };
                f();
                crate::consistency::release();
                crate::placement::thread_left();
                thread_done(tid, origin, true);
                return;
            }
            let stack = if stack == 0 { fiber::default_stack() } else { stack };
            match Fiber::new(stack, tid, origin, closure) {
                // SAFETY: a new fiber, carried by this thread only.
                Ok(f) => unsafe { carry(f, name.as_deref()) },
                Err(e) => {
                    say(&format!("rthreads: {}: cannot make a stack for a thread: {e}", me()));
                    // SAFETY: as above; the closure never ran, and is dropped here instead.
                    drop(unsafe { Box::from_raw(closure as *mut Box<dyn FnOnce() + Send>) });
                    crate::placement::thread_left();
                    thread_done(tid, origin, false);
                }
            }
        })
    })
}

/// Starts an OS thread named `name` with a stack of `stack` bytes (0: std's default) that runs
/// `body`.
fn carrier(name: Option<String>, stack: usize, body: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let _internal = InternalAlloc::new();
    let mut b = std::thread::Builder::new();
    let named = name.is_some();
    if let Some(n) = name {
        b = b.name(n);
    }
    if stack > 0 {
        b = b.stack_size(stack);
    }
    // Counted from now, not from when the new thread first runs: a spawn decision made right after
    // this one (here, or on a node that gets this node's next load report) must see it.
    crate::placement::thread_arrived();
    let spawned = b.spawn(move || {
        if !named {
            // The OS name is inherited from the creating thread (often the service thread);
            // give ours a name of its own for debuggers and `top`. std's name stays unset.
            // SAFETY: PR_SET_NAME with a NUL-terminated string of at most 16 bytes.
            unsafe { libc::prctl(libc::PR_SET_NAME, c"rthreads-thread".as_ptr()) };
        }
        body();
    });
    if spawned.is_err() {
        crate::placement::thread_left();
    }
    spawned.map(drop)
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
            thread_done(tid, origin, true);
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

fn thread_done(tid: u64, origin: NodeId, started: bool) {
    // The origin learns this node's load before it learns of the end (same connection).
    crate::placement::report_to(origin);
    if origin == me() {
        TABLE.finish(tid, started);
    } else {
        send(origin, ThreadMsg::Done { tid, started }.encode());
    }
}

/// Called by the service thread for a `Spawn` message from `origin`.
pub(crate) fn start_remote(tid: u64, origin: NodeId, closure: usize, stack: usize, name: &str) {
    let name = (!name.is_empty()).then(|| name.to_owned());
    if let Err(e) = start_thread(tid, origin, closure, stack, name) {
        say(&format!("rthreads: {}: cannot start a thread for {origin}: {e}", me()));
        thread_done(tid, origin, false);
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
        thread_done(tid, origin, false);
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
            TABLE.wait(tid, me);
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
        let packet: Arc<Packet<T>> = Arc::new(Packet { result: UnsafeCell::new(None), scope });
        let theirs = Arc::clone(&packet);
        let main: Box<dyn FnOnce() + Send + 'a> = Box::new(move || {
            let r = panic::catch_unwind(AssertUnwindSafe(f));
            // SAFETY: only this thread writes the packet, before it reports completion.
            unsafe { *theirs.result.get() = Some(r) };
            drop(theirs);
        });
        // SAFETY: only the lifetime is erased; the caller promises that what `main` borrows lives
        // long enough.
        let main: Box<dyn FnOnce() + Send + 'static> = unsafe { std::mem::transmute(main) };
        let closure = Box::into_raw(Box::new(main)) as usize;
        let tid = new_tid(me);
        TABLE.register(tid);
        let stack = self.stack_size.unwrap_or(0);
        if target == me {
            if let Err(e) = start_thread(tid, me, closure, stack, self.name) {
                // SAFETY: the thread did not start, so the box was never handed to anyone.
                drop(unsafe { Box::from_raw(closure as *mut Box<dyn FnOnce() + Send>) });
                TABLE.forget(tid);
                TABLE.finish(tid, false);
                return Err(e);
            }
        } else if let Some(rt) = runtime::get() {
            // A release point: the closure's bytes must reach the other node.
            crate::consistency::release();
            let name = self.name;
            private(move || {
                let (closure, stack, name) = (closure as u64, stack as u64, name.as_deref().unwrap_or(""));
                let frame = InternalAlloc::with(|| ThreadMsg::Spawn { tid, closure, stack, name }.encode());
                rt.send(target, frame);
            });
            crate::placement::sent(target);
        }
        Ok(JoinHandle { tid, origin: me, node: target, packet: Some(packet) })
    }
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
#[derive(Debug)]
pub struct JoinHandle<T> {
    tid: u64,
    origin: NodeId,
    node: NodeId,
    packet: Option<Arc<Packet<T>>>,
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
        let packet = self.packet.take().expect("joined twice");
        let started = TABLE.wait(self.tid, self.origin);
        crate::consistency::acquire();
        if !started {
            return Err(Box::new(format!("rthreads: the thread could not be started on {}", self.node)));
        }
        // SAFETY: the thread has finished: it wrote the packet before reporting completion, and
        // nobody else reads it (the handle is consumed).
        let r = unsafe { (*packet.result.get()).take() };
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
        if self.packet.is_some() {
            TABLE.drop_handle(self.tid, self.origin);
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
