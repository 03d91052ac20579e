//! The placement benchmark: the unbalanced Mandelbrot bands (`kernels::mandelbrot_bands`) under
//! each placement policy, side by side in one run, with the serial time measured in the same run.
//!
//! ```text
//! cargo build --release --bins
//! RTHREADS_PIN=1 RTHREADS_NODES=2 target/release/rthreads-placement [--size medium] [--seeds 5] [--k K]
//! ```
//! (`--help` says what each option does.)
//! `RTHREADS_PIN=1` pins node i to the (i mod k)-th CPU: an emulation of nodes on separate hosts.
//! Without it every node uses every CPU of this machine and placement cannot matter.
//!
//! For each seed (an order the bands are handed out in), the variants run one after the other:
//! - *in flight*: at most `K` bands run at a time (default: the cluster's parallelism), the next one
//!   spawned when one finishes, with round-robin, least-loaded and local-first placement;
//! - *all at once*: every band spawned round-robin, each calling `rthreads::yield_now` after every
//!   row, with rebalancing off and on.
//!
//! Every run's checksum must equal the serial one. The table gives the median, best and worst wall
//! time over the seeds, the ratio to round-robin with the same schedule, and the ideal time
//! (serial time over the number of nodes).

use std::time::Instant;

use clap::Parser;
use rthreads::Placement;
use rthreads::placement;
use rthreads_suite::kernels::mandelbrot_bands::{self, Outcome, Schedule};
use rthreads_suite::par::Size;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "rthreads-placement",
    version,
    about = "Unbalanced Mandelbrot bands under each placement policy, side by side",
    long_about = "The placement benchmark: the unbalanced Mandelbrot bands under each placement \
                  policy (round-robin, least-loaded, local-first; in flight and all at once, with \
                  and without rebalancing), with the serial time measured in the same run. Every \
                  run's checksum must equal the serial one; prints a markdown table of median, best \
                  and worst times over the seeds.\n\n\
                  Run it with RTHREADS_PIN=1 (node i pinned to the (i mod k)-th CPU, an emulation \
                  of nodes on separate hosts): without it every node uses every CPU of this \
                  machine and placement cannot matter. 2 nodes unless RTHREADS_NODES says \
                  otherwise.",
    after_help = "Example:\n  RTHREADS_PIN=1 RTHREADS_NODES=2 target/release/rthreads-placement --size medium --seeds 9"
)]
struct Cli {
    /// Problem size
    #[arg(long, value_enum, default_value_t = Size::Medium)]
    size: Size,
    /// Orders to hand the bands out in (each variant runs once per seed)
    #[arg(long, value_name = "N", default_value_t = 5)]
    seeds: u64,
    /// Bands in flight at once [default: the cluster's parallelism]
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u16).range(1..))]
    k: Option<u16>,
}

struct Variant {
    label: &'static str,
    schedule: Schedule,
    placement: Placement,
    rebalance: bool,
    /// The variant this one is compared with.
    baseline: usize,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[rthreads::main(nodes = 2)]
fn main() {
    let cli = Cli::parse();
    let (size, seeds) = (cli.size, cli.seeds);
    let nodes = rthreads::node_count();
    let k: usize = cli.k.map_or_else(|| rthreads::available_parallelism().unwrap().get(), usize::from);
    if std::env::var("RTHREADS_PIN").as_deref() != Ok("1") {
        eprintln!(
            "warning: RTHREADS_PIN is not 1: every node uses every CPU here, so placement cannot matter"
        );
    }
    let shape = mandelbrot_bands::shape(size);
    let loads = placement::loads();
    println!(
        "{nodes} nodes, CPUs per node {:?}, {}x{} points, cap {}, {} bands, {k} in flight, {seeds} seeds",
        loads.iter().map(|l| l.parallelism).collect::<Vec<_>>(),
        shape.width,
        shape.height,
        shape.cap,
        shape.bands
    );

    let t = Instant::now();
    let want = rthreads::Builder::new()
        .node(0)
        .spawn(move || mandelbrot_bands::serial(size))
        .unwrap()
        .join()
        .unwrap();
    let serial = t.elapsed().as_secs_f64();
    println!(
        "serial, one thread on node 0: {serial:.3} s; ideal on {nodes} nodes: {:.3} s",
        serial / nodes as f64
    );

    let in_flight = Schedule::InFlight(k);
    let all = Schedule::AllAtOnce { yields: true };
    let variants = [
        Variant {
            label: "in flight, round-robin",
            schedule: in_flight,
            placement: Placement::RoundRobin,
            rebalance: false,
            baseline: 0,
        },
        Variant {
            label: "in flight, least-loaded",
            schedule: in_flight,
            placement: Placement::LeastLoaded,
            rebalance: false,
            baseline: 0,
        },
        Variant {
            label: "in flight, local-first",
            schedule: in_flight,
            placement: Placement::LocalFirst,
            rebalance: false,
            baseline: 0,
        },
        Variant {
            label: "all at once, round-robin",
            schedule: all,
            placement: Placement::RoundRobin,
            rebalance: false,
            baseline: 3,
        },
        Variant {
            label: "all at once, round-robin + rebalancing",
            schedule: all,
            placement: Placement::RoundRobin,
            rebalance: true,
            baseline: 3,
        },
    ];
    let mut times = vec![Vec::new(); variants.len()];
    let mut moved = vec![0; variants.len()];
    let mut spread = vec![vec![0; nodes]; variants.len()];
    for seed in 0..seeds {
        let mut line = format!("seed {seed}:");
        for (i, v) in variants.iter().enumerate() {
            placement::set_rebalancing(v.rebalance);
            let t = Instant::now();
            let Outcome { checksum, placed, moved: m } =
                mandelbrot_bands::run(size, seed, v.schedule, v.placement);
            let wall = t.elapsed().as_secs_f64();
            placement::set_rebalancing(false);
            assert_eq!(checksum, want, "{} (seed {seed}) computed another image", v.label);
            times[i].push(wall);
            moved[i] += m;
            for (n, c) in placed.iter().enumerate() {
                spread[i][n] += c;
            }
            line += &format!(" {wall:.3}");
        }
        println!("{line}");
    }
    let refused: u64 = (0..nodes)
        .map(|n| {
            let (claimed, refused) =
                rthreads::Builder::new().node(n).spawn(placement::move_counts).unwrap().join().unwrap();
            let _ = claimed;
            refused
        })
        .sum();

    println!();
    println!(
        "| variant | median s | best s | worst s | vs round-robin | bands spawned per node | bands moved |"
    );
    println!("|---|---:|---:|---:|---:|---|---:|");
    for (i, v) in variants.iter().enumerate() {
        let m = median(&times[i]);
        let best = times[i].iter().copied().fold(f64::INFINITY, f64::min);
        let worst = times[i].iter().copied().fold(0.0, f64::max);
        println!(
            "| {} | {m:.3} | {best:.3} | {worst:.3} | {:.2} | {:?} | {} |",
            v.label,
            m / median(&times[v.baseline]),
            spread[i],
            moved[i]
        );
    }
    println!("| serial (1 thread, node 0) | {serial:.3} | | | | | |");
    println!("| ideal (serial / {nodes}) | {:.3} | | | | | |", serial / nodes as f64);
    if refused > 0 {
        println!(
            "\n{refused} moves claimed by the rebalancer were refused by rthreads::migrate (not available yet?)"
        );
    }
}
