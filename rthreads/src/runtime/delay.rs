//! The emulated network delay (`RTHREADS_NET_DELAY_US`).
//!
//! Loopback has no network latency, and `tc netem` is not available here, so for benchmarks the
//! runtime can emulate one: the service thread holds every frame it receives on an ordinary
//! connection for `d` µs (a queue in arrival order and a `timerfd` armed for the first one; frames
//! still held when a peer closes are handled before the loss), and a thread making a direct request
//! sleeps `d` before sending it and `d` after its answer arrives. Order is unchanged, so
//! correctness does not depend on it. It is an emulation: figures taken with it say so.

use std::cell::Cell;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dsm::NodeId;

use super::service::Service;
use super::wire::ProtocolWire;
use crate::alloc::InternalAlloc;

/// The service thread's side of the emulation.
pub(super) struct Delay {
    /// The emulated one-way delay (zero: off).
    pub(super) delay: Duration,
    /// Frames received and not yet due, in arrival order: (due, peer, frame).
    pub(super) held: VecDeque<(Instant, NodeId, Vec<u8>)>,
    /// A timerfd armed for the first held frame (with the emulation on).
    pub(super) timer: Option<OwnedFd>,
}

impl<P: ProtocolWire + Send + 'static> Service<P> {
    /// Holds a frame from `from` back for the emulated delay.
    pub(super) fn hold(&mut self, from: NodeId, body: &[u8]) {
        let _internal = InternalAlloc::new();
        self.delay.held.push_back((Instant::now() + self.delay.delay, from, body.to_vec()));
    }

    /// Handles the held frames that are due, in arrival order, and arms the timer for the next one.
    pub(super) fn deliver_due(&mut self) {
        let now = Instant::now();
        while let Some((_, from, frame)) = self.delay.held.pop_front_if(|d| d.0 <= now) {
            self.on_frame(from, &frame);
            self.processed(from);
        }
        if let (Some((due, _, _)), Some(t)) = (self.delay.held.front(), &self.delay.timer) {
            let left = due.saturating_duration_since(now).max(Duration::from_nanos(1));
            let spec = libc::itimerspec {
                it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
                it_value: libc::timespec {
                    tv_sec: left.as_secs() as libc::time_t,
                    tv_nsec: left.subsec_nanos() as libc::c_long,
                },
            };
            // SAFETY: a timerfd we own; `spec` is valid for the call.
            unsafe { libc::timerfd_settime(t.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        }
    }

    /// Handles every frame still held back from `from` now (its connection is closing).
    pub(super) fn deliver_from(&mut self, from: NodeId) {
        if self.delay.held.iter().all(|d| d.1 != from) {
            return;
        }
        let (mine, rest): (VecDeque<_>, _) =
            std::mem::take(&mut self.delay.held).into_iter().partition(|d| d.1 == from);
        self.delay.held = rest;
        for (_, _, frame) in mine {
            self.on_frame(from, &frame);
            self.processed(from);
        }
    }

    pub(super) fn clear_delay_timer(&mut self) {
        if let Some(t) = &self.delay.timer {
            let mut n = 0u64;
            // SAFETY: reads 8 bytes into `n` from a non-blocking timerfd we own.
            unsafe { dsm::sys::raw_read(t.as_raw_fd(), (&raw mut n).cast(), 8) };
        }
    }
}

/// The emulated one-way network delay, `RTHREADS_NET_DELAY_US` (zero when unset).
pub(crate) fn net_delay() -> Duration {
    static DELAY: OnceLock<Duration> = OnceLock::new();
    *DELAY.get_or_init(|| {
        Duration::from_micros(
            std::env::var("RTHREADS_NET_DELAY_US").ok().and_then(|v| v.parse().ok()).unwrap_or(0),
        )
    })
}

/// Waits out the emulated network delay on the calling thread (direct requests and answers).
pub(crate) fn emulate_delay() {
    let d = net_delay();
    if d.is_zero() {
        return;
    }
    thread_local!(static SLACK: Cell<bool> = const { Cell::new(false) });
    if !SLACK.replace(true) {
        // SAFETY: sets this thread's timer slack to 1 ns so short sleeps are not stretched by the
        // default 50 µs; no pointers involved.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    }
    std::thread::sleep(d);
}
