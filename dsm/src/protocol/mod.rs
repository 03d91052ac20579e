//! Coherence protocols, each a pure state machine: `state + message -> new state + actions`.
//! The runtime executes the actions (send, install bytes, change protection, wake threads).

pub mod lrc;
pub mod sc;
