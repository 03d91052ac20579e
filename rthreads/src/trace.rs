//! `RTHREADS_TRACE=path.json`: a trace of the run in the Chrome trace-event format (open it in
//! Perfetto or `chrome://tracing`): faults (with their duration and page), protocol messages sent
//! and received (with page and peer), time threads spent waiting in synchronisation, and thread
//! starts, per node (`pid`) and thread (`tid`).
//!
//! Every node records into its own preallocated buffer (`dsm::trace`; the fault handler records
//! without allocating or formatting). At exit each node formats its events and appends them to
//! the file in whole lines; node 0 creates the file first and closes the JSON array last.

use std::fmt::Write as _;
use std::io::Write as _;

use dsm::trace::{self, EventKind};

use crate::counters::KINDS;
use crate::log::say;

/// Events each node can hold before it drops further ones.
const DEFAULT_EVENTS: usize = 1 << 20;

fn path() -> Option<String> {
    std::env::var("RTHREADS_TRACE").ok().filter(|p| !p.is_empty())
}

/// Starts recording on this node; node 0 also creates the file. Called at start-up.
pub(crate) fn start(me: dsm::NodeId) -> Result<(), String> {
    let Some(path) = path() else { return Ok(()) };
    let events =
        std::env::var("RTHREADS_TRACE_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_EVENTS);
    trace::enable(events).map_err(|e| format!("reserving the trace buffer: {e}"))?;
    if me == dsm::NodeId(0) {
        std::fs::write(&path, "[\n").map_err(|e| format!("creating the trace {path}: {e}"))?;
    }
    Ok(())
}

fn name(kind: u32, arg: u64) -> String {
    let msg = || KINDS.get((arg & 0xff) as usize).copied().unwrap_or("other");
    match kind {
        k if k == EventKind::ReadFault as u32 => "read fault".into(),
        k if k == EventKind::WriteFault as u32 => "write fault".into(),
        k if k == EventKind::MessageSent as u32 => format!("send {}", msg()),
        k if k == EventKind::MessageReceived as u32 => format!("receive {}", msg()),
        k if k == EventKind::SyncWait as u32 => crate::counters::Wait::name(arg).into(),
        k if k == EventKind::ThreadStart as u32 => "thread start".into(),
        _ => "unknown".into(),
    }
}

/// Appends this node's events to the trace file (at exit).
pub(crate) fn flush() {
    crate::alloc::private_internal(flush_here);
}

fn flush_here() {
    let Some(path) = path() else { return };
    let me = crate::log::node().0;
    let (events, dropped) = trace::events();
    let mut out = String::with_capacity(events.len() * 160 + 256);
    let _ = writeln!(
        out,
        "{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":{me},\"args\":{{\"name\":\"node {me}\"}}}},"
    );
    for e in &events {
        let ts = e.t0 as f64 / 1e3;
        let n = name(e.kind, e.arg);
        let cat = match e.kind {
            k if k <= EventKind::WriteFault as u32 => "fault",
            k if k <= EventKind::MessageReceived as u32 => "message",
            k if k == EventKind::SyncWait as u32 => "sync",
            _ => "thread",
        };
        let mut args = String::new();
        if e.page != u64::MAX {
            let _ = write!(args, "\"page\":{}", e.page);
        }
        if matches!(e.kind, k if k == EventKind::MessageSent as u32 || k == EventKind::MessageReceived as u32)
        {
            let _ = write!(args, ",\"peer\":{}", e.arg >> 8);
        }
        let _ = write!(out, "{{\"name\":\"{n}\",\"cat\":\"{cat}\",");
        if e.t1 > e.t0 {
            let _ = write!(out, "\"ph\":\"X\",\"ts\":{ts:.3},\"dur\":{:.3}", (e.t1 - e.t0) as f64 / 1e3);
        } else {
            let _ = write!(out, "\"ph\":\"i\",\"s\":\"t\",\"ts\":{ts:.3}");
        }
        let _ = writeln!(out, ",\"pid\":{me},\"tid\":{},\"args\":{{{args}}}}},", e.tid);
    }
    if dropped > 0 {
        say(&format!(
            "rthreads: node {me}: the trace buffer was full, {dropped} events dropped (RTHREADS_TRACE_EVENTS)"
        ));
    }
    if let Err(e) = append(&path, &out) {
        say(&format!("rthreads: node {me}: cannot write the trace {path}: {e}"));
    }
}

/// Node 0, after every node has flushed: closes the JSON array.
pub(crate) fn finish() {
    let Some(path) = path() else { return };
    let end = format!(
        "{{\"name\":\"end\",\"ph\":\"i\",\"s\":\"g\",\"ts\":{:.3},\"pid\":0,\"tid\":0}}\n]\n",
        trace::now_ns() as f64 / 1e3
    );
    if let Err(e) = append(&path, &end) {
        say(&format!("rthreads: cannot finish the trace {path}: {e}"));
    }
}

/// A protocol message `frame` left for (or came from) `peer`.
fn append(path: &str, text: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new().append(true).open(path).and_then(|mut f| f.write_all(text.as_bytes()))
}

pub(crate) fn message(sent: bool, peer: dsm::NodeId, frame: &[u8], page: u64) {
    if trace::enabled() {
        let now = trace::now_ns();
        let kind = if sent { EventKind::MessageSent } else { EventKind::MessageReceived };
        let arg = (u64::from(peer.0) << 8) | crate::counters::kind_of(frame) as u64;
        trace::record(kind, now, now, page, arg);
    }
}
