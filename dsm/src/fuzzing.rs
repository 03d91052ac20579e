//! Fuzz harnesses: the functions the `fuzz/` targets call, kept here so the test that replays the
//! checked-in corpus (`tests/fuzz_replay.rs`) runs exactly the same code. Each takes arbitrary
//! bytes and panics when it finds a bug; for any other input it returns quietly.
//!
//! - [`sc_protocol`]: the sequentially consistent protocol ([`ScNode`]).
//! - [`lrc_protocol`]: the release-consistent protocol ([`crate::protocol::lrc::LrcNode`]) with
//!   real page bytes, twins and diffs.

use std::collections::VecDeque;

mod lrc;

pub use lrc::lrc_protocol;

use crate::protocol::sc::{Action, Msg, ScNode};
use crate::{Access, FaultKind, NodeId, PageId};

/// Hands out the input's bytes one at a time; `None` once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

/// A page number from one byte: mostly in range, sometimes just past it, 255 for `u64::MAX`.
fn page_of(b: u8, page_count: u64) -> PageId {
    if b == u8::MAX { PageId(u64::MAX) } else { PageId(u64::from(b) % (page_count + 2)) }
}

/// A sender from one byte: mostly a node of the cluster, sometimes one past it, 255 for `u16::MAX`.
fn sender_of(b: u8, nodes: u16) -> NodeId {
    if b == u8::MAX { NodeId(u16::MAX) } else { NodeId(u16::from(b) % (nodes + 2)) }
}

fn msg_of(tag: u8, page: PageId, arg: u8) -> Msg {
    let access = [Access::None, Access::Read, Access::Write][usize::from(arg % 3)];
    let flag = arg & 0x80 != 0;
    match tag % 7 {
        0 => Msg::ReadReq { page },
        1 => Msg::WriteReq { page },
        2 => Msg::Grant { page, access, data: flag },
        3 => Msg::Invalidate { page },
        4 => Msg::InvAck { page },
        5 => Msg::Recall { page, keep_read: flag },
        _ => Msg::RecallAck { page },
    }
}

/// Checks what one call of `node` emitted. `handling` is the message being handled, `None` for a
/// fault.
fn check_actions(node: &ScNode, handling: Option<Msg>, out: &[Action]) {
    let me = node.me();
    let count = node.page_count();
    for (at, action) in out.iter().enumerate() {
        let page = match *action {
            Action::Send { to, msg } => {
                assert!(to != me && to.0 < node.nodes(), "{me}: {action:?} to a non-peer");
                msg.page()
            }
            Action::Install { page } => {
                let msg = handling.unwrap_or_else(|| panic!("{me}: Install from a fault: {out:?}"));
                assert!(msg.carries_data(), "{me}: Install while handling {msg:?}, which has no data");
                assert_eq!(page, msg.page(), "{me}: Install of another page than {msg:?}'s");
                // The bytes are installed before access to them opens.
                let opens = out[at..].iter().any(|a| {
                    matches!(*a, Action::Protect { page: q, access } if q == page && access >= Access::Read)
                });
                let home = node.home_of(page) == me;
                assert!(opens || home, "{me}: Install of {page} with no Protect opening it: {out:?}");
                page
            }
            Action::Protect { page, .. } | Action::Wake { page } => page,
            other => unreachable!("not an effect of this protocol: {other:?}"),
        };
        assert!(page.0 < count, "{me}: {action:?} for a page outside the {count} pages");
    }
    // The protection the runtime ends up with is the protocol's view.
    for action in out {
        if let Action::Protect { page, .. } = *action {
            let last = out.iter().rev().find_map(|a| match *a {
                Action::Protect { page: q, access } if q == page => Some(access),
                _ => None,
            });
            assert_eq!(last, Some(node.access(page)), "{me}: last Protect of {page} differs from access()");
        }
    }
}

/// The coherence invariants of a cluster that has only seen correct messages.
fn check_coherent(nodes: &[ScNode]) {
    for i in 0..nodes[0].page_count() {
        let page = PageId(i);
        let access: Vec<Access> = nodes.iter().map(|n| n.access(page)).collect();
        let writers = access.iter().filter(|&&a| a == Access::Write).count();
        let readers = access.iter().filter(|&&a| a == Access::Read).count();
        assert!(writers == 0 || (writers == 1 && readers == 0), "{page}: access {access:?}");
        let home = nodes[0].home_of(page);
        let dir = nodes[home.index()].directory(page).expect("the home has an entry");
        for (k, a) in access.iter().enumerate() {
            assert!(*a <= dir.access_of(NodeId(k as u16)), "{page}: access {access:?}, directory {dir:?}");
        }
    }
}

/// The SC protocol fed arbitrary sequences of events decoded from `data`: local faults (any page,
/// in range or not), deliveries of the messages the nodes really sent (FIFO per pair, any order
/// across pairs), and garbage messages from anyone (`(from, Msg)` with any page, flag and access).
///
/// The first two bytes pick the cluster (1–4 nodes, 1–3 pages per node). Checks that nothing
/// panics; that a rejected message leaves the node and the output untouched; that no action names
/// a page outside `page_count()`, a send goes to a peer, `Install` comes only while handling a
/// message that carries data (for that page, before the `Protect` that opens it) and never from a
/// fault; and that the last `Protect` of a page matches `access()`. Until some garbage message is
/// accepted (which puts the cluster where no correct run goes), it also checks that every real
/// message is accepted and that access stays single-writer / multiple-reader and within the
/// directory, and at the end delivers every message still in flight and checks that no node has a
/// request or transaction left open.
///
/// # Panics
/// On any violation: that is a bug.
pub fn sc_protocol(data: &[u8]) {
    let mut input = Input(data);
    let (Some(a), Some(b)) = (input.byte(), input.byte()) else {
        return;
    };
    let count = 1 + u16::from(a % 4);
    let per_node = 1 + u64::from(b % 3);
    let mut nodes: Vec<ScNode> = (0..count).map(|i| ScNode::new(NodeId(i), count, per_node)).collect();
    let pages = nodes[0].page_count();
    let n = usize::from(count);
    let mut links: Vec<VecDeque<Msg>> = vec![VecDeque::new(); n * n];
    let mut tainted = false;
    let mut out = Vec::new();

    while let Some(tag) = input.byte() {
        out.clear();
        match tag % 8 {
            0 | 1 => {
                let (Some(k), Some(p)) = (input.byte(), input.byte()) else { break };
                let k = usize::from(k) % n;
                let page = page_of(p, pages);
                let kind = if tag & 0x80 != 0 { FaultKind::Write } else { FaultKind::Read };
                nodes[k].fault(page, kind, &mut out);
                if page.0 >= pages {
                    assert!(out.is_empty(), "fault on out-of-range {page} emitted {out:?}");
                }
                check_actions(&nodes[k], None, &out);
                route(k, n, &out, &mut links);
            }
            2..=5 => {
                let Some(pick) = input.byte() else { break };
                let busy: Vec<usize> = (0..links.len()).filter(|&l| !links[l].is_empty()).collect();
                if busy.is_empty() {
                    continue;
                }
                let link = busy[usize::from(pick) % busy.len()];
                let (from, to) = (link / n, link % n);
                let msg = links[link].pop_front().expect("busy link");
                let accepted = deliver(&mut nodes[to], NodeId(from as u16), msg, &mut out);
                assert!(accepted || tainted, "node {to} rejected {msg:?} from node {from} in a correct run");
                route(to, n, &out, &mut links);
            }
            _ => {
                let (Some(k), Some(f), Some(t), Some(p), Some(arg)) =
                    (input.byte(), input.byte(), input.byte(), input.byte(), input.byte())
                else {
                    break;
                };
                let k = usize::from(k) % n;
                let msg = msg_of(t, page_of(p, pages), arg);
                if deliver(&mut nodes[k], sender_of(f, count), msg, &mut out) {
                    tainted = true;
                    route(k, n, &out, &mut links);
                }
            }
        }
        if !tainted {
            check_coherent(&nodes);
        }
    }

    if !tainted {
        // Every request is eventually answered: deliver everything still in flight, oldest link
        // first, and nothing may be left open anywhere.
        while let Some(link) = links.iter().position(|l| !l.is_empty()) {
            let (from, to) = (link / n, link % n);
            let msg = links[link].pop_front().expect("busy link");
            out.clear();
            let accepted = deliver(&mut nodes[to], NodeId(from as u16), msg, &mut out);
            assert!(accepted, "node {to} rejected {msg:?} from node {from} while draining");
            route(to, n, &out, &mut links);
            check_coherent(&nodes);
        }
        for node in &nodes {
            assert!(node.is_quiescent(), "{} still has a request or transaction open: {node:?}", node.me());
        }
    }
}

/// Hands `msg` to `node`; on rejection checks that nothing changed. Returns whether it was accepted.
fn deliver(node: &mut ScNode, from: NodeId, msg: Msg, out: &mut Vec<Action>) -> bool {
    let before = node.clone();
    match node.handle(from, msg, out) {
        Ok(()) => {
            check_actions(node, Some(msg), out);
            true
        }
        Err(e) => {
            assert!(!e.reason().is_empty());
            assert!(out.is_empty(), "{msg:?} from {from} rejected ({e}) after emitting {out:?}");
            assert!(*node == before, "{msg:?} from {from} rejected ({e}) but changed the node");
            false
        }
    }
}

/// Puts the messages `node` sent on their links.
fn route(node: usize, n: usize, out: &[Action], links: &mut [VecDeque<Msg>]) {
    for action in out {
        if let Action::Send { to, msg } = *action {
            links[node * n + to.index()].push_back(msg);
        }
    }
}
