//! Release consistency with multiple writers per page: home-based lazy release consistency
//! (HLRC) with twins and diffs, write notices from the home, and sequentially consistent pages
//! for atomics.
//!
//! [`LrcNode`] is the protocol state of one node, a pure state machine like
//! [`ScNode`]: the runtime feeds it local faults ([`LrcNode::fault`]), messages
//! ([`LrcNode::handle`]) and synchronisation points ([`LrcNode::acquire`], [`LrcNode::release`]),
//! and carries out the [`Action`]s it returns, in order. It never touches page bytes: it asks the
//! runtime to take a twin ([`Action::Twin`]), to send a diff (a [`Msg::Diff`] whose payload the
//! runtime computes with [`diff::encode`]), and to apply one ([`Action::ApplyDiff`]).
//!
//! In short (`README.md` next to this file has the walkthrough and the reasons):
//!
//! * Every page has a fixed home holding its master copy. A miss fetches the page from the home
//!   (and, optionally, the next few pages of the same home: [`LrcConfig::prefetch`]).
//! * Any number of nodes may write a page at once. The first write to a copy takes a twin; at a
//!   release the node sends the home a diff against the twin and the release completes when every
//!   diff is acknowledged.
//! * The home applies a diff and sends a **write notice** to every other node holding a copy; the
//!   diff is acknowledged only when all notices are. A notified node keeps using its copy until
//!   its next acquire, which drops it. Pages nobody else writes — private and read-only pages —
//!   are never notified and survive every acquire.
//! * Pages the runtime marks sequentially consistent ([`LrcConfig::sc_pages`],
//!   [`LrcNode::set_sc`]) follow the single-writer protocol of [`super::sc`] instead; their moves
//!   between nodes are synchronisation points (a release before the page leaves, an acquire when
//!   it arrives), so atomics on them order the plain data around them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;

use super::sc::{self, ScNode};
use super::{Coherence, Effect, Geometry, Message, Planted};
use crate::{Access, FaultKind, NodeId, PageId};

pub mod diff;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

/// The largest [`LrcConfig::prefetch`]: a fetch asks for at most `1 + MAX_PREFETCH` pages.
pub const MAX_PREFETCH: u16 = 63;

/// Settings of an [`LrcNode`]. Every node of a cluster must be built with the same `sc_pages`;
/// `prefetch` may differ.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LrcConfig {
    /// How many pages after a missing one a fetch asks for as well: the following pages with the
    /// same home of which this node has no copy, stopping at the first that does not qualify.
    /// `0` (the default) fetches only the missing page; values above [`MAX_PREFETCH`] are capped.
    pub prefetch: u16,
    /// Adaptive prefetch: when misses run in sequence (a miss on the page just after the previous
    /// fetch), each fetch asks for twice as many following pages as the last, from 1 up to this
    /// many; any other miss starts again. It adds to `prefetch` (a fetch asks for the larger of
    /// the two). `0` (the default) turns it off; values above [`MAX_PREFETCH`] are capped. A
    /// sequential scan of `n` remote pages then costs about `log2(adaptive) + n / (1 + adaptive)`
    /// round trips instead of `n`. The same window opens copies for writing ahead: a write trap on
    /// the copy just after the last ones opened for writes twins and opens the clean copies that
    /// follow (see `write_ahead` in the source), so a sequential write over `n` fetched pages traps
    /// about `log2(adaptive) + n / (1 + adaptive)` times instead of `n`.
    pub adaptive: u16,
    /// Pages (as ranges of page numbers) that are sequentially consistent from the start, on every
    /// node: pages the runtime reserves for atomics and locks. More can be added at run time with
    /// [`LrcNode::set_sc`].
    pub sc_pages: Vec<Range<u64>>,
    /// Writers take pages over: after this many diffs of a page in a row from the one node that
    /// holds a copy of it (the home not writing it meanwhile), the home hands that node the page
    /// ([`Msg::Own`]): the node keeps its twin, writes the page freely and sends no diff at its
    /// releases until the home asks for it ([`Msg::Pull`]), when another node fetches the page
    /// or the home itself touches it. Each pull doubles the number of diffs needed before the
    /// page is handed over again. An array built by one node and then written, sweep after
    /// sweep, by another thus costs no diffs in the steady state. `0` (the default) never hands
    /// pages over.
    pub own_after: u8,
    /// Refresh copies that are read again after every write notice: when a notice arrives for a
    /// copy that this node fetched again the last time a notice dropped it, the copy is dropped
    /// and fetched again at once, without waiting for a thread to miss on it after the next
    /// acquire (the fetch overlaps whatever the threads do meanwhile, typically waiting at the
    /// barrier that the writer's release precedes). The new copy stays closed until a thread
    /// touches it (a local trap, no message); one still untouched when the next notice comes is
    /// not refreshed again until a miss shows it is read again. `false` (the default): off.
    pub refresh: bool,
}

impl LrcConfig {
    /// This configuration with `prefetch` set.
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// This configuration with `adaptive` set (see [`LrcConfig::adaptive`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use dsm::protocol::lrc::LrcConfig;
    ///
    /// assert_eq!(LrcConfig::default().with_adaptive(31).adaptive, 31);
    /// ```
    pub fn with_adaptive(mut self, adaptive: u16) -> Self {
        self.adaptive = adaptive;
        self
    }

    /// This configuration with `own_after` set (see [`LrcConfig::own_after`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use dsm::protocol::lrc::LrcConfig;
    ///
    /// assert_eq!(LrcConfig::default().with_own_after(2).own_after, 2);
    /// ```
    pub fn with_own_after(mut self, own_after: u8) -> Self {
        self.own_after = own_after;
        self
    }

    /// This configuration with `refresh` set (see [`LrcConfig::refresh`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use dsm::protocol::lrc::LrcConfig;
    ///
    /// assert!(LrcConfig::default().with_refresh(true).refresh);
    /// ```
    pub fn with_refresh(mut self, refresh: bool) -> Self {
        self.refresh = refresh;
        self
    }

    /// This configuration with the pages `pages` (page numbers) added to `sc_pages`.
    ///
    /// # Examples
    ///
    /// ```
    /// use dsm::protocol::lrc::LrcConfig;
    ///
    /// let config = LrcConfig::default().with_prefetch(2).with_sc_pages(0..16);
    /// assert_eq!(config.sc_pages, [0..16]);
    /// ```
    pub fn with_sc_pages(mut self, pages: Range<u64>) -> Self {
        self.sc_pages.push(pages);
        self
    }
}

/// Messages between nodes.
///
/// Page bytes and diffs are never inside a message value: [`Msg::payload`] says what the runtime
/// sends and receives next to the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Msg {
    /// Requester to home: send me copies of pages `page .. page + count`, all homed at the
    /// receiver. Each page is answered by a [`Msg::Page`] or a [`Msg::ScPage`], in page order.
    Fetch {
        /// The first (missing) page.
        page: PageId,
        /// How many pages, at least 1 and at most `1 + MAX_PREFETCH`.
        count: u16,
    },
    /// Home to requester: a copy of the page (payload [`Payload::Page`]).
    Page {
        /// The page.
        page: PageId,
    },
    /// Home to requester: the page is sequentially consistent; ask again through [`Msg::Sc`].
    /// Answers a [`Msg::Fetch`] of the page or a [`Msg::MakeSc`].
    ScPage {
        /// The page.
        page: PageId,
    },
    /// Writer to home: the writer's changes to the page since its twin was taken (payload
    /// [`Payload::Diff`]). The home answers with [`Msg::DiffAck`] once every other copy has been
    /// notified.
    Diff {
        /// The page.
        page: PageId,
        /// The writer's number for this diff, echoed by the ack.
        seq: u64,
    },
    /// Home to writer: the diff is applied and every other holder of a copy has acknowledged a
    /// write notice.
    DiffAck {
        /// The page.
        page: PageId,
        /// The number of the diff acknowledged.
        seq: u64,
    },
    /// Home to copy holder: another node has written the page; drop the copy at the next acquire.
    /// Answered at once with [`Msg::NoticeAck`].
    Notice {
        /// The page.
        page: PageId,
    },
    /// Copy holder to home: notice recorded.
    NoticeAck {
        /// The page.
        page: PageId,
    },
    /// Any node to home: please make this page sequentially consistent. Answered by
    /// [`Msg::Convert`] (or [`Msg::ScPage`] if it already is).
    MakeSc {
        /// The page.
        page: PageId,
    },
    /// Home to every other node: the page becomes sequentially consistent. Flush a diff of it if
    /// dirty, drop any copy, and answer [`Msg::ConvertAck`].
    Convert {
        /// The page.
        page: PageId,
    },
    /// Node to home: no copy of the page left here; any diff went ahead of this message.
    ConvertAck {
        /// The page.
        page: PageId,
    },
    /// A message of the sequentially consistent protocol, for a page in that mode. Its payload is
    /// the page's bytes when the inner message [carries data](sc::Msg::carries_data).
    Sc(sc::Msg),
    /// Home to the only node holding a copy, which has sent diffs of it [`LrcConfig::own_after`]
    /// times in a row: keep your changes to the page until asked ([`Msg::Pull`]). The home's own
    /// copy is closed until then. Sent right after a [`Msg::DiffAck`].
    Own {
        /// The page.
        page: PageId,
    },
    /// Home to the node it handed pages `page .. page + count` over to: send your changes to
    /// them now, each as a [`Msg::Yield`].
    Pull {
        /// The first page.
        page: PageId,
        /// How many pages, at least 1 and at most `1 + MAX_PREFETCH`.
        count: u16,
    },
    /// Owner to home: the page is given back, with the owner's changes since it took its twin
    /// (payload [`Payload::Diff`]), in answer to a [`Msg::Pull`] (or when a [`Msg::Convert`]
    /// arrives). Acknowledged like a diff, with [`Msg::DiffAck`].
    Yield {
        /// The page.
        page: PageId,
        /// The owner's number for this diff, echoed by the ack.
        seq: u64,
    },
}

impl Msg {
    /// The page this message is about.
    pub fn page(&self) -> PageId {
        match *self {
            Msg::Fetch { page, .. }
            | Msg::Page { page }
            | Msg::ScPage { page }
            | Msg::Diff { page, .. }
            | Msg::DiffAck { page, .. }
            | Msg::Notice { page }
            | Msg::NoticeAck { page }
            | Msg::MakeSc { page }
            | Msg::Convert { page }
            | Msg::ConvertAck { page }
            | Msg::Own { page }
            | Msg::Pull { page, .. }
            | Msg::Yield { page, .. } => page,
            Msg::Sc(msg) => msg.page(),
        }
    }

    /// What travels next to the message.
    pub fn payload(&self) -> Payload {
        match self {
            Msg::Page { .. } => Payload::Page,
            Msg::Diff { .. } | Msg::Yield { .. } => Payload::Diff,
            Msg::Sc(msg) if msg.carries_data() => Payload::Page,
            _ => Payload::None,
        }
    }

    /// Whether anything travels next to the message (`payload() != Payload::None`).
    pub fn carries_data(&self) -> bool {
        self.payload() != Payload::None
    }
}

pub use super::{Payload, ReleaseId};

/// What the runtime must do; the actions of one call are carried out strictly in the order
/// returned (see [`Effect`] for each). `Install` comes only while handling a message with a
/// [`Payload::Page`], `ApplyDiff` only while handling a [`Msg::Diff`], `Twin` just before the
/// `Protect` that makes a page writable, and `Released` once per [`LrcNode::release`], in the order
/// of the calls.
pub type Action = Effect<Msg>;

/// Where a call appends its actions.
type Out = Vec<Action>;

/// What handling a message returns.
type Handled = Result<(), ProtocolError>;

/// A message that cannot arrive in the current state: the sender is broken (or not a peer).
/// [`LrcNode::handle`] returns it without changing any state.
pub use super::ProtocolError;

/// How a release-consistent page is shared, as its home sees it: who holds a copy the home will
/// notify when someone else writes. See `README.md` for how pages move between these classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// No other node holds a current copy: private to the home (or untouched).
    Unshared,
    /// Exactly one other node holds a current copy. Its writes notify nobody, and as long as the
    /// home does not write, its copy survives every acquire.
    Private(NodeId),
    /// Several other nodes hold current copies. While nobody writes (read-only sharing) they all
    /// survive acquires; a write by any node notifies all the others.
    Shared(BTreeSet<NodeId>),
}

/// A non-home node's copy of a release-consistent page (absent: no copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Copy {
    /// A fetch is outstanding. `want` is the strongest access a local thread trapped for, `None`
    /// for a page only prefetched (or whose waiters moved to the SC protocol).
    Fetching { want: Option<FaultKind> },
    /// A copy is installed: readable, writable if it is in `dirty`, to be dropped at the next
    /// acquire if it is in `stale`.
    Valid,
}

/// The home's record of a release-consistent page that has been fetched at least once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct HomePage {
    /// The other nodes whose copy the home considers current: those to notify when another node
    /// writes.
    copyset: BTreeSet<NodeId>,
    /// The home's own access: `Read` while its writes must be noticed (other nodes hold copies),
    /// `Write` otherwise or once it has written, `None` while another node owns the page.
    access: Access,
    /// The node the page is handed over to ([`Msg::Own`]): it alone holds a copy, and holds
    /// changes the home's copy lacks. Set until its [`Msg::Yield`] arrives.
    owner: Option<NodeId>,
    /// A [`Msg::Pull`] (or a [`Msg::Convert`]) has gone to the owner; its `Yield` is on the way.
    pulling: bool,
    /// Nodes whose fetch of the page waits for the owner's `Yield`, in arrival order.
    fetchers: Vec<NodeId>,
    /// Diffs in a row from the only node holding a copy, since the page was last handed over or
    /// someone else touched it.
    streak: u8,
    /// How many times the page was pulled back: handing it over again takes `own_after << pulls`
    /// diffs in a row.
    pulls: u8,
}

impl HomePage {
    /// Before the first fetch: nobody else has a copy, the home may write.
    fn new() -> Self {
        HomePage {
            copyset: BTreeSet::new(),
            access: Access::Write,
            owner: None,
            pulling: false,
            fetchers: Vec::new(),
            streak: 0,
            pulls: 0,
        }
    }
}

/// Write notices sent for a page and not all acknowledged, and the acknowledgements that wait
/// for them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Round {
    waiting: BTreeSet<NodeId>,
    /// `(writer, seq)`: a `DiffAck` to send, or for `writer == me` a local release to complete.
    then: Vec<(NodeId, u64)>,
}

/// A page on its way from release consistency to sequential consistency, at its home.
///
/// It works as a write-notice round sent to every node: until the last `ConvertAck`, some node may
/// still hold a copy nobody will notify, so diffs of the page and the home's releases are
/// acknowledged only when the conversion completes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Conversion {
    /// Nodes whose `ConvertAck` is missing.
    waiting: BTreeSet<NodeId>,
    /// `(writer, seq)`: diff acks to send, or for `writer == me` local releases to complete, when
    /// the conversion completes.
    then: Vec<(NodeId, u64)>,
    /// SC requests that arrived meanwhile, in arrival order.
    queued: Vec<(NodeId, sc::Msg)>,
    /// The home's access to the page meanwhile.
    access: Access,
}

/// Actions of the SC protocol for one page, held back until a release completes (see
/// `sc_emit`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Hold {
    watermark: u64,
    /// The page's protection as the runtime has been told, while the held actions wait.
    shown: Access,
    actions: VecDeque<sc::Action>,
}

/// The protocol state of one node.
///
/// Per-page state lives in maps in which a missing entry means the initial state (the home holds
/// the page writable and nobody else has a copy), so untouched pages cost nothing.
///
/// # Examples
///
/// Node 1 writes page 0, homed at node 0, and releases; the messages are handed over by hand.
///
/// ```
/// use dsm::protocol::lrc::{Action, LrcConfig, LrcNode, Msg, ProtocolError};
/// use dsm::{Access, FaultKind, NodeId, PageId};
///
/// let (h, w) = (NodeId(0), NodeId(1));
/// let mut home = LrcNode::new(h, 2, 1, LrcConfig::default());
/// let mut writer = LrcNode::new(w, 2, 1, LrcConfig::default());
/// let page = PageId(0);
/// let mut out = Vec::new();
///
/// writer.fault(page, FaultKind::Write, &mut out);
/// assert_eq!(out, [Action::Send { to: h, msg: Msg::Fetch { page, count: 1 } }]);
/// out.clear();
/// home.handle(w, Msg::Fetch { page, count: 1 }, &mut out)?;
/// assert_eq!(out[1], Action::Send { to: w, msg: Msg::Page { page } }); // after closing its copy
/// out.clear();
/// writer.handle(h, Msg::Page { page }, &mut out)?;
/// assert_eq!(
///     out,
///     [
///         Action::Install { page },
///         Action::Twin { page },
///         Action::Protect { page, access: Access::Write },
///         Action::Wake { page },
///     ]
/// );
/// out.clear();
///
/// // ... the thread writes, then unlocks: release first.
/// let release = writer.release(&mut out);
/// assert_eq!(out[1], Action::Send { to: h, msg: Msg::Diff { page, seq: 0 } });
/// out.clear();
/// home.handle(w, Msg::Diff { page, seq: 0 }, &mut out)?;
/// assert_eq!(out, [Action::ApplyDiff { page }, Action::Send { to: w, msg: Msg::DiffAck { page, seq: 0 } }]);
/// out.clear();
/// writer.handle(h, Msg::DiffAck { page, seq: 0 }, &mut out)?;
/// assert_eq!(out, [Action::Released { release }]); // now the unlock may go
/// # Ok::<(), ProtocolError>(())
/// ```
///
/// `Hash` agrees with `Eq`, so whole cluster states can be fingerprinted by a model checker (see
/// `model.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LrcNode {
    /// This node, the cluster's size and which pages each node homes.
    geo: Geometry,
    config: LrcConfig,
    /// The single-writer protocol, for sequentially consistent pages only.
    sc: ScNode,
    /// SC pages beyond `config.sc_pages`: marked at their home, learned elsewhere.
    sc_marked: BTreeSet<PageId>,
    /// Non-home pages for which this node sent `MakeSc` and awaits `Convert` or `ScPage`.
    sc_requested: BTreeSet<PageId>,
    /// Local faults waiting for a page to finish becoming SC: the strongest kind per page.
    parked: BTreeMap<PageId, FaultKind>,
    /// This node's copies of release-consistent pages homed elsewhere.
    copies: BTreeMap<PageId, Copy>,
    /// Copies with a twin (writable), homed elsewhere, to be diffed at the next release.
    dirty: BTreeSet<PageId>,
    /// Copies handed over to this node by their home ([`Msg::Own`]): writable, with a twin, their
    /// diff sent only when the home pulls them back. Never in `dirty` or `stale`.
    owned: BTreeSet<PageId>,
    /// Copies a write notice has made stale.
    stale: BTreeSet<PageId>,
    /// Refresh (see [`LrcConfig::refresh`]): pages whose stale copy an acquire dropped, not
    /// fetched since.
    dropped: BTreeSet<PageId>,
    /// Pages fetched again after an acquire dropped their stale copy: refreshed at the next notice.
    hot: BTreeSet<PageId>,
    /// Pages being fetched again for a refresh (their copy stays closed when it arrives, unless a
    /// thread traps on it meanwhile).
    refreshing: BTreeSet<PageId>,
    /// Refreshed copies not touched since they arrived: valid but closed (access `None`).
    fresh: BTreeSet<PageId>,
    /// Pages homed here that have been fetched at least once.
    homes: BTreeMap<PageId, HomePage>,
    /// Pages homed here written locally while other nodes held copies, since the last release.
    home_dirty: BTreeSet<PageId>,
    /// Pages homed here with write notices outstanding.
    rounds: BTreeMap<PageId, Round>,
    /// Pages homed here becoming SC.
    converting: BTreeMap<PageId, Conversion>,
    /// The number the next diff (or local wait for notices) gets.
    next_seq: u64,
    /// Diffs sent (to their home) and local waits for notices (`me`), not yet acknowledged.
    unacked: BTreeMap<u64, (NodeId, PageId)>,
    /// Releases not yet reported, with the `next_seq` at their start, in call order.
    releases: VecDeque<(ReleaseId, u64)>,
    next_release: u64,
    /// SC pages whose actions wait for a release.
    holds: BTreeMap<PageId, Hold>,
    /// SC pages not writable here since their bytes last left with every earlier write released.
    sc_clean: BTreeSet<PageId>,
    /// Adaptive prefetch, one stream per kind of miss (read, write), so that a loop that reads
    /// one array and writes another follows both: the page just after the last fetch of that
    /// kind, and how many following pages the next such fetch asks for if it is that page.
    stream: [Option<(PageId, u16)>; 2],
    /// Adaptive write-ahead: the page just after the last run of copies opened for writes, and how
    /// many following copies the next write trap opens if it is on that page.
    write_stream: Option<(PageId, u16)>,
    /// Adaptive pull at the home: the page just after the last run pulled back for a local fault,
    /// and how many following pages the next such pull asks for if it is that page.
    pull_stream: Option<(PageId, u16)>,
    /// A protocol mistake planted on purpose (unit-test builds only).
    bug: Planted<Bug>,
}

/// Protocol mistakes that can be planted in a node (unit-test builds only) to check that the
/// tests and the model checker catch them; see `model.rs`. Outside unit tests nothing can plant one, and
/// checking for one is a constant `false` that compiles away.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Bug {
    /// A write notice is acknowledged but the copy is not marked stale, so the next acquire keeps
    /// reading it.
    NoticeWithoutStale,
    /// The home acknowledges a diff as soon as it has applied it and sent the notices, without
    /// waiting for the `NoticeAck`s: the writer's release can complete while another node still
    /// takes its old copy for current.
    DiffAckBeforeNotices,
    /// A diff that arrives while its page becomes SC is acknowledged at once instead of when the
    /// conversion completes, although a node that has not seen `Convert` yet still takes its copy
    /// for current.
    DiffAckDuringConversion,
}

impl LrcNode {
    /// The protocol state of node `me` in a cluster of `nodes` nodes, where node `i` is the home of
    /// pages `i * pages_per_node .. (i + 1) * pages_per_node` (the last node also of any pages
    /// past the end: see [`Geometry`], which [`Coherence::geometry`] returns).
    ///
    /// # Panics
    ///
    /// If `nodes` or `pages_per_node` is zero, or `me` is not below `nodes`.
    pub fn new(me: NodeId, nodes: u16, pages_per_node: u64, mut config: LrcConfig) -> Self {
        config.prefetch = config.prefetch.min(MAX_PREFETCH);
        config.adaptive = config.adaptive.min(MAX_PREFETCH);
        let sc = ScNode::new(me, nodes, pages_per_node);
        LrcNode {
            geo: sc.geometry(),
            config,
            sc,
            sc_marked: BTreeSet::new(),
            sc_requested: BTreeSet::new(),
            parked: BTreeMap::new(),
            copies: BTreeMap::new(),
            dirty: BTreeSet::new(),
            owned: BTreeSet::new(),
            stale: BTreeSet::new(),
            dropped: BTreeSet::new(),
            hot: BTreeSet::new(),
            refreshing: BTreeSet::new(),
            fresh: BTreeSet::new(),
            homes: BTreeMap::new(),
            home_dirty: BTreeSet::new(),
            rounds: BTreeMap::new(),
            converting: BTreeMap::new(),
            next_seq: 0,
            unacked: BTreeMap::new(),
            releases: VecDeque::new(),
            next_release: 0,
            holds: BTreeMap::new(),
            sc_clean: BTreeSet::new(),
            stream: [None; 2],
            write_stream: None,
            pull_stream: None,
            bug: Planted::none(),
        }
    }

    /// Plants `bug` in this node (unit-test builds only).
    #[cfg(test)]
    pub(crate) fn inject(&mut self, bug: Bug) {
        self.bug.plant(bug);
    }

    /// The settings this node was built with (`prefetch` capped at [`MAX_PREFETCH`]).
    pub fn config(&self) -> &LrcConfig {
        &self.config
    }

    /// Whether `page` is sequentially consistent as far as this node knows: listed in
    /// [`LrcConfig::sc_pages`], marked here, or learned from its home. A non-home node learns of
    /// a page marked at run time only when it next asks the home for it.
    pub fn is_sc(&self, page: PageId) -> bool {
        self.sc_marked.contains(&page) || self.config.sc_pages.iter().any(|r| r.contains(&page.0))
    }

    /// Whether this node holds a copy of `page` (homed elsewhere) that a write notice has made
    /// stale: the next [`acquire`](Self::acquire) drops it.
    pub fn is_stale(&self, page: PageId) -> bool {
        self.stale.contains(&page)
    }

    /// Whether this node holds a refreshed copy of `page` that no thread has touched yet (see
    /// [`LrcConfig::refresh`]): current, but closed until the first touch.
    pub fn is_fresh(&self, page: PageId) -> bool {
        self.fresh.contains(&page)
    }

    /// Whether this node has a fetch of `page` outstanding.
    pub fn is_fetching(&self, page: PageId) -> bool {
        matches!(self.copies.get(&page), Some(Copy::Fetching { .. }))
    }

    /// How `page` is shared, if this node is its home and it is release-consistent (`None`
    /// otherwise).
    pub fn sharing(&self, page: PageId) -> Option<Sharing> {
        if !self.geo.in_range(page) || !self.geo.is_home(page) || self.is_sc(page) {
            return None;
        }
        let copyset = self.homes.get(&page).map(|h| h.copyset.clone()).unwrap_or_default();
        let mut it = copyset.iter();
        Some(match (it.next(), it.next()) {
            (None, _) => Sharing::Unshared,
            (Some(&only), None) => Sharing::Private(only),
            _ => Sharing::Shared(copyset),
        })
    }

    /// The node `page` is handed over to, if this node is its home and has handed it over (see
    /// [`LrcConfig::own_after`]): that node holds the page's current bytes, this node's are out of
    /// date until it gives the page back.
    pub fn owner(&self, page: PageId) -> Option<NodeId> {
        self.homes.get(&page).and_then(|h| h.owner)
    }

    /// Whether this node owns its copy of `page` (homed elsewhere): its home handed the page over
    /// and has not pulled it back yet.
    pub fn owns(&self, page: PageId) -> bool {
        self.owned.contains(&page)
    }

    /// The embedded single-writer protocol that runs the sequentially consistent pages.
    pub fn sc_node(&self) -> &ScNode {
        &self.sc
    }

    /// How many diffs (and local waits for write notices) are not acknowledged yet.
    pub fn unacknowledged(&self) -> usize {
        self.unacked.len()
    }

    /// True when nothing is in progress: no fetch, release, conversion, write notice or SC
    /// transaction outstanding and no action held back. Dirty and stale copies may remain.
    pub fn is_quiescent(&self) -> bool {
        !self.copies.values().any(|c| matches!(c, Copy::Fetching { .. }))
            && self.unacked.is_empty()
            && self.rounds.is_empty()
            && self.converting.is_empty()
            && self.releases.is_empty()
            && self.holds.is_empty()
            && self.parked.is_empty()
            && self.sc_requested.is_empty()
            && !self.homes.values().any(|h| h.pulling)
            && self.sc.is_quiescent()
    }

    /// A local application thread trapped on `page` wanting `kind` access. Appends actions to
    /// `out`.
    ///
    /// * If the current access already satisfies `kind`, only `Wake { page }` is emitted.
    /// * A write to a readable copy is granted at once, without any message: `Twin`, `Protect`
    ///   (write), `Wake` (at the home: no twin; the home's copy is the master).
    /// * A miss sends a [`Msg::Fetch`] to the home (for this page and up to
    ///   [`LrcConfig::prefetch`] following ones); the `Wake` follows the reply. A write miss gets
    ///   its twin and write access with the reply.
    /// * A fault while a fetch of the page is outstanding emits nothing: the thread waits for the
    ///   `Wake` and retries.
    /// * Sequentially consistent pages go through the single-writer protocol; a page becoming SC
    ///   holds the fault until it is.
    ///
    /// A fault on an out-of-range page is ignored.
    pub fn fault(&mut self, page: PageId, kind: FaultKind, out: &mut Vec<Action>) {
        if !self.geo.in_range(page) {
            return;
        }
        if self.is_sc(page) {
            let shown = self.access(page);
            let mut batch = Vec::new();
            self.sc.fault(page, kind, &mut batch);
            self.sc_emit(page, shown, batch.into(), out);
            return;
        }
        if self.access(page) >= kind.needed() {
            out.push(Action::Wake { page });
            return;
        }
        if self.geo.is_home(page) {
            if self.converting.contains_key(&page) {
                self.park(page, kind);
                return;
            }
            if self.homes.get(&page).is_some_and(|h| h.owner.is_some()) {
                // Handed over: the owner has changes this copy lacks.
                self.pull_for_fault(page, out);
                self.park(page, kind);
                return;
            }
            // The home reads its master copy (unless handed over); only a write after a fetch traps. Its
            // writes matter to the nodes holding copies: those in the copyset, and those notified
            // of an earlier write that have not recorded it yet (they still read their copy as
            // current, so the home's release must wait for them too).
            let notifying = self.rounds.contains_key(&page);
            if let Some(home) = self.homes.get_mut(&page) {
                home.access = Access::Write;
                if !home.copyset.is_empty() || notifying {
                    self.home_dirty.insert(page);
                }
            }
            out.push(Action::Protect { page, access: Access::Write });
            out.push(Action::Wake { page });
            return;
        }
        if self.sc_requested.contains(&page) {
            self.park(page, kind);
            return;
        }
        match self.copies.get_mut(&page) {
            Some(Copy::Fetching { want }) => *want = Some(stronger(*want, kind)),
            Some(Copy::Valid) if self.fresh.remove(&page) => {
                // A refreshed copy, touched for the first time: open it.
                out.push(Action::Protect { page, access: Access::Read });
                if kind == FaultKind::Write {
                    self.open_for_writes(page, out);
                }
                out.push(Action::Wake { page });
            }
            Some(Copy::Valid) => {
                // Only a write can trap on a readable copy.
                self.open_for_writes(page, out);
                self.write_ahead(page, out);
                out.push(Action::Wake { page });
            }
            None => self.fetch(page, kind, out),
        }
    }

    /// Twins `page`, a clean copy, and makes it writable.
    fn open_for_writes(&mut self, page: PageId, out: &mut Out) {
        self.dirty.insert(page);
        out.push(Action::Twin { page });
        out.push(Action::Protect { page, access: Access::Write });
    }

    /// Adaptive write-ahead (on with [`LrcConfig::adaptive`]): a write trap on the copy just after
    /// the last run opened for writes continues a sequential write, so the clean copies after it
    /// are twinned and opened too, twice as many as last time (from 1 up to `adaptive`), stopping
    /// at the first page that is not a clean, current copy of a release-consistent page homed
    /// elsewhere. A page opened ahead and never written costs a twin and an empty diff.
    fn write_ahead(&mut self, page: PageId, out: &mut Out) {
        if self.config.adaptive == 0 {
            return;
        }
        let sequential = self.write_stream.filter(|&(next, _)| next == page).map(|(_, window)| window);
        let mut next = page.0 + 1;
        for _ in 0..sequential.unwrap_or(0) {
            let q = PageId(next);
            let clean_copy = self.geo.in_range(q)
                && !self.geo.is_home(q)
                && !self.is_sc(q)
                && !self.sc_requested.contains(&q)
                && self.copies.get(&q) == Some(&Copy::Valid)
                && !self.dirty.contains(&q)
                && !self.owned.contains(&q)
                && !self.fresh.contains(&q)
                && !self.stale.contains(&q);
            if !clean_copy {
                break;
            }
            self.open_for_writes(q, out);
            next += 1;
        }
        let window = super::next_window(sequential, self.config.adaptive);
        self.write_stream = Some((PageId(next), window));
    }

    /// An acquire: the runtime calls it after a synchronisation operation that may make other
    /// nodes' released writes visible to a local thread (a lock granted, a barrier passed, a
    /// message or a joined thread's result received), before that thread goes on.
    ///
    /// Drops every copy a write notice has made stale (flushing its diff first if it has local
    /// writes), so the next access fetches the current page. It needs no answer: the acquire is
    /// complete once these actions are executed. Then every write released (see
    /// [`Action::Released`]) before the synchronisation operation is visible here.
    pub fn acquire(&mut self, out: &mut Vec<Action>) {
        for page in std::mem::take(&mut self.stale) {
            self.copies.remove(&page);
            if self.config.refresh && !self.fresh.remove(&page) {
                remember(&mut self.dropped, page);
            }
            out.push(Action::Protect { page, access: Access::None });
            if self.dirty.remove(&page) {
                // Local writes go to the home first; a later fetch of the page (behind the diff on
                // the same connection) includes them.
                self.send_diff(page, out);
            }
        }
    }

    /// A release: the runtime calls it before a synchronisation operation that may let another
    /// node see this node's writes (unlocking, arriving at a barrier, sending, a thread ending),
    /// and performs that operation only after [`Action::Released`] with the returned id.
    ///
    /// Every copy written since the last release is closed to writes and its diff sent home; every
    /// page homed here and written while others held copies has its copies notified. The release
    /// completes when all of that (and anything still unacknowledged from earlier) is
    /// acknowledged; it may complete within this call.
    pub fn release(&mut self, out: &mut Vec<Action>) -> ReleaseId {
        let watermark = self.start_release(out);
        let id = ReleaseId(self.next_release);
        self.next_release += 1;
        self.releases.push_back((id, watermark));
        self.progress(out);
        id
    }

    /// Makes `page` sequentially consistent (single writer, invalidate), for good. The runtime
    /// calls it for pages that hold atomics or locks it did not place in
    /// [`LrcConfig::sc_pages`].
    ///
    /// * At the home, a page no other node has fetched switches at once, silently; other nodes
    ///   learn it when they ask for the page (a [`Msg::ScPage`] answers their fetch).
    /// * At the home, a page others may hold starts a conversion: every other node flushes its
    ///   diff, drops its copy and acknowledges; then the page continues in the SC protocol with
    ///   the home holding it writable. Faults on it wait meanwhile.
    /// * Elsewhere, a [`Msg::MakeSc`] goes to the home; local faults on the page wait until the
    ///   home's answer.
    ///
    /// Nothing happens if the page already is (or is becoming) SC, or is out of range.
    pub fn set_sc(&mut self, page: PageId, out: &mut Vec<Action>) {
        if !self.geo.in_range(page) || self.is_sc(page) {
            return;
        }
        if self.geo.is_home(page) {
            if self.converting.contains_key(&page) {
                return;
            }
            if self.homes.contains_key(&page) {
                self.start_conversion(page, out);
            } else {
                // Never fetched: the state is the initial one in both protocols.
                self.sc_marked.insert(page);
            }
        } else if self.sc_requested.insert(page) {
            out.push(Action::Send { to: self.geo.home_of(page), msg: Msg::MakeSc { page } });
        }
    }

    /// A message `msg` from node `from`, with its payload (if any) available to the runtime for
    /// `Install` and `ApplyDiff`. Appends actions to `out`.
    ///
    /// # Errors
    ///
    /// Returns an error, leaving the state and `out` untouched, for a message that cannot arrive
    /// in the current state: a sender that is this node or not in the cluster, an out-of-range
    /// page, a request sent to a node that is not the page's home, a fetch of a page the sender
    /// already holds, a reply nobody asked for, a notice for a copy this node does not hold, an
    /// acknowledgement nobody waits for, an SC message for a page that is not SC, and so on.
    /// (A diff's payload is not checked here: the runtime validates it with [`diff::validate`].)
    pub fn handle(&mut self, from: NodeId, msg: Msg, out: &mut Vec<Action>) -> Result<(), ProtocolError> {
        self.geo.check_message(from, &msg)?;
        match msg {
            Msg::Fetch { page, count } => self.on_fetch(from, page, count, out),
            Msg::Page { page } => self.on_page(from, page, out),
            Msg::ScPage { page } => self.on_sc_page(from, page, out),
            Msg::Diff { page, seq } => self.on_diff(from, page, seq, out),
            Msg::DiffAck { page, seq } => self.on_diff_ack(from, page, seq, out),
            Msg::Notice { page } => self.on_notice(from, page, out),
            Msg::NoticeAck { page } => self.on_notice_ack(from, page, out),
            Msg::MakeSc { page } => self.on_make_sc(from, page, out),
            Msg::Convert { page } => self.on_convert(from, page, out),
            Msg::ConvertAck { page } => self.on_convert_ack(from, page, out),
            Msg::Sc(inner) => self.on_sc(from, inner, out),
            Msg::Own { page } => self.on_own(from, page, out),
            Msg::Pull { page, count } => self.on_pull(from, page, count, out),
            Msg::Yield { page, seq } => self.on_yield(from, page, seq, out),
        }
    }

    // ----- helpers -----

    fn home_access(&self, page: PageId) -> Access {
        if let Some(c) = self.converting.get(&page) {
            return c.access;
        }
        self.homes.get(&page).map_or(Access::Write, |h| h.access)
    }

    fn park(&mut self, page: PageId, kind: FaultKind) {
        let kind = stronger(self.parked.get(&page).copied(), kind);
        self.parked.insert(page, kind);
    }

    fn err<T>(&self, reason: String) -> Result<T, ProtocolError> {
        Err(ProtocolError::new(format!("{} (at {})", reason, self.geo.me)))
    }

    /// The diffs and notices sent so far are all acknowledged up to (not including) `watermark`.
    fn satisfied(&self, watermark: u64) -> bool {
        self.unacked.range(..watermark).next().is_none()
    }

    /// Anything written here and not yet released, or released and not yet acknowledged.
    fn has_unreleased(&self) -> bool {
        !self.dirty.is_empty() || !self.home_dirty.is_empty() || !self.unacked.is_empty()
    }

    fn send_diff(&mut self, page: PageId, out: &mut Out) {
        self.send_diff_as(page, false, out);
    }

    /// Sends the diff of `page` home, as a [`Msg::Yield`] (giving an owned page back) or a
    /// [`Msg::Diff`].
    fn send_diff_as(&mut self, page: PageId, yielded: bool, out: &mut Out) {
        let home = self.geo.home_of(page);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unacked.insert(seq, (home, page));
        let msg = if yielded { Msg::Yield { page, seq } } else { Msg::Diff { page, seq } };
        out.push(Action::Send { to: home, msg });
    }

    /// Flushes every local write: diffs for dirty copies, notices for pages homed here. Returns
    /// the watermark whose acknowledgement completes the release.
    fn start_release(&mut self, out: &mut Out) -> u64 {
        for page in std::mem::take(&mut self.dirty) {
            // Close the page first so that no write lands between the diff and the twin's end.
            out.push(Action::Protect { page, access: Access::Read });
            self.send_diff(page, out);
        }
        let me = self.geo.me;
        for (&page, conv) in &mut self.converting {
            // The home may have written the page; copies that would need a notice are being
            // dropped, but not all are gone yet.
            let seq = self.next_seq;
            self.next_seq += 1;
            self.unacked.insert(seq, (me, page));
            conv.then.push((me, seq));
        }
        for page in std::mem::take(&mut self.home_dirty) {
            let targets =
                self.homes.get_mut(&page).map(|h| std::mem::take(&mut h.copyset)).unwrap_or_default();
            if !targets.is_empty() || self.rounds.contains_key(&page) {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.unacked.insert(seq, (self.geo.me, page));
                self.notify(page, targets, (self.geo.me, seq), out);
            }
            // The home keeps write access: nobody holds a copy it would have to notify again
            // until the next fetch, which closes it again.
        }
        self.next_seq
    }

    /// Sends notices to `targets` (removed from the copyset by the caller) and makes `ack` wait
    /// for them and for any notices of the page still outstanding.
    fn notify(&mut self, page: PageId, targets: BTreeSet<NodeId>, ack: (NodeId, u64), out: &mut Out) {
        if targets.is_empty() && !self.rounds.contains_key(&page) {
            self.complete_ack(page, ack, out);
            return;
        }
        let round = self.rounds.entry(page).or_default();
        for to in targets {
            round.waiting.insert(to);
            out.push(Action::Send { to, msg: Msg::Notice { page } });
        }
        round.then.push(ack);
    }

    fn complete_ack(&mut self, page: PageId, (to, seq): (NodeId, u64), out: &mut Out) {
        if to == self.geo.me {
            self.unacked.remove(&seq);
        } else {
            out.push(Action::Send { to, msg: Msg::DiffAck { page, seq } });
        }
    }

    /// Reports completed releases and lets held SC actions go whose release is acknowledged.
    fn progress(&mut self, out: &mut Out) {
        while let Some(&(release, watermark)) = self.releases.front() {
            if !self.satisfied(watermark) {
                break;
            }
            self.releases.pop_front();
            out.push(Action::Released { release });
        }
        while let Some(page) = self.holds.iter().find(|(_, h)| self.satisfied(h.watermark)).map(|(p, _)| *p) {
            if let Some(hold) = self.holds.remove(&page) {
                self.sc_emit(page, hold.shown, hold.actions, out);
            }
        }
    }

    /// Sends a fetch for `page` (missing here) and the pages after it that qualify for prefetch.
    fn fetch(&mut self, page: PageId, kind: FaultKind, out: &mut Out) {
        if self.dropped.remove(&page) {
            // Read again after a notice dropped it: refresh it at the next notice.
            remember(&mut self.hot, page);
        }
        let home = self.geo.home_of(page);
        self.copies.insert(page, Copy::Fetching { want: Some(kind) });
        // Adaptive prefetch: a miss right after the previous fetch continues a sequential scan.
        let kind_stream = usize::from(kind == FaultKind::Write);
        let sequential = self.stream[kind_stream].filter(|&(next, _)| next == page).map(|(_, window)| window);
        let want = self.config.prefetch.max(sequential.unwrap_or(0));
        let mut count: u16 = 1;
        while count <= want {
            let Some(next) = page.0.checked_add(u64::from(count)).map(PageId) else {
                break;
            };
            let qualifies = self.geo.in_range(next)
                && self.geo.home_of(next) == home
                && !self.is_sc(next)
                && !self.sc_requested.contains(&next)
                && !self.copies.contains_key(&next);
            if !qualifies {
                break;
            }
            self.copies.insert(next, Copy::Fetching { want: None });
            count += 1;
        }
        if self.config.adaptive > 0 {
            let window = super::next_window(sequential, self.config.adaptive);
            self.stream[kind_stream] = Some((PageId(page.0 + u64::from(count)), window));
        }
        out.push(Action::Send { to: home, msg: Msg::Fetch { page, count } });
    }

    // ----- home side -----

    fn on_fetch(&mut self, from: NodeId, page: PageId, count: u16, out: &mut Out) -> Handled {
        if count == 0 || count > MAX_PREFETCH + 1 {
            return self.err(format!("Fetch of {count} pages from {page} by {from}"));
        }
        let last = page.0.checked_add(u64::from(count) - 1).map(PageId).filter(|&l| self.geo.in_range(l));
        let Some(last) = last else {
            return self.err(format!("Fetch of {count} pages from {page} by {from} runs past the space"));
        };
        if !self.geo.is_home(page) || !self.geo.is_home(last) {
            return self.err(format!(
                "Fetch of {page}..={last} from {from} sent to {}, not the home of all of them",
                self.geo.me
            ));
        }
        for p in page.0..=last.0 {
            let p = PageId(p);
            let lrc = !self.is_sc(p) && !self.converting.contains_key(&p);
            if lrc && self.homes.get(&p).is_some_and(|h| h.copyset.contains(&from)) {
                return self.err(format!("Fetch of {p} from {from}, which holds a current copy"));
            }
        }
        for p in page.0..=last.0 {
            let p = PageId(p);
            if self.homes.get(&p).is_some_and(|h| h.fetchers.contains(&from)) {
                return self.err(format!("Fetch of {p} from {from}, which already waits for it"));
            }
        }
        let mut pulls = Vec::new();
        for p in page.0..=last.0 {
            let p = PageId(p);
            if self.is_sc(p) || self.converting.contains_key(&p) {
                out.push(Action::Send { to: from, msg: Msg::ScPage { page: p } });
                continue;
            }
            if let Some(home) = self.homes.get_mut(&p)
                && let Some(owner) = home.owner
            {
                // Handed over: the copy goes out once the owner has given the page back.
                home.fetchers.push(from);
                if !home.pulling {
                    home.pulling = true;
                    home.pulls = home.pulls.saturating_add(1);
                    pulls.push((owner, p));
                }
                continue;
            }
            self.serve_copy(from, p, out);
        }
        // One pull per run of neighbours handed over to the same node.
        let mut runs: Vec<(NodeId, PageId, u16)> = Vec::new();
        for (owner, p) in pulls {
            match runs.last_mut() {
                Some((o, first, count)) if *o == owner && first.0 + u64::from(*count) == p.0 => *count += 1,
                _ => runs.push((owner, p, 1)),
            }
        }
        for (to, page, count) in runs {
            out.push(Action::Send { to, msg: Msg::Pull { page, count } });
        }
        Ok(())
    }

    /// Sends `to` a copy of `page` (homed here, release-consistent, not handed over) and adds it
    /// to the copyset.
    fn serve_copy(&mut self, to: NodeId, page: PageId, out: &mut Out) {
        let dirty = self.home_dirty.contains(&page);
        let home = self.homes.entry(page).or_insert_with(HomePage::new);
        if home.access == Access::Write && !dirty {
            // From now on the home's writes must be noticed: close its copy before the bytes
            // are read for sending, so that every later write traps.
            home.access = Access::Read;
            out.push(Action::Protect { page, access: Access::Read });
        }
        home.copyset.insert(to);
        home.streak = 0;
        out.push(Action::Send { to, msg: Msg::Page { page } });
    }

    /// Pulls `page` (handed over) back for a local fault, with the following pages handed over to
    /// the same node when local faults run in sequence (as a fetch reads ahead).
    fn pull_for_fault(&mut self, page: PageId, out: &mut Out) {
        let Some(owner) = self.homes.get(&page).filter(|h| !h.pulling).and_then(|h| h.owner) else {
            return;
        };
        let sequential = self.pull_stream.filter(|&(next, _)| next == page).map(|(_, window)| window);
        let mut count: u16 = 0;
        while count == 0 || count <= sequential.unwrap_or(0) {
            let q = PageId(page.0 + u64::from(count));
            let Some(home) = self
                .homes
                .get_mut(&q)
                .filter(|h| h.owner == Some(owner) && !h.pulling && self.geo.in_range(q))
            else {
                break;
            };
            home.pulling = true;
            home.pulls = home.pulls.saturating_add(1);
            count += 1;
        }
        if self.config.adaptive > 0 {
            let window = super::next_window(sequential, self.config.adaptive);
            self.pull_stream = Some((PageId(page.0 + u64::from(count)), window));
        }
        out.push(Action::Send { to: owner, msg: Msg::Pull { page, count } });
    }

    /// After a diff from `from`, the only node holding a copy of `page`: hands the page over to it
    /// once enough diffs came in a row (see [`LrcConfig::own_after`]).
    fn consider_handing_over(&mut self, from: NodeId, page: PageId, out: &mut Out) {
        let own_after = self.config.own_after;
        let quiet = !self.rounds.contains_key(&page) && !self.home_dirty.contains(&page);
        let Some(home) = self.homes.get_mut(&page) else {
            return;
        };
        let sole = home.copyset.len() == 1 && home.copyset.contains(&from);
        if own_after == 0 || !quiet || !sole || home.owner.is_some() {
            home.streak = 0;
            return;
        }
        home.streak = home.streak.saturating_add(1);
        let needed = (u16::from(own_after) << home.pulls.min(6)).min(u16::from(u8::MAX));
        if u16::from(home.streak) < needed {
            return;
        }
        home.streak = 0;
        home.owner = Some(from);
        home.access = Access::None;
        out.push(Action::Protect { page, access: Access::None });
        out.push(Action::Send { to: from, msg: Msg::Own { page } });
    }

    fn on_diff(&mut self, from: NodeId, page: PageId, seq: u64, out: &mut Out) -> Handled {
        self.take_diff(from, page, seq, false, out)
    }

    fn on_yield(&mut self, from: NodeId, page: PageId, seq: u64, out: &mut Out) -> Handled {
        self.take_diff(from, page, seq, true, out)
    }

    /// A diff of `page` from `from`; `yielded`: a [`Msg::Yield`], which also gives the page back.
    fn take_diff(&mut self, from: NodeId, page: PageId, seq: u64, yielded: bool, out: &mut Out) -> Handled {
        let what = if yielded { "Yield" } else { "Diff" };
        let known = self.homes.contains_key(&page) || self.converting.contains_key(&page);
        if !self.geo.is_home(page) || self.is_sc(page) || !known {
            return self.err(format!(
                "{what} of {page} from {from}: not a shared release-consistent page homed here"
            ));
        }
        let converting = self.converting.contains_key(&page);
        let (owner, pulling) = self.homes.get(&page).map_or((None, false), |h| (h.owner, h.pulling));
        if yielded && !converting && (owner != Some(from) || !pulling) {
            return self.err(format!("Yield of {page} from {from}, which was not asked to give it back"));
        }
        out.push(Action::ApplyDiff { page });
        if self.bug.is(Bug::DiffAckDuringConversion) && converting {
            self.complete_ack(page, (from, seq), out);
            return Ok(());
        }
        if let Some(conv) = self.converting.get_mut(&page) {
            // Every other copy is being dropped; the ack waits until all are gone.
            conv.then.push((from, seq));
            return Ok(());
        }
        if yielded {
            // The home's copy is current again; the page is shared as before it was handed over.
            if let Some(home) = self.homes.get_mut(&page) {
                home.owner = None;
                home.pulling = false;
                home.access = Access::Read;
            }
            out.push(Action::Protect { page, access: Access::Read });
        } else if let Some(owner) = owner.filter(|&o| o != from) {
            // A diff of a stale copy, flushed late, of a page handed over since: the owner's
            // copy is about to be noticed, so it gives the page back first.
            if let Some(home) = self.homes.get_mut(&page).filter(|h| !h.pulling) {
                home.pulling = true;
                home.pulls = home.pulls.saturating_add(1);
                out.push(Action::Send { to: owner, msg: Msg::Pull { page, count: 1 } });
            }
        }
        let targets = match self.homes.get_mut(&page) {
            Some(home) => {
                let targets: BTreeSet<NodeId> = home.copyset.iter().copied().filter(|&n| n != from).collect();
                home.copyset.retain(|&n| n == from);
                targets
            }
            None => BTreeSet::new(),
        };
        if self.bug.is(Bug::DiffAckBeforeNotices) {
            self.complete_ack(page, (from, seq), out);
            if !targets.is_empty() {
                let round = self.rounds.entry(page).or_default();
                for to in targets {
                    round.waiting.insert(to);
                    out.push(Action::Send { to, msg: Msg::Notice { page } });
                }
            }
            return Ok(());
        }
        self.notify(page, targets, (from, seq), out);
        if yielded {
            let fetchers =
                self.homes.get_mut(&page).map(|h| std::mem::take(&mut h.fetchers)).unwrap_or_default();
            for to in fetchers {
                self.serve_copy(to, page, out);
            }
            if let Some(kind) = self.parked.remove(&page) {
                self.fault(page, kind, out);
            }
        } else if owner.is_none() {
            self.consider_handing_over(from, page, out);
        }
        Ok(())
    }

    fn on_notice_ack(&mut self, from: NodeId, page: PageId, out: &mut Out) -> Handled {
        let Some(last) = acknowledge(self.rounds.get_mut(&page).map(|r| &mut r.waiting), from) else {
            return self.err(format!("NoticeAck of {page} from {from}, which nobody waits for"));
        };
        if last {
            let done = self.rounds.remove(&page).map(|r| r.then).unwrap_or_default();
            for ack in done {
                self.complete_ack(page, ack, out);
            }
            self.progress(out);
        }
        Ok(())
    }

    fn on_make_sc(&mut self, from: NodeId, page: PageId, out: &mut Out) -> Handled {
        if !self.geo.is_home(page) {
            return self.err(format!("MakeSc of {page} from {from}, sent to a node that is not its home"));
        }
        if self.is_sc(page) {
            out.push(Action::Send { to: from, msg: Msg::ScPage { page } });
        } else if !self.converting.contains_key(&page) {
            self.start_conversion(page, out);
        }
        Ok(())
    }

    fn start_conversion(&mut self, page: PageId, out: &mut Out) {
        let access = self.home_access(page);
        let fetchers = self.homes.remove(&page).map(|h| h.fetchers).unwrap_or_default();
        self.home_dirty.remove(&page);
        let waiting: BTreeSet<NodeId> =
            (0..self.geo.nodes).map(NodeId).filter(|&n| n != self.geo.me).collect();
        for &to in &waiting {
            out.push(Action::Send { to, msg: Msg::Convert { page } });
        }
        // Fetches waiting for an owner to give the page back are answered as those that arrive
        // during the conversion are (behind the `Convert`). The owner gives the page back when
        // the `Convert` reaches it, if no pull has asked it already.
        for to in fetchers {
            out.push(Action::Send { to, msg: Msg::ScPage { page } });
        }
        self.converting.insert(page, Conversion { waiting, then: Vec::new(), queued: Vec::new(), access });
        if self.geo.nodes == 1 {
            self.finish_conversion(page, out);
        }
    }

    fn on_convert_ack(&mut self, from: NodeId, page: PageId, out: &mut Out) -> Handled {
        match acknowledge(self.converting.get_mut(&page).map(|c| &mut c.waiting), from) {
            None => self.err(format!("ConvertAck of {page} from {from}, which nobody waits for")),
            Some(last) => {
                if last {
                    self.finish_conversion(page, out);
                }
                Ok(())
            }
        }
    }

    /// Every other node has dropped its copy: the page starts in the SC protocol's initial state,
    /// writable at the home.
    fn finish_conversion(&mut self, page: PageId, out: &mut Out) {
        let Some(conv) = self.converting.remove(&page) else {
            return;
        };
        self.sc_marked.insert(page);
        self.sc_clean.remove(&page);
        if conv.access != Access::Write {
            out.push(Action::Protect { page, access: Access::Write });
        }
        for ack in conv.then {
            self.complete_ack(page, ack, out);
        }
        for (from, msg) in conv.queued {
            // Checked when queued: a first request from each sender, which the fresh SC state
            // accepts.
            let _ = self.sc_handle(from, msg, out);
        }
        if let Some(kind) = self.parked.remove(&page) {
            self.fault(page, kind, out);
        }
        self.progress(out);
    }

    // ----- copy-holder side -----

    fn check_from_home(&self, from: NodeId, page: PageId, what: &str) -> Handled {
        let home = self.geo.home_of(page);
        if from != home || home == self.geo.me {
            return self.err(format!("{what} of {page} from {from}, but its home is {home}"));
        }
        Ok(())
    }

    fn on_page(&mut self, from: NodeId, page: PageId, out: &mut Out) -> Handled {
        self.check_from_home(from, page, "Page")?;
        let Some(&Copy::Fetching { want }) = self.copies.get(&page) else {
            return self.err(format!("Page {page} from {from}, which nobody fetched"));
        };
        if self.is_sc(page) {
            return self.err(format!("Page {page} from {from} for a page that is SC here"));
        }
        self.copies.insert(page, Copy::Valid);
        out.push(Action::Install { page });
        if self.refreshing.remove(&page) && want.is_none() {
            // Nobody has touched it meanwhile: it opens at the first touch.
            self.fresh.insert(page);
            return Ok(());
        }
        if want == Some(FaultKind::Write) && !self.sc_requested.contains(&page) {
            self.dirty.insert(page);
            out.push(Action::Twin { page });
            out.push(Action::Protect { page, access: Access::Write });
        } else {
            // A page becoming SC is not written in this mode any more: a writer woken here
            // traps again and waits for the conversion.
            out.push(Action::Protect { page, access: Access::Read });
        }
        out.push(Action::Wake { page });
        Ok(())
    }

    fn on_sc_page(&mut self, from: NodeId, page: PageId, out: &mut Out) -> Handled {
        self.check_from_home(from, page, "ScPage")?;
        let fetching = match self.copies.get(&page) {
            Some(&Copy::Fetching { want }) => Some(want),
            _ => None,
        };
        if fetching.is_none() && !self.sc_requested.contains(&page) {
            return self.err(format!("ScPage {page} from {from}, which answers nothing asked"));
        }
        if self.copies.get(&page) == Some(&Copy::Valid) {
            return self.err(format!("ScPage {page} from {from} while a release-consistent copy is held"));
        }
        // With both a fetch and a `MakeSc` outstanding, each gets its own answer: this one is the
        // fetch's (a `Convert` would have come first and ended the request otherwise).
        if let Some(want) = fetching {
            self.copies.remove(&page);
            self.refreshing.remove(&page);
            if let Some(kind) = want {
                self.park(page, kind);
            }
        } else {
            self.sc_requested.remove(&page);
        }
        self.sc_marked.insert(page);
        if let Some(kind) = self.parked.remove(&page) {
            self.fault(page, kind, out);
        }
        Ok(())
    }

    fn on_own(&mut self, from: NodeId, page: PageId, out: &mut Out) -> Handled {
        self.check_from_home(from, page, "Own")?;
        let current = self.copies.get(&page) == Some(&Copy::Valid) && !self.stale.contains(&page);
        if !current || self.owned.contains(&page) || self.is_sc(page) {
            return self.err(format!("Own of {page} from {from}, but no current copy is held"));
        }
        self.fresh.remove(&page);
        // Writes since the last release (a twin already taken) are kept too.
        if !self.dirty.remove(&page) {
            out.push(Action::Twin { page });
            out.push(Action::Protect { page, access: Access::Write });
        }
        self.owned.insert(page);
        Ok(())
    }

    fn on_pull(&mut self, from: NodeId, page: PageId, count: u16, out: &mut Out) -> Handled {
        let last = (1..=MAX_PREFETCH + 1)
            .contains(&count)
            .then(|| page.0.checked_add(u64::from(count) - 1))
            .flatten()
            .map(PageId)
            .filter(|&l| self.geo.in_range(l));
        let Some(last) = last else {
            return self.err(format!("Pull of {count} pages from {page} by {from}"));
        };
        for p in page.0..=last.0 {
            let p = PageId(p);
            self.check_from_home(from, p, "Pull")?;
            if !self.owned.contains(&p) {
                return self.err(format!("Pull of {p} from {from}, which this node does not own"));
            }
        }
        for p in page.0..=last.0 {
            let p = PageId(p);
            self.owned.remove(&p);
            out.push(Action::Protect { page: p, access: Access::Read });
            self.send_diff_as(p, true, out);
        }
        Ok(())
    }

    fn on_diff_ack(&mut self, from: NodeId, page: PageId, seq: u64, out: &mut Out) -> Handled {
        if self.unacked.get(&seq) != Some(&(from, page)) || from == self.geo.me {
            return self.err(format!("DiffAck {seq} of {page} from {from}, which nobody waits for"));
        }
        self.unacked.remove(&seq);
        self.progress(out);
        Ok(())
    }

    fn on_notice(&mut self, from: NodeId, page: PageId, out: &mut Out) -> Handled {
        self.check_from_home(from, page, "Notice")?;
        if self.copies.get(&page) != Some(&Copy::Valid) || self.stale.contains(&page) || self.is_sc(page) {
            return self.err(format!("Notice of {page} from {from}, but no current copy is held"));
        }
        if self.owned.contains(&page) {
            return self.err(format!("Notice of {page} from {from}, which this node owns"));
        }
        if self.fresh.contains(&page) {
            // Refreshed and not touched since: stop refreshing it. It stays closed, and stale.
            self.hot.remove(&page);
        }
        let refresh = self.hot.contains(&page)
            && !self.dirty.contains(&page)
            && !self.sc_requested.contains(&page)
            && !self.bug.is(Bug::NoticeWithoutStale);
        if refresh {
            // Drop it now and fetch it again (behind the ack, so the home's round for this node
            // is over when the fetch arrives).
            out.push(Action::Protect { page, access: Access::None });
            out.push(Action::Send { to: from, msg: Msg::NoticeAck { page } });
            self.refreshing.insert(page);
            self.copies.insert(page, Copy::Fetching { want: None });
            out.push(Action::Send { to: from, msg: Msg::Fetch { page, count: 1 } });
            return Ok(());
        }

        if !self.bug.is(Bug::NoticeWithoutStale) {
            self.stale.insert(page);
        }
        out.push(Action::Send { to: from, msg: Msg::NoticeAck { page } });
        Ok(())
    }

    fn on_convert(&mut self, from: NodeId, page: PageId, out: &mut Out) -> Handled {
        self.check_from_home(from, page, "Convert")?;
        if self.is_sc(page) {
            return self.err(format!("Convert of {page} from {from}, which already is SC here"));
        }
        match self.copies.get(&page).copied() {
            Some(Copy::Valid) => {
                self.copies.remove(&page);
                self.stale.remove(&page);
                self.fresh.remove(&page);
                out.push(Action::Protect { page, access: Access::None });
                if self.dirty.remove(&page) {
                    self.send_diff(page, out);
                } else if self.owned.remove(&page) {
                    self.send_diff_as(page, true, out);
                }
            }
            Some(Copy::Fetching { want }) => {
                // The fetch is answered by a `ScPage` (the home converts before it reads the
                // fetch); its waiters go to the SC protocol now.
                self.copies.insert(page, Copy::Fetching { want: None });
                if let Some(kind) = want {
                    self.park(page, kind);
                }
            }
            None => {}
        }
        self.sc_requested.remove(&page);
        self.sc_marked.insert(page);
        out.push(Action::Send { to: from, msg: Msg::ConvertAck { page } });
        if let Some(kind) = self.parked.remove(&page) {
            self.fault(page, kind, out);
        }
        Ok(())
    }

    // ----- sequentially consistent pages -----

    fn on_sc(&mut self, from: NodeId, msg: sc::Msg, out: &mut Out) -> Handled {
        let page = msg.page();
        if let Some(conv) = self.converting.get_mut(&page) {
            let request = matches!(msg, sc::Msg::ReadReq { .. } | sc::Msg::WriteReq { .. });
            if !request || conv.queued.iter().any(|&(n, _)| n == from) {
                return Err(ProtocolError::new(format!(
                    "{msg:?} from {from} while {page} becomes SC at {}",
                    self.geo.me
                )));
            }
            conv.queued.push((from, msg));
            return Ok(());
        }
        if !self.is_sc(page) {
            return self.err(format!("{msg:?} from {from}, but {page} is not SC"));
        }
        if msg.carries_data() && self.holds.contains_key(&page) {
            // Every message this node has sent about the page since the hold began is held too,
            // so the page's bytes can answer nothing it sent; accepted, their `Install` would be
            // held and then emitted while handling a message without bytes.
            return self.err(format!("{msg:?} from {from} while {page}'s messages are held for a release"));
        }
        self.sc_handle(from, msg, out)
    }

    fn sc_handle(&mut self, from: NodeId, msg: sc::Msg, out: &mut Out) -> Handled {
        let page = msg.page();
        let shown = self.access(page);
        let mut batch = Vec::new();
        self.sc
            .handle(from, msg, &mut batch)
            .map_err(|e| ProtocolError::new(format!("{} (at {})", e.reason(), self.geo.me)))?;
        self.sc_emit(page, shown, batch.into(), out);
        Ok(())
    }

    /// Passes the SC protocol's actions for `page` on, translated, enforcing the two rules that
    /// make an SC page a synchronisation point:
    ///
    /// * **Release before the bytes leave.** A `Send` carrying the page's bytes, if the page may
    ///   have been written here since its bytes last left, waits for a release of everything
    ///   written here before (so a reader that sees an atomic's new value also finds the plain
    ///   writes made before it at their homes). The actions from that `Send` on, and any later
    ///   ones for the page, are held until the release is acknowledged; the `Protect` that closed
    ///   the page goes out at once, so no write to it can slip in meanwhile.
    /// * **Acquire before the page opens.** Each `Protect` that raises this node's access (after
    ///   new bytes were installed, or an upgrade) is preceded by an acquire, so a thread that
    ///   sees another node's write to the page also sees what that node released before it.
    ///
    /// `shown` is the page's protection as the runtime knows it before these actions.
    fn sc_emit(&mut self, page: PageId, mut shown: Access, mut actions: VecDeque<sc::Action>, out: &mut Out) {
        if let Some(hold) = self.holds.get_mut(&page) {
            hold.actions.extend(actions);
            return;
        }
        while let Some(action) = actions.pop_front() {
            match action {
                sc::Action::Send { to, msg } => {
                    if msg.carries_data() {
                        if !self.sc_clean.contains(&page) && self.has_unreleased() {
                            let watermark = self.start_release(out);
                            if !self.satisfied(watermark) {
                                // The release covers every write made to the page so far.
                                if shown < Access::Write {
                                    self.sc_clean.insert(page);
                                }
                                actions.push_front(action);
                                self.holds.insert(page, Hold { watermark, shown, actions });
                                return;
                            }
                        }
                        if shown < Access::Write {
                            self.sc_clean.insert(page);
                        }
                    }
                    out.push(Action::Send { to, msg: Msg::Sc(msg) });
                }
                sc::Action::Install { page } => out.push(Action::Install { page }),
                sc::Action::Protect { page, access } => {
                    if access > shown {
                        self.acquire(out);
                    }
                    shown = access;
                    if access == Access::Write {
                        self.sc_clean.remove(&page);
                    }
                    out.push(Action::Protect { page, access });
                }
                sc::Action::Wake { page } => out.push(Action::Wake { page }),
                other @ (sc::Action::Twin { .. }
                | sc::Action::ApplyDiff { .. }
                | sc::Action::Released { .. }) => {
                    unreachable!("the sequentially consistent protocol emitted {other:?}")
                }
            }
        }
    }
}

/// Takes `from` off `waiting`, if it is there: `None` if it is not (nobody waits for its
/// acknowledgement), else whether nobody is left to wait for.
fn acknowledge(waiting: Option<&mut BTreeSet<NodeId>>, from: NodeId) -> Option<bool> {
    let waiting = waiting.filter(|w| w.contains(&from))?;
    waiting.remove(&from);
    Some(waiting.is_empty())
}

/// The most pages a refresh history (`dropped`, `hot`) remembers: both are hints, so when one is
/// full it starts again empty rather than grow with every page a long run ever touched.
const HISTORY: usize = 4096;

/// Adds `page` to a refresh history, emptying it first if it is full.
fn remember(history: &mut BTreeSet<PageId>, page: PageId) {
    if history.len() >= HISTORY {
        history.clear();
    }
    history.insert(page);
}

fn stronger(a: Option<FaultKind>, b: FaultKind) -> FaultKind {
    match (a, b) {
        (Some(FaultKind::Write), _) | (_, FaultKind::Write) => FaultKind::Write,
        _ => FaultKind::Read,
    }
}

impl Message for Msg {
    fn page(&self) -> PageId {
        Msg::page(self)
    }

    fn payload(&self) -> Payload {
        Msg::payload(self)
    }

    fn fetches(&self) -> u64 {
        match self {
            Msg::Fetch { count, .. } => u64::from(*count),
            Msg::Sc(inner) => inner.fetches(),
            _ => 0,
        }
    }

    fn explain(&self, p: &str) -> String {
        match *self {
            Msg::Fetch { count: 1, .. } => format!("please send me a copy of {p}"),
            Msg::Fetch { count, .. } => {
                format!("please send me copies of {p} and the {} pages after it", count - 1)
            }
            Msg::Page { .. } => format!("here is a copy of {p} (+4096 bytes)"),
            Msg::ScPage { .. } => format!("{p} is sequentially consistent: ask for it that way"),
            Msg::Diff { seq, .. } => format!("my changes to {p} (diff {seq})"),
            Msg::DiffAck { seq, .. } => format!("diff {seq} of {p} applied, every copy notified"),
            Msg::Notice { .. } => format!("{p} was written elsewhere: drop your copy at your next acquire"),
            Msg::NoticeAck { .. } => format!("noted: my copy of {p} is stale"),
            Msg::MakeSc { .. } => format!("please make {p} sequentially consistent"),
            Msg::Convert { .. } => format!("{p} becomes sequentially consistent: flush and drop your copy"),
            Msg::ConvertAck { .. } => format!("no copy of {p} left here"),
            Msg::Sc(inner) => format!("(sequentially consistent) {}", inner.explain(p)),
            Msg::Own { .. } => format!("{p} is yours: keep your changes until I ask"),
            Msg::Pull { count: 1, .. } => format!("please give {p} back with your changes"),
            Msg::Pull { count, .. } => {
                format!("please give {p} and the {} pages after it back with your changes", count - 1)
            }
            Msg::Yield { seq, .. } => format!("{p} back, with my changes (diff {seq})"),
        }
    }
}

/// Release consistency: writes travel as diffs at releases, stale copies go at acquires; an atomic
/// instruction makes its page sequentially consistent.
impl Coherence for LrcNode {
    type Msg = Msg;

    fn geometry(&self) -> Geometry {
        self.geo
    }

    fn fault(&mut self, page: PageId, kind: FaultKind, atomic: bool, out: &mut Vec<Action>) {
        if atomic && !self.is_sc(page) {
            self.set_sc(page, out);
        }
        LrcNode::fault(self, page, kind, out);
    }

    fn handle(&mut self, from: NodeId, msg: Msg, out: &mut Vec<Action>) -> Result<(), ProtocolError> {
        LrcNode::handle(self, from, msg, out)
    }

    fn release(&mut self, out: &mut Vec<Action>) -> Option<ReleaseId> {
        Some(LrcNode::release(self, out))
    }

    fn acquire(&mut self, out: &mut Vec<Action>) {
        LrcNode::acquire(self, out);
    }

    /// Whether a [`release`](LrcNode::release) now would have anything to do or wait for: pages
    /// written since the last release, or earlier diffs, notices or releases still outstanding.
    /// When false, a release completes at once without any message. The runtime uses it to skip
    /// releases that cannot matter; it must be re-read after every call, since a write fault makes
    /// it true.
    fn needs_release(&self) -> bool {
        !self.dirty.is_empty()
            || !self.home_dirty.is_empty()
            || !self.unacked.is_empty()
            || !self.releases.is_empty()
            || !self.holds.is_empty()
    }

    /// Whether an [`acquire`](LrcNode::acquire) now would drop anything (some copy is stale).
    fn has_stale(&self) -> bool {
        !self.stale.is_empty()
    }

    /// This node's current access to `page`: what its memory protection must be (as told to the
    /// runtime by the actions returned so far). `Access::None` for an out-of-range page.
    fn access(&self, page: PageId) -> Access {
        if !self.geo.in_range(page) {
            return Access::None;
        }
        if self.is_sc(page) {
            return self.holds.get(&page).map_or_else(|| self.sc.access(page), |h| h.shown);
        }
        if self.geo.is_home(page) {
            return self.home_access(page);
        }
        match self.copies.get(&page) {
            Some(Copy::Valid) if self.fresh.contains(&page) => Access::None,
            Some(Copy::Valid) if self.dirty.contains(&page) || self.owned.contains(&page) => Access::Write,
            Some(Copy::Valid) => Access::Read,
            _ => Access::None,
        }
    }

    fn describe(&self, page: PageId) -> String {
        format!(
            "access here {:?}, fetching {}, stale {}, sequentially consistent {}, sharing at the home {:?}",
            self.access(page),
            self.is_fetching(page),
            self.is_stale(page),
            self.is_sc(page),
            self.sharing(page)
        )
    }
}
