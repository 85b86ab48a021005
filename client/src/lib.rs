//! Rust client library for the receptor gRPC control API.
//!
//! The daemon does not serve gRPC yet; for now this crate re-exports the generated contract so
//! dependants compile against one source of truth. The client and the Rust `receptorctl`
//! arrive with the gRPC service.
#![warn(missing_docs)]

pub use receptor_proto::v1;
