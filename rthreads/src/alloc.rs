//! The allocator behind `#[rthreads::main]`: puts `Box`, `Vec`, `Arc`, `String`... in the shared
//! space, so data made on one node can be used on any other.
//!
//! Each node allocates from its own arena, the slice of the space its home pages cover (so fresh
//! objects are local and never fault), under a per-node lock: there is no global lock per
//! allocation. The arena's bookkeeping (free lists, the large-block map) lives in the node's
//! private memory, never in the shared space, so allocating touches no shared page.
//!
//! Small blocks come in power-of-two size classes from 16 B to 2 KiB, carved from 256 KiB chunks
//! taken from the first quarter of the arena (the *small-object region*); larger ones are whole
//! pages from the rest (the *bulk region*), first fit, coalesced on free. Memory freed on another
//! node than the one that allocated it is batched and sent back to its owner, which reuses it.
//! A zeroed large block is written only below the highest address the bulk region ever handed
//! out: above it the pages are untouched zeros, so `vec![0; n]` costs no memory until used.
//!
//! The two regions matter to the release-consistent protocol: the small-object region stays
//! sequentially consistent (object headers, `Arc` counts, atomics and locks live there), the bulk
//! region (blocks of more than 2 KiB) is release consistent. See [`small_region`].
//!
//! Runtime-internal memory (queues, tables, network buffers) must not live in the shared space:
//! the runtime's own threads, and runtime code running on application threads inside an
//! [`InternalAlloc`] scope, get their memory from the C library instead. Before the runtime starts,
//! everything comes from the C library too.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::{Cell, UnsafeCell};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use dsm::sys::PAGE_SIZE;

thread_local! {
    static INTERNAL: Cell<u32> = const { Cell::new(0) };
}

/// While alive, the current thread's allocations are runtime-internal (private memory).
pub(crate) struct InternalAlloc(());

impl InternalAlloc {
    /// Selects the C library's allocator for the calling thread until the guard drops.
    ///
    /// Only on a private stack (`crate::private`): the C library's allocator takes locks that the
    /// service thread takes too, so it must not run on a stack that can fault.
    pub(crate) fn new() -> InternalAlloc {
        if !crate::private::on_private_stack() {
            crate::private::bug(
                "runtime-internal allocation on a stack in the shared space (outside `private`)",
            );
        }
        INTERNAL.with(|c| c.set(c.get() + 1));
        InternalAlloc(())
    }

    /// Runs `f` with runtime-internal allocation (as [`InternalAlloc::new`], on a private stack).
    pub(crate) fn with<R>(f: impl FnOnce() -> R) -> R {
        let _internal = InternalAlloc::new();
        f()
    }
}

impl Drop for InternalAlloc {
    fn drop(&mut self) {
        INTERNAL.with(|c| c.set(c.get() - 1));
    }
}

/// [`private`](crate::private::private), with runtime-internal allocation ([`InternalAlloc`]) for
/// the whole call.
pub(crate) fn private_internal<F: FnOnce() -> R, R>(f: F) -> R {
    crate::private::private(move || {
        let _internal = InternalAlloc::new();
        f()
    })
}

/// Marks the calling thread as a runtime thread for the rest of its life.
pub(crate) fn runtime_thread() {
    std::mem::forget(InternalAlloc::new());
}

pub(crate) fn internal() -> bool {
    INTERNAL.with(|c| c.get() != 0)
}

/// A lock that never allocates or parks through a table (the allocator cannot use one that does).
///
/// The one lock shared with the service thread that application threads take on their own (shared)
/// stacks, for speed: small allocations and frees take it without switching to the private stack.
/// So the service thread never waits for it: it only [`SpinLock::try_with`]s, and retries later
/// (see `crate::private`). Inside, nothing touches the shared space, and nothing allocates except
/// on the private stack (the paths that may grow a list or a map go through `private`).
struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `locked`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    const fn new(value: T) -> Self {
        SpinLock { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// Runs `f` under the lock, waiting for it. Not on the service thread (see [`SpinLock`]).
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut spins = 0u32;
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: we hold the lock, so nobody else has a reference to the value.
        let r = f(unsafe { &mut *self.value.get() });
        self.locked.store(false, Ordering::Release);
        r
    }

    /// Runs `f` under the lock if it is free now; `None` if another thread holds it (the service
    /// thread's way in: it never waits for an application thread).
    fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return None;
        }
        // SAFETY: we hold the lock, so nobody else has a reference to the value.
        let r = f(unsafe { &mut *self.value.get() });
        self.locked.store(false, Ordering::Release);
        Some(r)
    }
}

const MIN_CLASS: usize = 16;
const MAX_SMALL: usize = 2 << 10;
const CLASSES: usize = 8; // 16 B ..= 2 KiB
/// The small-object region is the first `1 / SMALL_REGION_DIV` of each node's arena.
const SMALL_REGION_DIV: usize = 4;

/// Bytes at the start of each node's slice of the space that hold small blocks (size classes):
/// pages `k * slice_pages .. k * slice_pages + small_region(slice) / PAGE_SIZE` of node `k`.
pub(crate) fn small_region(slice: usize) -> usize {
    (slice / SMALL_REGION_DIV) / PAGE_SIZE * PAGE_SIZE
}
const CHUNK: usize = 256 << 10;
/// Remote frees are sent home in batches of this many.
const REMOTE_BATCH: usize = 256;

fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(MIN_CLASS).next_power_of_two();
    (size <= MAX_SMALL).then(|| size.trailing_zeros() as usize - MIN_CLASS.trailing_zeros() as usize)
}

fn round_pages(n: usize) -> usize {
    n.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

struct Arena {
    /// Chunks for size classes come from `small_bump..small_end`.
    small_bump: usize,
    small_end: usize,
    /// Page runs come from `bump..end` (and from `large`).
    bump: usize,
    /// The highest `bump` ever reached: no block above it was ever handed out, so its memory
    /// is all zeros (pages of the node's own slice, untouched since the space was made).
    high: usize,
    end: usize,
    free: [Vec<usize>; CLASSES],
    chunks: [(usize, usize); CLASSES],
    large: BTreeMap<usize, usize>,
}

impl Arena {
    /// `len` bytes (a multiple of the page size) aligned to `align` (at least a page): the first
    /// free range they fit in, else fresh memory at the end. Pages skipped to align the block are
    /// kept as free ranges.
    fn take_pages(&mut self, len: usize, align: usize) -> usize {
        let align = align.max(PAGE_SIZE);
        let fit = self.large.iter().find_map(|(&at, &have)| {
            let start = at.next_multiple_of(align);
            (start + len <= at + have).then_some((at, have, start))
        });
        if let Some((at, have, start)) = fit {
            self.large.remove(&at);
            if start > at {
                self.large.insert(at, start - at);
            }
            if start + len < at + have {
                self.large.insert(start + len, at + have - (start + len));
            }
            return start;
        }
        let at = self.bump.next_multiple_of(align);
        if at + len > self.end {
            return 0;
        }
        let skipped = self.bump;
        self.bump = at + len;
        self.high = self.high.max(self.bump);
        if at > skipped {
            self.give_pages(skipped, at - skipped);
        }
        at
    }

    fn give_pages(&mut self, at: usize, len: usize) {
        let (mut at, mut len) = (at, len);
        if let Some((&prev, &plen)) = self.large.range(..at).next_back()
            && prev + plen == at
        {
            self.large.remove(&prev);
            at = prev;
            len += plen;
        }
        if let Some(&next_len) = self.large.get(&(at + len)) {
            self.large.remove(&(at + len));
            len += next_len;
        }
        if at + len == self.bump {
            self.bump = at;
        } else {
            self.large.insert(at, len);
        }
    }

    fn alloc(&mut self, layout: Layout) -> usize {
        match class_of(layout) {
            Some(c) => {
                if let Some(p) = self.free[c].pop() {
                    return p;
                }
                let size = MIN_CLASS << c;
                let (mut cur, mut end) = self.chunks[c];
                if cur + size > end {
                    // Blocks are carved at multiples of `size` from the chunk's start; chunks are
                    // page-aligned, which covers every class's alignment (at most 2 KiB).
                    if self.small_bump + CHUNK > self.small_end {
                        return 0;
                    }
                    cur = self.small_bump;
                    self.small_bump += CHUNK;
                    end = cur + CHUNK;
                }
                self.chunks[c] = (cur + size, end);
                cur
            }
            None => self.take_pages(round_pages(layout.size()), layout.align()),
        }
    }

    /// As [`Arena::alloc`], with how many bytes from the block's start may not be zero (the
    /// block's size, but for a run of pages partly or wholly above `high`: those bytes were never
    /// handed out before).
    fn alloc_zeroed(&mut self, layout: Layout) -> (usize, usize) {
        let high = self.high;
        let p = self.alloc(layout);
        let dirty = match class_of(layout) {
            None if p != 0 => high.saturating_sub(p).min(layout.size()),
            _ => layout.size(),
        };
        (p, dirty)
    }

    fn dealloc(&mut self, p: usize, layout: Layout) {
        match class_of(layout) {
            Some(c) => self.free[c].push(p),
            None => self.give_pages(p, round_pages(layout.size())),
        }
    }

    /// Frees `(address, size, align)` blocks, skipping any whose layout is not one.
    fn free_blocks(&mut self, blocks: &[Block]) {
        for &(p, size, align) in blocks {
            if let Ok(layout) = Layout::from_size_align(size, align) {
                self.dealloc(p, layout);
            }
        }
    }
}

/// A block handed back to its owner: `(address, size, align)`.
pub(crate) type Block = (usize, usize, usize);

/// One node's view of the shared heap.
pub(crate) struct Heap {
    me: usize,
    base: usize,
    slice: usize,
    nodes: usize,
    arena: SpinLock<Arena>,
    remote: SpinLock<Vec<Block>>,
}

static HEAP: AtomicPtr<Heap> = AtomicPtr::new(std::ptr::null_mut());

impl Heap {
    /// Creates the heap for node `me`, whose arena is `[arena_start, slice end)`.
    pub(crate) fn new(me: usize, nodes: usize, base: usize, slice: usize, arena_start: usize) -> Heap {
        let end = base + slice * (me + 1);
        let small_end = base + slice * me + small_region(slice);
        Heap {
            me,
            base,
            slice,
            nodes,
            arena: SpinLock::new(Arena {
                small_bump: arena_start,
                small_end,
                bump: small_end.max(arena_start),
                high: small_end.max(arena_start),
                end,
                free: Default::default(),
                chunks: [(0, 0); CLASSES],
                large: BTreeMap::new(),
            }),
            remote: SpinLock::new(Vec::new()),
        }
    }

    /// Makes `heap` the process's shared heap from now on.
    pub(crate) fn activate(heap: &'static Heap) {
        HEAP.store(heap as *const Heap as *mut Heap, Ordering::Release);
    }

    fn owner(&self, p: usize) -> Option<usize> {
        let off = p.wrapping_sub(self.base);
        (off < self.slice * self.nodes).then_some(off / self.slice)
    }

    /// Runs `take` (an allocation of `layout`) on the arena.
    fn in_arena<R>(&self, layout: Layout, take: impl FnOnce(&mut Arena) -> R) -> R {
        if class_of(layout).is_some() {
            // A small block comes off a free list or a chunk: nothing inside allocates, so this
            // runs where the caller runs (see `SpinLock`).
            return self.arena.with(take);
        }
        // The page-run map may allocate: on the private stack, with the C library's allocator.
        private_internal(move || self.arena.with(take))
    }

    fn alloc(&self, layout: Layout) -> *mut u8 {
        self.in_arena(layout, |a| a.alloc(layout)) as *mut u8
    }

    /// As [`Heap::alloc`], zeroed: only the bytes that were handed out before are written (a
    /// large block from fresh memory is zero already, and stays untouched, so a big
    /// `vec![0; n]` costs no memory until it is used, as with the C library's `calloc`).
    fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (p, dirty) = self.in_arena(layout, |a| a.alloc_zeroed(layout));
        if p != 0 && dirty > 0 {
            // SAFETY: the block is ours, `layout.size()` bytes long, and `dirty` is at most that.
            unsafe { std::ptr::write_bytes(p as *mut u8, 0, dirty) };
        }
        p as *mut u8
    }

    fn dealloc(&self, p: usize, layout: Layout) {
        let mine = self.owner(p) == Some(self.me);
        // The common cases need no allocation: a small block onto a free list with room, a block
        // of another node onto the batch with room.
        let quick = match class_of(layout) {
            Some(c) if mine => self.arena.with(|a| {
                let list = &mut a.free[c];
                (list.len() < list.capacity()).then(|| list.push(p)).map(|()| 0)
            }),
            _ if !mine => self.remote.with(|r| {
                (r.len() < r.capacity()).then(|| r.push((p, layout.size(), layout.align()))).map(|()| r.len())
            }),
            _ => None,
        };
        let n = quick.unwrap_or_else(|| {
            private_internal(move || {
                if mine {
                    self.arena.with(|a| {
                        if let Some(c) = class_of(layout) {
                            let list = &mut a.free[c];
                            list.reserve(list.len().max(64));
                        }
                        a.dealloc(p, layout);
                    });
                    0
                } else {
                    self.remote.with(|r| {
                        r.reserve(REMOTE_BATCH);
                        r.push((p, layout.size(), layout.align()));
                        r.len()
                    })
                }
            })
        });
        if n >= REMOTE_BATCH {
            dsm::fault::notify();
        } else if n == 1 {
            // A batch has begun: it goes home at the service thread's next turn, which an idle
            // service thread would otherwise take up to a quarter of a second to come to.
            dsm::fault::nudge();
        }
    }

    /// Frees blocks of this node's arena that another node released; `false` if the arena is busy
    /// right now (service thread: it never waits for the arena, see `SpinLock`; it tries again).
    pub(crate) fn try_free_returned(&self, blocks: &[Block]) -> bool {
        let _internal = InternalAlloc::new();
        self.arena.try_with(|a| a.free_blocks(blocks)).is_some()
    }

    /// Frees blocks of this node's arena that another node released (waiting for the arena: not on
    /// the service thread).
    #[cfg(test)]
    pub(crate) fn free_returned(&self, blocks: &[Block]) {
        let _internal = InternalAlloc::new();
        self.arena.with(|a| a.free_blocks(blocks));
    }

    /// Takes the batch of blocks freed here that belong to other nodes, grouped by owner (nothing
    /// when the batch is busy right now: the service thread tries again on its next turn).
    pub(crate) fn take_remote_frees(&self) -> Vec<(usize, Vec<Block>)> {
        let _internal = InternalAlloc::new();
        let fresh = Vec::with_capacity(REMOTE_BATCH);
        let Some(all) = self.remote.try_with(|r| std::mem::replace(r, fresh)) else { return Vec::new() };
        let mut by_owner: BTreeMap<usize, Vec<Block>> = BTreeMap::new();
        for b in all {
            if let Some(o) = self.owner(b.0) {
                by_owner.entry(o).or_default().push(b);
            }
        }
        by_owner.into_iter().collect()
    }

    /// How far this node's arena has ever been carved (bytes from its start).
    pub(crate) fn high_water(&self) -> usize {
        let start = self.base + self.slice * self.me;
        self.arena.with(|a| (a.small_bump - start) + (a.bump - (start + small_region(self.slice))))
    }

    /// Whether a block freed on another node belongs to this node's arena (checked before reuse).
    pub(crate) fn owns(&self, p: usize) -> bool {
        self.owner(p) == Some(self.me)
    }

    /// What is left of this node's arena.
    fn room(&self) -> Room {
        let start = self.base + self.slice * self.me;
        let bulk_start = start + small_region(self.slice);
        self.arena.with(|a| Room {
            me: self.me,
            nodes: self.nodes,
            slice: self.slice,
            small_left: a.small_end.saturating_sub(a.small_bump),
            bulk_left: a.end - a.bump,
            bulk_largest: a.large.values().copied().max().unwrap_or(0).max(a.end - a.bump),
            small_carved: a.small_bump.saturating_sub(start),
            bulk_carved: a.bump.saturating_sub(bulk_start),
        })
    }
}

/// Bytes of this node's arena carved so far (0 outside a cluster). For tests and statistics.
#[doc(hidden)]
pub fn arena_high_water() -> usize {
    heap().map_or(0, Heap::high_water)
}

fn heap() -> Option<&'static Heap> {
    let p = HEAP.load(Ordering::Acquire);
    // SAFETY: HEAP only ever holds null or a pointer from `activate`, which takes a `&'static`.
    unsafe { p.as_ref() }
}

/// The global allocator that `#[rthreads::main]` installs. Application threads allocate in the
/// shared space once the runtime is up; runtime threads, and everything before start-up, use the C
/// library's `malloc`. Frees go wherever the block came from.
///
/// # Examples
/// `#[rthreads::main]` installs it for you; a program that writes its own `main` can do it by hand:
/// ```
/// #[global_allocator]
/// static ALLOC: rthreads::SharedAlloc = rthreads::SharedAlloc;
/// fn main() {
///     let v = vec![1, 2, 3]; // C library memory: the runtime is not running
///     assert_eq!(v.len(), 3);
/// }
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct SharedAlloc;

unsafe fn sys_alloc(layout: Layout) -> *mut u8 {
    // The C library's allocator takes locks the service thread takes too: on a private stack.
    // SAFETY: forwarded under the caller's contract.
    crate::private::private(move || unsafe { sys_alloc_here(layout) })
}

unsafe fn sys_alloc_here(layout: Layout) -> *mut u8 {
    if layout.align() <= 16 {
        // SAFETY: malloc returns memory aligned for any type up to 16 bytes on our targets.
        unsafe { libc::malloc(layout.size().max(1)).cast() }
    } else {
        let mut p = std::ptr::null_mut();
        // SAFETY: the alignment is a power of two and a multiple of the pointer size.
        let rc = unsafe { libc::posix_memalign(&mut p, layout.align(), layout.size().max(1)) };
        if rc == 0 { p.cast() } else { std::ptr::null_mut() }
    }
}

impl SharedAlloc {
    /// `alloc` and `alloc_zeroed`: from the node's arena once the runtime is up (outside an
    /// `InternalAlloc` scope), else from the C library.
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`]: `layout` has a non-zero size.
    unsafe fn take(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        match heap() {
            Some(h) if !internal() => {
                let p = if zeroed { h.alloc_zeroed(layout) } else { h.alloc(layout) };
                if p.is_null() {
                    // Before std's "memory allocation of N bytes failed": why, and what to set.
                    report_exhausted(h, layout);
                }
                p
            }
            _ => {
                // SAFETY: forwarded to the C library with a valid layout.
                let p = unsafe { sys_alloc(layout) };
                if zeroed && !p.is_null() {
                    // SAFETY: the block is `layout.size()` bytes long.
                    unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
                }
                p
            }
        }
    }
}

// SAFETY: every block is either from malloc (freed with free) or from a node arena (freed into
// an arena); `dealloc` tells them apart by address, so each block goes back where it came from.
unsafe impl GlobalAlloc for SharedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { self.take(layout, false) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { self.take(layout, true) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match heap() {
            Some(h) if h.owner(ptr as usize).is_some() => h.dealloc(ptr as usize, layout),
            // The C library's allocator takes locks the service thread takes too: on a private
            // stack. SAFETY: the block did not come from an arena, so it came from the C library.
            _ => crate::private::private(move || unsafe { libc::free(ptr.cast()) }),
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let h = heap();
        let shared = h.is_some_and(|h| h.owner(ptr as usize).is_some());
        if !shared && layout.align() <= 16 && (h.is_none() || internal()) {
            // On a private stack, as `sys_alloc`.
            // SAFETY: a C-library block stays a C-library block.
            return crate::private::private(move || unsafe {
                libc::realloc(ptr.cast(), new_size.max(1)).cast()
            });
        }
        // SAFETY: the caller guarantees the new size forms a valid layout with the old alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if shared && class_of(layout).is_some() && class_of(layout) == class_of(new_layout) {
            return ptr;
        }
        // SAFETY: GlobalAlloc contract; both blocks are valid for min(old, new) bytes.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

// ----- when the shared heap is exhausted -----

/// At most this many exhaustion reports per process: std ends the process after the first unless
/// the program asked with `try_reserve` and the like, and such a program must not flood stderr.
const MAX_REPORTS: u32 = 4;

/// A line of text formatted on the stack: the allocator cannot allocate to report that it cannot
/// allocate. Text beyond its capacity is dropped.
struct StackLine {
    buf: [u8; 1024],
    len: usize,
}

impl std::fmt::Write for StackLine {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// A byte count for people: `12.0 GiB`, `768.0 MiB`, `4.0 KiB`, `17 bytes` (integer arithmetic only).
struct Bytes(u128);

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        for (unit, name) in [(1u128 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
            if n >= unit {
                return write!(f, "{}.{} {name}", n / unit, (n % unit) * 10 / unit);
            }
        }
        write!(f, "{n} bytes")
    }
}

/// The text of the report for a request of `layout` that this node's arena, left as `room` says,
/// could not satisfy.
fn exhausted_message(out: &mut impl std::fmt::Write, layout: Layout, room: &Room) -> std::fmt::Result {
    let Room { me, nodes, slice, small_left, bulk_left, bulk_largest, small_carved, bulk_carved } = *room;
    let size = layout.size() as u128;
    let (slice, nodes_u) = (slice as u128, nodes as u128);
    write!(
        out,
        "rthreads: node {me}: the shared heap cannot allocate {} ({size} bytes, alignment {}): ",
        Bytes(size),
        layout.align()
    )?;
    // The share a node needs for this request to fit, given what it has carved already.
    let need_slice = if class_of(layout).is_some() {
        write!(
            out,
            "blocks of 2 KiB or less come from this node's small-object region, a quarter of its share, \
             which has {} left",
            Bytes(small_left as u128)
        )?;
        (small_carved as u128 + CHUNK as u128) * SMALL_REGION_DIV as u128
    } else {
        write!(
            out,
            "blocks over 2 KiB come from this node's bulk region, three quarters of its share, which has {} \
             left",
            Bytes(bulk_left as u128)
        )?;
        if bulk_largest != bulk_left {
            write!(
                out,
                " (the largest free run, counting freed blocks, is {})",
                Bytes(bulk_largest as u128)
            )?;
        }
        let bulk_need = bulk_carved as u128 + round_pages(layout.size().max(layout.align())) as u128;
        bulk_need * SMALL_REGION_DIV as u128 / (SMALL_REGION_DIV as u128 - 1) + 1
    };
    write!(
        out,
        ". Each node allocates from its own share of the shared space only: {} here, the {} of \
         RTHREADS_SPACE_SIZE over {nodes} node{}. ",
        Bytes(slice),
        Bytes(slice * nodes_u),
        if nodes == 1 { "" } else { "s" }
    )?;
    // Whole GiB, and at least twice the space as it is.
    let gib = 1u128 << 30;
    let want = (need_slice * nodes_u).div_ceil(gib).max((slice * nodes_u * 2).div_ceil(gib));
    if want > 32 << 10 {
        write!(out, "No RTHREADS_SPACE_SIZE is large enough for this request on {nodes} node(s).")
    } else {
        write!(out, "Raise it: RTHREADS_SPACE_SIZE={want}G or more.")
    }
}

/// Prints, with one write(2), why the shared heap could not satisfy `layout` on this node.
/// Allocates nothing and takes no lock but the arena's, briefly.
fn report_exhausted(heap: &Heap, layout: Layout) {
    static REPORTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    if REPORTS.fetch_add(1, Ordering::Relaxed) >= MAX_REPORTS {
        return;
    }
    // std aborts right after this (unless the program asked with `try_reserve`): this message and
    // std's go straight to this node's stderr, not through the output forwarding.
    dsm::interpose::write_directly();
    // The arena's lock is the service thread's too: on the private stack.
    crate::private::private(move || {
        let room = heap.room();
        let mut line = StackLine { buf: [0; 1024], len: 0 };
        let _ = exhausted_message(&mut line, layout, &room);
        if line.len == line.buf.len() {
            line.len -= 1;
        }
        line.buf[line.len] = b'\n';
        line.len += 1;
        dsm::sys::write_all_raw(2, &line.buf[..line.len]);
    });
}

/// What is left of one node's arena, for the exhaustion report.
#[derive(Clone, Copy, Debug)]
struct Room {
    me: usize,
    nodes: usize,
    /// The node's share of the space (its arena's size).
    slice: usize,
    /// Bytes of the small-object region not yet carved into chunks.
    small_left: usize,
    /// Bytes of the bulk region never carved, and its largest free run (freed or never carved).
    bulk_left: usize,
    bulk_largest: usize,
    /// Bytes carved so far from each region.
    small_carved: usize,
    bulk_carved: usize,
}

#[cfg(test)]
mod exhausted_tests {
    use super::*;

    fn message(h: &Heap, layout: Layout) -> String {
        assert!(h.alloc(layout).is_null());
        let mut line = StackLine { buf: [0; 1024], len: 0 };
        exhausted_message(&mut line, layout, &h.room()).unwrap();
        assert!(line.len < line.buf.len(), "the report was cut");
        String::from_utf8(line.buf[..line.len].to_vec()).unwrap()
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(Bytes(17).to_string(), "17 bytes");
        assert_eq!(Bytes(4 << 10).to_string(), "4.0 KiB");
        assert_eq!(Bytes(12 << 30).to_string(), "12.0 GiB");
        assert_eq!(Bytes(768 << 20).to_string(), "768.0 MiB");
        assert_eq!(Bytes((3 << 30) / 2).to_string(), "1.5 GiB");
        assert_eq!(Bytes(5 << 40).to_string(), "5.0 TiB");
    }

    #[test]
    fn a_request_over_the_share_names_its_size_what_is_left_and_the_setting() {
        const BASE: usize = 0x2000_0000_0000;
        const SLICE: usize = 128 << 20;
        // Node 1 of 2, addresses only: the heap never touches the memory it hands out.
        let h = Heap::new(1, 2, BASE, SLICE, BASE + SLICE);
        let some = Layout::from_size_align(10 << 20, 8).unwrap();
        assert!(!h.alloc(some).is_null());
        let big = Layout::from_size_align(200 << 20, 1).unwrap();
        let m = message(&h, big);
        assert!(
            m.starts_with("rthreads: node 1: the shared heap cannot allocate 200.0 MiB (209715200 bytes"),
            "{m}"
        );
        assert!(m.contains("bulk region") && m.contains("which has 86.0 MiB left"), "{m}");
        assert!(m.contains("128.0 MiB here, the 256.0 MiB of RTHREADS_SPACE_SIZE over 2 nodes"), "{m}");
        assert!(m.contains("RTHREADS_SPACE_SIZE=1G or more"), "{m}");
        assert!(!m.contains('\n'), "{m}");
        // A request no space could hold says so.
        let huge = Layout::from_size_align(isize::MAX as usize / 2, 1).unwrap();
        assert!(message(&h, huge).contains("No RTHREADS_SPACE_SIZE is large enough"));
        // Small blocks run out in their own region.
        let tiny = Heap::new(0, 1, BASE, 4 << 20, BASE);
        let l = Layout::from_size_align(1024, 8).unwrap();
        while !tiny.alloc(l).is_null() {}
        let m = message(&tiny, l);
        assert!(m.contains("small-object region") && m.contains("which has 0 bytes left"), "{m}");
        assert!(m.contains("over 1 node. "), "{m}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_blocks_are_written_only_where_memory_was_handed_out_before() {
        let mut a = arena();
        let big = Layout::from_size_align(5 * PAGE_SIZE, 8).unwrap();
        // Fresh memory: nothing to write.
        let (p, dirty) = a.alloc_zeroed(big);
        assert_ne!(p, 0);
        assert_eq!(dirty, 0);
        // Freed (the top block: `bump` comes back down) and taken again: all of it.
        a.dealloc(p, big);
        assert_eq!(a.alloc_zeroed(big), (p, 5 * PAGE_SIZE));
        // A larger block from the same place: only the part handed out before.
        a.dealloc(p, big);
        let bigger = Layout::from_size_align(8 * PAGE_SIZE, 8).unwrap();
        assert_eq!(a.alloc_zeroed(bigger), (p, 5 * PAGE_SIZE));
        // A block from a free range below the high mark: all of it.
        let (q, dirty) = a.alloc_zeroed(big);
        assert_eq!((q, dirty), (p + 8 * PAGE_SIZE, 0));
        a.dealloc(p, bigger);
        assert_eq!(a.alloc_zeroed(big), (p, 5 * PAGE_SIZE));
        // Small blocks are always written.
        let small = Layout::from_size_align(64, 8).unwrap();
        assert_eq!(a.alloc_zeroed(small).1, 64);
    }

    fn arena() -> Arena {
        Arena {
            small_bump: 0x10_0000,
            small_end: 0x10_0000 + (1 << 28),
            bump: 0x10_0000 + (1 << 28),
            high: 0x10_0000 + (1 << 28),
            end: 0x10_0000 + (1 << 28) + (1 << 30),
            free: Default::default(),
            chunks: [(0, 0); CLASSES],
            large: BTreeMap::new(),
        }
    }

    #[test]
    fn classes_cover_sizes_and_alignments() {
        assert_eq!(class_of(Layout::from_size_align(1, 1).unwrap()), Some(0));
        assert_eq!(class_of(Layout::from_size_align(17, 8).unwrap()), Some(1));
        assert_eq!(class_of(Layout::from_size_align(8, 64).unwrap()), Some(2));
        assert_eq!(class_of(Layout::from_size_align(2 << 10, 8).unwrap()), Some(7));
        assert_eq!(class_of(Layout::from_size_align((2 << 10) + 1, 8).unwrap()), None);
    }

    #[test]
    fn blocks_do_not_overlap_and_freed_blocks_are_reused() {
        let mut a = arena();
        let mut live: Vec<(usize, usize)> = Vec::new();
        for i in 0..2000usize {
            let size = [8, 24, 100, 4000, 40_000, 300_000][i % 6];
            let l = Layout::from_size_align(size, 8).unwrap();
            let p = a.alloc(l);
            assert_ne!(p, 0);
            live.push((p, size));
        }
        let mut sorted = live.clone();
        sorted.sort();
        for w in sorted.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "overlap: {w:?}");
        }
        let high = a.bump;
        for &(p, size) in &live {
            a.dealloc(p, Layout::from_size_align(size, 8).unwrap());
        }
        for &(_, size) in &live {
            assert_ne!(a.alloc(Layout::from_size_align(size, 8).unwrap()), 0);
        }
        assert!(a.bump <= high, "freed memory was not reused");
    }

    #[test]
    fn large_frees_coalesce() {
        let mut a = arena();
        let l = Layout::from_size_align(64 << 10, 8).unwrap();
        let ps: Vec<usize> = (0..4).map(|_| a.alloc(l)).collect();
        let keep = a.alloc(l);
        for p in ps {
            a.dealloc(p, l);
        }
        assert_eq!(a.large.len(), 1);
        let big = a.alloc(Layout::from_size_align(256 << 10, 8).unwrap());
        assert!(big < keep);
    }

    /// Found by `live_blocks_are_disjoint_aligned_and_inside`: chunks were only page-aligned, so
    /// blocks of the 8, 16 and 32 KiB classes could miss the alignment they were asked for.
    #[test]
    fn class_blocks_get_alignments_above_a_page() {
        let mut a = arena();
        // A large block of 9 pages leaves the end of the arena at an odd page.
        assert_ne!(a.alloc(Layout::from_size_align(36 << 10, 8).unwrap()), 0);
        for align in [8 << 10, 16 << 10, 32 << 10] {
            let l = Layout::from_size_align(256, align).unwrap();
            for _ in 0..3 {
                let p = a.alloc(l);
                assert_eq!(p % align, 0, "{p:#x} for {l:?}");
            }
        }
        // The pages skipped for alignment are not lost.
        let page = Layout::from_size_align(PAGE_SIZE + 1, 8).unwrap();
        let bump = a.bump;
        assert_ne!(a.alloc(page), 0);
        assert_eq!(a.bump, bump, "the skipped pages were not reused");
    }

    #[test]
    fn exhaustion_returns_null() {
        let mut a = arena();
        assert_eq!(a.alloc(Layout::from_size_align(2 << 30, 8).unwrap()), 0);
    }

    // ----- properties -----

    use proptest::prelude::*;

    /// Layouts across every size class, the large-block boundary and a few pages, with alignments
    /// from 1 B to 64 KiB.
    fn layout() -> impl Strategy<Value = Layout> {
        let size = prop_oneof![
            4 => 1usize..=256,
            2 => 257usize..=MAX_SMALL,
            1 => (MAX_SMALL - 8)..=(MAX_SMALL + 8),
            1 => (MAX_SMALL + 1)..=(300 << 10),
        ];
        let align = prop_oneof![4 => 0u32..=4, 1 => 5u32..=16].prop_map(|shift| 1usize << shift);
        (size, align).prop_map(|(size, align)| Layout::from_size_align(size, align).unwrap())
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc(Layout),
        /// Frees the live block at this index (modulo the number of live blocks).
        Free(prop::sample::Index),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![3 => layout().prop_map(Op::Alloc), 2 => any::<prop::sample::Index>().prop_map(Op::Free)];
        proptest::collection::vec(op, 1..200)
    }

    /// Checks that no two live blocks overlap and every block is aligned and inside the arena.
    fn assert_disjoint(live: &[(usize, Layout)], lo: usize, hi: usize) {
        let mut sorted: Vec<(usize, usize)> = live.iter().map(|&(p, l)| (p, l.size())).collect();
        sorted.sort_unstable();
        for w in sorted.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "overlap: {w:x?}");
        }
        for &(p, l) in live {
            assert_eq!(p % l.align(), 0, "{p:#x} is not aligned for {l:?}");
            assert!(p >= lo && p + l.size() <= hi, "{p:#x} ({l:?}) outside the arena");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Any sequence of allocations and frees: live blocks never overlap, are aligned as asked
        /// and lie inside the arena.
        #[test]
        fn live_blocks_are_disjoint_aligned_and_inside(ops in ops()) {
            let mut a = arena();
            let (lo, hi) = (a.small_bump, a.end);
            let mut live: Vec<(usize, Layout)> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc(l) => {
                        let p = a.alloc(l);
                        prop_assert_ne!(p, 0);
                        live.push((p, l));
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let (p, l) = live.swap_remove(i.index(live.len()));
                        a.dealloc(p, l);
                    }
                    Op::Free(_) => {}
                }
                assert_disjoint(&live, lo, hi);
            }
        }

        /// A freed block is reused: allocating the same layout again right away does not carve
        /// new memory.
        #[test]
        fn freed_memory_is_reused(ops in ops(), again in layout()) {
            let mut a = arena();
            let mut live: Vec<(usize, Layout)> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc(l) => live.push((a.alloc(l), l)),
                    Op::Free(i) if !live.is_empty() => {
                        let (p, l) = live.swap_remove(i.index(live.len()));
                        a.dealloc(p, l);
                    }
                    Op::Free(_) => {}
                }
            }
            let p = a.alloc(again);
            let bump = a.bump;
            a.dealloc(p, again);
            let q = a.alloc(again);
            if class_of(again).is_some() {
                // Size classes hand back the block just freed.
                prop_assert_eq!(q, p);
            } else {
                prop_assert!(a.bump <= bump, "a freed large block was not reused");
            }
        }

        /// Blocks freed on another node go back to their owner, grouped by owner, and the owner
        /// reuses them instead of growing its arena.
        #[test]
        fn remote_frees_return_to_the_owner(layouts in proptest::collection::vec(layout(), 1..40)) {
            const BASE: usize = 0x2000_0000_0000;
            const SLICE: usize = 1 << 32;
            // Addresses only: the heap never touches the memory it hands out.
            let heaps: Vec<Heap> = (0..3).map(|me| Heap::new(me, 3, BASE, SLICE, BASE + SLICE * me)).collect();
            let mut blocks: Vec<(usize, usize, Layout)> = Vec::new();
            for (i, &l) in layouts.iter().enumerate() {
                let owner = i % 3;
                let p = heaps[owner].alloc(l) as usize;
                prop_assert!(heaps[owner].owns(p));
                prop_assert_eq!(heaps[owner].owner(p), Some(owner));
                blocks.push((owner, p, l));
            }
            let high: Vec<usize> = heaps.iter().map(Heap::high_water).collect();
            // Node 0 frees everything: its own blocks at once, the others' batched for them.
            for &(_, p, l) in &blocks {
                heaps[0].dealloc(p, l);
            }
            let batches = heaps[0].take_remote_frees();
            prop_assert!(heaps[0].take_remote_frees().is_empty(), "a batch is handed out once");
            for (owner, batch) in &batches {
                prop_assert!(*owner == 1 || *owner == 2);
                let mut want: Vec<Block> = blocks
                    .iter()
                    .filter(|b| b.0 == *owner)
                    .map(|&(_, p, l)| (p, l.size(), l.align()))
                    .collect();
                let mut got = batch.clone();
                want.sort_unstable();
                got.sort_unstable();
                prop_assert_eq!(got, want);
                heaps[*owner].free_returned(batch);
            }
            // Every owner can now serve the same allocations again without growing.
            for (owner, heap) in heaps.iter().enumerate() {
                let mut again: Vec<(usize, Layout)> = Vec::new();
                for &(o, _, l) in &blocks {
                    if o == owner {
                        again.push((heap.alloc(l) as usize, l));
                    }
                }
                assert_disjoint(&again, BASE + SLICE * owner, BASE + SLICE * (owner + 1));
                prop_assert!(heap.high_water() <= high[owner], "node {} grew instead of reusing", owner);
            }
        }
    }
}
