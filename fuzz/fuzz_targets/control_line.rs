//! Lines of the classic control protocol through its parser.
//! The body and its assertions: `receptor_server::fuzzing::control_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_server::fuzzing::control_line(data));
