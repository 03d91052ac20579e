//! Fuzz target: `dsm::fuzzing::lrc_protocol` (see that function for what it checks).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dsm::fuzzing::lrc_protocol(data));
