//! The deadlock watchdog: which locks each thread holds and waits for, and the cycle search that
//! turns a silent hang into a report.
//!
//! Every thread that uses `Mutex` or `RwLock` has a [`Record`] in a fixed table of this node:
//! the lock it is waiting for (with since when) and the locks it holds, as plain atomics that the
//! thread updates in a few nanoseconds per operation and the service thread reads without a lock.
//! A lock is named by its key (the address of one of its fields: the same on every node).
//!
//! When a thread of a node has waited for a lock longer than the failure timeout, the service
//! thread of that node sends node 0 a report of its threads (held and awaited locks). Node 0
//! keeps the latest report of every node and looks for a cycle among waiting threads: thread A
//! waits for a lock that B holds while B waits for one that A holds (or a longer ring). Found in
//! two reports in a row (so a wait that just ended is not mistaken for one), it is a deadlock:
//! node 0 prints the threads and locks of the ring, with what to do about it, and stops the
//! cluster (exit code 4). A long wait without a cycle (a holder that computes for a minute) is
//! never reported.
//!
//! What it does not see: locks held across `migrate` (the record stays with the old node's
//! carrier), condition variables, barriers and channels (a thread blocked there holds no lock
//! another waits for, or the cycle goes through a lock it does hold).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dsm::NodeId;
use dsm::trace::now_ms;

use crate::alloc::private_internal;
use crate::private::ServiceLock;
use crate::runtime::wire::Field;

/// Locks one thread can be seen holding at once (more are held, but not watched).
const HELD: usize = 8;
/// Threads of one node with a record.
const RECORDS: usize = 4096;

struct Record {
    /// The thread's identity (0: slot free): its rthread id, or a node-local one for other threads.
    thread: AtomicU64,
    /// The lock it waits for (0: none), and since when (ms of the monotonic clock; 0 until the
    /// service thread first sees the wait: the waiting thread does not read the clock, which would
    /// cost more than the rest of an uncontended lock).
    waiting: AtomicU64,
    since_ms: AtomicU64,
    held: [AtomicU64; HELD],
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const FREE: Record = Record { thread: ZERO, waiting: ZERO, since_ms: ZERO, held: [ZERO; HELD] };
static TABLE: [Record; RECORDS] = [FREE; RECORDS];
/// Slots ever used: the scan stops there.
static USED: AtomicUsize = AtomicUsize::new(0);
/// Thread names by identity, for reports (set when a thread starts; read by the service thread).
static NAMES: ServiceLock<Option<HashMap<u64, String>>> = ServiceLock::new("sync.watch.names", None);

thread_local! {
    /// This OS thread's record (null: none yet).
    static MINE: Cell<*const Record> = const { Cell::new(std::ptr::null()) };
    /// Releases the record when the OS thread ends.
    static OWNER: Owner = const { Owner };
}

struct Owner;

impl Drop for Owner {
    fn drop(&mut self) {
        let_go();
    }
}

/// Frees the calling thread's record, if it has one.
fn let_go() {
    // SAFETY: null or a pointer into the static table.
    if let Some(r) = unsafe { MINE.replace(std::ptr::null()).as_ref() } {
        clear(r);
        r.thread.store(0, Ordering::SeqCst);
    }
}

fn clear(r: &Record) {
    r.waiting.store(0, Ordering::SeqCst);
    for h in &r.held {
        h.store(0, Ordering::SeqCst);
    }
}

/// The calling thread's record, claimed on first use.
fn mine() -> Option<&'static Record> {
    // SAFETY: null or a pointer into the static table.
    if let Some(r) = unsafe { MINE.get().as_ref() } {
        return Some(r);
    }
    crate::runtime::get()?;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u64;
    let me = u64::from(crate::log::node().0);
    // Threads that are not rthreads: node number, a flag bit, and the OS thread id.
    let id = (me << 48) | (1 << 47) | tid;
    claim(id, None)
}

fn claim(id: u64, name: Option<String>) -> Option<&'static Record> {
    let slot = TABLE.iter().enumerate().find_map(|(i, r)| {
        r.thread.compare_exchange(0, id, Ordering::SeqCst, Ordering::SeqCst).is_ok().then_some((i, r))
    });
    let (i, r) = slot?;
    clear(r);
    USED.fetch_max(i + 1, Ordering::SeqCst);
    MINE.with(|m| m.set(r));
    OWNER.with(|_| {});
    let name = name.or_else(|| std::thread::current().name().map(str::to_owned));
    private_internal(move || {
        let name = name.map(|n| n.as_str().to_owned());
        let mut names = NAMES.lock();
        let names = names.get_or_insert_with(HashMap::new);
        match name {
            Some(n) => names.insert(id, n),
            None => names.remove(&id),
        };
    });
    Some(r)
}

/// The carrier of rthread `tid` (named `name`) starts running it: the thread's locks are recorded
/// under that identity from now on.
pub(crate) fn thread_starts(tid: u64, name: Option<&str>) {
    let_go();
    claim(tid, name.map(str::to_owned));
}

/// The calling thread is about to wait for lock `key`.
pub(crate) fn waiting(key: u64) {
    if let Some(r) = mine() {
        r.since_ms.store(0, Ordering::SeqCst);
        r.waiting.store(key, Ordering::SeqCst);
    }
}

/// The calling thread now holds lock `key` (and waits for nothing).
pub(crate) fn acquired(key: u64) {
    if let Some(r) = mine() {
        r.waiting.store(0, Ordering::SeqCst);
        if let Some(h) = r.held.iter().find(|h| h.load(Ordering::Relaxed) == 0) {
            h.store(key, Ordering::SeqCst);
        }
    }
}

/// The calling thread let go of lock `key`.
pub(crate) fn released(key: u64) {
    if let Some(r) = mine()
        && let Some(h) = r.held.iter().find(|h| h.load(Ordering::Relaxed) == key)
    {
        h.store(0, Ordering::SeqCst);
    }
}

/// One thread's locks, as a report carries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ThreadLocks {
    pub(crate) thread: u64,
    pub(crate) name: String,
    pub(crate) waiting: u64,
    pub(crate) waited_ms: u64,
    pub(crate) held: Vec<u64>,
}

/// Whether a thread of this node has waited for a lock longer than `limit_ms` (service thread, a
/// few times a second: a wait is timed from the first of these calls that sees it).
pub(crate) fn long_wait(limit_ms: u64) -> bool {
    let now = now_ms();
    let waits = TABLE[..USED.load(Ordering::SeqCst)]
        .iter()
        .filter(|r| r.thread.load(Ordering::SeqCst) != 0 && r.waiting.load(Ordering::SeqCst) != 0);
    // Not `any`: every wait is timed from its first sight.
    waits.fold(false, |long, r| {
        let since = r.since_ms.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
        long | (now.saturating_sub(since.map_or_else(|t| t, |_| now)) > limit_ms)
    })
}

/// Every thread of this node that holds or waits for a lock (on a private stack).
pub(crate) fn snapshot() -> Vec<ThreadLocks> {
    let now = now_ms();
    let mut out = Vec::new();
    for r in &TABLE[..USED.load(Ordering::SeqCst)] {
        let thread = r.thread.load(Ordering::SeqCst);
        if thread == 0 {
            continue;
        }
        let waiting = r.waiting.load(Ordering::SeqCst);
        let held: Vec<u64> = r.held.iter().map(|h| h.load(Ordering::SeqCst)).filter(|&k| k != 0).collect();
        if waiting == 0 && held.is_empty() {
            continue;
        }
        let since = r.since_ms.load(Ordering::SeqCst);
        let waited_ms = if waiting == 0 || since == 0 { 0 } else { now.saturating_sub(since) };
        out.push(ThreadLocks { thread, name: String::new(), waiting, waited_ms, held });
    }
    if let Some(names) = NAMES.lock().as_ref() {
        for t in &mut out {
            t.name = names.get(&t.thread).cloned().unwrap_or_default();
        }
    }
    out
}

/// The watchdog's periodic work on every node (a tick of the service thread): a few times a second,
/// if a thread here has waited for a lock longer than the failure timeout, reports this node's
/// threads to node 0 (at most once a second).
pub(crate) fn tick(rt: &'static crate::runtime::Runtime) -> crate::runtime::Verdict {
    static LAST_CHECK: AtomicU64 = AtomicU64::new(0);
    static LAST_REPORT: AtomicU64 = AtomicU64::new(0);
    let now = now_ms();
    if now.saturating_sub(LAST_CHECK.load(Ordering::Relaxed)) < 250 {
        return crate::runtime::Verdict::Ok;
    }
    LAST_CHECK.store(now, Ordering::Relaxed);
    let limit_ms = rt.failure_timeout.as_millis() as u64;
    if !long_wait(limit_ms) || now.saturating_sub(LAST_REPORT.load(Ordering::Relaxed)) < 1000 {
        return crate::runtime::Verdict::Ok;
    }
    LAST_REPORT.store(now, Ordering::Relaxed);
    let threads = snapshot();
    if rt.me == NodeId(0) {
        return on_report(rt, rt.me, threads);
    }
    let _internal = crate::alloc::InternalAlloc::new();
    rt.send(NodeId(0), super::wire::SyncMsg::Locks { threads }.encode());
    crate::runtime::Verdict::Ok
}

/// What node 0 knows of every node's locks: the latest report of each, and the ring it found last.
struct Detector {
    reports: HashMap<NodeId, (u64, Vec<ThreadLocks>)>,
    last_ring: Option<Vec<u64>>,
}

static DETECTOR: ServiceLock<Option<Detector>> = ServiceLock::new("sync.watch.detector", None);

/// Node 0: node `from` reports the locks its threads hold and wait for; a ring of threads that
/// wait for each other, seen twice in a row, stops the cluster (service thread).
pub(crate) fn on_report(
    rt: &'static crate::runtime::Runtime,
    from: NodeId,
    threads: Vec<ThreadLocks>,
) -> crate::runtime::Verdict {
    let _internal = crate::alloc::InternalAlloc::new();
    let now = now_ms();
    let limit_ms = rt.failure_timeout.as_millis() as u64;
    let mut d = DETECTOR.lock();
    let d = d.get_or_insert_with(|| Detector { reports: HashMap::new(), last_ring: None });
    d.reports.insert(from, (now, threads));
    // Only fresh reports count: a node reports every second while a wait lasts.
    d.reports.retain(|_, (at, _)| now.saturating_sub(*at) < 2500);
    let current: HashMap<NodeId, Vec<ThreadLocks>> =
        d.reports.iter().map(|(&n, (_, t))| (n, t.clone())).collect();
    let ring = find_cycle(&current, limit_ms);
    let ids = ring.as_ref().map(|r| {
        let mut ids: Vec<u64> = r.iter().map(|l| l.locks.thread).collect();
        ids.sort_unstable();
        ids
    });
    let seen_twice = ids.is_some() && d.last_ring == ids;
    d.last_ring = ids;
    match ring {
        Some(ring) if seen_twice => crate::runtime::Verdict::Stop {
            code: crate::runtime::EXIT_STUCK,
            report: describe(&ring, limit_ms),
            short: "it found a deadlock between threads (see its report)".into(),
        },
        _ => crate::runtime::Verdict::Ok,
    }
}

/// A thread of a ring: its node, its locks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) node: NodeId,
    pub(crate) locks: ThreadLocks,
}

/// The ring of threads (each waiting for a lock the next one holds), among those that waited
/// longer than `limit_ms`, if there is one. Pure: `reports` maps a node to its threads.
pub(crate) fn find_cycle(reports: &HashMap<NodeId, Vec<ThreadLocks>>, limit_ms: u64) -> Option<Vec<Link>> {
    let mut threads: HashMap<u64, Link> = HashMap::new();
    let mut holders: HashMap<u64, Vec<u64>> = HashMap::new();
    for (&node, list) in reports {
        for t in list {
            for &k in &t.held {
                holders.entry(k).or_default().push(t.thread);
            }
            threads.insert(t.thread, Link { node, locks: t.clone() });
        }
    }
    // From each long-waiting thread, follow "waits for a lock held by"; a thread seen again on the
    // current path closes a ring.
    let waits_on = |t: &Link| -> Vec<u64> {
        if t.locks.waiting == 0 || t.locks.waited_ms <= limit_ms {
            return Vec::new();
        }
        holders
            .get(&t.locks.waiting)
            .map(|h| h.iter().copied().filter(|&o| o != t.locks.thread).collect())
            .unwrap_or_default()
    };
    let mut starts: Vec<u64> = threads.keys().copied().collect();
    starts.sort_unstable();
    for start in starts {
        let mut path = vec![start];
        let mut next = vec![waits_on(&threads[&start])];
        while let Some(options) = next.last_mut() {
            let Some(o) = options.pop() else {
                next.pop();
                path.pop();
                continue;
            };
            if let Some(at) = path.iter().position(|&p| p == o) {
                return Some(path[at..].iter().map(|t| threads[t].clone()).collect());
            }
            if let Some(t) = threads.get(&o)
                && path.len() < 64
            {
                path.push(o);
                next.push(waits_on(t));
            }
        }
    }
    None
}

/// The message for a ring of threads that wait for each other.
pub(crate) fn describe(ring: &[Link], limit_ms: u64) -> String {
    let who = |l: &Link| {
        let name = if l.locks.name.is_empty() { "<unnamed>" } else { l.locks.name.as_str() };
        format!("thread '{name}' (id {:#x}) on {}", l.locks.thread, l.node)
    };
    let mut s = format!(
        "deadlock: {} threads wait for each other's locks, and none has moved for more than {:.1} s \
         (RTHREADS_FAILURE_TIMEOUT):\n",
        ring.len(),
        limit_ms as f64 / 1000.0
    );
    for (i, l) in ring.iter().enumerate() {
        let next = &ring[(i + 1) % ring.len()];
        s.push_str(&format!(
            "  {} holds the lock at {:#x} and waits {:.1} s for the lock at {:#x}, held by {}\n",
            who(l),
            next_held(l, ring, i),
            l.locks.waited_ms as f64 / 1000.0,
            l.locks.waiting,
            who(next),
        ));
    }
    s.push_str(
        "Each waits for a lock that the next one holds, in a ring, so none of them can go on. The \
         addresses are those of the `rthreads::sync::Mutex`/`RwLock` objects (the same on every \
         node). Fix: take these locks in one fixed order in every thread, or hold one at a time. \
         Stopping the cluster (exit code 4).",
    );
    s
}

/// The lock `ring[i]` holds that the thread before it in the ring waits for.
fn next_held(l: &Link, ring: &[Link], i: usize) -> u64 {
    let prev = &ring[(i + ring.len() - 1) % ring.len()];
    if l.locks.held.contains(&prev.locks.waiting) {
        prev.locks.waiting
    } else {
        l.locks.held.first().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(thread: u64, waiting: u64, waited_ms: u64, held: &[u64]) -> ThreadLocks {
        ThreadLocks { thread, name: format!("t{thread}"), waiting, waited_ms, held: held.to_vec() }
    }

    #[test]
    fn a_ring_of_two_over_two_nodes_is_found() {
        let mut r = HashMap::new();
        r.insert(NodeId(1), vec![t(10, 0xB, 6000, &[0xA])]);
        r.insert(NodeId(2), vec![t(20, 0xA, 6000, &[0xB]), t(21, 0, 0, &[0xC])]);
        let ring = find_cycle(&r, 5000).expect("a ring");
        let mut ids: Vec<u64> = ring.iter().map(|l| l.locks.thread).collect();
        ids.sort_unstable();
        assert_eq!(ids, [10, 20]);
        let text = describe(&ring, 5000);
        assert!(
            text.contains("0xa") && text.contains("0xb") && text.contains("'t10'") && text.contains("'t20'"),
            "{text}"
        );
    }

    #[test]
    fn long_waits_without_a_ring_and_short_rings_are_not_deadlocks() {
        let mut r = HashMap::new();
        // 10 waits long for a lock 20 holds while 20 computes: no ring.
        r.insert(NodeId(1), vec![t(10, 0xB, 60_000, &[])]);
        r.insert(NodeId(2), vec![t(20, 0, 0, &[0xB])]);
        assert_eq!(find_cycle(&r, 5000), None);
        // A ring whose waits are still young.
        let mut r = HashMap::new();
        r.insert(NodeId(1), vec![t(10, 0xB, 100, &[0xA])]);
        r.insert(NodeId(2), vec![t(20, 0xA, 100, &[0xB])]);
        assert_eq!(find_cycle(&r, 5000), None);
    }

    #[test]
    fn a_ring_of_three_behind_a_bystander_is_found() {
        let mut r = HashMap::new();
        r.insert(NodeId(0), vec![t(1, 0xA, 9000, &[]), t(2, 0xB, 9000, &[0xA])]);
        r.insert(NodeId(1), vec![t(3, 0xC, 9000, &[0xB])]);
        r.insert(NodeId(2), vec![t(4, 0xA, 9000, &[0xC])]);
        let ring = find_cycle(&r, 5000).expect("a ring");
        let mut ids: Vec<u64> = ring.iter().map(|l| l.locks.thread).collect();
        ids.sort_unstable();
        assert_eq!(ids, [2, 3, 4]);
    }
}
