//! Runtime statistics across the cluster: [`stats`] gathers every node's counters (see
//! `crate::counters`); `RTHREADS_STATS=1` prints them as a table when `main` returns;
//! [`log_protocol`] switches the protocol log on every node.

use std::fmt;

pub use crate::counters::{KINDS, KindStats, NodeStats};
use crate::counters::{decode, local, set_protocol_log};
use crate::runtime;
use crate::runtime::wire::{Field, wire_enum};

const T_STATS_REQ: u8 = 0x23;
const T_LOG: u8 = 0x24;
pub(crate) const TAGS: [u8; 2] = [T_STATS_REQ, T_LOG];

/// The messages of statistics between nodes. Tags 0x23–0x24 (see `crate::runtime::wire`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StatsMsg {
    /// Send your counters to waiter `waiter` of the sender (the answer is a synchronisation reply).
    Req { waiter: u64 },
    /// Switch the protocol log on or off.
    Log { on: bool },
}

wire_enum! { StatsMsg, "not a statistics message: tag {:#x}";
    T_STATS_REQ => Req { waiter: u64 },
    T_LOG => Log { on: bool },
}

/// Registers the statistics messages with the runtime.
pub(crate) fn register(ext: &mut runtime::Extensions) {
    ext.frames(&TAGS, on_frame);
}

fn on_frame(rt: &'static runtime::Runtime, from: dsm::NodeId, body: &[u8]) -> runtime::Verdict {
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
        for n in rt.peers() {
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
    let Some(rt) = runtime::get() else { return vec![local()] };
    let tickets: Vec<_> = rt
        .peers()
        .map(|n| {
            let t = crate::sync::Ticket::new();
            rt.send(n, StatsMsg::Req { waiter: t.waiter().1 }.encode());
            (n, t)
        })
        .collect();
    let mut all = vec![local()];
    for (n, t) in tickets {
        let reply = t.wait();
        let crate::sync::manager::Reply::Stats(b) = reply else { unreachable!("stats answered {reply:?}") };
        all.push(
            decode(&b).unwrap_or_else(|e| runtime::fatal(&format!("{n} sent unreadable statistics: {e}"))),
        );
    }
    all.sort_by_key(|s| s.node);
    all
}

/// Formats node statistics as a table, one row per node (what `RTHREADS_STATS=1` prints).
#[derive(Debug)]
pub struct StatsTable<'a>(pub &'a [NodeStats]);

impl fmt::Display for StatsTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The columns of the rows below, right-aligned to their widths.
        f.write_str(concat!(
            "node  rd-fault  wr-fault   fault-ms  pages-in pages-out inval-in  msgs-out  ",
            " bytes-out   msgs-in    bytes-in     locks    remote threads\n"
        ))?;
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
