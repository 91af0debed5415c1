//! The admin API (README "Operating certgate"): the gRPC services of
//! `proto/certgate/admin/v1` on `listen.admin_api`, over TLS with a client certificate
//! required. Who may call what is decided by the decision engine itself: every call is a
//! check of the caller's certificate against `admin_api.policy` as
//! `POST /certgate.admin.v1.<Service>/<Method>`, so suspension, revocation, enrolment,
//! allowlists and roles apply to operators exactly as to everyone else.

mod auth;
pub(crate) mod client;
pub(crate) mod convert;
mod services;

use std::sync::Arc;

use anyhow::Context as _;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::check::Checker;
use crate::config::{AdminApiSettings, ListenLimits};
use crate::store::Admin;

/// The code `tonic-prost-build` generates from `proto/` at build time.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("certgate.admin.v1");
}

/// The admin API's server: TLS that requires a client certificate chaining to
/// `admin_api.tls.client_ca`, and the four services writing to `store` (the backend, not
/// the decision path's cache: an operator reads what is stored now).
pub(crate) fn router(
    checker: Arc<Checker>,
    store: Arc<dyn Admin>,
    settings: &AdminApiSettings,
    limits: &ListenLimits,
) -> anyhow::Result<tonic::transport::server::Router> {
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&settings.cert_pem, &settings.key_pem))
        .client_ca_root(Certificate::from_pem(&settings.client_ca_pem))
        .client_auth_optional(false);
    let api = Arc::new(services::Api {
        auth: auth::Authorizer::new(checker, settings.policy.clone()),
        store,
    });
    let size = limits.grpc_max_message_size;
    use pb::audit_service_server::AuditServiceServer;
    use pb::certificate_service_server::CertificateServiceServer;
    use pb::decision_service_server::DecisionServiceServer;
    use pb::principal_service_server::PrincipalServiceServer;
    Ok(tonic::transport::Server::builder()
        .tls_config(tls)
        .context("admin_api.tls")?
        .max_concurrent_streams(limits.grpc_max_concurrent_streams)
        .timeout(limits.request_timeout)
        .add_service(PrincipalServiceServer::from_arc(api.clone()).max_decoding_message_size(size))
        .add_service(
            CertificateServiceServer::from_arc(api.clone()).max_decoding_message_size(size),
        )
        .add_service(DecisionServiceServer::from_arc(api.clone()).max_decoding_message_size(size))
        .add_service(AuditServiceServer::from_arc(api).max_decoding_message_size(size)))
}
