//! Turning the wake-up pipes off again (`set_wake_pipes(false)` after `true`) must not lose a
//! wake-up: the thread waiting in a fault and the service thread completing it must agree on how
//! the waiter sleeps (its slot's pipe or the futex), whatever the setting says meanwhile.
//! Installing the handler is process-wide, so this file holds a single test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use dsm::fault::{self, Wakeup};
use dsm::sys::PAGE_SIZE;
use dsm::{PageId, Space, SpaceLayout};

/// Faulting threads per round: enough that some of them claim one of the first 64 slots (those
/// with a pipe), whichever slot their thread id hashes to.
const THREADS: u64 = 128;

#[test]
fn a_waiter_and_its_waker_agree_on_pipe_or_futex() {
    let layout = SpaceLayout { base: 0x3100_0000_0000, size: 4 * THREADS as usize * PAGE_SIZE };
    let space = Arc::new(Space::map(layout, PageId(0)..PageId(0)).unwrap());
    let faults = fault::install(layout).unwrap();
    // Waiters sleep at once, and the service thread lets them: a wake-up that goes to the wrong
    // place is lost for good.
    fault::set_spin(0);
    let stop = Arc::new(AtomicBool::new(false));
    let service = {
        let (space, stop) = (Arc::clone(&space), Arc::clone(&stop));
        std::thread::spawn(move || {
            fault::register_service_thread();
            while !stop.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd { fd: faults.fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 20) };
                let mut slots = Vec::new();
                faults.drain(|w| {
                    if let Wakeup::Fault { slot, page, kind, .. } = w {
                        space.protect(page, kind.needed()).unwrap();
                        slots.push(slot);
                    }
                });
                if !slots.is_empty() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                slots.into_iter().for_each(fault::complete);
            }
        })
    };

    // Each round: every thread reads its own page once; all must be woken.
    let round = |first: u64| {
        let (done_tx, done_rx) = mpsc::channel();
        for i in 0..THREADS {
            let done = done_tx.clone();
            let addr = layout.addr_of(PageId(first + i));
            std::thread::spawn(move || {
                // SAFETY: the address lies in the mapped space; the trap is served above.
                let v = unsafe { std::ptr::read_volatile(addr as *const u8) };
                let _ = done.send(v);
            });
        }
        for woken in 0..THREADS {
            let got = done_rx.recv_timeout(Duration::from_secs(10));
            assert!(got.is_ok(), "only {woken} of {THREADS} faulting threads were woken");
        }
    };
    fault::set_wake_pipes(true).unwrap();
    round(0);
    fault::set_wake_pipes(false).unwrap();
    round(THREADS);
    fault::set_wake_pipes(true).unwrap();
    round(2 * THREADS);
    stop.store(true, Ordering::Relaxed);
    service.join().unwrap();
}
