//! `rthreads::sync` and `std::sync::atomic` across nodes: real clusters of local node processes
//! running the `sync_*` programs (one sub-test per test, so failures say which).

mod common;

use common::*;

/// Runs `bin` with `args` on `nodes` nodes, asserts success and that every line of `want` was
/// printed; returns stdout.
fn expect(bin: &str, nodes: usize, args: &[&str], want: &[&str]) -> String {
    let out = ok(&run_cluster(bin, nodes, args, &[]));
    for w in want {
        assert!(out.contains(w), "missing {w:?} in:\n{out}");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Mutex

#[test]
fn mutex_counter_is_exact_over_4_nodes() {
    expect(
        env!("CARGO_BIN_EXE_sync_mutex"),
        4,
        &["count"],
        &["mutex threads per node: [4, 4, 4, 4]", "mutex total = 160000", "count ok"],
    );
}

#[test]
fn mutex_protects_data_spanning_pages() {
    expect(env!("CARGO_BIN_EXE_sync_mutex"), 4, &["pages"], &["pages ok: 4096 elements each 200"]);
}

#[test]
fn mutex_poisoned_on_one_node_is_seen_and_cleared_on_others() {
    let out = run_cluster(env!("CARGO_BIN_EXE_sync_mutex"), 4, &["poison"], &[]);
    let stdout = ok(&out);
    for w in ["poison seen and cleared on node 0", "poison cleared on another node", "poison ok"] {
        assert!(stdout.contains(w), "missing {w:?} in:\n{stdout}");
    }
    // The panics were real panics, reported by the node they ran on.
    assert!(text(&out.stderr).contains("poisoning the mutex on node 1"), "{}", text(&out.stderr));
}

#[test]
fn mutex_try_lock_would_block_while_another_node_holds_it() {
    expect(
        env!("CARGO_BIN_EXE_sync_mutex"),
        4,
        &["try_lock"],
        &["try_lock: WouldBlock while node 1 holds it", "try_lock ok"],
    );
}

// ---------------------------------------------------------------------------------------------
// Condvar

#[test]
fn condvar_queue_loses_and_duplicates_nothing_over_3_nodes() {
    expect(
        env!("CARGO_BIN_EXE_sync_condvar"),
        3,
        &["queue"],
        &["queue: 100000 items (batches of 32)", "queue ok: 100000 items, none lost or duplicated"],
    );
}

#[test]
fn condvar_queue_with_slow_producers_makes_the_consumer_wait() {
    expect(
        env!("CARGO_BIN_EXE_sync_condvar"),
        3,
        &["slow"],
        &["queue: 2000 items (batches of 1)", "queue ok: 2000 items, none lost or duplicated"],
    );
}

#[test]
fn condvar_wait_timeout_times_out_or_is_notified() {
    expect(
        env!("CARGO_BIN_EXE_sync_condvar"),
        3,
        &["timeout"],
        &[
            "wait_timeout timed out on node 0",
            "wait_timeout timed out on node 1",
            "wait_timeout notified before the timeout",
            "wait_timeout_while ok",
            "timeout ok",
        ],
    );
}

#[test]
fn condvar_notify_all_and_notify_one_across_nodes() {
    expect(
        env!("CARGO_BIN_EXE_sync_condvar"),
        3,
        &["all"],
        &["notify_all woke 6 waiters, per node [2, 2, 2]", "notify_one passed 6 tokens", "notify ok"],
    );
}

// ---------------------------------------------------------------------------------------------
// Barrier

#[test]
fn barrier_64_threads_on_8_nodes_100_phases() {
    expect(
        env!("CARGO_BIN_EXE_sync_barrier"),
        8,
        &[],
        &[
            "threads per node: [8, 8, 8, 8, 8, 8, 8, 8]",
            "exactly one leader in each of 100 phases",
            "64 threads on 8 nodes saw every slot after each of 100 barriers",
            "barrier ok",
        ],
    );
}

#[test]
fn barrier_with_more_threads_than_nodes_on_2_nodes() {
    expect(
        env!("CARGO_BIN_EXE_sync_barrier"),
        2,
        &["7", "50"],
        &["exactly one leader in each of 50 phases", "barrier ok"],
    );
}

#[test]
fn barrier_through_a_tree_of_fan_out_2_under_both_protocols() {
    // 12 nodes with 2 children each: the barrier's arrivals combine over three levels before they
    // reach its manager, and the releases come back the same way.
    for protocol in ["sc", "lrc"] {
        let out = ok(&run_cluster(
            env!("CARGO_BIN_EXE_sync_barrier"),
            12,
            &["36", "30"],
            &[("RTHREADS_TREE_FANOUT", "2"), ("RTHREADS_PROTOCOL", protocol)],
        ));
        for w in [
            "exactly one leader in each of 30 phases",
            "36 threads on 12 nodes saw every slot after each of 30 barriers",
            "barrier ok",
        ] {
            assert!(out.contains(w), "{protocol}: missing {w:?} in:\n{out}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// mpsc

#[test]
fn mpsc_a_million_messages_from_4_nodes_in_order() {
    expect(
        env!("CARGO_BIN_EXE_sync_mpsc"),
        4,
        &["flood"],
        &[
            "flood: 1000000 messages from senders on nodes [0, 1, 2, 3]",
            "flood ok: 1000000 messages in order, none lost",
        ],
    );
}

#[test]
fn mpsc_messages_owning_heap_data() {
    expect(env!("CARGO_BIN_EXE_sync_mpsc"), 4, &["heap"], &["heap ok: 2000 messages with heap data"]);
}

#[test]
fn mpsc_sync_channel_rendezvous_and_backpressure_across_nodes() {
    expect(
        env!("CARGO_BIN_EXE_sync_mpsc"),
        4,
        &["bounded"],
        &[
            "sync_channel(0) is a rendezvous across nodes",
            "sync_channel(k) holds k messages, the sender waits beyond",
            "bounded ok",
        ],
    );
}

#[test]
fn mpsc_try_recv_empty_then_disconnected() {
    expect(env!("CARGO_BIN_EXE_sync_mpsc"), 4, &["try_recv"], &["try_recv ok"]);
}

#[test]
fn mpsc_recv_timeout() {
    expect(env!("CARGO_BIN_EXE_sync_mpsc"), 4, &["timeout"], &["recv_timeout timed out after", "timeout ok"]);
}

#[test]
fn mpsc_iterators_end_when_every_sender_is_gone() {
    expect(
        env!("CARGO_BIN_EXE_sync_mpsc"),
        4,
        &["iter"],
        &["iter ended after 300 messages", "try_iter ok", "iter ok"],
    );
}

#[test]
fn mpsc_send_error_once_the_receiver_is_dropped() {
    expect(env!("CARGO_BIN_EXE_sync_mpsc"), 4, &["send_error"], &["send_error ok"]);
}

#[test]
fn mpsc_receiver_moved_between_nodes() {
    expect(env!("CARGO_BIN_EXE_sync_mpsc"), 4, &["moved"], &["moved ok"]);
}

// ---------------------------------------------------------------------------------------------
// RwLock

#[test]
fn rwlock_readers_never_see_a_torn_write() {
    expect(env!("CARGO_BIN_EXE_sync_rwlock"), 4, &["torn"], &["torn: 1000 writes", "never torn", "torn ok"]);
}

/// The same under the release-consistent protocol, whatever the suite runs under. It caught a
/// race in the runtime: an acquire cleared the node's "stale copies" flag before closing the
/// copies, so another thread of the node skipped its own acquire and read a stale copy while it
/// was being dropped and refetched (most debug runs failed).
#[test]
fn rwlock_readers_never_see_a_torn_write_under_lrc() {
    let out =
        ok(&run_cluster(env!("CARGO_BIN_EXE_sync_rwlock"), 4, &["torn"], &[("RTHREADS_PROTOCOL", "lrc")]));
    assert!(out.contains("never torn") && out.contains("torn ok"), "{out}");
}

#[test]
fn rwlock_shared_readers_exclusive_writer_across_nodes() {
    expect(
        env!("CARGO_BIN_EXE_sync_rwlock"),
        4,
        &["shared"],
        &["readers share the lock across nodes; a writer waits for them", "shared ok"],
    );
}

#[test]
fn rwlock_poisoned_by_a_remote_writer_not_by_a_reader() {
    expect(env!("CARGO_BIN_EXE_sync_rwlock"), 4, &["poison"], &["poison ok"]);
}

// ---------------------------------------------------------------------------------------------
// Once, OnceLock

#[test]
fn once_runs_once_in_the_cluster() {
    expect(
        env!("CARGO_BIN_EXE_sync_once"),
        4,
        &["once"],
        &["once: 16 callers on 4 nodes, one run", "once ok"],
    );
}

#[test]
fn once_lock_initialised_once_in_the_cluster() {
    expect(
        env!("CARGO_BIN_EXE_sync_once"),
        4,
        &["once_lock"],
        &[
            "once_lock: 16 get_or_init on 4 nodes, one initialisation",
            "once_lock: one set out of 16 wins",
            "once_lock ok",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// std's own examples

#[test]
fn std_sync_doc_examples_run_on_a_cluster() {
    let out = expect(
        env!("CARGO_BIN_EXE_sync_std_examples"),
        4,
        &[],
        &[
            "example Mutex ok",
            "example Mutex::clear_poison ok",
            "example RwLock ok",
            "example RwLock::clear_poison ok",
            "example Condvar ok",
            "example Condvar::wait_timeout_while ok",
            "example Barrier::wait ok",
            "example Once ok",
            "example OnceLock::get_or_init ok",
            "example mpsc::SyncSender::try_send ok",
            "example mpsc::Receiver::recv_timeout ok",
            "example mpsc::Receiver::iter ok",
            "57 std examples ok",
        ],
    );
    let examples = out.lines().filter(|l| l.starts_with("example ") && l.ends_with(" ok")).count();
    assert_eq!(examples, 57, "{out}");
    // Output printed by the examples' threads on other nodes reached the terminal too.
    assert!(out.contains("Writer proceeds..."), "{out}");
    assert!(out.contains("Delayed for 2 seconds"), "{out}");
    assert!(out.contains("completed"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Atomics

#[test]
fn atomics_read_modify_write_is_exact_over_4_nodes() {
    expect(env!("CARGO_BIN_EXE_sync_atomics"), 4, &["rmw"], &["fetch_add total = 160000", "rmw ok"]);
}

#[test]
fn atomics_compare_exchange_claims_each_value_once() {
    expect(
        env!("CARGO_BIN_EXE_sync_atomics"),
        4,
        &["cas"],
        &["cas total = 32000, each value claimed once", "cas ok"],
    );
}

#[test]
fn atomics_release_acquire_flag_publishes_a_vec() {
    expect(
        env!("CARGO_BIN_EXE_sync_atomics"),
        4,
        &["handoff"],
        &["handoff: 20 rounds from node 1 to node 2, every element seen", "handoff ok"],
    );
}

#[test]
fn atomics_store_buffering_never_reads_both_zero() {
    expect(
        env!("CARGO_BIN_EXE_sync_atomics"),
        3,
        &["dekker", "1000"],
        &["dekker: 1000 rounds on nodes 1 and 2", "(0, 0) x0", "dekker ok"],
    );
}

#[test]
fn atomics_arc_counts_stay_exact_across_nodes() {
    expect(
        env!("CARGO_BIN_EXE_sync_atomics"),
        4,
        &["arc"],
        &["while held: strong 1617 weak 17", "arc ok: counts exact after clones and drops on 4 nodes"],
    );
}

#[test]
fn atomics_all_sub_tests_in_one_run() {
    expect(
        env!("CARGO_BIN_EXE_sync_atomics"),
        4,
        &[],
        &["rmw ok", "cas ok", "handoff ok", "dekker ok", "arc ok", "sync_atomics done"],
    );
}

// ---------------------------------------------------------------------------------------------
// Corner cases (a hang is reported as "HANG: ..." and exit code 3 by the program itself)

fn edge(sub: &str) {
    expect(env!("CARGO_BIN_EXE_sync_edge"), 4, &[sub], &[&format!("{sub} ok")]);
}

#[test]
fn edge_try_lock_after_a_causally_earlier_unlock_succeeds() {
    edge("causal_lock");
}

#[test]
fn edge_try_lock_after_an_unlock_signalled_by_a_message_succeeds() {
    edge("causal_lock_send");
}

#[test]
fn edge_sends_ordered_by_a_token_across_nodes_arrive_in_order() {
    edge("causal_send");
}

#[test]
fn edge_try_recv_after_a_causally_earlier_send_finds_it() {
    edge("causal_recv");
}

#[test]
fn edge_a_timed_out_waiter_does_not_swallow_notify_one() {
    edge("stale_timeout");
}

#[test]
fn edge_poisoning_while_waiting_or_queued() {
    edge("poison_wait");
}

#[test]
fn edge_objects_made_again_at_the_same_address_start_fresh() {
    edge("reuse");
}

#[test]
fn edge_once_lock_initialiser_panicking_on_another_node() {
    edge("once_lock_panic");
}

#[test]
fn edge_rendezvous_try_send_meets_a_remote_blocked_receiver() {
    edge("rendezvous_try_send");
}

#[test]
fn edge_disconnected_only_after_the_last_sender_clone() {
    edge("last_sender");
}

#[test]
fn edge_messages_queued_at_receiver_drop_are_dropped() {
    edge("drop_queued");
}

#[test]
fn edge_big_over_aligned_and_zero_sized_messages() {
    edge("big_messages");
}

#[test]
fn edge_objects_managed_by_a_node_that_no_longer_uses_them() {
    edge("foreign_home");
}

#[test]
fn edge_shared_condvar_with_a_static_mutex() {
    edge("static_mutex_condvar");
}

#[test]
fn edge_shared_condvar_with_a_mutex_on_the_stack() {
    edge("local_mutex_shared_condvar");
}

#[test]
fn edge_barrier_of_zero_is_a_barrier_of_one() {
    edge("barrier_zero");
}

#[test]
fn edge_a_barrier_for_2_used_by_6_threads_flat_and_through_a_chain_of_nodes() {
    edge("barrier_pairs");
    // Fan-out 1: nodes 3 → 2 → 1 → 0, so reports combine at every hop and releases of fewer
    // arrivals than a node reported travel down.
    let out = ok(&run_cluster(
        env!("CARGO_BIN_EXE_sync_edge"),
        4,
        &["barrier_pairs"],
        &[("RTHREADS_TREE_FANOUT", "1")],
    ));
    assert!(out.contains("barrier_pairs ok"), "{out}");
}

#[test]
fn edge_recv_timeout_racing_sends_loses_nothing() {
    edge("recv_timeout_race");
}

#[test]
fn edge_wait_timeout_racing_notifications_keeps_exclusion() {
    edge("wait_timeout_race");
}

#[test]
fn edge_mutex_and_condvar_managed_by_two_other_nodes() {
    edge("three_homes");
}

#[test]
fn sync_types_have_std_traits() {
    expect(
        env!("CARGO_BIN_EXE_sync_traits"),
        2,
        &[],
        &["held elsewhere: Mutex { data: <locked>, poisoned: false, .. }", "traits ok"],
    );
}
