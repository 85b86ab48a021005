//! NUL-separated `receptor --entity key=value ...` arguments through the command-line parser.
//! The body and its assertions: `receptor_server::fuzzing::config_cli`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_server::fuzzing::config_cli(data));
