//! One API, two platforms: the benchmark kernels are written once against this facade and run
//! either on plain `std::thread` in one process ([`Mode::Std`], the baseline) or on rthreads over the
//! cluster ([`Mode::Cluster`]). The mode and the number of worker threads are set once per run by the
//! benchmark worker before any kernel runs.
//!
//! Both settings are per process, so per node: only node 0's are set. That is enough because
//! kernels read `workers()` on the main thread and pass counts into their closures, and in `std` mode
//! nothing runs outside node 0; threads on other nodes that spawn (merge sort) see the default
//! mode, `Cluster`, which is the one in force whenever they exist.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// Which platform the kernels run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `std::thread` and `std::sync` in one process.
    Std,
    /// `rthreads::spawn` and `rthreads::sync` over the cluster.
    Cluster,
}

static MODE: AtomicU8 = AtomicU8::new(1);
static WORKERS: AtomicUsize = AtomicUsize::new(2);

/// Sets the platform (call before running kernels).
pub fn set_mode(m: Mode) {
    MODE.store(if m == Mode::Std { 0 } else { 1 }, Ordering::SeqCst);
}

/// The platform kernels run on.
pub fn mode() -> Mode {
    if MODE.load(Ordering::SeqCst) == 0 { Mode::Std } else { Mode::Cluster }
}

/// Sets how many worker threads a kernel should use in total.
pub fn set_workers(n: usize) {
    WORKERS.store(n.max(1), Ordering::SeqCst);
}

/// How many worker threads a kernel should use in total (in cluster mode, spread round-robin over
/// the nodes by `spawn`).
pub fn workers() -> usize {
    WORKERS.load(Ordering::SeqCst)
}

/// A spawned thread of either platform.
pub enum JoinHandle<T> {
    /// A `std` thread.
    Std(std::thread::JoinHandle<T>),
    /// An rthreads thread.
    Cluster(rthreads::JoinHandle<T>),
}

impl<T> JoinHandle<T> {
    /// Waits for the thread and returns its result; a panic in it is resumed here.
    pub fn join(self) -> T {
        let r = match self {
            JoinHandle::Std(h) => h.join(),
            JoinHandle::Cluster(h) => h.join(),
        };
        r.unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

/// Spawns a thread on the current platform (round-robin over the nodes in cluster mode).
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match mode() {
        Mode::Std => JoinHandle::Std(std::thread::spawn(f)),
        Mode::Cluster => JoinHandle::Cluster(rthreads::spawn(f)),
    }
}

/// A mutex of either platform.
pub enum Mutex<T> {
    /// `std::sync::Mutex`.
    Std(std::sync::Mutex<T>),
    /// `rthreads::sync::Mutex`.
    Cluster(rthreads::sync::Mutex<T>),
}

/// The guard of a [`Mutex`].
pub enum MutexGuard<'a, T> {
    /// Of a `std` mutex.
    Std(std::sync::MutexGuard<'a, T>),
    /// Of an rthreads mutex.
    Cluster(rthreads::sync::MutexGuard<'a, T>),
}

impl<T> Mutex<T> {
    /// A new mutex on the current platform.
    pub fn new(t: T) -> Mutex<T> {
        match mode() {
            Mode::Std => Mutex::Std(std::sync::Mutex::new(t)),
            Mode::Cluster => Mutex::Cluster(rthreads::sync::Mutex::new(t)),
        }
    }

    /// Locks it (poisoning is treated as a bug in a kernel: it panics).
    pub fn lock(&self) -> MutexGuard<'_, T> {
        match self {
            Mutex::Std(m) => MutexGuard::Std(m.lock().expect("poisoned")),
            Mutex::Cluster(m) => MutexGuard::Cluster(m.lock().expect("poisoned")),
        }
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            MutexGuard::Std(g) => g,
            MutexGuard::Cluster(g) => g,
        }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        match self {
            MutexGuard::Std(g) => g,
            MutexGuard::Cluster(g) => g,
        }
    }
}

/// A barrier of either platform.
pub enum Barrier {
    /// `std::sync::Barrier`.
    Std(std::sync::Barrier),
    /// `rthreads::sync::Barrier`.
    Cluster(rthreads::sync::Barrier),
}

impl Barrier {
    /// A barrier for `n` threads on the current platform.
    pub fn new(n: usize) -> Barrier {
        match mode() {
            Mode::Std => Barrier::Std(std::sync::Barrier::new(n)),
            Mode::Cluster => Barrier::Cluster(rthreads::sync::Barrier::new(n)),
        }
    }

    /// Waits for the other threads; `true` for exactly one of them per phase.
    pub fn wait(&self) -> bool {
        match self {
            Barrier::Std(b) => b.wait().is_leader(),
            Barrier::Cluster(b) => b.wait().is_leader(),
        }
    }
}

/// How big a kernel's problem is (`small`, `medium` or `large` on the tools' command lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Size {
    /// Seconds or less on the 2-vCPU CI machine, in a debug build: for tests.
    Small,
    /// Around a second per run in a release build on the 2-vCPU machine.
    Medium,
    /// For machines with more cores.
    Large,
}

impl Size {
    /// Parses `small`, `medium` or `large`.
    pub fn parse(s: &str) -> Option<Size> {
        [Size::Small, Size::Medium, Size::Large].into_iter().find(|size| size.name() == s)
    }

    /// `small`, `medium` or `large`.
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }
}
