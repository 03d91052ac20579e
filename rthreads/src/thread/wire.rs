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

/// A thread's result carried in a message: the bytes of its `std::thread::Result<T>`, moved out of
/// the thread, and the function that drops such a value (0: nothing to drop), for a result whose
/// handle is gone (see `super::Returned`).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) struct Carried<'a> {
    pub(crate) drop_fn: u64,
    pub(crate) bytes: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ThreadMsg<'a> {
    /// Run a closure (on a fiber of `stack` bytes, 0: the default) as thread `tid` of the sender:
    /// with `build == 0`, the boxed closure at `closure`; otherwise the closure's own bytes,
    /// `bytes`, which the function at `build` moves into a box on the new thread's node.
    Spawn { tid: u64, closure: u64, build: u64, stack: u64, name: &'a str, bytes: &'a [u8] },
    /// A running thread moves here: resume the fiber whose control block is at `fiber`.
    Migrate { tid: u64, origin: NodeId, fiber: u64, name: &'a str },
    /// Thread `tid` of the recipient ended (`started == false`: it could not start), with its
    /// result when it travels in the message.
    Done { tid: u64, started: bool, result: Option<Carried<'a>> },
    /// The sender holds the handle of `tid` and wants to hear when it ends; with `take`, it joins
    /// it and wants the result, where the result travels in messages.
    Watch { tid: u64, take: bool },
    /// The thread `tid` the sender watched ended (with its result, for the node that takes it).
    Finished { tid: u64, started: bool, result: Option<Carried<'a>> },
    /// The handle of `tid` was joined or dropped on the sender.
    Forget { tid: u64 },
}

impl ThreadMsg<'_> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match *self {
            ThreadMsg::Spawn { tid, closure, build, stack, name, bytes } => {
                w.u8(T_SPAWN).u64(tid).u64(closure).u64(build).u64(stack).str(name).bytes(bytes)
            }
            ThreadMsg::Migrate { tid, origin, fiber, name } => {
                w.u8(T_MIGRATE).u64(tid).u16(origin.0).u64(fiber).str(name)
            }
            ThreadMsg::Done { tid, started, result } => {
                carried(w.u8(T_DONE).u64(tid).u8(started as u8), result)
            }
            ThreadMsg::Watch { tid, take } => w.u8(T_WATCH).u64(tid).u8(take as u8),
            ThreadMsg::Finished { tid, started, result } => {
                carried(w.u8(T_FINISHED).u64(tid).u8(started as u8), result)
            }
            ThreadMsg::Forget { tid } => w.u8(T_FORGET).u64(tid).u8(0),
        };
        w.finish()
    }

    pub(crate) fn decode(body: &[u8]) -> Result<ThreadMsg<'_>, DecodeError> {
        let mut r = Reader::new(body);
        let msg = match r.u8()? {
            T_SPAWN => ThreadMsg::Spawn {
                tid: r.u64()?,
                closure: r.u64()?,
                build: r.u64()?,
                stack: r.u64()?,
                name: r.str()?,
                bytes: r.bytes()?,
            },
            T_MIGRATE => ThreadMsg::Migrate {
                tid: r.u64()?,
                origin: NodeId(r.u16()?),
                fiber: r.u64()?,
                name: r.str()?,
            },
            T_DONE => ThreadMsg::Done {
                tid: r.u64()?,
                started: runtime::wire::flag(r.u8()?)?,
                result: read_carried(&mut r)?,
            },
            T_WATCH => ThreadMsg::Watch { tid: r.u64()?, take: runtime::wire::flag(r.u8()?)? },
            T_FINISHED => ThreadMsg::Finished {
                tid: r.u64()?,
                started: runtime::wire::flag(r.u8()?)?,
                result: read_carried(&mut r)?,
            },
            T_FORGET => ThreadMsg::Forget { tid: (r.u64()?, r.u8()?).0 },
            t => return Err(DecodeError(format!("not a thread message: tag {t:#x}"))),
        };
        r.end()?;
        Ok(msg)
    }
}

/// Appends a carried result (a flag, then the drop function and the bytes).
fn carried<'w>(w: &'w mut Writer, result: Option<Carried<'_>>) -> &'w mut Writer {
    match result {
        None => w.u8(0),
        Some(c) => w.u8(1).u64(c.drop_fn).bytes(c.bytes),
    }
}

fn read_carried<'a>(r: &mut Reader<'a>) -> Result<Option<Carried<'a>>, DecodeError> {
    Ok(match runtime::wire::flag(r.u8()?)? {
        false => None,
        true => Some(Carried { drop_fn: r.u64()?, bytes: r.bytes()? }),
    })
}

/// What makes a decoded thread message unusable: a function address outside the program (the
/// closure or result bytes would be handed to it), bytes longer than the sender may inline.
fn implausible(m: &ThreadMsg<'_>) -> Option<&'static str> {
    let code = super::in_program_code;
    match *m {
        ThreadMsg::Spawn { build, bytes, .. }
            if build != 0 && (!code(build) || bytes.len() > super::INLINE_MAX) =>
        {
            Some("a closure outside the program")
        }
        ThreadMsg::Done { result: Some(c), .. } | ThreadMsg::Finished { result: Some(c), .. }
            if (c.drop_fn != 0 && !code(c.drop_fn)) || c.bytes.len() > super::INLINE_MAX =>
        {
            Some("a result outside the program")
        }
        _ => None,
    }
}

/// Registers the handler of thread messages with the runtime.
pub(crate) fn register(ext: &mut Extensions) {
    ext.frames(&TAGS, handle);
}

fn handle(_rt: &'static Runtime, from: NodeId, body: &[u8]) -> Verdict {
    let msg = ThreadMsg::decode(body);
    if let Ok(m) = &msg
        && let Some(why) = implausible(m)
    {
        return Verdict::Lost(format!("it sent a malformed thread message ({why})"));
    }
    match msg {
        Ok(ThreadMsg::Spawn { tid, closure, build, stack, name, bytes }) => {
            let closure = super::Closure::from_wire(closure, build, bytes);
            super::start_remote(tid, from, closure, stack as usize, name)
        }
        Ok(ThreadMsg::Migrate { tid, origin, fiber, name }) => {
            super::resume_remote(tid, origin, fiber as usize, name)
        }
        Ok(ThreadMsg::Done { tid, started, result }) | Ok(ThreadMsg::Finished { tid, started, result }) => {
            super::TABLE.finish(tid, started, result.map(super::Returned::from_wire))
        }
        Ok(ThreadMsg::Watch { tid, take }) => super::TABLE.watch(tid, from, take),
        Ok(ThreadMsg::Forget { tid }) => {
            if let Some(r) = super::TABLE.forget(tid) {
                super::orphan(r);
            }
        }
        Err(e) => return Verdict::Lost(format!("it sent a malformed thread message ({e})")),
    }
    Verdict::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips_with_its_bytes() {
        let code = implausible as *const () as usize as u64;
        let result = Some(Carried { drop_fn: code, bytes: &[1, 2, 3] });
        let msgs = [
            ThreadMsg::Spawn { tid: 7, closure: 0, build: code, stack: 0, name: "x", bytes: &[9; 40] },
            ThreadMsg::Spawn { tid: 8, closure: 0x1000, build: 0, stack: 1 << 20, name: "", bytes: &[] },
            ThreadMsg::Migrate { tid: 9, origin: NodeId(2), fiber: 0x40, name: "m" },
            ThreadMsg::Done { tid: 1, started: true, result },
            ThreadMsg::Done { tid: 1, started: false, result: None },
            ThreadMsg::Watch { tid: 2, take: true },
            ThreadMsg::Finished { tid: 3, started: true, result },
            ThreadMsg::Forget { tid: 4 },
        ];
        for m in msgs {
            assert_eq!(ThreadMsg::decode(&m.encode()).unwrap(), m);
            assert_eq!(implausible(&m), None, "{m:?}");
        }
    }

    #[test]
    fn closure_and_result_bytes_of_the_wrong_size_are_never_read() {
        fn boxed<F: FnOnce() + Send>(_: &F, bytes: &[u8]) -> usize {
            // SAFETY: readable bytes, not the size of an `F` (the caller's choice): nothing is read.
            unsafe { crate::thread::build_box::<F>(bytes.as_ptr(), bytes.len()) }
        }
        let x = 5u64;
        let f = move || assert_eq!(x, 5);
        let bytes = [0u8; 3];
        assert_eq!(boxed(&f, &bytes), 0);
        // SAFETY: as above, for a result.
        unsafe { crate::thread::drop_result::<String>(bytes.as_ptr(), 3) };
    }

    #[test]
    fn code_outside_the_program_and_oversized_bytes_are_refused() {
        let code = implausible as *const () as usize as u64;
        let big = vec![0u8; crate::thread::INLINE_MAX + 1];
        let outside = ThreadMsg::Spawn { tid: 1, closure: 0, build: 8, stack: 0, name: "", bytes: &[0; 8] };
        assert!(implausible(&outside).is_some());
        let oversized = ThreadMsg::Spawn { tid: 1, closure: 0, build: code, stack: 0, name: "", bytes: &big };
        assert!(implausible(&oversized).is_some());
        let stack_addr = &big as *const Vec<u8> as u64;
        let result = Some(Carried { drop_fn: stack_addr, bytes: &[0; 8] });
        assert!(implausible(&ThreadMsg::Done { tid: 1, started: true, result }).is_some());
        let result = Some(Carried { drop_fn: 0, bytes: &big });
        assert!(implausible(&ThreadMsg::Finished { tid: 1, started: true, result }).is_some());
    }
}
