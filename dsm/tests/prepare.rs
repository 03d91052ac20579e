//! `Space::prepare_run`: pages get memory ahead of their install, and keep their bytes.

use dsm::sys::PAGE_SIZE;
use dsm::{PageId, Space, SpaceLayout};

/// Which of `count` pages from `first` of the runtime view have memory now (`mincore`).
fn resident(space: &Space, first: u64, count: usize) -> Vec<bool> {
    let mut vec = vec![0u8; count];
    let addr = space.runtime_addr(PageId(first)) as *mut libc::c_void;
    // SAFETY: the range is part of the runtime view, which is mapped; `vec` has one byte per page.
    let r = unsafe { libc::mincore(addr, count * PAGE_SIZE, vec.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().map(|b| b & 1 == 1).collect()
}

#[test]
fn prepared_pages_have_memory_and_keep_their_bytes() {
    let layout = SpaceLayout { base: 0x3100_0000_0000, size: 256 * PAGE_SIZE };
    let space = Space::map(layout, PageId(0)..PageId(0)).unwrap();
    // SAFETY: page 40 is in the space and no application thread exists here.
    unsafe { space.install(PageId(40), &[9u8; PAGE_SIZE]) };
    assert_eq!(resident(&space, 32, 16).iter().filter(|&&r| r).count(), 1, "only the installed page");
    assert!(space.has_memory(PageId(40)) && !space.has_memory(PageId(39)), "an install is remembered");
    assert!(space.prepare_run(PageId(250), 10).is_err(), "a run that leaves the space is refused");
    assert!(space.prepare_run(PageId(u64::MAX), 2).is_err(), "an overflowing run is refused");
    if let Err(e) = space.prepare_run(PageId(32), 16) {
        // Kernels before 5.14 do not know MADV_POPULATE_WRITE; the runtime then does without.
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        return;
    }
    assert!(resident(&space, 32, 16).iter().all(|&r| r), "every prepared page has memory");
    assert!((32..48).all(|p| space.has_memory(PageId(p))), "and is remembered");
    assert!(!space.has_memory(PageId(48)));
    assert!(!resident(&space, 48, 1)[0], "nothing past the run");
    // SAFETY: reading the runtime view of in-range pages.
    let (installed, fresh) = unsafe { (space.page_bytes(PageId(40)), space.page_bytes(PageId(33))) };
    assert!(installed.iter().all(|&b| b == 9), "an installed page keeps its bytes");
    assert!(fresh.iter().all(|&b| b == 0), "a fresh page reads zero");
    space.prepare_run(PageId(30), 20).unwrap();
    assert!(resident(&space, 30, 20).iter().all(|&r| r), "runs around known pages are prepared too");
    assert!(!resident(&space, 50, 1)[0] && !resident(&space, 29, 1)[0], "and nothing else");
}
