//! Connections accepted after start-up: direct request/answer connections between nodes, and
//! strangers at the door.
//!
//! **Direct connections.** A thread that waits for one answer from one node (a lock managed
//! elsewhere, a barrier, a blocking receive) would, the ordinary way, pass its request through this
//! node's service thread and the answer back through it: four thread wake-ups where a plain
//! request/answer over a socket costs two. So the calling thread takes a connection to that node
//! from a small pool ([`call`], [`post`]), writes the request and blocks in `recv` on it. The
//! other node's service thread reads the request, gives it to the handler registered for its tag
//! (`Extensions::direct`), which answers through the [`Route`] it got, on the same connection.
//! Each pooled connection starts with the authentication exchange of `net::auth`, then a hello
//! naming the node and the run's session.
//!
//! **Order.** A direct message must not overtake what its sender sent before on the ordinary
//! connection (a channel message sent before a barrier must be there after it). So each node counts
//! the frames it queues to each peer on the ordinary connection, and the frames from each peer it
//! has processed; a direct request carries the sender's count (`Core::Ordered`), and is served only
//! once that many ordinary frames from the sender have been processed; an answer carries the
//! answering node's count, which the waiting thread's node must have reached before it returns.
//!
//! **Strangers.** A connection must authenticate within `RTHREADS_AUTH_TIMEOUT` or is closed; at
//! most 64 wait at once; lines about them are rate-limited; when `accept` fails for want of
//! descriptors the node stops watching its listener for a while instead of spinning.

use std::collections::HashMap;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use dsm::NodeId;
use net::frame::{MAX_FRAME, read_frame, write_frame};
use net::{Conn, ReadStatus, Reader, SendQueue, Writer};

use super::service::{DIRECT, EXTRA, LISTENER, Service};
use super::wire::{Core, ProtocolWire};
use super::{Runtime, Verdict, fatal, say};
use crate::alloc::{InternalAlloc, private_internal};
use crate::poll;
use crate::private::ServiceLock;

const T_RPC_HELLO: u8 = 0x30;
/// The hello of an ordinary connection made after start-up (lazy connections): the peer's frames
/// follow on it, as on a connection of the mesh.
const T_LINK_HELLO: u8 = 0x31;
/// Connections that have not authenticated yet that one node keeps at most, in a cluster of up to
/// 64 nodes; more are refused (direct connections and lazily dialed links alike: their dialers
/// retry, see [`connect_retrying`]). A larger cluster allows one per node, since every node may open its
/// first direct connection to the same node at once (see [`max_strangers`]).
const MAX_STRANGERS: usize = 64;

/// The connections waiting to authenticate that a node of a cluster of `nodes` keeps at most.
fn max_strangers(nodes: u16) -> usize {
    MAX_STRANGERS.max(usize::from(nodes))
}
/// Lines about strangers a node prints per second at most (a burst, then a count of the rest).
const STRANGER_LINES_PER_SECOND: u32 = 5;

/// Where the answer to a request that came on a direct connection goes.
pub(crate) struct Route {
    peer: NodeId,
    queue: Arc<ServiceLock<SendQueue>>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Route({})", self.peer)
    }
}

impl Route {
    /// Sends `body` back on the connection the request came on, after what this node sent the
    /// requester before on the ordinary connection (on a private stack).
    pub(crate) fn answer(&self, rt: &Runtime, body: &[u8]) {
        let _internal = InternalAlloc::new();
        let frame = Core::Ordered { after: rt.sent_to(self.peer), inner: body }.encode();
        crate::counters::sent(&frame, frame.len());
        let mut q = self.queue.lock();
        q.queue(&frame, &[]);
        // What the socket does not take now, the service thread writes later (it turns every
        // 25 ms while a direct connection has output waiting; woken now if this is another
        // thread); a dead client is noticed when its connection closes.
        let _ = q.flush();
        if q.wants_write() && !super::on_service_thread() {
            rt.wake_service();
        }
    }
}

impl Route {
    /// Sends the grant of a direct page read (see `reads.rs`): `page`'s bytes, after what this
    /// node sent the requester before on the ordinary connection. On the service thread only.
    pub(crate) fn answer_page(&self, rt: &Runtime, page: dsm::PageId, bytes: &[u8]) {
        let _internal = InternalAlloc::new();
        let mut inner = [0u8; 9];
        inner[0] = dsm::fault::direct::T_PAGE_GRANT;
        inner[1..].copy_from_slice(&page.0.to_le_bytes());
        let head = Core::Ordered { after: rt.sent_to(self.peer), inner: &inner }.encode();
        crate::counters::sent(&head, head.len() + bytes.len());
        crate::counters::page(true);
        let mut q = self.queue.lock();
        q.queue(&head, bytes);
        // What the socket does not take now, the service thread writes at the end of its turn.
        let _ = q.flush();
    }
}

/// A direct connection accepted from another node's thread.
struct DirectConn {
    conn: Conn,
    send: Arc<ServiceLock<SendQueue>>,
    /// The peer, once its hello has been checked.
    peer: Option<NodeId>,
    /// The challenge sent, until the peer has answered it (see `net::auth`).
    challenge: Option<[u8; net::auth::NONCE]>,
    /// When it was accepted: a connection that has not said a valid hello by
    /// `accepted + RTHREADS_AUTH_TIMEOUT` is closed.
    accepted: Instant,
}

/// The service thread's side of the listening port.
pub(super) struct Doors {
    listener: std::net::TcpListener,
    conns: Vec<Option<DirectConn>>,
    /// Direct requests waiting for earlier ordinary frames from their sender: (peer, count, frame,
    /// where to answer).
    pub(super) deferred: Vec<(NodeId, u64, Vec<u8>, Route)>,
    /// How long a connection accepted at run time may take to authenticate.
    auth_timeout: Duration,
    /// Accepting is paused until then (the last `accept` failed for lack of descriptors or
    /// memory), and the pause to take after the next failure.
    pub(super) listener_paused: Option<Instant>,
    accept_backoff: Duration,
    /// Failed accepts since the last line about them, and when that line was printed (at most one
    /// a second).
    accept_failures: u64,
    last_accept_line: Option<Instant>,
    /// Rate limit of the lines about strangers: the current one-second window, lines printed in
    /// it, lines suppressed.
    stranger_window: Instant,
    stranger_lines: u32,
    stranger_suppressed: u64,
    /// When the unauthenticated connections were last checked for their deadline.
    last_stranger_check: Instant,
}

impl Doors {
    pub(super) fn new(listener: std::net::TcpListener, auth_timeout: Duration) -> Doors {
        let now = Instant::now();
        Doors {
            listener,
            conns: Vec::new(),
            deferred: Vec::new(),
            auth_timeout,
            listener_paused: None,
            accept_backoff: Duration::from_millis(50),
            accept_failures: 0,
            last_accept_line: None,
            stranger_window: now,
            stranger_lines: 0,
            stranger_suppressed: 0,
            last_stranger_check: now,
        }
    }

    /// Finishes writing the answers the sockets did not take at once, as far as the sockets take
    /// them now; whether some output is still waiting.
    pub(super) fn flush(&self) -> bool {
        let mut waiting = false;
        for d in self.conns.iter().flatten() {
            let mut q = d.send.lock();
            let _ = q.flush();
            waiting |= q.wants_write();
        }
        waiting
    }
}

impl<P: ProtocolWire + Send + 'static> Service<P> {
    pub(super) fn accept_direct(&mut self) {
        loop {
            let stream = match self.doors.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return self.pause_accepting(&e),
            };
            let strangers = self.doors.conns.iter().flatten().filter(|d| d.peer.is_none()).count();
            let limit = max_strangers(self.rt.nodes);
            if strangers >= limit {
                let from = stream.peer_addr().map_or_else(|_| "an unknown address".into(), |a| a.to_string());
                drop(stream);
                self.stranger_line(format!(
                    "refused a connection from {from}: {limit} connections are already waiting to authenticate"
                ));
                continue;
            }
            // Nothing from a stranger is buffered beyond a few kilobytes, and its buffer starts
            // small: room for a frame body grows only as a peer that authenticated needs it.
            let Ok(mut conn) = Conn::with_buffer(stream, 256) else { continue };
            // Nothing from a stranger is buffered beyond a few kilobytes.
            conn.set_limit(4096);
            let mut send = match conn.send_queue() {
                Ok(q) => q,
                // Out of descriptors for the duplicate: the same as `accept` failing.
                Err(e) => return self.pause_accepting(&e),
            };
            let Ok(challenge) = net::auth::nonce() else { continue };
            send.queue(&net::auth::challenge_frame(&challenge), &[]);
            if send.flush().is_err() {
                continue;
            }
            let i = self.doors.conns.iter().position(Option::is_none).unwrap_or_else(|| {
                self.doors.conns.push(None);
                self.doors.conns.len() - 1
            });
            if let Err(e) = self.poller.add(conn.fd(), poll::READ, DIRECT + i as u64) {
                fatal(&format!("epoll_ctl: {e}"));
            }
            self.doors.conns[i] = Some(DirectConn {
                conn,
                send: Arc::new(ServiceLock::new("runtime.direct", send)),
                peer: None,
                challenge: Some(challenge),
                accepted: Instant::now(),
            });
            self.doors.accept_backoff = Duration::from_millis(50);
        }
    }

    /// `accept` failed for want of a resource (descriptors, buffers, memory): the listener stays
    /// readable, so polling it again at once would spin. Stops watching it for a while, longer
    /// after each failure in a row (up to a second); says so at most once a second.
    fn pause_accepting(&mut self, e: &std::io::Error) {
        let pause = self.doors.accept_backoff;
        self.doors.accept_backoff = (pause * 2).min(Duration::from_secs(1));
        if self.doors.listener_paused.is_none() {
            let _ = self.poller.delete(self.doors.listener.as_raw_fd());
        }
        let now = Instant::now();
        self.doors.listener_paused = Some(now + pause);
        self.doors.accept_failures += 1;
        if self.doors.last_accept_line.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            self.doors.last_accept_line = Some(now);
            say(&format!(
                "rthreads: {}: cannot accept connections: {e} ({} time(s) since the last such line); \
                 pausing up to a second at a time; the connections this node has keep working",
                self.rt.me, self.doors.accept_failures
            ));
            self.doors.accept_failures = 0;
        }
    }

    /// Closes every connection that has not authenticated within the deadline, and resumes
    /// accepting after a pause.
    pub(super) fn check_strangers(&mut self) {
        let now = Instant::now();
        if let Some(t) = self.doors.listener_paused
            && now >= t
        {
            self.doors.listener_paused = None;
            if let Err(e) = self.poller.add(self.doors.listener.as_raw_fd(), poll::READ, LISTENER) {
                fatal(&format!("epoll_ctl: {e}"));
            }
        }
        if now.duration_since(self.doors.last_stranger_check) < Duration::from_millis(100) {
            return;
        }
        self.doors.last_stranger_check = now;
        if self.doors.stranger_suppressed > 0
            && now.duration_since(self.doors.stranger_window) >= Duration::from_secs(1)
        {
            // Say how many lines the last window kept back, even if no stranger comes again.
            self.new_stranger_window(now);
        }
        for i in 0..self.doors.conns.len() {
            let late = self.doors.conns[i].as_ref().is_some_and(|d| {
                d.peer.is_none() && now.duration_since(d.accepted) > self.doors.auth_timeout
            });
            if late && let Some(d) = self.doors.conns[i].take() {
                let from = d.conn.peer_addr();
                let _ = self.poller.delete(d.conn.fd()); // and closes it
                self.stranger_line(format!(
                    "closed a connection from {from}: it did not authenticate within {:.1} s (RTHREADS_AUTH_TIMEOUT)",
                    self.doors.auth_timeout.as_secs_f64()
                ));
            }
        }
    }

    /// Starts a new one-second window of lines about strangers, saying first how many the last one
    /// kept back.
    fn new_stranger_window(&mut self, now: Instant) {
        let d = &mut self.doors;
        if d.stranger_suppressed > 0 {
            let n = d.stranger_suppressed;
            say(&format!("rthreads: {}: ... and {n} more such lines in the last second", self.rt.me));
        }
        (d.stranger_window, d.stranger_lines, d.stranger_suppressed) = (now, 0, 0);
    }

    /// Prints a line about a stranger (a connection that is not, or not yet, a peer), at most
    /// `STRANGER_LINES_PER_SECOND` a second: a crowd of strangers must not flood stderr.
    fn stranger_line(&mut self, what: String) {
        let now = Instant::now();
        if now.duration_since(self.doors.stranger_window) >= Duration::from_secs(1) {
            self.new_stranger_window(now);
        }
        if self.doors.stranger_lines < STRANGER_LINES_PER_SECOND {
            self.doors.stranger_lines += 1;
            say(&format!("rthreads: {}: {what}", self.rt.me));
        } else {
            self.doors.stranger_suppressed += 1;
        }
    }

    pub(super) fn on_direct(&mut self, i: usize, body: &mut Vec<u8>) {
        let Some(d) = self.doors.conns.get_mut(i).and_then(Option::as_mut) else { return };
        let status = d.conn.fill();
        let mut close = !matches!(status, Ok(ReadStatus::WouldBlock));
        let mut stranger = None;
        let mut link = None;
        loop {
            let Some(d) = self.doors.conns[i].as_mut() else { return };
            match d.conn.next_frame(body) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    if d.peer.is_none() {
                        stranger = Some(format!(
                            "refused a connection from {}: not an rthreads peer ({e})",
                            d.conn.peer_addr()
                        ));
                    }
                    close = true;
                    break;
                }
            }
            if let Some(challenge) = d.challenge {
                let mut q = d.send.lock();
                let verified = net::auth::verify(&self.rt.secret, &challenge, body);
                match &verified {
                    Ok(proof) => q.queue(proof, &[]),
                    Err(e) => {
                        stranger = Some(format!("refused a connection from {}: {e}", d.conn.peer_addr()));
                        q.queue(&net::auth::reject_frame(&e.to_string()), &[]);
                    }
                }
                let _ = q.flush();
                if verified.is_err() {
                    close = true;
                    break;
                }
                d.challenge = None;
                d.conn.set_limit(net::frame::MAX_FRAME);
                continue;
            }
            if d.peer.is_none() {
                let hello = check_hello(body, self.rt.nodes, self.rt.session);
                if let Some((peer, true)) = hello {
                    // An ordinary connection: it leaves the doors for the links, with whatever
                    // frames already follow the hello in its buffer.
                    link = Some(peer);
                    break;
                }
                d.peer = hello.map(|(peer, _)| peer);
                if d.peer.is_none() {
                    stranger =
                        Some(format!("refused a connection from {} with a bad hello", d.conn.peer_addr()));
                    close = true;
                    break;
                }
                continue;
            }
            crate::counters::received(body);
            let peer = d.peer.unwrap_or(NodeId(0));
            let route = Route { peer, queue: Arc::clone(&d.send) };
            match Core::decode(body) {
                Some(Ok(Core::Ordered { after, inner })) => {
                    if self.rt.processed_from(peer) >= after {
                        let inner = inner.to_vec();
                        self.serve_direct(peer, &inner, route);
                    } else {
                        // Sent after frames still on their way on the ordinary connection: wait
                        // for them, so the request cannot overtake what happened before it.
                        let _internal = InternalAlloc::new();
                        self.doors.deferred.push((peer, after, inner.to_vec(), route));
                    }
                }
                other => {
                    say(&format!(
                        "rthreads: {}: unexpected message on a direct connection from {peer}: {other:?}",
                        self.rt.me
                    ));
                    close = true;
                    break;
                }
            }
        }
        if let Some(peer) = link
            && let Some(d) = self.doors.conns[i].take()
        {
            let _ = self.poller.delete(d.conn.fd());
            return self.adopt_link(peer, d.conn, body);
        }
        if close && let Some(d) = self.doors.conns[i].take() {
            let _ = self.poller.delete(d.conn.fd()); // and closes it
        }
        if let Some(line) = stranger {
            self.stranger_line(line);
        }
    }

    /// `conn`, which `peer` dialed, becomes a link: the connection this node sends `peer` its
    /// frames on too, unless this node is dialing `peer` itself (then each side sends on the
    /// connection it made, and this one is only read).
    fn adopt_link(&mut self, peer: NodeId, conn: Conn, body: &mut Vec<u8>) {
        let i = peer.index();
        if self.links.lost[i] || i == self.rt.me.index() {
            return;
        }
        if self.links.conns[i].is_none() && !self.links.dialing[i] {
            self.install_link(peer, conn);
            self.on_conn(i, poll::READ, body);
        } else if self.links.extra[i].is_none() {
            self.keep_extra(i, conn);
            self.read_link(i, true, body);
        } else {
            self.peer_lost(peer, "it opened a third ordinary connection");
        }
    }

    /// `conn` becomes peer `i`'s second connection: read, never written (see `Links::extra`).
    fn keep_extra(&mut self, i: usize, conn: Conn) {
        if let Err(e) = self.poller.add(conn.fd(), poll::READ, EXTRA + i as u64) {
            fatal(&format!("epoll_ctl: {e}"));
        }
        self.links.extra[i] = Some(conn);
    }

    /// `conn` becomes the connection to `peer`: this node's queued frames for it go out on it.
    fn install_link(&mut self, peer: NodeId, conn: Conn) {
        let i = peer.index();
        let stream = match conn.stream_clone() {
            Ok(s) => s,
            Err(e) => return self.peer_lost(peer, &format!("cannot use its connection: {e}")),
        };
        if let Some(slot) = self.rt.senders.get().and_then(|s| s.get(i))
            && let Some(q) = slot.lock().as_mut()
        {
            q.connect(stream);
        }
        // What waited for the connection goes out at the end of this turn.
        self.rt.want_flush(i);
        if let Err(e) = self.poller.add(conn.fd(), poll::READ, i as u64) {
            fatal(&format!("epoll_ctl: {e}"));
        }
        self.links.interest[i] = poll::READ;
        self.links.last_heard[i] = Instant::now();
        self.links.conns[i] = Some(conn);
    }

    /// Starts dialing peer `i` (lazy connections) if frames wait for it and nobody dials yet.
    pub(super) fn dial_if_needed(&mut self, i: usize) {
        if self.links.dialing[i] || self.links.lost[i] || i == self.rt.me.index() {
            return;
        }
        let waiting =
            self.rt.senders.get().and_then(|s| s.get(i)).is_some_and(|slot| {
                slot.lock().as_ref().is_some_and(|q| !q.is_connected() && q.wants_write())
            });
        if !waiting {
            return;
        }
        self.links.dialing[i] = true;
        let (rt, to) = (self.rt, NodeId(i as u16));
        let _internal = InternalAlloc::new();
        let started = std::thread::Builder::new().name(format!("rthreads-dial-{i}")).spawn(move || {
            crate::alloc::runtime_thread();
            let dialed = connect_retrying(rt, to, T_LINK_HELLO);
            DIALED.lock().push((to, dialed));
            DIAL_DONE.store(true, std::sync::atomic::Ordering::SeqCst);
            dsm::fault::notify();
        });
        if let Err(e) = started {
            self.links.dialing[i] = false;
            self.peer_lost(to, &format!("cannot start a thread to connect to it: {e}"));
        }
    }

    /// Takes the connections the dialing threads made (or their failures).
    pub(super) fn take_dialed(&mut self) {
        if !DIAL_DONE.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let dialed = std::mem::take(&mut *DIALED.lock());
        for (to, r) in dialed {
            let i = to.index();
            self.links.dialing[i] = false;
            if self.links.lost[i] {
                continue;
            }
            let conn = r.and_then(|s| Conn::new(s).map_err(|e| std::io::Error::other(e.to_string())));
            match conn {
                // The peer's own connection to this node works: send on it instead.
                Err(_) if self.links.extra[i].is_some() => {
                    if let Some(c) = self.links.extra[i].take() {
                        let _ = self.poller.delete(c.fd());
                        self.install_link(to, c);
                    }
                }
                Err(e) => self.peer_lost(to, &format!("cannot connect to it: {e}")),
                Ok(conn) if self.links.conns[i].is_none() => self.install_link(to, conn),
                // Not expected: while this node dials, nothing else becomes its link to the peer
                // (`adopt_link`). Were it to, this connection is only read, so frames to the
                // peer keep going on one connection.
                Ok(conn) => {
                    if self.links.extra[i].is_none() {
                        self.keep_extra(i, conn);
                    }
                }
            }
        }
    }

    /// Serves a direct request from `peer` through the handler registered for its tag.
    fn serve_direct(&mut self, peer: NodeId, body: &[u8], route: Route) {
        let tag = body.first().copied().unwrap_or(0);
        if tag == dsm::fault::direct::T_PAGE_READ {
            return self.serve_page_read(peer, body, route);
        }
        let v = match self.rt.ext.direct[usize::from(tag)] {
            Some(h) => h(self.rt, peer, body, route),
            None => Verdict::Lost(format!("it sent a direct request of unknown kind {tag:#x}")),
        };
        self.verdict(Some(peer), v);
    }

    /// The `n`-th ordinary frame from `from` has been handled: serves the direct requests from it
    /// that waited for that.
    pub(super) fn serve_deferred(&mut self, from: NodeId, n: u64) {
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.doors.deferred).into_iter().partition(|d| d.0 == from && d.1 <= n);
        self.doors.deferred = waiting;
        for (peer, _, body, route) in ready {
            self.serve_direct(peer, &body, route);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client side.

static POOL: LazyLock<ServiceLock<HashMap<NodeId, Vec<TcpStream>>>> =
    LazyLock::new(|| ServiceLock::new("direct.pool", HashMap::new()));

/// What a dialing thread got: the peer, and the connection or why there is none.
type Dialed = (NodeId, std::io::Result<TcpStream>);

/// Connections the dialing threads made for lazy links, for the service thread to take.
static DIALED: LazyLock<ServiceLock<Vec<Dialed>>> =
    LazyLock::new(|| ServiceLock::new("direct.dialed", Vec::new()));
static DIAL_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The hello that opens a direct connection (`T_RPC_HELLO`) or an ordinary one (`T_LINK_HELLO`).
fn hello(tag: u8, node: NodeId, session: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(tag).u16(node.0).u64(session);
    w.finish()
}

/// Checks a hello; returns the peer's node id, and whether the connection is an ordinary one.
fn check_hello(body: &[u8], nodes: u16, session: u64) -> Option<(NodeId, bool)> {
    let mut r = Reader::new(body);
    let (tag, node, s) = (r.u8().ok()?, r.u16().ok()?, r.u64().ok()?);
    r.end().ok()?;
    let link = match tag {
        T_RPC_HELLO => false,
        T_LINK_HELLO => true,
        _ => return None,
    };
    (node < nodes && s == session).then_some((NodeId(node), link))
}

fn connect(rt: &Runtime, to: NodeId, tag: u8) -> std::io::Result<TcpStream> {
    let addr = rt.addrs.get(to.index()).ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect(addr.as_str())?;
    s.set_nodelay(true)?;
    net::auth::connect_side(&mut s, &rt.secret).map_err(std::io::Error::other)?;
    write_frame(&mut s, &hello(tag, rt.me, rt.session))?;
    Ok(s)
}

/// A direct connection to `to` for the fault handler's page reads (`reads.rs`), blocking.
pub(super) fn dial(rt: &Runtime, to: NodeId) -> std::io::Result<TcpStream> {
    connect_retrying(rt, to, T_RPC_HELLO)
}

/// [`connect`], retried: a node that has [`max_strangers`] connections waiting to authenticate
/// (hundreds of nodes opening their first direct connection to it at once) closes the next ones
/// before its challenge, which is load, not loss. So a failed attempt is tried again, backing off
/// from 1 ms to 100 ms (spread by node id), for up to twice the failure timeout; a node that is
/// really gone is meanwhile declared lost by the liveness checks, which stop the cluster.
fn connect_retrying(rt: &Runtime, to: NodeId, tag: u8) -> std::io::Result<TcpStream> {
    let deadline = Instant::now() + 2 * rt.failure_timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match connect(rt, to, tag) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {
                std::thread::sleep(pause + Duration::from_micros(u64::from(rt.me.0) * 37 % 1000));
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// A pooled connection to `to` with `body` written on it, ordered after what this node sent `to`
/// before on the ordinary connection.
fn take(rt: &Runtime, to: NodeId, body: &[u8]) -> TcpStream {
    let pooled = POOL.lock().get_mut(&to).and_then(Vec::pop);
    let mut s = match pooled {
        Some(s) => s,
        None => connect_retrying(rt, to, T_RPC_HELLO)
            .unwrap_or_else(|e| fatal(&format!("cannot reach {to}: {e}"))),
    };
    let frame = Core::Ordered { after: rt.sent_to(to), inner: body }.encode();
    if let Err(e) = write_frame(&mut s, &frame) {
        fatal(&format!("lost {to}: {e}"));
    }
    crate::counters::sent(&frame, frame.len());
    s
}

/// Sends `body`, which expects no answer, to node `to` on a direct connection: an unlock travels
/// the way the thread's next lock request will, so it cannot be overtaken by it.
pub(crate) fn post(rt: &'static Runtime, to: NodeId, body: Vec<u8>) {
    private_internal(move || {
        let s = take(rt, to, &body);
        POOL.lock().entry(to).or_default().push(s);
    });
}

/// Sends `body` to node `to` on a direct connection and waits for its answer, which it returns
/// (after this node has processed what `to` sent it before the answer).
pub(crate) fn call(rt: &'static Runtime, to: NodeId, body: Vec<u8>) -> Vec<u8> {
    private_internal(move || {
        // Network-delay emulation: the request's way out here, the answer's below. (A `post`,
        // which nobody waits for, is not held back: an unlock reaches its manager without it.)
        super::emulate_delay();
        let mut s = take(rt, to, &body);
        let answer = read_frame(&mut s, MAX_FRAME).unwrap_or_else(|e| fatal(&format!("lost {to}: {e}")));
        super::emulate_delay();
        crate::counters::received(&answer);
        let (after, inner) = match Core::decode(&answer) {
            Some(Ok(Core::Ordered { after, inner })) => (after, inner.to_vec()),
            other => fatal(&format!("{to} answered a direct request with {other:?}")),
        };
        // Nor may the answer overtake what `to` sent this node before it.
        rt.wait_processed(to, after);
        POOL.lock().entry(to).or_default().push(s);
        inner
    })
}
