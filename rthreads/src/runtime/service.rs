//! The service thread: its state, its loop, and what it does with a frame or a fault.
//!
//! One turn of the loop: wait (epoll) for faults, frames, connections and timers; handle them; run
//! the release and acquire requests of application threads; do the periodic work (heartbeats and
//! loss detection, stuck faults, strangers, the registered ticks, freed memory); write what is
//! queued. Every protocol step goes through the one executor (`exec.rs`), whatever the protocol.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dsm::fault::{self, FaultReceiver, SlotId, Wakeup};
use dsm::protocol::{Coherence, Effect, ReleaseId};
use dsm::{Access, NodeId, PageId, Space};
use net::{Conn, ReadStatus};

use super::delay::Delay;
use super::direct::Doors;
use super::liveness::{self, Phase, set_phase};
use super::reads::{Held, Reads};
use super::wire::{Core, ProtocolWire};
use super::{Cmd, Done, ON_SERVICE_THREAD, Runtime, Verdict, fatal};
use crate::alloc::InternalAlloc;
use crate::poll::{self, Poller};
use crate::private::ServiceLock;

/// The service thread's sleep, in ms, when nothing is due and it was woken a moment ago: the
/// registered ticks (load reports, the lock watchdog) want a turn this often while threads run.
const TICK_MS: i32 = 25;
/// The longest an idle service thread sleeps, in ms.
const IDLE_MAX_MS: i32 = 250;

/// How long the service thread sleeps next when its last sleep ended with nothing to do (`ms`
/// long): twice as long, up to what the periodic work still wants. That work is heartbeats
/// (every quarter of the failure timeout: a sleep is at most an eighth of it), the checks for
/// silent peers, stuck faults and long lock waits (every 250 ms is what they ask for), and load
/// reports, which want a turn every 25 ms while threads run here (less often in a large cluster)
/// and none while nothing runs: `wanted`, what the registered cadences ask for. Everything else
/// wakes the thread: frames, faults, queued sends, commands. An idle node of a 256-node cluster so
/// goes round its loop a few times a second instead of 40, which on a machine shared by all the
/// nodes is CPU time for the others.
fn idle_sleep(ms: i32, wanted: Option<Duration>, failure_timeout: Duration) -> i32 {
    let cap = [Some(Duration::from_millis(IDLE_MAX_MS as u64)), Some(failure_timeout / 8), wanted]
        .into_iter()
        .flatten()
        .min()
        .map_or(TICK_MS, |d| d.as_millis().min(i32::MAX as u128) as i32);
    ms.saturating_mul(2).min(cap).max(TICK_MS.min(cap)).max(1)
}

/// How long a node that got node 0's shutdown order waits for it to be written to its children
/// before it ends anyway (node 0 then tells them directly, see `Runtime::shutdown_cluster`).
const SHUTDOWN_PASS_ON: Duration = Duration::from_secs(2);

pub(super) const FAULTS: u64 = u64::MAX;
pub(super) const LISTENER: u64 = u64::MAX - 1;
/// The timer of the network-delay emulation.
pub(super) const DELAY_TIMER: u64 = u64::MAX - 2;
/// Tokens of direct (request/answer) connections start here.
pub(super) const DIRECT: u64 = 1 << 32;
/// Tokens of second connections from peers (read only; see `Links::extra`) start here.
pub(super) const EXTRA: u64 = 1 << 40;

/// The protocol side of the service thread: the protocol's state and what its effects need.
pub(super) struct Engine<P: Coherence> {
    pub(super) proto: P,
    /// Scratch space for the effects of one call.
    pub(super) effects: Vec<Effect<P::Msg>>,
    /// Twins of the pages written here since their last diff.
    pub(super) twins: HashMap<PageId, Box<[u8]>>,
    /// Releases in progress and who waits for each.
    pub(super) releases: HashMap<ReleaseId, Arc<Done>>,
    pub(super) diff_buf: Vec<u8>,
    /// Application threads waiting in a fault, by page.
    pub(super) waiting: HashMap<PageId, Vec<SlotId>>,
    /// Pages whose bytes were installed and whose opening (and the wake-up of their waiters) is
    /// put off to the end of the turn, so that a run of them opens with one `mprotect` (see
    /// `exec.rs`).
    pub(super) opening: Vec<(PageId, Access)>,
    /// Pages closed to writes right before their bytes leave, put off likewise, with the send.
    pub(super) closing: Vec<(PageId, Access, NodeId, P::Msg)>,
    /// Runs of pages asked for whose memory is still to be prepared, once the requests are out
    /// (`prepare_fetched`); empty when `RTHREADS_PREPARE=0`.
    pub(super) fetched: Vec<(PageId, u64)>,
    /// Whether to prepare the memory of pages asked for (`RTHREADS_PREPARE`, on by default; off
    /// for good once the kernel says it does not know the advice).
    pub(super) prepare: bool,
    /// Direct page reads: what waits for them, pages to publish, grants to route (`reads.rs`).
    pub(super) reads: Reads<P::Msg>,
}

/// The ordinary connections to the other nodes, and what liveness knows of them.
pub(super) struct Links {
    /// The connection this node sends each peer its frames on (and reads from). Under lazy
    /// connections (`RTHREADS_CONNECT`), `None` until this node first sends the peer something and
    /// dials it, or the peer dials this node first.
    pub(super) conns: Vec<Option<Conn>>,
    /// A second connection from a peer (lazy connections): one it dialed while this node was
    /// dialing it, or after this node's own connection to it was in place; only read (each side
    /// sends on one connection, so each direction keeps its order).
    pub(super) extra: Vec<Option<Conn>>,
    /// Peers this node is dialing now.
    pub(super) dialing: Vec<bool>,
    /// Peers lost (or gone at shutdown): nothing more is sent to them or read from them.
    pub(super) lost: Vec<bool>,
    pub(super) interest: Vec<u32>,
    /// When something last arrived from each peer (a frame, or the connection closing).
    pub(super) last_heard: Vec<Instant>,
    /// When this node last sent every peer a heartbeat.
    pub(super) last_beat: Instant,
    /// When this node last looked for silent peers (a scan of every peer: not on every turn).
    pub(super) last_silence_check: Instant,
    /// A peer whose connection closed, given a moment before it counts as lost (it may simply
    /// have exited on node 0's shutdown order before ours arrived).
    pub(super) lost_deadline: Option<(Instant, NodeId, String)>,
}

impl Links {
    /// The peers whose connection is open.
    pub(super) fn connected(&self) -> impl Iterator<Item = NodeId> + use<'_> {
        self.conns.iter().enumerate().filter(|(_, c)| c.is_some()).map(|(i, _)| NodeId(i as u16))
    }
}

/// The service thread's state.
pub(crate) struct Service<P: ProtocolWire> {
    pub(super) rt: &'static Runtime,
    pub(super) space: Space,
    pub(super) engine: Engine<P>,
    pub(super) links: Links,
    pub(super) doors: Doors,
    pub(super) delay: Delay,
    pub(super) poller: Poller,
    faults: FaultReceiver,
    wakeups: Vec<Wakeup>,
    /// The peers `flush_all` looks at this turn (kept to reuse its memory).
    flush_peers: Vec<usize>,
    /// The cluster is being stopped after a lost node or a stuck one.
    pub(super) aborting: bool,
    /// The whole space has been opened to this node, the last one left (`serve_alone`).
    sealed: bool,
    poll_us: u64,
    direct_poll_us: u64,
    /// When the stuck-fault check last ran.
    pub(super) last_check: Instant,
    /// Blocks other nodes returned that could not go back into the arena yet (it was busy).
    returned: Vec<Vec<crate::alloc::Block>>,
    /// `RTHREADS_TEST_WEDGE` names this node: its service thread stops for good at the first frame
    /// of another module it handles (a test hook for the watchdog).
    wedge: bool,
    /// Node 0's shutdown order reached this node: it has passed it on to its children in the node
    /// tree and ends once that is written, or at this deadline.
    leaving: Option<Instant>,
}

impl<P: ProtocolWire + Send + 'static> Service<P> {
    pub(crate) fn new(
        rt: &'static Runtime,
        space: Space,
        proto: P,
        streams: Vec<Option<std::net::TcpStream>>,
        faults: FaultReceiver,
        listener: std::net::TcpListener,
    ) -> std::io::Result<Service<P>> {
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
        // A peer with no connection yet (lazy connections) gets a queue that waits for one; this
        // node's own slot stays empty.
        let senders = conns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let q = match c {
                    Some(c) => Some(c.send_queue()?),
                    None if i != rt.me.index() => Some(net::SendQueue::unconnected()),
                    None => None,
                };
                Ok(ServiceLock::new("runtime.senders", q))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        if rt.senders.set(senders).is_err() {
            fatal("the service was started twice");
        }
        let env_us = |name: &str, default: u64| {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        };
        let delay = super::net_delay();
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
        let now = Instant::now();
        Ok(Service {
            rt,
            space,
            engine: Engine {
                proto,
                effects: Vec::new(),
                twins: HashMap::new(),
                releases: HashMap::new(),
                diff_buf: Vec::with_capacity(2 * dsm::sys::PAGE_SIZE),
                waiting: HashMap::new(),
                opening: Vec::new(),
                closing: Vec::new(),
                fetched: Vec::new(),
                prepare: std::env::var("RTHREADS_PREPARE").map_or(true, |v| v != "0"),
                reads: Reads::new(),
            },
            links: Links {
                interest: vec![poll::READ; conns.len()],
                extra: conns.iter().map(|_| None).collect(),
                dialing: vec![false; conns.len()],
                lost: vec![false; conns.len()],
                conns,
                last_heard: vec![now; usize::from(rt.nodes)],
                last_beat: now,
                last_silence_check: now,
                lost_deadline: None,
            },
            doors: Doors::new(listener, rt.auth_timeout),
            delay: Delay { delay, held: VecDeque::new(), timer: delay_timer },
            poller,
            faults,
            wakeups: Vec::new(),
            flush_peers: Vec::new(),
            aborting: false,
            sealed: false,
            poll_us: env_us("RTHREADS_POLL_US", 0),
            direct_poll_us: env_us("RTHREADS_DIRECT_POLL_US", 0),
            last_check: now,
            returned: Vec::new(),
            wedge: std::env::var("RTHREADS_TEST_WEDGE").ok().and_then(|v| v.parse().ok()) == Some(rt.me.0),
            leaving: None,
        })
    }

    /// Runs the service loop on a new thread, and the watchdog that reports it if it stops moving.
    pub(crate) fn start(mut self) {
        let _internal = InternalAlloc::new();
        self.enable_direct_reads();
        liveness::start_watchdog(self.rt);
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
        liveness::service_thread_started();
        let mut ready = Vec::with_capacity(64);
        let mut body = Vec::with_capacity(8192);
        // After serving a request, poll instead of sleeping for a little while: the next request
        // (the unlock after a lock, the next page of a scan) then finds this thread awake, which on
        // a VM saves the slow kind of wake-up.
        let mut hot_until: Option<Instant> = None;
        // How long to sleep when nothing is due (see `idle_sleep`).
        let mut idle_ms = TICK_MS;
        loop {
            liveness::beat();
            set_phase(Phase::Polling, 0);
            // Pages asked for still waiting for their memory (see `prepare_fetched`) keep the
            // turns coming.
            let preparing = !self.engine.fetched.is_empty();
            let timeout = if preparing || hot_until.is_some_and(|t| Instant::now() < t) {
                0
            } else if !self.returned.is_empty() {
                1
            } else if let Some(t) = self.doors.listener_paused {
                t.saturating_duration_since(Instant::now()).as_millis().clamp(1, 25) as i32
            } else if let Some((t, _, _)) = &self.links.lost_deadline {
                t.saturating_duration_since(Instant::now()).as_millis().min(25) as i32
            } else {
                idle_ms
            };
            // Nothing put off may wait for the next wake-up (a release would wait for an
            // unrelated message or the tick, up to 25 ms).
            debug_assert!(
                self.engine.opening.is_empty() && self.engine.closing.is_empty(),
                "effects put off past the end of the service thread's turn"
            );
            // In a long sleep, work that would wait for the next turn wakes this thread instead.
            let dozing = timeout > TICK_MS;
            if dozing {
                fault::set_dozing(true);
            }
            if let Err(e) = self.poller.wait(timeout, &mut ready) {
                fatal(&format!("epoll: {e}"));
            }
            if dozing {
                fault::set_dozing(false);
            }
            let mut served = false;
            liveness::beat();
            // Barrier arrivals are counted by the arriving threads without waking this thread;
            // the protocol learns the count here, before any message of the turn (and answers
            // what waited for an arrival made).
            self.note_arrivals();
            idle_ms = if ready.is_empty() && !preparing {
                idle_sleep(idle_ms, self.rt.ext.wanted_turns(self.rt), self.rt.failure_timeout)
            } else {
                TICK_MS
            };
            for &(token, events) in &ready {
                if token == FAULTS {
                    set_phase(Phase::Faults, 0);
                    self.on_wakeups();
                } else if token == DELAY_TIMER {
                    self.clear_delay_timer();
                } else if token == LISTENER {
                    set_phase(Phase::Accepting, 0);
                    self.accept_direct();
                } else if token >= EXTRA {
                    set_phase(Phase::Frame, (token - EXTRA) as u32);
                    self.read_link((token - EXTRA) as usize, true, &mut body);
                } else if token >= DIRECT {
                    set_phase(Phase::Direct, 0);
                    self.on_direct((token - DIRECT) as usize, &mut body);
                    served = true;
                } else {
                    set_phase(Phase::Frame, token as u32);
                    self.on_conn(token as usize, events, &mut body);
                }
            }
            if !self.delay.held.is_empty() {
                self.deliver_due();
            }
            // What waited for direct reads that have ended (their threads wake this one).
            self.release_held();
            self.rt.wake_pending.store(false, Ordering::SeqCst);
            // Before anything else can look at or change these pages, and before this thread
            // sleeps: the pages installed this turn open, a run at a time, and their threads go.
            self.open_installed();
            if self.rt.cmd_pending.swap(false, Ordering::SeqCst) {
                set_phase(Phase::Commands, 0);
                self.run_commands();
            }
            set_phase(Phase::Periodic, 0);
            self.check_peers();
            self.check_stuck();
            if self.leaving.is_some() {
                self.leave_when_passed_on();
            }
            self.check_strangers();
            for &t in &self.rt.ext.ticks {
                let v = t(self.rt);
                self.verdict(None, v);
            }
            self.retry_returned();
            self.send_remote_frees();
            self.dial_page_conns();
            // What the commands put off (a release closes its dirty pages and sends their diffs)
            // goes out now, not after the next wake-up.
            self.open_installed();
            set_phase(Phase::Sending, 0);
            if self.flush_all() {
                // A direct connection's answer the socket did not take: only turns write it.
                idle_ms = TICK_MS;
            }
            // The requests are out: their pages get memory while the answers travel, a bounded
            // number per turn (the next turn then comes at once, and takes in what arrived first).
            set_phase(Phase::Preparing, 0);
            self.prepare_fetched();
            // Pages back to "no copy, nothing asked for", with all that took them there queued:
            // faulting threads may read them directly again.
            self.publish_fetchable();
            if let Some((t, lost, why)) = &self.links.lost_deadline
                && Instant::now() >= *t
                && !self.rt.is_stopping()
            {
                let (lost, why) = (*lost, why.clone());
                self.abort_cluster(lost, &why);
            }
            let hot =
                (served && self.direct_poll_us > 0) || (self.poll_us > 0 && !self.engine.waiting.is_empty());
            if hot {
                let us = if served { self.direct_poll_us } else { self.poll_us };
                hot_until = Some(Instant::now() + Duration::from_micros(us));
            }
        }
    }

    /// Node 0 after every other node has left: the whole space opens to this node (once), and
    /// every fault, waiting or new, ends at once (its page opened again first, in case). The
    /// protocol is not consulted any more: no other node will read or write a page again.
    pub(super) fn serve_alone(&mut self, wakeups: &mut Vec<Wakeup>) {
        if !self.sealed {
            self.sealed = true;
            dsm::fault::direct::disable();
            let pages = self.space.layout().pages();
            if let Err(e) = self.space.protect_run(PageId(0), pages, dsm::Access::Write) {
                fatal(&format!("mprotect of the whole space after shutdown: {e}"));
            }
            for (_, slots) in self.engine.waiting.drain() {
                slots.into_iter().for_each(dsm::fault::complete);
            }
        }
        let geometry = self.engine.proto.geometry();
        for w in wakeups.drain(..) {
            if let Wakeup::Fault { slot, page, .. } = w {
                if !geometry.in_range(page) {
                    fatal(&format!("trap on {page}, outside the space"));
                }
                if let Err(e) = self.space.protect(page, dsm::Access::Write) {
                    fatal(&format!("mprotect of {page}: {e}"));
                }
                dsm::fault::complete(slot);
            }
        }
        self.wakeups = std::mem::take(wakeups);
    }

    /// Acts on what a registered handler said about a frame from `from` (or a tick, `None`).
    pub(super) fn verdict(&mut self, from: Option<NodeId>, v: Verdict) {
        match v {
            Verdict::Ok => {}
            Verdict::Lost(why) => match from {
                Some(f) => self.peer_lost(f, &why),
                None => fatal(&why),
            },
            Verdict::Stop { code, report, short } => self.stop_cluster(code, &report, &short),
        }
    }

    fn on_wakeups(&mut self) {
        let mut wakeups = std::mem::take(&mut self.wakeups);
        self.faults.drain(|w| wakeups.push(w));
        if self.rt.is_alone() {
            return self.serve_alone(&mut wakeups);
        }
        for w in wakeups.drain(..) {
            if let Wakeup::Fault { page, .. } = w {
                if !self.engine.proto.geometry().in_range(page) {
                    fatal(&format!("trap on {page}, outside the space"));
                }
                if self.gate(page) {
                    self.serve_fault(w);
                } else {
                    self.hold_for_read(page, Held::Fault(w));
                }
            }
        }
        self.wakeups = wakeups;
    }

    /// Hands a thread's fault to the protocol (its page gated, see `reads.rs`).
    pub(super) fn serve_fault(&mut self, w: Wakeup) {
        let Wakeup::Fault { slot, page, kind, atomic } = w else { return };
        let geometry = self.engine.proto.geometry();
        crate::counters::log_fault(page, kind, geometry.pages_per_node);
        self.engine.waiting.entry(page).or_default().push(slot);
        // A trap on a former guard page of a stack, which was made inaccessible behind the
        // protocol's back (see `dsm::fault::set_guard`): it gets back the protection the
        // protocol says this node has (if that is too little, the protocol goes on).
        if self.rt.take_unguarded(page.0) {
            let have = self.engine.proto.access(page);
            if let Err(e) = self.space.protect(page, have) {
                fatal(&format!("mprotect of {page}: {e}"));
            }
        }
        let mut effects = std::mem::take(&mut self.engine.effects);
        let Engine { proto, reads, .. } = &mut self.engine;
        // A page a read-ahead would ask for is taken from direct reads first (or ends the run).
        let mut claim = |q: PageId| {
            let ok = dsm::fault::direct::claim_for_request(q.0);
            if ok {
                reads.touched.push(q);
            }
            ok
        };
        proto.fault_claiming(page, kind, atomic, &mut effects, &mut claim);
        if dsm::fault::direct::enabled() {
            dsm::fault::direct::set_expected(proto.expected_read().map(|p| p.0));
        }
        self.exec(&mut effects, None);
        self.engine.effects = effects;
    }

    pub(super) fn on_conn(&mut self, i: usize, events: u32, body: &mut Vec<u8>) {
        if events & !poll::WRITE == 0 {
            // Writable: flush_all, at the end of this round, writes what is queued.
            return;
        }
        self.read_link(i, false, body);
    }

    /// The connection to peer `i` this node sends on (`extra == false`), or its second one.
    fn link_mut(&mut self, i: usize, extra: bool) -> Option<&mut Conn> {
        let links = if extra { &mut self.links.extra } else { &mut self.links.conns };
        links.get_mut(i).and_then(Option::as_mut)
    }

    /// Reads what peer `i` sent on one of its connections (see [`Service::link_mut`]) and handles
    /// every whole frame.
    pub(super) fn read_link(&mut self, i: usize, extra: bool, body: &mut Vec<u8>) {
        let from = NodeId(i as u16);
        let Some(conn) = self.link_mut(i, extra) else {
            return;
        };
        let filled = conn.fill();
        self.links.last_heard[i] = Instant::now();
        let status = match filled {
            Ok(s) => s,
            Err(e) => return self.peer_lost(from, &format!("receive failed: {e}")),
        };
        loop {
            let Some(conn) = self.link_mut(i, extra) else {
                return;
            };
            match conn.next_frame(body) {
                Ok(true) if !self.delay.delay.is_zero() => self.hold(from, body),
                Ok(true) => {
                    self.on_frame(from, body);
                    self.processed(from);
                }
                Ok(false) => break,
                Err(e) => return self.peer_lost(from, &format!("it sent a malformed frame ({e})")),
            }
        }
        if status == ReadStatus::Closed {
            // What the peer sent before it closed still counts (a last message, then exit).
            self.deliver_from(from);
            self.peer_lost(from, "closed the connection");
        }
    }

    /// A frame from node `from`: a protocol message, a frame of the runtime, or one a module
    /// registered a handler for.
    pub(super) fn on_frame(&mut self, from: NodeId, body: &[u8]) {
        crate::counters::received(body);
        match body.first() {
            Some(&t) if t == P::TAG => {
                let (msg, data) = match P::decode_frame(body) {
                    Ok(m) => m,
                    Err(e) => {
                        return self.peer_lost(from, &format!("it sent a malformed message ({e})"));
                    }
                };
                if data.is_some() {
                    crate::counters::page(false);
                }
                crate::trace::message(false, from, body, dsm::protocol::Message::page(&msg).0);
                if let Err(e) = self.check_payload(&msg, data) {
                    return self.peer_lost(from, &e);
                }
                let page = dsm::protocol::Message::page(&msg);
                if !self.gate(page) {
                    // A direct read of the page is out: the message waits for it to end.
                    let _internal = InternalAlloc::new();
                    return self.hold_for_read(page, Held::Msg(from, msg, data.map(<[u8]>::to_vec)));
                }
                self.on_proto(from, msg, data);
                return;
            }
            Some(&(super::wire::T_PROTO | super::wire::T_LRC)) => {
                return self.peer_lost(
                    from,
                    &format!(
                        "it runs another coherence protocol than this node's {} (RTHREADS_PROTOCOL must match)",
                        P::NAME
                    ),
                );
            }
            _ => {}
        }
        match Core::decode(body) {
            Some(Ok(core)) => return self.on_core(from, core),
            Some(Err(e)) => {
                return self.peer_lost(from, &format!("it sent a malformed message ({e})"));
            }
            None => {}
        }
        let tag = body.first().copied().unwrap_or(0);
        let Some(h) = self.rt.ext.frames[usize::from(tag)] else {
            return self.peer_lost(from, &format!("it sent a message of unknown kind {tag:#x}"));
        };
        if self.wedge {
            self.wedged();
        }
        let v = h(self.rt, from, body);
        self.verdict(Some(from), v);
    }

    /// A protocol message from `from`, with its payload (checked), its page gated.
    pub(super) fn on_proto(&mut self, from: NodeId, msg: P::Msg, data: Option<&[u8]>) {
        let mut effects = std::mem::take(&mut self.engine.effects);
        let r = self.engine.proto.handle(from, msg, &mut effects);
        if let Err(e) = r {
            self.engine.effects = effects;
            return self.peer_lost(from, &format!("protocol error: {e}"));
        }
        self.exec(&mut effects, data);
        self.engine.effects = effects;
    }

    fn on_core(&mut self, from: NodeId, core: Core<'_>) {
        match core {
            Core::Free { blocks } => {
                if blocks.iter().any(|b| !self.rt.heap.owns(b.0)) {
                    return self.peer_lost(from, "it returned memory this node does not own");
                }
                if !self.rt.heap.try_free_returned(&blocks) {
                    // An application thread holds the arena: try again on the next turn.
                    self.returned.push(blocks);
                }
            }
            Core::Heartbeat => {}
            Core::Abort { lost, reason } => {
                if !self.rt.is_stopping() && !self.aborting {
                    super::say(&format!(
                        "rthreads: {}: stopping: {lost} was lost ({from} reports: {reason})",
                        self.rt.me
                    ));
                    self.finish_abort(super::EXIT_NODE_LOST);
                }
            }
            Core::Stop { code, reason } => {
                if !self.rt.is_stopping() && !self.aborting {
                    self.aborting = true;
                    super::say(&format!("rthreads: {}: stopping: {reason}", self.rt.me));
                    self.finish_abort(code);
                }
            }
            Core::Shutdown { code } => {
                if self.leaving.is_some() {
                    return; // node 0's fallback, sent directly after the tree's copy
                }
                // The cluster's exit code is node 0's; other nodes end cleanly.
                self.rt.shutting_down.store(true, Ordering::SeqCst);
                // The order goes on down the node tree (rooted at node 0) before this node ends.
                let (me, nodes, k) = (self.rt.me, self.rt.nodes, crate::topology::fanout());
                for child in crate::topology::children(me, NodeId(0), nodes, k) {
                    self.rt.send(child, Core::Shutdown { code }.encode());
                }
                self.leaving = Some(Instant::now() + SHUTDOWN_PASS_ON);
                self.leave_when_passed_on();
            }
            Core::Ordered { .. } => {
                self.peer_lost(from, "it sent a direct-connection message on the ordinary one")
            }
        }
    }

    /// Ends this node once the shutdown order it passed on to its children is written (each may
    /// need a connection dialed first), or once [`SHUTDOWN_PASS_ON`] has gone by: node 0 tells the
    /// nodes it has not seen leave by then itself.
    fn leave_when_passed_on(&mut self) {
        self.flush_all();
        let (me, nodes, k) = (self.rt.me, self.rt.nodes, crate::topology::fanout());
        let senders = self.rt.senders.get();
        let written = crate::topology::children(me, NodeId(0), nodes, k).all(|c| {
            senders
                .and_then(|s| s.get(c.index()))
                .is_none_or(|slot| slot.lock().as_ref().is_none_or(|q| q.is_connected() && !q.wants_write()))
        });
        if written || self.leaving.is_some_and(|d| Instant::now() >= d) {
            // What this node queued (its last output among it) left with the flush above.
            crate::trace::flush();
            // SAFETY: _exit runs nothing that could wait on application threads.
            unsafe { libc::_exit(0) }
        }
    }

    /// A frame from `from` has been handled: count it, serve direct requests that waited for it,
    /// and wake threads waiting for it before they use a direct answer.
    pub(super) fn processed(&mut self, from: NodeId) {
        let n = self.rt.recv_seq[from.index()].fetch_add(1, Ordering::SeqCst) + 1;
        if !self.doors.deferred.is_empty() {
            self.serve_deferred(from, n);
        }
        if self.rt.seq_waiters.load(Ordering::SeqCst) > 0 {
            let _g = self.rt.seq_lock.lock();
            self.rt.seq_cv.notify_all();
        }
    }

    /// Tells the protocol how many barrier arrivals this node has made, and whether several of
    /// its threads have shared barriers (`Coherence::barriers_shared`); carries out what it
    /// answers.
    fn note_arrivals(&mut self) {
        if self.rt.barriers_shared.swap(false, Ordering::SeqCst) {
            self.engine.proto.barriers_shared();
        }
        let mut effects = std::mem::take(&mut self.engine.effects);
        self.engine.proto.note_arrivals(self.rt.arrivals.load(Ordering::SeqCst), &mut effects);
        if !effects.is_empty() {
            self.exec(&mut effects, None);
        }
        self.engine.effects = effects;
    }

    /// Runs the release and acquire requests of application threads.
    fn run_commands(&mut self) {
        let cmds = std::mem::take(&mut *self.rt.cmds.lock());
        for (cmd, done) in cmds {
            let mut effects = std::mem::take(&mut self.engine.effects);
            match cmd {
                Cmd::Release => match self.engine.proto.release(&mut effects) {
                    Some(id) => {
                        self.engine.releases.insert(id, done);
                        self.exec(&mut effects, None);
                    }
                    None => {
                        self.exec(&mut effects, None);
                        done.set();
                    }
                },
                Cmd::Acquire => {
                    self.engine.proto.acquire(&mut effects);
                    self.exec(&mut effects, None);
                    done.set();
                }
                Cmd::DropCopies => {
                    // A copy read directly and not yet told to the protocol is told first (and one
                    // whose read is still out is left alone).
                    for page in self.engine.proto.drop_candidates() {
                        self.gate(page);
                    }
                    // A page asked for ahead is taken from direct reads first (or not asked for).
                    let Engine { proto, reads, .. } = &mut self.engine;
                    let mut claim = |q: PageId| {
                        let ok = dsm::fault::direct::claim_for_request(q.0);
                        if ok {
                            reads.touched.push(q);
                        }
                        ok
                    };
                    proto.note_arrivals(self.rt.arrivals.load(Ordering::SeqCst), &mut effects);
                    proto.drop_copies(&mut effects, &mut claim);
                    self.exec(&mut effects, None);
                    done.set();
                }
            }
            self.engine.effects = effects;
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
        // A protocol with releases may still hold unsent writes to the blocks this node frees (a
        // dirty copy of their pages). Those must reach the owner before it can reuse the blocks,
        // or a late diff would overwrite the new contents: start a release, whose diffs travel
        // ahead of the free list on the same connection to the owner (their home).
        if self.engine.proto.needs_release() {
            let mut effects = std::mem::take(&mut self.engine.effects);
            let _ = self.engine.proto.release(&mut effects);
            self.exec(&mut effects, None);
            self.engine.effects = effects;
        }
        let _internal = InternalAlloc::new();
        for (owner, blocks) in frees {
            for batch in blocks.chunks(4096) {
                self.rt.send(NodeId(owner as u16), Core::Free { blocks: batch.to_vec() }.encode());
            }
        }
    }

    /// Writes what is queued for every peer that has something; whether a direct connection
    /// still has output waiting (its socket is not watched for room: the next turn writes it).
    pub(super) fn flush_all(&mut self) -> bool {
        let direct_waiting = self.doors.flush();
        self.take_dialed();
        // Frames queued for a peer with no connection yet (lazy connections) start a dial; the
        // flag spares the scan of every peer's queue on every turn.
        if self.rt.dial_wanted.swap(false, Ordering::SeqCst) {
            for i in 0..self.links.conns.len() {
                if self.links.conns[i].is_none() {
                    self.dial_if_needed(i);
                }
            }
        }
        // Only the peers something was queued for since the last turn, or whose socket did not
        // take everything then.
        let mut peers = std::mem::take(&mut self.flush_peers);
        self.rt.take_flush_wanted(&mut peers);
        for &i in &peers {
            let Some(c) = self.links.conns[i].as_ref() else {
                // Not connected yet: `install_link` marks it again once it is.
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
                    self.peer_lost(NodeId(i as u16), &format!("send failed: {e}"));
                    continue;
                }
            };
            if pending {
                self.rt.want_flush(i);
            }
            let want = if pending { poll::READ | poll::WRITE } else { poll::READ };
            if want != self.links.interest[i] {
                if let Err(e) = self.poller.modify(fd, want, i as u64) {
                    fatal(&format!("epoll_ctl: {e}"));
                }
                self.links.interest[i] = want;
            }
        }
        self.flush_peers = peers;
        direct_waiting
    }

    /// The test hook `RTHREADS_TEST_WEDGE`: this service thread stops serving for good, as a
    /// service thread stuck on a bug would; the watchdog must notice.
    fn wedged(&mut self) -> ! {
        set_phase(Phase::Wedged, 0);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_service_thread_sleeps_longer_and_longer_up_to_what_heartbeats_allow() {
        let timeout = Duration::from_secs(5);
        let mut ms = TICK_MS;
        let mut seen = Vec::new();
        for _ in 0..8 {
            ms = idle_sleep(ms, None, timeout);
            seen.push(ms);
        }
        assert_eq!(seen, [50, 100, 200, 250, 250, 250, 250, 250]);
        // A short failure timeout: heartbeats every quarter of it must still go out in time.
        assert_eq!(idle_sleep(250, None, Duration::from_millis(400)), 50);
        assert_eq!(idle_sleep(TICK_MS, None, Duration::from_millis(80)), 10);
        assert_eq!(idle_sleep(TICK_MS, None, Duration::from_millis(1)), 1, "never a busy loop");
        // Load reports while threads run: every 25 ms in a small cluster, 400 ms at 256 nodes.
        assert_eq!(idle_sleep(TICK_MS, Some(Duration::from_millis(25)), timeout), 25);
        assert_eq!(idle_sleep(200, Some(Duration::from_millis(400)), timeout), 250);
    }
}
