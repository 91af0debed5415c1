//! Integration test modules.

pub mod harness;
pub mod world;

mod cli;
mod crl;
mod crl_server;
mod drain;
mod dynamodb;
mod envoy;
mod envoy_reload;
mod fail_secure;
mod forward_auth;
mod forwarded;
mod grpc;
mod limits;
mod module;
mod reload;
mod security;
mod store_conformance;
