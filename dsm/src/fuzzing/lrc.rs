//! The release-consistent protocol's harness: [`lrc_protocol`].

use std::collections::VecDeque;

use super::{Input, page_of, sender_of};
use crate::protocol::lrc::{Action, LrcConfig, LrcNode, Msg, Payload, diff};
use crate::protocol::sc;
use crate::{Access, FaultKind, NodeId, PageId};

/// Bytes per simulated page: small, so that diffs of a few bytes take both encodings.
const PAGE: usize = 16;

/// A message on a link, with its payload (the page's bytes or a diff).
struct Packet {
    msg: Msg,
    payload: Option<Vec<u8>>,
}

/// The cluster as the runtime holds it: per node and page the bytes, the twin and the protection
/// (changed by `Protect` only), the links and the releases.
struct Cluster {
    nodes: Vec<LrcNode>,
    links: Vec<VecDeque<Packet>>,
    mem: Vec<Vec<[u8; PAGE]>>,
    twins: Vec<Vec<Option<[u8; PAGE]>>>,
    prot: Vec<Vec<Access>>,
    /// Per node: releases called, releases reported.
    releases: Vec<(u64, u64)>,
    /// Some garbage was accepted or a real message was lost: the cluster may be where no correct
    /// run goes, so only the checks that hold for any input still apply.
    tainted: bool,
}

fn msg_of(tag: u8, page: PageId, arg: u8, seq: u8) -> Msg {
    let seq = u64::from(seq % 8);
    let count = u16::from(arg % 4) + if arg & 0x80 != 0 { 62 } else { 0 };
    match tag % 12 {
        0 => Msg::Fetch { page, count },
        1 => Msg::Page { page },
        2 => Msg::ScPage { page },
        3 => Msg::Diff { page, seq },
        4 => Msg::DiffAck { page, seq },
        5 => Msg::Notice { page },
        6 => Msg::NoticeAck { page },
        7 => Msg::MakeSc { page },
        8 => Msg::Convert { page },
        9 => Msg::ConvertAck { page },
        10 => Msg::Sc(sc::Msg::ReadReq { page }),
        _ => {
            let access = [Access::None, Access::Read, Access::Write][usize::from(arg % 3)];
            Msg::Sc(match seq % 6 {
                0 => sc::Msg::WriteReq { page },
                1 => sc::Msg::Grant { page, access, data: arg & 0x40 != 0 },
                2 => sc::Msg::Invalidate { page },
                3 => sc::Msg::InvAck { page },
                4 => sc::Msg::Recall { page, keep_read: arg & 0x40 != 0 },
                _ => sc::Msg::RecallAck { page },
            })
        }
    }
}

/// Checks a diff the runtime would receive the way the runtime must treat it: `validate` and
/// `apply` agree, a rejected diff changes nothing, an accepted one writes no more bytes than it
/// says. Returns whether it is well formed.
fn check_diff(d: &[u8], page: &[u8; PAGE]) -> bool {
    let validated = diff::validate(d, PAGE);
    let mut applied = *page;
    let result = diff::apply(d, &mut applied);
    assert_eq!(validated, result, "validate and apply disagree on {d:?}");
    match result {
        Ok(summary) => {
            let changed = page.iter().zip(&applied).filter(|(a, b)| a != b).count();
            assert!(changed <= summary.bytes, "{d:?} changed {changed} bytes, says {summary:?}");
            assert!(summary.bytes <= PAGE && summary.runs <= summary.bytes);
            true
        }
        Err(e) => {
            assert_eq!(&applied, page, "a malformed diff ({e}) wrote to the page");
            assert!(e.at() <= d.len(), "error offset {} past the diff's {} bytes", e.at(), d.len());
            false
        }
    }
}

impl Cluster {
    fn count(&self) -> usize {
        self.nodes.len()
    }

    fn pages(&self) -> u64 {
        self.nodes[0].page_count()
    }

    fn home(&self, page: PageId) -> usize {
        self.nodes[0].home_of(page).index()
    }

    /// Carries out what `node` emitted, checking the protocol's side of the runtime contract.
    /// `handling` is the message being handled, with its payload; `None` for a local call.
    fn exec(&mut self, node: usize, out: &[Action], handling: Option<(Msg, Option<&[u8]>)>) {
        let me = self.nodes[node].me();
        let count = self.pages();
        for (at, &action) in out.iter().enumerate() {
            let page = match action {
                Action::Send { msg, .. } => msg.page(),
                Action::Install { page }
                | Action::Twin { page }
                | Action::ApplyDiff { page }
                | Action::Protect { page, .. }
                | Action::Wake { page } => page,
                Action::Released { .. } => PageId(0),
            };
            assert!(page.0 < count, "{me}: {action:?} for a page outside the {count} pages");
            let pg = page.0 as usize;
            match action {
                Action::Send { to, msg } => {
                    assert!(to != me && to.0 < self.nodes[node].nodes(), "{me}: {action:?} to a non-peer");
                    let payload = match msg.payload() {
                        Payload::None => None,
                        Payload::Page => {
                            if let Msg::Sc(_) = msg {
                                assert_ne!(
                                    self.prot[node][pg],
                                    Access::Write,
                                    "{me}: {msg:?} while writable"
                                );
                            }
                            Some(self.mem[node][pg].to_vec())
                        }
                        Payload::Diff => {
                            assert_ne!(
                                self.prot[node][pg],
                                Access::Write,
                                "{me}: diff of {page} while writable"
                            );
                            let twin = self.twins[node][pg]
                                .take()
                                .unwrap_or_else(|| panic!("{me}: diff of {page} without a twin"));
                            let mut d = Vec::new();
                            diff::encode(&twin, &self.mem[node][pg], &mut d);
                            let mut check = twin;
                            assert!(check_diff(&d, &twin), "{me}: encode made a malformed diff");
                            diff::apply(&d, &mut check).expect("valid");
                            assert_eq!(check, self.mem[node][pg], "{me}: the diff does not rebuild the page");
                            Some(d)
                        }
                    };
                    let link = node * self.count() + to.index();
                    self.links[link].push_back(Packet { msg, payload });
                }
                Action::Install { page } => {
                    let (msg, bytes) = handling.unwrap_or_else(|| panic!("{me}: Install from a local call"));
                    assert_eq!(msg.payload(), Payload::Page, "{me}: Install while handling {msg:?}");
                    assert_eq!(msg.page(), page, "{me}: Install of another page than {msg:?}'s");
                    assert_eq!(self.prot[node][pg], Access::None, "{me}: Install of {page} while accessible");
                    let opens = out[at..].iter().any(|a| {
                        matches!(*a, Action::Protect { page: q, access } if q == page && access >= Access::Read)
                    });
                    assert!(
                        opens || self.home(page) == node,
                        "{me}: Install of {page}, never opened: {out:?}"
                    );
                    let bytes = bytes.expect("a Page payload comes with bytes");
                    self.mem[node][pg].copy_from_slice(bytes);
                }
                Action::Twin { page } => {
                    assert_ne!(self.home(page), node, "{me}: twin of its own {page}");
                    assert!(self.twins[node][pg].is_none(), "{me}: second twin of {page}");
                    assert!(self.prot[node][pg] <= Access::Read, "{me}: twin of {page} while writable");
                    self.twins[node][pg] = Some(self.mem[node][pg]);
                }
                Action::ApplyDiff { page } => {
                    let (msg, d) = handling.unwrap_or_else(|| panic!("{me}: ApplyDiff from a local call"));
                    assert!(
                        matches!(msg, Msg::Diff { .. }) && msg.page() == page,
                        "{me}: ApplyDiff for {msg:?}"
                    );
                    assert_eq!(self.home(page), node, "{me}: ApplyDiff of {page} away from its home");
                    let d = d.expect("a Diff payload comes with a diff");
                    diff::apply(d, &mut self.mem[node][pg]).expect("the runtime validated the diff");
                }
                Action::Protect { access, .. } => self.prot[node][pg] = access,
                Action::Wake { .. } => {}
                Action::Released { release } => {
                    let (called, reported) = self.releases[node];
                    assert!(
                        release.0 == reported && reported < called,
                        "{me}: {release:?} out of order or twice"
                    );
                    self.releases[node].1 += 1;
                }
            }
        }
        for pg in 0..count {
            let page = PageId(pg);
            let access = self.nodes[node].access(page);
            assert_eq!(
                self.prot[node][pg as usize], access,
                "{me}: protection of {page} differs from access()"
            );
        }
    }

    /// Hands `msg` (with `payload`) from `from` to `node`. On rejection checks that nothing
    /// changed. Returns whether it was accepted.
    fn deliver(&mut self, node: usize, from: NodeId, msg: Msg, payload: Option<&[u8]>) -> bool {
        let before = self.nodes[node].clone();
        let mut out = Vec::new();
        match self.nodes[node].handle(from, msg, &mut out) {
            Ok(()) => {
                self.exec(node, &out, Some((msg, payload)));
                true
            }
            Err(e) => {
                assert!(!e.reason().is_empty());
                assert!(out.is_empty(), "{msg:?} from {from} rejected ({e}) after emitting {out:?}");
                assert!(
                    self.nodes[node] == before,
                    "{msg:?} from {from} rejected ({e}) but changed the node"
                );
                false
            }
        }
    }

    /// Delivers the oldest message of `link`; `corrupt` (mode, argument) damages a diff on the
    /// way. A diff damaged beyond validity is dropped, as the runtime would drop its sender.
    fn deliver_link(&mut self, link: usize, corrupt: Option<(u8, u8)>) {
        let n = self.count();
        let (from, to) = (link / n, link % n);
        let Packet { msg, mut payload } = self.links[link].pop_front().expect("busy link");
        if let (Some((mode, arg)), Some(d), Payload::Diff) = (corrupt, payload.as_mut(), msg.payload()) {
            let at = usize::from(arg) % (d.len() + 1);
            match mode % 4 {
                0 => d.truncate(at),
                1 => d.push(arg),
                2 if at < d.len() => d[at] ^= 1 << (arg % 8),
                _ => d.insert(at, arg),
            }
            let home = self.mem[to][msg.page().0 as usize];
            if !check_diff(d, &home) {
                // A broken peer: the runtime drops the connection, and this diff never arrives.
                self.tainted = true;
                return;
            }
        }
        let accepted = self.deliver(to, NodeId(from as u16), msg, payload.as_deref());
        assert!(accepted || self.tainted, "node {to} rejected {msg:?} from node {from} in a correct run");
    }

    /// The invariants of a cluster that has only seen correct messages: twins exactly on writable
    /// release-consistent copies, and SC pages single-writer.
    fn check_coherent(&self) {
        for pg in 0..self.pages() {
            let page = PageId(pg);
            let i = pg as usize;
            for k in 0..self.count() {
                let rc_copy = k != self.home(page) && !self.nodes[k].is_sc(page);
                let writable_copy = rc_copy && self.prot[k][i] == Access::Write;
                assert_eq!(self.twins[k][i].is_some(), writable_copy, "node {k}: twin and access of {page}");
            }
            if self.nodes[self.home(page)].is_sc(page) {
                let writers = (0..self.count()).filter(|&k| self.prot[k][i] == Access::Write).count();
                let readers = (0..self.count()).filter(|&k| self.prot[k][i] == Access::Read).count();
                assert!(
                    writers == 0 || (writers == 1 && readers == 0),
                    "SC {page}: {writers} writers, {readers} readers"
                );
            }
        }
    }
}

/// The release-consistent protocol fed arbitrary sequences of events decoded from `data`: local
/// faults (any page, in range or not), application writes (where the protection allows; a fault
/// otherwise), acquires, releases, `set_sc`, deliveries of the messages the nodes really sent
/// (FIFO per pair, any order across pairs; a diff possibly damaged on the way), garbage messages
/// from anyone (`(from, Msg)` with any page, sequence number, count and inner SC message, with a
/// page of bytes or an arbitrary diff as payload), and arbitrary diffs checked on their own.
///
/// The runtime is simulated with real bytes (16-byte pages), twins, diffs from [`diff::encode`]
/// and protections changed only by `Protect`. The first three bytes pick the cluster (1–4 nodes,
/// 1–3 pages per node, prefetch 0–3, maybe an SC page from the start). Checks for any input: no
/// panic; a rejected message leaves the node and the output untouched; no action names a page
/// outside `page_count()`; sends go to peers; `Install` only while handling a message with a page
/// payload, for that page, on a closed page, before the `Protect` that opens it (but at the home);
/// `ApplyDiff` only at the home while handling a `Diff` of that page; a `Twin` only on an at most
/// readable page without one; a diff sent only with a twin, while not writable, and well formed;
/// `Released` in order, once per release; protections always equal `access()`; and a diff is
/// accepted by `diff::validate` exactly when `diff::apply` accepts it, a malformed one writing
/// nothing. Until some garbage is accepted or a damaged diff dropped: every real message is
/// accepted, twins exist exactly for writable copies, SC pages are single-writer, and at the end,
/// once every message in flight is delivered, no node has anything outstanding and every release
/// has been reported.
///
/// # Panics
/// On any violation: that is a bug.
pub fn lrc_protocol(data: &[u8]) {
    let mut input = Input(data);
    let (Some(a), Some(b), Some(c)) = (input.byte(), input.byte(), input.byte()) else {
        return;
    };
    let count = 1 + u16::from(a % 4);
    let per_node = 1 + u64::from(b % 3);
    let pages = u64::from(count) * per_node;
    let mut config = LrcConfig::default().with_prefetch(u16::from(c & 3));
    if c & 4 != 0 {
        let first = u64::from(c >> 3) % pages;
        config = config.with_sc_pages(first..first + 1);
    }
    let n = usize::from(count);
    let nodes: Vec<LrcNode> =
        (0..count).map(|i| LrcNode::new(NodeId(i), count, per_node, config.clone())).collect();
    let mut mem = vec![vec![[0xEE; PAGE]; pages as usize]; n];
    let mut prot = vec![vec![Access::None; pages as usize]; n];
    for pg in 0..pages {
        let home = nodes[0].home_of(PageId(pg)).index();
        mem[home][pg as usize] = [0; PAGE];
        prot[home][pg as usize] = nodes[home].access(PageId(pg));
    }
    let mut cluster = Cluster {
        nodes,
        links: (0..n * n).map(|_| VecDeque::new()).collect(),
        mem,
        twins: vec![vec![None; pages as usize]; n],
        prot,
        releases: vec![(0, 0); n],
        tainted: false,
    };

    while let Some(tag) = input.byte() {
        let mut out = Vec::new();
        match tag % 12 {
            0 | 1 => {
                let (Some(k), Some(p)) = (input.byte(), input.byte()) else { break };
                let k = usize::from(k) % n;
                let page = page_of(p, pages);
                let kind = if tag & 0x80 != 0 { FaultKind::Write } else { FaultKind::Read };
                cluster.nodes[k].fault(page, kind, &mut out);
                if page.0 >= pages {
                    assert!(out.is_empty(), "fault on out-of-range {page} emitted {out:?}");
                }
                cluster.exec(k, &out, None);
            }
            2 => {
                let (Some(k), Some(p), Some(v)) = (input.byte(), input.byte(), input.byte()) else { break };
                let k = usize::from(k) % n;
                let pg = u64::from(p) % pages;
                if cluster.prot[k][pg as usize] == Access::Write {
                    cluster.mem[k][pg as usize][usize::from(v) % PAGE] = v;
                } else {
                    cluster.nodes[k].fault(PageId(pg), FaultKind::Write, &mut out);
                    cluster.exec(k, &out, None);
                }
            }
            3 => {
                let Some(k) = input.byte() else { break };
                let k = usize::from(k) % n;
                cluster.nodes[k].acquire(&mut out);
                cluster.exec(k, &out, None);
            }
            4 => {
                let Some(k) = input.byte() else { break };
                let k = usize::from(k) % n;
                let id = cluster.nodes[k].release(&mut out);
                assert_eq!(id.0, cluster.releases[k].0, "release ids are handed out in order");
                cluster.releases[k].0 += 1;
                cluster.exec(k, &out, None);
            }
            5 => {
                let (Some(k), Some(p)) = (input.byte(), input.byte()) else { break };
                let k = usize::from(k) % n;
                let page = page_of(p, pages);
                cluster.nodes[k].set_sc(page, &mut out);
                if page.0 >= pages {
                    assert!(out.is_empty(), "set_sc of out-of-range {page} emitted {out:?}");
                }
                cluster.exec(k, &out, None);
            }
            6..=9 => {
                let Some(pick) = input.byte() else { break };
                let busy: Vec<usize> = (0..n * n).filter(|&l| !cluster.links[l].is_empty()).collect();
                if busy.is_empty() {
                    continue;
                }
                let corrupt = if tag & 0x80 != 0 {
                    let (Some(mode), Some(arg)) = (input.byte(), input.byte()) else { break };
                    Some((mode, arg))
                } else {
                    None
                };
                cluster.deliver_link(busy[usize::from(pick) % busy.len()], corrupt);
            }
            10 => {
                let (Some(k), Some(f), Some(t), Some(p), Some(arg), Some(seq)) =
                    (input.byte(), input.byte(), input.byte(), input.byte(), input.byte(), input.byte())
                else {
                    break;
                };
                let k = usize::from(k) % n;
                let msg = msg_of(t, page_of(p, pages), arg, seq);
                let payload = match msg.payload() {
                    Payload::None => None,
                    Payload::Page => Some(vec![arg; PAGE]),
                    Payload::Diff => {
                        // The runtime validates a diff before the protocol sees the message.
                        let len = usize::from(seq % 8);
                        let d: Vec<u8> = (0..len).filter_map(|_| input.byte()).collect();
                        let home = cluster.mem[k][(msg.page().0 % pages) as usize];
                        if !check_diff(&d, &home) {
                            continue;
                        }
                        Some(d)
                    }
                };
                if cluster.deliver(k, sender_of(f, count), msg, payload.as_deref()) {
                    cluster.tainted = true;
                }
            }
            _ => {
                // An arbitrary diff on its own.
                let Some(len) = input.byte() else { break };
                let d: Vec<u8> = (0..len % 24).filter_map(|_| input.byte()).collect();
                check_diff(&d, &[tag; PAGE]);
            }
        }
        if !cluster.tainted {
            cluster.check_coherent();
        }
    }

    if !cluster.tainted {
        // Everything outstanding completes: deliver everything still in flight, oldest link
        // first; then nothing may be left open anywhere.
        let mut steps = 0;
        while let Some(link) = cluster.links.iter().position(|l| !l.is_empty()) {
            steps += 1;
            assert!(steps < 100_000, "messages never stop");
            cluster.deliver_link(link, None);
            cluster.check_coherent();
        }
        for (k, node) in cluster.nodes.iter().enumerate() {
            assert!(node.is_quiescent(), "{} still has something outstanding: {node:?}", node.me());
            let (called, reported) = cluster.releases[k];
            assert_eq!(called, reported, "{}: {} of {called} releases reported", node.me(), reported);
        }
    }
}
