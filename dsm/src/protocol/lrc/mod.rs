//! Release-consistent coherence with multiple writers per page (work in progress).

pub mod diff;
