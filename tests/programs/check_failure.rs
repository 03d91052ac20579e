//! Issue 5: every node busy until the test kills, stops or cuts off one of them.

mod fixture;

#[rthreads::main]
fn main() {
    let secs = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    fixture::keep_busy(std::time::Duration::from_secs(secs));
}
