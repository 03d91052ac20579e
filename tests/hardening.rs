//! Issue 15: the launcher returns in time whatever its nodes do, weak secrets and mistyped settings
//! are caught, and an allocation larger than a node's share says why it failed.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Tagged, ok, read_until, reader, text, wait_bounded};

const SETTINGS: &str = env!("CARGO_BIN_EXE_check_settings");
const OVERSIZE: &str = env!("CARGO_BIN_EXE_check_oversize");
const FAILURE: &str = env!("CARGO_BIN_EXE_check_failure");

/// The `rthreads` launcher, built next to this package's programs (built here if missing, e.g.
/// under `cargo test -p rthreads-suite`).
fn launcher() -> PathBuf {
    let dir = PathBuf::from(SETTINGS).parent().unwrap().to_path_buf();
    let bin = dir.join("rthreads");
    if !bin.exists() {
        let profile = if dir.ends_with("release") { vec!["--release"] } else { vec![] };
        let st =
            Command::new(env!("CARGO")).args(["build", "-q", "-p", "rthreads-cli"]).args(profile).status();
        assert!(st.is_ok_and(|s| s.success()), "cannot build the launcher");
    }
    bin
}

/// Runs `cmd` (output piped) to its end, within `limit`, and checks that no tagged process is left.
fn run(tag: &Tagged, cmd: &mut Command, limit: Duration) -> Output {
    let out = wait_bounded(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), limit);
    tag.assert_none_left(Duration::from_secs(5));
    out
}

/// Pid of the process of node `node` in the tree `tag` launched (waits for it, bounded).
fn node_pid(tag: &Tagged, node: u16) -> u32 {
    let needle = format!("RTHREADS_NODE_ID={node}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = tag.live().into_iter().find(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle.as_bytes()))
        });
        if let Some(pid) = found {
            return pid;
        }
        assert!(Instant::now() < deadline, "no process of node {node}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_launcher_returns_within_the_failure_timeout_when_a_node_is_stopped() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let tag = Tagged::new();
    let mut child = tag
        .command(launcher().to_str().unwrap())
        .args(["run", "-n", "3", "--", FAILURE])
        .env("RTHREADS_FAILURE_TIMEOUT", TIMEOUT.as_secs().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = reader(child.stdout.take().unwrap());
    read_until(&mut out, "running", Duration::from_secs(60));
    child.stdout = Some(out.into_inner());
    let victim = node_pid(&tag, 2);
    let t = Instant::now();
    // SAFETY: stopping a node process of our own test.
    unsafe { libc::kill(victim as i32, libc::SIGSTOP) };
    let result = wait_bounded(child, Duration::from_secs(30));
    let took = t.elapsed();
    let err = text(&result.stderr);
    println!("the launcher returned {took:?} after node 2 was stopped\n{err}");
    assert_eq!(result.status.code(), Some(3), "{err}");
    assert!(err.contains("lost node 2: nothing heard"), "{err}");
    assert_eq!(err.matches("did not stop within").count(), 1, "{err}");
    assert!(
        err.contains("rthreads: node 2 did not stop within 1 s of the end of the run; killed it"),
        "{err}"
    );
    // The bound is the failure timeout plus 2 s; a loaded machine gets 1 s more.
    assert!(
        took < TIMEOUT + Duration::from_secs(3),
        "took {took:?}, bound {:?}",
        TIMEOUT + Duration::from_secs(2)
    );
    tag.assert_none_left(Duration::from_secs(2));
}

#[test]
fn the_launcher_returns_when_node_0_is_stopped() {
    let tag = Tagged::new();
    let mut child = tag
        .command(launcher().to_str().unwrap())
        .args(["run", "-n", "3", "--", FAILURE])
        .env("RTHREADS_FAILURE_TIMEOUT", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = reader(child.stdout.take().unwrap());
    read_until(&mut out, "running", Duration::from_secs(60));
    child.stdout = Some(out.into_inner());
    let victim = node_pid(&tag, 0);
    let t = Instant::now();
    // SAFETY: stopping a node process of our own test.
    unsafe { libc::kill(victim as i32, libc::SIGSTOP) };
    let result = wait_bounded(child, Duration::from_secs(30));
    let took = t.elapsed();
    let err = text(&result.stderr);
    println!("the launcher returned {took:?} after node 0 was stopped\n{err}");
    assert_eq!(result.status.code(), Some(3), "{err}");
    assert!(
        err.contains("rthreads: node 0 did not stop within 1 s of the end of the run; killed it"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}, bound 4 s");
    tag.assert_none_left(Duration::from_secs(2));
}

/// What a node or the launcher says about a secret that is too short, whatever its length.
const WEAK: [&str; 3] =
    ["it needs at least 16 bytes", "rthreads secret", "export RTHREADS_SECRET=$(rthreads secret)"];

#[test]
fn weak_empty_and_blank_secrets_are_refused_saying_how_to_make_one() {
    let tag = Tagged::new();
    for secret in ["a", "", "   ", "fifteen bytes!!"] {
        // An embedded cluster's node 0 (which would otherwise generate a secret), a node joining a
        // cluster started elsewhere (`RTHREADS_NODE_ID`, as `rthreads run` or MPI start them), and
        // the launcher.
        let mut embedded = tag.command(SETTINGS);
        embedded.env("RTHREADS_NODES", "2").env("RTHREADS_SECRET", secret);
        let mut rank = tag.command(SETTINGS);
        rank.env("RTHREADS_NODES", "2").env("RTHREADS_NODE_ID", "1").env("RTHREADS_SECRET", secret);
        rank.env("RTHREADS_COORDINATOR", "127.0.0.1:1");
        let mut launched = tag.command(launcher().to_str().unwrap());
        launched.args(["run", "-n", "2", "--", SETTINGS]).env("RTHREADS_SECRET", secret);
        for (what, cmd) in [("embedded", &mut embedded), ("rank 1", &mut rank), ("launcher", &mut launched)] {
            let out = run(&tag, cmd, Duration::from_secs(60));
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{what}, {secret:?}: {err}");
            assert!(err.contains("RTHREADS_SECRET: the cluster secret is"), "{what}, {secret:?}: {err}");
            for w in WEAK {
                assert!(err.contains(w), "{what}, {secret:?}: no {w:?} in {err}");
            }
            assert!(text(&out.stdout).is_empty(), "{what}, {secret:?}: the program ran");
        }
    }
    // The launcher applies the rule to a secret file too.
    let dir = std::env::temp_dir().join(format!("rthreads-hardening-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, "hunter2\n").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = run(
        &tag,
        tag.command(launcher().to_str().unwrap()).args([
            "run",
            "-n",
            "2",
            "--secret-file",
            file.to_str().unwrap(),
            "--",
            SETTINGS,
        ]),
        Duration::from_secs(60),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("too short (7 bytes") && WEAK.iter().all(|w| err.contains(w)), "{err}");
    // Sixteen bytes are enough, in the environment or in the file.
    let good = "sixteen bytes!!!";
    let out = ok(&run(
        &tag,
        tag.command(SETTINGS).env("RTHREADS_NODES", "2").env("RTHREADS_SECRET", good),
        Duration::from_secs(60),
    ));
    assert!(out.contains("nodes 2, ran on [0, 1]"), "{out}");
    std::fs::write(&file, format!("{good}\n")).unwrap();
    let out = ok(&run(
        &tag,
        tag.command(launcher().to_str().unwrap()).args([
            "run",
            "-n",
            "2",
            "--no-prefix",
            "--secret-file",
            file.to_str().unwrap(),
            "--",
            SETTINGS,
        ]),
        Duration::from_secs(60),
    ));
    assert!(out.contains("nodes 2, ran on [0, 1]"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The lines of `err` that are warnings about settings.
fn warnings(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.contains("rthreads: warning:")).collect()
}

#[test]
fn a_mistyped_setting_gets_one_warning_naming_the_setting_meant() {
    const LINE: &str =
        "rthreads: warning: RTHREADS_NODE is not a setting rthreads knows; did you mean RTHREADS_NODES?";
    let tag = Tagged::new();
    // An embedded cluster: node 0 warns once (not again after re-executing itself), the nodes it
    // starts do not; the typo changes nothing, so 4 nodes (the default) run.
    let mut cmd = tag.command(SETTINGS);
    cmd.env_remove("RTHREADS_NODES").env("RTHREADS_NODE", "2");
    let out = run(&tag, &mut cmd, Duration::from_secs(60));
    let err = text(&out.stderr);
    assert!(ok(&out).contains("nodes 4,"), "{err}");
    assert_eq!(warnings(&err), [LINE], "{err}");
    // Under the launcher, every node sees the variable and only node 0 says so.
    let mut cmd = tag.command(launcher().to_str().unwrap());
    cmd.args(["run", "-n", "3", "--", SETTINGS]).env("RTHREADS_NODE", "2");
    let out = run(&tag, &mut cmd, Duration::from_secs(60));
    let err = text(&out.stderr);
    assert!(ok(&out).contains("[node 0] nodes 3,"), "{err}");
    assert_eq!(warnings(&err), [format!("[node 0] {LINE}")], "{err}");
    // Known settings, and the tag every test process carries, get no warning.
    let mut cmd = tag.command(SETTINGS);
    cmd.env("RTHREADS_NODES", "2").env("RTHREADS_FAILURE_TIMEOUT", "5");
    let out = run(&tag, &mut cmd, Duration::from_secs(60));
    ok(&out);
    assert_eq!(warnings(&text(&out.stderr)), Vec::<&str>::new());
}

/// Runs `check_oversize` on 2 nodes in a 256 MiB space (128 MiB per node), with no core dump.
fn oversize(args: &[&str]) -> Output {
    let tag = Tagged::new();
    let mut cmd = tag.command(OVERSIZE);
    cmd.args(args).env("RTHREADS_NODES", "2").env("RTHREADS_SPACE_SIZE", "256M");
    // SAFETY: between fork and exec, setrlimit is async-signal-safe; the node aborts on purpose
    // and must not write a core file.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            Ok(())
        });
    }
    run(&tag, &mut cmd, Duration::from_secs(60))
}

/// Checks the report for a failed request of `bytes` on node `node`, and that std's message follows.
fn says_why(err: &str, node: u16, bytes: usize) {
    let ours = format!("rthreads: node {node}: the shared heap cannot allocate 200.0 MiB ({bytes} bytes");
    let std = format!("memory allocation of {bytes} bytes failed");
    let at = err.find(&ours).unwrap_or_else(|| panic!("no report for node {node} in {err}"));
    let line = err[at..].lines().next().unwrap();
    for part in [
        "bulk region",
        "128.0 MiB here, the 256.0 MiB of RTHREADS_SPACE_SIZE over 2 nodes",
        "RTHREADS_SPACE_SIZE=1G or more",
    ] {
        assert!(line.contains(part), "no {part:?} in {line}");
    }
    let std_at = err.find(&std).unwrap_or_else(|| panic!("no {std:?} in {err}"));
    assert!(at < std_at, "the report comes after std's message: {err}");
    assert_eq!(err.matches("the shared heap cannot allocate").count(), 1, "{err}");
}

#[test]
fn an_allocation_over_a_nodes_share_says_why_before_std_does() {
    let bytes = 200 << 20;
    let out = oversize(&[&bytes.to_string()]);
    let err = text(&out.stderr);
    // std aborts the process (SIGABRT) after its message.
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(libc::SIGABRT), "{err}");
    assert!(!text(&out.stdout).contains("allocated"), "{err}");
    says_why(&err, 0, bytes);

    // On another node: that node reports and aborts, and the cluster stops naming it.
    let out = oversize(&[&bytes.to_string(), "remote"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    says_why(&err, 1, bytes);
    assert!(err.contains("lost node 1"), "{err}");

    // The same size fits once the space is large enough.
    let tag = Tagged::new();
    let mut cmd = tag.command(OVERSIZE);
    cmd.arg(bytes.to_string()).env("RTHREADS_NODES", "2").env("RTHREADS_SPACE_SIZE", "1G");
    let out = ok(&run(&tag, &mut cmd, Duration::from_secs(60)));
    assert!(out.contains(&format!("allocated {bytes} bytes on node 0")), "{out}");
}
