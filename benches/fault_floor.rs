//! What the two fault-path levers of issue 17 not built into the runtime could reach on this
//! machine, measured on a model of the fault path with none of the runtime's protocol work.
//!
//! `cargo bench --bench fault_floor` (`BENCH_ROUNDS`, default 5; run it under `taskset -c 0` for
//! the pinned figures of goal 5). Two processes: this one traps on a page of a `PROT_NONE`
//! mapping, a forked "home" answers each 16-byte request with the 4 KiB page over loopback TCP
//! (`TCP_NODELAY`), as two nodes of the runtime do. The requester's page is installed as the
//! runtime installs it: copied through a second, writable mapping of the same memfd, then opened
//! with one `mprotect`. What varies:
//!
//! Who carries the fault on the requesting side:
//! - **4 hand-offs** (the runtime's shape today): the SIGSEGV handler writes the page to a pipe,
//!   a service thread (in `poll`) sends the request, reads the answer, installs the page and wakes
//!   the handler (futex, after a short spin, as `dsm::fault` does).
//! - **3 hand-offs** (lever "the faulting thread sends its own request"): the handler writes the
//!   request to the socket itself; the service thread reads the answer, installs it and wakes the
//!   handler.
//! - **2 hand-offs** (the same lever carried to the end): the handler also reads the answer on its
//!   own connection and installs the page itself: the shape of a raw round trip plus a trap, a copy
//!   and an `mprotect`.
//! - **raw RTT**: an ordinary thread writes the request and reads the answer: the baseline.
//!
//! Who serves the request at the home, and whether the home's CPU is free:
//! - **thread, idle**: a service thread in `poll`, nothing else running (goal 5's case);
//! - **thread, busy**: the same while a worker thread of the home computes without pause (the case
//!   of matmul and Jacobi, where both vCPUs compute and the service thread waits for a CPU);
//! - **signal, busy** (lever "serve requests on whatever thread runs", as TreadMarks did with
//!   SIGIO): the sockets raise a real-time signal at the busy worker (`O_ASYNC`, `F_SETSIG`,
//!   `F_SETOWN_EX` to its thread id), whose handler answers every waiting request;
//! - **signal, idle**: the same with the worker asleep.
//!
//! It also prints what the first write of a page of a memfd costs (the kernel allocates, zeroes
//! and maps it) against a write of a page that has memory, and `MADV_POPULATE_WRITE` ahead of it.
//! Before measuring, every page of the region gets its memory and its mapping, so no path pays a
//! first touch.
//!
//! A last row is no fault: a plain request for a run of 32 pages, per page: what serving a
//! read-ahead run costs while the home computes.
//!
//! Every configuration and path is measured in every round, one after another, so the ratios come
//! from the same machine conditions.

use std::cell::UnsafeCell;
use std::hint::black_box;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rthreads_suite::bench::{percentile, us};

const PAGE: usize = 4096;
/// Pages of the trapping region; re-armed (`PROT_NONE`) before each batch.
const REGION_PAGES: usize = 512;
/// Request: the page's address and how many pages from there (1 for a fault). Answer: the address,
/// then the pages.
const REQ: usize = 16;
const ANS: usize = 8 + PAGE;
/// The pages of a bulk request (the size of a read-ahead run, as in matmul's fetch of B).
const RUN: usize = 32;
const RUN_ANS: usize = 8 + RUN * PAGE;

// Linux constants the libc crate does not export for this target.
const FUTEX_WAIT_PRIVATE: libc::c_int = 128;
const FUTEX_WAKE_PRIVATE: libc::c_int = 129;
const F_SETSIG: libc::c_int = 10;
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

/// `struct f_owner_ex` of `fcntl(2)`.
#[repr(C)]
struct OwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

const PATH_FOUR: u32 = 0;
const PATH_THREE: u32 = 1;
const PATH_TWO: u32 = 2;
/// Not a fault: a plain request for [`RUN`] pages (per page).
const BULK: u32 = 3;

/// Which path the requester's handler takes.
static PATH: AtomicU32 = AtomicU32::new(PATH_FOUR);
/// The connection the service thread reads (and writes, for 4 hand-offs).
static SVC_SOCK: AtomicI32 = AtomicI32::new(-1);
/// The connection the handler uses alone for 2 hand-offs (and the raw round trip).
static OWN_SOCK: AtomicI32 = AtomicI32::new(-1);
/// The pipe from the handler to the service thread.
static PIPE_WR: AtomicI32 = AtomicI32::new(-1);
/// 0 while the handler waits for the service thread, 1 once the page is in.
static DONE: AtomicU32 = AtomicU32::new(1);
/// The requester's views of the region: the trapping one and the writable one.
static APP: AtomicUsize = AtomicUsize::new(0);
static PRIV: AtomicUsize = AtomicUsize::new(0);
/// The home's connections, for its signal handler.
static HOME_FDS: [AtomicI32; 2] = [AtomicI32::new(-1), AtomicI32::new(-1)];

/// A buffer only one thread uses at a time (the requester's handler, or the home's signal handler).
struct Buf<const N: usize>(UnsafeCell<[u8; N]>);
// SAFETY: each static `Buf` is used by one thread at a time: the requester has one trapping
// thread, and the home's signal handler runs on one thread, never nested (the signal is blocked
// while its handler runs).
unsafe impl<const N: usize> Sync for Buf<N> {}
static HANDLER_BUF: Buf<ANS> = Buf(UnsafeCell::new([0; ANS]));
static HOME_BUF: Buf<RUN_ANS> = Buf(UnsafeCell::new([0; RUN_ANS]));

fn check(r: libc::c_int, what: &str) {
    assert!(r >= 0, "{what}: {}", std::io::Error::last_os_error());
}

/// Writes all of `buf` to `fd` (blocking socket or pipe). Async-signal-safe.
fn write_all(fd: i32, buf: &[u8]) {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: write(2) from a live buffer of the stated length.
        let n = unsafe { libc::write(fd, buf[off..].as_ptr().cast(), buf.len() - off) };
        if n > 0 {
            off += n as usize;
        } else if n < 0 && errno() != libc::EINTR && errno() != libc::EAGAIN {
            // SAFETY: abort is async-signal-safe.
            unsafe { libc::abort() };
        }
    }
}

/// Reads exactly `buf.len()` bytes from `fd`. Async-signal-safe.
fn read_exact(fd: i32, buf: &mut [u8]) {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: read(2) into a live buffer of the stated length.
        let n = unsafe { libc::read(fd, buf[off..].as_mut_ptr().cast(), buf.len() - off) };
        if n > 0 {
            off += n as usize;
        } else if n == 0 || (errno() != libc::EINTR && errno() != libc::EAGAIN) {
            // SAFETY: abort is async-signal-safe.
            unsafe { libc::abort() };
        }
    }
}

fn errno() -> i32 {
    // SAFETY: the thread's own errno slot.
    unsafe { *libc::__errno_location() }
}

/// Copies the answer's page into the writable view and opens the page for reading.
/// Async-signal-safe.
fn install(ans: &[u8; ANS]) {
    let addr = usize::from_ne_bytes(ans[..8].try_into().unwrap_or([0; 8]));
    let off = addr.wrapping_sub(APP.load(Ordering::Relaxed));
    if off >= REGION_PAGES * PAGE || !off.is_multiple_of(PAGE) {
        // SAFETY: abort is async-signal-safe; an answer for another address is a bug here.
        unsafe { libc::abort() };
    }
    // SAFETY: `off` is a page offset inside the region, and the private view is writable.
    unsafe {
        std::ptr::copy_nonoverlapping(
            ans[8..].as_ptr(),
            (PRIV.load(Ordering::Relaxed) + off) as *mut u8,
            PAGE,
        );
    }
    // SAFETY: mprotect of one page of our own mapping.
    unsafe { libc::mprotect(addr as *mut libc::c_void, PAGE, libc::PROT_READ) };
}

fn request(addr: usize) -> [u8; REQ] {
    request_run(addr, 1)
}

fn request_run(addr: usize, pages: usize) -> [u8; REQ] {
    let mut r = [0u8; REQ];
    r[..8].copy_from_slice(&addr.to_ne_bytes());
    r[8..].copy_from_slice(&pages.to_ne_bytes());
    r
}

/// Waits for the service thread to install the page: a short spin, then the futex.
fn wait_done() {
    let mut spins = 0;
    while DONE.load(Ordering::Acquire) == 0 {
        if spins < 50 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            // SAFETY: FUTEX_WAIT on a live static word; returns at once if it is no longer 0.
            unsafe {
                libc::syscall(libc::SYS_futex, DONE.as_ptr(), FUTEX_WAIT_PRIVATE, 0, std::ptr::null::<u8>());
            }
        }
    }
}

/// The requester's SIGSEGV handler: async-signal-safe (system calls, atomics, static buffers).
extern "C" fn on_segv(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize & !(PAGE - 1);
    let app = APP.load(Ordering::Relaxed);
    if addr < app || addr >= app + REGION_PAGES * PAGE {
        // SAFETY: abort is async-signal-safe; a fault elsewhere is a bug of this benchmark.
        unsafe { libc::abort() };
    }
    let saved = errno();
    match PATH.load(Ordering::Relaxed) {
        PATH_FOUR => {
            DONE.store(0, Ordering::Release);
            write_all(PIPE_WR.load(Ordering::Relaxed), &addr.to_ne_bytes());
            wait_done();
        }
        PATH_THREE => {
            DONE.store(0, Ordering::Release);
            write_all(SVC_SOCK.load(Ordering::Relaxed), &request(addr));
            wait_done();
        }
        _ => {
            let fd = OWN_SOCK.load(Ordering::Relaxed);
            write_all(fd, &request(addr));
            // SAFETY: the requester has one trapping thread, so this buffer has one user.
            let buf = unsafe { &mut *HANDLER_BUF.0.get() };
            read_exact(fd, buf);
            install(buf);
        }
    }
    // SAFETY: restoring the interrupted code's errno.
    unsafe { *libc::__errno_location() = saved };
}

/// The requester's service thread: sends what the pipe asks for, installs what the socket brings.
fn service(pipe_rd: i32) {
    let svc = SVC_SOCK.load(Ordering::Relaxed);
    let mut ans = Box::new([0u8; ANS]);
    loop {
        let mut fds = [
            libc::pollfd { fd: pipe_rd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: svc, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: poll over a local array of the stated length.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            let mut a = [0u8; 8];
            read_exact(pipe_rd, &mut a);
            let addr = usize::from_ne_bytes(a);
            if addr == 0 {
                return;
            }
            write_all(svc, &request(addr));
        }
        if fds[1].revents != 0 {
            read_exact(svc, &mut ans[..]);
            install(&ans);
            DONE.store(1, Ordering::Release);
            // SAFETY: FUTEX_WAKE on a live static word.
            unsafe { libc::syscall(libc::SYS_futex, DONE.as_ptr(), FUTEX_WAKE_PRIVATE, 1) };
        }
    }
}

/// Answers one request waiting on `fd`, if there is one (false: none). Async-signal-safe.
fn answer_one(fd: i32, buf: &mut [u8; RUN_ANS]) -> bool {
    let mut req = [0u8; REQ];
    // SAFETY: recv into a local buffer of the stated length, without blocking.
    let n = unsafe { libc::recv(fd, req.as_mut_ptr().cast(), REQ, libc::MSG_DONTWAIT) };
    if n <= 0 {
        return false;
    }
    if (n as usize) < REQ {
        read_exact(fd, &mut req[n as usize..]);
    }
    buf[..8].copy_from_slice(&req[..8]);
    let pages = usize::from_ne_bytes(req[8..].try_into().unwrap_or([0; 8])).clamp(1, RUN);
    write_all(fd, &buf[..8 + pages * PAGE]);
    true
}

/// The home's signal handler: answers every request waiting on either connection.
extern "C" fn on_request(_sig: libc::c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let saved = errno();
    // SAFETY: the signal is blocked while this handler runs and no other code uses HOME_BUF.
    let buf = unsafe { &mut *HOME_BUF.0.get() };
    for fd in &HOME_FDS {
        let fd = fd.load(Ordering::Relaxed);
        while answer_one(fd, buf) {}
    }
    // SAFETY: restoring the interrupted code's errno.
    unsafe { *libc::__errno_location() = saved };
}

/// How the home serves requests, and whether its CPU is busy.
#[derive(Clone, Copy)]
struct Home {
    signal: bool,
    busy: bool,
}

impl Home {
    fn name(self) -> &'static str {
        match (self.signal, self.busy) {
            (false, false) => "thread, idle",
            (false, true) => "thread, busy",
            (true, false) => "signal, idle",
            (true, true) => "signal, busy",
        }
    }
}

/// The forked home: connects twice to `port` and serves until killed.
fn run_home(port: u16, home: Home) -> ! {
    // SAFETY: prctl and signal with valid arguments: the home dies with this process, and a
    // queue overflow of the real-time signal (which the kernel reports as SIGIO) ends nothing.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() == 1 {
            libc::_exit(0);
        }
        libc::signal(libc::SIGIO, libc::SIG_IGN);
    }
    let conns: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    for (c, slot) in conns.iter().zip(&HOME_FDS) {
        c.set_nodelay(true).unwrap();
        slot.store(c.as_raw_fd(), Ordering::SeqCst);
    }
    // SAFETY: the home's buffer is filled before anything serves from it.
    unsafe { (&mut *HOME_BUF.0.get())[8..].fill(7) };
    if home.signal {
        let sig = libc::SIGRTMIN();
        // SAFETY: a zeroed sigaction is valid; the fields used are set.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        let h: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = on_request;
        act.sa_sigaction = h as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: installing a handler for a real-time signal nobody else uses here.
        check(unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) }, "sigaction");
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        for c in &conns {
            let fd = c.as_raw_fd();
            let owner = OwnerEx { kind: F_OWNER_TID, pid: tid };
            // SAFETY: fcntl on our own socket with valid arguments.
            unsafe {
                check(libc::fcntl(fd, F_SETSIG, sig), "F_SETSIG");
                check(libc::fcntl(fd, F_SETOWN_EX, &owner), "F_SETOWN_EX");
                let fl = libc::fcntl(fd, libc::F_GETFL);
                check(libc::fcntl(fd, libc::F_SETFL, fl | libc::O_ASYNC | libc::O_NONBLOCK), "O_ASYNC");
            }
        }
    } else {
        let fds: Vec<i32> = conns.iter().map(AsRawFd::as_raw_fd).collect();
        std::thread::spawn(move || {
            let mut buf = Box::new([7u8; RUN_ANS]);
            loop {
                let mut p: Vec<libc::pollfd> =
                    fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
                // SAFETY: poll over a local vector of the stated length.
                unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, -1) };
                for q in p.iter().filter(|q| q.revents != 0) {
                    if q.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                        std::process::exit(0);
                    }
                    answer_one(q.fd, &mut buf);
                }
            }
        });
    }
    if home.busy {
        let mut x = 1u64;
        loop {
            for _ in 0..1000 {
                x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
            }
        }
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Pages of each first-touch measurement.
const TOUCH_PAGES: usize = 4096;

/// Microseconds per page for: the first 4 KiB write of a page of a fresh memfd (the kernel
/// allocates, zeroes and maps it), the same write again, and `MADV_POPULATE_WRITE` of fresh pages
/// in 128-page calls; on a memfd of its own.
fn first_touch_costs() -> [f64; 3] {
    let len = 2 * TOUCH_PAGES * PAGE;
    // SAFETY: memfd_create with a valid name; the descriptor is ours.
    let fd = unsafe { libc::memfd_create(c"first-touch".as_ptr(), libc::MFD_CLOEXEC) };
    check(fd, "memfd_create");
    // SAFETY: sizing and mapping our own memfd.
    let base = unsafe {
        check(libc::ftruncate(fd, len as libc::off_t), "ftruncate");
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
    };
    assert_ne!(base, libc::MAP_FAILED);
    let base = base as usize;
    let src = [7u8; PAGE];
    let copy_all = |at: usize| {
        let t = Instant::now();
        for i in 0..TOUCH_PAGES {
            // SAFETY: a page of our own writable mapping.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), (at + i * PAGE) as *mut u8, PAGE) };
        }
        us(t.elapsed()) / TOUCH_PAGES as f64
    };
    let touch = copy_all(base);
    let again = copy_all(base);
    let second = base + TOUCH_PAGES * PAGE;
    let t = Instant::now();
    for i in (0..TOUCH_PAGES).step_by(128) {
        // SAFETY: advice on 128 pages of our own mapping.
        unsafe {
            libc::madvise((second + i * PAGE) as *mut libc::c_void, 128 * PAGE, libc::MADV_POPULATE_WRITE)
        };
    }
    let populate = us(t.elapsed()) / TOUCH_PAGES as f64;
    // SAFETY: unmapping and closing what this function made.
    unsafe {
        libc::munmap(base as *mut libc::c_void, len);
        libc::close(fd);
    }
    [touch, again, populate]
}

/// What one path took per fault (or per round trip), `n` samples after 10 unmeasured; for `Bulk`,
/// per page of a [`RUN`]-page answer.
fn measure(path: Option<u32>, n: usize) -> Vec<Duration> {
    if path == Some(BULK) {
        let own = OWN_SOCK.load(Ordering::Relaxed);
        let mut buf = vec![0u8; RUN_ANS];
        let mut out = Vec::with_capacity(n);
        for i in 0..n + 10 {
            let t = Instant::now();
            write_all(own, &request_run(APP.load(Ordering::Relaxed), RUN));
            read_exact(own, &mut buf);
            if i >= 10 {
                out.push(t.elapsed() / RUN as u32);
            }
        }
        return out;
    }
    let app = APP.load(Ordering::Relaxed);
    // SAFETY: re-arming our own mapping.
    check(
        unsafe { libc::mprotect(app as *mut libc::c_void, REGION_PAGES * PAGE, libc::PROT_NONE) },
        "mprotect",
    );
    let mut out = Vec::with_capacity(n);
    let own = OWN_SOCK.load(Ordering::Relaxed);
    let mut buf = vec![0u8; ANS];
    for i in 0..(n + 10).min(REGION_PAGES) {
        let addr = app + i * PAGE;
        let t = Instant::now();
        match path {
            Some(p) => {
                PATH.store(p, Ordering::SeqCst);
                // SAFETY: a load from our own region; the trap brings the page in.
                black_box(unsafe { std::ptr::read_volatile(addr as *const u8) });
            }
            None => {
                write_all(own, &request(addr));
                read_exact(own, &mut buf);
            }
        }
        if i >= 10 {
            out.push(t.elapsed());
        }
    }
    out
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: a smoke run only.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let rounds = if smoke { 1 } else { rounds };
    let per = if smoke { 20 } else { 300 };

    // The region: one memfd, mapped twice.
    let len = REGION_PAGES * PAGE;
    // SAFETY: memfd_create with a valid name; the descriptor is ours.
    let fd = unsafe { libc::memfd_create(c"fault-floor".as_ptr(), libc::MFD_CLOEXEC) };
    check(fd, "memfd_create");
    // SAFETY: sizing our own memfd.
    check(unsafe { libc::ftruncate(fd, len as libc::off_t) }, "ftruncate");
    for (view, prot) in [(&APP, libc::PROT_NONE), (&PRIV, libc::PROT_READ | libc::PROT_WRITE)] {
        // SAFETY: a fresh shared mapping of our memfd.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        view.store(p as usize, Ordering::SeqCst);
    }
    // SAFETY: a zeroed sigaction is valid; the fields used are set.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    let h: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = on_segv;
    act.sa_sigaction = h as usize;
    act.sa_flags = libc::SA_SIGINFO;
    // SAFETY: this benchmark owns SIGSEGV; the handler aborts on faults outside its region.
    check(unsafe { libc::sigaction(libc::SIGSEGV, &act, std::ptr::null_mut()) }, "sigaction");
    // Every page gets its memory and its mapping in both views before anything is measured, so
    // that no path pays for a first touch (measured separately below).
    let first_touch = first_touch_costs();
    for i in 0..REGION_PAGES {
        let (app, private) = (APP.load(Ordering::Relaxed), PRIV.load(Ordering::Relaxed));
        // SAFETY: writing the writable view, then opening and reading the trapping one, in range.
        unsafe {
            std::ptr::write_volatile((private + i * PAGE) as *mut u8, 1);
            check(libc::mprotect((app + i * PAGE) as *mut libc::c_void, PAGE, libc::PROT_READ), "mprotect");
            black_box(std::ptr::read_volatile((app + i * PAGE) as *const u8));
        }
    }
    let mut pipe = [0i32; 2];
    // SAFETY: pipe2 into a local array.
    check(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) }, "pipe2");
    PIPE_WR.store(pipe[1], Ordering::SeqCst);

    let homes = [
        Home { signal: false, busy: false },
        Home { signal: false, busy: true },
        Home { signal: true, busy: true },
        Home { signal: true, busy: false },
    ];
    let paths: [(&str, Option<u32>); 5] = [
        ("raw RTT", None),
        ("4 hand-offs (today)", Some(PATH_FOUR)),
        ("3 hand-offs (thread sends)", Some(PATH_THREE)),
        ("2 hand-offs (thread sends, installs)", Some(PATH_TWO)),
        ("raw, 32-page run, per page", Some(BULK)),
    ];
    let mut samples = vec![vec![Vec::new(); paths.len()]; homes.len()];
    for _ in 0..rounds {
        for (h, &home) in homes.iter().enumerate() {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            // SAFETY: fork in a process whose only other thread may be the service thread of an
            // earlier round, which is gone (joined); the child runs only what `run_home` does.
            let child = unsafe { libc::fork() };
            check(child, "fork");
            if child == 0 {
                run_home(port, home);
            }
            let (svc, _) = l.accept().unwrap();
            let (own, _) = l.accept().unwrap();
            for s in [&svc, &own] {
                s.set_nodelay(true).unwrap();
            }
            SVC_SOCK.store(svc.as_raw_fd(), Ordering::SeqCst);
            OWN_SOCK.store(own.as_raw_fd(), Ordering::SeqCst);
            let rd = pipe[0];
            let service_thread = std::thread::spawn(move || service(rd));
            // Let the home settle (its busy worker start).
            std::thread::sleep(Duration::from_millis(20));
            for (p, &(_, path)) in paths.iter().enumerate() {
                samples[h][p].extend(measure(path, per));
            }
            write_all(pipe[1], &0usize.to_ne_bytes());
            service_thread.join().unwrap();
            // SAFETY: stopping and reaping our own child.
            unsafe {
                libc::kill(child, libc::SIGKILL);
                libc::waitpid(child, std::ptr::null_mut(), 0);
            }
            drop((svc, own));
        }
    }

    // SAFETY: sched_getaffinity only reads; CPU_COUNT on the set it filled.
    let cpus = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        libc::CPU_COUNT(&set)
    };
    println!(
        "fault path floor: {rounds} round(s) x {per} samples per row; this process may use {cpus} CPU(s)"
    );
    let [touch, again, populate] = first_touch;
    println!(
        "first write of a memfd page {touch:.2} us, of a page that has memory {again:.2} us, \
         MADV_POPULATE_WRITE per page in 128-page runs {populate:.2} us (each over {TOUCH_PAGES} pages)"
    );
    println!(
        "{:<14} {:<38} {:>10} {:>9} {:>9} {:>9}",
        "home", "path", "median us", "p90 us", "/ raw", "/ idle raw"
    );
    let idle_raw = percentile(&mut samples[0][0], 0.5);
    for (h, home) in homes.iter().enumerate() {
        let raw = percentile(&mut samples[h][0], 0.5);
        for (p, (name, _)) in paths.iter().enumerate() {
            let v = &mut samples[h][p];
            let m = percentile(v, 0.5);
            let p90 = percentile(v, 0.9);
            println!(
                "{:<14} {:<38} {:>10.1} {:>9.1} {:>9.2} {:>9.2}",
                home.name(),
                name,
                us(m),
                us(p90),
                us(m) / us(raw),
                us(m) / us(idle_raw)
            );
        }
    }
}
