//! The fault handler in one process: traps on the space reach a service thread with the right
//! page and kind; system calls on protected shared buffers work (`interpose`).
//! Installing the handler is process-wide, so this file holds a single test.

// Tests print as they like: the rule against std's print macros is the runtime's.
#![allow(clippy::disallowed_macros)]

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dsm::fault::{self, Wakeup};
use dsm::sys::PAGE_SIZE;
use dsm::{Access, FaultKind, PageId, Space, SpaceLayout};

#[test]
fn traps_are_served_by_the_service_thread_and_syscalls_work_on_protected_pages() {
    let layout = SpaceLayout { base: 0x3000_0000_0000, size: 64 * PAGE_SIZE };
    let space = Arc::new(Space::map(layout, PageId(0)..PageId(0)).unwrap());
    let faults = fault::install(layout).unwrap();
    assert!(fault::install(layout).is_err(), "a second install is refused");
    let seen: Arc<Mutex<Vec<(u64, FaultKind)>>> = Arc::default();
    let atomic: Arc<Mutex<Vec<(u64, bool)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let service = {
        let (space, seen, stop) = (Arc::clone(&space), Arc::clone(&seen), Arc::clone(&stop));
        let atomics = Arc::clone(&atomic);
        std::thread::spawn(move || {
            fault::register_service_thread();
            while !stop.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd { fd: faults.fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 50) };
                faults.drain(|w| {
                    if let Wakeup::Fault { slot, page, kind, atomic } = w {
                        seen.lock().unwrap().push((page.0, kind));
                        atomics.lock().unwrap().push((page.0, atomic));
                        if space.protect(page, Access::None).is_ok() {
                            // SAFETY: the page is inside the space and closed to the application.
                            unsafe { space.install(page, &[page.0 as u8; PAGE_SIZE]) };
                        }
                        space.protect(page, kind.needed()).unwrap();
                        fault::complete(slot);
                    }
                });
            }
        })
    };
    let page = |p: u64| layout.addr_of(PageId(p)) as *mut u8;
    // SAFETY: the addresses lie in the mapped space; traps are served by the thread above.
    unsafe {
        assert_eq!(std::ptr::read_volatile(page(3).add(10)), 3);
        std::ptr::write_volatile(page(3).add(10), 99);
        std::ptr::write_volatile(page(5), 7);
        assert_eq!(std::ptr::read_volatile(page(5)), 7);
        assert_eq!(std::ptr::read_volatile(page(3).add(10)), 99);
    }
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(3, FaultKind::Read), (3, FaultKind::Write), (5, FaultKind::Write)],
        "reads and writes are told apart"
    );
    seen.lock().unwrap().clear();

    // write(2) from closed pages and read(2) into closed pages: the wrappers fault them in first.
    let devnull = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
    let zero = std::fs::File::open("/dev/zero").unwrap();
    // SAFETY: both buffers lie in the mapped space and span two pages each.
    unsafe {
        let n = libc::write(devnull.as_raw_fd(), page(7).add(PAGE_SIZE - 8).cast(), 100);
        assert_eq!(n, 100, "write from shared pages: {}", std::io::Error::last_os_error());
        let n = libc::read(zero.as_raw_fd(), page(9).add(PAGE_SIZE - 8).cast(), 100);
        assert_eq!(n, 100, "read into shared pages: {}", std::io::Error::last_os_error());
        assert_eq!(std::ptr::read_volatile(page(10).add(50)), 0);
    }
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(7, FaultKind::Read), (8, FaultKind::Read), (9, FaultKind::Write), (10, FaultKind::Write)]
    );

    // Atomic read-modify-writes and SeqCst stores are told from plain stores (x86-64).
    atomic.lock().unwrap().clear();
    // SAFETY: pages 20..24 lie in the mapped space and are aligned for 8-byte atomics.
    unsafe {
        use std::sync::atomic::AtomicU64;
        (*(page(20) as *const AtomicU64)).fetch_add(1, Ordering::Relaxed);
        (*(page(21) as *const AtomicU64)).store(1, Ordering::SeqCst);
        (*(page(22) as *const AtomicU64)).store(1, Ordering::Release);
        std::ptr::write_volatile(page(23), 1);
    }
    if cfg!(target_arch = "x86_64") {
        assert_eq!(*atomic.lock().unwrap(), vec![(20, true), (21, true), (22, false), (23, false)]);
    }
    stop.store(true, Ordering::Relaxed);
    service.join().unwrap();
}
