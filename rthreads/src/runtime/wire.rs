//! The runtime's own frames, and the wire encoding of each coherence protocol's messages.
//!
//! A frame body starts with a tag byte. The tags are shared out: the runtime owns the ones below
//! (protocol messages, freed memory, heartbeats, stopping, ordered direct messages); every module
//! that talks to its peers owns its own and registers a handler for them (see
//! [`super::Extensions`]): threads 0x11–0x15 and 0x1C, synchronisation 0x20–0x22 and 0x2D–0x2F,
//! statistics 0x23–0x24, placement 0x26–0x27 and 0x1D, output 0x28–0x2B. Encodings are little-endian and
//! bounds-checked (`net::codec`); a malformed frame is an error naming the peer, never a panic.
//!
//! A protocol's messages travel under its tag ([`ProtocolWire::TAG`]), the payload the message
//! names ([`Payload`]) raw after its encoding. Adding a message to a protocol means adding it to
//! the protocol and one line to its `wire_enum!` table here: the runtime's executor handles every
//! message through [`Coherence`] and [`Message`].

use dsm::protocol::lrc::{LrcNode, Msg as LrcMsg};
use dsm::protocol::sc::{Msg, ScNode};
use dsm::protocol::{Coherence, Message, Payload};
use dsm::sys::PAGE_SIZE;
use dsm::{Access, NodeId, PageId};
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
    Abort { lost: NodeId, reason: &'a str },
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
                blocks.iter().fold(&mut w, |w, &(p, s, a)| w.u64(p as u64).u64(s as u64).u64(a as u64))
            }
            Core::Shutdown { code } => w.u8(T_SHUTDOWN).u32(*code as u32),
            Core::Heartbeat => w.u8(T_HEARTBEAT),
            Core::Abort { lost, reason } => w.u8(T_ABORT).u16(lost.0).str(reason),
            Core::Stop { code, reason } => w.u8(T_STOP).u32(*code as u32).str(reason),
            Core::Ordered { after, inner } => w.u8(T_ORDERED).u64(*after).raw(inner),
        };
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
                    let block = |_| Ok((r.u64()? as usize, r.u64()? as usize, r.u64()? as usize));
                    Core::Free { blocks: (0..n).map(block).collect::<Result<_, DecodeError>>()? }
                }
                T_SHUTDOWN => Core::Shutdown { code: r.u32()? as i32 },
                T_HEARTBEAT => Core::Heartbeat,
                T_ABORT => Core::Abort { lost: NodeId(r.u16()?), reason: r.str()? },
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
pub(crate) trait ProtocolWire: Coherence<Msg: Field> {
    /// The tag of this protocol's frames.
    const TAG: u8;
    /// The protocol's name (`RTHREADS_PROTOCOL`).
    const NAME: &'static str;

    /// The frame head of `msg` (its payload goes after it).
    fn head(msg: &Self::Msg) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(Self::TAG);
        msg.put(&mut w);
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
        let msg = Self::Msg::get(&mut r)?;
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

/// A value with a fixed wire encoding: a field of a [`wire_enum!`] table.
pub(crate) trait Field: Sized {
    /// Appends the value's encoding.
    fn put(&self, w: &mut Writer);
    /// Reads a value.
    ///
    /// # Errors
    /// Truncated or out of range.
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// A frame that holds the value and nothing else.
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.put(&mut w);
        w.finish()
    }

    /// The value a frame holds, and nothing else.
    ///
    /// # Errors
    /// Truncated, out of range, or bytes left over.
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let v = Self::get(&mut r)?;
        r.end()?;
        Ok(v)
    }
}

/// Implements [`Field`] for an enum from a table of `code => Variant { field: Type, … }` rows (or
/// `code => Variant(binding: Type)`): the code byte (a literal or a constant), then each field in
/// the order the row names them. `$unknown` formats the error for an unknown code.
macro_rules! wire_enum {
    ($ty:ident, $unknown:literal; $($code:tt => $v:ident $({ $($f:ident: $t:ty),* })? $(($b:ident: $bt:ty))?),* $(,)?) => {
        impl $crate::runtime::wire::Field for $ty {
            fn put(&self, w: &mut net::Writer) {
                match self {
                    $($ty::$v $({ $($f),* })? $(($b))? => {
                        w.u8($code);
                        $($($crate::runtime::wire::Field::put($f, w);)*)?
                        $($crate::runtime::wire::Field::put($b, w);)?
                    })*
                }
            }

            fn get(r: &mut net::Reader<'_>) -> Result<$ty, net::DecodeError> {
                Ok(match r.u8()? {
                    $($code => $ty::$v $({ $($f: <$t as $crate::runtime::wire::Field>::get(r)?),* })? $((<$bt as $crate::runtime::wire::Field>::get(r)?))?,)*
                    k => return Err(net::DecodeError(format!($unknown, k))),
                })
            }
        }
    };
}
pub(crate) use wire_enum;

/// [`Field`] for values a `Writer` and `Reader` method pair encodes, `$get` mapped by `$from`.
macro_rules! field {
    ($($t:ty: $put:ident($v:ident => $to:expr), $get:ident => $from:expr;)*) => {
        $(impl Field for $t {
            fn put(&self, w: &mut Writer) {
                let $v = self;
                w.$put($to);
            }
            fn get(r: &mut Reader<'_>) -> Result<$t, DecodeError> {
                let v = r.$get()?;
                $from(v)
            }
        })*
    };
}

field! {
    u16: u16(v => *v), u16 => Ok;
    u32: u32(v => *v), u32 => Ok;
    u64: u64(v => *v), u64 => Ok;
    bool: u8(v => u8::from(*v)), u8 => flag;
    Vec<u8>: bytes(v => v), bytes => |b: &[u8]| Ok(b.to_vec());
    PageId: u64(v => v.0), u64 => |p| Ok(PageId(p));
    // `None` travels as `u64::MAX`.
    Option<u64>: u64(v => v.unwrap_or(u64::MAX)), u64 => |b| Ok(Some(b).filter(|&b| b != u64::MAX));
    Access: u8(v => *v as u8), u8 => |v| match v {
        0 => Ok(Access::None),
        1 => Ok(Access::Read),
        2 => Ok(Access::Write),
        _ => Err(DecodeError(format!("bad access code {v}"))),
    };
}

wire_enum! { Msg, "unknown protocol message {}";
    1 => ReadReq { page: PageId },
    2 => WriteReq { page: PageId },
    3 => Grant { page: PageId, access: Access, data: bool },
    4 => Invalidate { page: PageId },
    5 => InvAck { page: PageId },
    6 => Recall { page: PageId, keep_read: bool },
    7 => RecallAck { page: PageId },
    8 => Drop { page: PageId },
    9 => DropAck { page: PageId },
    10 => ReadSoon { page: PageId, barrier: u64 },
}

wire_enum! { LrcMsg, "unknown release-consistency message {}";
    1 => Fetch { page: PageId, count: u16 },
    2 => Page { page: PageId },
    3 => ScPage { page: PageId },
    4 => Diff { page: PageId, seq: u64 },
    5 => DiffAck { page: PageId, seq: u64 },
    6 => Notice { page: PageId },
    7 => NoticeAck { page: PageId },
    8 => MakeSc { page: PageId },
    9 => Convert { page: PageId },
    10 => ConvertAck { page: PageId },
    11 => Sc(inner: Msg),
    12 => Own { page: PageId },
    13 => Pull { page: PageId, count: u16 },
    14 => Yield { page: PageId, seq: u64 },
}

impl ProtocolWire for ScNode {
    const TAG: u8 = T_PROTO;
    const NAME: &'static str = "sc";
}

impl ProtocolWire for LrcNode {
    const TAG: u8 = T_LRC;
    const NAME: &'static str = "lrc";
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
            Msg::ReadSoon { page, barrier: 7 },
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
        for m in [LrcMsg::Own { page }, LrcMsg::Pull { page, count: 3 }] {
            assert_eq!(LrcNode::decode_frame(&LrcNode::head(&m)).unwrap(), (m, None));
        }
        let back = LrcMsg::Yield { page, seq: 11 };
        let mut f = LrcNode::head(&back);
        f.extend_from_slice(&[4, 5]);
        assert_eq!(LrcNode::decode_frame(&f).unwrap(), (back, Some(&[4u8, 5][..])));
        assert!(LrcNode::decode_frame(&ScNode::head(&Msg::ReadReq { page })).is_err());
    }

    #[test]
    fn core_frames_round_trip() {
        for c in [
            Core::Free { blocks: vec![(0x2000_0000_0000, 64, 8)] },
            Core::Shutdown { code: 7 },
            Core::Heartbeat,
            Core::Abort { lost: NodeId(3), reason: "gone" },
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
