//! What this node counts, and the protocol log: a leaf of the module graph, used by every layer.
//!
//! Every node counts, with relaxed atomics (a few nanoseconds per event), the traps its fault
//! handler served and the time threads spent blocked in them, pages it sent and received,
//! invalidations and recalls it received, every message and byte it sent and received by kind,
//! lock acquisitions (and how many needed an answer from another node), barrier waits and threads
//! started. `crate::stats` gathers every node's counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use net::{Reader, Writer};

/// The kinds of message counted separately.
pub const KINDS: [&str; 22] = [
    "read request",
    "write request",
    "grant",
    "invalidate",
    "invalidate ack",
    "recall",
    "recall ack",
    "spawn",
    "thread done",
    "join watch",
    "thread finished",
    "join forget",
    "free",
    "shutdown",
    "sync request",
    "sync reply",
    "lock revoke",
    "stats",
    "release consistency",
    "load report",
    "drop copy",
    "other",
];

/// The counter slot of a frame, from its first bytes.
pub(crate) fn kind_of(frame: &[u8]) -> usize {
    match (frame.first(), frame.get(1)) {
        (Some(0x10), Some(&k)) if (1..=7).contains(&k) => usize::from(k) - 1,
        (Some(0x10), Some(8 | 9)) => 20,
        // A read request answered at the home's barrier arrival (`ReadSoon`).
        (Some(0x10), Some(10)) => 0,
        (Some(&t), _) if (0x11..=0x17).contains(&t) => 7 + usize::from(t - 0x11),
        (Some(&t), _) if (0x20..=0x23).contains(&t) => 14 + usize::from(t - 0x20),
        (Some(0x1A), _) => 18,
        // A load report, sent directly (0x26) or passed on up the tree (0x1D).
        (Some(0x26 | 0x1D), _) => 19,
        // A frame ordered after others (`Core::Ordered`: tag, `after`, the frame): what it holds.
        (Some(0x25), _) if frame.len() > 9 => kind_of(&frame[9..]),
        // A direct page read and its grant (`dsm::fault::direct`).
        (Some(&dsm::fault::direct::T_PAGE_READ), _) => 0,
        (Some(&dsm::fault::direct::T_PAGE_GRANT), _) => 2,
        _ => 21,
    }
}

struct Counters {
    /// Per kind: messages sent, bytes sent, messages received, bytes received.
    by_kind: [[AtomicU64; 4]; KINDS.len()],
    locks: AtomicU64,
    remote_locks: AtomicU64,
    barriers: AtomicU64,
    threads: AtomicU64,
    moved: AtomicU64,
    stack_bytes: AtomicU64,
    sync_wait_ns: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZEROS: [AtomicU64; 4] = [ZERO; 4];
static COUNTERS: Counters = Counters {
    by_kind: [ZEROS; KINDS.len()],
    locks: ZERO,
    remote_locks: ZERO,
    barriers: ZERO,
    threads: ZERO,
    moved: ZERO,
    stack_bytes: ZERO,
    sync_wait_ns: ZERO,
};

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A frame of `len` bytes (page included) starting with `head` left this node.
pub(crate) fn sent(head: &[u8], len: usize) {
    let c = &COUNTERS.by_kind[kind_of(head)];
    add(&c[0], 1);
    add(&c[1], len as u64 + 4);
}

/// A frame arrived.
pub(crate) fn received(body: &[u8]) {
    let c = &COUNTERS.by_kind[kind_of(body)];
    add(&c[2], 1);
    add(&c[3], body.len() as u64 + 4);
}

/// A lock was acquired; `remote`: it took an answer from another node.
pub(crate) fn lock_acquired(remote: bool) {
    add(&COUNTERS.locks, 1);
    add(&COUNTERS.remote_locks, u64::from(remote));
}

pub(crate) fn barrier_waited() {
    add(&COUNTERS.barriers, 1);
}

/// A thread spent `d` blocked in a synchronisation operation (waiting for a lock, a barrier, a
/// message, a remote answer).
/// What a synchronisation wait was for (the trace names it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    Lock = 1,
    Barrier = 2,
    Channel = 3,
    Condvar = 4,
    Join = 5,
    Other = 6,
}

impl Wait {
    /// The trace's name for it.
    pub(crate) fn name(code: u64) -> &'static str {
        const NAMES: [&str; 5] = ["lock wait", "barrier wait", "channel wait", "condvar wait", "join wait"];
        code.checked_sub(1).and_then(|i| NAMES.get(i as usize)).copied().unwrap_or("sync wait")
    }
}

pub(crate) fn sync_waited(d: Duration, what: Wait) {
    add(&COUNTERS.sync_wait_ns, d.as_nanos() as u64);
    if dsm::trace::enabled() {
        let now = dsm::trace::now_ns();
        let t0 = now.saturating_sub(d.as_nanos() as u64);
        dsm::trace::record(dsm::trace::EventKind::SyncWait, t0, now, u64::MAX, what as u64);
    }
}

/// A release or acquire of the release-consistent protocol made a thread wait `d`.
pub(crate) fn consistency_waited(d: Duration) {
    add(&COUNTERS.sync_wait_ns, d.as_nanos() as u64);
}

pub(crate) fn thread_started() {
    add(&COUNTERS.threads, 1);
    if dsm::trace::enabled() {
        let now = dsm::trace::now_ns();
        dsm::trace::record(dsm::trace::EventKind::ThreadStart, now, now, u64::MAX, 0);
    }
}

/// A thread left this node for another (`migrate`).
pub(crate) fn thread_moved() {
    add(&COUNTERS.moved, 1);
}

/// A thread arrived with `live` bytes of stack in use.
pub(crate) fn stack_moved(live: usize) {
    add(&COUNTERS.stack_bytes, live as u64);
}

/// Messages and bytes of one kind, as counted by one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// The kind's name (one of [`KINDS`]).
    pub kind: &'static str,
    /// Messages sent.
    pub sent: u64,
    /// Bytes sent, frame headers and pages included.
    pub sent_bytes: u64,
    /// Messages received.
    pub received: u64,
    /// Bytes received.
    pub received_bytes: u64,
}

/// One node's counters since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// The node.
    pub node: usize,
    /// Traps on loads from pages the node had no copy of.
    pub read_faults: u64,
    /// Traps on stores to pages the node could not write.
    pub write_faults: u64,
    /// Total time application threads spent blocked in traps.
    pub fault_wait: Duration,
    /// Pages sent (grants with data and recall answers).
    pub pages_sent: u64,
    /// Pages received.
    pub pages_received: u64,
    /// Read faults the faulting thread served itself, asking the page's home directly instead of
    /// through this node's service thread (`RTHREADS_DIRECT_READS`); counted in `read_faults` and
    /// `pages_received` too.
    pub direct_reads: u64,
    /// Orders to drop a read copy received.
    pub invalidations_received: u64,
    /// Orders to give back a writable page received.
    pub recalls_received: u64,
    /// Lock acquisitions (`Mutex`, `RwLock`, `Once`).
    pub lock_acquisitions: u64,
    /// Lock acquisitions that waited for an answer from another node.
    pub remote_lock_acquisitions: u64,
    /// `Barrier::wait` calls.
    pub barrier_waits: u64,
    /// Threads started on this node.
    pub threads_started: u64,
    /// Threads that migrated away from this node.
    pub threads_moved_out: u64,
    /// Bytes of live stack (from the stack pointer up) that threads arriving here had.
    pub stack_bytes_arrived: u64,
    /// Total time threads spent blocked in synchronisation (locks, barriers, channels, joins).
    pub sync_wait: Duration,
    /// Messages and bytes by kind.
    pub by_kind: Vec<KindStats>,
}

impl NodeStats {
    /// Messages sent, all kinds.
    pub fn messages_sent(&self) -> u64 {
        self.by_kind.iter().map(|k| k.sent).sum()
    }
    /// Bytes sent, all kinds.
    pub fn bytes_sent(&self) -> u64 {
        self.by_kind.iter().map(|k| k.sent_bytes).sum()
    }
    /// Messages received, all kinds.
    pub fn messages_received(&self) -> u64 {
        self.by_kind.iter().map(|k| k.received).sum()
    }
    /// Bytes received, all kinds.
    pub fn bytes_received(&self) -> u64 {
        self.by_kind.iter().map(|k| k.received_bytes).sum()
    }
    fn kind(&self, name: &str) -> &KindStats {
        self.by_kind.iter().find(|k| k.kind == name).expect("known kind")
    }
}

/// This node's counters.
pub(crate) fn local() -> NodeStats {
    let f = dsm::fault::counters();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let by_kind: Vec<KindStats> = (KINDS.iter().zip(&COUNTERS.by_kind))
        .map(|(&kind, c)| {
            let [sent, sent_bytes, received, received_bytes] = c.each_ref().map(load);
            KindStats { kind, sent, sent_bytes, received, received_bytes }
        })
        .collect();
    let mut s = NodeStats {
        node: crate::log::node().index(),
        read_faults: f.read,
        write_faults: f.write,
        fault_wait: Duration::from_nanos(f.wait_ns),
        lock_acquisitions: load(&COUNTERS.locks),
        remote_lock_acquisitions: load(&COUNTERS.remote_locks),
        barrier_waits: load(&COUNTERS.barriers),
        threads_started: load(&COUNTERS.threads),
        threads_moved_out: load(&COUNTERS.moved),
        stack_bytes_arrived: load(&COUNTERS.stack_bytes),
        sync_wait: Duration::from_nanos(load(&COUNTERS.sync_wait_ns)),
        by_kind,
        ..NodeStats::default()
    };
    // Pages travel with grants (when they carry data) and with recall answers.
    s.direct_reads = dsm::fault::direct::done();
    s.pages_received = load(&PAGES_IN) + s.direct_reads;
    s.pages_sent = load(&PAGES_OUT);
    s.invalidations_received = s.kind("invalidate").received;
    s.recalls_received = s.kind("recall").received;
    s
}

static PAGES_IN: AtomicU64 = AtomicU64::new(0);
static PAGES_OUT: AtomicU64 = AtomicU64::new(0);

/// A page's bytes left (`out`) or arrived at this node.
pub(crate) fn page(out: bool) {
    add(if out { &PAGES_OUT } else { &PAGES_IN }, 1);
}

static LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn set_protocol_log(on: bool) {
    LOG.store(on, Ordering::SeqCst);
    // The log shows each step of the ordinary way; a direct read would skip most of them.
    dsm::fault::direct::pause(on);
}

fn logging() -> bool {
    LOG.load(Ordering::Relaxed)
}

/// Writes one line to standard error with a single `write(2)`: never through std's `Stderr`, whose
/// lock an application thread may hold while it waits for this (service) thread.
/// The line starts with `[node N] `.
fn log_line(line: String) {
    crate::alloc::private_internal(move || {
        let line = format!("[{}] {line}\n", crate::log::node());
        // A short or failed write only loses a log line.
        dsm::sys::write_all_raw(2, line.as_bytes());
    });
}

fn page_name(page: dsm::PageId, per_node: u64) -> String {
    format!("page {} (home node {}, #{})", page.0, page.0 / per_node.max(1), page.0 % per_node.max(1))
}

pub(crate) fn log_fault(page: dsm::PageId, kind: dsm::FaultKind, per_node: u64) {
    if logging() {
        let what = if kind == dsm::FaultKind::Read { "a read of" } else { "a write to" };
        log_line(format!("a thread traps on {what} {}", page_name(page, per_node)));
    }
}

/// Logs one effect of a protocol (when the protocol log is on), whatever the protocol: what each
/// message says comes from the protocol itself (`dsm::protocol::Message::explain`).
pub(crate) fn log_effect<M: dsm::protocol::Message>(e: &dsm::protocol::Effect<M>, per_node: u64) {
    use dsm::protocol::Effect;
    if !logging() {
        return;
    }
    // `Access` in its order: None, Read, Write.
    let access = |a: dsm::Access| ["no access", "read-only", "read-write"][a as usize];
    let name = |page| page_name(page, per_node);
    let line = match e {
        Effect::Send { to, msg } => format!("-> {to}: {}", msg.explain(&name(msg.page()))),
        Effect::Install { page } => format!("copies the received bytes of {}", name(*page)),
        Effect::Twin { page } => format!("keeps a twin of {} before writing it", name(*page)),
        Effect::ApplyDiff { page } => format!("applies the received diff to {}", name(*page)),
        Effect::Protect { page, access: acc } => format!("{} is now {} here", name(*page), access(*acc)),
        Effect::Wake { page } => format!("threads waiting for {} run again", name(*page)),
        Effect::Released { release } => format!("release {} is complete", release.0),
    };
    log_line(line);
}

impl NodeStats {
    /// The plain counts, in the order they travel.
    fn counts(&mut self) -> [&mut u64; 13] {
        [
            &mut self.read_faults,
            &mut self.direct_reads,
            &mut self.write_faults,
            &mut self.pages_sent,
            &mut self.pages_received,
            &mut self.invalidations_received,
            &mut self.recalls_received,
            &mut self.lock_acquisitions,
            &mut self.remote_lock_acquisitions,
            &mut self.barrier_waits,
            &mut self.threads_started,
            &mut self.threads_moved_out,
            &mut self.stack_bytes_arrived,
        ]
    }
}

pub(crate) fn encode(s: &NodeStats) -> Vec<u8> {
    let mut w = Writer::new();
    w.u64(s.node as u64).u64(s.fault_wait.as_nanos() as u64).u64(s.sync_wait.as_nanos() as u64);
    for c in s.clone().counts() {
        w.u64(*c);
    }
    for k in &s.by_kind {
        w.u64(k.sent).u64(k.sent_bytes).u64(k.received).u64(k.received_bytes);
    }
    w.finish()
}

pub(crate) fn decode(b: &[u8]) -> Result<NodeStats, net::DecodeError> {
    let mut r = Reader::new(b);
    let (node, fault_wait, sync_wait) = (r.u64()? as usize, r.u64()?, r.u64()?);
    let (fault_wait, sync_wait) = (Duration::from_nanos(fault_wait), Duration::from_nanos(sync_wait));
    let mut s = NodeStats { node, fault_wait, sync_wait, ..NodeStats::default() };
    for c in s.counts() {
        *c = r.u64()?;
    }
    for kind in KINDS {
        let (sent, sent_bytes, received, received_bytes) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        s.by_kind.push(KindStats { kind, sent, sent_bytes, received, received_bytes });
    }
    r.end()?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_under_their_kind() {
        assert_eq!(KINDS[kind_of(&[0x10, 1])], "read request");
        assert_eq!(KINDS[kind_of(&[0x10, 7])], "recall ack");
        assert_eq!(KINDS[kind_of(&[0x11])], "spawn");
        assert_eq!(KINDS[kind_of(&[0x17])], "shutdown");
        assert_eq!(KINDS[kind_of(&[0x21])], "sync reply");
        assert_eq!(KINDS[kind_of(&[0x26])], "load report");
        // An ordered frame counts as what it holds; direct page reads as requests and grants.
        assert_eq!(KINDS[kind_of(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0x3A, 1])], "read request");
        assert_eq!(KINDS[kind_of(&[0x3B, 1])], "grant");
        assert_eq!(KINDS[kind_of(&[0x10, 9])], "drop copy");
        assert_eq!(KINDS[kind_of(&[0x10, 10])], "read request");
        assert_eq!(KINDS[kind_of(&[0x10, 11])], "other");
        assert_eq!(KINDS[kind_of(&[])], "other");
    }

    #[test]
    fn node_stats_round_trip_and_truncation_is_an_error() {
        let mut s = local();
        s.node = 3;
        s.read_faults = 11;
        s.by_kind[2].sent_bytes = 4096;
        let b = encode(&s);
        assert_eq!(decode(&b).unwrap(), s);
        assert!(decode(&b[..b.len() - 1]).is_err());
    }
}
