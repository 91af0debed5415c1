//! Integration test modules.

pub mod harness;
pub mod world;

mod crl;
mod envoy;
mod grpc;
