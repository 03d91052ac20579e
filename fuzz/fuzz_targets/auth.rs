//! Fuzz target: `net::fuzzing::auth` (see that function for what it checks).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| net::fuzzing::auth(data));
