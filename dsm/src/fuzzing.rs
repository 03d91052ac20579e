//! Fuzz harnesses: the functions the `fuzz/` targets call, kept here so the test that replays the
//! checked-in corpus (`tests/fuzz_replay.rs`) runs exactly the same code. Each takes arbitrary
//! bytes and panics when it finds a bug; for any other input it returns quietly.
//!
//! Both run the protocol in the simulated cluster ([`crate::sim`]) through its fuzz driver
//! ([`crate::sim::fuzz`], which lists the events and the checks); how bytes decode into a
//! cluster and messages is the protocol's (`sim/sc.rs`, `sim/lrc.rs`).

use crate::protocol::lrc::LrcNode;
use crate::protocol::sc::ScNode;
use crate::sim::fuzz;

/// The sequentially consistent protocol ([`ScNode`]) on 1–4 nodes with 1–3 pages each.
pub fn sc_protocol(data: &[u8]) {
    fuzz::run::<ScNode>(data);
}

/// The release-consistent protocol ([`LrcNode`]) on 1–4 nodes with 1–3 pages each, real page
/// bytes, twins and diffs (damaged on the way, too).
pub fn lrc_protocol(data: &[u8]) {
    fuzz::run::<LrcNode>(data);
}
