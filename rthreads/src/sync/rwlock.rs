//! A reader-writer lock that works across nodes.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::{LockResult, TryLockError, TryLockResult};

use super::manager::{Op, Reply};
use super::poison::Flag;
use super::{Ticket, key_of, post, remote};

/// A reader-writer lock usable from every node; as `std::sync::RwLock`.
///
/// Many readers or one writer. Requests queue at the lock's manager node in arrival order: readers
/// at the head of the queue enter together, and a waiting writer holds back readers that come after
/// it, so writers do not starve.
///
/// # Memory ordering
/// Releasing a write lock is a release, acquiring either lock an acquire: readers see everything
/// the last writer wrote.
///
/// # Examples
/// ```
/// use rthreads::sync::RwLock;
///
/// let lock = RwLock::new(5);
/// {
///     let r1 = lock.read().unwrap();
///     let r2 = lock.read().unwrap();
///     assert_eq!(*r1 + *r2, 10);
/// }
/// *lock.write().unwrap() += 1;
/// assert_eq!(*lock.read().unwrap(), 6);
/// ```
pub struct RwLock<T: ?Sized> {
    poison: Flag,
    data: UnsafeCell<T>,
}

// SAFETY: as std's RwLock: writers are exclusive, readers share `&T`.
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}
// SAFETY: as above; readers on several threads need `T: Sync`.
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}

// Poisoning makes a panic while write-locked observable, as in std.
impl<T: ?Sized> std::panic::UnwindSafe for RwLock<T> {}
impl<T: ?Sized> std::panic::RefUnwindSafe for RwLock<T> {}

/// Shared access to the data of an [`RwLock`].
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: the guard hands out `&T` only.
unsafe impl<T: ?Sized + Sync> Sync for RwLockReadGuard<'_, T> {}

/// Exclusive access to the data of an [`RwLock`].
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    panicking: bool,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a shared write guard hands out `&T` only.
unsafe impl<T: ?Sized + Sync> Sync for RwLockWriteGuard<'_, T> {}

impl<T> RwLock<T> {
    /// A new unlocked lock.
    pub const fn new(t: T) -> RwLock<T> {
        RwLock { poison: Flag::new(), data: UnsafeCell::new(t) }
    }
}

impl<T: ?Sized> RwLock<T> {
    fn key(&self) -> u64 {
        key_of(&self.poison)
    }

    fn read_guard(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        super::watch::acquired(self.key());
        crate::consistency::acquire();
        let g = RwLockReadGuard { lock: self, _not_send: PhantomData };
        self.poison.result(g)
    }

    fn write_guard(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        super::watch::acquired(self.key());
        crate::consistency::acquire();
        let g = RwLockWriteGuard { lock: self, panicking: std::thread::panicking(), _not_send: PhantomData };
        self.poison.result(g)
    }

    /// Asks the lock's manager for it (`op`): whether it was granted.
    fn ask(&self, op: Op) -> bool {
        let trying = matches!(op, Op::TryLock { .. });
        match Ticket::call(self.key(), op) {
            Reply::Granted => true,
            _ if trying => false,
            other => unreachable!("a lock request answered {other:?}"),
        }
    }

    /// Waits for the lock (`shared` or not) to be granted.
    fn wait_for(&self, shared: bool) {
        super::watch::waiting(self.key());
        self.ask(Op::Lock { shared });
        crate::counters::lock_acquired(remote(self.key()));
    }

    /// Acquires shared access, blocking while a writer holds or waits for the lock.
    ///
    /// # Errors
    /// `Err(PoisonError)` carrying the guard if a writer panicked.
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        self.wait_for(true);
        self.read_guard()
    }

    /// Acquires exclusive access, blocking until every other holder has left.
    ///
    /// # Errors
    /// `Err(PoisonError)` carrying the guard if a writer panicked.
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        self.wait_for(false);
        self.write_guard()
    }

    /// Shared access if available right now.
    ///
    /// # Errors
    /// `WouldBlock` or `Poisoned`.
    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        if !self.ask(Op::TryLock { shared: true }) {
            return Err(TryLockError::WouldBlock);
        }
        self.read_guard().map_err(TryLockError::from)
    }

    /// Exclusive access if available right now.
    ///
    /// # Errors
    /// `WouldBlock` or `Poisoned`.
    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        if !self.ask(Op::TryLock { shared: false }) {
            return Err(TryLockError::WouldBlock);
        }
        self.write_guard().map_err(TryLockError::from)
    }

    /// Whether a writer panicked.
    pub fn is_poisoned(&self) -> bool {
        self.poison.get()
    }

    /// Clears the poisoned state.
    pub fn clear_poison(&self) {
        self.poison.clear();
    }

    /// Mutable access without locking.
    ///
    /// # Errors
    /// `Err(PoisonError)` carrying the reference if a writer panicked.
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        self.poison.result(self.data.get_mut())
    }

    /// Consumes the lock and returns the data.
    ///
    /// # Errors
    /// `Err(PoisonError)` carrying the data if a writer panicked.
    pub fn into_inner(self) -> LockResult<T>
    where
        T: Sized,
    {
        let RwLock { poison, data } = self;
        poison.result(data.into_inner())
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        crate::consistency::release();
        super::watch::released(self.lock.key());
        post(self.lock.key(), Op::Unlock { shared: true });
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        crate::consistency::release();
        super::watch::released(self.lock.key());
        self.lock.poison.done(self.panicking);
        post(self.lock.key(), Op::Unlock { shared: false });
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves shared access: no writer holds the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.lock.data.get() }
    }
}
