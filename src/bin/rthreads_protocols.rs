//! Protocol comparison: every benchmark kernel on the same cluster under the sequentially
//! consistent protocol and under release consistency (and, with `--prefetch K`, release
//! consistency with prefetch), side by side in one run; checks that every run's checksum is the
//! same, and prints a markdown table of time, messages and bytes, and which protocol wins.
//!
//! ```text
//! cargo build --release --bins && target/release/rthreads-protocols [--nodes 4] [--size medium]
//!     [--reps 3] [--bench a,b] [--prefetch 4] [--fs-work 2,1000,10000]
//! ```
//! `--fs-work` adds rows of `false_sharing` with that many steps of local work between two updates
//! of the shared page (`RTHREADS_FS_WORK`; one step is a few nanoseconds, the kernel's default 2).
//! Runs are interleaved (sc, lrc, sc, lrc, ...) and the median wall time of `--reps` runs is
//! reported, so drifts of a noisy machine hit both protocols alike.

use std::collections::BTreeMap;
use std::process::Command;

use clap::Parser;
use rthreads_suite::kernels;
use rthreads_suite::par::Size;
use rthreads_suite::progress;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "rthreads-protocols",
    version,
    about = "Every benchmark kernel under the sc and lrc coherence protocols, side by side",
    long_about = "Protocol comparison: every benchmark kernel on the same cluster under the \
                  sequentially consistent protocol (sc) and under release consistency (lrc), and \
                  with --prefetch under lrc with prefetch, in one run. Runs are interleaved (sc, \
                  lrc, sc, lrc, ...) and the median wall time of --reps runs is reported, so drifts \
                  of a noisy machine hit every protocol alike. Checks that every run's checksum is \
                  the same and prints a markdown table of time, messages and bytes, and which \
                  protocol wins. bench_worker must be next to this program.",
    after_help = "Example:\n  target/release/rthreads-protocols --nodes 2 --bench none --fs-work 2,1000,10000"
)]
struct Opts {
    /// Nodes of the cluster
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    nodes: u16,
    /// Problem size of the kernels
    #[arg(long, value_enum, default_value_t = Size::Medium)]
    size: Size,
    /// Runs of each kernel under each protocol (the median is reported)
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    reps: u16,
    /// Run only these kernels (`none`: only the --fs-work rows)
    #[arg(long = "bench", value_name = "KERNEL,...", value_delimiter = ',')]
    benches: Option<Vec<String>>,
    /// Add a column of lrc with this prefetch (RTHREADS_PREFETCH)
    #[arg(long, value_name = "K")]
    prefetch: Option<u16>,
    /// Add rows of false_sharing with this much local work between two updates of the shared
    /// page (RTHREADS_FS_WORK; one step is a few nanoseconds, the kernel's default 2)
    #[arg(long = "fs-work", value_name = "W,...", value_delimiter = ',')]
    fs_work: Vec<u64>,
}

/// One configuration: a label and the environment that selects it.
struct Config {
    label: String,
    env: Vec<(&'static str, String)>,
}

#[derive(Default, Clone)]
struct Sample {
    wall: Vec<f64>,
    msgs: f64,
    bytes: f64,
    faults: f64,
    checksum: String,
}

/// A row of the table: a kernel, and the environment it needs beyond the protocol's.
struct Row {
    label: String,
    kernel: &'static str,
    env: Vec<(&'static str, String)>,
}

fn run(row: &Row, o: &Opts, c: &Config) -> Result<BTreeMap<String, String>, String> {
    let kernel = row.kernel;
    let worker = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("bench_worker");
    let mut cmd = Command::new(&worker);
    cmd.args([kernel, "cluster", o.size.name(), "1"]).env("RTHREADS_NODES", o.nodes.to_string());
    for (k, v) in c.env.iter().chain(&row.env) {
        cmd.env(k, v);
    }
    let out = cmd.output().map_err(|e| format!("cannot run {}: {e}", worker.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("RESULT ")).ok_or_else(|| {
        format!("{kernel} under {} failed: {}\n{}", c.label, out.status, String::from_utf8_lossy(&out.stderr))
    })?;
    Ok(line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.into(), v.into()))
        .collect())
}

fn total(r: &BTreeMap<String, String>, key: &str, nodes: usize) -> f64 {
    (0..nodes).map(|n| r.get(&format!("n{n}.{key}")).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)).sum()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let o = Opts::parse();
    let nodes = usize::from(o.nodes);
    let mut configs = vec![
        Config { label: "sc".into(), env: vec![("RTHREADS_PROTOCOL", "sc".into())] },
        Config { label: "lrc".into(), env: vec![("RTHREADS_PROTOCOL", "lrc".into())] },
    ];
    if let Some(k) = o.prefetch {
        configs.push(Config {
            label: format!("lrc+prefetch {k}"),
            env: vec![("RTHREADS_PROTOCOL", "lrc".into()), ("RTHREADS_PREFETCH", k.to_string())],
        });
    }
    let mut chosen: Vec<Row> = kernels::all()
        .into_iter()
        .filter(|k| o.benches.as_ref().is_none_or(|b| b.iter().any(|n| n == k.name)))
        .map(|k| Row { label: k.name.into(), kernel: k.name, env: Vec::new() })
        .collect();
    for w in &o.fs_work {
        chosen.push(Row {
            label: format!("false_sharing, work {w}"),
            kernel: "false_sharing",
            env: vec![("RTHREADS_FS_WORK", w.to_string())],
        });
    }
    println!(
        "{} nodes, size {}, median of {} interleaved runs each; msgs and bytes are totals over all nodes\n",
        o.nodes,
        o.size.name(),
        o.reps
    );
    let mut head = String::from("| kernel |");
    let mut rule = String::from("|---|");
    for c in &configs {
        head += &format!(" {0} s | {0} msgs | {0} MiB |", c.label);
        rule += "---:|---:|---:|";
    }
    head += " lrc/sc time | sc/lrc msgs | winner |";
    rule += "---:|---:|---|";
    println!("{head}\n{rule}");
    let mut failed = false;
    let bar = progress::bar((chosen.len() * usize::from(o.reps) * configs.len()) as u64, "");
    for k in &chosen {
        let mut samples: Vec<Sample> = vec![Sample::default(); configs.len()];
        let mut error = None;
        'reps: for _ in 0..o.reps {
            for (i, c) in configs.iter().enumerate() {
                bar.set_message(format!("{} under {}", k.label, c.label));
                let r = run(k, &o, c);
                bar.inc(1);
                match r {
                    Ok(r) => {
                        let s = &mut samples[i];
                        s.wall.push(r.get("wall_s").and_then(|v| v.parse().ok()).unwrap_or(f64::NAN));
                        s.msgs = total(&r, "msgs", nodes);
                        s.bytes = total(&r, "bytes", nodes);
                        s.faults = total(&r, "read_faults", nodes) + total(&r, "write_faults", nodes);
                        s.checksum = r.get("checksum").cloned().unwrap_or_default();
                    }
                    Err(e) => {
                        error = Some(e);
                        break 'reps;
                    }
                }
            }
        }
        if let Some(e) = error {
            bar.suspend(|| {
                println!("| {} | failed: {} |", k.label, e.lines().next().unwrap_or(""));
                eprintln!("{e}");
            });
            failed = true;
            continue;
        }
        let same = samples.iter().all(|s| s.checksum == samples[0].checksum);
        if !same {
            failed = true;
        }
        let mut line = format!("| {} |", k.label);
        for s in &samples {
            line += &format!(" {:.3} | {:.0} | {:.1} |", median(&s.wall), s.msgs, s.bytes / (1 << 20) as f64);
        }
        let (sc, lrc) = (median(&samples[0].wall), median(&samples[1].wall));
        let winner = if !same {
            "CHECKSUMS DIFFER"
        } else if lrc < sc * 0.9 {
            "lrc"
        } else if sc < lrc * 0.9 {
            "sc"
        } else {
            "tie (within 10 %)"
        };
        line += &format!(
            " {:.2} | {:.1} | {winner} |",
            lrc / sc.max(1e-9),
            samples[0].msgs / samples[1].msgs.max(1.0)
        );
        bar.suspend(|| println!("{line}"));
    }
    bar.finish_and_clear();
    if failed {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Opts::command().debug_assert();
    }
}
