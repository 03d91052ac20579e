//! A condition variable that works across nodes.

use std::sync::atomic::AtomicU8;
use std::sync::{LockResult, PoisonError};
use std::time::{Duration, Instant};

use super::manager::{Op, Reply};
use super::{MutexGuard, Ticket, key_of, post};

/// A condition variable usable from every node; as `std::sync::Condvar`.
///
/// `wait` queues the thread at the condition variable's manager node, which then releases the
/// mutex on the waiter's behalf; `notify_*` makes the manager ask the mutex's manager to hand the
/// mutex to the woken waiters, one after the other, so a woken thread returns from `wait` holding
/// the lock without another round trip of its own. Waiters are woken in the order they started
/// waiting.
///
/// # Memory ordering
/// `wait` releases the mutex (a release) and returns holding it again (an acquire).
/// `notify_one`/`notify_all` are not synchronising by themselves: change the condition under the
/// mutex, as with std.
///
/// # Examples
/// ```
/// use rthreads::sync::{Arc, Condvar, Mutex};
///
/// let pair = Arc::new((Mutex::new(false), Condvar::new()));
/// let pair2 = Arc::clone(&pair);
/// rthreads::spawn(move || {
///     let (lock, cvar) = &*pair2;
///     *lock.lock().unwrap() = true;
///     cvar.notify_one();
/// });
/// let (lock, cvar) = &*pair;
/// let started = cvar.wait_while(lock.lock().unwrap(), |started| !*started).unwrap();
/// assert!(*started);
/// ```
#[derive(Debug, Default)]
pub struct Condvar {
    state: AtomicU8,
}

/// Whether a timed wait timed out; as `std::sync::WaitTimeoutResult`.
#[derive(Debug, PartialEq, Eq, Copy, Clone)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// Whether the wait ended because the time ran out.
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Condvar {
    /// A new condition variable.
    pub const fn new() -> Condvar {
        Condvar { state: AtomicU8::new(0) }
    }

    fn key(&self) -> u64 {
        key_of(&self.state)
    }

    /// Queues the calling thread on this condition variable and hands its mutex over.
    fn enqueue<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> (Ticket, &'a super::Mutex<T>) {
        // The mutex leaves this thread with the wait: a release point.
        crate::consistency::release();
        let t = Ticket::new();
        t.submit(self.key(), Op::CvWait { mutex: guard.mutex().key() });
        (t, guard.release_to_condvar())
    }

    /// Releases the mutex, waits for a notification, and returns holding the mutex again.
    /// Spurious wake-ups do not happen, but use a loop (or [`Condvar::wait_while`]) as with std.
    ///
    /// # Errors
    /// `Err(PoisonError)` carrying the guard if the mutex is poisoned on return.
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        let (t, mutex) = self.enqueue(guard);
        match t.wait() {
            Reply::Granted => mutex.guard(false),
            other => unreachable!("condvar wait answered {other:?}"),
        }
    }

    /// Waits while `condition` holds.
    ///
    /// # Errors
    /// As [`Condvar::wait`].
    pub fn wait_while<'a, T, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: F,
    ) -> LockResult<MutexGuard<'a, T>>
    where
        F: FnMut(&mut T) -> bool,
    {
        while condition(&mut *guard) {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// Waits for a notification or until `dur` has passed.
    ///
    /// # Errors
    /// As [`Condvar::wait`].
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        dur: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        let deadline = super::deadline_in(dur);
        let (t, mutex) = self.enqueue(guard);
        let timed_out = match t.wait_until(deadline) {
            Some(Reply::Granted) => false,
            Some(other) => unreachable!("condvar wait answered {other:?}"),
            None => {
                // Withdraw; if a notification got there first, the mutex is on its way to us.
                t.submit(self.key(), Op::CvCancel);
                let (mut granted, mut cancel) = (false, None);
                while cancel.is_none() || (cancel == Some(false) && !granted) {
                    match t.wait() {
                        Reply::Granted => granted = true,
                        Reply::CvRemoved => cancel = Some(true),
                        Reply::CvLate => cancel = Some(false),
                        other => unreachable!("condvar cancel answered {other:?}"),
                    }
                }
                if cancel == Some(true) {
                    // Still queued: never notified, so take the mutex back ourselves.
                    t.submit(mutex.key(), Op::Lock { shared: false });
                    let reply = t.wait();
                    assert!(matches!(reply, Reply::Granted), "lock answered {reply:?}");
                }
                cancel == Some(true)
            }
        };
        match mutex.guard(false) {
            Ok(g) => Ok((g, WaitTimeoutResult(timed_out))),
            Err(e) => Err(PoisonError::new((e.into_inner(), WaitTimeoutResult(timed_out)))),
        }
    }

    /// Waits while `condition` holds, for at most `dur` in total.
    ///
    /// # Errors
    /// As [`Condvar::wait`].
    pub fn wait_timeout_while<'a, T, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        dur: Duration,
        mut condition: F,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)>
    where
        F: FnMut(&mut T) -> bool,
    {
        let start = Instant::now();
        loop {
            if !condition(&mut *guard) {
                return Ok((guard, WaitTimeoutResult(false)));
            }
            let left = match dur.checked_sub(start.elapsed()) {
                Some(l) if !l.is_zero() => l,
                _ => return Ok((guard, WaitTimeoutResult(true))),
            };
            guard = match self.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(e) => {
                    return Err(PoisonError::new((e.into_inner().0, WaitTimeoutResult(false))));
                }
            };
        }
    }

    /// Wakes one waiting thread, if any (the one that has waited longest).
    pub fn notify_one(&self) {
        post(self.key(), Op::CvNotify { all: false });
    }

    /// Wakes every waiting thread.
    pub fn notify_all(&self) {
        post(self.key(), Op::CvNotify { all: true });
    }
}
