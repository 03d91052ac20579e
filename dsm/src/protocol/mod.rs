//! Coherence protocols, each a pure state machine: `state + message -> new state + actions`.
//! The runtime executes the actions (send, install bytes, change protection, wake threads).

mod coherence;
pub mod lrc;
pub mod sc;

pub use coherence::{Coherence, Effect, Geometry, Message, Payload, ReleaseId};

/// The next window of an adaptive run (read-ahead, write-ahead, pulls): twice the last one when
/// the access continues a run (`last` is `Some`), else 1, and never more than `max`.
pub(crate) fn next_window(last: Option<u16>, max: u16) -> u16 {
    last.map_or(1, |w| w.saturating_mul(2).max(1)).min(max)
}

use std::fmt;
use std::marker::PhantomData;

/// A message that cannot arrive in the current state: the sender is broken (or not a peer). Every
/// protocol's `handle` returns it without changing any state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    reason: String,
}

impl ProtocolError {
    pub(crate) fn new(reason: String) -> Self {
        ProtocolError { reason }
    }

    /// A human-readable description of what was wrong.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error: {}", self.reason)
    }
}

impl std::error::Error for ProtocolError {}

/// A protocol mistake of kind `B` planted in a node on purpose, to show that the tests and the
/// model checks find it. It exists in this crate's unit-test builds only: elsewhere the field
/// holds nothing and [`Planted::is`] is a constant `false` that compiles away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Planted<B> {
    #[cfg(test)]
    bug: Option<B>,
    kind: PhantomData<B>,
}

impl<B: Copy + PartialEq> Planted<B> {
    /// No mistake.
    pub(crate) fn none() -> Self {
        Planted {
            #[cfg(test)]
            bug: None,
            kind: PhantomData,
        }
    }

    /// Plants `bug` (unit-test builds only).
    #[cfg(test)]
    pub(crate) fn plant(&mut self, bug: B) {
        self.bug = Some(bug);
    }

    /// Whether `bug` is planted: always false outside unit-test builds.
    #[inline(always)]
    pub(crate) fn is(&self, bug: B) -> bool {
        #[cfg(test)]
        {
            self.bug == Some(bug)
        }
        #[cfg(not(test))]
        {
            let _ = bug;
            false
        }
    }
}
