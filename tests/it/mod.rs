//! Integration test modules.

pub mod harness;
pub mod world;

mod cli;
mod crl;
mod dynamodb;
mod envoy;
mod forward_auth;
mod grpc;
mod limits;
mod reload;
mod security;
mod store_conformance;
