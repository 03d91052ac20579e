//! The benchmark runner completes every kernel at 1, 2 and 4 nodes with the small size, and every
//! cluster result equals its `std::thread` run; the scale benchmark measures small clusters.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

#[test]
fn every_kernel_runs_at_1_2_4_nodes_and_matches_its_std_run() {
    let out_dir = std::env::temp_dir().join(format!("rthreads-bench-{}", std::process::id()));
    let tag = Tagged::new();
    let child = tag
        .command(env!("CARGO_BIN_EXE_rthreads-bench"))
        .args(["--size", "small", "--nodes", "1,2,4", "--out", out_dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(600));
    tag.assert_none_left(Duration::from_secs(10));
    let stdout = ok(&out);
    let csv = std::fs::read_to_string(out_dir.join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    let kernels = rthreads_suite::kernels::all();
    assert!(!kernels.is_empty());
    assert_eq!(rows.len(), kernels.len() * 3, "{csv}");
    assert!(rows.iter().all(|r| r.ends_with(",true")), "a result differs from its std run:\n{csv}");
    for k in &kernels {
        assert!(stdout.contains(k.name), "{stdout}");
    }
    for f in ["results.json", "speedup.svg", "messages.svg"] {
        let body = std::fs::read_to_string(out_dir.join(f)).unwrap();
        assert!(body.len() > 50, "{f} is empty");
    }
    std::fs::remove_dir_all(&out_dir).unwrap();
}

#[test]
fn the_scale_benchmark_measures_every_node_count_and_leaves_no_process() {
    // Two small clusters: a row each, with every figure present (the no-runtime floors of a barrier
    // and of a spawn + join too), the threads' sum exact, a gibibyte allocated on a node, and no process left behind (the runner checks, and so does this test).
    let tag = Tagged::new();
    let child = tag
        .command(env!("CARGO_BIN_EXE_rthreads-scale"))
        .args(["--nodes", "2,4", "--threads", "64", "--timeout", "120"])
        .env("SCALE_IDLE_MS", "300")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(300));
    tag.assert_none_left(Duration::from_secs(10));
    let stdout = ok(&out);
    for nodes in ["2", "4"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {nodes} |")))
            .unwrap_or_else(|| panic!("no row for {nodes} nodes:\n{stdout}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(cells.len(), 15, "{row}");
        assert_eq!(cells[10], "true", "the counter's sum: {row}");
        assert_eq!(cells[11], "true", "1 GiB allocated on a node: {row}");
        assert_eq!(cells[13], "0", "processes left: {row}");
        let idle: f64 = cells[4].parse().unwrap_or(-1.0);
        assert!((0.0..=100.0).contains(&idle), "idle CPU is a share of the machine: {row}");
        let floor: f64 = cells[6].parse().unwrap_or(0.0);
        assert!(floor > 0.0, "the raw floor of a barrier is measured: {row}");
        let floor: f64 = cells[8].parse().unwrap_or(0.0);
        assert!(floor > 0.0, "the raw floor of a spawn + join is measured: {row}");
        for (i, cell) in cells.iter().enumerate().filter(|&(i, _)| i != 10 && i != 11) {
            assert!(cell.parse::<f64>().is_ok_and(|v| v >= 0.0), "column {i} of {row}");
        }
    }
}
