//! Small identifier types shared by the address space, the protocols and the runtime.

use std::fmt;

/// The index of a node in the cluster, `0..node_count`. Node 0 runs `main` (and is the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u16);

impl NodeId {
    /// The node id as an index.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Every node of a cluster of `nodes`, in order.
    pub fn all(nodes: u16) -> impl Iterator<Item = NodeId> {
        (0..nodes).map(NodeId)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// The index of a page inside the shared space (page 0 is the first page of the space).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageId(pub u64);

impl fmt::Display for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page {}", self.0)
    }
}

/// What an application thread may do with a page on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// No valid copy: any access traps.
    None,
    /// A valid read-only copy: writes trap.
    Read,
    /// The only valid copy, writable.
    Write,
}

/// Why an application thread trapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// A load from a page without a valid copy.
    Read,
    /// A store to a page without write access.
    Write,
}

impl FaultKind {
    /// The access that satisfies this fault.
    pub fn needed(self) -> Access {
        match self {
            FaultKind::Read => Access::Read,
            FaultKind::Write => Access::Write,
        }
    }
}
