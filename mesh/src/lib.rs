//! The Receptor overlay network (the role of Go's `netceptor`).
//!
//! # Layout
//! - [`id`]: node IDs and 8-byte service names.
//! - [`wire`]: pure encode/decode of the four message types.
//! - [`routing`]: sans-IO link-state routing; time is an argument.
//! - [`adverts`]: the service-advertisement store.
//! - [`firewall`]: pure rule evaluation for data messages.
//! - [`backend`]: the transport trait and one module per transport.
//! - [`node`]: [`Node`], the handle, and the actor that owns sessions and routing.
//! - [`packet_conn`]: datagrams between `(node, service)` pairs.
//! - [`quic`]: streams: QUIC (quinn) over packet conns, with the Go-compatible insecure TLS
//!   of ConnType 1 services and a hook for user TLS.
//! - [`metrics`]: a dependency-free registry of counters, gauges and histograms, read through
//!   one snapshot API by every exporter; the node's `receptor_mesh_*` metrics.
//! - [`tls`]: TLS configurations and certificate checks for backends and mesh streams.
//! - `fuzzing` (feature `fuzzing`, and in unit tests): the bodies of the cargo-fuzz targets.
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod adverts;
pub mod backend;
pub mod firewall;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod id;
pub mod metrics;
pub mod node;
pub mod packet_conn;
pub mod quic;
pub mod routing;
pub mod tls;
pub mod wire;

pub use id::{ServiceName, validate_node_id};
pub use node::{Node, NodeConfig};
pub use packet_conn::PacketConn;
