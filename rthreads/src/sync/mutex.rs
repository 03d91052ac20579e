//! A mutual-exclusion lock that works across nodes.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::{LockResult, TryLockError, TryLockResult};

use super::manager::{Op, Reply};
use super::poison::Flag;
use super::{Ticket, agent, key_of, post, remote};

/// A mutual-exclusion lock protecting `T`, usable from every node; as `std::sync::Mutex`.
///
/// Waiting threads queue at the lock's manager node (the home of its address) and get the lock in
/// arrival order; an unlock is one message to the manager, which hands the lock to the next waiter
/// with one message. A node that took a lock managed elsewhere keeps it after the unlock until
/// another node asks for it, so a lock used by one node at a time costs no message per `lock`
/// (see the `sync` module docs).
///
/// # Memory ordering
/// Unlocking (dropping the guard) is a release and locking an acquire: everything written while
/// holding the lock is visible to the next holder, on any node.
///
/// # Poisoning
/// As in std: a thread that panics while holding the lock poisons it, and later `lock` calls
/// return `Err(PoisonError)` that still carries the guard.
///
/// # Examples
/// ```
/// use rthreads::sync::{Arc, Mutex};
///
/// let counter = Arc::new(Mutex::new(0));
/// let handles: Vec<_> = (0..4)
///     .map(|_| {
///         let c = Arc::clone(&counter);
///         rthreads::spawn(move || *c.lock().unwrap() += 1)
///     })
///     .collect();
/// for h in handles {
///     h.join().unwrap();
/// }
/// assert_eq!(*counter.lock().unwrap(), 4);
/// ```
pub struct Mutex<T: ?Sized> {
    poison: Flag,
    data: UnsafeCell<T>,
}

// SAFETY: as std's Mutex: the lock serialises all access to `data`, so sharing it needs only
// `T: Send`.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

/// Access to the data of a locked [`Mutex`]; the lock is released when it is dropped.
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized> {
    lock: &'a Mutex<T>,
    panicking: bool,
    /// Taken through this node's agent, which may keep the lock after the unlock.
    kept: bool,
    _not_send: PhantomData<*const ()>,
}

// Poisoning makes a panic while locked observable, as in std.
impl<T: ?Sized> std::panic::UnwindSafe for Mutex<T> {}
impl<T: ?Sized> std::panic::RefUnwindSafe for Mutex<T> {}

// SAFETY: a shared guard only hands out `&T`.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    pub const fn new(t: T) -> Mutex<T> {
        Mutex { poison: Flag::new(), data: UnsafeCell::new(t) }
    }
}

impl<T: ?Sized> Mutex<T> {
    pub(super) fn key(&self) -> u64 {
        key_of(&self.poison)
    }

    /// Builds the guard of a lock the caller was just granted.
    pub(super) fn guard(&self, kept: bool) -> LockResult<MutexGuard<'_, T>> {
        super::watch::acquired(self.key());
        crate::consistency::acquire();
        let g = MutexGuard { lock: self, panicking: std::thread::panicking(), kept, _not_send: PhantomData };
        self.poison.result(g)
    }

    /// Acquires the lock, blocking until it is available.
    ///
    /// # Errors
    /// `Err(PoisonError)`, carrying the guard, if a holder panicked.
    ///
    /// # Panics
    /// Never because of other nodes; a lock already held by the calling thread deadlocks, as std
    /// allows.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        super::watch::waiting(self.key());
        if remote(self.key()) {
            agent::lock(self.key());
            return self.guard(true);
        }
        match Ticket::call(self.key(), Op::Lock { shared: false }) {
            Reply::Granted => {
                crate::counters::lock_acquired(false);
                self.guard(false)
            }
            other => unreachable!("lock answered {other:?}"),
        }
    }

    /// Acquires the lock if it is free right now (asking its manager: a round trip if that is
    /// another node).
    ///
    /// # Errors
    /// `WouldBlock` if another thread holds it; `Poisoned` if a holder panicked.
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        if remote(self.key()) {
            return if agent::try_lock(self.key()) {
                self.guard(true).map_err(TryLockError::from)
            } else {
                Err(TryLockError::WouldBlock)
            };
        }
        match Ticket::call(self.key(), Op::TryLock { shared: false }) {
            Reply::Granted => self.guard(false).map_err(TryLockError::from),
            _ => Err(TryLockError::WouldBlock),
        }
    }

    /// Whether a holder panicked.
    pub fn is_poisoned(&self) -> bool {
        self.poison.get()
    }

    /// Clears the poisoned state.
    pub fn clear_poison(&self) {
        self.poison.clear();
    }

    /// Mutable access without locking: the borrow checker proves nobody else has access.
    ///
    /// # Errors
    /// `Err(PoisonError)` carrying the reference if a holder panicked.
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        self.poison.result(self.data.get_mut())
    }

    /// Consumes the mutex and returns the data.
    ///
    /// # Errors
    /// `Err(PoisonError)` carrying the data if a holder panicked.
    pub fn into_inner(self) -> LockResult<T>
    where
        T: Sized,
    {
        self.forget_kept();
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again; each field is read out exactly once.
        let (poison, data) = unsafe { (std::ptr::read(&this.poison), std::ptr::read(&this.data)) };
        poison.result(data.into_inner())
    }

    /// A lock this node keeps for this mutex goes back to its manager (see `agent`).
    fn forget_kept(&self) {
        if remote(self.key()) {
            agent::forget(self.key());
        }
    }
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// The mutex this guard locks, for `Condvar`.
    pub(super) fn mutex(&self) -> &'a Mutex<T> {
        self.lock
    }

    /// Records poisoning as the guard's drop would, without unlocking (`Condvar::wait` hands the
    /// unlock to the condition variable's manager).
    pub(super) fn release_to_condvar(self) -> &'a Mutex<T> {
        let lock = self.lock;
        lock.poison.done(self.panicking);
        super::watch::released(lock.key());
        if self.kept {
            agent::hand_to_condvar(lock.key());
        }
        std::mem::forget(self);
        lock
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        crate::consistency::release();
        self.lock.poison.done(self.panicking);
        super::watch::released(self.lock.key());
        if self.kept {
            agent::unlock(self.lock.key());
        } else {
            post(self.lock.key(), Op::Unlock { shared: false });
        }
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves this thread holds the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves this thread holds the lock exclusively.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for Mutex<T> {
    fn drop(&mut self) {
        self.forget_kept();
    }
}
