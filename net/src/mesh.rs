//! Cluster bootstrap: every node connects to every other over TCP, after a handshake that
//! refuses peers running another binary, belonging to another run, or set up differently.
//!
//! 1. Node 0 (the coordinator) listens. Every other node binds a listener of its own, connects to
//!    node 0 and sends a [`Hello`] naming its id, its listening address, its [`BinaryId`] and
//!    the run-wide settings it was started with.
//! 2. Node 0 checks each hello against its own. A mismatch is answered with a `Reject` whose text
//!    names what differs; the bad peer is logged and dropped, and node 0 keeps waiting for the
//!    right one until the start-up timeout. Once every node has said hello, node 0 sends each one
//!    the table of listening addresses (`Welcome`).
//! 3. Node `i` connects to every node `1..i` (sending the same hello, answered `Ack` or
//!    `Reject`), and accepts connections from every node above it. Lower nodes connect first, so
//!    nobody waits on a node that is itself waiting.
//! 4. [`Mesh::barrier`] then lets the runtime finish its own set-up before node 0 starts `main`.
//!
//! Every blocking step has a timeout, so a missing or broken peer ends start-up with an error
//! naming it, never with a hang.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use dsm::NodeId;

use crate::auth::{self, HandshakeError, Secret};
use crate::codec::{DecodeError, Reader, Writer};
use crate::frame::{read_frame, write_frame};

const MAGIC: u32 = 0x5254_4852; // "RTHR"
const VERSION: u16 = 2;
const HANDSHAKE_LIMIT: usize = 64 << 10;

const TAG_HELLO: u8 = 1;
const TAG_WELCOME: u8 = 2;
const TAG_REJECT: u8 = 3;
const TAG_ACK: u8 = 4;
const TAG_READY: u8 = 5;
const TAG_GO: u8 = 6;

/// What makes two processes the same program: every node must run the same binary loaded at the
/// same address, because closures travel as pointers into its code and data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinaryId {
    /// A 64-bit hash of the executable file's contents.
    pub hash: u64,
    /// The executable file's length in bytes.
    pub len: u64,
    /// The run-time address of a fixed function in the binary (its load address, in effect).
    pub anchor: u64,
}

impl fmt::Display for BinaryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hash {:016x}, {} bytes, loaded with anchor at {:#x}", self.hash, self.len, self.anchor)
    }
}

impl BinaryId {
    /// How `other` differs from `self` ([`Refusal::DifferentBinary`] or
    /// [`Refusal::LoadedElsewhere`]), or `None` if they match.
    pub fn mismatch(&self, other: &BinaryId) -> Option<Refusal> {
        if self.hash != other.hash || self.len != other.len {
            Some(Refusal::DifferentBinary { mine: *self, theirs: *other })
        } else if self.anchor != other.anchor {
            Some(Refusal::LoadedElsewhere { mine: self.anchor, theirs: other.anchor })
        } else {
            None
        }
    }
}

/// Why a hello could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// Truncated, or bytes left over.
    #[error("not an rthreads hello ({0})")]
    Malformed(#[from] DecodeError),
    /// Another tag or magic number: not an rthreads hello at all.
    #[error("not an rthreads hello (bad magic)")]
    BadMagic,
    /// An rthreads hello of another version of the handshake.
    #[error("protocol version {0}, expected {VERSION}")]
    Version(u16),
}

/// Why a node refuses a peer at the handshake. The text is sent to the peer (which reports it
/// as [`MeshError::Refused`]) and logged by the refusing node, which goes on waiting for the
/// right peer.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The peer runs another executable.
    #[error(
        "different binary: this node runs {mine}, the peer runs {theirs} (every node must run the same executable)"
    )]
    DifferentBinary {
        /// This node's binary.
        mine: BinaryId,
        /// The peer's.
        theirs: BinaryId,
    },
    /// The peer runs the same executable, loaded at another address.
    #[error(
        "same binary loaded at a different address (anchor {mine:#x} here, {theirs:#x} there): address randomisation must be off on every node"
    )]
    LoadedElsewhere {
        /// The anchor's address here.
        mine: u64,
        /// The anchor's address in the peer.
        theirs: u64,
    },
    /// The peer believes the cluster has another number of nodes.
    #[error("the peer expects {theirs} nodes, this cluster has {mine}")]
    NodeCount {
        /// Nodes of this cluster.
        mine: u16,
        /// Nodes the peer expects.
        theirs: u16,
    },
    /// The peer belongs to another run (another session id).
    #[error("the peer belongs to another run (session {theirs:x}, expected {mine:x})")]
    AnotherRun {
        /// This run's session.
        mine: u64,
        /// The peer's.
        theirs: u64,
    },
    /// The peer's node id is 0 or not below the node count.
    #[error("node id {} out of range 1..{nodes}", .node.0)]
    NodeOutOfRange {
        /// The peer's node id.
        node: NodeId,
        /// Nodes of this cluster.
        nodes: u16,
    },
    /// The peer runs with other run-wide settings ([`Hello::settings`]); the text names each
    /// `name=value` pair that differs.
    #[error("{}", settings_mismatch(.mine, .theirs))]
    DifferentSettings {
        /// This node's settings.
        mine: String,
        /// The peer's.
        theirs: String,
    },
    /// A second peer says hello with a node id that already joined.
    #[error("node id {} joined twice", .0.0)]
    JoinedTwice(NodeId),
    /// A node that should not connect to this one did (a lower node, or one already connected).
    #[error("unexpected connection from {0}")]
    Unexpected(NodeId),
    /// The peer failed authentication (it has already been refused by [`auth::accept_side`]).
    #[error("{peer}: {source}")]
    Unauthenticated {
        /// Where the peer connected from.
        peer: SocketAddr,
        /// Why it failed.
        source: HandshakeError,
    },
    /// The peer authenticated but sent no hello in time.
    #[error("no hello from {peer}: {source}")]
    NoHello {
        /// Where the peer connected from.
        peer: SocketAddr,
        /// The socket's error.
        source: io::Error,
    },
    /// The peer's first message is not a hello this node can read.
    #[error("from {peer}: {source}")]
    BadHello {
        /// Where the peer connected from.
        peer: SocketAddr,
        /// What is wrong with it.
        source: HelloError,
    },
}

/// The first message on every connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's node id.
    pub node: NodeId,
    /// How many nodes the sender believes the cluster has.
    pub nodes: u16,
    /// Identifies one cluster run, so a node of another run is refused.
    pub session: u64,
    /// The sender's program.
    pub binary: BinaryId,
    /// Where the sender accepts connections from higher nodes.
    pub listen: String,
    /// The sender's `available_parallelism`.
    pub parallelism: u32,
    /// The run-wide settings every node must share, as space-separated `name=value` pairs (for
    /// rthreads: the coherence protocol and the size of the shared space). A peer whose pairs
    /// differ is refused, with the pairs that differ named.
    pub settings: String,
}

impl Hello {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(TAG_HELLO).u32(MAGIC).u16(VERSION).u16(self.node.0).u16(self.nodes).u64(self.session);
        w.u64(self.binary.hash).u64(self.binary.len).u64(self.binary.anchor);
        w.str(&self.listen).u32(self.parallelism).str(&self.settings);
        w.finish()
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Hello, HelloError> {
        let mut r = Reader::new(body);
        if r.u8()? != TAG_HELLO || r.u32()? != MAGIC {
            return Err(HelloError::BadMagic);
        }
        let version = r.u16()?;
        if version != VERSION {
            return Err(HelloError::Version(version));
        }
        let hello = Hello {
            node: NodeId(r.u16()?),
            nodes: r.u16()?,
            session: r.u64()?,
            binary: BinaryId { hash: r.u64()?, len: r.u64()?, anchor: r.u64()? },
            listen: r.str()?.to_owned(),
            parallelism: r.u32()?,
            settings: r.str()?.to_owned(),
        };
        r.end()?;
        Ok(hello)
    }
}

/// Why this node could not join the cluster. Every variant names the peer and the step where
/// there is one.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The start-up timeout passed.
    #[error("cluster start-up timed out")]
    TimedOut,
    /// Node 0 stopped waiting (for `source`, most often [`MeshError::TimedOut`]) before these
    /// nodes said an acceptable hello.
    #[error("{source}: node(s) {} never joined", node_list(.missing))]
    NeverJoined {
        /// The nodes that never joined.
        missing: Vec<NodeId>,
        /// Why node 0 stopped waiting.
        source: Box<MeshError>,
    },
    /// This node's listener failed.
    #[error("listener: {0}")]
    Listener(io::Error),
    /// Accepting a connection failed.
    #[error("accept: {0}")]
    Accept(io::Error),
    /// Setting up an accepted connection failed.
    #[error("{0}")]
    Socket(io::Error),
    /// A node other than 0 was given no coordinator address.
    #[error("no coordinator address (RTHREADS_COORDINATOR)")]
    NoCoordinator,
    /// Connecting to a node failed: `source` is [`MeshError::TimedOut`] or
    /// [`MeshError::Connect`].
    #[error("cannot reach {node} at {addr}: {source}")]
    Unreachable {
        /// The node.
        node: NodeId,
        /// Where it was looked for.
        addr: SocketAddr,
        /// Why it could not be reached.
        source: Box<MeshError>,
    },
    /// A connection attempt failed other than by being refused (refused ones are retried).
    #[error("{0}")]
    Connect(io::Error),
    /// The authentication exchange with a node this node connected to failed.
    #[error("{node} at {addr}: {source}")]
    Auth {
        /// The node.
        node: NodeId,
        /// Its address.
        addr: SocketAddr,
        /// What went wrong: for a wrong secret, [`HandshakeError::Refused`].
        source: HandshakeError,
    },
    /// A node refused this one's hello, with the reason it gave (the text of a [`Refusal`]).
    #[error("{node} refused this node: {reason}")]
    Refused {
        /// The node that refused.
        node: NodeId,
        /// Its reason.
        reason: String,
    },
    /// Sending a handshake message failed.
    #[error("{what} to {node}: {source}")]
    Send {
        /// The message: "hello", "welcome", "ack", "ready", "go".
        what: &'static str,
        /// The node it was for.
        node: NodeId,
        /// The socket's error.
        source: io::Error,
    },
    /// A node's answer did not come.
    #[error("no {what} from {node}: {source}")]
    NoReply {
        /// The answer awaited: "answer" (to a hello), "go".
        what: &'static str,
        /// The node.
        node: NodeId,
        /// The socket's error (a timeout, a closed connection).
        source: io::Error,
    },
    /// A node did not say it was ready at the start-up barrier.
    #[error("{node} not ready: {source}")]
    NotReady {
        /// The node.
        node: NodeId,
        /// The socket's error.
        source: io::Error,
    },
    /// A node sent another message than the one the handshake expects next.
    #[error("{node} sent garbage instead of {what}")]
    Garbage {
        /// The message expected: "a welcome", "an ack", "ready", "go".
        what: &'static str,
        /// The node.
        node: NodeId,
    },
    /// Node 0's address table could not be read.
    #[error("bad welcome from node 0: {0}")]
    BadWelcome(DecodeError),
    /// The address table gives a node an address that is not one.
    #[error("bad address for {node}: {addr:?}")]
    BadAddress {
        /// The node.
        node: NodeId,
        /// What the table says.
        addr: String,
    },
    /// [`Mesh::barrier`] on a node that has no connection to node 0.
    #[error("no connection to {0}")]
    NoConnection(NodeId),
}

/// `1, 2, 5`.
fn node_list(nodes: &[NodeId]) -> String {
    nodes.iter().map(|n| n.0.to_string()).collect::<Vec<_>>().join(", ")
}

/// How this node joins the cluster.
#[derive(Debug)]
pub struct MeshConfig {
    /// This node's hello (its `listen` field is filled in from `listener`).
    pub hello: Hello,
    /// Where this node accepts connections (node 0: the coordinator address).
    pub listener: TcpListener,
    /// Node 0's address; ignored on node 0.
    pub coordinator: Option<SocketAddr>,
    /// The bound on the whole start-up.
    pub timeout: Duration,
    /// The cluster secret every connection is authenticated with (see [`crate::auth`]).
    pub secret: Secret,
    /// (Node 0's choice, passed on in the welcome) connect only to node 0 now, and to the other
    /// nodes when first needed; otherwise connect every pair before start-up ends.
    pub lazy: bool,
}

/// A fully connected cluster, seen from one node.
#[derive(Debug)]
pub struct Mesh {
    /// This node.
    pub me: NodeId,
    /// The number of nodes.
    pub nodes: u16,
    /// The connection to each node (`None` for this node itself).
    pub conns: Vec<Option<TcpStream>>,
    /// Each node's `available_parallelism`.
    pub parallelism: Vec<u32>,
    /// Each node's listening address (where it accepts more connections after start-up).
    pub addrs: Vec<String>,
    /// Whether only the connections with node 0 were made (see [`MeshConfig::lazy`]).
    pub lazy: bool,
    /// This node's listener, kept for connections made after start-up.
    pub listener: TcpListener,
}

fn reject(stream: &mut TcpStream, reason: &str) {
    let mut w = Writer::new();
    w.u8(TAG_REJECT).str(reason);
    let _ = write_frame(stream, &w.finish());
}

pub(crate) fn check_peer(mine: &Hello, theirs: &Hello) -> Result<(), Refusal> {
    if let Some(m) = mine.binary.mismatch(&theirs.binary) {
        return Err(m);
    }
    if theirs.nodes != mine.nodes {
        return Err(Refusal::NodeCount { mine: mine.nodes, theirs: theirs.nodes });
    }
    if theirs.session != mine.session {
        return Err(Refusal::AnotherRun { mine: mine.session, theirs: theirs.session });
    }
    if theirs.node == NodeId(0) || theirs.node.0 >= mine.nodes {
        return Err(Refusal::NodeOutOfRange { node: theirs.node, nodes: mine.nodes });
    }
    if theirs.settings != mine.settings {
        return Err(Refusal::DifferentSettings {
            mine: mine.settings.clone(),
            theirs: theirs.settings.clone(),
        });
    }
    Ok(())
}

/// Names the `name=value` pairs on which two settings strings differ.
fn settings_mismatch(mine: &str, theirs: &str) -> String {
    let pairs = |s: &str| -> BTreeMap<String, String> {
        s.split_whitespace()
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    };
    let (a, b) = (pairs(mine), pairs(theirs));
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let show = |v: Option<&String>| v.map_or("(unset)", String::as_str).to_owned();
    let mut diffs: Vec<String> = names
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: the peer has {}, this cluster {}", show(b.get(k)), show(a.get(k))))
        .collect();
    if diffs.is_empty() {
        diffs.push(format!("the peer has \"{theirs}\", this cluster \"{mine}\""));
    }
    format!("different settings ({}); every node must run with the same ones", diffs.join("; "))
}

/// Sleeps until `fd` is readable (for a listener: a connection waits to be accepted), a signal
/// arrives, or `limit` (at most a second) passes; the caller looks again either way. Node 0 wakes
/// as each node connects instead of polling every few milliseconds, which a 4-node start-up of
/// 15 ms would notice.
fn wait_readable(fd: std::os::fd::RawFd, limit: Duration) {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = limit.as_millis().clamp(1, 1000) as libc::c_int;
    // SAFETY: one valid `pollfd`, alive for the call.
    unsafe { libc::poll(&mut p, 1, ms) };
}

fn remaining(deadline: Instant) -> Result<Duration, MeshError> {
    deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or(MeshError::TimedOut)
}

/// Accepts one connection before `deadline`, authenticates it and reads its hello.
///
/// A peer that fails authentication has already been refused; the caller only logs it.
fn accept_hello(
    listener: &TcpListener,
    deadline: Instant,
    secret: &Secret,
) -> Result<(TcpStream, Result<Hello, Refusal>), MeshError> {
    listener.set_nonblocking(true).map_err(MeshError::Listener)?;
    loop {
        match listener.accept() {
            Ok((mut s, peer)) => {
                s.set_nonblocking(false).map_err(MeshError::Socket)?;
                s.set_nodelay(true).ok();
                if let Err(source) = auth::accept_side(&mut s, secret) {
                    return Ok((s, Err(Refusal::Unauthenticated { peer, source })));
                }
                s.set_read_timeout(Some(remaining(deadline)?.min(Duration::from_secs(10)))).ok();
                let hello = read_frame(&mut s, HANDSHAKE_LIMIT)
                    .map_err(|source| Refusal::NoHello { peer, source })
                    .and_then(|b| Hello::decode(&b).map_err(|source| Refusal::BadHello { peer, source }));
                return Ok((s, hello));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_readable(listener.as_raw_fd(), remaining(deadline)?);
            }
            Err(e) => return Err(MeshError::Accept(e)),
        }
    }
}

/// Node `node`'s answer to this node's hello: its body, unless it is a refusal.
fn expect_answer(s: &mut TcpStream, node: NodeId) -> Result<Vec<u8>, MeshError> {
    let body = read_frame(s, HANDSHAKE_LIMIT).map_err(|source| MeshError::NoReply {
        what: "answer",
        node,
        source,
    })?;
    if body[0] == TAG_REJECT {
        let mut r = Reader::new(&body[1..]);
        let reason = r.str().unwrap_or("(unreadable reason)").to_owned();
        return Err(MeshError::Refused { node, reason });
    }
    Ok(body)
}

/// Joins the cluster: returns once this node is connected to every other node.
///
/// # Errors
/// A [`MeshError`] naming the peer and the cause: a refused handshake
/// ([`MeshError::Refused`]: another binary, another run, a bad node id), a peer that never came
/// ([`MeshError::NeverJoined`], [`MeshError::Unreachable`]), a failed authentication
/// ([`MeshError::Auth`]), or a socket error; always within `cfg.timeout`.
pub fn establish(mut cfg: MeshConfig) -> Result<Mesh, MeshError> {
    let deadline = Instant::now() + cfg.timeout;
    let me = cfg.hello.node;
    let nodes = cfg.hello.nodes;
    let n = usize::from(nodes);
    cfg.hello.listen = cfg.listener.local_addr().map_err(MeshError::Listener)?.to_string();
    let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    let mut parallelism = vec![0u32; n];
    parallelism[me.index()] = cfg.hello.parallelism;
    let mut table = vec![String::new(); n];
    if me == NodeId(0) {
        let mut joined = 1;
        while joined < n {
            let (mut s, hello) = accept_hello(&cfg.listener, deadline, &cfg.secret).map_err(|e| {
                let missing = NodeId::all(nodes).skip(1).filter(|i| conns[i.index()].is_none()).collect();
                MeshError::NeverJoined { missing, source: Box::new(e) }
            })?;
            let verdict = hello.and_then(|h| {
                check_peer(&cfg.hello, &h)?;
                if conns[h.node.index()].is_some() {
                    return Err(Refusal::JoinedTwice(h.node));
                }
                Ok(h)
            });
            match verdict {
                Ok(h) => {
                    let i = h.node.index();
                    parallelism[i] = h.parallelism;
                    table[i] = h.listen;
                    conns[i] = Some(s);
                    joined += 1;
                }
                Err(reason) => {
                    eprintln!("rthreads: node 0 refused a peer: {reason}");
                    reject(&mut s, &reason.to_string());
                }
            }
        }
        table[0] = cfg.hello.listen.clone();
        let mut w = Writer::new();
        w.u8(TAG_WELCOME);
        for i in 0..n {
            w.str(&table[i]).u32(parallelism[i]);
        }
        w.u8(u8::from(cfg.lazy));
        let welcome = w.finish();
        for (node, s) in NodeId::all(nodes).zip(conns.iter_mut()) {
            if let Some(s) = s {
                write_frame(s, &welcome).map_err(|source| MeshError::Send {
                    what: "welcome",
                    node,
                    source,
                })?;
            }
        }
    } else {
        let coord = cfg.coordinator.ok_or(MeshError::NoCoordinator)?;
        let mut s = connect(coord, deadline).map_err(|e| MeshError::Unreachable {
            node: NodeId(0),
            addr: coord,
            source: Box::new(e),
        })?;
        // Node 0 authenticates the nodes one after another: in a cluster of hundreds the last wait
        // for their challenge about 100 ms per node ahead of them.
        let queue = auth::AUTH_TIMEOUT + Duration::from_millis(100) * u32::from(nodes);
        auth::connect_side_waiting(&mut s, &cfg.secret, queue.min(remaining(deadline)?))
            .map_err(|source| MeshError::Auth { node: NodeId(0), addr: coord, source })?;
        // Listening on every interface: tell the others the address node 0 sees this node at.
        if let Ok(bound) = cfg.listener.local_addr()
            && bound.ip().is_unspecified()
            && let Ok(local) = s.local_addr()
        {
            cfg.hello.listen = SocketAddr::new(local.ip(), bound.port()).to_string();
        }
        write_frame(&mut s, &cfg.hello.encode()).map_err(|source| MeshError::Send {
            what: "hello",
            node: NodeId(0),
            source,
        })?;
        let body = expect_answer(&mut s, NodeId(0))?;
        let mut r = Reader::new(&body);
        if r.u8().map_err(MeshError::BadWelcome)? != TAG_WELCOME {
            return Err(MeshError::Garbage { what: "a welcome", node: NodeId(0) });
        }
        for i in 0..n {
            table[i] = r.str().map_err(MeshError::BadWelcome)?.to_owned();
            parallelism[i] = r.u32().map_err(MeshError::BadWelcome)?;
        }
        cfg.lazy = r.u8().map_err(MeshError::BadWelcome)? != 0;
        conns[0] = Some(s);
        // Node 0 may listen on every interface: reach it later where this node reached it now.
        table[0] = coord.to_string();
        let eager = if cfg.lazy { 0 } else { me.0 };
        for node in NodeId::all(eager).skip(1) {
            let j = node.index();
            let addr: SocketAddr =
                table[j].parse().map_err(|_| MeshError::BadAddress { node, addr: table[j].clone() })?;
            let mut s = connect(addr, deadline).map_err(|e| MeshError::Unreachable {
                node,
                addr,
                source: Box::new(e),
            })?;
            // Each node accepts the nodes above it one after another, as node 0 does.
            let queue = auth::AUTH_TIMEOUT + Duration::from_millis(100) * u32::from(nodes);
            auth::connect_side_waiting(&mut s, &cfg.secret, queue.min(remaining(deadline)?))
                .map_err(|source| MeshError::Auth { node, addr, source })?;
            write_frame(&mut s, &cfg.hello.encode()).map_err(|source| MeshError::Send {
                what: "hello",
                node,
                source,
            })?;
            let body = expect_answer(&mut s, node)?;
            if body[0] != TAG_ACK {
                return Err(MeshError::Garbage { what: "an ack", node });
            }
            conns[j] = Some(s);
        }
        let mut expected = if cfg.lazy { 0 } else { n - 1 - me.index() };
        while expected > 0 {
            let (mut s, hello) = accept_hello(&cfg.listener, deadline, &cfg.secret)?;
            let verdict = hello.and_then(|h| {
                check_peer(&cfg.hello, &h)?;
                if h.node <= me || conns[h.node.index()].is_some() {
                    return Err(Refusal::Unexpected(h.node));
                }
                Ok(h)
            });
            match verdict {
                Ok(h) => {
                    write_frame(&mut s, &[TAG_ACK]).map_err(|source| MeshError::Send {
                        what: "ack",
                        node: h.node,
                        source,
                    })?;
                    conns[h.node.index()] = Some(s);
                    expected -= 1;
                }
                Err(reason) => {
                    eprintln!("rthreads: {me} refused a peer: {reason}");
                    reject(&mut s, &reason.to_string());
                }
            }
        }
    }
    Ok(Mesh { me, nodes, conns, parallelism, addrs: table, listener: cfg.listener, lazy: cfg.lazy })
}

/// Connects to `addr`, retrying while the connection is refused (the node is not listening yet).
///
/// # Errors
/// [`MeshError::TimedOut`] past `deadline`, [`MeshError::Connect`] for any other error.
fn connect(addr: SocketAddr, deadline: Instant) -> Result<TcpStream, MeshError> {
    loop {
        let left = remaining(deadline)?;
        match TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(5))) {
            Ok(s) => {
                s.set_read_timeout(Some(left)).ok();
                s.set_nodelay(true).ok();
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(MeshError::Connect(e)),
        }
    }
}

impl Mesh {
    /// Waits until every node has called `barrier` (all runtimes are up), within `timeout`.
    ///
    /// # Errors
    /// A node that does not arrive in time, or a lost connection, named
    /// ([`MeshError::NotReady`], [`MeshError::NoReply`], [`MeshError::Send`],
    /// [`MeshError::Garbage`]).
    pub fn barrier(&mut self, timeout: Duration) -> Result<(), MeshError> {
        let set = |s: &mut TcpStream| s.set_read_timeout(Some(timeout)).ok();
        if self.me == NodeId(0) {
            for (node, s) in NodeId::all(self.nodes).zip(self.conns.iter_mut()) {
                if let Some(s) = s {
                    set(s);
                    let body = read_frame(s, HANDSHAKE_LIMIT)
                        .map_err(|source| MeshError::NotReady { node, source })?;
                    if body != [TAG_READY] {
                        return Err(MeshError::Garbage { what: "ready", node });
                    }
                }
            }
            for (node, s) in NodeId::all(self.nodes).zip(self.conns.iter_mut()) {
                if let Some(s) = s {
                    write_frame(s, &[TAG_GO]).map_err(|source| MeshError::Send {
                        what: "go",
                        node,
                        source,
                    })?;
                }
            }
        } else {
            let s = self.conns[0].as_mut().ok_or(MeshError::NoConnection(NodeId(0)))?;
            set(s);
            write_frame(s, &[TAG_READY]).map_err(|source| MeshError::Send {
                what: "ready",
                node: NodeId(0),
                source,
            })?;
            let body = read_frame(s, HANDSHAKE_LIMIT).map_err(|source| MeshError::NoReply {
                what: "go",
                node: NodeId(0),
                source,
            })?;
            if body != [TAG_GO] {
                return Err(MeshError::Garbage { what: "go", node: NodeId(0) });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(node: u16, nodes: u16, hash: u64) -> Hello {
        Hello {
            node: NodeId(node),
            nodes,
            session: 7,
            binary: BinaryId { hash, len: 10, anchor: 0x1000 },
            listen: String::new(),
            parallelism: 2,
            settings: "protocol=sc space=1024".into(),
        }
    }

    fn cfg(h: Hello, listener: TcpListener, coord: Option<SocketAddr>) -> MeshConfig {
        MeshConfig {
            hello: h,
            listener,
            coordinator: coord,
            timeout: Duration::from_secs(10),
            secret: Secret::from_text("test secret").unwrap(),
            lazy: false,
        }
    }

    #[test]
    fn four_nodes_form_a_full_mesh() {
        let l0 = TcpListener::bind("127.0.0.1:0").unwrap();
        let coord = l0.local_addr().unwrap();
        let mut threads = Vec::new();
        for i in 1..4u16 {
            threads.push(std::thread::spawn(move || {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                let mut m = establish(cfg(hello(i, 4, 1), l, Some(coord))).unwrap();
                m.barrier(Duration::from_secs(10)).unwrap();
                m
            }));
        }
        let mut m0 = establish(cfg(hello(0, 4, 1), l0, None)).unwrap();
        m0.barrier(Duration::from_secs(10)).unwrap();
        let meshes: Vec<Mesh> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        for m in meshes.iter().chain(std::iter::once(&m0)) {
            assert_eq!(m.conns.iter().filter(|c| c.is_some()).count(), 3);
            assert!(m.conns[m.me.index()].is_none());
            assert_eq!(m.parallelism, vec![2; 4]);
        }
    }

    #[test]
    fn a_different_binary_is_refused_with_a_reason() {
        let l0 = TcpListener::bind("127.0.0.1:0").unwrap();
        let coord = l0.local_addr().unwrap();
        let bad = std::thread::spawn(move || {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            establish(cfg(hello(1, 2, 999), l, Some(coord))).unwrap_err()
        });
        let mut c = cfg(hello(0, 2, 1), l0, None);
        c.timeout = Duration::from_millis(1500);
        let e0 = establish(c).unwrap_err();
        let e1 = bad.join().unwrap();
        // The peer's reason travels as text: node 1 sees what node 0's refusal says.
        assert!(
            matches!(&e1, MeshError::Refused { node: NodeId(0), reason } if reason.starts_with("different binary: ")),
            "{e1:?}"
        );
        assert!(
            matches!(&e0, MeshError::NeverJoined { missing, source } if *missing == [NodeId(1)]
                && matches!(**source, MeshError::TimedOut)),
            "{e0:?}"
        );
        assert_eq!(e0.to_string(), "cluster start-up timed out: node(s) 1 never joined");
    }

    #[test]
    fn every_difference_of_a_hello_has_its_refusal() {
        let mine = hello(0, 4, 1);
        let peer = Hello { node: NodeId(2), ..mine.clone() };
        assert!(check_peer(&mine, &peer).is_ok());
        let verdict = |theirs: Hello| check_peer(&mine, &theirs).unwrap_err();
        assert!(matches!(
            verdict(Hello { binary: BinaryId { hash: 2, ..peer.binary }, ..peer.clone() }),
            Refusal::DifferentBinary { mine: BinaryId { hash: 1, .. }, theirs: BinaryId { hash: 2, .. } }
        ));
        assert!(matches!(
            verdict(Hello { binary: BinaryId { anchor: 0x2000, ..peer.binary }, ..peer.clone() }),
            Refusal::LoadedElsewhere { mine: 0x1000, theirs: 0x2000 }
        ));
        assert!(matches!(
            verdict(Hello { nodes: 3, ..peer.clone() }),
            Refusal::NodeCount { mine: 4, theirs: 3 }
        ));
        assert!(matches!(
            verdict(Hello { session: 8, ..peer.clone() }),
            Refusal::AnotherRun { mine: 7, theirs: 8 }
        ));
        assert!(matches!(
            verdict(Hello { node: NodeId(0), ..peer.clone() }),
            Refusal::NodeOutOfRange { node: NodeId(0), nodes: 4 }
        ));
        assert!(matches!(
            verdict(Hello { node: NodeId(4), ..peer.clone() }),
            Refusal::NodeOutOfRange { node: NodeId(4), nodes: 4 }
        ));
        assert!(matches!(
            verdict(Hello { settings: "protocol=lrc space=1024".into(), ..peer.clone() }),
            Refusal::DifferentSettings { .. }
        ));
        // The texts other tests and people look for.
        let e = verdict(Hello { binary: BinaryId { anchor: 0x2000, ..peer.binary }, ..peer.clone() });
        assert!(
            e.to_string()
                .starts_with("same binary loaded at a different address (anchor 0x1000 here, 0x2000 there)")
        );
        let e = verdict(Hello { session: 0x1f, ..peer });
        assert_eq!(e.to_string(), "the peer belongs to another run (session 1f, expected 7)");
    }

    #[test]
    fn different_settings_are_refused_naming_the_setting() {
        let mine = hello(0, 2, 1);
        let theirs = Hello { node: NodeId(1), settings: "protocol=lrc space=1024".into(), ..mine.clone() };
        let e = check_peer(&mine, &theirs).unwrap_err();
        assert!(
            matches!(&e, Refusal::DifferentSettings { mine, theirs } if mine.contains("sc") && theirs.contains("lrc"))
        );
        // The text names the pairs that differ, and only those.
        let e = e.to_string();
        assert!(
            e.contains("different settings") && e.contains("protocol: the peer has lrc, this cluster sc"),
            "{e}"
        );
        assert!(!e.contains("space"), "{e}");
        let odd = Hello { node: NodeId(1), settings: "protocol=sc".into(), ..mine.clone() };
        let e = check_peer(&mine, &odd).unwrap_err().to_string();
        assert!(e.contains("space: the peer has (unset), this cluster 1024"), "{e}");
        assert!(check_peer(&mine, &Hello { node: NodeId(1), ..mine.clone() }).is_ok());
    }

    #[test]
    fn garbage_instead_of_a_hello_is_refused() {
        let l0 = TcpListener::bind("127.0.0.1:0").unwrap();
        let coord = l0.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut s = TcpStream::connect(coord).unwrap();
            use std::io::Write;
            s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            let mut s2 = TcpStream::connect(coord).unwrap();
            auth::connect_side(&mut s2, &Secret::from_text("test secret").unwrap()).unwrap();
            write_frame(&mut s2, &hello(1, 2, 1).encode()).unwrap();
            s2
        });
        let m = establish(cfg(hello(0, 2, 1), l0, None)).unwrap();
        assert!(m.conns[1].is_some());
        drop(t.join().unwrap());
    }

    #[test]
    fn a_wrong_secret_is_refused_and_the_cluster_still_forms() {
        let l0 = TcpListener::bind("127.0.0.1:0").unwrap();
        let coord = l0.local_addr().unwrap();
        let intruder = std::thread::spawn(move || {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut c = cfg(hello(1, 2, 1), l, Some(coord));
            c.secret = Secret::from_text("guessed").unwrap();
            establish(c).unwrap_err()
        });
        let node0 = std::thread::spawn(move || {
            let mut m0 = establish(cfg(hello(0, 2, 1), l0, None)).unwrap();
            m0.barrier(Duration::from_secs(10)).unwrap();
            m0
        });
        let e = intruder.join().unwrap();
        assert!(
            matches!(&e, MeshError::Auth { node: NodeId(0), addr, source: HandshakeError::Refused(reason) }
                if *addr == coord && *reason == auth::AuthError::WrongSecret.to_string()),
            "{e:?}"
        );
        let l = TcpListener::bind("0.0.0.0:0").unwrap();
        let mut m1 = establish(cfg(hello(1, 2, 1), l, Some(coord))).unwrap();
        m1.barrier(Duration::from_secs(10)).unwrap();
        let m0 = node0.join().unwrap();
        assert!(m0.conns[1].is_some() && m1.conns[0].is_some());
        // Node 1 listens on every interface and is advertised at the address node 0 sees it at.
        assert!(m0.addrs[1].starts_with("127.0.0.1:"), "{}", m0.addrs[1]);
        assert_eq!(m1.addrs[0], coord.to_string());
    }

    #[test]
    fn hello_decoding_never_panics_on_truncation() {
        let b = hello(1, 2, 3).encode();
        for cut in 0..b.len() {
            assert!(matches!(Hello::decode(&b[..cut]), Err(HelloError::Malformed(_))), "cut at {cut}");
        }
        assert_eq!(Hello::decode(&b).unwrap(), hello(1, 2, 3));
        let mut longer = b.clone();
        longer.push(0);
        assert!(matches!(Hello::decode(&longer), Err(HelloError::Malformed(_))));
        let mut other_magic = b.clone();
        other_magic[1] ^= 1;
        assert_eq!(Hello::decode(&other_magic), Err(HelloError::BadMagic));
        let mut other_version = b;
        other_version[5] = other_version[5].wrapping_add(1);
        assert_eq!(Hello::decode(&other_version), Err(HelloError::Version(VERSION + 1)));
    }
}
