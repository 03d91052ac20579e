//! Chaos run: every benchmark kernel, on 4 nodes, while one node is killed (SIGKILL), stopped
//! (SIGSTOP) past the failure bound, or cut off the network (its link in a network namespace goes
//! down). Checks that every surviving node reports the lost node and exits, and that nothing hangs.
//!
//! ```text
//! cargo build --release --bins && target/release/rthreads-chaos [--kernels a,b] [--harms kill,stop,cut]
//!     [--size medium] [--delay-ms 400] [--failure-timeout 2]
//! ```
//! `cut` needs root and `ip` (iproute2); it is skipped with a reason otherwise. Prints one line per
//! kernel and harm; exit code 1 if any run hung or a survivor did not report.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rthreads_suite::kernels;

struct Opts {
    kernels: Vec<String>,
    harms: Vec<String>,
    size: String,
    delay: Duration,
    failure_timeout: String,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned();
    Opts {
        kernels: get("--kernels").map_or_else(
            || kernels::all().iter().map(|k| k.name.to_owned()).collect(),
            |v| v.split(',').map(String::from).collect(),
        ),
        harms: get("--harms").unwrap_or("kill,stop,cut".into()).split(',').map(String::from).collect(),
        size: get("--size").unwrap_or("medium".into()),
        delay: Duration::from_millis(get("--delay-ms").and_then(|v| v.parse().ok()).unwrap_or(400)),
        failure_timeout: get("--failure-timeout").unwrap_or("2".into()),
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

fn run_local(kernel: &str, harm: &str, o: &Opts, tag: &str) -> Outcome {
    let worker = sibling("bench_worker");
    let child = Command::new(&worker)
        .args([kernel, "cluster", &o.size, "1"])
        .env("RTHREADS_NODES", "4")
        .env("RTHREADS_FAILURE_TIMEOUT", &o.failure_timeout)
        .env("BENCH_REPEAT", "100000")
        .env("RTHREADS_CHAOS_TAG", tag)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting bench_worker");
    std::thread::sleep(o.delay);
    let Some(victim) = node_pid(tag, 2) else {
        let (code, err, hung) = wait(child, Duration::from_secs(30));
        return judge(code, &err, hung, 0.0, 4);
    };
    let sig = if harm == "kill" { libc::SIGKILL } else { libc::SIGSTOP };
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
        .args([kernel, "cluster", &o.size, "1"])
        .env("RTHREADS_FAILURE_TIMEOUT", &o.failure_timeout)
        .env("RTHREADS_BENCH_REPEAT", "100000")
        .env("RTHREADS_CHAOS_TAG", tag)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the launcher");
    std::thread::sleep(o.delay + Duration::from_millis(300));
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
    let o = opts();
    let mut failed = 0;
    let mut netns: Option<Result<(Hosts, PathBuf), String>> = None;
    println!("{:<18} {:<5} {:<15} {:>8}  detail", "kernel", "harm", "outcome", "stop s");
    for k in &o.kernels {
        for h in &o.harms {
            let tag = format!("{}-{k}-{h}", std::process::id());
            let out = match h.as_str() {
                "kill" | "stop" => run_local(k, h, &o, &tag),
                "cut" => {
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
                other => Outcome { verdict: "skipped", secs: 0.0, detail: format!("unknown harm {other}") },
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
