//! Integration test modules.

pub mod harness;
pub mod world;

mod admin_api;
mod audit;
mod bulk;
mod cli;
mod crl;
mod crl_server;
mod crl_tls;
mod drain;
mod dynamodb;
mod envoy;
mod envoy_reload;
mod fail_secure;
mod faults;
mod forward_auth;
mod forwarded;
mod grpc;
mod identity_in;
mod inventory;
mod limits;
mod memory;
mod mesh;
mod module;
mod module_metadata;
mod module_xfcc;
mod no_listener;
mod observe;
mod operations;
mod probe;
mod reload;
mod revocation_only;
mod security;
mod store_conformance;
