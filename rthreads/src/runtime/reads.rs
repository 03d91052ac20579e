//! Direct page reads, the service thread's side (the handler's side and the rules between the two
//! are in `dsm::fault::direct`).
//!
//! - **Requesting node.** Before the protocol acts on a page homed elsewhere (a fault on it, a
//!   message about it, a read-ahead that would ask for it), the service thread *gates* the page:
//!   if a faulting thread has a direct read of it out, what concerns the page waits in
//!   [`Reads::held`] until the read ends; if a direct read ended unseen, the protocol is told it
//!   holds a read copy now (`Coherence::absorb_direct_read`). Pages gated in a turn are published
//!   as fetchable again at its end if the protocol says they are ([`Service::publish_fetchable`]).
//!   Threads that found no connection to a home ask for one; a dialing thread makes it
//!   ([`Service::dial_page_conns`]).
//! - **Home.** A direct read request is handed to the protocol as its ordinary read request; the
//!   grant it answers with goes back on the connection the request came on, with the page's
//!   bytes ([`Service::serve_page_read`], and `exec.rs`'s `send`).
//!
//! `RTHREADS_DIRECT_READS=0` turns direct reads off (every read fault then passes through the
//! service thread, as writes always do). They are off under `lrc` (its read copies are not a plain
//! grant from the home) and under network-delay emulation (they would skip the emulated delay).

use std::collections::HashMap;

use dsm::fault::Wakeup;
use dsm::fault::direct::{self, Gate};
use dsm::protocol::Message;
use dsm::{NodeId, PageId};

use super::direct::Route;
use super::service::Service;
use super::wire::ProtocolWire;
use super::{Verdict, fatal};
use crate::alloc::InternalAlloc;

/// Something that concerns a page while a direct read of it is out.
pub(super) enum Held<M> {
    /// A fault of another thread of this node.
    Fault(Wakeup),
    /// A protocol message (with its payload, if any).
    Msg(NodeId, M, Option<Vec<u8>>),
}

/// The service thread's direct-read state.
pub(super) struct Reads<M> {
    /// What waits for a direct read to end, by page, in arrival order.
    pub(super) held: HashMap<PageId, Vec<Held<M>>>,
    /// Pages gated this turn (published as fetchable at its end where the protocol says so).
    pub(super) touched: Vec<PageId>,
    /// At a home: where the grant answering a direct read goes, by requester and page.
    pub(super) routes: HashMap<(NodeId, PageId), Route>,
}

impl<M> Reads<M> {
    pub(super) fn new() -> Reads<M> {
        Reads { held: HashMap::new(), touched: Vec::new(), routes: HashMap::new() }
    }
}

impl<P: ProtocolWire + Send + 'static> Service<P> {
    /// Turns direct reads on if the protocol has them and nothing rules them out (see the top of
    /// this file). Called once, before the service thread starts.
    pub(super) fn enable_direct_reads(&mut self) {
        let geometry = self.engine.proto.geometry();
        let someone_else = PageId(if self.rt.me.0 == 0 { geometry.pages_per_node } else { 0 });
        let wanted = std::env::var("RTHREADS_DIRECT_READS").map_or(true, |v| v != "0");
        if !wanted
            || self.rt.nodes < 2
            || !super::net_delay().is_zero()
            || self.engine.proto.direct_read_request(someone_else).is_none()
        {
            return;
        }
        let setup = direct::Setup {
            me: self.rt.me.0,
            pages_per_node: geometry.pages_per_node,
            pages: geometry.page_count(),
            view: self.space.runtime_addr(PageId(0)),
            bits: self.space.memory_bits(),
            sent: self.rt.sent_counters().as_ptr(),
            sent_len: self.rt.sent_counters().len(),
            trace_kinds: [
                crate::counters::kind_of(&[direct::T_PAGE_READ]),
                crate::counters::kind_of(&[direct::T_PAGE_GRANT]),
            ]
            .map(|k| k as u8),
        };
        // SAFETY: the space (whose runtime view and bits these are) and the runtime (whose
        // counters these are) live until the process ends: the space is owned by the service
        // thread, which never returns, and the runtime is a static.
        if let Err(e) = unsafe { direct::enable(setup) } {
            super::say(&format!("rthreads: {}: direct page reads stay off: {e}", self.rt.me));
        }
    }

    /// Gates `page` before the protocol acts on it: true to go on (the protocol told of a direct
    /// read that ended), false if a direct read of it is out (then what concerns it waits).
    pub(super) fn gate(&mut self, page: PageId) -> bool {
        if !direct::active() || self.engine.proto.geometry().is_home(page) {
            return true;
        }
        !self.engine.reads.held.contains_key(&page) && self.pass(page)
    }

    /// The byte-level half of [`Service::gate`]: false while a direct read of `page` is out; else
    /// tells the protocol of one that ended, and notes the page for [`Service::publish_fetchable`].
    fn pass(&mut self, page: PageId) -> bool {
        match direct::gate(page.0) {
            Gate::Hold => return false,
            Gate::Absorb => self.absorb(page),
            Gate::Proceed => {}
        }
        self.engine.reads.touched.push(page);
        true
    }

    /// Keeps `item` until the direct read of `page` ends.
    pub(super) fn hold_for_read(&mut self, page: PageId, item: Held<P::Msg>) {
        let _internal = InternalAlloc::new();
        self.engine.reads.held.entry(page).or_default().push(item);
    }

    /// Handles, in order, what waited for direct reads that have ended.
    pub(super) fn release_held(&mut self) {
        if self.engine.reads.held.is_empty() {
            return;
        }
        let _internal = InternalAlloc::new();
        if self.rt.is_alone() {
            // Every other node has left: the node serves its faults alone (`serve_alone`), and
            // the held messages have nobody to answer.
            let mut faults: Vec<Wakeup> = std::mem::take(&mut self.engine.reads.held)
                .into_values()
                .flatten()
                .filter_map(|h| match h {
                    Held::Fault(w) => Some(w),
                    Held::Msg(..) => None,
                })
                .collect();
            return self.serve_alone(&mut faults);
        }
        let pages: Vec<PageId> = self.engine.reads.held.keys().copied().collect();
        for page in pages {
            if !self.pass(page) {
                continue;
            }
            let Some(items) = self.engine.reads.held.remove(&page) else { continue };
            for item in items {
                match item {
                    Held::Fault(w) => self.serve_fault(w),
                    Held::Msg(from, msg, data) => self.on_proto(from, msg, data.as_deref()),
                }
            }
        }
    }

    /// A direct read of `page` ended: the protocol holds a read copy now.
    fn absorb(&mut self, page: PageId) {
        if let Err(e) = self.engine.proto.absorb_direct_read(page) {
            fatal(&format!("BUG: a direct read ended in a state the protocol refuses: {e}"));
        }
    }

    /// At the end of a turn: pages gated in it that the protocol says are fetchable again (no copy,
    /// nothing asked for) may be read directly again. Everything that took them there is queued by
    /// now, so a direct request, ordered after it, cannot overtake it.
    pub(super) fn publish_fetchable(&mut self) {
        if self.engine.reads.touched.is_empty() {
            return;
        }
        let mut touched = std::mem::take(&mut self.engine.reads.touched);
        for page in touched.drain(..) {
            if self.engine.proto.fetchable(page) && !self.engine.reads.held.contains_key(&page) {
                direct::publish_absent(page.0);
            }
        }
        self.engine.reads.touched = touched;
    }

    /// Dials the connections faulting threads asked for, each on a thread of its own; and reports a
    /// home whose direct connection broke under a read.
    pub(super) fn dial_page_conns(&mut self) {
        if let Some(home) = direct::broken() {
            let home = NodeId(home);
            if !self.links.lost.get(home.index()).is_none_or(|&l| l) {
                self.peer_lost(home, "its direct connection broke while a thread read a page from it");
            }
        }
        let rt = self.rt;
        direct::wanted_dials(|peer| {
            let to = NodeId(peer);
            if to == rt.me || to.index() >= usize::from(rt.nodes) {
                return direct::dialed(peer);
            }
            let _internal = InternalAlloc::new();
            let started =
                std::thread::Builder::new().name(format!("rthreads-pages-{peer}")).spawn(move || {
                    crate::alloc::runtime_thread();
                    if let Ok(stream) = super::direct::dial(rt, to) {
                        use std::os::fd::IntoRawFd;
                        let fd = stream.into_raw_fd();
                        if let Err(fd) = direct::add_conn(peer, fd) {
                            // SAFETY: the descriptor is ours and nobody else knows it.
                            unsafe { libc::close(fd) };
                        }
                    }
                    // A peer that cannot be reached is noticed by the liveness checks.
                    direct::dialed(peer);
                });
            if started.is_err() {
                // Without the thread, reads from that home take the ordinary way for now.
                direct::dialed(peer);
            }
        });
    }

    /// At a home: a direct read request from `peer` (`body` is `[T_PAGE_READ, page]`), answered
    /// on `route`.
    pub(super) fn serve_page_read(&mut self, peer: NodeId, body: &[u8], route: Route) {
        let page = match body.get(1..9).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) if body.len() == 9 => PageId(u64::from_le_bytes(b)),
            _ => return self.verdict(Some(peer), Verdict::Lost("it sent a malformed page read".into())),
        };
        let geometry = self.engine.proto.geometry();
        let msg = if geometry.in_range(page) { self.engine.proto.direct_read_request(page) } else { None };
        let Some(msg) = msg else {
            return self
                .peer_lost(peer, &format!("it sent a direct read of {page}, which this node cannot serve"));
        };
        crate::trace::message(false, peer, body, page.0);
        {
            let _internal = InternalAlloc::new();
            self.engine.reads.routes.insert((peer, page), route);
        }
        let mut effects = std::mem::take(&mut self.engine.effects);
        if let Err(e) = self.engine.proto.handle(peer, msg, &mut effects) {
            self.engine.effects = effects;
            self.engine.reads.routes.remove(&(peer, page));
            return self.peer_lost(peer, &format!("protocol error: {e}"));
        }
        self.exec(&mut effects, None);
        self.engine.effects = effects;
    }

    /// At a home, from `exec`'s `send`: where `msg` goes if it answers a direct read (then not on
    /// the ordinary connection).
    pub(super) fn take_route(&mut self, to: NodeId, msg: &P::Msg) -> Option<Route> {
        if self.engine.reads.routes.is_empty() || !msg.grants_read_copy() {
            return None;
        }
        self.engine.reads.routes.remove(&(to, msg.page()))
    }
}
