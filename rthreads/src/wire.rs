//! The runtime's messages between nodes, and their encoding (see `net::codec`).

use dsm::protocol::lrc::{Msg as LrcMsg, Payload};
use dsm::protocol::sc::Msg;
use dsm::sys::PAGE_SIZE;
use dsm::{Access, PageId};
use net::{DecodeError, Reader, Writer};

use crate::sync::manager::{Op, Reply, Request};
use crate::sync::watch::ThreadLocks;

const T_PROTO: u8 = 0x10;
const T_SPAWN: u8 = 0x11;
const T_DONE: u8 = 0x12;
const T_WATCH: u8 = 0x13;
const T_FINISHED: u8 = 0x14;
const T_FORGET: u8 = 0x15;
const T_FREE: u8 = 0x16;
const T_SHUTDOWN: u8 = 0x17;
const T_HEARTBEAT: u8 = 0x18;
const T_ABORT: u8 = 0x19;
const T_LRC: u8 = 0x1A;
const T_MIGRATE: u8 = 0x1C;
const T_SYNC_REQ: u8 = 0x20;
const T_SYNC_REPLY: u8 = 0x21;
const T_REVOKE: u8 = 0x22;
const T_STATS_REQ: u8 = 0x23;
const T_LOG: u8 = 0x24;
const T_ORDERED: u8 = 0x25;
const T_LOAD: u8 = 0x26;
const T_REBALANCE: u8 = 0x27;
const T_OUTPUT: u8 = 0x28;
const T_OUTPUT_FLUSH: u8 = 0x29;
const T_OUTPUT_ACK: u8 = 0x2A;
const T_EXIT: u8 = 0x2B;
const T_STOP: u8 = 0x2C;
const T_LOCKS: u8 = 0x2D;

/// A decoded runtime message. Page bytes of a protocol message stay in the frame (`data`).
#[derive(Debug)]
pub(crate) enum Wire<'a> {
    Proto {
        msg: Msg,
        data: Option<&'a [u8]>,
    },
    Lrc {
        msg: LrcMsg,
        data: Option<&'a [u8]>,
    },
    Spawn {
        tid: u64,
        closure: u64,
        stack: u64,
        name: &'a str,
    },
    /// A running thread moves here: resume the fiber whose control block is at `fiber`.
    Migrate {
        tid: u64,
        origin: u16,
        fiber: u64,
        name: &'a str,
    },
    Done {
        tid: u64,
        started: bool,
    },
    Watch {
        tid: u64,
    },
    Finished {
        tid: u64,
        started: bool,
    },
    Forget {
        tid: u64,
    },
    Free {
        blocks: Vec<(usize, usize, usize)>,
    },
    Shutdown {
        code: i32,
    },
    Heartbeat,
    Abort {
        lost: u16,
        reason: &'a str,
    },
    SyncReq(Request),
    Revoke {
        key: u64,
    },
    StatsReq {
        waiter: u64,
    },
    Log {
        on: bool,
    },
    /// A message on a direct connection that must not overtake the first `after` frames the
    /// sender queued on the ordinary connection to this node.
    Ordered {
        after: u64,
        inner: &'a [u8],
    },
    SyncReply {
        waiter: u64,
        reply: Reply,
    },
    /// The sender's load (see `placement`): threads it runs, thousandths of a CPU it uses, frames
    /// from the recipient it had processed, and the move claim it settles (0: none).
    Load {
        running: u32,
        cpu_milli: u32,
        processed: u64,
        settles: u64,
    },
    Rebalance {
        on: bool,
    },
    /// Bytes an application thread of the sender wrote to its stdout (`fd` 1) or stderr (2), for
    /// node 0 to write (see `output`).
    Output {
        fd: u8,
        data: &'a [u8],
    },
    /// Acknowledge the sender's output frames up to number `upto` once they are written; at a
    /// `release`, pieces of unfinished lines are written too.
    OutputFlush {
        upto: u64,
        release: bool,
    },
    /// Node 0 has written the recipient's output up to frame `upto`; the `errno` of its failed
    /// writes to stdout and stderr (0: none).
    OutputAck {
        upto: u64,
        errors: [i32; 2],
    },
    /// A thread of the sender called `exit(code)`: the program ends with `code`.
    Exit {
        code: i32,
    },
    /// The cluster stops with exit code `code` for `reason` (a deadlock, a stuck node) although no
    /// node was lost.
    Stop {
        code: i32,
        reason: &'a str,
    },
    /// The sender's threads that hold or wait for locks, for node 0's deadlock search.
    Locks {
        threads: Vec<ThreadLocks>,
    },
}

fn access_code(a: Access) -> u8 {
    match a {
        Access::None => 0,
        Access::Read => 1,
        Access::Write => 2,
    }
}

fn access_from(v: u8) -> Result<Access, DecodeError> {
    match v {
        0 => Ok(Access::None),
        1 => Ok(Access::Read),
        2 => Ok(Access::Write),
        _ => Err(DecodeError(format!("bad access code {v}"))),
    }
}

/// The header of a protocol message (page bytes, if any, are sent after it).
pub(crate) fn proto(msg: &Msg) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_PROTO);
    sc_body(&mut w, msg);
    w.finish()
}

fn sc_body(w: &mut Writer, msg: &Msg) {
    match *msg {
        Msg::ReadReq { page } => w.u8(1).u64(page.0),
        Msg::WriteReq { page } => w.u8(2).u64(page.0),
        Msg::Grant { page, access, data } => w.u8(3).u64(page.0).u8(access_code(access)).u8(data as u8),
        Msg::Invalidate { page } => w.u8(4).u64(page.0),
        Msg::InvAck { page } => w.u8(5).u64(page.0),
        Msg::Recall { page, keep_read } => w.u8(6).u64(page.0).u8(keep_read as u8),
        Msg::RecallAck { page } => w.u8(7).u64(page.0),
    };
}

fn sc_decode(r: &mut Reader<'_>) -> Result<Msg, DecodeError> {
    let kind = r.u8()?;
    let page = PageId(r.u64()?);
    Ok(match kind {
        1 => Msg::ReadReq { page },
        2 => Msg::WriteReq { page },
        3 => Msg::Grant { page, access: access_from(r.u8()?)?, data: r.u8()? != 0 },
        4 => Msg::Invalidate { page },
        5 => Msg::InvAck { page },
        6 => Msg::Recall { page, keep_read: r.u8()? != 0 },
        7 => Msg::RecallAck { page },
        k => return Err(DecodeError(format!("unknown protocol message {k}"))),
    })
}

/// A message of the release-consistent protocol; its payload (page bytes or a diff) travels as the
/// rest of the frame.
pub(crate) fn lrc(msg: &LrcMsg) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_LRC);
    match *msg {
        LrcMsg::Fetch { page, count } => w.u8(1).u64(page.0).u16(count),
        LrcMsg::Page { page } => w.u8(2).u64(page.0),
        LrcMsg::ScPage { page } => w.u8(3).u64(page.0),
        LrcMsg::Diff { page, seq } => w.u8(4).u64(page.0).u64(seq),
        LrcMsg::DiffAck { page, seq } => w.u8(5).u64(page.0).u64(seq),
        LrcMsg::Notice { page } => w.u8(6).u64(page.0),
        LrcMsg::NoticeAck { page } => w.u8(7).u64(page.0),
        LrcMsg::MakeSc { page } => w.u8(8).u64(page.0),
        LrcMsg::Convert { page } => w.u8(9).u64(page.0),
        LrcMsg::ConvertAck { page } => w.u8(10).u64(page.0),
        LrcMsg::Sc(inner) => {
            w.u8(11);
            sc_body(&mut w, &inner);
            &mut w
        }
    };
    w.finish()
}

pub(crate) fn spawn(tid: u64, closure: u64, stack: u64, name: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_SPAWN).u64(tid).u64(closure).u64(stack).str(name);
    w.finish()
}

pub(crate) fn migrate(tid: u64, origin: u16, fiber: u64, name: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_MIGRATE).u64(tid).u16(origin).u64(fiber).str(name);
    w.finish()
}

fn tid_flag(tag: u8, tid: u64, flag: bool) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(tag).u64(tid).u8(flag as u8);
    w.finish()
}

pub(crate) fn done(tid: u64, started: bool) -> Vec<u8> {
    tid_flag(T_DONE, tid, started)
}
pub(crate) fn watch(tid: u64) -> Vec<u8> {
    tid_flag(T_WATCH, tid, false)
}
pub(crate) fn finished(tid: u64, started: bool) -> Vec<u8> {
    tid_flag(T_FINISHED, tid, started)
}
pub(crate) fn forget(tid: u64) -> Vec<u8> {
    tid_flag(T_FORGET, tid, false)
}

pub(crate) fn free(blocks: &[(usize, usize, usize)]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_FREE).u32(blocks.len() as u32);
    for &(p, s, a) in blocks {
        w.u64(p as u64).u64(s as u64).u64(a as u64);
    }
    w.finish()
}

pub(crate) fn shutdown(code: i32) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_SHUTDOWN).u32(code as u32);
    w.finish()
}

pub(crate) fn sync_req(r: &Request) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_SYNC_REQ).u64(r.key).u16(r.waiter.0).u64(r.waiter.1);
    match &r.op {
        Op::Lock { shared } => w.u8(1).u8(*shared as u8),
        Op::TryLock { shared } => w.u8(2).u8(*shared as u8),
        Op::Unlock { shared } => w.u8(3).u8(*shared as u8),
        Op::CvWait { mutex } => w.u8(4).u64(*mutex),
        Op::CvNotify { all } => w.u8(5).u8(*all as u8),
        Op::CvCancel => w.u8(6),
        Op::Barrier { n } => w.u8(7).u64(*n),
        Op::ChanCreate { bound } => w.u8(8).u64(bound.map_or(u64::MAX, |b| b)),
        Op::ChanSend { sender, seq, bytes, sync } => {
            w.u8(9).u64(*sender).u64(*seq).u8(*sync as u8).bytes(bytes)
        }
        Op::ChanTrySend { bytes } => w.u8(10).bytes(bytes),
        Op::ChanRecv { block, max } => w.u8(11).u8(*block as u8).u64(*max),
        Op::ChanRecvCancel => w.u8(12),
        Op::ChanClone => w.u8(13),
        Op::ChanSenderDrop { sender, final_seq } => w.u8(14).u64(*sender).u64(*final_seq),
        Op::ChanReceiverDrop => w.u8(15),
        Op::CacheLock => w.u8(16),
        Op::CacheTryLock => w.u8(17),
        Op::RevokeBusy => w.u8(18),
    };
    w.finish()
}

pub(crate) fn ordered(after: u64, inner: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_ORDERED).u64(after).raw(inner);
    w.finish()
}

/// "Still here": sent on an otherwise quiet connection so the peer can tell silence from death.
pub(crate) fn heartbeat() -> Vec<u8> {
    vec![T_HEARTBEAT]
}

/// The cluster is stopping because node `lost` was lost, for `reason`.
pub(crate) fn abort(lost: u16, reason: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_ABORT).u16(lost).str(reason);
    w.finish()
}

/// The sender's load, for the recipient (see `Wire::Load`).
pub(crate) fn load(running: u32, cpu_milli: u32, processed: u64, settles: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_LOAD).u32(running).u32(cpu_milli).u64(processed).u64(settles);
    w.finish()
}

/// Rebalancing at safe points is switched on or off for the whole cluster.
pub(crate) fn rebalance(on: bool) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_REBALANCE).u8(on as u8);
    w.finish()
}

/// Starts an `Output` frame for descriptor `fd` in `frame`; the bytes follow raw.
pub(crate) fn output_header(frame: &mut Vec<u8>, fd: u8) {
    frame.push(T_OUTPUT);
    frame.push(fd);
}

pub(crate) fn output_flush(upto: u64, release: bool) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_OUTPUT_FLUSH).u64(upto).u8(release as u8);
    w.finish()
}

pub(crate) fn output_ack(upto: u64, errors: [i32; 2]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_OUTPUT_ACK).u64(upto).u32(errors[0] as u32).u32(errors[1] as u32);
    w.finish()
}

pub(crate) fn exit(code: i32) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_EXIT).u32(code as u32);
    w.finish()
}

pub(crate) fn stop(code: i32, reason: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_STOP).u32(code as u32).str(reason);
    w.finish()
}

pub(crate) fn locks(threads: &[ThreadLocks]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_LOCKS).u32(threads.len() as u32);
    for t in threads {
        w.u64(t.thread).str(&t.name).u64(t.waiting).u64(t.waited_ms).u8(t.held.len().min(255) as u8);
        for &k in t.held.iter().take(255) {
            w.u64(k);
        }
    }
    w.finish()
}

pub(crate) fn log(on: bool) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_LOG).u8(on as u8);
    w.finish()
}

pub(crate) fn stats_req(waiter: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_STATS_REQ).u64(waiter);
    w.finish()
}

pub(crate) fn revoke(key: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_REVOKE).u64(key);
    w.finish()
}

pub(crate) fn sync_reply(waiter: u64, reply: &Reply) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_SYNC_REPLY).u64(waiter);
    match reply {
        Reply::Granted => w.u8(1),
        Reply::NotGranted => w.u8(2),
        Reply::CvRemoved => w.u8(3),
        Reply::CvLate => w.u8(4),
        Reply::Barrier { leader } => w.u8(5).u8(*leader as u8),
        Reply::Ack => w.u8(6),
        Reply::Full(b) => w.u8(7).bytes(b),
        Reply::Disconnected(b) => w.u8(8).bytes(b),
        Reply::Empty => w.u8(9),
        Reply::Msgs { count, bytes } => w.u8(10).u64(*count).bytes(bytes),
        Reply::Cancelled => w.u8(11),
        Reply::Stats(b) => w.u8(12).bytes(b),
    };
    w.finish()
}

fn bool_of(v: u8) -> Result<bool, DecodeError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError(format!("bad flag {v}"))),
    }
}

fn decode_op(r: &mut Reader<'_>) -> Result<Op, DecodeError> {
    Ok(match r.u8()? {
        1 => Op::Lock { shared: bool_of(r.u8()?)? },
        2 => Op::TryLock { shared: bool_of(r.u8()?)? },
        3 => Op::Unlock { shared: bool_of(r.u8()?)? },
        4 => Op::CvWait { mutex: r.u64()? },
        5 => Op::CvNotify { all: bool_of(r.u8()?)? },
        6 => Op::CvCancel,
        7 => Op::Barrier { n: r.u64()? },
        8 => Op::ChanCreate { bound: Some(r.u64()?).filter(|&b| b != u64::MAX) },
        9 => Op::ChanSend {
            sender: r.u64()?,
            seq: r.u64()?,
            sync: bool_of(r.u8()?)?,
            bytes: r.bytes()?.to_vec(),
        },
        10 => Op::ChanTrySend { bytes: r.bytes()?.to_vec() },
        11 => Op::ChanRecv { block: bool_of(r.u8()?)?, max: r.u64()? },
        12 => Op::ChanRecvCancel,
        13 => Op::ChanClone,
        14 => Op::ChanSenderDrop { sender: r.u64()?, final_seq: r.u64()? },
        15 => Op::ChanReceiverDrop,
        16 => Op::CacheLock,
        17 => Op::CacheTryLock,
        18 => Op::RevokeBusy,
        k => return Err(DecodeError(format!("unknown sync operation {k}"))),
    })
}

fn decode_reply(r: &mut Reader<'_>) -> Result<Reply, DecodeError> {
    Ok(match r.u8()? {
        1 => Reply::Granted,
        2 => Reply::NotGranted,
        3 => Reply::CvRemoved,
        4 => Reply::CvLate,
        5 => Reply::Barrier { leader: bool_of(r.u8()?)? },
        6 => Reply::Ack,
        7 => Reply::Full(r.bytes()?.to_vec()),
        8 => Reply::Disconnected(r.bytes()?.to_vec()),
        9 => Reply::Empty,
        10 => Reply::Msgs { count: r.u64()?, bytes: r.bytes()?.to_vec() },
        11 => Reply::Cancelled,
        12 => Reply::Stats(r.bytes()?.to_vec()),
        k => return Err(DecodeError(format!("unknown sync reply {k}"))),
    })
}

pub(crate) fn decode(body: &[u8]) -> Result<Wire<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let wire = match r.u8()? {
        T_PROTO => {
            let msg = sc_decode(&mut r)?;
            let data = if msg.carries_data() { Some(r.raw(PAGE_SIZE)?) } else { None };
            Wire::Proto { msg, data }
        }
        T_LRC => {
            let kind = r.u8()?;
            let msg = if kind == 11 {
                LrcMsg::Sc(sc_decode(&mut r)?)
            } else {
                let page = PageId(r.u64()?);
                match kind {
                    1 => LrcMsg::Fetch { page, count: r.u16()? },
                    2 => LrcMsg::Page { page },
                    3 => LrcMsg::ScPage { page },
                    4 => LrcMsg::Diff { page, seq: r.u64()? },
                    5 => LrcMsg::DiffAck { page, seq: r.u64()? },
                    6 => LrcMsg::Notice { page },
                    7 => LrcMsg::NoticeAck { page },
                    8 => LrcMsg::MakeSc { page },
                    9 => LrcMsg::Convert { page },
                    10 => LrcMsg::ConvertAck { page },
                    k => return Err(DecodeError(format!("unknown release-consistency message {k}"))),
                }
            };
            let data = match msg.payload() {
                Payload::None => None,
                Payload::Page => Some(r.raw(PAGE_SIZE)?),
                Payload::Diff => {
                    let d = r.rest();
                    r.raw(d.len())?;
                    Some(d)
                }
            };
            Wire::Lrc { msg, data }
        }
        T_SPAWN => Wire::Spawn { tid: r.u64()?, closure: r.u64()?, stack: r.u64()?, name: r.str()? },
        T_MIGRATE => Wire::Migrate { tid: r.u64()?, origin: r.u16()?, fiber: r.u64()?, name: r.str()? },
        T_DONE => Wire::Done { tid: r.u64()?, started: r.u8()? != 0 },
        T_WATCH => Wire::Watch { tid: (r.u64()?, r.u8()?).0 },
        T_FINISHED => Wire::Finished { tid: r.u64()?, started: r.u8()? != 0 },
        T_FORGET => Wire::Forget { tid: (r.u64()?, r.u8()?).0 },
        T_FREE => {
            let n = r.u32()? as usize;
            if n > r.rest().len() / 24 {
                return Err(DecodeError(format!("free list of {n} blocks in a short frame")));
            }
            let mut blocks = Vec::with_capacity(n);
            for _ in 0..n {
                blocks.push((r.u64()? as usize, r.u64()? as usize, r.u64()? as usize));
            }
            Wire::Free { blocks }
        }
        T_SHUTDOWN => Wire::Shutdown { code: r.u32()? as i32 },
        T_HEARTBEAT => Wire::Heartbeat,
        T_ABORT => Wire::Abort { lost: r.u16()?, reason: r.str()? },
        T_SYNC_REQ => {
            let key = r.u64()?;
            let waiter = (r.u16()?, r.u64()?);
            Wire::SyncReq(Request { key, waiter, op: decode_op(&mut r)? })
        }
        T_REVOKE => Wire::Revoke { key: r.u64()? },
        T_STATS_REQ => Wire::StatsReq { waiter: r.u64()? },
        T_LOG => Wire::Log { on: bool_of(r.u8()?)? },
        T_ORDERED => {
            let after = r.u64()?;
            let inner = r.rest();
            let w = Wire::Ordered { after, inner };
            return Ok(w);
        }
        T_SYNC_REPLY => {
            let waiter = r.u64()?;
            Wire::SyncReply { waiter, reply: decode_reply(&mut r)? }
        }
        T_LOAD => {
            Wire::Load { running: r.u32()?, cpu_milli: r.u32()?, processed: r.u64()?, settles: r.u64()? }
        }
        T_REBALANCE => Wire::Rebalance { on: bool_of(r.u8()?)? },
        T_OUTPUT => {
            let fd = r.u8()?;
            if fd != 1 && fd != 2 {
                return Err(DecodeError(format!("output for descriptor {fd}")));
            }
            let data = r.rest();
            return Ok(Wire::Output { fd, data });
        }
        T_OUTPUT_FLUSH => Wire::OutputFlush { upto: r.u64()?, release: bool_of(r.u8()?)? },
        T_OUTPUT_ACK => Wire::OutputAck { upto: r.u64()?, errors: [r.u32()? as i32, r.u32()? as i32] },
        T_EXIT => Wire::Exit { code: r.u32()? as i32 },
        T_STOP => Wire::Stop { code: r.u32()? as i32, reason: r.str()? },
        T_LOCKS => {
            let n = r.u32()? as usize;
            // Each entry takes at least 29 bytes: refuse counts the frame cannot hold.
            if n > r.rest().len() / 29 {
                return Err(DecodeError(format!("lock report of {n} threads in a short frame")));
            }
            let mut threads = Vec::with_capacity(n);
            for _ in 0..n {
                let thread = r.u64()?;
                let name = r.str()?.to_owned();
                let (waiting, waited_ms) = (r.u64()?, r.u64()?);
                let held = (0..r.u8()?).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
                threads.push(ThreadLocks { thread, name, waiting, waited_ms, held });
            }
            Wire::Locks { threads }
        }
        t => return Err(DecodeError(format!("unknown message tag {t:#x}"))),
    };
    r.end()?;
    Ok(wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_messages_round_trip() {
        let page = PageId(42);
        let msgs = [
            Msg::ReadReq { page },
            Msg::WriteReq { page },
            Msg::Grant { page, access: Access::Write, data: false },
            Msg::Invalidate { page },
            Msg::InvAck { page },
            Msg::Recall { page, keep_read: true },
        ];
        for m in msgs {
            match decode(&proto(&m)).unwrap() {
                Wire::Proto { msg, data: None } => assert_eq!(msg, m),
                other => panic!("{other:?}"),
            }
        }
        let mut with_data = proto(&Msg::RecallAck { page });
        assert!(decode(&with_data).is_err(), "a page-carrying message without its page must be refused");
        with_data.extend_from_slice(&[7u8; PAGE_SIZE]);
        assert!(matches!(decode(&with_data).unwrap(), Wire::Proto { data: Some(d), .. } if d[0] == 7));
    }

    #[test]
    fn sync_messages_round_trip() {
        let ops = [
            Op::Lock { shared: true },
            Op::TryLock { shared: false },
            Op::Unlock { shared: false },
            Op::CvWait { mutex: 77 },
            Op::CvNotify { all: true },
            Op::CvCancel,
            Op::Barrier { n: 64 },
            Op::ChanCreate { bound: Some(0) },
            Op::ChanCreate { bound: None },
            Op::ChanSend { sender: 5, seq: 9, bytes: vec![1, 2, 3], sync: true },
            Op::ChanTrySend { bytes: vec![] },
            Op::ChanRecv { block: true, max: 256 },
            Op::ChanRecvCancel,
            Op::ChanClone,
            Op::ChanSenderDrop { sender: 5, final_seq: 10 },
            Op::ChanReceiverDrop,
            Op::CacheLock,
            Op::CacheTryLock,
            Op::RevokeBusy,
        ];
        for op in ops {
            let req = Request { key: 0x2000_0000_1000, waiter: (3, 99), op };
            match decode(&sync_req(&req)).unwrap() {
                Wire::SyncReq(r) => assert_eq!(r, req),
                other => panic!("{other:?}"),
            }
        }
        let replies = [
            Reply::Granted,
            Reply::NotGranted,
            Reply::CvRemoved,
            Reply::CvLate,
            Reply::Barrier { leader: true },
            Reply::Ack,
            Reply::Full(vec![4]),
            Reply::Disconnected(vec![5, 6]),
            Reply::Empty,
            Reply::Msgs { count: 2, bytes: vec![1, 2] },
            Reply::Cancelled,
            Reply::Stats(vec![9; 40]),
        ];
        for reply in replies {
            match decode(&sync_reply(42, &reply)).unwrap() {
                Wire::SyncReply { waiter: 42, reply: r } => assert_eq!(r, reply),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn load_reports_round_trip() {
        match decode(&load(3, 1500, 77, 9)).unwrap() {
            Wire::Load { running: 3, cpu_milli: 1500, processed: 77, settles: 9 } => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(&rebalance(true)).unwrap(), Wire::Rebalance { on: true }));
        assert!(decode(&load(3, 1500, 77, 9)[..20]).is_err());
        assert!(decode(&[T_REBALANCE, 2]).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..200 {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode(&body);
        }
        assert!(decode(&[T_FREE, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode(&spawn(1, 2, 3, "x")[..10]).is_err());
    }
}
