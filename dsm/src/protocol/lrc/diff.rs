//! Diffs: the bytes of a page that changed since its twin was taken, and how to apply them at the
//! page's home.
//!
//! With several writers per page, a diff must carry **exactly** the bytes its writer changed and
//! nothing else: another node may have changed the byte next door (or the other half of the same
//! word) in the same interval, and a diff that carried an unchanged neighbour would overwrite that
//! write with a stale value at the home. So [`encode`] compares the page 64 bytes at a time where
//! the CPU has AVX-512 (one compare gives the changed bytes' mask, one compress packs them), a
//! machine word at a time elsewhere, but marks changes byte by byte; and [`apply`] writes exactly
//! the marked bytes (with a masked store, or byte by byte), never a whole word that holds another
//! writer's bytes. Both paths give the same diffs ([`use_wide`] switches between them).
//!
//! A byte written and then written back to its twin value is not in the diff; in a data-race-free
//! program that is harmless, because the home already holds that value (any other write to the
//! byte would be a race with this writer).
//!
//! # Format
//!
//! All integers are unsigned LEB128 varints. The first byte is the format tag:
//!
//! * `0` — **runs**: a sequence of `gap, len, len bytes`. The first run starts `gap` bytes into the
//!   page, each later one `gap` bytes after the end of the previous run. `len` is at least 1, and
//!   every `gap` but the first is at least 1 (touching runs are one run). `[0]` alone is the empty
//!   diff.
//! * `1` — **mask**: `page_len`, then a bitmap of `ceil(page_len / 8)` bytes (bit `i % 8` of byte
//!   `i / 8` set when byte `i` changed; bits past `page_len` clear), then the changed bytes in page
//!   order, exactly as many as bits are set. Used when it is shorter than runs: many scattered
//!   one- and two-byte changes.
//!
//! [`encode`] picks whichever is shorter, so a diff is never longer than
//! `2 + varint(page_len) + page_len / 8 + changed bytes`, about 1.13 times the page at worst.
//!
//! Decoding is defensive: [`apply`] (and [`validate`]) reject anything that is not exactly a
//! diff in this format for a page of the given length, with a [`DiffError`], never panic, and
//! `apply` writes nothing at all unless the whole diff is valid.

use std::fmt;

const TAG_RUNS: u8 = 0;
const TAG_MASK: u8 = 1;

/// A malformed diff: what was wrong and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffError {
    at: usize,
    reason: &'static str,
}

impl DiffError {
    fn new(at: usize, reason: &'static str) -> Self {
        DiffError { at, reason }
    }

    /// The offset in the encoded diff at which decoding failed.
    pub fn at(&self) -> usize {
        self.at
    }

    /// What was wrong.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for DiffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed diff at byte {}: {}", self.at, self.reason)
    }
}

impl std::error::Error for DiffError {}

/// What a valid diff changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiffSummary {
    /// The number of page bytes the diff writes.
    pub bytes: usize,
    /// The number of maximal runs of consecutive bytes it writes.
    pub runs: usize,
}

/// Appends to `out` the diff that turns `twin` into `current`: exactly the bytes that differ.
///
/// # Panics
///
/// If `twin` and `current` differ in length (both are copies of the same page).
///
/// # Examples
///
/// ```
/// use dsm::protocol::lrc::diff;
///
/// let twin = [0u8; 16];
/// let mut current = twin;
/// current[3] = 7;
/// current[9..12].copy_from_slice(b"abc");
/// let mut d = Vec::new();
/// diff::encode(&twin, &current, &mut d);
///
/// let mut home = twin;
/// diff::apply(&d, &mut home).unwrap();
/// assert_eq!(home, current);
/// ```
pub fn encode(twin: &[u8], current: &[u8], out: &mut Vec<u8>) {
    assert_eq!(twin.len(), current.len(), "a twin and its page have the same length");
    let mask = changed_mask(twin, current);
    let changed = count_ones(&mask);
    let mask_size = 1 + varint_len(current.len() as u64) + current.len().div_ceil(8) + changed;
    // Every run costs at least two bytes of header: when that alone makes runs longer than the
    // mask, the mask wins without listing the runs.
    if 1 + 2 * count_runs(&mask) + changed > mask_size {
        out.reserve(mask_size);
        out.push(TAG_MASK);
        put_varint(out, current.len() as u64);
        out.extend_from_slice(&mask);
        gather(&mask, current, changed, out);
        return;
    }
    let mut runs = Vec::new();
    for_each_run(&mask, |start, len| runs.push((start, len)));
    let mut runs_size = 1;
    let mut end = 0;
    for &(start, len) in &runs {
        runs_size += varint_len((start - end) as u64) + varint_len(len as u64) + len;
        end = start + len;
    }
    if runs_size <= mask_size {
        out.reserve(runs_size);
        out.push(TAG_RUNS);
        let mut end = 0;
        for &(start, len) in &runs {
            put_varint(out, (start - end) as u64);
            put_varint(out, len as u64);
            out.extend_from_slice(&current[start..start + len]);
            end = start + len;
        }
    } else {
        out.reserve(mask_size);
        out.push(TAG_MASK);
        put_varint(out, current.len() as u64);
        out.extend_from_slice(&mask);
        gather(&mask, current, changed, out);
    }
}

/// Checks that `diff` is a well-formed diff for a page of `page_len` bytes and says what it
/// changes.
///
/// # Errors
///
/// A [`DiffError`] for anything but a diff in the format described in the [module](self) docs.
pub fn validate(diff: &[u8], page_len: usize) -> Result<DiffSummary, DiffError> {
    check(diff, page_len).map(|(_, summary)| summary)
}

/// Applies `diff` to `page`: writes the bytes it carries, and no others.
///
/// All or nothing: the whole diff is checked before the first byte is written, so a malformed
/// diff leaves `page` untouched.
///
/// # Errors
///
/// A [`DiffError`] if `diff` is not a well-formed diff for a page of `page.len()` bytes.
pub fn apply(diff: &[u8], page: &mut [u8]) -> Result<DiffSummary, DiffError> {
    let (checked, summary) = check(diff, page.len())?;
    match checked {
        Checked::Runs(mut r) => {
            walk_runs(&mut r, page.len(), |start, bytes| {
                page[start..start + bytes.len()].copy_from_slice(bytes)
            })?;
        }
        Checked::Mask { mask, bytes } => scatter(mask, bytes, page),
    }
    Ok(summary)
}

/// A well-formed diff, as [`check`] found it.
enum Checked<'a> {
    /// The runs format, read up to its first run (walked again to apply: its checks are cheap).
    Runs(Reader<'a>),
    /// The mask format's bitmap and changed bytes.
    Mask { mask: &'a [u8], bytes: &'a [u8] },
}

/// Checks a whole diff for a page of `page_len` bytes, and says what it changes.
fn check(diff: &[u8], page_len: usize) -> Result<(Checked<'_>, DiffSummary), DiffError> {
    let mut r = Reader { buf: diff, pos: 0 };
    match r.byte("empty diff")? {
        TAG_RUNS => {
            let start = r.clone();
            let mut summary = DiffSummary::default();
            walk_runs(&mut r, page_len, |_, bytes| {
                summary.bytes += bytes.len();
                summary.runs += 1;
            })?;
            Ok((Checked::Runs(start), summary))
        }
        TAG_MASK => {
            let len = r.varint()?;
            if len != page_len {
                return Err(r.err("mask diff made for a page of another length"));
            }
            let mask = r.take(page_len.div_ceil(8), "diff ends inside its mask")?;
            let tail_bits = page_len % 8;
            if tail_bits != 0 && mask.last().is_some_and(|&b| b >> tail_bits != 0) {
                return Err(r.err("mask marks bytes past the end of the page"));
            }
            let count = count_ones(mask);
            if r.remaining() != count {
                return Err(r.err("mask diff carries a different number of bytes than its mask marks"));
            }
            let bytes = r.take(count, "diff ends inside its bytes")?;
            Ok((Checked::Mask { mask, bytes }, DiffSummary { bytes: count, runs: count_runs(mask) }))
        }
        _ => Err(DiffError::new(0, "unknown diff format")),
    }
}

/// The number of maximal runs of set bits in a mask bitmap (each run begins where a set bit
/// follows a clear one), 64 bits at a time.
fn count_runs(mask: &[u8]) -> usize {
    let mut carry = 0u64;
    let mut runs = 0;
    for chunk in mask.chunks(8) {
        let bits = le_word(chunk);
        runs += (bits & !((bits << 1) | carry)).count_ones() as usize;
        carry = bits >> 63;
    }
    runs
}

/// The number of set bits of a bitmap, 64 at a time.
fn count_ones(mask: &[u8]) -> usize {
    mask.chunks(8).map(|c| le_word(c).count_ones() as usize).sum()
}

/// A little-endian word from up to eight bytes (missing ones are zero).
fn le_word(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// Appends the bytes of `current` that `mask` marks (`changed` of them), in page order: a word
/// whose eight bytes all changed is copied whole, others byte by byte.
fn gather(mask: &[u8], current: &[u8], changed: usize, out: &mut Vec<u8>) {
    let at = out.len();
    // Room for a whole 64-byte store past the last byte, cut off at the end.
    out.resize(at + changed + 64, 0);
    let mut pos = at;
    let mut done = 0;
    if wide::available() {
        for (m, c) in mask.chunks_exact(8).zip(current.chunks_exact(64)) {
            let bits = le_word(m);
            if bits != 0 {
                // SAFETY: the CPU has the instructions; `c` is 64 bytes and `out` has 64 bytes of
                // room from `pos` (at most `changed` bytes are stored before it).
                unsafe { wide::compress(c, bits, &mut out[pos..pos + 64]) };
                pos += bits.count_ones() as usize;
            }
            done += 64;
        }
    }
    for_each_marked(mask, done / 8, pos, |at_page, at_packed, len| {
        out[at_packed..at_packed + len].copy_from_slice(&current[at_page..at_page + len]);
    });
    out.truncate(at + changed);
}

/// Writes the `bytes` a valid mask diff carries into `page`, exactly where `mask` says and nowhere
/// else (a whole word only where all of its eight bytes changed): another writer's bytes in the
/// same word are left alone.
fn scatter(mask: &[u8], bytes: &[u8], page: &mut [u8]) {
    let mut next = 0;
    let mut done = 0;
    if wide::available() {
        for (m, p) in mask.chunks_exact(8).zip(page.chunks_exact_mut(64)) {
            let bits = le_word(m);
            if bits != 0 {
                let count = bits.count_ones() as usize;
                let mut padded = [0u8; 64];
                let src = match bytes.get(next..next + 64) {
                    Some(src) => src,
                    None => {
                        padded[..count].copy_from_slice(&bytes[next..next + count]);
                        &padded[..]
                    }
                };
                // SAFETY: the CPU has the instructions; both slices are 64 bytes.
                unsafe { wide::expand(src, bits, p) };
                next += count;
            }
            done += 64;
        }
    }
    for_each_marked(mask, done / 8, next, |at_page, at_packed, len| {
        page[at_page..at_page + len].copy_from_slice(&bytes[at_packed..at_packed + len]);
    });
}

/// The word-at-a-time pairing of a mask diff's page bytes with its packed bytes, from mask byte
/// `first` on (the packed bytes of the earlier ones end at `packed`): `pair(at_page, at_packed, len)`
/// for a whole word whose eight bytes are marked, or for each marked byte of another word, in order.
fn for_each_marked(mask: &[u8], first: usize, mut packed: usize, mut pair: impl FnMut(usize, usize, usize)) {
    for (k, &m) in mask.iter().enumerate().skip(first) {
        let start = k * 8;
        if m == 0xff {
            pair(start, packed, 8);
            packed += 8;
            continue;
        }
        let mut bits = m;
        while bits != 0 {
            pair(start + bits.trailing_zeros() as usize, packed, 1);
            packed += 1;
            bits &= bits - 1;
        }
    }
}

/// 64 bytes at a time with AVX-512 (byte masks, compress and expand), where the CPU has it: one
/// compare finds the changed bytes of a 64-byte block, one compress packs them, one expand and one
/// masked store put them back, writing the marked bytes only. Elsewhere, and for the tail of a page
/// that is not a multiple of 64 bytes, the word-at-a-time code above does the same.
#[cfg(target_arch = "x86_64")]
mod wide {
    use std::arch::x86_64::{
        __m512i, _mm512_cmpneq_epi8_mask, _mm512_loadu_si512, _mm512_mask_storeu_epi8,
        _mm512_maskz_compress_epi8, _mm512_maskz_expand_epi8, _mm512_storeu_si512,
    };
    use std::sync::atomic::{AtomicU8, Ordering};

    /// 0: not asked yet, 1: no (or not allowed), 2: yes.
    static KNOWN: AtomicU8 = AtomicU8::new(0);

    /// Allows the wide path (asking the CPU again), or forbids it.
    pub(super) fn allow(allowed: bool) {
        KNOWN.store(if allowed { 0 } else { 1 }, Ordering::Relaxed);
    }

    /// Whether the CPU has AVX-512 BW and VBMI2 (asked once) and the wide path is allowed.
    pub(super) fn available() -> bool {
        match KNOWN.load(Ordering::Relaxed) {
            1 => false,
            2 => true,
            _ => {
                let yes =
                    std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512vbmi2");
                KNOWN.store(1 + u8::from(yes), Ordering::Relaxed);
                yes
            }
        }
    }

    /// Bit `i` set when byte `i` of `a` and `b` differ.
    ///
    /// # Safety
    /// The CPU has AVX-512 BW ([`available`]); both slices are 64 bytes long.
    #[target_feature(enable = "avx512bw")]
    pub(super) unsafe fn differ(a: &[u8], b: &[u8]) -> u64 {
        assert!(a.len() == 64 && b.len() == 64);
        // SAFETY: 64 readable bytes each (unaligned loads are allowed).
        let (x, y) = unsafe { (load(a), load(b)) };
        _mm512_cmpneq_epi8_mask(x, y)
    }

    /// Stores the bytes of `src` that `bits` marks, packed in order, at the start of `dst` (the
    /// rest of `dst`'s 64 bytes gets zeros).
    ///
    /// # Safety
    /// The CPU has AVX-512 BW and VBMI2 ([`available`]); both slices are 64 bytes long.
    #[target_feature(enable = "avx512bw,avx512vbmi2")]
    pub(super) unsafe fn compress(src: &[u8], bits: u64, dst: &mut [u8]) {
        assert!(src.len() == 64 && dst.len() == 64);
        // SAFETY: 64 readable bytes.
        let packed = _mm512_maskz_compress_epi8(bits, unsafe { load(src) });
        // SAFETY: 64 writable bytes.
        unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), packed) };
    }

    /// Writes the first `bits.count_ones()` bytes of `src`, in order, to the bytes of `dst` that
    /// `bits` marks, and no other byte of `dst`.
    ///
    /// # Safety
    /// The CPU has AVX-512 BW and VBMI2 ([`available`]); both slices are 64 bytes long.
    #[target_feature(enable = "avx512bw,avx512vbmi2")]
    pub(super) unsafe fn expand(src: &[u8], bits: u64, dst: &mut [u8]) {
        assert!(src.len() == 64 && dst.len() == 64);
        // SAFETY: 64 readable bytes.
        let spread = _mm512_maskz_expand_epi8(bits, unsafe { load(src) });
        // SAFETY: 64 writable bytes; the masked store writes only the marked ones.
        unsafe { _mm512_mask_storeu_epi8(dst.as_mut_ptr().cast(), bits, spread) };
    }

    /// # Safety
    /// `bytes` has at least 64 bytes; the CPU has AVX-512 BW ([`available`]).
    #[target_feature(enable = "avx512bw")]
    unsafe fn load(bytes: &[u8]) -> __m512i {
        // SAFETY: as the caller promises.
        unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
    }
}

/// Elsewhere there is no wide path.
#[cfg(not(target_arch = "x86_64"))]
mod wide {
    pub(super) fn allow(_: bool) {}
    pub(super) fn available() -> bool {
        false
    }
    /// # Safety
    /// Never called: [`available`] is false.
    pub(super) unsafe fn differ(_: &[u8], _: &[u8]) -> u64 {
        unreachable!()
    }
    /// # Safety
    /// Never called: [`available`] is false.
    pub(super) unsafe fn compress(_: &[u8], _: u64, _: &mut [u8]) {}
    /// # Safety
    /// Never called: [`available`] is false.
    pub(super) unsafe fn expand(_: &[u8], _: u64, _: &mut [u8]) {}
}

/// Lets [`encode`], [`validate`] and [`apply`] use AVX-512 where the CPU has it (the default), or
/// makes them use the portable word-at-a-time code only, for comparisons (benchmarks, tests). Both
/// give the same results; the setting is process-wide.
///
/// # Examples
///
/// ```
/// use dsm::protocol::lrc::diff;
///
/// diff::use_wide(false);
/// let mut d = Vec::new();
/// diff::encode(&[0; 64], &[1; 64], &mut d);
/// diff::use_wide(true);
/// let mut wide = Vec::new();
/// diff::encode(&[0; 64], &[1; 64], &mut wide);
/// assert_eq!(d, wide);
/// ```
pub fn use_wide(allowed: bool) {
    wide::allow(allowed);
}

/// The bitmap of the mask format: bit `i % 8` of byte `i / 8` set when byte `i` differs. Words
/// are compared eight bytes at a time, and a differing word gives its byte bits in one step.
fn changed_mask(twin: &[u8], current: &[u8]) -> Vec<u8> {
    let n = twin.len();
    let mut mask = vec![0u8; n.div_ceil(8)];
    let mut done = 0;
    if wide::available() {
        for ((m, t), c) in mask.chunks_exact_mut(8).zip(twin.chunks_exact(64)).zip(current.chunks_exact(64)) {
            // SAFETY: the CPU has the instructions (checked just above); both chunks are 64 bytes.
            m.copy_from_slice(&unsafe { wide::differ(t, c) }.to_le_bytes());
            done += 64;
        }
    }
    let (twin_rest, current_rest) = (&twin[done..], &current[done..]);
    for (m, (t, c)) in
        mask[done / 8..].iter_mut().zip(twin_rest.chunks_exact(8).zip(current_rest.chunks_exact(8)))
    {
        let x = le_word(t) ^ le_word(c);
        if x != 0 {
            *m = nonzero_bytes(x);
        }
    }
    for i in n - n % 8..n {
        if twin[i] != current[i] {
            mask[i / 8] |= 1 << (i % 8);
        }
    }
    mask
}

/// Bit `i` set when byte `i` (the `i`-th least significant) of `x` is not zero.
fn nonzero_bytes(x: u64) -> u8 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // The top bit of each byte: set when any bit of the byte is.
    let top = (((x & LOW7) + LOW7) | x) & !LOW7;
    // Moves bit 8i (after the shift) to bit 56 + i: every (bit, multiplier bit) pair lands on a
    // position of its own, so no carry disturbs the top byte.
    ((top >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
}

/// Calls `visit(start, len)` for every maximal run of set bits of a mask bitmap, in order, 64 bits
/// at a time.
fn for_each_run(mask: &[u8], mut visit: impl FnMut(usize, usize)) {
    let mut open: Option<usize> = None;
    for (k, chunk) in mask.chunks(8).enumerate() {
        let bits = le_word(chunk);
        let base = k * 64;
        let mut at = 0u32;
        while at < 64 {
            let rest = bits >> at;
            match open {
                Some(start) => {
                    at += (!rest).trailing_zeros().min(64 - at);
                    if at < 64 {
                        visit(start, base + at as usize - start);
                        open = None;
                    }
                }
                None if rest == 0 => break,
                None => {
                    at += rest.trailing_zeros();
                    open = Some(base + at as usize);
                }
            }
        }
    }
    if let Some(start) = open {
        visit(start, mask.len() * 8 - start);
    }
}

/// Reads the runs of a diff in the runs format (after its tag) and calls `visit(start, bytes)` for
/// each, in page order, after checking it; stops at the first error. `visit` may have been called
/// for earlier runs when an error is returned, which is why [`apply`] checks first.
fn walk_runs(
    r: &mut Reader<'_>,
    page_len: usize,
    mut visit: impl FnMut(usize, &[u8]),
) -> Result<(), DiffError> {
    let mut end = 0usize;
    let mut first = true;
    while !r.done() {
        let gap = r.varint()?;
        if !first && gap == 0 {
            return Err(r.err("two runs touch (gap of 0)"));
        }
        let len = r.varint()?;
        if len == 0 {
            return Err(r.err("run of length 0"));
        }
        let start = end.checked_add(gap).filter(|&s| s < page_len);
        let Some(start) = start else {
            return Err(r.err("run starts past the end of the page"));
        };
        if len > page_len - start {
            return Err(r.err("run ends past the end of the page"));
        }
        let bytes = r.take(len, "diff ends inside a run's bytes")?;
        visit(start, bytes);
        end = start + len;
        first = false;
    }
    Ok(())
}

#[derive(Clone)]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn err(&self, reason: &'static str) -> DiffError {
        DiffError::new(self.pos, reason)
    }

    fn byte(&mut self, reason: &'static str) -> Result<u8, DiffError> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.err(reason))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, len: usize, reason: &'static str) -> Result<&'a [u8], DiffError> {
        if len > self.remaining() {
            return Err(self.err(reason));
        }
        let s = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }

    /// An unsigned LEB128 value that must fit in `usize`.
    fn varint(&mut self) -> Result<usize, DiffError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte("diff ends inside a number")?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(self.err("number does not fit in 64 bits"));
            }
            value |= part << shift;
            if b & 0x80 == 0 {
                return usize::try_from(value).map_err(|_| self.err("number does not fit in usize"));
            }
        }
        Err(self.err("number longer than 10 bytes"))
    }
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic and good enough for test inputs.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next_u64() % bound.max(1) as u64) as usize
        }

        fn byte(&mut self) -> u8 {
            self.next_u64() as u8
        }
    }

    fn encoded(twin: &[u8], current: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        encode(twin, current, &mut d);
        d
    }

    /// Encodes, checks the result is well-formed, minimal in the sense of the format and
    /// round-trips; returns it.
    fn round_trip(twin: &[u8], current: &[u8]) -> Vec<u8> {
        let d = encoded(twin, current);
        let changed = twin.iter().zip(current).filter(|(a, b)| a != b).count();
        let summary = validate(&d, twin.len()).unwrap_or_else(|e| panic!("{e}: {d:?}"));
        assert_eq!(summary.bytes, changed, "diff {d:?} of {twin:?} -> {current:?}");
        let mut page = twin.to_vec();
        assert_eq!(apply(&d, &mut page), Ok(summary));
        assert_eq!(page, current);
        let bound = 2 + varint_len(twin.len() as u64) + twin.len() / 8 + changed;
        assert!(d.len() <= bound, "{} bytes for {changed} changed of {}", d.len(), twin.len());
        d
    }

    /// `diff` applied to a copy of `page` must either fail and leave it untouched, or succeed.
    fn apply_checked(diff: &[u8], page: &[u8]) -> Option<Vec<u8>> {
        let mut copy = page.to_vec();
        match apply(diff, &mut copy) {
            Ok(summary) => {
                assert_eq!(validate(diff, page.len()), Ok(summary));
                Some(copy)
            }
            Err(e) => {
                assert_eq!(copy, page, "failed apply ({e}) changed the page");
                assert_eq!(validate(diff, page.len()), Err(e.clone()));
                assert!(e.at() <= diff.len());
                assert!(e.to_string().contains(e.reason()));
                None
            }
        }
    }

    #[test]
    fn empty_and_unchanged() {
        assert_eq!(encoded(&[], &[]), [TAG_RUNS]);
        assert_eq!(encoded(&[1, 2, 3], &[1, 2, 3]), [TAG_RUNS]);
        assert_eq!(validate(&[TAG_RUNS], 0), Ok(DiffSummary { bytes: 0, runs: 0 }));
        assert_eq!(validate(&[TAG_RUNS], 4096), Ok(DiffSummary::default()));
        let mut page = [9u8; 5];
        assert_eq!(apply(&[TAG_RUNS], &mut page), Ok(DiffSummary::default()));
        assert_eq!(page, [9; 5]);
    }

    #[test]
    fn exact_encodings() {
        // One changed byte: gap 3, len 1.
        assert_eq!(encoded(&[0; 8], &[0, 0, 0, 5, 0, 0, 0, 0]), [TAG_RUNS, 3, 1, 5]);
        // Two runs: [1..3) and [5..6): gaps 1 and 2.
        let mut current = [0u8; 64];
        current[1..3].copy_from_slice(&[7, 8]);
        current[5] = 9;
        assert_eq!(encoded(&[0; 64], &current), [TAG_RUNS, 1, 2, 7, 8, 2, 1, 9]);
        // The same change on an 8-byte page is cheaper as a mask (6 bytes against 8).
        assert_eq!(encoded(&[0; 8], &current[..8]), [TAG_MASK, 8, 0b0010_0110, 7, 8, 9]);
        // Whole page.
        assert_eq!(encoded(&[0; 3], &[1, 2, 3]), [TAG_RUNS, 0, 3, 1, 2, 3]);
        // Every other byte of 16: runs cost 8 * 3 bytes, the mask 1 + 1 + 2 + 8.
        let twin = [0u8; 16];
        let current: Vec<u8> = (0..16).map(|i| if i % 2 == 1 { i } else { 0 }).collect();
        assert_eq!(
            encoded(&twin, &current),
            [TAG_MASK, 16, 0b1010_1010, 0b1010_1010, 1, 3, 5, 7, 9, 11, 13, 15]
        );
        // Offsets that need two-byte varints.
        let twin = vec![0u8; 4096];
        let mut current = twin.clone();
        current[300] = 1;
        current[4095] = 2;
        assert_eq!(encoded(&twin, &current), [TAG_RUNS, 0xac, 0x02, 1, 1, 0xd2, 0x1d, 1, 2]);
    }

    #[test]
    fn byte_exact_inside_words() {
        // A change in one byte of an 8-byte word must not drag its neighbours along.
        let twin = [0xAAu8; 24];
        for i in 0..24 {
            let mut current = twin;
            current[i] = 0x55;
            let d = round_trip(&twin, &current);
            assert_eq!(d, [TAG_RUNS, i as u8, 1, 0x55]);
        }
    }

    #[test]
    fn exhaustive_change_sets() {
        // Every subset of changed positions on pages of 0 to 12 bytes, with old and new values
        // that also exercise "changed to a value equal to the neighbour".
        for len in 0..=12usize {
            for set in 0u32..(1 << len) {
                let twin: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
                let current: Vec<u8> = (0..len)
                    .map(|i| if set >> i & 1 == 1 { twin[i].wrapping_add(1) } else { twin[i] })
                    .collect();
                let d = round_trip(&twin, &current);
                let summary = validate(&d, len).unwrap();
                let runs =
                    (0..len).filter(|&i| set >> i & 1 == 1 && (i == 0 || set >> (i - 1) & 1 == 0)).count();
                assert_eq!(summary.runs, runs, "set {set:b}");
                // Every strict prefix of a mask diff, and every prefix of a runs diff that does not
                // end at a run boundary, is malformed; none may panic or write.
                for cut in 0..d.len() {
                    let _ = apply_checked(&d[..cut], &twin);
                }
                // The diff belongs to a page of exactly this length.
                if d[0] == TAG_MASK {
                    assert!(validate(&d, len + 1).is_err());
                }
            }
        }
    }

    #[test]
    fn exhaustive_short_inputs_never_panic() {
        // Every input of up to two bytes, and every input of three bytes starting with a valid tag,
        // against pages of 0 to 9 bytes.
        let mut inputs: Vec<Vec<u8>> = vec![vec![]];
        for a in 0..=255u8 {
            inputs.push(vec![a]);
            for b in 0..=255u8 {
                inputs.push(vec![a, b]);
            }
        }
        for tag in [TAG_RUNS, TAG_MASK] {
            for b in 0..=255u8 {
                for c in 0..=255u8 {
                    inputs.push(vec![tag, b, c]);
                }
            }
        }
        let mut accepted = 0;
        for len in 0..10usize {
            let page: Vec<u8> = (0..len as u8).collect();
            for input in &inputs {
                if let Some(after) = apply_checked(input, &page) {
                    accepted += 1;
                    assert_eq!(after.len(), len);
                }
            }
        }
        // `[0]` for each of the 10 pages, `[1, 0]` and `[1, 0x80, 0]` (a longer spelling of 0) for
        // the empty page, `[1, len, 0]` for pages of 1 to 8 bytes.
        assert_eq!(accepted, 20);
    }

    #[test]
    fn malformed_diffs_are_rejected() {
        let page = [0u8; 16];
        let cases: &[(&[u8], &str)] = &[
            (&[], "empty diff"),
            (&[2], "unknown diff format"),
            (&[0xff, 0, 1, 1], "unknown diff format"),
            (&[TAG_RUNS, 0], "diff ends inside a number"),
            (&[TAG_RUNS, 0, 0], "run of length 0"),
            (&[TAG_RUNS, 0, 2, 1], "diff ends inside a run's bytes"),
            (&[TAG_RUNS, 16, 1, 1], "run starts past the end of the page"),
            (&[TAG_RUNS, 15, 2, 1, 1], "run ends past the end of the page"),
            (&[TAG_RUNS, 0, 1, 1, 0, 1, 1], "two runs touch (gap of 0)"),
            (&[TAG_RUNS, 10, 1, 1, 6, 1, 1], "run starts past the end of the page"),
            (&[TAG_RUNS, 0x80], "diff ends inside a number"),
            (
                &[TAG_RUNS, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                "number does not fit in 64 bits",
            ),
            (
                &[TAG_RUNS, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
                "number longer than 10 bytes",
            ),
            (
                &[TAG_RUNS, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                "diff ends inside a number",
            ),
            (&[TAG_MASK], "diff ends inside a number"),
            (&[TAG_MASK, 15, 0, 0], "mask diff made for a page of another length"),
            (&[TAG_MASK, 16, 0], "diff ends inside its mask"),
            (&[TAG_MASK, 16, 1, 0], "mask diff carries a different number of bytes than its mask marks"),
            (
                &[TAG_MASK, 16, 1, 0, 7, 7],
                "mask diff carries a different number of bytes than its mask marks",
            ),
        ];
        for &(diff, reason) in cases {
            let mut copy = page;
            let err = apply(diff, &mut copy).expect_err(&format!("{diff:?} accepted"));
            assert_eq!(err.reason(), reason, "{diff:?}");
            assert_eq!(copy, page);
        }
        // Bits past the end of a 12-byte page.
        let mut twelve = [0u8; 12];
        let err = apply(&[TAG_MASK, 12, 0, 0x10, 9], &mut twelve).unwrap_err();
        assert_eq!(err.reason(), "mask marks bytes past the end of the page");
        assert_eq!(apply(&[TAG_MASK, 12, 0, 0x08, 9], &mut twelve).map(|s| s.bytes), Ok(1));
        assert_eq!(twelve[11], 9);
        // A run that would wrap around usize is a bounds error, not an overflow.
        let mut huge = vec![TAG_RUNS, 0];
        put_varint(&mut huge, 1);
        huge.push(1);
        put_varint(&mut huge, u64::MAX);
        put_varint(&mut huge, 1);
        huge.push(1);
        assert_eq!(apply(&huge, &mut [0u8; 16]).unwrap_err().reason(), "run starts past the end of the page");
        // An invalid run after valid ones writes nothing at all.
        let mut copy = page;
        assert!(apply(&[TAG_RUNS, 0, 1, 9, 1, 1, 9, 20, 1, 9], &mut copy).is_err());
        assert_eq!(copy, page);
    }

    /// A random page change of one of several shapes.
    fn random_change(rng: &mut Rng, twin: &[u8]) -> Vec<u8> {
        let mut current = twin.to_vec();
        let n = current.len();
        if n == 0 {
            return current;
        }
        match rng.below(6) {
            0 => {}
            1 => {
                // A few scattered bytes.
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(n);
                    current[i] = rng.byte();
                }
            }
            2 => {
                // A few runs of various lengths.
                for _ in 0..1 + rng.below(4) {
                    let start = rng.below(n);
                    let len = 1 + rng.below((n - start).min(300));
                    for b in &mut current[start..start + len] {
                        *b = rng.byte();
                    }
                }
            }
            3 => {
                // Dense: each byte with some probability.
                let p = 1 + rng.below(99);
                for b in &mut current {
                    if rng.below(100) < p {
                        *b = rng.byte();
                    }
                }
            }
            4 => {
                // Aligned words, like a struct of u64 fields.
                for _ in 0..1 + rng.below(16) {
                    let w = rng.below(n / 8 + 1) * 8;
                    for b in current.iter_mut().skip(w).take(8) {
                        *b = rng.byte();
                    }
                }
            }
            _ => {
                for b in &mut current {
                    *b = rng.byte();
                }
            }
        }
        current
    }

    #[test]
    fn random_round_trips() {
        let mut rng = Rng::new(1);
        let mut formats = [0usize; 2];
        for round in 0..3_000 {
            let n = match round % 4 {
                0 => 4096,
                1 => rng.below(64),
                2 => rng.below(5000),
                _ => 8 * rng.below(64),
            };
            let twin: Vec<u8> = (0..n).map(|_| if rng.below(2) == 0 { 0 } else { rng.byte() }).collect();
            let current = random_change(&mut rng, &twin);
            let d = round_trip(&twin, &current);
            formats[usize::from(d[0])] += 1;
        }
        assert!(formats[0] > 100 && formats[1] > 100, "{formats:?}");
    }

    #[test]
    fn wide_and_word_paths_agree() {
        // On a CPU with AVX-512 the 64-byte path runs; without it both runs below take the word
        // path and the test still checks that much.
        let mut rng = Rng::new(7);
        for round in 0..2_000 {
            let n = match round % 3 {
                0 => 4096,
                1 => 64 * rng.below(70),
                _ => rng.below(5000),
            };
            let twin: Vec<u8> = (0..n).map(|_| if rng.below(2) == 0 { 0 } else { rng.byte() }).collect();
            let current = random_change(&mut rng, &twin);
            let mut results = Vec::new();
            for wide in [false, true] {
                super::use_wide(wide);
                let d = encoded(&twin, &current);
                let summary = validate(&d, n).expect("valid");
                let mut page = twin.clone();
                apply(&d, &mut page).expect("applies");
                results.push((d, summary, page));
            }
            super::use_wide(true);
            assert_eq!(results[0], results[1], "round {round}, {n} bytes");
            assert_eq!(results[1].2, current);
        }
    }

    #[test]
    fn disjoint_writers_merge_in_any_order() {
        // The multiple-writer property: writers that change disjoint bytes of copies of the same
        // page produce diffs that, applied in either order at the home, give every write.
        let mut rng = Rng::new(2);
        for _ in 0..500 {
            let n = 1 + rng.below(600);
            let base: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            let owner: Vec<usize> = (0..n).map(|_| rng.below(3)).collect();
            let mut copies = vec![base.clone(); 3];
            let mut expected = base.clone();
            for i in 0..n {
                if rng.below(3) == 0 {
                    let v = rng.byte();
                    copies[owner[i]][i] = v;
                    expected[i] = v;
                }
            }
            let diffs: Vec<Vec<u8>> = copies.iter().map(|c| round_trip(&base, c)).collect();
            for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
                let mut home = base.clone();
                for k in order {
                    apply(&diffs[k], &mut home).unwrap();
                }
                assert_eq!(home, expected);
            }
        }
    }

    #[test]
    fn mutated_diffs_never_panic_or_half_apply() {
        let mut rng = Rng::new(3);
        for _ in 0..20_000 {
            let n = rng.below(200);
            let twin: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            let current = random_change(&mut rng, &twin);
            let mut d = encoded(&twin, &current);
            match rng.below(5) {
                0 => {
                    let i = rng.below(d.len());
                    d[i] = rng.byte();
                }
                1 => d.truncate(rng.below(d.len())),
                2 => {
                    for _ in 0..1 + rng.below(4) {
                        d.push(rng.byte());
                    }
                }
                3 => {
                    let i = rng.below(d.len());
                    d.remove(i);
                }
                _ => {
                    let i = rng.below(d.len() + 1);
                    d.insert(i, rng.byte());
                }
            }
            let page_len = if rng.below(10) == 0 { rng.below(300) } else { n };
            let page: Vec<u8> = (0..page_len).map(|_| rng.byte()).collect();
            let _ = apply_checked(&d, &page);
        }
    }

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 255, 300, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v));
            let mut r = Reader { buf: &buf, pos: 0 };
            if let Ok(v) = usize::try_from(v) {
                assert_eq!(r.varint(), Ok(v));
                assert!(r.done());
            }
        }
    }
}
