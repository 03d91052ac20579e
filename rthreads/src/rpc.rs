//! Direct request/answer connections for synchronous operations.
//!
//! A thread that locks a mutex managed by another node must wait for one answer from that node.
//! Sent the ordinary way, the request passes through this node's service thread and the answer
//! comes back through it: four thread wake-ups where a plain request/answer over a socket costs two.
//! So for an operation whose single answer always comes from the node the request went to (lock,
//! try-lock, barrier, blocking receive, synchronous send, sender clone), the calling thread takes a
//! connection to that node from a small pool, writes the request and blocks in `recv` on it. The
//! manager node's service thread reads the request like any other, and sends the answer back on the
//! same connection. Operations that may be answered by another node, or twice (condition variable
//! waits, timed receives), keep the ordinary path.
//!
//! Each pooled connection starts with the authentication exchange of `net::auth` (both sides prove
//! they know the cluster secret), then a hello naming the node and the run's session; the service
//! thread drops a connection that fails either.
//!
//! **Order.** A direct message must not overtake what its sender sent before on the ordinary
//! connection: a channel message sent before a barrier must be there after it. So each node counts
//! the frames it queues to each peer on the ordinary connection, and the frames from each peer it
//! has processed; a direct request carries the sender's count, and the manager serves it only once
//! it has processed that many ordinary frames from the sender. A direct answer likewise carries the
//! manager's count, and the waiting thread returns only once its own node has processed that many
//! ordinary frames from the manager.

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::{Arc, LazyLock};

use net::frame::{MAX_FRAME, read_frame, write_frame};
use net::{Reader, SendQueue, Writer};

use crate::alloc::InternalAlloc;
use crate::private::{ServiceGuard, ServiceLock, private};
use crate::runtime::{Runtime, fatal};
use crate::sync::manager::{Reply, Request, Waiter};
use crate::wire::{self, Wire};

const T_RPC_HELLO: u8 = 0x30;

static POOL: LazyLock<ServiceLock<HashMap<u16, Vec<TcpStream>>>> =
    LazyLock::new(|| ServiceLock::new("rpc.pool", HashMap::new()));
/// Server side: where to send the answer for a waiter whose request came on a direct connection.
static ROUTES: LazyLock<ServiceLock<HashMap<Waiter, Arc<ServiceLock<SendQueue>>>>> =
    LazyLock::new(|| ServiceLock::new("rpc.routes", HashMap::new()));

fn lock<T>(m: &ServiceLock<T>) -> ServiceGuard<'_, T> {
    m.lock()
}

/// The hello that opens a direct connection.
pub(crate) fn hello(node: u16, session: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_RPC_HELLO).u16(node).u64(session);
    w.finish()
}

/// Checks a hello; returns the peer's node id.
pub(crate) fn check_hello(body: &[u8], nodes: u16, session: u64) -> Option<u16> {
    let mut r = Reader::new(body);
    if r.u8().ok()? != T_RPC_HELLO {
        return None;
    }
    let node = r.u16().ok()?;
    let s = r.u64().ok()?;
    r.end().ok()?;
    (node < nodes && s == session).then_some(node)
}

fn connect(rt: &Runtime, to: u16) -> std::io::Result<TcpStream> {
    let addr = rt.addr_of(to).ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    net::auth::connect_side(&mut s, &rt.secret).map_err(std::io::Error::other)?;
    write_frame(&mut s, &hello(rt.me, rt.session))?;
    Ok(s)
}

fn take(rt: &Runtime, to: u16, req: &Request) -> TcpStream {
    let pooled = lock(&POOL).get_mut(&to).and_then(Vec::pop);
    let mut s = match pooled {
        Some(s) => s,
        None => connect(rt, to).unwrap_or_else(|e| fatal(&format!("cannot reach node {to}: {e}"))),
    };
    // The request must not overtake what this node sent `to` before on the ordinary connection.
    let frame = wire::ordered(rt.sent_to(to), &wire::sync_req(req));
    if let Err(e) = write_frame(&mut s, &frame) {
        fatal(&format!("lost node {to}: {e}"));
    }
    crate::stats::sent(&frame, frame.len());
    s
}

/// Sends `req`, which expects no answer, to node `to` on a direct connection: an unlock travels
/// the way the thread's next lock request will, so it cannot be overtaken by it.
pub(crate) fn post(rt: &'static Runtime, to: u16, req: Request) {
    private(move || {
        let _internal = InternalAlloc::new();
        let s = take(rt, to, &req);
        lock(&POOL).entry(to).or_default().push(s);
    });
}

/// Sends `req` to node `to` on a direct connection and waits for its answer.
pub(crate) fn call(rt: &'static Runtime, to: u16, req: Request) -> Reply {
    private(move || call_here(rt, to, &req))
}

fn call_here(rt: &'static Runtime, to: u16, req: &Request) -> Reply {
    let _internal = InternalAlloc::new();
    let started = std::time::Instant::now();
    // Network-delay emulation: the request's way out here, the answer's below. (A `post`, which
    // nobody waits for, is not held back: an unlock reaches its manager without the delay.)
    crate::runtime::emulate_delay();
    let mut s = take(rt, to, req);
    let body = read_frame(&mut s, MAX_FRAME).unwrap_or_else(|e| fatal(&format!("lost node {to}: {e}")));
    crate::runtime::emulate_delay();
    crate::stats::received(&body);
    let (after, inner) = match wire::decode(&body) {
        Ok(Wire::Ordered { after, inner }) => (after, inner),
        Ok(other) => fatal(&format!("node {to} answered a direct request with {other:?}")),
        Err(e) => fatal(&format!("node {to} sent a malformed answer: {e}")),
    };
    // Nor may the answer overtake what `to` sent this node before it.
    rt.wait_processed(to, after);
    let reply = match wire::decode(inner) {
        Ok(Wire::SyncReply { waiter, reply }) if waiter == req.waiter.1 => reply,
        Ok(other) => fatal(&format!("node {to} answered a direct request with {other:?}")),
        Err(e) => fatal(&format!("node {to} sent a malformed answer: {e}")),
    };
    lock(&POOL).entry(to).or_default().push(s);
    crate::stats::sync_waited(started.elapsed(), crate::stats::Wait::of(&req.op));
    reply
}

/// Server side: the request of `waiter` came on the direct connection `queue`.
pub(crate) fn expect_answer(waiter: Waiter, queue: Arc<ServiceLock<SendQueue>>) {
    private(move || {
        let _internal = InternalAlloc::new();
        lock(&ROUTES).insert(waiter, queue);
    });
}

/// Server side: sends `reply` on the waiter's direct connection, if it came on one.
pub(crate) fn answer(to: Waiter, reply: &Reply) -> bool {
    let _internal = InternalAlloc::new();
    let Some(q) = lock(&ROUTES).remove(&to) else {
        return false;
    };
    let mut q = lock(&q);
    let after = crate::runtime::get().map_or(0, |rt| rt.sent_to(to.0));
    let frame = wire::ordered(after, &wire::sync_reply(to.1, reply));
    crate::stats::sent(&frame, frame.len());
    q.queue(&frame, &[]);
    // What the socket does not take now, the service thread writes later; a dead client is noticed
    // when its connection closes.
    let _ = q.flush();
    true
}
