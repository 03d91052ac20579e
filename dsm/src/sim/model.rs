//! Exhaustive model checking of the simulated cluster with [stateright](https://www.stateright.rs)
//! (this crate's tests only).
//!
//! A [`Scenario`] says what the application does: its threads' possible steps in a state. The
//! model ([`Explore`]) explores every interleaving of those steps with the deliveries of the
//! heads of the non-empty links, breadth-first, and evaluates in every reachable state the
//! properties every protocol shares ([`Explore::properties`]: no message rejected, the runtime
//! contract holds, no deadlock, terminal states quiescent, everything outstanding can still
//! complete) and the scenario's own.

// Test-only code: it reports what it checked on stderr (the rule against std's print macros is
// the runtime's, see dsm/clippy.toml).
#![allow(clippy::disallowed_macros)]

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Instant;

use stateright::{Checker, Expectation, HasDiscoveries, Model, Property};

use super::{Sim, Spec, Violation};

/// A state of the model: the simulated cluster and the application's own state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct World<P: Spec, A> {
    /// The cluster.
    pub sim: Sim<P>,
    /// What the application threads have done and still do.
    pub app: A,
}

/// One step of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step<O> {
    /// An application thread's step.
    Run(O),
    /// The oldest message on link `from -> to` arrives.
    Deliver {
        /// The sender.
        from: usize,
        /// The receiver.
        to: usize,
    },
}

/// What the application does, for one model.
pub trait Scenario: Clone + Debug + Send + Sync + 'static {
    /// The protocol.
    type Node: Spec<Msg: Send + Sync> + Send + Sync;
    /// The application's state.
    type App: Clone + Debug + Hash + Eq + Send + Sync;
    /// An application thread's step.
    type Op: Copy + Debug + Hash + Eq + Send + Sync;

    /// The initial state.
    fn init(&self) -> World<Self::Node, Self::App>;
    /// The thread steps possible in `w`, in a fixed order.
    fn ops(&self, w: &World<Self::Node, Self::App>, out: &mut Vec<Self::Op>);
    /// Takes step `op`.
    fn run(&self, w: &mut World<Self::Node, Self::App>, op: Self::Op);
    /// A thread's retry after a wake-up, if some thread is woken (the first one).
    fn retry(&self, w: &World<Self::Node, Self::App>) -> Option<Self::Op>;
    /// Whether the application has nothing left to do (its threads finished, none waiting).
    fn done(&self, w: &World<Self::Node, Self::App>) -> bool;
    /// Brings the application up to date after a delivery (a reported release, say).
    fn settle(&self, w: &mut World<Self::Node, Self::App>) {
        let _ = w;
    }
    /// The scenario's own properties.
    fn properties(&self) -> Vec<Property<Explore<Self>>>;
}

/// The model of a scenario.
#[derive(Clone, Debug)]
pub struct Explore<S>(pub S);

/// A state of the model of `S`.
pub type State<S> = World<<S as Scenario>::Node, <S as Scenario>::App>;

impl<S: Scenario> Explore<S> {
    /// Takes `step` in `w`.
    fn apply(&self, w: &mut State<S>, step: Step<S::Op>) {
        match step {
            Step::Run(op) => self.0.run(w, op),
            Step::Deliver { from, to } => {
                w.sim.deliver(from, to);
                self.0.settle(w);
            }
        }
    }

    /// Whether any step is possible.
    pub fn enabled(&self, w: &State<S>) -> bool {
        let mut steps = Vec::new();
        self.actions(w, &mut steps);
        !steps.is_empty()
    }

    /// Runs one fair schedule without new steps: a woken thread retries at once, otherwise the
    /// oldest message on the first non-empty link arrives. Returns whether everything settles.
    fn drains(&self, mut w: State<S>) -> bool {
        for _ in 0..10_000 {
            if w.sim.violation().is_some() {
                return false;
            }
            if let Some(op) = self.0.retry(&w) {
                self.apply(&mut w, Step::Run(op));
                continue;
            }
            let Some(&link) = w.sim.busy().first() else {
                return w.sim.quiescent();
            };
            let n = w.sim.count();
            self.apply(&mut w, Step::Deliver { from: link / n, to: link % n });
        }
        false
    }
}

/// Whether the state's violation, if any, is not of the kind `kind` picks out.
pub fn not<P: Spec, A>(w: &World<P, A>, kind: fn(&Violation) -> bool) -> bool {
    !w.sim.violation().is_some_and(kind)
}

impl<S: Scenario> Model for Explore<S> {
    type State = State<S>;
    type Action = Step<S::Op>;

    fn init_states(&self) -> Vec<State<S>> {
        let mut w = self.0.init();
        w.sim = w.sim.lenient();
        w.sim.check_invariants(false);
        vec![w]
    }

    fn actions(&self, w: &State<S>, actions: &mut Vec<Step<S::Op>>) {
        if w.sim.violation().is_some() {
            return;
        }
        let mut ops = Vec::new();
        self.0.ops(w, &mut ops);
        actions.extend(ops.into_iter().map(Step::Run));
        let n = w.sim.count();
        actions.extend(w.sim.busy().into_iter().map(|l| Step::Deliver { from: l / n, to: l % n }));
    }

    fn next_state(&self, w: &State<S>, step: Step<S::Op>) -> Option<State<S>> {
        let mut next = w.clone();
        self.apply(&mut next, step);
        Some(next)
    }

    /// The properties every protocol shares, then the scenario's.
    fn properties(&self) -> Vec<Property<Self>> {
        let mut all = vec![
            Property::always("no message is rejected", |_: &Self, w: &State<S>| {
                not(w, |v| matches!(v, Violation::Rejected(_)))
            }),
            Property::always("the runtime contract holds", |_: &Self, w: &State<S>| {
                not(w, |v| matches!(v, Violation::Contract(_)))
            }),
            Property::always("no deadlock", |m: &Self, w: &State<S>| {
                w.sim.violation().is_some() || m.enabled(w) || m.0.done(w)
            }),
            Property::always("terminal states are quiescent", |m: &Self, w: &State<S>| {
                w.sim.violation().is_some() || m.enabled(w) || (m.0.done(w) && w.sim.quiescent())
            }),
            Property::always("everything outstanding can still complete", |m: &Self, w: &State<S>| {
                w.sim.violation().is_some() || m.drains(w.clone())
            }),
        ];
        all.extend(self.0.properties());
        all
    }
}

/// What one exhaustive run found.
pub struct Outcome<S: Scenario> {
    /// The checker, with its discoveries.
    pub checker: Box<dyn Checker<Explore<S>>>,
    scenario: S,
}

impl<S: Scenario> Outcome<S> {
    /// Whether a counterexample to (or, for a `sometimes` property, an example of) `property`
    /// was found.
    pub fn found(&self, property: &'static str) -> bool {
        self.checker.discovery(property).is_some()
    }

    /// Every `always` property holds, and each of the `sometimes` properties named in `reached`
    /// has an example (which ones a scenario reaches depends on it).
    ///
    /// # Panics
    /// Otherwise, with the counterexample.
    pub fn assert_holds(&self, reached: &[&str]) {
        let properties = Explore(self.scenario.clone()).properties();
        for property in &properties {
            let found = self.checker.discovery(property.name);
            match property.expectation {
                Expectation::Sometimes => {
                    let missing = found.is_none() && reached.contains(&property.name);
                    assert!(!missing, "never reached: {:?}", property.name);
                }
                _ => {
                    if let Some(path) = found {
                        panic!("{:?} fails:\n{:#?}", property.name, path.into_actions());
                    }
                }
            }
        }
        for name in reached {
            assert!(properties.iter().any(|p| p.name == *name), "no property {name:?}");
        }
    }
}

/// Explores every state of `scenario`, on `threads` checker threads (with one the search is
/// strictly breadth-first, so counterexamples are shortest), and reports its size on stderr.
pub fn check<S: Scenario>(name: &str, scenario: S, threads: usize) -> Outcome<S> {
    let started = Instant::now();
    let checker = Explore(scenario.clone()).checker().threads(threads).spawn_bfs().join();
    eprintln!(
        "{name}: {scenario:?}: {} unique states ({} generated), depth {}, {:.2?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    Outcome { checker: Box::new(checker), scenario }
}

/// The shortest counterexample to `property`, found by iterative deepening: stateright keeps the
/// *last* violating state it meets as the discovery, so a plain run may report a long path. Prints
/// it one step per line.
///
/// # Panics
/// If there is none within `max_depth` steps.
pub fn shortest_counterexample<S: Scenario>(
    scenario: &S,
    property: &'static str,
    max_depth: usize,
) -> Vec<Step<S::Op>> {
    for depth in 2..=max_depth {
        let checker = Explore(scenario.clone())
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
    panic!("no counterexample for {property:?} within {max_depth} steps");
}
