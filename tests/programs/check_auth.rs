//! Issue 5: strangers knock while the cluster runs. Prints `ready`, waits for a line on its standard
//! input (the test attacks every node meanwhile), then checks that the cluster still works.

mod fixture;

#[rthreads::main]
fn main() {
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let (line, ok) = fixture::sums_and_locks(2);
    println!("{line}");
    if !ok {
        std::process::exit(1);
    }
}
