//! Issue 8's acceptance tests for scoped threads and migration: real clusters of local node
//! processes (each test its own processes; the suite runs them again under `RTHREADS_PROTOCOL=lrc`).

mod common;

use common::*;

#[test]
fn scoped_threads_on_other_nodes_read_and_write_the_parents_stack() {
    let out = run_cluster(env!("CARGO_BIN_EXE_check_scope"), 4, &[], &[]);
    let stdout = ok(&out);
    assert!(stdout.contains("main's stack: equal to std: true, nodes used: [0, 1, 2, 3]"), "{stdout}");
    assert!(stdout.contains("node 2's stack: equal to std: true, nodes used: [0, 1, 2, 3]"), "{stdout}");
    assert!(stdout.contains("nested: [2, 3, 4, 1] [100, 101, 102, 103]"), "{stdout}");
    assert!(stdout.contains("unjoined panic: Some(\"a scoped thread panicked\")"), "{stdout}");
    assert!(stdout.contains("joined panic: Some(\"joined boom\")"), "{stdout}");
    assert!(stdout.contains("private stack: [1, 1, 1, 1, 1, 1, 1, 1]"), "{stdout}");
    // The unjoined panic was reported where it happened.
    assert!(text(&out.stderr).contains("scoped boom"), "{}", text(&out.stderr));
}

#[test]
fn a_migrating_thread_keeps_its_locals_stack_references_and_heap() {
    let out = run_cluster(env!("CARGO_BIN_EXE_check_migrate"), 3, &[], &[]);
    let stdout = ok(&out);
    for line in [
        "thread: trail [0, 1, 2, 0, 1], intact: true, name kept: true",
        "thread from node 2: trail [2, 0, 1, 2, 0], intact: true, name kept: true",
        "main went to node 1 and back to 0 with 7",
        "panic after a move: Some(\"boom after moving to node 1\")",
        "to node 99: InvalidInput",
        "from a std thread: Unsupported: rthreads::migrate: only a thread started by rthreads",
        "counter after 120 moves: 120",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
}

#[test]
fn a_stack_overflow_in_the_shared_space_is_reported() {
    let out = run_cluster(env!("CARGO_BIN_EXE_check_overflow"), 2, &[], &[("RUST_BACKTRACE", "0")]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("rthreads: a thread has overflowed its stack"), "{stderr}");
    assert!(!text(&out.stdout).contains("unreachable"));
}
