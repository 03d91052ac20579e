//! Issue 5: the same program under `rthreads run`, `mpirun` and namespaced hosts. Node 0 prints
//! one line, identical whatever started the cluster.

mod fixture;

#[rthreads::main]
fn main() {
    let (line, ok) = fixture::sums_and_locks(4);
    println!("{line}");
    if !ok {
        std::process::exit(1);
    }
}
