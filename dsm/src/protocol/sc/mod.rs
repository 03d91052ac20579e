//! Sequentially consistent coherence: a home-based, single-writer / multiple-reader,
//! write-invalidate protocol in the style of Ivy.
//!
//! [`ScNode`] is the protocol state of one node, written as a pure state machine: it never touches
//! memory protection, sockets or page bytes. The runtime feeds it local faults ([`ScNode::fault`])
//! and messages from peers ([`ScNode::handle`]) and carries out the [`Action`]s it returns, in order.
//!
//! Every page has a fixed *home* node. The home keeps a directory entry for the page (one exclusive
//! owner, or a set of readers), serialises all requests for the page (one transaction at a time,
//! later requests wait in a FIFO queue) and revokes copies before it grants a conflicting access.
//! See `README.md` next to this file for a walkthrough.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use super::{Coherence, Effect, Geometry, Message, Payload, Planted, ProtocolError as Error, ReleaseId};
use crate::{Access, FaultKind, NodeId, PageId};

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

/// Messages between nodes.
///
/// Page bytes are never inside a message value: a message that carries a page says so through
/// [`Msg::carries_data`], and the runtime sends and receives the page's bytes next to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Msg {
    /// Requester to home: the requester wants a read copy.
    ReadReq {
        /// The page asked for.
        page: PageId,
    },
    /// Requester to home: the requester wants the only writable copy.
    WriteReq {
        /// The page asked for.
        page: PageId,
    },
    /// Home to requester: access granted.
    Grant {
        /// The page granted.
        page: PageId,
        /// The access granted (`Read` or `Write`).
        access: Access,
        /// Whether the page's bytes travel with the grant. False only when the requester already
        /// holds an up-to-date read copy and is upgrading it to write access.
        data: bool,
    },
    /// Home to reader: drop your read copy and acknowledge with [`Msg::InvAck`].
    Invalidate {
        /// The page to drop.
        page: PageId,
    },
    /// Reader to home: the read copy is gone.
    InvAck {
        /// The page dropped.
        page: PageId,
    },
    /// Home to exclusive owner: hand the page back with [`Msg::RecallAck`].
    Recall {
        /// The page recalled.
        page: PageId,
        /// Keep a read-only copy (the home is serving a reader) instead of dropping the page.
        keep_read: bool,
    },
    /// Owner to home: the page's current bytes travel with this message.
    RecallAck {
        /// The page handed back.
        page: PageId,
    },
    /// Reader to home, unasked: the read copy is gone ([`ScNode::drop_copies`]). Answered by
    /// [`Msg::DropAck`].
    Drop {
        /// The page dropped.
        page: PageId,
    },
    /// Home to reader: the `Drop` is seen; every revocation of the dropped copy came before this.
    DropAck {
        /// The page dropped.
        page: PageId,
    },
    /// Reader to home, at the reader's barrier arrival number `barrier`: a read copy of `page`,
    /// wanted after the barrier ([`ScNode::with_prefetch`]). The home answers it as a `ReadReq`:
    /// at once if it has made that many barrier arrivals itself (it has written what it writes
    /// before the barrier), else at its next arrival, or when the reader sends a `ReadReq` for
    /// the page meanwhile (a thread of the reader needs it now).
    ReadSoon {
        /// The page asked for.
        page: PageId,
        /// The reader's barrier arrivals, this one included.
        barrier: u64,
    },
}

impl Msg {
    /// The page this message is about.
    pub fn page(&self) -> PageId {
        match *self {
            Msg::ReadReq { page }
            | Msg::WriteReq { page }
            | Msg::Grant { page, .. }
            | Msg::Invalidate { page }
            | Msg::InvAck { page }
            | Msg::Recall { page, .. }
            | Msg::RecallAck { page }
            | Msg::Drop { page }
            | Msg::DropAck { page }
            | Msg::ReadSoon { page, .. } => page,
        }
    }

    /// Whether the page's bytes travel with this message (`Grant { data: true, .. }` and
    /// `RecallAck`).
    pub fn carries_data(&self) -> bool {
        matches!(self, Msg::Grant { data: true, .. } | Msg::RecallAck { .. })
    }
}

/// What the runtime must do; the actions of one call are carried out strictly in the order
/// returned. This protocol emits `Send`, `Install`, `Protect` and `Wake` only. A `Send` whose
/// message [carries data](Msg::carries_data) takes the page's bytes, read when it is carried out
/// (an earlier `Protect` that revoked write access guarantees that no local write is lost);
/// `Install` comes only while handling such a message, before the `Protect` that opens the page.
pub type Action = Effect<Msg>;

/// Where a call appends its actions.
type Out = Vec<Action>;

/// What a revocation of a read copy adds to its page's drop credit, and the most credit a page
/// holds: a page is dropped before a barrier while it has credit, one per drop. A page another
/// node writes between barriers, dropped every time, is no longer revoked and so loses credit:
/// after three drops it is kept once, revoked again, and earns three more (three round trips
/// saved out of four). A read-mostly page revoked once costs three extra read faults, then none.
const DROP_CREDIT: u8 = 3;
const MAX_CREDIT: u8 = 6;

/// The most pages a node remembers as candidates for dropping before a barrier.
pub const CANDIDATES: usize = 256;

/// A read copy homed elsewhere that this node drops before barriers while it has credit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct Candidate {
    /// Drops left ([`DROP_CREDIT`]).
    credit: u8,
    /// The barrier arrivals at which it was dropped last and the time before (0: not yet).
    dropped: [u64; 2],
    /// A thread needed the page before the answer to its last `ReadSoon` came (the copy asked
    /// for ahead did not spare it a wait: the read follows the barrier at once, or the
    /// alternation is the drops' own, not the program's).
    hurried: bool,
}

impl Candidate {
    /// Whether the copy was dropped at every other barrier lately, ending with the barrier before
    /// arrival `now`: it is read between every other pair of barriers (a buffer its home writes
    /// before one barrier and this node reads after it, alternating with another buffer), so it
    /// will be read after arrival `now`.
    fn alternates_before(&self, now: u64) -> bool {
        let [last, before] = self.dropped;
        before >= 1 && last == before + 2 && now == last + 1
    }
}

/// What handling a message returns.
type Handled = Result<(), ProtocolError>;

/// The home's record of which nodes hold a copy of a page.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Directory {
    /// One node holds the only copy, writable.
    Exclusive(NodeId),
    /// These nodes hold read-only copies. The home is always among them: it keeps the current
    /// bytes whenever nobody may write.
    Shared(BTreeSet<NodeId>),
}

impl Directory {
    /// The access this entry gives `node`.
    pub fn access_of(&self, node: NodeId) -> Access {
        match self {
            Directory::Exclusive(owner) if *owner == node => Access::Write,
            Directory::Exclusive(_) => Access::None,
            Directory::Shared(readers) if readers.contains(&node) => Access::Read,
            Directory::Shared(_) => Access::None,
        }
    }
}

/// A message that cannot arrive in the current state: the sender is broken (or not a peer).
/// [`ScNode::handle`] returns it without changing any state.
pub use super::ProtocolError;

/// A request waiting at (or being served by) a page's home.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Request {
    from: NodeId,
    kind: FaultKind,
}

/// What an unfinished home transaction still waits for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Wait {
    /// The `RecallAck` of this (former) exclusive owner.
    Recall(NodeId),
    /// The `InvAck`s of these readers (never empty while stored).
    Acks(BTreeSet<NodeId>),
}

/// The transaction a home is running for one page.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Txn {
    req: Request,
    wait: Wait,
    /// Whether the final grant carries the page's bytes.
    data: bool,
}

/// Home-side state of a page with a transaction in progress.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Busy {
    active: Txn,
    /// Requests that arrived while `active` runs, in arrival order.
    queue: VecDeque<Request>,
}

/// The protocol state of one node.
///
/// All per-page state lives in hash maps in which a missing entry means the initial state (the
/// page is held exclusively by its home), so untouched pages cost nothing.
///
/// `Hash` agrees with `Eq` (map entries are hashed in page order), so whole cluster states can be
/// fingerprinted by a model checker (see `model.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScNode {
    /// This node, the cluster's size and which pages each node homes.
    geo: Geometry,
    /// This node's access, only where it differs from the initial one (`Write` at the home,
    /// `None` elsewhere).
    access: HashMap<PageId, Access>,
    /// Requests this node has sent (or, as home, queued locally) and not yet seen granted.
    pending: HashMap<PageId, FaultKind>,
    /// Directory entries of pages homed here, only where they differ from `Exclusive(me)`.
    dir: HashMap<PageId, Directory>,
    /// Pages homed here with a transaction in progress.
    busy: HashMap<PageId, Busy>,
    /// Pages homed elsewhere whose read copy here was revoked by an `Invalidate` (at most
    /// [`CANDIDATES`]), with their drop credit ([`DROP_CREDIT`]): dropped before a barrier while
    /// held ([`ScNode::drop_copies`]).
    candidates: std::collections::BTreeMap<PageId, Candidate>,
    /// Whether revoked copies become candidates ([`ScNode::with_drops`]).
    drops: bool,
    /// Pages dropped unasked whose `DropAck` has not come yet: an `Invalidate` sent before the
    /// home saw the `Drop` may still come, and is acknowledged.
    dropped: std::collections::BTreeSet<PageId>,
    /// Adaptive read- and write-ahead: the most pages after a miss asked for with it (0: off;
    /// see [`ScNode::with_read_ahead`]).
    read_ahead: u16,
    /// For read misses and for write misses apart (a scan that reads then writes each page misses
    /// both ways on every page): the page just after the last such miss's run, and how many pages
    /// the next run asks for if the next miss of that kind is that page.
    stream: [Option<(PageId, u16)>; 2],
    /// Whether copies are asked for ahead at barriers ([`ScNode::with_prefetch`]), and (unit
    /// tests only) whether every candidate not held is asked for, predicted or not.
    prefetch: bool,
    prefetch_every: bool,
    /// Whether this node's barrier arrivals answer the `ReadSoon`s kept for them (false once
    /// several of its threads share barriers, [`ScNode::barriers_shared`]).
    answer_at_arrival: bool,
    /// Barrier arrivals this node has made (as the runtime counts them, [`ScNode::note_arrivals`]).
    arrivals: u64,
    /// Pages asked for with a `ReadSoon` that no thread here has faulted on since (a fault sends
    /// the home a `ReadReq` to hurry it).
    soon: BTreeSet<PageId>,
    /// At a home: `ReadSoon`s waiting for this node's next barrier arrival, as
    /// `(barrier, page, reader)` in arrival order.
    deferred: Vec<(u64, PageId, NodeId)>,
    /// At a home: `(page, reader)` of each `ReadSoon` after which nothing else from the reader
    /// about the page has come: a `ReadReq` from it now hurries the `ReadSoon` (or, if it was
    /// answered already, crossed the answer), whatever the directory says.
    asked_soon: BTreeSet<(PageId, NodeId)>,
    /// A protocol mistake planted on purpose (unit-test builds only).
    bug: Planted<Bug>,
}

impl Hash for ScNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        /// Hashes a map's entries in key order, so equal maps hash equally whatever their layout.
        fn entries<V: Hash, H: Hasher>(map: &HashMap<PageId, V>, state: &mut H) {
            let mut sorted: Vec<(&PageId, &V)> = map.iter().collect();
            sorted.sort_unstable_by_key(|&(page, _)| *page);
            sorted.hash(state);
        }
        self.geo.hash(state);
        entries(&self.access, state);
        entries(&self.pending, state);
        entries(&self.dir, state);
        entries(&self.busy, state);
        (&self.candidates, &self.dropped, self.drops).hash(state);
        (self.read_ahead, self.stream).hash(state);
        (self.prefetch, self.prefetch_every, self.answer_at_arrival, self.arrivals).hash(state);
        (&self.soon, &self.deferred, &self.asked_soon).hash(state);
        self.bug.hash(state);
    }
}

/// Protocol mistakes that can be planted in a node (unit-test builds only) to check that the
/// tests and the model checker catch them; see `model.rs`. Outside unit tests nothing can plant one, and
/// checking for one is a constant `false` that compiles away.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Bug {
    /// A write to a shared page is granted as soon as the invalidations are sent, without waiting
    /// for the readers' `InvAck`s.
    GrantBeforeInvAcks,
    /// When a transaction that had to wait completes, the requests queued behind it are forgotten
    /// instead of started.
    DropQueuedRequests,
    /// A recalled owner sends its bytes before revoking its own write access, so a local write
    /// can slip in after the bytes were read and be lost.
    RecallAckBeforeProtect,
}

impl ScNode {
    /// The protocol state of node `me` in a cluster of `nodes` nodes, where node `i` is the home of
    /// pages `i * pages_per_node .. (i + 1) * pages_per_node` (see [`Geometry`], which
    /// [`Coherence::geometry`] returns).
    ///
    /// # Panics
    ///
    /// If `nodes` or `pages_per_node` is zero, or `me` is not below `nodes`.
    pub fn new(me: NodeId, nodes: u16, pages_per_node: u64) -> Self {
        ScNode {
            geo: Geometry::new(me, nodes, pages_per_node),
            access: HashMap::new(),
            pending: HashMap::new(),
            dir: HashMap::new(),
            busy: HashMap::new(),
            candidates: std::collections::BTreeMap::new(),
            drops: false,
            dropped: BTreeSet::new(),
            read_ahead: 0,
            stream: [None; 2],
            prefetch: false,
            prefetch_every: false,
            answer_at_arrival: true,
            arrivals: 0,
            soon: BTreeSet::new(),
            deferred: Vec::new(),
            asked_soon: BTreeSet::new(),
            bug: Planted::none(),
        }
    }

    /// This node with adaptive read- and write-ahead up to `max` pages: when misses of one kind run
    /// in sequence (a miss on the page just after the previous run), the miss also asks the same
    /// home for the following pages that this node lacks that access to, twice as many as the last
    /// time, from 1 up to `max` (pages it holds, or has asked for already, are stepped over and
    /// count towards the run); any other miss of that kind starts again (read and write misses
    /// are followed apart, so a scan that reads and then writes every page grows both). On the home
    /// itself the following pages' requests enter their queues directly (recalls from the node
    /// that holds them). Each page is an ordinary `ReadReq`
    /// or `WriteReq`, so the home needs nothing new; the requests leave together and are answered
    /// in about one round trip. A sequential scan (or fill) of `n` remote pages then waits for
    /// about `log2(max) + n / (1 + max)` round trips instead of `n`. `0` turns it off (the
    /// default).
    ///
    /// # Examples
    ///
    /// ```
    /// use dsm::protocol::sc::ScNode;
    /// use dsm::NodeId;
    ///
    /// let node = ScNode::new(NodeId(1), 2, 64).with_read_ahead(15);
    /// # let _ = node;
    /// ```
    pub fn with_read_ahead(mut self, max: u16) -> Self {
        self.read_ahead = max;
        self
    }

    /// This node with copies dropped before barriers (`true`; see [`ScNode::drop_copies`]) or not
    /// (the default: no page is ever a candidate, and `drop_copies` does nothing).
    ///
    /// # Examples
    ///
    /// ```
    /// use dsm::protocol::sc::ScNode;
    /// use dsm::NodeId;
    ///
    /// let node = ScNode::new(NodeId(1), 2, 64).with_drops(true);
    /// # let _ = node;
    /// ```
    pub fn with_drops(mut self, on: bool) -> Self {
        self.drops = on;
        self
    }

    /// This node with copies asked for ahead at barriers (`true`) or not (the default). Needs
    /// [`ScNode::with_drops`]: at a barrier arrival, after its drops, the node asks the homes of the
    /// copies it dropped at every other barrier lately, ending with the one before ([`Msg::ReadSoon`]:
    /// Jacobi's boundary rows, a buffer one node fills before a barrier and another reads after it,
    /// alternating with a second buffer). A home answers once it has arrived at the same barrier
    /// itself (arrivals are counted per node; a home whose count is behind answers at its next
    /// arrival), so the copy is there when the reader leaves the barrier and its read does not
    /// trap; a thread that needs the page before that hurries the home with an ordinary `ReadReq`.
    ///
    /// Sequential consistency holds: a `ReadSoon` is a read request answered later; the copy it
    /// brings is revoked as any other.
    ///
    /// # Examples
    ///
    /// ```
    /// use dsm::protocol::sc::ScNode;
    /// use dsm::NodeId;
    ///
    /// let node = ScNode::new(NodeId(1), 2, 64).with_drops(true).with_prefetch(true);
    /// # let _ = node;
    /// ```
    pub fn with_prefetch(mut self, on: bool) -> Self {
        self.prefetch = on;
        self
    }

    /// Asks, at each barrier arrival, for every candidate copy not held, predicted or not (unit
    /// tests and model checks: every crossing of a `ReadSoon` comes up in small models).
    #[cfg(test)]
    pub(crate) fn prefetch_every_candidate(mut self) -> Self {
        self.prefetch = true;
        self.prefetch_every = true;
        self
    }

    /// Plants `bug` in this node (unit-test builds only).
    #[cfg(test)]
    pub(crate) fn inject(&mut self, bug: Bug) {
        self.bug.plant(bug);
    }

    /// The request this node has outstanding for `page`, if any.
    pub fn outstanding(&self, page: PageId) -> Option<FaultKind> {
        self.pending.get(&page).copied()
    }

    /// The directory entry of `page` if this node is its home (`None` otherwise, or out of range).
    ///
    /// While a transaction runs, the entry still describes the state before it: copies being
    /// revoked are still listed and the requester is not yet.
    pub fn directory(&self, page: PageId) -> Option<Directory> {
        if !self.geo.in_range(page) || !self.geo.is_home(page) {
            return None;
        }
        Some(self.dir_entry(page))
    }

    /// This node has made `arrivals` barrier arrivals so far (the runtime counts them, and tells
    /// the count before each turn's messages): a `ReadSoon` for an arrival made is answered now.
    /// A count lower than the last one told changes nothing.
    pub fn note_arrivals(&mut self, arrivals: u64, out: &mut Vec<Action>) {
        self.arrivals = self.arrivals.max(arrivals);
        let now = self.arrivals;
        self.start_kept(|b| b <= now, out);
    }

    /// Several threads of this node wait in barriers at once (see
    /// [`Coherence::barriers_shared`]): this node's arrivals no longer say when it has written
    /// what it writes before a barrier. It stops asking for copies ahead, and as a home it answers
    /// a `ReadSoon` only when its reader hurries it (so the reader, finding every copy asked for
    /// ahead late, stops asking too).
    pub fn barriers_shared(&mut self) {
        self.prefetch = false;
        self.answer_at_arrival = false;
    }

    /// Whether this node, as a home, keeps a `ReadSoon` for a barrier arrival it has not made
    /// (and will answer it then).
    pub fn waits_for_arrival(&self) -> bool {
        !self.deferred.is_empty() && self.answer_at_arrival
    }

    /// Pages this node asked for with a `ReadSoon` that no thread here has needed since.
    pub fn asked_soon(&self) -> Vec<PageId> {
        self.soon.iter().copied().collect()
    }

    /// Whether this node, as home of `page`, is in the middle of a transaction for it.
    pub fn in_transaction(&self, page: PageId) -> bool {
        self.busy.contains_key(&page)
    }

    /// How many requests for `page` wait at this node (as home) behind the running transaction.
    pub fn queued(&self, page: PageId) -> usize {
        self.busy.get(&page).map_or(0, |b| b.queue.len())
    }

    /// True when no transaction is in progress here and no request from this node is outstanding.
    pub fn is_quiescent(&self) -> bool {
        self.pending.is_empty() && self.busy.is_empty()
    }

    /// A local application thread trapped on `page` wanting `kind` access. Appends actions to `out`.
    ///
    /// * If the current access already satisfies `kind` (the page was granted meanwhile), only
    ///   `Wake { page }` is emitted.
    /// * If this node already has a request for the page outstanding, nothing is emitted: the
    ///   thread waits for the `Wake` that follows that grant and then retries (faulting again if
    ///   the grant was `Read` and it needs `Write`).
    /// * Otherwise a `ReadReq`/`WriteReq` goes to the home; on the home itself the request enters
    ///   the page's queue directly and may be served within this call.
    ///
    /// A fault on an out-of-range page is ignored (nothing is emitted); the runtime never maps
    /// such pages.
    pub fn fault(&mut self, page: PageId, kind: FaultKind, out: &mut Vec<Action>) {
        self.fault_with(page, kind, out, &mut |_| true);
    }

    /// [`ScNode::fault`], where each page a read- or write-ahead would ask for is first offered to
    /// `claim`; the run ends at the first page it refuses (the runtime refuses a page a direct
    /// read has, see [`ScNode::absorb_direct_read`]).
    pub fn fault_with(
        &mut self,
        page: PageId,
        kind: FaultKind,
        out: &mut Vec<Action>,
        claim: &mut dyn FnMut(PageId) -> bool,
    ) {
        if !self.geo.in_range(page) {
            return;
        }
        if self.access(page) >= kind.needed() {
            out.push(Action::Wake { page });
            return;
        }
        if self.pending.contains_key(&page) {
            if self.soon.remove(&page) {
                if let Some(c) = self.candidates.get_mut(&page) {
                    c.hurried = true;
                }
                // Asked for at the last barrier, and needed now: the home answers at once.
                out.push(Action::Send { to: self.geo.home_of(page), msg: Msg::ReadReq { page } });
            }
            return;
        }
        self.pending.insert(page, kind);
        let home = self.geo.home_of(page);
        self.request(page, kind, home, out);
        if self.read_ahead > 0 {
            self.ahead_of(page, kind, home, out, claim);
        }
    }

    /// Whether a direct read of `page` may start: homed elsewhere, no copy here, nothing asked
    /// for (see [`Coherence::fetchable`]).
    pub fn fetchable(&self, page: PageId) -> bool {
        // An `Invalidate` may still come for a copy dropped without its `DropAck` yet; a direct
        // read would hold it while the home waits for its acknowledgement to answer the read.
        self.lacks(page) && !self.dropped.contains(&page)
    }

    /// Whether `page` is homed elsewhere, with no copy here and nothing asked for.
    fn lacks(&self, page: PageId) -> bool {
        self.geo.in_range(page)
            && !self.geo.is_home(page)
            && !self.access.contains_key(&page)
            && !self.pending.contains_key(&page)
    }

    /// Read copies homed elsewhere that were revoked before (see [`ScNode::drop_copies`]).
    pub fn drop_candidates(&self) -> Vec<PageId> {
        self.candidates.keys().copied().collect()
    }

    /// Self-invalidation, before a barrier: drops every read copy of a page whose copy here was
    /// revoked by an `Invalidate` before and that still has drop credit (a page another node
    /// writes between barriers, which would revoke it again; see [`DROP_CREDIT`]), with a `Drop`
    /// to its home, so that the writer finds no copy to revoke and does not wait for this node. A
    /// copy with a request outstanding is kept. The home forgets the reader; if it is left the
    /// only reader, with no transaction running, it takes write access back at once (its next
    /// write does not trap).
    ///
    /// Sequential consistency holds: dropping a read copy is always allowed; the next read
    /// faults and asks the home as usual.
    pub fn drop_copies(&mut self, out: &mut Vec<Action>) {
        self.arrivals += 1;
        self.drop_copies_with(out, &mut |_| true);
    }

    /// [`ScNode::drop_copies`], where each page a prefetch would ask for
    /// ([`ScNode::with_prefetch`]) is first offered to `claim`, which may refuse it (a direct read
    /// has it), at the arrival [`ScNode::note_arrivals`] told last (the runtime counts them), not
    /// a new one. The `ReadSoon`s that waited for it are answered.
    pub fn drop_copies_with(&mut self, out: &mut Vec<Action>, claim: &mut dyn FnMut(PageId) -> bool) {
        let now = self.arrivals;
        self.start_kept(|_| true, out);
        let pages: Vec<PageId> = self
            .candidates
            .keys()
            .copied()
            .filter(|&p| self.access(p) == Access::Read && !self.pending.contains_key(&p))
            .collect();
        for page in pages {
            if let Some(c) = self.candidates.get_mut(&page) {
                // A copy read after every other barrier is asked for ahead: if it came in time,
                // dropping it cost its reader nothing, and it earns a credit back; if a thread
                // needed it first, it costs one, as any drop.
                let asked_ahead = self.prefetch && now.checked_sub(1).is_some_and(|e| c.alternates_before(e));
                if asked_ahead && !c.hurried {
                    c.credit = (c.credit + 1).min(MAX_CREDIT);
                } else {
                    c.credit -= 1;
                }
                c.dropped = [now, c.dropped[0]];
                if c.credit == 0 {
                    self.candidates.remove(&page);
                }
            }
            self.set_access(page, Access::None);
            out.push(Action::Protect { page, access: Access::None });
            out.push(Action::Send { to: self.geo.home_of(page), msg: Msg::Drop { page } });
            self.dropped.insert(page);
        }
        if !self.prefetch {
            return;
        }
        let wanted: Vec<PageId> = self
            .candidates
            .iter()
            .filter(|(_, c)| self.prefetch_every || c.alternates_before(now))
            .map(|(&p, _)| p)
            .collect();
        for page in wanted {
            // A copy dropped at the last barrier may still wait for its `DropAck` (the reader
            // left that barrier at once): the `ReadSoon` travels behind the `Drop`, and an
            // `Invalidate` crossing the `Drop` is still acknowledged as such.
            if self.lacks(page) && claim(page) {
                self.pending.insert(page, FaultKind::Read);
                self.soon.insert(page);
                out.push(Action::Send {
                    to: self.geo.home_of(page),
                    msg: Msg::ReadSoon { page, barrier: now },
                });
            }
        }
    }

    /// At a home: starts the kept `ReadSoon`s whose barrier `due` accepts (unless this node's
    /// arrivals answer none, [`ScNode::barriers_shared`]). At a barrier arrival all of them, also
    /// those whose reader counted more arrivals than this one: counts drift apart when nodes go
    /// through different barriers (some threads only in some phases), and waiting for the count to
    /// catch up would keep the request, and the reader's copy, waiting for long.
    fn start_kept(&mut self, due: impl Fn(u64) -> bool, out: &mut Out) {
        if self.deferred.is_empty() || !self.answer_at_arrival {
            return;
        }
        let (now, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.deferred).into_iter().partition(|&(b, _, _)| due(b));
        self.deferred = later;
        for (_, page, from) in now {
            self.submit(page, Request { from, kind: FaultKind::Read }, out);
        }
    }

    /// A direct read of `page` was granted by its home and opened: this node holds a read copy
    /// (see [`Coherence::absorb_direct_read`]). The home saw an ordinary `ReadReq` from this node
    /// and answered it with an ordinary `Grant`, which reached the faulting thread instead of this
    /// state machine; this records the result as `on_grant` would have.
    ///
    /// # Errors
    /// If `page` was not [`fetchable`](ScNode::fetchable); nothing changes then.
    pub fn absorb_direct_read(&mut self, page: PageId) -> Result<(), ProtocolError> {
        if !self.fetchable(page) {
            return Err(ProtocolError::new(format!(
                "a direct read of {page} by {}, which holds {:?} access to it with request {:?} outstanding",
                self.geo.me,
                self.access(page),
                self.outstanding(page)
            )));
        }
        self.set_access(page, Access::Read);
        Ok(())
    }

    /// Asks `home` for `kind` access to `page` (recorded in `pending` by the caller): a message,
    /// or on the home itself a request that enters the page's queue directly (and may be served
    /// within this call).
    fn request(&mut self, page: PageId, kind: FaultKind, home: NodeId, out: &mut Vec<Action>) {
        if home == self.geo.me {
            self.submit(page, Request { from: self.geo.me, kind }, out);
        } else {
            let msg = match kind {
                FaultKind::Read => Msg::ReadReq { page },
                FaultKind::Write => Msg::WriteReq { page },
            };
            out.push(Action::Send { to: home, msg });
        }
    }

    /// After a `kind` miss on `page` (homed at `home`, here or elsewhere): asks for the following
    /// pages too if the misses run in sequence (see [`ScNode::with_read_ahead`]).
    fn ahead_of(
        &mut self,
        page: PageId,
        kind: FaultKind,
        home: NodeId,
        out: &mut Vec<Action>,
        claim: &mut dyn FnMut(PageId) -> bool,
    ) {
        let which = usize::from(kind == FaultKind::Write);
        let window = self.stream[which].filter(|&(next, _)| next == page).map(|(_, w)| w);
        let mut next = page.0 + 1;
        for _ in 0..window.unwrap_or(0) {
            let q = PageId(next);
            if !self.geo.in_range(q) || self.geo.home_of(q) != home {
                break;
            }
            // A page already here or on its way with the access the run wants (asked for ahead
            // at a barrier, say) is stepped over, not asked for: the scan goes on past it, and so
            // does the run. One on its way with less (a read, in a write run) ends the run.
            let here = self.access(q) >= kind.needed()
                || self.pending.get(&q).is_some_and(|&k| k.needed() >= kind.needed());
            if !here {
                if self.pending.contains_key(&q) || (home != self.geo.me && !claim(q)) {
                    break;
                }
                self.pending.insert(q, kind);
                self.request(q, kind, home, out);
            }
            next += 1;
        }
        let grown = super::next_window(window, self.read_ahead);
        self.stream[which] = Some((PageId(next), grown));
    }

    /// A message `msg` from node `from`. Appends actions to `out`.
    ///
    /// Returns an error, leaving the state and `out` untouched, for a message that cannot arrive
    /// in the current state: a sender that is this node or not in the cluster, an out-of-range
    /// page, a request sent to a node that is not the page's home, a second request from a node
    /// that already has one outstanding, a request for access the directory says the sender
    /// already holds, a grant nobody asked for, an invalidation of a copy this node does not
    /// hold, an acknowledgement nobody waits for, and so on.
    pub fn handle(&mut self, from: NodeId, msg: Msg, out: &mut Vec<Action>) -> Result<(), ProtocolError> {
        self.geo.check_message(from, &msg)?;
        let page = msg.page();
        // After a reader's `ReadSoon`, its first `ReadReq` for the page hurries it (or crossed
        // its answer). Any other message it sent after the answer went says the answer arrived,
        // and ends the window in which a `ReadReq` could have crossed it. (While the request
        // waits here, the one other message the reader may send is the `InvAck` of an
        // `Invalidate` that crossed its `Drop` of an older copy; it leaves the window open even
        // if it completes the transaction the request waited for.)
        let soon = self.asked_soon.contains(&(page, from));
        let answered = soon && !self.asks_at_home(page, from);
        let handled = match msg {
            Msg::ReadReq { .. } if soon => {
                self.on_hurry(from, page, out);
                self.asked_soon.remove(&(page, from));
                return Ok(());
            }
            Msg::ReadSoon { barrier, .. } => return self.on_read_soon(from, page, barrier, out),
            _ => self.dispatch(from, page, msg, out),
        };
        if answered && handled.is_ok() {
            self.asked_soon.remove(&(page, from));
        }
        handled
    }

    /// Whether a request of `from` for `page` waits here (queued, running or kept for an arrival).
    fn asks_at_home(&self, page: PageId, from: NodeId) -> bool {
        let queued = self
            .busy
            .get(&page)
            .is_some_and(|busy| busy.active.req.from == from || busy.queue.iter().any(|r| r.from == from));
        queued || self.deferred.iter().any(|&(_, p, k)| (p, k) == (page, from))
    }

    fn dispatch(&mut self, from: NodeId, page: PageId, msg: Msg, out: &mut Out) -> Handled {
        match msg {
            Msg::ReadReq { .. } => self.on_request(from, page, FaultKind::Read, out),
            Msg::WriteReq { .. } => self.on_request(from, page, FaultKind::Write, out),
            Msg::Grant { access, data, .. } => self.on_grant(from, page, access, data, out),
            Msg::Invalidate { .. } => self.on_invalidate(from, page, out),
            Msg::Recall { keep_read, .. } => self.on_recall(from, page, keep_read, out),
            Msg::InvAck { .. } => self.on_inv_ack(from, page, out),
            Msg::RecallAck { .. } => self.on_recall_ack(from, page, out),
            Msg::Drop { .. } => self.on_drop(from, page, out),
            Msg::DropAck { .. } => self.on_drop_ack(from, page),
            Msg::ReadSoon { barrier, .. } => self.on_read_soon(from, page, barrier, out),
        }
    }

    // ----- helpers -----

    fn initial_access(&self, page: PageId) -> Access {
        if self.geo.is_home(page) { Access::Write } else { Access::None }
    }

    /// Records this node's access without emitting anything.
    fn set_access(&mut self, page: PageId, access: Access) {
        if access == self.initial_access(page) {
            self.access.remove(&page);
        } else {
            self.access.insert(page, access);
        }
    }

    /// Changes this node's access and emits the matching `Protect` (if it changes).
    fn protect_local(&mut self, page: PageId, access: Access, out: &mut Out) {
        if self.access(page) != access {
            self.set_access(page, access);
            out.push(Action::Protect { page, access });
        }
    }

    /// The directory entry of a page homed here (absent entry = `Exclusive(me)`).
    fn dir_entry(&self, page: PageId) -> Directory {
        self.dir.get(&page).cloned().unwrap_or(Directory::Exclusive(self.geo.me))
    }

    fn dir_access(&self, page: PageId, node: NodeId) -> Access {
        match self.dir.get(&page) {
            Some(entry) => entry.access_of(node),
            None if node == self.geo.me => Access::Write,
            None => Access::None,
        }
    }

    fn set_dir(&mut self, page: PageId, entry: Directory) {
        if entry == Directory::Exclusive(self.geo.me) {
            self.dir.remove(&page);
        } else {
            self.dir.insert(page, entry);
        }
    }

    /// The access `node` (not the requester of the running transaction) held when it sent a
    /// request that arrives now. Per-pair FIFO makes this exact: a revocation `node` has already
    /// acknowledged was processed before it sent the request (the ack travels ahead of it), and a
    /// revocation still unacknowledged had not been processed yet when it sent the request (else
    /// the ack would have travelled ahead of it).
    fn sender_access(&self, page: PageId, node: NodeId) -> Access {
        let now = self.dir_access(page, node);
        let Some(busy) = self.busy.get(&page) else {
            return now;
        };
        let unacknowledged = match &busy.active.wait {
            Wait::Recall(owner) => *owner == node,
            Wait::Acks(acks) => acks.contains(&node),
        };
        if unacknowledged {
            return now;
        }
        match busy.active.req.kind {
            FaultKind::Write => Access::None,
            FaultKind::Read => now.min(Access::Read),
        }
    }

    // ----- home side -----

    fn on_request(&mut self, from: NodeId, page: PageId, kind: FaultKind, out: &mut Out) -> Handled {
        self.check_request(from, page, kind)?;
        self.submit(page, Request { from, kind }, out);
        Ok(())
    }

    /// Whether a `kind` request for `page` from `from` can arrive now: this node is the page's
    /// home, `from` has no request for it outstanding and lacks the access it asks for.
    fn check_request(&self, from: NodeId, page: PageId, kind: FaultKind) -> Handled {
        let home = self.geo.home_of(page);
        if home != self.geo.me {
            return Err(ProtocolError::new(format!(
                "{kind:?} request for {page} from {from} sent to {}, but its home is {home}",
                self.geo.me
            )));
        }
        if self.asks_at_home(page, from) {
            return Err(ProtocolError::new(format!(
                "{kind:?} request for {page} from {from}, which already has one outstanding"
            )));
        }
        let holds = self.sender_access(page, from);
        let redundant = match kind {
            FaultKind::Read => holds != Access::None,
            FaultKind::Write => holds == Access::Write,
        };
        if redundant {
            return Err(ProtocolError::new(format!(
                "{kind:?} request for {page} from {from}, which already holds {holds:?} access"
            )));
        }
        Ok(())
    }

    /// A reader asks for `page` after its barrier arrival `barrier` ([`Msg::ReadSoon`]): validated
    /// as a read request, then started if this node has arrived there too, else kept until its
    /// next arrival ([`ScNode::drop_copies_with`]) or until the reader hurries it.
    fn on_read_soon(&mut self, from: NodeId, page: PageId, barrier: u64, out: &mut Out) -> Handled {
        // (A second `ReadSoon` with nothing between never reaches here: `handle` takes the first
        // message after one as its answer's sign, and this check then finds it outstanding.)
        self.check_request(from, page, FaultKind::Read)?;
        self.asked_soon.insert((page, from));
        if barrier <= self.arrivals && self.answer_at_arrival {
            self.submit(page, Request { from, kind: FaultKind::Read }, out);
        } else {
            self.deferred.push((barrier, page, from));
        }
        Ok(())
    }

    /// A `ReadReq` from a reader whose `ReadSoon` for `page` came before: if it still waits, it is
    /// started now; else it was started already and this crossed its answer.
    fn on_hurry(&mut self, from: NodeId, page: PageId, out: &mut Out) {
        if let Some(i) = self.deferred.iter().position(|&(_, p, k)| (p, k) == (page, from)) {
            self.deferred.remove(i);
            self.submit(page, Request { from, kind: FaultKind::Read }, out);
        }
    }

    /// Queues `req` behind the running transaction, or starts it right away.
    fn submit(&mut self, page: PageId, req: Request, out: &mut Out) {
        if let Some(busy) = self.busy.get_mut(&page) {
            busy.queue.push_back(req);
        } else {
            self.run_queue(page, VecDeque::from([req]), out);
        }
    }

    /// Starts queued requests in order until one has to wait for acknowledgements (it becomes the
    /// page's running transaction, the rest stay queued) or the queue is empty.
    /// The page must have no running transaction.
    fn run_queue(&mut self, page: PageId, mut queue: VecDeque<Request>, out: &mut Out) {
        while let Some(req) = queue.pop_front() {
            if let Some(active) = self.start(page, req, out) {
                self.busy.insert(page, Busy { active, queue });
                return;
            }
        }
    }

    /// Starts serving `req`. Returns the transaction if it must wait for other nodes, `None` if it
    /// completed (grant emitted) within this call.
    fn start(&mut self, page: PageId, req: Request, out: &mut Out) -> Option<Txn> {
        let me = self.geo.me;
        let requester = req.from;
        let held = self.dir_access(page, requester);
        if held >= req.kind.needed() {
            // Only the home itself can get here (its copy may have been upgraded as a side effect
            // of another transaction while its request waited); remote requests like this are
            // rejected on arrival. Either way, confirm what the requester holds.
            self.grant(page, requester, held, true, out);
            return None;
        }
        match (req.kind, self.dir_entry(page)) {
            (FaultKind::Read, Directory::Exclusive(owner)) if owner == me => {
                // The home downgrades itself and shares its (current) bytes.
                self.protect_local(page, Access::Read, out);
                self.set_dir(page, Directory::Shared(BTreeSet::from([me, requester])));
                self.grant(page, requester, Access::Read, true, out);
                None
            }
            (FaultKind::Read, Directory::Exclusive(owner)) => {
                out.push(Action::Send { to: owner, msg: Msg::Recall { page, keep_read: true } });
                Some(Txn { req, wait: Wait::Recall(owner), data: true })
            }
            (FaultKind::Read, Directory::Shared(mut readers)) => {
                readers.insert(requester);
                self.set_dir(page, Directory::Shared(readers));
                self.grant(page, requester, Access::Read, true, out);
                None
            }
            (FaultKind::Write, Directory::Exclusive(owner)) if owner == me => {
                self.protect_local(page, Access::None, out);
                self.set_dir(page, Directory::Exclusive(requester));
                self.grant(page, requester, Access::Write, true, out);
                None
            }
            (FaultKind::Write, Directory::Exclusive(owner)) => {
                out.push(Action::Send { to: owner, msg: Msg::Recall { page, keep_read: false } });
                Some(Txn { req, wait: Wait::Recall(owner), data: true })
            }
            (FaultKind::Write, Directory::Shared(readers)) => {
                if requester != me && readers.contains(&me) {
                    self.protect_local(page, Access::None, out);
                }
                let mut acks = BTreeSet::new();
                for &reader in &readers {
                    if reader != requester && reader != me {
                        out.push(Action::Send { to: reader, msg: Msg::Invalidate { page } });
                        acks.insert(reader);
                    }
                }
                // The requester's copy is current exactly when the directory lists it.
                let data = !readers.contains(&requester);
                if acks.is_empty() || self.bug.is(Bug::GrantBeforeInvAcks) {
                    self.finish(page, req, None, data, out);
                    None
                } else {
                    Some(Txn { req, wait: Wait::Acks(acks), data })
                }
            }
        }
    }

    /// Completes a transaction whose revocations are all acknowledged: updates the directory and
    /// grants. `kept` is the former owner that kept a read copy after a recall, if any.
    fn finish(&mut self, page: PageId, req: Request, kept: Option<NodeId>, data: bool, out: &mut Out) {
        match req.kind {
            FaultKind::Read => {
                let mut readers = BTreeSet::from([self.geo.me, req.from]);
                readers.extend(kept);
                self.set_dir(page, Directory::Shared(readers));
                // The home has just installed the current bytes: it becomes a reader too.
                self.protect_local(page, Access::Read, out);
                self.grant(page, req.from, Access::Read, data, out);
            }
            FaultKind::Write => {
                self.set_dir(page, Directory::Exclusive(req.from));
                self.grant(page, req.from, Access::Write, data, out);
            }
        }
    }

    /// Hands `access` to `to`: a `Grant` message, or for the home itself a local protection
    /// change and a wake-up.
    fn grant(&mut self, page: PageId, to: NodeId, access: Access, data: bool, out: &mut Out) {
        if to == self.geo.me {
            self.pending.remove(&page);
            self.protect_local(page, access, out);
            out.push(Action::Wake { page });
        } else {
            out.push(Action::Send { to, msg: Msg::Grant { page, access, data } });
        }
    }

    fn on_inv_ack(&mut self, from: NodeId, page: PageId, out: &mut Out) -> Handled {
        let expected = match self.busy.get(&page) {
            Some(Busy { active: Txn { wait: Wait::Acks(acks), .. }, .. }) => acks.contains(&from),
            _ => false,
        };
        if !expected {
            return Err(ProtocolError::new(format!(
                "InvAck for {page} from {from}, which {} does not wait for",
                self.geo.me
            )));
        }
        let Some(mut busy) = self.busy.remove(&page) else {
            return Ok(());
        };
        if let Wait::Acks(acks) = &mut busy.active.wait {
            acks.remove(&from);
            if !acks.is_empty() {
                self.busy.insert(page, busy);
                return Ok(());
            }
        }
        self.conclude(page, busy, None, out);
        Ok(())
    }

    fn on_recall_ack(&mut self, from: NodeId, page: PageId, out: &mut Out) -> Handled {
        let expected = matches!(
            self.busy.get(&page),
            Some(Busy { active: Txn { wait: Wait::Recall(owner), .. }, .. }) if *owner == from
        );
        if !expected {
            return Err(ProtocolError::new(format!(
                "RecallAck for {page} from {from}, which {} does not wait for",
                self.geo.me
            )));
        }
        let Some(busy) = self.busy.remove(&page) else {
            return Ok(());
        };
        // The home keeps the current bytes whenever nobody else may write.
        out.push(Action::Install { page });
        let kept = (busy.active.req.kind == FaultKind::Read).then_some(from);
        self.conclude(page, busy, kept, out);
        Ok(())
    }

    /// A reader dropped its copy unasked ([`ScNode::drop_copies`]). It holds no request for the
    /// page (it drops none with one outstanding, and a later one travels behind the `Drop`), and
    /// the directory lists it: a revocation crossing the `Drop` is still unacknowledged, since
    /// the acknowledgement travels behind it.
    fn on_drop(&mut self, from: NodeId, page: PageId, out: &mut Out) -> Handled {
        let home = self.geo.home_of(page);
        let asking = self
            .busy
            .get(&page)
            .is_some_and(|b| b.active.req.from == from || b.queue.iter().any(|r| r.from == from));
        let listed = matches!(self.dir.get(&page), Some(Directory::Shared(r)) if r.contains(&from));
        if home != self.geo.me || from == self.geo.me || asking || !listed {
            return Err(ProtocolError::new(format!(
                "Drop of {page} from {from}, which {} does not list as a reader (home {home})",
                self.geo.me
            )));
        }
        let Some(Directory::Shared(mut readers)) = self.dir.get(&page).cloned() else {
            return Ok(());
        };
        readers.remove(&from);
        if readers.len() == 1 && readers.contains(&self.geo.me) && !self.busy.contains_key(&page) {
            // Nobody else holds a copy: the home is the exclusive owner again, as at the start.
            // (Its `Protect` comes right before the `DropAck`, so that the runtime may change the
            // protection of a run of dropped pages at once.)
            self.set_dir(page, Directory::Exclusive(self.geo.me));
            self.protect_local(page, Access::Write, out);
        } else {
            self.set_dir(page, Directory::Shared(readers));
        }
        out.push(Action::Send { to: from, msg: Msg::DropAck { page } });
        Ok(())
    }

    /// The home saw this node's `Drop`; no revocation of that copy can come any more.
    fn on_drop_ack(&mut self, from: NodeId, page: PageId) -> Handled {
        if from != self.geo.home_of(page) || !self.dropped.remove(&page) {
            return Err(ProtocolError::new(format!(
                "DropAck of {page} from {from}, but {} has no drop of it outstanding",
                self.geo.me
            )));
        }
        Ok(())
    }

    /// Completes the transaction `busy` has waited for (`kept`: the former owner that kept a read
    /// copy), then starts the requests queued behind it.
    fn conclude(&mut self, page: PageId, busy: Busy, kept: Option<NodeId>, out: &mut Out) {
        let Busy { active, mut queue } = busy;
        if self.bug.is(Bug::DropQueuedRequests) {
            queue.clear();
        }
        self.finish(page, active.req, kept, active.data, out);
        self.run_queue(page, queue, out);
    }

    // ----- requester / copy-holder side -----

    fn on_grant(&mut self, from: NodeId, page: PageId, access: Access, data: bool, out: &mut Out) -> Handled {
        let home = self.geo.home_of(page);
        if from != home {
            return Err(ProtocolError::new(format!(
                "grant of {page} from {from}, which is not its home ({home})"
            )));
        }
        let Some(kind) = self.pending.get(&page).copied() else {
            return Err(ProtocolError::new(format!(
                "grant of {page} to {}, which has no request outstanding",
                self.geo.me
            )));
        };
        if access != kind.needed() {
            return Err(ProtocolError::new(format!(
                "grant of {access:?} access to {page}, but {} asked for {:?}",
                self.geo.me,
                kind.needed()
            )));
        }
        let current = self.access(page);
        let consistent =
            if data { current == Access::None } else { access == Access::Write && current == Access::Read };
        if !consistent {
            return Err(ProtocolError::new(format!(
                "grant of {access:?} access to {page} (data: {data}) while {} holds {current:?}",
                self.geo.me
            )));
        }
        self.pending.remove(&page);
        if self.soon.remove(&page)
            && let Some(c) = self.candidates.get_mut(&page)
        {
            // Asked for ahead, and here before any thread needed it.
            c.hurried = false;
        }
        if data {
            out.push(Action::Install { page });
        }
        self.set_access(page, access);
        out.push(Action::Protect { page, access });
        out.push(Action::Wake { page });
        Ok(())
    }

    /// Checks that a revocation (`what`) of `page` comes from its home and finds this node
    /// holding `holds`; returns the home.
    fn revoked(
        &self,
        what: &str,
        from: NodeId,
        page: PageId,
        holds: Access,
    ) -> Result<NodeId, ProtocolError> {
        let home = self.geo.home_of(page);
        let current = self.access(page);
        if from != home || current != holds {
            let me = self.geo.me;
            return Err(ProtocolError::new(format!(
                "{what} of {page} from {from} (home {home}) while {me} holds {current:?}"
            )));
        }
        Ok(home)
    }

    fn on_invalidate(&mut self, from: NodeId, page: PageId, out: &mut Out) -> Handled {
        if self.dropped.contains(&page) && self.access(page) == Access::None && from == self.geo.home_of(page)
        {
            // It crossed this node's `Drop`: the copy is already gone.
            out.push(Action::Send { to: from, msg: Msg::InvAck { page } });
            return Ok(());
        }
        let home = self.revoked("Invalidate", from, page, Access::Read)?;
        if self.drops && (self.candidates.len() < CANDIDATES || self.candidates.contains_key(&page)) {
            let c = self.candidates.entry(page).or_default();
            c.credit = (c.credit + DROP_CREDIT).min(MAX_CREDIT);
        }
        self.set_access(page, Access::None);
        out.push(Action::Protect { page, access: Access::None });
        out.push(Action::Send { to: home, msg: Msg::InvAck { page } });
        Ok(())
    }

    fn on_recall(&mut self, from: NodeId, page: PageId, keep_read: bool, out: &mut Out) -> Handled {
        let home = self.revoked("Recall", from, page, Access::Write)?;
        let access = if keep_read { Access::Read } else { Access::None };
        // Revoke write access first, so the bytes read for the reply are final.
        self.set_access(page, access);
        let reply = Action::Send { to: home, msg: Msg::RecallAck { page } };
        if self.bug.is(Bug::RecallAckBeforeProtect) {
            out.extend([reply, Action::Protect { page, access }]);
        } else {
            out.extend([Action::Protect { page, access }, reply]);
        }
        Ok(())
    }
}

fn access_words(a: Access) -> &'static str {
    match a {
        Access::None => "no access",
        Access::Read => "read-only",
        Access::Write => "read-write",
    }
}

impl Message for Msg {
    fn page(&self) -> PageId {
        Msg::page(self)
    }

    fn payload(&self) -> Payload {
        if self.carries_data() { Payload::Page } else { Payload::None }
    }

    /// A request: its grant may carry the page (a write request from a node holding a read copy
    /// gets none, and then the preparation was for nothing, at no cost: the page is there).
    fn fetches(&self) -> u64 {
        u64::from(matches!(self, Msg::ReadReq { .. } | Msg::WriteReq { .. } | Msg::ReadSoon { .. }))
    }

    fn grants_read_copy(&self) -> bool {
        matches!(self, Msg::Grant { access: Access::Read, data: true, .. })
    }

    fn explain(&self, p: &str) -> String {
        match *self {
            Msg::ReadReq { .. } => format!("please send me a read copy of {p}"),
            Msg::WriteReq { .. } => format!("please give me the only writable copy of {p}"),
            Msg::Grant { access, data: true, .. } => {
                format!("here is {p}, {} (+4096 bytes)", access_words(access))
            }
            Msg::Grant { access, data: false, .. } => {
                format!("your copy of {p} is now {}", access_words(access))
            }
            Msg::Invalidate { .. } => format!("drop your copy of {p}"),
            Msg::InvAck { .. } => format!("dropped my copy of {p}"),
            Msg::Recall { keep_read: true, .. } => format!("give {p} back, keep a read copy"),
            Msg::Recall { keep_read: false, .. } => format!("give {p} back, keep nothing"),
            Msg::RecallAck { .. } => format!("here is {p} back (+4096 bytes)"),
            Msg::Drop { .. } => format!("I dropped my copy of {p} (you will write it)"),
            Msg::DropAck { .. } => format!("noted: you dropped your copy of {p}"),
            Msg::ReadSoon { barrier, .. } => {
                format!("once you reach barrier {barrier}, please send me a read copy of {p}")
            }
        }
    }
}

/// Sequential consistency: every write is visible at once, so releases and acquires have nothing
/// to do, and an atomic instruction needs nothing special.
impl Coherence for ScNode {
    type Msg = Msg;

    fn geometry(&self) -> Geometry {
        self.geo
    }

    fn fault(&mut self, page: PageId, kind: FaultKind, _atomic: bool, out: &mut Vec<Action>) {
        ScNode::fault(self, page, kind, out);
    }

    fn handle(&mut self, from: NodeId, msg: Msg, out: &mut Vec<Action>) -> Result<(), Error> {
        ScNode::handle(self, from, msg, out)
    }

    fn release(&mut self, _out: &mut Vec<Action>) -> Option<ReleaseId> {
        None
    }

    fn acquire(&mut self, _out: &mut Vec<Action>) {}

    fn needs_release(&self) -> bool {
        false
    }

    fn has_stale(&self) -> bool {
        false
    }

    /// This node's current access to `page`: what its memory protection must be.
    /// `Access::None` for an out-of-range page.
    fn access(&self, page: PageId) -> Access {
        if !self.geo.in_range(page) {
            return Access::None;
        }
        self.access.get(&page).copied().unwrap_or_else(|| self.initial_access(page))
    }

    fn direct_read_request(&self, page: PageId) -> Option<Msg> {
        self.geo.in_range(page).then_some(Msg::ReadReq { page })
    }

    fn fetchable(&self, page: PageId) -> bool {
        ScNode::fetchable(self, page)
    }

    fn absorb_direct_read(&mut self, page: PageId) -> Result<(), Error> {
        ScNode::absorb_direct_read(self, page)
    }

    fn fault_claiming(
        &mut self,
        page: PageId,
        kind: FaultKind,
        _atomic: bool,
        out: &mut Vec<Action>,
        claim: &mut dyn FnMut(PageId) -> bool,
    ) {
        self.fault_with(page, kind, out, claim);
    }

    fn expected_read(&self) -> Option<PageId> {
        self.stream[0].filter(|_| self.read_ahead > 0).map(|(next, _)| next)
    }

    fn drop_candidates(&self) -> Vec<PageId> {
        ScNode::drop_candidates(self)
    }

    fn wants_drops(&self) -> bool {
        // Some candidate may be held (one read directly may be held without this state machine
        // knowing yet; the runtime tells it before it drops), or a `ReadSoon` waits for this
        // node's next arrival.
        !self.candidates.is_empty() || self.answers_at_arrival()
    }

    fn note_arrivals(&mut self, arrivals: u64, out: &mut Vec<Action>) {
        ScNode::note_arrivals(self, arrivals, out);
    }

    fn barriers_shared(&mut self) {
        ScNode::barriers_shared(self);
    }

    fn barrier_arrivals(&self) -> u64 {
        self.arrivals
    }

    fn answers_at_arrival(&self) -> bool {
        self.waits_for_arrival()
    }

    fn drop_copies(&mut self, out: &mut Vec<Action>, claim: &mut dyn FnMut(PageId) -> bool) {
        ScNode::drop_copies_with(self, out, claim);
    }

    fn describe(&self, page: PageId) -> String {
        let (access, outstanding, directory) =
            (self.access(page), self.outstanding(page), self.directory(page));
        let (busy, queued) = (self.in_transaction(page), self.queued(page));
        format!(
            "access here {access:?}, request outstanding {outstanding:?}, directory {directory:?}, \
             in a transaction {busy}, requests queued {queued}"
        )
    }
}
