//! Runtime statistics across the cluster: [`stats`] gathers every node's counters (see
//! `crate::counters`); `RTHREADS_STATS=1` prints them as a table when `main` returns;
//! [`log_protocol`] switches the protocol log on every node.

use std::fmt;

pub use crate::counters::{KINDS, KindStats, NodeStats};
use crate::counters::{decode, local, set_protocol_log};
use crate::runtime;

const T_STATS_REQ: u8 = 0x23;
const T_LOG: u8 = 0x24;

/// The messages of statistics between nodes. Tags 0x23–0x24 (see `crate::runtime::wire`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StatsMsg {
    /// Send your counters to waiter `waiter` of the sender (the answer is a synchronisation reply).
    Req { waiter: u64 },
    /// Switch the protocol log on or off.
    Log { on: bool },
}

impl StatsMsg {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = net::Writer::new();
        match *self {
            StatsMsg::Req { waiter } => w.u8(T_STATS_REQ).u64(waiter),
            StatsMsg::Log { on } => w.u8(T_LOG).u8(on as u8),
        };
        w.finish()
    }

    pub(crate) fn decode(body: &[u8]) -> Result<StatsMsg, net::DecodeError> {
        let mut r = net::Reader::new(body);
        let msg = match r.u8()? {
            T_STATS_REQ => StatsMsg::Req { waiter: r.u64()? },
            T_LOG => StatsMsg::Log { on: runtime::wire::flag(r.u8()?)? },
            t => return Err(net::DecodeError(format!("not a statistics message: tag {t:#x}"))),
        };
        r.end()?;
        Ok(msg)
    }
}

/// Decodes and re-encodes a statistics message (the fuzz harness); `None` for another tag.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn round_trip(body: &[u8]) -> Option<Result<Vec<u8>, net::DecodeError>> {
    crate::runtime::wire::round_trip_of(body, &[T_STATS_REQ, T_LOG], StatsMsg::decode, StatsMsg::encode)
}

/// Registers the statistics messages with the runtime.
pub(crate) fn register(ext: &mut runtime::Extensions) {
    ext.frames(&[T_STATS_REQ, T_LOG], on_frame);
}

fn on_frame(rt: &'static runtime::Runtime, from: u16, body: &[u8]) -> runtime::Verdict {
    match StatsMsg::decode(body) {
        Ok(StatsMsg::Req { waiter }) => {
            let reply = crate::sync::manager::Reply::Stats(crate::counters::encode(&local()));
            rt.send(from, crate::sync::wire::SyncMsg::Reply { waiter, reply }.encode());
        }
        Ok(StatsMsg::Log { on }) => set_protocol_log(on),
        Err(e) => return runtime::Verdict::Lost(format!("it sent a malformed statistics message ({e})")),
    }
    runtime::Verdict::Ok
}

/// Turns on (or off) a readable log of every coherence-protocol step, on every node: traps, messages
/// with their pages, page installs, protection changes and wake-ups, one line each on standard
/// error. Meant for small teaching runs (`examples/protocol_log.rs`), not for speed.
///
/// Returns once every node has switched (a statistics round trip to each node follows the switch
/// on the same connection), so everything the program does afterwards is logged.
///
/// # Examples
/// ```
/// rthreads::log_protocol(true); // outside a cluster: nothing moves, nothing is printed
/// rthreads::log_protocol(false);
/// ```
pub fn log_protocol(on: bool) {
    set_protocol_log(on);
    if let Some(rt) = runtime::get() {
        for n in (0..rt.nodes).filter(|&n| n != rt.me) {
            rt.send(n, StatsMsg::Log { on }.encode());
        }
        stats();
    }
}

/// Every node's counters, node 0 first. Asks every other node for its own (one round trip each).
///
/// # Examples
/// ```
/// let v: Vec<u64> = (0..10_000).collect();
/// let h = rthreads::spawn(move || v.iter().sum::<u64>());
/// h.join().unwrap();
/// let stats = rthreads::stats();
/// assert_eq!(stats.len(), rthreads::node_count());
/// assert!(stats[0].threads_started >= 1);
/// println!("{}", rthreads::StatsTable(&stats));
/// ```
pub fn stats() -> Vec<NodeStats> {
    let Some(rt) = runtime::get() else {
        return vec![local()];
    };
    let tickets: Vec<(u16, crate::sync::Ticket)> = (0..rt.nodes)
        .filter(|&n| n != rt.me)
        .map(|n| {
            let t = crate::sync::Ticket::new();
            rt.send(n, StatsMsg::Req { waiter: t.waiter().1 }.encode());
            (n, t)
        })
        .collect();
    let mut all = vec![local()];
    for (n, t) in tickets {
        match t.wait() {
            crate::sync::manager::Reply::Stats(b) => match decode(&b) {
                Ok(s) => all.push(s),
                Err(e) => runtime::fatal(&format!("node {n} sent unreadable statistics: {e}")),
            },
            other => unreachable!("stats answered {other:?}"),
        }
    }
    all.sort_by_key(|s| s.node);
    all
}

/// Formats node statistics as a table, one row per node (what `RTHREADS_STATS=1` prints).
#[derive(Debug)]
pub struct StatsTable<'a>(pub &'a [NodeStats]);

impl fmt::Display for StatsTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>4} {:>9} {:>9} {:>10} {:>9} {:>9} {:>8} {:>9} {:>11} {:>9} {:>11} {:>9} {:>9} {:>7}",
            "node",
            "rd-fault",
            "wr-fault",
            "fault-ms",
            "pages-in",
            "pages-out",
            "inval-in",
            "msgs-out",
            "bytes-out",
            "msgs-in",
            "bytes-in",
            "locks",
            "remote",
            "threads"
        )?;
        for s in self.0 {
            writeln!(
                f,
                "{:>4} {:>9} {:>9} {:>10.1} {:>9} {:>9} {:>8} {:>9} {:>11} {:>9} {:>11} {:>9} {:>9} {:>7}",
                s.node,
                s.read_faults,
                s.write_faults,
                s.fault_wait.as_secs_f64() * 1e3,
                s.pages_received,
                s.pages_sent,
                s.invalidations_received,
                s.messages_sent(),
                s.bytes_sent(),
                s.messages_received(),
                s.bytes_received(),
                s.lock_acquisitions,
                s.remote_lock_acquisitions,
                s.threads_started
            )?;
        }
        Ok(())
    }
}
