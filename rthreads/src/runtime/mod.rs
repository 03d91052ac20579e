//! The node runtime: the service thread that owns every socket and the protocol state, and the
//! handle application threads use to talk to it.
//!
//! One service thread per node ([`service`]) polls, with epoll, the fault pipe (traps handed over by
//! the SIGSEGV handler, and wake-ups for the command queue), every peer connection and the listener.
//! It alone runs the coherence protocol, calls `mprotect`, and reads or writes page bytes (through
//! the runtime view), so the protocol state needs no lock; one executor ([`exec`]) carries out the
//! effects of whichever protocol runs (`dsm::protocol::Coherence`). Application threads never touch
//! an ordinary connection's socket: they queue frames in [`Runtime::send`] and wake the service
//! thread through the same pipe.
//!
//! The runtime knows nothing of threads, synchronisation, placement or output: those modules
//! register, at start-up, handlers for the frames they own, periodic work, and what to do when the
//! node stops ([`Extensions`]). Dependencies point one way: they use the runtime, never the reverse.
//!
//! The rule that keeps the service thread from waiting for an application thread is in
//! `crate::private`; liveness, loss and the watchdog in [`liveness`]; connections accepted at run
//! time (direct requests, and strangers) in [`direct`]; the network-delay emulation in [`delay`].

mod delay;
pub(crate) mod direct;
mod exec;
mod liveness;
mod reads;
mod service;
pub(crate) mod wire;

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, OnceLock};
use std::time::{Duration, Instant};

use dsm::{NodeId, fault};
use net::SendQueue;

use crate::alloc::{Heap, InternalAlloc, private_internal};
pub(crate) use crate::log::{fatal, say};
use crate::private::{ServiceLock, private};
pub(crate) use delay::{emulate_delay, net_delay};
pub(crate) use liveness::{EXIT_NODE_LOST, EXIT_STUCK, set_local_pids};
pub(crate) use service::Service;

/// Everything application threads may ask of this node's runtime. It derefs to what start-up
/// learnt about the node ([`NodeInfo`]: `rt.me`, `rt.nodes`…).
pub(crate) struct Runtime {
    info: NodeInfo,
    pub(crate) heap: Heap,
    /// The sending side of every peer connection. Any thread writes its frames straight to the
    /// socket under the peer's lock; what the socket does not take at once stays queued and the
    /// service thread finishes it when the socket becomes writable.
    senders: OnceLock<Vec<ServiceLock<Option<SendQueue>>>>,
    pub(crate) next_seq: AtomicU64,
    pub(crate) next_target: AtomicUsize,
    shutting_down: AtomicBool,
    /// (Node 0) every other node has left after a shutdown: the shared space is this node's alone.
    alone: AtomicBool,
    /// A frame was queued for a peer with no connection yet (lazy connections): the service
    /// thread dials it.
    pub(crate) dial_wanted: AtomicBool,
    /// A wake-up of the service thread is on its way (set by senders, cleared when it drains).
    wake_pending: AtomicBool,
    /// One bit per peer whose send queue may hold frames for the service thread to write: its
    /// turn then looks at those peers only, not at every peer (256 locks a turn on node 0 of a
    /// 256-node cluster).
    flush_wanted: Vec<AtomicU64>,
    /// Frames queued to each node on the ordinary connection, and frames from each node processed:
    /// a message on a direct connection carries the first count so it never overtakes what its
    /// sender sent before on the ordinary connection (see `rpc`).
    sent_seq: Vec<AtomicU64>,
    recv_seq: Vec<AtomicU64>,
    seq_waiters: AtomicUsize,
    seq_lock: ServiceLock<()>,
    seq_cv: Condvar,
    closed: ServiceLock<usize>,
    closed_cv: Condvar,
    /// Release and acquire requests of application threads, for the service thread.
    cmds: ServiceLock<Vec<(Cmd, Arc<Done>)>>,
    cmd_pending: AtomicBool,
    /// Former guard pages of fiber stacks, left inaccessible (see `dsm::fault::set_guard`) until
    /// a trap on one lets the service thread give it back the access the protocol says it has.
    unguarded: ServiceLock<VecDeque<u64>>,
    unguarded_any: AtomicBool,
    /// Mirrors of the protocol state, written by the service thread before it lets any thread go
    /// on: a release has something to do, an acquire has something to drop.
    needs_release: AtomicBool,
    has_stale: AtomicBool,
    /// The protocol would drop read copies before a barrier (`Coherence::wants_drops`).
    wants_drops: AtomicBool,
    /// Barrier arrivals of this node's threads so far (`Coherence::note_arrivals`).
    pub(crate) arrivals: AtomicU64,
    /// Threads of this node inside `Barrier::wait` now.
    in_barriers: AtomicU32,
    /// Set when a thread arrived while another of this node waited in a barrier; taken by the
    /// service thread (`Coherence::barriers_shared`).
    barriers_shared: AtomicBool,
    /// The protocol answers requests at this node's next barrier arrival
    /// (`Coherence::answers_at_arrival`): the arrival waits until they are sent.
    arrival_answers: AtomicBool,
    /// What the modules above the runtime registered: handlers of their frames, periodic work,
    /// what to do when the node stops.
    ext: Extensions,
}

/// What an application thread asks of the protocol at a synchronisation point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmd {
    Release,
    Acquire,
    /// Before a barrier: drop the read copies writers will revoke (`Coherence::drop_copies`).
    DropCopies,
}

/// Where an application thread waits for its command to complete.
pub(crate) struct Done {
    done: ServiceLock<bool>,
    cv: Condvar,
}

impl Done {
    fn set(&self) {
        *self.done.lock() = true;
        self.cv.notify_all();
    }
}

impl std::ops::Deref for Runtime {
    type Target = NodeInfo;
    fn deref(&self) -> &NodeInfo {
        &self.info
    }
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Whether the calling thread is this node's service thread (which must never block on a peer).
pub(crate) fn on_service_thread() -> bool {
    ON_SERVICE_THREAD.with(Cell::get)
}

/// Whether application threads write latency-critical frames to the socket themselves. Measured
/// on the 2-vCPU VM (BENCHMARKS.md), handing them to the service thread is faster for a round trip:
/// the service thread that sent the request is still awake when the answer comes, whereas a
/// service thread woken from a long sleep pays the slow kind of wake-up. Kept as a switch to
/// measure on other machines.
const DIRECT_SEND: bool = false;

thread_local! {
    static ON_SERVICE_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// The running runtime, if `#[rthreads::main]` started one.
pub(crate) fn get() -> Option<&'static Runtime> {
    RUNTIME.get()
}

/// What start-up learnt about this node and the cluster.
pub(crate) struct NodeInfo {
    pub(crate) me: NodeId,
    pub(crate) nodes: u16,
    /// Each node's `available_parallelism`.
    pub(crate) parallelism: Vec<u32>,
    pub(crate) layout: dsm::SpaceLayout,
    /// Bytes of the space homed at each node.
    pub(crate) slice: usize,
    pub(crate) session: u64,
    /// Each node's listening address: where it accepts connections.
    pub(crate) addrs: Vec<String>,
    /// The cluster secret (authenticates every connection).
    pub(crate) secret: net::Secret,
    /// Silence from a peer longer than this means it is lost.
    pub(crate) failure_timeout: Duration,
    /// How long a connection accepted after start-up may take to authenticate.
    pub(crate) auth_timeout: Duration,
}

impl Runtime {
    pub(crate) fn install(node: NodeInfo, heap: Heap, ext: Extensions) -> &'static Runtime {
        let _internal = InternalAlloc::new();
        crate::log::set_node(node.me);
        crate::private::cluster_started();
        let nodes = node.nodes;
        let rt = Runtime {
            info: node,
            heap,
            senders: OnceLock::new(),
            next_seq: AtomicU64::new(1),
            next_target: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            alone: AtomicBool::new(false),
            dial_wanted: AtomicBool::new(false),
            wake_pending: AtomicBool::new(false),
            flush_wanted: (0..usize::from(nodes).div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            sent_seq: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            recv_seq: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            seq_waiters: AtomicUsize::new(0),
            seq_lock: ServiceLock::new("runtime.seq", ()),
            seq_cv: Condvar::new(),
            closed: ServiceLock::new("runtime.closed", 0),
            closed_cv: Condvar::new(),
            cmds: ServiceLock::new("runtime.cmds", Vec::new()),
            cmd_pending: AtomicBool::new(false),
            unguarded: ServiceLock::new("runtime.unguarded", VecDeque::new()),
            unguarded_any: AtomicBool::new(false),
            needs_release: AtomicBool::new(false),
            has_stale: AtomicBool::new(false),
            wants_drops: AtomicBool::new(false),
            arrival_answers: AtomicBool::new(false),
            arrivals: AtomicU64::new(0),
            in_barriers: AtomicU32::new(0),
            barriers_shared: AtomicBool::new(false),
            ext,
        };
        if RUNTIME.set(rt).is_err() {
            fatal("the runtime was started twice");
        }
        let rt = RUNTIME.get().expect("just set");
        Heap::activate(&rt.heap);
        rt
    }

    /// How many frames this node has queued to `to` on the ordinary connection.
    pub(crate) fn sent_to(&self, to: NodeId) -> u64 {
        self.sent_seq[to.index()].load(Ordering::SeqCst)
    }

    /// The counters behind [`Runtime::sent_to`], one per node (the fault handler's direct reads
    /// read them).
    pub(crate) fn sent_counters(&self) -> &[AtomicU64] {
        &self.sent_seq
    }

    /// How many frames from `from` this node's service thread has processed.
    pub(crate) fn processed_from(&self, from: NodeId) -> u64 {
        self.recv_seq[from.index()].load(Ordering::SeqCst)
    }

    /// Every node but this one.
    pub(crate) fn peers(&self) -> impl Iterator<Item = NodeId> + use<'_> {
        NodeId::all(self.nodes).filter(|&n| n != self.me)
    }

    /// Waits until this node has processed the first `n` frames `from` sent it on the ordinary
    /// connection (a direct answer must not overtake them).
    pub(crate) fn wait_processed(&'static self, from: NodeId, n: u64) {
        if self.processed_from(from) >= n {
            return;
        }
        private(move || {
            self.seq_waiters.fetch_add(1, Ordering::SeqCst);
            let mut g = self.seq_lock.lock();
            while self.processed_from(from) < n {
                g = g.wait_timeout(&self.seq_cv, Duration::from_millis(10));
            }
            drop(g);
            self.seq_waiters.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// The guard page at `addr` no longer guards a stack on this node (its fiber ended or left).
    pub(crate) fn unguarded(&'static self, addr: usize) {
        let Some(page) = self.page_index(addr) else { return };
        private_internal(move || {
            let mut q = self.unguarded.lock();
            if q.len() >= 4096 {
                q.pop_front();
            }
            q.push_back(page);
            self.unguarded_any.store(true, Ordering::SeqCst);
        });
    }

    /// Whether `page` was a guard page not yet given back its access (and forgets it).
    pub(super) fn take_unguarded(&self, page: u64) -> bool {
        if !self.unguarded_any.load(Ordering::SeqCst) {
            return false;
        }
        let mut q = self.unguarded.lock();
        let Some(i) = q.iter().position(|&p| p == page) else { return false };
        q.remove(i);
        self.unguarded_any.store(!q.is_empty(), Ordering::SeqCst);
        true
    }

    /// The page number of `addr`, if it lies in the shared space.
    pub(crate) fn page_index(&self, addr: usize) -> Option<u64> {
        self.layout.page_of(addr).map(|p| p.0)
    }

    /// The home node of `addr`, if it lies in the shared space.
    pub(crate) fn home_of_addr(&self, addr: usize) -> Option<NodeId> {
        self.layout.contains(addr).then(|| NodeId(((addr - self.layout.base) / self.slice) as u16))
    }

    /// Sends a frame to node `to`: written to the socket at once where it takes it (the service
    /// thread batches its own frames and writes them before it next sleeps).
    pub(crate) fn send(&'static self, to: NodeId, frame: Vec<u8>) {
        self.queue(to, frame, true);
    }

    fn queue(&'static self, to: NodeId, frame: Vec<u8>, now: bool) {
        private(move || self.send_parts(to, &self.private_copy(frame), &[], now));
    }

    /// `frame` in private memory: moved as it is if it was built there, else copied (a frame built
    /// by a thread outside `InternalAlloc` lives in the shared heap, and the senders' locks must
    /// not be held while touching it). On a private stack.
    fn private_copy(&self, frame: Vec<u8>) -> Vec<u8> {
        if !self.layout.contains(frame.as_ptr() as usize) {
            return frame;
        }
        InternalAlloc::with(|| frame.as_slice().to_vec())
    }

    /// Queues a frame for node `to` for the service thread to write with others in one system
    /// call: for streams of asynchronous messages, where throughput matters more than latency.
    pub(crate) fn send_batched(&'static self, to: NodeId, frame: Vec<u8>) {
        self.queue(to, frame, false);
    }

    /// Queues a frame made of `head` and `tail` for node `to`. On a private stack only (the
    /// senders' locks are the service thread's too), with both parts in private memory.
    pub(super) fn send_parts(&self, to: NodeId, head: &[u8], tail: &[u8], now: bool) {
        let _internal = InternalAlloc::new();
        let Some(slot) = self.senders.get().and_then(|s| s.get(to.index())) else { return };
        if self.layout.contains(head.as_ptr() as usize) {
            crate::private::bug("a runtime frame was built in the shared heap (outside InternalAlloc)");
        }
        let mut q = slot.lock();
        let Some(q) = q.as_mut() else {
            // The peer is gone; the service thread reports it.
            return;
        };
        q.queue(head, tail);
        self.want_flush(to.index());
        if !q.is_connected() {
            self.dial_wanted.store(true, Ordering::SeqCst);
        }
        self.sent_seq[to.index()].fetch_add(1, Ordering::SeqCst);
        crate::counters::sent(head, head.len() + tail.len());
        if !tail.is_empty() {
            crate::counters::page(true);
        }
        if ON_SERVICE_THREAD.with(Cell::get) {
            return;
        }
        if now && DIRECT_SEND {
            // A write error is noticed by the service thread when it reads from the peer.
            let _ = q.flush();
        }
        if q.wants_write() {
            self.wake_service();
        }
    }

    /// Wakes the service thread to write what a queue still holds, unless a wake-up is pending
    /// already (one per turn is enough: the turn flushes every marked queue).
    pub(super) fn wake_service(&self) {
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            fault::notify();
        }
    }

    /// Marks peer `i`'s send queue for the service thread's next flush.
    pub(super) fn want_flush(&self, i: usize) {
        if let Some(w) = self.flush_wanted.get(i / 64) {
            w.fetch_or(1 << (i % 64), Ordering::SeqCst);
        }
    }

    /// The peers marked by [`Runtime::want_flush`] since the last call, unmarked, in order.
    pub(super) fn take_flush_wanted(&self, out: &mut Vec<usize>) {
        out.clear();
        for (k, w) in self.flush_wanted.iter().enumerate() {
            let mut bits = w.swap(0, Ordering::SeqCst);
            while bits != 0 {
                out.push(k * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
    }

    /// Runs `cmd` on the service thread and waits until it is complete (a drop of copies is not
    /// waited for); at once when the protocol state says it has nothing to do (releases and
    /// acquires always, under sequential consistency).
    pub(crate) fn consistency(&'static self, cmd: Cmd) {
        if cmd == Cmd::DropCopies {
            self.arrivals.fetch_add(1, Ordering::SeqCst);
            if self.in_barriers.fetch_add(1, Ordering::SeqCst) > 0 {
                self.barriers_shared.store(true, Ordering::SeqCst);
            }
        }
        let needed = match cmd {
            Cmd::Release => self.needs_release.load(Ordering::SeqCst),
            Cmd::Acquire => self.has_stale.load(Ordering::SeqCst),
            Cmd::DropCopies => self.wants_drops.load(Ordering::Relaxed),
        };
        if !needed || on_service_thread() {
            return;
        }
        private_internal(move || {
            let started = Instant::now();
            let done = Arc::new(Done { done: ServiceLock::new("runtime.done", false), cv: Condvar::new() });
            self.cmds.lock().push((cmd, Arc::clone(&done)));
            self.cmd_pending.store(true, Ordering::SeqCst);
            fault::notify();
            if cmd == Cmd::DropCopies && !self.arrival_answers.load(Ordering::SeqCst) {
                // Nothing to wait for: the drops only spare other nodes a revocation later. (With
                // requests answered at this arrival, the thread waits until the answers are queued,
                // so that they travel ahead of its arrival and the barrier's release.)
                return;
            }
            let mut d = done.done.lock();
            while !*d {
                d = d.wait(&done.cv);
            }
            drop(d);
            crate::counters::consistency_waited(started.elapsed());
        });
    }

    /// A thread of this node leaves a barrier (after the arrival `consistency(Cmd::DropCopies)`
    /// counted).
    pub(crate) fn left_barrier(&self) {
        self.in_barriers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether the cluster is stopping (shutdown or a lost node): the output of application threads
    /// then goes straight to this node's descriptors.
    pub(crate) fn is_stopping(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Runs the stop hooks (what must be finished before the process ends), within `deadline`.
    pub(crate) fn finish(&self, deadline: Instant) {
        for h in &self.ext.stops {
            h(deadline);
        }
    }

    /// Node 0 only: tells every node to exit and waits (bounded) until they have closed their
    /// connections; once all have, the service thread opens the whole space to this node (see
    /// `Service::serve_alone`).
    pub(crate) fn shutdown_cluster(&'static self, code: i32) {
        private_internal(move || {
            self.shutting_down.store(true, Ordering::SeqCst);
            // No new direct page read may start towards nodes about to leave (one that is out
            // falls back to the ordinary way if its home is gone, see `dsm::fault::direct`).
            dsm::fault::direct::disable();
            // The order goes down the node tree: node 0 tells its children, each node its own
            // before it ends (`Service::leave_when_passed_on`).
            for n in crate::topology::children(self.me, NodeId(0), self.nodes, crate::topology::fanout()) {
                self.send(n, wire::Core::Shutdown { code }.encode());
            }
            let started = Instant::now();
            let (fallback, deadline) = (started + Duration::from_secs(3), started + Duration::from_secs(10));
            let mut told_all = false;
            let mut closed = self.closed.lock();
            while *closed + 1 < usize::from(self.nodes) {
                let now = Instant::now();
                if now >= deadline {
                    say("rthreads: some nodes did not acknowledge shutdown within 10 s");
                    break;
                }
                if !told_all && now >= fallback {
                    // A node of the tree that could not pass the order on (its child unreachable,
                    // or it ended first): whoever has not left yet is told directly. (Nodes that
                    // have left are gone from the send queues; sending to them does nothing.)
                    told_all = true;
                    let left = usize::from(self.nodes) - 1 - *closed;
                    drop(closed);
                    say(&format!(
                        "rthreads: shutdown: {left} node(s) not reached down the node tree within 3 s; telling them directly"
                    ));
                    for n in NodeId::all(self.nodes).skip(1) {
                        self.send(n, wire::Core::Shutdown { code }.encode());
                    }
                    closed = self.closed.lock();
                    continue;
                }
                let until = if told_all { deadline } else { fallback };
                closed = closed.wait_timeout(&self.closed_cv, until.saturating_duration_since(now));
            }
            let everyone_left = *closed + 1 >= usize::from(self.nodes);
            drop(closed);
            // What runs here from now on (std's thread teardown and exit, output forwarders)
            // may still write shared pages whose copies the departed nodes held, and nobody is
            // left to answer for them: the service thread opens the whole space to this node.
            // Not while a node that did not acknowledge may still be running.
            if everyone_left {
                self.alone.store(true, Ordering::SeqCst);
                dsm::fault::notify();
            }
        });
    }

    /// Whether every other node has acknowledged a shutdown by closing its connection (see
    /// [`Runtime::shutdown_cluster`]).
    pub(crate) fn is_alone(&self) -> bool {
        self.alone.load(Ordering::SeqCst)
    }
}

/// What a handler tells the service thread about the frame it was given.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Handled.
    Ok,
    /// The sender is broken: it is lost, for this reason (the cluster stops).
    Lost(String),
    /// The cluster must stop with exit code `code`: `report` is printed here, `short` on the others.
    Stop { code: i32, report: String, short: String },
}

/// Handles a frame from node `from` whose tag the handler registered for (on the service thread).
pub(crate) type FrameHandler = fn(rt: &'static Runtime, from: NodeId, body: &[u8]) -> Verdict;
/// Handles a request from node `from` that came on a direct connection; its answer goes back
/// through `route` (see [`direct`]).
pub(crate) type DirectHandler =
    fn(rt: &'static Runtime, from: NodeId, body: &[u8], route: direct::Route) -> Verdict;
/// Periodic work, called on every turn of the service loop: it keeps its own schedule. An idle
/// service thread turns at least every 250 ms (see `service::idle_sleep`); work that needs turns
/// more often says so with a [`Cadence`].
pub(crate) type Tick = fn(rt: &'static Runtime) -> Verdict;
/// How often periodic work wants a turn of the service loop now (`None`: no more often than an
/// idle service thread turns anyway).
pub(crate) type Cadence = fn(rt: &'static Runtime) -> Option<std::time::Duration>;
/// What to finish when the node stops (bounded by `deadline`): output to write, messages to let
/// through. Called on whatever thread ends the node.
pub(crate) type StopHook = fn(deadline: Instant);

/// What the modules above the runtime registered with it at start-up.
pub(crate) struct Extensions {
    frames: [Option<FrameHandler>; 256],
    direct: [Option<DirectHandler>; 256],
    ticks: Vec<Tick>,
    cadences: Vec<Cadence>,
    stops: Vec<StopHook>,
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions {
            frames: [None; 256],
            direct: [None; 256],
            ticks: Vec::new(),
            cadences: Vec::new(),
            stops: Vec::new(),
        }
    }
}

impl Extensions {
    /// Frames with these tags go to `h`.
    ///
    /// # Panics
    /// If a tag is the runtime's own, or taken already: two modules would claim one message.
    pub(crate) fn frames(&mut self, tags: &[u8], h: FrameHandler) {
        for &t in tags {
            assert!(!wire::CORE_TAGS.contains(&t), "tag {t:#x} is the runtime's own");
            assert!(self.frames[usize::from(t)].is_none(), "tag {t:#x} registered twice");
            self.frames[usize::from(t)] = Some(h);
        }
    }

    /// Requests with this tag arriving on a direct connection go to `h`.
    ///
    /// # Panics
    /// If the tag is taken already.
    pub(crate) fn direct(&mut self, tag: u8, h: DirectHandler) {
        assert!(self.direct[usize::from(tag)].is_none(), "direct tag {tag:#x} registered twice");
        self.direct[usize::from(tag)] = Some(h);
    }

    /// `t` runs on every turn of the service loop.
    pub(crate) fn tick(&mut self, t: Tick) {
        self.ticks.push(t);
    }

    /// The service loop turns as often as `c` asks for (besides whatever wakes it).
    pub(crate) fn cadence(&mut self, c: Cadence) {
        self.cadences.push(c);
    }

    /// The shortest interval between turns that the registered cadences ask for now.
    pub(super) fn wanted_turns(&self, rt: &'static Runtime) -> Option<std::time::Duration> {
        self.cadences.iter().filter_map(|c| c(rt)).min()
    }

    /// `h` runs when the node stops, in registration order.
    pub(crate) fn on_stop(&mut self, h: StopHook) {
        self.stops.push(h);
    }
}
