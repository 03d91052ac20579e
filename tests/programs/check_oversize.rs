//! Issue 15: an allocation larger than a node's share of the shared space. `check_oversize BYTES`
//! asks for it on node 0; `check_oversize BYTES remote` on node 1. The allocator reports why
//! before std's "memory allocation of N bytes failed", and the node ends as std makes it.
#[rthreads::main]
fn main() {
    let mut args = std::env::args().skip(1);
    let bytes: usize =
        args.next().and_then(|a| a.parse().ok()).expect("usage: check_oversize BYTES [remote]");
    let grab = move || {
        let v: Vec<u8> = Vec::with_capacity(bytes);
        // Kept, so an optimised build cannot leave the allocation out.
        std::hint::black_box(v.as_ptr());
        println!("allocated {} bytes on node {}", v.capacity(), rthreads::current_node());
    };
    if args.next().as_deref() == Some("remote") {
        rthreads::Builder::new().node(1).spawn(grab).unwrap().join().unwrap();
    } else {
        grab();
    }
}
