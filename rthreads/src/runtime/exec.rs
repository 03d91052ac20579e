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

use std::sync::atomic::Ordering;

use dsm::fault;
use dsm::protocol::lrc::diff;
use dsm::protocol::{Effect, Message, Payload};
use dsm::sys::PAGE_SIZE;

use super::fatal;
use super::service::Service;
use super::wire::ProtocolWire;

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
        for e in effects.drain(..) {
            crate::counters::log_effect(self.rt.me, &e, geometry.pages_per_node);
            match e {
                Effect::Send { to, msg } => {
                    if self.links.conns.get(to.index()).is_none_or(Option::is_none) {
                        if self.rt.is_stopping() {
                            // The cluster is going away and that node with it: nobody waits.
                            continue;
                        }
                        fatal(&format!("no connection to {to} for {msg:?}"));
                    }
                    let head = P::head(&msg);
                    let page = msg.page();
                    crate::trace::message(true, to.0, &head, page.0);
                    match msg.payload() {
                        Payload::None => self.rt.send_parts(to.0, &head, &[], true),
                        Payload::Page => {
                            // SAFETY: the page lies in the space (checked by the protocol); an
                            // earlier Protect revoked write access where a stable copy is needed.
                            let bytes = unsafe { self.space.page_bytes(page) };
                            self.rt.send_parts(to.0, &head, bytes, true);
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
                            self.rt.send_parts(to.0, &head, &buf, true);
                            self.engine.diff_buf = buf;
                        }
                    }
                }
                Effect::Install { page } => match data {
                    // SAFETY: the protocol installs only while application access to the page is
                    // closed; `page` is in range.
                    Some(d) if d.len() == PAGE_SIZE => unsafe { self.space.install(page, d) },
                    _ => fatal(&format!("protocol asked to install {page} without its bytes")),
                },
                Effect::Twin { page } => {
                    // SAFETY: the page is in range and at most readable by the application now.
                    let bytes = unsafe { self.space.page_bytes(page) };
                    self.engine.twins.insert(page, bytes.into());
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
