//! Scoped threads, as `std::thread::scope`, whose threads may run on other nodes and borrow the
//! parent's locals there.
//!
//! A scoped thread's closure borrows from its parent's stack. That works across nodes because the
//! parent's stack is in the shared space: every rthread, and the body of `#[rthreads::main]`, runs
//! on a fiber stack allocated from the shared heap (see `fiber`). A scope opened on a thread with a
//! private stack (one made with `std::thread::spawn`) keeps its threads on its own node.
//!
//! Bookkeeping mirrors std: the scope counts the packets of its threads (the shared cell each
//! thread leaves its result in), and waits until all are gone. A packet still holding a panic when
//! it goes is a panic nobody joined, and the scope then panics with "a scoped thread panicked".
//! The count lives in the shared heap under a cluster-wide [`Mutex`], so a packet can go on any
//! node.

use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use crate::sync::{Condvar, Mutex};
use crate::thread::{Builder, JoinHandle};

/// What a scope and its threads share (in the shared heap).
pub(crate) struct ScopeData {
    /// Packets alive, and whether one went with an unjoined panic.
    state: Mutex<(usize, bool)>,
    all_gone: Condvar,
}

impl ScopeData {
    pub(crate) fn thread_added(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = g.0.checked_add(1).expect("too many threads in one scope");
    }

    pub(crate) fn thread_gone(&self, panicked: bool) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.0 -= 1;
        g.1 |= panicked;
        if g.0 == 0 {
            self.all_gone.notify_all();
        }
    }

    /// Waits until every thread's packet is gone; returns whether one held an unjoined panic.
    fn wait_all(&self) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while g.0 > 0 {
            g = self.all_gone.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.1
    }
}

/// A scope to spawn scoped threads in; see [`scope`].
///
/// The lifetimes are std's: `'scope` is the scope itself (threads may not outlive it), `'env` is
/// whatever the threads borrow (which outlives the scope).
pub struct Scope<'scope, 'env: 'scope> {
    pub(super) data: Arc<ScopeData>,
    pub(super) owner: usize,
    /// Whether the scope's environment may be read from other nodes.
    pub(super) remote: bool,
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("owner", &self.owner)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// Opens a scope in which threads that borrow non-`'static` data can be spawned, on any node, as
/// `std::thread::scope` does on one machine. Every thread spawned in the scope is joined before
/// `scope` returns.
///
/// The threads may run on other nodes and still read and write the caller's locals: the caller's
/// stack is in the shared space (true of every thread `rthreads` starts and of the body of
/// `#[rthreads::main]`). Called on a thread with a private stack (one made by
/// `std::thread::spawn`), the scope keeps its threads on the caller's node.
///
/// Memory: each thread's start synchronizes-with its spawn and the end of `scope` synchronizes-with
/// the end of every thread (as joins): what the threads wrote is visible once `scope` returns, on
/// any node and under either protocol.
///
/// # Panics
/// With "a scoped thread panicked" if a thread panicked and was not joined (its panic is reported
/// by the panic hook as usual); with the closure's own panic if `f` panicked (after every thread
/// has ended). As [`crate::spawn`] if a thread cannot be created.
///
/// # Examples
/// ```
/// let mut a = vec![1, 2, 3];
/// let mut x = 0;
/// rthreads::scope(|s| {
///     s.spawn(|| {
///         println!("hello from the first scoped thread");
///         dbg!(&a); // borrows `a`
///     });
///     s.spawn(|| {
///         println!("hello from the second scoped thread");
///         x += a[0] + a[2]; // mutably borrows `x`
///     });
///     println!("hello from the main thread");
/// });
/// // After the scope, we can modify and access our variables again:
/// a.push(4);
/// assert_eq!(x, a.len());
/// ```
///
/// The borrow rules are std's: two threads may not both borrow a local mutably,
/// ```compile_fail,E0499
/// let mut x = 0;
/// rthreads::scope(|s| {
///     s.spawn(|| x += 1);
///     s.spawn(|| x += 1);
/// });
/// ```
/// a thread may not outlive its scope,
/// ```compile_fail
/// let h = rthreads::scope(|s| s.spawn(|| 1));
/// ```
/// and what a thread takes along must be `Send`:
/// ```compile_fail,E0277
/// let rc = std::rc::Rc::new(1);
/// rthreads::scope(|s| {
///     s.spawn(|| *rc + 1);
/// });
/// ```
#[track_caller]
pub fn scope<'env, F, T>(f: F) -> T
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
{
    let scope = Scope {
        data: Arc::new(ScopeData { state: Mutex::new((0, false)), all_gone: Condvar::new() }),
        owner: crate::current_node(),
        remote: crate::fiber::on_shared_stack(),
        scope: PhantomData,
        env: PhantomData,
    };
    let result = panic::catch_unwind(AssertUnwindSafe(|| f(&scope)));
    let panicked = scope.data.wait_all();
    match result {
        Err(e) => panic::resume_unwind(e),
        Ok(_) if panicked => panic!("a scoped thread panicked"),
        Ok(r) => r,
    }
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Spawns a thread in the scope, placed as [`crate::spawn`] places threads (or on the caller's
    /// node, for a scope opened on a private stack). Unlike [`crate::spawn`], the closure may
    /// borrow anything that outlives the scope.
    ///
    /// The spawn synchronizes-with the start of the thread: everything written before is visible
    /// to it.
    ///
    /// # Panics
    /// If the thread cannot be created; use [`Builder::spawn_scoped`] to get the error instead.
    ///
    /// # Examples
    /// ```
    /// let data = [1u64, 2, 3, 4];
    /// let total = rthreads::scope(|s| {
    ///     let (lo, hi) = data.split_at(2);
    ///     let a = s.spawn(|| lo.iter().sum::<u64>());
    ///     let b = s.spawn(|| hi.iter().sum::<u64>());
    ///     a.join().unwrap() + b.join().unwrap()
    /// });
    /// assert_eq!(total, 10);
    /// ```
    pub fn spawn<F, T>(&'scope self, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        Builder::new().spawn_scoped(self, f).expect("failed to spawn thread")
    }
}

/// An owned permission to join a scoped thread; as `std::thread::ScopedJoinHandle`.
#[derive(Debug)]
pub struct ScopedJoinHandle<'scope, T> {
    inner: JoinHandle<T>,
    scope: PhantomData<&'scope ()>,
}

impl<'scope, T> ScopedJoinHandle<'scope, T> {
    pub(crate) fn new(inner: JoinHandle<T>) -> Self {
        ScopedJoinHandle { inner, scope: PhantomData }
    }

    /// Waits for the thread to finish and returns its result, or `Err` with its panic payload (a
    /// joined panic does not make the scope panic). Its end synchronizes-with the return of
    /// `join`, as [`JoinHandle::join`].
    ///
    /// # Errors
    /// The payload of the thread's panic, or a `String` saying it could not be started.
    ///
    /// # Examples
    /// ```
    /// rthreads::scope(|s| {
    ///     let h = s.spawn(|| panic!("oops"));
    ///     assert!(h.join().is_err());
    /// });
    /// ```
    pub fn join(self) -> std::thread::Result<T> {
        self.inner.join()
    }

    /// Whether the thread has finished (without blocking), as [`JoinHandle::is_finished`].
    ///
    /// # Examples
    /// ```
    /// rthreads::scope(|s| {
    ///     let h = s.spawn(|| ());
    ///     while !h.is_finished() {
    ///         std::thread::yield_now();
    ///     }
    /// });
    /// ```
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// The node the thread was started on.
    ///
    /// # Examples
    /// ```
    /// rthreads::scope(|s| assert!(s.spawn(|| ()).node() < rthreads::node_count()));
    /// ```
    pub fn node(&self) -> usize {
        self.inner.node()
    }
}
