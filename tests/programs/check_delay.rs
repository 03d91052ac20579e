//! The network-delay emulation (`RTHREADS_NET_DELAY_US`, run with 5000 by the test): every
//! cross-node exchange waits at least the emulated delay each way, and programs still compute the
//! same results. Only lower bounds are checked (a slow machine only makes things slower).
use std::time::{Duration, Instant};

use rthreads::sync::{Arc, Mutex};

#[rthreads::main]
fn main() {
    let one_way = Duration::from_micros(
        std::env::var("RTHREADS_NET_DELAY_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .expect("RTHREADS_NET_DELAY_US"),
    );
    // Remote spawn + join: the spawn message out, the completion back.
    let t = Instant::now();
    let x = rthreads::Builder::new().node(1).spawn(|| 6 * 7).unwrap().join().unwrap();
    let spawn_join = t.elapsed();
    assert_eq!(x, 42);
    assert!(spawn_join >= 2 * one_way, "spawn+join took {spawn_join:?}, less than two delays");

    // A read fault on node 1 of a page node 0 wrote: the request out, the page back.
    let data = Arc::new(vec![3u8; 4 * 4096]);
    let d = Arc::clone(&data);
    let fault = rthreads::Builder::new()
        .node(1)
        .spawn(move || {
            let p = (d.as_ptr() as usize).next_multiple_of(4096) as *const u8;
            let t = Instant::now();
            // SAFETY: `p` is inside the vector, which this closure keeps alive.
            let v = unsafe { std::ptr::read_volatile(p) };
            (v, t.elapsed())
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(fault.0, 3);
    assert!(fault.1 >= 2 * one_way, "a remote read fault took {:?}, less than two delays", fault.1);

    // A lock managed by node 0, taken from node 1 on a direct connection.
    let m = Arc::new(Mutex::new(0u64));
    let m1 = Arc::clone(&m);
    let lock = rthreads::Builder::new()
        .node(1)
        .spawn(move || {
            let t = Instant::now();
            *m1.lock().unwrap() += 1;
            t.elapsed()
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(*m.lock().unwrap(), 1);
    assert!(lock >= 2 * one_way, "a remote lock took {lock:?}, less than two delays");
    println!(
        "emulated delay {one_way:?}: spawn+join {spawn_join:?}, read fault {:?}, remote lock {lock:?}",
        fault.1
    );
    println!("delay ok");
}
