//! The messages of synchronisation between nodes: requests to an object's manager, its replies,
//! lock revokes, and the lock reports of the deadlock watchdog. Tags 0x20–0x22 and 0x2D (see
//! `crate::runtime::wire`).

use net::{DecodeError, Reader, Writer};

use super::manager::{Op, Reply, Request};
use super::watch::ThreadLocks;
use crate::runtime::wire::flag;

pub(crate) const T_SYNC_REQ: u8 = 0x20;
const T_SYNC_REPLY: u8 = 0x21;
const T_REVOKE: u8 = 0x22;
const T_LOCKS: u8 = 0x2D;
pub(crate) const TAGS: [u8; 4] = [T_SYNC_REQ, T_SYNC_REPLY, T_REVOKE, T_LOCKS];

/// A synchronisation message, decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SyncMsg {
    /// A request for the manager of `req.key`.
    Req(Request),
    /// A manager's reply for waiter `waiter` of the recipient.
    Reply { waiter: u64, reply: Reply },
    /// The manager of `key` wants the lock the recipient keeps back.
    Revoke { key: u64 },
    /// The sender's threads that hold or wait for locks (for node 0's deadlock search).
    Locks { threads: Vec<ThreadLocks> },
}

impl SyncMsg {
    /// The message in `body`.
    ///
    /// # Errors
    /// A truncated or unknown message.
    pub(crate) fn decode(body: &[u8]) -> Result<SyncMsg, DecodeError> {
        let mut r = Reader::new(body);
        let msg = match r.u8()? {
            T_SYNC_REQ => {
                let key = r.u64()?;
                let waiter = (r.u16()?, r.u64()?);
                SyncMsg::Req(Request { key, waiter, op: decode_op(&mut r)? })
            }
            T_SYNC_REPLY => {
                let waiter = r.u64()?;
                SyncMsg::Reply { waiter, reply: decode_reply(&mut r)? }
            }
            T_REVOKE => SyncMsg::Revoke { key: r.u64()? },
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
                SyncMsg::Locks { threads }
            }
            t => return Err(DecodeError(format!("not a synchronisation message: tag {t:#x}"))),
        };
        r.end()?;
        Ok(msg)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            SyncMsg::Req(req) => sync_req(req),
            SyncMsg::Reply { waiter, reply } => sync_reply(*waiter, reply),
            SyncMsg::Revoke { key } => revoke(*key),
            SyncMsg::Locks { threads } => locks(threads),
        }
    }
}

/// Decodes and re-encodes a synchronisation message (the fuzz harness); `None` for another tag.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn round_trip(body: &[u8]) -> Option<Result<Vec<u8>, DecodeError>> {
    crate::runtime::wire::round_trip_of(body, &TAGS, SyncMsg::decode, SyncMsg::encode)
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

pub(crate) fn revoke(key: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_REVOKE).u64(key);
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

fn decode_op(r: &mut Reader<'_>) -> Result<Op, DecodeError> {
    Ok(match r.u8()? {
        1 => Op::Lock { shared: flag(r.u8()?)? },
        2 => Op::TryLock { shared: flag(r.u8()?)? },
        3 => Op::Unlock { shared: flag(r.u8()?)? },
        4 => Op::CvWait { mutex: r.u64()? },
        5 => Op::CvNotify { all: flag(r.u8()?)? },
        6 => Op::CvCancel,
        7 => Op::Barrier { n: r.u64()? },
        8 => Op::ChanCreate { bound: Some(r.u64()?).filter(|&b| b != u64::MAX) },
        9 => {
            Op::ChanSend { sender: r.u64()?, seq: r.u64()?, sync: flag(r.u8()?)?, bytes: r.bytes()?.to_vec() }
        }
        10 => Op::ChanTrySend { bytes: r.bytes()?.to_vec() },
        11 => Op::ChanRecv { block: flag(r.u8()?)?, max: r.u64()? },
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
        5 => Reply::Barrier { leader: flag(r.u8()?)? },
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

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(SyncMsg::decode(&sync_req(&req)).unwrap(), SyncMsg::Req(req));
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
            assert_eq!(
                SyncMsg::decode(&sync_reply(42, &reply)).unwrap(),
                SyncMsg::Reply { waiter: 42, reply }
            );
        }
    }
}
