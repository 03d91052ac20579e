//! Issue 15: a short run that says how many nodes it had, for the checks of mistyped settings
//! and weak secrets (which stop or warn before `main` runs).
#[rthreads::main]
fn main() {
    let n = rthreads::node_count();
    let nodes: Vec<usize> = (0..n)
        .map(|i| rthreads::Builder::new().node(i).spawn(rthreads::current_node).unwrap())
        .map(|h| h.join().unwrap())
        .collect();
    println!("nodes {n}, ran on {nodes:?}");
}
