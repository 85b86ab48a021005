//! The `receptor.v1` gRPC contract shared by the daemon (`receptor-server`) and its clients
//! (`receptor-client`). Generated at build time from `proto/receptor/v1/*.proto`.
//!
//! # Layout
//! - [`v1`]: messages plus `*_server` and `*_client` modules for every service.

pub mod go_duration;

/// Generated code for package `receptor.v1`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    missing_debug_implementations
)]
pub mod v1 {
    tonic::include_proto!("receptor.v1");
}

/// The protobuf well-known types the contract uses (`Duration`, `Timestamp`).
pub use prost_types;
