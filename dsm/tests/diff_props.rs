//! Property tests of the release-consistent protocol's twins and diffs (`lrc::diff`): what a
//! writer changes in its copy since the twin is exactly what reaches the home, and concurrent
//! writers of disjoint bytes merge in any order.

// Tests print as they like: the rule against std's print macros is the runtime's.
#![allow(clippy::disallowed_macros)]

use dsm::protocol::lrc::diff;
use proptest::prelude::*;

const PAGE: usize = 4096;

/// A page and a set of (offset, byte) writes into it.
fn page_and_writes() -> impl Strategy<Value = (Vec<u8>, Vec<(usize, u8)>)> {
    (proptest::collection::vec(any::<u8>(), PAGE), proptest::collection::vec((0..PAGE, any::<u8>()), 0..300))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Twin, write, diff, apply to another copy of the twin: the copy equals the written page, and
    /// the diff validates and reports no more changed bytes than were written.
    #[test]
    fn a_diff_carries_exactly_the_writes((twin, writes) in page_and_writes()) {
        let mut page = twin.clone();
        for &(at, b) in &writes {
            page[at] = b;
        }
        let mut d = Vec::new();
        diff::encode(&twin, &page, &mut d);
        prop_assert!(diff::validate(&d, PAGE).is_ok());
        let mut home = twin.clone();
        diff::apply(&d, &mut home).unwrap();
        prop_assert_eq!(&home, &page);
        // Bytes the writer did not change are not in the diff: applying it to a page where only
        // those bytes differ changes nothing there.
        let mut other = twin.iter().map(|b| b.wrapping_add(1)).collect::<Vec<u8>>();
        for &(at, _) in &writes {
            other[at] = page[at];
        }
        let before = other.clone();
        diff::apply(&d, &mut other).unwrap();
        for i in 0..PAGE {
            if twin[i] == page[i] {
                prop_assert_eq!(other[i], before[i], "byte {} was not written but the diff changed it", i);
            }
        }
    }

    /// Two writers of disjoint bytes of one page: their diffs applied at the home in either order
    /// give the same page, holding both writers' bytes.
    #[test]
    fn disjoint_writers_merge_in_any_order(
        (twin, writes) in page_and_writes(),
        split in any::<u64>(),
    ) {
        let (mut a, mut b) = (twin.clone(), twin.clone());
        for &(at, v) in &writes {
            // Each offset belongs to one writer, chosen by a hash of the offset.
            if (at as u64).wrapping_mul(split | 1) >> 63 == 0 { a[at] = v } else { b[at] = v }
        }
        let (mut da, mut db) = (Vec::new(), Vec::new());
        diff::encode(&twin, &a, &mut da);
        diff::encode(&twin, &b, &mut db);
        let mut ab = twin.clone();
        diff::apply(&da, &mut ab).unwrap();
        diff::apply(&db, &mut ab).unwrap();
        let mut ba = twin.clone();
        diff::apply(&db, &mut ba).unwrap();
        diff::apply(&da, &mut ba).unwrap();
        prop_assert_eq!(&ab, &ba);
        for i in 0..PAGE {
            let want = if a[i] != twin[i] { a[i] } else { b[i] };
            prop_assert_eq!(ab[i], want);
        }
    }

    /// Arbitrary bytes as a diff: an error or a valid diff, never a panic, and a rejected diff
    /// leaves the page untouched.
    #[test]
    fn garbage_diffs_are_rejected_whole(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut page = vec![0x5au8; PAGE];
        match diff::apply(&bytes, &mut page) {
            Ok(_) => prop_assert!(diff::validate(&bytes, PAGE).is_ok()),
            Err(_) => prop_assert!(page.iter().all(|&b| b == 0x5a)),
        }
    }
}
