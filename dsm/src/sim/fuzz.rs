//! The fuzz driver: a protocol fed arbitrary sequences of events decoded from bytes, in the
//! simulated cluster, with every check of the simulation on.
//!
//! Events: local faults (any page, in range or not), deliveries of the messages the nodes really
//! sent (FIFO per pair, any order across pairs; a diff possibly damaged on the way), garbage
//! messages from anyone (as the protocol decodes them, with a page of bytes or a diff), and,
//! where the protocol's decoding has them, application writes, acquires, releases, a
//! protocol-specific local call, and arbitrary diffs checked on their own.
//!
//! For any input: no panic; a rejected message leaves the node and the output untouched; the
//! runtime contract of [`Sim`] holds (no effect for a page outside the space, sends to peers,
//! payload effects only with their payload, protections equal to `access()`...); and
//! `diff::validate` accepts exactly what `diff::apply` accepts, a malformed diff writing nothing.
//! Until some garbage is accepted or a damaged diff dropped (the runtime would drop its sender):
//! every real message is accepted, the protocol's invariants hold after every event, and at the
//! end, once everything in flight is delivered, every node is quiescent and every release
//! reported.

use super::{Sim, Spec};
use crate::protocol::lrc::diff;
use crate::protocol::{Message, Payload};
use crate::{FaultKind, NodeId, PageId};

/// Hands out the input's bytes one at a time; `None` once they run out.
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    /// The input `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input(data)
    }

    /// The next byte, if any.
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

/// A page number from one byte: mostly in range, sometimes just past it, 255 for `u64::MAX`.
pub fn page_of(b: u8, page_count: u64) -> PageId {
    if b == u8::MAX { PageId(u64::MAX) } else { PageId(u64::from(b) % (page_count + 2)) }
}

/// A sender from one byte: mostly a node of the cluster, sometimes one past it, 255 for `u16::MAX`.
pub fn sender_of(b: u8, nodes: u16) -> NodeId {
    if b == u8::MAX { NodeId(u16::MAX) } else { NodeId(u16::from(b) % (nodes + 2)) }
}

/// What an input byte (an event's tag) stands for; the arguments follow it in the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A local fault: node, page; a write if the tag's top bit is set.
    Fault,
    /// An application write: node, page, value (written where the page is writable, else a
    /// write fault).
    Write,
    /// An acquire: node.
    Acquire,
    /// A release: node.
    Release,
    /// The protocol's own local call ([`Fuzzed::special`]): node, page.
    Special,
    /// A delivery: which busy link; with `damage`, a diff on it is damaged on the way (two more
    /// bytes: how and where).
    Deliver {
        /// Whether this delivery damages a diff.
        damage: bool,
    },
    /// A garbage message: receiver, sender, then the message ([`Fuzzed::garbage`]).
    Garbage,
    /// Arbitrary diff bytes, checked on their own: a length, then the bytes.
    Diff,
}

/// What a protocol adds to the fuzz driver: how bytes decode into its cluster and messages.
pub trait Fuzzed: Spec {
    /// Bytes per simulated page.
    const PAGE: usize;

    /// The cluster, from the input's first bytes (`None` if they run out).
    fn cluster(input: &mut Input<'_>) -> Option<Vec<Self>>;

    /// What `tag` stands for.
    fn event(tag: u8) -> Event;

    /// A message from the next bytes, any page (`pages` in the space), with its payload.
    fn garbage(input: &mut Input<'_>, pages: u64) -> Option<(Self::Msg, Option<Vec<u8>>)>;

    /// The protocol's own local call on `page` at `node` ([`Event::Special`]).
    fn special(sim: &mut Sim<Self>, node: usize, page: PageId) {
        let _ = (sim, node, page);
    }
}

/// Runs protocol `P` on the events `data` decodes to (see the module docs).
///
/// # Panics
/// On any violation: that is a bug.
pub fn run<P: Fuzzed>(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(nodes) = P::cluster(&mut input) else {
        return;
    };
    let count = nodes.len() as u16;
    let pages = nodes[0].geometry().page_count();
    let n = usize::from(count);
    let mut sim = Sim::new(nodes, pages as usize, P::PAGE, &vec![0; n]);
    // Some garbage was accepted or a real message was lost: the cluster may be where no correct
    // run goes, so only the checks that hold for any input still apply.
    let mut tainted = false;
    while let Some(tag) = input.byte() {
        let event = P::event(tag);
        if let Event::Garbage | Event::Diff | Event::Deliver { .. } = event {
            garbage_or_delivery(&mut sim, &mut input, tag, event, &mut tainted);
            sim.check_invariants(!tainted);
            continue;
        }
        let Some(k) = input.byte() else { break };
        let k = usize::from(k) % n;
        match event {
            Event::Fault => {
                let Some(p) = input.byte() else { break };
                let kind = if tag & 0x80 != 0 { FaultKind::Write } else { FaultKind::Read };
                sim.fault(k, page_of(p, pages), kind, false);
            }
            Event::Write => {
                let (Some(p), Some(v)) = (input.byte(), input.byte()) else { break };
                let p = usize::from(p) % pages as usize;
                if sim.prot(k, p) == crate::Access::Write {
                    sim.store(k, p, usize::from(v) % P::PAGE, &[v]);
                } else {
                    sim.fault(k, PageId(p as u64), FaultKind::Write, false);
                }
            }
            Event::Acquire => {
                sim.acquire(k);
            }
            Event::Release => {
                sim.release(k);
            }
            _ => {
                let Some(p) = input.byte() else { break };
                P::special(&mut sim, k, page_of(p, pages));
            }
        }
    }
    if !tainted {
        // Everything outstanding completes: deliver everything still in flight, oldest link
        // first; then nothing may be left open anywhere.
        sim.pump();
        assert!(sim.quiescent(), "something is left outstanding: {sim:?}");
    }
}

/// Runs `P` on `inputs` random inputs of `len` bytes (seeded from `seed`): nodes that accept
/// whatever garbage they can and drift into odd states must still keep every promise that holds
/// for any input.
pub fn random_inputs<P: Fuzzed>(seed: u64, inputs: u64, len: usize) {
    for i in 0..inputs {
        let mut rng = super::rng::Rng::new(seed + i);
        let input: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        run::<P>(&input);
    }
}

/// The events that take their arguments differently: garbage, deliveries, lone diffs. Returns
/// false when the input runs out.
fn garbage_or_delivery<P: Fuzzed>(
    sim: &mut Sim<P>,
    input: &mut Input<'_>,
    tag: u8,
    event: Event,
    tainted: &mut bool,
) -> Option<()> {
    let pages = sim.pages() as u64;
    let count = sim.count() as u16;
    match event {
        Event::Garbage => {
            let k = usize::from(input.byte()?) % sim.count();
            let from = sender_of(input.byte()?, count);
            let (msg, payload) = P::garbage(input, pages)?;
            // The runtime validates a diff before the protocol sees the message.
            if let (Payload::Diff, Some(d)) = (msg.payload(), &payload)
                && !check_diff(d, sim.bytes(k, (msg.page().0 % pages) as usize))
            {
                return Some(());
            }
            sim.check_invariants(false);
            *tainted |= sim.offer(k, from, msg, payload);
        }
        Event::Diff => {
            let len = input.byte()?;
            let d: Vec<u8> = (0..len % 24).filter_map(|_| input.byte()).collect();
            check_diff(&d, &vec![tag; P::PAGE]);
        }
        _ => {
            let pick = input.byte()?;
            let busy = sim.busy();
            if busy.is_empty() {
                return Some(());
            }
            let damage = if event == (Event::Deliver { damage: true }) {
                Some((input.byte()?, input.byte()?))
            } else {
                None
            };
            let link = busy[usize::from(pick) % busy.len()];
            let (from, to) = (link / sim.count(), link % sim.count());
            let mut packet = sim.pop(link).expect("a busy link");
            if let (Some((mode, arg)), Some(d), Payload::Diff) =
                (damage, packet.payload.as_mut(), packet.msg.payload())
            {
                let at = usize::from(arg) % (d.len() + 1);
                match mode % 4 {
                    0 => d.truncate(at),
                    1 => d.push(arg),
                    2 if at < d.len() => d[at] ^= 1 << (arg % 8),
                    _ => d.insert(at, arg),
                }
                if !check_diff(d, sim.bytes(to, packet.msg.page().0 as usize)) {
                    // A broken peer: the runtime drops the connection, and this diff never arrives.
                    *tainted = true;
                    return Some(());
                }
            }
            let msg = packet.msg;
            let accepted = sim.offer(to, NodeId(from as u16), msg, packet.payload);
            assert!(accepted || *tainted, "node {to} rejected {msg:?} from node {from} in a correct run");
        }
    }
    Some(())
}

/// Checks a diff the runtime would receive the way the runtime must treat it: `validate` and
/// `apply` agree, a rejected diff changes nothing, an accepted one writes no more bytes than it
/// says. Returns whether it is well formed.
pub fn check_diff(d: &[u8], page: &[u8]) -> bool {
    let validated = diff::validate(d, page.len());
    let mut applied = page.to_vec();
    let result = diff::apply(d, &mut applied);
    assert_eq!(validated, result, "validate and apply disagree on {d:?}");
    match result {
        Ok(summary) => {
            let changed = page.iter().zip(&applied).filter(|(a, b)| a != b).count();
            assert!(changed <= summary.bytes, "{d:?} changed {changed} bytes, says {summary:?}");
            assert!(summary.bytes <= page.len() && summary.runs <= summary.bytes);
            true
        }
        Err(e) => {
            assert_eq!(applied, page, "a malformed diff ({e}) wrote to the page");
            assert!(e.at() <= d.len(), "error offset {} past the diff's {} bytes", e.at(), d.len());
            false
        }
    }
}
