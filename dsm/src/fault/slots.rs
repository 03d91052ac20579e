//! The hand-off between a faulting thread and the service thread.
//!
//! A trap claims one of [`SLOTS`] preallocated slots with a compare-and-swap, records the page and
//! the kind in it, publishes it (`PENDING`, with Release ordering) and writes the slot's number,
//! four bytes, to the fault pipe. The service thread reads the numbers ([`FaultReceiver::drain`]),
//! runs the protocol and finally calls [`complete`], which marks the slot `DONE` and wakes its
//! waiter; the waiter frees the slot and returns from the handler.
//!
//! A waiter polls its slot briefly ([`set_spin`]), then sleeps: in `read(2)` on a pipe of its own
//! slot when the first [`PIPE_SLOTS`] slots have pipes and they are on ([`set_wake_pipes`]), else
//! on a futex. The waiter decides once, from one reading of the setting, and records the decision
//! in its slot before it publishes it; [`complete`] reads that record, so waiter and waker always
//! agree, however often the setting changes meanwhile.
//!
//! The functions marked *(handler)* run inside the SIGSEGV handler (`handler.rs`) and are
//! async-signal-safe: atomics, `read(2)`/`write(2)` through [`sys::raw_read`]/[`sys::raw_write`],
//! and the futex. The rest runs on ordinary threads.

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

use crate::sys;
use crate::{FaultKind, PageId};

/// How many threads of one node can be inside a fault at once.
pub const SLOTS: usize = 1024;
/// Slots below this number each have a pipe their waiting thread can sleep on instead of the
/// futex (see [`set_wake_pipes`]).
const PIPE_SLOTS: usize = 64;
/// The pipe word the service thread reads for a wake-up that is not a fault.
const NOTIFY: u32 = u32::MAX;

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const PENDING: u32 = 2;
const DONE: u32 = 3;

struct Slot {
    state: AtomicU32,
    page: AtomicU64,
    write: AtomicBool,
    atomic: AtomicBool,
    /// How the waiter sleeps: on this slot's pipe (true) or on the futex of `state` (false).
    /// Written by the waiter before it publishes the slot; read by [`complete`].
    pipe: AtomicBool,
    /// The faulting thread's id and when it trapped (for reports of faults that do not end).
    tid: AtomicI32,
    since_ns: AtomicU64,
}

impl Slot {
    fn kind(&self) -> FaultKind {
        if self.write.load(Ordering::Relaxed) { FaultKind::Write } else { FaultKind::Read }
    }
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: Slot = Slot {
    state: AtomicU32::new(FREE),
    page: AtomicU64::new(0),
    write: AtomicBool::new(false),
    atomic: AtomicBool::new(false),
    pipe: AtomicBool::new(false),
    tid: AtomicI32::new(0),
    since_ns: AtomicU64::new(0),
};

static TABLE: [Slot; SLOTS] = [EMPTY_SLOT; SLOTS];

/// The write end of the fault pipe (`-1` before `install`).
static PIPE_WR: AtomicI32 = AtomicI32::new(-1);
/// How many polls of its slot a faulting thread makes before it sleeps.
static SPIN: AtomicU32 = AtomicU32::new(50);

#[allow(clippy::declare_interior_mutable_const)]
const NO_FD: AtomicI32 = AtomicI32::new(-1);
static WAKE_RD: [AtomicI32; PIPE_SLOTS] = [NO_FD; PIPE_SLOTS];
static WAKE_WR: [AtomicI32; PIPE_SLOTS] = [NO_FD; PIPE_SLOTS];
static USE_PIPES: AtomicBool = AtomicBool::new(false);

/// A fault that a thread of this node is waiting in (see [`pending`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingFault {
    /// The waiting thread's id (`gettid`).
    pub tid: i32,
    /// The page it touched.
    pub page: PageId,
    /// Load or store.
    pub kind: FaultKind,
    /// When it trapped ([`now_ns`](crate::trace::now_ns)).
    pub since_ns: u64,
}

/// The faults threads of this node are waiting in now (a racy snapshot, for reports).
pub fn pending() -> Vec<PendingFault> {
    let pending = TABLE.iter().filter(|s| s.state.load(Ordering::Acquire) == PENDING);
    pending
        .map(|s| PendingFault {
            tid: s.tid.load(Ordering::Relaxed),
            page: PageId(s.page.load(Ordering::Relaxed)),
            kind: s.kind(),
            since_ns: s.since_ns.load(Ordering::Relaxed),
        })
        .collect()
}

/// A claimed fault slot, as seen by the service thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotId(u32);

/// What woke the service thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// An application thread trapped and waits in `slot`.
    Fault {
        /// Whom to [`complete`].
        slot: SlotId,
        /// The page it touched.
        page: PageId,
        /// Load or store.
        kind: FaultKind,
        /// The faulting instruction is an atomic read-modify-write (a `lock`-prefixed instruction
        /// or `xchg` with memory, which is what a `SeqCst` store compiles to): the page holds an
        /// atomic variable. x86-64 only; always false elsewhere.
        atomic: bool,
    },
    /// Somebody called [`notify`]: look at the runtime's command queue.
    Notify,
}

/// The service thread's end of the hand-off.
#[derive(Debug)]
pub struct FaultReceiver {
    read: OwnedFd,
    _write: OwnedFd,
}

impl FaultReceiver {
    /// Makes the fault pipe; called once, by `install`, before the handler can run.
    pub(super) fn open() -> io::Result<FaultReceiver> {
        let (read, write) = sys::pipe()?;
        // Enough room that a writer never blocks: every slot's word fits many times over.
        // SAFETY: fcntl on a pipe we own; failure only leaves the default size, which also suffices.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 16) };
        PIPE_WR.store(write.as_raw_fd(), Ordering::SeqCst);
        Ok(FaultReceiver { read, _write: write })
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Reads every pending wake-up without blocking and passes each to `f`.
    pub fn drain(&self, mut f: impl FnMut(Wakeup)) {
        let mut buf = [0u32; 256];
        loop {
            // SAFETY: reading into a local buffer of the stated size.
            let n = unsafe { sys::raw_read(self.fd(), buf.as_mut_ptr().cast(), std::mem::size_of_val(&buf)) };
            if n <= 0 {
                return;
            }
            for &word in &buf[..n as usize / 4] {
                if word == NOTIFY {
                    f(Wakeup::Notify);
                } else if let Some(slot) = TABLE.get(word as usize) {
                    // The state first: its Acquire pairs with the handler's Release store of
                    // PENDING, which comes after the handler's stores of page and kind, so these
                    // are read only once they are known to be written. (No test can show the
                    // opposite order failing here: on x86-64 loads are not reordered with other
                    // loads, and the pipe's system calls order everything anyway. The order is
                    // what the memory model asks for, on any hardware.)
                    if slot.state.load(Ordering::Acquire) != PENDING {
                        continue;
                    }
                    let page = PageId(slot.page.load(Ordering::Relaxed));
                    let atomic = slot.atomic.load(Ordering::Relaxed);
                    f(Wakeup::Fault { slot: SlotId(word), page, kind: slot.kind(), atomic });
                }
            }
            if (n as usize) < std::mem::size_of_val(&buf) {
                return;
            }
        }
    }
}

/// Lets the thread waiting in `slot` retry its access. Called by the service thread only, for a
/// slot [`FaultReceiver::drain`] reported.
pub fn complete(slot: SlotId) {
    let i = slot.0 as usize;
    let s = &TABLE[i];
    // Written by the waiter before it published the slot, which `drain` saw (Acquire).
    let pipe = s.pipe.load(Ordering::Relaxed);
    s.state.store(DONE, Ordering::Release);
    if pipe {
        let fd = WAKE_WR[i].load(Ordering::Relaxed);
        // SAFETY: a one-byte write to our own non-blocking pipe; if it is full the waiter has
        // bytes to read anyway.
        unsafe { sys::raw_write(fd, [1u8].as_ptr(), 1) };
    } else {
        sys::futex_wake_all(&s.state);
    }
}

/// Makes faulting threads sleep in `read(2)` on a pipe of their slot instead of on a futex (or,
/// with `false`, on the futex again). A pipe wake-up is a *synchronous* one (the waker is about to
/// sleep), so the scheduler tends to run the woken thread on the waker's CPU instead of waking an
/// idle one, which on a VM costs tens of microseconds. Threads already waiting keep sleeping where
/// they chose to and are woken there.
///
/// # Errors
/// If the pipes cannot be made.
pub fn set_wake_pipes(on: bool) -> io::Result<()> {
    if on && WAKE_RD[0].load(Ordering::SeqCst) < 0 {
        for i in 0..PIPE_SLOTS {
            let (r, w) = sys::pipe()?;
            // The reader blocks; the writer must never.
            let (rfd, wfd) = (r.into_raw_fd(), w.into_raw_fd());
            // SAFETY: fcntl on descriptors we own.
            unsafe {
                let fl = libc::fcntl(rfd, libc::F_GETFL);
                libc::fcntl(rfd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
            sys::set_nonblocking(wfd)?;
            WAKE_RD[i].store(rfd, Ordering::SeqCst);
            WAKE_WR[i].store(wfd, Ordering::SeqCst);
        }
    }
    USE_PIPES.store(on, Ordering::SeqCst);
    Ok(())
}

/// Sets how many times a faulting thread polls for its page before it sleeps. Spinning pays off
/// when a core is free; on an oversubscribed machine it steals time from the service threads.
pub fn set_spin(polls: u32) {
    SPIN.store(polls, Ordering::Relaxed);
}

/// Wakes the service thread with [`Wakeup::Notify`]. Async-signal-safe; callable from any thread.
pub fn notify() {
    post(NOTIFY);
}

/// Whether the service thread sleeps longer than its busy tick (see [`set_dozing`]).
static DOZING: AtomicBool = AtomicBool::new(false);

/// Says whether the service thread is about to sleep longer than usual (an idle node's service
/// thread sleeps up to a quarter of a second): work that would otherwise wait for its next turn
/// then wakes it with [`nudge`]. Called by the service thread around its sleep.
pub fn set_dozing(on: bool) {
    DOZING.store(on, Ordering::SeqCst);
}

/// Wakes the service thread if it is in a long sleep (see [`set_dozing`]), at most once per sleep:
/// for work that is fine waiting for the service thread's next ordinary turn but not for a
/// long sleep (a few freed blocks to send home, a load report to send). Async-signal-safe.
pub fn nudge() {
    if DOZING.swap(false, Ordering::SeqCst) {
        notify();
    }
}

/// Writes `word` to the fault pipe, retrying on `EINTR`/`EAGAIN`. *(handler)*
fn post(word: u32) {
    let fd = PIPE_WR.load(Ordering::Relaxed);
    let bytes = word.to_ne_bytes();
    loop {
        // SAFETY: write(2) of a 4-byte local buffer; writes under PIPE_BUF are atomic.
        let n = unsafe { sys::raw_write(fd, bytes.as_ptr(), 4) };
        if n == 4 || fd < 0 {
            return;
        }
        let err = sys::errno();
        if err != libc::EINTR && err != libc::EAGAIN {
            return;
        }
    }
}

/// Claims a free slot for a trap of thread `tid` on page number `page` and hands it to the
/// service thread. Returns the slot's index, for [`wait`]. *(handler)*
pub(super) fn claim(tid: i32, page: u64, write: bool, atomic: bool, since_ns: u64) -> usize {
    // One reading of the setting decides both where to claim and how to sleep; the slot keeps
    // the decision for `complete`. Acquire: the pipes exist before the setting says so.
    let pipes = USE_PIPES.load(Ordering::Acquire);
    // Start from a spot derived from the thread id, to spread threads out.
    let mut i = (tid as usize).wrapping_mul(2654435761) % if pipes { PIPE_SLOTS } else { SLOTS };
    let slot = loop {
        let s = &TABLE[i];
        if s.state.compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            break s;
        }
        i = (i + 1) % SLOTS;
    };
    slot.page.store(page, Ordering::Relaxed);
    slot.tid.store(tid, Ordering::Relaxed);
    slot.since_ns.store(since_ns, Ordering::Relaxed);
    slot.write.store(write, Ordering::Relaxed);
    slot.atomic.store(atomic, Ordering::Relaxed);
    slot.pipe.store(pipes && i < PIPE_SLOTS, Ordering::Relaxed);
    slot.state.store(PENDING, Ordering::Release);
    post(i as u32);
    i
}

/// Waits until the service thread has completed slot `i`, then frees it. *(handler)*
pub(super) fn wait(i: usize) {
    let slot = &TABLE[i];
    let spin = SPIN.load(Ordering::Relaxed);
    let rd = if slot.pipe.load(Ordering::Relaxed) { WAKE_RD[i].load(Ordering::Relaxed) } else { -1 };
    let mut polls = 0u32;
    while slot.state.load(Ordering::Acquire) != DONE {
        if polls < spin {
            polls += 1;
            std::hint::spin_loop();
        } else if rd >= 0 {
            let mut b = [0u8; 1];
            // SAFETY: a blocking one-byte read into a local buffer; a stale byte from an earlier
            // fault only makes the loop look at the state once more.
            unsafe { sys::raw_read(rd, b.as_mut_ptr(), 1) };
        } else {
            sys::futex_wait(&slot.state, PENDING);
        }
    }
    slot.state.store(FREE, Ordering::Release);
}
