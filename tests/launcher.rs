//! Issue 5: the launcher, MPI bootstrap, namespaced hosts, authentication and failure handling.

mod common;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{self, Hosts};
use common::{Tagged, ok, read_until, reader, text, wait_bounded};

const LAUNCH: &str = env!("CARGO_BIN_EXE_check_launch");
const FAILURE: &str = env!("CARGO_BIN_EXE_check_failure");

/// The `rthreads` launcher, built next to this package's programs (built here if missing, e.g.
/// under `cargo test -p rthreads-suite`).
fn launcher() -> PathBuf {
    let dir = PathBuf::from(LAUNCH).parent().unwrap().to_path_buf();
    let bin = dir.join("rthreads");
    if !bin.exists() {
        let profile = if dir.ends_with("release") { vec!["--release"] } else { vec![] };
        let st =
            Command::new(env!("CARGO")).args(["build", "-q", "-p", "rthreads-cli"]).args(profile).status();
        assert!(st.is_ok_and(|s| s.success()), "cannot build the launcher");
    }
    bin
}

/// The result line of `check_launch` in `out`.
fn result_line(out: &str) -> String {
    out.lines().find(|l| l.contains("nodes ")).unwrap_or_else(|| panic!("no result in {out:?}")).to_owned()
}

#[test]
fn launcher_runs_the_program_with_prefixed_output_and_node_0s_exit_code() {
    let tag = Tagged::new();
    let mut cmd = tag.command(launcher().to_str().unwrap());
    cmd.args(["run", "-n", "4", "--", LAUNCH]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = ok(&wait_bounded(cmd.spawn().unwrap(), Duration::from_secs(120)));
    let line = result_line(&out);
    assert!(line.starts_with("[node 0] nodes 4, threads 16,"), "{line}");
    assert!(line.ends_with("every node used: true"), "{line}");
    tag.assert_none_left(Duration::from_secs(5));

    // Node 0's exit code is the launcher's (check_api's main returns ExitCode 7).
    let mut cmd = tag.command(launcher().to_str().unwrap());
    cmd.args(["run", "-n", "2", "--", env!("CARGO_BIN_EXE_check_api")]);
    let out = wait_bounded(
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    // A program that is not there is a clear error.
    let mut cmd = tag.command(launcher().to_str().unwrap());
    cmd.args(["run", "-n", "2", "--", "/nonexistent/program"]);
    let out = wait_bounded(
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("starting node 0 (/nonexistent/program)"), "{}", text(&out.stderr));
    tag.assert_none_left(Duration::from_secs(5));
}

#[test]
fn launcher_forwards_stdin_to_node_0() {
    let tag = Tagged::new();
    let mut cmd = tag.command(launcher().to_str().unwrap());
    cmd.args(["run", "-n", "3", "--no-prefix", "--", env!("CARGO_BIN_EXE_check_auth")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = ok(&wait_bounded(child, Duration::from_secs(120)));
    assert!(out.starts_with("ready\nnodes 3,"), "{out}");
    tag.assert_none_left(Duration::from_secs(5));
}

/// `mpirun --oversubscribe -n N program` (as root: `--allow-run-as-root`), tagged, output piped; `None`
/// (and a SKIPPED line) when Open MPI is not installed.
fn mpirun(tag: &Tagged, n: usize, program: &str) -> Option<Command> {
    if Command::new("mpirun").arg("--version").output().is_err() {
        println!("SKIPPED the mpirun part: mpirun is not installed (.ci/run installs openmpi-bin)");
        return None;
    }
    let mut cmd = tag.command("mpirun");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.arg("--allow-run-as-root");
    }
    cmd.args(["--oversubscribe", "-n", &n.to_string(), program])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Some(cmd)
}

#[test]
fn launcher_and_mpirun_give_the_same_result() {
    let tag = Tagged::new();
    let mut cmd = tag.command(launcher().to_str().unwrap());
    cmd.args(["run", "-n", "4", "--no-prefix", "--", LAUNCH]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let ours = result_line(&ok(&wait_bounded(cmd.spawn().unwrap(), Duration::from_secs(120))));
    let Some(mut cmd) = mpirun(&tag, 4, LAUNCH) else { return };
    cmd.env("RTHREADS_SECRET", "mpirun-test-secret");
    let out = wait_bounded(cmd.spawn().unwrap(), Duration::from_secs(120));
    let theirs = result_line(&ok(&out));
    assert_eq!(ours, theirs);
    tag.assert_none_left(Duration::from_secs(5));
}

#[test]
fn mpirun_without_a_secret_is_refused_with_instructions() {
    let tag = Tagged::new();
    let Some(mut cmd) = mpirun(&tag, 2, LAUNCH) else { return };
    cmd.env_remove("RTHREADS_SECRET").env("HOME", "/nonexistent");
    let out = wait_bounded(cmd.spawn().unwrap(), Duration::from_secs(60));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no cluster secret"), "{}", text(&out.stderr));
    tag.assert_none_left(Duration::from_secs(5));
}

/// Ports `base..base+40`, unlikely to be used by another test running at the same time, and below
/// the ephemeral ports (32768 and up) that outgoing connections take.
fn port_base() -> u16 {
    20_000 + (std::process::id() % 300) as u16 * 40
}

#[test]
fn strangers_with_a_wrong_secret_or_garbage_are_refused_and_the_cluster_keeps_working() {
    let base = port_base();
    let tag = Tagged::new();
    let mut child = tag
        .command(env!("CARGO_BIN_EXE_check_auth"))
        .env("RTHREADS_NODES", "4")
        .env("RTHREADS_PORT_RANGE", format!("{base}-{}", base + 39))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = reader(child.stdout.take().unwrap());
    read_until(&mut out, "ready", Duration::from_secs(60));
    let wrong = net::Secret::from_text("a guess").unwrap();
    let mut listening = 0;
    for port in base..base + 40 {
        let addr = format!("127.0.0.1:{port}");
        let Ok(mut s) = std::net::TcpStream::connect(&addr) else { continue };
        listening += 1;
        s.write_all(b"GET / HTTP/1.1\r\nHost: rthreads\r\n\r\n").unwrap();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let e = net::auth::connect_side(&mut s, &wrong).unwrap_err();
        let wrong_secret = net::AuthError::WrongSecret.to_string();
        assert!(matches!(&e, net::HandshakeError::Refused(r) if *r == wrong_secret), "{addr}: {e:?}");
    }
    assert!(listening >= 4, "found {listening} listening nodes in {base}..");
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    for l in out.lines() {
        rest.push_str(&l.unwrap());
        rest.push('\n');
    }
    child.stdout = None;
    let result = wait_bounded(child, Duration::from_secs(120));
    let err = text(&result.stderr);
    assert!(result.status.success(), "{rest}\n{err}");
    assert!(rest.contains("every node used: true") && !rest.contains("expected 0"), "{rest}");
    assert!(err.matches("wrong cluster secret").count() >= 4, "{err}");
    assert!(err.contains("not an rthreads peer"), "{err}");
    tag.assert_none_left(Duration::from_secs(5));
}

/// Pid of the process of node `node` in the tree `tag` launched.
fn node_pid(tag: &Tagged, node: u16) -> u32 {
    let needle = format!("RTHREADS_NODE_ID={node}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for pid in tag.live() {
            if std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle.as_bytes()))
            {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no process of node {node}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns `cmd` (a cluster running `check_failure`) with its output piped, and returns once it
/// prints `running`: every node is busy.
fn running(cmd: &mut Command) -> std::process::Child {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = reader(child.stdout.take().unwrap());
    read_until(&mut out, "running", Duration::from_secs(60));
    child.stdout = Some(out.into_inner());
    child
}

/// Starts `check_failure` on 4 embedded nodes, does `harm` to node 2 once all run, and checks that
/// the other nodes stop within the bound, naming node 2.
fn survivors_name_the_lost_node(harm: impl FnOnce(u32), expect: &[&str]) {
    let tag = Tagged::new();
    let child = running(tag.command(FAILURE).env("RTHREADS_NODES", "4").env("RTHREADS_FAILURE_TIMEOUT", "2"));
    let victim = node_pid(&tag, 2);
    let t = Instant::now();
    harm(victim);
    let result = wait_bounded(child, Duration::from_secs(30));
    let took = t.elapsed();
    let err = text(&result.stderr);
    assert_eq!(result.status.code(), Some(3), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?} (bound 10 s)");
    assert!(err.contains("node 0: lost node 2") && expect.iter().any(|e| err.contains(e)), "{err}");
    for n in [1, 3] {
        assert!(err.contains(&format!("node {n}: stopping: node 2 was lost")), "{err}");
    }
    assert!(!text(&result.stdout).contains("finished without losing"));
    // SAFETY: resuming a stopped process of our own test (harmless if it is gone).
    unsafe { libc::kill(victim as i32, libc::SIGCONT) };
    tag.assert_none_left(Duration::from_secs(5));
    println!("stopped {took:?} after the harm");
}

#[test]
fn killing_a_node_stops_the_others_naming_it() {
    survivors_name_the_lost_node(
        |pid| {
            // SAFETY: killing a node process of our own test.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        },
        &["closed the connection", "Connection reset by peer"],
    );
}

#[test]
fn a_home_that_dies_under_direct_reads_stops_the_cluster_naming_it() {
    // Node 1's threads read pages of node 2 directly, without end; node 2 is stopped (reads are
    // left waiting in the middle) and then killed: the readers' connections break, and the
    // cluster stops naming node 2 within the bound, leaving no process.
    let tag = Tagged::new();
    let child = running(
        tag.command(env!("CARGO_BIN_EXE_check_direct"))
            .arg("forever")
            .env("RTHREADS_NODES", "3")
            .env("RTHREADS_FAILURE_TIMEOUT", "2"),
    );
    let victim = node_pid(&tag, 2);
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    // SAFETY: signals to a node process of our own test.
    unsafe { libc::kill(victim as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: as above.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let result = wait_bounded(child, Duration::from_secs(30));
    let took = t.elapsed();
    let err = text(&result.stderr);
    assert_eq!(result.status.code(), Some(3), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?} (bound 10 s)");
    assert!(err.contains("lost node 2"), "{err}");
    tag.assert_none_left(Duration::from_secs(5));
}

/// Issue 18: failure detection still names the lost node within the timeout at 64 nodes, whether
/// node 33 is killed (its connections close) or stopped (it falls silent: node 0, which watches
/// every node, declares it lost after the failure timeout, `timeout` seconds).
fn one_of_64_nodes_is_lost_in_the_middle_of_barriers(signal: i32, timeout: u64, expect: &str) {
    let tag = Tagged::new();
    let child = running(
        tag.command(env!("CARGO_BIN_EXE_check_barrier_loss"))
            .env("RTHREADS_NODES", "64")
            .env("RTHREADS_FAILURE_TIMEOUT", timeout.to_string()),
    );
    let victim = node_pid(&tag, 33);
    let t = Instant::now();
    // SAFETY: a signal to a node process of our own test.
    unsafe { libc::kill(victim as i32, signal) };
    let result = wait_bounded(child, Duration::from_secs(60));
    let took = t.elapsed();
    let err = text(&result.stderr);
    assert_eq!(result.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("lost node 33: {expect}")), "{err}");
    // Within the failure timeout, plus 2 s for the others to stop (a loaded machine gets 3 s more).
    assert!(took < Duration::from_secs(timeout + 5), "took {took:?}");
    assert!(!text(&result.stdout).contains("finished without losing"));
    // SAFETY: resuming a stopped process of our own test (harmless if it is gone).
    unsafe { libc::kill(victim as i32, libc::SIGCONT) };
    tag.assert_none_left(Duration::from_secs(5));
    println!("stopped {took:?} after the signal");
}

#[test]
fn killing_a_node_of_64_in_the_middle_of_barriers_stops_the_cluster_naming_it() {
    one_of_64_nodes_is_lost_in_the_middle_of_barriers(libc::SIGKILL, 5, "");
}

#[test]
fn stopping_a_node_of_64_in_the_middle_of_barriers_stops_the_cluster_naming_it() {
    one_of_64_nodes_is_lost_in_the_middle_of_barriers(libc::SIGSTOP, 2, "nothing heard from it");
}

#[test]
fn a_stopped_node_is_declared_lost_after_the_failure_timeout() {
    survivors_name_the_lost_node(
        |pid| {
            // SAFETY: stopping a node process of our own test.
            unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        },
        &["nothing heard from it"],
    );
}

#[test]
fn namespaced_hosts_run_a_program_with_shared_data_and_locks() {
    if let Some(why) = netns::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let hosts = Hosts::new(3);
    let dir = std::env::temp_dir();
    let port = 20_000 + std::process::id() % 10_000;
    let tag = Tagged::new();
    let mut cmd = tag.command(launcher().to_str().unwrap());
    cmd.args(["run", "-n", "3", "--hosts", &hosts.names.join(","), "--rsh", &hosts.rsh(&dir)])
        .args(["--coordinator", &format!("{}:{port}", hosts.addrs[0]), "--", LAUNCH])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_bounded(cmd.spawn().unwrap(), Duration::from_secs(120));
    let line = result_line(&ok(&out));
    assert!(
        line.starts_with("[node 0] nodes 3, threads 12,") && line.ends_with("every node used: true"),
        "{line}"
    );
    tag.assert_none_left(Duration::from_secs(5));
}

#[test]
fn cutting_a_hosts_link_stops_the_others_naming_it() {
    if let Some(why) = netns::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let hosts = Hosts::new(3);
    let dir = std::env::temp_dir();
    let port = 20_000 + std::process::id() % 10_000 + 1;
    let tag = Tagged::new();
    let child = running(
        tag.command(launcher().to_str().unwrap())
            .args(["run", "-n", "3", "--hosts", &hosts.names.join(","), "--rsh", &hosts.rsh(&dir)])
            .args(["--coordinator", &format!("{}:{port}", hosts.addrs[0]), "--", FAILURE])
            .env("RTHREADS_FAILURE_TIMEOUT", "2"),
    );
    let t = Instant::now();
    hosts.cut(2);
    let result = wait_bounded(child, Duration::from_secs(30));
    let took = t.elapsed();
    let err = text(&result.stderr);
    assert_eq!(result.status.code(), Some(3), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(err.contains("[node 0] rthreads: node 0: lost node 2: nothing heard"), "{err}");
    assert!(err.contains("[node 1] rthreads: node 1: stopping: node 2 was lost"), "{err}");
    tag.assert_none_left(Duration::from_secs(5));
    println!("stopped {took:?} after the cut");
}

#[test]
fn slurm_environment_bootstraps_the_same_cluster() {
    // What `srun -n 4` sets for each task (emulated: no Slurm daemons run here).
    let tag = Tagged::new();
    let base = port_base();
    let job = format!("{}", 900_000 + std::process::id());
    let children: Vec<_> = (0..4)
        .map(|rank| {
            tag.command(LAUNCH)
                .env("SLURM_JOB_ID", &job)
                .env("SLURM_STEP_ID", "0")
                .env("SLURM_PROCID", rank.to_string())
                .env("SLURM_NTASKS", "4")
                .env("SLURM_STEP_NODELIST", "localhost")
                .env("SLURM_STEP_NUM_NODES", "1")
                .env("RTHREADS_PORT_RANGE", format!("{base}-{}", base + 39))
                .env("RTHREADS_SECRET", "slurm-test-secret")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children.into_iter().map(|c| wait_bounded(c, Duration::from_secs(120))).collect();
    let line = result_line(&ok(&outs[0]));
    assert!(line.starts_with("nodes 4, threads 16,") && line.ends_with("every node used: true"), "{line}");
    for o in &outs[1..] {
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    tag.assert_none_left(Duration::from_secs(5));
}

#[test]
fn ctrl_c_or_the_launchers_death_leaves_no_node_behind() {
    for sig in [libc::SIGINT, libc::SIGKILL] {
        let tag = Tagged::new();
        let child =
            running(tag.command(launcher().to_str().unwrap()).args(["run", "-n", "3", "--", FAILURE]));
        // SAFETY: signalling the launcher this test started.
        unsafe { libc::kill(child.id() as i32, sig) };
        let result = wait_bounded(child, Duration::from_secs(30));
        if sig == libc::SIGINT {
            assert_eq!(result.status.code(), Some(130), "{}", text(&result.stderr));
        }
        tag.assert_none_left(Duration::from_secs(10));
    }
}

#[test]
fn remote_nodes_stop_when_the_launcher_dies() {
    // A stand-in for ssh that, like ssh, leaves the node outside the launcher's reach: the node
    // is a child of the shell, not the shell itself, so the launcher's death signal (which kills
    // the shell) does not reach it. Only its standard input still leads back to the launcher.
    let dir = std::env::temp_dir();
    let rsh = dir.join(format!("rthreads-detached-rsh-{}", std::process::id()));
    // (Through fd 3: a shell gives an asynchronous command /dev/null as its standard input.)
    std::fs::write(&rsh, "#!/bin/sh\nexec 3<&0\nsh -c \"$2\" <&3 3<&- &\nwait\n").unwrap();
    std::fs::set_permissions(&rsh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let tag = Tagged::new();
    let child = running(
        tag.command(launcher().to_str().unwrap())
            .args([
                "run",
                "-n",
                "3",
                "--hosts",
                "127.0.0.1,127.0.0.1,127.0.0.1",
                "--rsh",
                rsh.to_str().unwrap(),
            ])
            .args(["--coordinator", &format!("127.0.0.1:{}", port_base() + 20), "--", FAILURE]),
    );
    let nodes: Vec<u32> = (0..3).map(|n| node_pid(&tag, n)).collect();
    // SAFETY: killing the launcher this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = wait_bounded(child, Duration::from_secs(30));
    let t = Instant::now();
    tag.assert_none_left(Duration::from_secs(20));
    let _ = std::fs::remove_file(&rsh);
    println!("nodes {nodes:?} all gone {:?} after the launcher", t.elapsed());
}

/// Stops the test's Slurm daemons however the test ends.
struct SlurmCluster(PathBuf);

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        let _ = Command::new("sh").arg(slurm_script()).arg("stop").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn slurm_script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slurm/local-cluster.sh").to_owned()
}

#[test]
fn srun_on_a_local_slurm_cluster_gives_the_same_result() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("srun").arg("--version").output().is_err() {
        println!("SKIPPED: needs root and Slurm (Debian's slurm-wlm, which .ci/run installs)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("rthreads-slurm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = 27_000 + (std::process::id() % 1000) as u16 * 2;
    let started =
        Command::new("sh").arg(slurm_script()).arg("start").arg(&dir).arg(port.to_string()).output().unwrap();
    let cluster = SlurmCluster(dir.clone());
    if !started.status.success() {
        println!("SKIPPED: could not start a local Slurm cluster: {}", text(&started.stderr));
        return;
    }
    let conf = text(&started.stdout).trim().to_owned();
    let tag = Tagged::new();
    let mut cmd = tag.command("srun");
    cmd.args(["-n", "4", LAUNCH])
        .env("SLURM_CONF", &conf)
        .env("RTHREADS_SECRET", "srun-test-secret")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_bounded(cmd.spawn().unwrap(), Duration::from_secs(120));
    let line = result_line(&ok(&out));
    assert!(line.starts_with("nodes 4, threads 16,") && line.ends_with("every node used: true"), "{line}");
    tag.assert_none_left(Duration::from_secs(10));
    drop(cluster);
}
