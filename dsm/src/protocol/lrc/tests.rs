//! Tests of the release-consistent protocol, run in the simulated cluster ([`crate::sim`]):
//! single flows with their exact actions, what survives an acquire, sequentially consistent pages,
//! pages becoming SC, malformed input, and random data-race-free programs.
//!
//! The simulation plays the runtime (FIFO links, real page bytes, twins and diffs, protections)
//! and checks every call's actions; [`Program`] runs the simulated threads: they read and write
//! bytes only when the protection allows, take locks (acquiring) and release them, and do
//! read-modify-writes on sequentially consistent pages, while the happens-before relation is kept
//! to check every read, every copy and every acquire.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};

use super::{
    Access, Action, Bug, FaultKind, LrcConfig, LrcNode, MAX_PREFETCH, Msg, NodeId, PageId, Payload,
    ReleaseId, Sharing,
};
use crate::protocol::{Coherence, sc};
use crate::sim::expect::{opens, protect, send, twinned};
use crate::sim::fuzz::page_of as any_page;
use crate::sim::lrc::{Op, Program};
use crate::sim::rng::Rng;
use crate::sim::{self, Sim, Spec};

const READ: FaultKind = FaultKind::Read;
const WRITE: FaultKind = FaultKind::Write;
/// Bytes per simulated page: small, so that tests run fast and pages are shared a lot.
const PAGE: usize = 32;

fn n(i: u16) -> NodeId {
    NodeId(i)
}

fn p(i: u64) -> PageId {
    PageId(i)
}

/// What a simulated program does with one byte of the space. The program is data-race-free:
/// every byte is either read-only, written by one node only, guarded by one lock, or on a
/// sequentially consistent page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guard {
    /// Written by its home before anyone else touches the page, then only read.
    ReadOnly,
    /// Read and written only by threads holding this lock.
    Lock(usize),
    /// Read and written only by threads of this node, without synchronisation.
    Private(usize),
    /// A counter on an SC page, incremented by read-modify-writes of any node.
    Counter,
    /// How many times this node has published (written only by it, read by anyone after
    /// reading the node's flag).
    Data(usize),
    /// On an SC page: how many times this node has published, incremented after its data.
    Flag(usize),
}

/// The kind of a message, for counting.
fn kind_name(msg: &Msg) -> &'static str {
    match msg {
        Msg::Fetch { .. } => "Fetch",
        Msg::Page { .. } => "Page",
        Msg::ScPage { .. } => "ScPage",
        Msg::Diff { .. } => "Diff",
        Msg::DiffAck { .. } => "DiffAck",
        Msg::Notice { .. } => "Notice",
        Msg::NoticeAck { .. } => "NoticeAck",
        Msg::MakeSc { .. } => "MakeSc",
        Msg::Convert { .. } => "Convert",
        Msg::ConvertAck { .. } => "ConvertAck",
        Msg::Own { .. } => "Own",
        Msg::Pull { .. } => "Pull",
        Msg::Yield { .. } => "Yield",
        Msg::Sc(m) if m.carries_data() => "ScData",
        Msg::Sc(_) => "ScControl",
    }
}

/// Where the bytes of each kind of a program are.
#[derive(Default)]
struct Layout {
    /// `guarded[lock]`: the bytes it guards.
    guarded: Vec<Vec<(usize, usize)>>,
    /// `private[node]`: its private bytes.
    private: Vec<Vec<(usize, usize)>>,
    read_only: Vec<(usize, usize)>,
    counters: Vec<(usize, usize)>,
    /// Where node `k`'s `Data` and `Flag` bytes are.
    data: Vec<Option<(usize, usize)>>,
    flag: Vec<Option<(usize, usize)>>,
    mixed_pages: BTreeSet<usize>,
}

/// The simulated cluster, the program its threads run, and the shorthands these tests use.
struct Cluster {
    sim: Sim<LrcNode>,
    app: Program,
    per_node: u64,
    prefetch: u16,
    adaptive: u16,
    own_after: u8,
    refresh: bool,
    /// The program: what each byte is.
    guard: Vec<Vec<Guard>>,
    layout: Layout,
    /// How likely each link is to be picked when several hold messages: random schedules make
    /// some links much slower than others, so that messages on different links overtake each
    /// other by long stretches.
    speed: Vec<u64>,
}

impl Deref for Cluster {
    type Target = Sim<LrcNode>;
    fn deref(&self) -> &Sim<LrcNode> {
        &self.sim
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Sim<LrcNode> {
        &mut self.sim
    }
}

impl Cluster {
    /// `nodes` nodes, `per_node` pages homed at each, one thread per node; `guard(page, byte)`
    /// gives the program. Pages with any `Counter` or `Flag` byte are sequentially consistent
    /// from the start.
    fn new(nodes: u16, per_node: u64, prefetch: u16, guard: impl Fn(usize, usize) -> Guard) -> Self {
        let pages = (u64::from(nodes) * per_node) as usize;
        let guard = (0..pages).map(|pg| (0..PAGE).map(|b| guard(pg, b)).collect()).collect();
        Self::build(nodes, per_node, (prefetch, 0, 0, false), guard, 1)
    }

    /// As [`Cluster::new`], with adaptive prefetch up to `adaptive` pages and no fixed prefetch.
    fn adaptive(nodes: u16, per_node: u64, adaptive: u16, guard: impl Fn(usize, usize) -> Guard) -> Self {
        let pages = (u64::from(nodes) * per_node) as usize;
        let guard = (0..pages).map(|pg| (0..PAGE).map(|b| guard(pg, b)).collect()).collect();
        Self::build(nodes, per_node, (0, adaptive, 0, false), guard, 1)
    }

    fn build(
        nodes: u16,
        per_node: u64,
        (prefetch, adaptive, own_after, refresh): (u16, u16, u8, bool),
        guard: Vec<Vec<Guard>>,
        threads: usize,
    ) -> Self {
        let count = usize::from(nodes);
        let sc_pages = (0..guard.len())
            .filter(|&pg| guard[pg].iter().any(|g| matches!(g, Guard::Counter | Guard::Flag(_))))
            .map(|pg| pg as u64..pg as u64 + 1)
            .collect();
        let config = LrcConfig { prefetch, adaptive, sc_pages, own_after, refresh };
        let states = (0..nodes).map(|i| LrcNode::new(n(i), nodes, per_node, config.clone())).collect();
        let mut sim = Sim::new(states, guard.len(), PAGE, &vec![threads; count]).record();
        let mut layout = Layout {
            private: vec![Vec::new(); count],
            data: vec![None; count],
            flag: vec![None; count],
            ..Layout::default()
        };
        for (pg, bytes) in guard.iter().enumerate() {
            for (b, &g) in bytes.iter().enumerate() {
                match g {
                    // The home writes the initial values before anyone else can see the page.
                    Guard::ReadOnly => {
                        sim.init_byte(pg, b, (pg * 31 + b * 7) as u8 | 1);
                        layout.read_only.push((pg, b));
                    }
                    Guard::Lock(l) => {
                        layout.guarded.resize(layout.guarded.len().max(l + 1), Vec::new());
                        layout.guarded[l].push((pg, b));
                        layout.mixed_pages.insert(pg);
                    }
                    Guard::Private(k) => {
                        layout.private[k].push((pg, b));
                        layout.mixed_pages.insert(pg);
                    }
                    Guard::Counter => layout.counters.push((pg, b)),
                    Guard::Data(k) => layout.data[k] = Some((pg, b)),
                    Guard::Flag(k) => layout.flag[k] = Some((pg, b)),
                }
            }
        }
        let app = Program::new(&sim, layout.guarded.len()).check_acquires();
        Cluster {
            sim,
            app,
            per_node,
            prefetch,
            adaptive,
            own_after,
            refresh,
            guard,
            layout,
            speed: vec![1; count * count],
        }
    }

    /// `nodes` nodes homing one page each, every byte guarded by lock 0, after `readers` fetched
    /// copies of page 0.
    fn read_by(nodes: u16, readers: &[usize]) -> Self {
        let mut c = Cluster::new(nodes, 1, 0, page_of(Guard::Lock(0)));
        for &k in readers {
            c.read(k, 0, 0);
        }
        c
    }

    /// The same cluster, from the start, with `per_node` threads on every node.
    fn with_threads(self, per_node: usize) -> Self {
        let settings = (self.prefetch, self.adaptive, self.own_after, self.refresh);
        Self::build(self.count() as u16, self.per_node, settings, self.guard, per_node)
    }

    /// The same cluster, from the start, handing pages over to their writers after `diffs` diffs
    /// in a row ([`LrcConfig::own_after`]).
    fn owning_after(self, diffs: u8) -> Self {
        let threads = self.threads(0);
        let settings = (self.prefetch, self.adaptive, diffs, self.refresh);
        Self::build(self.count() as u16, self.per_node, settings, self.guard, threads)
    }

    /// The same cluster, from the start, with [`LrcConfig::refresh`] set to `refresh`.
    fn refreshing(self, refresh: bool) -> Self {
        let threads = self.threads(0);
        let settings = (self.prefetch, self.adaptive, self.own_after, refresh);
        Self::build(self.count() as u16, self.per_node, settings, self.guard, threads)
    }

    /// Messages sent so far, of `kind` ([`kind_name`]).
    fn sent(&self, kind: &str) -> usize {
        self.log.sent.iter().filter(|m| kind_name(m) == kind).count()
    }

    /// Messages sent so far, by kind.
    fn sent_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for m in &self.log.sent {
            *counts.entry(kind_name(m)).or_default() += 1;
        }
        counts
    }

    /// Copies of page `pg` installed at `node` so far.
    fn installs(&self, node: usize, pg: usize) -> usize {
        self.log.installed.iter().filter(|&&(k, q)| k == n(node as u16) && q == p(pg as u64)).count()
    }

    fn fault(&mut self, node: usize, pg: usize, kind: FaultKind) -> Vec<Action> {
        self.sim.fault(node, p(pg as u64), kind, false)
    }

    fn acquire(&mut self, node: usize) -> Vec<Action> {
        self.app.acquire(&mut self.sim, node)
    }

    fn release(&mut self, node: usize) -> (ReleaseId, Vec<Action>) {
        let (id, out) = self.app.release(&mut self.sim, node);
        (id.expect("a release id"), out)
    }

    fn set_sc(&mut self, node: usize, pg: usize) -> Vec<Action> {
        self.sim.call(node, |k, out| k.set_sc(p(pg as u64), out))
    }

    /// Delivers the oldest message on link `from -> to`; returns the receiver's actions.
    fn deliver(&mut self, from: usize, to: usize) -> Vec<Action> {
        let out = self.sim.deliver(from, to);
        self.app.settle(&self.sim);
        out
    }

    fn deliver_link(&mut self, link: usize) -> Vec<Action> {
        let count = self.count();
        self.deliver(link / count, link % count)
    }

    /// Delivers everything, oldest link first, until all links are empty.
    fn pump(&mut self) {
        self.sim.pump();
        self.app.settle(&self.sim);
    }

    /// Writes a byte directly, as a thread with write access would.
    fn poke(&mut self, node: usize, pg: usize, b: usize, value: u8) {
        self.app.write(&mut self.sim, node, pg as u8, b as u8, value, false);
    }

    /// Makes `node` able to access `pg` as `kind` needs, delivering messages as needed.
    fn obtain(&mut self, node: usize, pg: usize, kind: FaultKind) {
        for _ in 0..10 {
            if self.prot(node, pg) >= kind.needed() {
                return;
            }
            self.fault(node, pg, kind);
            self.pump();
        }
        panic!("node {node} never obtains {kind:?} access to page {pg}");
    }

    fn read(&mut self, node: usize, pg: usize, b: usize) -> u8 {
        self.obtain(node, pg, READ);
        self.bytes(node, pg)[b]
    }

    fn write(&mut self, node: usize, pg: usize, b: usize, value: u8) {
        self.obtain(node, pg, WRITE);
        self.poke(node, pg, b, value);
    }

    /// A release run to completion.
    fn release_sync(&mut self, node: usize) {
        let (id, _) = self.release(node);
        self.pump();
        assert!(self.released(node, id), "release {id:?} of {node} never completes");
    }

    /// The protocol's invariants (also checked after every call), and that every readable copy
    /// holds the writes that happen before.
    fn check(&self) {
        LrcNode::invariants(&self.sim).unwrap();
        self.app.copies_hold_history(&self.sim).unwrap();
    }
}

/// Every byte of a page is one thing.
fn page_of(g: Guard) -> impl Fn(usize, usize) -> Guard {
    move |_, _| g
}

// ----- single flows, exact actions -----

#[test]
fn layout_messages_and_initial_state() {
    let node = LrcNode::new(n(1), 3, 4, LrcConfig::default().with_prefetch(1000).with_sc_pages(2..4));
    let geo = node.geometry();
    assert_eq!((geo.me, geo.nodes, geo.pages_per_node, geo.page_count()), (n(1), 3, 4, 12));
    assert_eq!(node.config().prefetch, MAX_PREFETCH);
    assert_eq!(geo.home_of(p(13)), n(2));
    assert!(node.is_sc(p(2)) && node.is_sc(p(3)) && !node.is_sc(p(4)));
    assert_eq!(node.access(p(4)), Access::Write);
    assert_eq!(node.access(p(0)), Access::None);
    assert_eq!(node.access(p(2)), Access::None);
    assert_eq!(node.access(p(12)), Access::None);
    assert_eq!(node.sharing(p(5)), Some(Sharing::Unshared));
    assert_eq!(node.sharing(p(0)), None);
    assert!(node.is_quiescent());
    assert_eq!(node.unacknowledged(), 0);
    // Calls about pages outside the space are ignored.
    let (mut copy, mut out) = (node.clone(), Vec::new());
    copy.fault(p(12), WRITE, &mut out);
    copy.set_sc(p(u64::MAX), &mut out);
    assert!(out.is_empty() && copy == node);

    let page = p(7);
    let all = [
        Msg::Fetch { page, count: 2 },
        Msg::Page { page },
        Msg::ScPage { page },
        Msg::Diff { page, seq: 3 },
        Msg::DiffAck { page, seq: 3 },
        Msg::Notice { page },
        Msg::NoticeAck { page },
        Msg::MakeSc { page },
        Msg::Convert { page },
        Msg::ConvertAck { page },
        Msg::Sc(sc::Msg::RecallAck { page }),
        Msg::Sc(sc::Msg::ReadReq { page }),
    ];
    let payloads: Vec<Payload> = all.iter().map(Msg::payload).collect();
    use Payload::{Diff, None as No, Page};
    assert_eq!(payloads, [No, Page, No, Diff, No, No, No, No, No, No, Page, No]);
    assert!(all.iter().all(|m| m.page() == page && m.carries_data() == (m.payload() != No)));
}

#[test]
fn read_miss_write_release() {
    let mut c = Cluster::new(3, 1, 0, page_of(Guard::Lock(0)));
    assert_eq!(c.fault(1, 0, READ), [send(0, Msg::Fetch { page: p(0), count: 1 })]);
    assert!(c.node(1).is_fetching(p(0)));
    // Another thread trapping meanwhile sends nothing more.
    assert_eq!(c.fault(1, 0, WRITE), []);
    assert_eq!(c.deliver(1, 0), [protect(p(0), Access::Read), send(1, Msg::Page { page: p(0) })]);
    assert_eq!(c.node(0).sharing(p(0)), Some(Sharing::Private(n(1))));
    // The write trapped while fetching: the copy arrives with its twin and write access.
    assert_eq!(
        c.deliver(0, 1),
        [
            Action::Install { page: p(0) },
            Action::Twin { page: p(0) },
            protect(p(0), Access::Write),
            Action::Wake { page: p(0) },
        ]
    );
    c.poke(1, 0, 3, 42);
    let (id, out) = c.release(1);
    assert_eq!(id, ReleaseId(0));
    assert_eq!(out, [protect(p(0), Access::Read), send(0, Msg::Diff { page: p(0), seq: 0 })]);
    assert_eq!(c.node(1).unacknowledged(), 1);
    // Nobody else holds a copy: the home applies and acknowledges at once.
    assert_eq!(
        c.deliver(1, 0),
        [Action::ApplyDiff { page: p(0) }, send(1, Msg::DiffAck { page: p(0), seq: 0 })]
    );
    assert_eq!(c.bytes(0, 0), c.latest(0));
    assert_eq!(c.deliver(0, 1), [Action::Released { release: ReleaseId(0) }]);
    // A later write is local again.
    assert_eq!(c.fault(1, 0, WRITE), twinned(p(0)));
    // A release with nothing outstanding completes at once... after the diff is acknowledged.
    let (id, _) = c.release(1);
    assert_eq!(id, ReleaseId(1));
    c.pump();
    assert!(c.released(1, id));
    let (id, out) = c.release(1);
    assert_eq!(out, [Action::Released { release: id }]);
    assert!(c.nodes().iter().all(LrcNode::is_quiescent));
}

#[test]
fn write_notices_and_acquire() {
    let mut c = Cluster::read_by(3, &[1, 2]);
    assert_eq!(c.node(0).sharing(p(0)), Some(Sharing::Shared([n(1), n(2)].into())));
    c.write(1, 0, 5, 9);
    let (id, _) = c.release(1);
    // The home applies the diff and notifies node 2; node 1's own copy stays current.
    assert_eq!(c.deliver(1, 0), [Action::ApplyDiff { page: p(0) }, send(2, Msg::Notice { page: p(0) })]);
    assert_eq!(c.node(0).sharing(p(0)), Some(Sharing::Private(n(1))));
    // The release is not complete before node 2 has recorded the notice.
    assert!(c.busy() == [c.link(0, 2)]);
    assert_eq!(c.deliver(0, 2), [send(0, Msg::NoticeAck { page: p(0) })]);
    assert!(c.node(2).is_stale(p(0)));
    // Node 2 may still read its old copy until it acquires.
    assert_eq!(c.prot(2, 0), Access::Read);
    assert_eq!(c.bytes(2, 0)[5], 0);
    assert_eq!(c.deliver(2, 0), [send(1, Msg::DiffAck { page: p(0), seq: 0 })]);
    assert_eq!(c.deliver(0, 1), [Action::Released { release: id }]);
    // Node 1's acquire keeps its copy (nobody else wrote); node 2's drops it.
    assert_eq!(c.acquire(1), []);
    assert_eq!(c.acquire(2), [protect(p(0), Access::None)]);
    assert_eq!(c.read(2, 0, 5), 9);
    assert_eq!(c.node(0).sharing(p(0)), Some(Sharing::Shared([n(1), n(2)].into())));
    assert!(c.nodes().iter().all(LrcNode::is_quiescent));
}

#[test]
fn home_writes_are_noticed() {
    let mut c = Cluster::new(2, 1, 0, page_of(Guard::Lock(0)));
    // Before anyone fetched the page, the home writes freely and releases instantly.
    assert_eq!(c.prot(0, 0), Access::Write);
    let (id, out) = c.release(0);
    assert_eq!(out, [Action::Released { release: id }]);
    c.read(1, 0, 0);
    assert_eq!(c.prot(0, 0), Access::Read);
    // Now the home's first write traps, locally, and its release notifies the reader.
    assert_eq!(c.fault(0, 0, WRITE), opens(p(0), Access::Write));
    c.poke(0, 0, 1, 7);
    let (id, out) = c.release(0);
    assert_eq!(out, [send(1, Msg::Notice { page: p(0) })]);
    assert_eq!(c.node(0).unacknowledged(), 1);
    c.deliver(0, 1);
    assert_eq!(c.deliver(1, 0), [Action::Released { release: id }]);
    // The home keeps writing without traps: nobody holds a copy it must notify again.
    assert_eq!(c.prot(0, 0), Access::Write);
    assert_eq!(c.node(0).sharing(p(0)), Some(Sharing::Unshared));
    let (id, out) = c.release(0);
    assert_eq!(out, [Action::Released { release: id }]);
    c.acquire(1);
    assert_eq!(c.read(1, 0, 1), 7);
    // The refetch closed the home's copy again.
    assert_eq!(c.prot(0, 0), Access::Read);
}

#[test]
fn a_home_write_during_a_round_waits_for_it() {
    // Node 2 writes its stale copy and releases: the home notifies node 1, the only copy left in
    // the copyset. The home then writes: nobody is in the copyset, but node 1 has not recorded
    // the notice yet and still takes its copy for current, so the home's release must wait.
    let mut c = Cluster::read_by(3, &[1, 2]);
    c.write(1, 0, 1, 1);
    c.release_sync(1);
    assert!(c.node(2).is_stale(p(0)));
    c.fault(2, 0, WRITE);
    c.poke(2, 0, 2, 2);
    c.release(2);
    assert_eq!(c.deliver(2, 0), [Action::ApplyDiff { page: p(0) }, send(1, Msg::Notice { page: p(0) })]);
    assert_eq!(c.node(0).sharing(p(0)), Some(Sharing::Unshared));
    assert_eq!(c.fault(0, 0, WRITE), opens(p(0), Access::Write));
    c.poke(0, 0, 0, 3);
    let (release, out) = c.release(0);
    assert_eq!(out, []);
    c.deliver(0, 1);
    assert_eq!(c.deliver(1, 0), [send(2, Msg::DiffAck { page: p(0), seq: 0 }), Action::Released { release }]);
    c.acquire(1);
    assert_eq!(c.read(1, 0, 0), 3);
}

#[test]
fn dirty_stale_copy_is_flushed_at_acquire() {
    let mut c = Cluster::new(3, 1, 0, page_of(Guard::Lock(0)));
    c.write(1, 0, 0, 11);
    c.write(2, 0, 1, 22);
    c.release_sync(1);
    // Node 2 has been notified but still has unreleased writes in its copy.
    assert!(c.node(2).is_stale(p(0)));
    assert_eq!(c.acquire(2), [protect(p(0), Access::None), send(0, Msg::Diff { page: p(0), seq: 0 })]);
    // Its refetch goes behind the diff on the same link, so it sees its own write and node 1's.
    assert_eq!(c.fault(2, 0, READ), [send(0, Msg::Fetch { page: p(0), count: 1 })]);
    c.pump();
    assert_eq!(&c.bytes(2, 0)[..2], &[11, 22]);
    assert_eq!(&c.bytes(0, 0)[..2], &[11, 22]);
    // Node 1 was notified by node 2's diff.
    assert!(c.node(1).is_stale(p(0)));
}

#[test]
fn releases_complete_in_order_and_wait_for_earlier_diffs() {
    let mut c = Cluster::new(2, 2, 0, page_of(Guard::Lock(0)));
    c.write(1, 0, 0, 1);
    let (first, _) = c.release(1);
    // Nothing dirty any more, but the first diff is not acknowledged: the second release waits.
    let (second, out) = c.release(1);
    assert_eq!(out, []);
    assert_eq!(c.outstanding(1), 2);
    c.deliver(1, 0);
    assert_eq!(c.deliver(0, 1), [Action::Released { release: first }, Action::Released { release: second }]);
}

#[test]
fn a_release_waits_for_every_one_of_its_diffs() {
    // Node 2 writes pages homed at nodes 0 and 1; the second home answers first.
    let mut c = Cluster::new(3, 1, 0, page_of(Guard::Lock(0)));
    c.write(2, 0, 0, 1);
    c.write(2, 1, 0, 2);
    let (id, out) = c.release(2);
    assert_eq!(
        out,
        [
            protect(p(0), Access::Read),
            send(0, Msg::Diff { page: p(0), seq: 0 }),
            protect(p(1), Access::Read),
            send(1, Msg::Diff { page: p(1), seq: 1 }),
        ]
    );
    c.deliver(2, 1);
    assert_eq!(c.deliver(1, 2), []);
    c.deliver(2, 0);
    assert_eq!(c.deliver(0, 2), [Action::Released { release: id }]);
}

#[test]
fn diff_ack_waits_for_every_earlier_notice_of_the_page() {
    // The home's release notifies nodes 2 and 3, which leaves nobody in the copyset. Node 3
    // records its notice, writes its (stale) copy and releases: its diff finds nobody to notify,
    // but must not be acknowledged before node 2 has recorded the notice still outstanding,
    // or a node synchronising with node 3 could go on reading node 2's copy as current.
    let mut c = Cluster::read_by(4, &[2, 3]);
    c.write(0, 0, 0, 1);
    let (home_release, out) = c.release(0);
    assert_eq!(out, [send(2, Msg::Notice { page: p(0) }), send(3, Msg::Notice { page: p(0) })]);
    c.deliver(0, 3);
    c.deliver(3, 0);
    c.fault(3, 0, WRITE);
    c.write(3, 0, 3, 3);
    let (release, _) = c.release(3);
    assert_eq!(c.deliver(3, 0), [Action::ApplyDiff { page: p(0) }]);
    c.deliver(0, 2);
    assert_eq!(
        c.deliver(2, 0),
        [send(3, Msg::DiffAck { page: p(0), seq: 0 }), Action::Released { release: home_release }]
    );
    assert_eq!(c.outstanding(3), 1);
    c.deliver(0, 3);
    assert!(c.released(3, release));
}

#[test]
fn prefetch_fetches_following_pages_of_the_same_home() {
    let mut c = Cluster::new(2, 6, 2, |pg, _| if pg == 3 { Guard::Counter } else { Guard::Lock(0) });
    assert_eq!(c.fault(1, 0, READ), [send(0, Msg::Fetch { page: p(0), count: 3 })]);
    assert!(c.node(1).is_fetching(p(1)) && c.node(1).is_fetching(p(2)));
    // A fault on a prefetched page waits for the same reply.
    assert_eq!(c.fault(1, 2, WRITE), []);
    assert_eq!(
        c.deliver(1, 0),
        [
            protect(p(0), Access::Read),
            send(1, Msg::Page { page: p(0) }),
            protect(p(1), Access::Read),
            send(1, Msg::Page { page: p(1) }),
            protect(p(2), Access::Read),
            send(1, Msg::Page { page: p(2) }),
        ]
    );
    c.pump();
    assert_eq!([c.prot(1, 0), c.prot(1, 1), c.prot(1, 2)], [Access::Read, Access::Read, Access::Write]);
    assert_eq!(c.sent("Fetch"), 1);
    // Page 3 is SC: a fault on page 2's neighbour stops there; page 4's fetch stops at the home's
    // boundary (page 6 is node 1's).
    c.acquire(1);
    assert_eq!(c.fault(1, 4, READ), [send(0, Msg::Fetch { page: p(4), count: 2 })]);
    c.pump();
    // Pages homed at the faulting node itself are never fetched.
    let out = c.fault(0, 6, READ);
    assert_eq!(out, [send(1, Msg::Fetch { page: p(6), count: 3 })]);
    c.pump();
    // A page the home made SC silently is answered with ScPage, prefetched or not.
    c.set_sc(1, 10);
    assert_eq!(c.fault(0, 9, READ), [send(1, Msg::Fetch { page: p(9), count: 3 })]);
    assert_eq!(
        c.deliver(0, 1),
        [
            protect(p(9), Access::Read),
            send(0, Msg::Page { page: p(9) }),
            send(0, Msg::ScPage { page: p(10) }),
            protect(p(11), Access::Read),
            send(0, Msg::Page { page: p(11) }),
        ]
    );
    c.pump();
    assert!(c.node(0).is_sc(p(10)));
    assert_eq!(c.prot(0, 10), Access::None);
    assert!(c.nodes().iter().all(LrcNode::is_quiescent));
}

#[test]
fn prefetch_cuts_fetches_of_a_sequential_scan() {
    let scan = |prefetch| {
        let mut c = Cluster::new(2, 32, prefetch, page_of(Guard::ReadOnly));
        for pg in 0..32 {
            c.read(1, pg, 0);
        }
        (c.sent("Fetch"), c.sent("Page"))
    };
    assert_eq!(scan(0), (32, 32));
    assert_eq!(scan(3), (8, 32));
    assert_eq!(scan(MAX_PREFETCH), (1, 32));
}

#[test]
fn adaptive_prefetch_grows_on_a_sequential_scan_and_not_on_a_strided_one() {
    let scan = |adaptive, stride: usize| {
        let mut c = Cluster::adaptive(2, 256, adaptive, page_of(Guard::ReadOnly));
        let pages: Vec<usize> = (0..256).step_by(stride).collect();
        for &pg in &pages {
            c.read(1, pg, 0);
        }
        let fetches = c.sent("Fetch");
        assert!(c.nodes().iter().all(LrcNode::is_quiescent));
        (fetches, c.sent("Page"), pages.len())
    };
    // Off: one fetch per page.
    assert_eq!(scan(0, 1), (256, 256, 256));
    // Sequential: fetches of 1, 2, 3, 5, 9, 17, then 32 pages (1 + 31) each: 37 pages in the first
    // six, the other 219 in seven more.
    assert_eq!(scan(31, 1), (13, 256, 256));
    // Every other page: never sequential, so nothing is fetched that is not read.
    assert_eq!(scan(31, 2), (128, 128, 128));
}

#[test]
fn write_ahead_grows_on_a_sequential_write_and_not_on_a_strided_one() {
    // Node 1 holds clean copies of 256 pages homed at node 0, then writes one byte of every
    // `stride`-th page in order and releases.
    let write_all = |adaptive, stride: usize| {
        let mut c = Cluster::adaptive(2, 256, adaptive, page_of(Guard::Private(1)));
        for pg in 0..256 {
            c.read(1, pg, 0);
        }
        let mut traps = 0;
        for pg in (0..256).step_by(stride) {
            if c.prot(1, pg) < Access::Write {
                c.fault(1, pg, WRITE);
                c.pump();
                traps += 1;
            }
            c.poke(1, pg, 5, (pg as u8).wrapping_add(1));
        }
        c.release_sync(1);
        c.check();
        for pg in (0..256).step_by(stride) {
            assert_eq!(c.bytes(0, pg)[5], (pg as u8).wrapping_add(1), "page {pg} at its home");
        }
        assert!(c.nodes().iter().all(LrcNode::is_quiescent));
        (traps, c.sent("Diff"))
    };
    // Off: a trap and a diff per page.
    assert_eq!(write_all(0, 1), (256, 256));
    // Sequential: traps at pages 0, 1, 3, 6, 11, 20 (opening 1, 2, 3, 5, 9, 17 pages), then every
    // 32 pages (37, 69, ..., 229); the last run stops at the end of node 0's pages.
    assert_eq!(write_all(31, 1), (13, 256));
    // Every other page: never sequential, so no copy is opened that is not written.
    assert_eq!(write_all(31, 2), (128, 128));
}

#[test]
fn a_copy_read_after_every_notice_is_fetched_again_before_the_reader_misses() {
    // Node 0 writes byte 0 of its page 0 and releases, round after round; node 1 acquires and
    // reads it after each release (a halo row re-read after every barrier).
    let rounds = |refresh| {
        let mut c = Cluster::new(2, 1, 0, page_of(Guard::Lock(0))).refreshing(refresh);
        let mut waits = 0;
        for round in 1..=6u8 {
            c.write(0, 0, 0, round);
            c.release_sync(0);
            c.acquire(1);
            // A read that must wait for a message (a fetch after the acquire dropped the copy).
            let fetches = c.sent("Fetch");
            assert_eq!(c.read(1, 0, 0), round);
            waits += usize::from(c.sent("Fetch") > fetches);
            c.check();
        }
        assert!(c.nodes().iter().all(LrcNode::is_quiescent));
        (waits, c.sent("Fetch"))
    };
    // Off: every round's read waits for a fetch.
    assert_eq!(rounds(false), (6, 6));
    // On: the second round's read finds the copy dropped again (now known to be re-read); from
    // the third round on, the notice makes node 1 fetch the page at once, so the read after the
    // acquire only opens it locally. As many fetches, none waited for.
    assert_eq!(rounds(true), (2, 6));
}

#[test]
fn a_refreshed_copy_nobody_reads_is_not_refreshed_again() {
    // As above, but node 1 stops reading after round 3: one more refresh (of round 4's write)
    // goes unread, so round 5's notice leaves the copy stale and nothing more is fetched.
    let mut c = Cluster::new(2, 1, 0, page_of(Guard::Lock(0))).refreshing(true);
    for round in 1..=8u8 {
        c.write(0, 0, 0, round);
        c.release_sync(0);
        c.acquire(1);
        if round <= 3 {
            assert_eq!(c.read(1, 0, 0), round);
        }
        c.check();
    }
    // Rounds 1–3: a fetch each (the third a refresh); round 4: the refresh nobody reads.
    assert_eq!(c.sent("Fetch"), 4);
    assert!(c.nodes().iter().all(LrcNode::is_quiescent));
}

#[test]
fn a_loop_reading_one_array_and_writing_another_reads_both_ahead() {
    // Node 1 reads page `i` of one array (pages 0..64, homed at node 0) and writes page `i` of
    // another (pages 64..128, also homed at node 0), for every `i` in order: read and write
    // misses alternate, each kind in sequence.
    let fetches = |adaptive| {
        let mut c = Cluster::adaptive(2, 128, adaptive, page_of(Guard::Private(1)));
        for pg in 0..64 {
            c.read(1, pg, 0);
            c.write(1, 64 + pg, 0, 9);
        }
        c.release_sync(1);
        c.check();
        c.sent("Fetch")
    };
    assert_eq!(fetches(0), 128);
    // Each kind grows its own run (1, 2, 4, 8, 16, 31 and 2 pages after the missing one): 7
    // fetches per array instead of one per page.
    assert_eq!(fetches(31), 14);
}

#[test]
fn a_band_written_sweep_after_sweep_is_handed_over_and_pulled_back_by_readers() {
    // Node 1 writes byte 0 of all 64 pages homed at node 0 in every sweep and releases (Jacobi's
    // band in a grid built by `main`); after 6 sweeps node 0 reads the band back, then node 1
    // does one more sweep. Returns per sweep the diffs and node 1's write traps, and the pulls.
    let sweeps_of = |own_after: u8| {
        let mut c = Cluster::adaptive(2, 64, 31, page_of(Guard::Lock(0))).owning_after(own_after);
        let sweep = |c: &mut Cluster, value: u8| {
            let before = c.sent("Diff") + c.sent("Yield");
            let mut traps = 0;
            c.acquire(1);
            for pg in 0..64 {
                if c.prot(1, pg) < Access::Write {
                    c.obtain(1, pg, WRITE);
                    traps += 1;
                }
                c.poke(1, pg, 0, value);
            }
            c.release_sync(1);
            c.check();
            (c.sent("Diff") + c.sent("Yield") - before, traps)
        };
        let mut sweeps: Vec<(usize, usize)> = (1..=6).map(|s| sweep(&mut c, s)).collect();
        assert_eq!(c.sent("Own"), if own_after == 0 { 0 } else { 64 });
        // The home reads the band: pulled back in runs (1, 2, 4, ... pages, as a fetch reads ahead).
        c.acquire(0);
        for pg in 0..64 {
            assert_eq!(c.read(0, pg, 0), 6, "page {pg} at the home");
        }
        let pulls = c.sent("Pull");
        // Pulled back, so the next sweep diffs again (and the page is handed over only after
        // twice as many diffs in a row as before).
        sweeps.push(sweep(&mut c, 7));
        assert!(c.nodes().iter().all(LrcNode::is_quiescent));
        assert!((0..64).all(|pg| c.node(0).owner(p(pg)).is_none()));
        (sweeps, pulls)
    };
    // Off: 64 diffs every sweep; after the cold first sweep (fetches), 7 write traps a sweep
    // (write-ahead runs of 1, 2, 4, ... pages).
    let (sweeps, pulls) = sweeps_of(0);
    assert_eq!((sweeps, pulls), (vec![(64, 28), (64, 7), (64, 7), (64, 7), (64, 7), (64, 7), (64, 7)], 0));
    // After two diffs in a row: the band is handed over with the second sweep's acks, and the
    // sweeps after it send nothing and trap nowhere (the pages stay writable). The home's reads
    // pull it back in 7 runs (1, 2, 4, 8, 16, 31 and 2 pages).
    let (sweeps, pulls) = sweeps_of(2);
    assert_eq!((sweeps, pulls), (vec![(64, 28), (64, 7), (0, 0), (0, 0), (0, 0), (0, 0), (64, 7)], 7));
}

// ----- classification: what survives an acquire -----

#[test]
fn private_and_read_only_pages_survive_acquires() {
    // Page 0: read-only (written by its home before sharing). Page 1: private to node 1, homed
    // at node 0. Page 2: every node writes its own bytes (false sharing).
    let mut c = Cluster::new(4, 3, 0, |pg, b| match pg {
        0 => Guard::ReadOnly,
        1 => Guard::Private(1),
        _ => Guard::Private(b % 4),
    });
    for round in 0..10u8 {
        for k in 0..4 {
            c.write(k, 2, k, round + 1);
            if k == 1 {
                c.write(1, 1, usize::from(round), round + 1);
            }
            assert_eq!(c.read(k, 0, 3), c.latest(0)[3]);
        }
        for k in 0..4 {
            c.release_sync(k);
        }
        for k in 0..4 {
            c.acquire(k);
        }
        for k in 1..4 {
            assert_eq!(c.prot(k, 0), Access::Read, "node {k} lost its read-only copy");
        }
        assert_ne!(c.prot(1, 1), Access::None, "node 1 lost its private copy");
    }
    for k in 1..4 {
        assert_eq!(c.installs(k, 0), 1, "node {k} fetched the read-only page again");
    }
    assert_eq!(c.installs(1, 1), 1, "node 1 fetched its private page again");
    assert_eq!(c.node(0).sharing(p(0)), Some(Sharing::Shared([n(1), n(2), n(3)].into())));
    assert_eq!(c.node(0).sharing(p(1)), Some(Sharing::Private(n(1))));
    // The falsely shared page, written by everyone, is refetched after each round's acquire.
    assert!(c.installs(1, 2) >= 9);
    assert!(c.nodes().iter().all(LrcNode::is_quiescent));
}

#[test]
fn false_sharing_needs_no_transfer_per_write() {
    // Four nodes take turns writing their own bytes of one page (homed at node 0), then all
    // release and acquire. Under the single-writer protocol every turn moves the page; here each
    // node fetches it once, writes locally, and sends one diff at its release.
    let run = |rounds: usize, sc: bool| {
        let guard = move |_, b: usize| if sc { Guard::Counter } else { Guard::Private(b % 4) };
        let mut c = Cluster::new(4, 1, 0, guard);
        for i in 0..rounds {
            for k in 0..4 {
                c.write(k, 0, k + 4 * (i % 8), i as u8);
            }
        }
        for k in 0..4 {
            c.release_sync(k);
        }
        for k in 0..4 {
            c.acquire(k);
        }
        let sent = c.sent_counts();
        c.final_check();
        sent
    };
    let few = run(1, false);
    let many = run(100, false);
    assert_eq!(few, many, "messages grow with the number of writes");
    let count = |kind| many.get(kind).copied().unwrap_or(0);
    assert_eq!((count("Fetch"), count("Page"), count("Diff"), count("DiffAck")), (3, 3, 3, 3));
    // The home's release notifies nodes 1 to 3 (its writes came after their fetches); their
    // diffs then find nobody else left in the copyset.
    assert_eq!(count("Notice"), 3, "{many:?}");
    assert_eq!(many.values().sum::<usize>(), 18, "{many:?}");
    // The same turns under the single-writer protocol: the page moves for nearly every write.
    let sc = run(100, true);
    assert_eq!((sc.get("ScData").copied(), sc.values().sum::<usize>()), (Some(599), 1198), "{sc:?}");
}

// ----- sequentially consistent pages -----

#[test]
fn sc_pages_are_single_writer() {
    let mut c = Cluster::new(3, 1, 0, page_of(Guard::Counter));
    assert!(c.nodes().iter().all(|k| k.is_sc(p(1))));
    c.obtain(1, 0, WRITE);
    assert_eq!(c.prot(0, 0), Access::None);
    c.obtain(2, 0, WRITE);
    assert_eq!(c.prot(1, 0), Access::None);
    assert_eq!(c.sent("Fetch"), 0);
    assert!(c.sent("ScData") >= 2);
    c.obtain(1, 0, READ);
    c.obtain(0, 0, READ);
    assert_eq!((c.prot(0, 0), c.prot(1, 0), c.prot(2, 0)), (Access::Read, Access::Read, Access::Read));
}

#[test]
fn an_sc_page_leaves_only_after_a_release_and_opens_after_an_acquire() {
    // Page 0 holds plain data (homed at node 0), page 1 a flag (SC, homed at node 0). Node 2
    // holds an old copy of the data. Node 1 writes the data, then the flag; node 2 reads the
    // flag and then the data, with no lock: the flag's move is the synchronisation.
    let mut c = Cluster::new(3, 2, 0, |pg, _| if pg == 0 { Guard::Data(1) } else { Guard::Flag(1) });
    c.read(2, 0, 0);
    c.write(1, 0, 0, 5);
    c.obtain(1, 1, WRITE);
    c.poke(1, 1, 0, 1);
    // Node 2 asks for the flag; the home recalls it from node 1.
    c.fault(2, 1, READ);
    c.deliver(2, 0);
    // Node 1 closes the flag page at once, but its bytes wait for the release of the data.
    assert_eq!(
        c.deliver(0, 1),
        [protect(p(1), Access::Read), protect(p(0), Access::Read), send(0, Msg::Diff { page: p(0), seq: 0 })]
    );
    assert_eq!(c.node(1).access(p(1)), Access::Read);
    // Home: applies the diff, notifies node 2, which records the notice; then the diff's ack
    // lets the flag go.
    assert_eq!(c.deliver(1, 0), [Action::ApplyDiff { page: p(0) }, send(2, Msg::Notice { page: p(0) })]);
    c.deliver(0, 2);
    c.deliver(2, 0);
    assert_eq!(c.deliver(0, 1), [send(0, Msg::Sc(sc::Msg::RecallAck { page: p(1) }))]);
    c.deliver(1, 0);
    // Node 2 gets the flag: the acquire before it opens drops the stale data.
    assert_eq!(
        c.deliver(0, 2),
        [
            Action::Install { page: p(1) },
            protect(p(0), Access::None),
            protect(p(1), Access::Read),
            Action::Wake { page: p(1) },
        ]
    );
    assert_eq!(c.bytes(2, 1)[0], 1);
    assert_eq!(c.read(2, 0, 0), 5);
}

#[test]
fn the_home_of_an_sc_page_releases_before_serving_it() {
    // Node 0 is home of both pages: it writes data a reader holds, then its flag.
    let mut c = Cluster::new(2, 2, 0, |pg, _| if pg == 1 { Guard::Flag(0) } else { Guard::Data(0) });
    c.read(1, 0, 0);
    c.write(0, 0, 0, 3);
    c.poke(0, 1, 0, 1);
    c.fault(1, 1, READ);
    assert_eq!(c.deliver(1, 0), [protect(p(1), Access::Read), send(1, Msg::Notice { page: p(0) })]);
    c.deliver(0, 1);
    assert_eq!(
        c.deliver(1, 0),
        [Action::Send {
            to: n(1),
            msg: Msg::Sc(sc::Msg::Grant { page: p(1), access: Access::Read, data: true })
        }]
    );
    c.deliver(0, 1);
    assert_eq!(c.prot(1, 0), Access::None);
    assert_eq!(c.read(1, 0, 0), 3);
    // With nothing unreleased, the flag moves without delay.
    c.fault(0, 1, WRITE);
    c.pump();
    c.poke(0, 1, 0, 2);
    c.fault(1, 1, READ);
    c.deliver(1, 0);
    assert!(matches!(c.in_flight(0, 1).next().map(|pk| pk.msg), Some(Msg::Sc(sc::Msg::Grant { .. }))));
}

/// Found by fuzzing (`fuzz/corpus/lrc_protocol/`): while an SC page's messages are held back for
/// a release, every message this node sends about the page waits, so no correct peer can send it
/// the page's bytes. A broken peer's data used to be accepted, and its `Install` held back with
/// the rest, then emitted when the release completed, while handling a `DiffAck` that carries no
/// bytes (the runtime stops with "asked to install without its bytes").
#[test]
fn data_for_an_sc_page_whose_messages_are_held_is_rejected() {
    let config = LrcConfig::default().with_sc_pages(0..1);
    let mut nodes: Vec<LrcNode> = (0..3).map(|i| LrcNode::new(n(i), 3, 1, config.clone())).collect();
    let mut out = Vec::new();
    let mut handle = |nodes: &mut Vec<LrcNode>, to: usize, from: u16, msg: Msg| {
        out.clear();
        nodes[to].handle(n(from), msg, &mut out).expect("accepted");
        out.clone()
    };
    // Node 0, home of SC page 0, writes page 2 (homed at node 2): its copy is dirty.
    let mut local = Vec::new();
    nodes[0].fault(p(2), WRITE, &mut local);
    handle(&mut nodes, 2, 0, Msg::Fetch { page: p(2), count: 1 });
    handle(&mut nodes, 0, 2, Msg::Page { page: p(2) });
    // Node 1 asks for page 0: its grant waits for node 0's release of page 2.
    local.clear();
    nodes[1].fault(p(0), WRITE, &mut local);
    assert_eq!(
        handle(&mut nodes, 0, 1, Msg::Sc(sc::Msg::WriteReq { page: p(0) })),
        [protect(p(0), Access::None), protect(p(2), Access::Read), send(2, Msg::Diff { page: p(2), seq: 0 })]
    );
    // Node 0's own read of page 0 recalls it from node 1: held back too.
    local.clear();
    nodes[0].fault(p(0), READ, &mut local);
    assert_eq!(local, []);
    // Node 1 has neither the grant nor the recall: page 0's bytes from it answer nothing.
    assert_rejected(&nodes[0], 1, Msg::Sc(sc::Msg::RecallAck { page: p(0) }));
    assert_rejected(&nodes[0], 1, Msg::Sc(sc::Msg::Grant { page: p(0), access: Access::Write, data: true }));
    // The release completes and the held messages go, without any Install.
    handle(&mut nodes, 2, 0, Msg::Diff { page: p(2), seq: 0 });
    let actions = handle(&mut nodes, 0, 2, Msg::DiffAck { page: p(2), seq: 0 });
    assert_eq!(
        actions,
        [
            Action::Send {
                to: n(1),
                msg: Msg::Sc(sc::Msg::Grant { page: p(0), access: Access::Write, data: true })
            },
            send(1, Msg::Sc(sc::Msg::Recall { page: p(0), keep_read: true })),
        ]
    );
}

// ----- becoming SC at run time -----

#[test]
fn set_sc_on_a_pristine_page_at_its_home_is_silent() {
    let mut c = Cluster::new(2, 1, 0, page_of(Guard::Counter));
    let mut c2 = Cluster::new(2, 1, 0, page_of(Guard::Lock(0)));
    assert_eq!(c2.set_sc(0, 0), []);
    assert!(c2.node(0).is_sc(p(0)));
    assert!(!c2.node(1).is_sc(p(0)));
    // Node 1 learns it from the answer to its fetch and asks again through the SC protocol.
    c2.fault(1, 0, WRITE);
    assert_eq!(c2.deliver(1, 0), [send(1, Msg::ScPage { page: p(0) })]);
    assert_eq!(c2.deliver(0, 1), [send(0, Msg::Sc(sc::Msg::WriteReq { page: p(0) }))]);
    c2.pump();
    assert_eq!((c2.prot(0, 0), c2.prot(1, 0)), (Access::None, Access::Write));
    // The same as a page SC from the start.
    c.obtain(1, 0, WRITE);
    assert_eq!((c.prot(0, 0), c.prot(1, 0)), (Access::None, Access::Write));
}

#[test]
fn a_prefetch_and_a_make_sc_are_answered_separately() {
    let mut c = Cluster::new(2, 2, 1, page_of(Guard::Lock(0)));
    assert_eq!(c.fault(1, 0, READ), [send(0, Msg::Fetch { page: p(0), count: 2 })]);
    assert_eq!(c.set_sc(1, 1), [send(0, Msg::MakeSc { page: p(1) })]);
    // The home made page 1 SC before the fetch arrived: both get a ScPage.
    c.set_sc(0, 1);
    assert_eq!(
        c.deliver(1, 0),
        [protect(p(0), Access::Read), send(1, Msg::Page { page: p(0) }), send(1, Msg::ScPage { page: p(1) })]
    );
    assert_eq!(c.deliver(1, 0), [send(1, Msg::ScPage { page: p(1) })]);
    c.deliver(0, 1);
    c.deliver(0, 1);
    assert!(c.node(1).is_sc(p(1)) && !c.node(1).is_quiescent());
    c.deliver(0, 1);
    assert!(c.nodes().iter().all(LrcNode::is_quiescent));
    c.obtain(1, 1, WRITE);
}

#[test]
fn converting_a_shared_page_keeps_every_write() {
    // Three nodes write their own bytes of page 0 (homed at node 0) in release-consistent mode;
    // node 2 then asks for the page to become SC while nodes 1 and 2 have unreleased writes.
    let mut c = Cluster::new(3, 1, 0, |_, b| Guard::Private(b % 3));
    c.write(0, 0, 0, 10);
    c.write(1, 0, 1, 11);
    c.write(2, 0, 2, 12);
    c.release_sync(0);
    c.write(1, 0, 4, 14);
    assert_eq!(c.set_sc(2, 0), [send(0, Msg::MakeSc { page: p(0) })]);
    // Until the home answers, node 2 keeps its copy; it is still writable.
    assert_eq!(c.fault(2, 0, WRITE), [Action::Wake { page: p(0) }]);
    assert_eq!(c.deliver(2, 0), [send(1, Msg::Convert { page: p(0) }), send(2, Msg::Convert { page: p(0) })]);
    assert_eq!(
        c.deliver(0, 1),
        [
            protect(p(0), Access::None),
            send(0, Msg::Diff { page: p(0), seq: 0 }),
            send(0, Msg::ConvertAck { page: p(0) }),
        ]
    );
    c.deliver(0, 2);
    c.deliver(1, 0);
    c.deliver(1, 0);
    assert!(!c.node(0).is_sc(p(0)));
    c.deliver(2, 0);
    c.deliver(2, 0);
    assert!(c.node(0).is_sc(p(0)));
    c.pump();
    assert_eq!(&c.bytes(0, 0)[..5], &[10, 11, 12, 0, 14]);
    assert_eq!(c.prot(0, 0), Access::Write);
    // From now on the page is single-writer.
    c.obtain(1, 0, WRITE);
    assert_eq!((c.prot(0, 0), c.prot(1, 0), c.prot(2, 0)), (Access::None, Access::Write, Access::None));
    assert_eq!(c.read(2, 0, 4), 14);
    assert!(c.nodes().iter().all(LrcNode::is_quiescent));
    // Asking again changes nothing.
    assert_eq!(c.set_sc(0, 0), []);
    assert_eq!(c.set_sc(1, 0), []);
}

#[test]
fn a_conversion_is_a_notice_round() {
    // Releases that reach the home while it converts a page must not complete before every
    // node has dropped its copy: a node that has not seen `Convert` yet still holds an old copy
    // no notice will ever reach, and a node synchronising with the release could read it.
    let mut c = Cluster::read_by(3, &[1, 2]);
    // The home writes while both hold current copies, starts converting, then releases.
    c.write(0, 0, 0, 7);
    c.set_sc(0, 0);
    let (home_release, out) = c.release(0);
    assert_eq!(out, []);
    // Node 1, which has not heard of the conversion yet, writes and releases too.
    assert_eq!(c.fault(1, 0, WRITE), twinned(p(0)));
    c.poke(1, 0, 2, 8);
    let (release, _) = c.release(1);
    assert_eq!(c.deliver(1, 0), [Action::ApplyDiff { page: p(0) }]);
    c.deliver(0, 1);
    c.deliver(1, 0);
    assert!(c.outstanding(0) == 1 && c.outstanding(1) == 1);
    assert_eq!(c.prot(2, 0), Access::Read);
    c.deliver(0, 2);
    assert_eq!(c.prot(2, 0), Access::None);
    let out = c.deliver(2, 0);
    assert!(out.contains(&send(1, Msg::DiffAck { page: p(0), seq: 0 })), "{out:?}");
    assert!(out.contains(&Action::Released { release: home_release }), "{out:?}");
    c.deliver(0, 1);
    assert!(c.released(1, release));
    assert_eq!((c.read(2, 0, 0), c.read(2, 0, 2)), (7, 8));
}

#[test]
fn faults_during_a_conversion_wait_for_it() {
    let mut c = Cluster::new(3, 1, 0, |_, b| Guard::Private(b % 3));
    c.read(1, 0, 0);
    assert_eq!(c.prot(0, 0), Access::Read);
    c.set_sc(0, 0);
    // A write at the home waits for the conversion.
    assert_eq!(c.fault(0, 0, WRITE), []);
    // Node 1 does not know yet: its write is a release-consistent one, flushed by the conversion.
    assert_eq!(c.fault(1, 0, WRITE), twinned(p(0)));
    c.poke(1, 0, 1, 7);
    // Node 2 has no copy and fetches: the home answers ScPage, after its Convert; node 2's
    // thread waits for an SC grant meanwhile.
    assert_eq!(c.fault(2, 0, READ), [send(0, Msg::Fetch { page: p(0), count: 1 })]);
    c.pump();
    assert!(c.nodes().iter().all(|k| k.is_sc(p(0))));
    // The home's parked write was served when the conversion completed; node 2's SC request,
    // sent after its ConvertAck, came next and made the home share the page.
    assert_eq!(c.installs(2, 0), 1);
    assert_eq!((c.prot(0, 0), c.prot(1, 0), c.prot(2, 0)), (Access::Read, Access::None, Access::Read));
    assert_eq!(c.bytes(0, 0)[1], 7);
    assert!(c.nodes().iter().all(LrcNode::is_quiescent));
}

// ----- malformed input -----

/// Hands `msg` from `from` to a copy of `node` and checks it is rejected without any effect.
fn assert_rejected(node: &LrcNode, from: u16, msg: Msg) {
    sim::assert_rejected(node, n(from), msg);
}

#[test]
fn malformed_messages_are_rejected_without_effect() {
    let mut c = Cluster::new(3, 2, 0, |pg, _| if pg == 5 { Guard::Counter } else { Guard::Lock(0) });
    c.read(1, 0, 0);
    c.write(2, 0, 0, 1);
    c.release(2);
    c.deliver(2, 0); // notice to node 1 outstanding
    let page = p(0);
    let home = c.node(0);
    assert_rejected(home, 1, Msg::Fetch { page: p(6), count: 1 }); // out of range
    assert_rejected(home, 1, Msg::Fetch { page: p(u64::MAX), count: 1 });
    assert_rejected(home, 1, Msg::Fetch { page, count: 0 });
    assert_rejected(home, 1, Msg::Fetch { page, count: MAX_PREFETCH + 2 });
    assert_rejected(home, 1, Msg::Fetch { page: p(1), count: 2 }); // runs into node 1's pages
    assert_rejected(home, 2, Msg::Fetch { page, count: 1 }); // holds a current copy
    assert_rejected(home, 0, Msg::Fetch { page: p(1), count: 1 }); // from itself
    assert_rejected(home, 3, Msg::Fetch { page: p(1), count: 1 }); // outside the cluster
    assert_rejected(home, 1, Msg::Fetch { page: p(2), count: 1 }); // not the home
    assert_rejected(home, 1, Msg::Page { page }); // pages come from homes
    assert_rejected(home, 1, Msg::Diff { page: p(1), seq: 0 }); // never fetched
    assert_rejected(home, 1, Msg::Diff { page: p(2), seq: 0 }); // not the home
    assert_rejected(home, 2, Msg::DiffAck { page, seq: 0 });
    assert_rejected(home, 2, Msg::NoticeAck { page }); // node 2 was not notified
    assert_rejected(home, 1, Msg::NoticeAck { page: p(1) });
    assert_rejected(home, 1, Msg::ConvertAck { page });
    assert_rejected(home, 1, Msg::Convert { page }); // homes do not convert their own pages' copies
    assert_rejected(home, 1, Msg::MakeSc { page: p(2) });
    assert_rejected(home, 1, Msg::Sc(sc::Msg::ReadReq { page })); // not an SC page
    assert_rejected(home, 1, Msg::Notice { page: p(2) }); // holds no copy
    assert_rejected(home, 2, Msg::ScPage { page: p(2) }); // asked for nothing

    let reader = c.node(1);
    assert_rejected(reader, 0, Msg::Page { page }); // not fetching
    assert_rejected(reader, 0, Msg::ScPage { page });
    assert_rejected(reader, 2, Msg::Notice { page }); // not from the home
    assert_rejected(reader, 0, Msg::DiffAck { page, seq: 0 }); // no diff sent
    assert_rejected(reader, 0, Msg::Sc(sc::Msg::Invalidate { page: p(5) })); // holds nothing
    assert_rejected(reader, 2, Msg::Convert { page: p(5) }); // already SC
    assert_rejected(reader, 0, Msg::Fetch { page, count: 1 }); // not the home
    // The notice is on its way; a second one is impossible.
    let mut noticed = c.node(1).clone();
    noticed.handle(n(0), Msg::Notice { page }, &mut Vec::new()).expect("first notice");
    assert_rejected(&noticed, 0, Msg::Notice { page });

    let writer = c.node(2);
    assert_rejected(writer, 0, Msg::DiffAck { page, seq: 1 }); // wrong number
    assert_rejected(writer, 1, Msg::DiffAck { page, seq: 0 }); // not from the home
    assert_rejected(writer, 0, Msg::DiffAck { page: p(1), seq: 0 }); // wrong page
    c.pump();
    assert!(c.nodes().iter().all(LrcNode::is_quiescent));

    // During a conversion, only first SC requests are queued.
    c.set_sc(0, 1);
    c.fault(1, 1, READ); // fetch in flight... answered after the conversion starts
    c.pump();
    c.read(1, 0, 0);
    c.set_sc(0, 0);
    let converting = c.node(0);
    assert_rejected(converting, 1, Msg::Sc(sc::Msg::InvAck { page }));
    let mut queued = converting.clone();
    queued.handle(n(1), Msg::Sc(sc::Msg::ReadReq { page }), &mut Vec::new()).expect("queued");
    assert_rejected(&queued, 1, Msg::Sc(sc::Msg::WriteReq { page }));
    assert_rejected(converting, 1, Msg::ConvertAck { page: p(1) });
    c.pump();
    assert!(c.nodes().iter().all(LrcNode::is_quiescent));
}

// ----- randomized programs -----

impl Cluster {
    /// A random task for thread `t` of `node`, from what the program has.
    fn new_task(&mut self, rng: &mut Rng, node: usize, t: usize, set_sc_chance: u64) {
        let mut steps = Vec::new();
        let ops = 1 + rng.below(5);
        let at = |(pg, b): (usize, usize)| (pg as u8, b as u8);
        let rw = |rng: &mut Rng, byte| {
            let (pg, b) = at(byte);
            if rng.percent(50) { Op::Read(pg, b) } else { Op::Write(pg, b) }
        };
        let l = &self.layout;
        match rng.below(10) {
            0..=3 if !l.guarded.is_empty() => {
                let lock = rng.below(l.guarded.len());
                steps.push(Op::Lock(lock as u8));
                for _ in 0..ops {
                    let byte = rng.pick(&l.guarded[lock]);
                    steps.push(rw(rng, byte));
                }
                steps.push(Op::Unlock(lock as u8));
            }
            4 if !l.private[node].is_empty() => {
                for _ in 0..ops {
                    let byte = rng.pick(&l.private[node]);
                    steps.push(rw(rng, byte));
                }
            }
            5 if !l.read_only.is_empty() => {
                for _ in 0..ops {
                    let (pg, b) = at(rng.pick(&l.read_only));
                    steps.push(Op::Read(pg, b));
                }
            }
            6 if !l.counters.is_empty() => {
                for _ in 0..ops {
                    let (pg, b) = at(rng.pick(&l.counters));
                    steps.push(Op::Atomic(pg, b));
                }
            }
            7 if l.flag[node].is_some() => {
                let data = l.data[node].expect("data byte");
                // One thread per node publishes, so that data and flag rise in step.
                if t == 0 && self.latest(data.0)[data.1] < 200 {
                    let ((dp, db), (fp, fb)) = (at(data), at(l.flag[node].expect("flag byte")));
                    steps.extend([Op::Increment(dp, db), Op::Publish(fp, fb)]);
                } else {
                    let j = rng.below(self.count());
                    let ((dp, db), (fp, fb)) =
                        (at(l.data[j].expect("data byte")), at(l.flag[j].expect("flag byte")));
                    steps.extend([Op::Observe(fp, fb), Op::ReadAtLeast(dp, db)]);
                }
            }
            8..=9 if set_sc_chance > 0 && rng.percent(set_sc_chance) && !l.mixed_pages.is_empty() => {
                let pages: Vec<usize> = l.mixed_pages.iter().copied().collect();
                steps.push(Op::MakeSc(rng.pick(&pages) as u8));
            }
            _ => steps.push(if rng.percent(50) { Op::Acquire } else { Op::Release }),
        }
        self.app.give(node, t, steps);
    }

    /// Thread `t` of `node` takes its next step if it can; returns whether it did.
    fn step(&mut self, node: usize, t: usize) -> bool {
        self.app.step(&mut self.sim, node, t)
    }

    /// A busy link, picked with the links' speeds as weights.
    fn pick_link(&self, rng: &mut Rng, busy: &[usize]) -> usize {
        let total: u64 = busy.iter().map(|&l| self.speed[l]).sum();
        let mut x = rng.next_u64() % total.max(1);
        for &l in busy {
            if x < self.speed[l] {
                return l;
            }
            x -= self.speed[l];
        }
        busy[0]
    }

    /// Random steps and random deliveries; then drains and checks the final memory. Returns how
    /// many steps were taken.
    fn run(&mut self, rng: &mut Rng, steps: usize, set_sc_chance: u64) -> u64 {
        let deliver_bias = 30 + rng.below(40) as u64;
        let threads = self.threads(0);
        for speed in &mut self.speed {
            *speed = [1, 1, 20, 400][rng.below(4)];
        }
        let mut taken = 0;
        for _ in 0..steps {
            let busy = self.busy();
            if !busy.is_empty() && rng.percent(deliver_bias) {
                let link = self.pick_link(rng, &busy);
                self.deliver_link(link);
            } else {
                let node = rng.below(self.count());
                let t = rng.below(threads);
                if self.app.idle(&self.sim, node, t) {
                    self.new_task(rng, node, t, set_sc_chance);
                }
                taken += u64::from(self.step(node, t));
            }
            self.check();
        }
        self.drain(rng);
        self.final_check();
        taken
    }

    /// No new tasks: deliveries and steps until every thread has finished its task.
    fn drain(&mut self, rng: &mut Rng) {
        let threads = self.threads(0);
        let mut idle_rounds = 0;
        for _ in 0..200_000 {
            let busy = self.busy();
            let all_idle = (0..self.count()).all(|k| (0..threads).all(|t| self.app.idle(&self.sim, k, t)));
            if busy.is_empty() && all_idle {
                return;
            }
            if !busy.is_empty() && rng.percent(50) {
                let link = self.pick_link(rng, &busy);
                self.deliver_link(link);
                idle_rounds = 0;
            } else if self.step(rng.below(self.count()), rng.below(threads)) {
                idle_rounds = 0;
            } else {
                idle_rounds += 1;
                assert!(
                    !busy.is_empty() || idle_rounds <= 10_000,
                    "no progress while draining: {:?}",
                    self.app
                );
            }
            self.check();
        }
        panic!("drain never ends");
    }

    /// Every node releases, then acquires; every byte read anywhere must then be the last value
    /// written, and the homes of release-consistent pages must hold it already (or, for a page
    /// handed over, its owner, the home's copy being closed).
    fn final_check(&mut self) {
        for k in 0..self.count() {
            self.release_sync(k);
        }
        for k in 0..self.count() {
            self.acquire(k);
        }
        self.pump();
        for pg in 0..self.pages() {
            let home = self.home(pg);
            if !self.node(home).is_sc(p(pg as u64)) {
                let holder = self.node(home).owner(p(pg as u64)).map_or(home, NodeId::index);
                if holder != home {
                    assert_eq!(self.prot(home, pg), Access::None, "home {home} of page {pg}, handed over");
                }
                assert_eq!(self.bytes(holder, pg), self.latest(pg), "{holder}, holder of page {pg}");
            }
        }
        for k in 0..self.count() {
            for pg in 0..self.pages() {
                for b in 0..PAGE {
                    let value = self.read(k, pg, b);
                    let what = self.guard[pg][b];
                    assert_eq!(value, self.latest(pg)[b], "node {k} reads {what:?} byte {pg}:{b} at the end");
                }
            }
        }
        self.pump();
        assert!(self.quiescent(), "not quiescent at the end: {:?}", self.sim);
    }
}

/// A random message: any kind, any page (mostly in range), any sequence number, count and flags.
fn random_msg(rng: &mut Rng, page_count: u64) -> Msg {
    let mut byte = || rng.below(256) as u8;
    let (tag, page, arg, seq) = (byte(), byte(), byte(), byte());
    sim::lrc::any_msg(tag, any_page(page, page_count), arg, seq)
}

#[test]
fn garbage_never_panics_and_errors_change_nothing() {
    // Garbage thrown at copies of the nodes of a correctly running cluster.
    for seed in 0..12u64 {
        let mut rng = Rng::new(500 + seed);
        let mut c = mixed_cluster(3, 0).with_threads(2);
        for _ in 0..150 {
            let busy = c.busy();
            if !busy.is_empty() && rng.percent(50) {
                c.deliver_link(rng.pick(&busy));
            } else {
                let (k, t) = (rng.below(3), rng.below(2));
                if c.app.idle(&c.sim, k, t) {
                    c.new_task(&mut rng, k, t, 5);
                }
                c.step(k, t);
            }
            sim::throw_garbage(&c, &mut rng, 5, random_msg);
        }
    }
    sim::fuzz::random_inputs::<LrcNode>(9_000, 12, 4_000);
}

/// A program over `nodes * 4` pages: per node one read-only page, one page of bytes guarded by
/// locks and private bytes mixed, one page with the nodes' published data (false sharing), and
/// one page per home alternating between SC counters and SC flags.
fn mixed_cluster(nodes: u16, prefetch: u16) -> Cluster {
    let count = usize::from(nodes);
    Cluster::new(nodes, 4, prefetch, move |pg, b| match pg % 4 {
        0 => Guard::ReadOnly,
        1 => {
            if b % 4 == 0 {
                Guard::Private((b / 4 + pg) % count)
            } else {
                Guard::Lock((pg * 3 + b) % 5)
            }
        }
        2 if pg == 2 && b < count => Guard::Data(b),
        2 => Guard::Lock((pg + b) % 5),
        _ if pg == 3 && b < count => Guard::Flag(b),
        _ => Guard::Counter,
    })
}

/// Adds `c`'s message counts to `totals`.
fn add_counts(totals: &mut BTreeMap<&'static str, usize>, c: &Cluster) {
    for (kind, count) in c.sent_counts() {
        *totals.entry(kind).or_default() += count;
    }
}

#[test]
fn random_data_race_free_programs_see_every_write() {
    let mut totals = BTreeMap::new();
    let mut steps = 0;
    for seed in 0..100u64 {
        let mut rng = Rng::new(seed);
        let nodes = 2 + (seed % 3) as u16;
        let prefetch = (seed % 4) as u16;
        let mut c = mixed_cluster(nodes, prefetch)
            .with_threads(2)
            .owning_after((seed % 3) as u8)
            .refreshing(seed % 2 == 1);
        steps += c.run(&mut rng, 2_000, 0);
        add_counts(&mut totals, &c);
    }
    assert!(steps > 70_000, "{steps} steps");
    // The runs went through every part of the protocol, many times.
    for kind in ["Fetch", "Page", "Diff", "Notice", "ScData", "ScControl"] {
        assert!(totals.get(kind).copied().unwrap_or(0) > 2_000, "{totals:?}");
    }
    for kind in ["Own", "Pull", "Yield"] {
        assert!(totals.get(kind).copied().unwrap_or(0) > 200, "{totals:?}");
    }
}

#[test]
fn random_programs_with_pages_becoming_sc() {
    let mut totals = BTreeMap::new();
    for seed in 0..60u64 {
        let mut rng = Rng::new(1_000 + seed);
        let nodes = 2 + (seed % 3) as u16;
        let mut c = mixed_cluster(nodes, (seed % 3) as u16)
            .with_threads(2)
            .owning_after((seed % 2) as u8)
            .refreshing(seed % 4 < 2);
        c.run(&mut rng, 2_000, 10);
        add_counts(&mut totals, &c);
    }
    for kind in ["MakeSc", "Convert", "Notice", "ScData"] {
        assert!(totals.get(kind).copied().unwrap_or(0) > 20, "{totals:?}");
    }
}

#[test]
fn random_conversions_under_locks() {
    // Many pages of lock-guarded and private bytes, converted to SC one after another while
    // critical sections run on them: releases that race with a conversion must still order
    // every write before the next holder's reads.
    let mut totals = BTreeMap::new();
    for seed in 0..std::env::var("SEEDS").map_or(40, |v| v.parse().unwrap()) {
        let mut rng = Rng::new(5_000 + seed);
        let nodes = 3 + (seed % 2) as u16;
        let count = usize::from(nodes);
        let mut c = Cluster::new(nodes, 6, (seed % 2) as u16, move |pg, b| {
            if b % 8 == 0 { Guard::Private((b / 8 + pg) % count) } else { Guard::Lock((pg + b) % 3) }
        })
        .with_threads(2)
        .owning_after((seed % 3) as u8)
        .refreshing(seed % 2 == 0);
        c.run(&mut rng, 3_000, 30);
        add_counts(&mut totals, &c);
    }
    assert!(totals.get("Convert").copied().unwrap_or(0) > 500, "{totals:?}");
}

/// The same random programs find the planted mistakes of write notices: the simulation's checks
/// catch them. (`Bug::DiffAckDuringConversion` needs a diff to meet a conversion and a lock
/// handed on before a `Convert` arrives: only the model check finds it, see `model.rs`.)
#[test]
fn random_programs_find_the_planted_bugs() {
    for bug in [Bug::NoticeWithoutStale, Bug::DiffAckBeforeNotices] {
        let found = (0..40u64).find(|&seed| {
            let run = || {
                let mut c = mixed_cluster(3, 0).with_threads(2);
                c.nodes_mut().iter_mut().for_each(|node| node.inject(bug));
                c.run(&mut Rng::new(seed), 1_000, 0);
            };
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err()
        });
        assert!(found.is_some(), "{bug:?} goes unnoticed");
    }
}

#[test]
fn a_fetch_says_how_many_pages_it_may_bring() {
    use crate::protocol::Message;
    let page = PageId(3);
    assert_eq!(Msg::Fetch { page, count: 1 }.fetches(), 1);
    assert_eq!(Msg::Fetch { page, count: 9 }.fetches(), 9);
    assert_eq!(
        Msg::Sc(sc::Msg::ReadReq { page }).fetches(),
        1,
        "a request of a page kept sequentially consistent"
    );
    assert_eq!(Msg::Sc(sc::Msg::Invalidate { page }).fetches(), 0);
    assert_eq!(Msg::Page { page }.fetches(), 0);
    assert_eq!(Msg::ScPage { page }.fetches(), 0);
}
