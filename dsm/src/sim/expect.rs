//! Effect sequences the protocols' tests expect often, by name.

use crate::protocol::Effect;
use crate::{Access, PageId};

/// `page` arrives with `access`: installed, opened, its waiters woken.
pub fn arrives<M>(page: PageId, access: Access) -> Vec<Effect<M>> {
    vec![Effect::Install { page }, Effect::Protect { page, access }, Effect::Wake { page }]
}

/// `page` opens for `access` with the bytes already here, its waiters woken.
pub fn opens<M>(page: PageId, access: Access) -> Vec<Effect<M>> {
    vec![Effect::Protect { page, access }, Effect::Wake { page }]
}

/// A readable copy of `page` becomes writable: a twin, write access, its waiters woken.
pub fn twinned<M>(page: PageId) -> Vec<Effect<M>> {
    vec![Effect::Twin { page }, Effect::Protect { page, access: Access::Write }, Effect::Wake { page }]
}

/// `Send { to, msg }`.
pub fn send<M>(to: u16, msg: M) -> Effect<M> {
    Effect::Send { to: crate::NodeId(to), msg }
}

/// `Protect { page, access }`.
pub fn protect<M>(page: PageId, access: Access) -> Effect<M> {
    Effect::Protect { page, access }
}
