//! certgate: external authorization for mutual-TLS identities.
//!
//! The decision (`authz`) is pure and knows nothing of gRPC or HTTP; `server` translates the
//! wire to it, `store` answers what the state says, `config` turns YAML into a policy set, `crl` keeps verified CRLs fresh in the background,
//! `check` runs one request through all of them, and `app` assembles them into the server.
//!
//! The binary (src/main.rs) only calls [`main`]: the command line lives here so that it needs no
//! public paths. What is public is what the integration tests, benchmarks and examples drive
//! certgate through: building a `Config` and a `Checker` around an opened store (`config`,
//! `check`, `app::open_store`, `store`, `metrics`), the test PKI that issues their certificates
//! and CRLs (`pki`), the decision's inputs and reason codes (`authz`, `cert`, `crl`, `clock`),
//! the dev PKI (`bootstrap`) and the gRPC service in-process (`server::ext_authz`); `embed`
//! is what the Envoy dynamic module (`module/`) decides through. Everything
//! else is `pub(crate)`, except for the fuzz targets (`fuzz/`): the `fuzzing` feature adds a
//! hidden `fuzzing` module that runs the internal parsers on outside bytes.

mod admin;
pub mod admin_api;
pub mod app;
pub mod authz;
pub mod bootstrap;
pub mod cert;
pub mod check;
mod cli;
pub mod clock;
pub mod config;
pub mod crl;
pub mod embed;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod inventory;
pub mod metrics;
pub mod observe;
pub mod pki;
mod registration;
pub mod server;
pub mod store;

pub use cli::main;
