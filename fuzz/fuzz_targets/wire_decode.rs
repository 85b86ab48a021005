//! Arbitrary bytes through the netceptor wire decoder; what decodes must re-encode stably.
//! The body and its assertions: `receptor_mesh::fuzzing::wire_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_mesh::fuzzing::wire_decode(data));
