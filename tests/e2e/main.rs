//! Whole-system tests: real `receptor` processes on 127.0.0.1 with ephemeral ports, temp
//! dirs, and the real receptorctl from PyPI. One test binary keeps link times down.

mod abuse;
mod ansible;
mod cli;
mod config;
mod control;
mod crash;
mod deploy;
mod faults;
mod grpc;
mod harness;
mod mesh;
mod metrics;
mod netns;
mod proxy;
mod receptorctl_rs;
mod reload;
mod remote;
mod telemetry;
mod work;
