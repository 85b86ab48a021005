//! A work unit `status` file as read back from disk; what parses must round-trip.
//! The body and its assertions: `receptor_server::fuzzing::status_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_server::fuzzing::status_file(data));
