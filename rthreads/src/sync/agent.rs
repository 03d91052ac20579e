//! Lock caching: a node keeps an exclusive lock managed elsewhere until another node wants it.
//!
//! A `Mutex` managed by another node costs a round trip per `lock`. Most locks are used by one node
//! at a time for a while, so this node's *agent* keeps a lock it was granted after the holder
//! unlocks: the next `lock` on this node takes it with no message at all, and threads of this node
//! waiting for it get it handed over locally. When a thread of another node asks the manager for the
//! lock, the manager sends a *revoke*: the agent gives the lock back at once if nobody here holds it,
//! or at the next unlock (after at most `COHORT_BOUND` more local hand-offs, so the other node does
//! not starve).
//!
//! `try_lock` on another node keeps std's meaning: if the lock is only kept here, idle, the manager
//! probes this agent, which gives it back, and the `try_lock` succeeds; only a lock really in use
//! makes it fail (the agent answers "busy").
//!
//! A condition variable wait gives the lock back to the manager (the condition variable's manager
//! releases it on the waiter's behalf); a lock granted back through a condition variable is not kept.
//!
//! Revokes and grants travel on different connections, so a revoke can overtake the grant it is
//! about: a revoke that finds a request in flight marks the coming lock to be given back after use.
//! A stale revoke (for a holding already given back) then costs one early give-back, nothing else.

use std::collections::HashMap;
use std::sync::{Condvar, LazyLock};

use super::manager::{COHORT_BOUND, Op, Reply};
use super::{Ticket, post};
use crate::alloc::private_internal;
use crate::private::ServiceLock;

#[derive(Default, Debug)]
struct Token {
    /// The manager counts this node as the holder.
    held: bool,
    /// A thread of this node holds the lock now.
    busy: bool,
    /// A thread of this node is asking the manager for it.
    requesting: bool,
    /// Give it back at the next unlock.
    revoked: bool,
    /// Threads of this node waiting for it.
    waiters: u32,
    /// Local hand-offs since the revoke.
    streak: u32,
}

impl Token {
    fn unused(&self) -> bool {
        !self.held && !self.busy && !self.requesting && self.waiters == 0
    }

    /// This node no longer holds the lock (the caller sends, or has sent, the unlock).
    /// The manager granted the lock this node asked for: the asking thread holds it.
    fn granted(&mut self) {
        (self.requesting, self.held, self.busy, self.streak) = (false, true, true, 0);
    }

    fn let_go(&mut self) {
        (self.held, self.revoked, self.streak) = (false, false, 0);
    }
}

/// After `key`'s token changed: wakes local waiters, or forgets a token nobody needs.
fn settle(t: &mut HashMap<u64, Token>, key: u64) {
    match t.get(&key) {
        Some(e) if e.waiters > 0 => RELEASED.notify_all(),
        Some(e) if e.unused() => {
            t.remove(&key);
        }
        _ => {}
    }
}

static TOKENS: LazyLock<ServiceLock<HashMap<u64, Token>>> =
    LazyLock::new(|| ServiceLock::new("sync.agent", HashMap::new()));
static RELEASED: Condvar = Condvar::new();

fn give_back(key: u64) {
    post(key, Op::Unlock { shared: false });
}

/// Takes the exclusive lock `key` (managed by another node) for the calling thread.
pub(super) fn lock(key: u64) {
    private_internal(move || {
        let mut t = TOKENS.lock();
        loop {
            let e = t.entry(key).or_default();
            if e.held && !e.busy {
                e.busy = true;
                if e.revoked {
                    e.streak += 1;
                }
                crate::counters::lock_acquired(false);
                return;
            }
            if !e.held && !e.requesting {
                e.requesting = true;
                drop(t);
                let reply = Ticket::call(key, Op::CacheLock);
                assert!(matches!(reply, Reply::Granted), "cached lock answered {reply:?}");
                TOKENS.lock().entry(key).or_default().granted();
                crate::counters::lock_acquired(true);
                return;
            }
            e.waiters += 1;
            let started = std::time::Instant::now();
            t = t.wait(&RELEASED);
            crate::counters::sync_waited(started.elapsed(), crate::counters::Wait::Lock);
            if let Some(e) = t.get_mut(&key) {
                e.waiters -= 1;
            }
        }
    })
}

/// Takes the lock `key` if it is free now, kept idle here, or kept idle by another node.
pub(super) fn try_lock(key: u64) -> bool {
    private_internal(move || {
        let mut t = TOKENS.lock();
        let e = t.entry(key).or_default();
        if e.held && !e.busy {
            e.busy = true;
            return true;
        }
        if e.held || e.requesting {
            return false;
        }
        e.requesting = true;
        drop(t);
        let granted = matches!(Ticket::call(key, Op::CacheTryLock), Reply::Granted);
        let mut t = TOKENS.lock();
        let e = t.entry(key).or_default();
        e.requesting = false;
        if granted {
            e.granted();
        } else {
            // Threads that waited while this request was out may now ask for themselves.
            RELEASED.notify_all();
            if e.unused() {
                t.remove(&key);
            }
        }
        granted
    })
}

/// The holder of the kept lock `key` unlocks it.
pub(super) fn unlock(key: u64) {
    private_internal(move || {
        let mut t = TOKENS.lock();
        let Some(e) = t.get_mut(&key) else { return };
        e.busy = false;
        if e.revoked && (e.waiters == 0 || e.streak >= COHORT_BOUND) {
            e.let_go();
            give_back(key);
        }
        settle(&mut t, key);
    })
}

/// The holder of the kept lock `key` waits on a condition variable, whose manager releases the
/// lock on its behalf: this node no longer holds it.
pub(super) fn hand_to_condvar(key: u64) {
    private_internal(move || {
        let mut t = TOKENS.lock();
        let Some(e) = t.get_mut(&key) else { return };
        e.busy = false;
        e.let_go();
        settle(&mut t, key);
    })
}

/// The mutex `key` is being dropped on this node: a lock kept here goes back to its manager, so
/// neither keeps state for an object that no longer exists.
pub(super) fn forget(key: u64) {
    private_internal(move || {
        let mut t = TOKENS.lock();
        if let Some(e) = t.get(&key)
            && e.held
            && !e.busy
            && e.waiters == 0
        {
            t.remove(&key);
            give_back(key);
        }
    })
}

/// The manager of `key` wants the lock back (called by the service thread).
pub(crate) fn revoke(key: u64) {
    private_internal(move || {
        let mut t = TOKENS.lock();
        let Some(e) = t.get_mut(&key) else { return };
        if e.held && !e.busy {
            e.let_go();
            give_back(key);
            settle(&mut t, key);
        } else if e.held {
            e.revoked = true;
            // A try-lock elsewhere may be waiting to hear whether the lock is really in use.
            post(key, Op::RevokeBusy);
        } else if e.requesting {
            e.revoked = true;
        }
    })
}
