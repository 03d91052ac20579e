//! The executor: carries out a protocol's effects, in order, whatever the protocol. The only code
//! of the runtime that knows what an effect means (`dsm::protocol::Effect`).
//!
//! The ordering contract lives here once: effects run strictly in the order returned; a `Send` with
//! a page payload reads the page's bytes when it runs (after the `Protect` that closed it to
//! writes); `Install` and `ApplyDiff` write through the runtime view while the application view is
//! closed (or, for a diff, only the bytes it carries); `Wake` lets the waiting threads retry; a
//! `Released` lets the thread that asked for the release go on. Around a call, the two flags that
//! spare application threads a trip to the service thread are only *raised* before the effects
//! run and set to their exact values after: the protocol's state is already the new one, so an
//! acquire that dropped the last stale copy says "nothing stale" while the `Protect` that closes the
//! copy has not run yet; lowering the flag early would let another thread skip its own acquire and
//! read that copy meanwhile (`rwlock_readers_never_see_a_torn_write_under_lrc` caught this).
//!
//! One liberty with the order, for speed: some pairs of effects are put off to the end of the
//! service thread's turn, where neighbouring pages with the same new access change it with one
//! `mprotect`. Each `mprotect` interrupts every CPU that runs a thread of the process (a TLB
//! shootdown, ~20 µs on a VM), and a read-ahead, a write-ahead or a release moves dozens of pages
//! per turn.
//! - A page that arrives (`Install`) or is twinned (`Twin`) and opens at once (the `Protect` right
//!   after it), with the `Wake` that follows: until it opens, the page is closed (to writes, for a
//!   twinned one), so no thread of this node writes it and the twin stays exact.
//! - A page whose protection changes (`Protect`) right before a message about it leaves (the
//!   `Send` right after it): its bytes, its diff, under lrc the right to change it, or an
//!   acknowledgement that the copy is gone (a drop, an invalidation). The bytes are read, or the
//!   diff computed, after the `mprotect`, as before, so local writes until then are in them; and
//!   the message goes only after the `mprotect`, so nobody elsewhere acts on it before the page is
//!   closed here. Frames are written at the end of the turn anyway, so putting the message off
//!   delays nothing; the pages of a barrier's drops, or of the invalidations a write of a row
//!   sends, change protection with one `mprotect` instead of one each.
//!
//! Any other effect (on any page) first carries out what was put off, in order, so effects still
//! take effect in the order returned.

use std::sync::atomic::Ordering;

use dsm::fault;
use dsm::protocol::lrc::diff;
use dsm::protocol::{Effect, Message, Payload};
use dsm::sys::PAGE_SIZE;
use dsm::{Access, NodeId, PageId};

use super::fatal;
use super::service::Service;
use super::wire::ProtocolWire;

/// Pages the service thread prepares per turn at most (≈ 130 µs of kernel work here).
const PREPARE_PER_TURN: u64 = 32;

impl<P: ProtocolWire + Send + 'static> Service<P> {
    /// Carries out `effects`, in order (and empties the list). `data` is the payload of the
    /// message being handled (page bytes or a diff), if any.
    pub(super) fn exec(&mut self, effects: &mut Vec<Effect<P::Msg>>, data: Option<&[u8]>) {
        let geometry = self.engine.proto.geometry();
        if self.engine.proto.needs_release() {
            self.rt.needs_release.store(true, Ordering::SeqCst);
        }
        if self.engine.proto.has_stale() {
            self.rt.has_stale.store(true, Ordering::SeqCst);
        }
        // The page installed or twinned by the effect just before, if any: its opening may be put
        // off.
        let mut installed = None;
        let mut effects = effects.drain(..).peekable();
        while let Some(e) = effects.next() {
            crate::counters::log_effect(&e, geometry.pages_per_node);
            // An effect on a page with something put off carries that out first (a page closed
            // and reopened in one turn, or reopened and recalled, must keep that order).
            let own_wake = matches!(e, Effect::Wake { page } if self.engine.opening.last().is_some_and(|&(p, _)| p == page));
            if !own_wake && self.is_put_off(&e) {
                self.open_installed();
            }
            match e {
                Effect::Protect { page, access } if installed == Some(page) => {
                    self.engine.opening.push((page, access));
                    continue;
                }
                Effect::Protect { page, access }
                    if effects.peek().is_some_and(
                        |next| matches!(next, Effect::Send { msg, .. } if msg.page() == page),
                    ) =>
                {
                    let Some(send @ Effect::Send { to, msg }) = effects.next() else { unreachable!() };
                    crate::counters::log_effect(&send, geometry.pages_per_node);
                    self.engine.closing.push((page, access, to, msg));
                    installed = None;
                    continue;
                }
                Effect::Wake { .. } if own_wake => {
                    installed = None;
                    continue;
                }
                Effect::Install { .. } | Effect::Twin { .. } => {}
                _ => self.open_installed(),
            }
            installed = None;
            match e {
                Effect::Send { to, msg } => self.send(to, msg),
                Effect::Install { page } => {
                    match data {
                        // SAFETY: the protocol installs only while application access to the page
                        // is closed; `page` is in range.
                        Some(d) if d.len() == PAGE_SIZE => unsafe { self.space.install(page, d) },
                        _ => fatal(&format!("protocol asked to install {page} without its bytes")),
                    }
                    installed = Some(page);
                }
                Effect::Twin { page } => {
                    // SAFETY: the page is in range and at most readable by the application now.
                    let bytes = unsafe { self.space.page_bytes(page) };
                    self.engine.twins.insert(page, bytes.into());
                    installed = Some(page);
                }
                Effect::ApplyDiff { page } => {
                    let d = data.unwrap_or(&[]);
                    let at = self.space.runtime_addr(page) as *mut u8;
                    // SAFETY: the runtime view of an in-range page; the diff was validated and
                    // writes only the bytes it carries, which no local thread writes meanwhile (the
                    // program is data-race free: the writer released them).
                    let page_bytes = unsafe { std::slice::from_raw_parts_mut(at, PAGE_SIZE) };
                    if let Err(e) = diff::apply(d, page_bytes) {
                        fatal(&format!("applying a validated diff to {page} failed: {e}"));
                    }
                }
                Effect::Protect { page, access } => {
                    if let Err(e) = self.space.protect(page, access) {
                        fatal(&format!("mprotect of {page}: {e}"));
                    }
                }
                Effect::Wake { page } => {
                    if let Some(slots) = self.engine.waiting.remove(&page) {
                        for s in slots {
                            fault::complete(s);
                        }
                    }
                }
                Effect::Released { release } => {
                    if let Some(done) = self.engine.releases.remove(&release) {
                        done.set();
                    }
                }
            }
        }
        self.rt.needs_release.store(self.engine.proto.needs_release(), Ordering::SeqCst);
        self.rt.has_stale.store(self.engine.proto.has_stale(), Ordering::SeqCst);
        self.rt.wants_drops.store(self.engine.proto.wants_drops(), Ordering::Relaxed);
        self.rt.arrival_answers.store(self.engine.proto.answers_at_arrival(), Ordering::SeqCst);
    }

    /// Whether `e` is about a page whose opening or closing is put off.
    fn is_put_off(&self, e: &Effect<P::Msg>) -> bool {
        let Some(page) = e.page() else { return false };
        self.engine.opening.iter().any(|&(p, _)| p == page)
            || self.engine.closing.iter().any(|&(p, ..)| p == page)
    }

    /// Sends `msg` to `to` with its payload, read (or computed, for a diff) now.
    fn send(&mut self, to: NodeId, msg: P::Msg) {
        if to == self.rt.me || self.links.lost.get(to.index()).is_none_or(|&lost| lost) {
            if self.rt.is_stopping() {
                // The cluster is going away and that node with it: nobody waits.
                return;
            }
            fatal(&format!("no connection to {to} for {msg:?}"));
        }
        let head = P::head(&msg);
        let page = msg.page();
        crate::trace::message(true, to, &head, page.0);
        let fetches = msg.fetches();
        if fetches > 0 && self.engine.prepare {
            self.engine.fetched.push((page, fetches));
        }
        match msg.payload() {
            Payload::None => self.rt.send_parts(to, &head, &[], true),
            Payload::Page => {
                // The answer to a direct read goes back on the connection it came on.
                let route = self.take_route(to, &msg);
                // SAFETY: the page lies in the space (checked by the protocol); an
                // earlier Protect revoked write access where a stable copy is needed.
                let bytes = unsafe { self.space.page_bytes(page) };
                match route {
                    Some(route) => route.answer_page(self.rt, page, bytes),
                    None => self.rt.send_parts(to, &head, bytes, true),
                }
            }
            Payload::Diff => {
                let Some(twin) = self.engine.twins.remove(&page) else {
                    fatal(&format!("protocol asked for a diff of {page} without a twin"))
                };
                // SAFETY: as above; the protocol has closed the page to writes.
                let now = unsafe { self.space.page_bytes(page) };
                let mut buf = std::mem::take(&mut self.engine.diff_buf);
                buf.clear();
                diff::encode(&twin, now, &mut buf);
                self.rt.send_parts(to, &head, &buf, true);
                self.engine.diff_buf = buf;
            }
        }
    }

    /// Carries out what was put off: closes the pages whose bytes leave and sends them, then opens
    /// the pages that arrived and lets the threads waiting for them go (runs of neighbours with
    /// the same access in one `mprotect` each).
    pub(super) fn open_installed(&mut self) {
        if !self.engine.closing.is_empty() {
            let mut closing = std::mem::take(&mut self.engine.closing);
            self.protect_runs(closing.iter().map(|&(page, access, _, _)| (page, access)));
            for &(_, _, to, msg) in &closing {
                self.send(to, msg);
            }
            closing.clear();
            self.engine.closing = closing;
        }
        if self.engine.opening.is_empty() {
            return;
        }
        let mut opening = std::mem::take(&mut self.engine.opening);
        self.protect_runs(opening.iter().copied());
        for &(page, _) in &opening {
            if let Some(slots) = self.engine.waiting.remove(&page) {
                slots.into_iter().for_each(fault::complete);
            }
        }
        opening.clear();
        self.engine.opening = opening;
    }

    /// Gives memory to pages asked for (neighbours merged into one call), once the requests have
    /// left, at most [`PREPARE_PER_TURN`] pages per turn, lowest first (what is left waits in
    /// `engine.fetched` for the next turn).
    /// The first write of a page of the space costs the kernel an allocation and a zeroing (16
    /// times the copy that installs it here); done now, it happens while the answers travel
    /// instead of on the faulting thread's path (`Space::prepare_run`). The bound keeps an answer
    /// that arrives meanwhile from waiting behind a long run: the next turn takes it in first.
    pub(super) fn prepare_fetched(&mut self) {
        if self.engine.fetched.is_empty() {
            return;
        }
        merge_runs(&mut self.engine.fetched);
        for (first, count) in take_pages(&mut self.engine.fetched, PREPARE_PER_TURN) {
            match self.space.prepare_run(first, count) {
                // A kernel without the advice (before 5.14): the installs give the memory.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.engine.prepare = false;
                    self.engine.fetched.clear();
                    return;
                }
                // Anything else (no memory now) only leaves the work to the install.
                _ => {}
            }
        }
    }

    /// Sets the protection of `pages`, a run of neighbours with the same access at a time.
    fn protect_runs(&self, pages: impl Iterator<Item = (PageId, Access)>) {
        let mut run: Option<(PageId, u64, Access)> = None;
        for (page, access) in pages {
            match &mut run {
                Some((first, count, a)) if *a == access && first.0 + *count == page.0 => *count += 1,
                _ => {
                    if let Some((first, count, a)) = run.take() {
                        self.protect_run(first, count, a);
                    }
                    run = Some((page, 1, access));
                }
            }
        }
        if let Some((first, count, a)) = run {
            self.protect_run(first, count, a);
        }
    }

    fn protect_run(&self, first: PageId, count: u64, access: Access) {
        if let Err(e) = self.space.protect_run(first, count, access) {
            fatal(&format!("mprotect of {count} pages from {first}: {e}"));
        }
    }

    /// Checks a received payload before the protocol sees its message: a diff must be well formed
    /// (a malformed one means a broken peer, and must not be half applied).
    pub(super) fn check_payload(&self, msg: &P::Msg, data: Option<&[u8]>) -> Result<(), String> {
        if msg.payload() == Payload::Diff
            && let Err(e) = diff::validate(data.unwrap_or(&[]), PAGE_SIZE)
        {
            return Err(format!("it sent a malformed diff ({e})"));
        }
        Ok(())
    }
}

/// Sorts runs of pages `(first, count)` and merges those that overlap or touch, in place.
fn merge_runs(runs: &mut Vec<(PageId, u64)>) {
    runs.sort_unstable();
    let mut kept = 0;
    for i in 0..runs.len() {
        let (page, count) = runs[i];
        if kept > 0 {
            let (first, n) = &mut runs[kept - 1];
            if page.0 <= first.0 + *n {
                *n = (*n).max(page.0 + count - first.0);
                continue;
            }
        }
        runs[kept] = (page, count);
        kept += 1;
    }
    runs.truncate(kept);
}

/// Takes up to `budget` pages off the front of `runs` (sorted), splitting a run if needed.
fn take_pages(runs: &mut Vec<(PageId, u64)>, budget: u64) -> Vec<(PageId, u64)> {
    let mut taken = Vec::new();
    let mut left = budget;
    while left > 0 && !runs.is_empty() {
        let (first, count) = runs[0];
        let n = count.min(left);
        taken.push((first, n));
        left -= n;
        if n == count {
            runs.remove(0);
        } else {
            runs[0] = (PageId(first.0 + n), count - n);
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(v: &[(u64, u64)]) -> Vec<(PageId, u64)> {
        v.iter().map(|&(p, n)| (PageId(p), n)).collect()
    }

    #[test]
    fn runs_asked_for_in_one_turn_merge_when_they_touch_or_overlap() {
        let mut v = runs(&[(10, 1), (3, 2), (11, 4), (5, 1), (20, 1), (12, 1), (30, 8), (31, 2)]);
        merge_runs(&mut v);
        assert_eq!(v, runs(&[(3, 3), (10, 5), (20, 1), (30, 8)]));
        let mut one = runs(&[(7, 1)]);
        merge_runs(&mut one);
        assert_eq!(one, runs(&[(7, 1)]));
        let mut none = Vec::new();
        merge_runs(&mut none);
        assert!(none.is_empty());
        let mut gap = runs(&[(1, 1), (3, 1)]);
        merge_runs(&mut gap);
        assert_eq!(gap, runs(&[(1, 1), (3, 1)]), "a page between them was not asked for");
    }

    #[test]
    fn a_turn_prepares_a_bounded_number_of_pages_lowest_first() {
        let mut v = runs(&[(10, 20), (40, 30), (100, 5)]);
        assert_eq!(take_pages(&mut v, 32), runs(&[(10, 20), (40, 12)]));
        assert_eq!(v, runs(&[(52, 18), (100, 5)]));
        assert_eq!(take_pages(&mut v, 32), runs(&[(52, 18), (100, 5)]));
        assert!(v.is_empty());
        assert!(take_pages(&mut v, 32).is_empty());
        let mut exact = runs(&[(0, 32), (50, 1)]);
        assert_eq!(take_pages(&mut exact, 32), runs(&[(0, 32)]));
        assert_eq!(exact, runs(&[(50, 1)]));
    }
}
