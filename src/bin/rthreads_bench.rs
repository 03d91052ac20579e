//! The benchmark runner: runs every kernel on `std::thread` in one process and on rthreads over
//! 1, 2, 4, 8 local nodes (by default), checks each cluster result against the `std` run, and
//! prints a table per kernel; writes `results.csv`, `results.json`, `speedup.svg` and
//! `messages.svg` to the output folder. `--replot` redraws the plots from a `results.csv`.
//!
//! ```text
//! cargo run --release --bin rthreads-bench -- [--nodes 1,2,4,8] [--threads-per-node 1]
//!     [--size small|medium|large] [--bench a,b,...] [--std-threads N] [--out target/bench-results]
//! cargo run --release --bin rthreads-bench -- --replot results.csv [--std-from other.csv] [--out DIR]
//! cargo run --release --bin rthreads-bench -- --list
//! ```
//!
//! Speedup is the `std` run's wall time over the cluster run's (the `std` run uses
//! `threads-per-node` threads in one process); parallel efficiency is speedup / nodes. Each kernel
//! also runs on `std::thread` with as many threads as this machine has CPUs (`--std-threads`):
//! what the hardware allows without a cluster, the dashed lines of the speedup plot. On a machine
//! with fewer cores than nodes, node counts above the core count measure protocol cost, not
//! compute scaling.
//!
//! Each run is `bench_worker` (next to this program) in a process of its own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::Parser;
use rthreads_suite::kernels;
use rthreads_suite::par::Size;
use rthreads_suite::plot::{self, ClusterPoint, KernelFigures};
use rthreads_suite::progress;
use serde::Serialize;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "rthreads-bench",
    version,
    about = "Run the benchmark kernels on std::thread and on rthreads clusters, side by side",
    long_about = "Run the benchmark kernels on std::thread and on rthreads clusters, side by side.\n\n\
                  Every kernel runs on std::thread in one process (the baseline: --threads-per-node \
                  threads), on std::thread with as many threads as this machine has CPUs, and on a \
                  local cluster of each node count; every cluster result is checked against the \
                  baseline's. Prints a table per kernel and writes results.csv, results.json, \
                  speedup.svg and messages.svg to --out. With --replot, only redraws the plots \
                  from a results.csv.",
    after_help = "Examples:\n  \
                  rthreads-bench --size medium --nodes 1,2,4,8\n  \
                  rthreads-bench --bench false_sharing,jacobi --nodes 2,4\n  \
                  rthreads-bench --replot target/bench-results/results.csv --out /tmp/plots"
)]
struct Cli {
    /// Node counts to run every kernel on
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_value = "1,2,4,8",
          value_parser = clap::value_parser!(u16).range(1..))]
    nodes: Vec<u16>,
    /// Threads on each node (and in the std::thread baseline)
    #[arg(long = "threads-per-node", value_name = "T", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Problem size of every kernel
    #[arg(long, value_enum, default_value_t = Size::Small)]
    size: Size,
    /// Run only these kernels (see --list)
    #[arg(long = "bench", value_name = "KERNEL,...", value_delimiter = ',')]
    benches: Option<Vec<String>>,
    /// Threads of the std::thread run that shows what the hardware allows [default: the CPUs
    /// this process may use; 0: no such run]
    #[arg(long, value_name = "T")]
    std_threads: Option<usize>,
    /// Folder the results and plots go to
    #[arg(long, value_name = "DIR", default_value = "target/bench-results")]
    out: PathBuf,
    /// Print the kernels and what each exercises, and exit
    #[arg(long)]
    list: bool,
    /// Run nothing: redraw speedup.svg and messages.svg from this results.csv
    #[arg(long, value_name = "CSV", conflicts_with_all = ["nodes", "threads", "size", "benches", "std_threads"])]
    replot: Option<PathBuf>,
    /// With --replot: take the std::thread runs (the dashed lines) from this results.csv instead
    #[arg(long, value_name = "CSV", requires = "replot")]
    std_from: Option<PathBuf>,
}

/// One worker run's `RESULT` line, as key/value pairs.
#[derive(Clone, Debug, Default)]
struct Run {
    fields: BTreeMap<String, String>,
}

impl Run {
    fn get(&self, k: &str) -> &str {
        self.fields.get(k).map_or("", String::as_str)
    }
    fn f(&self, k: &str) -> f64 {
        self.get(k).parse().unwrap_or(0.0)
    }
    fn u(&self, k: &str) -> u64 {
        self.get(k).parse().unwrap_or(0)
    }
    fn nodes(&self) -> usize {
        self.get("nodes").parse().unwrap_or(1)
    }
    fn threads(&self) -> usize {
        self.get("threads").parse().unwrap_or(1)
    }
    /// The sum of `key` over the run's nodes.
    fn total(&self, key: &str) -> f64 {
        (0..self.nodes()).map(|n| self.f(&format!("n{n}.{key}"))).sum()
    }
    fn max(&self, key: &str) -> f64 {
        (0..self.nodes()).map(|n| self.f(&format!("n{n}.{key}"))).fold(0.0, f64::max)
    }
}

/// A kernel's runs: the std::thread baseline, the std::thread run with the machine's CPUs (if
/// any), and the cluster runs.
struct Measured {
    kernel: &'static str,
    about: &'static str,
    base: Run,
    hw: Option<Run>,
    cluster: Vec<Run>,
}

/// One cluster run in `results.json`.
#[derive(Serialize)]
struct JsonRun<'a> {
    kernel: &'a str,
    nodes: usize,
    threads: usize,
    wall_s: f64,
    std_wall_s: f64,
    speedup: f64,
    checksum_ok: bool,
    /// Threads of the std::thread run with the machine's CPUs, and its wall time (null if none).
    std_hw_threads: Option<usize>,
    std_hw_wall_s: Option<f64>,
    per_node: Vec<JsonNode>,
}

/// One node's counters of a cluster run in `results.json`.
#[derive(Serialize)]
struct JsonNode {
    node: usize,
    read_faults: u64,
    write_faults: u64,
    msgs: u64,
    bytes: u64,
    locks: u64,
    barriers: u64,
    fault_wait_s: f64,
    sync_wait_s: f64,
    peak_rss_kib: u64,
}

/// Runs `bench_worker KERNEL MODE SIZE THREADS` on `nodes` nodes and returns its result line.
fn run_worker(kernel: &str, mode: &str, nodes: u16, threads: usize, size: Size) -> Result<Run, String> {
    let worker = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("bench_worker");
    let out = Command::new(&worker)
        .args([kernel, mode, size.name(), &threads.to_string()])
        .env("RTHREADS_NODES", nodes.to_string())
        .env_remove("RTHREADS_STATS")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", worker.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find(|l| l.starts_with("RESULT ")) else {
        return Err(format!(
            "{kernel} ({mode}, {nodes} nodes) failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    };
    let fields = line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok(Run { fields })
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

/// The header of `results.csv`. [`figures_from_csv`] reads columns by name, so it also reads files
/// without `std_hw_threads` and `std_hw_wall_s` (older runs have no std::thread run with the
/// machine's CPUs); `checksum_ok` stays last.
const CSV_HEADER: &str = "kernel,nodes,threads,wall_s,std_wall_s,speedup,efficiency,read_faults,write_faults,\
                          msgs_per_node,bytes_per_node,locks,barriers,fault_wait_s,sync_wait_s,\
                          peak_rss_mib_max,std_hw_threads,std_hw_wall_s,checksum_ok";

/// The rows of a `results.csv`, as maps from column name to value.
fn csv_rows(text: &str) -> Result<Vec<BTreeMap<String, String>>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().ok_or("empty file")?.split(',').map(str::trim).collect();
    for needed in ["kernel", "nodes", "threads", "wall_s", "std_wall_s", "msgs_per_node"] {
        if !header.contains(&needed) {
            return Err(format!("no column {needed:?}: not a results.csv of rthreads-bench"));
        }
    }
    Ok(lines
        .map(|l| {
            header.iter().zip(l.split(',')).map(|(k, v)| ((*k).to_owned(), v.trim().to_owned())).collect()
        })
        .collect())
}

/// What the plots show, from the rows of a `results.csv`; the std::thread runs come from
/// `std_rows` (the same rows, or another run's).
fn figures_from_csv(
    rows: &[BTreeMap<String, String>],
    std_rows: &[BTreeMap<String, String>],
) -> Vec<KernelFigures> {
    let num = |r: &BTreeMap<String, String>, k: &str| r.get(k).and_then(|v| v.parse::<f64>().ok());
    let mut figures: Vec<KernelFigures> = Vec::new();
    for r in rows {
        let kernel = r.get("kernel").cloned().unwrap_or_default();
        let (Some(nodes), Some(threads), Some(wall), Some(base)) =
            (num(r, "nodes"), num(r, "threads"), num(r, "wall_s"), num(r, "std_wall_s"))
        else {
            continue;
        };
        let point = ClusterPoint {
            nodes: nodes as usize,
            threads: threads as usize,
            speedup: base / wall.max(1e-9),
            msgs_per_node: num(r, "msgs_per_node").unwrap_or(0.0),
        };
        match figures.iter_mut().find(|f| f.kernel == kernel) {
            Some(f) => f.cluster.push(point),
            None => figures.push(KernelFigures { kernel, cluster: vec![point], std: Vec::new() }),
        }
    }
    for f in &mut figures {
        let Some(r) = std_rows.iter().find(|r| r.get("kernel") == Some(&f.kernel)) else { continue };
        let (Some(nodes), Some(threads), Some(base)) =
            (num(r, "nodes"), num(r, "threads"), num(r, "std_wall_s"))
        else {
            continue;
        };
        if let (Some(hw_threads), Some(hw_wall)) = (num(r, "std_hw_threads"), num(r, "std_hw_wall_s")) {
            let per_node = (threads / nodes.max(1.0)).round().max(1.0) as usize;
            f.std = vec![(per_node, 1.0), (hw_threads as usize, base / hw_wall.max(1e-9))];
        }
    }
    figures
}

/// Writes `body` to `dir/name`, creating `dir`.
fn write(dir: &Path, name: &str, body: &str) -> Result<(), String> {
    let p = dir.join(name);
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&p, body))
        .map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// Draws both plots of `figures` into `dir`, each with its note of where the figures come from.
fn draw(figures: &[KernelFigures], notes: [&str; 2], dir: &Path) -> Result<(), String> {
    let speedup = plot::speedup_svg(figures, "Speedup over the std::thread baseline", notes[0])?;
    let messages = plot::messages_svg(figures, "Messages sent per node", notes[1])?;
    write(dir, "speedup.svg", &speedup)?;
    write(dir, "messages.svg", &messages)
}

/// `--replot`: the plots of an earlier run.
fn replot(csv: &Path, std_from: Option<&Path>, out: &Path) -> Result<(), String> {
    let read = |p: &Path| -> Result<Vec<BTreeMap<String, String>>, String> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        csv_rows(&text).map_err(|e| format!("{}: {e}", p.display()))
    };
    let rows = read(csv)?;
    let std_rows = match std_from {
        Some(p) => read(p)?,
        None => rows.clone(),
    };
    let name = |p: &Path| p.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let note = name(csv);
    let speedup_note = match std_from {
        Some(p) => format!("{note}; std::thread runs from {}", name(p)),
        None => note.clone(),
    };
    let figures = figures_from_csv(&rows, &std_rows);
    if figures.is_empty() {
        return Err(format!("{}: no run to plot", csv.display()));
    }
    draw(&figures, [&speedup_note, &note], out)?;
    println!("wrote speedup.svg, messages.svg to {}", out.display());
    Ok(())
}

/// Runs every chosen kernel in every configuration; returns what was measured and what failed.
fn measure(cli: &Cli, chosen: &[kernels::Kernel], hw_threads: Option<usize>) -> (Vec<Measured>, Vec<String>) {
    let per_kernel = 1 + usize::from(hw_threads.is_some()) + cli.nodes.len();
    let bar = progress::bar((chosen.len() * per_kernel) as u64, "");
    let threads = usize::from(cli.threads);
    let mut failures = Vec::new();
    let mut measured = Vec::new();
    for k in chosen {
        bar.set_message(format!("{} (std::thread, {threads})", k.name));
        let base = match run_worker(k.name, "std", 1, threads, cli.size) {
            Ok(r) => r,
            Err(e) => {
                failures.push(e);
                bar.inc(per_kernel as u64);
                continue;
            }
        };
        bar.inc(1);
        let hw = hw_threads.and_then(|t| {
            bar.set_message(format!("{} (std::thread, {t})", k.name));
            let r = run_worker(k.name, "std", 1, t, cli.size);
            bar.inc(1);
            match r {
                Ok(r) if r.get("checksum") == base.get("checksum") => Some(r),
                Ok(r) => {
                    failures.push(format!(
                        "{} on std::thread with {t} threads: checksum {} differs from the baseline's {}",
                        k.name,
                        r.get("checksum"),
                        base.get("checksum")
                    ));
                    None
                }
                Err(e) => {
                    failures.push(e);
                    None
                }
            }
        });
        let mut cluster = Vec::new();
        for &n in &cli.nodes {
            bar.set_message(format!("{} ({n} nodes)", k.name));
            match run_worker(k.name, "cluster", n, threads, cli.size) {
                Ok(r) => {
                    if r.get("checksum") != base.get("checksum") {
                        failures.push(format!(
                            "{} on {n} nodes: checksum {} differs from the std run's {}",
                            k.name,
                            r.get("checksum"),
                            base.get("checksum")
                        ));
                    }
                    cluster.push(r);
                }
                Err(e) => failures.push(e),
            }
            bar.inc(1);
        }
        measured.push(Measured { kernel: k.name, about: k.about, base, hw, cluster });
    }
    bar.finish_and_clear();
    (measured, failures)
}

/// Prints the table of one kernel and adds its rows to the CSV and the JSON records.
fn report<'a>(m: &'a Measured, threads: u16, csv: &mut String, json: &mut Vec<JsonRun<'a>>) {
    let base = &m.base;
    let hw = match &m.hw {
        Some(h) => format!("; {} threads: {:.3} s", h.threads(), h.f("wall_s")),
        None => String::new(),
    };
    println!("\n{} — {}  (std, {threads} thread(s): {:.3} s{hw})", m.kernel, m.about, base.f("wall_s"));
    println!(
        "{:>5} {:>9} {:>7} {:>6} {:>9} {:>9} {:>10} {:>11} {:>7} {:>8} {:>8} {:>7} {:>7} {:>8} {:>5}",
        "nodes",
        "wall s",
        "speedup",
        "eff",
        "rd-fault",
        "wr-fault",
        "msgs/node",
        "bytes/node",
        "locks",
        "barriers",
        "compute%",
        "fault%",
        "sync%",
        "rss MiB",
        "ok"
    );
    for r in &m.cluster {
        let n = r.nodes() as f64;
        let wall = r.f("wall_s");
        let speedup = base.f("wall_s") / wall.max(1e-9);
        let thread_time = wall * r.f("threads");
        let ok = r.get("checksum") == base.get("checksum");
        let fault_pct = 100.0 * r.total("fault_wait_s") / thread_time.max(1e-9);
        let sync_pct = 100.0 * r.total("sync_wait_s") / thread_time.max(1e-9);
        // Approximate: the main thread's wait in `join` counts as synchronisation too.
        let compute_pct = (100.0 - fault_pct - sync_pct).max(0.0);
        println!(
            "{:>5} {:>9.3} {:>7.2} {:>6.2} {:>9.0} {:>9.0} {:>10.0} {:>11.0} {:>7.0} {:>8.0} {:>7.1}% {:>6.1}% {:>6.1}% {:>8.1} {:>5}",
            r.nodes(),
            wall,
            speedup,
            speedup / n,
            r.total("read_faults"),
            r.total("write_faults"),
            r.total("msgs") / n,
            r.total("bytes") / n,
            r.total("locks"),
            r.total("barriers"),
            compute_pct,
            fault_pct,
            sync_pct,
            mib(r.max("rss_kib")),
            if ok { "yes" } else { "NO" }
        );
        let (hw_threads, hw_wall) = match &m.hw {
            Some(h) => (h.threads().to_string(), format!("{:.6}", h.f("wall_s"))),
            None => (String::new(), String::new()),
        };
        let _ = writeln!(
            csv,
            "{},{},{},{:.6},{:.6},{:.4},{:.4},{},{},{:.1},{:.1},{},{},{:.6},{:.6},{:.1},{hw_threads},{hw_wall},{ok}",
            m.kernel,
            r.nodes(),
            r.get("threads"),
            wall,
            base.f("wall_s"),
            speedup,
            speedup / n,
            r.total("read_faults"),
            r.total("write_faults"),
            r.total("msgs") / n,
            r.total("bytes") / n,
            r.total("locks"),
            r.total("barriers"),
            r.total("fault_wait_s"),
            r.total("sync_wait_s"),
            mib(r.max("rss_kib"))
        );
        json.push(JsonRun {
            kernel: m.kernel,
            nodes: r.nodes(),
            threads: r.threads(),
            wall_s: wall,
            std_wall_s: base.f("wall_s"),
            speedup,
            checksum_ok: ok,
            std_hw_threads: m.hw.as_ref().map(Run::threads),
            std_hw_wall_s: m.hw.as_ref().map(|h| h.f("wall_s")),
            per_node: (0..r.nodes())
                .map(|i| {
                    let key = |k: &str| format!("n{i}.{k}");
                    JsonNode {
                        node: i,
                        read_faults: r.u(&key("read_faults")),
                        write_faults: r.u(&key("write_faults")),
                        msgs: r.u(&key("msgs")),
                        bytes: r.u(&key("bytes")),
                        locks: r.u(&key("locks")),
                        barriers: r.u(&key("barriers")),
                        fault_wait_s: r.f(&key("fault_wait_s")),
                        sync_wait_s: r.f(&key("sync_wait_s")),
                        peak_rss_kib: r.u(&key("rss_kib")),
                    }
                })
                .collect(),
        });
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match bench(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rthreads-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn bench(cli: &Cli) -> Result<ExitCode, String> {
    if cli.list {
        for k in kernels::all() {
            println!("{:<18} {}", k.name, k.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(csv) = &cli.replot {
        replot(csv, cli.std_from.as_deref(), &cli.out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let chosen: Vec<_> = kernels::all()
        .into_iter()
        .filter(|k| cli.benches.as_ref().is_none_or(|b| b.iter().any(|n| n == k.name)))
        .collect();
    if chosen.is_empty() {
        return Err("no kernel selected (try --list)".into());
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let hw_threads = Some(cli.std_threads.unwrap_or(cpus)).filter(|&t| t > usize::from(cli.threads));
    let started = Instant::now();
    let (measured, failures) = measure(cli, &chosen, hw_threads);
    let mut csv = format!("{CSV_HEADER}\n");
    let mut json = Vec::new();
    for m in &measured {
        report(m, cli.threads, &mut csv, &mut json);
    }
    let json = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())? + "\n";
    write(&cli.out, "results.csv", &csv)?;
    write(&cli.out, "results.json", &json)?;
    let rows = csv_rows(&csv)?;
    let note = format!("size {}, {} thread(s) per node", cli.size.name(), cli.threads);
    draw(&figures_from_csv(&rows, &rows), [&note, &note], &cli.out)?;
    println!("\nwrote results.csv, results.json, speedup.svg, messages.svg to {}", cli.out.display());
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for f in &failures {
        eprintln!("FAILED: {f}");
    }
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn replots_old_and_new_csv_files() {
        let old = "kernel,nodes,threads,wall_s,std_wall_s,speedup,efficiency,read_faults,write_faults,\
                   msgs_per_node,bytes_per_node,locks,barriers,fault_wait_s,sync_wait_s,peak_rss_mib_max,checksum_ok\n\
                   matmul,1,1,2.0,1.0,0.5,0.5,0,0,0.0,0.0,0,0,0,0,56.9,true\n\
                   matmul,2,2,1.0,1.0,1.0,0.5,9220,3,9226.0,19021342.5,0,0,1.7,2.7,94.3,true\n";
        let rows = csv_rows(old).unwrap();
        let f = figures_from_csv(&rows, &rows);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].cluster.len(), 2);
        assert_eq!((f[0].cluster[1].threads, f[0].cluster[1].speedup), (2, 1.0));
        assert!(f[0].std.is_empty(), "an old file has no std::thread run with more threads");
        let new = format!(
            "{CSV_HEADER}\nmatmul,2,2,1.0,1.0,1.0,0.5,9220,3,9226.0,1.5,0,0,1.7,2.7,94.3,2,0.5,true\n"
        );
        let std_rows = csv_rows(&new).unwrap();
        let f = figures_from_csv(&rows, &std_rows);
        assert_eq!(f[0].std, [(1, 1.0), (2, 2.0)]);
        assert!(csv_rows("a,b\n1,2\n").unwrap_err().contains("not a results.csv"));
    }
}
