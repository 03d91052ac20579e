//! The SIGSEGV handler: traps on the shared space and hands them to the node's service thread.
//!
//! EVERYTHING REACHABLE FROM [`on_segv`] MUST BE ASYNC-SIGNAL-SAFE: no allocation, no locks, no
//! formatting, no `std::io`. It reads a few atomics, claims a preallocated slot with a
//! compare-and-swap, writes four bytes to a pipe (`write(2)` is async-signal-safe), and waits on
//! a futex until the service thread has made the page accessible. Faults outside the shared space
//! go to whatever handler was installed before ours (std's prints "stack overflow" for guard pages).
//!
//! The service thread reads slot numbers from the pipe ([`FaultReceiver::drain`]), runs the
//! protocol, and finally calls [`complete`] for the slot, which wakes the thread; it then returns
//! from the handler and the faulting instruction runs again. If the access is still not allowed
//! (say it needed write access and got a read copy), it traps again and asks again.

use std::cell::UnsafeCell;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::space::SpaceLayout;
use crate::sys::{self, PAGE_SIZE};
use crate::{FaultKind, PageId};

/// How many threads of one node can be inside a fault at once.
pub const SLOTS: usize = 1024;
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
    /// The faulting thread's id and when it trapped (for reports of faults that do not end).
    tid: AtomicI32,
    since_ns: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: Slot = Slot {
    state: AtomicU32::new(FREE),
    page: AtomicU64::new(0),
    write: AtomicBool::new(false),
    atomic: AtomicBool::new(false),
    tid: AtomicI32::new(0),
    since_ns: AtomicU64::new(0),
};

/// A fault that a thread of this node is waiting in (see [`pending`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingFault {
    /// The waiting thread's id (`gettid`).
    pub tid: i32,
    /// The page it touched.
    pub page: PageId,
    /// Load or store.
    pub kind: FaultKind,
    /// When it trapped ([`now_ns`]).
    pub since_ns: u64,
}

/// The faults threads of this node are waiting in now (a racy snapshot, for reports).
pub fn pending() -> Vec<PendingFault> {
    let mut out = Vec::new();
    for s in &TABLE {
        if s.state.load(Ordering::Acquire) != PENDING {
            continue;
        }
        let kind = if s.write.load(Ordering::Relaxed) { FaultKind::Write } else { FaultKind::Read };
        out.push(PendingFault {
            tid: s.tid.load(Ordering::Relaxed),
            page: PageId(s.page.load(Ordering::Relaxed)),
            kind,
            since_ns: s.since_ns.load(Ordering::Relaxed),
        });
    }
    out
}
static TABLE: [Slot; SLOTS] = [EMPTY_SLOT; SLOTS];

static BASE: AtomicUsize = AtomicUsize::new(0);
static SIZE: AtomicUsize = AtomicUsize::new(0);
static PIPE_WR: AtomicI32 = AtomicI32::new(-1);
/// Thread id of the service thread: a trap there would wait for itself, so it is reported instead.
static SERVICE_TID: AtomicI32 = AtomicI32::new(0);
/// How many polls of its slot a faulting thread makes before sleeping on the futex.
static SPIN: AtomicU32 = AtomicU32::new(50);
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// One bit per page of the space: set for the guard page of a stack that lives in the shared
/// space and runs on this node (see [`set_guard`]). Mapped at install, committed as touched.
static GUARDS: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());

/// Slots below this number each have a pipe their waiting thread can sleep on instead of the
/// futex (see [`set_wake_pipes`]).
const PIPE_SLOTS: usize = 64;
#[allow(clippy::declare_interior_mutable_const)]
const NO_FD: AtomicI32 = AtomicI32::new(-1);
static WAKE_RD: [AtomicI32; PIPE_SLOTS] = [NO_FD; PIPE_SLOTS];
static WAKE_WR: [AtomicI32; PIPE_SLOTS] = [NO_FD; PIPE_SLOTS];
static USE_PIPES: AtomicBool = AtomicBool::new(false);

/// Traps served, by kind, and the time application threads spent blocked in them (nanoseconds).
static READ_FAULTS: AtomicU64 = AtomicU64::new(0);
static WRITE_FAULTS: AtomicU64 = AtomicU64::new(0);
static FAULT_WAIT_NS: AtomicU64 = AtomicU64::new(0);

/// What the handler has counted on this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    /// Traps on loads.
    pub read: u64,
    /// Traps on stores.
    pub write: u64,
    /// Total time application threads spent in the handler, in nanoseconds.
    pub wait_ns: u64,
}

/// The handler's counters so far.
pub fn counters() -> FaultCounters {
    FaultCounters {
        read: READ_FAULTS.load(Ordering::Relaxed),
        write: WRITE_FAULTS.load(Ordering::Relaxed),
        wait_ns: FAULT_WAIT_NS.load(Ordering::Relaxed),
    }
}

/// Monotonic nanoseconds (`CLOCK_MONOTONIC`); `clock_gettime` is async-signal-safe.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The action that was installed before ours; written once, before our handler is installed.
struct OldAction(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: written exactly once by `install` before the handler can run, only read afterwards.
unsafe impl Sync for OldAction {}
static OLD: OldAction = OldAction(UnsafeCell::new(MaybeUninit::uninit()));

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
                    // are read only once they are known to be written.
                    if slot.state.load(Ordering::Acquire) != PENDING {
                        continue;
                    }
                    let page = PageId(slot.page.load(Ordering::Relaxed));
                    let kind =
                        if slot.write.load(Ordering::Relaxed) { FaultKind::Write } else { FaultKind::Read };
                    let atomic = slot.atomic.load(Ordering::Relaxed);
                    f(Wakeup::Fault { slot: SlotId(word), page, kind, atomic });
                }
            }
            if (n as usize) < std::mem::size_of_val(&buf) {
                return;
            }
        }
    }
}

/// Lets the thread waiting in `slot` retry its access. Called by the service thread only.
pub fn complete(slot: SlotId) {
    let i = slot.0 as usize;
    let s = &TABLE[i];
    s.state.store(DONE, Ordering::Release);
    let fd = if i < PIPE_SLOTS { WAKE_WR[i].load(Ordering::Relaxed) } else { -1 };
    if fd >= 0 {
        // SAFETY: a one-byte write to our own non-blocking pipe; if it is full the waiter has
        // bytes to read anyway.
        unsafe { sys::raw_write(fd, [1u8].as_ptr(), 1) };
    } else {
        sys::futex_wake_all(&s.state);
    }
}

/// Makes faulting threads sleep in `read(2)` on a pipe of their slot instead of on a futex. A
/// pipe wake-up is a *synchronous* one (the waker is about to sleep), so the scheduler tends to
/// run the woken thread on the waker's CPU instead of waking an idle one, which on a VM costs tens
/// of microseconds.
///
/// # Errors
/// If the pipes cannot be made.
pub fn set_wake_pipes(on: bool) -> io::Result<()> {
    if on && WAKE_RD[0].load(Ordering::SeqCst) < 0 {
        for i in 0..PIPE_SLOTS {
            let (r, w) = sys::pipe()?;
            // The reader blocks; the writer must never.
            let rfd = std::os::fd::IntoRawFd::into_raw_fd(r);
            let wfd = std::os::fd::IntoRawFd::into_raw_fd(w);
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

/// Wakes the service thread with [`Wakeup::Notify`]. Async-signal-safe; callable from any thread.
pub fn notify() {
    write_word(NOTIFY);
}

/// Sets how many times a faulting thread polls for its page before it sleeps. Spinning pays off
/// when a core is free; on an oversubscribed machine it steals time from the service threads.
pub fn set_spin(polls: u32) {
    SPIN.store(polls, Ordering::Relaxed);
}

/// Records the calling thread as the service thread (a trap there is a bug, reported loudly).
pub fn register_service_thread() {
    SERVICE_TID.store(gettid(), Ordering::Relaxed);
}

/// Marks (`on`) or unmarks the page holding `addr`, in the shared space, as the guard page of a
/// stack that runs on this node. A marked page is made inaccessible here; a trap on it is a stack
/// overflow, which the handler reports before it aborts the process (as std does for its own
/// guard pages). Unmarking leaves the page inaccessible: the next access traps, and the service
/// thread then restores whatever access the protocol says the node has.
///
/// # Errors
/// `InvalidInput` for an address outside the space or before [`install`]; the `mprotect` error.
pub fn set_guard(addr: usize, on: bool) -> io::Result<()> {
    let base = BASE.load(Ordering::Relaxed);
    let bits = GUARDS.load(Ordering::Relaxed);
    if bits.is_null() || addr.wrapping_sub(base) >= SIZE.load(Ordering::Relaxed) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not an address of the shared space"));
    }
    let page = (addr - base) / PAGE_SIZE;
    // SAFETY: `page / 64` is below the word count mapped by `install` for this space's size.
    let word = unsafe { &*bits.add(page / 64) };
    let bit = 1u64 << (page % 64);
    if on {
        word.fetch_or(bit, Ordering::SeqCst);
        let start = base + page * PAGE_SIZE;
        // SAFETY: one page of the shared space, which stays mapped for the life of the process.
        if unsafe { libc::mprotect(start as *mut libc::c_void, PAGE_SIZE, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
    } else {
        word.fetch_and(!bit, Ordering::SeqCst);
    }
    Ok(())
}

thread_local! {
    /// The name of the thread whose stack the calling OS thread runs, for the overflow message.
    static STACK_OWNER: std::cell::Cell<(*const u8, usize)> = const { std::cell::Cell::new((std::ptr::null(), 0)) };
}

/// Names the thread whose stack the calling OS thread now runs (for the message printed when it
/// overflows its guard page); an empty name prints as `<unnamed>`.
///
/// # Safety
/// `name` must stay valid until the next call on this OS thread.
pub unsafe fn set_stack_owner(name: &[u8]) {
    STACK_OWNER.with(|c| c.set((name.as_ptr(), name.len())));
}

thread_local! {
    /// How many runtime locks the calling thread holds, and the name of the last one taken: a
    /// fault while one is held would wait for the service thread, which may wait for that lock.
    static RUNTIME_LOCKS: std::cell::Cell<(u32, *const u8, usize)> =
        const { std::cell::Cell::new((0, std::ptr::null(), 0)) };
}

/// The calling thread took the runtime lock `name` (a lock the service thread also takes). Until
/// the matching [`runtime_lock_released`], a trap on the shared space by this thread is a runtime
/// bug: the handler reports it, naming the lock, and aborts, instead of hanging the node.
#[inline]
pub fn runtime_lock_taken(name: &'static str) {
    RUNTIME_LOCKS.with(|c| {
        let (n, _, _) = c.get();
        c.set((n + 1, name.as_ptr(), name.len()));
    });
}

/// The calling thread let go of a runtime lock (see [`runtime_lock_taken`]).
#[inline]
pub fn runtime_lock_released() {
    RUNTIME_LOCKS.with(|c| {
        let (n, p, l) = c.get();
        c.set((n.saturating_sub(1), p, l));
    });
}

fn is_guard(page: usize) -> bool {
    let bits = GUARDS.load(Ordering::Relaxed);
    // SAFETY: `page` lies in the space (checked by the caller), so its word was mapped by
    // `install`, which also set GUARDS before the handler could run.
    !bits.is_null() && unsafe { &*bits.add(page / 64) }.load(Ordering::Relaxed) & (1 << (page % 64)) != 0
}

/// Installs the handler for the space described by `layout`. Call once per process.
///
/// # Errors
/// Fails if called twice or if the kernel refuses the pipe or the signal action.
pub fn install(layout: SpaceLayout) -> io::Result<FaultReceiver> {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Err(io::Error::other("the fault handler is already installed"));
    }
    let (read, write) = sys::pipe()?;
    // Enough room that a writer never blocks: every slot's word fits many times over.
    // SAFETY: fcntl on a pipe we own; failure only leaves the default size, which also suffices.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 16) };
    PIPE_WR.store(write.as_raw_fd(), Ordering::SeqCst);
    let words = (layout.size / PAGE_SIZE).div_ceil(64).max(1);
    // SAFETY: a fresh private anonymous mapping; zero-filled pages are committed only as touched.
    let bits = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            words * 8,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if bits == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    GUARDS.store(bits.cast(), Ordering::SeqCst);
    BASE.store(layout.base, Ordering::SeqCst);
    SIZE.store(layout.size, Ordering::SeqCst);
    // SAFETY: a zeroed sigaction is a valid value; every field we rely on is set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = on_segv;
    action.sa_sigaction = handler as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
    // SAFETY: sa_mask is a valid sigset to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: OLD is written here, once, before our handler is live; the kernel fills it in.
    let rc = unsafe { libc::sigaction(libc::SIGSEGV, &action, (*OLD.0.get()).as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FaultReceiver { read, _write: write })
}

thread_local! {
    /// This thread's id, once asked: the handler needs it twice per fault, and on a VM every
    /// system call counts. A `const` thread-local without a destructor is a plain slot of the
    /// thread's static TLS block, so reading it in the handler neither allocates nor locks.
    static TID: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

fn gettid() -> i32 {
    TID.with(|c| {
        let mut t = c.get();
        if t == 0 {
            // SAFETY: gettid has no preconditions and is async-signal-safe.
            t = unsafe { libc::syscall(libc::SYS_gettid) as i32 };
            c.set(t);
        }
        t
    })
}

fn write_word(word: u32) {
    let fd = PIPE_WR.load(Ordering::Relaxed);
    let bytes = word.to_ne_bytes();
    loop {
        // SAFETY: write(2) of a 4-byte local buffer; writes under PIPE_BUF are atomic.
        let n = unsafe { sys::raw_write(fd, bytes.as_ptr(), 4) };
        if n == 4 || fd < 0 {
            return;
        }
        let err = errno();
        if err != libc::EINTR && err != libc::EAGAIN {
            return;
        }
    }
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(v: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = v };
}

fn write_stderr(msg: &[u8]) {
    // The system call itself, not the C library's `write` (which `iofix` replaces in programs
    // that link it): the handler's own messages go straight to this process's stderr.
    // SAFETY: write(2) of a buffer of the stated length.
    unsafe { sys::raw_write(2, msg.as_ptr(), msg.len()) };
}

#[cfg(target_arch = "x86_64")]
fn is_write(ctx: *mut libc::c_void) -> bool {
    // SAFETY: for SA_SIGINFO handlers the third argument points at the interrupted ucontext.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    // Bit 1 of the page-fault error code is set for writes (also for read-modify-write).
    uc.uc_mcontext.gregs[libc::REG_ERR as usize] & 2 != 0
}

/// Whether the instruction at the interrupted program counter is an atomic read-modify-write: it
/// carries a `lock` prefix, or it is `xchg` with a memory operand (implicitly locked). Reads the
/// instruction bytes, which the CPU has just fetched, so they are mapped and readable.
#[cfg(target_arch = "x86_64")]
fn is_atomic(ctx: *mut libc::c_void) -> bool {
    // SAFETY: for SA_SIGINFO handlers the third argument points at the interrupted ucontext.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize as *const u8;
    decode_atomic(|i| {
        // SAFETY: the faulting instruction's bytes (at most 15) were just fetched by the CPU.
        unsafe { rip.add(i).read_volatile() }
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn is_atomic(_ctx: *mut libc::c_void) -> bool {
    false
}

/// The decision of [`is_atomic`] over an instruction's bytes, `byte(i)` being byte `i`.
pub fn decode_atomic(byte: impl Fn(usize) -> u8) -> bool {
    let mut i = 0;
    while i < 15 {
        match byte(i) {
            0xF0 => return true,
            // Other legacy prefixes: repeat, segment overrides, operand and address size.
            0xF2 | 0xF3 | 0x2E | 0x36 | 0x3E | 0x26 | 0x64 | 0x65 | 0x66 | 0x67 => i += 1,
            0x40..=0x4F => {
                // REX, then the opcode.
                return matches!(byte(i + 1), 0x86 | 0x87);
            }
            op => return matches!(op, 0x86 | 0x87),
        }
    }
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn is_write(_ctx: *mut libc::c_void) -> bool {
    // Without a decoder for this architecture every trap asks for write access: correct, slower.
    true
}

/// The SIGSEGV handler. See the module documentation: async-signal-safe code only.
extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let base = BASE.load(Ordering::Relaxed);
    let size = SIZE.load(Ordering::Relaxed);
    if addr.wrapping_sub(base) >= size {
        // SAFETY: we forward the kernel's own arguments to the previous handler.
        unsafe { chain(sig, info, ctx) };
        return;
    }
    if gettid() == SERVICE_TID.load(Ordering::Relaxed) {
        write_stderr(b"rthreads: BUG: the DSM service thread touched a protected page of the shared space\n");
        // SAFETY: abort is async-signal-safe.
        unsafe { libc::abort() };
    }
    let (locks, name, name_len) = RUNTIME_LOCKS.with(|c| c.get());
    if locks > 0 {
        write_stderr(b"rthreads: BUG: a thread touched a protected page of the shared space while holding the runtime lock `");
        // SAFETY: `runtime_lock_taken` stores a `&'static str`.
        write_stderr(unsafe { std::slice::from_raw_parts(name, name_len) });
        write_stderr(b"`: serving the fault could need that lock (see rthreads/src/private.rs)\n");
        // SAFETY: abort is async-signal-safe.
        unsafe { libc::abort() };
    }
    if is_guard((addr - base) / PAGE_SIZE) {
        // The same words as std's report for its own guard pages, then ours.
        let (ptr, len) = STACK_OWNER.with(|c| c.get());
        write_stderr(b"\nthread '");
        if ptr.is_null() || len == 0 {
            write_stderr(b"<unnamed>");
        } else {
            // SAFETY: `set_stack_owner`'s caller keeps the name alive while it is set.
            write_stderr(unsafe { std::slice::from_raw_parts(ptr, len) });
        }
        write_stderr(b"' has overflowed its stack\nrthreads: a thread has overflowed its stack in the shared space (it touched the guard page below it); Builder::stack_size sets its size\n");
        // SAFETY: abort is async-signal-safe.
        unsafe { libc::abort() };
    }
    let saved_errno = errno();
    let started = now_ns();
    let page = ((addr - base) / PAGE_SIZE) as u64;
    let write = is_write(ctx);
    // Claim a free slot, starting from a spot derived from the thread id to spread threads out.
    let pipes = USE_PIPES.load(Ordering::Relaxed);
    let mut i = (gettid() as usize).wrapping_mul(2654435761) % if pipes { PIPE_SLOTS } else { SLOTS };
    let slot = loop {
        let s = &TABLE[i];
        if s.state.compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            break s;
        }
        i = (i + 1) % SLOTS;
    };
    slot.page.store(page, Ordering::Relaxed);
    slot.tid.store(gettid(), Ordering::Relaxed);
    slot.since_ns.store(started, Ordering::Relaxed);
    slot.write.store(write, Ordering::Relaxed);
    slot.atomic.store(write && is_atomic(ctx), Ordering::Relaxed);
    slot.state.store(PENDING, Ordering::Release);
    write_word(i as u32);
    let spin = SPIN.load(Ordering::Relaxed);
    let mut polls = 0u32;
    let rd = if i < PIPE_SLOTS && pipes { WAKE_RD[i].load(Ordering::Relaxed) } else { -1 };
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
    if write {
        WRITE_FAULTS.fetch_add(1, Ordering::Relaxed);
    } else {
        READ_FAULTS.fetch_add(1, Ordering::Relaxed);
    }
    let ended = now_ns();
    FAULT_WAIT_NS.fetch_add(ended.saturating_sub(started), Ordering::Relaxed);
    let kind = if write { crate::trace::EventKind::WriteFault } else { crate::trace::EventKind::ReadFault };
    crate::trace::record(kind, started, ended, page, 0);
    set_errno(saved_errno);
}

/// Passes a fault we do not own to the handler that was there before ours.
///
/// # Safety
/// Must be called from within a SIGSEGV handler with the kernel's arguments.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // Whatever the previous handler prints (std's "has overflowed its stack") goes straight to
    // stderr: the process is about to die, and the output hook is not async-signal-safe.
    crate::iofix::write_directly();
    // SAFETY: OLD was filled in by `install` before our handler was installed.
    let old = unsafe { (*OLD.0.get()).assume_init_ref() };
    let handler = old.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore the default action and return: the instruction traps again and the process
        // dies of SIGSEGV as it would have without us.
        // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
        let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
        dfl.sa_sigaction = libc::SIG_DFL;
        // SAFETY: sigaction is async-signal-safe.
        unsafe { libc::sigaction(sig, &dfl, std::ptr::null_mut()) };
    } else if old.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was registered as a three-argument SA_SIGINFO handler.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the previous handler was registered as a one-argument handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

/// The shared space as the handler knows it: `(base, size)`, `(0, 0)` before [`install`].
pub fn space_bounds() -> (usize, usize) {
    (BASE.load(Ordering::Relaxed), SIZE.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::decode_atomic;

    fn atomic(bytes: &[u8]) -> bool {
        decode_atomic(|i| bytes.get(i).copied().unwrap_or(0x90))
    }

    #[test]
    fn locked_and_exchanging_instructions_are_atomic() {
        assert!(atomic(&[0xF0, 0x48, 0x0F, 0xC1, 0x07])); // lock xadd [rdi], rax
        assert!(atomic(&[0xF0, 0x0F, 0xB1, 0x0F])); // lock cmpxchg [rdi], ecx
        assert!(atomic(&[0x66, 0xF0, 0x0F, 0xC1, 0x07])); // operand-size prefix first
        assert!(atomic(&[0x48, 0x87, 0x07])); // xchg [rdi], rax (a SeqCst store)
        assert!(atomic(&[0x86, 0x07])); // xchg [rdi], al
        assert!(!atomic(&[0x48, 0x89, 0x07])); // mov [rdi], rax (a Relaxed or Release store)
        assert!(!atomic(&[0x48, 0x8B, 0x07])); // mov rax, [rdi]
        assert!(!atomic(&[0xF3, 0x48, 0xA5])); // rep movsq
        assert!(!atomic(&[0x66; 20])); // prefixes only: not an instruction we recognise
    }
}
