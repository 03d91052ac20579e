//! `rthreads`: the launcher. Starts every node of a cluster run of an rthreads program, forwards
//! their output, and ends with node 0's exit code.
//!
//! ```text
//! rthreads run -n 8 [--hosts h1,h2,...] [--rsh CMD] [--coordinator HOST:PORT] [--protocol sc]
//!              [--no-prefix] [--secret-file F] [--startup-timeout S] -- ./target/release/app args...
//! rthreads secret [--file PATH]
//! ```
//!
//! (`rthreads run --help` says the same; the command line is parsed by clap, [`Cli`].)
//!
//! Without `--hosts` the nodes are local processes. With `--hosts`, node `i` runs on host
//! `hosts[i % len]`, started by `RSH HOST 'COMMAND'` (`ssh` by default; anything that takes a host
//! and a shell command line works, such as a wrapper around `ip netns exec`), in the launcher's
//! current directory, which must exist on every host with the program at the same path.
//!
//! Every run gets a fresh cluster secret (unless `RTHREADS_SECRET`, `RTHREADS_SECRET_FILE` or
//! `--secret-file` gives one, which must have at least 16 bytes, as the nodes require). Local nodes
//! get it in their environment; remote nodes read it from their standard input, so it never
//! appears on a command line.
//!
//! When the run ends (node 0 ends, or another node fails), every node still running a second
//! later (stopped, hung, cut off) is killed, with one line naming it. Nodes notice a lost peer
//! within `RTHREADS_FAILURE_TIMEOUT`, so the launcher returns within that timeout plus about a
//! second whatever state its nodes are in.
//!
//! Standard input goes to node 0; the other nodes read nothing. Each output line is prefixed with
//! `[node N] ` unless `--no-prefix`. Ctrl-C (SIGINT), SIGTERM and SIGHUP stop every node; local
//! nodes also die with the launcher if it is killed (`PR_SET_PDEATHSIG` on the processes it starts).
//! With `--hosts` that kills the local `ssh` processes; the remote nodes other than node 0 keep
//! their standard input open to the launcher (`RTHREADS_WATCH_STDIN=1`) and stop when it closes,
//! and node 0 then stops because they are lost, so no node outlives the launcher for long.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use net::Secret;

/// The signal that asked the launcher to stop (0: none).
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    STOP.store(sig, Ordering::SeqCst);
}

/// The launcher's command line.
#[derive(Debug, Parser)]
#[command(
    name = "rthreads",
    version,
    about = "Start and watch the nodes of an rthreads cluster run",
    long_about = "Start and watch the nodes of an rthreads cluster run.\n\n\
                  `rthreads run` starts every node of a program built with #[rthreads::main], \
                  locally or over ssh, forwards their output and returns node 0's exit code. \
                  `rthreads secret` makes the cluster secret that MPI and Slurm runs need.",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run PROGRAM on N nodes and return node 0's exit code
    #[command(
        long_about = "Run PROGRAM on N nodes and return node 0's exit code.\n\n\
                      Without --hosts the nodes are local processes. With --hosts, node i runs on \
                      host i mod (number of hosts), started by `RSH HOST 'COMMAND'` in the current \
                      directory, which must exist on every host with PROGRAM at the same path.\n\n\
                      Every run gets a fresh cluster secret unless RTHREADS_SECRET, \
                      RTHREADS_SECRET_FILE or --secret-file gives one (16 bytes or more); remote \
                      nodes read it from their standard input, never from a command line. \
                      Standard input goes to node 0. Ctrl-C stops every node; a node still running \
                      a second after the run ended (node 0 ended, or another node failed) is \
                      killed, with a line naming it. The launcher's RTHREADS_* settings reach \
                      every node.",
        override_usage = "rthreads run [OPTIONS] -- <PROGRAM> [ARGS]...",
        after_help = "Examples:\n  \
                      rthreads run -n 8 -- ./target/release/app args\n  \
                      rthreads run -n 8 --hosts h1,h2,h3,h4 -- ./target/release/app"
    )]
    Run(RunArgs),
    /// Print a new random cluster secret, or write it to a file only you can read
    #[command(long_about = "Print a new random cluster secret (64 hex digits), or write it to \
                            PATH with mode 0600. An existing file is never overwritten.\n\n\
                            For mpirun and srun: export RTHREADS_SECRET=$(rthreads secret)")]
    Secret {
        /// Write the secret to PATH (mode 0600) instead of printing it
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

/// What `rthreads run` was asked to do.
#[derive(Debug, Args)]
struct RunArgs {
    /// Number of nodes
    #[arg(short = 'n', long = "nodes", value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    nodes: u16,
    /// Run the nodes on these hosts, in turn (node i on host i mod the number of hosts)
    #[arg(long, value_name = "H1,H2,...", value_delimiter = ',', value_parser = host)]
    hosts: Vec<String>,
    /// Command that runs a shell command line on a host, as `CMD HOST 'LINE'`
    #[arg(long, value_name = "CMD", default_value = "ssh", value_parser = command_words)]
    rsh: Words,
    /// Where node 0 listens (default: loopback for local nodes, a free port of the first host
    /// with --hosts)
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: Option<String>,
    /// Coherence protocol: sc (sequential consistency) or lrc (release consistency)
    #[arg(long, value_name = "PROTOCOL", value_parser = ["sc", "lrc"])]
    protocol: Option<String>,
    /// Do not start each output line with `[node N] `
    #[arg(long, overrides_with = "prefix")]
    no_prefix: bool,
    /// Start each output line with `[node N] ` (the default)
    #[arg(long, overrides_with = "no_prefix", hide = true)]
    prefix: bool,
    /// Read the cluster secret from FILE (readable by you only)
    #[arg(long, value_name = "FILE")]
    secret_file: Option<String>,
    /// Seconds every node waits for the cluster to form (RTHREADS_STARTUP_TIMEOUT, default 60)
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    startup_timeout: Option<f64>,
    /// The program every node runs (the same binary at the same path on every host)
    #[arg(value_name = "PROGRAM")]
    program: String,
    /// The program's arguments
    #[arg(value_name = "ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// A command and its arguments, from one string split at whitespace.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Words(Vec<String>);

fn command_words(s: &str) -> Result<Words, String> {
    let words: Vec<String> = s.split_whitespace().map(String::from).collect();
    if words.is_empty() { Err("needs a command".into()) } else { Ok(Words(words)) }
}

/// One host name of `--hosts` (blanks around it dropped).
fn host(s: &str) -> Result<String, String> {
    Ok(s.trim().to_owned())
}

/// A positive, finite number of seconds, as the nodes accept it.
fn seconds(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| "expected a positive number of seconds".to_owned())
}

impl RunArgs {
    /// The hosts, without empty names (`--hosts a,,b`).
    fn host_list(&self) -> Vec<String> {
        self.hosts.iter().filter(|h| !h.is_empty()).cloned().collect()
    }
}

/// Quotes `s` for a POSIX shell.
fn quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok() {
        return u64::from_ne_bytes(b);
    }
    u64::from(std::process::id()) << 32 ^ Instant::now().elapsed().as_nanos() as u64
}

/// The secret for this run, as 64 hex digits for the nodes. A secret given to the launcher
/// (`--secret-file`, `RTHREADS_SECRET`, `RTHREADS_SECRET_FILE`) must pass the nodes' own rule
/// (`Secret::from_setting`: at least 16 bytes), checked here before any node starts; set but empty
/// counts as a mistake, not as unset.
fn run_secret(file: Option<&str>) -> Result<String, String> {
    if let Some(f) = file {
        return Secret::from_file(std::path::Path::new(f)).map(|s| s.to_hex()).map_err(|e| e.to_string());
    }
    if let Some(v) = std::env::var_os("RTHREADS_SECRET") {
        let v = v.to_str().ok_or("RTHREADS_SECRET is not valid UTF-8")?;
        return Secret::from_setting(v).map(|s| s.to_hex()).map_err(|e| format!("RTHREADS_SECRET: {e}"));
    }
    if let Some(f) = std::env::var_os("RTHREADS_SECRET_FILE") {
        if f.is_empty() {
            return Err(
                "RTHREADS_SECRET_FILE is set but empty: name a file only you can read, or unset it".into()
            );
        }
        return Secret::from_file(std::path::Path::new(&f)).map(|s| s.to_hex()).map_err(|e| e.to_string());
    }
    Secret::generate().map(|s| s.to_hex()).map_err(|e| format!("generating the cluster secret: {e}"))
}

/// Copies one node's output to ours a whole line at a time, prefixed. A line node 0 writes for
/// another node starts with a record separator, that node's number and another separator
/// (`RTHREADS_PREFIX=tag`): it gets that node's prefix instead.
fn forward(
    from: impl Read + Send + 'static,
    stderr: bool,
    prefix: Option<String>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = io::BufReader::new(from);
        let mut raw = Vec::with_capacity(256);
        let mut line = Vec::with_capacity(256);
        loop {
            raw.clear();
            match r.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            line.clear();
            let mut text = &raw[..];
            if let Some(p) = &prefix {
                match tagged(&raw) {
                    Some((node, rest)) => {
                        line.extend_from_slice(format!("[node {node}] ").as_bytes());
                        text = rest;
                    }
                    None => line.extend_from_slice(p.as_bytes()),
                }
            }
            line.extend_from_slice(text);
            let _ = if stderr {
                io::stderr().lock().write_all(&line)
            } else {
                let mut out = io::stdout().lock();
                out.write_all(&line).and_then(|()| out.flush())
            };
        }
    })
}

/// A line node 0 forwarded for another node: `\x1eN\x1e` then the text. Returns N and the text.
fn tagged(line: &[u8]) -> Option<(u16, &[u8])> {
    let rest = line.strip_prefix(&[0x1E])?;
    let end = rest.iter().position(|&b| b == 0x1E)?;
    let node = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((node, &rest[end + 1..]))
}

fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and calls only prctl and getppid, which are
    // async-signal-safe. If the launcher is already gone, the child ends at once.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// How long the nodes still running when the run ends (node 0 ended, or another node failed) get
/// to stop before the launcher kills them. A node that follows node 0's shutdown order or another
/// node's abort stops within a fraction of this; one that does not is stopped, hung or cut off.
/// The nodes notice a lost peer within `RTHREADS_FAILURE_TIMEOUT`, so the launcher returns within
/// that timeout plus this, plus the time to reap, whatever state its nodes are in.
const STRAGGLERS: Duration = Duration::from_secs(1);

/// The launcher's exit code once every node has ended: node 0's, unless the launcher had to kill
/// node 0 (`killed_0`) after another node failed: then that node's (3 when it lost a node).
fn exit_code(status: &[Option<std::process::ExitStatus>], killed_0: bool) -> u8 {
    let Some(s0) = status[0] else { return 1 };
    if killed_0 && let Some(other) = status[1..].iter().flatten().find(|s| !s.success()) {
        return describe(*other).1;
    }
    describe(s0).1
}

fn describe(status: std::process::ExitStatus) -> (String, u8) {
    match (status.code(), status.signal()) {
        (Some(c), _) => (format!("exit code {c}"), c as u8),
        (None, Some(s)) => (format!("signal {s}"), 128 + s as u8),
        _ => ("an unknown status".into(), 1),
    }
}

fn run(a: RunArgs) -> Result<ExitCode, String> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let secret = run_secret(a.secret_file.as_deref())?;
    let session = format!("{:x}", random_u64());
    let n = a.nodes;
    let hosts = a.host_list();
    let rsh = &a.rsh.0;
    let prefix = !a.no_prefix;
    let mut common: Vec<(String, String)> =
        vec![("RTHREADS_NODES".into(), n.to_string()), ("RTHREADS_SESSION".into(), session)];
    if let Some(p) = &a.protocol {
        common.push(("RTHREADS_PROTOCOL".into(), p.clone()));
    }
    if let Some(t) = a.startup_timeout {
        common.push(("RTHREADS_STARTUP_TIMEOUT".into(), t.to_string()));
    }
    let remote = !hosts.is_empty();
    let mut listener = None;
    let coordinator = if remote {
        match &a.coordinator {
            Some(c) => c.clone(),
            // Below the ephemeral ports (32768 and up), which outgoing connections may hold.
            None => format!("{}:{}", hosts[0], 20000 + random_u64() % 12768),
        }
    } else {
        let l = TcpListener::bind(a.coordinator.as_deref().unwrap_or("127.0.0.1:0"))
            .map_err(|e| format!("cannot listen for node 0: {e}"))?;
        let addr = l.local_addr().map_err(|e| e.to_string())?.to_string();
        listener = Some(l);
        addr
    };
    common.push(("RTHREADS_COORDINATOR".into(), coordinator));
    // Node 0 writes every node's output (in the program's order); with prefixes on, it marks each
    // line of another node with that node's number, which `forward` turns into its prefix.
    common.push(("RTHREADS_PREFIX".into(), if prefix { "tag" } else { "0" }.into()));
    let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    let mut children: Vec<Child> = Vec::new();
    let mut outputs = Vec::new();
    // The remote nodes' standard inputs, held open until the end of the run (see
    // RTHREADS_WATCH_STDIN above).
    let mut lifelines = Vec::new();
    let kill_all = |children: &mut Vec<Child>| {
        for c in children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    };
    for i in 0..n {
        let mut cmd;
        if remote {
            let host = &hosts[usize::from(i) % hosts.len()];
            // Forward the launcher's own RTHREADS_* settings, minus those it sets itself.
            let mut env: Vec<(String, String)> = std::env::vars()
                .filter(|(k, _)| {
                    k.starts_with("RTHREADS_")
                        && !matches!(
                            k.as_str(),
                            "RTHREADS_SECRET" | "RTHREADS_SECRET_FILE" | "RTHREADS_WATCH_STDIN"
                        )
                })
                .filter(|(k, _)| !common.iter().any(|(c, _)| c == k))
                .collect();
            env.extend(common.iter().cloned());
            env.push(("RTHREADS_NODE_ID".into(), i.to_string()));
            if i != 0 {
                // Node 0's standard input is the user's; the others' stays open to this launcher
                // only, so its end tells them the launcher is gone.
                env.push(("RTHREADS_WATCH_STDIN".into(), "1".into()));
            }
            let assignments: Vec<String> = env.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
            let program: Vec<String> = std::iter::once(&a.program).chain(&a.args).map(|p| quote(p)).collect();
            let line = format!(
                "cd {} && IFS= read -r RTHREADS_SECRET && export RTHREADS_SECRET && exec env {} {}",
                quote(&cwd.to_string_lossy()),
                assignments.join(" "),
                program.join(" ")
            );
            cmd = Command::new(&rsh[0]);
            cmd.args(&rsh[1..]).arg(host).arg(line);
            cmd.stdin(Stdio::piped());
        } else {
            cmd = Command::new(&a.program);
            cmd.args(&a.args);
            cmd.envs(common.iter().cloned()).env("RTHREADS_NODE_ID", i.to_string());
            cmd.env("RTHREADS_SECRET", &secret).env_remove("RTHREADS_SECRET_FILE");
            // Local nodes die with the launcher by a death signal; their standard input says nothing.
            cmd.env_remove("RTHREADS_WATCH_STDIN");
            cmd.stdin(if i == 0 { Stdio::inherit() } else { Stdio::null() });
            if i == 0
                && let Some(l) = &listener
            {
                let fd = l.as_raw_fd();
                cmd.env("RTHREADS_LISTEN_FD", "3");
                // SAFETY: between fork and exec: dup2 and fcntl are async-signal-safe. Node 0
                // inherits the launcher's listening socket as descriptor 3, so the nodes can
                // connect to it before node 0 has even started.
                unsafe {
                    cmd.pre_exec(move || {
                        if fd == 3 {
                            let flags = libc::fcntl(3, libc::F_GETFD);
                            libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                        } else if libc::dup2(fd, 3) < 0 {
                            return Err(io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                kill_all(&mut children);
                return Err(format!(
                    "starting node {i} ({}): {e}",
                    if remote { &rsh[0] } else { &a.program }
                ));
            }
        };
        let prefix = prefix.then(|| format!("[node {i}] "));
        if let Some(o) = child.stdout.take() {
            outputs.push(forward(o, false, prefix.clone()));
        }
        if let Some(e) = child.stderr.take() {
            outputs.push(forward(e, true, prefix));
        }
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "{secret}");
            if i == 0 {
                // Node 0 reads what the launcher reads.
                std::thread::spawn(move || {
                    let _ = io::copy(&mut io::stdin().lock(), &mut stdin);
                });
            } else {
                lifelines.push(stdin);
            }
        }
        children.push(child);
    }
    drop(listener);
    let mut status: Vec<Option<std::process::ExitStatus>> = vec![None; children.len()];
    // When the run ended: node 0 ended, or another node failed (then node 0 learns of it at once,
    // or is itself the node the others lost). Every node then has `STRAGGLERS` to stop.
    let mut ended: Option<Instant> = None;
    let code = loop {
        let sig = STOP.load(Ordering::SeqCst);
        if sig != 0 {
            eprintln!("rthreads: stopping every node (signal {sig})");
            for c in children.iter() {
                // SAFETY: signalling our own child by pid.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && children.iter_mut().any(|c| matches!(c.try_wait(), Ok(None))) {
                std::thread::sleep(Duration::from_millis(20));
            }
            kill_all(&mut children);
            break 128 + sig as u8;
        }
        for (i, c) in children.iter_mut().enumerate() {
            if status[i].is_none()
                && let Ok(Some(s)) = c.try_wait()
            {
                status[i] = Some(s);
                if i != 0 && !s.success() && status[0].is_none() {
                    eprintln!("rthreads: node {i} ended with {}", describe(s).0);
                }
                if i == 0 || !s.success() {
                    ended.get_or_insert_with(Instant::now);
                }
            }
        }
        if status.iter().all(Option::is_some) {
            break exit_code(&status, false);
        }
        if ended.is_some_and(|t| t.elapsed() >= STRAGGLERS) {
            // Stopped (SIGSTOP), hung or cut off: SIGKILL ends a stopped process too.
            let left: Vec<usize> = (0..children.len()).filter(|&i| status[i].is_none()).collect();
            for &i in &left {
                let _ = children[i].kill();
                status[i] = children[i].wait().ok();
            }
            let names: Vec<String> = left.iter().map(usize::to_string).collect();
            let (them, it) = if left.len() == 1 { ("node", "it") } else { ("nodes", "them") };
            eprintln!(
                "rthreads: {them} {} did not stop within {} s of the end of the run; killed {it}",
                names.join(", "),
                STRAGGLERS.as_secs_f64()
            );
            break exit_code(&status, left.first() == Some(&0));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(lifelines);
    for h in outputs {
        let _ = h.join();
    }
    Ok(ExitCode::from(code))
}

/// `rthreads secret`: prints a new secret, or writes it to `file` (mode 0600, never over an
/// existing file).
fn secret_cmd(file: Option<PathBuf>) -> Result<ExitCode, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let s = Secret::generate().map_err(|e| e.to_string())?.to_hex();
    let Some(p) = file else {
        println!("{s}");
        return Ok(ExitCode::SUCCESS);
    };
    let path = p.display();
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .map_err(|e| format!("{path}: {e} (an existing secret is never overwritten)"))?;
    writeln!(f, "{s}").map_err(|e| format!("{path}: {e}"))?;
    eprintln!("rthreads: wrote a new cluster secret to {path} (mode 0600)");
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Commands::Run(a) => run(a),
        Commands::Secret { file } => secret_cmd(file),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rthreads: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::CommandFactory;
    use clap::error::ErrorKind;

    /// `rthreads run ARGS`, parsed.
    fn parse_run(args: &[&str]) -> Result<RunArgs, clap::Error> {
        match Cli::try_parse_from(["rthreads", "run"].iter().chain(args))?.command {
            Commands::Run(a) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    /// What parsing `rthreads run ARGS` fails with.
    fn error(args: &[&str]) -> ErrorKind {
        parse_run(args).map(|_| ()).unwrap_err().kind()
    }

    #[test]
    fn parses_run_options() {
        let r = parse_run(&[
            "-n",
            "8",
            "--hosts",
            "a, b,",
            "--rsh=ssh -q",
            "--no-prefix",
            "--protocol",
            "sc",
            "--startup-timeout",
            "2.5",
            "--",
            "./app",
            "x",
            "--y",
        ])
        .unwrap();
        assert_eq!(r.rsh.0, ["ssh", "-q"]);
        assert_eq!(r.nodes, 8);
        assert_eq!(r.host_list(), ["a", "b"]);
        assert!(r.no_prefix);
        assert_eq!(r.protocol.as_deref(), Some("sc"));
        assert_eq!(r.startup_timeout, Some(2.5));
        assert_eq!(
            (r.program.as_str(), r.args.as_slice()),
            ("./app", &["x".to_owned(), "--y".to_owned()][..])
        );
        // The defaults; the program may come without `--`, and keeps its own options.
        let r = parse_run(&["./app", "-v", "--", "z"]).unwrap();
        assert_eq!((r.nodes, r.rsh.0.as_slice(), r.no_prefix), (4, &["ssh".to_owned()][..], false));
        assert!(r.host_list().is_empty());
        assert_eq!(r.program, "./app");
        assert_eq!(r.args, ["-v", "--", "z"]);
        assert!(!parse_run(&["--no-prefix", "--prefix", "x"]).unwrap().no_prefix, "the last one wins");
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        assert_eq!(error(&["-n", "0", "--", "x"]), ErrorKind::ValueValidation);
        assert_eq!(error(&["-n", "1025", "--", "x"]), ErrorKind::ValueValidation);
        assert_eq!(error(&["-n", "2"]), ErrorKind::MissingRequiredArgument, "no program");
        assert_eq!(error(&["--bogus", "--", "x"]), ErrorKind::UnknownArgument);
        assert_eq!(error(&["--protocol", "tso", "--", "x"]), ErrorKind::InvalidValue);
        assert_eq!(error(&["--rsh", " ", "--", "x"]), ErrorKind::ValueValidation);
        assert_eq!(error(&["--startup-timeout", "0", "--", "x"]), ErrorKind::ValueValidation);
    }

    #[test]
    fn secret_takes_an_optional_file() {
        let parse = |args: &[&str]| Cli::try_parse_from(["rthreads", "secret"].iter().chain(args));
        assert!(matches!(parse(&[]).unwrap().command, Commands::Secret { file: None }));
        let Commands::Secret { file } = parse(&["--file", "/tmp/s"]).unwrap().command else {
            panic!("not the secret command")
        };
        assert_eq!(file, Some(PathBuf::from("/tmp/s")));
        assert!(parse(&["extra"]).is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn quoting_survives_a_shell() {
        for s in ["plain", "with space", "it's", "$HOME", "a\"b", ""] {
            let out = Command::new("sh").arg("-c").arg(format!("printf %s {}", quote(s))).output().unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
        }
    }
}
