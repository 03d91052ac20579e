//! The messages of synchronisation between nodes: requests to an object's manager, its replies,
//! lock revokes, the lock reports of the deadlock watchdog, and the reports and releases of barrier
//! trees. Tags 0x20–0x22 and 0x2D–0x2F (see `crate::runtime::wire`).

use dsm::NodeId;
use net::{DecodeError, Reader, Writer};

use super::manager::{Op, Reply, Request};
use super::watch::ThreadLocks;
use crate::runtime::wire::{Field, wire_enum};

pub(crate) const T_SYNC_REQ: u8 = 0x20;
const T_SYNC_REPLY: u8 = 0x21;
const T_REVOKE: u8 = 0x22;
const T_LOCKS: u8 = 0x2D;
const T_BARRIER_UP: u8 = 0x2E;
const T_BARRIER_DOWN: u8 = 0x2F;
pub(crate) const TAGS: [u8; 6] = [T_SYNC_REQ, T_SYNC_REPLY, T_REVOKE, T_LOCKS, T_BARRIER_UP, T_BARRIER_DOWN];

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
    /// `count` more threads of the sender's subtree arrived at barrier `key` (for `n` threads).
    BarrierUp { key: u64, n: u64, count: u64 },
    /// Release `count` of the arrivals at barrier `key` that the recipient reported; with
    /// `leader`, the last of them leads.
    BarrierDown { key: u64, count: u64, leader: bool },
}

wire_enum! { SyncMsg, "not a synchronisation message: tag {:#x}";
    T_SYNC_REQ => Req(req: Request),
    T_SYNC_REPLY => Reply { waiter: u64, reply: Reply },
    T_REVOKE => Revoke { key: u64 },
    T_LOCKS => Locks { threads: Vec<ThreadLocks> },
    T_BARRIER_UP => BarrierUp { key: u64, n: u64, count: u64 },
    T_BARRIER_DOWN => BarrierDown { key: u64, count: u64, leader: bool },
}

impl Field for Request {
    fn put(&self, w: &mut Writer) {
        self.op.put(w.u64(self.key).u16(self.waiter.0.0).u64(self.waiter.1));
    }

    fn get(r: &mut Reader<'_>) -> Result<Request, DecodeError> {
        Ok(Request { key: r.u64()?, waiter: (NodeId(r.u16()?), r.u64()?), op: Op::get(r)? })
    }
}

/// A lock report: at most 255 held locks a thread.
impl Field for Vec<ThreadLocks> {
    fn put(&self, w: &mut Writer) {
        w.u32(self.len() as u32);
        for t in self {
            w.u64(t.thread).str(&t.name).u64(t.waiting).u64(t.waited_ms).u8(t.held.len().min(255) as u8);
            t.held.iter().take(255).fold(&mut *w, |w, &k| w.u64(k));
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Vec<ThreadLocks>, DecodeError> {
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
        Ok(threads)
    }
}

wire_enum! { Op, "unknown sync operation {}";
    1 => Lock { shared: bool },
    2 => TryLock { shared: bool },
    3 => Unlock { shared: bool },
    4 => CvWait { mutex: u64 },
    5 => CvNotify { all: bool },
    6 => CvCancel,
    7 => Barrier { n: u64 },
    8 => ChanCreate { bound: Option<u64> },
    9 => ChanSend { sender: u64, seq: u64, sync: bool, bytes: Vec<u8> },
    10 => ChanTrySend { bytes: Vec<u8> },
    11 => ChanRecv { block: bool, max: u64 },
    12 => ChanRecvCancel,
    13 => ChanClone,
    14 => ChanSenderDrop { sender: u64, final_seq: u64 },
    15 => ChanReceiverDrop,
    16 => CacheLock,
    17 => CacheTryLock,
    18 => RevokeBusy,
}

wire_enum! { Reply, "unknown sync reply {}";
    1 => Granted,
    2 => NotGranted,
    3 => CvRemoved,
    4 => CvLate,
    5 => Barrier { leader: bool },
    6 => Ack,
    7 => Full(b: Vec<u8>),
    8 => Disconnected(b: Vec<u8>),
    9 => Empty,
    10 => Msgs { count: u64, bytes: Vec<u8> },
    11 => Cancelled,
    12 => Stats(b: Vec<u8>),
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
            let msg = SyncMsg::Req(Request { key: 0x2000_0000_1000, waiter: (NodeId(3), 99), op });
            assert_eq!(SyncMsg::decode(&msg.encode()).unwrap(), msg);
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
            let msg = SyncMsg::Reply { waiter: 42, reply };
            assert_eq!(SyncMsg::decode(&msg.encode()).unwrap(), msg);
        }
        for msg in [
            SyncMsg::BarrierUp { key: 0x2000_0000_1008, n: 256, count: 17 },
            SyncMsg::BarrierDown { key: 0x2000_0000_1008, count: 16, leader: true },
        ] {
            assert_eq!(SyncMsg::decode(&msg.encode()).unwrap(), msg);
        }
    }
}
