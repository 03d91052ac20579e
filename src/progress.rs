//! Progress bars for the tools' long runs (`rthreads-bench`, `rthreads-soak`,
//! `rthreads-protocols`), drawn with indicatif on stderr, and only when stderr is a terminal: a run
//! whose stderr goes to a file or a pipe (CI, `rthreads run`, a test) gets no bar and no control
//! characters, and its stdout is never touched.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` steps, `what` written after it; hidden unless stderr is a terminal. Print
/// through [`ProgressBar::suspend`] while it is shown, and end it with
/// [`ProgressBar::finish_and_clear`].
pub fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{elapsed_precise:>8} [{bar:32}] {pos}/{len} {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}
