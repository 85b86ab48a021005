//! The `receptor` daemon: configuration, control services and the work engine.
//!
//! # Layout
//! - [`config`]: the `receptor --entity k=v ...` command line and YAML files, turned into one
//!   validated [`config::Config`] that reports every problem at once.

pub mod config;
