//! Multi-producer, single-consumer channels that work across nodes; as `std::sync::mpsc`.
//!
//! A channel's queue lives at its *home*, the node that created it, in that node's private memory.
//! A value travels as its bytes inside one message: everything it points to (the buffer of a
//! `Vec`, the contents of a `Box`) is already in the shared heap, and code and `&'static` data mean
//! the same on every node, so the moved bytes are the value. Sends on an unbounded [`channel`] are
//! asynchronous (one message, no reply); sends on a [`sync_channel`] wait until the message is in
//! the buffer (or, for a zero-capacity channel, taken by the receiver). A receiver on another node
//! than the home fetches messages in batches.
//!
//! # Ordering
//! Messages from one `Sender` are received in the order they were sent, even when the `Sender`
//! moves between nodes (messages carry a per-sender sequence number and the home restores the
//! order). Sending is a release and receiving the message an acquire: what the sender wrote before
//! `send` is visible to the receiver after `recv`.
//!
//! # Limits
//! - A value holding node-local resources (a `File`'s descriptor, a pointer to a thread-local) moves
//!   bytes that mean nothing on another node; send such things only to threads of the same node.
//! - Messages still travelling to the home when the `Receiver` is dropped are dropped without running
//!   their destructors (their memory is leaked), where std would drop them. Messages already queued
//!   are dropped normally.
//! - Values are copied as their raw bytes, padding included.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, size_of};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use std::sync::mpsc::{RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError};

use super::manager::{Op, Reply};
use super::{Ticket, key_of, me, post};

/// What both ends share, in the shared heap.
struct Chan {
    key: AtomicU8,
    home: dsm::NodeId,
    receiver_gone: AtomicBool,
}

impl Chan {
    fn key(&self) -> u64 {
        key_of(&self.key)
    }
}

/// Where a message for this channel goes: requests for the channel's key are routed by address,
/// so the key must be homed where the channel state lives. `Chan` is allocated by the creating
/// thread, from its node's arena, so its home is that node.
fn new_chan(bound: Option<u64>) -> Arc<Chan> {
    let chan = Arc::new(Chan { key: AtomicU8::new(0), home: me(), receiver_gone: AtomicBool::new(false) });
    debug_assert_eq!(super::manager_of(chan.key()), chan.home);
    post(chan.key(), Op::ChanCreate { bound });
    chan
}

/// One sender's identity and sequence counter (boxed, so its address is stable as the `Sender`
/// moves).
struct SenderCore {
    seq: AtomicU64,
}

/// The bytes of `t`, in runtime-internal memory: the manager keeps them in its queue, and it must
/// never touch the shared space while it holds its lock (a fault there would wait for the service
/// thread, which may be waiting for that lock).
fn to_bytes<T>(t: T) -> Vec<u8> {
    // Every send goes through here: a release point (what the value points to must be visible to
    // the receiver).
    crate::consistency::release();
    let t = ManuallyDrop::new(t);
    let at = (&*t as *const T).cast::<u8>() as usize;
    // The copy is made on the private stack (the C library's allocator must not run on a shared
    // one); the value itself may be anywhere, and reading it may fault: no lock is held.
    crate::alloc::private_internal(move || {
        // SAFETY: `t` is valid for `size_of::<T>()` bytes and outlives this call; ownership passes
        // to the bytes (the value is never dropped here). Padding bytes are copied as they are
        // (see the module docs).
        unsafe { std::slice::from_raw_parts(at as *const u8, size_of::<T>()) }.to_vec()
    })
}

/// # Safety
/// `bytes` must hold exactly the bytes of a `T` produced by `to_bytes` and not yet reclaimed.
unsafe fn from_bytes<T>(bytes: &[u8]) -> T {
    debug_assert_eq!(bytes.len(), size_of::<T>());
    // SAFETY: per the contract, the bytes are a moved `T`; they may be unaligned in the buffer.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// # Safety
/// `bytes` must be `count` values of `T` from `to_bytes`, each reclaimed exactly once.
unsafe fn values<T>(count: u64, bytes: &[u8]) -> impl Iterator<Item = T> + '_ {
    let size = size_of::<T>();
    (0..count as usize).map(move |i| {
        // SAFETY: per the contract.
        unsafe { from_bytes::<T>(&bytes[i * size..(i + 1) * size]) }
    })
}

/// How many messages a remote receiver fetches at once.
fn batch<T>() -> u64 {
    ((1 << 20) / size_of::<T>().max(1)).clamp(1, 1024) as u64
}

fn new_core() -> Box<SenderCore> {
    Box::new(SenderCore { seq: AtomicU64::new(0) })
}

fn clone_sender(chan: &Arc<Chan>) -> (Arc<Chan>, Box<SenderCore>) {
    let reply = Ticket::call(chan.key(), Op::ChanClone);
    assert!(matches!(reply, Reply::Ack), "clone answered {reply:?}");
    (Arc::clone(chan), new_core())
}

fn drop_sender(chan: &Chan, core: &SenderCore) {
    let sender = core as *const SenderCore as u64;
    post(chan.key(), Op::ChanSenderDrop { sender, final_seq: core.seq.load(Ordering::SeqCst) });
}

/// The sending half of a [`channel`]; as `std::sync::mpsc::Sender`. Clone it for more producers;
/// it can be moved to and used on any node.
pub struct Sender<T> {
    chan: Arc<Chan>,
    core: Box<SenderCore>,
    _t: PhantomData<*const T>,
}

// SAFETY: as std: sending moves a `T` to the receiving thread, so `T: Send` suffices.
unsafe impl<T: Send> Send for Sender<T> {}
// SAFETY: sending through `&Sender` from several threads is fine: the sequence counter is atomic.
unsafe impl<T: Send> Sync for Sender<T> {}

/// The sending half of a [`sync_channel`]; as `std::sync::mpsc::SyncSender`.
pub struct SyncSender<T> {
    chan: Arc<Chan>,
    core: Box<SenderCore>,
    _t: PhantomData<*const T>,
}

// SAFETY: as for Sender.
unsafe impl<T: Send> Send for SyncSender<T> {}
// SAFETY: as for Sender.
unsafe impl<T: Send> Sync for SyncSender<T> {}

/// The receiving half of a channel; as `std::sync::mpsc::Receiver`. It can be moved to another
/// node; messages it had already fetched move with it.
pub struct Receiver<T> {
    chan: Arc<Chan>,
    cache: RefCell<VecDeque<T>>,
}

// SAFETY: the receiver owns the received values; moving it moves them.
unsafe impl<T: Send> Send for Receiver<T> {}

/// Creates an unbounded channel whose home is the calling node.
///
/// # Examples
/// ```
/// use rthreads::sync::mpsc::channel;
///
/// let (tx, rx) = channel();
/// for i in 0..3 {
///     let tx = tx.clone();
///     rthreads::spawn(move || tx.send(i).unwrap());
/// }
/// drop(tx);
/// let mut got: Vec<i32> = rx.iter().collect();
/// got.sort();
/// assert_eq!(got, [0, 1, 2]);
/// ```
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let chan = new_chan(None);
    (
        Sender { chan: Arc::clone(&chan), core: new_core(), _t: PhantomData },
        Receiver { chan, cache: RefCell::new(VecDeque::new()) },
    )
}

/// Creates a channel holding at most `bound` messages (`0`: every send waits for its `recv`).
///
/// # Examples
/// ```
/// use rthreads::sync::mpsc::sync_channel;
///
/// let (tx, rx) = sync_channel(0);
/// rthreads::spawn(move || tx.send("hand to hand").unwrap());
/// assert_eq!(rx.recv().unwrap(), "hand to hand");
/// ```
pub fn sync_channel<T>(bound: usize) -> (SyncSender<T>, Receiver<T>) {
    let chan = new_chan(Some(bound as u64));
    (
        SyncSender { chan: Arc::clone(&chan), core: new_core(), _t: PhantomData },
        Receiver { chan, cache: RefCell::new(VecDeque::new()) },
    )
}

impl<T> Sender<T> {
    /// Sends `t` without waiting.
    ///
    /// # Errors
    /// `Err(SendError(t))` if the receiver is known to be gone. A message sent while the receiver
    /// is being dropped may be lost instead (see the module docs).
    pub fn send(&self, t: T) -> Result<(), SendError<T>> {
        if self.chan.receiver_gone.load(Ordering::SeqCst) {
            return Err(SendError(t));
        }
        let seq = self.core.seq.fetch_add(1, Ordering::SeqCst);
        let sender = &*self.core as *const SenderCore as u64;
        post(self.chan.key(), Op::ChanSend { sender, seq, bytes: to_bytes(t), sync: false });
        Ok(())
    }
}

impl<T> SyncSender<T> {
    fn call_send(&self, t: T) -> Reply {
        let seq = self.core.seq.fetch_add(1, Ordering::SeqCst);
        let sender = &*self.core as *const SenderCore as u64;
        Ticket::call(self.chan.key(), Op::ChanSend { sender, seq, bytes: to_bytes(t), sync: true })
    }

    /// Sends `t`, waiting while the buffer is full (for a zero-capacity channel, until the receiver
    /// takes it).
    ///
    /// # Errors
    /// `Err(SendError(t))` if the receiver is gone.
    pub fn send(&self, t: T) -> Result<(), SendError<T>> {
        match self.call_send(t) {
            Reply::Ack => Ok(()),
            // SAFETY: the manager returns our own bytes, not yet reclaimed.
            Reply::Disconnected(b) => Err(SendError(unsafe { from_bytes(&b) })),
            other => unreachable!("send answered {other:?}"),
        }
    }

    /// Sends `t` only if there is room now (for a zero-capacity channel: a receiver waiting).
    ///
    /// # Errors
    /// `Full(t)` or `Disconnected(t)`.
    pub fn try_send(&self, t: T) -> Result<(), TrySendError<T>> {
        match Ticket::call(self.chan.key(), Op::ChanTrySend { bytes: to_bytes(t) }) {
            Reply::Ack => Ok(()),
            // SAFETY: the manager returns our own bytes, not yet reclaimed.
            Reply::Full(b) => Err(TrySendError::Full(unsafe { from_bytes(&b) })),
            // SAFETY: as above.
            Reply::Disconnected(b) => Err(TrySendError::Disconnected(unsafe { from_bytes(&b) })),
            other => unreachable!("try_send answered {other:?}"),
        }
    }
}

/// `Clone` and `Drop` of the senders (the manager counts them), `Debug` of every end.
macro_rules! end_impls {
    ($($sender:ident),*; $($end:ident),*) => {
        $(impl<T> Clone for $sender<T> {
            fn clone(&self) -> $sender<T> {
                let (chan, core) = clone_sender(&self.chan);
                $sender { chan, core, _t: PhantomData }
            }
        }

        impl<T> Drop for $sender<T> {
            fn drop(&mut self) {
                drop_sender(&self.chan, &self.core);
            }
        })*

        $(impl<T> fmt::Debug for $end<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($end)).field("home", &self.chan.home).finish_non_exhaustive()
            }
        })*
    };
}

end_impls!(Sender, SyncSender; Sender, SyncSender, Receiver);

enum Got {
    Value,
    Empty,
    Disconnected,
}

impl<T> Receiver<T> {
    fn take(&self, reply: Reply) -> Got {
        match reply {
            Reply::Msgs { count, bytes } => {
                crate::consistency::acquire();
                let mut cache = self.cache.borrow_mut();
                // SAFETY: the manager hands each queued message to the receiver exactly once.
                cache.extend(unsafe { values::<T>(count, &bytes) });
                if cache.is_empty() { Got::Empty } else { Got::Value }
            }
            Reply::Empty | Reply::Cancelled => Got::Empty,
            Reply::Disconnected(_) => Got::Disconnected,
            other => unreachable!("recv answered {other:?}"),
        }
    }

    fn pop(&self) -> Option<T> {
        self.cache.borrow_mut().pop_front()
    }

    /// Waits for a message.
    ///
    /// # Errors
    /// `RecvError` once every sender is gone and the channel is empty.
    pub fn recv(&self) -> Result<T, RecvError> {
        loop {
            if let Some(v) = self.pop() {
                return Ok(v);
            }
            match self.take(Ticket::call(self.chan.key(), Op::ChanRecv { block: true, max: batch::<T>() })) {
                Got::Disconnected => return Err(RecvError),
                Got::Value | Got::Empty => {}
            }
        }
    }

    /// A message if one is there now (asks the home: a round trip if that is another node).
    ///
    /// # Errors
    /// `Empty`, or `Disconnected` once every sender is gone and the channel is empty.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        if let Some(v) = self.pop() {
            return Ok(v);
        }
        match self.take(Ticket::call(self.chan.key(), Op::ChanRecv { block: false, max: batch::<T>() })) {
            Got::Value => Ok(self.pop().expect("cached")),
            Got::Empty => Err(TryRecvError::Empty),
            Got::Disconnected => Err(TryRecvError::Disconnected),
        }
    }

    /// Waits for a message at most `timeout`.
    ///
    /// # Errors
    /// `Timeout`, or `Disconnected` once every sender is gone and the channel is empty.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_deadline(super::deadline_in(timeout))
    }

    fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        loop {
            if let Some(v) = self.pop() {
                return Ok(v);
            }
            let t = Ticket::new();
            t.submit(self.chan.key(), Op::ChanRecv { block: true, max: batch::<T>() });
            let got = match t.wait_until(deadline) {
                Some(r) => self.take(r),
                None => {
                    // Withdraw; anything already sent to us arrives before the answer.
                    t.submit(self.chan.key(), Op::ChanRecvCancel);
                    let mut got = Got::Empty;
                    loop {
                        match t.wait() {
                            Reply::Cancelled => break,
                            r => got = self.take(r),
                        }
                    }
                    match got {
                        Got::Empty => return Err(RecvTimeoutError::Timeout),
                        g => g,
                    }
                }
            };
            if let Got::Disconnected = got {
                return Err(RecvTimeoutError::Disconnected);
            }
        }
    }

    /// An iterator that waits for each message and ends when every sender is gone.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// An iterator over the messages available now.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.chan.receiver_gone.store(true, Ordering::SeqCst);
        // Queued messages come back to be dropped here, where their type is known.
        if let Reply::Msgs { count, bytes } = Ticket::call(self.chan.key(), Op::ChanReceiverDrop) {
            // SAFETY: each returned message is reclaimed exactly once.
            unsafe { values::<T>(count, &bytes) }.for_each(drop);
        }
    }
}

/// Blocking iterator over a [`Receiver`]'s messages.
#[derive(Debug)]
pub struct Iter<'a, T> {
    rx: &'a Receiver<T>,
}

/// Non-blocking iterator over a [`Receiver`]'s messages.
#[derive(Debug)]
pub struct TryIter<'a, T> {
    rx: &'a Receiver<T>,
}

/// Owning blocking iterator over a [`Receiver`]'s messages.
#[derive(Debug)]
pub struct IntoIter<T> {
    rx: Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<T> Iterator for TryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}
