//! Thin, checked wrappers over the few system calls the DSM needs (mio's habit: one small
//! function per call, errors as `io::Error`, no `libc::` scattered through the logic).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::Access;

/// The page size the whole system assumes; checked against the kernel's at start-up.
pub const PAGE_SIZE: usize = 4096;

/// `ret`, a system call's result, or the calling thread's `errno` as an error where it is negative.
pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// The protection bits that give application threads `access`.
pub fn prot_of(access: Access) -> libc::c_int {
    match access {
        Access::None => libc::PROT_NONE,
        Access::Read => libc::PROT_READ,
        Access::Write => libc::PROT_READ | libc::PROT_WRITE,
    }
}

/// An anonymous memory file of `len` bytes (sparse: nothing is committed until touched).
pub fn memfd(name: &std::ffi::CStr, len: usize) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string; the flags are plain constants.
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::other("space too large"))?;
    // SAFETY: plain syscall on a descriptor we own.
    check(unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), len) })?;
    Ok(fd)
}

/// A fresh private anonymous read-write mapping of `len` bytes; zero-filled pages are committed
/// only as touched.
pub fn map_anon(len: usize) -> io::Result<*mut libc::c_void> {
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED { Err(io::Error::last_os_error()) } else { Ok(p) }
}

/// Maps `len` bytes of `fd` shared. With `fixed = Some(addr)`, exactly at `addr` and failing
/// (never replacing) if anything is mapped there.
pub fn map_shared(fd: RawFd, len: usize, fixed: Option<usize>, prot: libc::c_int) -> io::Result<usize> {
    let (hint, flags) = match fixed {
        Some(addr) => (addr as *mut libc::c_void, libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE),
        None => (std::ptr::null_mut(), libc::MAP_SHARED),
    };
    // SAFETY: a new mapping is requested; MAP_FIXED_NOREPLACE never clobbers an existing one.
    let p = unsafe { libc::mmap(hint, len, prot, flags | libc::MAP_NORESERVE, fd, 0) };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    if let Some(addr) = fixed
        && p as usize != addr
    {
        // Kernels older than 4.17 ignore MAP_FIXED_NOREPLACE and treat it as a hint.
        // SAFETY: we just created this mapping and nobody else knows of it.
        unsafe { libc::munmap(p, len) };
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("the shared space could not be placed at {addr:#x}"),
        ));
    }
    Ok(p as usize)
}

/// Changes what application threads may do with `[addr, addr+len)`.
///
/// # Safety
/// The range must lie inside a mapping owned by the caller; revoking access makes later
/// accesses trap, which is only sound where a fault handler serves those traps.
pub unsafe fn protect(addr: usize, len: usize, access: Access) -> io::Result<()> {
    // SAFETY: forwarded to the caller's contract.
    check(unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot_of(access)) }).map(|_| ())
}

/// A pipe whose both ends are close-on-exec; the read end is non-blocking.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&r))?;
    Ok((r, w))
}

/// Puts a descriptor in non-blocking mode.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(|_| ())
}

/// Blocks while `*word == expected` (or until a spurious wake-up). Async-signal-safe.
pub fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32) {
    // SAFETY: the futex word is a valid, aligned u32 that outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes every thread blocked in [`futex_wait`] on `word`.
pub fn futex_wake_all(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: as for futex_wait.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX);
    }
}

/// The calling thread's `errno`. Async-signal-safe.
pub fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`. Async-signal-safe.
pub fn set_errno(v: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = v };
}

/// `write(2)` as the system call itself, bypassing the C library's `write` (which `interpose`
/// replaces in every program that links this crate). For the runtime's own descriptors and
/// messages: async-signal-safe, never forwarded, never retried. Returns what the kernel returned.
///
/// # Safety
/// `buf` must be valid for `len` bytes of reads.
pub unsafe fn raw_write(fd: RawFd, buf: *const u8, len: usize) -> isize {
    // SAFETY: as the caller promises; syscall(2) is async-signal-safe.
    unsafe { libc::syscall(libc::SYS_write, fd, buf, len) as isize }
}

/// `read(2)` as the system call itself (see [`raw_write`]).
///
/// # Safety
/// `buf` must be valid for `len` bytes of writes.
pub unsafe fn raw_read(fd: RawFd, buf: *mut u8, len: usize) -> isize {
    // SAFETY: as the caller promises.
    unsafe { libc::syscall(libc::SYS_read, fd, buf, len) as isize }
}

/// Writes all of `msg` to `fd` with the raw system call, giving up on an error (for messages).
pub fn write_all_raw(fd: RawFd, msg: &[u8]) {
    let mut rest = msg;
    while !rest.is_empty() {
        // SAFETY: a live slice.
        let n = unsafe { raw_write(fd, rest.as_ptr(), rest.len()) };
        if n <= 0 {
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        rest = &rest[n as usize..];
    }
}
