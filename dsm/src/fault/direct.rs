//! Direct page reads: the faulting thread fetches a page itself.
//!
//! Why by hand, inside the handler: the ordinary way, a read fault on a page homed elsewhere passes
//! four threads (the faulting thread wakes this node's service thread, which sends the request; the
//! home's service thread answers; this node's service thread installs the page and wakes the
//! faulting thread): four wake-ups where a plain request and answer over a socket costs two, and on
//! a VM each wake-up is the expensive part. Here the faulting thread, inside the SIGSEGV handler,
//! writes the request on a connection of its own to the home, reads the answer, copies the page in
//! through the runtime view and opens it: the home's service thread is the only other thread on the
//! path. Everything in this file that the handler calls is async-signal-safe (atomics, `read(2)`,
//! `write(2)`, `madvise(2)`, `mprotect(2)` and the futex; no allocation, no lock); the functions the
//! service thread calls are marked *(service)*.
//!
//! **Who owns a page's state.** The protocol's state lives on the service thread. A direct read may
//! start only in the state "no copy here, nothing asked for, homed elsewhere", which the service
//! thread publishes for each page in a byte the handler can read ([`ABSENT`]). The handler claims a
//! page by turning that byte to [`DIRECT`] with a compare-and-swap; from then on the service thread
//! leaves the page alone: a fault on it by another thread, or a message about it, waits
//! ([`gate`] says [`Gate::Hold`], and asks to be told when the read ends). Before the service thread
//! acts on a page it [`gate`]s it, which turns an [`ABSENT`] byte into [`LOCKED`] (so no direct read
//! can start while the protocol works on the page), and it publishes [`ABSENT`] again only once the
//! protocol says the page is back in that state and every message that took it there is queued
//! ([`publish_absent`], at the end of its turn).
//!
//! **The request.** A read request travels on a direct connection, ordered after everything this
//! node queued to the home on the ordinary one (the direct connections' rule, see the runtime's
//! `direct.rs`): the home serves it only once it has processed those frames (an acknowledgement of
//! an invalidation among them). The home's protocol sees an ordinary read request, and its answer,
//! the grant with the page's bytes, comes back on the same connection. Once the page is open the
//! byte says [`GRANTED`]; the service thread tells the protocol ([`Gate::Absorb`]) the next time it
//! looks at the page. An invalidation that reaches the service thread while the read is out waits
//! until the page is open (the home waits for its acknowledgement, so the copy is current until
//! then), and is then handled as for any read copy.
//!
//! **When it does not apply** (the handler then takes the ordinary way): a write; a page homed here;
//! the third page or later of an ascending run of read faults (a sequential scan, which the
//! protocol's read-ahead serves in runs); the page the read-ahead expects next; a page whose byte is not [`ABSENT`]; no free
//! connection to the home (the service thread is asked to dial one, [`wanted_dials`]).

use std::cell::UnsafeCell;
use std::os::fd::RawFd;
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use super::slots;
use crate::sys::{self, PAGE_SIZE};
use crate::trace::{self, EventKind};

/// No copy here, nothing asked for, homed elsewhere: a direct read may start.
pub const ABSENT: u8 = 0;
/// A direct read of the page is out (the handler owns the page).
pub const DIRECT: u8 = 1;
/// A direct read opened the page; the protocol has not been told yet.
pub const GRANTED: u8 = 2;
/// The protocol holds or is changing the page: no direct read.
pub const LOCKED: u8 = 3;
/// Set on a [`DIRECT`] byte by the service thread: something waits for the read to end, so the
/// handler wakes the service thread when it does.
pub const WANTED: u8 = 0x80;

/// The tag of a direct connection's ordered frame (the runtime's `Core::Ordered`).
pub const T_ORDERED: u8 = 0x25;
/// A direct read request: `[T_PAGE_READ, page: u64 LE]`.
pub const T_PAGE_READ: u8 = 0x3A;
/// Its answer: `[T_PAGE_GRANT, page: u64 LE]` then the page's bytes.
pub const T_PAGE_GRANT: u8 = 0x3B;

/// The answer's body: the ordered frame's tag and count, the grant's tag and page, the bytes.
const ANSWER: usize = 1 + 8 + 1 + 8 + PAGE_SIZE;
/// Direct connections a node keeps at most (for all homes together).
pub const CONNS: usize = 64;
/// Connections to one home at most (each costs the home two descriptors; more threads reading
/// from one home at once take the ordinary way).
const PER_HOME: usize = 2;
/// Node ids the dial requests cover.
const MAX_NODES: usize = 1024;
const NO_PEER: u32 = u32::MAX;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// New direct reads paused (see [`pause`]).
static PAUSED: AtomicBool = AtomicBool::new(false);
static ME: AtomicU32 = AtomicU32::new(0);
static PER_NODE: AtomicU64 = AtomicU64::new(1);
static PAGES: AtomicU64 = AtomicU64::new(0);
/// One byte per page of the space (see the top of this file).
static WORDS: AtomicPtr<AtomicU8> = AtomicPtr::new(std::ptr::null_mut());
/// The runtime view's base address.
static VIEW: AtomicUsize = AtomicUsize::new(0);
/// `Setup::trace_kinds`, both bytes.
static TRACE_KINDS: AtomicU16 = AtomicU16::new(0);
/// The space's "page has memory" bits (`Space::memory_bits`).
static BITS: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());
/// The runtime's count of frames queued to each node on the ordinary connection.
static SENT: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());
static SENT_LEN: AtomicUsize = AtomicUsize::new(0);
/// The last page a read fault of this node touched, and the page the protocol's read-ahead
/// expects next (`u64::MAX`: none).
static LAST: AtomicU64 = AtomicU64::new(u64::MAX);
static NEXT: AtomicU64 = AtomicU64::new(u64::MAX);
/// How many read faults in a row, before the last, were each on the page after the one before.
static RUN: AtomicU64 = AtomicU64::new(0);
/// Direct reads done.
static DONE: AtomicU64 = AtomicU64::new(0);
/// A direct connection broke under a read: the home's id plus one (0: none).
static BROKEN: AtomicU32 = AtomicU32::new(0);
/// Where a thread whose connection broke sleeps until the process ends.
static NEVER: AtomicU32 = AtomicU32::new(0);

struct Conn {
    peer: AtomicU32,
    fd: AtomicI32,
    busy: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_CONN: Conn =
    Conn { peer: AtomicU32::new(NO_PEER), fd: AtomicI32::new(-1), busy: AtomicBool::new(false) };
static TABLE: [Conn; CONNS] = [EMPTY_CONN; CONNS];

/// The receive buffer of one connection, used only by the thread that holds the connection.
struct Buf(UnsafeCell<[u8; 4 + ANSWER]>);
// SAFETY: a buffer is touched only by the thread that claimed its connection (`busy`).
unsafe impl Sync for Buf {}
#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_BUF: Buf = Buf(UnsafeCell::new([0; 4 + ANSWER]));
static BUFS: [Buf; CONNS] = [EMPTY_BUF; CONNS];

#[allow(clippy::declare_interior_mutable_const)]
const NO: AtomicBool = AtomicBool::new(false);
/// Homes a thread found no free connection to.
static WANT_DIAL: [AtomicBool; MAX_NODES] = [NO; MAX_NODES];
static ANY_WANT: AtomicBool = AtomicBool::new(false);
/// Homes a connection is being dialed to: one dial at a time per home.
static DIALING: [AtomicBool; MAX_NODES] = [NO; MAX_NODES];

/// What the runtime tells this module once, before [`enable`].
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// This node's id.
    pub me: u16,
    /// Pages each node homes (node `i` homes `i * pages_per_node ..`).
    pub pages_per_node: u64,
    /// Pages in the space.
    pub pages: u64,
    /// The runtime view's base (`Space::runtime_addr(PageId(0))`).
    pub view: usize,
    /// The space's bits of pages known to have memory (`Space::memory_bits`).
    pub bits: *const AtomicU64,
    /// The runtime's frames-queued counter per node (`len` of them); lives as long as the process.
    pub sent: *const AtomicU64,
    /// How many counters `sent` points to.
    pub sent_len: usize,
    /// The message kinds a trace records for the request and for the grant (the low byte of
    /// [`trace::Event::arg`](crate::trace::Event::arg), as the runtime numbers its messages).
    pub trace_kinds: [u8; 2],
}

/// Turns direct reads on for this process. *(service)*
///
/// # Errors
/// If the page bytes cannot be mapped.
///
/// # Safety
/// `setup.bits` and `setup.sent` must point to live atomics (as many as the space's pages need
/// and `sent_len`) for the rest of the process, and `setup.view` to the runtime view of a space of
/// `setup.pages` pages.
pub unsafe fn enable(setup: Setup) -> std::io::Result<()> {
    let words = sys::map_anon(setup.pages as usize)?;
    ME.store(u32::from(setup.me), Ordering::SeqCst);
    PER_NODE.store(setup.pages_per_node.max(1), Ordering::SeqCst);
    PAGES.store(setup.pages, Ordering::SeqCst);
    VIEW.store(setup.view, Ordering::SeqCst);
    BITS.store(setup.bits.cast_mut(), Ordering::SeqCst);
    SENT.store(setup.sent.cast_mut(), Ordering::SeqCst);
    SENT_LEN.store(setup.sent_len, Ordering::SeqCst);
    TRACE_KINDS.store(u16::from_le_bytes(setup.trace_kinds), Ordering::SeqCst);
    // Release: whoever sees the bytes (or ENABLED) sees everything above.
    WORDS.store(words.cast(), Ordering::Release);
    ENABLED.store(true, Ordering::Release);
    Ok(())
}

/// Turns direct reads off for good (a node left alone at shutdown serves everything itself).
/// Reads already out finish. *(service)*
pub fn disable() {
    ENABLED.store(false, Ordering::SeqCst);
}

/// Stops new direct reads for a while (`true`), or lets them start again: while the runtime's
/// protocol log is on, every read takes the way the log shows step by step. Reads already out
/// finish. *(any thread)*
pub fn pause(on: bool) {
    PAUSED.store(on, Ordering::SeqCst);
}

/// Whether direct reads are on (new ones may start).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// Whether direct reads were ever turned on: then pages keep being gated after [`disable`], since
/// reads that started before may still be out. *(service)*
pub fn active() -> bool {
    !WORDS.load(Ordering::Acquire).is_null()
}

/// Direct reads done on this node so far.
pub fn done() -> u64 {
    DONE.load(Ordering::Relaxed)
}

/// The byte of `page` (in range). *(handler, service)*
fn word(page: u64) -> &'static AtomicU8 {
    // SAFETY: `enable` mapped one zero-filled byte per page before ENABLED was set; callers pass
    // in-range pages; the mapping is never unmapped; a zero byte is a valid `AtomicU8`.
    unsafe { &*WORDS.load(Ordering::Relaxed).add(page as usize) }
}

/// What the service thread may do with a page now (see [`gate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// The protocol's state is the page's state: go on.
    Proceed,
    /// A direct read opened the page: tell the protocol (it holds a read copy now), then go on.
    Absorb,
    /// A direct read is out: keep what concerns the page until it ends (the service thread is
    /// woken then).
    Hold,
}

/// Before the service thread acts on `page` (homed elsewhere): makes sure no direct read starts
/// meanwhile, and says whether one is out or has ended unseen. *(service)*
pub fn gate(page: u64) -> Gate {
    if !active() || page >= PAGES.load(Ordering::Relaxed) {
        return Gate::Proceed;
    }
    let w = word(page);
    let mut now = w.load(Ordering::Acquire);
    loop {
        let (next, answer) = match now & !WANTED {
            ABSENT => (LOCKED, Gate::Proceed),
            LOCKED => return Gate::Proceed,
            GRANTED => (LOCKED, Gate::Absorb),
            _ if now & WANTED != 0 => return Gate::Hold,
            _ => (DIRECT | WANTED, Gate::Hold),
        };
        match w.compare_exchange(now, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return answer,
            Err(seen) => now = seen,
        }
    }
}

/// For the protocol's read-ahead: takes `page` (homed elsewhere) for a request unless a direct
/// read has it (out, or ended unseen); whether it may be asked for. *(service)*
pub fn claim_for_request(page: u64) -> bool {
    !active()
        || page >= PAGES.load(Ordering::Relaxed)
        || match word(page).compare_exchange(ABSENT, LOCKED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(seen) => seen == LOCKED,
        }
}

/// The protocol says `page` is back to "no copy, nothing asked for", with every message that took
/// it there queued: direct reads may start again. *(service)*
pub fn publish_absent(page: u64) {
    if active() && page < PAGES.load(Ordering::Relaxed) {
        let _ = word(page).compare_exchange(LOCKED, ABSENT, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// The page the protocol's read-ahead expects to be read next, if any (such a miss takes the
/// ordinary way, where it asks for a run). *(service)*
pub fn set_expected(page: Option<u64>) {
    NEXT.store(page.unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Adds a connection to `peer`, made (authenticated, hello sent) by the runtime; blocking mode.
/// Returns it to the caller if the table is full. *(service)*
pub fn add_conn(peer: u16, fd: RawFd) -> Result<(), RawFd> {
    if conns_to(peer) >= PER_HOME {
        return Err(fd);
    }
    for c in &TABLE {
        if c.busy.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            if c.fd.load(Ordering::Relaxed) < 0 {
                c.fd.store(fd, Ordering::Relaxed);
                c.peer.store(u32::from(peer), Ordering::Relaxed);
                c.busy.store(false, Ordering::Release);
                return Ok(());
            }
            c.busy.store(false, Ordering::Release);
        }
    }
    Err(fd)
}

/// The homes threads wanted a connection to since the last call (each once), that nobody dials
/// yet; each must be followed by [`dialed`] when its dial ends. *(service)*
pub fn wanted_dials(mut f: impl FnMut(u16)) {
    if !ANY_WANT.swap(false, Ordering::AcqRel) {
        return;
    }
    for (i, w) in WANT_DIAL.iter().enumerate() {
        if w.swap(false, Ordering::AcqRel) && !DIALING[i].swap(true, Ordering::AcqRel) {
            f(i as u16);
        }
    }
}

/// The dial of a connection to `peer` that [`wanted_dials`] asked for has ended (made or not).
/// *(any thread)*
pub fn dialed(peer: u16) {
    if let Some(d) = DIALING.get(usize::from(peer)) {
        d.store(false, Ordering::Release);
    }
}

/// How many connections to `peer` exist. *(service)*
pub fn conns_to(peer: u16) -> usize {
    TABLE.iter().filter(|c| c.peer.load(Ordering::Relaxed) == u32::from(peer)).count()
}

/// The home whose direct connection broke under a read, if any (the runtime reports it lost).
/// *(service)*
pub fn broken() -> Option<u16> {
    match BROKEN.load(Ordering::Acquire) {
        0 => None,
        n => Some((n - 1) as u16),
    }
}

/// Serves a read fault on page number `page` directly if it can (see the top of this file).
/// Returns false, having changed nothing the ordinary way depends on, when it does not apply.
/// *(handler)*
pub(super) fn try_read(page: u64, app_addr: usize) -> bool {
    if !enabled() || PAUSED.load(Ordering::Relaxed) {
        return false;
    }
    // The third page or later of an ascending run is a scan: read-ahead serves it better. (Two
    // pages in a row, a row of 8 KiB, are still read directly.)
    let last = LAST.swap(page, Ordering::Relaxed);
    let run = if page == last.wrapping_add(1) { RUN.fetch_add(1, Ordering::Relaxed) + 1 } else { 0 };
    if run == 0 {
        RUN.store(0, Ordering::Relaxed);
    }
    let per = PER_NODE.load(Ordering::Relaxed);
    let home = (page / per) as u32;
    if run >= 2
        || page == NEXT.load(Ordering::Relaxed)
        || page >= PAGES.load(Ordering::Relaxed)
        || home == ME.load(Ordering::Relaxed)
    {
        return false;
    }
    let w = word(page);
    // No other signal handler runs on this thread while it owns the page: one that touched the
    // page would wait for this very read (its fault held behind it), and one that jumped out
    // would leave the page owned for good. Faults (SIGSEGV, SIGBUS) stay deliverable.
    let _masked = Masked::block();
    if w.compare_exchange(ABSENT, DIRECT, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        return false;
    }
    let Some(c) = claim_conn(home) else {
        want_dial(home);
        settle(w, ABSENT);
        return false;
    };
    if !fetch(c, home, page) {
        if !enabled() {
            // The cluster is shutting down and the home has left: nothing will ask about this
            // page again; the ordinary way (the node alone serves every fault) takes over.
            settle(w, ABSENT);
            return false;
        }
        // The home is gone or broken, and may have granted the page: this node's state cannot be
        // known now. The service thread reports the node lost; this thread sleeps meanwhile.
        BROKEN.store(home + 1, Ordering::Release);
        slots::notify();
        loop {
            sys::futex_wait(&NEVER, 0);
        }
    }
    if !enabled() {
        // Shutting down meanwhile: the node alone may have opened the whole space to writes, and
        // local writes must not be overwritten by these bytes. (Nobody else reads the page again.)
        TABLE[c].busy.store(false, Ordering::Release);
        settle(w, ABSENT);
        return false;
    }
    // SAFETY: opening one page of the application view for reading; its bytes were just written
    // through the runtime view, and the service thread leaves the page alone while it is DIRECT.
    let opened = unsafe { libc::mprotect(app_addr as *mut libc::c_void, PAGE_SIZE, libc::PROT_READ) };
    TABLE[c].busy.store(false, Ordering::Release);
    if opened != 0 {
        // The home counts this node as a reader now, and the page cannot be opened: nothing
        // sensible is left to do (mprotect of one page of our own mapping fails only for want of
        // kernel memory).
        sys::write_all_raw(2, b"rthreads: cannot open a page fetched directly (mprotect failed)\n");
        // SAFETY: abort is async-signal-safe.
        unsafe { libc::abort() }
    }
    DONE.fetch_add(1, Ordering::Relaxed);
    settle(w, GRANTED);
    true
}

/// Every signal but the synchronous faults blocked on the calling thread, until this is dropped
/// (the old mask comes back). *(handler)*
struct Masked(libc::sigset_t);

impl Masked {
    fn block() -> Masked {
        // SAFETY: sigset_t is plain data; sigfillset/sigdelset only write it; rt_sigprocmask is a
        // system call (async-signal-safe) on this thread's own mask.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP] {
                libc::sigdelset(&mut all, sig);
            }
            libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK, &all, &mut old, 8usize);
            Masked(old)
        }
    }
}

impl Drop for Masked {
    fn drop(&mut self) {
        // SAFETY: as in `block`, putting back the mask it saved.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &self.0,
                std::ptr::null_mut::<libc::sigset_t>(),
                8usize,
            )
        };
    }
}

/// Ends the handler's hold on a page's byte: stores `to`, and wakes the service thread if
/// something waits for it. *(handler)*
fn settle(w: &AtomicU8, to: u8) {
    if w.swap(to, Ordering::AcqRel) & WANTED != 0 {
        slots::notify();
    }
}

/// Claims a free connection to `home`. *(handler)*
fn claim_conn(home: u32) -> Option<usize> {
    TABLE.iter().position(|c| {
        c.peer.load(Ordering::Relaxed) == home
            && c.fd.load(Ordering::Relaxed) >= 0
            && c.busy.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    })
}

/// Asks the service thread for another connection to `home` (at most [`PER_HOME`]). *(handler)*
fn want_dial(home: u32) {
    let have = TABLE.iter().filter(|c| c.peer.load(Ordering::Relaxed) == home).count();
    // A full table takes no more (entries stay for good): reads from further homes go the
    // ordinary way instead of dialing a connection that would be closed at once.
    let room = TABLE.iter().any(|c| c.fd.load(Ordering::Relaxed) < 0);
    if have < PER_HOME
        && room
        && let Some(flag) = WANT_DIAL.get(home as usize)
        && !flag.swap(true, Ordering::AcqRel)
    {
        ANY_WANT.store(true, Ordering::Release);
        slots::notify();
    }
}

/// Asks `home` for `page` on connection `c` and copies the answer in through the runtime view.
/// False if the connection broke or the answer is not the grant asked for. *(handler)*
fn fetch(c: usize, home: u32, page: u64) -> bool {
    let fd = TABLE[c].fd.load(Ordering::Relaxed);
    let sent = SENT.load(Ordering::Relaxed);
    let after = if (home as usize) < SENT_LEN.load(Ordering::Relaxed) {
        // SAFETY: `enable`'s caller promised `sent_len` live counters at `sent`.
        unsafe { (*sent.add(home as usize)).load(Ordering::SeqCst) }
    } else {
        0
    };
    let mut req = [0u8; 4 + 1 + 8 + 1 + 8];
    req[..4].copy_from_slice(&(18u32).to_le_bytes());
    req[4] = T_ORDERED;
    req[5..13].copy_from_slice(&after.to_le_bytes());
    req[13] = T_PAGE_READ;
    req[14..22].copy_from_slice(&page.to_le_bytes());
    if !write_all(fd, &req) {
        return false;
    }
    let [request_kind, grant_kind] = TRACE_KINDS.load(Ordering::Relaxed).to_le_bytes();
    let peer = u64::from(home) << 8;
    let traced = trace::enabled();
    if traced {
        let now = trace::now_ns();
        trace::record(EventKind::MessageSent, now, now, page, peer | u64::from(request_kind));
    }
    // While the request travels, the page gets its memory (the first write of a page costs the
    // kernel ~4 µs; see `Space::prepare_run`).
    let view = VIEW.load(Ordering::Relaxed) + page as usize * PAGE_SIZE;
    let bits = BITS.load(Ordering::Relaxed);
    // SAFETY: the space's bit words cover every page (`enable`'s contract).
    let bit = unsafe { &*bits.add((page / 64) as usize) };
    let mask = 1u64 << (page % 64);
    if bit.load(Ordering::Relaxed) & mask == 0 {
        // SAFETY: advice on one page of the runtime view; populating changes no byte.
        unsafe { libc::madvise(view as *mut libc::c_void, PAGE_SIZE, libc::MADV_POPULATE_WRITE) };
    }
    // SAFETY: this thread holds connection `c`, and with it its buffer.
    let buf = unsafe { &mut *BUFS[c].0.get() };
    // The frame's length and body in one call (the length is known: only a grant may come).
    if !read_exact(fd, buf) || buf[..4] != (ANSWER as u32).to_le_bytes() {
        return false;
    }
    let body = &buf[4..];
    if body[0] != T_ORDERED || body[9] != T_PAGE_GRANT || body[10..18] != page.to_le_bytes() {
        return false;
    }
    // SAFETY: one page of the runtime view, mapped read-write; the application view of the page is
    // closed (the handler owns it while it is DIRECT); the source is this connection's buffer.
    unsafe { std::ptr::copy_nonoverlapping(body[18..].as_ptr(), view as *mut u8, PAGE_SIZE) };
    bit.fetch_or(mask, Ordering::Relaxed);
    if traced {
        let now = trace::now_ns();
        trace::record(EventKind::MessageReceived, now, now, page, peer | u64::from(grant_kind));
    }
    true
}

/// Sends all of `bytes` on socket `fd` (blocking), retrying on `EINTR`; a closed connection is an
/// error, not a `SIGPIPE`. *(handler)*
fn write_all(fd: RawFd, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: sendto(2) of a live slice, with no address; a system call, async-signal-safe.
        let n = unsafe {
            libc::syscall(
                libc::SYS_sendto,
                fd,
                bytes.as_ptr(),
                bytes.len(),
                libc::MSG_NOSIGNAL,
                std::ptr::null::<libc::sockaddr>(),
                0,
            ) as isize
        };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n == 0 || sys::errno() != libc::EINTR {
            return false;
        }
    }
    true
}

/// Reads exactly `buf.len()` bytes from socket `fd` (blocking: one call unless a signal comes),
/// retrying on `EINTR`. *(handler)*
fn read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: recvfrom(2) into the unfilled part of a live buffer, no address; a system call.
        let n = unsafe {
            libc::syscall(
                libc::SYS_recvfrom,
                fd,
                buf[got..].as_mut_ptr(),
                buf.len() - got,
                libc::MSG_WAITALL,
                std::ptr::null_mut::<libc::sockaddr>(),
                std::ptr::null_mut::<libc::socklen_t>(),
            ) as isize
        };
        if n > 0 {
            got += n as usize;
        } else if n == 0 || sys::errno() != libc::EINTR {
            return false;
        }
    }
    true
}
