//! Fuzz target: `rthreads::__fuzz::wire_decode`, the runtime's message decoder (see that function
//! for what it checks).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rthreads::__fuzz::wire_decode(data);
});
