//! certgate: external authorization for mutual-TLS identities.
//!
//! The decision (`authz`) is pure and knows nothing of gRPC or HTTP; `server` translates the
//! wire to it, `store` answers what the state says, `config` turns YAML into a policy set, `crl` keeps verified CRLs fresh in the background,
//! `check` runs one request through all of them, and `app` assembles them into the server.

pub mod admin;
pub mod app;
pub mod authz;
pub mod bootstrap;
pub mod cert;
pub mod check;
pub mod clock;
pub mod config;
pub mod crl;
pub mod metrics;
pub mod pki;
pub mod server;
pub mod store;
