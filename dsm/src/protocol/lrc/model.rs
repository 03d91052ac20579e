//! Exhaustive model check of the release-consistent protocol with
//! [stateright](https://www.stateright.rs).
//!
//! The model runs the very [`LrcNode`] code the runtime runs and plays the runtime around it, as
//! `tests.rs` does for random schedules:
//!
//! * per ordered pair of nodes a FIFO link (TCP), while links between different pairs deliver in
//!   any interleaving: delivering the head of any non-empty link is one step;
//! * per node and page real bytes (pages of [`PAGE`] bytes), a twin and a protection entry that
//!   only `Protect` actions change; `Twin` copies the page, a `Send` of a `Diff` encodes the diff
//!   from the twin with [`diff::encode`] at that moment, `ApplyDiff` validates and applies it with
//!   [`diff::apply`], a `Send` of a `Page` copies the bytes at that moment and `Install` copies
//!   them in;
//! * one application thread per node running a small fixed program of reads and writes of single
//!   bytes, lock and unlock of one lock, releases, acquires, and stores and loads of bytes on a
//!   sequentially consistent page (atomics). The lock is a token: `Lock` takes it when it is free
//!   and then calls [`LrcNode::acquire`]; `Unlock` calls [`LrcNode::release`] and hands the token
//!   back only at [`Action::Released`], as the runtime does. An access either succeeds at once (the
//!   protection allows it) or faults and waits for the `Wake`; the woken thread retries as a
//!   separate step.
//!
//! The model keeps the program's happens-before relation in vector clocks: program order, the
//! lock (an unlock that completes publishes the node's clock, a lock joins it) and the atomics (a
//! store publishes, a load that returns the stored value joins). Every write is stamped with its
//! node's clock, so the checker knows which writes happen before any point of any node.
//!
//! Every interleaving is explored breadth-first, and in every reachable state the checker
//! evaluates the properties in [`LrcModel::properties`]: reads return the write that happens
//! before them (release consistency for data-race-free programs), every copy a node may read holds
//! every write that happens before the node's current point, sequentially consistent pages stay
//! single-writer, no message is rejected, the runtime contract holds, no deadlock, every release
//! can still complete, and at the end every home and every node agree.
//!
//! The second half plants known mistakes in the same code ([`Bug`]) and expects counterexamples.

// Test-only code: it reports what it checked on stderr (the rule against std's print macros is
// the runtime's, see dsm/clippy.toml).
#![allow(clippy::disallowed_macros)]

use std::collections::{BTreeSet, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

use stateright::{Checker, Expectation, HasDiscoveries, Model, Property};

use super::{
    Access, Action, Bug, FaultKind, LrcConfig, LrcNode, Msg, NodeId, PageId, Payload, ReleaseId, diff,
};

/// Bytes per simulated page: enough for a lock-guarded byte and one byte per node.
const PAGE: usize = 8;
/// What a node's memory holds for a page it never received.
const POISON: u8 = 0xEE;

type Bytes = [u8; PAGE];

/// One step of a node's program. Pages and bytes are small numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    /// Read a byte of a release-consistent page: it must be the write that happens before.
    Read(u8, u8),
    /// Write a byte of a release-consistent page (a value unique to the node and step).
    Write(u8, u8),
    /// Take the lock (waits while another node holds it), then acquire.
    Lock,
    /// Release, and hand the lock back once the release completes.
    Unlock,
    /// A release on its own, waited for (a thread ending, a message sent to nobody modelled).
    Release,
    /// An acquire on its own.
    Acquire,
    /// Store a fresh value to a byte of a sequentially consistent page, with release semantics.
    Publish(u8, u8),
    /// Load a byte of a sequentially consistent page into the thread's register, with acquire
    /// semantics when it returns a published value.
    Observe(u8, u8),
    /// Read a byte of a release-consistent page if the register is not zero (the last `Observe`
    /// saw a publication), else skip.
    ReadIfSeen(u8, u8),
    /// Make a page sequentially consistent ([`LrcNode::set_sc`]), as the runtime does for a page
    /// found to hold atomics.
    MakeSc(u8),
}

/// The size and programs of a model.
#[derive(Clone, Debug)]
struct Bounds {
    nodes: u16,
    /// Pages simulated: `0..pages`, page `i` homed at node `i` (`pages <= nodes`).
    pages: u64,
    /// Pages that are sequentially consistent from the start (`LrcConfig::sc_pages`).
    sc: Range<u64>,
    /// Each node's program.
    programs: Vec<Vec<Op>>,
    /// A mistake planted in every node.
    bug: Option<Bug>,
}

struct LrcModel {
    bounds: Bounds,
}

/// A node's application thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Thread {
    /// Runs its next step (or has finished).
    Run,
    /// Trapped, waiting for a `Wake` on the page.
    Waiting(PageId),
    /// Woken, will retry its access.
    Ready,
    /// Waiting for `Released` of this release; then hands the lock back if `unlock`.
    Releasing { release: ReleaseId, unlock: bool },
}

/// A message on a link, with its payload: the page's bytes or a diff.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Packet {
    msg: Msg,
    payload: Option<Vec<u8>>,
}

/// The latest write of a byte: who wrote it, the writer's clock entry at the time, and the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Stamp {
    /// `None`: the initial value, written by the home before the program starts.
    writer: Option<u8>,
    epoch: u8,
    value: u8,
}

/// Something went wrong in the step that led to this state; the state is terminal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Violation {
    /// A node's `handle` returned an error for a message a correct peer sent.
    Rejected(String),
    /// A read returned another value than the write that happens before it.
    StaleRead { node: usize, page: usize, byte: usize, saw: u8, expected: u8 },
    /// The model's program has a data race in this interleaving (a mistake in the model, not in
    /// the protocol).
    Race(String),
    /// The runtime's contract with the protocol was broken.
    Contract(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    nodes: Vec<LrcNode>,
    /// `links[from * n + to]`, FIFO.
    links: Vec<VecDeque<Packet>>,
    /// `mem[node][page]`: the node's bytes of the page.
    mem: Vec<Vec<Bytes>>,
    /// `twins[node][page]`.
    twins: Vec<Vec<Option<Bytes>>>,
    /// `prot[node][page]`: what the node's thread may do, set by `Protect` only.
    prot: Vec<Vec<Access>>,
    threads: Vec<Thread>,
    /// The index of each node's next program step.
    pc: Vec<u8>,
    /// Each thread's register: the value its last `Observe` returned.
    seen: Vec<u8>,
    /// `clock[node]`: the node's vector clock. Entry `node` is the node's current epoch.
    clock: Vec<Vec<u8>>,
    /// The node holding the lock.
    lock: Option<u8>,
    /// The clock the last unlock published.
    lock_clock: Vec<u8>,
    /// `last[page][byte]`: the latest write of each byte, in the model's (global) order.
    last: Vec<Vec<Stamp>>,
    /// The clock published by the latest `Publish` of each byte of an SC page (empty otherwise).
    published: Vec<Vec<Vec<u8>>>,
    /// Per node: releases called and releases reported.
    releases: Vec<(u64, u64)>,
    violation: Option<Violation>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Step {
    /// A node's thread takes its next program step `op`, or retries it after a wake-up.
    Run { node: usize, op: Op },
    /// The oldest message on link `from -> to` arrives.
    Deliver { from: usize, to: usize },
}

impl State {
    fn count(&self) -> usize {
        self.nodes.len()
    }

    fn pages(&self) -> usize {
        self.mem[0].len()
    }

    fn home(&self, page: usize) -> usize {
        self.nodes[0].home_of(PageId(page as u64)).index()
    }

    fn is_sc(&self, page: usize) -> bool {
        self.nodes[self.home(page)].is_sc(PageId(page as u64))
    }

    fn fail(&mut self, violation: Violation) {
        self.violation.get_or_insert(violation);
    }

    fn contract(&mut self, what: String) {
        self.fail(Violation::Contract(what));
    }

    /// Whether write `w` happens before the current point of `node`.
    fn before(&self, w: Stamp, node: usize) -> bool {
        w.writer.is_none_or(|j| w.epoch <= self.clock[node][usize::from(j)])
    }

    fn join(into: &mut [u8], from: &[u8]) {
        for (a, b) in into.iter_mut().zip(from) {
            *a = (*a).max(*b);
        }
    }

    /// Carries out `actions` of `node` like the runtime does. `handling` is the message being
    /// handled with its payload, `None` for a local call.
    fn exec(&mut self, node: usize, actions: &[Action], handling: Option<&Packet>) {
        for &action in actions {
            if self.violation.is_some() {
                return;
            }
            let page = match action {
                Action::Send { msg, .. } => msg.page(),
                Action::Install { page }
                | Action::Twin { page }
                | Action::ApplyDiff { page }
                | Action::Protect { page, .. }
                | Action::Wake { page } => page,
                Action::Released { .. } => PageId(0),
            };
            let pg = page.0 as usize;
            if pg >= self.pages() {
                self.contract(format!("node {node}: {action:?} for a page outside the model"));
                return;
            }
            match action {
                Action::Send { to, msg } => {
                    let to = to.index();
                    if to == node || to >= self.count() {
                        self.contract(format!("node {node} sends {msg:?} to node {to}"));
                        return;
                    }
                    let payload = match msg.payload() {
                        Payload::None => None,
                        Payload::Page => {
                            if matches!(msg, Msg::Sc(_)) && self.prot[node][pg] == Access::Write {
                                self.contract(format!(
                                    "node {node} sends {msg:?} while the page is writable"
                                ));
                            }
                            Some(self.mem[node][pg].to_vec())
                        }
                        Payload::Diff => {
                            if self.prot[node][pg] == Access::Write {
                                self.contract(format!("node {node} diffs page {pg} while it is writable"));
                            }
                            let Some(twin) = self.twins[node][pg].take() else {
                                self.contract(format!(
                                    "node {node} sends a diff of page {pg} without a twin"
                                ));
                                return;
                            };
                            let mut d = Vec::new();
                            diff::encode(&twin, &self.mem[node][pg], &mut d);
                            Some(d)
                        }
                    };
                    let link = node * self.count() + to;
                    self.links[link].push_back(Packet { msg, payload });
                }
                Action::Install { page } => {
                    let bytes = handling
                        .filter(|p| p.msg.payload() == Payload::Page && p.msg.page() == page)
                        .and_then(|p| p.payload.as_deref());
                    let Some(bytes) = bytes else {
                        self.contract(format!("node {node} installs {page} without its bytes"));
                        return;
                    };
                    if self.prot[node][pg] != Access::None {
                        self.contract(format!("node {node} installs {page} while it is accessible"));
                    }
                    self.mem[node][pg].copy_from_slice(bytes);
                }
                Action::Twin { page } => {
                    if self.home(pg) == node
                        || self.twins[node][pg].is_some()
                        || self.prot[node][pg] > Access::Read
                    {
                        self.contract(format!(
                            "node {node}: Twin of {page} at home, twice or while writable"
                        ));
                    }
                    self.twins[node][pg] = Some(self.mem[node][pg]);
                }
                Action::ApplyDiff { page } => {
                    let d = handling
                        .filter(|p| p.msg.payload() == Payload::Diff && p.msg.page() == page)
                        .and_then(|p| p.payload.as_deref());
                    let Some(d) = d else {
                        self.contract(format!("node {node} applies a diff of {page} it did not receive"));
                        return;
                    };
                    if self.home(pg) != node {
                        self.contract(format!("node {node} applies a diff of {page} away from its home"));
                    }
                    if let Err(e) = diff::apply(d, &mut self.mem[node][pg]) {
                        self.contract(format!("node {node}: diff of {page}: {e}"));
                    }
                }
                Action::Protect { access, .. } => self.prot[node][pg] = access,
                Action::Wake { page } => {
                    if self.threads[node] == Thread::Waiting(page) {
                        self.threads[node] = Thread::Ready;
                    }
                }
                Action::Released { release } => self.released(node, release),
            }
        }
        for pg in 0..self.pages() {
            let page = PageId(pg as u64);
            let access = self.nodes[node].access(page);
            if self.prot[node][pg] != access {
                self.contract(format!(
                    "node {node}: protection of page {pg} is {:?}, the protocol says {access:?}",
                    self.prot[node][pg]
                ));
            }
            let writable_copy = self.home(pg) != node
                && !self.nodes[node].is_sc(page)
                && self.prot[node][pg] == Access::Write;
            if self.twins[node][pg].is_some() != writable_copy {
                self.contract(format!("node {node}: twin and write access of page {pg} disagree"));
            }
        }
    }

    fn released(&mut self, node: usize, release: ReleaseId) {
        let (called, reported) = self.releases[node];
        if release.0 != reported || reported >= called {
            self.contract(format!("node {node}: {release:?} reported out of order or twice"));
            return;
        }
        self.releases[node].1 += 1;
        if let Thread::Releasing { release: r, unlock } = self.threads[node]
            && r == release
        {
            if unlock {
                // The clock published with the lock is the node's at the release (the thread has
                // not moved since); later writes get a new epoch.
                let clock = self.clock[node].clone();
                Self::join(&mut self.lock_clock, &clock);
                self.clock[node][node] += 1;
                self.lock = None;
            }
            self.threads[node] = Thread::Run;
            self.pc[node] += 1;
        }
    }

    /// Calls `release` on `node` for its thread's current step, an unlock or a plain release.
    fn release(&mut self, node: usize, unlock: bool) {
        let mut out = Vec::new();
        let id = self.nodes[node].release(&mut out);
        self.releases[node].0 += 1;
        self.threads[node] = Thread::Releasing { release: id, unlock };
        self.exec(node, &out, None);
    }

    fn acquire(&mut self, node: usize) {
        let mut out = Vec::new();
        self.nodes[node].acquire(&mut out);
        self.exec(node, &out, None);
    }

    /// Whether `node`'s thread may access `page` as `kind` needs; if not, it traps and waits.
    fn access(&mut self, node: usize, pg: usize, kind: FaultKind) -> bool {
        if self.prot[node][pg] >= kind.needed() {
            self.threads[node] = Thread::Run;
            return true;
        }
        let page = PageId(pg as u64);
        // Waiting before faulting: the `Wake` may come with the fault's own actions.
        self.threads[node] = Thread::Waiting(page);
        let mut out = Vec::new();
        self.nodes[node].fault(page, kind, &mut out);
        if out.iter().any(|a| matches!(a, Action::Install { .. } | Action::ApplyDiff { .. })) {
            self.contract(format!("node {node}: payload action from a fault: {out:?}"));
        }
        self.exec(node, &out, None);
        false
    }

    /// A read of byte `b` of page `pg` by `node`, allowed by the protection: it must return the
    /// write that happens before it. Returns the value.
    fn read(&mut self, node: usize, pg: usize, b: usize) -> u8 {
        let w = self.last[pg][b];
        let saw = self.mem[node][pg][b];
        if !self.is_sc(pg) && !self.before(w, node) {
            self.fail(Violation::Race(format!(
                "node {node} reads {pg}:{b} concurrently with its write {w:?}"
            )));
        } else if saw != w.value {
            self.fail(Violation::StaleRead { node, page: pg, byte: b, saw, expected: w.value });
        }
        saw
    }

    /// A write of byte `b` of page `pg` by `node`, allowed by the protection.
    fn write(&mut self, node: usize, pg: usize, b: usize) {
        let prev = self.last[pg][b];
        if !self.is_sc(pg) && !self.before(prev, node) {
            self.fail(Violation::Race(format!("node {node} writes {pg}:{b} concurrently with {prev:?}")));
        }
        let value = ((node as u8 + 1) << 4) | self.pc[node];
        self.mem[node][pg][b] = value;
        self.last[pg][b] = Stamp { writer: Some(node as u8), epoch: self.clock[node][node], value };
    }

    /// Runs `node`'s current step (a first attempt or a retry after a wake-up).
    fn run(&mut self, node: usize, op: Op) {
        match op {
            Op::Read(pg, b) | Op::Observe(pg, b) | Op::ReadIfSeen(pg, b) => {
                let (pg, b) = (usize::from(pg), usize::from(b));
                if matches!(op, Op::ReadIfSeen(..)) && self.seen[node] == 0 {
                    self.pc[node] += 1;
                    return;
                }
                if self.access(node, pg, FaultKind::Read) {
                    let v = self.read(node, pg, b);
                    if let Op::Observe(..) = op {
                        self.seen[node] = v;
                        if v != 0 {
                            let published = self.published[pg][b].clone();
                            Self::join(&mut self.clock[node], &published);
                        }
                    }
                    self.pc[node] += 1;
                }
            }
            Op::Write(pg, b) | Op::Publish(pg, b) => {
                let (pg, b) = (usize::from(pg), usize::from(b));
                if self.access(node, pg, FaultKind::Write) {
                    self.write(node, pg, b);
                    if let Op::Publish(..) = op {
                        self.published[pg][b] = self.clock[node].clone();
                        self.clock[node][node] += 1;
                    }
                    self.pc[node] += 1;
                }
            }
            Op::Lock => {
                self.lock = Some(node as u8);
                let published = self.lock_clock.clone();
                Self::join(&mut self.clock[node], &published);
                self.acquire(node);
                self.pc[node] += 1;
            }
            Op::Acquire => {
                self.acquire(node);
                self.pc[node] += 1;
            }
            Op::MakeSc(pg) => {
                let mut out = Vec::new();
                self.nodes[node].set_sc(PageId(u64::from(pg)), &mut out);
                self.exec(node, &out, None);
                self.pc[node] += 1;
            }
            Op::Unlock => self.release(node, true),
            Op::Release => self.release(node, false),
        }
    }

    fn deliver(&mut self, from: usize, to: usize) {
        let link = from * self.count() + to;
        let Some(packet) = self.links[link].pop_front() else {
            return;
        };
        if let (Payload::Diff, Some(d)) = (packet.msg.payload(), &packet.payload)
            && let Err(e) = diff::validate(d, PAGE)
        {
            self.contract(format!("node {from} sent a malformed diff: {e}"));
            return;
        }
        let mut out = Vec::new();
        match self.nodes[to].handle(NodeId(from as u16), packet.msg, &mut out) {
            Ok(()) => self.exec(to, &out, Some(&packet)),
            Err(e) => self.fail(Violation::Rejected(format!("node {to}: {e}"))),
        }
    }

    /// No request outstanding anywhere: no message in flight, every node quiescent, no thread
    /// trapped, woken or waiting for a release.
    fn quiescent(&self) -> bool {
        self.links.iter().all(VecDeque::is_empty)
            && self.nodes.iter().all(LrcNode::is_quiescent)
            && self.threads.iter().all(|t| *t == Thread::Run)
    }

    /// Runs one fair schedule without new program steps: a woken thread retries at once,
    /// otherwise the oldest message on the first non-empty link arrives. Returns whether
    /// everything settles (every fault answered, every release complete).
    fn drains(mut self, model: &LrcModel) -> bool {
        for _ in 0..10_000 {
            if self.violation.is_some() {
                return false;
            }
            if let Some(node) = self.threads.iter().position(|t| *t == Thread::Ready) {
                let op = model.bounds.programs[node][usize::from(self.pc[node])];
                self.run(node, op);
                continue;
            }
            let Some(link) = self.links.iter().position(|l| !l.is_empty()) else {
                return self.quiescent();
            };
            let n = self.count();
            self.deliver(link / n, link % n);
        }
        false
    }

    /// The guarantee, on every byte whether the program reads it or not: every copy of a
    /// release-consistent page that a node may read holds every write that happens before the
    /// node's current point.
    fn copies_hold_what_happened_before(&self) -> bool {
        (0..self.count()).all(|k| {
            (0..self.pages()).all(|pg| {
                self.is_sc(pg)
                    || self.prot[k][pg] == Access::None
                    || (0..PAGE).all(|b| {
                        let w = self.last[pg][b];
                        !self.before(w, k) || self.mem[k][pg][b] == w.value
                    })
            })
        })
    }

    /// At the end: every home holds the last value of every byte of its release-consistent pages,
    /// every copy that is not stale equals it, and every readable copy of an SC page holds the
    /// last values.
    fn agree(&self) -> bool {
        (0..self.pages()).all(|pg| {
            let latest: Vec<u8> = self.last[pg].iter().map(|w| w.value).collect();
            let home = self.home(pg);
            let page = PageId(pg as u64);
            if self.is_sc(pg) {
                return (0..self.count())
                    .all(|k| self.prot[k][pg] == Access::None || self.mem[k][pg][..] == latest);
            }
            self.mem[home][pg][..] == latest
                && (0..self.count()).all(|k| {
                    k == home
                        || self.prot[k][pg] == Access::None
                        || self.nodes[k].is_stale(page)
                        || self.mem[k][pg] == self.mem[home][pg]
                })
        })
    }
}

impl LrcModel {
    /// The step `node`'s thread would take now, if any.
    fn next_op(&self, state: &State, node: usize) -> Option<Op> {
        let op = *self.bounds.programs[node].get(usize::from(state.pc[node]))?;
        match state.threads[node] {
            Thread::Ready => Some(op),
            Thread::Run if op == Op::Lock && state.lock.is_some() => None,
            Thread::Run => Some(op),
            Thread::Waiting(_) | Thread::Releasing { .. } => None,
        }
    }

    /// Whether any step is possible.
    fn enabled(&self, state: &State) -> bool {
        let mut actions = Vec::new();
        self.actions(state, &mut actions);
        !actions.is_empty()
    }

    fn finished(&self, state: &State) -> bool {
        (0..state.count()).all(|k| usize::from(state.pc[k]) == self.bounds.programs[k].len())
    }
}

impl Model for LrcModel {
    type State = State;
    type Action = Step;

    fn init_states(&self) -> Vec<State> {
        let b = &self.bounds;
        let count = usize::from(b.nodes);
        let pages = b.pages as usize;
        assert!(pages <= count, "one page per node at most");
        assert_eq!(b.programs.len(), count, "a program per node");
        assert!(b.programs.iter().all(|p| p.len() < 16), "write values hold the step index in 4 bits");
        let config = LrcConfig::default().with_sc_pages(b.sc.clone());
        let mut nodes: Vec<LrcNode> =
            (0..b.nodes).map(|i| LrcNode::new(NodeId(i), b.nodes, 1, config.clone())).collect();
        if let Some(bug) = b.bug {
            nodes.iter_mut().for_each(|node| node.inject(bug));
        }
        let mut mem = vec![vec![[POISON; PAGE]; pages]; count];
        let mut prot = vec![vec![Access::None; pages]; count];
        for pg in 0..pages {
            let home = nodes[0].home_of(PageId(pg as u64)).index();
            mem[home][pg] = [0; PAGE];
            prot[home][pg] = Access::Write;
        }
        let mut clock = vec![vec![0; count]; count];
        for (k, c) in clock.iter_mut().enumerate() {
            c[k] = 1;
        }
        let initial = Stamp { writer: None, epoch: 0, value: 0 };
        vec![State {
            nodes,
            links: vec![VecDeque::new(); count * count],
            mem,
            twins: vec![vec![None; pages]; count],
            prot,
            threads: vec![Thread::Run; count],
            pc: vec![0; count],
            seen: vec![0; count],
            clock,
            lock: None,
            lock_clock: vec![0; count],
            last: vec![vec![initial; PAGE]; pages],
            published: vec![vec![Vec::new(); PAGE]; pages],
            releases: vec![(0, 0); count],
            violation: None,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Step>) {
        if state.violation.is_some() {
            return;
        }
        let n = state.count();
        for node in 0..n {
            if let Some(op) = self.next_op(state, node) {
                actions.push(Step::Run { node, op });
            }
        }
        for (link, queue) in state.links.iter().enumerate() {
            if !queue.is_empty() {
                actions.push(Step::Deliver { from: link / n, to: link % n });
            }
        }
    }

    fn next_state(&self, state: &State, step: Step) -> Option<State> {
        let mut next = state.clone();
        match step {
            Step::Run { node, op } => next.run(node, op),
            Step::Deliver { from, to } => next.deliver(from, to),
        }
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("reads return the write that happens before them", |_: &Self, s: &State| {
                !matches!(s.violation, Some(Violation::StaleRead { .. }))
            }),
            Property::always(
                "every readable copy holds the writes that happen before",
                |_: &Self, s: &State| s.copies_hold_what_happened_before(),
            ),
            Property::always("the programs are data-race free", |_: &Self, s: &State| {
                !matches!(s.violation, Some(Violation::Race(_)))
            }),
            Property::always("SC pages have a single writer or many readers", |_: &Self, s: &State| {
                (0..s.pages()).filter(|&pg| s.is_sc(pg)).all(|pg| {
                    let writers = (0..s.count()).filter(|&k| s.prot[k][pg] == Access::Write).count();
                    let readers = (0..s.count()).filter(|&k| s.prot[k][pg] == Access::Read).count();
                    writers == 0 || (writers == 1 && readers == 0)
                })
            }),
            Property::always("no message is rejected", |_: &Self, s: &State| {
                !matches!(s.violation, Some(Violation::Rejected(_)))
            }),
            Property::always("the runtime contract holds", |_: &Self, s: &State| {
                !matches!(s.violation, Some(Violation::Contract(_)))
            }),
            Property::always("no deadlock", |m: &Self, s: &State| {
                s.violation.is_some() || m.finished(s) || m.enabled(s)
            }),
            Property::always(
                "at the end every release is reported and every copy agrees",
                |m: &Self, s: &State| {
                    s.violation.is_some()
                        || m.enabled(s)
                        || (m.finished(s)
                            && s.quiescent()
                            && s.releases.iter().all(|&(called, reported)| called == reported)
                            && s.agree())
                },
            ),
            Property::always("every fault and release can still complete", |m: &Self, s: &State| {
                s.violation.is_some() || s.clone().drains(m)
            }),
            // Not vacuous: the interesting situations are reached.
            Property::sometimes("a page has several writers at once", |_: &Self, s: &State| {
                (0..s.pages()).any(|pg| {
                    !s.is_sc(pg) && (0..s.count()).filter(|&k| s.prot[k][pg] == Access::Write).count() >= 2
                })
            }),
            Property::sometimes("a stale copy is still readable", |_: &Self, s: &State| {
                (0..s.count()).any(|k| {
                    (0..s.pages())
                        .any(|pg| s.prot[k][pg] != Access::None && s.nodes[k].is_stale(PageId(pg as u64)))
                })
            }),
            Property::sometimes("a release waits for a write notice", |_: &Self, s: &State| {
                s.threads.iter().any(|t| matches!(t, Thread::Releasing { .. }))
                    && s.links.iter().flatten().any(|p| matches!(p.msg, Msg::Notice { .. }))
            }),
            Property::sometimes("all programs done", |m: &Self, s: &State| m.finished(s) && s.quiescent()),
        ]
    }
}

/// What one exhaustive run found.
struct Outcome {
    checker: Box<dyn Checker<LrcModel>>,
}

impl Outcome {
    /// Every `always` property holds, and each of the `sometimes` properties named in `reached`
    /// has an example (which ones a program reaches depends on the program).
    fn assert_holds(&self, reached: &[&str]) {
        let model =
            LrcModel { bounds: Bounds { nodes: 1, pages: 0, sc: 0..0, programs: vec![vec![]], bug: None } };
        for property in model.properties() {
            let found = self.checker.discovery(property.name);
            match property.expectation {
                Expectation::Sometimes => {
                    assert!(
                        found.is_some() || !reached.contains(&property.name),
                        "never reached: {:?}",
                        property.name
                    );
                }
                _ => {
                    if let Some(path) = found {
                        panic!("{:?} fails:\n{:#?}", property.name, path.into_actions());
                    }
                }
            }
        }
        for name in reached {
            assert!(model.properties().iter().any(|p| p.name == *name), "no property {name:?}");
        }
    }
}

/// Explores every state within `bounds`, on `threads` checker threads. With one thread the search
/// is strictly breadth-first, so counterexamples are shortest.
fn check(name: &str, bounds: Bounds, threads: usize) -> Outcome {
    let started = Instant::now();
    let checker = LrcModel { bounds: bounds.clone() }.checker().threads(threads).spawn_bfs().join();
    let unique = checker.unique_state_count();
    let elapsed: Duration = started.elapsed();
    eprintln!(
        "{name}: {} nodes, {} pages (SC {:?}), programs {:?}, bug {:?}: {unique} unique states ({} generated), \
         depth {}, {elapsed:.2?}",
        bounds.nodes,
        bounds.pages,
        bounds.sc,
        bounds.programs,
        bounds.bug,
        checker.state_count(),
        checker.max_depth(),
    );
    Outcome { checker: Box::new(checker) }
}

/// Shorthands for the programs below: in every page, byte 0 is guarded by the lock and byte
/// `1 + k` belongs to node `k` (written by it outside critical sections, read by nobody else).
use Op::{Acquire, Lock, MakeSc, Observe, Publish, Read, ReadIfSeen, Release, Unlock, Write};

/// The byte of `page` that node `k` owns.
const fn own(page: u8, k: u8) -> Op {
    Write(page, 1 + k)
}

/// 3 nodes, 2 pages (homed at nodes 0 and 1; node 2 is home of neither), one lock. Every node
/// writes its own byte of page 1 (three writers of one page at once, one of them its home). The
/// lock guards byte 0 of both pages: node 0 writes both in one critical section, node 1 (page 1's
/// home) reads and writes page 0's in another, node 2 reads page 1's in one and both in a second,
/// so that a copy it fetched before another node's critical section must be noticed and dropped
/// (flushing its own write first), and then reads its own byte back. Nodes 0 (page 0's home) and
/// 1 then write their own bytes of page 0, which the others may hold, and release.
#[test]
fn three_nodes_two_pages() {
    let bounds = Bounds {
        nodes: 3,
        pages: 2,
        sc: 0..0,
        programs: vec![
            vec![own(1, 0), Lock, Write(0, 0), Write(1, 0), Unlock, own(0, 0), Release],
            vec![own(1, 1), Lock, Read(0, 0), Write(0, 0), Unlock, own(0, 1), Release],
            vec![own(1, 2), Lock, Read(1, 0), Unlock, Lock, Read(0, 0), Read(1, 0), Read(1, 3), Unlock],
        ],
        bug: None,
    };
    let o = check("three_nodes_two_pages", bounds, 2);
    o.assert_holds(&[
        "a page has several writers at once",
        "a stale copy is still readable",
        "a release waits for a write notice",
        "all programs done",
    ]);
}

/// Atomics order plain data: page 2 is sequentially consistent. Node 0 writes a byte of each
/// release-consistent page (page 0 is its own) and publishes a flag on page 2; node 2 writes a
/// byte of page 0 and publishes another flag. Nodes 1 and 2 read the data of node 0 if they see
/// its flag, node 0 the data of node 2. No lock and no explicit release or acquire before the
/// reads: only the rules that make an SC page's moves a release and an acquire (R1, R2).
#[test]
fn atomics_order_plain_data() {
    let bounds = Bounds {
        nodes: 3,
        pages: 3,
        sc: 2..3,
        programs: vec![
            vec![own(1, 0), own(0, 0), Publish(2, 0), Observe(2, 1), ReadIfSeen(0, 3), Release],
            vec![Observe(2, 0), ReadIfSeen(1, 1), ReadIfSeen(0, 1)],
            vec![own(0, 2), Publish(2, 1), Observe(2, 0), ReadIfSeen(1, 1), Release],
        ],
        bug: None,
    };
    let o = check("atomics_order_plain_data", bounds, 2);
    o.assert_holds(&["a page has several writers at once", "all programs done"]);
}

/// A page in use becomes SC: its home, node 0, converts page 0 (`set_sc`) after a critical
/// section, while the others' critical sections use byte 0 of it and nodes 0 and 2 write their own
/// bytes of it, so the conversion meets dirty copies, stale copies, fetches and diffs in flight.
#[test]
fn conversion_by_the_home() {
    let bounds = Bounds {
        nodes: 3,
        pages: 2,
        sc: 0..0,
        programs: vec![
            vec![own(0, 0), Lock, Write(0, 0), Write(1, 0), Unlock, MakeSc(0), Release],
            vec![Lock, Read(0, 0), Write(0, 0), Unlock],
            vec![own(0, 2), Lock, Read(0, 0), Unlock, Lock, Read(0, 0), Read(1, 0), Unlock, Read(0, 3)],
        ],
        bug: None,
    };
    let o = check("conversion_by_the_home", bounds, 2);
    o.assert_holds(&["a stale copy is still readable", "all programs done"]);
}

/// Node 1 asks page 0's home to make it SC (`MakeSc`) while the lock's critical sections use its
/// byte 0 and nodes 0 and 2 write their own bytes of it.
#[test]
fn conversion_asked_by_another_node() {
    let bounds = Bounds {
        nodes: 3,
        pages: 2,
        sc: 0..0,
        programs: vec![
            vec![own(0, 0), Lock, Write(0, 0), Write(1, 0), Unlock, Release],
            vec![MakeSc(0), Lock, Read(0, 0), Write(0, 0), Unlock],
            vec![own(0, 2), Lock, Read(0, 0), Read(1, 0), Unlock, Read(0, 3)],
        ],
        bug: None,
    };
    let o = check("conversion_asked_by_another_node", bounds, 2);
    o.assert_holds(&["all programs done"]);
}

/// A diff acknowledgement waits for notices of an earlier write to the same page: node 2 holds a
/// copy of page 0; node 0, its home, writes it and releases (a notice to node 2 goes out); node 1
/// writes it too and publishes a flag, which node 2 reads before reading node 1's byte. Node 1's
/// diff draws no notice of its own (node 2 has already left the copyset), so only the earlier,
/// unfinished round keeps node 1's release, and with it the flag, from reaching node 2 before its
/// notice does. (An ack that ignored the earlier round passes the other checks but fails this.)
#[test]
fn diff_ack_waits_for_an_earlier_round() {
    let bounds = Bounds {
        nodes: 3,
        pages: 3,
        sc: 2..3,
        programs: vec![
            vec![own(0, 0), Release],
            vec![own(0, 1), Publish(2, 0), Release],
            vec![Read(0, 3), Observe(2, 0), ReadIfSeen(0, 2)],
        ],
        bug: None,
    };
    let o = check("diff_ack_waits_for_an_earlier_round", bounds, 2);
    o.assert_holds(&["a release waits for a write notice", "all programs done"]);
}

/// The shortest counterexample to `property`, found by iterative deepening: stateright keeps the
/// *last* violating state it meets as the discovery, so a plain run may report a long path. Prints
/// it one step per line.
fn shortest_counterexample(bounds: &Bounds, property: &'static str) -> Vec<Step> {
    for depth in 2..=80 {
        let checker = LrcModel { bounds: bounds.clone() }
            .checker()
            .threads(1)
            .target_max_depth(depth)
            .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([property])))
            .spawn_bfs()
            .join();
        if let Some(path) = checker.discovery(property) {
            let steps = path.into_actions();
            eprintln!("shortest counterexample for {property:?} ({} steps):", steps.len());
            for step in &steps {
                eprintln!("  {step:?}");
            }
            return steps;
        }
    }
    panic!("no counterexample for {property:?} within 78 steps");
}

/// The smallest program that needs write notices: node 2 reads the guarded byte of page 0 in one
/// critical section, node 1 writes it in another, and node 2 reads it again in a third.
fn notice_bounds(bug: Bug) -> Bounds {
    Bounds {
        nodes: 3,
        pages: 1,
        sc: 0..0,
        programs: vec![
            vec![],
            vec![Lock, Write(0, 0), Unlock],
            vec![Lock, Read(0, 0), Unlock, Lock, Read(0, 0), Unlock],
        ],
        bug: Some(bug),
    }
}

/// The steps of the notice scenario up to node 1's release: node 2 fetches page 0 in a critical
/// section; node 1 takes the lock, fetches the page for writing, writes it and unlocks (its diff
/// goes to the home).
fn reader_then_writer() -> Vec<Step> {
    let run = |node, op| Step::Run { node, op };
    let deliver = |from, to| Step::Deliver { from, to };
    vec![
        run(2, Lock),
        run(2, Read(0, 0)),
        deliver(2, 0),
        deliver(0, 2),
        run(2, Read(0, 0)),
        run(2, Unlock),
        run(1, Lock),
        run(1, Write(0, 0)),
        deliver(1, 0),
        deliver(0, 1),
        run(1, Write(0, 0)),
        run(1, Unlock),
        deliver(1, 0),
    ]
}

/// A notice acknowledged without marking the copy stale: the next acquire keeps the old copy.
#[test]
fn finds_notice_without_stale() {
    let bounds = notice_bounds(Bug::NoticeWithoutStale);
    let o = check("finds_notice_without_stale", bounds.clone(), 1);
    for property in [
        "reads return the write that happens before them",
        "every readable copy holds the writes that happen before",
    ] {
        assert!(o.checker.discovery(property).is_some(), "{property}");
    }
    // The home applies the diff and notifies node 2, which acknowledges without marking its copy;
    // the diff ack completes node 1's release, node 2 takes the lock and keeps its old copy.
    let steps = shortest_counterexample(&bounds, "every readable copy holds the writes that happen before");
    let mut expected = reader_then_writer();
    expected.extend([
        Step::Deliver { from: 0, to: 2 },
        Step::Deliver { from: 2, to: 0 },
        Step::Deliver { from: 0, to: 1 },
        Step::Run { node: 2, op: Lock },
    ]);
    assert_eq!(steps, expected);
    let steps = shortest_counterexample(&bounds, "reads return the write that happens before them");
    expected.push(Step::Run { node: 2, op: Read(0, 0) });
    assert_eq!(steps, expected);
}

/// A diff acknowledged before the notices it caused are: the writer's release completes and the
/// lock moves on while the reader's notice is still on its way.
#[test]
fn finds_diff_ack_before_notices() {
    let bounds = notice_bounds(Bug::DiffAckBeforeNotices);
    let o = check("finds_diff_ack_before_notices", bounds.clone(), 1);
    for property in [
        "reads return the write that happens before them",
        "every readable copy holds the writes that happen before",
    ] {
        assert!(o.checker.discovery(property).is_some(), "{property}");
    }
    // The home's ack reaches node 1 before its notice reaches node 2: node 2 takes the lock while
    // its copy still counts as current. Two steps shorter than the other bug's.
    let steps = shortest_counterexample(&bounds, "every readable copy holds the writes that happen before");
    let mut expected = reader_then_writer();
    expected.extend([Step::Deliver { from: 0, to: 1 }, Step::Run { node: 2, op: Lock }]);
    assert_eq!(steps, expected);
    shortest_counterexample(&bounds, "reads return the write that happens before them");
}

/// Parses `LRC_MODEL`: per node a program, nodes separated by `|`, steps by spaces: `rP.B` read,
/// `wP.B` write, `L` lock, `U` unlock, `R` release, `A` acquire, `pP.B` publish, `oP.B` observe,
/// `sP.B` read if seen (page `P`, byte `B`), `cP` make page `P` SC; optional leading `pages=N` and `sc=N` (page `N` and
/// above are SC). E.g. `pages=2 w1.1 L w0.0 U | w1.2 L r0.0 U | L r1.0 U`.
fn bounds_from_env() -> Option<Bounds> {
    let spec = std::env::var("LRC_MODEL").ok()?;
    let mut b = Bounds { nodes: 0, pages: 2, sc: 0..0, programs: vec![Vec::new()], bug: None };
    let at = |t: &str| -> (u8, u8) {
        let (p, b) = t.split_once('.').unwrap_or_else(|| panic!("LRC_MODEL: {t:?} is not PAGE.BYTE"));
        (p.parse().expect("a page"), b.parse().expect("a byte"))
    };
    for token in spec.split_whitespace() {
        let program = b.programs.last_mut().expect("a program");
        let op = match token.split_at(1) {
            ("|", "") => {
                b.programs.push(Vec::new());
                continue;
            }
            _ if token.starts_with("pages=") => {
                b.pages = token["pages=".len()..].parse().expect("pages=N");
                continue;
            }
            _ if token.starts_with("sc=") => {
                b.sc = token["sc=".len()..].parse().expect("sc=N")..u64::MAX;
                continue;
            }
            ("L", "") => Lock,
            ("U", "") => Unlock,
            ("R", "") => Release,
            ("A", "") => Acquire,
            ("r", t) => Read(at(t).0, at(t).1),
            ("w", t) => Write(at(t).0, at(t).1),
            ("p", t) => Publish(at(t).0, at(t).1),
            ("o", t) => Observe(at(t).0, at(t).1),
            ("s", t) => ReadIfSeen(at(t).0, at(t).1),
            ("c", t) => MakeSc(t.parse().expect("a page")),
            _ => panic!("LRC_MODEL: cannot read {token:?}"),
        };
        program.push(op);
    }
    b.nodes = b.programs.len() as u16;
    Some(b)
}

/// Whatever `LRC_MODEL` says (see [`bounds_from_env`]), or by default the lock programs of
/// `three_nodes_two_pages` with more writes and an atomic flag on an SC page 2 next to them (node
/// 0 publishes after its critical section, node 1 reads node 0's byte of page 0 if it sees the
/// flag): 2.7 million states, about a minute and 1.3 GB in release. Run with
/// `cargo test --release -p dsm --lib -- --ignored lrc::model::larger_bounds --nocapture`.
#[test]
#[ignore = "a minute and 1.3 GB in release, far longer in a debug build"]
fn larger_bounds() {
    let bounds = bounds_from_env().unwrap_or(Bounds {
        nodes: 3,
        pages: 3,
        sc: 2..3,
        programs: vec![
            vec![own(1, 0), Lock, Write(0, 0), Write(1, 0), Unlock, own(0, 0), Publish(2, 0), Release],
            vec![own(1, 1), Lock, Read(0, 0), Write(0, 0), Unlock, Observe(2, 0), ReadIfSeen(0, 1), Release],
            vec![
                own(1, 2),
                Lock,
                Read(1, 0),
                Unlock,
                own(0, 2),
                Lock,
                Read(0, 0),
                Read(1, 0),
                Read(1, 3),
                Unlock,
                Release,
            ],
        ],
        bug: None,
    });
    let o = check("larger_bounds", bounds, 2);
    o.assert_holds(&[]);
}

/// A diff acknowledged while its page becomes SC: node 2 still holds a copy it has not been told
/// about (its `Convert` is on the way), so when the writer's release completes and node 2 takes
/// the lock, it reads its old copy.
#[test]
fn finds_diff_ack_during_conversion() {
    let bounds = Bounds {
        nodes: 3,
        pages: 1,
        sc: 0..0,
        programs: vec![
            vec![MakeSc(0)],
            vec![Lock, Write(0, 0), Unlock],
            vec![Lock, Read(0, 0), Unlock, Lock, Read(0, 0), Unlock],
        ],
        bug: Some(Bug::DiffAckDuringConversion),
    };
    let o = check("finds_diff_ack_during_conversion", bounds.clone(), 1);
    assert!(o.checker.discovery("reads return the write that happens before them").is_some());
    // Node 2 fetched the page in a first critical section; node 1 asked for it to write; the home
    // sends it and starts converting the page (Convert to nodes 1 and 2); node 1 writes, unlocks
    // (its diff goes home), gets its Convert; the diff reaches the home, which acks it at once;
    // node 1's release completes, and node 2 takes the lock before its Convert arrives and reads
    // its old copy.
    let steps = shortest_counterexample(&bounds, "reads return the write that happens before them");
    assert_eq!(steps.len(), 18);
    assert_eq!(steps[9], Step::Run { node: 0, op: MakeSc(0) });
}
