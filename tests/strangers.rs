//! Issue 15: strangers at a running node's door. Connections that never authenticate are closed
//! within the deadline, a crowd of them is capped and logged sparingly, and running out of file
//! descriptors makes a node pause accepting instead of spinning, after which it accepts its peers'
//! direct connections again. Real clusters of local node processes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A port range of 40 whose first port is free now (node 0 of the cluster takes the first one).
fn free_range() -> u16 {
    for k in 0..200u32 {
        let base = 21_000 + ((std::process::id() + k * 7) % 250) as u16 * 40;
        if std::net::TcpListener::bind(("127.0.0.1", base)).is_ok() {
            return base;
        }
    }
    panic!("no free port range");
}

/// Resident memory (KiB) and open descriptors of process `pid`.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    (rss, std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count())
}

/// CPU time (user + system) of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Starts `check_auth` (waits for a line on stdin, then computes with locks managed by node 0) on
/// 4 nodes; returns it once it said `ready`, with the stdout reader.
fn start(
    tag: &Tagged,
    base: u16,
    envs: &[(&str, &str)],
    nofile: Option<u64>,
) -> (Child, impl std::io::BufRead) {
    let mut cmd = tag.command(env!("CARGO_BIN_EXE_check_auth"));
    cmd.env("RTHREADS_NODES", "4")
        .env("RTHREADS_PORT_RANGE", format!("{base}-{}", base + 39))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    if let Some(n) = nofile {
        // SAFETY: between fork and exec: setrlimit is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let mut out = reader(child.stdout.take().unwrap());
    read_until(&mut out, "ready", Duration::from_secs(60));
    (child, out)
}

/// Lets the cluster compute, and checks its answer, its exit and that nothing is left.
fn finish(tag: &Tagged, mut child: Child, out: impl std::io::BufRead) -> String {
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let rest: String = out.lines().map(|l| l.unwrap() + "\n").collect();
    child.stdout = None;
    let result = wait_bounded(child, Duration::from_secs(120));
    let err = text(&result.stderr);
    assert!(result.status.success(), "{rest}\n{err}");
    assert!(rest.contains("every node used: true") && !rest.contains("expected 0"), "{rest}");
    tag.assert_none_left(Duration::from_secs(5));
    err
}

#[test]
fn silent_connections_are_closed_after_the_deadline_and_cost_nothing_after() {
    let base = free_range();
    let tag = Tagged::new();
    let (child, out) = start(&tag, base, &[("RTHREADS_AUTH_TIMEOUT", "1")], None);
    let pid = child.id();
    let before = usage(pid);
    let started = Instant::now();
    let mut strangers: Vec<TcpStream> =
        (0..300).filter_map(|_| TcpStream::connect(("127.0.0.1", base)).ok()).collect();
    assert!(strangers.len() >= 290, "only {} connections were made", strangers.len());
    let during = usage(pid);
    // Every one is closed by node 0: at once past the 64 waiting, else after the 1 s deadline.
    for s in &mut strangers {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {} // the authentication challenge
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("a stranger's connection is still open after {:?}: {e}", started.elapsed()),
            }
        }
    }
    let closed_after = started.elapsed();
    assert!(
        closed_after < Duration::from_secs(1 + 1) + Duration::from_millis(500),
        "closed after {closed_after:?}"
    );
    drop(strangers);
    // Descriptors and memory come back (the node's own connections may come and go meanwhile).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = usage(pid);
    while after.1 > before.1 + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = usage(pid);
    }
    eprintln!("node 0 before {before:?}, with 300 strangers {during:?}, after {after:?} (KiB, descriptors)");
    // A waiting stranger holds two descriptors (its socket, and the duplicate its answers go out on).
    assert!(
        during.1 <= before.1 + 2 * 64 + 8,
        "more than 64 strangers held at once: {during:?} vs {before:?}"
    );
    assert!(after.1 <= before.1 + 2, "descriptors not given back: {after:?} vs {before:?}");
    assert!(after.0 <= before.0 + 2048, "memory not given back: {after:?} vs {before:?}");
    let err = finish(&tag, child, out);
    let lines = err.lines().filter(|l| l.contains("authenticate") || l.contains("more such lines")).count();
    assert!((1..=20).contains(&lines), "{lines} lines about strangers:\n{err}");
    assert!(
        err.contains("did not authenticate within 1.0 s") || err.contains("already waiting to authenticate"),
        "{err}"
    );
}

#[test]
fn out_of_descriptors_a_node_pauses_accepting_quietly_and_recovers() {
    // Node 0 needs about 150 descriptors of its own at 4 nodes (most for the wake-up pipes of
    // faulting threads), and each waiting stranger two: under `ulimit -n 300` the cap of 64
    // waiting strangers keeps it just short of running out; at 200, some 25 strangers exhaust it.
    strangers_under_a_descriptor_limit(300, false);
    strangers_under_a_descriptor_limit(200, true);
}

fn strangers_under_a_descriptor_limit(limit: u64, runs_out: bool) {
    let base = free_range();
    let tag = Tagged::new();
    let (child, out) = start(&tag, base, &[("RTHREADS_AUTH_TIMEOUT", "30")], Some(limit));
    let pid = child.id();
    let quiet_from = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(Duration::from_secs(2));
    let quiet = cpu_ticks(pid) - quiet_from.1;
    let quiet_for = quiet_from.0.elapsed();
    // More strangers than node 0 has descriptors left (it pauses accepting, so most of these wait
    // in the listen backlog or time out); they stay silent and open.
    let attack = (Instant::now(), cpu_ticks(pid));
    let strangers: Vec<TcpStream> = (0..150)
        .filter_map(|_| {
            TcpStream::connect_timeout(
                &(std::net::Ipv4Addr::LOCALHOST, base).into(),
                Duration::from_millis(100),
            )
            .ok()
        })
        .collect();
    let elapsed = attack.0.elapsed();
    if elapsed < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_secs(2) - elapsed);
    }
    let busy = cpu_ticks(pid) - attack.1;
    let busy_for = attack.0.elapsed();
    let fds = usage(pid).1;
    eprintln!(
        "ulimit -n {limit}: {} strangers; node 0 at {fds} descriptors; CPU ticks {quiet} in {quiet_for:?} quiet, {busy} in {busy_for:?} under attack",
        strangers.len()
    );
    // A spinning accept loop would take a whole CPU: 100 ticks a second.
    let per_second = busy as f64 / busy_for.as_secs_f64();
    assert!(
        per_second < 25.0,
        "node 0 used {per_second:.0} ticks/s while out of descriptors (quiet: {quiet})"
    );
    drop(strangers);
    let err = finish(&tag, child, out);
    let pauses = err.lines().filter(|l| l.contains("cannot accept connections")).count();
    eprintln!("{pauses} lines about accepting");
    if runs_out {
        assert!(pauses >= 1, "node 0 never ran out of descriptors:\n{err}");
    }
    // At most one line a second about it, for the whole attack.
    assert!(pauses <= busy_for.as_secs() as usize + 3, "{pauses} lines:\n{err}");
}
