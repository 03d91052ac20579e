//! What the sequentially consistent protocol ([`ScNode`]) adds to the simulation: its invariants
//! (single writer or many readers, every readable copy current, the home's directory covering
//! every copy and exact between transactions), its accesses (a read must return the latest write
//! anywhere), and its fuzz decoding.

use super::fuzz::{Event, Fuzzed, Input, page_of};
use super::{Sim, Spec, Violation};
use crate::protocol::sc::{Msg, ScNode};
use crate::protocol::{Message, Payload};
use crate::{Access, FaultKind, NodeId, PageId};

impl Spec for ScNode {
    /// Every page's bytes: a recalled owner must revoke its own write access before it sends
    /// them, or a local write could slip in and be lost.
    fn final_bytes(_: &Msg) -> bool {
        true
    }

    fn quiescent(&self) -> bool {
        self.is_quiescent()
    }

    fn invariants(sim: &Sim<Self>) -> Result<(), String> {
        single_writer(sim)?;
        copies_current(sim)?;
        directory_covers(sim)?;
        directory_exact(sim)
    }
}

/// Every page has one writer and nobody else, or any number of readers.
pub fn single_writer<P: Spec>(sim: &Sim<P>) -> Result<(), String> {
    single_writer_of(sim, 0..sim.pages())
}

/// [`single_writer`] for `pages` only.
pub(super) fn single_writer_of<P: Spec>(
    sim: &Sim<P>,
    pages: impl Iterator<Item = usize>,
) -> Result<(), String> {
    for p in pages {
        let with = |a| (0..sim.count()).filter(|&k| sim.prot(k, p) == a).collect::<Vec<_>>();
        let (writers, readers) = (with(Access::Write), with(Access::Read));
        if writers.len() > 1 || (writers.len() == 1 && !readers.is_empty()) {
            return Err(format!("page {p}: writable at {writers:?}, readable at {readers:?}"));
        }
    }
    Ok(())
}

/// Every copy a node may read holds the latest write.
pub fn copies_current(sim: &Sim<ScNode>) -> Result<(), String> {
    for p in 0..sim.pages() {
        for k in 0..sim.count() {
            if sim.prot(k, p) != Access::None && sim.bytes(k, p) != sim.latest(p) {
                return Err(format!("node {k} may read a stale copy of page {p}"));
            }
        }
    }
    Ok(())
}

/// The home's directory lists every copy (with at least the access it gives), and the home among
/// the readers of a shared page.
pub fn directory_covers(sim: &Sim<ScNode>) -> Result<(), String> {
    for p in 0..sim.pages() {
        let (page, home) = (PageId(p as u64), sim.home(p));
        let dir = sim.node(home).directory(page).ok_or(format!("the home of {page} has no entry"))?;
        if let crate::protocol::sc::Directory::Shared(readers) = &dir
            && !readers.contains(&NodeId(home as u16))
        {
            return Err(format!("{page}: the home is not among the readers of {dir:?}"));
        }
        for k in 0..sim.count() {
            if sim.prot(k, p) > dir.access_of(NodeId(k as u16)) {
                return Err(format!("node {k} holds {:?} of {page}, directory {dir:?}", sim.prot(k, p)));
            }
        }
    }
    Ok(())
}

/// Between transactions the directory is exact, but for grants on their way and copies dropped
/// unasked whose `Drop` the home has not seen yet.
pub fn directory_exact(sim: &Sim<ScNode>) -> Result<(), String> {
    for p in 0..sim.pages() {
        let (page, home) = (PageId(p as u64), sim.home(p));
        if sim.node(home).in_transaction(page) {
            continue;
        }
        let Some(dir) = sim.node(home).directory(page) else { continue };
        for k in 0..sim.count() {
            let granting = k != home
                && (sim
                    .in_flight(home, k)
                    .any(|pk| matches!(pk.msg, Msg::Grant { page: q, .. } if q == page))
                    || sim.answering(k, page)
                    || sim.in_flight(k, home).any(|pk| matches!(pk.msg, Msg::Drop { page: q } if q == page)));
            if !granting && sim.prot(k, p) != dir.access_of(NodeId(k as u16)) {
                return Err(format!("node {k} holds {:?} of {page}, directory {dir:?}", sim.prot(k, p)));
            }
        }
    }
    Ok(())
}

/// Thread `t` of `node` reads or writes `page` if the protection allows it, else traps (and
/// waits for the page). The page's bytes are one little-endian number: a read must return the
/// latest write anywhere (a stale read is a violation), a write stores the latest plus one.
/// Returns whether the access was performed.
pub fn attempt(sim: &mut Sim<ScNode>, node: usize, t: usize, page: PageId, kind: FaultKind) -> bool {
    if !sim.access(node, t, page, kind, false) {
        return false;
    }
    let p = page.0 as usize;
    let number = |bytes: &[u8]| bytes.iter().rev().fold(0u64, |v, &b| v << 8 | u64::from(b));
    let latest = number(sim.latest(p));
    match kind {
        FaultKind::Read => {
            let saw = number(sim.bytes(node, p));
            if saw != latest {
                sim.fail(Violation::Stale(format!(
                    "node {node} reads {saw} from {page}, the latest is {latest}"
                )));
            }
        }
        FaultKind::Write => {
            let next = (latest + 1).to_le_bytes();
            sim.store(node, p, 0, &next[..sim.page_size()]);
        }
    }
    true
}

/// A message of any kind about `page`: `tag` picks the kind, `access % 3` the access of a grant,
/// `flag` its `data` or a recall's `keep_read`.
pub fn any_msg(tag: u8, page: PageId, access: u8, flag: bool) -> Msg {
    let access = [Access::None, Access::Read, Access::Write][usize::from(access % 3)];
    match tag % 10 {
        0 => Msg::ReadReq { page },
        1 => Msg::WriteReq { page },
        2 => Msg::Grant { page, access, data: flag },
        3 => Msg::Invalidate { page },
        4 => Msg::InvAck { page },
        5 => Msg::Recall { page, keep_read: flag },
        6 => Msg::RecallAck { page },
        7 => Msg::Drop { page },
        8 => Msg::ReadSoon { page, barrier: u64::from(flag) },
        _ => Msg::DropAck { page },
    }
}

/// 1–4 nodes, read-ahead 0–3, 1–3 pages per node (the first two bytes); events: faults (`tag % 8` 0–1),
/// deliveries (2–5), garbage (6–7).
impl Fuzzed for ScNode {
    const PAGE: usize = 8;

    fn cluster(input: &mut Input<'_>) -> Option<Vec<Self>> {
        let (a, b) = (input.byte()?, input.byte()?);
        let count = 1 + u16::from(a % 4);
        let per_node = 1 + u64::from(b % 3);
        let read_ahead = u16::from(a >> 2) % 4;
        Some(
            (0..count).map(|i| ScNode::new(NodeId(i), count, per_node).with_read_ahead(read_ahead)).collect(),
        )
    }

    fn event(tag: u8) -> Event {
        match tag % 8 {
            0 | 1 => Event::Fault,
            2..=5 => Event::Deliver { damage: false },
            _ => Event::Garbage,
        }
    }

    fn garbage(input: &mut Input<'_>, pages: u64) -> Option<(Msg, Option<Vec<u8>>)> {
        let (t, p, arg) = (input.byte()?, input.byte()?, input.byte()?);
        let msg = any_msg(t, page_of(p, pages), arg, arg & 0x80 != 0);
        let payload = (msg.payload() == Payload::Page).then(|| vec![arg; Self::PAGE]);
        Some((msg, payload))
    }
}
