//! Exhaustive model check of the protocol with [stateright](https://www.stateright.rs).
//!
//! The model runs the very [`ScNode`] code the runtime runs and plays the runtime around it:
//!
//! * per ordered pair of nodes a FIFO link (TCP), while links between different pairs deliver in
//!   any interleaving: delivering the head of any non-empty link is one action;
//! * per node and page a fake page (a `u8` version: the value of the last write the node saw) and a
//!   fake protection entry that only `Protect` actions change, `Install` copying the version that
//!   travelled with the message, and a `Send` of a message that carries data reading the version
//!   at that moment;
//! * application threads that each perform a bounded number of reads and writes of any page:
//!   an access either succeeds at once (the protection allows it) or faults, waits for the `Wake`
//!   and, as a separate step, retries.
//!
//! Every interleaving of those steps is explored breadth-first, and in every reachable state the
//! checker evaluates the properties in [`ScModel::properties`]: single writer or many readers,
//! reads return the latest write, the home's directory covers every copy, no peer ever rejects a
//! message, the runtime's contract on `Install`/`Send`/`Protect` holds, no deadlock, terminal
//! states are quiescent, and from every state a fair schedule answers every request.
//!
//! The second half plants known mistakes in the same code ([`Bug`]) and expects counterexamples.

// Test-only code: it reports what it checked on stderr (the rule against std's print macros is
// the runtime's, see dsm/clippy.toml).
#![allow(clippy::disallowed_macros)]

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use stateright::{Checker, HasDiscoveries, Model, Property};

use super::{Access, Action, Bug, FaultKind, Msg, NodeId, PageId, ScNode};

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
}

struct ScModel {
    bounds: Bounds,
}

/// A simulated application thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Thread {
    Idle,
    /// Trapped, waiting for a `Wake` on the page.
    Waiting(PageId, FaultKind),
    /// Woken, will retry its access.
    Ready(PageId, FaultKind),
}

/// A message on a link, with the page's version when it carries data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Packet {
    msg: Msg,
    bytes: Option<u8>,
}

/// Something went wrong in the step that led to this state; the state is terminal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Violation {
    /// A node's `handle` returned an error for a message a correct peer sent.
    Rejected(String),
    /// A read returned another value than the latest write.
    StaleRead { node: usize, page: usize, saw: u8, latest: u8 },
    /// The runtime's contract with the protocol was broken (`Install` without data, bytes sent
    /// while writable, access opened on stale bytes, protection differing from `access()`).
    Contract(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    nodes: Vec<ScNode>,
    /// `links[from * n + to]`, FIFO.
    links: Vec<VecDeque<Packet>>,
    /// `mem[node][page]`: the version the node's copy holds.
    mem: Vec<Vec<u8>>,
    /// `prot[node][page]`: what the node's application threads may do, set by `Protect` only.
    prot: Vec<Vec<Access>>,
    /// Per page, the version of the latest completed write anywhere (the model's order).
    latest: Vec<u8>,
    /// `threads[node][t]`.
    threads: Vec<Vec<Thread>>,
    /// `ops_left[node][t]`: accesses thread `t` of `node` may still start.
    ops_left: Vec<Vec<u8>>,
    violation: Option<Violation>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Step {
    /// An idle thread starts an access.
    Access { node: usize, thread: usize, page: u64, kind: FaultKind },
    /// A woken thread retries its access.
    Retry { node: usize, thread: usize },
    /// The oldest message on link `from -> to` arrives.
    Deliver { from: usize, to: usize },
}

impl State {
    fn count(&self) -> usize {
        self.nodes.len()
    }

    fn pages(&self) -> usize {
        self.latest.len()
    }

    fn fail(&mut self, violation: Violation) {
        self.violation.get_or_insert(violation);
    }

    /// Carries out `actions` of `node` like the runtime does. `bytes` came with the message being
    /// handled, if it carried data.
    fn exec(&mut self, node: usize, actions: &[Action], bytes: Option<u8>) {
        for &action in actions {
            match action {
                Action::Send { to, msg } => {
                    let to = to.index();
                    if to == node || to >= self.count() {
                        self.fail(Violation::Contract(format!("node {node} sends {msg:?} to node {to}")));
                        return;
                    }
                    let page = msg.page().0 as usize;
                    let bytes = if msg.carries_data() {
                        if self.prot[node][page] == Access::Write {
                            self.fail(Violation::Contract(format!(
                                "node {node} sends {msg:?} while the page is still writable"
                            )));
                        }
                        Some(self.mem[node][page])
                    } else {
                        None
                    };
                    let link = node * self.count() + to;
                    self.links[link].push_back(Packet { msg, bytes });
                }
                Action::Install { page } => match bytes {
                    Some(b) => self.mem[node][page.0 as usize] = b,
                    None => self.fail(Violation::Contract(format!(
                        "node {node} installs {page} without bytes to install"
                    ))),
                },
                Action::Protect { page, access } => {
                    let i = page.0 as usize;
                    if access >= Access::Read && self.mem[node][i] != self.latest[i] {
                        self.fail(Violation::Contract(format!(
                            "node {node} opens {page} for {access:?} on stale bytes"
                        )));
                    }
                    self.prot[node][i] = access;
                }
                Action::Wake { page } => {
                    for thread in &mut self.threads[node] {
                        if let Thread::Waiting(q, kind) = *thread
                            && q == page
                        {
                            *thread = Thread::Ready(q, kind);
                        }
                    }
                }
                other => unreachable!("not an effect of this protocol: {other:?}"),
            }
        }
        for i in 0..self.pages() {
            let access = self.nodes[node].access(PageId(i as u64));
            if self.prot[node][i] != access {
                self.fail(Violation::Contract(format!(
                    "node {node}: protection of page {i} is {:?}, the protocol says {access:?}",
                    self.prot[node][i]
                )));
            }
        }
    }

    /// Thread `t` of `node` tries `kind` on `page`: performs it if the protection allows, otherwise
    /// traps and waits.
    fn attempt(&mut self, node: usize, t: usize, page: PageId, kind: FaultKind) {
        let i = page.0 as usize;
        if self.prot[node][i] >= kind.needed() {
            match kind {
                FaultKind::Read => {
                    let (saw, latest) = (self.mem[node][i], self.latest[i]);
                    if saw != latest {
                        self.fail(Violation::StaleRead { node, page: i, saw, latest });
                    }
                }
                FaultKind::Write => {
                    self.latest[i] += 1;
                    self.mem[node][i] = self.latest[i];
                }
            }
            self.threads[node][t] = Thread::Idle;
        } else {
            self.threads[node][t] = Thread::Waiting(page, kind);
            let mut out = Vec::new();
            self.nodes[node].fault(page, kind, &mut out);
            if out.iter().any(|a| matches!(a, Action::Install { .. })) {
                self.fail(Violation::Contract(format!("Install from a fault: {out:?}")));
            }
            self.exec(node, &out, None);
        }
    }

    fn deliver(&mut self, from: usize, to: usize) {
        let link = from * self.count() + to;
        let Some(packet) = self.links[link].pop_front() else {
            return;
        };
        let mut out = Vec::new();
        match self.nodes[to].handle(NodeId(from as u16), packet.msg, &mut out) {
            Ok(()) => self.exec(to, &out, packet.bytes),
            Err(e) => self.fail(Violation::Rejected(format!("node {to}: {e}"))),
        }
    }

    fn apply(&mut self, step: Step) {
        match step {
            Step::Access { node, thread, page, kind } => {
                self.ops_left[node][thread] -= 1;
                self.attempt(node, thread, PageId(page), kind);
            }
            Step::Retry { node, thread } => {
                if let Thread::Ready(page, kind) = self.threads[node][thread] {
                    self.attempt(node, thread, page, kind);
                }
            }
            Step::Deliver { from, to } => self.deliver(from, to),
        }
    }

    /// No request outstanding anywhere: no message in flight, every node quiescent, no thread
    /// trapped or about to retry.
    fn quiescent(&self) -> bool {
        self.links.iter().all(VecDeque::is_empty)
            && self.nodes.iter().all(ScNode::is_quiescent)
            && self.threads.iter().flatten().all(|t| *t == Thread::Idle)
    }

    /// Runs one fair schedule without new accesses: a woken thread retries at once, otherwise the
    /// oldest message on the first non-empty link arrives. Returns whether everything settles.
    fn drains(mut self) -> bool {
        for _ in 0..10_000 {
            if self.violation.is_some() {
                return false;
            }
            let ready =
                self.threads.iter().enumerate().find_map(|(k, ts)| {
                    ts.iter().position(|t| matches!(t, Thread::Ready(..))).map(|t| (k, t))
                });
            if let Some((node, thread)) = ready {
                self.apply(Step::Retry { node, thread });
                continue;
            }
            let Some(link) = self.links.iter().position(|l| !l.is_empty()) else {
                return self.quiescent();
            };
            let n = self.count();
            self.apply(Step::Deliver { from: link / n, to: link % n });
        }
        false
    }
}

impl Model for ScModel {
    type State = State;
    type Action = Step;

    fn init_states(&self) -> Vec<State> {
        let b = &self.bounds;
        let count = usize::from(b.nodes);
        let mut nodes: Vec<ScNode> = (0..b.nodes).map(|i| ScNode::new(NodeId(i), b.nodes, 1)).collect();
        if let Some(bug) = b.bug {
            nodes.iter_mut().for_each(|node| node.inject(bug));
        }
        let pages = b.pages as usize;
        assert!(pages <= count, "one page per node at most");
        assert!(b.threads.len() == count && b.ops.len() == count, "threads and ops are given per node");
        let mut mem = vec![vec![0; pages]; count];
        let mut prot = vec![vec![Access::None; pages]; count];
        for page in 0..pages {
            let home = nodes[0].home_of(PageId(page as u64)).index();
            mem[home][page] = 0;
            prot[home][page] = Access::Write;
        }
        // A copy a node never received reads as a version no write produces.
        for (k, row) in mem.iter_mut().enumerate() {
            for (page, v) in row.iter_mut().enumerate() {
                if prot[k][page] == Access::None {
                    *v = u8::MAX;
                }
            }
        }
        vec![State {
            nodes,
            links: vec![VecDeque::new(); count * count],
            mem,
            prot,
            latest: vec![0; pages],
            threads: b.threads.iter().map(|&t| vec![Thread::Idle; t]).collect(),
            ops_left: b.ops.iter().zip(&b.threads).map(|(&ops, &t)| vec![ops; t]).collect(),
            violation: None,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Step>) {
        if state.violation.is_some() {
            return;
        }
        let n = state.count();
        for node in 0..n {
            for (thread, t) in state.threads[node].iter().enumerate() {
                match t {
                    Thread::Idle if state.ops_left[node][thread] > 0 => {
                        for page in 0..self.bounds.pages {
                            for kind in [FaultKind::Read, FaultKind::Write] {
                                actions.push(Step::Access { node, thread, page, kind });
                            }
                        }
                    }
                    Thread::Ready(..) => actions.push(Step::Retry { node, thread }),
                    _ => {}
                }
            }
        }
        for (link, queue) in state.links.iter().enumerate() {
            if !queue.is_empty() {
                actions.push(Step::Deliver { from: link / n, to: link % n });
            }
        }
    }

    fn next_state(&self, state: &State, step: Step) -> Option<State> {
        let mut next = state.clone();
        next.apply(step);
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("single writer or many readers", |_: &ScModel, s: &State| {
                (0..s.pages()).all(|i| {
                    let writers = (0..s.count()).filter(|&k| s.prot[k][i] == Access::Write).count();
                    let readers = (0..s.count()).filter(|&k| s.prot[k][i] == Access::Read).count();
                    writers == 0 || (writers == 1 && readers == 0)
                })
            }),
            Property::always("reads return the latest write", |_: &ScModel, s: &State| {
                !matches!(s.violation, Some(Violation::StaleRead { .. }))
            }),
            Property::always("every accessible copy is current", |_: &ScModel, s: &State| {
                (0..s.count()).all(|k| {
                    (0..s.pages()).all(|i| s.prot[k][i] == Access::None || s.mem[k][i] == s.latest[i])
                })
            }),
            Property::always("the directory covers every copy", |_: &ScModel, s: &State| {
                (0..s.pages()).all(|i| {
                    let page = PageId(i as u64);
                    let home = s.nodes[0].home_of(page).index();
                    s.nodes[home].directory(page).is_some_and(|dir| {
                        (0..s.count()).all(|k| s.prot[k][i] <= dir.access_of(NodeId(k as u16)))
                    })
                })
            }),
            Property::always("the directory is exact between transactions", |_: &ScModel, s: &State| {
                (0..s.pages()).all(|i| {
                    let page = PageId(i as u64);
                    let home = s.nodes[0].home_of(page).index();
                    if s.nodes[home].in_transaction(page) {
                        return true;
                    }
                    let dir = s.nodes[home].directory(page).expect("the home has an entry");
                    (0..s.count()).all(|k| {
                        // A grant on its way is the only thing that may still differ.
                        let granting = k != home
                            && s.links[home * s.count() + k]
                                .iter()
                                .any(|p| matches!(p.msg, Msg::Grant { page: q, .. } if q == page));
                        granting || s.prot[k][i] == dir.access_of(NodeId(k as u16))
                    })
                })
            }),
            Property::always("no message is rejected", |_: &ScModel, s: &State| {
                !matches!(s.violation, Some(Violation::Rejected(_)))
            }),
            Property::always("the runtime contract holds", |_: &ScModel, s: &State| {
                !matches!(s.violation, Some(Violation::Contract(_)))
            }),
            Property::always("no deadlock", |m: &ScModel, s: &State| {
                let trapped = s.threads.iter().flatten().any(|t| matches!(t, Thread::Waiting(..)));
                s.violation.is_some() || !trapped || m.enabled(s)
            }),
            Property::always("terminal states are quiescent", |m: &ScModel, s: &State| {
                s.violation.is_some() || m.enabled(s) || s.quiescent()
            }),
            Property::always("every request can still be answered", |_: &ScModel, s: &State| {
                s.violation.is_some() || s.clone().drains()
            }),
            // Not vacuous: the interesting situations are reached.
            Property::sometimes("a page is shared by every node", |_: &ScModel, s: &State| {
                (0..s.pages()).any(|i| (0..s.count()).all(|k| s.prot[k][i] == Access::Read))
            }),
            Property::sometimes("a request waits behind a transaction", |_: &ScModel, s: &State| {
                (0..s.pages()).any(|i| {
                    let page = PageId(i as u64);
                    s.nodes[s.nodes[0].home_of(page).index()].queued(page) > 0
                })
            }),
            Property::sometimes("a writable page is away from its home", |_: &ScModel, s: &State| {
                (0..s.pages()).any(|i| {
                    let home = s.nodes[0].home_of(PageId(i as u64)).index();
                    (0..s.count()).any(|k| k != home && s.prot[k][i] == Access::Write)
                })
            }),
            Property::sometimes("all accesses done", |_: &ScModel, s: &State| {
                s.quiescent() && s.ops_left.iter().flatten().all(|&o| o == 0)
            }),
        ]
    }
}

impl ScModel {
    /// Whether any step is possible.
    fn enabled(&self, state: &State) -> bool {
        let mut actions = Vec::new();
        self.actions(state, &mut actions);
        !actions.is_empty()
    }
}

/// What one exhaustive run found.
struct Outcome {
    unique: usize,
    total: usize,
    depth: usize,
    elapsed: Duration,
    checker: Box<dyn Checker<ScModel>>,
}

/// Explores every state within `bounds`, on `threads` checker threads. With one thread the search
/// is strictly breadth-first, so counterexamples are shortest.
fn check(name: &str, bounds: Bounds, threads: usize) -> Outcome {
    let started = Instant::now();
    let checker = ScModel { bounds: bounds.clone() }.checker().threads(threads).spawn_bfs().join();
    let o = Outcome {
        unique: checker.unique_state_count(),
        total: checker.state_count(),
        depth: checker.max_depth(),
        elapsed: started.elapsed(),
        checker: Box::new(checker),
    };
    eprintln!(
        "{name}: {} nodes, {} pages, threads {:?}, accesses per thread {:?}, bug {:?}: {} unique states \
         ({} generated), depth {}, {:.2?}",
        bounds.nodes,
        bounds.pages,
        bounds.threads,
        bounds.ops,
        bounds.bug,
        o.unique,
        o.total,
        o.depth,
        o.elapsed
    );
    o
}

/// 3 nodes, 2 pages (homed at nodes 0 and 1; node 2 is home of neither), one thread per node;
/// nodes 0 and 1 make two accesses, node 2 one. Sized for a debug build: `larger_bounds` goes
/// further in release.
#[test]
fn three_nodes_two_pages() {
    let bounds = Bounds { nodes: 3, pages: 2, threads: vec![1, 1, 1], ops: vec![2, 2, 1], bug: None };
    let o = check("three_nodes_two_pages", bounds, 2);
    o.checker.assert_properties();
}

/// Two threads on the node that is home of no page, so a second fault on a page with a request
/// outstanding (which sends nothing and waits for the first request's wake-up) is explored too.
#[test]
fn two_threads_on_a_node() {
    let bounds = Bounds { nodes: 3, pages: 2, threads: vec![1, 1, 2], ops: vec![1, 1, 1], bug: None };
    let o = check("two_threads_on_a_node", bounds, 2);
    o.checker.assert_properties();
}

/// Parses `SC_MODEL`, e.g. `pages=2 threads=1,1,2 ops=2,2,2` (the node count is the length of
/// the lists).
fn bounds_from_env() -> Option<Bounds> {
    let spec = std::env::var("SC_MODEL").ok()?;
    let list =
        |v: &str| -> Vec<usize> { v.split(',').map(|x| x.trim().parse().expect("a number")).collect() };
    let mut b = Bounds { nodes: 3, pages: 2, threads: vec![1; 3], ops: vec![2; 3], bug: None };
    for part in spec.split_whitespace() {
        match part.split_once('=') {
            Some(("pages", v)) => b.pages = v.parse().expect("pages=N"),
            Some(("threads", v)) => b.threads = list(v),
            Some(("ops", v)) => b.ops = list(v).into_iter().map(|x| x as u8).collect(),
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
    });
    let o = check("larger_bounds", bounds, 2);
    o.checker.assert_properties();
}

/// The shortest counterexample to `property`, found by iterative deepening: stateright keeps the
/// *last* violating state it meets as the discovery, so a plain run may report a long path. Prints
/// it one step per line.
fn shortest_counterexample(bounds: &Bounds, property: &'static str) -> Vec<Step> {
    for depth in 2..=64 {
        let checker = ScModel { bounds: bounds.clone() }
            .checker()
            .threads(1)
            .target_max_depth(depth)
            .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([property])))
            .spawn_bfs()
            .join();
        if let Some(path) = checker.discovery(property) {
            let steps = path.into_actions();
            eprintln!("shortest counterexample for {property:?} ({} steps):", steps.len());
            for step in &steps {
                eprintln!("  {step:?}");
            }
            return steps;
        }
    }
    panic!("no counterexample for {property:?} within 62 steps");
}

/// Granting write access before the readers have acknowledged their invalidation lets a reader
/// keep reading while the writer writes: the checker must find it.
#[test]
fn finds_grant_before_invalidation_acks() {
    let bounds = Bounds {
        nodes: 3,
        pages: 1,
        threads: vec![1, 1, 1],
        ops: vec![1, 1, 1],
        bug: Some(Bug::GrantBeforeInvAcks),
    };
    let o = check("finds_grant_before_invalidation_acks", bounds.clone(), 1);
    for property in ["single writer or many readers", "no message is rejected"] {
        assert!(o.checker.discovery(property).is_some(), "{property}");
    }
    // Shortest: node 2 asks to read; the home grants it a copy; while that grant travels, a thread
    // on the home writes: the home sends node 2 an invalidation and, not waiting for the ack, opens
    // its own copy for writing. Then node 2's grant arrives and it reads beside a writer.
    let steps = shortest_counterexample(&bounds, "single writer or many readers");
    let read = |node| Step::Access { node, thread: 0, page: 0, kind: FaultKind::Read };
    let write = |node| Step::Access { node, thread: 0, page: 0, kind: FaultKind::Write };
    let deliver = |from, to| Step::Deliver { from, to };
    assert_eq!(steps, [read(2), deliver(2, 0), write(0), deliver(0, 2)]);
    // Once node 1 acknowledges the invalidation the home no longer waits for, the home refuses it.
    shortest_counterexample(&bounds, "no message is rejected");
}

/// Forgetting the requests queued behind a transaction leaves their threads waiting for ever.
#[test]
fn finds_dropped_queued_requests() {
    let bounds = Bounds {
        nodes: 3,
        pages: 1,
        threads: vec![1, 1, 1],
        ops: vec![1, 1, 1],
        bug: Some(Bug::DropQueuedRequests),
    };
    let o = check("finds_dropped_queued_requests", bounds.clone(), 1);
    shortest_counterexample(&bounds, "terminal states are quiescent");
    shortest_counterexample(&bounds, "every request can still be answered");
    // Safety does not suffer from this bug, only liveness.
    for safe in ["single writer or many readers", "reads return the latest write", "no message is rejected"] {
        assert!(o.checker.discovery(safe).is_none(), "{safe}");
    }
}

/// A recalled owner that sends its bytes before revoking its own write access: in the runtime a
/// local store could land between the two and be lost. The model executes one call's actions at
/// once, so it is the runtime contract (bytes are never read for sending while writable) that
/// catches it.
#[test]
fn finds_recall_ack_before_protect() {
    let bounds = Bounds {
        nodes: 3,
        pages: 1,
        threads: vec![1, 1, 1],
        ops: vec![1, 1, 1],
        bug: Some(Bug::RecallAckBeforeProtect),
    };
    let o = check("finds_recall_ack_before_protect", bounds.clone(), 1);
    assert!(o.checker.discovery("the runtime contract holds").is_some());
    let steps = shortest_counterexample(&bounds, "the runtime contract holds");
    // Node 2 asks to write and is granted the page; the home's own write recalls it; node 2 gets
    // the grant, then the recall, and reads its bytes for the reply while still writable.
    let write = |node| Step::Access { node, thread: 0, page: 0, kind: FaultKind::Write };
    let deliver = |from, to| Step::Deliver { from, to };
    assert_eq!(steps, [write(2), deliver(2, 0), write(0), deliver(0, 2), deliver(0, 2)]);
}
