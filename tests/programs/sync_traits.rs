//! `rthreads::sync` types have std's auto traits and common trait impls, checked at compile time
//! (a missing one fails the build), plus a run on a cluster of what those impls print.
//!
//! Only what rthreads provides today is here; see the report of the sync tests for the std impls
//! still missing (`RefUnwindSafe` for `Mutex`/`RwLock`/`OnceLock`, `Display` for the `RwLock`
//! guards, `From` for `RwLock`, `Clone`/`PartialEq` for `OnceLock`).

use std::fmt::{Debug, Display};
use std::panic::{RefUnwindSafe, UnwindSafe};

use rthreads::sync::mpsc::{
    self, Receiver, RecvError, RecvTimeoutError, SendError, Sender, SyncSender, TryRecvError, TrySendError,
};
use rthreads::sync::{
    Arc, Barrier, BarrierWaitResult, Condvar, LockResult, Mutex, MutexGuard, Once, OnceLock, PoisonError,
    RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError, TryLockResult, WaitTimeoutResult,
};

fn send<T: Send>() {}
fn sync<T: Sync>() {}
fn debug<T: Debug>() {}
fn display<T: Display>() {}
fn default<T: Default>() {}
fn unwind_safe<T: UnwindSafe>() {}
fn ref_unwind_safe<T: RefUnwindSafe>() {}

// `const` constructors, as std's, so they can make statics (per node: used on node 0 only).
static MUTEX: Mutex<u32> = Mutex::new(0);
static RWLOCK: RwLock<u32> = RwLock::new(0);
static CONDVAR: Condvar = Condvar::new();
static BARRIER: Barrier = Barrier::new(1);
static ONCE: Once = Once::new();
static ONCE_LOCK: OnceLock<u32> = OnceLock::new();

/// The error and result types are std's own.
fn same_types() {
    let _: std::sync::PoisonError<u8> = PoisonError::new(1u8);
    let _: std::sync::TryLockError<u8> = TryLockError::WouldBlock;
    let _: Option<std::sync::LockResult<u8>> = None::<LockResult<u8>>;
    let _: Option<std::sync::TryLockResult<u8>> = None::<TryLockResult<u8>>;
    let _: std::sync::mpsc::SendError<u8> = SendError(1u8);
    let _: std::sync::mpsc::RecvError = RecvError;
    let _: std::sync::mpsc::TryRecvError = TryRecvError::Empty;
    let _: std::sync::mpsc::RecvTimeoutError = RecvTimeoutError::Timeout;
    let _: std::sync::mpsc::TrySendError<u8> = TrySendError::Full(1u8);
    let _: std::sync::Arc<u8> = Arc::new(1u8);
}

fn auto_traits() {
    send::<Mutex<u32>>();
    sync::<Mutex<u32>>();
    send::<RwLock<u32>>();
    sync::<RwLock<u32>>();
    send::<Condvar>();
    sync::<Condvar>();
    send::<Barrier>();
    sync::<Barrier>();
    send::<Once>();
    sync::<Once>();
    send::<OnceLock<u32>>();
    sync::<OnceLock<u32>>();
    sync::<MutexGuard<'static, u32>>();
    sync::<RwLockReadGuard<'static, u32>>();
    sync::<RwLockWriteGuard<'static, u32>>();
    send::<Sender<u32>>();
    sync::<Sender<u32>>(); // since Rust 1.72
    send::<SyncSender<u32>>();
    sync::<SyncSender<u32>>();
    send::<Receiver<u32>>();
    unwind_safe::<Mutex<u32>>();
    unwind_safe::<RwLock<u32>>();
    unwind_safe::<Condvar>();
    ref_unwind_safe::<Condvar>();
    ref_unwind_safe::<Barrier>();
    unwind_safe::<Once>();
    ref_unwind_safe::<Once>();
}

fn trait_impls() {
    debug::<Mutex<u32>>();
    debug::<RwLock<u32>>();
    debug::<Condvar>();
    debug::<Barrier>();
    debug::<BarrierWaitResult>();
    debug::<Once>();
    debug::<OnceLock<u32>>();
    debug::<WaitTimeoutResult>();
    debug::<MutexGuard<'static, u32>>();
    display::<MutexGuard<'static, u32>>();
    debug::<RwLockReadGuard<'static, u32>>();
    debug::<RwLockWriteGuard<'static, u32>>();
    debug::<Sender<u32>>();
    debug::<SyncSender<u32>>();
    debug::<Receiver<u32>>();
    default::<Mutex<u32>>();
    default::<RwLock<u32>>();
    default::<Condvar>();
    default::<OnceLock<u32>>();
    let _: Mutex<u32> = Mutex::from(3);
    let _: OnceLock<u32> = OnceLock::from(3);
}

#[rthreads::main]
fn main() {
    same_types();
    auto_traits();
    trait_impls();
    *MUTEX.lock().unwrap() += 1;
    *RWLOCK.write().unwrap() += 1;
    assert_eq!(*MUTEX.lock().unwrap() + *RWLOCK.read().unwrap(), 2);
    let (_g, r) = CONDVAR.wait_timeout(MUTEX.lock().unwrap(), std::time::Duration::from_millis(1)).unwrap();
    assert!(r.timed_out());
    assert!(BARRIER.wait().is_leader());
    ONCE.call_once(|| {});
    assert!(ONCE.is_completed());
    assert_eq!(ONCE_LOCK.get_or_init(|| 7), &7);

    // What the impls print, for a mutex held on another node.
    let m = Arc::new(Mutex::new(5u32));
    let (tx, rx) = mpsc::channel::<()>();
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let m2 = Arc::clone(&m);
    let h = rthreads::Builder::new()
        .node(1 % rthreads::node_count())
        .spawn(move || {
            let g = m2.lock().unwrap();
            held_tx.send(()).unwrap();
            rx.recv().unwrap();
            format!("{g} {g:?}")
        })
        .unwrap();
    held_rx.recv().unwrap();
    let shown = format!("{m:?}");
    tx.send(()).unwrap();
    assert_eq!(h.join().unwrap(), "5 5");
    println!("held elsewhere: {shown}");
    assert!(shown.contains("<locked>"), "{shown}");
    let shown = format!("{m:?}");
    println!("free: {shown}");
    assert!(shown.contains('5') && shown.contains("poisoned: false"), "{shown}");
    println!("traits ok");
}
