//! Barriers through a combining tree: a pure state machine, one per node, with no I/O.
//!
//! A barrier used to be one request from every thread to the barrier's manager (the home of its
//! address) and one reply back: `2 n` messages through one node. Here the nodes form a k-ary tree
//! rooted at that manager (ranks counted from it: the parent of rank `r` is rank `(r - 1) / k`), and
//! each node *combines* what reaches it:
//!
//! - a thread arriving on a node with children in the tree (or on the root) joins that node's
//!   queue; a thread on a leaf node asks its parent directly (one message, answered on the same
//!   connection);
//! - a node that is not the root reports how many arrivals it holds but has not reported yet, in
//!   one `Up` message to its parent per service turn (or at once, when an application thread
//!   arrives): arrivals that reach a node in the same turn travel on as one message;
//! - the root releases the first `n` arrivals it holds once it holds `n`: its own waiters get their
//!   reply, each child a `Down` naming how many of the arrivals it reported to let go, and each
//!   child does the same for its subtree. Arrivals beyond `n` (more threads than the barrier is
//!   for) stay queued, in order, for the next phase, as std's barrier does.
//!
//! Exactly one thread per phase is the leader: the arrival that completed the count, followed down
//! the tree. The tree's shape only decides where each node reports to: whatever fan-out a node
//! assumes, its parent's rank is below its own, so every report reaches the root. With a fan-out
//! at least `nodes - 1`, every node's parent is the root and the messages are those of the
//! single-manager barrier.
//!
//! Ordering: each node reports to one parent on one ordered connection, and releases only what was
//! reported to it, so a `Down` never asks a child for arrivals it has not reported.

use std::collections::{HashMap, VecDeque};

use dsm::NodeId;

use super::manager::Waiter;

/// Who arrived at a node: a thread waiting for its reply, or a child that reported `count`
/// arrivals of its subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Thread(Waiter),
    Child(NodeId, u64),
}

/// One barrier's arrivals at this node.
#[derive(Debug, Default)]
struct Held {
    /// The barrier's size (from the latest arrival).
    n: u64,
    /// Arrivals in the order they reached this node.
    entries: VecDeque<Entry>,
    /// Their total count.
    held: u64,
    /// How many of them the parent has been told about (and not released yet).
    reported: u64,
}

/// What the combiner wants delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TreeOut {
    /// The barrier returns for this thread.
    Reply { to: Waiter, leader: bool },
    /// Tell the parent `to` that `count` more threads of this subtree arrived at barrier `key`.
    Up { to: NodeId, key: u64, n: u64, count: u64 },
    /// Tell the child `to` to release `count` of the arrivals it reported.
    Down { to: NodeId, key: u64, count: u64, leader: bool },
}

/// The barriers with arrivals at this node.
#[derive(Debug, Default)]
pub(crate) struct Combiner {
    barriers: HashMap<u64, Held>,
    /// Barriers with arrivals not reported to the parent yet, and where to report them.
    unreported: Vec<(u64, NodeId)>,
}

impl Combiner {
    /// A thread of any node arrives at barrier `key` (for `n` threads) on this node; `parent` is
    /// this node's parent in the barrier's tree, `None` on the root.
    pub(crate) fn arrive(
        &mut self,
        key: u64,
        n: u64,
        waiter: Waiter,
        parent: Option<NodeId>,
        out: &mut Vec<TreeOut>,
    ) {
        self.add(key, n, Entry::Thread(waiter), 1, parent, out);
    }

    /// Child `from` reports `count` more arrivals of its subtree.
    pub(crate) fn up(
        &mut self,
        key: u64,
        n: u64,
        from: NodeId,
        count: u64,
        parent: Option<NodeId>,
        out: &mut Vec<TreeOut>,
    ) {
        self.add(key, n, Entry::Child(from, count), count, parent, out);
    }

    fn add(
        &mut self,
        key: u64,
        n: u64,
        e: Entry,
        count: u64,
        parent: Option<NodeId>,
        out: &mut Vec<TreeOut>,
    ) {
        if count == 0 {
            return;
        }
        let h = self.barriers.entry(key).or_default();
        h.n = n.max(1);
        match (h.entries.back_mut(), e) {
            (Some(Entry::Child(last, c)), Entry::Child(from, more)) if *last == from => *c += more,
            _ => h.entries.push_back(e),
        }
        h.held += count;
        match parent {
            None => {
                while h.held >= h.n {
                    let n = h.n;
                    release(h, n, true, key, out);
                }
                if h.entries.is_empty() {
                    self.barriers.remove(&key);
                }
            }
            Some(p) => {
                if h.held == h.reported + count {
                    self.unreported.push((key, p));
                }
            }
        }
    }

    /// Reports every barrier's unreported arrivals to its parent: one `Up` each.
    pub(crate) fn flush(&mut self, out: &mut Vec<TreeOut>) {
        for (key, to) in self.unreported.drain(..) {
            if let Some(h) = self.barriers.get_mut(&key)
                && h.held > h.reported
            {
                out.push(TreeOut::Up { to, key, n: h.n, count: h.held - h.reported });
                h.reported = h.held;
            }
        }
    }

    /// Whether some arrivals wait to be reported.
    pub(crate) fn has_unreported(&self) -> bool {
        !self.unreported.is_empty()
    }

    /// The parent lets go of `count` of the arrivals this node reported.
    ///
    /// # Errors
    /// If this node reported fewer (a confused or malicious peer): nothing is released.
    pub(crate) fn down(
        &mut self,
        key: u64,
        count: u64,
        leader: bool,
        out: &mut Vec<TreeOut>,
    ) -> Result<(), String> {
        let Some(h) = self.barriers.get_mut(&key).filter(|h| h.reported >= count) else {
            return Err(format!(
                "it released {count} arrivals at barrier {key:#x} that were not reported to it"
            ));
        };
        release(h, count, leader, key, out);
        h.reported -= count;
        if h.entries.is_empty() {
            self.barriers.remove(&key);
        }
        Ok(())
    }

    /// How many threads of this node's subtree wait at barriers here (for tests and statistics).
    #[cfg(test)]
    fn waiting(&self) -> u64 {
        self.barriers.values().map(|h| h.held).sum()
    }
}

/// Releases the first `count` arrivals of `h`; with `leader`, the last one released leads.
fn release(h: &mut Held, count: u64, leader: bool, key: u64, out: &mut Vec<TreeOut>) {
    let mut left = count;
    while left > 0 {
        let Some(e) = h.entries.front_mut() else { break };
        match e {
            Entry::Thread(w) => {
                left -= 1;
                out.push(TreeOut::Reply { to: *w, leader: leader && left == 0 });
                h.entries.pop_front();
            }
            Entry::Child(to, c) => {
                let take = (*c).min(left);
                left -= take;
                out.push(TreeOut::Down { to: *to, key, count: take, leader: leader && left == 0 });
                *c -= take;
                if *c == 0 {
                    h.entries.pop_front();
                }
            }
        }
    }
    h.held -= count - left;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{has_children, parent};

    /// A cluster of combiners with an in-memory transport: each node reports after every message
    /// it handles (as a service turn would), replies are collected.
    struct Sim {
        nodes: u16,
        fanout: u16,
        root: NodeId,
        c: Vec<Combiner>,
        queue: VecDeque<(NodeId, NodeId, TreeOut)>,
        replies: Vec<(Waiter, bool)>,
    }

    impl Sim {
        fn new(nodes: u16, fanout: u16, root: u16) -> Sim {
            Sim {
                nodes,
                fanout,
                root: NodeId(root),
                c: (0..nodes).map(|_| Combiner::default()).collect(),
                queue: VecDeque::new(),
                replies: Vec::new(),
            }
        }

        fn parent(&self, me: NodeId) -> Option<NodeId> {
            parent(me, self.root, self.nodes, self.fanout)
        }

        fn take(&mut self, from: NodeId, out: Vec<TreeOut>) {
            for o in out {
                match o {
                    TreeOut::Reply { to, leader } => self.replies.push((to, leader)),
                    TreeOut::Up { to, .. } | TreeOut::Down { to, .. } => self.queue.push_back((from, to, o)),
                }
            }
        }

        /// Thread `id` of node `on` arrives: at its own node if that node combines, else at its
        /// parent (as the runtime does).
        fn arrive(&mut self, on: u16, id: u64, n: u64) {
            let on = NodeId(on);
            let at = if on == self.root || has_children(on, self.root, self.nodes, self.fanout) {
                on
            } else {
                self.parent(on).unwrap()
            };
            let p = self.parent(at);
            let mut out = Vec::new();
            self.c[at.index()].arrive(7, n, (on, id), p, &mut out);
            self.take(at, out);
        }

        fn flush(&mut self, node: usize) {
            let mut out = Vec::new();
            self.c[node].flush(&mut out);
            self.take(NodeId(node as u16), out);
        }

        /// Delivers messages (each node flushing after each), until none is left.
        fn settle(&mut self) {
            for i in 0..self.nodes as usize {
                self.flush(i);
            }
            while let Some((from, to, o)) = self.queue.pop_front() {
                let p = self.parent(to);
                let mut out = Vec::new();
                match o {
                    TreeOut::Up { key, n, count, .. } => {
                        self.c[to.index()].up(key, n, from, count, p, &mut out)
                    }
                    TreeOut::Down { key, count, leader, .. } => {
                        self.c[to.index()].down(key, count, leader, &mut out).unwrap();
                    }
                    TreeOut::Reply { .. } => unreachable!(),
                }
                self.take(to, out);
                self.flush(to.index());
            }
        }
    }

    #[test]
    fn a_barrier_over_a_tree_releases_everyone_once_with_one_leader() {
        for (nodes, fanout, root) in [(1, 16, 0), (4, 16, 0), (256, 16, 0), (256, 4, 100), (40, 2, 39)] {
            let mut s = Sim::new(nodes, fanout, root);
            for phase in 0..3u64 {
                // Every node but the last arrives; nothing is released.
                for i in 0..nodes - 1 {
                    s.arrive(i, phase, u64::from(nodes));
                }
                s.settle();
                assert!(s.replies.is_empty(), "released early ({nodes} nodes, fan-out {fanout})");
                s.arrive(nodes - 1, phase, u64::from(nodes));
                s.settle();
                assert_eq!(s.replies.len(), usize::from(nodes));
                assert_eq!(s.replies.iter().filter(|r| r.1).count(), 1, "one leader");
                let leader = s.replies.iter().find(|r| r.1).unwrap().0;
                assert_eq!(leader, (NodeId(nodes - 1), phase), "the last arrival leads");
                let mut who: Vec<_> = s.replies.drain(..).map(|r| r.0).collect();
                who.sort();
                who.dedup();
                assert_eq!(who.len(), usize::from(nodes));
                assert!(s.c.iter().all(|c| c.waiting() == 0 && c.barriers.is_empty()));
            }
        }
    }

    #[test]
    fn arrivals_beyond_n_wait_for_the_next_phase_in_order() {
        // A barrier for 3 used by 7 threads on 9 nodes with fan-out 2, arriving before any flush:
        // two phases go, one thread stays.
        let mut s = Sim::new(9, 2, 0);
        for i in 0..7u16 {
            s.arrive(i + 2, u64::from(i), 3);
        }
        s.settle();
        assert_eq!(s.replies.len(), 6);
        assert_eq!(s.replies.iter().filter(|r| r.1).count(), 2, "one leader per phase");
        assert!(s.c[0].waiting() == 1, "the root holds the 7th arrival for the next phase");
        s.replies.clear();
        s.arrive(0, 100, 3);
        s.arrive(1, 101, 3);
        s.settle();
        assert_eq!(s.replies.len(), 3);
        assert!(s.c.iter().all(|c| c.barriers.is_empty()));
    }

    #[test]
    fn arrivals_reports_and_releases_in_any_order_release_groups_of_n() {
        // Per-link FIFO queues (TCP between two nodes), delivered in a random order across links;
        // nodes report when a random turn ends (not after every message), so releases come down
        // while a child holds arrivals it has not reported yet. Each waiter arrives once.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        for (nodes, fanout, root, n, waiters) in
            [(9u16, 2u16, 0u16, 3u64, 30u64), (17, 4, 5, 4, 40), (6, 1, 2, 2, 24), (33, 16, 32, 5, 50)]
        {
            for _ in 0..20 {
                let tree = Sim::new(nodes, fanout, root);
                let mut c: Vec<Combiner> = (0..nodes).map(|_| Combiner::default()).collect();
                let mut links: HashMap<(NodeId, NodeId), VecDeque<TreeOut>> = HashMap::new();
                let mut released: Vec<(Waiter, bool)> = Vec::new();
                let mut arrived = 0u64;
                let post =
                    |from: NodeId, out: Vec<TreeOut>, links: &mut HashMap<_, VecDeque<_>>, r: &mut Vec<_>| {
                        for o in out {
                            match o {
                                TreeOut::Reply { to, leader } => r.push((to, leader)),
                                TreeOut::Up { to, .. } | TreeOut::Down { to, .. } => {
                                    links.entry((from, to)).or_default().push_back(o)
                                }
                            }
                        }
                    };
                loop {
                    let busy: Vec<(NodeId, NodeId)> =
                        links.iter().filter(|(_, q)| !q.is_empty()).map(|(k, _)| *k).collect();
                    let pending = c.iter().any(Combiner::has_unreported);
                    if arrived == waiters && busy.is_empty() && !pending {
                        break;
                    }
                    let mut out = Vec::new();
                    match rand(3) {
                        0 if arrived < waiters => {
                            let on = NodeId(rand(usize::from(nodes)) as u16);
                            let at = if on == tree.root || has_children(on, tree.root, nodes, fanout) {
                                on
                            } else {
                                tree.parent(on).unwrap()
                            };
                            c[at.index()].arrive(7, n, (on, arrived), tree.parent(at), &mut out);
                            arrived += 1;
                            post(at, out, &mut links, &mut released);
                        }
                        1 if !busy.is_empty() => {
                            let (from, to) = busy[rand(busy.len())];
                            let o = links.get_mut(&(from, to)).unwrap().pop_front().unwrap();
                            match o {
                                TreeOut::Up { key, n, count, .. } => {
                                    c[to.index()].up(key, n, from, count, tree.parent(to), &mut out)
                                }
                                TreeOut::Down { key, count, leader, .. } => {
                                    assert_eq!(tree.parent(to), Some(from), "releases come from the parent");
                                    c[to.index()].down(key, count, leader, &mut out).unwrap();
                                }
                                TreeOut::Reply { .. } => unreachable!(),
                            }
                            post(to, out, &mut links, &mut released);
                        }
                        _ => {
                            let at = rand(usize::from(nodes));
                            c[at].flush(&mut out);
                            post(NodeId(at as u16), out, &mut links, &mut released);
                        }
                    }
                    // Safety at every step: never more released than whole phases have arrived.
                    assert!(released.len() as u64 <= arrived / n * n, "released early");
                }
                assert_eq!(released.len() as u64, waiters / n * n, "every whole phase goes");
                assert_eq!(released.iter().filter(|r| r.1).count() as u64, waiters / n, "a leader per phase");
                let mut who: Vec<Waiter> = released.iter().map(|r| r.0).collect();
                who.sort();
                who.dedup();
                assert_eq!(who.len(), released.len(), "nobody released twice");
                let held: u64 = c.iter().map(Combiner::waiting).sum();
                assert_eq!(held, waiters % n, "the rest wait for the next phase");
            }
        }
    }

    #[test]
    fn a_release_of_more_than_was_reported_is_refused() {
        let mut c = Combiner::default();
        let mut out = Vec::new();
        c.arrive(1, 4, (NodeId(3), 1), Some(NodeId(0)), &mut out);
        assert!(c.down(1, 1, true, &mut out).is_err(), "not reported yet");
        c.flush(&mut out);
        assert_eq!(out, [TreeOut::Up { to: NodeId(0), key: 1, n: 4, count: 1 }]);
        assert!(c.down(1, 2, true, &mut out).is_err());
        assert!(c.down(9, 1, true, &mut out).is_err());
        out.clear();
        c.down(1, 1, true, &mut out).unwrap();
        assert_eq!(out, [TreeOut::Reply { to: (NodeId(3), 1), leader: true }]);
    }
}
