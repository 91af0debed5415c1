//! Integration test modules.

pub mod harness;
pub mod world;

mod cli;
mod envoy;
mod grpc;
