//! The `receptor` daemon (the roles of Go's `cmd/receptor`, `controlsvc` and `workceptor`).
//!
//! # Layout
//! - [`ops`]: the single implementation of every control operation.
//! - [`control`]: the classic line protocol over Unix sockets, a thin front-end over `ops`.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod control;
pub mod ops;
