//! Poisoning, as std does it: a lock whose holder panicked says so to later holders.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LockResult, PoisonError};

/// Whether a holder panicked. Lives inside the lock, in shared memory, so every node sees it.
#[derive(Debug, Default)]
pub(super) struct Flag(AtomicBool);

impl Flag {
    pub(super) const fn new() -> Flag {
        Flag(AtomicBool::new(false))
    }

    pub(super) fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    pub(super) fn clear(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Called when a holder lets go: poisons the lock if the holder started panicking while it held
    /// it (`was_panicking` is whether it was already panicking when it took the lock).
    pub(super) fn done(&self, was_panicking: bool) {
        if !was_panicking && std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// `Ok(t)`, or `Err` carrying `t` if poisoned.
    pub(super) fn result<T>(&self, t: T) -> LockResult<T> {
        if self.get() { Err(PoisonError::new(t)) } else { Ok(t) }
    }
}
