//! A barrier that works across nodes.

use std::sync::atomic::AtomicU8;

use super::Ticket;
use super::key_of;
use super::manager::{Op, Reply};

/// Lets `n` threads, on any nodes, wait for each other; as `std::sync::Barrier`.
///
/// Arrivals combine on their way to the barrier's manager node (the home of its address) through a
/// tree of the nodes (`RTHREADS_TREE_FANOUT` children each, 16 by default): a node reports the
/// arrivals it received in one message to its parent, and the release comes back down the same
/// way. In clusters of up to 17 nodes every node reports to the manager directly. When the `n`-th
/// thread arrives, everyone is released, and exactly one thread is named the leader (the arrival
/// whose report completed the count at the manager; std names no particular thread either).
///
/// # Memory ordering
/// Arriving is a release and leaving an acquire: everything any thread wrote before `wait` is
/// visible to every thread after it.
///
/// # Examples
/// ```
/// use rthreads::sync::{Arc, Barrier};
///
/// let barrier = Arc::new(Barrier::new(3));
/// let handles: Vec<_> = (0..3)
///     .map(|_| {
///         let b = Arc::clone(&barrier);
///         rthreads::spawn(move || b.wait().is_leader())
///     })
///     .collect();
/// let leaders = handles.into_iter().filter(|_| true).map(|h| h.join().unwrap()).filter(|&l| l).count();
/// assert_eq!(leaders, 1);
/// ```
#[derive(Debug)]
pub struct Barrier {
    n: usize,
    state: AtomicU8,
}

/// What [`Barrier::wait`] tells one thread; as `std::sync::BarrierWaitResult`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierWaitResult(bool);

impl BarrierWaitResult {
    /// Whether this thread is the leader (exactly one per phase).
    pub fn is_leader(&self) -> bool {
        self.0
    }
}

impl Barrier {
    /// A barrier for `n` threads (`0` behaves as `1`, as in std).
    pub const fn new(n: usize) -> Barrier {
        Barrier { n, state: AtomicU8::new(0) }
    }

    /// Blocks until `n` threads have called `wait`; then all return, and the barrier can be used
    /// again.
    pub fn wait(&self) -> BarrierWaitResult {
        crate::counters::barrier_waited();
        crate::consistency::release();
        crate::consistency::before_barrier();
        let key = key_of(&self.state);
        let op = Op::Barrier { n: self.n.max(1) as u64 };
        let reply = match super::barrier_node(key) {
            Some(parent) => Ticket::call_at(parent, key, op),
            // One switch to the private stack for the whole exchange with this node's combiner.
            None => crate::private::private(move || {
                let t = Ticket::new();
                t.submit(key, op);
                t.wait()
            }),
        };
        match reply {
            Reply::Barrier { leader } => {
                crate::consistency::after_barrier();
                crate::consistency::acquire();
                BarrierWaitResult(leader)
            }
            other => unreachable!("barrier answered {other:?}"),
        }
    }
}
