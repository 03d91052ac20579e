//! The messages of threads between nodes: start a thread, move one, say it ended, and the join
//! bookkeeping of its origin. Tags 0x11–0x15 and 0x1C (see `crate::runtime::wire`).

use dsm::NodeId;
use net::{DecodeError, Reader, Writer};

use crate::runtime::{self, Extensions, Runtime, Verdict};

const T_SPAWN: u8 = 0x11;
const T_DONE: u8 = 0x12;
const T_WATCH: u8 = 0x13;
const T_FINISHED: u8 = 0x14;
const T_FORGET: u8 = 0x15;
const T_MIGRATE: u8 = 0x1C;
pub(crate) const TAGS: [u8; 6] = [T_SPAWN, T_DONE, T_WATCH, T_FINISHED, T_FORGET, T_MIGRATE];

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ThreadMsg<'a> {
    /// Run the boxed closure at `closure` (a fiber of `stack` bytes, 0: the default) as thread
    /// `tid` of the sender.
    Spawn { tid: u64, closure: u64, stack: u64, name: &'a str },
    /// A running thread moves here: resume the fiber whose control block is at `fiber`.
    Migrate { tid: u64, origin: NodeId, fiber: u64, name: &'a str },
    /// Thread `tid` of the recipient ended (`started == false`: it could not start).
    Done { tid: u64, started: bool },
    /// The sender holds the handle of `tid` and wants to hear when it ends.
    Watch { tid: u64 },
    /// The thread `tid` the sender watched ended.
    Finished { tid: u64, started: bool },
    /// The handle of `tid` was joined or dropped on the sender.
    Forget { tid: u64 },
}

impl ThreadMsg<'_> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match *self {
            ThreadMsg::Spawn { tid, closure, stack, name } => {
                w.u8(T_SPAWN).u64(tid).u64(closure).u64(stack).str(name)
            }
            ThreadMsg::Migrate { tid, origin, fiber, name } => {
                w.u8(T_MIGRATE).u64(tid).u16(origin.0).u64(fiber).str(name)
            }
            ThreadMsg::Done { tid, started } => w.u8(T_DONE).u64(tid).u8(started as u8),
            ThreadMsg::Watch { tid } => w.u8(T_WATCH).u64(tid).u8(0),
            ThreadMsg::Finished { tid, started } => w.u8(T_FINISHED).u64(tid).u8(started as u8),
            ThreadMsg::Forget { tid } => w.u8(T_FORGET).u64(tid).u8(0),
        };
        w.finish()
    }

    pub(crate) fn decode(body: &[u8]) -> Result<ThreadMsg<'_>, DecodeError> {
        let mut r = Reader::new(body);
        let msg = match r.u8()? {
            T_SPAWN => ThreadMsg::Spawn { tid: r.u64()?, closure: r.u64()?, stack: r.u64()?, name: r.str()? },
            T_MIGRATE => ThreadMsg::Migrate {
                tid: r.u64()?,
                origin: NodeId(r.u16()?),
                fiber: r.u64()?,
                name: r.str()?,
            },
            T_DONE => ThreadMsg::Done { tid: r.u64()?, started: runtime::wire::flag(r.u8()?)? },
            T_WATCH => ThreadMsg::Watch { tid: (r.u64()?, r.u8()?).0 },
            T_FINISHED => ThreadMsg::Finished { tid: r.u64()?, started: runtime::wire::flag(r.u8()?)? },
            T_FORGET => ThreadMsg::Forget { tid: (r.u64()?, r.u8()?).0 },
            t => return Err(DecodeError(format!("not a thread message: tag {t:#x}"))),
        };
        r.end()?;
        Ok(msg)
    }
}

/// Registers the handler of thread messages with the runtime.
pub(crate) fn register(ext: &mut Extensions) {
    ext.frames(&TAGS, handle);
}

fn handle(_rt: &'static Runtime, from: NodeId, body: &[u8]) -> Verdict {
    match ThreadMsg::decode(body) {
        Ok(ThreadMsg::Spawn { tid, closure, stack, name }) => {
            super::start_remote(tid, from, closure as usize, stack as usize, name)
        }
        Ok(ThreadMsg::Migrate { tid, origin, fiber, name }) => {
            super::resume_remote(tid, origin, fiber as usize, name)
        }
        Ok(ThreadMsg::Done { tid, started }) | Ok(ThreadMsg::Finished { tid, started }) => {
            super::TABLE.finish(tid, started)
        }
        Ok(ThreadMsg::Watch { tid }) => super::TABLE.watch(tid, from),
        Ok(ThreadMsg::Forget { tid }) => super::TABLE.forget(tid),
        Err(e) => return Verdict::Lost(format!("it sent a malformed thread message ({e})")),
    }
    Verdict::Ok
}
