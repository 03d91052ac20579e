//! The global address space: one range at the same virtual address on every node.
//!
//! The range is backed by an anonymous memory file mapped twice:
//! - the *application view* at the fixed address, whose page protections follow the coherence
//!   protocol (`PROT_NONE` without a valid copy, read-only for a shared copy, read-write for the
//!   owner), so application accesses trap when the node lacks the right to make them;
//! - the *runtime view* at an address of the kernel's choosing, always read-write, through which the
//!   runtime copies page contents in and out. Installing a page therefore never opens a window in
//!   which application threads could see half of it: the bytes land through the runtime view while the
//!   application view is still closed, and only then is access opened.
//!
//! Both views are reserved, not committed: a node's resident memory grows with the pages it touches.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::{self, PAGE_SIZE};
use crate::{Access, PageId};

/// Where and how large the shared space is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceLayout {
    /// First byte of the space, identical on every node. Page aligned.
    pub base: usize,
    /// Length in bytes, a multiple of `PAGE_SIZE * nodes`.
    pub size: usize,
}

impl SpaceLayout {
    /// The default base address: high in the 47-bit user half, far from where the loader and
    /// `mmap` put things with address randomisation disabled.
    pub const DEFAULT_BASE: usize = 0x2000_0000_0000;
    /// The default size for up to 16 nodes: 64 GiB of address space (nothing is committed until
    /// used). `rthreads` gives larger clusters 4 GiB per node, so that every node's share stays
    /// useful (`rthreads/src/launch/settings.rs`, `default_space_size`).
    pub const DEFAULT_SIZE: usize = 64 << 30;

    /// Number of pages in the space.
    pub fn pages(&self) -> u64 {
        (self.size / PAGE_SIZE) as u64
    }

    /// Whether `addr` lies inside the space.
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base) < self.size
    }

    /// The page holding `addr`, if it lies inside the space.
    pub fn page_of(&self, addr: usize) -> Option<PageId> {
        self.contains(addr).then(|| PageId(((addr - self.base) / PAGE_SIZE) as u64))
    }

    /// The application-view address of `page`.
    pub fn addr_of(&self, page: PageId) -> usize {
        self.base + page.0 as usize * PAGE_SIZE
    }
}

/// The mapped space of this node: both views.
#[derive(Debug)]
pub struct Space {
    layout: SpaceLayout,
    runtime_view: usize,
    /// Pages known to have memory in the file (installed or prepared here).
    memory: MemoryBits,
    _file: OwnedFd,
}

/// One bit per page of the space, in a mapping that gets memory only where bits are set (an
/// idle node touches none of it; 32 MiB of address space for a 1 TiB space).
#[derive(Debug)]
struct MemoryBits {
    words: *const AtomicU64,
    len: usize,
}

// SAFETY: the words are atomics in a private mapping that is never unmapped, so any thread may
// read and set them through a shared reference.
unsafe impl Send for MemoryBits {}
// SAFETY: as above.
unsafe impl Sync for MemoryBits {}

impl MemoryBits {
    fn new(pages: u64) -> io::Result<MemoryBits> {
        let len = pages.div_ceil(64) as usize;
        let words = sys::map_anon(len * 8)?.cast::<AtomicU64>().cast_const();
        Ok(MemoryBits { words, len })
    }

    fn word(&self, page: u64) -> (&AtomicU64, u64) {
        let i = (page / 64) as usize;
        assert!(i < self.len, "page {page} outside the space");
        // SAFETY: `i` is inside the mapping, which is zero-filled, 8-aligned and never unmapped;
        // an all-zero `AtomicU64` is a valid zero.
        (unsafe { &*self.words.add(i) }, 1 << (page % 64))
    }

    fn get(&self, page: u64) -> bool {
        let (w, bit) = self.word(page);
        w.load(Ordering::Relaxed) & bit != 0
    }

    fn set(&self, page: u64) {
        let (w, bit) = self.word(page);
        w.fetch_or(bit, Ordering::Relaxed);
    }
}

impl Space {
    /// Maps the space. `writable` is the page range this node starts out owning (its home slice):
    /// it is opened read-write in the application view; everything else starts closed.
    ///
    /// # Errors
    /// Fails if the page size is not 4 KiB, if the memory file cannot be created, or if anything
    /// already occupies the fixed range (the error names the address).
    pub fn map(layout: SpaceLayout, writable: std::ops::Range<PageId>) -> io::Result<Space> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page != PAGE_SIZE as libc::c_long {
            return Err(io::Error::other(format!("page size is {page}, rthreads needs {PAGE_SIZE}")));
        }
        if !layout.base.is_multiple_of(PAGE_SIZE)
            || !layout.size.is_multiple_of(PAGE_SIZE)
            || layout.size == 0
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "space base and size must be page aligned",
            ));
        }
        let file = sys::memfd(c"rthreads-space", layout.size)?;
        let fd = file.as_raw_fd();
        sys::map_shared(fd, layout.size, Some(layout.base), libc::PROT_NONE).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot reserve the shared space at {:#x} ({} bytes): {e}", layout.base, layout.size),
            )
        })?;
        let runtime_view = sys::map_shared(fd, layout.size, None, libc::PROT_READ | libc::PROT_WRITE)?;
        let memory = MemoryBits::new(layout.pages())?;
        let space = Space { layout, runtime_view, memory, _file: file };
        if writable.start < writable.end {
            let start = layout.addr_of(writable.start);
            let len = (writable.end.0 - writable.start.0) as usize * PAGE_SIZE;
            // SAFETY: the range lies inside the mapping we own.
            unsafe { sys::protect(start, len, Access::Write)? };
        }
        Ok(space)
    }

    /// Where the space lies.
    pub fn layout(&self) -> SpaceLayout {
        self.layout
    }

    /// The runtime-view address of `page` (always readable and writable).
    pub fn runtime_addr(&self, page: PageId) -> usize {
        self.runtime_view + page.0 as usize * PAGE_SIZE
    }

    /// The page's bytes as the runtime sees them.
    ///
    /// # Safety
    /// `page` must be inside the space. The bytes may change under the caller if application
    /// threads hold write access to the page; callers revoke access first when they need a stable copy.
    pub unsafe fn page_bytes(&self, page: PageId) -> &[u8] {
        // SAFETY: the runtime view is mapped read-write for the whole space and lives as long as self.
        unsafe { std::slice::from_raw_parts(self.runtime_addr(page) as *const u8, PAGE_SIZE) }
    }

    /// Copies `data` into `page` through the runtime view.
    ///
    /// # Safety
    /// `page` must be inside the space, and application threads must not have access to it while
    /// its contents are replaced (otherwise they could see half a page).
    pub unsafe fn install(&self, page: PageId, data: &[u8]) {
        let n = data.len().min(PAGE_SIZE);
        // SAFETY: the destination is a page of the runtime view, which is mapped read-write;
        // source and destination cannot overlap (the source is private memory).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.runtime_addr(page) as *mut u8, n) };
        self.memory.set(page.0);
    }

    /// The words of the bits behind [`Space::has_memory`] (bit `p % 64` of word `p / 64` for page
    /// `p`), for the fault handler's direct reads, which set them as installs do. They live as
    /// long as the process (the mapping is never unmapped).
    pub fn memory_bits(&self) -> *const AtomicU64 {
        self.memory.words
    }

    /// Whether this node knows that `page` has memory in the file: it installed or prepared it
    /// ([`Space::prepare_run`]). Pages written only through the application view are not known.
    ///
    /// # Panics
    /// If `page` lies outside the space.
    pub fn has_memory(&self, page: PageId) -> bool {
        self.memory.get(page.0)
    }

    /// Makes the kernel give memory to `count` pages from `first` in the runtime view now
    /// (`MADV_POPULATE_WRITE`), so that installing them later is a plain copy. The first touch of
    /// a page of the space costs the kernel an allocation, a zeroing and a page-table entry
    /// (≈ 4 µs here, 16 times the copy); done while the pages' bytes travel, it is off the
    /// faulting thread's path. Pages this node knows to have memory ([`Space::has_memory`]) are
    /// skipped without a system call (a page fetched again after its copy was dropped: a
    /// write-fault ping-pong paid 12 % for that call).
    ///
    /// # Errors
    /// A run that leaves the space, or what `madvise` says (kernels before 5.14 do not know the
    /// advice: `EINVAL`; callers may ignore errors, the pages then get memory when first written).
    pub fn prepare_run(&self, first: PageId, count: u64) -> io::Result<()> {
        self.check_run(first, count)?;
        let end = first.0 + count;
        let mut page = first.0;
        while page < end {
            if self.memory.get(page) {
                page += 1;
                continue;
            }
            let start = page;
            while page < end && !self.memory.get(page) {
                page += 1;
            }
            self.populate(PageId(start), page - start)?;
            (start..page).for_each(|p| self.memory.set(p));
        }
        Ok(())
    }

    /// An error unless `count` pages from `first` lie inside the space.
    fn check_run(&self, first: PageId, count: u64) -> io::Result<()> {
        if first.0.checked_add(count).is_none_or(|end| end > self.layout.pages()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{count} pages from {first} leave the space"),
            ));
        }
        Ok(())
    }

    /// `MADV_POPULATE_WRITE` on `count` pages from `first` of the runtime view (in range).
    fn populate(&self, first: PageId, count: u64) -> io::Result<()> {
        let addr = self.runtime_addr(first) as *mut libc::c_void;
        // SAFETY: advice on a run of our own runtime view, which is mapped read-write; populating
        // does not change any byte of it.
        sys::check(unsafe { libc::madvise(addr, count as usize * PAGE_SIZE, libc::MADV_POPULATE_WRITE) })
            .map(|_| ())
    }

    /// Sets what application threads on this node may do with `page`.
    ///
    /// # Errors
    /// Returns the `mprotect` error.
    pub fn protect(&self, page: PageId, access: Access) -> io::Result<()> {
        self.protect_run(page, 1, access)
    }

    /// Sets the application view's protection of the `count` pages from `first` on, in one
    /// `mprotect` (one TLB shootdown for the run, not one per page).
    ///
    /// # Errors
    /// A run that leaves the space, or what `mprotect` says.
    pub fn protect_run(&self, first: PageId, count: u64, access: Access) -> io::Result<()> {
        self.check_run(first, count)?;
        // SAFETY: the run lies inside our application view; the fault handler serves the traps.
        unsafe { sys::protect(self.layout.addr_of(first), count as usize * PAGE_SIZE, access) }
    }
}
