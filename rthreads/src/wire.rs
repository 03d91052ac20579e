//! The runtime's messages between nodes, and their encoding (see `net::codec`).

use dsm::protocol::sc::Msg;
use dsm::sys::PAGE_SIZE;
use dsm::{Access, PageId};
use net::{DecodeError, Reader, Writer};

const T_PROTO: u8 = 0x10;
const T_SPAWN: u8 = 0x11;
const T_DONE: u8 = 0x12;
const T_WATCH: u8 = 0x13;
const T_FINISHED: u8 = 0x14;
const T_FORGET: u8 = 0x15;
const T_FREE: u8 = 0x16;
const T_SHUTDOWN: u8 = 0x17;

/// A decoded runtime message. Page bytes of a protocol message stay in the frame (`data`).
#[derive(Debug)]
pub(crate) enum Wire<'a> {
    Proto {
        msg: Msg,
        data: Option<&'a [u8]>,
    },
    Spawn {
        tid: u64,
        closure: u64,
        stack: u64,
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
    match *msg {
        Msg::ReadReq { page } => w.u8(1).u64(page.0),
        Msg::WriteReq { page } => w.u8(2).u64(page.0),
        Msg::Grant { page, access, data } => {
            w.u8(3).u64(page.0).u8(access_code(access)).u8(data as u8)
        }
        Msg::Invalidate { page } => w.u8(4).u64(page.0),
        Msg::InvAck { page } => w.u8(5).u64(page.0),
        Msg::Recall { page, keep_read } => w.u8(6).u64(page.0).u8(keep_read as u8),
        Msg::RecallAck { page } => w.u8(7).u64(page.0),
    };
    w.finish()
}

pub(crate) fn spawn(tid: u64, closure: u64, stack: u64, name: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(T_SPAWN).u64(tid).u64(closure).u64(stack).str(name);
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

pub(crate) fn decode(body: &[u8]) -> Result<Wire<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let wire = match r.u8()? {
        T_PROTO => {
            let kind = r.u8()?;
            let page = PageId(r.u64()?);
            let msg = match kind {
                1 => Msg::ReadReq { page },
                2 => Msg::WriteReq { page },
                3 => Msg::Grant {
                    page,
                    access: access_from(r.u8()?)?,
                    data: r.u8()? != 0,
                },
                4 => Msg::Invalidate { page },
                5 => Msg::InvAck { page },
                6 => Msg::Recall {
                    page,
                    keep_read: r.u8()? != 0,
                },
                7 => Msg::RecallAck { page },
                k => return Err(DecodeError(format!("unknown protocol message {k}"))),
            };
            let data = if msg.carries_data() {
                Some(r.raw(PAGE_SIZE)?)
            } else {
                None
            };
            Wire::Proto { msg, data }
        }
        T_SPAWN => Wire::Spawn {
            tid: r.u64()?,
            closure: r.u64()?,
            stack: r.u64()?,
            name: r.str()?,
        },
        T_DONE => Wire::Done {
            tid: r.u64()?,
            started: r.u8()? != 0,
        },
        T_WATCH => Wire::Watch {
            tid: (r.u64()?, r.u8()?).0,
        },
        T_FINISHED => Wire::Finished {
            tid: r.u64()?,
            started: r.u8()? != 0,
        },
        T_FORGET => Wire::Forget {
            tid: (r.u64()?, r.u8()?).0,
        },
        T_FREE => {
            let n = r.u32()? as usize;
            if n > r.rest().len() / 24 {
                return Err(DecodeError(format!(
                    "free list of {n} blocks in a short frame"
                )));
            }
            let mut blocks = Vec::with_capacity(n);
            for _ in 0..n {
                blocks.push((r.u64()? as usize, r.u64()? as usize, r.u64()? as usize));
            }
            Wire::Free { blocks }
        }
        T_SHUTDOWN => Wire::Shutdown {
            code: r.u32()? as i32,
        },
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
            Msg::Grant {
                page,
                access: Access::Write,
                data: false,
            },
            Msg::Invalidate { page },
            Msg::InvAck { page },
            Msg::Recall {
                page,
                keep_read: true,
            },
        ];
        for m in msgs {
            match decode(&proto(&m)).unwrap() {
                Wire::Proto { msg, data: None } => assert_eq!(msg, m),
                other => panic!("{other:?}"),
            }
        }
        let mut with_data = proto(&Msg::RecallAck { page });
        assert!(
            decode(&with_data).is_err(),
            "a page-carrying message without its page must be refused"
        );
        with_data.extend_from_slice(&[7u8; PAGE_SIZE]);
        assert!(
            matches!(decode(&with_data).unwrap(), Wire::Proto { data: Some(d), .. } if d[0] == 7)
        );
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
