//! Start-up: the body of `#[rthreads::main]` ([`run_main`]). It reads the configuration
//! (`config`: every `RTHREADS_*` setting, in a table there), makes the binary load at the same
//! address on every node and finds out which node this is and where node 0 listens (`bootstrap`),
//! maps the shared space, starts the other nodes of an embedded cluster (`children`), joins the
//! mesh, installs the fault handler and the runtime, and runs `main` on node 0.
//!
//! - `config`: the settings, [`ConfigError`];
//! - `settings`: warnings for `RTHREADS_*` variables that are no setting, defaults that depend on
//!   the cluster;
//! - `bootstrap`: Slurm, Open MPI and PMI launchers, ports and the coordinator, the re-exec that
//!   turns address randomisation off, the binary's identity, joining the mesh;
//! - `children`: the nodes node 0 starts, their output, reaping them; the standard-input watcher.
//!
//! # Exit codes
//! Node 0's exit code is the program's. A node that stops because another node was lost (its
//! connection closed, it sent garbage, or it was silent for `RTHREADS_FAILURE_TIMEOUT`) prints
//! which node and why, tells the others, and exits with code 3; a node that cannot start exits
//! with code 2. `std::process::exit(n)` on any node ends the program with code `n`. A run that
//! cannot go on although every node is alive (a deadlock between threads, a fault or a service
//! thread that made no progress for the failure timeout) is reported and ends with code 4.

mod bootstrap;
mod children;
mod config;
mod settings;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ExitCode, Termination};
use std::time::{Duration, Instant};

use dsm::protocol::sc::ScNode;
use dsm::sys::PAGE_SIZE;
use dsm::{NodeId, PageId, Space, SpaceLayout};
use net::MeshError;

pub(crate) use self::children::wait_forwarders;
pub(crate) use self::config::ConfigError;
use crate::alloc::{Heap, InternalAlloc};
use crate::log::say;
use crate::runtime::{Extensions, NodeInfo, Runtime, Service};

/// Why this node could not start: it says so and exits with code 2.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// A mistake in the settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The re-executed process still has address randomisation on.
    #[error("address randomisation is still on after re-executing (is personality(2) blocked?)")]
    StillRandomised,
    /// A system call or thread of start-up failed: `personality(2)`, re-executing this program,
    /// reading it (for its identity), installing the fault handler, making the wake-up pipes of
    /// faulting threads, starting the service thread or the standard-input watcher.
    #[error("{doing}: {source}")]
    Io {
        /// What failed.
        doing: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The shared space could not be mapped.
    #[error(transparent)]
    MapSpace(io::Error),
    /// The trace (`RTHREADS_TRACE`), pinning (`RTHREADS_PIN`) or the forwarding of this node's
    /// output could not be started; the message says which.
    #[error("{0}")]
    Other(String),
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// Every port of `RTHREADS_PORT_RANGE` is taken.
    #[error("no free port in {lo}-{hi} on {ip} (RTHREADS_PORT_RANGE)")]
    NoFreePort {
        /// The address.
        ip: IpAddr,
        /// The range's first port.
        lo: u16,
        /// Its last.
        hi: u16,
    },
    /// `RTHREADS_LISTEN_FD` is not a listening socket.
    #[error("RTHREADS_LISTEN_FD={fd} is not a listening socket: {source}")]
    NotAListener {
        /// The descriptor.
        fd: i32,
        /// What asking for its address said.
        source: io::Error,
    },
    /// The listener's address could not be read.
    #[error(transparent)]
    Listener(io::Error),
    /// A node of the embedded cluster could not be started.
    #[error("starting {node}: {source}")]
    StartNode {
        /// The node.
        node: NodeId,
        /// Why.
        source: io::Error,
    },
    /// The thread forwarding a node's output could not be started.
    #[error("forwarding the output of {node}: {source}")]
    Forward {
        /// The node.
        node: NodeId,
        /// Why.
        source: io::Error,
    },
    /// The mesh did not form.
    #[error(transparent)]
    Mesh(#[from] MeshError),
}

impl StartError {
    /// What `map_err` makes of an I/O error while `doing` something.
    fn io(doing: &'static str) -> impl FnOnce(io::Error) -> StartError {
        move |source| StartError::Io { doing, source }
    }
}

/// A started node: its runtime, and on node 0 of an embedded cluster the other nodes.
struct Started {
    rt: &'static Runtime,
    children: Vec<Child>,
    /// `RTHREADS_STATS`: node 0 prints the statistics at the end.
    stats: bool,
}

fn start(default_nodes: u16, default_protocol: &str) -> Result<Started, StartError> {
    let cfg = config::config(default_nodes, default_protocol)?;
    bootstrap::ensure_fixed_layout()?;
    let nodes = u64::from(cfg.nodes);
    let per_node_pages = (cfg.space_size / PAGE_SIZE) as u64 / nodes;
    let layout =
        SpaceLayout { base: SpaceLayout::DEFAULT_BASE, size: (per_node_pages * nodes) as usize * PAGE_SIZE };
    let me = cfg.node;
    let home = PageId(per_node_pages * u64::from(me.0))..PageId(per_node_pages * (u64::from(me.0) + 1));
    let space = Space::map(layout, home.clone()).map_err(StartError::MapSpace)?;

    crate::trace::start(me).map_err(StartError::Other)?;
    let listener = bootstrap::bind(&cfg.listen)?;
    let mut children = Vec::new();
    let addr = listener.local_addr().map_err(StartError::Listener)?;
    if cfg.external {
        say(&format!("rthreads: node 0 listening on {addr}, waiting for {} node(s)", cfg.nodes - 1));
    }
    if me == NodeId(0) && cfg.embedded && cfg.nodes > 1 {
        children = children::start(&cfg, addr)?;
    }
    if cfg.pin {
        // After starting the other nodes, which must not inherit this node's CPU.
        crate::placement::pin(me).map_err(StartError::Other)?;
    }
    crate::placement::configure(cfg.placement, cfg.rebalance);
    let mut mesh =
        bootstrap::join(&cfg, listener, layout.size).inspect_err(|_| children::kill(&mut children))?;

    let faults = dsm::fault::install(layout).map_err(StartError::io("installing the fault handler"))?;
    if let Some(spin) = cfg.fault_spin {
        dsm::fault::set_spin(spin);
    }
    if cfg.wake_pipes {
        dsm::fault::set_wake_pipes(true).map_err(StartError::io("fault wake-up pipes"))?;
    }
    let slice = per_node_pages as usize * PAGE_SIZE;
    let heap = Heap::new(me.index(), usize::from(cfg.nodes), layout.base, slice, layout.addr_of(home.start));
    // Under release consistency each node's small-object region (object headers, `Arc` counts,
    // atomics, locks) stays sequentially consistent; see `alloc`.
    let lrc = cfg.lrc.then(|| {
        let small = (crate::alloc::small_region(slice) / PAGE_SIZE) as u64;
        let config = dsm::protocol::lrc::LrcConfig::default()
            .with_prefetch(cfg.prefetch)
            .with_adaptive(cfg.read_ahead)
            .with_own_after(cfg.own_after)
            .with_refresh(cfg.refresh);
        let config = (0..u64::from(cfg.nodes))
            .fold(config, |c, k| c.with_sc_pages(k * per_node_pages..k * per_node_pages + small));
        dsm::protocol::lrc::LrcNode::new(me, cfg.nodes, per_node_pages, config)
    });
    let streams = std::mem::take(&mut mesh.conns);
    mesh.conns = streams.iter().map(|s| s.as_ref().and_then(|s| s.try_clone().ok())).collect();
    mesh.barrier(cfg.timeout)?;
    let net::Mesh { parallelism, addrs, listener, .. } = mesh;
    let node = NodeInfo {
        me,
        nodes: cfg.nodes,
        parallelism,
        layout,
        slice,
        session: cfg.session,
        addrs,
        secret: cfg.secret.clone(),
        failure_timeout: cfg.failure_timeout,
        auth_timeout: cfg.auth_timeout,
    };
    // What the modules above the runtime do with their messages, on every turn and at the end.
    let mut ext = Extensions::default();
    crate::thread::wire::register(&mut ext);
    crate::topology::set_fanout(cfg.tree_fanout);
    crate::sync::register(&mut ext);
    crate::placement::register(&mut ext);
    crate::output::register(&mut ext);
    crate::stats::register(&mut ext);
    ext.on_stop(wait_forwarders);
    let rt = Runtime::install(node, heap, ext);
    let started = match lrc {
        Some(lrc) => Service::new(rt, space, lrc, streams, faults, listener).map(Service::start),
        None => {
            let sc = ScNode::new(me, cfg.nodes, per_node_pages)
                .with_read_ahead(cfg.read_ahead)
                .with_drops(cfg.drop_copies)
                .with_prefetch(cfg.drop_copies && cfg.barrier_prefetch);
            Service::new(rt, space, sc, streams, faults, listener).map(Service::start)
        }
    };
    started.map_err(StartError::io("starting the service thread"))?;
    crate::output::start(me, cfg.nodes).map_err(StartError::Other)?;
    if cfg.watch_stdin {
        children::watch_stdin(me)?;
    }
    Ok(Started { rt, children, stats: cfg.stats })
}

/// The body of `#[rthreads::main]`: starts this node, runs `body` on node 0 (the other nodes
/// serve until node 0 ends), shuts the cluster down and returns node 0's exit code.
#[doc(hidden)]
pub fn run_main<R: Termination>(default_nodes: u16, body: impl FnOnce() -> R) -> ExitCode {
    run_main_with(default_nodes, "sc", body)
}

/// [`run_main`] with the protocol to use when `RTHREADS_PROTOCOL` is unset (`"sc"` or `"lrc"`).
#[doc(hidden)]
pub fn run_main_with<R: Termination>(
    default_nodes: u16,
    protocol: &str,
    body: impl FnOnce() -> R,
) -> ExitCode {
    let started = InternalAlloc::with(|| start(default_nodes, protocol));
    let Started { rt, mut children, stats } = match started {
        Ok(s) => s,
        Err(e) => {
            let me = config::Env::process().get("RTHREADS_NODE_ID").unwrap_or_else(|| "0".into());
            say(&format!("rthreads: node {me}: cannot start: {e}"));
            return ExitCode::from(2);
        }
    };
    if rt.me != NodeId(0) {
        // Node 0 runs `main`; this node serves until the service thread exits the process.
        loop {
            std::thread::park();
        }
    }
    // On a stack in the shared space: scoped threads on other nodes can borrow main's locals,
    // and main can migrate.
    let code = crate::thread::run_main_fiber(body).map_or_else(|_| ExitCode::from(101), R::report);
    if stats {
        let all = crate::stats::stats();
        let _internal = InternalAlloc::new();
        say(&format!("rthreads statistics, per node:\n{}", crate::stats::StatsTable(&all)));
    }
    let _internal = InternalAlloc::new();
    rt.shutdown_cluster(0);
    // Every node has closed its connection, so all its output is queued here: write it out.
    crate::output::drain(Instant::now() + Duration::from_secs(5));
    children::reap(&mut children);
    crate::trace::flush();
    crate::trace::finish();
    code
}
