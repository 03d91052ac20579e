//! A simulated cluster: the one stand-in for the runtime under which the unit tests, the model
//! checks and the fuzz targets run the real protocol code, whatever the protocol.
//!
//! [`Sim`] holds, for any [`Coherence`] protocol, what the runtime holds around it:
//!
//! * the nodes' protocol states;
//! * per ordered pair of nodes a FIFO link (TCP), each message with its payload (page bytes or a
//!   diff); links of different pairs are independent, so a schedule may deliver the head of any
//!   non-empty link next;
//! * per node and page the page's bytes (pages of a few bytes), a twin, and the protection the
//!   application sees, which only `Protect` effects change; per page the latest bytes written
//!   anywhere, the reference that reads are checked against;
//! * simulated application threads: each runs, or waits in a fault for a `Wake` of its page;
//! * the releases called and not yet reported complete.
//!
//! It carries out the effects of every call the way the runtime does, and checks on the way the
//! contract documented on [`Effect`]: sends go to peers; a page's bytes are read when the send is
//! carried out, and a diff is computed from the twin then (and the twin dropped); `Install` and
//! `ApplyDiff` only while handling a message that carries that page's bytes or diff; `Install` on a
//! closed page, opened by a later `Protect` unless at the home or the protocol keeps it closed
//! (access `None`: opened when a thread traps on it); `Twin` of an at most readable page
//! without a twin; `Released` once per release, in call order; after every call the protection of
//! every page equals what the protocol says ([`Coherence::access`]); a fault outside the space
//! emits nothing. What only one protocol promises is plugged in through [`Spec`] (see `sc.rs` and
//! `lrc.rs`), and so are the application programs the harnesses run.
//!
//! A broken promise is a [`Violation`]. A strict simulation (unit tests, fuzzing) panics at once
//! with it; otherwise (model checking) it is recorded and the state is terminal.
//!
//! Compiled for this crate's tests and with the `sim` feature (which `fuzzing` enables).

use std::collections::VecDeque;
use std::fmt::{self, Debug};
use std::hash::{Hash, Hasher};

use crate::protocol::lrc::diff;
use crate::protocol::{Coherence, Effect, Message, Payload, ProtocolError, ReleaseId};
use crate::{Access, FaultKind, NodeId, PageId};

pub mod expect;
pub mod fuzz;
pub mod lrc;
#[cfg(test)]
pub mod model;
pub mod rng;
pub mod sc;

/// What a node's memory holds for a page it never received.
pub const POISON: u8 = 0xEE;

/// What a protocol adds to the simulation: its own promises, as small checks.
pub trait Spec: Coherence<Msg: Hash> + Clone + Debug + Eq + Hash {
    /// Whether the page bytes that travel with `msg` must be read while the page is not writable
    /// at the sender (else a local write could land after they were read and be lost).
    fn final_bytes(msg: &Self::Msg) -> bool;

    /// Nothing in progress at this node: no request, transaction, fetch or release outstanding.
    fn quiescent(&self) -> bool;

    /// Checks one effect of `node` before it is carried out, beyond the contract every protocol
    /// shares. A failure is a contract violation.
    fn check_effect(sim: &Sim<Self>, node: usize, effect: &Effect<Self::Msg>) -> Result<(), String> {
        let _ = (sim, node, effect);
        Ok(())
    }

    /// What holds in every state a correct run reaches (checked between calls when enabled, see
    /// [`Sim::check_invariants`]).
    fn invariants(sim: &Sim<Self>) -> Result<(), String>;
}

/// A broken promise, found in the step that led to the current state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Violation {
    /// A node rejected a message a correct peer sent.
    Rejected(String),
    /// The runtime's contract with the protocol was broken.
    Contract(String),
    /// A read returned another value than the consistency model allows.
    Stale(String),
    /// The simulated program races (a mistake of the harness, not of the protocol).
    Race(String),
    /// A protocol invariant ([`Spec::invariants`]) does not hold.
    Invariant(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, text) = match self {
            Violation::Rejected(t) => ("message rejected", t),
            Violation::Contract(t) => ("runtime contract broken", t),
            Violation::Stale(t) => ("stale read", t),
            Violation::Race(t) => ("data race in the simulated program", t),
            Violation::Invariant(t) => ("invariant broken", t),
        };
        write!(f, "{what}: {text}")
    }
}

/// What a simulated application thread is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wait {
    /// Running (or idle).
    Run,
    /// Trapped on the page wanting `kind`, waiting for a `Wake` of it.
    Fault(PageId, FaultKind),
    /// Woken after a trap: it will retry its access.
    Woken(PageId, FaultKind),
}

/// A message on a link, with what travels next to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Packet<M> {
    /// The message.
    pub msg: M,
    /// The page's bytes or the diff ([`Message::payload`]), `None` for neither.
    pub payload: Option<Vec<u8>>,
    /// A direct read's request ([`Sim::direct_read`]): its answer travels apart.
    pub direct: bool,
}

/// What happened, for tests that count messages; off unless [`Sim::record`] turns it on. Not
/// part of the simulated state: every two logs compare equal and hash alike, so model checking
/// never tells states apart by their history.
#[derive(Clone, Debug)]
pub struct Log<M> {
    on: bool,
    /// Messages sent, in order.
    pub sent: Vec<M>,
    /// Messages handled, in order, with their receiver.
    pub delivered: Vec<(NodeId, M)>,
    /// Pages installed, in order, with the node.
    pub installed: Vec<(NodeId, PageId)>,
}

impl<M> PartialEq for Log<M> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<M> Eq for Log<M> {}

impl<M> Hash for Log<M> {
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

/// A mistake in the runtime's side of direct reads, planted to show the model checks find it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DirectMistake {
    /// Messages about a page whose direct read is out are handled at once instead of held.
    NoHold,
    /// The request overtakes what the node sent the home before it.
    Unordered,
}

/// What a node holds while a direct read of the page is out (see [`Sim::direct_read`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Held<M> {
    /// A message from a node.
    Msg(usize, Packet<M>),
    /// A fault of a local thread: page, kind, atomic.
    Fault(PageId, FaultKind, bool),
}

impl<M: Message> Held<M> {
    fn page(&self) -> PageId {
        match self {
            Held::Msg(_, p) => p.msg.page(),
            Held::Fault(page, ..) => *page,
        }
    }
}

/// The effects one call emitted, in order.
pub type Batch<M> = Vec<Effect<M>>;

/// A simulated cluster running protocol `P` (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sim<P: Spec> {
    nodes: Vec<P>,
    /// `links[from * n + to]`, FIFO.
    links: Vec<VecDeque<Packet<P::Msg>>>,
    /// Pages simulated: `0..pages`.
    pages: usize,
    page_size: usize,
    /// Node `k`'s bytes of page `p` at `(k * pages + p) * page_size`.
    mem: Vec<u8>,
    /// `twins[k * pages + p]`.
    twins: Vec<Option<Vec<u8>>>,
    /// `prot[k * pages + p]`: what node `k`'s threads may do with page `p`.
    prot: Vec<Access>,
    /// The latest bytes written anywhere, page after page.
    latest: Vec<u8>,
    /// `waits[k][t]`: thread `t` of node `k`.
    waits: Vec<Vec<Wait>>,
    /// Per node, the releases called and not yet reported complete, in call order.
    releases: Vec<VecDeque<ReleaseId>>,
    /// A mistake planted in the direct reads (see [`Sim::plant_direct_mistake`]).
    direct_mistake: Option<DirectMistake>,
    /// Direct reads out, as `(node, page)` (see [`Sim::direct_read`]).
    direct: Vec<(usize, u64)>,
    /// Direct read requests a home has handled and not answered yet: `(home, requester, page)`.
    routes: Vec<(usize, usize, u64)>,
    /// Answers to direct reads on their way, with their receiver, in no particular order.
    answers: Vec<(usize, Packet<P::Msg>)>,
    /// What a node holds until its direct read of the page ends, in arrival order.
    held: Vec<(usize, Held<P::Msg>)>,
    violation: Option<Violation>,
    strict: bool,
    invariants: bool,
    /// What happened (off unless asked for).
    pub log: Log<P::Msg>,
}

impl<P: Spec> Sim<P> {
    /// A cluster of `nodes` (node `i` at index `i`), simulating pages `0..pages` of `page_size`
    /// bytes, with `threads[k]` application threads on node `k`. Each page starts as zeros at its
    /// home and [`POISON`] elsewhere, with the protections the protocol gives. Strict, checking
    /// invariants, not recording.
    ///
    /// # Panics
    /// If there are no nodes, `threads` has not one entry per node, or `pages` exceeds the space.
    pub fn new(nodes: Vec<P>, pages: usize, page_size: usize, threads: &[usize]) -> Self {
        let count = nodes.len();
        assert!(count > 0 && threads.len() == count, "one thread count per node");
        assert!(pages as u64 <= nodes[0].geometry().page_count(), "pages outside the space");
        let mut mem = vec![POISON; count * pages * page_size];
        let mut prot = vec![Access::None; count * pages];
        for (k, node) in nodes.iter().enumerate() {
            for p in 0..pages {
                prot[k * pages + p] = node.access(PageId(p as u64));
                if node.geometry().is_home(PageId(p as u64)) {
                    let at = (k * pages + p) * page_size;
                    mem[at..at + page_size].fill(0);
                }
            }
        }
        Sim {
            links: vec![VecDeque::new(); count * count],
            twins: vec![None; count * pages],
            latest: vec![0; pages * page_size],
            waits: threads.iter().map(|&t| vec![Wait::Run; t]).collect(),
            releases: vec![VecDeque::new(); count],
            nodes,
            pages,
            page_size,
            mem,
            prot,
            direct_mistake: None,
            direct: Vec::new(),
            routes: Vec::new(),
            answers: Vec::new(),
            held: Vec::new(),
            violation: None,
            strict: true,
            invariants: true,
            log: Log { on: false, sent: Vec::new(), delivered: Vec::new(), installed: Vec::new() },
        }
    }

    /// Records violations instead of panicking (for model checking, where a violating state is a
    /// finding).
    pub fn lenient(mut self) -> Self {
        self.strict = false;
        self
    }

    /// Keeps a [`Log`] of what happens.
    pub fn record(mut self) -> Self {
        self.log.on = true;
        self
    }

    /// Whether [`Spec::invariants`] are checked after every call (on by default; off for model
    /// checking, whose properties check them, and for a fuzzed cluster once garbage got in).
    pub fn check_invariants(&mut self, on: bool) {
        self.invariants = on;
    }

    // ----- what the simulation holds -----

    /// The nodes' protocol states.
    pub fn nodes(&self) -> &[P] {
        &self.nodes
    }

    /// The nodes' protocol states, to plant mistakes in (tests only: changing a node's state
    /// behind the simulation's back breaks what it checks).
    pub fn nodes_mut(&mut self) -> &mut [P] {
        &mut self.nodes
    }

    /// Node `k`'s protocol state.
    pub fn node(&self, k: usize) -> &P {
        &self.nodes[k]
    }

    /// How many nodes.
    pub fn count(&self) -> usize {
        self.nodes.len()
    }

    /// How many pages are simulated.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Bytes per simulated page.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The home of page `p`.
    pub fn home(&self, p: usize) -> usize {
        self.nodes[0].geometry().home_of(PageId(p as u64)).index()
    }

    /// Node `k`'s bytes of page `p`.
    pub fn bytes(&self, k: usize, p: usize) -> &[u8] {
        let at = (k * self.pages + p) * self.page_size;
        &self.mem[at..at + self.page_size]
    }

    fn bytes_mut(&mut self, k: usize, p: usize) -> &mut [u8] {
        let at = (k * self.pages + p) * self.page_size;
        &mut self.mem[at..at + self.page_size]
    }

    /// The latest bytes of page `p` written anywhere.
    pub fn latest(&self, p: usize) -> &[u8] {
        &self.latest[p * self.page_size..(p + 1) * self.page_size]
    }

    /// Node `k`'s twin of page `p`, if it has one.
    pub fn twin(&self, k: usize, p: usize) -> Option<&[u8]> {
        self.twins[k * self.pages + p].as_deref()
    }

    /// What node `k`'s threads may do with page `p`.
    pub fn prot(&self, k: usize, p: usize) -> Access {
        self.prot[k * self.pages + p]
    }

    /// What thread `t` of node `k` is doing.
    pub fn wait(&self, k: usize, t: usize) -> Wait {
        self.waits[k][t]
    }

    /// How many threads node `k` has.
    pub fn threads(&self, k: usize) -> usize {
        self.waits[k].len()
    }

    /// The violation found so far, if any.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Reports `violation`: panics in a strict simulation, else keeps the first one.
    pub fn fail(&mut self, violation: Violation) {
        assert!(!self.strict, "{violation}");
        self.violation.get_or_insert(violation);
    }

    /// Whether node `k`'s release `id` has been reported complete (or was never outstanding).
    pub fn released(&self, k: usize, id: ReleaseId) -> bool {
        !self.releases[k].contains(&id)
    }

    /// How many of node `k`'s releases are outstanding.
    pub fn outstanding(&self, k: usize) -> usize {
        self.releases[k].len()
    }

    /// Nothing in progress anywhere: no message in flight, every node quiescent, every thread
    /// running, every release reported.
    pub fn quiescent(&self) -> bool {
        self.links.iter().all(VecDeque::is_empty)
            && self.direct.is_empty()
            && self.answers.is_empty()
            && self.held.is_empty()
            && self.nodes.iter().all(P::quiescent)
            && self.waits.iter().flatten().all(|w| *w == Wait::Run)
            && self.releases.iter().all(VecDeque::is_empty)
    }

    // ----- links -----

    /// The index of link `from -> to`.
    pub fn link(&self, from: usize, to: usize) -> usize {
        from * self.count() + to
    }

    /// The links with messages on them, in index order.
    pub fn busy(&self) -> Vec<usize> {
        (0..self.links.len()).filter(|&l| !self.links[l].is_empty()).collect()
    }

    /// The messages on link `from -> to`, oldest first.
    pub fn in_flight(&self, from: usize, to: usize) -> impl Iterator<Item = &Packet<P::Msg>> {
        self.links[self.link(from, to)].iter()
    }

    /// Takes the oldest message off `link` (for a harness that damages it on the way).
    pub fn pop(&mut self, link: usize) -> Option<Packet<P::Msg>> {
        self.links[link].pop_front()
    }

    /// Delivers the oldest message on link `from -> to` and carries out what the receiver does;
    /// a rejection, or a diff the runtime would refuse, is a violation. Returns the receiver's
    /// effects.
    ///
    /// # Panics
    /// If the link is empty.
    pub fn deliver(&mut self, from: usize, to: usize) -> Batch<P::Msg> {
        let link = self.link(from, to);
        let packet = self.links[link].pop_front().unwrap_or_else(|| panic!("nothing on link {from} -> {to}"));
        if self.direct.contains(&(to, packet.msg.page().0))
            && self.direct_mistake != Some(DirectMistake::NoHold)
        {
            // The receiver's runtime holds what concerns a page while a direct read of it is out.
            self.held.push((to, Held::Msg(from, packet)));
            return Vec::new();
        }
        if packet.direct {
            self.routes.push((to, from, packet.msg.page().0));
        }
        self.handle_packet(from, to, packet)
    }

    /// Hands `packet` from `from` to node `to` and carries out what it does.
    fn handle_packet(&mut self, from: usize, to: usize, packet: Packet<P::Msg>) -> Batch<P::Msg> {
        if let (Payload::Diff, Some(d)) = (packet.msg.payload(), &packet.payload)
            && let Err(e) = diff::validate(d, self.page_size)
        {
            self.fail(Violation::Contract(format!("node {from} sent a diff the runtime refuses: {e}")));
            return Vec::new();
        }
        let mut out = Vec::new();
        match self.nodes[to].handle(NodeId(from as u16), packet.msg, &mut out) {
            Ok(()) => self.done(to, &out, Some(&packet)),
            Err(e) => self.fail(Violation::Rejected(format!("node {to}: {e}"))),
        }
        out
    }

    /// Delivers the oldest message of `link` (see [`deliver`](Self::deliver)).
    pub fn deliver_link(&mut self, link: usize) -> Batch<P::Msg> {
        let n = self.count();
        self.deliver(link / n, link % n)
    }

    /// Delivers everything in flight, the oldest message of the first busy link first, until
    /// every link is empty.
    pub fn pump(&mut self) {
        for _ in 0..100_000 {
            match self.busy().first() {
                Some(&link) => self.deliver_link(link),
                None => return,
            };
            if self.violation.is_some() {
                return;
            }
        }
        self.fail(Violation::Contract("messages never stop".into()));
    }

    /// Hands `to` a message `msg` (with `payload`) from `from`, which may be garbage: a rejection
    /// must leave the node and the output untouched (else a contract violation). Returns whether
    /// it was accepted (and its effects carried out).
    pub fn offer(&mut self, to: usize, from: NodeId, msg: P::Msg, payload: Option<Vec<u8>>) -> bool {
        let before = self.nodes[to].clone();
        let mut out = Vec::new();
        match self.nodes[to].handle(from, msg, &mut out) {
            Ok(()) => {
                self.done(to, &out, Some(&Packet { msg, payload, direct: false }));
                true
            }
            Err(e) => {
                if e.reason().is_empty() || !out.is_empty() || self.nodes[to] != before {
                    self.fail(Violation::Contract(format!(
                        "node {to} rejected {msg:?} from {from} ({e}) but emitted {out:?} or changed"
                    )));
                }
                false
            }
        }
    }

    // ----- direct reads -----

    /// A thread of `node` reads `page` directly (`dsm::fault::direct`): if the protocol says a
    /// direct read may start ([`Coherence::fetchable`]), its request goes on the link to the home,
    /// after what the node sent before, as the runtime orders it; the home handles it as the
    /// protocol's ordinary request, and its grant comes back apart ([`Sim::direct_answers`]).
    /// Returns whether the read started.
    pub fn direct_read(&mut self, node: usize, page: PageId) -> bool {
        let n = &self.nodes[node];
        let Some(msg) = n.direct_read_request(page).filter(|_| n.fetchable(page)) else { return false };
        if self.direct.contains(&(node, page.0)) {
            return false;
        }
        let home = n.geometry().home_of(page).index();
        let link = self.link(node, home);
        let packet = Packet { msg, payload: None, direct: true };
        if self.direct_mistake == Some(DirectMistake::Unordered) {
            self.links[link].push_front(packet);
        } else {
            self.links[link].push_back(packet);
        }
        self.direct.push((node, page.0));
        true
    }

    /// Plants `mistake` in the runtime's side of direct reads (for tests that the checks find it).
    pub fn plant_direct_mistake(&mut self, mistake: DirectMistake) {
        self.direct_mistake = Some(mistake);
    }

    /// The answers to direct reads on their way: `(receiver, page)`, by index.
    pub fn direct_answers(&self) -> impl Iterator<Item = (usize, PageId)> + '_ {
        self.answers.iter().map(|(to, p)| (*to, p.msg.page()))
    }

    /// How many messages nodes hold for their direct reads.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Answer `i` of [`Sim::direct_answers`] arrives: the reading thread copies the bytes in and
    /// opens the page for reading, the protocol is told ([`Coherence::absorb_direct_read`]), and
    /// what the node held for the page is handled, in arrival order.
    pub fn direct_answer(&mut self, i: usize) {
        let (node, packet) = self.answers.remove(i);
        let page = packet.msg.page();
        let (p, at) = (page.0 as usize, node * self.pages + page.0 as usize);
        let Some(d) = self.direct.iter().position(|&x| x == (node, page.0)) else {
            return self
                .fail(Violation::Contract(format!("node {node}: an answer to no direct read of {page}")));
        };
        let bytes = match packet.payload {
            Some(b) if b.len() == self.page_size && self.prot[at] == Access::None => b,
            _ => {
                return self.fail(Violation::Contract(format!(
                    "node {node}: a direct read of {page} without its bytes, or into an open page"
                )));
            }
        };
        self.direct.remove(d);
        self.bytes_mut(node, p).copy_from_slice(&bytes);
        self.prot[at] = Access::Read;
        if let Err(e) = self.nodes[node].absorb_direct_read(page) {
            return self.fail(Violation::Rejected(format!("node {node}: {e}")));
        }
        self.done(node, &[], None);
    }

    /// Handles, in arrival order, what `node` held while its direct read of `page` was out (call
    /// after [`Sim::direct_answer`]).
    pub fn release_held(&mut self, node: usize, page: PageId) {
        if self.direct.contains(&(node, page.0)) {
            return;
        }
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].0 == node && self.held[i].1.page() == page {
                match self.held.remove(i).1 {
                    Held::Msg(from, packet) => drop(self.handle_packet(from, node, packet)),
                    Held::Fault(page, kind, atomic) => drop(self.fault(node, page, kind, atomic)),
                }
            } else {
                i += 1;
            }
        }
    }

    /// Whether a grant of `page` to `node` travels on a direct connection.
    pub fn answering(&self, node: usize, page: PageId) -> bool {
        self.answers.iter().any(|(k, pk)| *k == node && pk.msg.page() == page)
    }

    // ----- local calls -----

    /// A local thread of `node` trapped on `page` (`atomic`: with an atomic instruction): the
    /// protocol's answer, carried out. A fault outside the space must emit nothing.
    pub fn fault(&mut self, node: usize, page: PageId, kind: FaultKind, atomic: bool) -> Batch<P::Msg> {
        if self.direct.contains(&(node, page.0)) {
            // The runtime holds the fault until the direct read of the page ends.
            self.held.push((node, Held::Fault(page, kind, atomic)));
            return Vec::new();
        }
        let mut out = Vec::new();
        let direct = &self.direct;
        // A read-ahead never asks for a page a direct read has.
        let mut claim = |q: PageId| !direct.contains(&(node, q.0));
        self.nodes[node].fault_claiming(page, kind, atomic, &mut out, &mut claim);
        if !self.nodes[node].geometry().in_range(page) && !out.is_empty() {
            self.fail(Violation::Contract(format!("node {node}: a fault outside the space emitted {out:?}")));
        }
        self.done(node, &out, None);
        out
    }

    /// A release at `node`: its id (`None`: nothing to do, complete at once) and effects.
    pub fn release(&mut self, node: usize) -> (Option<ReleaseId>, Batch<P::Msg>) {
        let mut out = Vec::new();
        let id = self.nodes[node].release(&mut out);
        if let Some(id) = id {
            self.releases[node].push_back(id);
        }
        self.done(node, &out, None);
        (id, out)
    }

    /// An acquire at `node`.
    pub fn acquire(&mut self, node: usize) -> Batch<P::Msg> {
        let mut out = Vec::new();
        self.nodes[node].acquire(&mut out);
        self.done(node, &out, None);
        out
    }

    /// A barrier arrival of `node` ([`Coherence::drop_copies`]), its effects carried out; a page
    /// a direct read of this node has is refused to it, as the runtime does.
    pub fn arrive(&mut self, node: usize) -> Batch<P::Msg> {
        let mut out = Vec::new();
        let direct = &self.direct;
        let mut claim = |q: PageId| !direct.contains(&(node, q.0));
        let arrivals = self.nodes[node].barrier_arrivals() + 1;
        self.nodes[node].note_arrivals(arrivals, &mut out);
        self.nodes[node].drop_copies(&mut out, &mut claim);
        self.done(node, &out, None);
        out
    }

    /// Any other local call of `node`'s protocol (`set_sc`, say), its effects carried out.
    pub fn call(&mut self, node: usize, f: impl FnOnce(&mut P, &mut Batch<P::Msg>)) -> Batch<P::Msg> {
        let mut out = Vec::new();
        f(&mut self.nodes[node], &mut out);
        self.done(node, &out, None);
        out
    }

    // ----- application threads -----

    /// Thread `t` of `node` wants `kind` access to `page` (`atomic`: with an atomic instruction).
    /// If the protection allows it, returns true and the caller performs the access. Otherwise the
    /// thread traps: it waits for a `Wake` of the page, the node's fault is carried out, and
    /// this returns false.
    pub fn access(&mut self, node: usize, t: usize, page: PageId, kind: FaultKind, atomic: bool) -> bool {
        if self.prot(node, page.0 as usize) >= kind.needed() {
            self.waits[node][t] = Wait::Run;
            return true;
        }
        // Waiting before faulting: the `Wake` may come with the fault's own effects.
        self.waits[node][t] = Wait::Fault(page, kind);
        self.fault(node, page, kind, atomic);
        false
    }

    /// Writes `bytes` at `offset` of node `node`'s copy of page `p`, as a thread with write
    /// access does; they become the page's latest bytes there.
    pub fn store(&mut self, node: usize, p: usize, offset: usize, bytes: &[u8]) {
        if self.prot(node, p) != Access::Write {
            self.fail(Violation::Contract(format!("node {node} writes page {p} without write access")));
            return;
        }
        let range = offset..offset + bytes.len();
        self.bytes_mut(node, p)[range.clone()].copy_from_slice(bytes);
        let base = p * self.page_size;
        self.latest[base + range.start..base + range.end].copy_from_slice(bytes);
    }

    /// Gives byte `b` of page `p` the initial value `value`, at its home, before anything runs.
    pub fn init_byte(&mut self, p: usize, b: usize, value: u8) {
        let home = self.home(p);
        self.bytes_mut(home, p)[b] = value;
        self.latest[p * self.page_size + b] = value;
    }

    // ----- carrying out effects -----

    /// Carries out what `node` emitted in one call, then checks what must hold after it.
    fn done(&mut self, node: usize, out: &[Effect<P::Msg>], handling: Option<&Packet<P::Msg>>) {
        if let (true, Some(h)) = (self.log.on, handling) {
            self.log.delivered.push((NodeId(node as u16), h.msg));
        }
        for at in 0..out.len() {
            if self.violation.is_some() {
                return;
            }
            if let Err(e) =
                P::check_effect(self, node, &out[at]).and_then(|()| self.effect(node, out, at, handling))
            {
                self.fail(Violation::Contract(format!("node {node}: {e}; effects {out:?}")));
                return;
            }
        }
        for p in 0..self.pages {
            let access = self.nodes[node].access(PageId(p as u64));
            if self.prot(node, p) != access {
                let shown = self.prot(node, p);
                self.fail(Violation::Contract(format!(
                    "node {node}: protection of page {p} is {shown:?}, the protocol says {access:?}"
                )));
                return;
            }
        }
        if self.invariants
            && self.violation.is_none()
            && let Err(e) = P::invariants(self)
        {
            self.fail(Violation::Invariant(e));
        }
    }

    /// Carries out `out[at]`.
    fn effect(
        &mut self,
        node: usize,
        out: &[Effect<P::Msg>],
        at: usize,
        handling: Option<&Packet<P::Msg>>,
    ) -> Result<(), String> {
        let effect = out[at];
        let page = effect.page().unwrap_or(PageId(0));
        if page.0 >= self.pages as u64 {
            return Err(format!("{effect:?} for a page outside the {} simulated", self.pages));
        }
        let (p, i) = (page.0 as usize, node * self.pages + page.0 as usize);
        // The payload that came with the message being handled, if it is this page's `kind`.
        let came = |kind: Payload| {
            handling
                .filter(|h| h.msg.payload() == kind && h.msg.page() == page)
                .and_then(|h| h.payload.as_deref())
        };
        match effect {
            Effect::Send { to, msg } => {
                if to.index() == node || to.index() >= self.count() {
                    return Err(format!("sends {msg:?} to {to}, not a peer"));
                }
                let payload = match msg.payload() {
                    Payload::None => None,
                    Payload::Page => {
                        if P::final_bytes(&msg) && self.prot[i] == Access::Write {
                            return Err(format!("sends {msg:?} while the page is writable"));
                        }
                        Some(self.bytes(node, p).to_vec())
                    }
                    Payload::Diff => Some(self.diff(node, p)?),
                };
                if self.log.on {
                    self.log.sent.push(msg);
                }
                let link = self.link(node, to.index());
                if msg.grants_read_copy()
                    && let Some(r) =
                        self.routes.iter().position(|&(h, k, q)| (h, k, q) == (node, to.index(), page.0))
                {
                    // The answer to a direct read goes back on the read's own connection.
                    self.routes.remove(r);
                    self.answers.push((to.index(), Packet { msg, payload, direct: true }));
                } else {
                    self.links[link].push_back(Packet { msg, payload, direct: false });
                }
            }
            Effect::Install { page } => {
                let bytes = came(Payload::Page).ok_or(format!("installs {page} without its bytes"))?.to_vec();
                if bytes.len() != self.page_size || self.prot[i] != Access::None {
                    return Err(format!("installs {page} while accessible, or not a page of bytes"));
                }
                let opened = out[at..].iter().any(|e| matches!(*e, Effect::Protect { page: q, access } if q == page && access >= Access::Read));
                let kept_closed = self.nodes[node].access(page) == Access::None;
                if !opened && !kept_closed && !self.nodes[node].geometry().is_home(page) {
                    return Err(format!("installs {page} and never opens it"));
                }
                self.bytes_mut(node, p).copy_from_slice(&bytes);
                if self.log.on {
                    self.log.installed.push((NodeId(node as u16), page));
                }
            }
            Effect::Twin { page } => {
                if self.twins[i].is_some() || self.prot[i] > Access::Read {
                    return Err(format!("twins {page} twice, or while writable"));
                }
                self.twins[i] = Some(self.bytes(node, p).to_vec());
            }
            Effect::ApplyDiff { page } => {
                let d = came(Payload::Diff)
                    .ok_or(format!("applies a diff of {page} it did not receive"))?
                    .to_vec();
                diff::apply(&d, self.bytes_mut(node, p)).map_err(|e| format!("diff of {page}: {e}"))?;
            }
            Effect::Protect { access, .. } => self.prot[i] = access,
            Effect::Wake { page } => {
                for w in &mut self.waits[node] {
                    if let Wait::Fault(q, kind) = *w
                        && q == page
                    {
                        *w = Wait::Woken(q, kind);
                    }
                }
            }
            Effect::Released { release } => {
                if self.releases[node].front() != Some(&release) {
                    return Err(format!("{release:?} reported out of order, or twice"));
                }
                self.releases[node].pop_front();
            }
        }
        Ok(())
    }

    /// The diff a `Send` of node `node` carries for page `p`: from the twin (dropped) to the
    /// bytes now. It must be well formed and rebuild the page from the twin.
    fn diff(&mut self, node: usize, p: usize) -> Result<Vec<u8>, String> {
        let i = node * self.pages + p;
        if self.prot[i] == Access::Write {
            return Err(format!("diffs page {p} while it is writable"));
        }
        let mut twin = self.twins[i].take().ok_or(format!("sends a diff of page {p} without a twin"))?;
        let mut d = Vec::new();
        diff::encode(&twin, self.bytes(node, p), &mut d);
        diff::apply(&d, &mut twin).map_err(|e| format!("encode made a malformed diff: {e}"))?;
        if twin != self.bytes(node, p) {
            return Err(format!("the diff of page {p} does not rebuild it"));
        }
        Ok(d)
    }
}

/// Throws `count` garbage messages (`any(rng, page_count)`) from random senders (sometimes none
/// of the cluster) at copies of random nodes of `sim`: a rejection must change nothing (see
/// [`assert_rejected`]); an accepted message is dropped with its copy, so the run goes on.
pub fn throw_garbage<P: Spec>(
    sim: &Sim<P>,
    rng: &mut rng::Rng,
    count: usize,
    any: fn(&mut rng::Rng, u64) -> P::Msg,
) {
    let page_count = sim.node(0).geometry().page_count();
    for _ in 0..count {
        let target = rng.below(sim.count());
        let msg = any(rng, page_count);
        let from = if rng.percent(3) { NodeId(u16::MAX) } else { NodeId(rng.below(sim.count() + 2) as u16) };
        if sim.node(target).clone().handle(from, msg, &mut Vec::new()).is_err() {
            assert_rejected(sim.node(target), from, msg);
        }
    }
}

/// Checks that `node` rejects `msg` from `from` without any effect or change (on a copy).
///
/// # Panics
/// If it is accepted, or the rejection emits or changes anything.
pub fn assert_rejected<P: Spec>(node: &P, from: NodeId, msg: P::Msg) {
    let mut copy = node.clone();
    let mut out = Vec::new();
    let err: ProtocolError =
        copy.handle(from, msg, &mut out).expect_err(&format!("{msg:?} from {from} accepted by {node:?}"));
    assert!(!err.reason().is_empty() && err.to_string().contains(err.reason()));
    assert!(out.is_empty(), "effects emitted on error: {out:?}");
    assert_eq!(&copy, node, "state changed by rejected {msg:?}");
}
