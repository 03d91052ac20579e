//! What the release-consistent protocol ([`LrcNode`]) adds to the simulation:
//!
//! * its own rules for effects (a twin only away from the home, a diff applied only at the home)
//!   and its invariants (twins exactly on writable release-consistent copies; sequentially
//!   consistent pages single-writer, their readers holding the same bytes);
//! * [`Program`]: simulated application threads running steps ([`Op`]): reads and writes of single
//!   bytes, locks, releases and acquires, atomics on sequentially consistent pages, `set_sc`. It
//!   keeps the program's happens-before relation in vector clocks (program order, a lock handed
//!   from an unlock that completed to the next lock, an atomic publication observed), stamps every
//!   write with its writer's clock, and checks that every read returns the write that happens
//!   before it (release consistency for data-race-free programs; a read or write that races is
//!   reported as the program's mistake);
//! * its fuzz decoding.

use std::collections::VecDeque;

use super::fuzz::{Event, Fuzzed, Input, page_of};
use super::sc::single_writer_of;
use super::{Batch, Sim, Spec, Violation, Wait};
use crate::protocol::lrc::{LrcConfig, LrcNode, Msg};
use crate::protocol::{Coherence, Effect, Payload, ReleaseId, sc};
use crate::{Access, FaultKind, NodeId, PageId};

impl Spec for LrcNode {
    /// The bytes of a sequentially consistent page only. A release-consistent page may be sent
    /// while its home writes it: those writes reach the copy's holder as a write notice.
    fn final_bytes(msg: &Msg) -> bool {
        matches!(msg, Msg::Sc(_))
    }

    fn quiescent(&self) -> bool {
        self.is_quiescent()
    }

    fn check_effect(sim: &Sim<Self>, node: usize, effect: &Effect<Msg>) -> Result<(), String> {
        let home = |page: PageId| sim.node(node).geometry().home_of(page).index();
        match *effect {
            Effect::Twin { page } if home(page) == node => Err(format!("twins {page} at its home")),
            Effect::ApplyDiff { page } if home(page) != node => {
                Err(format!("applies a diff of {page} away from its home"))
            }
            _ => Ok(()),
        }
    }

    fn invariants(sim: &Sim<Self>) -> Result<(), String> {
        twins_match(sim)?;
        sc_pages_coherent(sim)
    }
}

/// Whether page `p` is release-consistent, as its home sees it.
fn relaxed(sim: &Sim<LrcNode>, p: usize) -> bool {
    !sim.node(sim.home(p)).is_sc(PageId(p as u64))
}

/// A node has a twin of a page exactly when it holds a writable release-consistent copy of it
/// (away from the home, by its own view of the page).
pub fn twins_match(sim: &Sim<LrcNode>) -> Result<(), String> {
    for k in 0..sim.count() {
        for p in 0..sim.pages() {
            let copy = k != sim.home(p) && !sim.node(k).is_sc(PageId(p as u64));
            if sim.twin(k, p).is_some() != (copy && sim.prot(k, p) == Access::Write) {
                return Err(format!("node {k}: the twin and the write access of page {p} disagree"));
            }
        }
    }
    Ok(())
}

/// Pages sequentially consistent at their home have one writer and nobody else, or readers that
/// all hold the same bytes.
pub fn sc_pages_coherent(sim: &Sim<LrcNode>) -> Result<(), String> {
    let sc: Vec<usize> = (0..sim.pages()).filter(|&p| !relaxed(sim, p)).collect();
    single_writer_of(sim, sc.iter().copied())?;
    for &p in &sc {
        let mut readers = (0..sim.count()).filter(|&k| sim.prot(k, p) == Access::Read);
        if let Some(first) = readers.next()
            && let Some(k) = readers.find(|&k| sim.bytes(k, p) != sim.bytes(first, p))
        {
            return Err(format!("SC page {p}: readers {first} and {k} disagree"));
        }
    }
    Ok(())
}

/// One step of a simulated thread. Pages and bytes are small numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read a byte: it must be the write that happens before (the latest, on an SC page).
    Read(u8, u8),
    /// Write a fresh value to a byte.
    Write(u8, u8),
    /// Add one to a byte, with plain instructions.
    Increment(u8, u8),
    /// Add one to a byte with an atomic instruction (it traps as one).
    Atomic(u8, u8),
    /// An atomic increment with release semantics: it publishes the thread's clock.
    Publish(u8, u8),
    /// Read a byte into the thread's register, with acquire semantics when it sees a
    /// publication (not zero).
    Observe(u8, u8),
    /// [`Read`](Op::Read) if the register is not zero (the last `Observe` saw a publication).
    ReadIfSeen(u8, u8),
    /// Read a byte racing with its writer: it must be at least the register (a counter published
    /// after it was raised, observed before).
    ReadAtLeast(u8, u8),
    /// Take a lock (waits while another thread holds it), then acquire.
    Lock(u8),
    /// Release, and hand the lock back once the release completes.
    Unlock(u8),
    /// A release on its own, waited for.
    Release,
    /// An acquire on its own.
    Acquire,
    /// Make a page sequentially consistent ([`LrcNode::set_sc`]).
    MakeSc(u8),
}

/// A write's place in the happens-before order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Stamp {
    /// `None`: the initial value, written by the home before anything runs.
    writer: Option<usize>,
    /// The writer's own clock entry when it wrote.
    epoch: u32,
    /// How many releases the writer had called before: the write is released once that many
    /// plus one are complete.
    call: u32,
}

/// A simulated thread.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Thread {
    /// Its remaining steps, the current one first.
    todo: VecDeque<Op>,
    /// Steps completed.
    pc: u32,
    /// Its release in progress: the id, the lock to hand back, its clock at the call.
    releasing: Option<(ReleaseId, Option<u8>, Vec<u32>)>,
    /// Its register: what the last `Observe` returned.
    seen: u8,
}

/// A lock of the simulated program.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Lock {
    /// The thread holding it: `(node, thread)`.
    holder: Option<(usize, usize)>,
    /// The clock its last unlock published.
    clock: Vec<u32>,
}

/// The application of a simulated LRC cluster: threads running their steps, locks, and the
/// happens-before relation (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Program {
    threads: Vec<Vec<Thread>>,
    /// `clock[k]`: node `k`'s vector clock (threads of one node share their memory, so their
    /// node's clock).
    clock: Vec<Vec<u32>>,
    /// Per page and byte, its latest write.
    stamps: Vec<Stamp>,
    /// Per page and byte, the clock its latest `Publish` carried (empty: none).
    published: Vec<Vec<u32>>,
    locks: Vec<Lock>,
    /// Per node, the releases it has called.
    calls: Vec<u32>,
    /// The last fresh value written; `None`: fresh values come from the writer and its step.
    counter: Option<u8>,
    /// Whether every acquire must see every completed release's writes.
    check_acquires: bool,
    page_size: usize,
}

impl Program {
    /// No steps yet, for the threads of `sim`, with `locks` locks. Fresh values come from a
    /// counter; acquires are not checked beyond happens-before.
    pub fn new(sim: &Sim<LrcNode>, locks: usize) -> Self {
        let n = sim.count();
        let idle = Thread { todo: VecDeque::new(), pc: 0, releasing: None, seen: 0 };
        let bytes = sim.pages() * sim.page_size();
        Program {
            threads: (0..n).map(|k| vec![idle.clone(); sim.threads(k)]).collect(),
            clock: (0..n).map(|k| (0..n).map(|j| u32::from(j == k)).collect()).collect(),
            stamps: vec![Stamp { writer: None, epoch: 0, call: 0 }; bytes],
            published: vec![Vec::new(); bytes],
            locks: vec![Lock { holder: None, clock: vec![0; n] }; locks],
            calls: vec![0; n],
            counter: Some(0),
            check_acquires: false,
            page_size: sim.page_size(),
        }
    }

    /// Fresh values derived from the writer and the step (`(node + 1) << 4 | step`), so that
    /// states do not remember a counter (for model checking, with programs under 16 steps).
    pub fn values_by_step(mut self) -> Self {
        self.counter = None;
        self
    }

    /// Checks at every acquire that every copy the node may read holds every write whose release
    /// has completed (by any node but itself), synchronised with it or not.
    pub fn check_acquires(mut self) -> Self {
        self.check_acquires = true;
        self
    }

    /// Appends `ops` to the steps of thread `t` of `node`.
    pub fn give(&mut self, node: usize, t: usize, ops: impl IntoIterator<Item = Op>) {
        self.threads[node][t].todo.extend(ops);
    }

    /// Whether thread `t` of `node` has nothing left to do or wait for.
    pub fn idle(&self, sim: &Sim<LrcNode>, node: usize, t: usize) -> bool {
        let th = &self.threads[node][t];
        th.todo.is_empty() && th.releasing.is_none() && sim.wait(node, t) == Wait::Run
    }

    /// Whether every thread has finished its steps.
    pub fn finished(&self) -> bool {
        self.threads.iter().flatten().all(|th| th.todo.is_empty())
    }

    /// Whether some thread waits for a release to complete.
    pub fn releasing(&self) -> bool {
        self.threads.iter().flatten().any(|th| th.releasing.is_some())
    }

    /// The step thread `t` of `node` can take now (its next one, or a retry after a wake-up), if
    /// any: not while it waits in a fault or for a release, nor a lock someone holds.
    pub fn next(&self, sim: &Sim<LrcNode>, node: usize, t: usize) -> Option<Op> {
        let th = &self.threads[node][t];
        let op = *th.todo.front()?;
        match sim.wait(node, t) {
            Wait::Fault(..) => None,
            _ if th.releasing.is_some() => None,
            Wait::Run if matches!(op, Op::Lock(l) if self.locks[usize::from(l)].holder.is_some()) => None,
            _ => Some(op),
        }
    }

    /// Thread `t` of `node` takes its next step if it can; returns whether it did.
    pub fn step(&mut self, sim: &mut Sim<LrcNode>, node: usize, t: usize) -> bool {
        let Some(op) = self.next(sim, node, t) else {
            return false;
        };
        let at = |pg: u8| PageId(u64::from(pg));
        let (read, write) = (FaultKind::Read, FaultKind::Write);
        let done = match op {
            Op::Read(pg, b) => {
                sim.access(node, t, at(pg), read, false) && self.read(sim, node, pg, b).is_some()
            }
            Op::ReadIfSeen(pg, b) => {
                self.threads[node][t].seen == 0
                    || (sim.access(node, t, at(pg), read, false) && self.read(sim, node, pg, b).is_some())
            }
            Op::Observe(pg, b) => {
                sim.access(node, t, at(pg), read, false) && {
                    let v = self.read(sim, node, pg, b).unwrap_or(0);
                    self.threads[node][t].seen = v;
                    if v != 0 {
                        let published = self.published[self.byte(pg, b)].clone();
                        join(&mut self.clock[node], &published);
                    }
                    true
                }
            }
            Op::ReadAtLeast(pg, b) => {
                sim.access(node, t, at(pg), read, false) && {
                    let (v, seen) = (sim.bytes(node, pg.into())[usize::from(b)], self.threads[node][t].seen);
                    if v < seen {
                        sim.fail(Violation::Stale(format!(
                            "node {node} saw {seen} published, then {pg}:{b} = {v}"
                        )));
                    }
                    true
                }
            }
            Op::Write(pg, b) => {
                sim.access(node, t, at(pg), write, false) && {
                    let v = self.fresh(node, t);
                    self.write(sim, node, pg, b, v, true);
                    true
                }
            }
            Op::Increment(pg, b) | Op::Atomic(pg, b) | Op::Publish(pg, b) => {
                sim.access(node, t, at(pg), write, op != Op::Increment(pg, b)) && {
                    let v = if op == Op::Atomic(pg, b) {
                        self.read(sim, node, pg, b).unwrap_or(0)
                    } else {
                        sim.bytes(node, pg.into())[usize::from(b)]
                    };
                    self.write(sim, node, pg, b, v.wrapping_add(1), true);
                    if op == Op::Publish(pg, b) {
                        let i = self.byte(pg, b);
                        self.published[i] = self.clock[node].clone();
                        self.clock[node][node] += 1;
                    }
                    true
                }
            }
            Op::Lock(l) => {
                let lock = &mut self.locks[usize::from(l)];
                lock.holder = Some((node, t));
                let published = lock.clock.clone();
                join(&mut self.clock[node], &published);
                self.acquire(sim, node);
                true
            }
            Op::Unlock(l) => {
                if self.locks[usize::from(l)].holder != Some((node, t)) {
                    sim.fail(Violation::Race(format!(
                        "node {node} unlocks lock {l}, which it does not hold"
                    )));
                }
                self.release_for(sim, node, t, Some(l));
                false
            }
            Op::Release => {
                self.release_for(sim, node, t, None);
                false
            }
            Op::Acquire => {
                self.acquire(sim, node);
                true
            }
            Op::MakeSc(pg) => {
                sim.call(node, |n, out| n.set_sc(at(pg), out));
                true
            }
        };
        if done {
            self.advance(node, t);
        }
        self.settle(sim);
        true
    }

    /// Thread `t` of `node` is done with its current step.
    fn advance(&mut self, node: usize, t: usize) {
        let th = &mut self.threads[node][t];
        th.todo.pop_front();
        th.pc += 1;
    }

    /// Completes the releases `sim` has reported: a thread waiting for one goes on, handing its
    /// lock back (with the clock it had at the release).
    pub fn settle(&mut self, sim: &Sim<LrcNode>) {
        for node in 0..self.threads.len() {
            for t in 0..self.threads[node].len() {
                let Some((_, lock, clock)) =
                    self.threads[node][t].releasing.take_if(|r| sim.released(node, r.0))
                else {
                    continue;
                };
                if let Some(l) = lock {
                    let lock = &mut self.locks[usize::from(l)];
                    lock.holder = None;
                    join(&mut lock.clock, &clock);
                }
                self.advance(node, t);
            }
        }
    }

    /// A release of `node` for thread `t` (handing `lock` back when it completes).
    fn release_for(&mut self, sim: &mut Sim<LrcNode>, node: usize, t: usize, lock: Option<u8>) {
        let clock = self.clock[node].clone();
        if lock.is_some() {
            // Later writes are not covered by this release: a new epoch.
            self.clock[node][node] += 1;
        }
        let (id, _) = self.release(sim, node);
        self.threads[node][t].releasing = Some((id.unwrap_or(ReleaseId(u64::MAX)), lock, clock));
    }

    /// A release at `node`, on no thread's behalf: its id and effects.
    pub fn release(&mut self, sim: &mut Sim<LrcNode>, node: usize) -> (Option<ReleaseId>, Batch<Msg>) {
        self.calls[node] += 1;
        sim.release(node)
    }

    /// An acquire at `node`, checked (see [`check_acquires`](Self::check_acquires)); its effects.
    pub fn acquire(&mut self, sim: &mut Sim<LrcNode>, node: usize) -> Batch<Msg> {
        let out = sim.acquire(node);
        if !self.check_acquires {
            return out;
        }
        let copies: Vec<usize> =
            (0..sim.pages()).filter(|&p| relaxed(sim, p) && sim.prot(node, p) != Access::None).collect();
        for p in copies {
            for b in 0..self.page_size {
                let w = self.stamps[p * self.page_size + b];
                let released = match w.writer {
                    None => true,
                    Some(j) => j != node && w.call < self.calls[j] - sim.outstanding(j) as u32,
                };
                if released && sim.bytes(node, p)[b] != sim.latest(p)[b] {
                    let who = w.writer;
                    sim.fail(Violation::Stale(format!(
                        "node {node} acquired but holds a stale byte {p}:{b} written by {who:?}"
                    )));
                }
            }
        }
        out
    }

    fn byte(&self, pg: u8, b: u8) -> usize {
        usize::from(pg) * self.page_size + usize::from(b)
    }

    /// A fresh value for a write of thread `t` of `node`.
    fn fresh(&mut self, node: usize, t: usize) -> u8 {
        match &mut self.counter {
            Some(c) => {
                *c = c.wrapping_add(1);
                *c
            }
            None => ((node as u8 + 1) << 4) | (self.threads[node][t].pc as u8 & 15),
        }
    }

    /// Whether write `w` happens before the current point of `node`.
    fn before(&self, w: Stamp, node: usize) -> bool {
        w.writer.is_none_or(|j| w.epoch <= self.clock[node][j])
    }

    /// A read of byte `b` of page `pg` by `node`, allowed by the protection: it must return the
    /// write that happens before it, or on an SC page the latest. Returns the value (`None`
    /// after a violation).
    pub fn read(&self, sim: &mut Sim<LrcNode>, node: usize, pg: u8, b: u8) -> Option<u8> {
        let (p, i) = (usize::from(pg), self.byte(pg, b));
        let w = self.stamps[i];
        let (saw, latest) = (sim.bytes(node, p)[usize::from(b)], sim.latest(p)[usize::from(b)]);
        if relaxed(sim, p) && !self.before(w, node) {
            sim.fail(Violation::Race(format!(
                "node {node} reads {pg}:{b} concurrently with its write {w:?}"
            )));
        } else if saw != latest {
            sim.fail(Violation::Stale(format!(
                "node {node} reads {pg}:{b} = {saw}, the write before it is {latest}"
            )));
        }
        sim.violation().is_none().then_some(saw)
    }

    /// A write of `value` to byte `b` of page `pg` by `node`, allowed by the protection;
    /// `checked`: a write racing with the previous one is the program's mistake.
    pub fn write(&mut self, sim: &mut Sim<LrcNode>, node: usize, pg: u8, b: u8, value: u8, checked: bool) {
        let (p, i) = (usize::from(pg), self.byte(pg, b));
        let prev = self.stamps[i];
        if checked && relaxed(sim, p) && !self.before(prev, node) {
            sim.fail(Violation::Race(format!("node {node} writes {pg}:{b} concurrently with {prev:?}")));
        }
        sim.store(node, p, usize::from(b), &[value]);
        self.stamps[i] = Stamp { writer: Some(node), epoch: self.clock[node][node], call: self.calls[node] };
    }

    /// Every copy of a release-consistent page that a node may read holds every write that
    /// happens before the node's current point (on every byte, read or not).
    pub fn copies_hold_history(&self, sim: &Sim<LrcNode>) -> Result<(), String> {
        for k in 0..sim.count() {
            // Only pages that differ from the latest bytes can lack a write.
            let differ = |&p: &usize| sim.prot(k, p) != Access::None && sim.bytes(k, p) != sim.latest(p);
            for p in (0..sim.pages()).filter(differ).filter(|&p| relaxed(sim, p)) {
                for b in 0..self.page_size {
                    let w = self.stamps[p * self.page_size + b];
                    if self.before(w, k) && sim.bytes(k, p)[b] != sim.latest(p)[b] {
                        return Err(format!("node {k} may read {p}:{b}, which lacks {w:?}"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// At the end: every home holds the latest bytes of its release-consistent pages (or, for a page
/// handed over, the owner does, and the home's copy is closed), and every copy that is not stale
/// equals them; every readable copy of an SC page holds the latest bytes.
pub fn agree(sim: &Sim<LrcNode>) -> bool {
    (0..sim.pages()).all(|p| {
        let home = sim.home(p);
        let current = |k: usize, bytes: &[u8]| sim.prot(k, p) == Access::None || sim.bytes(k, p) == bytes;
        if !relaxed(sim, p) {
            return (0..sim.count()).all(|k| current(k, sim.latest(p)));
        }
        let holder = sim.node(home).owner(PageId(p as u64)).map_or(home, NodeId::index);
        sim.bytes(holder, p) == sim.latest(p)
            && (0..sim.count()).all(|k| {
                k == holder || sim.node(k).is_stale(PageId(p as u64)) || current(k, sim.bytes(holder, p))
            })
    })
}

/// Joins clock `from` into `into`.
fn join(into: &mut [u32], from: &[u32]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a = (*a).max(*b);
    }
}

/// A message of any kind about `page`: `tag` picks the kind; `arg` the count, access and
/// flags; `seq` the sequence number and the inner SC message.
pub fn any_msg(tag: u8, page: PageId, arg: u8, seq: u8) -> Msg {
    let count = u16::from(arg % 4) + if arg & 0x80 != 0 { 62 } else { 0 };
    let seq8 = u64::from(seq % 8);
    match tag % 15 {
        0 => Msg::Fetch { page, count },
        1 => Msg::Page { page },
        2 => Msg::ScPage { page },
        3 => Msg::Diff { page, seq: seq8 },
        4 => Msg::DiffAck { page, seq: seq8 },
        5 => Msg::Notice { page },
        6 => Msg::NoticeAck { page },
        7 => Msg::MakeSc { page },
        8 => Msg::Convert { page },
        9 => Msg::ConvertAck { page },
        10 => Msg::Sc(sc::Msg::ReadReq { page }),
        12 => Msg::Own { page },
        13 => Msg::Pull { page, count },
        14 => Msg::Yield { page, seq: seq8 },
        // The SC protocol's kinds but its read request, with `arg`'s access and its bit 6 as flag.
        _ => Msg::Sc(super::sc::any_msg((seq8 % 6 + 1) as u8, page, arg, arg & 0x40 != 0)),
    }
}

/// 1–4 nodes, 1–3 pages per node, prefetch 0–3, pages handed over to writers after 0 (never), 1
/// or 2 diffs, copies refreshed at notices or not, maybe an SC page from the start (the first three bytes); events by `tag % 12`: faults (0–1), application writes (2), acquires (3),
/// releases (4), `set_sc` (5), deliveries (6–9, a diff damaged on the way when the tag's top bit
/// is set), garbage (10), lone diffs (11).
impl Fuzzed for LrcNode {
    const PAGE: usize = 16;

    fn cluster(input: &mut Input<'_>) -> Option<Vec<Self>> {
        let (a, b, c) = (input.byte()?, input.byte()?, input.byte()?);
        let count = 1 + u16::from(a % 4);
        let per_node = 1 + u64::from(b % 3);
        let pages = u64::from(count) * per_node;
        let mut config = LrcConfig::default()
            .with_prefetch(u16::from(c & 3))
            .with_adaptive(u16::from((a >> 2) % 4) * 2)
            .with_own_after((b >> 2) % 3)
            .with_refresh(b & 0x40 != 0);
        if c & 4 != 0 {
            let first = u64::from(c >> 3) % pages;
            config = config.with_sc_pages(first..first + 1);
        }
        Some((0..count).map(|i| LrcNode::new(NodeId(i), count, per_node, config.clone())).collect())
    }

    fn event(tag: u8) -> Event {
        match tag % 12 {
            0 | 1 => Event::Fault,
            2 => Event::Write,
            3 => Event::Acquire,
            4 => Event::Release,
            5 => Event::Special,
            6..=9 => Event::Deliver { damage: tag & 0x80 != 0 },
            10 => Event::Garbage,
            _ => Event::Diff,
        }
    }

    fn garbage(input: &mut Input<'_>, pages: u64) -> Option<(Msg, Option<Vec<u8>>)> {
        let (t, p, arg, seq) = (input.byte()?, input.byte()?, input.byte()?, input.byte()?);
        let msg = any_msg(t, page_of(p, pages), arg, seq);
        let payload = match msg.payload() {
            Payload::None => None,
            Payload::Page => Some(vec![arg; Self::PAGE]),
            Payload::Diff => Some((0..seq % 8).filter_map(|_| input.byte()).collect()),
        };
        Some((msg, payload))
    }

    /// `set_sc` of `page`: nothing for a page outside the space.
    fn special(sim: &mut Sim<Self>, node: usize, page: PageId) {
        let out = sim.call(node, |n, out| n.set_sc(page, out));
        assert!(
            sim.node(node).geometry().in_range(page) || out.is_empty(),
            "set_sc of out-of-range {page} emitted {out:?}"
        );
    }
}
