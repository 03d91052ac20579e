//! The node runtime: the service thread that owns every socket and the protocol state, and the
//! handle application threads use to talk to it.
//!
//! One service thread per node polls, with epoll, the fault pipe (traps handed over by the SIGSEGV
//! handler, and wake-ups for the command queue) and every peer connection. It alone runs the
//! coherence protocol, calls `mprotect`, and reads or writes page bytes (through the runtime view),
//! so the protocol state needs no lock. Application threads never touch a socket: they queue frames
//! in [`Runtime::send`] and wake the service thread through the same pipe.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, OnceLock};
use std::time::{Duration, Instant};

use dsm::fault::{self, FaultReceiver, SlotId, Wakeup};
use dsm::protocol::lrc::{self, LrcNode, Payload};
use dsm::protocol::sc::{Action, ScNode};
use dsm::{NodeId, PageId, Space};
use net::{Conn, ReadStatus, SendQueue};

use crate::alloc::{Heap, InternalAlloc};
use crate::poll::{self, Poller};
use crate::private::{ServiceLock, private};
use crate::thread;
use crate::wire::{self, Wire};

/// Everything application threads may ask of this node's runtime.
pub(crate) struct Runtime {
    pub(crate) me: u16,
    pub(crate) nodes: u16,
    pub(crate) parallelism: Vec<u32>,
    pub(crate) heap: Heap,
    layout: dsm::SpaceLayout,
    slice: usize,
    pub(crate) session: u64,
    addrs: Vec<String>,
    pub(crate) secret: net::Secret,
    failure_timeout: Duration,
    auth_timeout: Duration,
    /// The sending side of every peer connection. Any thread writes its frames straight to the
    /// socket under the peer's lock; what the socket does not take at once stays queued and the
    /// service thread finishes it when the socket becomes writable.
    senders: OnceLock<Vec<ServiceLock<Option<SendQueue>>>>,
    pub(crate) next_seq: AtomicU64,
    pub(crate) next_target: AtomicUsize,
    shutting_down: AtomicBool,
    /// A wake-up of the service thread is on its way (set by senders, cleared when it drains).
    wake_pending: AtomicBool,
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
    /// The release-consistent protocol runs (else the sequentially consistent one).
    pub(crate) lrc: bool,
    /// Release and acquire requests of application threads, for the service thread.
    cmds: ServiceLock<Vec<(Cmd, Arc<Done>)>>,
    cmd_pending: AtomicBool,
    /// Former guard pages of fiber stacks, left inaccessible (see `dsm::fault::set_guard`) until
    /// a trap on one lets the service thread give it back the access the protocol says it has.
    unguarded: ServiceLock<VecDeque<u64>>,
    unguarded_any: AtomicBool,
    /// Mirrors of the protocol state, written by the service thread before it lets any thread go
    /// on: a release has something to do, an acquire has something to drop.
    lrc_dirty: AtomicBool,
    lrc_stale: AtomicBool,
}

/// What an application thread asks of the release-consistent protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmd {
    Release,
    Acquire,
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

/// Writes `msg` and a newline to this process's stderr with one `write(2)` (for messages up to
/// 1 KiB), without taking std's stderr lock (an application thread may hold it while it waits in a
/// fault the service thread must serve), without allocating, and past the output forwarding of
/// application writes: the runtime's own messages.
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

/// The exit code of a node that stops because another node was lost.
pub(crate) const EXIT_NODE_LOST: i32 = 3;
/// The exit code of a cluster stopped because something could not go on: a deadlock between
/// threads, a fault or a service thread that made no progress for the failure timeout.
pub(crate) const EXIT_STUCK: i32 = 4;

/// When the service thread last went round its loop (ms of the monotonic clock), and what it is
/// doing now (see [`Phase`]): the watchdog reads both.
static SERVICE_BEAT_MS: AtomicU64 = AtomicU64::new(0);
static PHASE: AtomicU64 = AtomicU64::new(0);

/// What the service thread is doing, for the watchdog's report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
enum Phase {
    Polling = 0,
    Faults = 1,
    Frame = 2,
    Direct = 3,
    Commands = 4,
    Periodic = 5,
    Sending = 6,
    Accepting = 7,
    Wedged = 8,
}

fn set_phase(p: Phase, arg: u32) {
    PHASE.store((p as u64) << 32 | u64::from(arg), Ordering::Relaxed);
}

fn describe_phase() -> String {
    let v = PHASE.load(Ordering::Relaxed);
    let arg = v as u32;
    match (v >> 32) as u32 {
        0 => "waiting for events (epoll)".into(),
        1 => "handling faults of this node's threads".into(),
        2 => format!("handling a message from node {arg}"),
        3 => "serving a request on a direct connection".into(),
        4 => "running release/acquire requests".into(),
        5 => "doing its periodic work (heartbeats, load reports, frees, checks)".into(),
        6 => "writing queued messages to its connections".into(),
        7 => "accepting a connection".into(),
        8 => "wedged on purpose by RTHREADS_TEST_WEDGE (a test hook)".into(),
        k => format!("in an unknown phase {k}"),
    }
}

fn now_ms() -> u64 {
    dsm::fault::now_ns() / 1_000_000
}

/// Prints a fatal runtime error naming its cause and ends this node with exit code 1.
pub(crate) fn fatal(msg: &str) -> ! {
    let me = get().map(|r| r.me).unwrap_or(0);
    say(&format!("rthreads: node {me}: fatal: {msg}"));
    // SAFETY: _exit ends the process without running anything that could block on a lock held by
    // a thread stuck in a fault.
    unsafe { libc::_exit(1) }
}

/// What start-up learnt about this node and the cluster.
pub(crate) struct NodeInfo {
    pub(crate) me: u16,
    pub(crate) nodes: u16,
    /// Each node's `available_parallelism`.
    pub(crate) parallelism: Vec<u32>,
    pub(crate) layout: dsm::SpaceLayout,
    /// Bytes of the space homed at each node.
    pub(crate) slice: usize,
    pub(crate) session: u64,
    /// Each node's listening address.
    pub(crate) addrs: Vec<String>,
    /// The cluster secret (authenticates every connection).
    pub(crate) secret: net::Secret,
    /// Silence from a peer longer than this means it is lost.
    pub(crate) failure_timeout: Duration,
    /// How long a connection accepted after start-up may take to authenticate.
    pub(crate) auth_timeout: Duration,
    /// The release-consistent protocol runs.
    pub(crate) lrc: bool,
}

impl Runtime {
    pub(crate) fn install(node: NodeInfo, heap: Heap) -> &'static Runtime {
        let _internal = InternalAlloc::new();
        let NodeInfo {
            me,
            nodes,
            parallelism,
            layout,
            slice,
            session,
            addrs,
            secret,
            failure_timeout,
            auth_timeout,
            lrc,
        } = node;
        let rt = Runtime {
            me,
            nodes,
            parallelism,
            heap,
            layout,
            slice,
            session,
            addrs,
            secret,
            failure_timeout,
            auth_timeout,
            senders: OnceLock::new(),
            next_seq: AtomicU64::new(1),
            next_target: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            wake_pending: AtomicBool::new(false),
            sent_seq: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            recv_seq: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            seq_waiters: AtomicUsize::new(0),
            seq_lock: ServiceLock::new("runtime.seq", ()),
            seq_cv: Condvar::new(),
            closed: ServiceLock::new("runtime.closed", 0),
            closed_cv: Condvar::new(),
            lrc,
            cmds: ServiceLock::new("runtime.cmds", Vec::new()),
            cmd_pending: AtomicBool::new(false),
            unguarded: ServiceLock::new("runtime.unguarded", VecDeque::new()),
            unguarded_any: AtomicBool::new(false),
            lrc_dirty: AtomicBool::new(false),
            lrc_stale: AtomicBool::new(false),
        };
        if RUNTIME.set(rt).is_err() {
            fatal("the runtime was started twice");
        }
        let rt = RUNTIME.get().expect("just set");
        Heap::activate(&rt.heap);
        rt
    }

    /// Where node `n` accepts connections.
    pub(crate) fn addr_of(&self, n: u16) -> Option<&str> {
        self.addrs.get(usize::from(n)).map(String::as_str)
    }

    /// How many frames this node has queued to `to` on the ordinary connection.
    pub(crate) fn sent_to(&self, to: u16) -> u64 {
        self.sent_seq[usize::from(to)].load(Ordering::SeqCst)
    }

    /// How many frames from `from` this node's service thread has processed.
    pub(crate) fn processed_from(&self, from: u16) -> u64 {
        self.recv_seq[usize::from(from)].load(Ordering::SeqCst)
    }

    /// Waits until this node has processed the first `n` frames `from` sent it on the ordinary
    /// connection (a direct answer must not overtake them).
    pub(crate) fn wait_processed(&'static self, from: u16, n: u64) {
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

    /// The page number of `addr`, if it lies in the shared space.
    /// The guard page at `addr` no longer guards a stack on this node (its fiber ended or left).
    pub(crate) fn unguarded(&'static self, addr: usize) {
        let Some(page) = self.page_index(addr) else { return };
        private(move || {
            let _internal = InternalAlloc::new();
            let mut q = self.unguarded.lock();
            if q.len() >= 4096 {
                q.pop_front();
            }
            q.push_back(page);
            self.unguarded_any.store(true, Ordering::SeqCst);
        });
    }

    /// Whether `page` was a guard page not yet given back its access (and forgets it).
    fn take_unguarded(&self, page: u64) -> bool {
        if !self.unguarded_any.load(Ordering::SeqCst) {
            return false;
        }
        let mut q = self.unguarded.lock();
        let Some(i) = q.iter().position(|&p| p == page) else { return false };
        q.remove(i);
        self.unguarded_any.store(!q.is_empty(), Ordering::SeqCst);
        true
    }

    pub(crate) fn page_index(&self, addr: usize) -> Option<u64> {
        self.layout.page_of(addr).map(|p| p.0)
    }

    /// The home node of `addr`, if it lies in the shared space.
    pub(crate) fn home_of_addr(&self, addr: usize) -> Option<u16> {
        self.layout.contains(addr).then(|| ((addr - self.layout.base) / self.slice) as u16)
    }

    /// Sends a frame to node `to`: written to the socket at once where it takes it (the service
    /// thread batches its own frames and writes them before it next sleeps).
    pub(crate) fn send(&'static self, to: u16, frame: Vec<u8>) {
        private(move || {
            let frame = self.private_copy(frame);
            self.send_parts(to, &frame, &[], true);
        });
    }

    /// `frame` in private memory: moved as it is if it was built there, else copied (a frame built
    /// by a thread outside `InternalAlloc` lives in the shared heap, and the senders' locks must
    /// not be held while touching it). On a private stack.
    fn private_copy(&self, frame: Vec<u8>) -> Vec<u8> {
        if !self.layout.contains(frame.as_ptr() as usize) {
            return frame;
        }
        let copy = {
            let _internal = InternalAlloc::new();
            frame.as_slice().to_vec()
        };
        drop(frame);
        copy
    }

    /// Queues a frame for node `to` for the service thread to write with others in one system
    /// call: for streams of asynchronous messages, where throughput matters more than latency.
    pub(crate) fn send_batched(&'static self, to: u16, frame: Vec<u8>) {
        private(move || {
            let frame = self.private_copy(frame);
            self.send_parts(to, &frame, &[], false);
        });
    }

    /// Queues a frame made of `head` and `tail` for node `to`. On a private stack only (the
    /// senders' locks are the service thread's too), with both parts in private memory.
    fn send_parts(&self, to: u16, head: &[u8], tail: &[u8], now: bool) {
        let _internal = InternalAlloc::new();
        let Some(slot) = self.senders.get().and_then(|s| s.get(usize::from(to))) else {
            return;
        };
        if self.layout.contains(head.as_ptr() as usize) {
            crate::private::bug("a runtime frame was built in the shared heap (outside InternalAlloc)");
        }
        let mut q = slot.lock();
        let Some(q) = q.as_mut() else {
            // The peer is gone; the service thread reports it.
            return;
        };
        q.queue(head, tail);
        self.sent_seq[usize::from(to)].fetch_add(1, Ordering::SeqCst);
        crate::stats::sent(head, head.len() + tail.len());
        if !tail.is_empty() {
            crate::stats::page(true);
        }
        if ON_SERVICE_THREAD.with(Cell::get) {
            return;
        }
        if now && DIRECT_SEND {
            // A write error is noticed by the service thread when it reads from the peer.
            let _ = q.flush();
        }
        if q.wants_write() && !self.wake_pending.swap(true, Ordering::SeqCst) {
            fault::notify();
        }
    }

    /// Runs `cmd` on the service thread and waits until it is complete. Release-consistent
    /// protocol only; skipped when the protocol state says it has nothing to do.
    pub(crate) fn consistency(&'static self, cmd: Cmd) {
        let needed = match cmd {
            Cmd::Release => self.lrc_dirty.load(Ordering::SeqCst),
            Cmd::Acquire => self.lrc_stale.load(Ordering::SeqCst),
        };
        if !self.lrc || !needed || on_service_thread() {
            return;
        }
        private(move || {
            let _internal = InternalAlloc::new();
            let started = Instant::now();
            let done = Arc::new(Done { done: ServiceLock::new("runtime.done", false), cv: Condvar::new() });
            self.cmds.lock().push((cmd, Arc::clone(&done)));
            self.cmd_pending.store(true, Ordering::SeqCst);
            fault::notify();
            let mut d = done.done.lock();
            while !*d {
                d = d.wait(&done.cv);
            }
            drop(d);
            crate::stats::consistency_waited(cmd, started.elapsed());
        });
    }

    /// Whether the cluster is stopping (shutdown or a lost node): the output of application threads
    /// then goes straight to this node's descriptors.
    pub(crate) fn is_stopping(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Silence from a peer longer than this means it is lost.
    pub(crate) fn failure_timeout(&self) -> Duration {
        self.failure_timeout
    }

    /// Node 0 only: tells every node to exit and waits (bounded) until they have closed their
    /// connections.
    pub(crate) fn shutdown_cluster(&'static self, code: i32) {
        private(move || {
            let _internal = InternalAlloc::new();
            self.shutting_down.store(true, Ordering::SeqCst);
            for n in 1..self.nodes {
                self.send(n, wire::shutdown(code));
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut closed = self.closed.lock();
            while *closed + 1 < usize::from(self.nodes) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    say("rthreads: some nodes did not acknowledge shutdown within 10 s");
                    break;
                }
                closed = closed.wait_timeout(&self.closed_cv, left);
            }
        });
    }
}

const FAULTS: u64 = u64::MAX;
const LISTENER: u64 = u64::MAX - 1;
/// The timer of the network-delay emulation.
const DELAY_TIMER: u64 = u64::MAX - 2;
/// Tokens of direct (request/answer) connections start here.
const DIRECT: u64 = 1 << 32;

/// A direct connection accepted from another node's thread (see `rpc`).
struct DirectConn {
    conn: Conn,
    send: Arc<ServiceLock<SendQueue>>,
    /// The peer, once its hello has been checked.
    peer: Option<u16>,
    /// The challenge sent, until the peer has answered it (see `net::auth`).
    challenge: Option<[u8; net::auth::NONCE]>,
    /// When it was accepted: a connection that has not said a valid hello by
    /// `accepted + RTHREADS_AUTH_TIMEOUT` is closed.
    accepted: Instant,
}

/// Connections that have not authenticated yet that one node keeps at most; more are refused.
const MAX_STRANGERS: usize = 64;
/// Lines about strangers a node prints per second at most (a burst, then a count of the rest).
const STRANGER_LINES_PER_SECOND: u32 = 5;

/// The service thread's state.
pub(crate) struct Service {
    rt: &'static Runtime,
    space: Space,
    sc: ScNode,
    /// The release-consistent protocol, when it runs (then `sc` is unused).
    lrc: Option<Box<LrcNode>>,
    lrc_actions: Vec<lrc::Action>,
    /// Twins of the pages written here since their last diff.
    twins: HashMap<PageId, Box<[u8]>>,
    /// Releases in progress and who waits for each.
    releases: HashMap<u64, Arc<Done>>,
    diff_buf: Vec<u8>,
    conns: Vec<Option<Conn>>,
    interest: Vec<u32>,
    poller: Poller,
    faults: FaultReceiver,
    waiting: HashMap<PageId, Vec<SlotId>>,
    actions: Vec<Action>,
    wakeups: Vec<Wakeup>,
    lost_deadline: Option<(Instant, u16, String)>,
    /// The cluster is being stopped after a lost node.
    aborting: bool,
    poll_us: u64,
    direct_poll_us: u64,
    listener: std::net::TcpListener,
    direct: Vec<Option<DirectConn>>,
    /// Direct requests waiting for earlier ordinary frames from their sender: (peer, count, ...).
    deferred: Vec<(u16, u64, crate::sync::manager::Request, Arc<ServiceLock<SendQueue>>)>,
    /// When something last arrived from each peer (a frame, or the connection closing).
    last_heard: Vec<Instant>,
    /// When this node last sent every peer a heartbeat.
    last_beat: Instant,
    /// Emulated one-way network delay (`RTHREADS_NET_DELAY_US`; zero: off).
    delay: Duration,
    /// When the stuck-fault and deadlock checks last ran, and when this node last reported its
    /// lock waits to node 0.
    last_check: Instant,
    last_lock_report: Instant,
    /// Node 0: the latest lock report of every node, and the ring of threads found last time.
    lock_reports: HashMap<u16, (Instant, Vec<crate::sync::watch::ThreadLocks>)>,
    last_ring: Option<Vec<u64>>,
    /// How long a connection accepted at run time may take to authenticate (`RTHREADS_AUTH_TIMEOUT`).
    auth_timeout: Duration,
    /// Accepting is paused until then (the last `accept` failed for lack of descriptors or
    /// memory), and the pause to take after the next failure.
    listener_paused: Option<Instant>,
    accept_backoff: Duration,
    /// Failed accepts since the last line about them, and when that line was printed (at most one
    /// a second).
    accept_failures: u64,
    last_accept_line: Option<Instant>,
    /// Rate limit of the lines about strangers: the current one-second window, lines printed in
    /// it, lines suppressed.
    stranger_window: Instant,
    stranger_lines: u32,
    stranger_suppressed: u64,
    /// When the unauthenticated connections were last checked for their deadline.
    last_stranger_check: Instant,
    /// Blocks other nodes returned that could not go back into the arena yet (it was busy).
    returned: Vec<Vec<crate::alloc::Block>>,
    /// `RTHREADS_TEST_WEDGE` names this node: its service thread stops for good at the first
    /// `Spawn` or `Done` it handles (a test hook for the watchdog).
    wedge: bool,
    /// Frames received and not yet due, in arrival order: (due, peer, frame).
    delayed: VecDeque<(Instant, u16, Vec<u8>)>,
    /// A timerfd armed for the first delayed frame (with the emulation on).
    delay_timer: Option<OwnedFd>,
}

impl Service {
    pub(crate) fn new(
        rt: &'static Runtime,
        space: Space,
        sc: ScNode,
        lrc: Option<LrcNode>,
        streams: Vec<Option<std::net::TcpStream>>,
        faults: FaultReceiver,
        listener: std::net::TcpListener,
    ) -> std::io::Result<Service> {
        let _internal = InternalAlloc::new();
        let poller = Poller::new()?;
        poller.add(faults.fd(), poll::READ, FAULTS)?;
        listener.set_nonblocking(true)?;
        poller.add(listener.as_raw_fd(), poll::READ, LISTENER)?;
        let mut conns = Vec::new();
        for (i, s) in streams.into_iter().enumerate() {
            conns.push(match s {
                Some(s) => {
                    s.set_read_timeout(None)?;
                    let c = Conn::new(s)?;
                    poller.add(c.fd(), poll::READ, i as u64)?;
                    Some(c)
                }
                None => None,
            });
        }
        let senders = conns
            .iter()
            .map(|c| Ok(ServiceLock::new("runtime.senders", c.as_ref().map(Conn::send_queue).transpose()?)))
            .collect::<std::io::Result<Vec<_>>>()?;
        if rt.senders.set(senders).is_err() {
            fatal("the service was started twice");
        }
        let env_us = |name: &str, default: u64| {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        };
        let poll_us = env_us("RTHREADS_POLL_US", 0);
        let direct_poll_us = env_us("RTHREADS_DIRECT_POLL_US", 0);
        let delay = net_delay();
        let delay_timer = if delay.is_zero() {
            None
        } else {
            // SAFETY: plain syscall; the descriptor is owned below.
            let fd = unsafe {
                libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK)
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: just created, owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            poller.add(fd.as_raw_fd(), poll::READ, DELAY_TIMER)?;
            Some(fd)
        };
        Ok(Service {
            rt,
            space,
            sc,
            lrc: lrc.map(Box::new),
            lrc_actions: Vec::new(),
            twins: HashMap::new(),
            releases: HashMap::new(),
            diff_buf: Vec::with_capacity(2 * dsm::sys::PAGE_SIZE),
            interest: vec![poll::READ; conns.len()],
            conns,
            poller,
            faults,
            waiting: HashMap::new(),
            actions: Vec::new(),
            wakeups: Vec::new(),
            lost_deadline: None,
            aborting: false,
            poll_us,
            direct_poll_us,
            listener,
            direct: Vec::new(),
            deferred: Vec::new(),
            last_heard: vec![Instant::now(); usize::from(rt.nodes)],
            delay,
            delayed: VecDeque::new(),
            delay_timer,
            last_beat: Instant::now(),
            last_check: Instant::now(),
            last_lock_report: Instant::now(),
            lock_reports: HashMap::new(),
            last_ring: None,
            returned: Vec::new(),
            auth_timeout: rt.auth_timeout,
            listener_paused: None,
            accept_backoff: Duration::from_millis(50),
            accept_failures: 0,
            last_accept_line: None,
            stranger_window: Instant::now(),
            stranger_lines: 0,
            stranger_suppressed: 0,
            last_stranger_check: Instant::now(),
            wedge: std::env::var("RTHREADS_TEST_WEDGE").ok().and_then(|v| v.parse::<u16>().ok())
                == Some(rt.me),
        })
    }

    /// Runs the service loop on a new thread, and the watchdog that reports it if it stops moving.
    pub(crate) fn start(self) {
        let _internal = InternalAlloc::new();
        SERVICE_BEAT_MS.store(now_ms(), Ordering::SeqCst);
        let (me, timeout) = (self.rt.me, self.rt.failure_timeout);
        std::thread::Builder::new()
            .name("rthreads-watchdog".into())
            .spawn(move || {
                crate::alloc::runtime_thread();
                watchdog(me, timeout)
            })
            .unwrap_or_else(|e| fatal(&format!("cannot start the watchdog: {e}")));
        std::thread::Builder::new()
            .name("rthreads-service".into())
            .spawn(move || {
                crate::alloc::runtime_thread();
                ON_SERVICE_THREAD.with(|c| c.set(true));
                fault::register_service_thread();
                self.run()
            })
            .unwrap_or_else(|e| fatal(&format!("cannot start the service thread: {e}")));
    }

    fn run(mut self) -> ! {
        let mut ready = Vec::with_capacity(64);
        let mut body = Vec::with_capacity(8192);
        // After serving a request, poll instead of sleeping for a little while: the next request
        // (the unlock after a lock, the next page of a scan) then finds this thread awake, which on
        // a VM saves the slow kind of wake-up.
        let mut hot_until: Option<Instant> = None;
        loop {
            SERVICE_BEAT_MS.store(now_ms(), Ordering::Relaxed);
            set_phase(Phase::Polling, 0);
            let timeout = if hot_until.is_some_and(|t| Instant::now() < t) {
                0
            } else if !self.returned.is_empty() {
                1
            } else if let Some(t) = self.listener_paused {
                t.saturating_duration_since(Instant::now()).as_millis().clamp(1, 25) as i32
            } else if let Some((t, _, _)) = &self.lost_deadline {
                t.saturating_duration_since(Instant::now()).as_millis().min(100) as i32
            } else {
                crate::placement::poll_timeout_ms(self.rt)
            };
            if let Err(e) = self.poller.wait(timeout, &mut ready) {
                fatal(&format!("epoll: {e}"));
            }
            let mut served = false;
            SERVICE_BEAT_MS.store(now_ms(), Ordering::Relaxed);
            for &(token, events) in &ready {
                if token == FAULTS {
                    set_phase(Phase::Faults, 0);
                    self.on_wakeups();
                } else if token == DELAY_TIMER {
                    self.clear_delay_timer();
                } else if token == LISTENER {
                    set_phase(Phase::Accepting, 0);
                    self.accept_direct();
                } else if token >= DIRECT {
                    set_phase(Phase::Direct, 0);
                    self.on_direct((token - DIRECT) as usize, &mut body);
                    served = true;
                } else {
                    set_phase(Phase::Frame, token as u32);
                    self.on_conn(token as usize, events, &mut body);
                }
            }
            if !self.delayed.is_empty() {
                self.deliver_due();
            }
            self.rt.wake_pending.store(false, Ordering::SeqCst);
            if self.rt.cmd_pending.swap(false, Ordering::SeqCst) {
                set_phase(Phase::Commands, 0);
                self.run_commands();
            }
            set_phase(Phase::Periodic, 0);
            self.check_peers();
            self.check_stuck();
            self.check_strangers();
            crate::placement::tick(self.rt);
            self.retry_returned();
            self.send_remote_frees();
            set_phase(Phase::Sending, 0);
            self.flush_all();
            if let Some((t, lost, why)) = &self.lost_deadline
                && Instant::now() >= *t
            {
                let (lost, why) = (*lost, why.clone());
                self.abort_cluster(lost, &why);
            }
            let hot = (served && self.direct_poll_us > 0) || (self.poll_us > 0 && !self.waiting.is_empty());
            if hot {
                let us = if served { self.direct_poll_us } else { self.poll_us };
                hot_until = Some(Instant::now() + Duration::from_micros(us));
            }
        }
    }

    /// Sends heartbeats on schedule and declares lost a peer that has been silent too long.
    fn check_peers(&mut self) {
        let now = Instant::now();
        let timeout = self.rt.failure_timeout;
        if now.duration_since(self.last_beat) >= timeout / 4 {
            self.last_beat = now;
            for i in 0..self.conns.len() {
                if self.conns[i].is_some() {
                    self.rt.send_batched(i as u16, wire::heartbeat());
                }
            }
        }
        if self.rt.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        for i in 0..self.conns.len() {
            if self.conns[i].is_some() && now.duration_since(self.last_heard[i]) > timeout {
                let why = format!(
                    "nothing heard from it for {:.1} s (RTHREADS_FAILURE_TIMEOUT): it stopped, hung, or its link is cut",
                    timeout.as_secs_f64()
                );
                self.peer_lost(i, &why);
            }
        }
    }

    fn on_wakeups(&mut self) {
        let mut wakeups = std::mem::take(&mut self.wakeups);
        self.faults.drain(|w| wakeups.push(w));
        for w in wakeups.drain(..) {
            if let Wakeup::Fault { slot, page, kind, atomic } = w {
                if page.0 >= self.sc.page_count() {
                    fatal(&format!("trap on {page}, outside the space"));
                }
                crate::stats::log_fault(self.rt.me, page, kind, self.sc.pages_per_node());
                self.waiting.entry(page).or_default().push(slot);
                // A trap on a former guard page of a stack, which was made inaccessible behind the
                // protocol's back (see `dsm::fault::set_guard`): it gets back the protection the
                // protocol says this node has (if that is too little, the protocol goes on).
                if self.rt.take_unguarded(page.0) {
                    let have = self.lrc.as_ref().map_or_else(|| self.sc.access(page), |l| l.access(page));
                    if let Err(e) = self.space.protect(page, have) {
                        fatal(&format!("mprotect of {page}: {e}"));
                    }
                }
                if let Some(mut l) = self.lrc.take() {
                    let mut acts = std::mem::take(&mut self.lrc_actions);
                    if atomic && !l.is_sc(page) {
                        // An atomic read-modify-write: the page holds a synchronisation variable
                        // and must be sequentially consistent from now on.
                        l.set_sc(page, &mut acts);
                    }
                    l.fault(page, kind, &mut acts);
                    self.lrc = Some(l);
                    self.exec_lrc(&mut acts, None);
                    self.lrc_actions = acts;
                    continue;
                }
                let mut actions = std::mem::take(&mut self.actions);
                self.sc.fault(page, kind, &mut actions);
                self.exec(&mut actions, None);
                self.actions = actions;
            }
        }
        self.wakeups = wakeups;
    }

    fn on_conn(&mut self, i: usize, events: u32, body: &mut Vec<u8>) {
        if events & !poll::WRITE == 0 {
            // Writable: flush_all, at the end of this round, writes what is queued.
            return;
        }
        let Some(conn) = self.conns.get_mut(i).and_then(|c| c.as_mut()) else {
            return;
        };
        self.last_heard[i] = Instant::now();
        let status = match conn.fill() {
            Ok(s) => s,
            Err(e) => return self.peer_lost(i, &format!("receive failed: {e}")),
        };
        loop {
            let Some(conn) = self.conns[i].as_mut() else {
                return;
            };
            match conn.next_frame(body) {
                Ok(true) if !self.delay.is_zero() => {
                    let _internal = InternalAlloc::new();
                    self.delayed.push_back((Instant::now() + self.delay, i as u16, body.clone()));
                }
                Ok(true) => {
                    self.on_frame(i as u16, body);
                    self.processed(i as u16);
                }
                Ok(false) => break,
                Err(e) => return self.peer_lost(i, &format!("it sent a malformed frame ({e})")),
            }
        }
        if status == ReadStatus::Closed {
            // What the peer sent before it closed still counts (a last message, then exit).
            self.deliver_from(i as u16);
            self.peer_lost(i, "closed the connection");
        }
    }

    /// Network-delay emulation: handles the received frames that are due, in arrival order, and
    /// arms the timer for the next one.
    fn deliver_due(&mut self) {
        let now = Instant::now();
        while let Some((due, from, _)) = self.delayed.front() {
            if *due > now {
                break;
            }
            let from = *from;
            let (_, _, frame) = self.delayed.pop_front().expect("front exists");
            self.on_frame(from, &frame);
            self.processed(from);
        }
        if let (Some((due, _, _)), Some(t)) = (self.delayed.front(), &self.delay_timer) {
            let left = due.saturating_duration_since(now).max(Duration::from_nanos(1));
            let spec = libc::itimerspec {
                it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
                it_value: libc::timespec {
                    tv_sec: left.as_secs() as libc::time_t,
                    tv_nsec: left.subsec_nanos() as libc::c_long,
                },
            };
            // SAFETY: a timerfd we own; `spec` is valid for the call.
            unsafe { libc::timerfd_settime(t.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        }
    }

    /// Handles every frame still held back from `from` now (its connection is closing).
    fn deliver_from(&mut self, from: u16) {
        if self.delayed.iter().all(|d| d.1 != from) {
            return;
        }
        let (mine, rest): (VecDeque<_>, _) =
            std::mem::take(&mut self.delayed).into_iter().partition(|d| d.1 == from);
        self.delayed = rest;
        for (_, _, frame) in mine {
            self.on_frame(from, &frame);
            self.processed(from);
        }
    }

    fn clear_delay_timer(&mut self) {
        if let Some(t) = &self.delay_timer {
            let mut n = 0u64;
            // SAFETY: reads 8 bytes into `n` from a non-blocking timerfd we own.
            unsafe { libc::read(t.as_raw_fd(), (&raw mut n).cast(), 8) };
        }
    }

    fn accept_direct(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return self.pause_accepting(&e),
            };
            let strangers = self.direct.iter().flatten().filter(|d| d.peer.is_none()).count();
            if strangers >= MAX_STRANGERS {
                let from = stream.peer_addr().map_or_else(|_| "an unknown address".into(), |a| a.to_string());
                drop(stream);
                self.stranger_line(format!(
                    "refused a connection from {from}: {MAX_STRANGERS} connections are already waiting to authenticate"
                ));
                continue;
            }
            // Nothing from a stranger is buffered beyond a few kilobytes, and its buffer starts
            // small: room for a frame body grows only as a peer that authenticated needs it.
            let mut conn = match Conn::with_buffer(stream, 256) {
                Ok(c) => c,
                Err(_) => continue,
            };
            // Nothing from a stranger is buffered beyond a few kilobytes.
            conn.set_limit(4096);
            let mut send = match conn.send_queue() {
                Ok(q) => q,
                // Out of descriptors for the duplicate: the same as `accept` failing.
                Err(e) => return self.pause_accepting(&e),
            };
            let Ok(challenge) = net::auth::nonce() else { continue };
            send.queue(&net::auth::challenge_frame(&challenge), &[]);
            if send.flush().is_err() {
                continue;
            }
            let i = self.direct.iter().position(Option::is_none).unwrap_or_else(|| {
                self.direct.push(None);
                self.direct.len() - 1
            });
            if let Err(e) = self.poller.add(conn.fd(), poll::READ, DIRECT + i as u64) {
                fatal(&format!("epoll_ctl: {e}"));
            }
            self.direct[i] = Some(DirectConn {
                conn,
                send: Arc::new(ServiceLock::new("runtime.direct", send)),
                peer: None,
                challenge: Some(challenge),
                accepted: Instant::now(),
            });
            self.accept_backoff = Duration::from_millis(50);
        }
    }

    /// `accept` failed for want of a resource (descriptors, buffers, memory): the listener stays
    /// readable, so polling it again at once would spin. Stops watching it for a while, longer
    /// after each failure in a row (up to a second); says so at most once a second.
    fn pause_accepting(&mut self, e: &std::io::Error) {
        let pause = self.accept_backoff;
        self.accept_backoff = (pause * 2).min(Duration::from_secs(1));
        if self.listener_paused.is_none() {
            let _ = self.poller.delete(self.listener.as_raw_fd());
        }
        let now = Instant::now();
        self.listener_paused = Some(now + pause);
        self.accept_failures += 1;
        if self.last_accept_line.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            self.last_accept_line = Some(now);
            say(&format!(
                "rthreads: node {}: cannot accept connections: {e} ({} time(s) since the last such line); \
                 pausing up to a second at a time; the connections this node has keep working",
                self.rt.me, self.accept_failures
            ));
            self.accept_failures = 0;
        }
    }

    /// Closes every connection that has not authenticated within the deadline, and resumes
    /// accepting after a pause.
    fn check_strangers(&mut self) {
        let now = Instant::now();
        if let Some(t) = self.listener_paused
            && now >= t
        {
            self.listener_paused = None;
            if let Err(e) = self.poller.add(self.listener.as_raw_fd(), poll::READ, LISTENER) {
                fatal(&format!("epoll_ctl: {e}"));
            }
        }
        if now.duration_since(self.last_stranger_check) < Duration::from_millis(100) {
            return;
        }
        self.last_stranger_check = now;
        if self.stranger_suppressed > 0 && now.duration_since(self.stranger_window) >= Duration::from_secs(1)
        {
            // Say how many lines the last window kept back, even if no stranger comes again.
            say(&format!(
                "rthreads: node {}: ... and {} more such lines in the last second",
                self.rt.me, self.stranger_suppressed
            ));
            self.stranger_suppressed = 0;
            self.stranger_lines = 0;
            self.stranger_window = now;
        }
        for i in 0..self.direct.len() {
            let late = self.direct[i]
                .as_ref()
                .is_some_and(|d| d.peer.is_none() && now.duration_since(d.accepted) > self.auth_timeout);
            if late && let Some(d) = self.direct[i].take() {
                let from = d.conn.peer_addr();
                self.close_direct(d);
                self.stranger_line(format!(
                    "closed a connection from {from}: it did not authenticate within {:.1} s (RTHREADS_AUTH_TIMEOUT)",
                    self.auth_timeout.as_secs_f64()
                ));
            }
        }
    }

    /// Stops watching a direct connection and closes it.
    fn close_direct(&mut self, d: DirectConn) {
        let _ = self.poller.delete(d.conn.fd());
        drop(d);
    }

    /// Prints a line about a stranger (a connection that is not, or not yet, a peer), at most
    /// `STRANGER_LINES_PER_SECOND` a second: a crowd of strangers must not flood stderr.
    fn stranger_line(&mut self, what: String) {
        let now = Instant::now();
        if now.duration_since(self.stranger_window) >= Duration::from_secs(1) {
            if self.stranger_suppressed > 0 {
                say(&format!(
                    "rthreads: node {}: ... and {} more such lines in the last second",
                    self.rt.me, self.stranger_suppressed
                ));
            }
            self.stranger_window = now;
            self.stranger_lines = 0;
            self.stranger_suppressed = 0;
        }
        if self.stranger_lines < STRANGER_LINES_PER_SECOND {
            self.stranger_lines += 1;
            say(&format!("rthreads: node {}: {what}", self.rt.me));
        } else {
            self.stranger_suppressed += 1;
        }
    }

    fn on_direct(&mut self, i: usize, body: &mut Vec<u8>) {
        let Some(d) = self.direct.get_mut(i).and_then(Option::as_mut) else { return };
        let status = d.conn.fill();
        let mut close = !matches!(status, Ok(ReadStatus::WouldBlock));
        let mut stranger = None;
        loop {
            let Some(d) = self.direct[i].as_mut() else { return };
            match d.conn.next_frame(body) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    if d.peer.is_none() {
                        stranger = Some(format!(
                            "refused a connection from {}: not an rthreads peer ({e})",
                            d.conn.peer_addr()
                        ));
                    }
                    close = true;
                    break;
                }
            }
            if let Some(challenge) = d.challenge {
                let mut q = d.send.lock();
                match net::auth::verify(&self.rt.secret, &challenge, body) {
                    Ok(proof) => {
                        q.queue(&proof, &[]);
                        let _ = q.flush();
                        d.challenge = None;
                        d.conn.set_limit(net::frame::MAX_FRAME);
                        continue;
                    }
                    Err(e) => {
                        stranger = Some(format!("refused a connection from {}: {e}", d.conn.peer_addr()));
                        q.queue(&net::auth::reject_frame(&e.to_string()), &[]);
                        let _ = q.flush();
                        close = true;
                        break;
                    }
                }
            }
            if d.peer.is_none() {
                d.peer = crate::rpc::check_hello(body, self.rt.nodes, self.rt.session);
                if d.peer.is_none() {
                    stranger =
                        Some(format!("refused a connection from {} with a bad hello", d.conn.peer_addr()));
                    close = true;
                    break;
                }
                continue;
            }
            crate::stats::received(body);
            let peer = d.peer.unwrap_or(0);
            let decoded = match wire::decode(body) {
                Ok(Wire::Ordered { after, inner }) => wire::decode(inner).map(|w| (after, w)),
                Ok(w) => Ok((0, w)),
                Err(e) => Err(e),
            };
            match decoded {
                Ok((after, Wire::SyncReq(req))) if req.waiter.0 == peer => {
                    let send = Arc::clone(&d.send);
                    if self.rt.processed_from(peer) >= after {
                        Self::serve_direct(req, send);
                    } else {
                        // Sent after frames still on their way on the ordinary connection: wait
                        // for them, so the request cannot overtake what happened before it.
                        self.deferred.push((peer, after, req, send));
                    }
                }
                other => {
                    say(&format!(
                        "rthreads: node {}: unexpected message on a direct connection from {:?}: {other:?}",
                        self.rt.me, d.peer
                    ));
                    close = true;
                    break;
                }
            }
        }
        if close && let Some(d) = self.direct[i].take() {
            self.close_direct(d);
        }
        if let Some(line) = stranger {
            self.stranger_line(line);
        }
    }

    fn serve_direct(req: crate::sync::manager::Request, send: Arc<ServiceLock<SendQueue>>) {
        if req.op.expects_reply() {
            crate::rpc::expect_answer(req.waiter, send);
        }
        crate::sync::submit(req);
    }

    /// A frame from `from` has been handled: count it, serve direct requests that waited for it,
    /// and wake threads waiting for it before they use a direct answer.
    fn processed(&mut self, from: u16) {
        let n = self.rt.recv_seq[usize::from(from)].fetch_add(1, Ordering::SeqCst) + 1;
        if !self.deferred.is_empty() {
            let (ready, waiting): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.deferred).into_iter().partition(|d| d.0 == from && d.1 <= n);
            self.deferred = waiting;
            for (_, _, req, send) in ready {
                Self::serve_direct(req, send);
            }
        }
        if self.rt.seq_waiters.load(Ordering::SeqCst) > 0 {
            let _g = self.rt.seq_lock.lock();
            self.rt.seq_cv.notify_all();
        }
    }

    fn peer_lost(&mut self, i: usize, why: &str) {
        if let Some(c) = self.conns[i].take() {
            drop(c);
        }
        if let Some(slot) = self.rt.senders.get().and_then(|s| s.get(i)) {
            slot.lock().take();
        }
        if self.rt.shutting_down.load(Ordering::SeqCst) {
            let mut closed = self.rt.closed.lock();
            *closed += 1;
            self.rt.closed_cv.notify_all();
            return;
        }
        if self.aborting {
            return;
        }
        let msg = format!("lost node {i}: {why}");
        if self.rt.me == 0 || i == 0 {
            self.abort_cluster(i as u16, &msg);
        }
        // Another node may simply have exited on node 0's shutdown order before ours arrived:
        // give that order a moment before treating the loss as fatal.
        if self.lost_deadline.is_none() {
            self.lost_deadline = Some((Instant::now() + Duration::from_secs(2), i as u16, msg));
        }
    }

    /// Every quarter of a second: a fault of this node that has waited longer than the failure
    /// timeout stops the cluster with a report; a thread that has waited that long for a lock
    /// makes this node report its threads' locks to node 0, which looks for a deadlock.
    fn check_stuck(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_check) < Duration::from_millis(250) || self.aborting {
            return;
        }
        self.last_check = now;
        let limit = self.rt.failure_timeout;
        let now_ns = dsm::fault::now_ns();
        let stuck = dsm::fault::pending()
            .into_iter()
            .find(|f| now_ns.saturating_sub(f.since_ns) > limit.as_nanos() as u64);
        if let Some(f) = stuck {
            let report = self.describe_stuck_fault(&f);
            self.stop_cluster(EXIT_STUCK, &report, "a fault on it made no progress");
        }
        let limit_ms = limit.as_millis() as u64;
        if crate::sync::watch::long_wait(limit_ms)
            && now.duration_since(self.last_lock_report) >= Duration::from_secs(1)
        {
            self.last_lock_report = now;
            let threads = crate::sync::watch::snapshot();
            if self.rt.me == 0 {
                self.on_lock_report(0, threads);
            } else {
                let _internal = InternalAlloc::new();
                self.rt.send(0, wire::locks(&threads));
            }
        }
    }

    /// What a fault that does not end is waiting for.
    fn describe_stuck_fault(&self, f: &dsm::fault::PendingFault) -> String {
        let page = f.page;
        let home = self.sc.home_of(page);
        let comm = std::fs::read_to_string(format!("/proc/self/task/{}/comm", f.tid)).unwrap_or_default();
        let waited = Duration::from_nanos(dsm::fault::now_ns().saturating_sub(f.since_ns));
        let want = if f.kind == dsm::FaultKind::Write { "write to" } else { "read" };
        let state = match &self.lrc {
            Some(l) => format!(
                "access here {:?}, fetching {}, stale {}, sequentially consistent {}, sharing at the home {:?}",
                l.access(page),
                l.is_fetching(page),
                l.is_stale(page),
                l.is_sc(page),
                l.sharing(page)
            ),
            None => format!(
                "access here {:?}, request outstanding {:?}, directory {:?}, in a transaction {}, requests queued {}",
                self.sc.access(page),
                self.sc.outstanding(page),
                self.sc.directory(page),
                self.sc.in_transaction(page),
                self.sc.queued(page)
            ),
        };
        format!(
            "stuck: thread '{}' (OS thread {}) of node {} has waited {:.1} s to {want} {page} (home node {home}); \
             the protocol state of that page on this node: {state}; the service thread is running ({}). \
             This is a bug of rthreads: please report it with this message",
            comm.trim(),
            f.tid,
            self.rt.me,
            waited.as_secs_f64(),
            describe_phase()
        )
    }

    /// Node 0: node `from` reports the locks its threads hold and wait for; a ring of threads that
    /// wait for each other, seen twice in a row, stops the cluster.
    fn on_lock_report(&mut self, from: u16, threads: Vec<crate::sync::watch::ThreadLocks>) {
        let now = Instant::now();
        self.lock_reports.insert(from, (now, threads));
        // Only fresh reports count: a node reports every second while a wait lasts.
        self.lock_reports.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_millis(2500));
        let current: HashMap<u16, Vec<_>> =
            self.lock_reports.iter().map(|(&n, (_, t))| (n, t.clone())).collect();
        let limit_ms = self.rt.failure_timeout.as_millis() as u64;
        let ring = crate::sync::watch::find_cycle(&current, limit_ms);
        let ids = ring.as_ref().map(|r| {
            let mut ids: Vec<u64> = r.iter().map(|l| l.locks.thread).collect();
            ids.sort_unstable();
            ids
        });
        if let (Some(ring), Some(ids)) = (&ring, &ids)
            && self.last_ring.as_ref() == Some(ids)
        {
            let report = crate::sync::watch::describe(ring, limit_ms);
            self.stop_cluster(EXIT_STUCK, &report, "it found a deadlock between threads (see its report)");
        }
        self.last_ring = ids;
    }

    /// Stops the whole cluster although no node was lost: prints `report` here, tells every other
    /// node to stop (they print `short`), and ends this node with `code`.
    fn stop_cluster(&mut self, code: i32, report: &str, short: &str) -> ! {
        self.aborting = true;
        say(&format!("rthreads: node {}: {report}", self.rt.me));
        let frame = {
            let _internal = InternalAlloc::new();
            wire::stop(code, &format!("node {}: {short}", self.rt.me))
        };
        for j in 0..self.conns.len() {
            if self.conns[j].is_some() {
                self.rt.send(j as u16, frame.clone());
            }
        }
        self.flush_all();
        self.finish_abort(code)
    }

    /// Node `lost` is gone: tells every other node to stop, and stops.
    fn abort_cluster(&mut self, lost: u16, msg: &str) -> ! {
        self.aborting = true;
        say(&format!("rthreads: node {}: {msg}; stopping the cluster", self.rt.me));
        let frame = wire::abort(lost, msg);
        for j in 0..self.conns.len() {
            if self.conns[j].is_some() {
                self.rt.send(j as u16, frame.clone());
            }
        }
        self.flush_all();
        self.finish_abort(EXIT_NODE_LOST)
    }

    /// Ends this node after a lost node: node 0 first lets the nodes it started print why they
    /// stop (their output passes through it), the others give their last frames a moment to leave.
    fn finish_abort(&mut self, code: i32) -> ! {
        self.aborting = true;
        self.rt.shutting_down.store(true, Ordering::SeqCst);
        // This node's last frames (its output among them) leave before it ends.
        self.flush_all();
        let deadline = Instant::now() + Duration::from_millis(1500);
        if self.rt.me == 0 {
            // The output the other nodes forwarded before, then what they print as they stop.
            crate::output::drain(Instant::now() + Duration::from_millis(500));
            crate::launch::wait_forwarders(deadline);
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        crate::trace::flush(self.rt.me);
        // SAFETY: as in `fatal`: nothing may run that could wait on application threads.
        unsafe { libc::_exit(code) }
    }

    fn on_frame(&mut self, from: u16, body: &[u8]) {
        crate::stats::received(body);
        let wire = match wire::decode(body) {
            Ok(w) => w,
            Err(e) => fatal(&format!("node {from} sent a malformed message: {e}")),
        };
        match wire {
            Wire::Proto { msg, data } => {
                if data.is_some() {
                    crate::stats::page(false);
                }
                crate::trace::message(false, from, body, msg.page().0);
                let mut actions = std::mem::take(&mut self.actions);
                if let Err(e) = self.sc.handle(NodeId(from), msg, &mut actions) {
                    fatal(&format!("protocol error from node {from}: {e}"));
                }
                self.exec(&mut actions, data);
                self.actions = actions;
            }
            Wire::Lrc { msg, data } => {
                if data.is_some() {
                    crate::stats::page(false);
                }
                crate::trace::message(false, from, body, msg.page().0);
                if msg.payload() == Payload::Diff
                    && let Err(e) = lrc::diff::validate(data.unwrap_or(&[]), dsm::sys::PAGE_SIZE)
                {
                    return self.peer_lost(usize::from(from), &format!("it sent a malformed diff ({e})"));
                }
                let Some(mut l) = self.lrc.take() else {
                    return self.peer_lost(
                        usize::from(from),
                        "it runs the release-consistent protocol and this node does not (RTHREADS_PROTOCOL must match)",
                    );
                };
                let mut acts = std::mem::take(&mut self.lrc_actions);
                let r = l.handle(NodeId(from), msg, &mut acts);
                self.lrc = Some(l);
                if let Err(e) = r {
                    self.lrc_actions = acts;
                    return self.peer_lost(usize::from(from), &format!("protocol error: {e}"));
                }
                self.exec_lrc(&mut acts, data);
                self.lrc_actions = acts;
            }
            Wire::Spawn { .. } | Wire::Done { .. } if self.wedge => self.wedged(),
            Wire::Spawn { tid, closure, stack, name } => {
                thread::start_remote(tid, from, closure as usize, stack as usize, name);
            }
            Wire::Migrate { tid, origin, fiber, name } => {
                thread::resume_remote(tid, origin, fiber as usize, name);
            }
            Wire::Done { tid, started } => thread::table().finish(tid, started),
            Wire::Watch { tid } => thread::table().watch(tid, from),
            Wire::Finished { tid, started } => thread::table().finish(tid, started),
            Wire::Forget { tid } => thread::table().forget(tid),
            Wire::Free { blocks } => {
                if blocks.iter().any(|b| !self.rt.heap.owns(b.0)) {
                    fatal(&format!("node {from} returned memory this node does not own"));
                }
                if !self.rt.heap.try_free_returned(&blocks) {
                    // An application thread holds the arena: try again on the next turn.
                    self.returned.push(blocks);
                }
            }
            Wire::SyncReq(req) => crate::sync::submit(req),
            Wire::Revoke { key } => crate::sync::agent::revoke(key),
            Wire::Log { on } => crate::stats::set_protocol_log(on),
            Wire::Ordered { .. } => {
                fatal(&format!("node {from} sent a direct-connection message on the ordinary one"))
            }
            Wire::StatsReq { waiter } => {
                let reply = crate::sync::manager::Reply::Stats(crate::stats::encode(&crate::stats::local()));
                self.rt.send(from, wire::sync_reply(waiter, &reply));
            }
            Wire::SyncReply { waiter, reply } => crate::sync::deliver_local(waiter, reply),
            Wire::Heartbeat => {}
            Wire::Load { running, cpu_milli, processed, settles } => {
                crate::placement::on_report(from, running, cpu_milli, processed, settles)
            }
            Wire::Rebalance { on } => crate::placement::set_local_rebalancing(on),
            Wire::Output { fd, data } if self.rt.me == 0 => crate::output::forwarded(from, fd, data),
            Wire::OutputFlush { upto, release } if self.rt.me == 0 => {
                crate::output::flush_requested(from, upto, release)
            }
            Wire::Exit { code } if self.rt.me == 0 => crate::output::exit_requested(from, code),
            Wire::Output { .. } | Wire::OutputFlush { .. } | Wire::Exit { .. } => {
                self.peer_lost(usize::from(from), "it sent output to a node other than node 0")
            }
            Wire::OutputAck { upto, errors } => crate::output::on_ack(upto, errors),
            Wire::Stop { code, reason } => {
                if !self.rt.shutting_down.load(Ordering::SeqCst) && !self.aborting {
                    self.aborting = true;
                    say(&format!("rthreads: node {}: stopping: {reason}", self.rt.me));
                    self.finish_abort(code);
                }
            }
            Wire::Locks { threads } if self.rt.me == 0 => self.on_lock_report(from, threads),
            Wire::Locks { .. } => {}
            Wire::Abort { lost, reason } => {
                if !self.rt.shutting_down.load(Ordering::SeqCst) && !self.aborting {
                    say(&format!(
                        "rthreads: node {}: stopping: node {lost} was lost (node {from} reports: {reason})",
                        self.rt.me
                    ));
                    self.finish_abort(EXIT_NODE_LOST);
                }
            }
            Wire::Shutdown { code } => {
                let _ = code; // the cluster exit code is node 0's; other nodes end cleanly
                self.rt.shutting_down.store(true, Ordering::SeqCst);
                // What this node queued (its last output among it) leaves before it ends.
                self.flush_all();
                crate::trace::flush(self.rt.me);
                // SAFETY: see `fatal`: nothing may run that could wait on application threads.
                unsafe { libc::_exit(0) }
            }
        }
    }

    fn exec(&mut self, actions: &mut Vec<Action>, data: Option<&[u8]>) {
        for a in actions.drain(..) {
            crate::stats::log_action(self.rt.me, &a, self.sc.pages_per_node());
            match a {
                Action::Send { to, msg } => {
                    let head = wire::proto(&msg);
                    crate::trace::message(true, to.0, &head, msg.page().0);
                    let tail: &[u8] = if msg.carries_data() {
                        // SAFETY: the page lies in the space; a preceding Protect revoked write
                        // access where the protocol needs a stable copy.
                        unsafe { self.space.page_bytes(msg.page()) }
                    } else {
                        &[]
                    };
                    if self.conns.get(to.index()).is_none_or(Option::is_none) {
                        if self.rt.is_stopping() {
                            // The cluster is going away and that node with it: nobody waits for this.
                            continue;
                        }
                        fatal(&format!("no connection to {to} for {msg:?}"));
                    }
                    self.rt.send_parts(to.0, &head, tail, true);
                }
                Action::Install { page } => match data {
                    // SAFETY: the protocol installs only while application access to the page is
                    // closed; `page` is in range (checked by the protocol).
                    Some(d) => unsafe { self.space.install(page, d) },
                    None => fatal(&format!("protocol asked to install {page} without data")),
                },
                Action::Protect { page, access } => {
                    if let Err(e) = self.space.protect(page, access) {
                        fatal(&format!("mprotect of {page}: {e}"));
                    }
                }
                Action::Wake { page } => {
                    if let Some(slots) = self.waiting.remove(&page) {
                        for s in slots {
                            fault::complete(s);
                        }
                    }
                }
                other => unreachable!("not an effect of this protocol: {other:?}"),
            }
        }
    }

    /// Runs the release and acquire requests of application threads.
    fn run_commands(&mut self) {
        let cmds = std::mem::take(&mut *self.rt.cmds.lock());
        let Some(mut l) = self.lrc.take() else {
            for (_, done) in cmds {
                done.set();
            }
            return;
        };
        for (cmd, done) in cmds {
            let mut acts = std::mem::take(&mut self.lrc_actions);
            match cmd {
                Cmd::Release => {
                    let id = l.release(&mut acts);
                    self.releases.insert(id.0, done);
                    self.lrc = Some(l);
                    self.exec_lrc(&mut acts, None);
                }
                Cmd::Acquire => {
                    l.acquire(&mut acts);
                    self.lrc = Some(l);
                    self.exec_lrc(&mut acts, None);
                    done.set();
                }
            }
            self.lrc_actions = acts;
            l = self.lrc.take().expect("put back above");
        }
        self.lrc = Some(l);
    }

    /// Carries out the release-consistent protocol's actions, in order. `data` is the payload of
    /// the message being handled (page bytes or a diff).
    fn exec_lrc(&mut self, actions: &mut Vec<lrc::Action>, data: Option<&[u8]>) {
        // Publish what the next release and acquire have to do before any thread is let go, but
        // only raise the flags here: they are cleared after the actions ran (below). The protocol
        // state is already the one after this call, so an acquire that dropped the last stale copy
        // says `has_stale() == false` while the `Protect` that closes the copy is still to come;
        // clearing the flag now would let another thread of this node skip its own acquire and
        // read the stale copy meanwhile (a torn read under `sync_rwlock torn`).
        if let Some(l) = &self.lrc {
            if l.needs_release() {
                self.rt.lrc_dirty.store(true, Ordering::SeqCst);
            }
            if l.has_stale() {
                self.rt.lrc_stale.store(true, Ordering::SeqCst);
            }
        }
        for a in actions.drain(..) {
            match a {
                lrc::Action::Send { to, msg } => {
                    let head = wire::lrc(&msg);
                    crate::trace::message(true, to.0, &head, msg.page().0);
                    if self.conns.get(to.index()).is_none_or(Option::is_none) {
                        if self.rt.is_stopping() {
                            // The cluster is going away and that node with it: nobody waits for this.
                            continue;
                        }
                        fatal(&format!("no connection to {to} for {msg:?}"));
                    }
                    match msg.payload() {
                        Payload::None => self.rt.send_parts(to.0, &head, &[], true),
                        Payload::Page => {
                            // SAFETY: the page lies in the space (checked by the protocol).
                            let bytes = unsafe { self.space.page_bytes(msg.page()) };
                            self.rt.send_parts(to.0, &head, bytes, true);
                        }
                        Payload::Diff => {
                            let Some(twin) = self.twins.remove(&msg.page()) else {
                                fatal(&format!("protocol asked for a diff of {} without a twin", msg.page()))
                            };
                            // SAFETY: as above; the protocol has closed the page to writes.
                            let now = unsafe { self.space.page_bytes(msg.page()) };
                            let mut buf = std::mem::take(&mut self.diff_buf);
                            buf.clear();
                            lrc::diff::encode(&twin, now, &mut buf);
                            self.rt.send_parts(to.0, &head, &buf, true);
                            self.diff_buf = buf;
                        }
                    }
                }
                lrc::Action::Install { page } => match data {
                    // SAFETY: the protocol installs only while application access to the page is
                    // closed; `page` is in range.
                    Some(d) if d.len() == dsm::sys::PAGE_SIZE => unsafe { self.space.install(page, d) },
                    _ => fatal(&format!("protocol asked to install {page} without its bytes")),
                },
                lrc::Action::Twin { page } => {
                    // SAFETY: the page is in range and at most readable by the application now.
                    let bytes = unsafe { self.space.page_bytes(page) };
                    self.twins.insert(page, bytes.into());
                }
                lrc::Action::ApplyDiff { page } => {
                    let d = data.unwrap_or(&[]);
                    let at = self.space.runtime_addr(page) as *mut u8;
                    // SAFETY: the runtime view of an in-range page; the diff was validated and
                    // writes only the bytes it carries, which no local thread writes meanwhile
                    // (the program is data-race free: the writer released them).
                    let page_bytes = unsafe { std::slice::from_raw_parts_mut(at, dsm::sys::PAGE_SIZE) };
                    if let Err(e) = lrc::diff::apply(d, page_bytes) {
                        fatal(&format!("applying a validated diff to {page} failed: {e}"));
                    }
                }
                lrc::Action::Protect { page, access } => {
                    if let Err(e) = self.space.protect(page, access) {
                        fatal(&format!("mprotect of {page}: {e}"));
                    }
                }
                lrc::Action::Wake { page } => {
                    if let Some(slots) = self.waiting.remove(&page) {
                        for s in slots {
                            fault::complete(s);
                        }
                    }
                }
                lrc::Action::Released { release } => {
                    if let Some(done) = self.releases.remove(&release.0) {
                        done.set();
                    }
                }
            }
        }
        if let Some(l) = &self.lrc {
            self.rt.lrc_dirty.store(l.needs_release(), Ordering::SeqCst);
            self.rt.lrc_stale.store(l.has_stale(), Ordering::SeqCst);
        }
    }

    /// Puts back into the arena the returned blocks it was too busy to take before.
    fn retry_returned(&mut self) {
        while let Some(blocks) = self.returned.last() {
            if !self.rt.heap.try_free_returned(blocks) {
                return;
            }
            self.returned.pop();
        }
    }

    fn send_remote_frees(&mut self) {
        let frees = self.rt.heap.take_remote_frees();
        if frees.is_empty() {
            return;
        }
        // Under release consistency this node may still hold unsent writes to the blocks it frees
        // (a dirty copy of their pages). Their diffs must reach the owner before it can reuse the
        // blocks, or a late diff would overwrite the new contents: start a release, whose diffs
        // travel ahead of the free list on the same connection to the owner (their home).
        if let Some(mut l) = self.lrc.take() {
            if l.needs_release() {
                let mut acts = std::mem::take(&mut self.lrc_actions);
                l.release(&mut acts);
                self.lrc = Some(l);
                self.exec_lrc(&mut acts, None);
                self.lrc_actions = acts;
            } else {
                self.lrc = Some(l);
            }
        }
        for (owner, blocks) in frees {
            for batch in blocks.chunks(4096) {
                self.rt.send(owner as u16, wire::free(batch));
            }
        }
    }

    fn flush_all(&mut self) {
        for d in self.direct.iter().flatten() {
            // Answers are written by whoever produced them; finish any the socket did not take.
            let _ = d.send.lock().flush();
        }
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_ref() else {
                continue;
            };
            let fd = c.fd();
            let Some(slot) = self.rt.senders.get().and_then(|s| s.get(i)) else {
                continue;
            };
            let flushed = {
                let mut q = slot.lock();
                q.as_mut().map(|q| q.flush().map(|()| q.wants_write()))
            };
            let pending = match flushed {
                None => continue,
                Some(Ok(pending)) => pending,
                Some(Err(e)) => {
                    self.peer_lost(i, &format!("send failed: {e}"));
                    continue;
                }
            };
            let want = if pending { poll::READ | poll::WRITE } else { poll::READ };
            if want != self.interest[i] {
                if let Err(e) = self.poller.modify(fd, want, i as u64) {
                    fatal(&format!("epoll_ctl: {e}"));
                }
                self.interest[i] = want;
            }
        }
    }
}

impl Service {
    /// The test hook `RTHREADS_TEST_WEDGE`: this service thread stops serving for good, as a
    /// service thread stuck on a bug would; the watchdog must notice.
    fn wedged(&mut self) -> ! {
        set_phase(Phase::Wedged, 0);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// The watchdog of one node (a thread of its own): if the service thread has not gone round its
/// loop for longer than the failure timeout, it prints what the service thread was doing and the
/// faults that wait for it, and ends the node (exit code 4); the other nodes then see it lost and
/// stop too. It takes no lock and allocates only to format its message.
fn watchdog(me: u16, timeout: Duration) -> ! {
    let step = (timeout / 4).max(Duration::from_millis(50));
    loop {
        std::thread::sleep(step);
        let beat = SERVICE_BEAT_MS.load(Ordering::SeqCst);
        let silent = now_ms().saturating_sub(beat);
        if silent <= timeout.as_millis() as u64 {
            continue;
        }
        let now_ns = dsm::fault::now_ns();
        let faults: Vec<String> = dsm::fault::pending()
            .iter()
            .map(|f| {
                format!(
                    "thread {} waits {:.1} s for {} ({:?})",
                    f.tid,
                    now_ns.saturating_sub(f.since_ns) as f64 / 1e9,
                    f.page,
                    f.kind
                )
            })
            .collect();
        say(&format!(
            "rthreads: node {me}: stuck: the service thread has made no progress for {:.1} s \
             (RTHREADS_FAILURE_TIMEOUT); it is {}; faults waiting for it: {}. Stopping this node \
             (exit code {EXIT_STUCK}); the others will see it lost",
            silent as f64 / 1000.0,
            describe_phase(),
            if faults.is_empty() { "none".to_owned() } else { faults.join("; ") }
        ));
        if me == 0 {
            crate::launch::wait_forwarders(Instant::now() + Duration::from_millis(500));
        }
        // SAFETY: ends the process without running anything that could wait on a stuck thread.
        unsafe { libc::_exit(EXIT_STUCK) }
    }
}

/// The emulated one-way network delay, `RTHREADS_NET_DELAY_US` (zero when unset). Benchmarks use it
/// to stand for the latency of a real network between hosts, which loopback lacks; every frame a
/// node receives on a mesh connection is handled that much later, and a direct request and its
/// answer each wait that long. It is an emulation: label figures taken with it as such.
pub(crate) fn net_delay() -> Duration {
    static DELAY: OnceLock<Duration> = OnceLock::new();
    *DELAY.get_or_init(|| {
        Duration::from_micros(
            std::env::var("RTHREADS_NET_DELAY_US").ok().and_then(|v| v.parse().ok()).unwrap_or(0),
        )
    })
}

/// Waits out the emulated network delay on the calling thread (direct requests and answers).
pub(crate) fn emulate_delay() {
    let d = net_delay();
    if d.is_zero() {
        return;
    }
    thread_local!(static SLACK: Cell<bool> = const { Cell::new(false) });
    if !SLACK.with(Cell::get) {
        // SAFETY: sets this thread's timer slack to 1 ns so short sleeps are not stretched by the
        // default 50 µs; no pointers involved.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
        SLACK.with(|s| s.set(true));
    }
    std::thread::sleep(d);
}
