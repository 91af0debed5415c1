//! Integration test modules.

pub mod harness;
pub mod world;

mod envoy;
mod grpc;
