//! Ping-pong through shared memory: pairs of workers hand a value back and forth through one slot
//! (a sequence number and a value, alone in their page), the producer publishing and the consumer
//! acknowledging, spinning (then yielding) while they wait. A fixed number of rounds is dealt
//! round-robin to the pairs; with an odd number of workers the last one plays both sides of its
//! share alone (no waiting), as does the single worker when there is only one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::common::{PageAligned, mix};
use crate::par::{Size, spawn, workers};

/// Total rounds for a size.
fn rounds(size: Size) -> u64 {
    match size {
        Size::Small => 500,
        Size::Medium => 5_000,
        Size::Large => 40_000,
    }
}

/// One pair's mailbox: `seq` odd when a value is waiting, even once it has been taken.
#[derive(Debug, Default)]
struct Slot {
    seq: AtomicU64,
    value: AtomicU64,
}

/// Spins until `slot.seq` reads `want` (busy for a while, then yielding the processor).
fn wait_for(slot: &Slot, want: u64) {
    let mut spins = 0u32;
    while slot.seq.load(Ordering::Acquire) != want {
        if spins < 100 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// The value sent in round `r`.
fn payload(r: u64) -> u64 {
    mix(r ^ 0x7063)
}

/// Plays with `workers()` threads; the checksum is the wrapping sum of every value the consumers
/// received (each is checked against what was sent).
///
/// # Panics
/// If a consumer receives something other than what was sent.
pub fn run(size: Size) -> u64 {
    let total = rounds(size);
    let threads = workers();
    // Units: pairs (2p, 2p + 1), then a lone worker if the count is odd.
    let units = threads.div_ceil(2);
    let slots: Arc<Vec<PageAligned<Slot>>> =
        Arc::new((0..units).map(|_| PageAligned(Slot::default())).collect());
    let mut handles = Vec::new();
    for t in 0..threads {
        let slots = Arc::clone(&slots);
        let unit = t / 2;
        let alone = unit * 2 + 1 == threads;
        let consumer = t % 2 == 1;
        handles.push(spawn(move || {
            let slot = &slots[unit].0;
            let mut sum = 0u64;
            for (k, r) in (unit as u64..total).step_by(units).enumerate() {
                let k = k as u64;
                if alone || !consumer {
                    // Swaps, not stores: an atomic read-modify-write is how the release-consistent
                    // protocol learns that this page holds synchronisation variables (a plain
                    // `Release` store compiles to an ordinary `mov`). Same semantics otherwise.
                    slot.value.swap(payload(r), Ordering::Relaxed);
                    slot.seq.swap(2 * k + 1, Ordering::Release);
                }
                if alone || consumer {
                    wait_for(slot, 2 * k + 1);
                    let v = slot.value.load(Ordering::Relaxed);
                    assert_eq!(v, payload(r), "round {r}: consumer saw a wrong value");
                    sum = sum.wrapping_add(v);
                    slot.seq.swap(2 * k + 2, Ordering::Release);
                } else {
                    wait_for(slot, 2 * k + 2);
                }
            }
            sum
        }));
    }
    handles.into_iter().fold(0u64, |acc, h| acc.wrapping_add(h.join()))
}
