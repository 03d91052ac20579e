//! Exhaustive model check of the release-consistent protocol with
//! [stateright](https://www.stateright.rs), in the simulated cluster ([`crate::sim`],
//! [`crate::sim::model`]).
//!
//! The model runs the very [`LrcNode`] code the runtime runs, in the simulation that plays the
//! runtime around it, as `tests.rs` does for random schedules: FIFO links per pair in any
//! interleaving; per node and page real bytes (pages of [`PAGE`] bytes), a twin and a protection
//! changed by `Protect` only; twins, diffs ([`super::diff`]) and installs carried out as the
//! runtime does, and the runtime contract checked on every effect.
//!
//! One application thread per node runs a small fixed program ([`crate::sim::lrc::Op`]) of reads
//! and writes of single bytes, lock and unlock of one lock, releases, acquires, and stores and
//! loads of bytes on a sequentially consistent page (atomics). The lock is a token: `Lock` takes
//! it when it is free and then acquires; `Unlock` releases and hands the token back only when the
//! release is reported complete, as the runtime does. The simulated program keeps the
//! happens-before relation in vector clocks (program order, the lock, the atomics), so the checker
//! knows which writes happen before any point of any node ([`crate::sim::lrc::Program`]).
//!
//! Every interleaving is explored breadth-first, and in every reachable state the checker
//! evaluates the properties every protocol shares (no message rejected, the runtime contract
//! holds, no deadlock, terminal states quiescent, everything outstanding can still complete) and
//! this protocol's: reads return the write that happens before them (release consistency for
//! data-race-free programs), every copy a node may read holds every write that happens before the
//! node's current point, the programs are data-race free, twins are exactly on writable copies,
//! sequentially consistent pages stay single-writer, and at the end every home and every node
//! agree.
//!
//! The second half plants known mistakes in the same code ([`Bug`]) and expects counterexamples.

use std::ops::Range;

use stateright::Property;

use super::{Bug, LrcConfig, LrcNode, Msg, NodeId, PageId};
use crate::Access;
use crate::sim::lrc::{Op, Program, agree, sc_pages_coherent, twins_match};
use crate::sim::model::{Explore, Scenario, Step, World, check, not, shortest_counterexample};
use crate::sim::{Sim, Violation, Wait};

/// Bytes per simulated page: enough for a lock-guarded byte and one byte per node.
const PAGE: usize = 8;

/// The size and programs of a model.
#[derive(Clone, Debug)]
struct Bounds {
    nodes: u16,
    /// Pages simulated: `0..pages`, page `i` homed at node `i` (`pages <= nodes`).
    pages: u64,
    /// Pages that are sequentially consistent from the start (`LrcConfig::sc_pages`).
    sc: Range<u64>,
    /// Each node's program.
    programs: Vec<Vec<Op>>,
    /// A mistake planted in every node.
    bug: Option<Bug>,
    /// [`LrcConfig::own_after`] of every node.
    own_after: u8,
    /// [`LrcConfig::refresh`] of every node.
    refresh: bool,
}

impl Bounds {
    /// Node `k` runs `programs[k]`, over two release-consistent pages.
    fn new(programs: Vec<Vec<Op>>) -> Self {
        Bounds {
            nodes: programs.len() as u16,
            pages: 2,
            sc: 0..0,
            programs,
            bug: None,
            own_after: 0,
            refresh: false,
        }
    }

    /// These bounds with copies refreshed at notices ([`LrcConfig::refresh`]).
    fn refreshing(mut self) -> Self {
        self.refresh = true;
        self
    }

    /// These bounds with pages handed over to their writer after `diffs` diffs in a row.
    fn own_after(mut self, diffs: u8) -> Self {
        self.own_after = diffs;
        self
    }

    /// These bounds over pages `0..pages`, of which `sc` are sequentially consistent.
    fn pages(mut self, pages: u64, sc: Range<u64>) -> Self {
        self.pages = pages;
        self.sc = sc;
        self
    }

    /// These bounds with `bug` planted in every node.
    fn with_bug(mut self, bug: Bug) -> Self {
        self.bug = Some(bug);
        self
    }
}

/// A thread's step: node `node`'s thread takes its next program step `op`, or retries it after a
/// wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Run {
    node: usize,
    op: Op,
}

type W = World<LrcNode, Program>;

impl Scenario for Bounds {
    type Node = LrcNode;
    type App = Program;
    type Op = Run;

    fn init(&self) -> W {
        assert!(self.pages <= u64::from(self.nodes), "one page per node at most");
        assert_eq!(self.programs.len(), usize::from(self.nodes), "a program per node");
        assert!(self.programs.iter().all(|p| p.len() < 16), "write values hold the step index in 4 bits");
        let config = LrcConfig::default()
            .with_sc_pages(self.sc.clone())
            .with_own_after(self.own_after)
            .with_refresh(self.refresh);
        let mut nodes: Vec<LrcNode> =
            (0..self.nodes).map(|i| LrcNode::new(NodeId(i), self.nodes, 1, config.clone())).collect();
        if let Some(bug) = self.bug {
            nodes.iter_mut().for_each(|node| node.inject(bug));
        }
        let sim = Sim::new(nodes, self.pages as usize, PAGE, &vec![1; usize::from(self.nodes)]);
        let mut app = Program::new(&sim, 1).values_by_step();
        for (k, program) in self.programs.iter().enumerate() {
            app.give(k, 0, program.iter().copied());
        }
        World { sim, app }
    }

    fn ops(&self, w: &W, out: &mut Vec<Run>) {
        out.extend(
            (0..w.sim.count()).filter_map(|node| w.app.next(&w.sim, node, 0).map(|op| Run { node, op })),
        );
    }

    fn run(&self, w: &mut W, step: Run) {
        w.app.step(&mut w.sim, step.node, 0);
    }

    fn retry(&self, w: &W) -> Option<Run> {
        let node = (0..w.sim.count()).find(|&k| matches!(w.sim.wait(k, 0), Wait::Woken(..)))?;
        w.app.next(&w.sim, node, 0).map(|op| Run { node, op })
    }

    fn done(&self, w: &W) -> bool {
        w.app.finished()
    }

    fn settle(&self, w: &mut W) {
        w.app.settle(&w.sim);
    }

    fn properties(&self) -> Vec<Property<Explore<Self>>> {
        vec![
            Property::always("reads return the write that happens before them", |_, w: &W| {
                not(w, |v| matches!(v, Violation::Stale(_)))
            }),
            Property::always("every readable copy holds the writes that happen before", |_, w: &W| {
                w.app.copies_hold_history(&w.sim).is_ok()
            }),
            Property::always("the programs are data-race free", |_, w: &W| {
                not(w, |v| matches!(v, Violation::Race(_)))
            }),
            Property::always("SC pages have a single writer or many readers", |_, w: &W| {
                sc_pages_coherent(&w.sim).is_ok()
            }),
            Property::always("twins are exactly on writable copies", |_, w: &W| twins_match(&w.sim).is_ok()),
            Property::always("at the end every copy agrees", |m: &Explore<Self>, w: &W| {
                w.sim.violation().is_some() || m.enabled(w) || agree(&w.sim)
            }),
            // Not vacuous: the interesting situations are reached.
            Property::sometimes("a page has several writers at once", |_, w: &W| {
                (0..w.sim.pages()).any(|p| {
                    let writers = (0..w.sim.count()).filter(|&k| w.sim.prot(k, p) == Access::Write).count();
                    !w.sim.node(w.sim.home(p)).is_sc(PageId(p as u64)) && writers >= 2
                })
            }),
            Property::sometimes("a stale copy is still readable", |_, w: &W| {
                (0..w.sim.count()).any(|k| {
                    (0..w.sim.pages())
                        .any(|p| w.sim.prot(k, p) != Access::None && w.sim.node(k).is_stale(PageId(p as u64)))
                })
            }),
            Property::sometimes("a release waits for a write notice", |_, w: &W| {
                let notice = |l: usize| {
                    let n = w.sim.count();
                    w.sim.in_flight(l / n, l % n).any(|pk| matches!(pk.msg, Msg::Notice { .. }))
                };
                w.app.releasing() && w.sim.busy().into_iter().any(notice)
            }),
            Property::sometimes("all programs done", |_, w: &W| w.app.finished() && w.sim.quiescent()),
            Property::sometimes("a page is handed over to its writer", |_, w: &W| {
                (0..w.sim.count()).any(|k| (0..w.sim.pages()).any(|p| w.sim.node(k).owns(PageId(p as u64))))
            }),
            Property::sometimes("a copy is refreshed before anyone misses on it", |_, w: &W| {
                (0..w.sim.count()).any(|k| {
                    (0..w.sim.pages())
                        .any(|p| w.sim.prot(k, p) == Access::None && w.sim.node(k).is_fresh(PageId(p as u64)))
                })
            }),
            Property::sometimes("a handed-over page is pulled back", |_, w: &W| {
                let pull = |l: usize| {
                    let n = w.sim.count();
                    w.sim.in_flight(l / n, l % n).any(|pk| matches!(pk.msg, Msg::Pull { .. }))
                };
                w.sim.busy().into_iter().any(pull)
            }),
        ]
    }
}

/// Shorthands for the programs below: in every page, byte 0 is guarded by the lock and byte
/// `1 + k` belongs to node `k` (written by it outside critical sections, read by nobody else).
use Op::{Acquire, MakeSc, Observe, Publish, Read, ReadIfSeen, Release, Write};

/// Takes the model's one lock.
const LOCK: Op = Op::Lock(0);
/// Hands the lock back.
const UNLOCK: Op = Op::Unlock(0);

/// The byte of `page` that node `k` owns.
const fn own(page: u8, k: u8) -> Op {
    Write(page, 1 + k)
}

/// 3 nodes, 2 pages (homed at nodes 0 and 1; node 2 is home of neither), one lock. Every node
/// writes its own byte of page 1 (three writers of one page at once, one of them its home). The
/// lock guards byte 0 of both pages: node 0 writes both in one critical section, node 1 (page 1's
/// home) reads and writes page 0's in another, node 2 reads page 1's in one and both in a second,
/// so that a copy it fetched before another node's critical section must be noticed and dropped
/// (flushing its own write first), and then reads its own byte back. Nodes 0 (page 0's home) and
/// 1 then write their own bytes of page 0, which the others may hold, and release.
#[test]
fn three_nodes_two_pages() {
    let bounds = Bounds::new(vec![
        vec![own(1, 0), LOCK, Write(0, 0), Write(1, 0), UNLOCK, own(0, 0), Release],
        vec![own(1, 1), LOCK, Read(0, 0), Write(0, 0), UNLOCK, own(0, 1), Release],
        vec![own(1, 2), LOCK, Read(1, 0), UNLOCK, LOCK, Read(0, 0), Read(1, 0), Read(1, 3), UNLOCK],
    ]);
    check("three_nodes_two_pages", bounds, 2).assert_holds(&[
        "a page has several writers at once",
        "a stale copy is still readable",
        "a release waits for a write notice",
        "all programs done",
    ]);
}

/// Atomics order plain data: page 2 is sequentially consistent. Node 0 writes a byte of each
/// release-consistent page (page 0 is its own) and publishes a flag on page 2; node 2 writes a
/// byte of page 0 and publishes another flag. Nodes 1 and 2 read the data of node 0 if they see
/// its flag, node 0 the data of node 2. No lock and no explicit release or acquire before the
/// reads: only the rules that make an SC page's moves a release and an acquire (R1, R2).
#[test]
fn atomics_order_plain_data() {
    let bounds = Bounds::new(vec![
        vec![own(1, 0), own(0, 0), Publish(2, 0), Observe(2, 1), ReadIfSeen(0, 3), Release],
        vec![Observe(2, 0), ReadIfSeen(1, 1), ReadIfSeen(0, 1)],
        vec![own(0, 2), Publish(2, 1), Observe(2, 0), ReadIfSeen(1, 1), Release],
    ])
    .pages(3, 2..3);
    check("atomics_order_plain_data", bounds, 2)
        .assert_holds(&["a page has several writers at once", "all programs done"]);
}

/// A page in use becomes SC: its home, node 0, converts page 0 (`set_sc`) after a critical
/// section, while the others' critical sections use byte 0 of it and nodes 0 and 2 write their own
/// bytes of it, so the conversion meets dirty copies, stale copies, fetches and diffs in flight.
#[test]
fn conversion_by_the_home() {
    let bounds = Bounds::new(vec![
        vec![own(0, 0), LOCK, Write(0, 0), Write(1, 0), UNLOCK, MakeSc(0), Release],
        vec![LOCK, Read(0, 0), Write(0, 0), UNLOCK],
        vec![own(0, 2), LOCK, Read(0, 0), UNLOCK, LOCK, Read(0, 0), Read(1, 0), UNLOCK, Read(0, 3)],
    ]);
    check("conversion_by_the_home", bounds, 2)
        .assert_holds(&["a stale copy is still readable", "all programs done"]);
}

/// Node 1 asks page 0's home to make it SC (`MakeSc`) while the lock's critical sections use its
/// byte 0 and nodes 0 and 2 write their own bytes of it.
#[test]
fn conversion_asked_by_another_node() {
    let bounds = Bounds::new(vec![
        vec![own(0, 0), LOCK, Write(0, 0), Write(1, 0), UNLOCK, Release],
        vec![MakeSc(0), LOCK, Read(0, 0), Write(0, 0), UNLOCK],
        vec![own(0, 2), LOCK, Read(0, 0), Read(1, 0), UNLOCK, Read(0, 3)],
    ]);
    check("conversion_asked_by_another_node", bounds, 2).assert_holds(&["all programs done"]);
}

/// A diff acknowledgement waits for notices of an earlier write to the same page: node 2 holds a
/// copy of page 0; node 0, its home, writes it and releases (a notice to node 2 goes out); node 1
/// writes it too and publishes a flag, which node 2 reads before reading node 1's byte. Node 1's
/// diff draws no notice of its own (node 2 has already left the copyset), so only the earlier,
/// unfinished round keeps node 1's release, and with it the flag, from reaching node 2 before its
/// notice does. (An ack that ignored the earlier round passes the other checks but fails this.)
#[test]
fn diff_ack_waits_for_an_earlier_round() {
    let bounds = Bounds::new(vec![
        vec![own(0, 0), Release],
        vec![own(0, 1), Publish(2, 0), Release],
        vec![Read(0, 3), Observe(2, 0), ReadIfSeen(0, 2)],
    ])
    .pages(3, 2..3);
    check("diff_ack_waits_for_an_earlier_round", bounds, 2)
        .assert_holds(&["a release waits for a write notice", "all programs done"]);
}

/// Pages handed over to their writer (after one diff): node 1 writes the guarded byte of page 0
/// (homed at node 0) in two critical sections, so the page is handed over after the first and
/// the second sends no diff; the home (a local fault) and node 2 (a fetch) then read it in
/// critical sections of their own, each pulling it back, whatever the order.
#[test]
fn pages_follow_their_writer() {
    let bounds = Bounds::new(vec![
        vec![LOCK, Read(0, 0), UNLOCK],
        vec![LOCK, Write(0, 0), UNLOCK, LOCK, Write(0, 0), UNLOCK],
        vec![LOCK, Read(0, 0), UNLOCK],
    ])
    .pages(1, 0..0)
    .own_after(1);
    check("pages_follow_their_writer", bounds, 2).assert_holds(&[
        "a page is handed over to its writer",
        "a handed-over page is pulled back",
        "all programs done",
    ]);
}

/// A handed-over page meets a late diff: node 2 writes its own byte of page 0 and flushes it only
/// at its release, while node 1 writes its own byte twice with a release each time, so its second
/// diff may find it the only holder (node 2's copy noticed) and take the page over before node
/// 2's diff arrives; that diff then pulls the page back. The home writes its own byte too, and
/// with one conversion (`MakeSc` by node 2 in a second model) the page meets a conversion while
/// handed over.
#[test]
fn handed_over_pages_meet_late_diffs_and_conversions() {
    let late = Bounds::new(vec![
        vec![own(0, 0), Release],
        vec![own(0, 1), Release, own(0, 1), Release],
        vec![own(0, 2), Release],
    ])
    .pages(1, 0..0)
    .own_after(1);
    check("handed_over_pages_meet_late_diffs", late, 2).assert_holds(&[
        "a page is handed over to its writer",
        "a handed-over page is pulled back",
        "all programs done",
    ]);
    let converted = Bounds::new(vec![
        vec![LOCK, Read(0, 0), UNLOCK],
        vec![LOCK, Write(0, 0), UNLOCK, own(0, 1), Release],
        vec![MakeSc(0), LOCK, Read(0, 0), UNLOCK],
    ])
    .pages(1, 0..0)
    .own_after(1);
    check("handed_over_pages_meet_conversions", converted, 2)
        .assert_holds(&["a page is handed over to its writer", "all programs done"]);
}

/// Copies refreshed at notices: node 2 reads the guarded byte of page 0 in three critical
/// sections while nodes 0 (its home) and 1 write it in critical sections of their own, so node 2's
/// copy is noticed, dropped and read again, and then refreshed at the next notice, possibly while
/// it is dirty, or before node 2's acquire, or racing with another write.
#[test]
fn copies_are_refreshed_at_notices() {
    let bounds = Bounds::new(vec![
        vec![LOCK, Write(0, 0), UNLOCK, LOCK, Write(0, 0), UNLOCK],
        vec![LOCK, Write(0, 0), UNLOCK, own(0, 1), Release],
        vec![LOCK, Read(0, 0), UNLOCK, LOCK, Read(0, 0), UNLOCK, own(0, 2), LOCK, Read(0, 0), UNLOCK],
    ])
    .pages(1, 0..0)
    .refreshing();
    check("copies_are_refreshed_at_notices", bounds, 2).assert_holds(&[
        "a copy is refreshed before anyone misses on it",
        "a stale copy is still readable",
        "all programs done",
    ]);
}

fn run(node: usize, op: Op) -> Step<Run> {
    Step::Run(Run { node, op })
}

fn deliver(from: usize, to: usize) -> Step<Run> {
    Step::Deliver { from, to }
}

/// The smallest program that needs write notices: node 2 reads the guarded byte of page 0 in one
/// critical section, node 1 writes it in another, and node 2 reads it again in a third.
fn notice_bounds(bug: Bug) -> Bounds {
    Bounds::new(vec![
        vec![],
        vec![LOCK, Write(0, 0), UNLOCK],
        vec![LOCK, Read(0, 0), UNLOCK, LOCK, Read(0, 0), UNLOCK],
    ])
    .pages(1, 0..0)
    .with_bug(bug)
}

/// The steps of the notice scenario up to node 1's release: node 2 fetches page 0 in a critical
/// section; node 1 takes the lock, fetches the page for writing, writes it and unlocks (its diff
/// goes to the home).
fn reader_then_writer() -> Vec<Step<Run>> {
    // `node` takes the lock, traps on `op`, fetches the page, retries `op` and unlocks.
    let section = |node, op| {
        [run(node, LOCK), run(node, op), deliver(node, 0), deliver(0, node), run(node, op), run(node, UNLOCK)]
    };
    let mut steps = section(2, Read(0, 0)).to_vec();
    steps.extend(section(1, Write(0, 0)));
    steps.push(deliver(1, 0));
    steps
}

const STALE_READ: &str = "reads return the write that happens before them";
const STALE_COPY: &str = "every readable copy holds the writes that happen before";

/// The notice scenario with `bug` planted: the checker must find a copy that lacks a write that
/// happens before, after [`reader_then_writer`] and then `tail`, and a stale read one step later.
fn finds_in_notice_scenario(name: &str, bug: Bug, tail: &[Step<Run>]) {
    let bounds = notice_bounds(bug);
    let o = check(name, bounds.clone(), 1);
    assert!(o.found(STALE_READ) && o.found(STALE_COPY));
    let mut expected = reader_then_writer();
    expected.extend_from_slice(tail);
    assert_eq!(shortest_counterexample(&bounds, STALE_COPY, 80), expected);
    expected.push(run(2, Read(0, 0)));
    assert_eq!(shortest_counterexample(&bounds, STALE_READ, 80), expected);
}

/// A notice acknowledged without marking the copy stale: the next acquire keeps the old copy.
/// The home applies the diff and notifies node 2, which acknowledges without marking its copy;
/// the diff ack completes node 1's release, node 2 takes the lock and keeps its old copy.
#[test]
fn finds_notice_without_stale() {
    let tail = [deliver(0, 2), deliver(2, 0), deliver(0, 1), run(2, LOCK)];
    finds_in_notice_scenario("finds_notice_without_stale", Bug::NoticeWithoutStale, &tail);
}

/// A diff acknowledged before the notices it caused are: the writer's release completes and the
/// lock moves on while the reader's notice is still on its way. The home's ack reaches node 1
/// before its notice reaches node 2: node 2 takes the lock while its copy still counts as
/// current. Two steps shorter than the other bug's.
#[test]
fn finds_diff_ack_before_notices() {
    let tail = [deliver(0, 1), run(2, LOCK)];
    finds_in_notice_scenario("finds_diff_ack_before_notices", Bug::DiffAckBeforeNotices, &tail);
}

/// A diff acknowledged while its page becomes SC: node 2 still holds a copy it has not been told
/// about (its `Convert` is on the way), so when the writer's release completes and node 2 takes
/// the lock, it reads its old copy.
#[test]
fn finds_diff_ack_during_conversion() {
    let bounds = Bounds::new(vec![
        vec![MakeSc(0)],
        vec![LOCK, Write(0, 0), UNLOCK],
        vec![LOCK, Read(0, 0), UNLOCK, LOCK, Read(0, 0), UNLOCK],
    ])
    .pages(1, 0..0)
    .with_bug(Bug::DiffAckDuringConversion);
    let o = check("finds_diff_ack_during_conversion", bounds.clone(), 1);
    assert!(o.found(STALE_READ));
    // Node 2 fetched the page in a first critical section; node 1 asked for it to write; the home
    // sends it and starts converting the page (Convert to nodes 1 and 2); node 1 writes, unlocks
    // (its diff goes home), gets its Convert; the diff reaches the home, which acks it at once;
    // node 1's release completes, and node 2 takes the lock before its Convert arrives and reads
    // its old copy.
    let steps = shortest_counterexample(&bounds, STALE_READ, 80);
    assert_eq!(steps.len(), 18);
    assert_eq!(steps[9], run(0, MakeSc(0)));
}

/// Parses `LRC_MODEL`: per node a program, nodes separated by `|`, steps by spaces: `rP.B` read,
/// `wP.B` write, `L` lock, `U` unlock, `R` release, `A` acquire, `pP.B` publish, `oP.B` observe,
/// `sP.B` read if seen (page `P`, byte `B`), `cP` make page `P` SC; optional leading `pages=N` and
/// `sc=N` (page `N` and above are SC), `own=N` ([`LrcConfig::own_after`]) and `refresh`
/// ([`LrcConfig::refresh`]). E.g. `pages=2 w1.1 L w0.0 U | w1.2 L r0.0 U | L r1.0 U`.
fn bounds_from_env() -> Option<Bounds> {
    let spec = std::env::var("LRC_MODEL").ok()?;
    let mut b = Bounds {
        nodes: 0,
        pages: 2,
        sc: 0..0,
        programs: vec![Vec::new()],
        bug: None,
        own_after: 0,
        refresh: false,
    };
    let at = |t: &str| -> (u8, u8) {
        let (p, b) = t.split_once('.').unwrap_or_else(|| panic!("LRC_MODEL: {t:?} is not PAGE.BYTE"));
        (p.parse().expect("a page"), b.parse().expect("a byte"))
    };
    for token in spec.split_whitespace() {
        let program = b.programs.last_mut().expect("a program");
        let op = match token.split_at(1) {
            ("|", "") => {
                b.programs.push(Vec::new());
                continue;
            }
            _ if token.starts_with("pages=") => {
                b.pages = token["pages=".len()..].parse().expect("pages=N");
                continue;
            }
            _ if token == "refresh" => {
                b.refresh = true;
                continue;
            }
            _ if token.starts_with("own=") => {
                b.own_after = token["own=".len()..].parse().expect("own=N");
                continue;
            }
            _ if token.starts_with("sc=") => {
                b.sc = token["sc=".len()..].parse().expect("sc=N")..u64::MAX;
                continue;
            }
            ("L", "") => LOCK,
            ("U", "") => UNLOCK,
            ("R", "") => Release,
            ("A", "") => Acquire,
            ("r", t) => Read(at(t).0, at(t).1),
            ("w", t) => Write(at(t).0, at(t).1),
            ("p", t) => Publish(at(t).0, at(t).1),
            ("o", t) => Observe(at(t).0, at(t).1),
            ("s", t) => ReadIfSeen(at(t).0, at(t).1),
            ("c", t) => MakeSc(t.parse().expect("a page")),
            _ => panic!("LRC_MODEL: cannot read {token:?}"),
        };
        program.push(op);
    }
    b.nodes = b.programs.len() as u16;
    Some(b)
}

/// Whatever `LRC_MODEL` says (see [`bounds_from_env`]), or by default the lock programs of
/// `three_nodes_two_pages` with more writes and an atomic flag on an SC page 2 next to them (node
/// 0 publishes after its critical section, node 1 reads node 0's byte of page 0 if it sees the
/// flag): 2.7 million states, about a minute and 1.3 GB in release. Run with
/// `cargo test --release -p dsm --lib -- --ignored lrc::model::larger_bounds --nocapture`.
#[test]
#[ignore = "a minute and 1.3 GB in release, far longer in a debug build"]
fn larger_bounds() {
    let bounds = bounds_from_env().unwrap_or(
        Bounds::new(vec![
            vec![own(1, 0), LOCK, Write(0, 0), Write(1, 0), UNLOCK, own(0, 0), Publish(2, 0), Release],
            vec![own(1, 1), LOCK, Read(0, 0), Write(0, 0), UNLOCK, Observe(2, 0), ReadIfSeen(0, 1), Release],
            vec![
                own(1, 2),
                LOCK,
                Read(1, 0),
                UNLOCK,
                own(0, 2),
                LOCK,
                Read(0, 0),
                Read(1, 0),
                Read(1, 3),
                UNLOCK,
                Release,
            ],
        ])
        .pages(3, 2..3),
    );
    check("larger_bounds", bounds, 2).assert_holds(&[]);
}
