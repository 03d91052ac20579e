//! Output in program order, and `process::exit` from any node.
//!
//! On one machine, what a thread writes to stdout before it unlocks a mutex appears before what the
//! next holder writes: both go to the same file, one system call after the other. Across nodes
//! that order must be made. So the output of every node but node 0 travels to node 0 inside the
//! cluster's own connections, and node 0 writes it:
//!
//! - On nodes other than 0, `write`/`writev` of an application thread to descriptor 1 or 2 (what
//!   `println!`, `eprintln!` and `std::io::stdout()` end in) is taken by [`hook`], through the
//!   C-library interposition of `dsm::interpose`: the bytes are copied into an `Output` frame to node
//!   0 and the call returns at once. Runtime threads and the runtime's own messages still write to
//!   the node's own descriptors.
//! - Node 0's **output writer** thread writes the forwarded bytes in arrival order, a whole line
//!   per `write(2)` (pieces of a line, as `eprintln!` makes them, are put back together per node
//!   and descriptor), to node 0's own stdout or stderr.
//! - Every **release point** of the consistency contract (unlock, condition-variable wait,
//!   barrier, channel send, spawn elsewhere, end of a thread, migration) first calls [`flush`]:
//!   if this node forwarded output since the last acknowledgement, it asks node 0 to acknowledge
//!   everything forwarded so far (an `OutputFlush`; the writer answers with `OutputAck` once it has
//!   written all of it) and waits. So what a thread wrote before a release is on node 0's stdout
//!   before any thread on any node passes the matching acquire, and therefore before anything it
//!   writes after it. A node that wrote nothing since its last release pays nothing.
//! - **Errors** are std's: a write node 0 cannot make (stdout closed, `/dev/full`) makes the
//!   writer record the error for that descriptor, and the acknowledgement carries it to the
//!   writing node, whose next write to it fails with the same `errno` (so `println!` panics with
//!   std's message). The first write of each node to each descriptor waits for its
//!   acknowledgement, so a descriptor that fails at once fails at once on every node.
//! - **`process::exit(n)`** on any node ends the whole program with code `n` after the output
//!   written before it: this module defines the C library's `exit` (see [`exit`]), which on a node
//!   other than 0 flushes, tells node 0 and waits to be stopped, and on node 0 stops the cluster,
//!   lets the writer finish, and exits.
//!
//! Node 0's own application threads write straight to its descriptors, as before: their writes
//! are ordered with the forwarded ones by the same release/acquire reasoning.

use std::collections::{HashMap, VecDeque};
use std::sync::Condvar;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dsm::NodeId;
use libc::{c_int, iovec, ssize_t};

use crate::alloc::InternalAlloc;
use crate::private::{ServiceLock, private};
use crate::runtime::{self, say};

const T_OUTPUT: u8 = 0x28;
const T_OUTPUT_FLUSH: u8 = 0x29;
const T_OUTPUT_ACK: u8 = 0x2A;
const T_EXIT: u8 = 0x2B;
pub(crate) const TAGS: [u8; 4] = [T_OUTPUT, T_OUTPUT_FLUSH, T_OUTPUT_ACK, T_EXIT];

/// The messages of output between nodes. Tags 0x28–0x2B (see `crate::runtime::wire`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OutputMsg<'a> {
    /// Bytes an application thread of the sender wrote to its stdout (`fd` 1) or stderr (2), for
    /// node 0 to write.
    Output { fd: u8, data: &'a [u8] },
    /// Acknowledge the sender's output frames up to number `upto` once they are written; at a
    /// `release`, pieces of unfinished lines are written too.
    Flush { upto: u64, release: bool },
    /// Node 0 has written the recipient's output up to frame `upto`; the `errno` of its failed
    /// writes to stdout and stderr (0: none).
    Ack { upto: u64, errors: [i32; 2] },
    /// A thread of the sender called `exit(code)`: the program ends with `code`.
    Exit { code: i32 },
}

impl OutputMsg<'_> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = net::Writer::new();
        match *self {
            OutputMsg::Output { fd, data } => w.u8(T_OUTPUT).u8(fd).raw(data),
            OutputMsg::Flush { upto, release } => w.u8(T_OUTPUT_FLUSH).u64(upto).u8(release as u8),
            OutputMsg::Ack { upto, errors } => {
                w.u8(T_OUTPUT_ACK).u64(upto).u32(errors[0] as u32).u32(errors[1] as u32)
            }
            OutputMsg::Exit { code } => w.u8(T_EXIT).u32(code as u32),
        };
        w.finish()
    }

    pub(crate) fn decode(body: &[u8]) -> Result<OutputMsg<'_>, net::DecodeError> {
        let mut r = net::Reader::new(body);
        let msg = match r.u8()? {
            T_OUTPUT => {
                let fd = r.u8()?;
                if fd != 1 && fd != 2 {
                    return Err(net::DecodeError(format!("output for descriptor {fd}")));
                }
                return Ok(OutputMsg::Output { fd, data: r.rest() });
            }
            T_OUTPUT_FLUSH => OutputMsg::Flush { upto: r.u64()?, release: runtime::wire::flag(r.u8()?)? },
            T_OUTPUT_ACK => OutputMsg::Ack { upto: r.u64()?, errors: [r.u32()? as i32, r.u32()? as i32] },
            T_EXIT => OutputMsg::Exit { code: r.u32()? as i32 },
            t => return Err(net::DecodeError(format!("not an output message: tag {t:#x}"))),
        };
        r.end()?;
        Ok(msg)
    }
}

/// Registers output's messages and its last words with the runtime.
pub(crate) fn register(ext: &mut runtime::Extensions) {
    ext.frames(&TAGS, on_frame);
    ext.on_stop(drain);
}

fn on_frame(rt: &'static runtime::Runtime, from: NodeId, body: &[u8]) -> runtime::Verdict {
    match OutputMsg::decode(body) {
        Err(e) => return runtime::Verdict::Lost(format!("it sent a malformed output message ({e})")),
        Ok(OutputMsg::Ack { upto, errors }) => on_ack(upto, errors),
        Ok(_) if rt.me != NodeId(0) => {
            return runtime::Verdict::Lost("it sent output to a node other than node 0".into());
        }
        Ok(OutputMsg::Output { fd, data }) => {
            enqueue(|| Item::Data { from, fd: fd.clamp(1, 2), bytes: data.to_vec() });
        }
        Ok(OutputMsg::Flush { upto, release }) => enqueue(|| Item::Flush { from, upto, release }),
        Ok(OutputMsg::Exit { code }) => exit_requested(code),
    }
    runtime::Verdict::Ok
}

/// Output frames this node has sent node 0, and how many node 0 has acknowledged.
static SENT: AtomicU64 = AtomicU64::new(0);
static ACKED: AtomicU64 = AtomicU64::new(0);
/// Bytes forwarded since the last flush request: past [`MAX_UNACKED`] the writer waits.
static UNACKED_BYTES: AtomicUsize = AtomicUsize::new(0);
/// The `errno` node 0 met writing each descriptor (0: none), and whether this node's first write to
/// each has been acknowledged.
static ERRORS: [AtomicI32; 3] = [AtomicI32::new(0), AtomicI32::new(0), AtomicI32::new(0)];
static PROBED: [AtomicBool; 3] = [AtomicBool::new(false), AtomicBool::new(false), AtomicBool::new(false)];
static ACK_LOCK: ServiceLock<()> = ServiceLock::new("output.ack", ());
static ACK_CV: Condvar = Condvar::new();
/// Node 0 runs the output writer (a cluster of more than one node).
static WRITER_RUNNING: AtomicBool = AtomicBool::new(false);
/// How many bytes a node forwards before it waits for node 0 to catch up.
const MAX_UNACKED: usize = 1 << 20;

/// Starts forwarding this node's application output to node 0 (nodes other than 0), or the output
/// writer (node 0 of a cluster of several nodes).
pub(crate) fn start(me: NodeId, nodes: u16) -> Result<(), String> {
    if nodes < 2 {
        return Ok(());
    }
    if me != NodeId(0) {
        dsm::interpose::set_output_hook(Some(hook));
        return Ok(());
    }
    let _internal = InternalAlloc::new();
    WRITER_RUNNING.store(true, Ordering::SeqCst);
    std::thread::Builder::new()
        .name("rthreads-output".into())
        .spawn(|| {
            crate::alloc::runtime_thread();
            writer()
        })
        .map(drop)
        .map_err(|e| format!("cannot start the output writer: {e}"))
}

/// The output hook of nodes other than 0 (see the module docs).
fn hook(fd: c_int, iov: *const iovec, cnt: c_int) -> Option<ssize_t> {
    let rt = runtime::get()?;
    if rt.me == NodeId(0) || runtime::on_service_thread() || crate::alloc::internal() || rt.is_stopping() {
        return None;
    }
    let i = usize::try_from(fd).unwrap_or(0).min(2);
    // The error node 0 met writing this descriptor, as this call's.
    let failed = || {
        let err = ERRORS[i].load(Ordering::SeqCst);
        (err != 0).then(|| dsm::sys::set_errno(err)).is_some()
    };
    if failed() {
        return Some(-1);
    }
    let (iov, cnt) = (iov as usize, usize::try_from(cnt).unwrap_or(0));
    let total = private(move || {
        let parts = || {
            (0..cnt).map(move |k| {
                // SAFETY: the caller passed `cnt` valid iovecs (the C contract of writev); reading
                // them may trap on the shared space, which is served (no lock is held).
                let v = unsafe { *(iov as *const iovec).add(k) };
                (v.iov_base as usize, v.iov_len)
            })
        };
        let total: usize = parts().map(|p| p.1).sum();
        if total == 0 {
            return 0;
        }
        let mut frame = InternalAlloc::with(|| Vec::with_capacity(total + 2));
        frame.push(T_OUTPUT);
        frame.push(fd as u8);
        for (at, len) in parts() {
            // SAFETY: the caller's buffer of `len` readable bytes; the capacity reserved above
            // takes it without allocating. A trap on a shared page is served meanwhile.
            frame.extend_from_slice(unsafe { std::slice::from_raw_parts(at as *const u8, len) });
        }
        rt.send_batched(NodeId(0), frame);
        SENT.fetch_add(1, Ordering::SeqCst);
        UNACKED_BYTES.fetch_add(total, Ordering::SeqCst);
        total
    });
    if total == 0 {
        return Some(0);
    }
    // Standard error is unbuffered: what a thread writes there is out before the call returns (a
    // panic message right before an abort is not lost). The first write to each descriptor
    // learns at once whether node 0 can write it.
    let first = !PROBED[i].swap(true, Ordering::SeqCst);
    if fd == 2 || first || UNACKED_BYTES.load(Ordering::SeqCst) > MAX_UNACKED {
        wait_written(false);
        if failed() {
            return Some(-1);
        }
    }
    Some(total as ssize_t)
}

/// A release point: returns once node 0 has written everything this node forwarded before the
/// call (at once when nothing is outstanding, or on node 0).
pub(crate) fn flush() {
    wait_written(true);
}

/// Waits until node 0 has written everything forwarded so far; at a `release`, unfinished lines
/// too (otherwise they wait for their end).
fn wait_written(release: bool) {
    let sent = SENT.load(Ordering::SeqCst);
    if ACKED.load(Ordering::SeqCst) >= sent {
        return;
    }
    let Some(rt) = runtime::get() else { return };
    if runtime::on_service_thread() {
        return;
    }
    private(move || {
        UNACKED_BYTES.store(0, Ordering::SeqCst);
        let frame = InternalAlloc::with(|| OutputMsg::Flush { upto: sent, release }.encode());
        rt.send(NodeId(0), frame);
        let mut g = ACK_LOCK.lock();
        while ACKED.load(Ordering::SeqCst) < sent {
            // Bounded so that a stopping cluster (the service thread ends the process) is never
            // waited for in vain; the loop itself has no deadline.
            g = g.wait_timeout(&ACK_CV, Duration::from_millis(100));
        }
    });
}

/// Node 0 acknowledged output up to frame `upto` and reports the errors it met (service thread).
pub(crate) fn on_ack(upto: u64, errors: [i32; 2]) {
    for (k, e) in errors.into_iter().enumerate().filter(|&(_, e)| e != 0) {
        ERRORS[k + 1].store(e, Ordering::SeqCst);
    }
    ACKED.fetch_max(upto, Ordering::SeqCst);
    let _g = ACK_LOCK.lock();
    ACK_CV.notify_all();
}

// ---------------------------------------------------------------------------------------------
// Node 0: the output writer.

enum Item {
    Data {
        from: NodeId,
        fd: u8,
        bytes: Vec<u8>,
    },
    Flush {
        from: NodeId,
        upto: u64,
        release: bool,
    },
    /// Write out every unfinished line (the run is ending).
    Rest,
}

struct Queue {
    items: VecDeque<Item>,
    /// The writer is writing an item it has taken off the queue.
    busy: bool,
}

static QUEUE: ServiceLock<Queue> =
    ServiceLock::new("output.queue", Queue { items: VecDeque::new(), busy: false });
static QUEUE_CV: Condvar = Condvar::new();
/// The `errno` of node 0's failed writes, per descriptor (0: none).
static WRITE_ERRORS: [AtomicI32; 3] = [AtomicI32::new(0), AtomicI32::new(0), AtomicI32::new(0)];

/// Queues forwarded output, or a request for an acknowledgement of it, for the writer (service
/// thread, node 0).
fn enqueue(item: impl FnOnce() -> Item) {
    let _internal = InternalAlloc::new();
    QUEUE.lock().items.push_back(item());
    QUEUE_CV.notify_all();
}

/// Waits (until `deadline` at most) until the writer has written everything forwarded so far,
/// unfinished lines included.
pub(crate) fn drain(deadline: Instant) {
    if !WRITER_RUNNING.load(Ordering::SeqCst) {
        return;
    }
    private(move || {
        let mut q = QUEUE.lock();
        q.items.push_back(Item::Rest);
        QUEUE_CV.notify_all();
        while (!q.items.is_empty() || q.busy) && Instant::now() < deadline {
            q = q.wait_timeout(&QUEUE_CV, Duration::from_millis(10));
        }
    });
}

/// Writes `bytes` to node 0's `fd`; on failure records the error, after which that descriptor's
/// output is dropped (every later write to it by any node fails with the error).
fn write_out(fd: u8, bytes: &[u8]) {
    let i = usize::from(fd);
    if bytes.is_empty() || WRITE_ERRORS[i].load(Ordering::SeqCst) != 0 {
        return;
    }
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: a live slice; the raw system call (node 0 does not hook its own output).
        let n = unsafe { dsm::sys::raw_write(c_int::from(fd), rest.as_ptr(), rest.len()) };
        if n <= 0 {
            let e = std::io::Error::last_os_error();
            if n < 0 && e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            let errno = if n < 0 { e.raw_os_error().unwrap_or(libc::EIO) } else { libc::EIO };
            WRITE_ERRORS[i].store(errno, Ordering::SeqCst);
            return;
        }
        rest = &rest[n as usize..];
    }
}

fn writer() -> ! {
    let prefix = std::env::var("RTHREADS_PREFIX").ok().filter(|v| !v.is_empty() && v != "0");
    // Pieces of a line not yet ended, per (node, descriptor).
    let mut partial: HashMap<(NodeId, u8), Vec<u8>> = HashMap::new();
    let mut line = Vec::with_capacity(4096);
    loop {
        let item = {
            let mut q = QUEUE.lock();
            q.busy = false;
            QUEUE_CV.notify_all();
            loop {
                if let Some(item) = q.items.pop_front() {
                    q.busy = true;
                    break item;
                }
                q = q.wait(&QUEUE_CV);
            }
        };
        match item {
            Item::Data { from, fd, bytes } => {
                let pending = partial.entry((from, fd)).or_default();
                pending.extend_from_slice(&bytes);
                let Some(end) = pending.iter().rposition(|&b| b == b'\n') else { continue };
                let rest = pending.split_off(end + 1);
                let whole = std::mem::replace(pending, rest);
                emit(&mut line, prefix.as_deref(), from, fd, &whole);
            }
            Item::Rest => {
                let mut all: Vec<_> = partial.drain().filter(|(_, p)| !p.is_empty()).collect();
                all.sort_by_key(|(k, _)| *k);
                for ((from, fd), whole) in all {
                    emit(&mut line, prefix.as_deref(), from, fd, &whole);
                }
            }
            Item::Flush { from, upto, release } => {
                for fd in [1u8, 2].into_iter().filter(|_| release) {
                    if let Some(p) = partial.get_mut(&(from, fd)).filter(|p| !p.is_empty()) {
                        let whole = std::mem::take(p);
                        emit(&mut line, prefix.as_deref(), from, fd, &whole);
                    }
                }
                if let Some(rt) = runtime::get() {
                    let errors =
                        [WRITE_ERRORS[1].load(Ordering::SeqCst), WRITE_ERRORS[2].load(Ordering::SeqCst)];
                    rt.send(from, OutputMsg::Ack { upto, errors }.encode());
                }
            }
        }
    }
}

/// Writes `text` (whole lines, or a last piece at a flush) of node `from`, with the line prefix
/// the run asked for: `RTHREADS_PREFIX=1` puts `[node N] ` before each line; `=tag` (what the
/// launcher asks for) puts a record-separator byte, the node number and another separator, which
/// the launcher turns into its own `[node N] ` prefix.
fn emit(line: &mut Vec<u8>, prefix: Option<&str>, from: NodeId, fd: u8, text: &[u8]) {
    let Some(p) = prefix else { return write_out(fd, text) };
    line.clear();
    for piece in text.split_inclusive(|&b| b == b'\n') {
        if p == "tag" {
            line.push(0x1E);
            line.extend_from_slice(from.0.to_string().as_bytes());
            line.push(0x1E);
        } else {
            line.extend_from_slice(format!("[{from}] ").as_bytes());
        }
        line.extend_from_slice(piece);
    }
    write_out(fd, line);
}

// ---------------------------------------------------------------------------------------------
// `exit`.

static EXITING: AtomicBool = AtomicBool::new(false);

/// What `exit(code)` does in a running cluster before the process ends (see the module docs).
fn on_exit(code: c_int) {
    let Some(rt) = runtime::get() else { return };
    if runtime::on_service_thread() {
        return;
    }
    if EXITING.swap(true, Ordering::SeqCst) {
        // Another thread is ending the program already; it will end this one too.
        loop {
            std::thread::park();
        }
    }
    if rt.me != NodeId(0) {
        flush();
        private(move || {
            let frame = InternalAlloc::with(|| OutputMsg::Exit { code }.encode());
            rt.send(NodeId(0), frame);
        });
        // Node 0 now stops the cluster, which ends this process (its service thread exits on the
        // shutdown order). Should node 0 never answer, end anyway.
        std::thread::sleep(rt.failure_timeout + Duration::from_secs(1));
        say(&format!("rthreads: {}: node 0 did not stop the cluster after exit({code}); exiting", rt.me));
        // SAFETY: ends the process without running anything more.
        unsafe { libc::_exit(code) }
    }
    rt.shutdown_cluster(code);
    let deadline = Instant::now() + Duration::from_secs(2);
    // The writer's last lines, then what the nodes node 0 started still print (the stop hooks).
    rt.finish(deadline);
    crate::trace::flush();
    crate::trace::finish();
}

/// Node 0: node `from` called `exit(code)`; the whole program ends with `code` (service thread:
/// the work is done on a thread of its own, as `std::process::exit`, which flushes std's stdout).
fn exit_requested(code: i32) {
    static ONCE: AtomicBool = AtomicBool::new(false);
    if ONCE.swap(true, Ordering::SeqCst) {
        return;
    }
    let _internal = InternalAlloc::new();
    let started = std::thread::Builder::new().name("rthreads-exit".into()).spawn(move || {
        // Not a runtime thread: it ends the program as an application thread of node 0 would.
        std::process::exit(code)
    });
    if started.is_err() {
        say("rthreads: node 0: cannot start the exit thread; exiting at once");
        // SAFETY: ends the process.
        unsafe { libc::_exit(code) }
    }
}

type ExitFn = unsafe extern "C" fn(c_int) -> !;

/// The C library's own `exit`, found past this definition.
fn real_exit() -> Option<ExitFn> {
    static REAL: AtomicUsize = AtomicUsize::new(0);
    let mut f = REAL.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT looks past the executable.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"exit".as_ptr()) } as usize;
        REAL.store(f, Ordering::Release);
    }
    // SAFETY: a non-null result of dlsym for `exit` is the C library's `exit`.
    (f != 0).then(|| unsafe { std::mem::transmute::<usize, ExitFn>(f) })
}

/// `exit(3)` for programs that link rthreads: in a running cluster it ends the whole program with
/// `code` after the output written before it (see the module docs), then exits as the C library
/// does (running `atexit` handlers).
///
/// # Safety
/// The C contract of `exit`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exit(code: c_int) -> ! {
    on_exit(code);
    match real_exit() {
        // SAFETY: the C library's exit, called as the caller called us.
        Some(f) => unsafe { f(code) },
        // SAFETY: no C library exit to chain to: end the process.
        None => unsafe { libc::_exit(code) },
    }
}
