//! Guard pages of stacks that live in the shared space, and the names of the threads they belong
//! to, for the message printed when one overflows.
//!
//! The handler (`handler.rs`) asks [`is_guard`] and [`stack_owner`] on every trap in the space:
//! both only read an atomic bitmap or a plain thread-local slot, which is async-signal-safe.
//! Everything else here runs on ordinary threads.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::space::SpaceLayout;
use crate::sys::PAGE_SIZE;

/// One bit per page of the space: set for the guard page of a stack that lives in the shared
/// space and runs on this node (see [`set_guard`]). Mapped at install, committed as touched.
static GUARDS: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());

/// Reserves the bitmap for a space of `layout.size` bytes. Called once, by `install`, before the
/// handler can run.
pub(super) fn map_bitmap(layout: SpaceLayout) -> io::Result<()> {
    let words = (layout.size / PAGE_SIZE).div_ceil(64).max(1);
    let bits = crate::sys::map_anon(words * 8)?;
    GUARDS.store(bits.cast(), Ordering::SeqCst);
    Ok(())
}

/// Marks (`on`) or unmarks the page holding `addr`, in the shared space, as the guard page of a
/// stack that runs on this node. A marked page is made inaccessible here; a trap on it is a stack
/// overflow, which the handler reports before it aborts the process (as std does for its own
/// guard pages). Unmarking leaves the page inaccessible: the next access traps, and the service
/// thread then restores whatever access the protocol says the node has.
///
/// # Errors
/// `InvalidInput` for an address outside the space or before [`install`](super::install); the
/// `mprotect` error.
pub fn set_guard(addr: usize, on: bool) -> io::Result<()> {
    let (base, size) = super::space_bounds();
    let bits = GUARDS.load(Ordering::Relaxed);
    if bits.is_null() || addr.wrapping_sub(base) >= size {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not an address of the shared space"));
    }
    let page = (addr - base) / PAGE_SIZE;
    // SAFETY: `page / 64` is below the word count mapped by `map_bitmap` for this space's size.
    let word = unsafe { &*bits.add(page / 64) };
    let bit = 1u64 << (page % 64);
    if on {
        word.fetch_or(bit, Ordering::SeqCst);
        let start = base + page * PAGE_SIZE;
        // SAFETY: one page of the shared space, which stays mapped for the life of the process;
        // the handler serves its traps (as a stack overflow).
        unsafe { crate::sys::protect(start, PAGE_SIZE, crate::Access::None) }?;
    } else {
        word.fetch_and(!bit, Ordering::SeqCst);
    }
    Ok(())
}

/// Whether page number `page` of the space is a marked guard page. Async-signal-safe.
pub(super) fn is_guard(page: usize) -> bool {
    let bits = GUARDS.load(Ordering::Relaxed);
    // SAFETY: `page` lies in the space (checked by the caller), so its word was mapped by
    // `map_bitmap`, which also set GUARDS before the handler could run.
    !bits.is_null() && unsafe { &*bits.add(page / 64) }.load(Ordering::Relaxed) & (1 << (page % 64)) != 0
}

thread_local! {
    /// The name of the thread whose stack the calling OS thread runs, for the overflow message.
    static STACK_OWNER: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}

/// Names the thread whose stack the calling OS thread now runs (for the message printed when it
/// overflows its guard page); an empty name prints as `<unnamed>`.
///
/// # Safety
/// `name` must stay valid until the next call on this OS thread.
pub unsafe fn set_stack_owner(name: &[u8]) {
    STACK_OWNER.with(|c| c.set((name.as_ptr(), name.len())));
}

/// The name set by [`set_stack_owner`] on the calling thread, if any. Async-signal-safe: a
/// `const` thread-local without a destructor is a plain slot of the thread's static TLS block.
pub(super) fn stack_owner() -> Option<&'static [u8]> {
    let (ptr, len) = STACK_OWNER.with(|c| c.get());
    // SAFETY: `set_stack_owner`'s caller keeps the name alive while it is set; the handler uses
    // it only before it aborts the process.
    (!ptr.is_null() && len != 0).then(|| unsafe { std::slice::from_raw_parts(ptr, len) })
}
