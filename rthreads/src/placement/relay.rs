//! Load reports through a tree, in clusters above [`STAR_ABOVE`](super::STAR_ABOVE) nodes: a pure
//! state machine, no I/O.
//!
//! Up to 16 nodes every node tells every other its load. Above that, node 0 (which runs `main`,
//! where most spawns start) is the only one that keeps a view of every node, and the reports reach
//! it through a tree rooted at it, the barrier trees' shape (`RTHREADS_TREE_FANOUT` children a
//! node): a node hands its own report to its [`Relay`], children's reports are merged into it as
//! they arrive, and once a reporting period the node sends what its relay holds to its parent in
//! one message. Node 0 so hears from its children only (16 of them by default), one message each
//! per period, instead of from every node; every node handles one message per child and sends one.
//!
//! A relay keeps the newest report of each node of its subtree and nothing older: reports carry the
//! reporting node's report number, and a later one replaces an earlier one wherever they meet (at
//! an inner node, or at node 0, where a report sent directly, when a thread ends, can overtake one
//! still on its way up). The price is latency: a report climbs one level a period, so it reaches
//! node 0 up to `depth` periods after it was made (two at 256 nodes with the default fan-out); the
//! spawns node 0 sent meanwhile count as pending until a report shows them processed, as before.
//! A node that has never run a thread does not report at all (node 0 assumes it idle), a report
//! node 0 has just had directly (sent at a thread's end) does not climb the tree as well, and CPU
//! use counts in whole CPUs when a node decides whether it has something new to report (placement
//! counts it so), so an idle cluster's nodes do not connect to their parents for nothing.

use std::collections::BTreeMap;

use dsm::NodeId;
use net::{DecodeError, Reader, Writer};

use crate::runtime::wire::Field;

/// One node's load on its way to node 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The node it describes.
    pub(crate) node: NodeId,
    /// Its report number there: a later report replaces an earlier one.
    pub(crate) seq: u32,
    /// Threads it runs.
    pub(crate) running: u32,
    /// Thousandths of a CPU it uses.
    pub(crate) cpu_milli: u32,
    /// Frames from node 0 it had processed when it made the report.
    pub(crate) processed: u64,
}

/// The most entries one message up the tree may carry: one per node of the largest cluster.
pub(crate) const MAX_ENTRIES: usize = 1024;

/// The reports one message up the tree carries (at most [`MAX_ENTRIES`], at most one per node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Entries(pub(crate) Vec<Entry>);

impl Field for Entries {
    fn put(&self, w: &mut Writer) {
        w.u16(self.0.len() as u16);
        for e in &self.0 {
            w.u16(e.node.0).u32(e.seq).u32(e.running).u32(e.cpu_milli).u64(e.processed);
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Entries, DecodeError> {
        let n = usize::from(r.u16()?);
        if n > MAX_ENTRIES {
            return Err(DecodeError(format!("{n} load reports in one message (at most {MAX_ENTRIES})")));
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(Entry {
                node: NodeId(r.u16()?),
                seq: r.u32()?,
                running: r.u32()?,
                cpu_milli: r.u32()?,
                processed: r.u64()?,
            });
        }
        Ok(Entries(v))
    }
}

/// What a node holds for its parent: the newest report of each node of its subtree that it has
/// not passed on yet.
#[derive(Debug, Default)]
pub(crate) struct Relay {
    held: BTreeMap<u16, Entry>,
}

impl Relay {
    /// Takes in a report (this node's own or one a child passed on); an older report of the same
    /// node than the one held is dropped.
    pub(crate) fn hold(&mut self, e: Entry) {
        let slot = self.held.entry(e.node.0).or_insert(e);
        if newer(e.seq, Some(slot.seq)) {
            *slot = e;
        }
    }

    /// Whether there is anything to pass on.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Everything held, in node order, for one message to the parent; the relay is empty after.
    pub(crate) fn take(&mut self) -> Entries {
        Entries(std::mem::take(&mut self.held).into_values().collect())
    }
}

/// Whether a report numbered `seq` is newer than the last one applied, `last` (`None`: nothing yet).
pub(crate) fn newer(seq: u32, last: Option<u32>) -> bool {
    last.is_none_or(|l| seq > l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::parent;

    fn entry(node: u16, seq: u32, running: u32) -> Entry {
        Entry { node: NodeId(node), seq, running, cpu_milli: 0, processed: u64::from(seq) }
    }

    #[test]
    fn a_relay_keeps_the_newest_report_of_each_node() {
        let mut r = Relay::default();
        r.hold(entry(7, 2, 5));
        r.hold(entry(7, 1, 9)); // older: dropped
        r.hold(entry(3, 1, 1));
        r.hold(entry(7, 3, 6));
        assert_eq!(r.take().0, vec![entry(3, 1, 1), entry(7, 3, 6)]);
        assert!(r.is_empty());
        assert_eq!(r.take(), Entries::default());
    }

    #[test]
    fn entries_travel_and_bad_counts_are_refused() {
        let e = Entries(vec![entry(1, 4, 2), entry(255, u32::MAX, 0)]);
        assert_eq!(Entries::decode(&e.encode()), Ok(e.clone()));
        let mut w = Writer::new();
        w.u16(MAX_ENTRIES as u16 + 1);
        assert!(Entries::decode(&w.finish()).unwrap_err().0.contains("load reports in one message"));
        let bytes = e.encode();
        assert!(Entries::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn only_newer_reports_apply() {
        assert!(newer(1, None) && newer(5, Some(4)));
        assert!(!newer(4, Some(4)) && !newer(3, Some(4)));
    }

    /// Every node of a 256-node tree reports in each round and relays what reached it once a round;
    /// node 0 ends up with every node's newest report, hearing from its children only, and no node
    /// sends more than one message a round.
    #[test]
    fn reports_reach_node_0_through_the_tree_with_one_message_per_node_per_round() {
        for (nodes, fanout) in [(256u16, 16u16), (20, 2), (17, 16), (1000, 32)] {
            let mut relays: Vec<Relay> = (0..nodes).map(|_| Relay::default()).collect();
            let mut at_root: BTreeMap<u16, Entry> = BTreeMap::new();
            let depth = {
                let mut d = 0;
                let mut n = NodeId(nodes - 1);
                while let Some(p) = parent(n, NodeId(0), nodes, fanout) {
                    (d, n) = (d + 1, p);
                }
                d
            };
            let rounds = 3 + depth;
            for round in 1..=rounds {
                // Each node's own report (running = round), for a few rounds.
                if round <= 3 {
                    for (i, r) in relays.iter_mut().enumerate() {
                        r.hold(entry(i as u16, round, round));
                    }
                }
                // Each node passes on what it holds, children first (higher ranks) or not: the
                // order within a round must not matter, so go from node 0 upwards.
                let mut to_root = 0;
                let mut sent = vec![0u32; usize::from(nodes)];
                let batches: Vec<(u16, Entries)> = (0..nodes)
                    .zip(relays.iter_mut())
                    .filter(|(_, r)| !r.is_empty())
                    .map(|(i, r)| (i, r.take()))
                    .collect();
                for (from, batch) in batches {
                    sent[usize::from(from)] += 1;
                    match parent(NodeId(from), NodeId(0), nodes, fanout) {
                        None => {
                            for e in batch.0 {
                                at_root.insert(e.node.0, e);
                            }
                        }
                        Some(p) => {
                            if p == NodeId(0) {
                                to_root += 1;
                            }
                            for e in batch.0 {
                                if p == NodeId(0) {
                                    let last = at_root.get(&e.node.0).map(|l| l.seq);
                                    if newer(e.seq, last) {
                                        at_root.insert(e.node.0, e);
                                    }
                                } else {
                                    relays[p.index()].hold(e);
                                }
                            }
                        }
                    }
                }
                assert!(
                    to_root <= u32::from(fanout.min(nodes - 1)),
                    "{nodes}/{fanout}: {to_root} to the root"
                );
                assert!(sent.iter().all(|&s| s <= 1));
            }
            assert_eq!(at_root.len(), usize::from(nodes), "{nodes}/{fanout}");
            assert!(at_root.values().all(|e| e.seq == 3 && e.running == 3), "{nodes}/{fanout}");
            assert!(relays.iter().all(Relay::is_empty));
        }
    }
}
