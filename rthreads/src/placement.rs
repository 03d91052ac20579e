//! Where threads run: the placement policies, the load reports nodes exchange to choose well, and
//! the optional rebalancing of running threads at safe points.
//!
//! # Policies
//! A thread spawned without [`Builder::node`](crate::Builder::node) goes where a [`Placement`]
//! policy sends it: the run's policy (`RTHREADS_PLACEMENT`, round-robin by default), or the one
//! given for that spawn with [`Builder::placement`](crate::Builder::placement).
//!
//! # Loads
//! Every node counts the rthreads it runs (its *run-queue length*: threads it has taken on, from
//! the moment it creates them until their body returns or they migrate away) and measures its CPU
//! use (process CPU time over wall time, over windows of about 100 ms). Its service thread sends
//! both to every other node when they change, at most every 25 ms, and at least every second; a
//! thread that ends also sends its node's load to the node that spawned it, just before the message
//! that lets `join` return, so a program that spawns the next piece of work when one finishes
//! decides on fresh figures. [`loads`] shows what this node believes.
//!
//! In a cluster of more than 16 nodes, telling every node every other node's load would be `n²`
//! messages a period: there node 0 (which runs `main`, where most spawns start) is the one that
//! keeps a view of every node, and the reports reach it through a tree (the barrier trees' shape,
//! `RTHREADS_TREE_FANOUT` children a node), each node passing on its subtree's reports to its parent
//! in one message a period (`relay`); the period also grows with the cluster (every `n / 16` × 25 ms),
//! since on one machine the reports of hundreds of nodes compete with the program for its CPUs.
//! The other nodes of such a cluster know their own load and the reports of the threads they
//! spawned when those end.
//!
//! A report is late by up to a period, so a node also counts the spawns it sent itself that the
//! target's last report cannot show yet (*pending* spawns): each report carries how many frames
//! from the recipient the reporting node had processed, and a spawn is pending until a report
//! covers its frame. A burst of spawns therefore spreads instead of all going to the node that
//! looked idle.
//!
//! # Rebalancing
//! With rebalancing on (`RTHREADS_REBALANCE=1` or [`set_rebalancing`]), a thread that calls
//! [`yield_now`](crate::yield_now) on a node running more threads than it has CPUs moves to a node with a CPU to
//! spare, if there is one. Each move first claims a slot (the node then counts the thread as gone,
//! and the target counts it as pending), so that no more threads leave than the others can take.
//! The decisions themselves are pure functions of the loads (`least_loaded`, `local_first`,
//! `rebalance_target`), unit-tested beside them.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dsm::NodeId;

use crate::alloc::{InternalAlloc, private_internal};
use crate::private::{ServiceLock, private};
use crate::runtime::wire::{Field, wire_enum};
use crate::runtime::{self, Runtime};

mod relay;

use relay::{Entries, Entry, Relay, newer};

/// A policy that chooses the node a new thread runs on.
///
/// The run's policy comes from `RTHREADS_PLACEMENT` (`round-robin`, `least-loaded` or
/// `local-first`); [`Builder::placement`](crate::Builder::placement) overrides it for one spawn and
/// [`Builder::node`](crate::Builder::node) overrides both. Outside a cluster every policy picks
/// node 0, the only one.
///
/// # Examples
/// ```
/// use rthreads::Placement;
///
/// let p: Placement = "least-loaded".parse().unwrap();
/// assert_eq!(p, Placement::LeastLoaded);
/// assert_eq!(p.to_string(), "least-loaded");
/// let h = rthreads::Builder::new().placement(p).spawn(|| 6 * 7).unwrap();
/// assert_eq!(h.join().unwrap(), 42);
/// assert!("fastest".parse::<Placement>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum Placement {
    /// Each spawn goes to the next node, starting with the spawning node itself: the k-th spawn from
    /// node `m` of an `n`-node cluster goes to node `(m + k) % n`. Ignores load; the default.
    #[default]
    RoundRobin,
    /// The node with the fewest threads per CPU (its reported run-queue length plus the spawns
    /// sent to it that its report cannot show yet, or the CPUs it has in use if more, over its
    /// available parallelism). Ties go round-robin.
    LeastLoaded,
    /// The spawning node while it runs fewer threads than it has CPUs; otherwise as
    /// [`LeastLoaded`](Placement::LeastLoaded).
    LocalFirst,
}

impl Placement {
    /// Every policy, in the order the documentation lists them.
    pub const ALL: [Placement; 3] = [Placement::RoundRobin, Placement::LeastLoaded, Placement::LocalFirst];

    /// The policy's name, as `RTHREADS_PLACEMENT` spells it.
    ///
    /// # Examples
    /// ```
    /// assert_eq!(rthreads::Placement::LocalFirst.name(), "local-first");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Placement::RoundRobin => "round-robin",
            Placement::LeastLoaded => "least-loaded",
            Placement::LocalFirst => "local-first",
        }
    }

    fn from_code(c: u8) -> Placement {
        Placement::ALL.get(usize::from(c)).copied().unwrap_or_default()
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`Placement`] from a name it does not have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement policy {0:?} (known: {known})", known = Placement::ALL.map(Placement::name).join(", "))]
pub struct ParsePlacementError(String);

impl FromStr for Placement {
    type Err = ParsePlacementError;

    /// Parses a policy's [`name`](Placement::name).
    ///
    /// # Errors
    /// Any other text; the message lists the known names.
    fn from_str(s: &str) -> Result<Placement, ParsePlacementError> {
        Placement::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .ok_or_else(|| ParsePlacementError(s.to_owned()))
    }
}

// ---------------------------------------------------------------------------------------------
// The pure decisions.

/// What a node is believed to run, as the decisions see it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Load {
    /// Threads it runs (its last report; exact for this node), minus those leaving.
    pub(crate) running: u32,
    /// Threads sent to it that its report does not show yet.
    pub(crate) pending: u32,
    /// Its CPUs.
    pub(crate) parallelism: u32,
    /// CPUs it has in use (busy time over wall time).
    pub(crate) cpu: f64,
}

impl Load {
    /// Threads competing for its CPUs. CPU use counts too when it is higher (load that is not
    /// rthreads), in whole CPUs only, so a busy service thread does not count as a thread.
    fn occupancy(&self) -> f64 {
        f64::from(self.running).max(self.cpu.floor()) + f64::from(self.pending)
    }

    fn share(&self) -> f64 {
        self.occupancy() / f64::from(self.parallelism.max(1))
    }

    fn has_room(&self) -> bool {
        self.occupancy() + 1.0 <= f64::from(self.parallelism.max(1))
    }
}

/// The node with the fewest threads per CPU; of equals, the first from `start` on (wrapping), so
/// that equals take turns when `start` advances.
///
/// # Panics
/// If `loads` is empty.
pub(crate) fn least_loaded(loads: &[Load], start: usize) -> usize {
    let n = loads.len();
    (0..n)
        .map(|i| (start + i) % n)
        .fold(start % n, |best, i| if loads[i].share() < loads[best].share() { i } else { best })
}

/// `me` while it has a CPU to spare, else [`least_loaded`].
pub(crate) fn local_first(loads: &[Load], me: usize, start: usize) -> usize {
    if loads[me].has_room() { me } else { least_loaded(loads, start) }
}

/// Where a thread of `me` should move, if `me` runs more threads than it has CPUs and another node
/// has a CPU to spare: the one with the fewest threads per CPU once it has taken the thread (of
/// equals, the first after `me`). `None` otherwise.
pub(crate) fn rebalance_target(loads: &[Load], me: usize) -> Option<usize> {
    let mine = loads[me];
    if mine.running <= mine.parallelism.max(1) {
        return None;
    }
    let n = loads.len();
    let after = |l: &Load| (l.occupancy() + 1.0) / f64::from(l.parallelism.max(1));
    let fits = (1..n).map(|i| (me + i) % n).filter(|&i| loads[i].has_room());
    // The first of the equally good ones.
    fits.min_by(|&a, &b| after(&loads[a]).total_cmp(&after(&loads[b])))
}

// ---------------------------------------------------------------------------------------------
// This node's counts (per node: these statics are private to each node's process).

/// Threads this node has taken on and not yet seen end or leave.
static RUNNING: AtomicU32 = AtomicU32::new(0);
/// Threads that claimed a move away from this node that is not settled yet.
static LEAVING: AtomicU32 = AtomicU32::new(0);
/// This node's last report number (see [`relay`]).
static SEQ: AtomicU32 = AtomicU32::new(0);
/// Whether this node holds reports of its subtree to pass on (large clusters).
static RELAY_HELD: AtomicBool = AtomicBool::new(false);
/// Bumped by every arrival and departure, so that a report goes out even when they cancel out.
static CHANGES: AtomicU64 = AtomicU64::new(0);
/// This node's CPU use, in thousandths of a CPU.
static CPU_MILLI: AtomicU32 = AtomicU32::new(0);
/// The run's policy ([`Placement::code`]).
static POLICY: AtomicU8 = AtomicU8::new(0);
static REBALANCE: AtomicBool = AtomicBool::new(false);
/// Bumped by every report received: a rebalancing check that found nothing to do is not repeated
/// until something new is known.
static GENERATION: AtomicU64 = AtomicU64::new(1);
static IDLE_GENERATION: AtomicU64 = AtomicU64::new(0);
/// Moves claimed here, and how many of them `migrate` refused (the thread stayed).
static CLAIMED: AtomicU64 = AtomicU64::new(0);
static CANCELLED: AtomicU64 = AtomicU64::new(0);
/// The thread that runs `main` (node 0's is not an rthread: it is not counted, and never moved).
static MAIN_THREAD: OnceLock<std::thread::ThreadId> = OnceLock::new();

const T_LOAD: u8 = 0x26;
const T_REBALANCE: u8 = 0x27;
const T_LOADS: u8 = 0x1D;
pub(crate) const TAGS: [u8; 3] = [T_LOAD, T_REBALANCE, T_LOADS];

/// The messages of placement between nodes. Tags 0x26–0x27 and 0x1D (see `crate::runtime::wire`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PlacementMsg {
    /// The sender's load: threads it runs, thousandths of a CPU it uses, frames from the recipient
    /// it had processed, the move claim it settles (0: none), and its report number.
    Load { running: u32, cpu_milli: u32, processed: u64, settles: u64, seq: u32 },
    /// Rebalancing at safe points is switched on or off for the whole cluster.
    Rebalance { on: bool },
    /// Load reports of the sender's subtree on their way up to node 0 (large clusters, `relay`).
    Loads(Entries),
}

wire_enum! { PlacementMsg, "not a placement message: tag {:#x}";
    T_LOAD => Load { running: u32, cpu_milli: u32, processed: u64, settles: u64, seq: u32 },
    T_REBALANCE => Rebalance { on: bool },
    T_LOADS => Loads(entries: Entries),
}

/// Registers placement's messages and periodic work with the runtime.
pub(crate) fn register(ext: &mut runtime::Extensions) {
    ext.frames(&TAGS, on_frame);
    ext.tick(tick);
    ext.cadence(cadence);
}

fn on_frame(rt: &'static Runtime, from: NodeId, body: &[u8]) -> runtime::Verdict {
    match PlacementMsg::decode(body) {
        Ok(PlacementMsg::Load { running, cpu_milli, processed, settles, seq }) => {
            on_report(from, Entry { node: from, seq, running, cpu_milli, processed }, settles)
        }
        Ok(PlacementMsg::Rebalance { on }) => set_local_rebalancing(on),
        Ok(PlacementMsg::Loads(entries)) => return on_loads(rt, entries),
        Err(e) => return runtime::Verdict::Lost(format!("it sent a malformed placement message ({e})")),
    }
    runtime::Verdict::Ok
}

/// Reports a child passed on up the tree: node 0 takes them in, any other node holds them for its
/// own parent.
fn on_loads(rt: &'static Runtime, entries: Entries) -> runtime::Verdict {
    if let Some(e) = entries.0.iter().find(|e| e.node.0 >= rt.nodes) {
        return runtime::Verdict::Lost(format!(
            "it passed on a load report of node {}, which does not exist",
            e.node.0
        ));
    }
    if rt.me == NodeId(0) {
        for e in entries.0.into_iter().filter(|e| e.node != rt.me) {
            on_report(e.node, e, 0);
        }
    } else {
        with_table(rt, move |t| {
            for e in entries.0 {
                t.relay.hold(e);
            }
        });
        RELAY_HELD.store(true, Ordering::SeqCst);
    }
    runtime::Verdict::Ok
}

/// How often the service thread looks at this node's load (and sends it if it changed).
pub(crate) const PERIOD: Duration = Duration::from_millis(25);
/// A report goes out at least this often even when nothing changed.
const REFRESH: Duration = Duration::from_secs(1);
/// Up to this many nodes every node reports to every other. In a larger cluster reports go to
/// node 0 only (which runs `main`, where most spawns start), up a tree ([`relay`]), and each node
/// reports `nodes / STAR_ABOVE` times less often: every node telling every other node its load
/// every 25 ms is `n²` messages a period, which at 256 nodes on a few CPUs is more work than the
/// program's, and even `n` messages a period (the tree's) compete with it there.
const STAR_ABOVE: u16 = 16;

/// How much less often than [`PERIOD`] and [`REFRESH`] a node of a cluster of `nodes` reports.
fn report_slowdown(nodes: u16) -> u32 {
    u32::from(nodes.div_ceil(STAR_ABOVE).max(1))
}

/// Where node `me` of a cluster of `nodes` sends its periodic load reports: every other node up to
/// [`STAR_ABOVE`] nodes, else its parent in the tree of load reports (none from node 0).
fn reports_to(me: NodeId, nodes: u16, to: NodeId) -> bool {
    if nodes <= STAR_ABOVE {
        return to != me;
    }
    crate::topology::parent(me, NodeId(0), nodes, crate::topology::fanout()) == Some(to)
}
/// CPU use is measured over windows of at least this long.
const CPU_WINDOW: Duration = Duration::from_millis(100);
/// A pending spawn or move that no report has settled by then is forgotten (a lost frame, a spawn
/// that never went out), and so is a claimed move.
const FORGET: Duration = Duration::from_secs(1);

/// The thread that will run a new rthread's body has been created here, or a migrating thread has
/// arrived: one more thread runs on this node.
pub(crate) fn thread_arrived() {
    RUNNING.fetch_add(1, Ordering::SeqCst);
    CHANGES.fetch_add(1, Ordering::SeqCst);
}

/// An rthread's body has returned here, or the thread has migrated away: one fewer.
pub(crate) fn thread_left() {
    let before = RUNNING.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1));
    CHANGES.fetch_add(1, Ordering::SeqCst);
    if before == Ok(1) {
        // The last thread here is gone: with nothing running the service thread may be in a long
        // sleep (no cadence asks for turns), and this change must still be reported soon.
        dsm::fault::nudge();
    }
}

/// How often the load-report tick wants a turn of the service thread: every [`PERIOD`] (less
/// often in a large cluster) while threads run here; with none running, nothing it reports
/// changes, so it asks for nothing.
fn cadence(rt: &'static Runtime) -> Option<Duration> {
    let wanted = running_here() > 0 || RELAY_HELD.load(Ordering::SeqCst);
    (rt.nodes >= 2 && wanted).then(|| PERIOD * report_slowdown(rt.nodes))
}

fn running_here() -> u32 {
    RUNNING.load(Ordering::SeqCst).saturating_sub(LEAVING.load(Ordering::SeqCst))
}

/// Sets the run's policy and whether rebalancing is on (start-up, from the configuration).
pub(crate) fn configure(policy: Placement, rebalance: bool) {
    POLICY.store(policy as u8, Ordering::SeqCst);
    REBALANCE.store(rebalance, Ordering::SeqCst);
    let _ = MAIN_THREAD.set(std::thread::current().id());
}

/// The run's placement policy (`RTHREADS_PLACEMENT`; round-robin when unset).
///
/// # Examples
/// ```
/// assert_eq!(rthreads::placement::policy(), rthreads::Placement::RoundRobin);
/// ```
pub fn policy() -> Placement {
    Placement::from_code(POLICY.load(Ordering::SeqCst))
}

/// Turns rebalancing on or off on every node (as `RTHREADS_REBALANCE` does for a whole run); returns
/// once every node has switched. With it on, a thread that calls [`yield_now`](crate::yield_now) on a node with more
/// threads than CPUs moves to a node with a CPU to spare.
///
/// # Examples
/// ```
/// rthreads::placement::set_rebalancing(true);
/// assert!(rthreads::placement::rebalancing());
/// rthreads::placement::set_rebalancing(false);
/// ```
pub fn set_rebalancing(on: bool) {
    set_local_rebalancing(on);
    if let Some(rt) = runtime::get() {
        private_internal(move || {
            for n in rt.peers() {
                rt.send(n, PlacementMsg::Rebalance { on }.encode());
            }
        });
        // A statistics round trip to every node follows the switch on the same connections.
        crate::stats::stats();
    }
}

/// Whether rebalancing is on (on this node; [`set_rebalancing`] switches every node).
///
/// # Examples
/// ```
/// assert!(!rthreads::placement::rebalancing()); // off unless RTHREADS_REBALANCE or set_rebalancing
/// ```
pub fn rebalancing() -> bool {
    REBALANCE.load(Ordering::SeqCst)
}

pub(crate) fn set_local_rebalancing(on: bool) {
    REBALANCE.store(on, Ordering::SeqCst);
    IDLE_GENERATION.store(0, Ordering::SeqCst);
}

// ---------------------------------------------------------------------------------------------
// What this node knows of the others.

#[derive(Clone, Copy, Debug)]
enum Pending {
    /// A spawn sent to the node, with the number its frame has among the frames this node queued
    /// to it (`None` between the decision and the send).
    Spawn { frame: Option<u64>, since: Instant },
    /// A thread claimed a move to the node (claim id), not settled yet.
    Move { claim: u64, since: Instant },
}

impl Pending {
    fn since(&self) -> Instant {
        match *self {
            Pending::Spawn { since, .. } | Pending::Move { since, .. } => since,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Report {
    running: u32,
    cpu_milli: u32,
    at: Instant,
}

#[derive(Debug, Default)]
struct Peer {
    report: Option<Report>,
    /// The number of the report in `report`.
    seq: Option<u32>,
    pending: Vec<Pending>,
}

impl Peer {
    fn expire(&mut self, now: Instant) {
        self.pending.retain(|p| now.duration_since(p.since()) < FORGET);
    }

    /// A report from this node: it had processed `processed` frames from us, and took in the
    /// thread of move claim `settles` (0: none). What it shows is no longer pending.
    fn settle(&mut self, processed: u64, settles: u64) {
        self.pending.retain(|e| match *e {
            Pending::Spawn { frame: Some(f), .. } => f > processed,
            Pending::Spawn { frame: None, .. } => true,
            Pending::Move { claim, .. } => claim != settles,
        });
    }
}

/// Everything this node knows of the cluster's load, and what its service thread last reported.
struct Table {
    peers: Vec<Peer>,
    /// Moves claimed from this node and not settled: (claim id, when).
    claims: Vec<(u64, Instant)>,
    next_claim: u64,
    /// The decisions' view, rebuilt for each decision (kept to reuse its allocation).
    view: Vec<Load>,
    next_tick: Instant,
    last_sent: Option<(u32, u64, u32)>,
    last_sent_at: Instant,
    cpu_at: Instant,
    cpu_used: Duration,
    /// Reports of this node's subtree held for its parent (large clusters).
    relay: Relay,
}

static TABLE: ServiceLock<Option<Table>> = ServiceLock::new("placement.table", None);

/// Runs `f` on the table, on the private stack (the service thread takes the table's lock too).
/// `f` must be a `move` closure over private values: it runs under the lock.
fn with_table<R>(rt: &'static Runtime, f: impl FnOnce(&mut Table) -> R) -> R {
    private(move || {
        let _internal = InternalAlloc::new();
        let mut g = TABLE.lock();
        let now = Instant::now();
        f(g.get_or_insert_with(|| Table {
            peers: (0..rt.nodes).map(|_| Peer::default()).collect(),
            claims: Vec::new(),
            next_claim: 1,
            view: Vec::with_capacity(usize::from(rt.nodes)),
            next_tick: now,
            last_sent: None,
            last_sent_at: now,
            cpu_at: now,
            cpu_used: cpu_time(),
            relay: Relay::default(),
        }))
    })
}

impl Table {
    fn set_leaving(&self) {
        LEAVING.store(self.claims.len() as u32, Ordering::SeqCst);
    }

    /// Forgets what is too old to be settled by a report any more.
    fn expire(&mut self, now: Instant) {
        for p in &mut self.peers {
            p.expire(now);
        }
        let before = self.claims.len();
        self.claims.retain(|&(_, since)| now.duration_since(since) < FORGET);
        if self.claims.len() != before {
            self.set_leaving();
        }
    }

    /// Rebuilds `view` from what is known now.
    fn fill(&mut self, rt: &Runtime, now: Instant) {
        self.expire(now);
        self.view.clear();
        for (n, p) in self.peers.iter().enumerate() {
            let parallelism = rt.parallelism.get(n).copied().unwrap_or(1).max(1);
            let (running, pending, cpu_milli) = if n == rt.me.index() {
                (running_here(), 0, CPU_MILLI.load(Ordering::Relaxed))
            } else {
                let (running, cpu_milli) = p.report.map_or((0, 0), |r| (r.running, r.cpu_milli));
                (running, p.pending.len() as u32, cpu_milli)
            };
            self.view.push(Load { running, pending, parallelism, cpu: f64::from(cpu_milli) / 1000.0 });
        }
    }
}

/// The node a new thread goes to under `policy` (the run's policy when `None`), spawned on `me` of
/// a cluster of `nodes`. A thread sent elsewhere counts as pending there from now on.
pub(crate) fn choose(me: NodeId, nodes: usize, policy: Option<Placement>) -> NodeId {
    let rt = runtime::get();
    let k = rt.map_or(0, |r: &Runtime| r.next_target.fetch_add(1, Ordering::Relaxed));
    let start = (me.index() + k) % nodes.max(1);
    let policy = policy.unwrap_or_else(self::policy);
    let Some(rt) = rt.filter(|_| nodes > 1 && policy != Placement::RoundRobin) else {
        return NodeId(start as u16);
    };
    let now = Instant::now();
    with_table(rt, move |t| {
        t.fill(rt, now);
        let target = match policy {
            Placement::LocalFirst => local_first(&t.view, me.index(), start),
            _ => least_loaded(&t.view, start),
        };
        if target != me.index() {
            t.peers[target].pending.push(Pending::Spawn { frame: None, since: now });
        }
        NodeId(target as u16)
    })
}

/// A spawn frame for `target` has been queued: it stays pending until a report from `target`
/// shows that frame processed.
pub(crate) fn sent(target: NodeId) {
    let Some(rt) = runtime::get().filter(|r| r.me != target) else { return };
    let frame = rt.sent_to(target);
    let now = Instant::now();
    with_table(rt, move |t| {
        let pending = &mut t.peers[target.index()].pending;
        let slot = pending.iter_mut().find_map(|p| match p {
            Pending::Spawn { frame: f @ None, .. } => Some(f),
            _ => None,
        });
        match slot {
            Some(f) => *f = Some(frame),
            None => pending.push(Pending::Spawn { frame: Some(frame), since: now }),
        }
    });
}

/// A load report of node `from` (sent by it, or passed on up the tree): it runs `running` threads,
/// uses `cpu_milli` thousandths of a CPU, had processed `processed` frames from this node when it
/// reported, and (`settles`, non-zero) has taken in the thread of that move claim. A report older
/// than the one held still settles what it shows, but does not replace the held one.
pub(crate) fn on_report(from: NodeId, report: Entry, settles: u64) {
    let Some(rt) = runtime::get() else { return };
    let now = Instant::now();
    let Entry { seq, running, cpu_milli, processed, .. } = report;
    with_table(rt, move |t| {
        let Some(p) = t.peers.get_mut(from.index()) else { return };
        if newer(seq, p.seq) {
            p.report = Some(Report { running, cpu_milli, at: now });
            p.seq = Some(seq);
        }
        p.settle(processed, settles);
        if settles != 0 {
            t.claims.retain(|&(id, _)| id != settles);
            t.set_leaving();
        }
    });
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Held from reading the counts to queueing the report, so that reports leave in the order they
/// were made (a report must never be overtaken by an older one).
static REPORTING: ServiceLock<()> = ServiceLock::new("placement.reporting", ());

/// Sends this node's load to `to` now, settling move claim `settles` (0: none).
pub(crate) fn send_report(rt: &'static Runtime, to: NodeId, settles: u64) {
    private_internal(move || {
        let _order = REPORTING.lock();
        rt.send(to, load_report(rt, to, settles));
    });
    if rt.nodes > STAR_ABOVE && to == NodeId(0) {
        // Node 0 is the one that keeps every load in a large cluster: what it has just been told
        // directly need not climb the tree too.
        let (state, now) = (report_state(rt.nodes), Instant::now());
        with_table(rt, move |t| {
            t.last_sent = Some(state);
            t.last_sent_at = now;
        });
    }
}

/// What a periodic report would say now, as far as deciding whether to send one goes: threads
/// running, arrivals and departures, and CPU use in tenths of a CPU, or in whole CPUs in a large
/// cluster (placement counts CPU use in whole CPUs only; finer steps there would send a report up
/// the tree, and open a connection to the parent, whenever a node's own start-up work fades).
fn report_state(nodes: u16) -> (u32, u64, u32) {
    let cpu = CPU_MILLI.load(Ordering::Relaxed);
    let cpu = if nodes > STAR_ABOVE { cpu / 1000 } else { cpu.div_ceil(100) };
    (running_here(), CHANGES.load(Ordering::SeqCst), cpu)
}

/// This node's load as reported to `to` now (under `REPORTING`, in private memory).
fn load_report(rt: &Runtime, to: NodeId, settles: u64) -> Vec<u8> {
    let Entry { running, cpu_milli, processed, seq, .. } = own_entry(rt, to);
    PlacementMsg::Load { running, cpu_milli, processed, settles, seq }.encode()
}

/// This node's load now, numbered, with the frames from `to` it has processed (under `REPORTING`).
fn own_entry(rt: &Runtime, to: NodeId) -> Entry {
    Entry {
        node: rt.me,
        seq: SEQ.fetch_add(1, Ordering::SeqCst) + 1,
        running: running_here(),
        cpu_milli: CPU_MILLI.load(Ordering::Relaxed),
        processed: rt.processed_from(to),
    }
}

/// A thread spawned by `origin` ends here: `origin` gets this node's load before it learns of the
/// end (same connection, so `join` returns after the report is in).
pub(crate) fn report_to(origin: NodeId) {
    if let Some(rt) = runtime::get().filter(|r| r.me != origin) {
        send_report(rt, origin, 0);
    }
}

/// The service thread's periodic work: measures CPU use, forgets stale claims, and reports this
/// node's load to every peer when it changed (or has not been sent for a while); in a cluster of
/// more than [`STAR_ABOVE`] nodes, it passes its own report and those its children passed on to
/// its parent in the tree, once a period.
pub(crate) fn tick(rt: &'static Runtime) -> runtime::Verdict {
    if rt.nodes < 2 {
        return runtime::Verdict::Ok;
    }
    let now = Instant::now();
    let (due, send) = with_table(rt, move |t| {
        if now < t.next_tick {
            return (false, false);
        }
        let slowdown = report_slowdown(rt.nodes);
        t.next_tick = now + PERIOD * slowdown;
        if now.duration_since(t.cpu_at) >= CPU_WINDOW {
            let used = cpu_time();
            let busy =
                used.saturating_sub(t.cpu_used).as_secs_f64() / now.duration_since(t.cpu_at).as_secs_f64();
            CPU_MILLI.store((busy * 1000.0).round() as u32, Ordering::Relaxed);
            (t.cpu_at, t.cpu_used) = (now, used);
        }
        t.expire(now);
        let state = report_state(rt.nodes);
        if t.last_sent == Some(state) && now.duration_since(t.last_sent_at) < REFRESH * slowdown {
            return (true, false);
        }
        t.last_sent = Some(state);
        t.last_sent_at = now;
        (true, true)
    });
    if !due {
        return runtime::Verdict::Ok;
    }
    let _internal = InternalAlloc::new();
    let _order = REPORTING.lock();
    if rt.nodes <= STAR_ABOVE {
        if send {
            for n in rt.peers().filter(|&n| reports_to(rt.me, rt.nodes, n)) {
                rt.send_batched(n, load_report(rt, n, 0));
            }
        }
        return runtime::Verdict::Ok;
    }
    let Some(parent) = rt.peers().find(|&n| reports_to(rt.me, rt.nodes, n)) else {
        return runtime::Verdict::Ok; // node 0: the root keeps what reaches it
    };
    // A node that has never run a thread has nothing to say that node 0 does not assume already
    // (no threads): it stays quiet, and does not connect to its parent just for that.
    let ever_ran = CHANGES.load(Ordering::SeqCst) > 0;
    let own = (send && ever_ran).then(|| own_entry(rt, NodeId(0)));
    let batch = with_table(rt, move |t| {
        if let Some(e) = own {
            t.relay.hold(e);
        }
        RELAY_HELD.store(false, Ordering::SeqCst);
        (!t.relay.is_empty()).then(|| t.relay.take())
    });
    if let Some(batch) = batch {
        rt.send_batched(parent, PlacementMsg::Loads(batch).encode());
    }
    runtime::Verdict::Ok
}

/// This process's CPU time so far (user and system, every thread).
fn cpu_time() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one `rusage` into the live struct we pass.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let tv =
        |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(u.ru_utime) + tv(u.ru_stime)
}

// ---------------------------------------------------------------------------------------------
// Rebalancing.

/// Claims a move of the calling thread away from this node, if rebalancing is on, this node is
/// overloaded and another node has room: returns the claim and the target, both already counted
/// (this node counts the thread as leaving, the target as pending).
pub(crate) fn claim_move() -> Option<(u64, NodeId)> {
    let rt = runtime::get()?;
    if !rebalancing() || rt.nodes < 2 {
        return None;
    }
    let parallelism = rt.parallelism.get(rt.me.index()).copied().unwrap_or(1).max(1);
    if running_here() <= parallelism || runtime::on_service_thread() {
        return None;
    }
    let generation = GENERATION.load(Ordering::SeqCst);
    if IDLE_GENERATION.load(Ordering::SeqCst) == generation
        || MAIN_THREAD.get() == Some(&std::thread::current().id())
    {
        return None;
    }
    let now = Instant::now();
    with_table(rt, move |t| {
        t.fill(rt, now);
        let Some(target) = rebalance_target(&t.view, rt.me.index()) else {
            IDLE_GENERATION.store(generation, Ordering::SeqCst);
            return None;
        };
        let claim = t.next_claim;
        t.next_claim += 1;
        t.claims.push((claim, now));
        t.set_leaving();
        t.peers[target].pending.push(Pending::Move { claim, since: now });
        CLAIMED.fetch_add(1, Ordering::Relaxed);
        Some((claim, NodeId(target as u16)))
    })
}

/// A claimed move did not happen: the thread stays, and is counted here again.
pub(crate) fn cancel_move(claim: u64, target: NodeId) {
    let Some(rt) = runtime::get() else { return };
    with_table(rt, move |t| {
        t.claims.retain(|&(id, _)| id != claim);
        t.set_leaving();
        t.peers[target.index()]
            .pending
            .retain(|p| !matches!(*p, Pending::Move { claim: c, .. } if c == claim));
    });
    CANCELLED.fetch_add(1, Ordering::Relaxed);
    // Do not try again before something new is known.
    IDLE_GENERATION.store(GENERATION.load(Ordering::SeqCst), Ordering::SeqCst);
}

// ---------------------------------------------------------------------------------------------
// What a program can see.

/// Moves claimed on this node by [`yield_now`](crate::yield_now), and how many of those `migrate` refused. For tests
/// and benchmarks.
#[doc(hidden)]
pub fn move_counts() -> (u64, u64) {
    (CLAIMED.load(Ordering::Relaxed), CANCELLED.load(Ordering::Relaxed))
}

/// One node's load as this node believes it ([`loads`]).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct NodeLoad {
    /// The node.
    pub node: usize,
    /// Threads it runs: exact for the calling node, its last report for the others. Threads that
    /// claimed a move away are not counted.
    pub running: u32,
    /// Threads this node sent it (spawns and moves) that its last report cannot show yet.
    pub pending: u32,
    /// Its CPUs (`std::thread::available_parallelism` there).
    pub parallelism: u32,
    /// CPUs it had in use, on average over its last measurement window (about 100 ms).
    pub cpu: f64,
    /// How long ago its last report arrived; `None` for the calling node and for a node that has not
    /// reported yet.
    pub reported: Option<Duration>,
}

/// Every node's load as the calling node sees it, node 0 first. Outside a cluster, one entry.
///
/// # Examples
/// ```
/// let loads = rthreads::placement::loads();
/// assert_eq!(loads.len(), rthreads::node_count());
/// assert!(loads[0].parallelism >= 1);
/// ```
pub fn loads() -> Vec<NodeLoad> {
    let node_load = |node, l: &Load, reported| NodeLoad {
        node,
        running: l.running,
        pending: l.pending,
        parallelism: l.parallelism,
        cpu: l.cpu,
        reported,
    };
    let Some(rt) = runtime::get() else {
        let parallelism = std::thread::available_parallelism().map_or(1, |p| p.get() as u32);
        return vec![node_load(0, &Load { running: running_here(), parallelism, ..Load::default() }, None)];
    };
    let now = Instant::now();
    let (view, ages): (Vec<Load>, Vec<Option<Duration>>) = with_table(rt, move |t| {
        t.fill(rt, now);
        let ages = t.peers.iter().map(|p| p.report.map(|r| now.duration_since(r.at))).collect();
        (t.view.clone(), ages)
    });
    view.iter()
        .zip(ages)
        .enumerate()
        .map(|(node, (l, age))| node_load(node, l, if node == rt.me.index() { None } else { age }))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Pinning (`RTHREADS_PIN`).

/// Pins this node (the calling thread and every thread it creates from now on) to one CPU: the
/// `node % k`-th of the `k` CPUs it may run on. For an embedded local cluster this emulates nodes on
/// separate hosts, which placement needs to matter at all on one machine. Returns the CPU.
pub(crate) fn pin(node: NodeId) -> Result<usize, String> {
    // SAFETY: an all-zero `cpu_set_t` is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into `set`.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(format!("RTHREADS_PIN: sched_getaffinity: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: CPU_ISSET reads a bit of the set for an index below CPU_SETSIZE.
    let allowed: Vec<usize> =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect();
    let Some(&cpu) = allowed.get(node.index() % allowed.len().max(1)) else {
        return Err("RTHREADS_PIN: this process may run on no CPU".into());
    };
    // SAFETY: as above, the empty set.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (it came from the loop above).
    unsafe { libc::CPU_SET(cpu, &mut one) };
    // SAFETY: sched_setaffinity reads one `cpu_set_t` from a live value.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) } != 0 {
        return Err(format!(
            "RTHREADS_PIN: pinning {node} to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(running: u32, pending: u32, parallelism: u32) -> Load {
        Load { running, pending, parallelism, cpu: 0.0 }
    }

    #[test]
    fn large_clusters_report_load_up_the_tree_and_less_often() {
        let (zero, one, five, seventeen) = (NodeId(0), NodeId(1), NodeId(5), NodeId(17));
        assert!(reports_to(one, 16, zero) && reports_to(one, 16, five) && !reports_to(one, 16, one));
        // Above 16 nodes: to the parent only (fan-out 16 by default: node 17's parent is node 1).
        assert!(reports_to(five, 17, zero) && !reports_to(five, 17, one));
        assert!(reports_to(seventeen, 18, one) && !reports_to(seventeen, 18, zero));
        assert!(!NodeId::all(18).any(|n| reports_to(zero, 18, n)));
        assert_eq!([report_slowdown(2), report_slowdown(16), report_slowdown(17)], [1, 1, 2]);
        assert_eq!(report_slowdown(256), 16);
    }

    #[test]
    fn names_parse_and_print() {
        for p in Placement::ALL {
            assert_eq!(p.name().parse::<Placement>(), Ok(p));
            assert_eq!(Placement::from_code(p as u8), p);
        }
        assert_eq!(" local-first\n".parse::<Placement>(), Ok(Placement::LocalFirst));
        let e = "fastest".parse::<Placement>().unwrap_err().to_string();
        assert_eq!(e, "unknown placement policy \"fastest\" (known: round-robin, least-loaded, local-first)");
        assert_eq!(Placement::default(), Placement::RoundRobin);
    }

    #[test]
    fn least_loaded_takes_the_fewest_threads_per_cpu() {
        let loads = [load(2, 0, 2), load(0, 1, 2), load(3, 0, 8), load(1, 1, 1)];
        // Shares: 1, 0.5, 0.375, 2.
        assert_eq!(least_loaded(&loads, 0), 2);
        assert_eq!(least_loaded(&loads, 3), 2);
        // Pending spawns count like running threads.
        assert_eq!(least_loaded(&[load(1, 0, 1), load(0, 1, 1)], 0), 0);
        assert_eq!(least_loaded(&[load(1, 0, 1), load(0, 1, 1)], 1), 1);
    }

    #[test]
    fn equals_take_turns_from_the_start() {
        let loads = [load(1, 0, 2), load(0, 0, 2), load(0, 0, 2), load(1, 0, 2)];
        assert_eq!(least_loaded(&loads, 0), 1);
        assert_eq!(least_loaded(&loads, 1), 1);
        assert_eq!(least_loaded(&loads, 2), 2);
        assert_eq!(least_loaded(&loads, 3), 1);
        assert_eq!(least_loaded(&loads, 7), 1, "start wraps");
    }

    #[test]
    fn a_burst_spreads_when_each_spawn_counts_as_pending() {
        // Four idle nodes of two CPUs; the spawning node counts each spawn where it sent it.
        let mut loads = vec![load(0, 0, 2); 4];
        let mut placed = Vec::new();
        for k in 0..8 {
            let n = least_loaded(&loads, k);
            loads[n].pending += 1;
            placed.push(n);
        }
        assert_eq!(placed, [0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn cpu_use_counts_in_whole_cpus_when_higher_than_the_thread_count() {
        let busy_elsewhere = Load { running: 0, pending: 0, parallelism: 2, cpu: 1.9 };
        let idle = load(0, 0, 2);
        // 1.9 CPUs count as 1 busy CPU: the idle node wins.
        assert_eq!(least_loaded(&[busy_elsewhere, idle], 0), 1);
        // A service thread's 0.3 CPU does not count.
        let serving = Load { cpu: 0.3, ..idle };
        assert_eq!(least_loaded(&[serving, load(1, 0, 2)], 1), 0);
        assert!(!Load { cpu: 2.0, ..idle }.has_room());
    }

    #[test]
    fn local_first_stays_home_until_the_cpus_are_taken() {
        let mut loads = [load(0, 0, 2), load(1, 0, 2), load(0, 0, 2)];
        assert_eq!(local_first(&loads, 0, 1), 0);
        loads[0].running = 1;
        assert_eq!(local_first(&loads, 0, 1), 0);
        loads[0].running = 2;
        assert_eq!(local_first(&loads, 0, 1), 2, "busy: the least loaded other node");
        loads[2].running = 2;
        assert_eq!(local_first(&loads, 0, 1), 1);
    }

    #[test]
    fn rebalancing_moves_only_from_an_overloaded_node_to_one_with_room() {
        // Not overloaded: two threads, two CPUs.
        assert_eq!(rebalance_target(&[load(2, 0, 2), load(0, 0, 2)], 0), None);
        // Overloaded, but nobody has room.
        assert_eq!(rebalance_target(&[load(5, 0, 2), load(2, 0, 2), load(1, 1, 2)], 0), None);
        // Overloaded, two with room: the emptier one per CPU after the move.
        assert_eq!(rebalance_target(&[load(5, 0, 2), load(1, 0, 2), load(1, 0, 4)], 0), Some(2));
        // Never to itself.
        assert_eq!(rebalance_target(&[load(0, 0, 1), load(3, 0, 1)], 1), Some(0));
        // CPU use elsewhere (not rthreads) leaves no room.
        let busy = Load { running: 0, pending: 0, parallelism: 1, cpu: 1.0 };
        assert_eq!(rebalance_target(&[load(3, 0, 1), busy], 0), None);
    }

    #[test]
    fn only_as_many_threads_move_as_there_is_room_for() {
        // Node 0 runs 10 threads on 2 CPUs; nodes 1 and 2 have 2 and 1 CPUs to spare. Each claim
        // counts the thread as gone here and pending there, as `claim_move` does.
        let mut loads = [load(10, 0, 2), load(2, 0, 4), load(0, 0, 1)];
        let mut moved = vec![0; 3];
        while let Some(t) = rebalance_target(&loads, 0) {
            loads[0].running -= 1;
            loads[t].pending += 1;
            moved[t] += 1;
        }
        assert_eq!(moved, [0, 2, 1]);
        assert_eq!(loads[0].running, 7);
        // Equals: the first after the overloaded node, wrapping.
        let loads = [load(0, 0, 1), load(4, 0, 1), load(0, 0, 1)];
        assert_eq!(rebalance_target(&loads, 1), Some(2));
    }

    #[test]
    fn spawns_are_pending_until_a_report_covers_their_frame() {
        let now = Instant::now();
        let mut p = Peer::default();
        p.pending.push(Pending::Spawn { frame: Some(7), since: now });
        p.pending.push(Pending::Spawn { frame: Some(9), since: now });
        p.pending.push(Pending::Move { claim: 3, since: now });
        p.pending.push(Pending::Spawn { frame: None, since: now - FORGET });
        p.expire(now);
        assert_eq!(p.pending.len(), 3, "an unsent spawn is forgotten after a while");
        p.pending.push(Pending::Spawn { frame: None, since: now });
        // The report covers frame 7 but not 9, and settles another move.
        p.settle(8, 4);
        assert_eq!(p.pending.len(), 3);
        assert!(!p.pending.iter().any(|e| matches!(e, Pending::Spawn { frame: Some(7), .. })));
        // The move is settled by its own claim only; an unsent spawn only by age.
        p.settle(8, 3);
        assert_eq!(p.pending.len(), 2);
        p.settle(u64::MAX, 0);
        assert!(matches!(p.pending[..], [Pending::Spawn { frame: None, .. }]));
    }
}
