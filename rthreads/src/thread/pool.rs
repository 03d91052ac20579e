//! Fresh carriers started ahead of need, so that starting a thread wakes one instead of creating
//! an OS thread on the spot (on the project's VM, `pthread_create` + join costs 85–95 µs, as much
//! as a remote spawn's two messages).
//!
//! Each carrier still runs exactly one rthread and then ends, as a `std::thread` does: its
//! thread-locals start empty and their destructors run when the rthread ends, and
//! `std::thread::current().id()` is never reused. What the pool moves off the critical path is
//! the creation: a carrier whose rthread has ended starts the next waiting carrier (after it has
//! reported the end, so no `join` waits for it), up to [`IDLE`] per node. A waiting carrier that
//! gets no work within [`LINGER`] ends. Named threads (std gives a thread its name when it is
//! created) and threads on architectures without fibers (whose carrier stack is the thread's
//! stack) get a carrier of their own, as before.
//!
//! Locks: the pool and each waiting carrier's slot are `ServiceLock`s (the service thread hands
//! out work for remote spawns); carriers take them only on their own private stack.

use std::sync::{Arc, Condvar};
use std::time::{Duration, Instant};

use crate::alloc::{InternalAlloc, private_internal};
use crate::private::ServiceLock;

/// The work of one rthread, boxed in private memory.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// Waiting carriers a node keeps at most.
const IDLE: usize = 2;
/// How long a waiting carrier waits for work before it ends.
const LINGER: Duration = Duration::from_secs(10);

/// One waiting carrier's slot for its work.
struct Waiting {
    job: ServiceLock<Option<Job>>,
    cv: Condvar,
}

static POOL: ServiceLock<Vec<Arc<Waiting>>> = ServiceLock::new("thread.pool", Vec::new());

/// Hands `job` to a waiting carrier; gives it back if none waits. Call on a private stack.
pub(super) fn hand(job: Job) -> Result<(), Job> {
    let Some(w) = POOL.lock().pop() else { return Err(job) };
    *w.job.lock() = Some(job);
    w.cv.notify_one();
    Ok(())
}

/// Called by a carrier whose rthread has ended: starts a fresh carrier to wait for the next one,
/// unless enough wait already.
pub(super) fn refill() {
    private_internal(|| {
        if POOL.lock().len() >= IDLE {
            return;
        }
        let w = Arc::new(Waiting { job: ServiceLock::new("thread.waiting", None), cv: Condvar::new() });
        let _internal = InternalAlloc::new();
        let started = std::thread::Builder::new().stack_size(crate::fiber::CARRIER_STACK).spawn(move || {
            super::name_carrier();
            let registered = private_internal(|| {
                let mut pool = POOL.lock();
                let room = pool.len() < IDLE;
                if room {
                    pool.push(Arc::clone(&w));
                }
                room
            });
            if registered && let Some(job) = wait(&w) {
                job();
                refill();
            }
        });
        // No carrier waits then; threads start the ordinary way.
        drop(started);
    });
}

/// Waits for work in `w`: the job, or `None` once the carrier has left the pool unused.
fn wait(w: &Arc<Waiting>) -> Option<Job> {
    let w = Arc::clone(w);
    private_internal(move || {
        let mut linger = Instant::now() + LINGER;
        loop {
            let mut job = w.job.lock();
            loop {
                if let Some(j) = job.take() {
                    return Some(j);
                }
                let now = Instant::now();
                if now >= linger {
                    break;
                }
                job = job.wait_timeout(&w.cv, linger - now);
            }
            drop(job);
            // Leave, unless someone has just taken this carrier out of the pool to hand it work.
            let mut pool = POOL.lock();
            if let Some(i) = pool.iter().position(|p| Arc::ptr_eq(p, &w)) {
                pool.swap_remove(i);
                return None;
            }
            drop(pool);
            linger = Instant::now() + LINGER;
        }
    })
}
