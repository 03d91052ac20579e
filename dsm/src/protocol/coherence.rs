//! What every coherence protocol offers the runtime: one interface ([`Coherence`]), one family of
//! effects ([`Effect`]), one page geometry ([`Geometry`]).
//!
//! The runtime has a single executor: it feeds a protocol faults, messages, releases and acquires,
//! and carries out the effects it returns, whatever the protocol. So a new message of an existing
//! protocol touches that protocol and its wire encoding only; a new protocol implements this
//! trait (and a wire encoding of its messages) and the runtime picks it up.

use std::fmt::Debug;

use super::ProtocolError;
use crate::{Access, FaultKind, NodeId, PageId};

/// Which pages a node homes, and how many pages there are: node `i` homes pages
/// `i * pages_per_node .. (i + 1) * pages_per_node`, and the last node also any pages past the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// This node.
    pub me: NodeId,
    /// How many nodes the cluster has.
    pub nodes: u16,
    /// How many pages each node homes.
    pub pages_per_node: u64,
}

impl Geometry {
    /// The geometry of node `me` in a cluster of `nodes` nodes homing `pages_per_node` pages each.
    ///
    /// # Panics
    /// If `nodes` or `pages_per_node` is zero, or `me` is not below `nodes`.
    pub fn new(me: NodeId, nodes: u16, pages_per_node: u64) -> Geometry {
        assert!(nodes > 0 && pages_per_node > 0, "a cluster has nodes and pages");
        assert!(me.0 < nodes, "node {me} is not below {nodes}");
        Geometry { me, nodes, pages_per_node }
    }

    /// The node that homes `page`.
    pub fn home_of(&self, page: PageId) -> NodeId {
        NodeId((page.0 / self.pages_per_node).min(u64::from(self.nodes) - 1) as u16)
    }

    /// How many pages the space has (`u64::MAX` if more).
    pub fn page_count(&self) -> u64 {
        self.pages_per_node.saturating_mul(u64::from(self.nodes))
    }

    /// Whether `page` lies in the space.
    pub fn in_range(&self, page: PageId) -> bool {
        page.0 < self.page_count()
    }

    /// Whether this node homes `page`.
    pub fn is_home(&self, page: PageId) -> bool {
        self.home_of(page) == self.me
    }

    /// What any message must satisfy to be handled at all: it comes from another node of the
    /// cluster and is about a page of the space.
    ///
    /// # Errors
    /// What is wrong with `msg` from `from`.
    pub fn check_message<M: Message>(&self, from: NodeId, msg: &M) -> Result<(), ProtocolError> {
        let problem = if from.0 >= self.nodes {
            format!("{msg:?} from {from}, which is outside a cluster of {} nodes", self.nodes)
        } else if from == self.me {
            format!("{msg:?} from {from} to itself")
        } else if !self.in_range(msg.page()) {
            format!(
                "{msg:?} from {from}: {} is outside the {} pages of the space",
                msg.page(),
                self.page_count()
            )
        } else {
            return Ok(());
        };
        Err(ProtocolError::new(problem))
    }
}

/// What travels next to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Payload {
    /// Nothing.
    None,
    /// The page's bytes (one page).
    Page,
    /// A diff of the page (see `lrc::diff`).
    Diff,
}

/// Names one release (see [`Coherence::release`]); [`Effect::Released`] reports its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReleaseId(pub u64);

/// A message of a protocol, as the runtime sees it: which page it is about and what travels with it.
pub trait Message: Copy + Debug + Eq + Send + 'static {
    /// The page the message is about.
    fn page(&self) -> PageId;
    /// What travels next to the message.
    fn payload(&self) -> Payload;
    /// What the message says, in words, for the protocol log (`page` is the page's name there).
    fn explain(&self, page: &str) -> String;
    /// How many pages, from [`Message::page`] on, this message asks for a copy or ownership of
    /// on behalf of this node, whose bytes may then arrive here (0 for any other message,
    /// including a home's recall, whose bytes go to the home). The runtime prepares the memory of
    /// those pages while the answer travels, instead of after it arrives.
    fn fetches(&self) -> u64 {
        0
    }
    /// Whether this message grants a read copy and carries the page's bytes: the answer a direct
    /// read (see [`Coherence::direct_read_request`]) waits for.
    fn grants_read_copy(&self) -> bool {
        false
    }
}

/// What the runtime must do. The effects of one call are carried out strictly in the order
/// returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect<M> {
    /// Send `msg` to `to` (never this node), with its [payload](Message::payload):
    ///
    /// * [`Payload::Page`]: the page's bytes, read from this node's memory when this effect is
    ///   carried out (an earlier `Protect` that revoked write access makes them final);
    /// * [`Payload::Diff`]: the diff from the page's twin to its current bytes, computed when this
    ///   effect is carried out; the twin is then discarded.
    Send {
        /// The destination node.
        to: NodeId,
        /// The message.
        msg: M,
    },
    /// Copy the page bytes that came with the message being handled into this node's memory
    /// (while application access to the page is closed, before the `Protect` that opens it, if
    /// any: a protocol may keep a page it installs closed until a thread traps on it).
    Install {
        /// The page to fill.
        page: PageId,
    },
    /// Save a copy of the page's current bytes as its twin (while it is at most readable, just
    /// before the `Protect` that makes it writable).
    Twin {
        /// The page.
        page: PageId,
    },
    /// Apply the diff that came with the message being handled to this node's copy of the page.
    /// Only the bytes the diff carries may be written.
    ApplyDiff {
        /// The page.
        page: PageId,
    },
    /// Set what local application threads may do with the page.
    Protect {
        /// The page.
        page: PageId,
        /// The new access.
        access: Access,
    },
    /// Local threads blocked in a fault on this page may retry now.
    Wake {
        /// The page.
        page: PageId,
    },
    /// The release with this id is complete: the synchronisation that follows it may happen.
    Released {
        /// The release.
        release: ReleaseId,
    },
}

impl<M: Message> Effect<M> {
    /// The page the effect is about (`None` for [`Effect::Released`]).
    pub fn page(&self) -> Option<PageId> {
        match *self {
            Effect::Send { msg, .. } => Some(msg.page()),
            Effect::Install { page }
            | Effect::Twin { page }
            | Effect::ApplyDiff { page }
            | Effect::Protect { page, .. }
            | Effect::Wake { page } => Some(page),
            Effect::Released { .. } => None,
        }
    }
}

/// A coherence protocol: the state of one node, as a pure state machine. It never touches memory
/// protection, sockets or page bytes; it returns [`Effect`]s, which the runtime carries out.
pub trait Coherence {
    /// The protocol's messages.
    type Msg: Message;

    /// This node's page geometry.
    fn geometry(&self) -> Geometry;

    /// A local thread trapped on `page` with `kind` (`atomic`: the instruction was an atomic
    /// read-modify-write, which says the page holds a synchronisation variable).
    fn fault(&mut self, page: PageId, kind: FaultKind, atomic: bool, out: &mut Vec<Effect<Self::Msg>>);

    /// A message from node `from`.
    ///
    /// # Errors
    /// A message that cannot arrive in the current state (the sender is broken): nothing changes.
    fn handle(
        &mut self,
        from: NodeId,
        msg: Self::Msg,
        out: &mut Vec<Effect<Self::Msg>>,
    ) -> Result<(), ProtocolError>;

    /// A release point: makes this node's writes visible to whoever acquires after it. `None` if
    /// there was nothing to do (complete at once); else its completion comes as
    /// [`Effect::Released`].
    fn release(&mut self, out: &mut Vec<Effect<Self::Msg>>) -> Option<ReleaseId>;

    /// An acquire point: drops what other nodes' releases made stale.
    fn acquire(&mut self, out: &mut Vec<Effect<Self::Msg>>);

    /// Whether a release would have anything to do now.
    fn needs_release(&self) -> bool;

    /// Whether an acquire would have anything to drop now.
    fn has_stale(&self) -> bool;

    /// What local application threads may do with `page` now.
    fn access(&self, page: PageId) -> Access;

    /// This node's state for `page`, in words (for reports of faults that do not end).
    fn describe(&self, page: PageId) -> String;

    /// Direct reads (`dsm::fault::direct`): the message a node sends its home for a read copy of
    /// `page` (in range), which a faulting thread may send itself, outside this state machine; the
    /// home hands it to its protocol as if it had come the ordinary way. `None` (the default) for
    /// a protocol that does not allow it.
    fn direct_read_request(&self, page: PageId) -> Option<Self::Msg> {
        let _ = page;
        None
    }

    /// Whether `page` is in the one state in which a direct read of it may start: homed
    /// elsewhere, no copy here, nothing asked for. Always false for a protocol without direct
    /// reads.
    fn fetchable(&self, page: PageId) -> bool {
        let _ = page;
        false
    }

    /// A direct read of `page`, started while it was [`fetchable`](Coherence::fetchable), was
    /// granted by its home and opened for reading: this node holds a read copy now, as if this
    /// state machine had asked for it and installed the grant. No effects: the page is open.
    ///
    /// # Errors
    /// If `page` is not fetchable (the runtime broke the rule), or the protocol has no direct reads.
    fn absorb_direct_read(&mut self, page: PageId) -> Result<(), ProtocolError> {
        Err(ProtocolError::new(format!("a direct read of {page} under a protocol without direct reads")))
    }

    /// [`Coherence::fault`], where every page the call would ask for besides `page` itself (a
    /// read-ahead) is first offered to `claim`, which may refuse it (a direct read has it); a
    /// refused page ends the run there.
    fn fault_claiming(
        &mut self,
        page: PageId,
        kind: FaultKind,
        atomic: bool,
        out: &mut Vec<Effect<Self::Msg>>,
        claim: &mut dyn FnMut(PageId) -> bool,
    ) {
        let _ = claim;
        self.fault(page, kind, atomic, out);
    }

    /// The page whose read miss would continue a read-ahead run now, if any (a direct read of it
    /// would break the run, so it takes the ordinary way).
    fn expected_read(&self) -> Option<PageId> {
        None
    }

    /// Read copies this node would drop before a barrier ([`Coherence::drop_copies`]): copies that
    /// their homes revoked before, which a writer will likely revoke again. Empty when the protocol
    /// never drops copies.
    fn drop_candidates(&self) -> Vec<PageId> {
        Vec::new()
    }

    /// Whether [`Coherence::drop_copies`] may have anything to do (cheap; may say yes when it
    /// has not).
    fn wants_drops(&self) -> bool {
        false
    }

    /// Whether [`Coherence::drop_copies`] would answer requests that wait for this node's next
    /// barrier arrival (the runtime then has the arriving thread wait until the answers are sent,
    /// so that they travel ahead of its arrival).
    fn answers_at_arrival(&self) -> bool {
        false
    }

    /// This node's threads have made `arrivals` barrier arrivals so far (counted by the runtime;
    /// never less than before). Told before each turn's messages and before
    /// [`Coherence::drop_copies`]; the protocol may compare the count with its peers' (a request
    /// meant for a barrier this node has reached, which it may answer now).
    fn note_arrivals(&mut self, _arrivals: u64, _out: &mut Vec<Effect<Self::Msg>>) {}

    /// Several threads of this node have been in barriers at once: an arrival no longer says that
    /// the node has written what it writes before the barrier (its other threads may still be
    /// writing). A protocol that acts on arrivals stops doing so.
    fn barriers_shared(&mut self) {}

    /// The last count [`Coherence::note_arrivals`] told (0 for a protocol that keeps none).
    fn barrier_arrivals(&self) -> u64 {
        0
    }

    /// A barrier arrival of this node (the count told last): drops the read copies of [`Coherence::drop_candidates`]
    /// this node holds, telling their homes, so that the next write by another node finds no copy
    /// to revoke and does not wait for this node (self-invalidation); may ask for copies it
    /// predicts it will read after the barrier (each page first offered to `claim`, which may
    /// refuse it: a direct read has it); and, at a home, answers what waited for this arrival.
    /// Never needed for correctness.
    fn drop_copies(&mut self, _out: &mut Vec<Effect<Self::Msg>>, _claim: &mut dyn FnMut(PageId) -> bool) {}
}
