//! The runtime's own frames, and the wire encoding of each coherence protocol's messages.
//!
//! A frame body starts with a tag byte. The tags are shared out: the runtime owns the ones below
//! (protocol messages, freed memory, heartbeats, stopping, ordered direct messages); every module
//! that talks to its peers owns its own and registers a handler for them (see
//! [`super::Extensions`]): threads 0x11–0x15 and 0x1C, synchronisation 0x20–0x22 and 0x2D,
//! statistics 0x23–0x24, placement 0x26–0x27, output 0x28–0x2B. Encodings are little-endian and
//! bounds-checked (`net::codec`); a malformed frame is an error naming the peer, never a panic.
//!
//! A protocol's messages travel under its tag ([`ProtocolWire::TAG`]), the payload the message
//! names ([`Payload`]) raw after its encoding. Adding a message to a protocol means adding it to
//! the protocol and to its `encode`/`decode` here: the runtime's executor handles every message
//! through [`Coherence`] and [`Message`].

use dsm::protocol::lrc::{LrcNode, Msg as LrcMsg};
use dsm::protocol::sc::{Msg, ScNode};
use dsm::protocol::{Coherence, Message, Payload};
use dsm::sys::PAGE_SIZE;
use dsm::{Access, PageId};
use net::{DecodeError, Reader, Writer};

pub(crate) const T_PROTO: u8 = 0x10;
const T_FREE: u8 = 0x16;
const T_SHUTDOWN: u8 = 0x17;
const T_HEARTBEAT: u8 = 0x18;
const T_ABORT: u8 = 0x19;
pub(crate) const T_LRC: u8 = 0x1A;
const T_ORDERED: u8 = 0x25;
const T_STOP: u8 = 0x2C;

/// The tags the runtime itself handles.
pub(crate) const CORE_TAGS: [u8; 8] =
    [T_PROTO, T_FREE, T_SHUTDOWN, T_HEARTBEAT, T_ABORT, T_LRC, T_ORDERED, T_STOP];

/// A frame of the runtime itself (protocol messages aside).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Core<'a> {
    /// Blocks of the recipient's arena that the sender freed: `(address, size, align)`.
    Free { blocks: Vec<(usize, usize, usize)> },
    /// Node 0 ends the run.
    Shutdown { code: i32 },
    /// "Still here": sent on an otherwise quiet connection so the peer can tell silence from death.
    Heartbeat,
    /// The cluster is stopping because node `lost` was lost, for `reason`.
    Abort { lost: u16, reason: &'a str },
    /// The cluster stops with exit code `code` for `reason` (a deadlock, a stuck node) although no
    /// node was lost.
    Stop { code: i32, reason: &'a str },
    /// A message on a direct connection that must not overtake the first `after` frames the sender
    /// queued on the ordinary connection to this node.
    Ordered { after: u64, inner: &'a [u8] },
}

impl Core<'_> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Core::Free { blocks } => {
                w.u8(T_FREE).u32(blocks.len() as u32);
                for &(p, s, a) in blocks {
                    w.u64(p as u64).u64(s as u64).u64(a as u64);
                }
            }
            Core::Shutdown { code } => {
                w.u8(T_SHUTDOWN).u32(*code as u32);
            }
            Core::Heartbeat => {
                w.u8(T_HEARTBEAT);
            }
            Core::Abort { lost, reason } => {
                w.u8(T_ABORT).u16(*lost).str(reason);
            }
            Core::Stop { code, reason } => {
                w.u8(T_STOP).u32(*code as u32).str(reason);
            }
            Core::Ordered { after, inner } => {
                w.u8(T_ORDERED).u64(*after).raw(inner);
            }
        }
        w.finish()
    }

    /// The runtime's frame in `body`: `None` when the tag is not one of the runtime's own (nor a
    /// protocol's: see [`ProtocolWire`]).
    pub(crate) fn decode(body: &[u8]) -> Option<Result<Core<'_>, DecodeError>> {
        let mut r = Reader::new(body);
        let tag = r.u8().ok()?;
        let core = || -> Result<Core<'_>, DecodeError> {
            let c = match tag {
                T_FREE => {
                    let n = r.u32()? as usize;
                    if n > r.rest().len() / 24 {
                        return Err(DecodeError(format!("free list of {n} blocks in a short frame")));
                    }
                    let mut blocks = Vec::with_capacity(n);
                    for _ in 0..n {
                        blocks.push((r.u64()? as usize, r.u64()? as usize, r.u64()? as usize));
                    }
                    Core::Free { blocks }
                }
                T_SHUTDOWN => Core::Shutdown { code: r.u32()? as i32 },
                T_HEARTBEAT => Core::Heartbeat,
                T_ABORT => Core::Abort { lost: r.u16()?, reason: r.str()? },
                T_STOP => Core::Stop { code: r.u32()? as i32, reason: r.str()? },
                T_ORDERED => return Ok(Core::Ordered { after: r.u64()?, inner: r.rest() }),
                t => unreachable!("not a core tag {t:#x}"),
            };
            r.end()?;
            Ok(c)
        };
        matches!(tag, T_FREE | T_SHUTDOWN | T_HEARTBEAT | T_ABORT | T_STOP | T_ORDERED).then(core)
    }
}

/// A flag byte: 0 or 1, anything else is an error.
pub(crate) fn flag(v: u8) -> Result<bool, DecodeError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError(format!("bad flag {v}"))),
    }
}

/// How a protocol's messages travel: under one tag, encoded by `encode`, with their payload raw
/// after them.
pub(crate) trait ProtocolWire: Coherence {
    /// The tag of this protocol's frames.
    const TAG: u8;
    /// The protocol's name (`RTHREADS_PROTOCOL`).
    const NAME: &'static str;
    /// Appends `msg`'s encoding (without the tag).
    fn encode(msg: &Self::Msg, w: &mut Writer);
    /// Reads a message (without the tag).
    ///
    /// # Errors
    /// A truncated or unknown message.
    fn decode(r: &mut Reader<'_>) -> Result<Self::Msg, DecodeError>;

    /// The frame head of `msg` (its payload goes after it).
    fn head(msg: &Self::Msg) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(Self::TAG);
        Self::encode(msg, &mut w);
        w.finish()
    }

    /// The message in a frame body of this protocol, and its payload: exactly a page for
    /// [`Payload::Page`], the rest of the frame for [`Payload::Diff`].
    ///
    /// # Errors
    /// A truncated message or payload, bytes left over, another tag.
    fn decode_frame(body: &[u8]) -> Result<(Self::Msg, Option<&[u8]>), DecodeError> {
        let mut r = Reader::new(body);
        if r.u8()? != Self::TAG {
            return Err(DecodeError(format!("not a message of the {} protocol", Self::NAME)));
        }
        let msg = Self::decode(&mut r)?;
        let data = match msg.payload() {
            Payload::None => None,
            Payload::Page => Some(r.raw(PAGE_SIZE)?),
            Payload::Diff => {
                let d = r.rest();
                r.raw(d.len())?;
                Some(d)
            }
        };
        r.end()?;
        Ok((msg, data))
    }
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
        3 => Msg::Grant { page, access: access_from(r.u8()?)?, data: flag(r.u8()?)? },
        4 => Msg::Invalidate { page },
        5 => Msg::InvAck { page },
        6 => Msg::Recall { page, keep_read: flag(r.u8()?)? },
        7 => Msg::RecallAck { page },
        k => return Err(DecodeError(format!("unknown protocol message {k}"))),
    })
}

impl ProtocolWire for ScNode {
    const TAG: u8 = T_PROTO;
    const NAME: &'static str = "sc";

    fn encode(msg: &Msg, w: &mut Writer) {
        sc_body(w, msg);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Msg, DecodeError> {
        sc_decode(r)
    }
}

impl ProtocolWire for LrcNode {
    const TAG: u8 = T_LRC;
    const NAME: &'static str = "lrc";

    fn encode(msg: &LrcMsg, w: &mut Writer) {
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
                sc_body(w, &inner);
                w
            }
        };
    }

    fn decode(r: &mut Reader<'_>) -> Result<LrcMsg, DecodeError> {
        let kind = r.u8()?;
        if kind == 11 {
            return Ok(LrcMsg::Sc(sc_decode(r)?));
        }
        let page = PageId(r.u64()?);
        Ok(match kind {
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
        })
    }
}

/// Decodes and re-encodes `body` if its tag is one of `tags` (the fuzz harness of a module's
/// messages); `None` for another tag.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn round_trip_of<'a, M>(
    body: &'a [u8],
    tags: &[u8],
    decode: fn(&'a [u8]) -> Result<M, DecodeError>,
    encode: fn(&M) -> Vec<u8>,
) -> Option<Result<Vec<u8>, DecodeError>> {
    tags.contains(body.first()?).then(|| decode(body).map(|m| encode(&m)))
}

/// Decodes and re-encodes a frame of the runtime's own or of a protocol; `None` for another tag.
/// (The fuzz harness: the re-encoded frame must decode to the same message.)
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn round_trip(body: &[u8]) -> Option<Result<Vec<u8>, DecodeError>> {
    fn proto<P: ProtocolWire>(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let (msg, data) = P::decode_frame(body)?;
        let mut f = P::head(&msg);
        f.extend_from_slice(data.unwrap_or_default());
        Ok(f)
    }
    match body.first() {
        Some(&T_PROTO) => Some(proto::<ScNode>(body)),
        Some(&T_LRC) => Some(proto::<LrcNode>(body)),
        _ => Core::decode(body).map(|c| c.map(|c| c.encode())),
    }
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
            assert_eq!(ScNode::decode_frame(&ScNode::head(&m)).unwrap(), (m, None));
        }
        let mut with_data = ScNode::head(&Msg::RecallAck { page });
        assert!(
            ScNode::decode_frame(&with_data).is_err(),
            "a page-carrying message without its page must be refused"
        );
        with_data.extend_from_slice(&[7u8; PAGE_SIZE]);
        assert!(matches!(ScNode::decode_frame(&with_data).unwrap(), (_, Some(d)) if d[0] == 7));
        let diff = LrcMsg::Diff { page, seq: 9 };
        let mut f = LrcNode::head(&diff);
        f.extend_from_slice(&[1, 2, 3]);
        assert_eq!(LrcNode::decode_frame(&f).unwrap(), (diff, Some(&[1u8, 2, 3][..])));
        assert!(LrcNode::decode_frame(&ScNode::head(&Msg::ReadReq { page })).is_err());
    }

    #[test]
    fn core_frames_round_trip() {
        for c in [
            Core::Free { blocks: vec![(0x2000_0000_0000, 64, 8)] },
            Core::Shutdown { code: 7 },
            Core::Heartbeat,
            Core::Abort { lost: 3, reason: "gone" },
            Core::Stop { code: 4, reason: "stuck" },
            Core::Ordered { after: 12, inner: &[0x20, 1] },
        ] {
            assert_eq!(Core::decode(&c.encode()).unwrap().unwrap(), c);
        }
        assert!(Core::decode(&[0x11]).is_none());
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
            let _ = round_trip(&body);
        }
        assert!(Core::decode(&[T_FREE, 0xff, 0xff, 0xff, 0xff]).unwrap().is_err());
    }
}
