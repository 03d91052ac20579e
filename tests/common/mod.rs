//! Launching cluster programs from tests, with a bound on time and a check that no node process
//! is left behind.
#![allow(dead_code)]

pub mod netns;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A process tree tagged through its environment (every node inherits the tag).
pub struct Tagged {
    pub tag: String,
}

impl Tagged {
    pub fn new() -> Tagged {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Tagged { tag: format!("{}-{n}-{:?}", std::process::id(), Instant::now()) }
    }

    pub fn command(&self, bin: &str) -> Command {
        let mut c = Command::new(bin);
        c.env("RTHREADS_TEST_TAG", &self.tag).env_remove("RUST_BACKTRACE").stdin(Stdio::null());
        c
    }

    /// Pids of live processes carrying this tag.
    pub fn live(&self) -> Vec<u32> {
        let needle = format!("RTHREADS_TEST_TAG={}", self.tag);
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(env) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            let zombie = std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| s.contains(") Z "));
            if !zombie && env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Fails the test unless every tagged process is gone within `grace`.
    pub fn assert_none_left(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        loop {
            let live = self.live();
            if live.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                for &p in &live {
                    // SAFETY: killing a leftover process of our own test.
                    unsafe { libc::kill(p as i32, libc::SIGKILL) };
                }
                panic!("node processes left behind: {live:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits for `child` at most `limit`, killing it (and failing) past that; collects its output.
pub fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    fn drain(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    }
    let t_out = drain(child.stdout.take());
    let t_err = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cluster did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() }
}

/// Runs `bin` as an embedded cluster of `nodes` nodes; returns its output after checking that
/// no node process is left.
pub fn run_cluster(bin: &str, nodes: usize, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let tag = Tagged::new();
    let mut cmd = tag.command(bin);
    cmd.env("RTHREADS_NODES", nodes.to_string()).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = wait_bounded(cmd.spawn().unwrap(), Duration::from_secs(180));
    tag.assert_none_left(Duration::from_secs(5));
    out
}

pub fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// Asserts success, printing the cluster's output otherwise.
pub fn ok(out: &Output) -> String {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    stdout
}

/// Reads lines of `r` until one contains `needle`; returns it.
pub fn read_until(r: &mut impl BufRead, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.contains(needle) {
            return line;
        }
    }
    panic!("no line containing {needle:?}");
}

pub fn reader<R: Read>(r: R) -> BufReader<R> {
    BufReader::new(r)
}
