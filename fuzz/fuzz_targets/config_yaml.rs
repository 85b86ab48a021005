//! A YAML configuration file through the config reader and `reload`'s item comparison.
//! The body and its assertions: `receptor_server::fuzzing::config_yaml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_server::fuzzing::config_yaml(data));
