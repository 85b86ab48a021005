//! The `receptor` daemon (the roles of Go's `cmd/receptor`, `controlsvc` and `workceptor`).
//!
//! # Layout
//! - [`ops`]: the single implementation of every control operation.
//! - [`config`]: command line and YAML into one validated [`config::Config`].
//! - [`daemon`]: [`daemon::Daemon`], the running node with its backends and control services.
//! - [`control`]: the classic line protocol over Unix sockets, a thin front-end over `ops`.
//! - [`services`]: the TCP, UDP and Unix-socket service proxies.
//! - [`grpc`]: the gRPC API (`proto/receptor/v1`), a second thin front-end over `ops`.
//! - [`metrics`]: the work and control metrics, Prometheus rendering and the `metrics`
//!   HTTP endpoint, over the mesh crate's registry.
//! - [`tls`]: `tls-server` / `tls-client` files loaded into the mesh's TLS configurations.
//! - [`certs`]: the `cert-init`, `cert-makereq` and `cert-signreq` utilities.
//! - [`work`]: the work engine (Go's Workceptor) and the hidden command runner.
//! - [`telemetry`]: the log subscriber, OTLP export of spans, W3C trace context.
//! - `gojson`: JSON written as Go writes it.
//! - `fuzzing` (feature `fuzzing`, and in unit tests): the bodies of the cargo-fuzz targets.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod certs;
pub mod config;
pub mod control;
pub mod daemon;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod gojson;
pub mod grpc;
mod idle;
pub mod metrics;
pub mod ops;
pub mod services;
pub mod telemetry;
pub mod tls;
pub mod work;

/// An error and its causes on one line, `a: b: c`: how errors are shown in logs, `ERROR:`
/// replies and `Error:` lines.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
