//! Rust client library for the receptor daemon's gRPC control API (`receptor.v1`).
//!
//! [`Client::connect`] reaches a daemon either on a pure gRPC endpoint (the `grpc-service`
//! entity: a Unix socket, or TCP with TLS) or on the classic control socket that the Python
//! `receptorctl` uses, which is upgraded to gRPC by sending the line `grpc` after the
//! greeting. A Go receptor refuses the upgrade; that is reported as
//! [`Error::GrpcNotSupported`].
//!
//! ```no_run
//! use receptor_client::{Client, SubmitOptions, Target};
//! use tokio::io::AsyncWriteExt;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect(Target::parse("/tmp/receptor.sock")?).await?;
//! let status = client.status().await?;
//! println!("{} sees {} nodes", status.node_id, status.known_costs.len());
//!
//! // Submit with a payload from any AsyncRead, then stream the output as it comes.
//! let submitted = client
//!     .submit(SubmitOptions::new("cat"), &b"hello world\n"[..], None)
//!     .await?;
//! let mut output = client.results(&submitted.unit.id, 0, true).await?;
//! tokio::io::copy(&mut output, &mut tokio::io::stdout()).await?;
//! let end = output.end().ok_or("the stream was cut")?;
//! println!("{} after {} bytes", end.unit.state_name(), end.end_offset);
//! client.release(&submitted.unit.id, false).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`Target`], [`TlsOptions`]: addresses and transports (`target.rs`).
//! - [`Client`]: one method per RPC (`client.rs`).
//! - [`Results`]: output as `AsyncRead`/`Stream`, resumed from the last offset
//!   (`results.rs`); [`ServiceStream`]: a duplex stream to a mesh service (`service.rs`).
//! - Rust types for the messages (`types.rs`) and [`Error`] (`error.rs`).
//! - `src/bin/receptorctl/`: the `receptorctl` command line on this library.
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod client;
mod error;
mod results;
mod service;
mod target;
mod types;

pub use client::{Client, Progress};
pub use error::{Error, Result};
pub use receptor_proto::v1;
pub use results::Results;
pub use service::ServiceStream;
pub use target::{Target, TlsOptions};
pub use types::{
    Advertisement, ConnType, Connection, Hop, PingReply, ResultsEnd, Status, SubmitOptions,
    Submitted, TopologyEvent, UnitState, VersionInfo, WorkCommand, WorkEvent, WorkUnit,
    go_duration, parse_go_duration,
};
