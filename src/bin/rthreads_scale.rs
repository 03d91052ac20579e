//! `rthreads-scale`: what a cluster costs as it grows (issue 18). For each node count, starts
//! `scale_worker` (next to this program) on a local cluster of that many nodes and prints one row:
//! start-up (launch to the first line of `main`), idle resident memory of a node, how busy the
//! machine's CPUs are while the cluster idles (one second), one barrier over
//! all nodes (and, next to it, the floor of the same exchange between plain processes), a remote
//! spawn + join (and the floor of its four hand-offs between plain threads), a thousand threads with a shared counter, whether a node can
//! allocate 1 GiB, shutdown (`main`'s end to the last process gone), and any process left behind.
//!
//! ```text
//! cargo run --release --bin rthreads-scale -- [--nodes 4,16,64,256] [--threads 1024] [--timeout 300]
//! ```
//!
//! On one machine every node is a process of it: with more nodes than CPUs the figures measure
//! the runtime's own costs under heavy oversubscription, which is what start-up, idle memory and
//! the failure detector must survive.

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "rthreads-scale",
    version,
    about = "Measure start-up, idle memory, barrier, spawn+join and shutdown against node count",
    after_help = "Example:\n  rthreads-scale --nodes 4,16,64 --threads 256"
)]
struct Cli {
    /// Node counts to start a cluster of, one after the other
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_value = "4,16,64,256",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    nodes: Vec<u16>,
    /// Threads of the many-threads run (spread over the nodes)
    #[arg(long, default_value_t = 1024)]
    threads: u64,
    /// Seconds a cluster may take before it is stopped and reported as failed
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// (internal) Run as one process of the raw barrier floor, talking to this address
    #[arg(long, hide = true, value_name = "ADDR")]
    raw_child: Option<String>,
    /// (internal) Run as the far process of the raw spawn floor, talking to this address
    #[arg(long, hide = true, value_name = "ADDR")]
    raw_spawn_child: Option<String>,
}

/// The floor of a remote spawn + join on this machine, in µs: the same four hand-offs between
/// blocked threads and the same OS thread per spawn, with no runtime. This process's main thread
/// writes a byte on a loopback TCP connection to a second process (the spawn message), where a
/// thread asleep in `read` (the service thread) passes it through a channel to a thread asleep on
/// it (a waiting carrier), which writes it back (the end message), starts the next waiting thread
/// and ends (the carrier pool: one fresh OS thread per spawn, made after the end is sent); here a
/// thread asleep in `read` (this node's service thread) passes it through a channel to the main
/// thread, asleep on it (`join`). Each hand-off wakes a sleeping thread, as in the runtime; the
/// mean of `rounds` after one to warm up.
fn raw_spawn_us(rounds: u32) -> Result<f64, String> {
    use std::io::Write;
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?.to_string();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(&exe)
        .arg("--raw-spawn-child")
        .arg(&addr)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start a raw process: {e}"))?;
    let measured = (|| -> std::io::Result<f64> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut reader = s.try_clone()?;
        let (tx, rx) = std::sync::mpsc::channel::<u8>();
        // This node's "service thread": every byte read goes to the waiting main thread.
        let service = std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            while reader.read_exact(&mut byte).is_ok() && tx.send(byte[0]).is_ok() {}
        });
        let mut once = || -> std::io::Result<()> {
            s.write_all(&[1])?;
            rx.recv_timeout(Duration::from_secs(30)).map(drop).map_err(std::io::Error::other)
        };
        once()?;
        let t = Instant::now();
        for _ in 0..rounds.max(1) {
            once()?;
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds.max(1));
        s.shutdown(std::net::Shutdown::Both)?;
        let _ = service.join();
        Ok(us)
    })();
    if measured.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    measured.map_err(|e| format!("the raw spawn floor: {e}"))
}

/// The far process of the raw spawn floor: a reading thread hands each byte through a channel to
/// the waiting carrier, which writes it back, starts its successor and ends.
fn raw_spawn_child(addr: &str) -> ExitCode {
    let Ok(s) = std::net::TcpStream::connect(addr) else { return ExitCode::FAILURE };
    let _ = s.set_nodelay(true);
    let Ok(mut reader) = s.try_clone() else { return ExitCode::FAILURE };
    let (tx, rx) = std::sync::mpsc::channel::<u8>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || raw_carrier(rx, s, done_tx));
    let mut byte = [0u8; 1];
    while reader.read_exact(&mut byte).is_ok() && tx.send(byte[0]).is_ok() {}
    drop(tx);
    let _ = done_rx.recv();
    ExitCode::SUCCESS
}

/// One waiting carrier of the raw spawn floor: one byte back, then a fresh thread takes its place.
fn raw_carrier(
    rx: std::sync::mpsc::Receiver<u8>,
    mut s: std::net::TcpStream,
    done: std::sync::mpsc::Sender<()>,
) {
    use std::io::Write;
    let Ok(b) = rx.recv() else {
        let _ = done.send(());
        return;
    };
    if s.write_all(&[b]).is_err() {
        let _ = done.send(());
        return;
    }
    std::thread::spawn(move || raw_carrier(rx, s, done));
}

/// The floor a barrier over `nodes` processes meets on this machine, in µs per round: `nodes - 1`
/// plain processes, each asleep in a blocking `read` on a loopback TCP connection to this one; a
/// round writes one byte to each and reads one byte back from each (what a barrier managed by one
/// node costs at least: one message to and from every other node, each waking a sleeping process),
/// with no runtime at all. Measured right after the cluster of the same size, so the two figures
/// are side by side.
fn raw_barrier_us(nodes: u16, rounds: u32) -> Result<f64, String> {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?.to_string();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let children: Vec<_> = (1..nodes)
        .map(|_| Command::new(&exe).arg("--raw-child").arg(&addr).stdin(Stdio::null()).spawn())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot start a raw process: {e}"))?;
    let mut children = children;
    let mut peers: Vec<TcpStream> = Vec::with_capacity(children.len());
    // Every process connects within 60 s, or the measurement is given up (and they are stopped).
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while peers.len() < children.len() {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                peers.push(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                for c in &mut children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(format!("{} of {} raw processes connected: {e}", peers.len(), children.len()));
            }
        }
    }
    let rounds = rounds.max(1);
    let mut byte = [0u8; 1];
    let mut round = |peers: &mut Vec<TcpStream>| -> std::io::Result<()> {
        for p in peers.iter_mut() {
            p.write_all(&[1])?;
        }
        for p in peers.iter_mut() {
            p.read_exact(&mut byte)?;
        }
        Ok(())
    };
    // A process that stops answering ends the measurement (a read times out) instead of hanging it.
    let measured = peers
        .iter()
        .try_for_each(|p| p.set_read_timeout(Some(Duration::from_secs(30))))
        .and_then(|()| round(&mut peers))
        .and_then(|()| {
            let t = Instant::now();
            for _ in 0..rounds {
                round(&mut peers)?;
            }
            Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds))
        });
    // Closing the connections ends the processes; one that does not go is stopped.
    drop(peers);
    for mut c in children {
        if measured.is_err() {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
    measured.map_err(|e| format!("the raw floor: {e}"))
}

/// One process of the raw floor: answers every byte with a byte until the connection ends.
fn raw_child(addr: &str) -> ExitCode {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return ExitCode::FAILURE };
    let _ = s.set_nodelay(true);
    let mut byte = [0u8; 1];
    while s.read_exact(&mut byte).is_ok() {
        if s.write_all(&byte).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// Nanoseconds since the Unix epoch.
fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Processes whose environment holds `SCALE_TAG=tag`.
fn tagged(tag: &str) -> usize {
    let needle = format!("SCALE_TAG={tag}\0");
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .count()
}

/// One cluster's figures, or why it failed.
fn run(worker: &Path, nodes: u16, threads: u64, timeout: Duration) -> Result<Vec<(String, String)>, String> {
    let tag = format!("{}-{nodes}", std::process::id());
    let t0 = now_ns();
    let mut child = Command::new(worker)
        .env("RTHREADS_NODES", nodes.to_string())
        .env("SCALE_T0", t0.to_string())
        .env("SCALE_TAG", &tag)
        .env("SCALE_THREADS", threads.to_string())
        .env_remove("RTHREADS_STATS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", worker.display()))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let exited = now_ns();
    // Every node process must be gone soon after node 0.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = tagged(&tag);
    while left > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = tagged(&tag);
    }
    let gone = now_ns();
    let (stdout, stderr) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
    let Some(status) = status else {
        return Err(format!("no result within {timeout:?} (stopped); {left} processes left; {tail}"));
    };
    let Some(line) = stdout.lines().find(|l| l.starts_with("RESULT ")) else {
        return Err(format!("{status}; {left} processes left; {tail}"));
    };
    let mut fields: Vec<(String, String)> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let end: u128 =
        fields.iter().find(|(k, _)| k == "end_ns").and_then(|(_, v)| v.parse().ok()).unwrap_or(exited);
    let last = if left == 0 { gone.max(exited) } else { exited };
    fields.push(("shutdown_s".into(), format!("{:.3}", last.saturating_sub(end) as f64 / 1e9)));
    fields.push(("exit_ok".into(), status.success().to_string()));
    fields.push(("left".into(), left.to_string()));
    fields.push(("total_s".into(), format!("{:.2}", exited.saturating_sub(t0) as f64 / 1e9)));
    Ok(fields)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(addr) = &cli.raw_child {
        return raw_child(addr);
    }
    if let Some(addr) = &cli.raw_spawn_child {
        return raw_spawn_child(addr);
    }
    let worker = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("scale_worker"),
        Err(e) => {
            eprintln!("rthreads-scale: {e}");
            return ExitCode::FAILURE;
        }
    };
    let columns = [
        ("startup_s", "start-up s"),
        ("idle_rss_kib_median", "idle RSS KiB (median)"),
        ("idle_rss_kib_max", "idle RSS KiB (max)"),
        ("idle_cpu_pct", "idle CPU %"),
        ("barrier_us", "barrier µs"),
        ("raw_barrier_us", "raw floor µs"),
        ("spawn_join_us", "spawn+join µs"),
        ("raw_spawn_us", "raw spawn floor µs"),
        ("hello_s", "threads s"),
        ("hello_ok", "sum exact"),
        ("gib_ok", "1 GiB on a node"),
        ("shutdown_s", "shutdown s"),
        ("left", "processes left"),
        ("total_s", "total s"),
    ];
    println!("| nodes | {} |", columns.map(|(_, h)| h).join(" | "));
    println!("|---:|{}", "---:|".repeat(columns.len()));
    let mut failed = false;
    for &nodes in &cli.nodes {
        match run(&worker, nodes, cli.threads, Duration::from_secs(cli.timeout)) {
            Ok(mut fields) => {
                let rounds = std::env::var("SCALE_BARRIERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
                let raw = raw_barrier_us(nodes, rounds)
                    .map_or_else(|e| format!("failed: {e}"), |us| format!("{us:.1}"));
                fields.push(("raw_barrier_us".into(), raw));
                let spawns = std::env::var("SCALE_SPAWNS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
                let raw =
                    raw_spawn_us(spawns).map_or_else(|e| format!("failed: {e}"), |us| format!("{us:.1}"));
                fields.push(("raw_spawn_us".into(), raw));
                let get = |k: &str| fields.iter().find(|(f, _)| f == k).map_or("-", |(_, v)| v.as_str());
                println!("| {nodes} | {} |", columns.map(|(k, _)| get(k)).join(" | "));
                failed |= get("hello_ok") != "true"
                    || get("gib_ok") != "true"
                    || get("left") != "0"
                    || get("exit_ok") != "true";
            }
            Err(e) => {
                println!("| {nodes} | failed: {e} |");
                failed = true;
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
