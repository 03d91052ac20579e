//! Faults outside the shared space reach the handler that was there before ours.
//! `overflow`: a thread on node 1 overflows its stack (std reports it); `segv`: node 0 reads
//! address 8 (the process dies of SIGSEGV, as without rthreads).

#[allow(unconditional_recursion)]
fn recurse(depth: u64, buf: &mut [u8; 1024]) -> u64 {
    let mut local = [depth as u8; 1024];
    local[0] = buf[1];
    std::hint::black_box(&mut local);
    recurse(depth + 1, &mut local) + u64::from(local[3])
}

#[rthreads::main]
fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("overflow") => {
            let h = rthreads::Builder::new()
                .node(1)
                .name("deep".into())
                .spawn(|| recurse(0, &mut [0; 1024]))
                .unwrap();
            let _ = h.join();
            unreachable!("the overflowing node aborts");
        }
        Some("segv") => {
            // SAFETY: deliberately invalid: the test wants the default fate of a wild read.
            let v = unsafe { std::ptr::read_volatile(8 as *const u8) };
            println!("unreachable {v}");
        }
        _ => eprintln!("usage: check_chain overflow|segv"),
    }
}
