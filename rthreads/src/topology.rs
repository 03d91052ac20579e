//! The shape of the node trees: a k-ary tree over the nodes, rooted at any node (ranks counted from
//! the root: the parent of rank `r` is rank `(r - 1) / k`, its children ranks `r k + 1 ..= r k + k`).
//! Barriers combine their arrivals through it (rooted at the barrier's manager, `sync::tree`),
//! load reports climb it to node 0 (`placement::relay`), and node 0's shutdown order goes down it.
//! The fan-out is the run's `RTHREADS_TREE_FANOUT` (16 by default: depth 2 at 256 nodes). Pure
//! arithmetic on node ids, no state beyond the fan-out.

use std::sync::atomic::{AtomicU16, Ordering};

use dsm::NodeId;

/// The fan-out of the tree when `RTHREADS_TREE_FANOUT` is unset.
pub(crate) const DEFAULT_FANOUT: u16 = 16;

/// The parent of node `me` in the tree of `nodes` nodes with fan-out `fanout` rooted at `root`;
/// `None` for the root itself.
pub(crate) fn parent(me: NodeId, root: NodeId, nodes: u16, fanout: u16) -> Option<NodeId> {
    let n = u32::from(nodes.max(1));
    let rank = (u32::from(me.0) + n - u32::from(root.0) % n) % n;
    if rank == 0 {
        return None;
    }
    let up = (rank - 1) / u32::from(fanout.max(1));
    Some(NodeId(((up + u32::from(root.0)) % n) as u16))
}

/// Whether node `me` has children in that tree (so its own threads combine there).
pub(crate) fn has_children(me: NodeId, root: NodeId, nodes: u16, fanout: u16) -> bool {
    let n = u64::from(nodes.max(1));
    let rank = (u64::from(me.0) + n - u64::from(root.0) % n) % n;
    rank * u64::from(fanout.max(1)) + 1 < n
}

static FANOUT: AtomicU16 = AtomicU16::new(DEFAULT_FANOUT);

/// The run's fan-out (`RTHREADS_TREE_FANOUT`).
pub(crate) fn fanout() -> u16 {
    FANOUT.load(Ordering::Relaxed)
}

/// Sets the run's fan-out (start-up, from the configuration).
pub(crate) fn set_fanout(k: u16) {
    FANOUT.store(k.max(1), Ordering::Relaxed);
}

/// The children of node `me` in the tree of `nodes` nodes with fan-out `fanout` rooted at `root`.
pub(crate) fn children(me: NodeId, root: NodeId, nodes: u16, fanout: u16) -> impl Iterator<Item = NodeId> {
    let n = u32::from(nodes.max(1));
    let k = u32::from(fanout.max(1));
    let rank = (u32::from(me.0) + n - u32::from(root.0) % n) % n;
    let first = (rank * k + 1).min(n);
    let last = (rank * k + k).min(n - 1);
    (first..=last).filter(move |&c| c < n).map(move |c| NodeId(((c + u32::from(root.0)) % n) as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_reaches_the_root_whatever_the_fanout() {
        for nodes in [1u16, 2, 3, 17, 256, 1024] {
            for fanout in [1u16, 2, 16, 32, 2000] {
                for root in [0, nodes / 2, nodes - 1] {
                    let root = NodeId(root);
                    for me in 0..nodes {
                        let mut at = NodeId(me);
                        let mut hops = 0;
                        while let Some(p) = parent(at, root, nodes, fanout) {
                            assert!(has_children(p, root, nodes, fanout), "{p} is a parent without children");
                            at = p;
                            hops += 1;
                            assert!(hops <= nodes, "a cycle");
                        }
                        assert_eq!(at, root);
                    }
                }
            }
        }
        assert_eq!(parent(NodeId(5), NodeId(0), 8, 16), Some(NodeId(0)));
        assert_eq!(parent(NodeId(17), NodeId(0), 256, 16), Some(NodeId(1)));
        assert_eq!(parent(NodeId(4), NodeId(3), 256, 16), Some(NodeId(3)));
        assert_eq!(parent(NodeId(1), NodeId(3), 256, 16), Some(NodeId(18)), "rank 254's parent is rank 15");
        assert!(!has_children(NodeId(7), NodeId(0), 8, 16));
    }

    #[test]
    fn children_are_the_nodes_whose_parent_is_me() {
        for nodes in [1u16, 2, 3, 17, 20, 256, 1024] {
            for fanout in [1u16, 2, 16, 32, 2000] {
                for root in [0, nodes / 2, nodes - 1] {
                    let root = NodeId(root);
                    let mut seen = 0usize;
                    for me in 0..nodes {
                        let me = NodeId(me);
                        let kids: Vec<NodeId> = children(me, root, nodes, fanout).collect();
                        assert_eq!(
                            kids.is_empty(),
                            !has_children(me, root, nodes, fanout),
                            "{me} of {nodes}/{fanout}"
                        );
                        for c in &kids {
                            assert_eq!(
                                parent(*c, root, nodes, fanout),
                                Some(me),
                                "{c} of {nodes}/{fanout}/{root}"
                            );
                        }
                        seen += kids.len();
                    }
                    assert_eq!(
                        seen,
                        usize::from(nodes) - 1,
                        "every node but the root is someone's child once"
                    );
                }
            }
        }
        let kids: Vec<NodeId> = children(NodeId(0), NodeId(0), 256, 16).collect();
        assert_eq!(kids, (1..=16).map(NodeId).collect::<Vec<_>>());
        assert_eq!(children(NodeId(9), NodeId(0), 20, 2).collect::<Vec<_>>(), vec![NodeId(19)]);
    }
}
