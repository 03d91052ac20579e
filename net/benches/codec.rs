//! The hand-written control-message codec (`net::codec`) against serde + postcard, side by side
//! (issue 16).
//!
//! `cargo bench -p rthreads-net --bench codec`. Three messages of the runtime are mirrored here
//! (the real ones live in `rthreads`, which `net` cannot depend on), each encoded the way the
//! runtime encodes it and once more as a serde type:
//!
//! - `page request`: the frame head of a sequential-consistency read request (tag, kind, page);
//! - `lock request`: a synchronisation request (tag, object key, waiter, operation);
//! - `free 32 blocks`: the runtime's free-list frame with 32 `(address, size, align)` blocks, the
//!   control message that carries a list.
//!
//! Both sides produce a fresh `Vec<u8>` per encoding (`Writer::finish`, `postcard::to_allocvec`)
//! and decode into owned values with every check the runtime makes (known tags and kinds, flag
//! bytes, no bytes left over). The encoded sizes are printed before the measurements.

use std::hint::black_box;

use criterion::Criterion;
use net::{DecodeError, Reader, Writer};
use serde::{Deserialize, Serialize};

const T_PROTO: u8 = 0x10;
const T_FREE: u8 = 0x16;
const T_SYNC_REQ: u8 = 0x20;

fn flag(v: u8) -> Result<bool, DecodeError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError(format!("bad flag {v}"))),
    }
}

/// Postcard decoding as the runtime wants it: the whole input is one message.
fn postcard_exact<'a, T: Deserialize<'a>>(buf: &'a [u8]) -> Result<T, postcard::Error> {
    let (v, rest) = postcard::take_from_bytes(buf)?;
    if rest.is_empty() { Ok(v) } else { Err(postcard::Error::DeserializeUnexpectedEnd) }
}

// ---- The page request: `dsm::protocol::sc::Msg` under the sc tag. ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Access {
    None,
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum ScMsg {
    ReadReq { page: u64 },
    WriteReq { page: u64 },
    Grant { page: u64, access: Access, data: bool },
    Invalidate { page: u64 },
    InvAck { page: u64 },
    Recall { page: u64, keep_read: bool },
    RecallAck { page: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ScFrame {
    tag: u8,
    msg: ScMsg,
}

fn sc_encode(msg: &ScMsg) -> Vec<u8> {
    let access_code = |a: Access| match a {
        Access::None => 0,
        Access::Read => 1,
        Access::Write => 2,
    };
    let mut w = Writer::new();
    w.u8(T_PROTO);
    match *msg {
        ScMsg::ReadReq { page } => w.u8(1).u64(page),
        ScMsg::WriteReq { page } => w.u8(2).u64(page),
        ScMsg::Grant { page, access, data } => w.u8(3).u64(page).u8(access_code(access)).u8(data as u8),
        ScMsg::Invalidate { page } => w.u8(4).u64(page),
        ScMsg::InvAck { page } => w.u8(5).u64(page),
        ScMsg::Recall { page, keep_read } => w.u8(6).u64(page).u8(keep_read as u8),
        ScMsg::RecallAck { page } => w.u8(7).u64(page),
    };
    w.finish()
}

fn sc_decode(buf: &[u8]) -> Result<ScMsg, DecodeError> {
    let mut r = Reader::new(buf);
    if r.u8()? != T_PROTO {
        return Err(DecodeError("not an sc message".into()));
    }
    let kind = r.u8()?;
    let page = r.u64()?;
    let msg = match kind {
        1 => ScMsg::ReadReq { page },
        2 => ScMsg::WriteReq { page },
        3 => {
            let access = match r.u8()? {
                0 => Access::None,
                1 => Access::Read,
                2 => Access::Write,
                v => return Err(DecodeError(format!("bad access code {v}"))),
            };
            ScMsg::Grant { page, access, data: flag(r.u8()?)? }
        }
        4 => ScMsg::Invalidate { page },
        5 => ScMsg::InvAck { page },
        6 => ScMsg::Recall { page, keep_read: flag(r.u8()?)? },
        7 => ScMsg::RecallAck { page },
        k => return Err(DecodeError(format!("unknown protocol message {k}"))),
    };
    r.end()?;
    Ok(msg)
}

fn sc_decode_postcard(buf: &[u8]) -> Result<ScMsg, postcard::Error> {
    let f: ScFrame = postcard_exact(buf)?;
    if f.tag != T_PROTO {
        return Err(postcard::Error::DeserializeBadEnum);
    }
    Ok(f.msg)
}

// ---- The lock request: `rthreads::sync` `Request` under the sync-request tag. ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Op {
    Lock { shared: bool },
    TryLock { shared: bool },
    Unlock { shared: bool },
    CvWait { mutex: u64 },
    CvNotify { all: bool },
    CvCancel,
    Barrier { n: u64 },
    ChanCreate { bound: Option<u64> },
    ChanSend { sender: u64, seq: u64, sync: bool, bytes: Vec<u8> },
    ChanTrySend { bytes: Vec<u8> },
    ChanRecv { block: bool, max: u64 },
    ChanRecvCancel,
    ChanClone,
    ChanSenderDrop { sender: u64, final_seq: u64 },
    ChanReceiverDrop,
    CacheLock,
    CacheTryLock,
    RevokeBusy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Request {
    tag: u8,
    key: u64,
    waiter: (u16, u64),
    op: Op,
}

fn req_encode(r: &Request) -> Vec<u8> {
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
        Op::ChanCreate { bound } => w.u8(8).u64(bound.unwrap_or(u64::MAX)),
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

fn req_decode(buf: &[u8]) -> Result<Request, DecodeError> {
    let mut r = Reader::new(buf);
    if r.u8()? != T_SYNC_REQ {
        return Err(DecodeError("not a sync request".into()));
    }
    let key = r.u64()?;
    let waiter = (r.u16()?, r.u64()?);
    let op = match r.u8()? {
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
    };
    r.end()?;
    Ok(Request { tag: T_SYNC_REQ, key, waiter, op })
}

fn req_decode_postcard(buf: &[u8]) -> Result<Request, postcard::Error> {
    let req: Request = postcard_exact(buf)?;
    if req.tag != T_SYNC_REQ {
        return Err(postcard::Error::DeserializeBadEnum);
    }
    Ok(req)
}

// ---- The free list: the runtime's `Core::Free` frame. ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Free {
    tag: u8,
    blocks: Vec<(usize, usize, usize)>,
}

fn free_encode(f: &Free) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_FREE).u32(f.blocks.len() as u32);
    for &(p, s, a) in &f.blocks {
        w.u64(p as u64).u64(s as u64).u64(a as u64);
    }
    w.finish()
}

fn free_decode(buf: &[u8]) -> Result<Free, DecodeError> {
    let mut r = Reader::new(buf);
    if r.u8()? != T_FREE {
        return Err(DecodeError("not a free list".into()));
    }
    let n = r.u32()? as usize;
    if n > r.rest().len() / 24 {
        return Err(DecodeError(format!("free list of {n} blocks in a short frame")));
    }
    let mut blocks = Vec::with_capacity(n);
    for _ in 0..n {
        blocks.push((r.u64()? as usize, r.u64()? as usize, r.u64()? as usize));
    }
    r.end()?;
    Ok(Free { tag: T_FREE, blocks })
}

fn free_decode_postcard(buf: &[u8]) -> Result<Free, postcard::Error> {
    let f: Free = postcard_exact(buf)?;
    if f.tag != T_FREE {
        return Err(postcard::Error::DeserializeBadEnum);
    }
    Ok(f)
}

// ---- The comparison. ----

/// One message, both ways: the codec's functions and the serde type itself.
struct Case<T> {
    name: &'static str,
    msg: T,
    encode: fn(&T) -> Vec<u8>,
    decode: fn(&[u8]) -> Result<T, DecodeError>,
    decode_postcard: fn(&[u8]) -> Result<T, postcard::Error>,
}

impl<T: Serialize + PartialEq + std::fmt::Debug> Case<T> {
    fn sizes(&self) -> (usize, usize) {
        let ours = (self.encode)(&self.msg);
        let theirs = postcard::to_allocvec(&self.msg).expect("postcard encodes");
        assert_eq!((self.decode)(&ours).expect("codec decodes"), self.msg);
        assert_eq!((self.decode_postcard)(&theirs).expect("postcard decodes"), self.msg);
        (ours.len(), theirs.len())
    }

    fn bench(&self, c: &mut Criterion) {
        let ours = (self.encode)(&self.msg);
        let theirs = postcard::to_allocvec(&self.msg).expect("postcard encodes");
        let mut g = c.benchmark_group(self.name);
        g.bench_function("encode/codec", |b| b.iter(|| (self.encode)(black_box(&self.msg))));
        g.bench_function("encode/postcard", |b| {
            b.iter(|| postcard::to_allocvec(black_box(&self.msg)).expect("postcard encodes"))
        });
        g.bench_function("decode/codec", |b| {
            b.iter(|| (self.decode)(black_box(&ours)).expect("codec decodes"))
        });
        g.bench_function("decode/postcard", |b| {
            b.iter(|| (self.decode_postcard)(black_box(&theirs)).expect("postcard decodes"))
        });
        g.finish();
    }
}

fn main() {
    let page = Case {
        name: "page request",
        msg: ScFrame { tag: T_PROTO, msg: ScMsg::ReadReq { page: 70_000 } },
        encode: |f| sc_encode(&f.msg),
        decode: |b| sc_decode(b).map(|msg| ScFrame { tag: T_PROTO, msg }),
        decode_postcard: |b| sc_decode_postcard(b).map(|msg| ScFrame { tag: T_PROTO, msg }),
    };
    let lock = Case {
        name: "lock request",
        msg: Request {
            tag: T_SYNC_REQ,
            key: 0x2000_0004_1040,
            waiter: (3, 1_234),
            op: Op::Lock { shared: false },
        },
        encode: req_encode,
        decode: req_decode,
        decode_postcard: req_decode_postcard,
    };
    let free = Case {
        name: "free 32 blocks",
        msg: Free {
            tag: T_FREE,
            blocks: (0..32usize)
                .map(|i| (0x2000_0010_0000 + i * 0x1_0040, 64 << (i % 7), 8 << (i % 2)))
                .collect(),
        },
        encode: free_encode,
        decode: free_decode,
        decode_postcard: free_decode_postcard,
    };

    for (name, (ours, theirs)) in
        [(page.name, page.sizes()), (lock.name, lock.sizes()), (free.name, free.sizes())]
    {
        println!("encoded size of {name}: codec {ours} B, postcard {theirs} B");
    }

    let mut c = Criterion::default().configure_from_args();
    page.bench(&mut c);
    lock.bench(&mut c);
    free.bench(&mut c);
    c.final_summary();
}
