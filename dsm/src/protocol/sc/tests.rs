//! Tests of the sequentially consistent protocol, driven through an in-memory cluster.
//!
//! The cluster stands in for the runtime: per ordered pair of nodes a FIFO link, per node and page
//! a fake page (one `u64`, the value of the last write the node saw) and a fake protection entry,
//! and a few simulated application threads per node that read and write through the protection
//! table like real threads would through `mprotect`.

use std::collections::VecDeque;

use super::{Access, Action, Directory, FaultKind, Msg, NodeId, PageId, ScNode};

const READ: FaultKind = FaultKind::Read;
const WRITE: FaultKind = FaultKind::Write;
/// What a node's fake memory holds for a page it never received.
const POISON: u64 = u64::MAX;

fn n(i: u16) -> NodeId {
    NodeId(i)
}

fn p(i: u64) -> PageId {
    PageId(i)
}

fn shared(nodes: &[u16]) -> Directory {
    Directory::Shared(nodes.iter().map(|&i| NodeId(i)).collect())
}

/// xorshift64: small, deterministic, good enough to shuffle schedules.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, bound: usize) -> usize {
        // `bound` is tiny in these tests, so the modulo bias does not matter.
        (self.next_u64() % bound as u64) as usize
    }

    fn percent(&mut self, chance: u64) -> bool {
        self.next_u64() % 100 < chance
    }
}

/// A simulated application thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Thread {
    Idle,
    /// Trapped, waiting for a `Wake` on the page.
    Waiting(PageId, FaultKind),
    /// Woken, will retry its access.
    Ready(PageId, FaultKind),
}

/// A message on a link, with the fake page bytes when it carries data.
#[derive(Clone, Copy, Debug)]
struct Packet {
    msg: Msg,
    bytes: Option<u64>,
}

struct Cluster {
    nodes: Vec<ScNode>,
    /// `links[from * n + to]`, FIFO.
    links: Vec<VecDeque<Packet>>,
    /// `mem[node][page]`: the fake page contents.
    mem: Vec<Vec<u64>>,
    /// `prot[node][page]`: the fake protection, driven by `Protect` actions only.
    prot: Vec<Vec<Access>>,
    /// Per page, the value of the latest write anywhere.
    latest: Vec<u64>,
    next_value: u64,
    threads: Vec<Vec<Thread>>,
    /// Grants delivered, in delivery order: (receiver, page, access).
    grants: Vec<(NodeId, PageId, Access)>,
    reads: u64,
    writes: u64,
    delivered: u64,
}

impl Cluster {
    /// `nodes` nodes, `pages_per_node` pages homed at each, the first `pages` of them simulated.
    fn new(nodes: u16, pages_per_node: u64, pages: u64, threads: usize) -> Self {
        let count = usize::from(nodes);
        let node_states: Vec<ScNode> =
            (0..nodes).map(|i| ScNode::new(NodeId(i), nodes, pages_per_node)).collect();
        let pages = pages.min(node_states[0].page_count()) as usize;
        let mut mem = vec![vec![POISON; pages]; count];
        let mut prot = vec![vec![Access::None; pages]; count];
        for page in 0..pages {
            let home = node_states[0].home_of(p(page as u64)).index();
            mem[home][page] = 0;
            prot[home][page] = Access::Write;
        }
        Cluster {
            nodes: node_states,
            links: vec![VecDeque::new(); count * count],
            mem,
            prot,
            latest: vec![0; pages],
            next_value: 0,
            threads: vec![vec![Thread::Idle; threads]; count],
            grants: Vec::new(),
            reads: 0,
            writes: 0,
            delivered: 0,
        }
    }

    fn count(&self) -> usize {
        self.nodes.len()
    }

    fn pages(&self) -> usize {
        self.latest.len()
    }

    fn link(&self, from: usize, to: usize) -> usize {
        from * self.count() + to
    }

    /// Carries out `actions` of `node` like the runtime would. `bytes` are the page bytes that came
    /// with the message being handled, if it carried any.
    fn exec(&mut self, node: usize, actions: &[Action], bytes: Option<u64>) {
        for &action in actions {
            match action {
                Action::Send { to, msg } => {
                    assert_ne!(to.index(), node, "node {node} sends {msg:?} to itself");
                    assert!(to.index() < self.count());
                    let page = msg.page().0 as usize;
                    let bytes = if msg.carries_data() {
                        // Nobody may be able to write while the bytes are read for sending.
                        assert_ne!(
                            self.prot[node][page],
                            Access::Write,
                            "node {node} sends {msg:?} while still writable"
                        );
                        Some(self.mem[node][page])
                    } else {
                        None
                    };
                    let link = self.link(node, to.index());
                    self.links[link].push_back(Packet { msg, bytes });
                }
                Action::Install { page } => {
                    let bytes = bytes.expect("Install while handling a message without data");
                    self.mem[node][page.0 as usize] = bytes;
                }
                Action::Protect { page, access } => {
                    let page = page.0 as usize;
                    if access >= Access::Read {
                        assert_eq!(
                            self.mem[node][page], self.latest[page],
                            "node {node} opens page {page} for {access:?} on stale bytes"
                        );
                    }
                    self.prot[node][page] = access;
                }
                Action::Wake { page } => {
                    for thread in &mut self.threads[node] {
                        if let Thread::Waiting(q, kind) = *thread
                            && q == page
                        {
                            *thread = Thread::Ready(q, kind);
                        }
                    }
                }
                other => unreachable!("not an effect of this protocol: {other:?}"),
            }
        }
        for page in 0..self.pages() {
            assert_eq!(
                self.prot[node][page],
                self.nodes[node].access(p(page as u64)),
                "node {node}: protection of page {page} differs from the protocol's view"
            );
        }
    }

    /// A local fault; returns the actions (already executed).
    fn fault(&mut self, node: usize, page: u64, kind: FaultKind) -> Vec<Action> {
        let mut out = Vec::new();
        self.nodes[node].fault(p(page), kind, &mut out);
        assert!(!out.iter().any(|a| matches!(a, Action::Install { .. })), "Install from a fault: {out:?}");
        self.exec(node, &out, None);
        out
    }

    /// Delivers the oldest message on link `from -> to`; returns the receiver's actions.
    fn deliver(&mut self, from: usize, to: usize) -> Vec<Action> {
        let link = self.link(from, to);
        let packet = self.links[link].pop_front().unwrap_or_else(|| panic!("nothing on link {from} -> {to}"));
        self.delivered += 1;
        let mut out = Vec::new();
        if let Err(e) = self.nodes[to].handle(n(from as u16), packet.msg, &mut out) {
            panic!("node {to} rejected {:?} from {from}: {e}", packet.msg);
        }
        if let Msg::Grant { page, access, .. } = packet.msg {
            self.grants.push((n(to as u16), page, access));
        }
        self.exec(to, &out, packet.bytes);
        out
    }

    fn busy_links(&self) -> Vec<usize> {
        (0..self.links.len()).filter(|&l| !self.links[l].is_empty()).collect()
    }

    fn deliver_link(&mut self, link: usize) -> Vec<Action> {
        let count = self.count();
        self.deliver(link / count, link % count)
    }

    /// Delivers everything, oldest link first, until all links are empty.
    fn pump(&mut self) {
        while let Some(&link) = self.busy_links().first() {
            self.deliver_link(link);
            self.check();
        }
    }

    /// Thread `t` of `node` tries its access; on success performs it and goes idle, otherwise
    /// faults and waits.
    fn attempt(&mut self, node: usize, t: usize, page: PageId, kind: FaultKind) -> bool {
        let i = page.0 as usize;
        if self.prot[node][i] >= kind.needed() {
            match kind {
                FaultKind::Read => {
                    assert_eq!(
                        self.mem[node][i], self.latest[i],
                        "node {node} reads a stale value of page {i}"
                    );
                    self.reads += 1;
                }
                FaultKind::Write => {
                    self.next_value += 1;
                    self.mem[node][i] = self.next_value;
                    self.latest[i] = self.next_value;
                    self.writes += 1;
                }
            }
            self.threads[node][t] = Thread::Idle;
            true
        } else {
            self.threads[node][t] = Thread::Waiting(page, kind);
            self.fault(node, page.0, kind);
            false
        }
    }

    /// Runs one access on thread 0 of `node` to completion, delivering messages as needed.
    fn op(&mut self, node: usize, page: u64, kind: FaultKind) {
        let mut done = self.attempt(node, 0, p(page), kind);
        let mut rounds = 0;
        while !done {
            rounds += 1;
            assert!(rounds < 100, "access never completes");
            self.pump();
            match self.threads[node][0] {
                Thread::Ready(q, k) => done = self.attempt(node, 0, q, k),
                other => panic!("after delivering everything, thread is {other:?}"),
            }
        }
        self.check();
    }

    fn grant_in_flight(&self, from: NodeId, to: usize, page: PageId) -> bool {
        from.index() != to
            && self.links[self.link(from.index(), to)]
                .iter()
                .any(|pk| matches!(pk.msg, Msg::Grant { page: q, .. } if q == page))
    }

    /// The coherence invariants; must hold after every step.
    fn check(&self) {
        for i in 0..self.pages() {
            let page = p(i as u64);
            let writers: Vec<usize> =
                (0..self.count()).filter(|&k| self.prot[k][i] == Access::Write).collect();
            assert!(writers.len() <= 1, "page {i} writable at {writers:?}");
            if let [w] = writers[..] {
                for k in 0..self.count() {
                    assert!(
                        k == w || self.prot[k][i] == Access::None,
                        "page {i} writable at {w} and readable at {k}"
                    );
                }
            }
            for k in 0..self.count() {
                if self.prot[k][i] >= Access::Read {
                    assert_eq!(self.mem[k][i], self.latest[i], "stale copy of {i} at {k}");
                }
            }
            let home = self.nodes[0].home_of(page);
            let dir = self.nodes[home.index()].directory(page).expect("the home has a directory entry");
            if let Directory::Shared(readers) = &dir {
                assert!(readers.contains(&home), "home not among readers: {dir:?}");
            }
            for k in 0..self.count() {
                let listed = dir.access_of(n(k as u16));
                // Never a copy the directory does not know of.
                assert!(
                    self.prot[k][i] <= listed,
                    "node {k} holds {:?} of page {i}, directory {dir:?}",
                    self.prot[k][i]
                );
                // Between transactions the directory is exact, except for grants on their way.
                let settled =
                    !self.nodes[home.index()].in_transaction(page) && !self.grant_in_flight(home, k, page);
                if settled {
                    assert_eq!(
                        self.prot[k][i], listed,
                        "node {k} holds {:?} of page {i}, directory {dir:?}",
                        self.prot[k][i]
                    );
                }
            }
        }
    }

    fn assert_quiescent(&self) {
        assert!(self.busy_links().is_empty(), "messages left in flight");
        for (k, node) in self.nodes.iter().enumerate() {
            assert!(node.is_quiescent(), "node {k} is not quiescent: {node:?}");
            for t in &self.threads[k] {
                assert_eq!(*t, Thread::Idle, "node {k} has a thread left waiting");
            }
        }
        self.check();
    }
}

// ----- single transactions -----

#[test]
fn layout_and_messages() {
    let node = ScNode::new(n(1), 3, 4);
    assert_eq!(node.me(), n(1));
    assert_eq!(node.page_count(), 12);
    let homes: Vec<u16> = (0..14).map(|i| node.home_of(p(i)).0).collect();
    assert_eq!(homes, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
    assert_eq!(node.home_of(p(u64::MAX)), n(2));
    assert_eq!(node.access(p(4)), Access::Write);
    assert_eq!(node.access(p(0)), Access::None);
    assert_eq!(node.access(p(12)), Access::None);
    assert_eq!(node.directory(p(5)), Some(Directory::Exclusive(n(1))));
    assert_eq!(node.directory(p(0)), None);
    assert!(node.is_quiescent());

    let huge = ScNode::new(n(0), 3, u64::MAX);
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
    assert!(c.nodes[0].is_quiescent());
}

#[test]
fn remote_read_of_home_page() {
    let mut c = Cluster::new(3, 1, 3, 1);
    c.op(0, 0, WRITE);
    assert_eq!(c.fault(1, 0, READ), [Action::Send { to: n(0), msg: Msg::ReadReq { page: p(0) } }]);
    assert_eq!(c.nodes[1].outstanding(p(0)), Some(READ));
    // A second thread faulting on the same page sends nothing more.
    assert_eq!(c.fault(1, 0, READ), []);
    assert_eq!(
        c.deliver(1, 0),
        [
            Action::Protect { page: p(0), access: Access::Read },
            Action::Send { to: n(1), msg: Msg::Grant { page: p(0), access: Access::Read, data: true } },
        ]
    );
    assert_eq!(c.nodes[0].directory(p(0)), Some(shared(&[0, 1])));
    c.check();
    assert_eq!(
        c.deliver(0, 1),
        [
            Action::Install { page: p(0) },
            Action::Protect { page: p(0), access: Access::Read },
            Action::Wake { page: p(0) },
        ]
    );
    assert_eq!(c.mem[1][0], c.latest[0]);
    assert_eq!(c.nodes[1].access(p(0)), Access::Read);
    c.threads[1][0] = Thread::Idle;
    c.assert_quiescent();
}

#[test]
fn remote_write_invalidates_reader() {
    let mut c = Cluster::new(3, 1, 3, 1);
    c.op(1, 0, READ);
    assert_eq!(c.fault(2, 0, WRITE), [Action::Send { to: n(0), msg: Msg::WriteReq { page: p(0) } }]);
    assert_eq!(
        c.deliver(2, 0),
        [
            Action::Protect { page: p(0), access: Access::None },
            Action::Send { to: n(1), msg: Msg::Invalidate { page: p(0) } },
        ]
    );
    assert!(c.nodes[0].in_transaction(p(0)));
    assert_eq!(
        c.deliver(0, 1),
        [
            Action::Protect { page: p(0), access: Access::None },
            Action::Send { to: n(0), msg: Msg::InvAck { page: p(0) } },
        ]
    );
    assert_eq!(
        c.deliver(1, 0),
        [Action::Send { to: n(2), msg: Msg::Grant { page: p(0), access: Access::Write, data: true } }]
    );
    assert_eq!(c.nodes[0].directory(p(0)), Some(Directory::Exclusive(n(2))));
    assert_eq!(
        c.deliver(0, 2),
        [
            Action::Install { page: p(0) },
            Action::Protect { page: p(0), access: Access::Write },
            Action::Wake { page: p(0) },
        ]
    );
    assert!(c.attempt(2, 0, p(0), WRITE));
    c.assert_quiescent();
}

#[test]
fn recall_from_remote_owner() {
    let mut c = Cluster::new(3, 1, 3, 1);
    c.op(1, 0, WRITE);
    // A reader makes the owner downgrade.
    c.fault(2, 0, READ);
    assert_eq!(
        c.deliver(2, 0),
        [Action::Send { to: n(1), msg: Msg::Recall { page: p(0), keep_read: true } }]
    );
    assert_eq!(
        c.deliver(0, 1),
        [
            Action::Protect { page: p(0), access: Access::Read },
            Action::Send { to: n(0), msg: Msg::RecallAck { page: p(0) } },
        ]
    );
    assert_eq!(
        c.deliver(1, 0),
        [
            Action::Install { page: p(0) },
            Action::Protect { page: p(0), access: Access::Read },
            Action::Send { to: n(2), msg: Msg::Grant { page: p(0), access: Access::Read, data: true } },
        ]
    );
    assert_eq!(c.nodes[0].directory(p(0)), Some(shared(&[0, 1, 2])));
    c.deliver(0, 2);
    assert!(c.attempt(2, 0, p(0), READ));
    c.assert_quiescent();

    // A writer takes it back from a new owner: the owner drops its copy entirely.
    c.op(1, 0, WRITE);
    c.fault(2, 0, WRITE);
    assert_eq!(
        c.deliver(2, 0),
        [Action::Send { to: n(1), msg: Msg::Recall { page: p(0), keep_read: false } }]
    );
    assert_eq!(
        c.deliver(0, 1),
        [
            Action::Protect { page: p(0), access: Access::None },
            Action::Send { to: n(0), msg: Msg::RecallAck { page: p(0) } },
        ]
    );
    assert_eq!(
        c.deliver(1, 0),
        [
            Action::Install { page: p(0) },
            Action::Send { to: n(2), msg: Msg::Grant { page: p(0), access: Access::Write, data: true } },
        ]
    );
    c.deliver(0, 2);
    assert!(c.attempt(2, 0, p(0), WRITE));
    c.assert_quiescent();
}

#[test]
fn upgrade_without_data() {
    let mut c = Cluster::new(3, 1, 3, 1);
    c.op(1, 0, READ);
    c.fault(1, 0, WRITE);
    assert_eq!(
        c.deliver(1, 0),
        [
            Action::Protect { page: p(0), access: Access::None },
            Action::Send { to: n(1), msg: Msg::Grant { page: p(0), access: Access::Write, data: false } },
        ]
    );
    assert_eq!(
        c.deliver(0, 1),
        [Action::Protect { page: p(0), access: Access::Write }, Action::Wake { page: p(0) },]
    );
    assert!(c.attempt(1, 0, p(0), WRITE));
    c.assert_quiescent();
}

#[test]
fn home_fault_after_remote_took_page() {
    let mut c = Cluster::new(3, 1, 3, 1);
    c.op(1, 0, WRITE);
    // The home reads: no message to itself, only the recall.
    assert_eq!(
        c.fault(0, 0, READ),
        [Action::Send { to: n(1), msg: Msg::Recall { page: p(0), keep_read: true } }]
    );
    assert_eq!(c.nodes[0].outstanding(p(0)), Some(READ));
    c.deliver(0, 1);
    assert_eq!(
        c.deliver(1, 0),
        [
            Action::Install { page: p(0) },
            Action::Protect { page: p(0), access: Access::Read },
            Action::Wake { page: p(0) },
        ]
    );
    assert_eq!(c.nodes[0].directory(p(0)), Some(shared(&[0, 1])));
    c.threads[0][0] = Thread::Idle;
    c.check();
    // The home upgrades: the remote reader goes, the home's own copy stays current.
    assert_eq!(c.fault(0, 0, WRITE), [Action::Send { to: n(1), msg: Msg::Invalidate { page: p(0) } }]);
    c.deliver(0, 1);
    assert_eq!(
        c.deliver(1, 0),
        [Action::Protect { page: p(0), access: Access::Write }, Action::Wake { page: p(0) },]
    );
    assert_eq!(c.nodes[0].directory(p(0)), Some(Directory::Exclusive(n(0))));
    assert!(c.attempt(0, 0, p(0), WRITE));
    c.assert_quiescent();

    // The home writes while a remote owner holds the page.
    c.op(2, 0, WRITE);
    assert_eq!(
        c.fault(0, 0, WRITE),
        [Action::Send { to: n(2), msg: Msg::Recall { page: p(0), keep_read: false } }]
    );
    c.deliver(0, 2);
    assert_eq!(
        c.deliver(2, 0),
        [
            Action::Install { page: p(0) },
            Action::Protect { page: p(0), access: Access::Write },
            Action::Wake { page: p(0) },
        ]
    );
    assert!(c.attempt(0, 0, p(0), WRITE));
    c.assert_quiescent();
}

#[test]
fn upgrade_races_with_another_writer() {
    let mut c = Cluster::new(3, 1, 3, 1);
    c.op(1, 0, READ);
    c.op(2, 0, READ);
    c.fault(1, 0, WRITE);
    c.fault(2, 0, WRITE);
    // Node 1's upgrade is served first: node 2 is invalidated.
    assert_eq!(
        c.deliver(1, 0),
        [
            Action::Protect { page: p(0), access: Access::None },
            Action::Send { to: n(2), msg: Msg::Invalidate { page: p(0) } },
        ]
    );
    // Node 2's upgrade arrives before its InvAck and waits.
    assert_eq!(c.deliver(2, 0), []);
    assert_eq!(c.nodes[0].queued(p(0)), 1);
    // Node 2 drops its copy but keeps waiting for write access.
    c.deliver(0, 2);
    assert_eq!(c.nodes[2].access(p(0)), Access::None);
    assert_eq!(c.nodes[2].outstanding(p(0)), Some(WRITE));
    // The ack completes node 1's upgrade (no data) and starts node 2's at once.
    assert_eq!(
        c.deliver(2, 0),
        [
            Action::Send { to: n(1), msg: Msg::Grant { page: p(0), access: Access::Write, data: false } },
            Action::Send { to: n(1), msg: Msg::Recall { page: p(0), keep_read: false } },
        ]
    );
    // Node 1 sees its grant before the recall (FIFO), and may write in between.
    c.deliver(0, 1);
    assert!(c.attempt(1, 0, p(0), WRITE));
    c.deliver(0, 1);
    c.deliver(1, 0);
    // Node 2 lost its copy, so it gets the bytes, including node 1's write.
    assert_eq!(
        c.deliver(0, 2),
        [
            Action::Install { page: p(0) },
            Action::Protect { page: p(0), access: Access::Write },
            Action::Wake { page: p(0) },
        ]
    );
    assert!(c.attempt(2, 0, p(0), WRITE));
    c.assert_quiescent();
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
    assert!(c.nodes[0].in_transaction(p(0)));
    assert_eq!(c.nodes[0].queued(p(0)), 2);
    c.pump();
    let order: Vec<(u16, Access)> = c.grants.iter().map(|g| (g.0.0, g.2)).collect();
    assert_eq!(order, [(4, Access::Write), (3, Access::Write), (1, Access::Write), (2, Access::Write)]);
    assert_eq!(c.nodes[0].directory(p(0)), Some(Directory::Exclusive(n(2))));
    assert!(c.nodes.iter().all(ScNode::is_quiescent));
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
    assert_eq!(c.nodes[3].outstanding(p(0)), None);
    assert_eq!(c.nodes[0].queued(p(0)), 2);
    c.pump();
    let order: Vec<(u16, Access)> = c.grants.iter().map(|g| (g.0.0, g.2)).collect();
    // The home's own grant is local; the last remote grant went to node 2.
    assert_eq!(order, [(3, Access::Write), (1, Access::Read), (2, Access::Write)]);
    assert_eq!(c.nodes[0].access(p(0)), Access::Read);
    assert_eq!(c.nodes[0].directory(p(0)), Some(shared(&[0, 2])));
    assert!(c.nodes.iter().all(ScNode::is_quiescent));
    c.check();
}

// ----- randomized schedules -----

/// Random accesses and random delivery order; checks the invariants after every step and that
/// everything drains at the end.
fn random_run(seed: u64, nodes: u16, pages_per_node: u64, pages: u64, steps: usize) -> Cluster {
    let threads = 2;
    let mut c = Cluster::new(nodes, pages_per_node, pages, threads);
    let mut rng = Rng::new(seed);
    let deliver_bias = 35 + rng.below(40) as u64;
    for _ in 0..steps {
        let busy = c.busy_links();
        if !busy.is_empty() && rng.percent(deliver_bias) {
            c.deliver_link(busy[rng.below(busy.len())]);
        } else {
            let node = rng.below(c.count());
            let t = rng.below(threads);
            match c.threads[node][t] {
                Thread::Waiting(..) => {}
                Thread::Ready(page, kind) => {
                    c.attempt(node, t, page, kind);
                }
                Thread::Idle => {
                    let page = p(rng.below(c.pages()) as u64);
                    let kind = if rng.percent(50) { READ } else { WRITE };
                    c.attempt(node, t, page, kind);
                }
            }
        }
        c.check();
    }
    // Drain: no new accesses, only deliveries and retries, until every thread is done.
    let mut drain_steps = 0;
    loop {
        let busy = c.busy_links();
        let ready: Vec<(usize, usize)> = (0..c.count())
            .flat_map(|k| (0..threads).map(move |t| (k, t)))
            .filter(|&(k, t)| matches!(c.threads[k][t], Thread::Ready(..)))
            .collect();
        if busy.is_empty() && ready.is_empty() {
            break;
        }
        drain_steps += 1;
        assert!(drain_steps < 100_000, "seed {seed}: no progress while draining");
        let pick = rng.below(busy.len() + ready.len());
        if pick < busy.len() {
            c.deliver_link(busy[pick]);
        } else {
            let (k, t) = ready[pick - busy.len()];
            if let Thread::Ready(page, kind) = c.threads[k][t] {
                c.attempt(k, t, page, kind);
            }
        }
        c.check();
    }
    c.assert_quiescent();
    c
}

#[test]
fn random_schedules_stay_coherent_and_drain() {
    let configs: [(u16, u64, u64); 4] = [(3, 1, 3), (4, 1, 2), (3, 2, 3), (4, 1, 3)];
    let (mut reads, mut writes, mut delivered) = (0, 0, 0);
    for seed in 0..120u64 {
        let (nodes, per_node, pages) = configs[(seed % 4) as usize];
        let c = random_run(seed, nodes, per_node, pages, 2_000);
        reads += c.reads;
        writes += c.writes;
        delivered += c.delivered;
    }
    assert!(reads > 10_000 && writes > 10_000, "{reads} reads, {writes} writes");
    assert!(delivered > 50_000, "{delivered} messages");
}

// ----- malformed input -----

/// Hands `msg` from `from` to a copy of `node` and checks it is rejected without any effect.
fn assert_rejected(node: &ScNode, from: u16, msg: Msg) {
    let mut copy = node.clone();
    let mut out = Vec::new();
    let result = copy.handle(n(from), msg, &mut out);
    let err = result.expect_err(&format!("{msg:?} from {from} accepted by {node:?}"));
    assert!(!err.reason().is_empty());
    assert!(err.to_string().contains(err.reason()));
    assert!(out.is_empty(), "actions emitted on error: {out:?}");
    assert_eq!(&copy, node, "state changed by rejected {msg:?}");
}

#[test]
fn malformed_messages_are_rejected_without_effect() {
    let mut c = Cluster::new(3, 1, 3, 1);
    // Node 1 reads page 0, then node 2 wants to write it: the home waits for node 1's ack.
    c.op(1, 0, READ);
    c.fault(2, 0, WRITE);
    c.deliver(2, 0);
    assert!(c.nodes[0].in_transaction(p(0)));

    let home = &c.nodes[0];
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

    let reader = &c.nodes[1];
    assert_rejected(reader, 0, grant(Access::Read, true)); // nothing outstanding
    assert_rejected(reader, 2, Msg::Invalidate { page }); // not from the home
    assert_rejected(reader, 0, Msg::Recall { page, keep_read: true }); // not the owner
    assert_rejected(reader, 0, Msg::ReadReq { page }); // not the home
    assert_rejected(reader, 0, Msg::RecallAck { page });
    assert_rejected(reader, 0, Msg::InvAck { page });

    let writer = &c.nodes[2]; // waiting for write access, holds nothing
    assert_rejected(writer, 0, grant(Access::Read, true)); // not what it asked for
    assert_rejected(writer, 0, grant(Access::None, true));
    assert_rejected(writer, 0, grant(Access::Write, false)); // no copy to upgrade
    assert_rejected(writer, 1, grant(Access::Write, true)); // not the home
    assert_rejected(writer, 0, Msg::Invalidate { page }); // holds no copy
    assert_rejected(writer, 2, grant(Access::Write, true)); // from itself

    // After all that, the real exchange still completes.
    c.pump();
    let order: Vec<u16> = c.grants.iter().map(|g| g.0.0).collect();
    assert_eq!(order, [1, 2]);
    assert!(c.nodes.iter().all(ScNode::is_quiescent));

    // With a recall running, the owner may not ask for anything before its RecallAck.
    c.fault(1, 0, READ);
    c.deliver(1, 0);
    assert_rejected(&c.nodes[0], 2, Msg::ReadReq { page });
    assert_rejected(&c.nodes[0], 2, Msg::WriteReq { page });
    assert_rejected(&c.nodes[0], 1, Msg::ReadReq { page });
    assert_rejected(&c.nodes[0], 2, Msg::InvAck { page });
    assert_rejected(&c.nodes[0], 1, Msg::RecallAck { page });
    // Between transactions: a request for access the sender already has.
    c.pump();
    c.threads = vec![vec![Thread::Idle]; 3];
    c.assert_quiescent();
    assert_rejected(&c.nodes[0], 1, Msg::ReadReq { page });
    assert_rejected(&c.nodes[0], 2, Msg::ReadReq { page });
    assert_rejected(&c.nodes[0], 1, Msg::InvAck { page });
}

fn random_msg(rng: &mut Rng, page_limit: u64) -> Msg {
    let page = if rng.percent(5) {
        p(u64::MAX - rng.below(2) as u64)
    } else {
        p(rng.below(page_limit as usize + 2) as u64)
    };
    let access = [Access::None, Access::Read, Access::Write][rng.below(3)];
    let flag = rng.percent(50);
    match rng.below(7) {
        0 => Msg::ReadReq { page },
        1 => Msg::WriteReq { page },
        2 => Msg::Grant { page, access, data: flag },
        3 => Msg::Invalidate { page },
        4 => Msg::InvAck { page },
        5 => Msg::Recall { page, keep_read: flag },
        _ => Msg::RecallAck { page },
    }
}

fn random_sender(rng: &mut Rng, nodes: u16) -> NodeId {
    if rng.percent(3) { n(u16::MAX) } else { n(rng.below(usize::from(nodes) + 2) as u16) }
}

#[test]
fn garbage_never_panics_and_errors_change_nothing() {
    // Garbage thrown at nodes of a correctly running cluster, on copies so the run goes on.
    for seed in 0..20u64 {
        let mut rng = Rng::new(1_000 + seed);
        let mut c = random_run(seed, 3, 1, 3, 300);
        for _ in 0..300 {
            let busy = c.busy_links();
            if !busy.is_empty() && rng.percent(50) {
                c.deliver_link(busy[rng.below(busy.len())]);
            } else {
                let node = rng.below(3);
                let kind = if rng.percent(50) { READ } else { WRITE };
                let page = p(rng.below(3) as u64);
                if c.threads[node][0] == Thread::Idle {
                    c.attempt(node, 0, page, kind);
                }
            }
            let target = rng.below(3);
            let msg = random_msg(&mut rng, 3);
            let from = random_sender(&mut rng, 3);
            let mut copy = c.nodes[target].clone();
            let mut out = Vec::new();
            if copy.handle(from, msg, &mut out).is_err() {
                assert!(out.is_empty());
                assert_eq!(copy, c.nodes[target]);
            }
        }
    }

    // Nodes that accept whatever garbage they can and drift into odd states.
    for seed in 0..20u64 {
        let mut rng = Rng::new(7_000 + seed);
        let nodes = 2 + rng.below(3) as u16;
        let mut states: Vec<ScNode> = (0..nodes).map(|i| ScNode::new(n(i), nodes, 2)).collect();
        let limit = states[0].page_count();
        for _ in 0..3_000 {
            let k = rng.below(states.len());
            let mut out = Vec::new();
            if rng.percent(20) {
                let page = p(rng.below(limit as usize + 2) as u64);
                let kind = if rng.percent(50) { READ } else { WRITE };
                states[k].fault(page, kind, &mut out);
            } else {
                let msg = random_msg(&mut rng, limit);
                let from = random_sender(&mut rng, nodes);
                let before = states[k].clone();
                if states[k].handle(from, msg, &mut out).is_err() {
                    assert!(out.is_empty());
                    assert_eq!(states[k], before);
                }
            }
            let _ = states[k].is_quiescent();
        }
    }
}

#[test]
fn out_of_range_fault_is_ignored() {
    let mut node = ScNode::new(n(0), 2, 2);
    let mut out = Vec::new();
    node.fault(p(4), WRITE, &mut out);
    node.fault(p(u64::MAX), READ, &mut out);
    assert!(out.is_empty());
    assert!(node.is_quiescent());
}
