//! Length-framed messages over a non-blocking stream.
//!
//! A frame is a little-endian `u32` body length followed by the body; the body's first byte is
//! the message tag. Bodies longer than [`MAX_FRAME`] are refused as malformed: a peer can never
//! make a node allocate without bound.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};

/// The largest body a node accepts.
pub const MAX_FRAME: usize = 16 << 20;

/// One peer connection with its receive and send buffers.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    inbuf: FrameBuf,
}

/// The receiving half of framing, without the socket: bytes go in as they arrive, in pieces of
/// any size, and complete frame bodies come out. [`Conn`] is this plus a socket; the fuzz
/// harness (`crate::fuzzing`, with the `fuzzing` feature) drives it directly.
#[derive(Debug)]
pub struct FrameBuf {
    /// Always initialised to its full length; bytes `pos..end` are received and not yet taken.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// The longest body accepted.
    limit: usize,
}

impl Default for FrameBuf {
    fn default() -> Self {
        FrameBuf::new()
    }
}

impl FrameBuf {
    /// An empty buffer (64 KiB to start with; it grows as needed).
    pub fn new() -> FrameBuf {
        FrameBuf::with_capacity(1 << 16)
    }

    /// An empty buffer of `bytes` to start with (at least 16); it doubles as needed.
    pub fn with_capacity(bytes: usize) -> FrameBuf {
        FrameBuf { buf: vec![0; bytes.max(16)], pos: 0, end: 0, limit: MAX_FRAME }
    }

    /// Moves the unread bytes to the front, making room behind them.
    pub fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
    }

    /// Free space to receive into, never empty: the buffer doubles when it is full. Report what was
    /// written there with [`FrameBuf::filled`].
    pub fn spare(&mut self) -> &mut [u8] {
        if self.end == self.buf.len() {
            let len = self.buf.len();
            self.buf.resize(len * 2, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Records that the first `n` bytes of [`FrameBuf::spare`] now hold received data.
    ///
    /// # Panics
    /// If `n` is larger than the space `spare` offered.
    pub fn filled(&mut self, n: usize) {
        assert!(n <= self.buf.len() - self.end, "filled past the end of the buffer");
        self.end += n;
    }

    /// Appends `bytes` (copying through [`FrameBuf::spare`], as a socket read would).
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let spare = self.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            self.filled(n);
            bytes = &bytes[n..];
        }
    }

    /// Bytes received and not yet taken as frames.
    pub fn pending(&self) -> usize {
        self.end - self.pos
    }

    /// Moves the next complete frame's body into `body`; `Ok(false)` if none is complete yet.
    ///
    /// # Errors
    /// `InvalidData` for a frame longer than [`MAX_FRAME`] or empty. The bad length stays unread,
    /// so every later call fails the same way: the connection is unusable.
    pub fn next_frame(&mut self, body: &mut Vec<u8>) -> io::Result<bool> {
        let avail = &self.buf[self.pos..self.end];
        if avail.len() < 4 {
            return Ok(false);
        }
        let len = u32::from_le_bytes(avail[..4].try_into().expect("4 bytes")) as usize;
        if len == 0 || len > self.limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad frame length {len}")));
        }
        if avail.len() < 4 + len {
            return Ok(false);
        }
        body.clear();
        body.extend_from_slice(&avail[4..4 + len]);
        self.pos += 4 + len;
        Ok(true)
    }

    /// Sets the longest frame body accepted from now on (at most [`MAX_FRAME`]).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(MAX_FRAME);
    }
}

/// Appends one frame whose body is `head` followed by `tail` to `out`: the length, then the body.
///
/// # Panics
/// If the body is longer than `u32::MAX` bytes (callers keep bodies within [`MAX_FRAME`]).
pub fn encode_frame(out: &mut Vec<u8>, head: &[u8], tail: &[u8]) {
    let len = u32::try_from(head.len() + tail.len()).expect("frame body over 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(tail);
}

/// The sending side of a connection: frames are appended in order and written as the socket takes
/// them. It may be shared (behind a lock) by every thread that sends to the peer, so a thread can
/// write its frame straight to the socket instead of handing it to another thread.
#[derive(Debug)]
pub struct SendQueue {
    /// `None` until the connection exists: frames wait in `out` (see [`SendQueue::unconnected`]).
    stream: Option<TcpStream>,
    out: Vec<u8>,
    out_pos: usize,
}

/// Reading from a connection stopped because...
#[derive(Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// ...no more bytes are available right now.
    WouldBlock,
    /// ...the peer closed the connection.
    Closed,
}

impl Conn {
    /// Wraps a connected stream, switching it to non-blocking mode with `TCP_NODELAY`. The receive
    /// buffer starts at [`Conn::FIRST_BUFFER`] bytes and doubles as frames need it, so a
    /// connection to a peer this node hardly talks to costs almost nothing (a node of a cluster of
    /// hundreds holds a connection to every other).
    ///
    /// # Errors
    /// The socket option errors.
    pub fn new(stream: TcpStream) -> io::Result<Conn> {
        Conn::with_buffer(stream, Conn::FIRST_BUFFER)
    }

    /// The receive buffer of a new connection, in bytes.
    pub const FIRST_BUFFER: usize = 512;

    /// As [`Conn::new`], with a receive buffer of `bytes` to start with: a connection that has not
    /// authenticated yet gets a small one, which grows only once frames need it.
    ///
    /// # Errors
    /// The socket option errors.
    pub fn with_buffer(stream: TcpStream, bytes: usize) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(Conn { stream, inbuf: FrameBuf::with_capacity(bytes) })
    }

    /// Sets the longest frame body accepted from now on (at most [`MAX_FRAME`]): small while the
    /// peer is not yet authenticated, so a stranger cannot make this node buffer megabytes.
    pub fn set_limit(&mut self, limit: usize) {
        self.inbuf.set_limit(limit);
    }

    /// The peer's address, for messages about it.
    pub fn peer_addr(&self) -> String {
        self.stream.peer_addr().map_or_else(|_| "an unknown address".into(), |a| a.to_string())
    }

    /// A sending side for the same socket (a duplicate descriptor).
    ///
    /// # Errors
    /// If the descriptor cannot be duplicated.
    pub fn send_queue(&self) -> io::Result<SendQueue> {
        Ok(SendQueue { stream: Some(self.stream.try_clone()?), out: Vec::new(), out_pos: 0 })
    }

    /// A second handle on the socket, for [`SendQueue::connect`].
    ///
    /// # Errors
    /// Out of descriptors.
    pub fn stream_clone(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }

    /// The socket, for polling.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Reads every byte available now into the receive buffer.
    ///
    /// A read that returns less than the buffer had room for has taken everything the kernel held,
    /// so it ends the call without a second read to hear "would block" (a system call saved per
    /// message on the fault path). Callers poll level-triggered: bytes or a close arriving later
    /// make the socket readable again.
    ///
    /// # Errors
    /// A socket error other than "would block".
    pub fn fill(&mut self) -> io::Result<ReadStatus> {
        self.inbuf.compact();
        loop {
            let room = self.inbuf.spare().len();
            match self.stream.read(self.inbuf.spare()) {
                Ok(0) => return Ok(ReadStatus::Closed),
                Ok(n) if n < room => {
                    self.inbuf.filled(n);
                    return Ok(ReadStatus::WouldBlock);
                }
                Ok(n) => self.inbuf.filled(n),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(ReadStatus::WouldBlock),
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(e),
                },
            }
        }
    }

    /// Moves the next complete frame's body into `body`; `Ok(false)` if none is complete yet.
    ///
    /// # Errors
    /// `InvalidData` for a frame longer than [`MAX_FRAME`] or empty.
    pub fn next_frame(&mut self, body: &mut Vec<u8>) -> io::Result<bool> {
        self.inbuf.next_frame(body)
    }
}

impl SendQueue {
    /// A queue for a connection that does not exist yet: frames wait in it, in order, until
    /// [`SendQueue::connect`] gives it one.
    pub fn unconnected() -> SendQueue {
        SendQueue { stream: None, out: Vec::new(), out_pos: 0 }
    }

    /// Whether the queue has a connection to write to.
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// Gives an unconnected queue its connection (a clone of a [`Conn`]'s stream, from
    /// [`Conn::stream_clone`]); what waits is written at the next [`SendQueue::flush`].
    pub fn connect(&mut self, stream: TcpStream) {
        self.stream = Some(stream);
    }

    /// Queues one frame whose body is `head` followed by `tail` (page bytes travel as `tail`,
    /// so they are copied once, into the send buffer).
    pub fn queue(&mut self, head: &[u8], tail: &[u8]) {
        encode_frame(&mut self.out, head, tail);
    }

    /// Whether queued bytes are still waiting for the socket.
    pub fn wants_write(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// Writes as much of the queue as the socket takes.
    ///
    /// # Errors
    /// A socket error other than "would block" (the peer is gone).
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else { return Ok(()) };
        while self.out_pos < self.out.len() {
            match stream.write(&self.out[self.out_pos..]) {
                Ok(0) => {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "peer stopped reading"));
                }
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > (1 << 20) {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }
}

/// Writes one frame on a blocking stream (handshake, direct connections).
///
/// # Errors
/// The stream's error.
pub fn write_frame<W: Write + ?Sized>(stream: &mut W, body: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4 + body.len());
    encode_frame(&mut buf, body, &[]);
    stream.write_all(&buf)
}

/// Reads one frame from a blocking stream (handshake, direct connections), refusing bodies over
/// `limit` bytes.
///
/// # Errors
/// The stream's error (including a socket's read timeout, and `UnexpectedEof` for a stream that
/// ends inside a frame), or `InvalidData` for a bad length.
pub fn read_frame<R: Read + ?Sized>(stream: &mut R, limit: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame length {len} (is the peer an rthreads node?)"),
        ));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (Conn, Conn) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (Conn::new(a).unwrap(), Conn::new(b).unwrap())
    }

    #[test]
    fn an_unconnected_queue_keeps_its_frames_in_order_until_it_gets_a_connection() {
        let mut q = SendQueue::unconnected();
        q.queue(b"first", &[]);
        q.queue(b"second", b" with a tail");
        assert!(!q.is_connected());
        q.flush().unwrap();
        assert!(q.wants_write(), "nothing can leave without a connection");
        let (a, mut b) = pair();
        q.connect(a.stream_clone().unwrap());
        q.queue(b"third", &[]);
        q.flush().unwrap();
        assert!(!q.wants_write());
        let mut body = Vec::new();
        for want in [&b"first"[..], b"second with a tail", b"third"] {
            assert!(recv_one(&mut b, &mut body).unwrap());
            assert_eq!(body, want);
        }
    }

    fn recv_one(c: &mut Conn, body: &mut Vec<u8>) -> io::Result<bool> {
        for _ in 0..1000 {
            c.fill()?;
            if c.next_frame(body)? {
                return Ok(true);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(false)
    }

    #[test]
    fn frames_round_trip_in_order() {
        let (a, mut b) = pair();
        let mut a = a.send_queue().unwrap();
        for i in 0..100u32 {
            a.queue(&i.to_le_bytes(), &vec![i as u8; i as usize * 50]);
        }
        while a.wants_write() {
            a.flush().unwrap();
        }
        let mut body = Vec::new();
        for i in 0..100u32 {
            assert!(recv_one(&mut b, &mut body).unwrap());
            assert_eq!(&body[..4], &i.to_le_bytes());
            assert_eq!(body.len(), 4 + i as usize * 50);
        }
    }

    #[test]
    fn oversized_and_empty_frames_are_errors() {
        for len in [0u32, MAX_FRAME as u32 + 1, u32::MAX] {
            let (a, mut b) = pair();
            let mut s = a.stream.try_clone().unwrap();
            s.set_nonblocking(false).unwrap();
            s.write_all(&len.to_le_bytes()).unwrap();
            let mut body = Vec::new();
            let err = recv_one(&mut b, &mut body).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
    }

    #[test]
    fn closed_peer_is_reported() {
        let (a, mut b) = pair();
        drop(a);
        let mut status = ReadStatus::WouldBlock;
        for _ in 0..1000 {
            status = b.fill().unwrap();
            if status == ReadStatus::Closed {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(status, ReadStatus::Closed);
    }
}
