//! Chaos run: every benchmark kernel, on 4 nodes, while one node is killed (SIGKILL), stopped
//! (SIGSTOP) past the failure bound, or cut off the network (its link in a network namespace goes
//! down). Checks that every surviving node reports the lost node and exits, and that nothing hangs.
//!
//! ```text
//! cargo build --release --bins && target/release/rthreads-chaos [--kernels a,b] [--harms kill,stop,cut]
//!     [--size medium] [--delay-ms 400] [--failure-timeout 2]
//! ```
//! (`--help` says what each option does.)
//! `cut` needs root and `ip` (iproute2); it is skipped with a reason otherwise. Prints one line per
//! kernel and harm; exit code 1 if any run hung or a survivor did not report.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rthreads_suite::kernels;
use rthreads_suite::par::Size;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "rthreads-chaos",
    version,
    about = "Harm one node of a 4-node cluster during every benchmark kernel, and check the others stop",
    long_about = "Chaos run: every benchmark kernel on 4 nodes while node 2 is killed (SIGKILL), \
                  stopped (SIGSTOP) past the failure bound, or cut off the network (its link in a \
                  network namespace goes down). Checks that every surviving node reports the lost \
                  node and exits, and that nothing hangs or is left behind. Prints one line per \
                  kernel and harm; exit code 1 if any run failed.\n\n\
                  `cut` needs root and `ip` (iproute2); it is skipped with a reason otherwise. \
                  bench_worker and the rthreads launcher must be next to this program \
                  (cargo build --release --bins).",
    after_help = "Example:\n  target/release/rthreads-chaos --kernels jacobi,matmul --harms kill,stop"
)]
struct Opts {
    /// Kernels to run [default: all of them]
    #[arg(long, value_name = "KERNEL,...", value_delimiter = ',')]
    kernels: Option<Vec<String>>,
    /// What to do to node 2
    #[arg(long, value_name = "HARM,...", value_delimiter = ',', value_enum, default_value = "kill,stop,cut")]
    harms: Vec<Harm>,
    /// Problem size of the kernels
    #[arg(long, value_enum, default_value_t = Size::Medium)]
    size: Size,
    /// Milliseconds between the start of a run and the harm
    #[arg(long = "delay-ms", value_name = "MS", default_value_t = 400)]
    delay_ms: u64,
    /// Seconds of silence after which the nodes declare a peer lost (RTHREADS_FAILURE_TIMEOUT)
    #[arg(long, value_name = "SECONDS", default_value = "2")]
    failure_timeout: String,
}

/// What happens to the victim node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Harm {
    /// SIGKILL
    Kill,
    /// SIGSTOP, past the failure timeout
    Stop,
    /// Its link goes down (network namespaces; needs root)
    Cut,
}

impl Harm {
    fn name(self) -> &'static str {
        match self {
            Harm::Kill => "kill",
            Harm::Stop => "stop",
            Harm::Cut => "cut",
        }
    }
}

impl Opts {
    fn kernels(&self) -> Vec<String> {
        self.kernels.clone().unwrap_or_else(|| kernels::all().iter().map(|k| k.name.to_owned()).collect())
    }

    fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms)
    }
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe().expect("own path").with_file_name(name)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Four namespaced hosts on a bridge (see tests/common/netns.rs for the same set-up).
struct Hosts {
    names: Vec<String>,
    addrs: Vec<String>,
    id: String,
}

impl Hosts {
    fn new(n: usize) -> Result<Hosts, String> {
        let id = format!("rc{}", std::process::id() % 100_000);
        let mut h = Hosts { names: vec![format!("{id}br")], addrs: Vec::new(), id: id.clone() };
        ip(&["netns", "add", &h.names[0]])?;
        ip(&["-n", &h.names[0], "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &h.names[0], "link", "set", "br0", "up"])?;
        let third = (std::process::id() % 250) as u8;
        for i in 0..n {
            let ns = format!("{id}n{i}");
            let (v, p) = (format!("{id}v{i}"), format!("{id}p{i}"));
            ip(&["netns", "add", &ns])?;
            h.names.push(ns.clone());
            ip(&["link", "add", &v, "type", "veth", "peer", "name", &p])?;
            ip(&["link", "set", &v, "netns", &ns])?;
            ip(&["link", "set", &p, "netns", &h.names[0]])?;
            let addr = format!("10.251.{third}.{}", i + 1);
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &v])?;
            ip(&["-n", &ns, "link", "set", &v, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &h.names[0], "link", "set", &p, "master", "br0"])?;
            ip(&["-n", &h.names[0], "link", "set", &p, "up"])?;
            h.addrs.push(addr);
        }
        Ok(h)
    }

    fn hosts(&self) -> String {
        self.names[1..].join(",")
    }

    fn cut(&self, i: usize) -> Result<(), String> {
        ip(&["-n", &self.names[i + 1], "link", "set", &format!("{}v{i}", self.id), "down"])
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Pid of the process of node `node` among the descendants of `root` (by its environment).
fn node_pid(tag: &str, node: u16) -> Option<u32> {
    let needles = [format!("RTHREADS_CHAOS_TAG={tag}"), format!("RTHREADS_NODE_ID={node}")];
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
        let env = std::fs::read(e.path().join("environ")).ok()?;
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        needles.iter().all(|n| vars.contains(&n.as_bytes())).then_some(pid)
    })
}

fn tagged(tag: &str) -> Vec<u32> {
    let needle = format!("RTHREADS_CHAOS_TAG={tag}");
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let env = std::fs::read(e.path().join("environ")).ok()?;
            let zombie = std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| s.contains(") Z "));
            (!zombie && env.split(|&b| b == 0).any(|v| v == needle.as_bytes())).then_some(pid)
        })
        .collect()
}

struct Outcome {
    verdict: &'static str,
    secs: f64,
    detail: String,
}

fn wait(mut child: Child, limit: Duration) -> (Option<i32>, String, bool) {
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let (code, hung) = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break (s.code(), false);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (code, reader.join().unwrap_or_default(), hung)
}

fn judge(code: Option<i32>, err: &str, hung: bool, secs: f64, nodes: u16) -> Outcome {
    if hung {
        return Outcome { verdict: "HUNG", secs, detail: "no exit within 30 s".into() };
    }
    if code == Some(0) {
        return Outcome {
            verdict: "finished first",
            secs,
            detail: "the kernel ended before the harm; raise BENCH_REPEAT".into(),
        };
    }
    let mut missing = Vec::new();
    if !err.contains("node 0: lost node 2") {
        missing.push("node 0".to_owned());
    }
    for n in (1..nodes).filter(|&n| n != 2) {
        let says = err.contains(&format!("node {n}: stopping: node 2 was lost"))
            || err.contains(&format!("node {n}: lost node 2"));
        if !says {
            missing.push(format!("node {n}"));
        }
    }
    if code == Some(3) && missing.is_empty() {
        let why = err.lines().find(|l| l.contains("node 0: lost node 2")).unwrap_or("").trim();
        let why = why.split("lost node 2: ").nth(1).unwrap_or(why).split(';').next().unwrap_or("");
        Outcome { verdict: "ok", secs, detail: format!("every survivor reported; node 0: {why}") }
    } else {
        Outcome { verdict: "FAILED", secs, detail: format!("exit {code:?}, silent: {}", missing.join(" ")) }
    }
}

fn run_local(kernel: &str, harm: Harm, o: &Opts, tag: &str) -> Outcome {
    let worker = sibling("bench_worker");
    let child = Command::new(&worker)
        .args([kernel, "cluster", o.size.name(), "1"])
        .env("RTHREADS_NODES", "4")
        .env("RTHREADS_FAILURE_TIMEOUT", &o.failure_timeout)
        .env("BENCH_REPEAT", "100000")
        .env("RTHREADS_CHAOS_TAG", tag)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting bench_worker");
    std::thread::sleep(o.delay());
    let Some(victim) = node_pid(tag, 2) else {
        let (code, err, hung) = wait(child, Duration::from_secs(30));
        return judge(code, &err, hung, 0.0, 4);
    };
    let sig = if harm == Harm::Kill { libc::SIGKILL } else { libc::SIGSTOP };
    let t = Instant::now();
    // SAFETY: signalling a node process this program started.
    unsafe { libc::kill(victim as i32, sig) };
    let (code, err, hung) = wait(child, Duration::from_secs(30));
    let secs = t.elapsed().as_secs_f64();
    // SAFETY: as above; harmless if it is gone.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    judge(code, &err, hung, secs, 4)
}

fn run_cut(kernel: &str, o: &Opts, tag: &str, hosts: &Hosts, rsh: &Path) -> Outcome {
    let port = 20_000 + (std::process::id() % 20_000) as u16 + (kernel.len() as u16 * 7);
    let child = Command::new(sibling("rthreads"))
        .args(["run", "-n", "4", "--hosts", &hosts.hosts(), "--rsh", &rsh.to_string_lossy()])
        .args(["--coordinator", &format!("{}:{port}", hosts.addrs[0]), "--"])
        .arg(sibling("bench_worker"))
        .args([kernel, "cluster", o.size.name(), "1"])
        .env("RTHREADS_FAILURE_TIMEOUT", &o.failure_timeout)
        .env("RTHREADS_BENCH_REPEAT", "100000")
        .env("RTHREADS_CHAOS_TAG", tag)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the launcher");
    std::thread::sleep(o.delay() + Duration::from_millis(300));
    let t = Instant::now();
    if let Err(e) = hosts.cut(2) {
        let _ = wait(child, Duration::from_secs(1));
        return Outcome { verdict: "FAILED", secs: 0.0, detail: e };
    }
    let (code, err, hung) = wait(child, Duration::from_secs(30));
    let secs = t.elapsed().as_secs_f64();
    // Restore the link for the next kernel.
    let _ = ip(&["-n", &hosts.names[3], "link", "set", &format!("{}v2", hosts.id), "up"]);
    judge(code, &err, hung, secs, 4)
}

fn main() {
    let o = Opts::parse();
    let mut failed = 0;
    let mut netns: Option<Result<(Hosts, PathBuf), String>> = None;
    println!("{:<18} {:<5} {:<15} {:>8}  detail", "kernel", "harm", "outcome", "stop s");
    for k in &o.kernels() {
        for &harm in &o.harms {
            let h = harm.name();
            let tag = format!("{}-{k}-{h}", std::process::id());
            let out = match harm {
                Harm::Kill | Harm::Stop => run_local(k, harm, &o, &tag),
                Harm::Cut => {
                    let env = netns.get_or_insert_with(|| {
                        // SAFETY: geteuid has no preconditions.
                        if unsafe { libc::geteuid() } != 0 {
                            return Err("not root".into());
                        }
                        let hosts = Hosts::new(4)?;
                        let rsh = std::env::temp_dir().join(format!("{}-rsh", hosts.id));
                        std::fs::write(&rsh, "#!/bin/sh\nexec ip netns exec \"$1\" sh -c \"$2\"\n")
                            .map_err(|e| e.to_string())?;
                        std::fs::set_permissions(&rsh, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                            .map_err(|e| e.to_string())?;
                        Ok((hosts, rsh))
                    });
                    match env {
                        Ok((hosts, rsh)) => run_cut(k, &o, &tag, hosts, rsh),
                        Err(e) => Outcome {
                            verdict: "skipped",
                            secs: 0.0,
                            detail: format!("cut needs namespaces: {e}"),
                        },
                    }
                }
            };
            // Nothing of the run may be left.
            std::thread::sleep(Duration::from_millis(200));
            let left = tagged(&tag);
            for &p in &left {
                // SAFETY: killing leftovers of this program's own runs.
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
            }
            let verdict = if left.is_empty() { out.verdict } else { "LEFT PROCESSES" };
            if matches!(verdict, "HUNG" | "FAILED" | "LEFT PROCESSES") {
                failed += 1;
            }
            println!("{k:<18} {h:<5} {verdict:<15} {:>8.2}  {}", out.secs, out.detail);
        }
    }
    if failed > 0 {
        println!("{failed} run(s) failed");
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
