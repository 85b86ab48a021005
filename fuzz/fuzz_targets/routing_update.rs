//! A program of link changes and routing updates (built, or decoded from wire bytes) from several fake peers
//! driving one node's sans-IO routing table; routes must only use live connections.
//! The body and its assertions: `receptor_mesh::fuzzing::routing_update`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_mesh::fuzzing::routing_update(data));
