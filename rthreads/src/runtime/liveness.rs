//! Liveness and loss: heartbeats, the detection of a lost peer, stopping the cluster (after a loss,
//! a deadlock or a stuck fault), and the watchdog that reports a service thread that stopped moving.
//!
//! The run is fail-stop: a lost node's threads, and the pages and locks it homed, cannot be
//! recovered, so the whole cluster stops with an exit code and a message naming what happened,
//! rather than letting threads wait forever on memory that is gone.
//!
//! Heartbeats follow a star, so that their cost grows with the node count, not its square: node 0
//! sends one to every peer and watches every peer; every other node sends one to node 0 and
//! watches node 0 only (any frame counts, not just heartbeats). A node that dies closes its
//! connections, which every peer sees at once; a node that stops or hangs falls silent, node 0
//! declares it lost after the failure timeout and stops the cluster (a hang of its service thread
//! is also ended by that node's own watchdog); a lost node 0 is seen by everyone. A link cut
//! between two nodes other than node 0 leaves the faults that wait on it stuck, which
//! `check_stuck` reports after twice the timeout.
//!
//! Silence is not death when the peer is a process of this host that the OS shows running or
//! waiting (not stopped, not a zombie, not gone): hundreds of nodes starting at once on a few CPUs,
//! or a loaded host, can starve a live node for seconds. Such a peer gets up to four times the
//! failure timeout before it counts as lost. Node 0 of an embedded cluster knows the processes it
//! started, the others know node 0's ([`set_local_pids`], `RTHREADS_NODE0_PID`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dsm::NodeId;
use dsm::trace::now_ms;

use super::service::Service;
use super::wire::{Core, ProtocolWire};
use super::{Runtime, fatal, say};
use crate::alloc::InternalAlloc;

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
pub(super) enum Phase {
    Polling = 0,
    Faults = 1,
    Frame = 2,
    Direct = 3,
    Commands = 4,
    Periodic = 5,
    Sending = 6,
    Accepting = 7,
    Wedged = 8,
    Preparing = 9,
}

pub(super) fn set_phase(p: Phase, arg: u32) {
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
        9 => "giving memory to pages it asked for (madvise)".into(),
        k => format!("in an unknown phase {k}"),
    }
}

/// The processes of this host's nodes, by node (`0`: not known here).
static LOCAL_PIDS: OnceLock<Vec<u32>> = OnceLock::new();

/// Records the process of each node that runs on this host (node 0 of an embedded cluster: itself
/// and the nodes it started).
pub(crate) fn set_local_pids(pids: Vec<u32>) {
    let _ = LOCAL_PIDS.set(pids);
}

/// The process of node `n` if it runs on this host and this node knows it.
fn local_pid(n: NodeId) -> Option<u32> {
    if let Some(pid) = LOCAL_PIDS.get().and_then(|p| p.get(n.index())).copied().filter(|&p| p != 0) {
        return Some(pid);
    }
    if n == NodeId(0) {
        static NODE0: OnceLock<Option<u32>> = OnceLock::new();
        return *NODE0.get_or_init(|| std::env::var("RTHREADS_NODE0_PID").ok().and_then(|v| v.parse().ok()));
    }
    None
}

/// Whether process `pid` is alive and not stopped: its state in `/proc` is running, sleeping or in
/// an uninterruptible wait (a zombie, a stopped or traced process, or none at all is not).
fn running(pid: u32) -> bool {
    matches!(proc_state(&format!("/proc/{pid}/stat")), Some('R' | 'S' | 'D'))
}

/// Whether a peer silent for `silent` is a live process of this host that is only starved, and
/// still within its grace of four failure timeouts.
fn starved(n: NodeId, silent: Duration, timeout: Duration) -> bool {
    silent <= 4 * timeout && local_pid(n).is_some_and(running)
}

/// Whether this node exchanges heartbeats with `n` and watches it (the star: see the module docs).
fn watches(me: NodeId, n: NodeId) -> bool {
    me == NodeId(0) || n == NodeId(0)
}

/// The service thread's OS thread id (0 until it starts), for the watchdog to tell a service
/// thread that waits for a CPU from one that is stuck.
static SERVICE_TID: AtomicU64 = AtomicU64::new(0);

/// Called by the service thread as it starts.
pub(super) fn service_thread_started() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    SERVICE_TID.store(tid as u64, Ordering::Relaxed);
}

/// Whether the service thread is runnable (state `R`: on a CPU or waiting for one), i.e. starved
/// rather than stuck in a wait that nothing ends.
fn service_thread_runnable() -> bool {
    let tid = SERVICE_TID.load(Ordering::Relaxed);
    if tid == 0 {
        return false;
    }
    proc_state(&format!("/proc/self/task/{tid}/stat")) == Some('R')
}

/// The state letter of a process or thread from its `stat` file (`R`, `S`, `D`, `T`, `Z`…), if it
/// can be read: it follows the last parenthesis (a name may hold any).
fn proc_state(stat_path: &str) -> Option<char> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()
}

/// The service thread goes round its loop: the watchdog sees it alive.
pub(super) fn beat() {
    SERVICE_BEAT_MS.store(now_ms(), Ordering::Relaxed);
}

/// Starts the watchdog of this node.
pub(super) fn start_watchdog(rt: &'static Runtime) {
    beat();
    let (me, timeout) = (rt.me, rt.failure_timeout);
    std::thread::Builder::new()
        .name("rthreads-watchdog".into())
        .spawn(move || {
            crate::alloc::runtime_thread();
            watchdog(me, timeout)
        })
        .unwrap_or_else(|e| fatal(&format!("cannot start the watchdog: {e}")));
}

impl<P: ProtocolWire + Send + 'static> Service<P> {
    /// Sends heartbeats on schedule and declares lost a peer that has been silent too long.
    pub(super) fn check_peers(&mut self) {
        let now = Instant::now();
        let timeout = self.rt.failure_timeout;
        let me = self.rt.me;
        if now.duration_since(self.links.last_beat) >= timeout / 4 {
            self.links.last_beat = now;
            for n in self.links.connected().filter(|&n| watches(me, n)) {
                self.rt.send_batched(n, Core::Heartbeat.encode());
            }
        }
        if self.rt.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        // A scan of every peer; silence is measured in seconds, so every 10 ms is plenty.
        if now.duration_since(self.links.last_silence_check) < Duration::from_millis(10) {
            return;
        }
        self.links.last_silence_check = now;
        let silent: Vec<NodeId> = self
            .links
            .connected()
            .filter(|&n| watches(me, n))
            .filter(|n| {
                let silent = now.duration_since(self.links.last_heard[n.index()]);
                silent > timeout && !starved(*n, silent, timeout)
            })
            .collect();
        for n in silent {
            let why = format!(
                "nothing heard from it for {:.1} s (RTHREADS_FAILURE_TIMEOUT): it stopped, hung, or its link is cut",
                timeout.as_secs_f64()
            );
            self.peer_lost(n, &why);
        }
    }

    pub(super) fn peer_lost(&mut self, n: NodeId, why: &str) {
        if std::mem::replace(&mut self.links.lost[n.index()], true) {
            // Its second connection (lazy connections) closing too, or a late report.
            if let Some(c) = self.links.extra[n.index()].take() {
                let _ = self.poller.delete(c.fd());
            }
            return;
        }
        for c in
            [self.links.conns[n.index()].take(), self.links.extra[n.index()].take()].into_iter().flatten()
        {
            let _ = self.poller.delete(c.fd());
        }
        if let Some(slot) = self.rt.senders.get().and_then(|s| s.get(n.index())) {
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
        let msg = format!("lost {n}: {why}");
        if self.rt.me == NodeId(0) || n == NodeId(0) {
            self.abort_cluster(n, &msg);
        }
        // Another node may simply have exited on node 0's shutdown order before ours arrived:
        // give that order a moment before treating the loss as fatal.
        if self.links.lost_deadline.is_none() {
            self.links.lost_deadline = Some((Instant::now() + Duration::from_secs(2), n, msg));
        }
    }

    /// Every quarter of a second: a fault of this node that has waited longer than twice the
    /// failure timeout, plus 2 s, plus 20 ms per node, stops the cluster with a report.
    pub(super) fn check_stuck(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_check) < Duration::from_millis(250) || self.aborting {
            return;
        }
        self.last_check = now;
        // Twice the failure timeout: a fault that waits for a node that died or stopped ends with
        // that node's loss (within the timeout, plus 2 s on a node other than 0), which is then
        // what the user reads about; only a fault stuck while every node is alive is reported.
        // And 20 ms per node: a page every node writes at once (one atomic counter, 1024 nodes)
        // queues the writers at its home, and each hand-over is a few messages; with a thousand
        // processes on two CPUs the last in line waits for many seconds, which is contention,
        // not a fault that is stuck.
        let limit = 2 * self.rt.failure_timeout
            + Duration::from_secs(2)
            + Duration::from_millis(20) * u32::from(self.rt.nodes);
        let now_ns = dsm::trace::now_ns();
        let stuck = dsm::fault::pending()
            .into_iter()
            .find(|f| now_ns.saturating_sub(f.since_ns) > limit.as_nanos() as u64);
        if let Some(f) = stuck {
            let report = self.describe_stuck_fault(&f);
            self.stop_cluster(EXIT_STUCK, &report, "a fault on it made no progress");
        }
    }

    /// What a fault that does not end is waiting for.
    fn describe_stuck_fault(&self, f: &dsm::fault::PendingFault) -> String {
        let page = f.page;
        let home = self.engine.proto.geometry().home_of(page);
        let comm = std::fs::read_to_string(format!("/proc/self/task/{}/comm", f.tid)).unwrap_or_default();
        let waited = Duration::from_nanos(dsm::trace::now_ns().saturating_sub(f.since_ns));
        let want = if f.kind == dsm::FaultKind::Write { "write to" } else { "read" };
        let state = self.engine.proto.describe(page);
        format!(
            "stuck: thread '{}' (OS thread {}) of {} has waited {:.1} s to {want} {page} (home {home}); \
             the protocol state of that page on this node: {state}; the service thread is running ({}). \
             This is a bug of rthreads: please report it with this message",
            comm.trim(),
            f.tid,
            self.rt.me,
            waited.as_secs_f64(),
            describe_phase()
        )
    }

    /// Stops the whole cluster although no node was lost: prints `report` here, tells every other
    /// node to stop (they print `short`), and ends this node with `code`.
    pub(super) fn stop_cluster(&mut self, code: i32, report: &str, short: &str) -> ! {
        self.aborting = true;
        say(&format!("rthreads: {}: {report}", self.rt.me));
        let frame =
            InternalAlloc::with(|| Core::Stop { code, reason: &format!("{}: {short}", self.rt.me) }.encode());
        self.broadcast(&frame);
        self.finish_abort(code)
    }

    /// Node `lost` is gone: tells every other node to stop, and stops.
    pub(super) fn abort_cluster(&mut self, lost: NodeId, msg: &str) -> ! {
        self.aborting = true;
        say(&format!("rthreads: {}: {msg}; stopping the cluster", self.rt.me));
        self.broadcast(&Core::Abort { lost, reason: msg }.encode());
        self.finish_abort(EXIT_NODE_LOST)
    }

    /// Sends `frame` to every peer still connected, and writes it out.
    fn broadcast(&mut self, frame: &[u8]) {
        for n in self.links.connected() {
            self.rt.send(n, frame.to_vec());
        }
        self.flush_all();
    }

    /// Ends this node after a lost node: node 0 first lets the nodes it started print why they
    /// stop (their output passes through it), the others give their last frames a moment to leave.
    pub(super) fn finish_abort(&mut self, code: i32) -> ! {
        self.aborting = true;
        self.rt.shutting_down.store(true, Ordering::SeqCst);
        // This node's last frames (its output among them) leave before it ends.
        self.flush_all();
        let deadline = Instant::now() + Duration::from_millis(1500);
        if self.rt.me == NodeId(0) {
            // The output the other nodes forwarded before, then what they print as they stop.
            self.rt.finish(deadline);
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        crate::trace::flush();
        // SAFETY: as in `fatal`: nothing may run that could wait on application threads.
        unsafe { libc::_exit(code) }
    }
}

/// The watchdog of one node (a thread of its own): if the service thread has not gone round its
/// loop for longer than the failure timeout (four timeouts if it is runnable, only waiting for a
/// CPU), it prints what the service thread was doing and the
/// faults that wait for it, and ends the node (exit code 4); the other nodes then see it lost and
/// stop too. It takes no lock and allocates only to format its message.
fn watchdog(me: NodeId, timeout: Duration) -> ! {
    let step = (timeout / 4).max(Duration::from_millis(50));
    loop {
        std::thread::sleep(step);
        let beat = SERVICE_BEAT_MS.load(Ordering::SeqCst);
        let silent = now_ms().saturating_sub(beat);
        if silent <= timeout.as_millis() as u64 {
            continue;
        }
        // A service thread that is runnable but has not run (hundreds of nodes on a few CPUs, a
        // loaded host) is starved, not stuck: it gets up to four timeouts, as starved peers do.
        if silent <= 4 * timeout.as_millis() as u64 && service_thread_runnable() {
            continue;
        }
        let now_ns = dsm::trace::now_ns();
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
            "rthreads: {me}: stuck: the service thread has made no progress for {:.1} s \
             (RTHREADS_FAILURE_TIMEOUT); it is {}; faults waiting for it: {}. Stopping this node \
             (exit code {EXIT_STUCK}); the others will see it lost",
            silent as f64 / 1000.0,
            describe_phase(),
            if faults.is_empty() { "none".to_owned() } else { faults.join("; ") }
        ));
        // SAFETY: ends the process without running anything that could wait on a stuck thread.
        unsafe { libc::_exit(EXIT_STUCK) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_follow_a_star() {
        let (zero, one, two) = (NodeId(0), NodeId(1), NodeId(2));
        assert!(watches(zero, one) && watches(zero, two));
        assert!(watches(one, zero) && watches(two, zero));
        assert!(!watches(one, two) && !watches(two, one));
    }

    #[test]
    fn a_live_process_is_running_and_a_stopped_or_gone_one_is_not() {
        assert!(running(std::process::id()), "this process");
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(running(pid), "a sleeping child");
        // SAFETY: signals to a child process of this test.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        let stopped = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            !running(pid)
        });
        assert!(stopped, "a stopped child counts as not running");
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        assert!((0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            running(pid)
        }));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!running(pid), "a reaped child is gone");
        // A silent peer of this host that runs gets four timeouts, then counts as lost.
        set_local_pids(vec![0, std::process::id()]);
        let t = Duration::from_secs(5);
        assert!(starved(NodeId(1), Duration::from_secs(12), t));
        assert!(!starved(NodeId(1), Duration::from_secs(21), t));
        assert!(!starved(NodeId(2), Duration::from_secs(6), t), "a peer whose process is unknown");
    }
}
