//! C-library interposition: `read`, `write` and the other I/O entry points, redefined so that
//! system calls can read and write shared memory on every node.
//!
//! **Where it is linked.** The functions below are `#[no_mangle]` definitions of C-library symbols.
//! They are linked into every binary that links `dsm` (every rthreads program, its tests and
//! tools), where the linker takes them before the C library's own definitions, for the whole
//! process: std's I/O, other Rust crates and C code linked in all call these.
//!
//! **Which symbols.** `read`, `write`, `pread64`, `pwrite64`, `readv`, `writev`, `recv`, `send`,
//! `recvfrom` and `sendto`.
//!
//! **Why.** The kernel does not trap when a system call touches a page the process has protected:
//! it fails the call with `EFAULT`. User code hands shared memory to the kernel all the time (`read`
//! into a `Vec` allocated on another node, `write` of a `String`). So each wrapper first touches
//! every shared page of its buffers from user space (a load for data the kernel will read, an
//! atomic compare-and-swap that cannot change the byte for data the kernel will write), which runs
//! the ordinary fault path, and then makes the system call directly. Another node may take a page
//! back between the touch and the call; the call then fails with `EFAULT` having transferred
//! nothing, and the wrapper touches and retries. Buffers outside the shared space cost two
//! comparisons.
//!
//! **Standard output and error.** A runtime may install an [`OutputHook`] ([`set_output_hook`]):
//! then `write` and `writev` on descriptors 1 and 2 ask it first, and it may take the bytes
//! itself (rthreads forwards the output of nodes other than 0 to node 0 this way, so that output
//! keeps the program's order across nodes).
//!
//! **Who does not use it.** The wrappers are async-signal-safe only while no output hook is
//! installed, so the fault handler never writes through them: its messages, and the runtime's own,
//! make the system call directly ([`crate::sys::raw_write`], [`crate::sys::write_all_raw`]). The
//! handler only calls [`write_directly`] (one atomic store) before it passes a foreign fault to the
//! previous handler, so that what that handler prints bypasses the hook.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use libc::{c_int, c_void, iovec, size_t, sockaddr, socklen_t, ssize_t};

use crate::sys::PAGE_SIZE;

/// Takes a write to standard output (`fd` 1) or error (2) of `cnt` buffers at `iov` instead of the
/// kernel: returns what `write`/`writev` should return (setting `errno` for -1), or `None` to let
/// the write go to the kernel as usual.
pub type OutputHook = fn(fd: c_int, iov: *const iovec, cnt: c_int) -> Option<ssize_t>;

static OUTPUT_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs (or with `None` removes) the hook that sees every `write`/`writev` to descriptors 1
/// and 2 first. See the module docs.
pub fn set_output_hook(hook: Option<OutputHook>) {
    OUTPUT_HOOK.store(hook.map_or(0, |h| h as usize), Ordering::SeqCst);
}

/// Set once the process is going down abruptly (a fatal signal being handled, an allocation
/// failure about to abort): from then on every write goes straight to the kernel.
static DIRECT: AtomicU8 = AtomicU8::new(0);

/// Sends every later write straight to the kernel, past the output hook: the process is about to
/// die (in a signal handler, or before `abort`), and the hook may allocate, lock and wait.
/// Async-signal-safe.
pub fn write_directly() {
    DIRECT.store(1, Ordering::SeqCst);
}

fn output_hook(fd: c_int, iov: *const iovec, cnt: c_int) -> Option<ssize_t> {
    if (fd != 1 && fd != 2) || DIRECT.load(Ordering::Relaxed) != 0 {
        return None;
    }
    let h = OUTPUT_HOOK.load(Ordering::Acquire);
    if h == 0 {
        return None;
    }
    // SAFETY: only `set_output_hook` stores here, and only an `OutputHook` as an address.
    let hook: OutputHook = unsafe { std::mem::transmute::<usize, OutputHook>(h) };
    hook(fd, iov, cnt)
}

/// How often a call is retried after `EFAULT` on a shared buffer before the error is returned.
const RETRIES: u32 = 1000;

fn overlaps(ptr: *const c_void, len: usize) -> bool {
    let (base, size) = crate::fault::space_bounds();
    let start = ptr as usize;
    len != 0 && size != 0 && start < base + size && start.saturating_add(len) > base
}

/// Touches every page of `[ptr, ptr+len)` that lies in the shared space, for reading or for
/// writing, so that the node holds the access the kernel will need.
fn touch(ptr: *const c_void, len: usize, kernel_writes: bool) {
    if !overlaps(ptr, len) {
        return;
    }
    let (base, size) = crate::fault::space_bounds();
    let start = (ptr as usize).max(base);
    let end = (ptr as usize).saturating_add(len).min(base + size);
    let mut addr = start;
    while addr < end {
        let byte = addr as *const AtomicU8;
        // SAFETY: `addr` lies inside the shared space, which is mapped for the life of the process;
        // an access the node lacks traps and is served by the fault handler.
        let cell = unsafe { &*byte };
        if kernel_writes {
            // A locked compare-and-swap needs write access whether or not it succeeds (x86 writes
            // the old value back on failure), and swapping 0 for 0 never changes the byte. One
            // write trap, no read trap first.
            let _ = cell.compare_exchange(0, 0, Ordering::Relaxed, Ordering::Relaxed);
        } else {
            cell.load(Ordering::Relaxed);
        }
        addr = (addr & !(PAGE_SIZE - 1)) + PAGE_SIZE;
    }
}

/// Runs `call` after touching `bufs`, retrying while it fails with `EFAULT` on shared memory.
fn guarded(bufs: &[(*const c_void, usize, bool)], call: impl FnMut() -> ssize_t) -> ssize_t {
    let touch_all = || bufs.iter().for_each(|&(p, n, w)| touch(p, n, w));
    retry(touch_all, || bufs.iter().any(|&(p, n, _)| overlaps(p, n)), call)
}

/// Runs `call` after `touch`, again while it fails with `EFAULT` and `shared` says its buffers
/// lie in the shared space (at most `RETRIES` times).
fn retry(touch: impl Fn(), shared: impl Fn() -> bool, mut call: impl FnMut() -> ssize_t) -> ssize_t {
    let mut tries = 0;
    loop {
        touch();
        let r = call();
        if r >= 0 || crate::sys::errno() != libc::EFAULT || tries >= RETRIES || !shared() {
            return r;
        }
        tries += 1;
    }
}

/// Touches the buffers of an iovec array (the array itself is read by the kernel too).
fn touch_iov(iov: *const iovec, cnt: c_int, kernel_writes: bool) {
    if iov.is_null() || cnt <= 0 {
        return;
    }
    touch(iov.cast(), cnt as usize * std::mem::size_of::<iovec>(), false);
    for i in 0..cnt as usize {
        // SAFETY: the caller passed `cnt` valid iovecs (the C contract of readv/writev).
        let v = unsafe { *iov.add(i) };
        touch(v.iov_base, v.iov_len, kernel_writes);
    }
}

/// `readv`/`writev` (system call `nr`) on `cnt` buffers, which the kernel writes if `kernel_writes`.
fn vectored(nr: libc::c_long, fd: c_int, iov: *const iovec, cnt: c_int, kernel_writes: bool) -> ssize_t {
    let overlap = || {
        (0..cnt.max(0) as usize).any(|i| {
            // SAFETY: as in touch_iov.
            let v = unsafe { *iov.add(i) };
            overlaps(v.iov_base, v.iov_len)
        })
    };
    retry(
        || touch_iov(iov, cnt, kernel_writes),
        overlap,
        || {
            // SAFETY: forwarded to the kernel under the caller's contract.
            unsafe { libc::syscall(nr, fd, iov, cnt) as ssize_t }
        },
    )
}

/// `read(2)` that works on shared memory. See the module docs.
///
/// # Safety
/// The C contract of `read`: `buf` is valid for `n` bytes of writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    guarded(&[(buf, n, true)], || {
        // SAFETY: forwarded to the kernel under the caller's contract.
        unsafe { libc::syscall(libc::SYS_read, fd, buf, n) as ssize_t }
    })
}

/// `write(2)` that works on shared memory. See the module docs.
///
/// # Safety
/// The C contract of `write`: `buf` is valid for `n` bytes of reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    let one = iovec { iov_base: buf.cast_mut(), iov_len: n };
    if let Some(r) = output_hook(fd, &one, 1) {
        return r;
    }
    guarded(&[(buf, n, false)], || {
        // SAFETY: forwarded to the kernel under the caller's contract.
        unsafe { libc::syscall(libc::SYS_write, fd, buf, n) as ssize_t }
    })
}

/// `pread64(2)` that works on shared memory.
///
/// # Safety
/// The C contract of `pread64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pread64(fd: c_int, buf: *mut c_void, n: size_t, off: libc::off64_t) -> ssize_t {
    guarded(&[(buf, n, true)], || {
        // SAFETY: forwarded to the kernel under the caller's contract.
        unsafe { libc::syscall(libc::SYS_pread64, fd, buf, n, off) as ssize_t }
    })
}

/// `pwrite64(2)` that works on shared memory.
///
/// # Safety
/// The C contract of `pwrite64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pwrite64(fd: c_int, buf: *const c_void, n: size_t, off: libc::off64_t) -> ssize_t {
    guarded(&[(buf, n, false)], || {
        // SAFETY: forwarded to the kernel under the caller's contract.
        unsafe { libc::syscall(libc::SYS_pwrite64, fd, buf, n, off) as ssize_t }
    })
}

/// `readv(2)` that works on shared memory.
///
/// # Safety
/// The C contract of `readv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    vectored(libc::SYS_readv, fd, iov, cnt, true)
}

/// `writev(2)` that works on shared memory.
///
/// # Safety
/// The C contract of `writev`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if let Some(r) = output_hook(fd, iov, cnt) {
        return r;
    }
    vectored(libc::SYS_writev, fd, iov, cnt, false)
}

/// `recv(2)` that works on shared memory.
///
/// # Safety
/// The C contract of `recv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    // SAFETY: the C contract of recvfrom with null address arguments.
    unsafe { recvfrom(fd, buf, n, flags, std::ptr::null_mut(), std::ptr::null_mut()) }
}

/// `send(2)` that works on shared memory.
///
/// # Safety
/// The C contract of `send`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    // SAFETY: the C contract of sendto with a null address.
    unsafe { sendto(fd, buf, n, flags, std::ptr::null(), 0) }
}

/// `recvfrom(2)` that works on shared memory.
///
/// # Safety
/// The C contract of `recvfrom`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    guarded(&[(buf, n, true)], || {
        // SAFETY: forwarded to the kernel under the caller's contract.
        unsafe { libc::syscall(libc::SYS_recvfrom, fd, buf, n, flags, addr, alen) as ssize_t }
    })
}

/// `sendto(2)` that works on shared memory.
///
/// # Safety
/// The C contract of `sendto`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
) -> ssize_t {
    guarded(&[(buf, n, false)], || {
        // SAFETY: forwarded to the kernel under the caller's contract.
        unsafe { libc::syscall(libc::SYS_sendto, fd, buf, n, flags, addr, alen) as ssize_t }
    })
}
