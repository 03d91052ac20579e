//! Placement policies, load reports, pinning and rebalancing on real clusters (one cluster per
//! test, each scenario in `tests/programs/check_placement.rs`). No test measures time: whether a policy
//! makes a program faster is for the benchmark (`rthreads-placement`, BENCHMARKS.md).

mod common;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_check_placement");

#[test]
fn least_loaded_avoids_busy_nodes_spreads_bursts_and_refills_the_node_that_finished() {
    let out = ok(&run_cluster(BIN, 3, &["least-loaded"], &[]));
    assert!(out.contains("burst of 4 with node 1 busy"), "{out}");
    assert!(out.contains("placement ok"), "{out}");
}

#[test]
fn local_first_from_the_environment_stays_home_until_busy_and_per_spawn_choices_override_it() {
    let out = ok(&run_cluster(BIN, 3, &["local-first"], &[("RTHREADS_PLACEMENT", "local-first")]));
    assert!(out.contains("round-robin per spawn"), "{out}");
    assert!(out.contains("placement ok"), "{out}");
}

#[test]
fn nodes_report_their_run_queue_length_and_cpu_use() {
    let out = ok(&run_cluster(BIN, 2, &["reports"], &[]));
    assert!(out.contains("node 1 busy: running 1"), "{out}");
    assert!(out.contains("placement ok"), "{out}");
}

#[test]
fn above_16_nodes_load_reports_reach_node_0_up_a_tree() {
    let out = ok(&run_cluster(BIN, 20, &["tree"], &[("RTHREADS_TREE_FANOUT", "2")]));
    assert!(
        out.contains("through the tree: node 19 running 1, node 18 running 1, node 9 running 1"),
        "{out}"
    );
    assert!(out.contains("their end reached node 0 too"), "{out}");
    assert!(out.contains("placement ok"), "{out}");
}

#[test]
fn rthreads_pin_puts_each_node_on_a_cpu_of_its_own() {
    // The CPUs this test may use; node i must get the (i mod k)-th.
    // SAFETY: an all-zero `cpu_set_t` is the empty set; sched_getaffinity writes one.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above, with the struct's own size.
    assert_eq!(unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) }, 0);
    // SAFETY: indices below CPU_SETSIZE.
    let allowed: Vec<usize> =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect();
    let out = ok(&run_cluster(BIN, 3, &["pin"], &[("RTHREADS_PIN", "1")]));
    for node in 0..3 {
        let want = format!("node {node} on cpus [{}], parallelism 1", allowed[node % allowed.len()]);
        assert!(out.contains(&want), "{want:?} in {out}");
    }
    assert!(out.contains("placement ok"), "{out}");
}

#[test]
fn rebalancing_at_yield_now_keeps_results_exact_and_leaves_no_claim_behind() {
    let out = ok(&run_cluster(BIN, 2, &["rebalance"], &[("RTHREADS_REBALANCE", "1")]));
    assert!(out.contains("threads moved:"), "{out}");
    assert!(out.contains("placement ok"), "{out}");
}

#[test]
fn bad_placement_settings_are_refused_with_a_clear_error() {
    let cases = [
        (
            "RTHREADS_PLACEMENT",
            "fastest",
            "unknown placement policy \"fastest\" (known: round-robin, least-loaded, local-first)",
        ),
        ("RTHREADS_REBALANCE", "yes", "RTHREADS_REBALANCE=yes: expected 0 or 1"),
        ("RTHREADS_PIN", "2", "RTHREADS_PIN=2: expected 0 or 1"),
    ];
    for (var, value, message) in cases {
        let out = run_cluster(BIN, 2, &["reports"], &[(var, value)]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {err}");
        assert!(err.contains("cannot start") && err.contains(message), "{var}={value}: {err}");
    }
}
