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
use std::time::{Duration, Instant};

use crate::auth::{self, Secret};
use crate::codec::{Reader, Writer};
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
    /// Describes how `other` differs from `self`, or `None` if they match.
    pub fn mismatch(&self, other: &BinaryId) -> Option<String> {
        if self.hash != other.hash || self.len != other.len {
            Some(format!(
                "different binary: this node runs {self}, the peer runs {other} (every node must run the same executable)"
            ))
        } else if self.anchor != other.anchor {
            Some(format!(
                "same binary loaded at a different address (anchor {:#x} here, {:#x} there): address randomisation must be off on every node",
                self.anchor, other.anchor
            ))
        } else {
            None
        }
    }
}

/// The first message on every connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's node id.
    pub node: u16,
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
        w.u8(TAG_HELLO).u32(MAGIC).u16(VERSION).u16(self.node).u16(self.nodes).u64(self.session);
        w.u64(self.binary.hash).u64(self.binary.len).u64(self.binary.anchor);
        w.str(&self.listen).u32(self.parallelism).str(&self.settings);
        w.finish()
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Hello, String> {
        let mut r = Reader::new(body);
        let bad = |e: crate::codec::DecodeError| format!("not an rthreads hello ({e})");
        if r.u8().map_err(bad)? != TAG_HELLO || r.u32().map_err(bad)? != MAGIC {
            return Err("not an rthreads hello (bad magic)".into());
        }
        let version = r.u16().map_err(bad)?;
        if version != VERSION {
            return Err(format!("protocol version {version}, expected {VERSION}"));
        }
        let hello = Hello {
            node: r.u16().map_err(bad)?,
            nodes: r.u16().map_err(bad)?,
            session: r.u64().map_err(bad)?,
            binary: BinaryId {
                hash: r.u64().map_err(bad)?,
                len: r.u64().map_err(bad)?,
                anchor: r.u64().map_err(bad)?,
            },
            listen: r.str().map_err(bad)?.to_owned(),
            parallelism: r.u32().map_err(bad)?,
            settings: r.str().map_err(bad)?.to_owned(),
        };
        r.end().map_err(bad)?;
        Ok(hello)
    }
}

/// Start-up failed.
#[derive(Debug)]
pub struct MeshError(pub String);

impl fmt::Display for MeshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MeshError {}

fn err(msg: impl Into<String>) -> MeshError {
    MeshError(msg.into())
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
}

/// A fully connected cluster, seen from one node.
#[derive(Debug)]
pub struct Mesh {
    /// This node.
    pub me: u16,
    /// The number of nodes.
    pub nodes: u16,
    /// The connection to each node (`None` for this node itself).
    pub conns: Vec<Option<TcpStream>>,
    /// Each node's `available_parallelism`.
    pub parallelism: Vec<u32>,
    /// Each node's listening address (where it accepts more connections after start-up).
    pub addrs: Vec<String>,
    /// This node's listener, kept for connections made after start-up.
    pub listener: TcpListener,
}

fn reject(stream: &mut TcpStream, reason: &str) {
    let mut w = Writer::new();
    w.u8(TAG_REJECT).str(reason);
    let _ = write_frame(stream, &w.finish());
}

pub(crate) fn check_peer(mine: &Hello, theirs: &Hello) -> Result<(), String> {
    if let Some(m) = mine.binary.mismatch(&theirs.binary) {
        return Err(m);
    }
    if theirs.nodes != mine.nodes {
        return Err(format!("the peer expects {} nodes, this cluster has {}", theirs.nodes, mine.nodes));
    }
    if theirs.session != mine.session {
        return Err(format!(
            "the peer belongs to another run (session {:x}, expected {:x})",
            theirs.session, mine.session
        ));
    }
    if theirs.node == 0 || theirs.node >= mine.nodes {
        return Err(format!("node id {} out of range 1..{}", theirs.node, mine.nodes));
    }
    if theirs.settings != mine.settings {
        return Err(settings_mismatch(&mine.settings, &theirs.settings));
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

fn remaining(deadline: Instant) -> Result<Duration, MeshError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| err("cluster start-up timed out"))
}

/// Accepts one connection before `deadline`, authenticates it and reads its hello.
///
/// A peer that fails authentication has already been refused; the caller only logs it.
fn accept_hello(
    listener: &TcpListener,
    deadline: Instant,
    secret: &Secret,
) -> Result<(TcpStream, Result<Hello, String>), MeshError> {
    listener.set_nonblocking(true).map_err(|e| err(format!("listener: {e}")))?;
    loop {
        match listener.accept() {
            Ok((mut s, peer)) => {
                s.set_nonblocking(false).map_err(|e| err(e.to_string()))?;
                s.set_nodelay(true).ok();
                if let Err(e) = auth::accept_side(&mut s, secret) {
                    return Ok((s, Err(format!("{peer}: {e}"))));
                }
                s.set_read_timeout(Some(remaining(deadline)?.min(Duration::from_secs(10)))).ok();
                let hello = read_frame(&mut s, HANDSHAKE_LIMIT)
                    .map_err(|e| format!("no hello from {peer}: {e}"))
                    .and_then(|b| Hello::decode(&b).map_err(|e| format!("from {peer}: {e}")));
                return Ok((s, hello));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                remaining(deadline)?;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(err(format!("accept: {e}"))),
        }
    }
}

fn expect_answer(s: &mut TcpStream, who: &str) -> Result<Vec<u8>, MeshError> {
    let body = read_frame(s, HANDSHAKE_LIMIT).map_err(|e| err(format!("no answer from {who}: {e}")))?;
    if body[0] == TAG_REJECT {
        let mut r = Reader::new(&body[1..]);
        let reason = r.str().unwrap_or("(unreadable reason)");
        return Err(err(format!("{who} refused this node: {reason}")));
    }
    Ok(body)
}

/// Joins the cluster: returns once this node is connected to every other node.
///
/// # Errors
/// A [`MeshError`] naming the peer and the cause: a refused handshake (another binary, another
/// run, a bad node id), a peer that never came, or a socket error; always within `cfg.timeout`.
pub fn establish(mut cfg: MeshConfig) -> Result<Mesh, MeshError> {
    let deadline = Instant::now() + cfg.timeout;
    let me = cfg.hello.node;
    let nodes = cfg.hello.nodes;
    let n = usize::from(nodes);
    cfg.hello.listen = cfg.listener.local_addr().map_err(|e| err(e.to_string()))?.to_string();
    let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    let mut parallelism = vec![0u32; n];
    parallelism[usize::from(me)] = cfg.hello.parallelism;
    let mut table = vec![String::new(); n];
    if me == 0 {
        let mut joined = 1;
        while joined < n {
            let (mut s, hello) = accept_hello(&cfg.listener, deadline, &cfg.secret).map_err(|e| {
                let missing: Vec<String> =
                    (1..n).filter(|&i| conns[i].is_none()).map(|i| i.to_string()).collect();
                err(format!("{e}: node(s) {} never joined", missing.join(", ")))
            })?;
            let verdict = hello.and_then(|h| {
                check_peer(&cfg.hello, &h)?;
                if conns[usize::from(h.node)].is_some() {
                    return Err(format!("node id {} joined twice", h.node));
                }
                Ok(h)
            });
            match verdict {
                Ok(h) => {
                    let i = usize::from(h.node);
                    parallelism[i] = h.parallelism;
                    table[i] = h.listen;
                    conns[i] = Some(s);
                    joined += 1;
                }
                Err(reason) => {
                    eprintln!("rthreads: node 0 refused a peer: {reason}");
                    reject(&mut s, &reason);
                }
            }
        }
        table[0] = cfg.hello.listen.clone();
        let mut w = Writer::new();
        w.u8(TAG_WELCOME);
        for i in 0..n {
            w.str(&table[i]).u32(parallelism[i]);
        }
        let welcome = w.finish();
        for s in conns.iter_mut().flatten() {
            write_frame(s, &welcome).map_err(|e| err(format!("welcome: {e}")))?;
        }
    } else {
        let coord = cfg.coordinator.ok_or_else(|| err("no coordinator address (RTHREADS_COORDINATOR)"))?;
        let mut s =
            connect(coord, deadline).map_err(|e| err(format!("cannot reach node 0 at {coord}: {}", e.0)))?;
        auth::connect_side(&mut s, &cfg.secret).map_err(|e| err(format!("node 0 at {coord}: {e}")))?;
        // Listening on every interface: tell the others the address node 0 sees this node at.
        if let Ok(bound) = cfg.listener.local_addr()
            && bound.ip().is_unspecified()
            && let Ok(local) = s.local_addr()
        {
            cfg.hello.listen = SocketAddr::new(local.ip(), bound.port()).to_string();
        }
        write_frame(&mut s, &cfg.hello.encode()).map_err(|e| err(format!("hello to node 0: {e}")))?;
        let body = expect_answer(&mut s, "node 0")?;
        let mut r = Reader::new(&body);
        let bad = |e| err(format!("bad welcome from node 0: {e}"));
        if r.u8().map_err(bad)? != TAG_WELCOME {
            return Err(err("bad welcome from node 0"));
        }
        for i in 0..n {
            table[i] = r.str().map_err(bad)?.to_owned();
            parallelism[i] = r.u32().map_err(bad)?;
        }
        conns[0] = Some(s);
        // Node 0 may listen on every interface: reach it later where this node reached it now.
        table[0] = coord.to_string();
        for j in 1..usize::from(me) {
            let addr: SocketAddr = table[j].parse().map_err(|_| err(format!("bad address for node {j}")))?;
            let mut s = connect(addr, deadline)
                .map_err(|e| err(format!("cannot reach node {j} at {addr}: {}", e.0)))?;
            auth::connect_side(&mut s, &cfg.secret).map_err(|e| err(format!("node {j} at {addr}: {e}")))?;
            write_frame(&mut s, &cfg.hello.encode()).map_err(|e| err(format!("hello to node {j}: {e}")))?;
            let body = expect_answer(&mut s, &format!("node {j}"))?;
            if body[0] != TAG_ACK {
                return Err(err(format!("bad answer from node {j}")));
            }
            conns[j] = Some(s);
        }
        let mut expected = n - 1 - usize::from(me);
        while expected > 0 {
            let (mut s, hello) = accept_hello(&cfg.listener, deadline, &cfg.secret)?;
            let verdict = hello.and_then(|h| {
                check_peer(&cfg.hello, &h)?;
                if h.node <= me || conns[usize::from(h.node)].is_some() {
                    return Err(format!("unexpected connection from node {}", h.node));
                }
                Ok(h)
            });
            match verdict {
                Ok(h) => {
                    write_frame(&mut s, &[TAG_ACK]).map_err(|e| err(format!("ack: {e}")))?;
                    conns[usize::from(h.node)] = Some(s);
                    expected -= 1;
                }
                Err(reason) => {
                    eprintln!("rthreads: node {me} refused a peer: {reason}");
                    reject(&mut s, &reason);
                }
            }
        }
    }
    Ok(Mesh { me, nodes, conns, parallelism, addrs: table, listener: cfg.listener })
}

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
            Err(e) => return Err(err(e.to_string())),
        }
    }
}

impl Mesh {
    /// Waits until every node has called `barrier` (all runtimes are up), within `timeout`.
    ///
    /// # Errors
    /// A node that does not arrive in time, or a lost connection, named.
    pub fn barrier(&mut self, timeout: Duration) -> Result<(), MeshError> {
        let set = |s: &mut TcpStream| s.set_read_timeout(Some(timeout)).ok();
        if self.me == 0 {
            for (i, s) in self.conns.iter_mut().enumerate() {
                if let Some(s) = s {
                    set(s);
                    let body = read_frame(s, HANDSHAKE_LIMIT)
                        .map_err(|e| err(format!("node {i} not ready: {e}")))?;
                    if body != [TAG_READY] {
                        return Err(err(format!("node {i} sent garbage instead of ready")));
                    }
                }
            }
            for (i, s) in self.conns.iter_mut().enumerate() {
                if let Some(s) = s {
                    write_frame(s, &[TAG_GO]).map_err(|e| err(format!("go to node {i}: {e}")))?;
                }
            }
        } else {
            let s = self.conns[0].as_mut().ok_or_else(|| err("no connection to node 0"))?;
            set(s);
            write_frame(s, &[TAG_READY]).map_err(|e| err(format!("ready to node 0: {e}")))?;
            let body = read_frame(s, HANDSHAKE_LIMIT).map_err(|e| err(format!("no go from node 0: {e}")))?;
            if body != [TAG_GO] {
                return Err(err("node 0 sent garbage instead of go"));
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
            node,
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
            assert!(m.conns[usize::from(m.me)].is_none());
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
        assert!(e1.0.contains("different binary"), "{e1}");
        assert!(e0.0.contains("never joined"), "{e0}");
    }

    #[test]
    fn different_settings_are_refused_naming_the_setting() {
        let mine = hello(0, 2, 1);
        let theirs = Hello { node: 1, settings: "protocol=lrc space=1024".into(), ..mine.clone() };
        let e = check_peer(&mine, &theirs).unwrap_err();
        assert!(
            e.contains("different settings") && e.contains("protocol: the peer has lrc, this cluster sc"),
            "{e}"
        );
        assert!(!e.contains("space"), "{e}");
        let odd = Hello { node: 1, settings: "protocol=sc".into(), ..mine.clone() };
        let e = check_peer(&mine, &odd).unwrap_err();
        assert!(e.contains("space: the peer has (unset), this cluster 1024"), "{e}");
        assert!(check_peer(&mine, &Hello { node: 1, ..mine.clone() }).is_ok());
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
        assert!(e.0.contains("wrong cluster secret"), "{e}");
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
            assert!(Hello::decode(&b[..cut]).is_err());
        }
        assert_eq!(Hello::decode(&b).unwrap(), hello(1, 2, 3));
    }
}
