//! Liveness and loss: heartbeats, the detection of a lost peer, stopping the cluster (after a loss,
//! a deadlock or a stuck fault), and the watchdog that reports a service thread that stopped moving.
//!
//! The run is fail-stop: a lost node's threads, and the pages and locks it homed, cannot be
//! recovered, so the whole cluster stops with an exit code and a message naming what happened,
//! rather than letting threads wait forever on memory that is gone.

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
        k => format!("in an unknown phase {k}"),
    }
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
        if now.duration_since(self.links.last_beat) >= timeout / 4 {
            self.links.last_beat = now;
            for n in self.links.connected() {
                self.rt.send_batched(n, Core::Heartbeat.encode());
            }
        }
        if self.rt.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let silent: Vec<NodeId> = self
            .links
            .connected()
            .filter(|n| now.duration_since(self.links.last_heard[n.index()]) > timeout)
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
        self.links.conns[n.index()] = None;
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
    /// failure timeout (and 2 s) stops the cluster with a report.
    pub(super) fn check_stuck(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_check) < Duration::from_millis(250) || self.aborting {
            return;
        }
        self.last_check = now;
        // Twice the failure timeout: a fault that waits for a node that died or stopped ends with
        // that node's loss (within the timeout, plus 2 s on a node other than 0), which is then
        // what the user reads about; only a fault stuck while every node is alive is reported.
        let limit = 2 * self.rt.failure_timeout + Duration::from_secs(2);
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
/// loop for longer than the failure timeout, it prints what the service thread was doing and the
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
