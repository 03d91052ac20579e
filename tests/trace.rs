//! `RTHREADS_TRACE` writes a Chrome trace-event file holding the events of a known small run, and
//! the heat map tool draws it.

mod common;

use common::*;

#[test]
fn a_trace_holds_the_faults_and_messages_of_a_known_run() {
    let dir = std::env::temp_dir().join(format!("rthreads-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trace.json");
    // check_stats: a thread on node 1 reads 64 pages written on node 0. The names checked below
    // are the sequentially consistent protocol's messages, so this run uses that protocol, and
    // read-ahead is off so that each page is one fault (the program checks that too).
    ok(&run_cluster(
        env!("CARGO_BIN_EXE_check_stats"),
        3,
        &[],
        &[
            ("RTHREADS_TRACE", path.to_str().unwrap()),
            ("RTHREADS_PROTOCOL", "sc"),
            ("RTHREADS_READ_AHEAD", "0"),
        ],
    ));
    let events: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let count = |pid: u64, name: &str| events.iter().filter(|e| e["pid"] == pid && e["name"] == name).count();
    assert!(count(1, "read fault") >= 64, "node 1's read faults");
    assert!(count(0, "receive read request") >= 64);
    assert!(count(0, "send grant") >= 64);
    assert!(count(1, "receive grant") >= 64);
    // Synchronisation waits are named by what they waited for: check_stats takes a lock managed
    // by node 0 from node 1 and runs a barrier over nodes 0 and 1.
    assert!(count(1, "lock wait") >= 1, "node 1's first lock waited for node 0");
    assert!(count(0, "barrier wait") + count(1, "barrier wait") >= 2);
    assert!(count(0, "join wait") >= 1);
    assert!(events.iter().any(|e| e["name"] == "thread start" && e["pid"] == 1));
    // Every fault has a duration and a page; nodes 0..3 all named.
    for e in events.iter().filter(|e| e["cat"] == "fault") {
        assert_eq!(e["ph"], "X");
        assert!(e["dur"].as_f64().is_some() && e["args"]["page"].as_u64().is_some(), "{e}");
    }
    for n in 0..3u64 {
        assert!(events.iter().any(|e| e["ph"] == "M" && e["pid"] == n), "node {n} is named");
    }
    // A read of page P on node 1 is answered by a grant of P sent by node 0 to node 1.
    let fault = events.iter().find(|e| e["pid"] == 1 && e["name"] == "read fault").unwrap();
    let page = &fault["args"]["page"];
    assert!(events.iter().any(|e| e["pid"] == 0
        && e["name"] == "send grant"
        && &e["args"]["page"] == page
        && e["args"]["peer"] == 1));

    let svg = dir.join("heat.svg");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rthreads-heatmap"))
        .args([path.to_str().unwrap(), svg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.contains("<svg") && svg.matches("<rect").count() > 20);
    std::fs::remove_dir_all(&dir).unwrap();
}
