//! Fibers: every rthread, and the body of `#[rthreads::main]`, runs on a stack in the shared space.
//!
//! Why: a scoped thread on another node borrows its parent's locals, and a migrating thread takes
//! its running stack along; both need the stack to be ordinary shared memory, at the same address
//! on every node.
//!
//! How: a *fiber* is a stack allocated from the shared heap, with a small control block
//! ([`Fiber`]) at its top and a saved register context. An OS thread of the node where the fiber
//! runs, its *carrier* (private stack, private thread-locals), switches onto the fiber's stack and
//! gets control back when the fiber ends or leaves for another node. A fiber that leaves is picked
//! up by a fresh carrier on the target node, which switches to the context the fiber saved: the
//! thread goes on at the next statement with the same stack, at the same addresses.
//!
//! The switch is a few lines of assembly that save and restore what the x86-64 System V ABI says a
//! call preserves (rbx, rbp, r12–r15, the stack pointer, MXCSR and the x87 control word). The
//! lowest page of every fiber stack is a guard page while the fiber runs on a node
//! (`dsm::fault::set_guard`): overflowing the stack aborts with a message instead of writing over
//! the neighbouring allocation. Signals are delivered on the carrier's alternate signal stack
//! (std gives every thread one, and the fault handler asks for it), so a trap on a stack page that
//! another node holds is served like any other.
//!
//! Other architectures have no switch yet: there a carrier runs the closure on its own stack,
//! scoped threads stay on the parent's node, and `migrate` returns `Unsupported`.

use std::alloc::Layout;
use std::cell::Cell;
use std::io;
use std::panic::{self, AssertUnwindSafe};

use dsm::NodeId;
use dsm::sys::PAGE_SIZE;

/// Default size of a thread's stack in the shared space (std's default for spawned threads),
/// unless `RUST_MIN_STACK` says otherwise.
pub(crate) const DEFAULT_STACK: usize = 2 << 20;
/// Stack of the fiber that runs the body of `#[rthreads::main]` (the usual main-thread size).
pub(crate) const MAIN_STACK: usize = 8 << 20;
/// Stack of a carrier: it only starts, sends and frees.
pub(crate) const CARRIER_STACK: usize = 256 << 10;

/// Whether this build can switch stacks.
pub(crate) const SUPPORTED: bool = cfg!(target_arch = "x86_64");

const RUNNING: u32 = 0;
const FINISHED: u32 = 1;
const LEAVING: u32 = 2;

/// The control block at the top of a fiber's stack (shared memory, like the stack).
#[repr(C)]
pub(crate) struct Fiber {
    /// The fiber's stack pointer while it is switched out.
    sp: usize,
    /// The carrier's stack pointer while the fiber runs (meaningful on the current node only).
    carrier_sp: usize,
    /// The boxed `Box<dyn FnOnce() + Send>` to run, until the fiber starts.
    body: usize,
    /// Why the fiber last switched out: `FINISHED` or `LEAVING` (for `target`).
    exit: u32,
    target: NodeId,
    /// The node that spawned the thread (it keeps the thread's join bookkeeping).
    pub(crate) origin: NodeId,
    pub(crate) tid: u64,
    /// The whole allocation: the guard page, the stack, this block. Its first page is the guard
    /// page; the lowest address of the stack the fiber may use is just above it.
    alloc: usize,
    alloc_len: usize,
    /// How many times the fiber has moved.
    pub(crate) moves: u64,
}

/// What a carrier learns when its fiber switches back to it.
pub(crate) enum Outcome {
    /// The closure returned; the stack is freed.
    Finished,
    /// The fiber wants to go on on this node.
    Leaving(NodeId),
}

thread_local! {
    /// The fiber this OS thread is carrying, if any.
    static CURRENT: Cell<*mut Fiber> = const { Cell::new(std::ptr::null_mut()) };
    /// Where runtime code called from the carried fiber may put its frames on the carrier's own
    /// stack (`crate::private`): a little below the point where the carrier switched onto the
    /// fiber (0: not carrying one).
    static PRIVATE_TOP: Cell<usize> = const { Cell::new(0) };
}

/// The top of the free part of the calling carrier's own stack (16-byte aligned), while it carries
/// a fiber; 0 otherwise.
pub(crate) fn private_top() -> usize {
    PRIVATE_TOP.with(Cell::get)
}

#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".text",
    ".p2align 4",
    ".globl rthreads_fiber_switch",
    ".type rthreads_fiber_switch,@function",
    "rthreads_fiber_switch:",
    // Save the callee-saved state on the current stack, store the stack pointer at [rdi] ...
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 8",
    "stmxcsr [rsp]",
    "fnstcw [rsp + 4]",
    "mov [rdi], rsp",
    // ... and restore the state saved on the stack at rsi.
    "mov rsp, rsi",
    "ldmxcsr [rsp]",
    "fldcw [rsp + 4]",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".size rthreads_fiber_switch, . - rthreads_fiber_switch",
    // The first frame of every fiber: the switch "returns" here with the control block in r12.
    // The undefined return address ends unwinding and backtraces here.
    ".p2align 4",
    ".type rthreads_fiber_start,@function",
    "rthreads_fiber_start:",
    ".cfi_startproc",
    ".cfi_undefined rip",
    "mov rdi, r12",
    "call {entry}",
    "ud2",
    ".cfi_endproc",
    ".size rthreads_fiber_start, . - rthreads_fiber_start",
    // Calls rsi(rdi) on the stack whose top is rdx, then comes back to the caller's stack. The
    // frame pointer keeps the caller's stack pointer, and the unwind info says so, so debuggers and
    // backtraces walk through it.
    ".p2align 4",
    ".globl rthreads_on_stack",
    ".type rthreads_on_stack,@function",
    "rthreads_on_stack:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "mov rsp, rdx",
    "call rsi",
    "mov rsp, rbp",
    "pop rbp",
    ".cfi_def_cfa rsp, 8",
    "ret",
    ".cfi_endproc",
    ".size rthreads_on_stack, . - rthreads_on_stack",
    entry = sym fiber_entry,
);

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    /// Saves the running context, stores its stack pointer at `save`, and resumes the context
    /// saved at stack pointer `to`.
    fn rthreads_fiber_switch(save: *mut usize, to: usize);
    /// The first instruction of a fiber.
    fn rthreads_fiber_start();
    /// Calls `f(arg)` with the stack pointer at `top` (16-byte aligned), then returns.
    fn rthreads_on_stack(arg: *mut u8, f: extern "C" fn(*mut u8), top: usize);
}

/// Calls `f(arg)` on the stack that ends at `top`, then returns to the caller's stack.
///
/// # Safety
/// `top` must be 16-byte aligned, with enough free, private stack memory below it for `f`; `f`
/// must not unwind (catch panics inside it).
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn on_stack(top: usize, arg: *mut u8, f: extern "C" fn(*mut u8)) {
    // SAFETY: as the caller promises.
    unsafe { rthreads_on_stack(arg, f, top) }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn on_stack(_top: usize, arg: *mut u8, f: extern "C" fn(*mut u8)) {
    f(arg)
}

/// Switches from the running context (its stack pointer goes to `save`) to the one saved at `to`.
///
/// # Safety
/// `to` must be a context saved by this function (or built by [`Fiber::new`]) that has not been
/// resumed since, on a stack that is mapped; `save` must be writable.
#[cfg(target_arch = "x86_64")]
unsafe fn switch(save: *mut usize, to: usize) {
    // SAFETY: as the caller promises.
    unsafe { rthreads_fiber_switch(save, to) }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn switch(_save: *mut usize, _to: usize) {
    unreachable!("fibers are not supported on this architecture");
}

/// The stack size a thread gets when its builder names none.
pub(crate) fn default_stack() -> usize {
    static MIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| {
        std::env::var("RUST_MIN_STACK").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_STACK)
    })
}

impl Fiber {
    /// Allocates a fiber with `stack` bytes of stack (at least 64 KiB) in the global allocator (the
    /// shared heap in a cluster) that will run `body`, a `Box<Box<dyn FnOnce() + Send>>` turned
    /// into a raw address, as the thread `tid` spawned by `origin`.
    ///
    /// Must not be called while the runtime's internal allocator is selected.
    pub(crate) fn new(stack: usize, tid: u64, origin: NodeId, body: usize) -> io::Result<*mut Fiber> {
        let stack = stack.max(64 << 10).next_multiple_of(PAGE_SIZE);
        let len = stack + 2 * PAGE_SIZE;
        let layout = Layout::from_size_align(len, PAGE_SIZE)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "stack size too large"))?;
        // SAFETY: the layout has a non-zero size.
        let alloc = unsafe { std::alloc::alloc(layout) } as usize;
        if alloc == 0 {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("no room for a {} KiB thread stack in the shared space", stack >> 10),
            ));
        }
        let top = alloc + len;
        let block = (top - std::mem::size_of::<Fiber>()) & !63;
        let fiber = block as *mut Fiber;
        // The first context: the switch pops six registers and the control words, then returns
        // into `rthreads_fiber_start` with the control block in r12 and a 16-byte aligned stack.
        let frame_top = (block - 16) & !15;
        let sp = frame_top - 8 * 8;
        #[cfg(target_arch = "x86_64")]
        {
            let words = sp as *mut u64;
            let start = rthreads_fiber_start as *const () as u64;
            // MXCSR and x87 control word at their power-on values; r15..r12, rbx, rbp; return address.
            let init: [u64; 8] = [0x037F_u64 << 32 | 0x1F80, 0, 0, 0, block as u64, 0, 0, start];
            for (i, w) in init.into_iter().enumerate() {
                // SAFETY: `sp .. frame_top` lies inside the allocation just made, 8-byte aligned.
                unsafe { words.add(i).write(w) };
            }
        }
        // SAFETY: `block` is inside the allocation, 64-byte aligned, with room for a Fiber.
        unsafe {
            fiber.write(Fiber {
                sp,
                carrier_sp: 0,
                body,
                exit: RUNNING,
                target: NodeId(0),
                origin,
                tid,
                alloc,
                alloc_len: len,
                moves: 0,
            })
        };
        Ok(fiber)
    }
}

/// The fiber the calling thread runs on, or null for an OS thread of its own (a carrier, a thread
/// made with `std::thread::spawn`, the runtime's threads).
pub(crate) fn current() -> *mut Fiber {
    CURRENT.with(Cell::get)
}

/// Whether the calling thread's stack is in the shared space: other nodes can read its locals.
pub(crate) fn on_shared_stack() -> bool {
    let f = current();
    let (base, size) = dsm::fault::space_bounds();
    // SAFETY: a non-null CURRENT is the live fiber this thread runs on.
    !f.is_null() && unsafe { (*f).alloc }.wrapping_sub(base) < size
}

/// The first Rust frame of a fiber.
extern "C" fn fiber_entry(fiber: *mut Fiber) -> ! {
    // SAFETY: `body` came from `Box::into_raw` of a `Box<Box<dyn FnOnce() + Send>>` made by this
    // binary (loaded at the same address on every node) and is taken exactly once, here.
    let body = unsafe { Box::from_raw((*fiber).body as *mut Box<dyn FnOnce() + Send>) };
    if panic::catch_unwind(AssertUnwindSafe(body)).is_err() {
        // The bodies this crate builds catch their own panics; a panic that still gets here (a
        // payload whose drop panicked) cannot unwind past the first frame of a stack.
        crate::log::say("rthreads: a panic escaped a thread's body; aborting");
        std::process::abort();
    }
    // SAFETY: the control block lives as long as the stack we run on; the carrier that runs us
    // now stored its context in `carrier_sp` before switching here (or to our last `leave`).
    unsafe {
        (*fiber).exit = FINISHED;
        switch(&raw mut (*fiber).sp, (*fiber).carrier_sp);
    }
    unreachable!("a finished fiber was resumed");
}

/// Runs `fiber` on the calling OS thread until it finishes or leaves. A finished fiber's stack is
/// freed before this returns. Also returns the address of the stack's former guard page, if it had
/// one here: the caller tells the runtime (`Runtime::unguarded`), which gives the page back its
/// access at the next trap on it.
///
/// # Safety
/// `fiber` must come from [`Fiber::new`] and be suspended (new, or switched out by [`leave`]), and
/// no other thread may run it meanwhile. The caller must not be running on a fiber itself.
pub(crate) unsafe fn carry(fiber: *mut Fiber, name: Option<&str>) -> (Outcome, Option<usize>) {
    // SAFETY: the caller hands us a suspended, live fiber.
    let guard = unsafe { (*fiber).alloc };
    // SAFETY: `name` outlives the fiber's stay on this thread; it is unset below.
    unsafe { dsm::fault::set_stack_owner(name.unwrap_or("").as_bytes()) };
    // Outside a cluster (or before it started) the stack is private memory and has no guard.
    let guarded = dsm::fault::set_guard(guard, true).is_ok();
    CURRENT.with(|c| c.set(fiber));
    // Runtime code that the fiber calls runs below this point of our own stack (`private`): below
    // the switch's saved registers and the red zone, 16-byte aligned for a call.
    PRIVATE_TOP.with(|t| t.set((stack_pointer() - 1024) & !15));
    // SAFETY: the fiber is suspended at `sp`; our own context is saved in its control block,
    // which outlives the switch.
    unsafe { switch(&raw mut (*fiber).carrier_sp, (*fiber).sp) };
    PRIVATE_TOP.with(|t| t.set(0));
    CURRENT.with(|c| c.set(std::ptr::null_mut()));
    // SAFETY: an empty static name.
    unsafe { dsm::fault::set_stack_owner(b"") };
    if guarded {
        let _ = dsm::fault::set_guard(guard, false);
    }
    let unguarded = guarded.then_some(guard);
    // SAFETY: the fiber switched back to us; its control block is still allocated.
    let (exit, target) = unsafe { ((*fiber).exit, (*fiber).target) };
    if exit == LEAVING {
        // SAFETY: as above.
        unsafe {
            (*fiber).exit = RUNNING;
            (*fiber).moves += 1;
        }
        return (Outcome::Leaving(target), unguarded);
    }
    // SAFETY: as above; nothing runs on the stack any more.
    let (alloc, len) = unsafe { ((*fiber).alloc, (*fiber).alloc_len) };
    // SAFETY: the allocation `Fiber::new` made with this layout.
    unsafe { std::alloc::dealloc(alloc as *mut u8, Layout::from_size_align_unchecked(len, PAGE_SIZE)) };
    (Outcome::Finished, unguarded)
}

/// The calling thread's stack pointer, roughly (an address in the caller's frame on other
/// architectures, where nothing uses it).
#[inline(always)]
fn stack_pointer() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let sp: usize;
        // SAFETY: reads a register; no memory access.
        unsafe { std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
        sp
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Switches the calling fiber out, asking its carrier to send it to node `target`; returns when a
/// carrier there has resumed it.
///
/// # Safety
/// `fiber` must be the fiber the calling thread runs on ([`current`]).
#[inline(never)]
pub(crate) unsafe fn leave(fiber: *mut Fiber, target: NodeId) {
    // SAFETY: we run on this fiber, so its carrier's context is saved in `carrier_sp`.
    unsafe {
        (*fiber).exit = LEAVING;
        (*fiber).target = target;
        switch(&raw mut (*fiber).sp, (*fiber).carrier_sp);
    }
}

/// Touches the part of a newly arrived fiber's stack that it will use first, so that the pages
/// come over now, in one burst, rather than at the first system call that hands the kernel a stack
/// buffer (which would fail with `EFAULT` rather than trap). Pages below the saved stack pointer
/// are dead, so they are written; the live pages above it are only read (a scoped thread may be
/// writing into them). Returns how many bytes of live stack the fiber has.
///
/// # Safety
/// `fiber` must be suspended and live.
pub(crate) unsafe fn prefetch(fiber: *mut Fiber) -> usize {
    // SAFETY: the caller hands us a suspended, live fiber.
    let (sp, top, lowest) = unsafe { ((*fiber).sp, fiber as usize, (*fiber).alloc + PAGE_SIZE) };
    for k in 0..3 {
        let at = sp - 8 - k * PAGE_SIZE;
        if at >= lowest {
            // SAFETY: below the saved stack pointer: stack memory nothing lives in.
            unsafe { std::ptr::write_volatile(at as *mut u8, 0) };
        }
    }
    let mut page = sp & !(PAGE_SIZE - 1);
    for _ in 0..4 {
        if page > top {
            break;
        }
        // SAFETY: a page of the fiber's live stack or control block, mapped in the shared space.
        unsafe { std::ptr::read_volatile(page.max(sp) as *const u8) };
        page += PAGE_SIZE;
    }
    top + std::mem::size_of::<Fiber>() - sp
}
