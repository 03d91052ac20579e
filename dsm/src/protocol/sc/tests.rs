//! Tests of the sequentially consistent protocol, run in the simulated cluster ([`crate::sim`]):
//! single transactions with their exact actions, queuing, randomized schedules, malformed input.
//! Every call's actions are carried out and checked by the simulation, and the protocol's
//! invariants (`sim::sc`) are checked after each.

use std::ops::{Deref, DerefMut};

use super::{Access, Action, Bug, Directory, FaultKind, Msg, NodeId, PageId, ScNode};
use crate::protocol::Coherence;
use crate::sim::expect::{arrives, opens, protect, send};
use crate::sim::fuzz::page_of;
use crate::sim::rng::Rng;
use crate::sim::{self, Sim, Spec, Wait, sc::attempt};

const READ: FaultKind = FaultKind::Read;
const WRITE: FaultKind = FaultKind::Write;

fn n(i: u16) -> NodeId {
    NodeId(i)
}

fn p(i: u64) -> PageId {
    PageId(i)
}

fn shared(nodes: &[u16]) -> Directory {
    Directory::Shared(nodes.iter().map(|&i| NodeId(i)).collect())
}

/// The simulated cluster, with the shorthands these tests use.
struct Cluster(Sim<ScNode>);

impl Deref for Cluster {
    type Target = Sim<ScNode>;
    fn deref(&self) -> &Sim<ScNode> {
        &self.0
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Sim<ScNode> {
        &mut self.0
    }
}

impl Cluster {
    /// `nodes` nodes, `per_node` pages homed at each, the first `pages` of them simulated (pages
    /// of 8 bytes: one number), `threads` threads per node.
    fn new(nodes: u16, per_node: u64, pages: u64, threads: usize) -> Self {
        let states: Vec<ScNode> =
            (0..nodes).map(|i| ScNode::new(n(i), nodes, per_node).with_drops(true)).collect();
        let pages = pages.min(states[0].geometry().page_count()) as usize;
        Cluster(Sim::new(states, pages, 8, &vec![threads; usize::from(nodes)]).record())
    }

    /// As [`Cluster::new`], every node with read-ahead up to `max` pages.
    fn read_ahead(nodes: u16, per_node: u64, pages: u64, max: u16) -> Self {
        let states: Vec<ScNode> =
            (0..nodes).map(|i| ScNode::new(n(i), nodes, per_node).with_read_ahead(max)).collect();
        Cluster(Sim::new(states, pages as usize, 8, &vec![1; usize::from(nodes)]).record())
    }

    /// A local fault; returns the actions (already carried out).
    fn fault(&mut self, node: usize, page: u64, kind: FaultKind) -> Vec<Action> {
        self.0.fault(node, p(page), kind, false)
    }

    /// Thread `t` of `node` tries its access (see [`attempt`]).
    fn attempt(&mut self, node: usize, t: usize, page: PageId, kind: FaultKind) -> bool {
        attempt(&mut self.0, node, t, page, kind)
    }

    /// Runs one access on thread 0 of `node` to completion, delivering messages as needed.
    fn op(&mut self, node: usize, page: u64, kind: FaultKind) {
        let mut done = self.attempt(node, 0, p(page), kind);
        for _ in 0..100 {
            if done {
                return;
            }
            self.pump();
            match self.wait(node, 0) {
                Wait::Woken(q, k) => done = self.attempt(node, 0, q, k),
                other => panic!("after delivering everything, thread is {other:?}"),
            }
        }
        panic!("access never completes");
    }

    /// Three nodes homing a page each, one thread each, after the `(node, kind)` accesses to page 0
    /// were made, one after the other.
    fn after(accesses: &[(usize, FaultKind)]) -> Self {
        let mut c = Cluster::new(3, 1, 3, 1);
        for &(node, kind) in accesses {
            c.op(node, 0, kind);
        }
        c
    }

    /// The woken thread 0 of `node` retries its `kind` access of page 0 and completes it; then
    /// nothing is left in progress.
    fn finish(&mut self, node: usize, kind: FaultKind) {
        assert!(self.attempt(node, 0, p(0), kind));
        self.assert_quiescent();
    }

    /// The protocol's invariants (also checked after every call).
    fn check(&self) {
        ScNode::invariants(self).unwrap();
    }

    /// The grants delivered so far, in delivery order: (receiver, access).
    fn grants(&self) -> Vec<(u16, Access)> {
        let grants = self.log.delivered.iter();
        grants
            .filter_map(
                |&(to, m)| if let Msg::Grant { access, .. } = m { Some((to.0, access)) } else { None },
            )
            .collect()
    }

    fn assert_quiescent(&self) {
        assert!(self.quiescent(), "not quiescent: {:?}", self.0);
        self.check();
    }
}

// ----- single transactions -----

#[test]
fn layout_and_messages() {
    let node = ScNode::new(n(1), 3, 4);
    let geo = node.geometry();
    assert_eq!((geo.me, geo.nodes, geo.pages_per_node, geo.page_count()), (n(1), 3, 4, 12));
    let homes: Vec<u16> = (0..14).map(|i| geo.home_of(p(i)).0).collect();
    assert_eq!(homes, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
    assert_eq!(geo.home_of(p(u64::MAX)), n(2));
    assert_eq!(node.access(p(4)), Access::Write);
    assert_eq!(node.access(p(0)), Access::None);
    assert_eq!(node.access(p(12)), Access::None);
    assert_eq!(node.directory(p(5)), Some(Directory::Exclusive(n(1))));
    assert_eq!(node.directory(p(0)), None);
    assert!(node.is_quiescent());

    // Faults outside the space are ignored.
    let mut out = Vec::new();
    let mut copy = node.clone();
    copy.fault(p(12), WRITE, &mut out);
    copy.fault(p(u64::MAX), READ, &mut out);
    assert!(out.is_empty() && copy == node);

    let huge = ScNode::new(n(0), 3, u64::MAX).geometry();
    assert_eq!(huge.page_count(), u64::MAX);
    assert_eq!(huge.home_of(p(u64::MAX)), n(1));

    let page = p(7);
    let all = [
        Msg::ReadReq { page },
        Msg::WriteReq { page },
        Msg::Grant { page, access: Access::Read, data: true },
        Msg::Grant { page, access: Access::Write, data: false },
        Msg::Invalidate { page },
        Msg::InvAck { page },
        Msg::Recall { page, keep_read: true },
        Msg::RecallAck { page },
    ];
    let with_data: Vec<bool> = all.iter().map(Msg::carries_data).collect();
    assert_eq!(with_data, [false, false, true, false, false, false, false, true]);
    assert!(all.iter().all(|m| m.page() == page));
}

#[test]
fn fault_on_held_page_only_wakes() {
    let mut c = Cluster::new(2, 1, 2, 1);
    assert_eq!(c.fault(0, 0, WRITE), [Action::Wake { page: p(0) }]);
    assert_eq!(c.fault(0, 0, READ), [Action::Wake { page: p(0) }]);
    assert!(c.node(0).is_quiescent());
}

#[test]
fn remote_read_of_home_page() {
    let mut c = Cluster::after(&[(0, WRITE)]);
    assert_eq!(c.fault(1, 0, READ), [send(0, Msg::ReadReq { page: p(0) })]);
    assert_eq!(c.node(1).outstanding(p(0)), Some(READ));
    // A second thread faulting on the same page sends nothing more.
    assert_eq!(c.fault(1, 0, READ), []);
    assert_eq!(
        c.deliver(1, 0),
        [protect(p(0), Access::Read), send(1, Msg::Grant { page: p(0), access: Access::Read, data: true })]
    );
    assert_eq!(c.node(0).directory(p(0)), Some(shared(&[0, 1])));
    c.check();
    assert_eq!(c.deliver(0, 1), arrives(p(0), Access::Read));
    assert_eq!(c.bytes(1, 0), c.latest(0));
    assert_eq!(c.node(1).access(p(0)), Access::Read);
    c.assert_quiescent();
}

#[test]
fn remote_write_invalidates_reader() {
    let mut c = Cluster::after(&[(1, READ)]);
    assert_eq!(c.fault(2, 0, WRITE), [send(0, Msg::WriteReq { page: p(0) })]);
    assert_eq!(c.deliver(2, 0), [protect(p(0), Access::None), send(1, Msg::Invalidate { page: p(0) })]);
    assert!(c.node(0).in_transaction(p(0)));
    assert_eq!(c.deliver(0, 1), [protect(p(0), Access::None), send(0, Msg::InvAck { page: p(0) })]);
    assert_eq!(c.deliver(1, 0), [send(2, Msg::Grant { page: p(0), access: Access::Write, data: true })]);
    assert_eq!(c.node(0).directory(p(0)), Some(Directory::Exclusive(n(2))));
    assert_eq!(c.deliver(0, 2), arrives(p(0), Access::Write));
    c.finish(2, WRITE);
}

#[test]
fn recall_from_remote_owner() {
    let mut c = Cluster::new(3, 1, 3, 1);
    // A reader makes the owner downgrade; then a writer takes the page back from a new owner,
    // which drops its copy entirely.
    for (kind, kept, keep_read) in [(READ, Access::Read, true), (WRITE, Access::None, false)] {
        c.op(1, 0, WRITE);
        c.fault(2, 0, kind);
        assert_eq!(c.deliver(2, 0), [send(1, Msg::Recall { page: p(0), keep_read })]);
        assert_eq!(c.deliver(0, 1), [protect(p(0), kept), send(0, Msg::RecallAck { page: p(0) })]);
        // The home installs the bytes, keeps a read copy when it serves a reader, and grants.
        let mut home = vec![Action::Install { page: p(0) }];
        home.extend((kind == READ).then(|| protect(p(0), Access::Read)));
        home.push(send(2, Msg::Grant { page: p(0), access: kind.needed(), data: true }));
        assert_eq!(c.deliver(1, 0), home);
        let dir = if kind == READ { shared(&[0, 1, 2]) } else { Directory::Exclusive(n(2)) };
        assert_eq!(c.node(0).directory(p(0)), Some(dir));
        c.deliver(0, 2);
        c.finish(2, kind);
    }
}

#[test]
fn upgrade_without_data() {
    let mut c = Cluster::after(&[(1, READ)]);
    c.fault(1, 0, WRITE);
    assert_eq!(
        c.deliver(1, 0),
        [protect(p(0), Access::None), send(1, Msg::Grant { page: p(0), access: Access::Write, data: false })]
    );
    assert_eq!(c.deliver(0, 1), opens(p(0), Access::Write));
    c.finish(1, WRITE);
}

#[test]
fn home_fault_after_remote_took_page() {
    let mut c = Cluster::after(&[(1, WRITE)]);
    // The home reads: no message to itself, only the recall.
    assert_eq!(c.fault(0, 0, READ), [send(1, Msg::Recall { page: p(0), keep_read: true })]);
    assert_eq!(c.node(0).outstanding(p(0)), Some(READ));
    c.deliver(0, 1);
    assert_eq!(c.deliver(1, 0), arrives(p(0), Access::Read));
    assert_eq!(c.node(0).directory(p(0)), Some(shared(&[0, 1])));
    c.check();
    // The home upgrades: the remote reader goes, the home's own copy stays current.
    assert_eq!(c.fault(0, 0, WRITE), [send(1, Msg::Invalidate { page: p(0) })]);
    c.deliver(0, 1);
    assert_eq!(c.deliver(1, 0), opens(p(0), Access::Write));
    assert_eq!(c.node(0).directory(p(0)), Some(Directory::Exclusive(n(0))));
    c.finish(0, WRITE);

    // The home writes while a remote owner holds the page.
    c.op(2, 0, WRITE);
    assert_eq!(c.fault(0, 0, WRITE), [send(2, Msg::Recall { page: p(0), keep_read: false })]);
    c.deliver(0, 2);
    assert_eq!(c.deliver(2, 0), arrives(p(0), Access::Write));
    c.finish(0, WRITE);
}

#[test]
fn upgrade_races_with_another_writer() {
    let mut c = Cluster::after(&[(1, READ), (2, READ)]);
    c.fault(1, 0, WRITE);
    c.fault(2, 0, WRITE);
    // Node 1's upgrade is served first: node 2 is invalidated.
    assert_eq!(c.deliver(1, 0), [protect(p(0), Access::None), send(2, Msg::Invalidate { page: p(0) })]);
    // Node 2's upgrade arrives before its InvAck and waits.
    assert_eq!(c.deliver(2, 0), []);
    assert_eq!(c.node(0).queued(p(0)), 1);
    // Node 2 drops its copy but keeps waiting for write access.
    c.deliver(0, 2);
    assert_eq!(c.node(2).access(p(0)), Access::None);
    assert_eq!(c.node(2).outstanding(p(0)), Some(WRITE));
    // The ack completes node 1's upgrade (no data) and starts node 2's at once.
    assert_eq!(
        c.deliver(2, 0),
        [
            send(1, Msg::Grant { page: p(0), access: Access::Write, data: false }),
            send(1, Msg::Recall { page: p(0), keep_read: false }),
        ]
    );
    // Node 1 sees its grant before the recall (FIFO), and may write in between.
    c.deliver(0, 1);
    assert!(c.attempt(1, 0, p(0), WRITE));
    c.deliver(0, 1);
    c.deliver(1, 0);
    // Node 2 lost its copy, so it gets the bytes, including node 1's write.
    assert_eq!(c.deliver(0, 2), arrives(p(0), Access::Write));
    c.finish(2, WRITE);
}

// ----- queuing -----

#[test]
fn concurrent_requests_are_served_in_arrival_order() {
    let mut c = Cluster::new(5, 1, 5, 1);
    // Node 4 owns the page, so the first request needs a recall and the others must queue.
    c.op(4, 0, WRITE);
    for node in [1, 2, 3] {
        c.fault(node, 0, WRITE);
    }
    // Arrival order at the home: 3, 1, 2.
    c.deliver(3, 0);
    c.deliver(1, 0);
    c.deliver(2, 0);
    assert!(c.node(0).in_transaction(p(0)));
    assert_eq!(c.node(0).queued(p(0)), 2);
    c.pump();
    let order: Vec<(u16, Access)> = c.grants();
    assert_eq!(order, [(4, Access::Write), (3, Access::Write), (1, Access::Write), (2, Access::Write)]);
    assert_eq!(c.node(0).directory(p(0)), Some(Directory::Exclusive(n(2))));
    assert!(c.nodes().iter().all(ScNode::is_quiescent));
    c.check();
}

#[test]
fn mixed_queue_including_the_home() {
    let mut c = Cluster::new(4, 1, 4, 1);
    c.op(3, 0, WRITE);
    c.fault(1, 0, READ);
    c.fault(2, 0, WRITE);
    c.deliver(1, 0); // recall from 3 starts
    c.deliver(2, 0); // queued
    c.fault(0, 0, READ); // the home queues behind them
    c.fault(3, 0, READ); // node 3 still writable: satisfied, no request
    assert_eq!(c.node(3).outstanding(p(0)), None);
    assert_eq!(c.node(0).queued(p(0)), 2);
    c.pump();
    let order: Vec<(u16, Access)> = c.grants();
    // The home's own grant is local; the last remote grant went to node 2.
    assert_eq!(order, [(3, Access::Write), (1, Access::Read), (2, Access::Write)]);
    assert_eq!(c.node(0).access(p(0)), Access::Read);
    assert_eq!(c.node(0).directory(p(0)), Some(shared(&[0, 2])));
    assert!(c.nodes().iter().all(ScNode::is_quiescent));
    c.check();
}

// ----- randomized schedules -----

/// What a random run did: reads, writes, deliveries.
#[derive(Default)]
struct Counts {
    reads: u64,
    writes: u64,
    delivered: u64,
    /// `ReadSoon`s delivered, and those a `ReadReq` from the same reader hurried or crossed.
    soon: u64,
    hurried: u64,
}

/// Counts the `ReadSoon`s delivered in `c`'s log, and the `ReadReq`s for the same page delivered
/// after one and before a grant of the page (hurries and crossings among them).
fn count_soon(c: &Cluster, counts: &mut Counts) {
    let mut open = std::collections::BTreeSet::new();
    for &(_, m) in &c.log.delivered {
        match m {
            Msg::ReadSoon { page, .. } => {
                counts.soon += 1;
                open.insert(page);
            }
            Msg::ReadReq { page } if open.contains(&page) => counts.hurried += 1,
            Msg::Grant { page, .. } => {
                open.remove(&page);
            }
            _ => {}
        }
    }
}

/// Thread `t` of `node` tries `kind` on `page`, counting what it did.
fn try_access(c: &mut Cluster, counts: &mut Counts, node: usize, t: usize, page: PageId, kind: FaultKind) {
    if c.attempt(node, t, page, kind) {
        *if kind == READ { &mut counts.reads } else { &mut counts.writes } += 1;
    }
}

/// Random accesses and random delivery order; the simulation checks every step, and everything
/// must drain at the end.
fn random_run(seed: u64, nodes: u16, pages_per_node: u64, pages: u64, steps: usize) -> (Cluster, Counts) {
    random_run_with(None, seed, nodes, pages_per_node, pages, steps)
}

/// [`random_run`] with `bug` planted in every node.
fn random_run_with(
    bug: Option<Bug>,
    seed: u64,
    nodes: u16,
    pages_per_node: u64,
    pages: u64,
    steps: usize,
) -> (Cluster, Counts) {
    let threads = 2;
    let mut c = Cluster::new(nodes, pages_per_node, pages, threads);
    c.nodes_mut().iter_mut().for_each(|node| bug.into_iter().for_each(|b| node.inject(b)));
    if seed % 2 == 1 {
        // Every other schedule also asks for copies ahead at barriers, predicted or not.
        c.nodes_mut().iter_mut().for_each(|node| *node = node.clone().prefetch_every_candidate());
    }
    let mut counts = Counts::default();
    let mut rng = Rng::new(seed);
    let deliver_bias = 35 + rng.below(40) as u64;
    for _ in 0..steps {
        let busy = c.busy();
        if !busy.is_empty() && rng.percent(deliver_bias) {
            c.deliver_link(busy[rng.below(busy.len())]);
            counts.delivered += 1;
            continue;
        }
        let (node, t) = (rng.below(c.count()), rng.below(threads));
        if rng.percent(5) {
            // A barrier: the node drops the copies writers revoked before (and may ask for some).
            c.arrive(node);
            continue;
        }
        match c.wait(node, t) {
            Wait::Fault(..) => {}
            Wait::Woken(page, kind) => try_access(&mut c, &mut counts, node, t, page, kind),
            Wait::Run => {
                let page = p(rng.below(c.pages()) as u64);
                let kind = if rng.percent(50) { READ } else { WRITE };
                try_access(&mut c, &mut counts, node, t, page, kind);
            }
        }
    }
    // Drain: no new accesses, only deliveries and retries, until every thread is done.
    for _ in 0..100_000 {
        let busy = c.busy();
        let woken: Vec<(usize, usize, PageId, FaultKind)> = (0..c.count())
            .flat_map(|k| (0..threads).map(move |t| (k, t)))
            .filter_map(
                |(k, t)| if let Wait::Woken(q, kind) = c.wait(k, t) { Some((k, t, q, kind)) } else { None },
            )
            .collect();
        if busy.is_empty() && woken.is_empty() {
            count_soon(&c, &mut counts);
            // Copies asked for ahead that the homes keep for a barrier: a thread needs them now.
            let soon: Vec<(usize, PageId)> = (0..c.count())
                .flat_map(|k| c.node(k).asked_soon().into_iter().map(move |q| (k, q)))
                .collect();
            if !soon.is_empty() {
                for (k, q) in soon {
                    c.fault(k, q.0, READ);
                }
                continue;
            }
            c.assert_quiescent();
            return (c, counts);
        }
        let pick = rng.below(busy.len() + woken.len());
        if pick < busy.len() {
            c.deliver_link(busy[pick]);
            counts.delivered += 1;
        } else {
            let (k, t, page, kind) = woken[pick - busy.len()];
            try_access(&mut c, &mut counts, k, t, page, kind);
        }
    }
    panic!("seed {seed}: no progress while draining");
}

#[test]
fn random_schedules_stay_coherent_and_drain() {
    let configs: [(u16, u64, u64); 4] = [(3, 1, 3), (4, 1, 2), (3, 2, 3), (4, 1, 3)];
    let mut total = Counts::default();
    for seed in 0..120u64 {
        let (nodes, per_node, pages) = configs[(seed % 4) as usize];
        let (_, counts) = random_run(seed, nodes, per_node, pages, 2_000);
        total.reads += counts.reads;
        total.writes += counts.writes;
        total.delivered += counts.delivered;
        total.soon += counts.soon;
        total.hurried += counts.hurried;
    }
    assert!(total.soon > 100 && total.hurried > 10, "{} ReadSoons, {} hurried", total.soon, total.hurried);
    assert!(total.reads > 10_000 && total.writes > 10_000, "{} reads, {} writes", total.reads, total.writes);
    assert!(total.delivered > 50_000, "{} messages", total.delivered);
}

/// The same random schedules find each planted mistake: the simulation's checks are what catch it.
#[test]
fn random_schedules_find_the_planted_bugs() {
    for bug in [Bug::GrantBeforeInvAcks, Bug::DropQueuedRequests, Bug::RecallAckBeforeProtect] {
        let found = (0..40u64).find(|&seed| {
            let run = || random_run_with(Some(bug), seed, 3, 1, 2, 500);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err()
        });
        assert!(found.is_some(), "{bug:?} goes unnoticed");
    }
}

// ----- malformed input -----

/// Hands `msg` from `from` to a copy of `node` and checks it is rejected without any effect.
fn assert_rejected(node: &ScNode, from: u16, msg: Msg) {
    sim::assert_rejected(node, n(from), msg);
}

#[test]
fn malformed_messages_are_rejected_without_effect() {
    let mut c = Cluster::new(3, 1, 3, 1);
    // Node 1 reads page 0, then node 2 wants to write it: the home waits for node 1's ack.
    c.op(1, 0, READ);
    c.fault(2, 0, WRITE);
    c.deliver(2, 0);
    assert!(c.node(0).in_transaction(p(0)));

    let home = c.node(0);
    let page = p(0);
    let grant = |access, data| Msg::Grant { page, access, data };
    assert_rejected(home, 1, Msg::ReadReq { page: p(3) }); // out of range
    assert_rejected(home, 1, Msg::ReadReq { page: p(u64::MAX) });
    assert_rejected(home, 0, Msg::WriteReq { page }); // from itself
    assert_rejected(home, 3, Msg::WriteReq { page }); // not in the cluster
    assert_rejected(home, u16::MAX, Msg::InvAck { page });
    assert_rejected(home, 2, Msg::InvAck { page }); // not waited for
    assert_rejected(home, 1, Msg::RecallAck { page }); // waiting for acks, not a recall
    assert_rejected(home, 2, Msg::WriteReq { page }); // already being served
    assert_rejected(home, 1, Msg::ReadReq { page }); // still holds its copy
    assert_rejected(home, 1, Msg::ReadReq { page: p(1) }); // not the home of page 1
    assert_rejected(home, 1, Msg::InvAck { page: p(1) });
    assert_rejected(home, 1, grant(Access::Read, true)); // grants come from the home only
    assert_rejected(home, 1, Msg::Invalidate { page });
    assert_rejected(home, 1, Msg::Recall { page, keep_read: false });

    let reader = c.node(1);
    assert_rejected(reader, 0, grant(Access::Read, true)); // nothing outstanding
    assert_rejected(reader, 2, Msg::Invalidate { page }); // not from the home
    assert_rejected(reader, 0, Msg::Recall { page, keep_read: true }); // not the owner
    assert_rejected(reader, 0, Msg::ReadReq { page }); // not the home
    assert_rejected(reader, 0, Msg::RecallAck { page });
    assert_rejected(reader, 0, Msg::InvAck { page });

    let writer = c.node(2); // waiting for write access, holds nothing
    assert_rejected(writer, 0, grant(Access::Read, true)); // not what it asked for
    assert_rejected(writer, 0, grant(Access::None, true));
    assert_rejected(writer, 0, grant(Access::Write, false)); // no copy to upgrade
    assert_rejected(writer, 1, grant(Access::Write, true)); // not the home
    assert_rejected(writer, 0, Msg::Invalidate { page }); // holds no copy
    assert_rejected(writer, 2, grant(Access::Write, true)); // from itself

    // After all that, the real exchange still completes.
    c.pump();
    let order: Vec<u16> = c.grants().into_iter().map(|g| g.0).collect();
    assert_eq!(order, [1, 2]);
    assert!(c.nodes().iter().all(ScNode::is_quiescent));

    // With a recall running, the owner may not ask for anything before its RecallAck.
    c.fault(1, 0, READ);
    c.deliver(1, 0);
    assert_rejected(c.node(0), 2, Msg::ReadReq { page });
    assert_rejected(c.node(0), 2, Msg::WriteReq { page });
    assert_rejected(c.node(0), 1, Msg::ReadReq { page });
    assert_rejected(c.node(0), 2, Msg::InvAck { page });
    assert_rejected(c.node(0), 1, Msg::RecallAck { page });
    // Between transactions: a request for access the sender already has.
    c.pump();
    c.assert_quiescent();
    assert_rejected(c.node(0), 1, Msg::ReadReq { page });
    assert_rejected(c.node(0), 2, Msg::ReadReq { page });
    assert_rejected(c.node(0), 1, Msg::InvAck { page });
}

/// A random message: any kind, any page (mostly in range), any access and flag.
fn random_msg(rng: &mut Rng, page_count: u64) -> Msg {
    let page = page_of(rng.below(256) as u8, page_count);
    sim::sc::any_msg(rng.below(9) as u8, page, rng.below(3) as u8, rng.percent(50))
}

#[test]
fn garbage_never_panics_and_errors_change_nothing() {
    // Garbage thrown at nodes of a correctly running cluster, on copies so the run goes on.
    for seed in 0..20u64 {
        let mut rng = Rng::new(1_000 + seed);
        let (mut c, _) = random_run(seed, 3, 1, 3, 300);
        for _ in 0..300 {
            let busy = c.busy();
            if !busy.is_empty() && rng.percent(50) {
                c.deliver_link(busy[rng.below(busy.len())]);
            } else {
                let node = rng.below(3);
                let kind = if rng.percent(50) { READ } else { WRITE };
                if c.wait(node, 0) == Wait::Run {
                    c.attempt(node, 0, p(rng.below(3) as u64), kind);
                }
            }
            sim::throw_garbage(&c, &mut rng, 1, random_msg);
        }
    }
    sim::fuzz::random_inputs::<ScNode>(7_000, 20, 3_000);
}

// ----- read-ahead -----

#[test]
fn read_ahead_grows_on_a_sequential_scan_and_not_on_a_strided_one() {
    let scan = |max, stride: usize| {
        let mut c = Cluster::read_ahead(2, 256, 256, max);
        let pages: Vec<u64> = (0..256).step_by(stride).collect();
        for &pg in &pages {
            c.op(1, pg, FaultKind::Read);
        }
        c.pump();
        c.assert_quiescent();
        let reqs = c.log.delivered.iter().filter(|(_, m)| matches!(m, Msg::ReadReq { .. })).count();
        (reqs, c.grants().len(), pages.len())
    };
    assert_eq!(scan(0, 1), (256, 256, 256));
    // Every page is asked for once, whether a thread or the read-ahead asks.
    assert_eq!(scan(15, 1), (256, 256, 256));
    // Every other page: never sequential, so nothing is asked for that is not read.
    assert_eq!(scan(15, 2), (128, 128, 128));
}

#[test]
fn read_ahead_asks_in_growing_batches_then_nothing_while_the_pages_arrive() {
    let mut c = Cluster::read_ahead(2, 64, 64, 4);
    // The first miss asks for its page only; the second, in sequence, for 1 more; then 2, then 4.
    let asked = |out: &[Action]| out.iter().filter(|a| matches!(a, Action::Send { .. })).count();
    assert_eq!(asked(&c.fault(1, 0, FaultKind::Read)), 1);
    c.pump();
    assert_eq!(asked(&c.fault(1, 1, FaultKind::Read)), 2);
    assert_eq!(asked(&c.fault(1, 2, FaultKind::Read)), 0, "page 2 was asked for already");
    c.pump();
    assert_eq!(asked(&c.fault(1, 3, FaultKind::Read)), 3);
    c.pump();
    assert_eq!(asked(&c.fault(1, 6, FaultKind::Read)), 5);
    c.pump();
    // Out of sequence: the page alone.
    assert_eq!(asked(&c.fault(1, 40, FaultKind::Read)), 1);
    c.pump();
    // Writes run the same way, their own sequence: pages 11 and 12 held for reading are upgraded
    // with the others.
    c.op(1, 12, FaultKind::Read);
    assert_eq!(asked(&c.fault(1, 10, FaultKind::Write)), 1);
    c.pump();
    assert_eq!(asked(&c.fault(1, 11, FaultKind::Write)), 2);
    c.pump();
    assert_eq!(c.prot(1, 12), Access::Write);
    assert_eq!(asked(&c.fault(1, 13, FaultKind::Write)), 3);
    c.pump();
    c.assert_quiescent();
}

#[test]
fn read_and_write_misses_of_one_scan_each_grow_their_own_run() {
    // A thread reads and then writes each of node 0's pages in order (an in-place sort, a
    // read-modify-write pass): both kinds of miss run in sequence, interleaved.
    let traps = |max| {
        let mut c = Cluster::read_ahead(2, 256, 256, max);
        let mut traps = 0;
        for pg in 0..256u64 {
            for kind in [FaultKind::Read, FaultKind::Write] {
                traps += usize::from(c.prot(1, pg as usize) < kind.needed());
                c.op(1, pg, kind);
            }
        }
        c.pump();
        c.assert_quiescent();
        traps
    };
    assert_eq!(traps(0), 512);
    // The write run takes the pages ahead with write access, so reads stop trapping on them: a
    // read trap and a write trap at pages 0, 1, 3, 6, 11, 20 and then every 16 pages (36 … 244):
    // 2 × 20.
    assert_eq!(traps(15), 40);
}

#[test]
fn the_home_reads_ahead_too_when_another_node_holds_its_pages() {
    // Node 1 takes node 0's pages for writing; then node 0, their home, reads them in order (a
    // merge of a half sorted elsewhere): its misses recall runs of pages, not one page at a time.
    let traps = |max| {
        let mut c = Cluster::read_ahead(2, 256, 256, max);
        for pg in 0..256u64 {
            c.op(1, pg, FaultKind::Write);
        }
        let mut traps = 0;
        for pg in 0..256u64 {
            traps += usize::from(c.prot(0, pg as usize) < Access::Read);
            c.op(0, pg, FaultKind::Read);
        }
        c.pump();
        c.assert_quiescent();
        let recalls = c.log.delivered.iter().filter(|(_, m)| matches!(m, Msg::Recall { .. })).count();
        (traps, recalls)
    };
    assert_eq!(traps(0), (256, 256));
    // Traps at pages 0, 1, 3, 6, 11, 20, then every 16 (36 … 244); every page recalled once.
    assert_eq!(traps(15), (20, 256));
}

#[test]
fn write_ahead_fills_a_remote_array_in_fewer_round_trips_and_stays_coherent() {
    let mut c = Cluster::read_ahead(3, 128, 256, 15);
    // Node 1 fills node 0's pages in order; node 2 then reads them all; then node 1 again.
    for pg in 0..128 {
        c.op(1, pg, FaultKind::Write);
    }
    for pg in 0..128 {
        c.op(2, pg, FaultKind::Read);
    }
    for pg in 0..128 {
        c.op(1, pg, FaultKind::Write);
    }
    c.pump();
    c.assert_quiescent();
    let requests =
        |kind: &str| c.log.delivered.iter().filter(|(_, m)| format!("{m:?}").starts_with(kind)).count();
    assert_eq!(requests("WriteReq"), 256, "each page asked for once per fill");
    assert_eq!(requests("ReadReq"), 128);
}

#[test]
fn requests_say_they_may_bring_their_page_and_nothing_else_does() {
    use crate::protocol::Message;
    let page = PageId(7);
    assert_eq!(Msg::ReadReq { page }.fetches(), 1);
    assert_eq!(Msg::WriteReq { page }.fetches(), 1);
    for m in [
        Msg::Grant { page, access: Access::Read, data: true },
        Msg::Invalidate { page },
        Msg::InvAck { page },
        Msg::Recall { page, keep_read: true },
        Msg::RecallAck { page },
    ] {
        assert_eq!(m.fetches(), 0, "{m:?}");
    }
}

#[test]
fn a_direct_read_is_absorbed_only_where_one_may_start() {
    let mut node = ScNode::new(n(1), 2, 4);
    // Homed elsewhere, no copy, nothing asked for: a direct read may start, and ends in a copy.
    assert!(node.fetchable(p(0)));
    node.absorb_direct_read(p(0)).unwrap();
    assert_eq!(node.access(p(0)), Access::Read);
    assert!(!node.fetchable(p(0)));
    assert!(node.absorb_direct_read(p(0)).is_err(), "a second read of a page held");
    // Homed here: never.
    assert!(!node.fetchable(p(4)));
    assert!(node.absorb_direct_read(p(4)).is_err());
    // Asked for the ordinary way: not while the request is out.
    let mut out = Vec::new();
    node.fault(p(1), READ, &mut out);
    assert!(!node.fetchable(p(1)));
    assert!(node.absorb_direct_read(p(1)).is_err());
    // The copy a direct read made is dropped like any other.
    out.clear();
    node.handle(n(0), Msg::Invalidate { page: p(0) }, &mut out).unwrap();
    assert_eq!(out, [protect(p(0), Access::None), send(0, Msg::InvAck { page: p(0) })]);
    assert!(node.fetchable(p(0)));
}

#[test]
fn a_read_ahead_stops_at_a_page_the_runtime_refuses() {
    let mut node = ScNode::new(n(1), 2, 64).with_read_ahead(8);
    let mut out = Vec::new();
    node.fault(p(0), READ, &mut out);
    node.fault(p(1), READ, &mut out); // a run: asks for page 2 too
    out.clear();
    // The next miss in the run would ask for pages 4 and 5; page 5 has a direct read out.
    node.fault_with(p(3), READ, &mut out, &mut |q| q != p(5));
    let asked: Vec<PageId> =
        out.iter().filter(|&a| matches!(a, Action::Send { .. })).map(|a| a.page().unwrap()).collect();
    assert_eq!(asked, [p(3), p(4)]);
    assert_eq!(node.outstanding(p(5)), None);
    assert!(node.fetchable(p(5)));
}

#[test]
fn direct_reads_beside_a_read_ahead_and_a_writer() {
    // Node 1 reads page 5 directly while its scan of pages 2.. reads ahead towards it, and the
    // home writes page 5 meanwhile: the run stops short of page 5, the invalidation waits for the
    // direct read, and everything ends quiescent with no message refused.
    let mut c = Cluster::read_ahead(2, 16, 16, 8);
    assert!(c.direct_read(1, p(5)));
    for pg in 2..5 {
        c.op(1, pg, READ);
    }
    // The home's write: its invalidation of node 1's copy waits at node 1 for the direct read.
    assert!(!c.attempt(0, 0, p(5), WRITE));
    c.pump();
    assert_eq!(c.held(), 1, "the invalidation waits for the direct read");
    assert_eq!(c.direct_answers().count(), 1, "the home answered the direct read");
    c.direct_answer(0);
    assert_eq!(c.prot(1, 5), Access::Read);
    c.release_held(1, p(5));
    c.pump();
    assert!(matches!(c.wait(0, 0), Wait::Woken(..)));
    assert!(c.attempt(0, 0, p(5), WRITE));
    c.op(1, 5, READ);
    c.pump();
    c.assert_quiescent();
    assert!(c.violation().is_none(), "{:?}", c.violation());
}

// ----- copies dropped before a barrier -----

/// Node 1 reads page 0 (homed at node 0), node 0 writes it (revoking node 1's copy, which makes it
/// a candidate), node 1 reads it again.
fn revoked_once_then_read_again() -> Cluster {
    let c = Cluster::after(&[(1, READ), (0, WRITE), (1, READ)]);
    assert_eq!(c.node(1).drop_candidates(), [p(0)]);
    assert_eq!(c.node(0).directory(p(0)), Some(shared(&[0, 1])));
    c
}

#[test]
fn a_dropped_copy_lets_the_home_write_without_a_round_trip() {
    let mut c = revoked_once_then_read_again();
    assert_eq!(
        c.call(1, |n, out| n.drop_copies(out)),
        [protect(p(0), Access::None), send(0, Msg::Drop { page: p(0) })]
    );
    assert!(!c.node(1).fetchable(p(0)), "no direct read before the home saw the drop");
    // The home is left the only reader: it takes write access back at once.
    assert_eq!(c.deliver(1, 0), [protect(p(0), Access::Write), send(1, Msg::DropAck { page: p(0) })]);
    assert_eq!(c.node(0).directory(p(0)), Some(Directory::Exclusive(n(0))));
    assert_eq!(c.deliver(0, 1), []);
    assert!(c.node(1).fetchable(p(0)));
    // The home writes without a fault; node 1's next read is an ordinary miss.
    assert!(c.attempt(0, 0, p(0), WRITE));
    c.op(1, 0, READ);
    c.assert_quiescent();
}

#[test]
fn an_invalidation_crossing_a_drop_is_acknowledged() {
    let mut c = revoked_once_then_read_again();
    // Node 2 writes: the home sends node 1 an invalidation while node 1 drops its copy.
    c.fault(2, 0, WRITE);
    assert_eq!(c.deliver(2, 0), [protect(p(0), Access::None), send(1, Msg::Invalidate { page: p(0) })]);
    c.call(1, |n, out| n.drop_copies(out));
    // The home sees the drop first (the invalidation is not acknowledged yet), then the ack.
    assert_eq!(c.deliver(1, 0), [send(1, Msg::DropAck { page: p(0) })]);
    assert!(c.node(0).in_transaction(p(0)));
    assert_eq!(c.deliver(0, 1), [send(0, Msg::InvAck { page: p(0) })]);
    assert_eq!(c.deliver(0, 1), []);
    assert_eq!(c.deliver(1, 0), [send(2, Msg::Grant { page: p(0), access: Access::Write, data: true })]);
    c.pump();
    c.finish(2, WRITE);
    assert_eq!(c.node(0).directory(p(0)), Some(Directory::Exclusive(n(2))));
}

#[test]
fn copies_never_revoked_or_with_a_request_out_are_kept() {
    // Read once and never revoked: not a candidate.
    let mut c = Cluster::after(&[(1, READ)]);
    assert!(c.node(1).drop_candidates().is_empty());
    assert_eq!(c.call(1, |n, out| n.drop_copies(out)), []);
    // A candidate with an upgrade outstanding stays.
    let mut c = revoked_once_then_read_again();
    c.fault(1, 0, WRITE);
    assert_eq!(c.call(1, |n, out| n.drop_copies(out)), []);
    c.pump();
    c.finish(1, WRITE);
}

#[test]
fn drops_nobody_listed_and_acks_nobody_awaits_are_rejected() {
    let c = Cluster::after(&[(1, READ)]);
    // Node 2 holds no copy; node 0 is not the home of page 1.
    assert_rejected(c.node(0), 2, Msg::Drop { page: p(0) });
    assert_rejected(c.node(0), 1, Msg::Drop { page: p(1) });
    assert_rejected(c.node(1), 0, Msg::DropAck { page: p(0) });
}

// ----- copies asked for ahead at barriers -----

impl Cluster {
    /// Two nodes homing one page each, one thread each, drops and prefetches on.
    fn prefetching() -> Self {
        let states: Vec<ScNode> =
            (0..2).map(|i| ScNode::new(n(i), 2, 1).with_drops(true).with_prefetch(true)).collect();
        Cluster(Sim::new(states, 2, 8, &[1, 1]).record())
    }

    /// Both nodes arrive at a barrier (the reader, node 1, first if `reader_first`), and every
    /// message is delivered.
    fn barrier(&mut self, reader_first: bool) {
        let order = if reader_first { [1, 0] } else { [0, 1] };
        for k in order {
            self.arrive(k);
        }
        self.pump();
    }
}

/// Jacobi's boundary row between two nodes: node 0 (the home) writes page 0 between every other
/// pair of barriers, node 1 reads it between the others. After the first revocation node 1 drops
/// its copy at each barrier, and from the third barrier on it asks for the page ahead.
/// Returns the cluster just before barrier 4, node 0 having written its epoch-4 value.
fn alternating_before_barrier_four() -> Cluster {
    let mut c = Cluster::prefetching();
    c.op(1, 0, READ);
    c.op(0, 0, WRITE);
    assert_eq!(c.node(1).drop_candidates(), [p(0)]);
    // Epochs 1 to 3: node 1 reads (a miss each time), node 0 writes without a fault.
    for epoch in 1..=3 {
        if epoch % 2 == 1 {
            assert!(!c.attempt(1, 0, p(0), READ), "epoch {epoch}: nothing asked ahead yet");
            c.pump();
            c.finish(1, READ);
        } else {
            assert!(c.attempt(0, 0, p(0), WRITE), "epoch {epoch}: the reader dropped its copy");
        }
        c.barrier(true);
    }
    assert!(c.attempt(0, 0, p(0), WRITE));
    c
}

#[test]
fn a_copy_read_after_every_other_barrier_is_there_when_the_reader_leaves_it() {
    let mut c = alternating_before_barrier_four();
    // Barrier 4: node 1 asks ahead; the home has not arrived, so it keeps the request.
    assert_eq!(c.arrive(1), [send(0, Msg::ReadSoon { page: p(0), barrier: 4 })]);
    assert_eq!(c.deliver(1, 0), []);
    assert!(c.node(0).waits_for_arrival());
    // The home arrives: it has written what it writes before the barrier, and hands the copy on.
    assert_eq!(
        c.arrive(0),
        [protect(p(0), Access::Read), send(1, Msg::Grant { page: p(0), access: Access::Read, data: true })]
    );
    c.pump();
    assert!(c.attempt(1, 0, p(0), READ), "the read after the barrier does not trap");
    // And so on, whichever node arrives first: no fault on either side any more, and the credit
    // of the copy is not used up.
    for epoch in 5..=14 {
        if epoch % 2 == 1 {
            assert!(c.attempt(1, 0, p(0), READ), "epoch {epoch}: node 1 traps");
        } else {
            assert!(c.attempt(0, 0, p(0), WRITE), "epoch {epoch}: node 0 traps");
        }
        c.barrier(epoch % 3 == 0);
    }
    c.assert_quiescent();
}

#[test]
fn a_reader_that_needs_the_page_before_the_home_arrives_hurries_it() {
    let mut c = alternating_before_barrier_four();
    c.arrive(1);
    c.pump();
    assert!(c.node(0).waits_for_arrival());
    // Another thread of node 1 reads now: the fault sends an ordinary request, served at once.
    assert_eq!(c.fault(1, 0, READ), [send(0, Msg::ReadReq { page: p(0) })]);
    assert_eq!(
        c.deliver(1, 0),
        [protect(p(0), Access::Read), send(1, Msg::Grant { page: p(0), access: Access::Read, data: true })]
    );
    assert!(!c.node(0).waits_for_arrival());
    c.pump();
    assert_eq!(c.prot(1, 0), Access::Read);
    // The home's arrival has nothing left to answer.
    assert_eq!(c.arrive(0), []);
    c.assert_quiescent();
}

#[test]
fn a_hurry_that_crosses_the_answer_is_ignored_and_later_requests_are_checked_again() {
    let mut c = alternating_before_barrier_four();
    c.arrive(0);
    c.arrive(1);
    // The home, already at the barrier, answers the request at once.
    assert_eq!(
        c.deliver(1, 0),
        [protect(p(0), Access::Read), send(1, Msg::Grant { page: p(0), access: Access::Read, data: true })]
    );
    // Node 1 faults before the answer arrives: its hurry crosses the answer.
    assert_eq!(c.fault(1, 0, READ), [send(0, Msg::ReadReq { page: p(0) })]);
    c.deliver(0, 1);
    assert_eq!(c.prot(1, 0), Access::Read);
    assert_eq!(c.deliver(1, 0), [], "the hurry finds the copy granted: nothing to do");
    c.assert_quiescent();
    // That was the one request the directory could not vouch for: the next is checked again.
    assert_rejected(c.node(0), 1, Msg::ReadReq { page: p(0) });
    assert_rejected(c.node(0), 1, Msg::ReadSoon { page: p(0), barrier: 5 });
}

#[test]
fn read_soon_requests_that_cannot_arrive_are_rejected() {
    let mut c = alternating_before_barrier_four();
    c.arrive(1);
    c.deliver(1, 0);
    // A second one while the first waits, and an ordinary write request beside it.
    assert_rejected(c.node(0), 1, Msg::ReadSoon { page: p(0), barrier: 4 });
    assert_rejected(c.node(0), 1, Msg::WriteReq { page: p(0) });
    // Node 0 is not the home of page 1; node 1 holds page 1 as its home.
    assert_rejected(c.node(0), 1, Msg::ReadSoon { page: p(1), barrier: 1 });
    assert_rejected(c.node(1), 0, Msg::ReadSoon { page: p(0), barrier: 1 });
    c.arrive(0);
    c.pump();
    // Node 1 holds a copy now.
    assert_rejected(c.node(0), 1, Msg::ReadSoon { page: p(0), barrier: 9 });
}

#[test]
fn a_copy_asked_for_ahead_that_comes_too_late_uses_up_its_credit() {
    // As in the barrier-only loop of `benches/sync.rs`: the reader needs the page right after
    // the barrier, before the home's answer can come, so every copy asked for ahead is hurried.
    let mut c = alternating_before_barrier_four();
    c.arrive(1);
    c.pump();
    assert_eq!(c.fault(1, 0, READ), [send(0, Msg::ReadReq { page: p(0) })]);
    c.pump();
    c.arrive(0);
    // Epoch 5: node 1 reads its copy; barrier 5: it drops it, which now costs the last credit
    // (drops at barriers 1 and 3 used the first two), and it is no candidate any more.
    assert!(c.attempt(1, 0, p(0), READ));
    c.barrier(true);
    assert!(c.node(1).drop_candidates().is_empty());
    // Nothing is asked for ahead at barrier 6, and the read in epoch 7 is an ordinary miss.
    assert_eq!(c.arrive(1), []);
    c.arrive(0);
    assert!(!c.attempt(1, 0, p(0), READ));
    c.pump();
    c.finish(1, READ);
}

#[test]
fn a_write_run_does_not_step_over_a_page_only_asked_for_reading() {
    // Node 1 writes page 10, asks to read page 12, then writes 11: its write run must not step
    // over 12 (on its way for reading only, so its write will miss), or the write miss at 12
    // would no longer continue the run.
    let mut c = Cluster::read_ahead(2, 256, 256, 8);
    c.op(1, 10, WRITE);
    c.fault(1, 12, READ);
    let sent = |actions: Vec<Action>| -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { msg: Msg::WriteReq { page }, .. } => Some(page.0),
                _ => None,
            })
            .collect()
    };
    assert_eq!(sent(c.fault(1, 11, WRITE)), [11]);
    c.pump();
    assert_eq!(sent(c.fault(1, 12, WRITE)), [12, 13, 14]);
    c.pump();
}

#[test]
fn a_home_whose_threads_share_barriers_answers_copies_asked_for_ahead_only_when_hurried() {
    // Node 0's arrivals no longer say it has written its row (another of its threads may still
    // be writing): it keeps the request until node 1 needs the page.
    let mut c = alternating_before_barrier_four();
    c.call(0, |n, _| n.barriers_shared());
    assert_eq!(c.arrive(1), [send(0, Msg::ReadSoon { page: p(0), barrier: 4 })]);
    assert_eq!(c.deliver(1, 0), []);
    assert!(!c.node(0).waits_for_arrival());
    assert_eq!(c.arrive(0), []);
    assert_eq!(c.fault(1, 0, READ), [send(0, Msg::ReadReq { page: p(0) })]);
    assert_eq!(
        c.deliver(1, 0),
        [protect(p(0), Access::Read), send(1, Msg::Grant { page: p(0), access: Access::Read, data: true })]
    );
    c.pump();
    c.assert_quiescent();
    // And a node whose own threads share barriers asks for nothing ahead.
    c.call(1, |n, _| n.barriers_shared());
    for _ in 0..6 {
        assert!(!c.arrive(1).iter().any(|a| matches!(a, Action::Send { msg: Msg::ReadSoon { .. }, .. })));
        c.arrive(0);
        c.pump();
    }
}
