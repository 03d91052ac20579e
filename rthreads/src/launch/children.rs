//! The processes node 0 of an embedded cluster starts: nodes `1..N`, re-executions of this
//! program that die with it (`PR_SET_PDEATHSIG`); the threads that forward their output a whole
//! line at a time; reaping them at the end. And, on any node, the watcher that stops it when its
//! standard input ends (`RTHREADS_WATCH_STDIN`).

use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dsm::NodeId;

use super::StartError;
use super::config::Config;
use crate::alloc::InternalAlloc;

/// Starts nodes `1..cfg.nodes`, which reach node 0 at `coordinator`, and forwards their output.
///
/// # Errors
/// A node or a forwarder could not be started; the nodes started so far are killed.
pub(super) fn start(cfg: &Config, coordinator: SocketAddr) -> Result<Vec<Child>, StartError> {
    let mut children = Vec::new();
    for i in NodeId::all(cfg.nodes).skip(1) {
        let child = start_node(cfg, coordinator, i).inspect_err(|_| kill(&mut children))?;
        children.push(child);
    }
    let pids = std::iter::once(std::process::id()).chain(children.iter().map(Child::id)).collect();
    crate::runtime::set_local_pids(pids);
    Ok(children)
}

fn start_node(cfg: &Config, coordinator: SocketAddr, i: NodeId) -> Result<Child, StartError> {
    let mut cmd = Command::new("/proc/self/exe");
    let mut args = std::env::args_os();
    if let Some(a0) = args.next() {
        cmd.arg0(a0);
    }
    cmd.args(args)
        .env("RTHREADS_NODE_ID", i.0.to_string())
        .env("RTHREADS_NODES", cfg.nodes.to_string())
        .env("RTHREADS_COORDINATOR", coordinator.to_string())
        .env("RTHREADS_SESSION", format!("{:x}", cfg.session))
        .env("RTHREADS_SECRET", cfg.secret.to_hex())
        .env("RTHREADS_PROTOCOL", if cfg.lrc { "lrc" } else { "sc" })
        // On this host: a silent node 0 that the OS still shows running is slow, not lost.
        .env("RTHREADS_NODE0_PID", std::process::id().to_string())
        // The same file as this node's: no need to hash it again (see `bootstrap::binary_id`).
        .env("RTHREADS_BINARY_HASH", super::bootstrap::binary_hash_setting()?)
        .env_remove("RTHREADS_SECRET_FILE")
        .env_remove("RTHREADS_BIND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is
    // async-signal-safe: the child dies with its parent instead of lingering.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| StartError::StartNode { node: i, source })?;
    let prefix = cfg.prefix.then(|| format!("[{i}] "));
    let stdout = child.stdout.take().map_or(Ok(()), |out| forward(out, false, i, prefix.clone()));
    let forwarded =
        stdout.and_then(|()| child.stderr.take().map_or(Ok(()), |err| forward(err, true, i, prefix)));
    if let Err(e) = forwarded {
        kill(std::slice::from_mut(&mut child));
        return Err(e);
    }
    Ok(child)
}

/// Forwarders still copying a node's output; node 0 waits for them before it exits.
static FORWARDERS: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Copies node `node`'s stdout or stderr to this process's, one whole line per write, so lines of
/// different nodes never cut into each other (std writes stderr unbuffered, piece by piece). With
/// `RTHREADS_PREFIX=1` each line starts with `prefix` (`[node N] `).
fn forward(
    from: impl Read + Send + 'static,
    stderr: bool,
    node: NodeId,
    prefix: Option<String>,
) -> Result<(), StartError> {
    // std allocates stdout's line buffer when stdout is first used; used first by the program, it
    // would be in the shared heap, and a forwarder copying a line into it could fault, and hang
    // once the other nodes have gone. Made here first, it is private memory.
    let _internal = crate::alloc::InternalAlloc::new();
    drop(std::io::stdout());
    // The forwarder's `Thread` handle, name and closure are private memory too: a forwarder must
    // never touch the shared space (it takes the reference count of its own `Thread`).
    let h = std::thread::Builder::new()
        .name(format!("rthreads-out-{}", node.0))
        .spawn(move || {
            crate::alloc::runtime_thread();
            let mut r = std::io::BufReader::new(from);
            let mut line = Vec::with_capacity(256);
            loop {
                line.clear();
                if let Some(p) = &prefix {
                    line.extend_from_slice(p.as_bytes());
                }
                if matches!(std::io::BufRead::read_until(&mut r, b'\n', &mut line), Ok(0) | Err(_)) {
                    return;
                }
                let _ = if stderr {
                    std::io::Write::write_all(&mut std::io::stderr().lock(), &line)
                } else {
                    let mut out = std::io::stdout().lock();
                    std::io::Write::write_all(&mut out, &line).and_then(|()| std::io::Write::flush(&mut out))
                };
            }
        })
        .map_err(|source| StartError::Forward { node, source })?;
    FORWARDERS.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    Ok(())
}

/// Waits (until `deadline` at most) for the output of the nodes this node started to end, so that
/// what they print while the cluster stops reaches the terminal.
pub(crate) fn wait_forwarders(deadline: Instant) {
    loop {
        let done = FORWARDERS.lock().unwrap_or_else(|e| e.into_inner()).iter().all(|h| h.is_finished());
        if done || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills the nodes this node started (start-up failed).
pub(super) fn kill(children: &mut [Child]) {
    for c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Waits for the nodes this node started to exit (5 s at most, then kills them), then for the
/// last of their output.
pub(super) fn reap(children: &mut [Child]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for c in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => break kill(std::slice::from_mut(c)),
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }
    // The nodes are gone, so their pipes are at end of file: the forwarders finish their last
    // lines and stop. Waiting for them to have copied everything is enough; `join` would also
    // wait for std's thread teardown, which updates a table of std's in the shared heap (each
    // thread's stack-guard record), maybe on a page the departed nodes held a copy of: a fault
    // nobody can answer any more.
    wait_forwarders(Instant::now() + Duration::from_secs(5));
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

/// Stops this node when its standard input ends: under `rthreads run --hosts` that input is a pipe
/// from the launcher (through `ssh`), and its end means the launcher is gone. The other nodes then
/// see this one lost and stop too.
///
/// # Errors
/// The watcher thread could not be started.
pub(super) fn watch_stdin(me: NodeId) -> Result<(), StartError> {
    let _internal = InternalAlloc::new();
    std::thread::Builder::new()
        .name("rthreads-watch".into())
        .spawn(move || {
            crate::alloc::runtime_thread();
            let mut buf = [0u8; 512];
            loop {
                // SAFETY: read(2) into a local buffer of the stated size.
                let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted) {
                    break;
                }
            }
            crate::log::say(&format!(
                "rthreads: {me}: stopping: the launcher is gone (standard input closed, RTHREADS_WATCH_STDIN=1)"
            ));
            // SAFETY: _exit ends the process without running anything that could block on a lock
            // held by a thread stuck in a fault.
            unsafe { libc::_exit(crate::runtime::EXIT_NODE_LOST) }
        })
        .map(drop)
        .map_err(StartError::io("cannot start the standard-input watcher"))
}
