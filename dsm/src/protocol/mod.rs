//! Coherence protocols, each a pure state machine: `state + message -> new state + actions`.
//! The runtime executes the actions (send, install bytes, change protection, wake threads).

mod coherence;
pub mod lrc;
pub mod sc;

pub use coherence::{Coherence, Effect, Geometry, Message, Payload, ReleaseId};

use std::fmt;

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
