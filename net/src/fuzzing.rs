//! Fuzz harnesses: the functions the `fuzz/` targets call, kept here so the tests that replay the
//! checked-in corpus (`tests/fuzz_replay.rs`) run exactly the same code. Each takes arbitrary bytes
//! and panics when it finds a bug; for any other input it returns quietly.

use std::io;

use crate::codec::{Reader, Writer};
use crate::frame::{FrameBuf, MAX_FRAME, encode_frame, read_frame};

/// What a stream of frames holds, by the book: the complete frames, then either the end (a
/// possibly partial frame's byte count left over) or a bad length at some offset.
#[derive(Debug, PartialEq, Eq)]
struct Parsed<'a> {
    frames: Vec<&'a [u8]>,
    /// Bytes after the last complete frame.
    leftover: usize,
    bad_length: bool,
}

fn parse(stream: &[u8]) -> Parsed<'_> {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        if rest.len() < 4 {
            return Parsed { frames, leftover: rest.len(), bad_length: false };
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len == 0 || len > MAX_FRAME {
            return Parsed { frames, leftover: rest.len(), bad_length: true };
        }
        if rest.len() < 4 + len {
            return Parsed { frames, leftover: rest.len(), bad_length: false };
        }
        frames.push(&rest[4..4 + len]);
        at += 4 + len;
    }
}

/// Piece sizes for cutting a stream, picked by `seed`: one byte at a time, small odd sizes, or
/// large pieces.
fn piece_sizes(seed: u8) -> impl Iterator<Item = usize> {
    const PATTERNS: [&[usize]; 8] = [
        &[1],
        &[2, 3],
        &[3, 1, 4, 1, 5, 9, 2, 6],
        &[7, 64, 1],
        &[4],
        &[5, 13, 100],
        &[4096],
        &[65_535, 1, 65_537],
    ];
    PATTERNS[usize::from(seed & 7)].iter().copied().cycle()
}

/// The receive side of framing over arbitrary bytes: the first byte picks how the rest is cut
/// into pieces (as reads from a socket would) and whether the buffer is compacted before each
/// piece (as [`crate::Conn::fill`] does). Checks that [`FrameBuf`] yields exactly the frames a
/// plain parse of the whole stream finds, fails exactly where the plain parse meets a bad length,
/// that [`read_frame`] over the same bytes agrees, and that re-encoding the frames with
/// [`encode_frame`] gives back the bytes they came from.
///
/// # Panics
/// On any disagreement: that is a bug.
pub fn frames(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let expected = parse(stream);

    let mut buf = FrameBuf::new();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut body = Vec::new();
    let mut failed = false;
    let mut sizes = piece_sizes(seed);
    let mut rest = stream;
    'feed: while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).min(rest.len());
        if seed & 0x80 != 0 {
            buf.compact();
        }
        buf.push(&rest[..n]);
        rest = &rest[n..];
        loop {
            match buf.next_frame(&mut body) {
                Ok(true) => got.push(body.clone()),
                Ok(false) => break,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                    failed = true;
                    // The bad length stays: asking again fails again.
                    assert!(buf.next_frame(&mut body).is_err());
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(got, expected.frames, "frames differ from a plain parse");
    assert_eq!(failed, expected.bad_length, "bad length detection differs");
    if !failed {
        assert_eq!(buf.pending(), expected.leftover);
    }

    // The blocking reader used for handshakes and direct connections.
    let mut reader = stream;
    let mut blocking: Vec<Vec<u8>> = Vec::new();
    let end = loop {
        match read_frame(&mut reader, MAX_FRAME) {
            Ok(body) => blocking.push(body),
            Err(e) => break e.kind(),
        }
    };
    assert_eq!(blocking, expected.frames, "read_frame differs from a plain parse");
    let want = if expected.bad_length { io::ErrorKind::InvalidData } else { io::ErrorKind::UnexpectedEof };
    assert_eq!(end, want);

    let mut encoded = Vec::new();
    for frame in &expected.frames {
        let cut = frame.len() / 2;
        encode_frame(&mut encoded, &frame[..cut], &frame[cut..]);
    }
    assert_eq!(&encoded[..], &stream[..stream.len() - expected.leftover]);
}

/// A value read by one [`Reader`] method.
#[derive(Debug, PartialEq, Eq)]
enum Field<'a> {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    Bytes(&'a [u8]),
    Raw(&'a [u8]),
    Str(&'a str),
}

/// The [`Reader`] over arbitrary bytes: the first byte says how many of the following bytes are a
/// script of reads (`u8`, `u16`, `u32`, `u64`, `bytes`, `raw(n)`, `str`, `end`), the rest is the
/// input. Checks that no read panics, that a failed fixed-size read consumes nothing, that
/// [`Reader::rest`] and [`Reader::end`] agree with what was consumed, and that writing the values
/// read back with [`Writer`] reproduces the consumed bytes exactly (the encoding is canonical).
///
/// # Panics
/// On any disagreement: that is a bug.
pub fn codec(data: &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let script_len = usize::from(count % 33).min(rest.len());
    let (script, input) = rest.split_at(script_len);
    let mut r = Reader::new(input);
    let mut fields = Vec::new();
    for &op in script {
        let before = r.rest().len();
        let result = match op % 9 {
            0 => r.u8().map(Field::U8),
            1 => r.u16().map(Field::U16),
            2 => r.u32().map(Field::U32),
            3 => r.u64().map(Field::U64),
            4 => r.bytes().map(Field::Bytes),
            5 => r.raw(usize::from(op >> 3)).map(Field::Raw),
            6 => r.str().map(Field::Str),
            7 => {
                assert_eq!(r.end().is_ok(), before == 0);
                continue;
            }
            _ => {
                assert_eq!(r.rest(), &input[input.len() - before..]);
                continue;
            }
        };
        match result {
            Ok(field) => fields.push(field),
            Err(e) => {
                assert!(!e.to_string().is_empty());
                if matches!(op % 9, 0..=3 | 5) {
                    assert_eq!(r.rest().len(), before, "a failed fixed-size read consumed bytes");
                }
                break;
            }
        }
    }
    let consumed = input.len() - r.rest().len();
    let mut w = Writer::new();
    for field in &fields {
        match *field {
            Field::U8(v) => w.u8(v),
            Field::U16(v) => w.u16(v),
            Field::U32(v) => w.u32(v),
            Field::U64(v) => w.u64(v),
            Field::Bytes(v) => w.bytes(v),
            Field::Raw(v) => w.raw(v),
            Field::Str(v) => w.str(v),
        };
    }
    let written = w.finish();
    // A failing `bytes`/`str` may have consumed its length prefix: compare what was read as values.
    assert_eq!(&written[..], &input[..written.len()], "re-encoding differs from the input");
    assert!(written.len() <= consumed);
    let mut again = Reader::new(&written);
    for field in &fields {
        let back = match field {
            Field::U8(_) => again.u8().map(Field::U8),
            Field::U16(_) => again.u16().map(Field::U16),
            Field::U32(_) => again.u32().map(Field::U32),
            Field::U64(_) => again.u64().map(Field::U64),
            Field::Bytes(_) => again.bytes().map(Field::Bytes),
            Field::Raw(v) => again.raw(v.len()).map(Field::Raw),
            Field::Str(_) => again.str().map(Field::Str),
        };
        assert_eq!(back.as_ref(), Ok(field));
    }
    assert!(again.end().is_ok());
}
