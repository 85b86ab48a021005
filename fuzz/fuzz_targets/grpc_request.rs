//! `receptor.v1` request messages decoded with prost, then the service's checks and conversions.
//! The body and its assertions: `receptor_server::fuzzing::grpc_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_server::fuzzing::grpc_request(data));
