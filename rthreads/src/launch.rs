//! Start-up: configuration from the environment, the re-exec that disables address
//! randomisation, the embedded local cluster, and the body of `#[rthreads::main]`.
//!
//! # Configuration
//! | variable | meaning | default |
//! |---|---|---|
//! | `RTHREADS_NODES` | number of nodes | 4, or `#[rthreads::main(nodes = N)]` |
//! | `RTHREADS_NODE_ID` | this process is node N of a cluster started elsewhere (set by the launcher for the nodes it starts) | unset: this process is node 0 and starts the others |
//! | `RTHREADS_COORDINATOR` | `host:port` of node 0 (nodes other than 0) | |
//! | `RTHREADS_BIND` | address this node listens on | `127.0.0.1:0` |
//! | `RTHREADS_EXTERNAL` | on node 0: do not start the other nodes, wait for them to connect | unset |
//! | `RTHREADS_SESSION` | identifies the run; nodes of another run are refused | random, set by node 0 for the nodes it starts |
//! | `RTHREADS_SPACE_SIZE` | bytes of shared address space (suffix K, M, G allowed) | 64G |
//! | `RTHREADS_STARTUP_TIMEOUT` | seconds a node waits for the cluster to form | 60 |
//! | `RTHREADS_TRACE` | write a Chrome trace-event JSON file of the run to this path | off |
//! | `RTHREADS_TRACE_EVENTS` | events each node can hold in its trace buffer | 1048576 |
//! | `RTHREADS_FAULT_SPIN` | polls of its page a faulting thread makes before it sleeps | 2000 |
//! | `RTHREADS_POLL_US` | the service thread polls this long while a fault waits | 0 |
//! | `RTHREADS_PREFIX` | node 0 prefixes the output lines it forwards with `[node N] ` | off |
//!
//! # Why the re-exec
//! Closures travel between nodes as pointers, and they point into the binary: code, vtables,
//! string literals, `&'static` tables. So every node must load the binary at the same address.
//! Each process turns address randomisation off *for itself* (`personality(ADDR_NO_RANDOMIZE)`,
//! inherited by the nodes it starts) and re-executes itself once; the machine's setting is not
//! touched. The handshake then checks that every node's binary is the same file, loaded at the
//! same address, and refuses a node that differs, naming the difference.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio, Termination};
use std::time::{Duration, Instant};

use dsm::protocol::sc::ScNode;
use dsm::sys::PAGE_SIZE;
use dsm::{NodeId, PageId, Space, SpaceLayout};
use net::{BinaryId, Hello, MeshConfig};

use crate::alloc::{Heap, InternalAlloc};
use crate::runtime::{NodeInfo, Runtime, Service};

struct Config {
    node: u16,
    nodes: u16,
    embedded: bool,
    coordinator: Option<SocketAddr>,
    bind: String,
    session: u64,
    space_size: usize,
    timeout: Duration,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_size(v: &str) -> Option<usize> {
    let v = v.trim();
    let (num, mul) = match v.as_bytes().last()? {
        b'K' | b'k' => (&v[..v.len() - 1], 1usize << 10),
        b'M' | b'm' => (&v[..v.len() - 1], 1 << 20),
        b'G' | b'g' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mul)
}

fn config(default_nodes: u16) -> Result<Config, String> {
    let nodes: u16 = match env("RTHREADS_NODES") {
        Some(v) => v
            .parse()
            .ok()
            .filter(|&n| (1..=1024).contains(&n))
            .ok_or(format!("RTHREADS_NODES={v}: expected 1..=1024"))?,
        None => default_nodes,
    };
    let (node, embedded) = match env("RTHREADS_NODE_ID") {
        Some(v) => (
            v.parse()
                .ok()
                .filter(|&n| n < nodes)
                .ok_or(format!("RTHREADS_NODE_ID={v}: expected 0..{nodes}"))?,
            false,
        ),
        None => (0, env("RTHREADS_EXTERNAL").is_none()),
    };
    let coordinator = match env("RTHREADS_COORDINATOR") {
        Some(v) => Some(
            std::net::ToSocketAddrs::to_socket_addrs(&v)
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(format!("RTHREADS_COORDINATOR={v}: not a host:port"))?,
        ),
        None if node != 0 => return Err("RTHREADS_COORDINATOR must name node 0's host:port".into()),
        None => None,
    };
    let session = match env("RTHREADS_SESSION") {
        Some(v) => u64::from_str_radix(&v, 16).map_err(|_| format!("RTHREADS_SESSION={v}: expected hex"))?,
        None if embedded => random_u64(),
        None => 0,
    };
    let space_size = match env("RTHREADS_SPACE_SIZE") {
        Some(v) => parse_size(&v).ok_or(format!("RTHREADS_SPACE_SIZE={v}: expected a size like 16G"))?,
        None => SpaceLayout::DEFAULT_SIZE,
    };
    let timeout = match env("RTHREADS_STARTUP_TIMEOUT") {
        Some(v) => Duration::from_secs(
            v.parse().map_err(|_| format!("RTHREADS_STARTUP_TIMEOUT={v}: expected seconds"))?,
        ),
        None => Duration::from_secs(60),
    };
    Ok(Config {
        node,
        nodes,
        embedded,
        coordinator,
        bind: env("RTHREADS_BIND").unwrap_or_else(|| "127.0.0.1:0".into()),
        session,
        space_size,
        timeout,
    })
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok() {
        return u64::from_ne_bytes(b);
    }
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}

/// Turns address randomisation off for this process and re-executes it, unless already off.
fn ensure_fixed_layout() -> Result<(), String> {
    // SAFETY: querying the personality has no side effects.
    let persona = unsafe { libc::personality(0xffff_ffff) };
    if persona >= 0 && persona & libc::ADDR_NO_RANDOMIZE != 0 {
        return Ok(());
    }
    if env("RTHREADS_REEXEC").is_some() {
        return Err(
            "address randomisation is still on after re-executing (is personality(2) blocked?)".into()
        );
    }
    // SAFETY: setting the personality affects only this process and the programs it executes.
    if unsafe { libc::personality((persona.max(0) | libc::ADDR_NO_RANDOMIZE) as libc::c_ulong) } < 0 {
        return Err(format!("personality(ADDR_NO_RANDOMIZE): {}", io::Error::last_os_error()));
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    let err = Command::new("/proc/self/exe").arg0(arg0).args(args).env("RTHREADS_REEXEC", "1").exec();
    Err(format!("re-executing /proc/self/exe: {err}"))
}

/// What identifies this program: the executable's contents and where it is loaded.
fn binary_id() -> Result<BinaryId, String> {
    let bytes = std::fs::read("/proc/self/exe").map_err(|e| format!("reading /proc/self/exe: {e}"))?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        hash =
            (hash ^ u64::from_le_bytes(c.try_into().expect("8 bytes"))).wrapping_mul(0x0000_0100_0000_01b3);
        hash ^= hash >> 29;
    }
    for &b in chunks.remainder() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    Ok(BinaryId { hash, len: bytes.len() as u64, anchor: binary_id as *const () as usize as u64 })
}

fn start_children(cfg: &Config, coordinator: SocketAddr) -> Result<Vec<Child>, String> {
    let mut children = Vec::new();
    for i in 1..cfg.nodes {
        let mut cmd = Command::new("/proc/self/exe");
        let mut args = std::env::args_os();
        if let Some(a0) = args.next() {
            cmd.arg0(a0);
        }
        cmd.args(args)
            .env("RTHREADS_NODE_ID", i.to_string())
            .env("RTHREADS_NODES", cfg.nodes.to_string())
            .env("RTHREADS_COORDINATOR", coordinator.to_string())
            .env("RTHREADS_SESSION", format!("{:x}", cfg.session))
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
        let mut child = cmd.spawn().map_err(|e| format!("starting node {i}: {e}"))?;
        if let Some(out) = child.stdout.take() {
            forward(out, false, i)?;
        }
        if let Some(err) = child.stderr.take() {
            forward(err, true, i)?;
        }
        children.push(child);
    }
    Ok(children)
}

/// Forwarders still copying a node's output; node 0 waits for them before it exits.
static FORWARDERS: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> = std::sync::Mutex::new(Vec::new());

/// Copies node `node`'s stdout or stderr to this process's, one whole line per write, so lines of
/// different nodes never cut into each other (std writes stderr unbuffered, piece by piece). With
/// `RTHREADS_PREFIX=1` each line starts with `[node N] `.
fn forward(from: impl Read + Send + 'static, stderr: bool, node: u16) -> Result<(), String> {
    let prefix = env("RTHREADS_PREFIX").is_some_and(|v| v != "0").then(|| format!("[node {node}] "));
    let h = std::thread::Builder::new()
        .name(format!("rthreads-out-{node}"))
        .spawn(move || {
            crate::alloc::runtime_thread();
            let mut r = std::io::BufReader::new(from);
            let mut line = Vec::with_capacity(256);
            loop {
                line.clear();
                if let Some(p) = &prefix {
                    line.extend_from_slice(p.as_bytes());
                }
                match std::io::BufRead::read_until(&mut r, b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let _ = if stderr {
                    std::io::Write::write_all(&mut std::io::stderr().lock(), &line)
                } else {
                    let mut out = std::io::stdout().lock();
                    std::io::Write::write_all(&mut out, &line).and_then(|()| std::io::Write::flush(&mut out))
                };
            }
        })
        .map_err(|e| format!("forwarding the output of node {node}: {e}"))?;
    FORWARDERS.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    Ok(())
}

fn reap(children: &mut [Child]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for c in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }
    // The nodes are gone, so their pipes are at end of file: the forwarders finish their last
    // lines and stop.
    let forwarders = std::mem::take(&mut *FORWARDERS.lock().unwrap_or_else(|e| e.into_inner()));
    for h in forwarders {
        let _ = h.join();
    }
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

struct Started {
    rt: &'static Runtime,
    children: Vec<Child>,
}

fn start(default_nodes: u16) -> Result<Started, String> {
    let cfg = config(default_nodes)?;
    ensure_fixed_layout()?;
    let nodes = u64::from(cfg.nodes);
    let per_node_pages = (cfg.space_size / PAGE_SIZE) as u64 / nodes;
    if per_node_pages < 1024 {
        return Err(format!("RTHREADS_SPACE_SIZE={} is too small for {nodes} nodes", cfg.space_size));
    }
    let layout =
        SpaceLayout { base: SpaceLayout::DEFAULT_BASE, size: (per_node_pages * nodes) as usize * PAGE_SIZE };
    let me = cfg.node;
    let home = PageId(per_node_pages * u64::from(me))..PageId(per_node_pages * (u64::from(me) + 1));
    let space = Space::map(layout, home.clone()).map_err(|e| e.to_string())?;

    crate::trace::start(me)?;
    let listener = TcpListener::bind(&cfg.bind).map_err(|e| format!("cannot listen on {}: {e}", cfg.bind))?;
    let mut children = Vec::new();
    if me == 0 && !cfg.embedded {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        eprintln!("rthreads: node 0 listening on {addr}, waiting for {} node(s)", cfg.nodes - 1);
    }
    if me == 0 && cfg.embedded && cfg.nodes > 1 {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        children = start_children(&cfg, addr)?;
    }
    let parallelism = std::thread::available_parallelism().map_or(1, |p| p.get() as u32);
    let hello = Hello {
        node: me,
        nodes: cfg.nodes,
        session: cfg.session,
        binary: binary_id()?,
        listen: String::new(),
        parallelism,
    };
    let mut mesh = net::mesh::establish(MeshConfig {
        hello,
        listener,
        coordinator: cfg.coordinator,
        timeout: cfg.timeout,
    })
    .map_err(|e| {
        for c in &mut children {
            let _ = c.kill();
        }
        e.to_string()
    })?;

    let faults = dsm::fault::install(layout).map_err(|e| format!("installing the fault handler: {e}"))?;
    if let Some(spin) = env("RTHREADS_FAULT_SPIN").and_then(|v| v.parse().ok()) {
        dsm::fault::set_spin(spin);
    }
    let slice = per_node_pages as usize * PAGE_SIZE;
    let heap =
        Heap::new(usize::from(me), usize::from(cfg.nodes), layout.base, slice, layout.addr_of(home.start));
    let sc = ScNode::new(NodeId(me), cfg.nodes, per_node_pages);
    let streams = std::mem::take(&mut mesh.conns);
    mesh.conns = streams.iter().map(|s| s.as_ref().and_then(|s| s.try_clone().ok())).collect();
    mesh.barrier(cfg.timeout).map_err(|e| e.to_string())?;
    let net::Mesh { parallelism, addrs, listener, .. } = mesh;
    let node = NodeInfo { me, nodes: cfg.nodes, parallelism, layout, slice, session: cfg.session, addrs };
    let rt = Runtime::install(node, heap);
    let service = Service::new(rt, space, sc, streams, faults, listener)
        .map_err(|e| format!("starting the service thread: {e}"))?;
    service.start();
    Ok(Started { rt, children })
}

/// The body of `#[rthreads::main]`: starts this node, runs `body` on node 0 (the other nodes
/// serve until node 0 ends), shuts the cluster down and returns node 0's exit code.
#[doc(hidden)]
pub fn run_main<R: Termination>(default_nodes: u16, body: impl FnOnce() -> R) -> ExitCode {
    let started = {
        let _internal = InternalAlloc::new();
        start(default_nodes)
    };
    let Started { rt, mut children } = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "rthreads: node {}: cannot start: {e}",
                env("RTHREADS_NODE_ID").unwrap_or_else(|| "0".into())
            );
            return ExitCode::from(2);
        }
    };
    if rt.me != 0 {
        // Node 0 runs `main`; this node serves until the service thread exits the process.
        loop {
            std::thread::park();
        }
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    let code = match outcome {
        Ok(r) => r.report(),
        Err(_) => ExitCode::from(101),
    };
    if env("RTHREADS_STATS").is_some_and(|v| v != "0") {
        let all = crate::stats::stats();
        let _internal = InternalAlloc::new();
        eprint!("rthreads statistics, per node:\n{}", crate::stats::StatsTable(&all));
    }
    let _internal = InternalAlloc::new();
    rt.shutdown_cluster(0);
    reap(&mut children);
    crate::trace::flush(0);
    crate::trace::finish();
    code
}
