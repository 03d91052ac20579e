//! The program of `docs/tutorial.md`, step 2: a `std::thread` program moved to rthreads by
//! changing its `use` lines and adding `#[rthreads::main]`.

use rthreads as thread; // was: use std::thread;
use rthreads::sync::{Arc, Mutex}; // was: use std::sync::{Arc, Mutex};

#[rthreads::main]
fn main() {
    let total = Arc::new(Mutex::new(0u64));
    let data = Arc::new((1..=1_000_000u64).collect::<Vec<_>>());
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (total, data) = (Arc::clone(&total), Arc::clone(&data));
            thread::spawn(move || {
                let part: u64 = data[i * 125_000..(i + 1) * 125_000].iter().sum();
                *total.lock().unwrap() += part;
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    println!("{}", total.lock().unwrap());
}
