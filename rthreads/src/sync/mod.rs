//! Synchronisation that works across nodes: `Mutex`, `RwLock`, `Condvar`, `Barrier`, `Once`,
//! `OnceLock` and `mpsc` channels, with std's names, signatures and poisoning rules.
//!
//! Porting a program is a change of `use` lines: `use std::sync::{Arc, Mutex};` becomes
//! `use rthreads::sync::{Arc, Mutex};` (`Arc` is std's own: it already works across nodes because
//! its count is an atomic in the shared heap).
//!
//! # How waiting works
//! Every object is *managed* by one node: the home node of the object's address (the node whose
//! heap it was allocated from). The manager keeps the object's queue of waiting threads in its
//! private memory; a thread that must wait sends one message to the manager and sleeps on its own
//! node until the answer comes. Nobody spins on a remote page.
//!
//! **Fairness.** A lock released by its holder is handed to the next waiter by the manager in
//! arrival order, except that a writer waiting on the releasing node goes first, at most 32 times
//! in a row (the data the lock guards then stays on that node); so no thread starves. A
//! reader-writer lock lets a group of readers at the head of the queue in together, and a queued
//! writer holds back readers that arrive after it.
//!
//! **Lock caching.** A node that took a `Mutex` managed elsewhere keeps it after the unlock until
//! another node asks for it (the manager then revokes it: given back at once if idle, else after at
//! most 32 more local hand-offs), so a lock used by one node at a time costs no message per `lock`.
//! `try_lock` on another node still succeeds on a lock that is merely kept there, not held.
//!
//! An object outside the shared heap (a `static`, a local on a thread's stack) is managed by the
//! node that uses it: such objects are per node, like every `static`.
//!
//! # Consistency contract
//! These operations are the synchronisation points of the memory model, and every protocol rthreads
//! offers honours them:
//! - releasing a lock (dropping a guard), `Condvar::wait` (which releases), `Barrier::wait`, a
//!   channel send, `spawn` and the end of a thread are **release** operations: every write the thread
//!   made before is visible to whoever performs the matching acquire;
//! - acquiring a lock, returning from `Condvar::wait`, returning from `Barrier::wait`, receiving a
//!   message, the start of a spawned thread and the return of `join` are **acquire** operations.
//!
//! Under the sequentially consistent protocol every write is visible everywhere at once anyway; the
//! contract above is what a program may rely on under every protocol.
//!
//! # Mistakes to avoid
//! `std::sync::Mutex`, `Condvar` and the like (and `parking_lot`) wake only threads of the node they
//! are used on: a thread on node 2 waiting on a `std::sync::Condvar` is never woken by a notify on
//! node 0. Their *data* is shared memory like any other, so a `std::sync::Mutex` used from two
//! nodes does exclude (its lock word is an atomic in shared memory) but a contended wait spins or
//! sleeps in the kernel of one node only. Use this module's types for anything shared between nodes.

pub(crate) mod agent;
pub(crate) mod manager;
pub(crate) mod watch;
pub(crate) mod wire;

mod barrier;
mod condvar;
pub mod mpsc;
mod mutex;
mod once;
mod poison;
mod rwlock;
mod tree;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc as StdArc, Condvar as StdCondvar, LazyLock};
use std::time::{Duration, Instant};

pub use barrier::{Barrier, BarrierWaitResult};
pub use condvar::{Condvar, WaitTimeoutResult};
pub use mutex::{Mutex, MutexGuard};
pub use once::{Once, OnceLock, OnceState};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
pub use std::sync::{Arc, LockResult, PoisonError, TryLockError, TryLockResult, Weak, atomic};

use dsm::NodeId;

use crate::alloc::{InternalAlloc, private_internal};
use crate::log::node as me;
use crate::private::{ServiceLock, private};
use crate::runtime;
use crate::runtime::wire::Field;
use crate::topology;
use manager::{Manager, Op, Out, Reply, Request, Waiter};
use tree::{Combiner, TreeOut};
use wire::SyncMsg;

/// The node that manages the object whose key is `key`, for a request made by a thread of
/// `waiter_node`: the home of the object's address, or, for an object outside the shared space (a
/// `static`, a local), the requesting thread's own node, where such an object lives.
fn manager_for(key: u64, waiter_node: NodeId) -> NodeId {
    runtime::get().map_or(NodeId(0), |r| r.home_of_addr(key as usize).unwrap_or(waiter_node))
}

/// The manager of `key` for a request made on this node.
fn manager_of(key: u64) -> NodeId {
    manager_for(key, me())
}

/// Whether the object `key` is managed by another node (its locks are then kept by the agent).
fn remote(key: u64) -> bool {
    runtime::get().is_some_and(|r| manager_of(key) != r.me)
}

static MANAGER: LazyLock<ServiceLock<Manager>> =
    LazyLock::new(|| ServiceLock::new("sync.manager", Manager::default()));

struct Parked {
    replies: ServiceLock<VecDeque<Reply>>,
    cv: StdCondvar,
}

/// This node's combiner of barrier arrivals (see [`tree`]).
static TREE: LazyLock<ServiceLock<Combiner>> =
    LazyLock::new(|| ServiceLock::new("sync.tree", Combiner::default()));

/// The most arrivals one report up a barrier tree may carry: more threads than could wait under
/// one node of any cluster, so that a broken peer's report is refused instead of releasing
/// phases for ever.
const MAX_REPORTED: u64 = 1 << 24;

/// This node's parent in the tree of barrier `key` (rooted at its manager); `None` on the root.
fn tree_parent(key: u64) -> Option<NodeId> {
    let rt = runtime::get()?;
    topology::parent(rt.me, manager_of(key), rt.nodes, topology::fanout())
}

/// Where a thread of this node arrives at barrier `key`: `None` for this node (the root, or a node
/// that combines its children's arrivals), else the parent, asked directly.
fn barrier_node(key: u64) -> Option<NodeId> {
    let rt = runtime::get()?;
    let root = manager_of(key);
    let fanout = topology::fanout();
    if topology::has_children(rt.me, root, rt.nodes, fanout) {
        return None;
    }
    topology::parent(rt.me, root, rt.nodes, fanout)
}

/// Runs `f` on this node's barrier combiner and delivers what it decided: replies to waiters,
/// reports up and releases down the tree. With `flush`, arrivals not reported yet are reported
/// now (an application thread's arrival; the service thread reports once per turn, in [`tree_tick`],
/// so that arrivals of one turn travel together). On a private stack.
fn combine(
    flush: bool,
    f: impl FnOnce(&mut Combiner, &mut Vec<TreeOut>) -> Result<(), String>,
) -> Result<(), String> {
    let _internal = InternalAlloc::new();
    let mut out = Vec::new();
    let mut c = TREE.lock();
    let done = f(&mut c, &mut out);
    if flush {
        c.flush(&mut out);
    }
    for o in out {
        match o {
            TreeOut::Reply { to, leader } => deliver(to, Reply::Barrier { leader }),
            TreeOut::Up { to, key, n, count } => {
                if let Some(rt) = runtime::get() {
                    rt.send(to, SyncMsg::BarrierUp { key, n, count }.encode());
                }
            }
            TreeOut::Down { to, key, count, leader } => {
                if let Some(rt) = runtime::get() {
                    rt.send(to, SyncMsg::BarrierDown { key, count, leader }.encode());
                }
            }
        }
    }
    drop(c);
    done
}

/// Once per turn of the service loop: the arrivals that reached this node this turn go up the
/// tree, one report per barrier.
fn tree_tick(_rt: &'static runtime::Runtime) -> runtime::Verdict {
    let _internal = InternalAlloc::new();
    if TREE.lock().has_unreported() {
        let _ = combine(true, |_, _| Ok(()));
    }
    runtime::Verdict::Ok
}

static PARKED: LazyLock<ServiceLock<HashMap<u64, StdArc<Parked>>>> =
    LazyLock::new(|| ServiceLock::new("sync.parked", HashMap::new()));
static NEXT_WAITER: AtomicU64 = AtomicU64::new(1);

/// A place where the calling thread receives replies from managers.
pub(crate) struct Ticket {
    id: u64,
    parked: StdArc<Parked>,
    /// What the holder waits for (named in traces); set by the first operation submitted.
    what: std::cell::Cell<crate::counters::Wait>,
}

impl Ticket {
    pub(crate) fn new() -> Ticket {
        let (id, parked) = private_internal(|| {
            let id = NEXT_WAITER.fetch_add(1, Ordering::Relaxed);
            let parked = StdArc::new(Parked {
                replies: ServiceLock::new("sync.replies", VecDeque::new()),
                cv: StdCondvar::new(),
            });
            PARKED.lock().insert(id, StdArc::clone(&parked));
            (id, parked)
        });
        Ticket { id, parked, what: std::cell::Cell::new(crate::counters::Wait::Other) }
    }

    pub(crate) fn waiter(&self) -> Waiter {
        (me(), self.id)
    }

    /// Sends `op` for `key` with this ticket as the waiter.
    pub(crate) fn submit(&self, key: u64, op: Op) {
        if self.what.get() == crate::counters::Wait::Other {
            self.what.set(op.wait_kind());
        }
        submit(Request { key, waiter: self.waiter(), op });
    }

    /// Waits for the next reply.
    pub(crate) fn wait(&self) -> Reply {
        self.wait_until(deadline_in(Duration::MAX)).expect("a wait without a deadline ends with a reply")
    }

    /// Where the parking place is (runtime-internal memory): read here, on whatever stack the
    /// caller runs, so that the private-stack code under the lock reads no shared memory.
    /// Waits for the next reply until `deadline`.
    pub(crate) fn wait_until(&self, deadline: Instant) -> Option<Reply> {
        let parked = StdArc::as_ptr(&self.parked) as usize;
        let what = self.what.get();
        private(move || {
            // SAFETY: the ticket, which keeps the parking place alive, outlives this call.
            let parked = unsafe { &*(parked as *const Parked) };
            let _internal = InternalAlloc::new();
            let started = Instant::now();
            let mut q = parked.replies.lock();
            loop {
                if let Some(r) = q.pop_front() {
                    crate::counters::sync_waited(started.elapsed(), what);
                    break Some(r);
                }
                let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
                else {
                    break None;
                };
                q = q.wait_timeout(&parked.cv, left);
            }
        })
    }

    /// Sends `op` and waits for its single reply, which comes from the object's manager: on a
    /// direct connection to it when that is another node (see `rpc`).
    pub(crate) fn call(key: u64, op: Op) -> Reply {
        Ticket::call_at(manager_of(key), key, op)
    }

    /// As [`Ticket::call`], asking node `m` (the object's manager, or for a barrier this node's
    /// parent in the barrier's tree).
    pub(crate) fn call_at(m: NodeId, key: u64, op: Op) -> Reply {
        if let Some(rt) = runtime::get()
            && m != rt.me
        {
            let req = Request { key, waiter: (rt.me, NEXT_WAITER.fetch_add(1, Ordering::Relaxed)), op };
            return call_direct(rt, m, req);
        }
        // One switch to the private stack for the whole exchange with a manager on this node.
        private(move || {
            let t = Ticket::new();
            t.submit(key, op);
            t.wait()
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let id = self.id;
        private_internal(move || {
            drop(PARKED.lock().remove(&id));
        });
    }
}

/// A request that expects no reply (unlocks, notifications, asynchronous sends).
pub(crate) fn post(key: u64, op: Op) {
    let req = Request { key, waiter: (me(), 0), op };
    if let Some(rt) = runtime::get()
        && matches!(req.op, Op::Unlock { .. })
        && !crate::runtime::on_service_thread()
    {
        let m = manager_of(key);
        if m != rt.me {
            return crate::runtime::direct::post(rt, m, SyncMsg::Req(req).encode());
        }
    }
    submit(req);
}

/// Routes a request to its manager: handled here if this node manages the object, else sent.
///
/// Everything a request carries must be runtime-internal memory (see `mpsc::to_bytes`): the
/// manager runs under a lock that the service thread also takes, so it must never fault.
pub(crate) fn submit(req: Request) {
    private(move || {
        let _internal = InternalAlloc::new();
        let mut work = VecDeque::from([req]);
        let mut out = Vec::new();
        while let Some(req) = work.pop_front() {
            if let Op::Barrier { n } = req.op {
                // A barrier arrival combines at the node it was sent to (see `tree`).
                let flush = !runtime::on_service_thread();
                let parent = tree_parent(req.key);
                let _ = combine(flush, |c, out| {
                    c.arrive(req.key, n, req.waiter, parent, out);
                    Ok(())
                });
                continue;
            }
            let m = manager_for(req.key, req.waiter.0);
            if m == me() {
                let mut manager = MANAGER.lock();
                manager.handle(req, &mut out);
                // Replies are delivered before the lock is released, so each waiter receives them in
                // the order the manager decided them, whichever thread made which decision (a batch
                // of messages and a later cancellation, say). Delivery only takes leaf locks.
                for o in out.drain(..) {
                    match o {
                        Out::Reply { to, reply } => deliver(to, reply),
                        Out::Forward(r) => work.push_back(r),
                        Out::Revoke { to, key } if to == me() => agent::revoke(key),
                        Out::Revoke { to, key } => {
                            if let Some(rt) = runtime::get() {
                                rt.send(to, SyncMsg::Revoke { key }.encode());
                            }
                        }
                    }
                }
                drop(manager);
            } else if let Some(rt) = runtime::get() {
                if matches!(req.op, Op::ChanSend { sync: false, .. }) {
                    rt.send_batched(m, SyncMsg::Req(req).encode());
                } else {
                    rt.send(m, SyncMsg::Req(req).encode());
                }
            }
        }
    });
}

fn deliver(to: Waiter, reply: Reply) {
    if to.0 == me() {
        deliver_local(to.1, reply);
    } else if let Some(rt) = runtime::get() {
        let frame = SyncMsg::Reply { waiter: to.1, reply }.encode();
        // On the direct connection the request came on, if it came on one.
        let route = ROUTES.lock().remove(&to);
        match route {
            Some(route) => route.answer(rt, &frame),
            None => rt.send(to.0, frame),
        }
    }
}

/// Where to send the answer for a waiter whose request came on a direct connection.
static ROUTES: LazyLock<ServiceLock<HashMap<Waiter, crate::runtime::direct::Route>>> =
    LazyLock::new(|| ServiceLock::new("sync.routes", HashMap::new()));

/// Sends `req` to its manager, node `to`, on a direct connection and waits for its single answer
/// (see `runtime::direct`: two thread wake-ups, where the ordinary path costs four).
fn call_direct(rt: &'static runtime::Runtime, to: NodeId, req: Request) -> Reply {
    let started = Instant::now();
    let what = req.op.wait_kind();
    let waiter = req.waiter.1;
    let answer = crate::runtime::direct::call(rt, to, SyncMsg::Req(req).encode());
    let reply = match SyncMsg::decode(&answer) {
        Ok(SyncMsg::Reply { waiter: w, reply }) if w == waiter => reply,
        Ok(other) => crate::log::fatal(&format!("{to} answered a direct request with {other:?}")),
        Err(e) => crate::log::fatal(&format!("{to} sent a malformed answer: {e}")),
    };
    crate::counters::sync_waited(started.elapsed(), what);
    reply
}

/// Registers the handlers of synchronisation messages with the runtime.
pub(crate) fn register(ext: &mut crate::runtime::Extensions) {
    ext.frames(&wire::TAGS, on_frame);
    ext.direct(wire::T_SYNC_REQ, on_direct);
    ext.tick(watch::tick);
    ext.tick(tree_tick);
}

fn on_frame(rt: &'static runtime::Runtime, from: NodeId, body: &[u8]) -> crate::runtime::Verdict {
    use crate::runtime::Verdict;
    match SyncMsg::decode(body) {
        Ok(SyncMsg::Req(req)) => submit(req),
        Ok(SyncMsg::Reply { waiter, reply }) => deliver_local(waiter, reply),
        Ok(SyncMsg::Revoke { key }) => agent::revoke(key),
        Ok(SyncMsg::Locks { threads }) if rt.me == NodeId(0) => return watch::on_report(rt, from, threads),
        Ok(SyncMsg::Locks { .. }) => {}
        Ok(SyncMsg::BarrierUp { count, .. }) if count == 0 || count > MAX_REPORTED => {
            return Verdict::Lost(format!(
                "it reported {count} arrivals at a barrier (more than {MAX_REPORTED} threads waiting under one node, or none)"
            ));
        }
        Ok(SyncMsg::BarrierDown { key, .. }) if tree_parent(key) != Some(from) => {
            return Verdict::Lost(format!(
                "it released arrivals at barrier {key:#x}, which this node did not report to it"
            ));
        }
        Ok(SyncMsg::BarrierUp { key, n, count }) => {
            let parent = tree_parent(key);
            let _ = private(move || {
                combine(false, |c, out| {
                    c.up(key, n, from, count, parent, out);
                    Ok(())
                })
            });
        }
        Ok(SyncMsg::BarrierDown { key, count, leader }) => {
            if let Err(e) = private(move || combine(false, |c, out| c.down(key, count, leader, out))) {
                return Verdict::Lost(e);
            }
        }
        Err(e) => return Verdict::Lost(format!("it sent a malformed synchronisation message ({e})")),
    }
    Verdict::Ok
}

/// A request on a direct connection from `from`: its answer goes back on that connection.
fn on_direct(
    _rt: &'static runtime::Runtime,
    from: NodeId,
    body: &[u8],
    route: crate::runtime::direct::Route,
) -> crate::runtime::Verdict {
    match SyncMsg::decode(body) {
        Ok(SyncMsg::Req(req)) if req.waiter.0 == from => {
            if req.op.expects_reply() {
                private_internal(move || {
                    ROUTES.lock().insert(req.waiter, route);
                });
            }
            submit(req);
            crate::runtime::Verdict::Ok
        }
        other => {
            crate::runtime::Verdict::Lost(format!("unexpected message on a direct connection: {other:?}"))
        }
    }
}

/// A reply for a waiter of this node (from the service thread or a local manager).
pub(crate) fn deliver_local(waiter: u64, reply: Reply) {
    private_internal(move || {
        let parked = PARKED.lock().get(&waiter).cloned();
        if let Some(p) = parked {
            p.replies.lock().push_back(reply);
            p.cv.notify_all();
        }
    });
}

/// The key of an object: the address of one of its own fields.
/// `d` from now, or a deadline no wait reaches (136 years) when that is past `Instant`'s range.
fn deadline_in(d: Duration) -> Instant {
    Instant::now().checked_add(d).unwrap_or_else(|| Instant::now() + Duration::from_secs(1 << 32))
}

fn key_of<T>(field: &T) -> u64 {
    field as *const T as u64
}

/// `Debug`, `Default` and `From<T>` of the locks, as std's: `$try` is the way to look at the data.
macro_rules! lock_impls {
    ($($lock:ident: $try:ident),*) => {$(
        impl<T: ?Sized + fmt::Debug> fmt::Debug for $lock<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut d = f.debug_struct(stringify!($lock));
                match self.$try() {
                    Ok(g) => d.field("data", &&*g),
                    Err(TryLockError::Poisoned(e)) => d.field("data", &&**e.get_ref()),
                    Err(TryLockError::WouldBlock) => d.field("data", &format_args!("<locked>")),
                };
                d.field("poisoned", &self.is_poisoned()).finish_non_exhaustive()
            }
        }

        impl<T: Default> Default for $lock<T> {
            fn default() -> $lock<T> {
                $lock::new(T::default())
            }
        }

        impl<T> From<T> for $lock<T> {
            fn from(t: T) -> $lock<T> {
                $lock::new(t)
            }
        }
    )*};
}

/// `Debug` and `Display` of the lock guards: those of the data.
macro_rules! guard_fmt {
    ($($guard:ident),*) => {$(
        impl<T: ?Sized + fmt::Debug> fmt::Debug for $guard<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&**self, f)
            }
        }

        impl<T: ?Sized + fmt::Display> fmt::Display for $guard<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&**self, f)
            }
        }
    )*};
}

lock_impls!(Mutex: try_lock, RwLock: try_read);
guard_fmt!(MutexGuard, RwLockReadGuard, RwLockWriteGuard);
