//! Exhaustive model check of the protocol with [stateright](https://www.stateright.rs), in the
//! simulated cluster ([`crate::sim`], [`crate::sim::model`]).
//!
//! The model runs the very [`ScNode`] code the runtime runs, in the simulation that plays the
//! runtime around it (FIFO links per pair in any interleaving, page bytes, protections changed by
//! `Protect` only, the runtime contract checked on every effect). Application threads each perform
//! a bounded number of reads and writes of any page: an access either succeeds at once (the
//! protection allows it) or faults, waits for the `Wake` and, as a separate step, retries.
//!
//! Every interleaving of those steps is explored breadth-first, and in every reachable state the
//! checker evaluates the properties every protocol shares (no peer ever rejects a message, the
//! runtime contract holds, no deadlock, terminal states are quiescent, from every state a fair
//! schedule completes everything outstanding) and this protocol's: single writer or many readers,
//! reads return the latest write, every accessible copy is current, the home's directory covers
//! every copy and is exact between transactions.
//!
//! The second half plants known mistakes in the same code ([`Bug`]) and expects counterexamples.

use stateright::Property;

use crate::protocol::Coherence;

use super::{Access, Bug, FaultKind, NodeId, PageId, ScNode};
use crate::sim::model::{Explore, Scenario, Step, World, check, not, shortest_counterexample};
use crate::sim::sc::{attempt, copies_current, directory_covers, directory_exact, single_writer};
use crate::sim::{DirectMistake, Sim, Violation, Wait};

/// The size of a model: how many nodes, pages and accesses.
#[derive(Clone, Debug)]
struct Bounds {
    nodes: u16,
    /// Pages simulated: pages `0..pages`, homed one per node from node 0 (`pages <= nodes`).
    pages: u64,
    /// Application threads, by node.
    threads: Vec<usize>,
    /// Accesses each thread performs, by node (each a read or a write of any page).
    ops: Vec<u8>,
    /// A mistake planted in every node.
    bug: Option<Bug>,
    /// A mistake planted in the runtime's side of direct reads.
    direct_mistake: Option<DirectMistake>,
    /// Reads of pages homed elsewhere may also be direct reads (`dsm::fault::direct`): the
    /// request goes without the protocol, the grant comes back apart from the ordinary messages,
    /// and what concerns the page waits meanwhile.
    direct: bool,
    /// How many times each node may drop its revoked-before read copies (a barrier, see
    /// [`ScNode::drop_copies`]).
    drops: u8,
    /// Nodes also ask for copies ahead at those barriers: every revoked-before copy they do not
    /// hold ([`ScNode::with_prefetch`], predicted or not), and a thread may hurry one.
    prefetch: bool,
}

impl Bounds {
    /// One page (homed at node 0), one node per entry of `threads` (threads per node) and `ops`
    /// (accesses per thread, by node); no direct reads, drops or prefetches, no planted mistake.
    fn one_page(threads: Vec<usize>, ops: Vec<u8>) -> Bounds {
        Bounds {
            nodes: threads.len() as u16,
            pages: 1,
            threads,
            ops,
            bug: None,
            direct: false,
            direct_mistake: None,
            drops: 0,
            prefetch: false,
        }
    }
}

/// A thread's step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    /// An idle thread starts an access.
    Access { node: usize, thread: usize, page: u64, kind: FaultKind },
    /// A woken thread retries its access.
    Retry { node: usize, thread: usize },
    /// An idle thread reads a page homed elsewhere, directly if it may (else the ordinary way).
    Direct { node: usize, thread: usize, page: u64 },
    /// The answer to a direct read arrives (`i`-th of those on their way): the thread opens the
    /// page and reads; then what its node held for the page is handled.
    Answer { i: usize },
    /// A node drops its read copies that writers revoked before (as before a barrier).
    Drop { node: usize },
    /// A thread of `node` needs a page the node asked for ahead (it traps on it; the first such
    /// page).
    Hurry { node: usize },
}

/// `ops[node][t]`: accesses thread `t` of `node` may still start; `reading`: the threads in a
/// direct read, `(node, thread, page)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OpsLeft {
    ops: Vec<Vec<u8>>,
    reading: Vec<(usize, usize, u64)>,
    /// Drops each node may still make.
    drops: Vec<u8>,
}

impl Scenario for Bounds {
    type Node = ScNode;
    type App = OpsLeft;
    type Op = Op;

    fn init(&self) -> World<ScNode, OpsLeft> {
        assert!(self.pages <= u64::from(self.nodes), "one page per node at most");
        assert!(self.threads.len() == self.ops.len(), "threads and ops are given per node");
        let mut nodes: Vec<ScNode> = (0..self.nodes)
            .map(|i| {
                let node = ScNode::new(NodeId(i), self.nodes, 1).with_drops(self.drops > 0);
                if self.prefetch { node.prefetch_every_candidate() } else { node }
            })
            .collect();
        if let Some(bug) = self.bug {
            nodes.iter_mut().for_each(|node| node.inject(bug));
        }
        // Pages of one byte: a version number.
        let mut sim = Sim::new(nodes, self.pages as usize, 1, &self.threads);
        if let Some(m) = self.direct_mistake {
            sim.plant_direct_mistake(m);
        }
        let ops = self.ops.iter().zip(&self.threads).map(|(&ops, &t)| vec![ops; t]).collect();
        let drops = vec![self.drops; usize::from(self.nodes)];
        World { sim, app: OpsLeft { ops, reading: Vec::new(), drops } }
    }

    fn ops(&self, w: &World<ScNode, OpsLeft>, out: &mut Vec<Op>) {
        for node in 0..w.sim.count() {
            for thread in 0..w.sim.threads(node) {
                let reading = w.app.reading.iter().any(|&(k, t, _)| (k, t) == (node, thread));
                match w.sim.wait(node, thread) {
                    Wait::Run if w.app.ops[node][thread] > 0 && !reading => {
                        for page in 0..self.pages {
                            for kind in [FaultKind::Read, FaultKind::Write] {
                                out.push(Op::Access { node, thread, page, kind });
                            }
                            if self.direct && w.sim.home(page as usize) != node {
                                out.push(Op::Direct { node, thread, page });
                            }
                        }
                    }
                    Wait::Woken(..) => out.push(Op::Retry { node, thread }),
                    _ => {}
                }
            }
        }
        out.extend((0..w.sim.direct_answers().count()).map(|i| Op::Answer { i }));
        for node in 0..w.sim.count() {
            let holds = |p: &PageId| w.sim.node(node).access(*p) == Access::Read;
            let useful = self.prefetch || w.sim.node(node).drop_candidates().iter().any(holds);
            if w.app.drops[node] > 0 && useful {
                out.push(Op::Drop { node });
            }
            if !w.sim.node(node).asked_soon().is_empty() {
                out.push(Op::Hurry { node });
            }
        }
    }

    fn run(&self, w: &mut World<ScNode, OpsLeft>, op: Op) {
        match op {
            Op::Access { node, thread, page, kind } => {
                w.app.ops[node][thread] -= 1;
                attempt(&mut w.sim, node, thread, PageId(page), kind);
            }
            Op::Direct { node, thread, page } => {
                w.app.ops[node][thread] -= 1;
                // The handler runs only for a page closed to reads; it reads directly when the
                // page's state allows, else it takes the ordinary way.
                let open = w.sim.prot(node, page as usize) >= Access::Read;
                if open || !w.sim.direct_read(node, PageId(page)) {
                    attempt(&mut w.sim, node, thread, PageId(page), FaultKind::Read);
                } else {
                    w.app.reading.push((node, thread, page));
                }
            }
            Op::Answer { i } => {
                let Some((node, page)) = w.sim.direct_answers().nth(i) else { return };
                w.sim.direct_answer(i);
                // The reading thread returns from the handler and reads at once, before anything
                // its node held for the page (an invalidation) is handled.
                let readers: Vec<usize> =
                    w.app.reading.iter().filter(|r| (r.0, r.2) == (node, page.0)).map(|r| r.1).collect();
                w.app.reading.retain(|r| (r.0, r.2) != (node, page.0));
                for thread in readers {
                    attempt(&mut w.sim, node, thread, page, FaultKind::Read);
                }
                w.sim.release_held(node, page);
            }
            Op::Retry { node, thread } => {
                if let Wait::Woken(page, kind) = w.sim.wait(node, thread) {
                    attempt(&mut w.sim, node, thread, page, kind);
                }
            }
            Op::Drop { node } => {
                w.app.drops[node] -= 1;
                w.sim.arrive(node);
            }
            Op::Hurry { node } => {
                if let Some(&page) = w.sim.node(node).asked_soon().first() {
                    w.sim.fault(node, page, FaultKind::Read, false);
                }
            }
        }
    }

    fn retry(&self, w: &World<ScNode, OpsLeft>) -> Option<Op> {
        (0..w.sim.count())
            .find_map(|node| {
                let woken = |&t: &usize| matches!(w.sim.wait(node, t), Wait::Woken(..));
                (0..w.sim.threads(node)).find(woken).map(|thread| Op::Retry { node, thread })
            })
            .or_else(|| w.sim.direct_answers().next().map(|_| Op::Answer { i: 0 }))
            .or_else(|| {
                (0..w.sim.count())
                    .find(|&node| !w.sim.node(node).asked_soon().is_empty())
                    .map(|node| Op::Hurry { node })
            })
    }

    fn done(&self, w: &World<ScNode, OpsLeft>) -> bool {
        let idle = (0..w.sim.count()).all(|k| (0..w.sim.threads(k)).all(|t| w.sim.wait(k, t) == Wait::Run));
        idle && w.app.reading.is_empty() && w.app.ops.iter().flatten().all(|&left| left == 0)
    }

    fn properties(&self) -> Vec<Property<Explore<Self>>> {
        type W = World<ScNode, OpsLeft>;
        vec![
            Property::always("single writer or many readers", |_, w: &W| single_writer(&w.sim).is_ok()),
            Property::always("reads return the latest write", |_, w: &W| {
                not(w, |v| matches!(v, Violation::Stale(_)))
            }),
            Property::always("every accessible copy is current", |_, w: &W| copies_current(&w.sim).is_ok()),
            Property::always("the directory covers every copy", |_, w: &W| directory_covers(&w.sim).is_ok()),
            Property::always("the directory is exact between transactions", |_, w: &W| {
                directory_exact(&w.sim).is_ok()
            }),
            // Not vacuous: the interesting situations are reached.
            Property::sometimes("a page is shared by every node", |_, w: &W| {
                (0..w.sim.pages()).any(|i| (0..w.sim.count()).all(|k| w.sim.prot(k, i) == Access::Read))
            }),
            Property::sometimes("a request waits behind a transaction", |_, w: &W| {
                (0..w.sim.pages()).any(|i| w.sim.node(w.sim.home(i)).queued(PageId(i as u64)) > 0)
            }),
            Property::sometimes("a writable page is away from its home", |_, w: &W| {
                (0..w.sim.pages()).any(|i| {
                    (0..w.sim.count()).any(|k| k != w.sim.home(i) && w.sim.prot(k, i) == Access::Write)
                })
            }),
            Property::sometimes("all accesses done", |m: &Explore<Self>, w: &W| {
                m.0.done(w) && w.sim.quiescent()
            }),
            Property::sometimes("a message waits for a direct read", |_, w: &W| w.sim.held() > 0),
            Property::sometimes("a copy asked for ahead waits for its home's barrier", |_, w: &W| {
                (0..w.sim.count()).any(|k| w.sim.node(k).waits_for_arrival())
            }),
            Property::sometimes("a hurry crosses the answer to a copy asked for ahead", |_, w: &W| {
                (0..w.sim.count()).any(|k| {
                    (0..w.sim.count()).any(|h| {
                        w.sim.in_flight(k, h).any(|pk| matches!(pk.msg, super::Msg::ReadReq { .. }))
                            && w.sim
                                .in_flight(h, k)
                                .any(|pk| matches!(pk.msg, super::Msg::Grant { access: Access::Read, .. }))
                    })
                })
            }),
            Property::sometimes("a dropped copy crosses an invalidation", |_, w: &W| {
                (0..w.sim.count()).any(|k| {
                    (0..w.sim.count()).any(|h| {
                        w.sim.in_flight(k, h).any(|pk| matches!(pk.msg, super::Msg::Drop { .. }))
                            && w.sim.in_flight(h, k).any(|pk| matches!(pk.msg, super::Msg::Invalidate { .. }))
                    })
                })
            }),
        ]
    }
}

/// The `sometimes` properties: every model without a planted bug reaches them all.
const REACHED: [&str; 4] = [
    "a page is shared by every node",
    "a request waits behind a transaction",
    "a writable page is away from its home",
    "all accesses done",
];

/// 3 nodes, 2 pages (homed at nodes 0 and 1; node 2 is home of neither), one thread per node;
/// nodes 0 and 1 make two accesses, node 2 one. Sized for a debug build: `larger_bounds` goes
/// further in release.
#[test]
fn three_nodes_two_pages() {
    let bounds = Bounds {
        nodes: 3,
        pages: 2,
        threads: vec![1, 1, 1],
        ops: vec![2, 2, 1],
        bug: None,
        direct: false,
        direct_mistake: None,
        drops: 0,
        prefetch: false,
    };
    check("three_nodes_two_pages", bounds, 2).assert_holds(&REACHED);
}

/// Two threads on the node that is home of no page, so a second fault on a page with a request
/// outstanding (which sends nothing and waits for the first request's wake-up) is explored too.
#[test]
fn two_threads_on_a_node() {
    let bounds = Bounds {
        nodes: 3,
        pages: 2,
        threads: vec![1, 1, 2],
        ops: vec![1, 1, 1],
        bug: None,
        direct: false,
        direct_mistake: None,
        drops: 0,
        prefetch: false,
    };
    check("two_threads_on_a_node", bounds, 2).assert_holds(&REACHED);
}

/// Direct reads beside ordinary accesses: a direct read's grant overtaking, or overtaken by, the
/// home's ordinary messages; an invalidation or another thread's fault waiting at the reader until
/// its direct read ends; reads of pages whose direct read raced a writer.
#[test]
fn direct_reads() {
    let bounds = Bounds {
        nodes: 3,
        pages: 2,
        threads: vec![1, 1, 1],
        ops: vec![2, 1, 1],
        bug: None,
        direct: true,
        direct_mistake: None,
        drops: 0,
        prefetch: false,
    };
    let mut reached = REACHED.to_vec();
    reached.push("a message waits for a direct read");
    check("direct_reads", bounds, 2).assert_holds(&reached);
}

/// Two threads on a node that reads directly: the second thread's fault on the page waits for the
/// first thread's direct read.
#[test]
fn direct_reads_two_threads() {
    let bounds = Bounds {
        nodes: 2,
        pages: 2,
        threads: vec![1, 2],
        ops: vec![2, 1],
        bug: None,
        direct: true,
        direct_mistake: None,
        drops: 0,
        prefetch: false,
    };
    let reached =
        ["a request waits behind a transaction", "all accesses done", "a message waits for a direct read"];
    check("direct_reads_two_threads", bounds, 2).assert_holds(&reached);
}

/// Parses `SC_MODEL`, e.g. `pages=2 threads=1,1,2 ops=2,2,2` (the node count is the length of
/// the lists).
fn bounds_from_env() -> Option<Bounds> {
    let spec = std::env::var("SC_MODEL").ok()?;
    let list =
        |v: &str| -> Vec<usize> { v.split(',').map(|x| x.trim().parse().expect("a number")).collect() };
    let mut b = Bounds {
        nodes: 3,
        pages: 2,
        threads: vec![1; 3],
        ops: vec![2; 3],
        bug: None,
        direct: false,
        direct_mistake: None,
        drops: 0,
        prefetch: false,
    };
    for part in spec.split_whitespace() {
        match part.split_once('=') {
            Some(("pages", v)) => b.pages = v.parse().expect("pages=N"),
            Some(("threads", v)) => b.threads = list(v),
            Some(("ops", v)) => b.ops = list(v).into_iter().map(|x| x as u8).collect(),
            Some(("direct", v)) => b.direct = v == "1",
            _ => panic!("SC_MODEL: cannot read {part:?}"),
        }
    }
    b.nodes = b.ops.len() as u16;
    if b.threads.len() != b.ops.len() {
        b.threads = vec![b.threads[0]; b.ops.len()];
    }
    Some(b)
}

/// A larger bound: two accesses on every node (or whatever `SC_MODEL` says). Run with
/// `cargo test --release -p dsm --lib -- --ignored larger_bounds --nocapture`.
#[test]
#[ignore = "20 s and 0.6 GB in release, minutes in a debug build"]
fn larger_bounds() {
    let bounds = bounds_from_env().unwrap_or(Bounds {
        nodes: 3,
        pages: 2,
        threads: vec![1, 1, 1],
        ops: vec![2, 2, 2],
        bug: None,
        direct: false,
        direct_mistake: None,
        drops: 0,
        prefetch: false,
    });
    check("larger_bounds", bounds, 2).assert_holds(&REACHED);
}

/// One access on each of three nodes, one page, with `bug` planted.
fn one_page(bug: Bug) -> Bounds {
    Bounds {
        nodes: 3,
        pages: 1,
        threads: vec![1, 1, 1],
        ops: vec![1, 1, 1],
        bug: Some(bug),
        direct: false,
        direct_mistake: None,
        drops: 0,
        prefetch: false,
    }
}

fn read(node: usize) -> Step<Op> {
    Step::Run(Op::Access { node, thread: 0, page: 0, kind: FaultKind::Read })
}

fn write(node: usize) -> Step<Op> {
    Step::Run(Op::Access { node, thread: 0, page: 0, kind: FaultKind::Write })
}

fn deliver(from: usize, to: usize) -> Step<Op> {
    Step::Deliver { from, to }
}

/// Granting write access before the readers have acknowledged their invalidation lets a reader
/// keep reading while the writer writes: the checker must find it.
#[test]
fn finds_grant_before_invalidation_acks() {
    let bounds = one_page(Bug::GrantBeforeInvAcks);
    let o = check("finds_grant_before_invalidation_acks", bounds.clone(), 1);
    for property in ["single writer or many readers", "no message is rejected"] {
        assert!(o.found(property), "{property}");
    }
    // Shortest: node 2 asks to read; the home grants it a copy; while that grant travels, a thread
    // on the home writes: the home sends node 2 an invalidation and, not waiting for the ack, opens
    // its own copy for writing. Then node 2's grant arrives and it reads beside a writer.
    let steps = shortest_counterexample(&bounds, "single writer or many readers", 64);
    assert_eq!(steps, [read(2), deliver(2, 0), write(0), deliver(0, 2)]);
    // Once node 1 acknowledges the invalidation the home no longer waits for, the home refuses it.
    shortest_counterexample(&bounds, "no message is rejected", 64);
}

/// Forgetting the requests queued behind a transaction leaves their threads waiting for ever.
#[test]
fn finds_dropped_queued_requests() {
    let bounds = one_page(Bug::DropQueuedRequests);
    let o = check("finds_dropped_queued_requests", bounds.clone(), 1);
    shortest_counterexample(&bounds, "terminal states are quiescent", 64);
    shortest_counterexample(&bounds, "everything outstanding can still complete", 64);
    // Safety does not suffer from this bug, only liveness.
    for safe in ["single writer or many readers", "reads return the latest write", "no message is rejected"] {
        assert!(!o.found(safe), "{safe}");
    }
}

/// A recalled owner that sends its bytes before revoking its own write access: in the runtime a
/// local store could land between the two and be lost. The simulation carries out one call's
/// actions at once, so it is the runtime contract (bytes are never read for sending while
/// writable) that catches it.
#[test]
fn finds_recall_ack_before_protect() {
    let bounds = one_page(Bug::RecallAckBeforeProtect);
    let o = check("finds_recall_ack_before_protect", bounds.clone(), 1);
    assert!(o.found("the runtime contract holds"));
    let steps = shortest_counterexample(&bounds, "the runtime contract holds", 64);
    // Node 2 asks to write and is granted the page; the home's own write recalls it; node 2 gets
    // the grant, then the recall, and reads its bytes for the reply while still writable.
    assert_eq!(steps, [write(2), deliver(2, 0), write(0), deliver(0, 2), deliver(0, 2)]);
}

/// Handling an invalidation at once while a direct read of its page is out: the reader's protocol,
/// which has not heard of the read yet, refuses it. The runtime holds it instead.
#[test]
fn finds_direct_reads_that_hold_nothing() {
    let bounds = Bounds {
        nodes: 2,
        pages: 1,
        threads: vec![1, 1],
        ops: vec![1, 1],
        bug: None,
        direct: true,
        direct_mistake: Some(DirectMistake::NoHold),
        drops: 0,
        prefetch: false,
    };
    let o = check("finds_direct_reads_that_hold_nothing", bounds, 1);
    assert!(o.found("no message is rejected"));
}

/// A direct read request that overtakes the acknowledgement of the invalidation before it: the
/// home, still waiting for that acknowledgement, refuses a read request from a node it counts as a
/// reader. The runtime orders the request after what the node queued to the home before.
#[test]
fn finds_direct_reads_that_overtake() {
    let bounds = Bounds {
        nodes: 2,
        pages: 1,
        threads: vec![1, 1],
        ops: vec![1, 2],
        bug: None,
        direct: true,
        direct_mistake: Some(DirectMistake::Unordered),
        drops: 0,
        prefetch: false,
    };
    let o = check("finds_direct_reads_that_overtake", bounds, 1);
    assert!(o.found("no message is rejected"));
}

/// Copies dropped before barriers, beside writes that revoke them and direct reads: a drop
/// crossing an invalidation, the home taking write access back, a direct read after the drop.
#[test]
fn dropped_copies() {
    let bounds = Bounds {
        nodes: 2,
        pages: 1,
        threads: vec![1, 1],
        ops: vec![2, 3],
        bug: None,
        direct: true,
        direct_mistake: None,
        drops: 1,
        prefetch: false,
    };
    let reached = ["all accesses done", "a dropped copy crosses an invalidation"];
    check("dropped_copies", bounds, 2).assert_holds(&reached);
}

/// Three nodes, so that a write by a node other than the home revokes a dropped copy.
#[test]
fn dropped_copies_three_nodes() {
    let bounds = Bounds {
        nodes: 3,
        pages: 1,
        threads: vec![1, 1, 1],
        ops: vec![1, 2, 1],
        bug: None,
        direct: false,
        direct_mistake: None,
        drops: 1,
        prefetch: false,
    };
    let reached = ["all accesses done", "a dropped copy crosses an invalidation"];
    check("dropped_copies_three_nodes", bounds, 2).assert_holds(&reached);
}

/// Copies asked for ahead at barriers: two nodes, each with two barriers, every revoked copy asked
/// for at each (predicted or not), direct reads on; a `ReadSoon` meets the home's own arrival
/// before or after it, a thread's hurry, a crossing of that hurry with the answer, a direct read,
/// drops and invalidations.
#[test]
fn copies_asked_for_ahead() {
    let bounds =
        Bounds { direct: true, drops: 2, prefetch: true, ..Bounds::one_page(vec![1, 1], vec![2, 3]) };
    let reached = [
        "all accesses done",
        "a copy asked for ahead waits for its home's barrier",
        "a hurry crosses the answer to a copy asked for ahead",
    ];
    check("copies_asked_for_ahead", bounds, 2).assert_holds(&reached);
}

/// Three nodes, so that a copy asked for ahead meets a third node's write: a recall or an
/// invalidation before or after the home's arrival answers it. 5 923 973 states, ≈ 115 s in a
/// release build: `cargo test --release -p dsm -- --ignored` runs it.
#[test]
#[ignore = "larger model: run in release with --ignored"]
fn copies_asked_for_ahead_three_nodes() {
    let bounds = Bounds { drops: 1, prefetch: true, ..Bounds::one_page(vec![1, 1, 1], vec![1, 2, 1]) };
    let reached = ["all accesses done", "a copy asked for ahead waits for its home's barrier"];
    check("copies_asked_for_ahead_three_nodes", bounds, 2).assert_holds(&reached);
}
