//! Property tests of framing: whatever frames go in, in whatever pieces the bytes arrive, the same
//! frames come out, in order.

use std::io::{self, Cursor};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use net::frame::{FrameBuf, MAX_FRAME, encode_frame, read_frame, write_frame};
use net::{Conn, ReadStatus};
use proptest::prelude::*;

/// Frame bodies: mostly small, sometimes a few pages.
fn bodies(max_count: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let body = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 1..64),
        1 => proptest::collection::vec(any::<u8>(), 1..20_000),
    ];
    proptest::collection::vec(body, 0..max_count)
}

proptest! {
    #[test]
    fn frame_buf_returns_what_was_encoded(
        frames in bodies(20),
        cuts in proptest::collection::vec(1usize..5_000, 1..20),
        split in any::<prop::sample::Index>(),
        compact in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        for body in &frames {
            let at = split.index(body.len() + 1);
            encode_frame(&mut stream, &body[..at], &body[at..]);
        }
        let mut buf = FrameBuf::new();
        let mut got = Vec::new();
        let mut body = Vec::new();
        let mut rest = &stream[..];
        for &cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = cut.min(rest.len());
            if compact {
                buf.compact();
            }
            buf.push(&rest[..n]);
            rest = &rest[n..];
            while buf.next_frame(&mut body).unwrap() {
                got.push(body.clone());
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(buf.pending(), 0);
    }

    #[test]
    fn write_frame_then_read_frame(frames in bodies(20)) {
        let mut wire = Vec::new();
        for body in &frames {
            write_frame(&mut wire, body).unwrap();
        }
        let mut reader = Cursor::new(wire);
        for body in &frames {
            prop_assert_eq!(&read_frame(&mut reader, MAX_FRAME).unwrap(), body);
        }
        let end = read_frame(&mut reader, MAX_FRAME).unwrap_err();
        prop_assert_eq!(end.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn read_frame_refuses_bodies_over_the_limit(len in 1usize..5_000, limit in 1usize..5_000) {
        let mut wire = Vec::new();
        write_frame(&mut wire, &vec![7; len]).unwrap();
        let result = read_frame(&mut Cursor::new(wire), limit);
        if len <= limit {
            prop_assert_eq!(result.unwrap().len(), len);
        } else {
            prop_assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
        }
    }
}

fn pair() -> (Conn, Conn) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (Conn::new(a).unwrap(), Conn::new(b).unwrap())
}

proptest! {
    // Real sockets: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn send_queue_to_conn_over_tcp(frames in bodies(40), flush_every in 1usize..8) {
        let (a, mut b) = pair();
        let mut send = a.send_queue().unwrap();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut body = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut pump = |send: &mut net::SendQueue, got: &mut Vec<Vec<u8>>| {
            send.flush().unwrap();
            assert_eq!(b.fill().unwrap(), ReadStatus::WouldBlock);
            while b.next_frame(&mut body).unwrap() {
                got.push(body.clone());
            }
        };
        for (i, frame) in frames.iter().enumerate() {
            let at = frame.len() / 3;
            send.queue(&frame[..at], &frame[at..]);
            if i % flush_every == 0 {
                pump(&mut send, &mut got);
            }
        }
        while got.len() < frames.len() {
            assert!(Instant::now() < deadline, "frames stopped arriving: {} of {}", got.len(), frames.len());
            pump(&mut send, &mut got);
        }
        prop_assert!(!send.wants_write());
        prop_assert_eq!(got, frames);
    }
}
