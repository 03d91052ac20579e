//! Small helpers the kernels share: splitting work, a deterministic generator, checksums, and a
//! page-sized cell for data that must not share a page with anything else.

use std::ops::Range;

/// The `part`-th of `parts` contiguous, nearly equal pieces of `0..n` (earlier pieces are never
/// longer than later ones by more than one).
pub(crate) fn band(n: usize, parts: usize, part: usize) -> Range<usize> {
    n * part / parts..n * (part + 1) / parts
}

/// Scrambles a 64-bit value (the finaliser of SplitMix64): seeds from small integers.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A xorshift64* generator: cheap, deterministic, never zero.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(mix(seed) | 1)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// An FNV-1a hash over 64-bit words, fed in order.
#[derive(Clone, Debug)]
pub(crate) struct Fnv(u64);

impl Fnv {
    /// An empty hash.
    pub(crate) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    /// Feeds one word (its eight bytes, little end first).
    pub(crate) fn word(&mut self, w: u64) {
        for b in w.to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Feeds `x` rounded to `scale` (a float checksum that survives printing and re-reading).
    pub(crate) fn float(&mut self, x: f64, scale: f64) {
        self.word((x * scale).round() as i64 as u64);
    }

    /// The hash so far.
    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

/// A value alone in its own 4 KiB page (size and alignment of a page), so that on the DSM nothing
/// else moves with it.
#[repr(C, align(4096))]
#[derive(Debug, Default)]
pub(crate) struct PageAligned<T>(pub(crate) T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_cover_the_range_in_order() {
        for n in [0, 1, 5, 32, 1000] {
            for parts in 1..9 {
                let mut next = 0;
                for p in 0..parts {
                    let r = band(n, parts, p);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn page_aligned_fills_a_page() {
        assert_eq!(std::mem::size_of::<PageAligned<u64>>(), 4096);
        assert_eq!(std::mem::align_of::<PageAligned<u64>>(), 4096);
    }
}
