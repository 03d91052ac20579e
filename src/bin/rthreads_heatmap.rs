//! Draws a page heat map from an rthreads trace: pages (rows) by time (columns), each cell coloured
//! by how many faults hit that page in that slice of time, with the node that faulted most as the
//! hue. Shows at a glance which pages move, when, and between whom (false sharing is a row that
//! stays hot on two nodes at once).
//!
//! `rthreads-heatmap trace.json heatmap.svg [columns]` (make the trace with
//! `RTHREADS_TRACE=trace.json`; `--help` says more).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Parser;

const HUES: [u32; 8] = [0, 210, 120, 30, 280, 180, 330, 60];

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "rthreads-heatmap",
    version,
    about = "Draw a page heat map (pages by time, coloured by faults) from an rthreads trace",
    long_about = "Draw a page heat map from an rthreads trace: pages (rows) by time (columns), \
                  each cell coloured by how many faults hit that page in that slice of time, with \
                  the node that faulted most as the hue. Make the trace with \
                  RTHREADS_TRACE=trace.json.",
    after_help = "Example:\n  RTHREADS_TRACE=trace.json ./app && rthreads-heatmap trace.json heat.svg"
)]
struct Cli {
    /// The trace (Chrome trace-event JSON, as RTHREADS_TRACE writes it)
    trace: PathBuf,
    /// The SVG file to write
    out: PathBuf,
    /// Slices of time (columns of the map)
    #[arg(default_value_t = 120, value_parser = clap::value_parser!(u16).range(1..))]
    columns: u16,
}

fn main() {
    let cli = Cli::parse();
    let trace = cli.trace.display();
    let cols = usize::from(cli.columns);
    let text = std::fs::read_to_string(&cli.trace).unwrap_or_else(|e| {
        eprintln!("rthreads-heatmap: cannot read {trace}: {e}");
        std::process::exit(1)
    });
    let events: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_else(|e| {
        eprintln!("rthreads-heatmap: {trace} is not a trace: {e}");
        std::process::exit(1)
    });
    // (page, time, node) of every fault.
    let faults: Vec<(u64, f64, u64)> = events
        .iter()
        .filter(|e| e["cat"] == "fault")
        .filter_map(|e| Some((e["args"]["page"].as_u64()?, e["ts"].as_f64()?, e["pid"].as_u64()?)))
        .collect();
    if faults.is_empty() {
        eprintln!("rthreads-heatmap: no faults in {trace}");
        std::process::exit(1);
    }
    let t0 = faults.iter().map(|f| f.1).fold(f64::INFINITY, f64::min);
    let t1 = faults.iter().map(|f| f.1).fold(f64::NEG_INFINITY, f64::max).max(t0 + 1.0);
    let pages: Vec<u64> = {
        let mut p: Vec<u64> = faults.iter().map(|f| f.0).collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    let row: BTreeMap<u64, usize> = pages.iter().enumerate().map(|(i, &p)| (p, i)).collect();
    // cell -> per-node counts
    let mut cells: BTreeMap<(usize, usize), BTreeMap<u64, u32>> = BTreeMap::new();
    for &(page, ts, node) in &faults {
        let c = (((ts - t0) / (t1 - t0)) * (cols as f64 - 1.0)).round() as usize;
        *cells.entry((row[&page], c)).or_default().entry(node).or_default() += 1;
    }
    let max = cells.values().map(|m| m.values().sum::<u32>()).max().unwrap_or(1);
    let cell_w = 6.0;
    let cell_h = (600.0 / pages.len() as f64).clamp(2.0, 14.0);
    let (left, top) = (120.0, 40.0);
    let (w, h) = (left + cols as f64 * cell_w + 160.0, top + pages.len() as f64 * cell_h + 50.0);
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='11'>\n\
         <rect width='100%' height='100%' fill='white'/>\n\
         <text x='{left}' y='20' font-size='14'>Faults per page over time ({} faults, {} pages, {:.1} ms)</text>\n",
        faults.len(),
        pages.len(),
        (t1 - t0) / 1e3
    );
    for ((r, c), by_node) in &cells {
        let n: u32 = by_node.values().sum();
        let (&top_node, _) = by_node.iter().max_by_key(|e| *e.1).expect("non-empty");
        let hue = HUES[top_node as usize % HUES.len()];
        let light = 90.0 - 55.0 * f64::from(n) / f64::from(max);
        let _ = writeln!(
            svg,
            "<rect x='{:.1}' y='{:.1}' width='{cell_w}' height='{cell_h:.1}' fill='hsl({hue},80%,{light:.0}%)'/>",
            left + *c as f64 * cell_w,
            top + *r as f64 * cell_h
        );
    }
    let step = (pages.len() / 25).max(1);
    for (i, p) in pages.iter().enumerate().step_by(step) {
        let _ = writeln!(
            svg,
            "<text x='{}' y='{:.1}' text-anchor='end'>page {p}</text>",
            left - 4.0,
            top + (i as f64 + 0.8) * cell_h
        );
    }
    let _ = writeln!(
        svg,
        "<text x='{}' y='{}' text-anchor='middle'>time →</text>",
        left + cols as f64 * cell_w / 2.0,
        h - 15.0
    );
    let nodes: std::collections::BTreeSet<u64> = faults.iter().map(|f| f.2).collect();
    for (i, n) in nodes.iter().enumerate() {
        let hue = HUES[*n as usize % HUES.len()];
        let y = top + 16.0 * i as f64;
        let x = left + cols as f64 * cell_w + 16.0;
        let _ = writeln!(
            svg,
            "<rect x='{x}' y='{}' width='12' height='12' fill='hsl({hue},80%,50%)'/><text x='{}' y='{}'>faults on node {n}</text>",
            y - 10.0,
            x + 18.0,
            y
        );
    }
    svg.push_str("</svg>\n");
    if let Err(e) = std::fs::write(&cli.out, svg) {
        eprintln!("rthreads-heatmap: cannot write {}: {e}", cli.out.display());
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
