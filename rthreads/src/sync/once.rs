//! One-time initialisation that works across nodes.

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};

use super::manager::{Op, Reply};
use super::{Ticket, key_of, post};

const INCOMPLETE: u8 = 0;
const COMPLETE: u8 = 1;
const POISONED: u8 = 2;

/// Runs a piece of code exactly once in the whole cluster; as `std::sync::Once`.
///
/// The first caller takes a lock managed by the `Once`'s home node and runs the closure; callers on
/// other nodes wait for it in that lock's queue. Once complete, a call costs one read of the state
/// (a read fault the first time on each node, a plain load afterwards).
///
/// # Memory ordering
/// Completion of the closure happens-before the return of every `call_once`.
///
/// # Examples
/// ```
/// use rthreads::sync::{Arc, Once};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// let once = Arc::new(Once::new());
/// let runs = Arc::new(AtomicUsize::new(0));
/// let handles: Vec<_> = (0..4)
///     .map(|_| {
///         let (once, runs) = (Arc::clone(&once), Arc::clone(&runs));
///         rthreads::spawn(move || once.call_once(|| { runs.fetch_add(1, Ordering::SeqCst); }))
///     })
///     .collect();
/// for h in handles {
///     h.join().unwrap();
/// }
/// assert_eq!(runs.load(Ordering::SeqCst), 1);
/// assert!(once.is_completed());
/// ```
pub struct Once {
    state: AtomicU8,
    lock: AtomicU8,
}

impl fmt::Debug for Once {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Once").field("completed", &self.is_completed()).finish_non_exhaustive()
    }
}

impl Default for Once {
    fn default() -> Once {
        Once::new()
    }
}

/// Unlocks the `Once`'s lock, marking it poisoned if the closure unwound.
struct Finish<'a> {
    once: &'a Once,
    poison_on_unwind: bool,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        if self.poison_on_unwind && std::thread::panicking() {
            self.once.state.store(POISONED, Ordering::SeqCst);
        }
        post(key_of(&self.once.lock), Op::Unlock { shared: false });
    }
}

impl Once {
    /// A new `Once`.
    pub const fn new() -> Once {
        Once { state: AtomicU8::new(INCOMPLETE), lock: AtomicU8::new(0) }
    }

    /// Whether a `call_once` has completed.
    pub fn is_completed(&self) -> bool {
        let done = self.state.load(Ordering::Acquire) == COMPLETE;
        if done {
            // Seeing the call complete is an acquire: what it initialised is visible after it.
            crate::consistency::acquire();
        }
        done
    }

    /// Runs `f` if no call has completed yet, on this or any node; otherwise waits for the running
    /// one and returns.
    ///
    /// # Panics
    /// If a previous call panicked (the `Once` is poisoned), or if `f` panics (the panic
    /// propagates and poisons the `Once`).
    pub fn call_once<F: FnOnce()>(&self, f: F) {
        if self.is_completed() {
            return;
        }
        self.run(false, true, |_| f());
    }

    /// As [`Once::call_once`], but a poisoned `Once` runs `f` again instead of panicking; `f` is
    /// told whether it was poisoned. A panic in `f` poisons the `Once` again.
    pub fn call_once_force<F: FnOnce(&OnceState)>(&self, f: F) {
        if self.is_completed() {
            return;
        }
        self.run(true, true, f);
    }

    /// Runs `f` under the lock unless complete. With `ignore_poison`, a poisoned `Once` runs `f`
    /// again; with `poison`, a panic in `f` poisons it (`OnceLock` passes `false`: it stays empty).
    fn run<F: FnOnce(&OnceState)>(&self, ignore_poison: bool, poison: bool, f: F) {
        let reply = Ticket::call(key_of(&self.lock), Op::Lock { shared: false });
        assert!(matches!(reply, Reply::Granted), "once lock answered {reply:?}");
        crate::consistency::acquire();
        let finish = Finish { once: self, poison_on_unwind: poison };
        let state = self.state.load(Ordering::SeqCst);
        match state {
            COMPLETE => return,
            POISONED if !ignore_poison => {
                drop(finish);
                panic!("Once instance has previously been poisoned");
            }
            _ => {}
        }
        f(&OnceState { poisoned: state == POISONED });
        // What `f` wrote must reach every node before any can see the call complete.
        crate::consistency::release();
        self.state.store(COMPLETE, Ordering::Release);
        drop(finish);
    }
}

/// What [`Once::call_once_force`] tells its closure; as `std::sync::OnceState`.
#[derive(Debug)]
pub struct OnceState {
    poisoned: bool,
}

impl OnceState {
    /// Whether an earlier call panicked.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

/// A cell written once, readable from every node; as `std::sync::OnceLock`.
///
/// # Memory ordering
/// The initialising write happens-before every `get` that returns `Some`.
///
/// # Examples
/// ```
/// use rthreads::sync::{Arc, OnceLock};
///
/// let cell = Arc::new(OnceLock::new());
/// let c = Arc::clone(&cell);
/// rthreads::spawn(move || c.set(String::from("from a thread")).unwrap()).join().unwrap();
/// assert_eq!(cell.get().map(String::as_str), Some("from a thread"));
/// assert!(cell.set(String::new()).is_err());
/// ```
pub struct OnceLock<T> {
    once: Once,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: as std's OnceLock: the value is written once, under the Once, and only read after.
unsafe impl<T: Sync + Send> Sync for OnceLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for OnceLock<T> {}

impl<T> OnceLock<T> {
    /// An empty cell.
    pub const fn new() -> OnceLock<T> {
        OnceLock { once: Once::new(), value: UnsafeCell::new(MaybeUninit::uninit()) }
    }

    /// The value, if initialised.
    pub fn get(&self) -> Option<&T> {
        // SAFETY: completion means the value was written and is never written again.
        self.once.is_completed().then(|| unsafe { (*self.value.get()).assume_init_ref() })
    }

    /// Mutable access to the value, if initialised.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        // SAFETY: initialised, and `&mut self` proves exclusive access.
        self.once.is_completed().then(|| unsafe { self.value.get_mut().assume_init_mut() })
    }

    /// Initialises the cell with `value` unless it already holds one.
    ///
    /// # Errors
    /// `Err(value)` if the cell was already initialised.
    pub fn set(&self, value: T) -> Result<(), T> {
        let mut value = Some(value);
        self.get_or_init(|| value.take().expect("value taken once"));
        value.map_or(Ok(()), Err)
    }

    /// The value, initialising it with `f` first if the cell is empty (on any node, exactly one
    /// initialiser runs).
    ///
    /// # Panics
    /// If `f` panics, the panic propagates and the cell stays empty.
    pub fn get_or_init<F: FnOnce() -> T>(&self, f: F) -> &T {
        if let Some(v) = self.get() {
            return v;
        }
        self.once.run(true, false, |_| {
            let v = f();
            // SAFETY: we hold the Once's lock and it is not complete: nobody reads or writes the
            // value concurrently.
            unsafe { (*self.value.get()).write(v) };
        });
        self.get().expect("initialised")
    }

    /// The value, if initialised, consuming the cell.
    pub fn into_inner(mut self) -> Option<T> {
        self.take()
    }

    /// Takes the value out, leaving the cell empty.
    pub fn take(&mut self) -> Option<T> {
        self.once.is_completed().then(|| {
            self.once = Once::new();
            // SAFETY: it was initialised, and resetting the Once means it will not be read or
            // dropped again.
            unsafe { self.value.get_mut().assume_init_read() }
        })
    }
}

impl<T: std::panic::RefUnwindSafe + std::panic::UnwindSafe> std::panic::RefUnwindSafe for OnceLock<T> {}
impl<T: std::panic::UnwindSafe> std::panic::UnwindSafe for OnceLock<T> {}

impl<T: Clone> Clone for OnceLock<T> {
    fn clone(&self) -> OnceLock<T> {
        self.get().cloned().map_or_else(OnceLock::new, OnceLock::from)
    }
}

impl<T: PartialEq> PartialEq for OnceLock<T> {
    fn eq(&self, other: &OnceLock<T>) -> bool {
        self.get() == other.get()
    }
}

impl<T: Eq> Eq for OnceLock<T> {}

impl<T> Default for OnceLock<T> {
    fn default() -> OnceLock<T> {
        OnceLock::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for OnceLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_tuple("OnceLock");
        match self.get() {
            Some(v) => d.field(v),
            None => d.field(&format_args!("<uninit>")),
        };
        d.finish()
    }
}

impl<T> From<T> for OnceLock<T> {
    fn from(value: T) -> OnceLock<T> {
        let cell = OnceLock::new();
        let _ = cell.set(value);
        cell
    }
}

impl<T> Drop for OnceLock<T> {
    fn drop(&mut self) {
        if self.once.is_completed() {
            // SAFETY: initialised and never used again.
            unsafe { self.value.get_mut().assume_init_drop() };
        }
    }
}
