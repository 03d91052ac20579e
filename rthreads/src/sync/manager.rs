//! The per-node synchronisation manager: a pure state machine that owns the queues of every lock,
//! condition variable and channel homed at this node (barriers combine in a tree instead: see
//! `super::tree`).
//!
//! Each synchronisation object is identified by a *key* (the address of one of its own fields, which
//! no other live object can share) and managed by one node, its *manager*: the home node of that
//! address. Requests from any node go to the manager; it answers waiters directly, and for
//! condition variables it acts on behalf of the waiter (releasing and later re-acquiring the mutex),
//! so a hand-off costs one message where the manager is involved anyway. Waiting threads never spin
//! on a remote page: they sleep on their node until a reply arrives.
//!
//! `handle(request) -> Vec<Out>` has no I/O: the runtime delivers the outputs.

use dsm::NodeId;

use crate::counters::Wait;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// A thread waiting for a reply: its node and a per-node waiter id.
pub(crate) type Waiter = (NodeId, u64);

/// What the manager was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Lock {
        shared: bool,
    },
    TryLock {
        shared: bool,
    },
    /// An exclusive lock for a node's agent, which may keep it after use until revoked.
    CacheLock,
    /// As `CacheLock`, only if free now, or held by an agent that turns out to be idle.
    CacheTryLock,
    /// From an agent asked to give back a lock: it is in use, it will come back at the unlock.
    RevokeBusy,
    Unlock {
        shared: bool,
    },
    /// Queue the waiter on the condition variable, then release `mutex` on its behalf.
    CvWait {
        mutex: u64,
    },
    CvNotify {
        all: bool,
    },
    CvCancel,
    Barrier {
        n: u64,
    },
    /// Create the channel state (on the channel's home, when the channel is made).
    ChanCreate {
        bound: Option<u64>,
    },
    /// An asynchronous send (no reply) or, with `sync`, one acknowledged once accepted.
    ChanSend {
        sender: u64,
        seq: u64,
        bytes: Vec<u8>,
        sync: bool,
    },
    ChanTrySend {
        bytes: Vec<u8>,
    },
    ChanRecv {
        block: bool,
        max: u64,
    },
    ChanRecvCancel,
    ChanClone,
    ChanSenderDrop {
        sender: u64,
        final_seq: u64,
    },
    ChanReceiverDrop,
}

impl Op {
    /// Whether the manager answers this operation (possibly much later).
    pub(crate) fn expects_reply(&self) -> bool {
        !matches!(
            self,
            Op::Unlock { .. }
                | Op::RevokeBusy
                | Op::CvNotify { .. }
                | Op::ChanCreate { .. }
                | Op::ChanSend { sync: false, .. }
                | Op::ChanSenderDrop { .. }
        )
    }
}

/// A request for the object `key`, on behalf of `waiter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub key: u64,
    pub waiter: Waiter,
    pub op: Op,
}

/// What a waiter is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Granted,
    NotGranted,
    CvRemoved,
    CvLate,
    Barrier {
        leader: bool,
    },
    Ack,
    Full(Vec<u8>),
    Disconnected(Vec<u8>),
    Empty,
    /// `count` messages of equal size, concatenated.
    Msgs {
        count: u64,
        bytes: Vec<u8>,
    },
    Cancelled,
    /// A node's encoded statistics (see `stats`).
    Stats(Vec<u8>),
}

/// An output of the manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Out {
    Reply {
        to: Waiter,
        reply: Reply,
    },
    /// A request for another object (a mutex, from a condition variable), to be routed to that
    /// object's manager.
    Forward(Request),
    /// Ask the agent of node `to`, which keeps the lock `key`, to give it back.
    Revoke {
        to: NodeId,
        key: u64,
    },
}

/// What a queued or probing request wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Read,
    Write,
    /// Write, by a node's agent that may keep the lock after use.
    CachedWrite,
}

impl Want {
    fn of(shared: bool) -> Want {
        if shared { Want::Read } else { Want::Write }
    }
}

#[derive(Default, Debug)]
struct LockState {
    writer: bool,
    readers: u64,
    queue: VecDeque<(Waiter, Want)>,
    /// The node of the last holder, and how many hand-offs in a row stayed on it.
    cohort: (NodeId, u32),
    /// The node whose agent holds the lock and may keep it after use.
    cached_by: Option<NodeId>,
    /// A revoke has been sent to `cached_by` for the current holding.
    revoke_sent: bool,
    /// The keeping agent answered that the lock is in use (until it changes hands).
    busy: bool,
    /// Try-lock requests that met a kept lock and wait to hear whether its agent is idle.
    probes: Vec<(Waiter, Want)>,
}

impl LockState {
    /// Takes the lock if a newcomer may: a reader when no writer holds it and nobody queues (a
    /// queued writer holds back new readers), a writer when nobody holds it.
    fn try_take(&mut self, want: Want, who: NodeId) -> bool {
        let shared = want == Want::Read;
        let free =
            if shared { !self.writer && self.queue.is_empty() } else { !self.writer && self.readers == 0 };
        if free {
            self.take(want, who);
        }
        free
    }

    fn take(&mut self, want: Want, who: NodeId) {
        match want {
            Want::Read => self.readers += 1,
            Want::Write | Want::CachedWrite => {
                self.writer = true;
                self.cohort = (who, if self.cohort.0 == who { self.cohort.1 + 1 } else { 0 });
                self.cached_by = (want == Want::CachedWrite).then_some(who);
                self.revoke_sent = false;
                self.busy = false;
            }
        }
    }

    /// Someone else wants the lock: if an agent keeps it, ask for it back (once per holding).
    fn revoke_if_kept(&mut self, key: u64, out: &mut Vec<Out>) {
        if let Some(to) = self.cached_by
            && self.writer
            && !self.revoke_sent
        {
            self.revoke_sent = true;
            out.push(Out::Revoke { to, key });
        }
    }

    fn idle(&self) -> bool {
        !self.writer && self.readers == 0 && self.queue.is_empty() && self.probes.is_empty()
    }
}

/// How many times in a row a lock may be handed to a waiter on the releasing node while waiters on
/// other nodes queue. Keeping the lock (and so the data it guards) on one node saves a page
/// transfer per hand-off; the bound keeps remote waiters from starving.
pub(crate) const COHORT_BOUND: u32 = 32;

#[derive(Default, Debug)]
struct SenderSeq {
    next: u64,
    early: BTreeMap<u64, (Vec<u8>, bool, Waiter)>,
    final_seq: Option<u64>,
}

#[derive(Debug, Default)]
struct ChanState {
    bound: Option<u64>,
    queue: VecDeque<Vec<u8>>,
    /// Synchronous senders whose message did not fit yet, in order.
    pending: VecDeque<(Vec<u8>, Waiter)>,
    senders: u64,
    receiver_alive: bool,
    recv_waiter: Option<(Waiter, u64)>,
    seqs: HashMap<u64, SenderSeq>,
}

/// The manager's state: only objects that are busy (held, waited on, or channels) have an entry.
#[derive(Default, Debug)]
pub(crate) struct Manager {
    locks: HashMap<u64, LockState>,
    cvs: HashMap<u64, VecDeque<(Waiter, u64)>>,
    chans: HashMap<u64, ChanState>,
}

fn reply(out: &mut Vec<Out>, to: Waiter, reply: Reply) {
    out.push(Out::Reply { to, reply });
}

impl Manager {
    /// Handles one request, appending what must be delivered to `out`.
    pub(crate) fn handle(&mut self, req: Request, out: &mut Vec<Out>) {
        let Request { key, waiter, op } = req;
        match op {
            Op::Lock { shared } => self.lock(key, waiter, Want::of(shared), true, out),
            Op::CacheLock => self.lock(key, waiter, Want::CachedWrite, true, out),
            Op::CacheTryLock => self.lock(key, waiter, Want::CachedWrite, false, out),
            Op::RevokeBusy => {
                if let Some(l) = self.locks.get_mut(&key) {
                    l.busy = l.writer && l.cached_by == Some(waiter.0);
                    for (w, _) in l.probes.drain(..) {
                        reply(out, w, Reply::NotGranted);
                    }
                }
            }
            Op::TryLock { shared } => self.lock(key, waiter, Want::of(shared), false, out),
            Op::Unlock { shared } => self.unlock(key, waiter.0, shared, out),
            Op::CvWait { mutex } => {
                self.cvs.entry(key).or_default().push_back((waiter, mutex));
                out.push(Out::Forward(Request {
                    key: mutex,
                    waiter: (waiter.0, 0),
                    op: Op::Unlock { shared: false },
                }));
            }
            Op::CvNotify { all } => {
                if let Some(q) = self.cvs.get_mut(&key) {
                    let n = if all { q.len() } else { q.len().min(1) };
                    for (w, mutex) in q.drain(..n) {
                        out.push(Out::Forward(Request {
                            key: mutex,
                            waiter: w,
                            op: Op::Lock { shared: false },
                        }));
                    }
                    if q.is_empty() {
                        self.cvs.remove(&key);
                    }
                }
            }
            Op::CvCancel => {
                let removed = self.cvs.get_mut(&key).and_then(|q| {
                    let i = q.iter().position(|(w, _)| *w == waiter)?;
                    q.remove(i)
                });
                if self.cvs.get(&key).is_some_and(VecDeque::is_empty) {
                    self.cvs.remove(&key);
                }
                reply(out, waiter, if removed.is_some() { Reply::CvRemoved } else { Reply::CvLate });
            }
            // Barriers combine on their way to their manager (`super::tree`): `submit` never
            // hands one to this state machine, and one that got here would wait for ever.
            Op::Barrier { .. } => crate::private::bug("a barrier arrival reached the lock manager"),
            Op::ChanCreate { bound } => {
                self.chans
                    .insert(key, ChanState { bound, senders: 1, receiver_alive: true, ..Default::default() });
            }
            op => {
                self.chan(key, waiter, op, out);
                if self.chans.get(&key).is_some_and(ChanState::dead) {
                    self.chans.remove(&key);
                }
            }
        }
    }

    /// A lock request: granted at once if it may be, else queued (`wait`) or refused.
    fn lock(&mut self, key: u64, waiter: Waiter, want: Want, wait: bool, out: &mut Vec<Out>) {
        let l = self.locks.entry(key).or_default();
        if l.try_take(want, waiter.0) {
            reply(out, waiter, Reply::Granted);
        } else if wait {
            l.queue.push_back((waiter, want));
            l.revoke_if_kept(key, out);
        } else if l.cached_by.is_some() && l.writer && !l.busy {
            // Held only by an agent that keeps it, perhaps idle: ask it; the answer decides.
            l.probes.push((waiter, want));
            l.revoke_if_kept(key, out);
        } else {
            if l.idle() {
                self.locks.remove(&key);
            }
            reply(out, waiter, Reply::NotGranted);
        }
    }

    fn unlock(&mut self, key: u64, releaser: NodeId, shared: bool, out: &mut Vec<Out>) {
        let Some(l) = self.locks.get_mut(&key) else { return };
        if shared {
            l.readers = l.readers.saturating_sub(1);
        } else {
            l.writer = false;
            l.cached_by = None;
            l.revoke_sent = false;
            l.busy = false;
        }
        let granted = Self::hand_off(l, releaser, shared, out);
        // Probing try-locks get the lock only if nobody queued for it.
        let probes = std::mem::take(&mut l.probes);
        for (w, want) in probes {
            if !granted && l.queue.is_empty() && l.try_take(want, w.0) {
                reply(out, w, Reply::Granted);
            } else {
                reply(out, w, Reply::NotGranted);
            }
        }
        // A keeping agent that others wait for must give the lock back after use.
        if !l.queue.is_empty() {
            l.revoke_if_kept(key, out);
        }
        if l.idle() {
            self.locks.remove(&key);
        }
    }

    /// Gives a released lock to queued waiters; returns whether anyone got it.
    fn hand_off(l: &mut LockState, releaser: NodeId, shared: bool, out: &mut Vec<Out>) -> bool {
        if !shared {
            // Cohort hand-off: a writer waiting on the releasing node goes first, a bounded number
            // of times in a row; otherwise strict arrival order.
            let streak = if l.cohort.0 == releaser { l.cohort.1 } else { 0 };
            if streak < COHORT_BOUND
                && l.queue.front().is_some_and(|&((n, _), _)| n != releaser)
                && let Some(i) = l.queue.iter().position(|&((n, _), w)| n == releaser && w != Want::Read)
            {
                let (w, want) = l.queue.remove(i).expect("position is in range");
                l.take(want, w.0);
                reply(out, w, Reply::Granted);
                return true;
            }
        }
        // FIFO hand-off: a writer at the head waits for the readers to leave; readers at the head
        // enter together.
        let mut granted = false;
        while let Some(&(w, want)) = l.queue.front() {
            if l.writer || (want != Want::Read && l.readers > 0) {
                break;
            }
            l.queue.pop_front();
            l.take(want, w.0);
            reply(out, w, Reply::Granted);
            granted = true;
        }
        granted
    }

    fn chan(&mut self, key: u64, waiter: Waiter, op: Op, out: &mut Vec<Out>) {
        let Some(c) = self.chans.get_mut(&key) else {
            // A channel whose both sides are gone: nobody can be waiting for it, except a sender
            // racing the last drop; answer so it never hangs.
            match op {
                Op::ChanSend { bytes, sync: true, .. } | Op::ChanTrySend { bytes } => {
                    reply(out, waiter, Reply::Disconnected(bytes));
                }
                Op::ChanRecv { .. } => reply(out, waiter, Reply::Disconnected(Vec::new())),
                Op::ChanRecvCancel => reply(out, waiter, Reply::Cancelled),
                Op::ChanClone | Op::ChanReceiverDrop => reply(out, waiter, Reply::Ack),
                _ => {}
            }
            return;
        };
        match op {
            Op::ChanSend { sender, seq, bytes, sync } => {
                let s = c.seqs.entry(sender).or_default();
                s.early.insert(seq, (bytes, sync, waiter));
                let mut ready = Vec::new();
                while let Some(m) = s.early.remove(&s.next) {
                    s.next += 1;
                    ready.push(m);
                }
                for (bytes, sync, w) in ready {
                    c.accept(bytes, sync, w, out);
                }
                c.retire_senders(out);
            }
            Op::ChanTrySend { bytes } => {
                if !c.receiver_alive {
                    reply(out, waiter, Reply::Disconnected(bytes));
                } else if c.has_room() || c.recv_waiter.is_some() {
                    c.queue.push_back(bytes);
                    reply(out, waiter, Reply::Ack);
                    c.serve_receiver(out);
                } else {
                    reply(out, waiter, Reply::Full(bytes));
                }
            }
            Op::ChanRecv { block, max } => {
                if !c.queue.is_empty() || !c.pending.is_empty() {
                    c.deliver(waiter, max.max(1), out);
                } else if c.senders == 0 {
                    reply(out, waiter, Reply::Disconnected(Vec::new()));
                } else if block {
                    c.recv_waiter = Some((waiter, max.max(1)));
                } else {
                    reply(out, waiter, Reply::Empty);
                }
            }
            Op::ChanRecvCancel => {
                if c.recv_waiter.is_some_and(|(w, _)| w == waiter) {
                    c.recv_waiter = None;
                }
                // Anything already sent to this waiter travelled first on the same connection.
                reply(out, waiter, Reply::Cancelled);
            }
            Op::ChanClone => {
                c.senders += 1;
                reply(out, waiter, Reply::Ack);
            }
            Op::ChanSenderDrop { sender, final_seq } => {
                c.seqs.entry(sender).or_default().final_seq = Some(final_seq);
                c.retire_senders(out);
            }
            Op::ChanReceiverDrop => {
                c.receiver_alive = false;
                let mut left = Vec::new();
                let mut count = 0;
                for m in c.queue.drain(..) {
                    left.extend_from_slice(&m);
                    count += 1;
                }
                for (bytes, w) in c.pending.drain(..) {
                    reply(out, w, Reply::Disconnected(bytes));
                }
                reply(out, waiter, Reply::Msgs { count, bytes: left });
                if c.senders == 0 {
                    self.chans.remove(&key);
                }
            }
            _ => {}
        }
    }
}

impl ChanState {
    fn has_room(&self) -> bool {
        self.bound.is_none_or(|b| (self.queue.len() as u64) < b)
    }

    /// A message, in its sender's order, arrives.
    fn accept(&mut self, bytes: Vec<u8>, sync: bool, w: Waiter, out: &mut Vec<Out>) {
        if !self.receiver_alive {
            if sync {
                reply(out, w, Reply::Disconnected(bytes));
            }
            // An asynchronous message sent after the receiver left is dropped without running its
            // destructor (documented on `Sender::send`).
            return;
        }
        if !sync {
            self.queue.push_back(bytes);
        } else if self.has_room() && self.pending.is_empty() {
            self.queue.push_back(bytes);
            reply(out, w, Reply::Ack);
        } else {
            self.pending.push_back((bytes, w));
        }
        self.serve_receiver(out);
    }

    fn serve_receiver(&mut self, out: &mut Vec<Out>) {
        if let Some((w, max)) = self.recv_waiter
            && (!self.queue.is_empty() || !self.pending.is_empty())
        {
            self.recv_waiter = None;
            self.deliver(w, max, out);
        }
    }

    /// Hands up to `max` messages to the receiver, then lets waiting synchronous senders in.
    fn deliver(&mut self, w: Waiter, max: u64, out: &mut Vec<Out>) {
        let mut bytes = Vec::new();
        let mut count = 0;
        while count < max {
            let m = match self.queue.pop_front() {
                Some(m) => m,
                None => match self.pending.pop_front() {
                    // A rendezvous (or a full buffer drained): the sender is released now.
                    Some((m, sw)) => {
                        reply(out, sw, Reply::Ack);
                        m
                    }
                    None => break,
                },
            };
            bytes.extend_from_slice(&m);
            count += 1;
            // Keep every queued message in its place: one per reply for a bounded channel, so a
            // synchronous sender is released exactly when its message is taken.
            if self.bound.is_some() {
                break;
            }
        }
        while self.has_room() {
            let Some((m, sw)) = self.pending.pop_front() else { break };
            self.queue.push_back(m);
            reply(out, sw, Reply::Ack);
        }
        reply(out, w, Reply::Msgs { count, bytes });
    }

    /// Counts senders whose every message has arrived after they were dropped.
    fn retire_senders(&mut self, out: &mut Vec<Out>) {
        let before = self.seqs.len();
        self.seqs.retain(|_, s| s.final_seq.is_none_or(|f| s.next < f));
        let gone = (before - self.seqs.len()) as u64;
        if gone > 0 {
            self.senders = self.senders.saturating_sub(gone);
            if self.senders == 0
                && self.queue.is_empty()
                && self.pending.is_empty()
                && let Some((w, _)) = self.recv_waiter.take()
            {
                reply(out, w, Reply::Disconnected(Vec::new()));
            }
        }
    }

    /// Whether the channel can be forgotten.
    fn dead(&self) -> bool {
        self.senders == 0 && !self.receiver_alive
    }
}

impl Op {
    /// The wait an operation implies.
    pub(crate) fn wait_kind(&self) -> Wait {
        match self {
            Op::Lock { .. } | Op::TryLock { .. } | Op::CacheLock | Op::CacheTryLock => Wait::Lock,
            Op::Barrier { .. } => Wait::Barrier,
            Op::CvWait { .. } | Op::CvCancel => Wait::Condvar,
            Op::ChanSend { .. }
            | Op::ChanTrySend { .. }
            | Op::ChanRecv { .. }
            | Op::ChanRecvCancel
            | Op::ChanClone
            | Op::ChanReceiverDrop => Wait::Channel,
            _ => Wait::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(m: &mut Manager, key: u64, waiter: Waiter, op: Op) -> Vec<Out> {
        let mut out = Vec::new();
        m.handle(Request { key, waiter, op }, &mut out);
        out
    }

    fn granted(out: &[Out]) -> Vec<Waiter> {
        out.iter()
            .filter_map(|o| match o {
                Out::Reply { to, reply: Reply::Granted } => Some(*to),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn mutex_hand_off_is_fifo_and_state_is_dropped_when_free() {
        let mut m = Manager::default();
        assert_eq!(
            granted(&run(&mut m, 1, (NodeId(0), 1), Op::Lock { shared: false })),
            vec![(NodeId(0), 1)]
        );
        assert!(run(&mut m, 1, (NodeId(1), 1), Op::Lock { shared: false }).is_empty());
        assert!(run(&mut m, 1, (NodeId(2), 1), Op::Lock { shared: false }).is_empty());
        assert_eq!(
            run(&mut m, 1, (NodeId(0), 1), Op::TryLock { shared: false }),
            vec![Out::Reply { to: (NodeId(0), 1), reply: Reply::NotGranted }]
        );
        assert_eq!(
            granted(&run(&mut m, 1, (NodeId(0), 1), Op::Unlock { shared: false })),
            vec![(NodeId(1), 1)]
        );
        assert_eq!(
            granted(&run(&mut m, 1, (NodeId(1), 1), Op::Unlock { shared: false })),
            vec![(NodeId(2), 1)]
        );
        assert!(run(&mut m, 1, (NodeId(2), 1), Op::Unlock { shared: false }).is_empty());
        assert!(m.locks.is_empty());
    }

    #[test]
    fn hand_off_prefers_the_releasing_node_a_bounded_number_of_times() {
        let mut m = Manager::default();
        assert_eq!(
            granted(&run(&mut m, 1, (NodeId(0), 1), Op::Lock { shared: false })),
            vec![(NodeId(0), 1)]
        );
        run(&mut m, 1, (NodeId(1), 1), Op::Lock { shared: false });
        for i in 2..200 {
            run(&mut m, 1, (NodeId(0), i), Op::Lock { shared: false });
        }
        let mut order = Vec::new();
        let mut holder = (NodeId(0), 1);
        for _ in 0..60 {
            let g = granted(&run(&mut m, 1, (holder.0, 0), Op::Unlock { shared: false }));
            holder = g[0];
            order.push(holder.0);
        }
        let first_remote = order.iter().position(|&n| n == NodeId(1)).unwrap();
        assert!(first_remote as u32 <= COHORT_BOUND, "the remote waiter waited {first_remote} hand-offs");
    }

    #[test]
    fn a_kept_lock_is_revoked_when_another_node_asks() {
        let mut m = Manager::default();
        assert_eq!(granted(&run(&mut m, 1, (NodeId(1), 1), Op::CacheLock)), vec![(NodeId(1), 1)]);
        // Node 2 asks: queued, and node 1's agent is asked (once) to give it back.
        let out = run(&mut m, 1, (NodeId(2), 1), Op::Lock { shared: false });
        assert_eq!(out, vec![Out::Revoke { to: NodeId(1), key: 1 }]);
        assert!(run(&mut m, 1, (NodeId(3), 1), Op::CacheLock).is_empty(), "one revoke per holding");
        // The give-back hands it to node 2; node 3 still queues.
        assert_eq!(
            granted(&run(&mut m, 1, (NodeId(1), 0), Op::Unlock { shared: false })),
            vec![(NodeId(2), 1)]
        );
        let out = run(&mut m, 1, (NodeId(2), 0), Op::Unlock { shared: false });
        assert_eq!(out, vec![Out::Reply { to: (NodeId(3), 1), reply: Reply::Granted }]);
        assert!(m.locks.contains_key(&1), "node 3 keeps it");
    }

    #[test]
    fn a_try_lock_probes_an_agent_that_keeps_the_lock() {
        let mut m = Manager::default();
        run(&mut m, 1, (NodeId(1), 1), Op::CacheLock);
        // Idle at its agent: the probe ends in a grant once the agent gives it back.
        assert_eq!(
            run(&mut m, 1, (NodeId(2), 1), Op::TryLock { shared: false }),
            vec![Out::Revoke { to: NodeId(1), key: 1 }]
        );
        assert_eq!(
            granted(&run(&mut m, 1, (NodeId(1), 0), Op::Unlock { shared: false })),
            vec![(NodeId(2), 1)]
        );
        run(&mut m, 1, (NodeId(2), 0), Op::Unlock { shared: false });
        // In use at its agent: the probe fails.
        run(&mut m, 1, (NodeId(1), 2), Op::CacheLock);
        assert_eq!(
            run(&mut m, 1, (NodeId(2), 2), Op::CacheTryLock),
            vec![Out::Revoke { to: NodeId(1), key: 1 }]
        );
        assert_eq!(
            run(&mut m, 1, (NodeId(1), 0), Op::RevokeBusy),
            vec![Out::Reply { to: (NodeId(2), 2), reply: Reply::NotGranted }]
        );
        // Known to be in use: later probes fail at once, without asking again.
        assert_eq!(
            run(&mut m, 1, (NodeId(3), 1), Op::CacheTryLock),
            vec![Out::Reply { to: (NodeId(3), 1), reply: Reply::NotGranted }]
        );
        run(&mut m, 1, (NodeId(1), 0), Op::Unlock { shared: false });
        assert!(m.locks.is_empty());
    }

    #[test]
    fn readers_share_and_a_queued_writer_holds_back_new_readers() {
        let mut m = Manager::default();
        assert_eq!(granted(&run(&mut m, 7, (NodeId(0), 1), Op::Lock { shared: true })).len(), 1);
        assert_eq!(granted(&run(&mut m, 7, (NodeId(1), 1), Op::Lock { shared: true })).len(), 1);
        assert!(run(&mut m, 7, (NodeId(2), 1), Op::Lock { shared: false }).is_empty());
        assert!(run(&mut m, 7, (NodeId(3), 1), Op::Lock { shared: true }).is_empty(), "writer first");
        assert!(run(&mut m, 7, (NodeId(0), 1), Op::Unlock { shared: true }).is_empty());
        assert_eq!(
            granted(&run(&mut m, 7, (NodeId(1), 1), Op::Unlock { shared: true })),
            vec![(NodeId(2), 1)]
        );
        assert_eq!(
            granted(&run(&mut m, 7, (NodeId(2), 1), Op::Unlock { shared: false })),
            vec![(NodeId(3), 1)]
        );
    }

    #[test]
    fn condvar_wait_releases_the_mutex_and_notify_reacquires_it() {
        let mut m = Manager::default();
        let out = run(&mut m, 100, (NodeId(1), 5), Op::CvWait { mutex: 9 });
        assert_eq!(
            out,
            vec![Out::Forward(Request { key: 9, waiter: (NodeId(1), 0), op: Op::Unlock { shared: false } })]
        );
        assert!(run(&mut m, 100, (NodeId(0), 0), Op::CvNotify { all: false }).len() == 1);
        assert!(run(&mut m, 100, (NodeId(0), 0), Op::CvNotify { all: true }).is_empty(), "nobody left");
        run(&mut m, 100, (NodeId(1), 6), Op::CvWait { mutex: 9 });
        assert_eq!(
            run(&mut m, 100, (NodeId(1), 6), Op::CvCancel),
            vec![Out::Reply { to: (NodeId(1), 6), reply: Reply::CvRemoved }]
        );
        assert_eq!(
            run(&mut m, 100, (NodeId(1), 6), Op::CvCancel),
            vec![Out::Reply { to: (NodeId(1), 6), reply: Reply::CvLate }]
        );
    }

    fn msgs(out: &[Out]) -> Vec<u8> {
        out.iter()
            .filter_map(|o| match o {
                Out::Reply { reply: Reply::Msgs { bytes, .. }, .. } => Some(bytes.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn channel_restores_per_sender_order_and_reports_disconnection() {
        let mut m = Manager::default();
        let w = (NodeId(0), 1);
        run(&mut m, 3, w, Op::ChanCreate { bound: None });
        // Sender 10 sends seq 1 before seq 0 arrives (it moved between nodes meanwhile).
        run(&mut m, 3, (NodeId(2), 0), Op::ChanSend { sender: 10, seq: 1, bytes: vec![2], sync: false });
        assert_eq!(
            run(&mut m, 3, w, Op::ChanRecv { block: false, max: 10 }),
            vec![Out::Reply { to: w, reply: Reply::Empty }]
        );
        run(&mut m, 3, (NodeId(1), 0), Op::ChanSend { sender: 10, seq: 0, bytes: vec![1], sync: false });
        assert_eq!(msgs(&run(&mut m, 3, w, Op::ChanRecv { block: true, max: 10 })), vec![1, 2]);
        // The drop arrives before the sender's last message: not disconnected yet.
        run(&mut m, 3, (NodeId(1), 0), Op::ChanSenderDrop { sender: 10, final_seq: 3 });
        assert!(run(&mut m, 3, w, Op::ChanRecv { block: true, max: 10 }).is_empty());
        assert_eq!(
            msgs(&run(
                &mut m,
                3,
                (NodeId(2), 0),
                Op::ChanSend { sender: 10, seq: 2, bytes: vec![3], sync: false }
            )),
            vec![3]
        );
        assert_eq!(
            run(&mut m, 3, w, Op::ChanRecv { block: true, max: 10 }),
            vec![Out::Reply { to: w, reply: Reply::Disconnected(vec![]) }]
        );
    }

    #[test]
    fn rendezvous_channel_releases_the_sender_when_the_message_is_taken() {
        let mut m = Manager::default();
        run(&mut m, 4, (NodeId(0), 0), Op::ChanCreate { bound: Some(0) });
        let s = (NodeId(1), 7);
        assert!(run(&mut m, 4, s, Op::ChanSend { sender: 1, seq: 0, bytes: vec![9], sync: true }).is_empty());
        let out = run(&mut m, 4, (NodeId(0), 1), Op::ChanRecv { block: true, max: 5 });
        assert!(out.contains(&Out::Reply { to: s, reply: Reply::Ack }));
        assert_eq!(msgs(&out), vec![9]);
        assert_eq!(
            run(&mut m, 4, s, Op::ChanTrySend { bytes: vec![1] }),
            vec![Out::Reply { to: s, reply: Reply::Full(vec![1]) }]
        );
        let out = run(&mut m, 4, (NodeId(0), 1), Op::ChanReceiverDrop);
        assert_eq!(msgs(&out), Vec::<u8>::new());
        assert_eq!(
            run(&mut m, 4, s, Op::ChanSend { sender: 1, seq: 1, bytes: vec![5], sync: true }),
            vec![Out::Reply { to: s, reply: Reply::Disconnected(vec![5]) }]
        );
        run(&mut m, 4, s, Op::ChanSenderDrop { sender: 1, final_seq: 2 });
        assert!(m.chans.get(&4).is_none_or(ChanState::dead));
    }
}
