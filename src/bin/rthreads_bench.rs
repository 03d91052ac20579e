//! The benchmark runner: runs every kernel on `std::thread` in one process and on rthreads over
//! 1, 2, 4, 8 local nodes (by default), checks each cluster result against the `std` run, and
//! prints a table per kernel; writes `results.csv`, `results.json`, `speedup.svg` and
//! `messages.svg` to the output folder.
//!
//! ```text
//! cargo run --release --bin rthreads-bench -- [--nodes 1,2,4,8] [--threads-per-node 1]
//!     [--size small|medium|large] [--bench a,b,...] [--out target/bench-results] [--list]
//! ```
//!
//! Speedup is the `std` run's wall time over the cluster run's (the `std` run uses
//! `threads-per-node` threads in one process); parallel efficiency is speedup / nodes. On a machine
//! with fewer cores than nodes, node counts above the core count measure protocol cost, not compute
//! scaling.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use rthreads_suite::kernels;

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
    fn nodes(&self) -> usize {
        self.get("nodes").parse().unwrap_or(1)
    }
    /// The sum of `key` over the run's nodes.
    fn total(&self, key: &str) -> f64 {
        (0..self.nodes()).map(|n| self.f(&format!("n{n}.{key}"))).sum()
    }
    fn max(&self, key: &str) -> f64 {
        (0..self.nodes()).map(|n| self.f(&format!("n{n}.{key}"))).fold(0.0, f64::max)
    }
}

struct Options {
    nodes: Vec<usize>,
    threads: usize,
    size: String,
    benches: Option<Vec<String>>,
    out: PathBuf,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        nodes: vec![1, 2, 4, 8],
        threads: 1,
        size: "small".into(),
        benches: None,
        out: PathBuf::from("target/bench-results"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--nodes" => {
                o.nodes = value()?
                    .split(',')
                    .map(|n| n.parse().map_err(|_| format!("bad node count {n}")))
                    .collect::<Result<_, _>>()?;
            }
            "--threads-per-node" => o.threads = value()?.parse().map_err(|_| "bad thread count")?,
            "--size" => o.size = value()?,
            "--bench" => o.benches = Some(value()?.split(',').map(str::to_owned).collect()),
            "--out" => o.out = PathBuf::from(value()?),
            "--list" => {
                for k in kernels::all() {
                    println!("{:<18} {}", k.name, k.about);
                }
                std::process::exit(0);
            }
            "-h" | "--help" => {
                println!(
                    "rthreads-bench [--nodes 1,2,4,8] [--threads-per-node 1] [--size small|medium|large] \
                     [--bench a,b] [--out DIR] [--list]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    Ok(o)
}

fn run_worker(kernel: &str, mode: &str, nodes: usize, o: &Options) -> Result<Run, String> {
    let worker = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("bench_worker");
    let out = Command::new(&worker)
        .args([kernel, mode, &o.size, &o.threads.to_string()])
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

/// A line chart as SVG: one polyline per series, x = node counts.
fn svg_chart(title: &str, y_label: &str, xs: &[usize], series: &[(String, Vec<f64>)], log_y: bool) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 420.0, 70.0, 50.0, 40.0, 170.0);
    let x_max = *xs.iter().max().unwrap_or(&1) as f64;
    let x_min = *xs.iter().min().unwrap_or(&1) as f64;
    let tf = |v: f64| if log_y { v.max(1.0).log10() } else { v };
    let y_max = series.iter().flat_map(|(_, v)| v.iter().copied().map(tf)).fold(1.0, f64::max) * 1.1;
    let px = |x: f64| left + (x - x_min) / (x_max - x_min).max(1.0) * (w - left - right);
    let py = |y: f64| h - bottom - tf(y) / y_max * (h - bottom - top);
    let colours = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
        "#17becf", "#000000", "#f0c000",
    ];
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n<text x='{}' y='22' font-size='15'>{title}</text>\n",
        left
    );
    let _ = writeln!(
        s,
        "<line x1='{left}' y1='{}' x2='{}' y2='{}' stroke='black'/><line x1='{left}' y1='{top}' x2='{left}' y2='{}' stroke='black'/>",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for &x in xs {
        let _ = writeln!(
            s,
            "<text x='{}' y='{}' text-anchor='middle'>{x}</text>",
            px(x as f64),
            h - bottom + 18.0
        );
    }
    let _ = writeln!(
        s,
        "<text x='{}' y='{}' text-anchor='middle'>nodes</text>",
        (left + w - right) / 2.0,
        h - 8.0
    );
    let _ =
        writeln!(s, "<text x='14' y='{}' transform='rotate(-90 14 {})'>{y_label}</text>", h / 2.0, h / 2.0);
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let label = if log_y { format!("{:.0}", 10f64.powf(v)) } else { format!("{v:.1}") };
        let y = h - bottom - v / y_max * (h - bottom - top);
        let _ = writeln!(s, "<text x='{}' y='{}' text-anchor='end'>{label}</text>", left - 6.0, y + 4.0);
        let _ = writeln!(s, "<line x1='{left}' y1='{y}' x2='{}' y2='{y}' stroke='#ddd'/>", w - right);
    }
    for (i, (name, ys)) in series.iter().enumerate() {
        let c = colours[i % colours.len()];
        let pts: Vec<String> =
            xs.iter().zip(ys).map(|(&x, &y)| format!("{:.1},{:.1}", px(x as f64), py(y))).collect();
        let _ =
            writeln!(s, "<polyline fill='none' stroke='{c}' stroke-width='2' points='{}'/>", pts.join(" "));
        let ly = top + 16.0 * i as f64;
        let _ = writeln!(
            s,
            "<rect x='{}' y='{}' width='12' height='3' fill='{c}'/><text x='{}' y='{}'>{name}</text>",
            w - right + 12.0,
            ly - 4.0,
            w - right + 30.0,
            ly
        );
    }
    s.push_str("</svg>\n");
    s
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rthreads-bench: {e}");
            std::process::exit(2);
        }
    };
    let chosen: Vec<_> = kernels::all()
        .into_iter()
        .filter(|k| o.benches.as_ref().is_none_or(|b| b.iter().any(|n| n == k.name)))
        .collect();
    if chosen.is_empty() {
        eprintln!("rthreads-bench: no kernel selected (try --list)");
        std::process::exit(2);
    }
    let total = chosen.len() * (1 + o.nodes.len());
    let mut done = 0;
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut rows: Vec<(String, Run, Run)> = Vec::new();
    for k in &chosen {
        let progress = |done: usize, what: &str| {
            let width = 30;
            let filled = done * width / total;
            eprint!(
                "\r[{}{}] {done}/{total} {:<40} {:>5.0}s",
                "#".repeat(filled),
                ".".repeat(width - filled),
                what,
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        };
        progress(done, &format!("{} (std)", k.name));
        let base = match run_worker(k.name, "std", 1, &o) {
            Ok(r) => r,
            Err(e) => {
                failures.push(e);
                done += 1 + o.nodes.len();
                continue;
            }
        };
        done += 1;
        for &n in &o.nodes {
            progress(done, &format!("{} ({n} nodes)", k.name));
            match run_worker(k.name, "cluster", n, &o) {
                Ok(r) => {
                    if r.get("checksum") != base.get("checksum") {
                        failures.push(format!(
                            "{} on {n} nodes: checksum {} differs from the std run's {}",
                            k.name,
                            r.get("checksum"),
                            base.get("checksum")
                        ));
                    }
                    rows.push((k.name.to_owned(), base.clone(), r));
                }
                Err(e) => failures.push(e),
            }
            done += 1;
        }
    }
    eprintln!();
    let mut csv = String::from(
        "kernel,nodes,threads,wall_s,std_wall_s,speedup,efficiency,read_faults,write_faults,msgs_per_node,\
         bytes_per_node,locks,barriers,fault_wait_s,sync_wait_s,peak_rss_mib_max,checksum_ok\n",
    );
    let mut json = String::from("[\n");
    for k in &chosen {
        let runs: Vec<&(String, Run, Run)> = rows.iter().filter(|r| r.0 == k.name).collect();
        if runs.is_empty() {
            continue;
        }
        println!(
            "\n{} — {}  (std, {} thread(s): {:.3} s)",
            k.name,
            k.about,
            o.threads,
            runs[0].1.f("wall_s")
        );
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
        for (_, base, r) in runs {
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
            let _ = writeln!(
                csv,
                "{},{},{},{:.6},{:.6},{:.4},{:.4},{},{},{:.1},{:.1},{},{},{:.6},{:.6},{:.1},{ok}",
                k.name,
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
            let per_node: Vec<String> = (0..r.nodes())
                .map(|i| {
                    let f = |key: &str| r.get(&format!("n{i}.{key}")).to_owned();
                    format!(
                        "{{\"node\":{i},\"read_faults\":{},\"write_faults\":{},\"msgs\":{},\"bytes\":{},\"locks\":{},\"barriers\":{},\"fault_wait_s\":{},\"sync_wait_s\":{},\"peak_rss_kib\":{}}}",
                        f("read_faults"),
                        f("write_faults"),
                        f("msgs"),
                        f("bytes"),
                        f("locks"),
                        f("barriers"),
                        f("fault_wait_s"),
                        f("sync_wait_s"),
                        f("rss_kib")
                    )
                })
                .collect();
            let _ = writeln!(
                json,
                "  {{\"kernel\":\"{}\",\"nodes\":{},\"threads\":{},\"wall_s\":{wall},\"std_wall_s\":{},\"speedup\":{speedup},\"checksum_ok\":{ok},\"per_node\":[{}]}},",
                k.name,
                r.nodes(),
                r.get("threads"),
                base.f("wall_s"),
                per_node.join(",")
            );
        }
    }
    if json.ends_with(",\n") {
        json.truncate(json.len() - 2);
        json.push('\n');
    }
    json.push_str("]\n");
    let xs = o.nodes.clone();
    let series = |f: &dyn Fn(&Run, &Run) -> f64| -> Vec<(String, Vec<f64>)> {
        chosen
            .iter()
            .map(|k| {
                let ys = xs
                    .iter()
                    .map(|&n| {
                        rows.iter()
                            .find(|(name, _, r)| name == k.name && r.nodes() == n)
                            .map_or(0.0, |(_, b, r)| f(b, r))
                    })
                    .collect();
                (k.name.to_owned(), ys)
            })
            .collect()
    };
    let speedup = svg_chart(
        "Speedup over the std::thread run",
        "speedup",
        &xs,
        &series(&|b, r| b.f("wall_s") / r.f("wall_s").max(1e-9)),
        false,
    );
    let messages = svg_chart(
        "Messages sent per node",
        "messages per node (log)",
        &xs,
        &series(&|_, r| r.total("msgs") / r.nodes() as f64),
        true,
    );
    let write = |name: &str, body: &str| {
        let p = o.out.join(name);
        if let Err(e) = std::fs::create_dir_all(&o.out).and_then(|()| std::fs::write(&p, body)) {
            eprintln!("rthreads-bench: cannot write {}: {e}", p.display());
        }
    };
    write("results.csv", &csv);
    write("results.json", &json);
    write("speedup.svg", &speedup);
    write("messages.svg", &messages);
    println!("\nwrote results.csv, results.json, speedup.svg, messages.svg to {}", o.out.display());
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        std::process::exit(1);
    }
}
