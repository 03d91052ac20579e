//! Fuzz harnesses: the functions the `fuzz/` targets call, kept here so the tests that replay the
//! checked-in corpus (`tests/fuzz_replay.rs`) run exactly the same code. Each takes arbitrary bytes
//! and panics when it finds a bug; for any other input it returns quietly.

use std::io;

use dsm::NodeId;

use crate::auth::{self, Secret};
use crate::codec::{Reader, Writer};
use crate::frame::{FrameBuf, MAX_FRAME, encode_frame, read_frame};
use crate::mesh::{BinaryId, Hello, Refusal, check_peer};

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

/// The handshake's hello, the first thing a connecting peer sends after authenticating. Decodes
/// arbitrary bytes with `Hello::decode` (never a panic; an error says why) and, when they are a
/// hello, checks that encoding it gives back exactly those bytes (the encoding is canonical) and
/// that node 0's verdict (`check_peer`) accepts it against a hello that differs only in the node
/// id exactly when its node id is in `1..nodes`, and refuses it, naming the field, when the run,
/// the cluster size or the binary differ. Then builds a hello from the bytes, and checks that it
/// round-trips and that every truncation and any trailing byte is refused.
///
/// # Panics
/// On any disagreement: that is a bug.
pub fn hello(data: &[u8]) {
    match Hello::decode(data) {
        Ok(h) => {
            assert_eq!(h.encode(), data, "decoding then encoding a hello changes it");
            let mine = Hello { node: NodeId(0), ..h.clone() };
            assert_eq!(
                check_peer(&mine, &h).is_ok(),
                h.node != NodeId(0) && h.node.0 < h.nodes,
                "verdict on {h:?}"
            );
            let other_run = Hello { session: h.session ^ 1, ..mine.clone() };
            assert!(matches!(check_peer(&other_run, &h), Err(Refusal::AnotherRun { .. })));
            let other_size = Hello { nodes: h.nodes ^ 1, ..mine.clone() };
            assert!(matches!(check_peer(&other_size, &h), Err(Refusal::NodeCount { .. })));
            let other_settings = Hello { settings: format!("{} x=1", h.settings), ..mine.clone() };
            if check_peer(&mine, &h).is_ok() {
                assert!(matches!(check_peer(&other_settings, &h), Err(Refusal::DifferentSettings { .. })));
            }
            let other_binary = Hello { binary: BinaryId { len: h.binary.len ^ 1, ..h.binary }, ..mine };
            assert!(matches!(check_peer(&other_binary, &h), Err(Refusal::DifferentBinary { .. })));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    let mut bytes = data.iter().copied().chain(std::iter::repeat(0));
    let mut next =
        |n: usize| -> u64 { (0..n).fold(0, |v, i| v | u64::from(bytes.next().unwrap_or(0)) << (8 * i)) };
    let (node, nodes, session) = (NodeId(next(2) as u16), next(2) as u16, next(8));
    let binary = BinaryId { hash: next(8), len: next(8), anchor: next(8) };
    let parallelism = next(4) as u32;
    let listen_len = usize::from(next(1) as u8 % 48);
    let listen: Vec<u8> = (0..listen_len).map(|_| next(1) as u8).collect();
    let listen = String::from_utf8_lossy(&listen).into_owned();
    let settings_len = usize::from(next(1) as u8 % 32);
    let settings: Vec<u8> = (0..settings_len).map(|_| next(1) as u8).collect();
    let settings = String::from_utf8_lossy(&settings).into_owned();
    let built = Hello { node, nodes, session, binary, listen, parallelism, settings };
    let encoded = built.encode();
    assert_eq!(Hello::decode(&encoded).as_ref(), Ok(&built));
    for cut in 0..encoded.len() {
        assert!(Hello::decode(&encoded[..cut]).is_err(), "a hello cut at {cut} was accepted");
    }
    let mut longer = encoded;
    longer.push(0);
    assert!(Hello::decode(&longer).is_err(), "a hello with a trailing byte was accepted");
}

/// Connection authentication on arbitrary bytes: the first byte picks a bit to damage, the next
/// eight make the cluster secret, the next 32 the two nonces, the rest is a body received from a
/// peer. Checks that `auth::respond`, `auth::verify` and `auth::check_proof` never panic on it; that
/// `respond` accepts exactly a challenge frame (and then answers with a response `verify` accepts
/// under the same secret only), that `verify` calls malformed exactly what does not have a
/// response's shape and accepts only a response whose MAC is right, that a refusal is reported
/// as one, and that `check_proof` accepts only a proof's shape. Then runs a genuine exchange
/// with these nonces: it succeeds, and fails once one bit of the response or of the proof is
/// flipped, or the other side has another secret.
///
/// # Panics
/// On any disagreement: that is a bug.
pub fn auth(data: &[u8]) {
    let mut it = data.iter().copied();
    let Some(flip) = it.next() else {
        return;
    };
    let key: Vec<u8> = it.by_ref().take(8).collect();
    let mut sn = [0u8; auth::NONCE];
    let mut cn = [0u8; auth::NONCE];
    for b in sn.iter_mut().chain(cn.iter_mut()) {
        *b = it.next().unwrap_or(0);
    }
    let body: Vec<u8> = it.collect();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let secret = Secret::from_text(&format!("fuzz {hex}")).expect("not empty");
    let other = Secret::from_text(&format!("other {hex}")).expect("not empty");
    let prefix = |frame: Vec<u8>, len: usize| -> Vec<u8> { frame[..len].to_vec() };
    let challenge_head = prefix(auth::challenge_frame(&sn), 5);
    let refusal = body.first() == Some(&3);

    match auth::respond(&secret, &body) {
        Ok((response, server_nonce, _)) => {
            assert_eq!(auth::challenge_frame(&server_nonce), body, "respond accepted a non-challenge");
            assert!(auth::verify(&secret, &server_nonce, &response).is_ok());
            assert_eq!(auth::verify(&other, &server_nonce, &response), Err(auth::AuthError::WrongSecret));
        }
        Err(e) => {
            let is_challenge = body.len() == 5 + auth::NONCE && body[..5] == challenge_head[..];
            assert!(!is_challenge, "respond refused a challenge: {e}");
            assert_eq!(refusal, matches!(e, auth::HandshakeError::Refused(_)), "{e}");
        }
    }

    let response_shape = body.len() == 1 + auth::NONCE + auth::MAC && body[0] == 0x42;
    match auth::verify(&secret, &sn, &body) {
        Ok(proof) => {
            assert!(response_shape);
            let client_nonce: [u8; auth::NONCE] = body[1..1 + auth::NONCE].try_into().expect("NONCE bytes");
            assert!(auth::check_proof(&secret, &sn, &client_nonce, &proof).is_ok());
        }
        Err(auth::AuthError::Malformed(e)) => {
            assert!(!response_shape, "a response's shape called malformed: {e}")
        }
        Err(auth::AuthError::WrongSecret) => assert!(response_shape),
    }

    match auth::check_proof(&secret, &sn, &cn, &body) {
        Ok(()) => assert!(body.len() == 1 + auth::MAC && body[0] == 0x43, "check_proof accepted {body:?}"),
        Err(e) => assert_eq!(refusal, matches!(e, auth::HandshakeError::Refused(_)), "{e}"),
    }

    let (response, server_nonce, client_nonce) =
        auth::respond(&secret, &auth::challenge_frame(&sn)).expect("a challenge is answered");
    assert_eq!(server_nonce, sn);
    let proof = auth::verify(&secret, &sn, &response).expect("a genuine response is accepted");
    auth::check_proof(&secret, &sn, &client_nonce, &proof).expect("a genuine proof is accepted");
    assert!(auth::check_proof(&other, &sn, &client_nonce, &proof).is_err());
    assert!(auth::check_proof(&secret, &cn, &client_nonce, &proof).is_err() || cn == sn);
    let mut bad = response.clone();
    let at = usize::from(flip) % (bad.len() * 8);
    bad[at / 8] ^= 1 << (at % 8);
    assert!(auth::verify(&secret, &sn, &bad).is_err(), "a response with bit {at} flipped was accepted");
    let mut bad = proof;
    let at = usize::from(flip) % (bad.len() * 8);
    bad[at / 8] ^= 1 << (at % 8);
    assert!(auth::check_proof(&secret, &sn, &client_nonce, &bad).is_err(), "a proof with bit {at} flipped");
}
