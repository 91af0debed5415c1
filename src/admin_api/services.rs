//! The four services. Each call is authorized first (nothing is read or written for a
//! refused caller), its input is checked against the bounds of principal.proto, and then
//! it does what the matching `certgate` command does, with the caller as the actor.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::{Request, Response, Status};

use super::auth::Authorizer;
use super::convert::check_response;
use super::pb;
use crate::cert::{CertEncoding, RevocationReason, Serial};
use crate::check::CheckInput;
use crate::clock;
use crate::registration::{self, RegisterError};
use crate::store::{Admin, AuditQuery, Principal, PrincipalStatus, StoreError, audit};

/// Principal ids, types, roles, serials, policies, hosts, methods: at most this many bytes.
const MAX_ID: usize = 256;
/// Reasons, issuers and paths: at most this many bytes.
const MAX_TEXT: usize = 1024;
/// Role overrides: at most this many roles.
const MAX_ROLES: usize = 64;
/// A certificate: at most this many bytes.
const MAX_CERT: usize = 64 << 10;
/// `page_size` 0 means this many.
const DEFAULT_PAGE: usize = 100;
/// The largest `page_size`.
const MAX_PAGE: usize = 1000;

pub(super) struct Api {
    pub(super) auth: Authorizer,
    pub(super) store: Arc<dyn Admin>,
}

type Answer<T> = Result<Response<T>, Status>;

/// `value` when it is at most `max` bytes, else INVALID_ARGUMENT naming `field`.
fn bounded<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str, Status> {
    if value.len() > max {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes; at most {max}",
            value.len()
        )));
    }
    Ok(value)
}

/// A non-blank `value` of at most `max` bytes.
fn required<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str, Status> {
    if value.trim().is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field} must not be empty"
        )));
    }
    bounded(field, value, max)
}

fn serial(text: &str) -> Result<Serial, Status> {
    bounded("serial", text, MAX_ID)?
        .parse()
        .map_err(|e| Status::invalid_argument(format!("serial: {e}")))
}

fn certificate(raw: &[u8]) -> Result<&[u8], Status> {
    if raw.is_empty() || raw.len() > MAX_CERT {
        return Err(Status::invalid_argument(format!(
            "certificate is {} bytes; 1 to {MAX_CERT}",
            raw.len()
        )));
    }
    Ok(raw)
}

/// A store failure as the status a client can act on; an outage's detail (paths, tables)
/// stays in the server's log.
fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { .. } => Status::not_found(e.to_string()),
        StoreError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        StoreError::Unavailable(outage) => {
            tracing::warn!(error = %outage, "admin API: store unavailable");
            Status::unavailable(format!("store unavailable: {}", outage.cause.as_str()))
        }
        e => {
            tracing::warn!(error = %e, "admin API: store error");
            Status::internal(e.to_string())
        }
    }
}

fn not_found(kind: &'static str, key: &str) -> Status {
    store_status(StoreError::NotFound {
        kind,
        key: key.to_owned(),
    })
}

/// The opaque page token after `last`, and back.
fn page_token(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(last)
}

fn after_token(token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Status::invalid_argument("page_token is not a token this server issued");
    bounded("page_token", token, 2 * MAX_ID).map_err(|_| invalid())?;
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let id = String::from_utf8(bytes).map_err(|_| invalid())?;
    Ok(Some(id))
}

#[tonic::async_trait]
impl pb::principal_service_server::PrincipalService for Api {
    async fn create(&self, request: Request<pb::CreatePrincipalRequest>) -> Answer<pb::Principal> {
        let call = self
            .auth
            .authorize(&request, "/certgate.admin.v1.PrincipalService/Create")
            .await?;
        let r = request.into_inner();
        let result = async {
            required("principal_id", &r.principal_id, MAX_ID)?;
            required("principal_type", &r.principal_type, MAX_ID)?;
            if let Some(roles) = &r.roles {
                if roles.roles.len() > MAX_ROLES {
                    return Err(Status::invalid_argument(format!(
                        "at most {MAX_ROLES} roles"
                    )));
                }
                for role in &roles.roles {
                    required("roles", role, MAX_ID)?;
                }
            }
            let principal = Principal {
                principal_id: r.principal_id,
                principal_type: Some(r.principal_type),
                status: PrincipalStatus::Active,
                suspended_at: None,
                suspended_reason: None,
                roles: r.roles.map(|r| r.roles),
                created_at: Some(clock::unix_millis()),
            };
            self.store
                .create_principal(&principal, &call.actor)
                .await
                .map_err(store_status)?;
            Ok(pb::Principal::from(&principal))
        }
        .await;
        call.finish(result)
    }

    async fn get(&self, request: Request<pb::GetPrincipalRequest>) -> Answer<pb::Principal> {
        let call = self
            .auth
            .authorize(&request, "/certgate.admin.v1.PrincipalService/Get")
            .await?;
        let id = &request.get_ref().principal_id;
        let result = async {
            bounded("principal_id", id, MAX_ID)?;
            match self.store.get_principal(id).await.map_err(store_status)? {
                Some(p) => Ok(pb::Principal::from(&p)),
                None => Err(not_found("principal", id)),
            }
        }
        .await;
        call.finish(result)
    }

    async fn list(
        &self,
        request: Request<pb::ListPrincipalsRequest>,
    ) -> Answer<pb::ListPrincipalsResponse> {
        let call = self
            .auth
            .authorize(&request, "/certgate.admin.v1.PrincipalService/List")
            .await?;
        let r = request.get_ref();
        let result = async {
            let size = match r.page_size as usize {
                0 => DEFAULT_PAGE,
                n if n > MAX_PAGE => {
                    return Err(Status::invalid_argument(format!(
                        "page_size is at most {MAX_PAGE}"
                    )));
                }
                n => n,
            };
            let after = after_token(&r.page_token)?;
            let wanted = match r.status() {
                pb::PrincipalStatus::Unspecified => None,
                pb::PrincipalStatus::Active => Some(PrincipalStatus::Active),
                pb::PrincipalStatus::Suspended => Some(PrincipalStatus::Suspended),
            };
            // The backends list everything ordered by id; the page is cut here.
            let all = self.store.list_principals().await.map_err(store_status)?;
            let mut page = all.iter().filter(|p| {
                wanted.is_none_or(|s| p.status == s)
                    && after.as_deref().is_none_or(|a| p.principal_id.as_str() > a)
            });
            let principals: Vec<pb::Principal> =
                page.by_ref().take(size).map(pb::Principal::from).collect();
            let next_page_token = match (page.next(), principals.last()) {
                (Some(_), Some(last)) => page_token(&last.principal_id),
                _ => String::new(),
            };
            Ok(pb::ListPrincipalsResponse {
                principals,
                next_page_token,
            })
        }
        .await;
        call.finish(result)
    }

    async fn suspend(
        &self,
        request: Request<pb::SuspendPrincipalRequest>,
    ) -> Answer<pb::Principal> {
        let call = self
            .auth
            .authorize(&request, "/certgate.admin.v1.PrincipalService/Suspend")
            .await?;
        let r = request.get_ref();
        let result = async {
            required("principal_id", &r.principal_id, MAX_ID)?;
            required("reason", &r.reason, MAX_TEXT)?;
            let p = self
                .store
                .suspend_principal(
                    &r.principal_id,
                    &r.reason,
                    clock::unix_millis(),
                    &call.actor,
                )
                .await
                .map_err(store_status)?;
            Ok(pb::Principal::from(&p))
        }
        .await;
        call.finish(result)
    }

    async fn activate(
        &self,
        request: Request<pb::ActivatePrincipalRequest>,
    ) -> Answer<pb::Principal> {
        let call = self
            .auth
            .authorize(&request, "/certgate.admin.v1.PrincipalService/Activate")
            .await?;
        let r = request.get_ref();
        let result = async {
            required("principal_id", &r.principal_id, MAX_ID)?;
            let p = self
                .store
                .activate_principal(&r.principal_id, &call.actor)
                .await
                .map_err(store_status)?;
            Ok(pb::Principal::from(&p))
        }
        .await;
        call.finish(result)
    }
}

#[tonic::async_trait]
impl pb::certificate_service_server::CertificateService for Api {
    async fn register(
        &self,
        request: Request<pb::RegisterCertificateRequest>,
    ) -> Answer<pb::CertificateRecord> {
        let call = self
            .auth
            .authorize(&request, "/certgate.admin.v1.CertificateService/Register")
            .await?;
        let r = request.into_inner();
        let result = async {
            let raw = certificate(&r.certificate)?;
            if let Some(p) = &r.principal_id {
                required("principal_id", p, MAX_ID)?;
            }
            let config = self.auth.config();
            let record = registration::register(
                &config,
                self.store.as_ref(),
                raw,
                r.principal_id,
                r.force,
                &call.actor,
                clock::unix_now(),
            )
            .await
            .map_err(|e| match e {
                RegisterError::Store(e) => store_status(e),
                RegisterError::Unreadable(_) | RegisterError::NoPrincipal => {
                    Status::invalid_argument(e.to_string())
                }
                RegisterError::Untrusted(_) | RegisterError::NotEnrolled(_) => {
                    Status::failed_precondition(e.to_string())
                }
            })?;
            Ok(pb::CertificateRecord::from(&record))
        }
        .await;
        call.finish(result)
    }

    async fn get(
        &self,
        request: Request<pb::GetCertificateRequest>,
    ) -> Answer<pb::CertificateRecord> {
        let call = self
            .auth
            .authorize(&request, "/certgate.admin.v1.CertificateService/Get")
            .await?;
        let result = async {
            let serial = serial(&request.get_ref().serial)?;
            match self
                .store
                .get_certificate(&serial)
                .await
                .map_err(store_status)?
            {
                Some(c) => Ok(pb::CertificateRecord::from(&c)),
                None => Err(not_found("certificate", &serial.to_string())),
            }
        }
        .await;
        call.finish(result)
    }

    async fn list(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Answer<pb::ListCertificatesResponse> {
        let call = self
            .auth
            .authorize(&request, "/certgate.admin.v1.CertificateService/List")
            .await?;
        let r = request.get_ref();
        let result = async {
            if let Some(p) = &r.principal_id {
                bounded("principal_id", p, MAX_ID)?;
            }
            let all = self
                .store
                .list_certificates(r.principal_id.as_deref(), r.expiring_before)
                .await
                .map_err(store_status)?;
            Ok(pb::ListCertificatesResponse {
                certificates: all.iter().map(Into::into).collect(),
            })
        }
        .await;
        call.finish(result)
    }

    async fn list_sightings(
        &self,
        request: Request<pb::ListSightingsRequest>,
    ) -> Answer<pb::ListSightingsResponse> {
        let call = self
            .auth
            .authorize(
                &request,
                "/certgate.admin.v1.CertificateService/ListSightings",
            )
            .await?;
        let result = async {
            let all = self
                .store
                .list_sightings(request.get_ref().expiring_before)
                .await
                .map_err(store_status)?;
            Ok(pb::ListSightingsResponse {
                sightings: all.iter().map(Into::into).collect(),
            })
        }
        .await;
        call.finish(result)
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeCertificateRequest>,
    ) -> Answer<pb::CertificateRecord> {
        let call = self
            .auth
            .authorize(&request, "/certgate.admin.v1.CertificateService/Revoke")
            .await?;
        let r = request.get_ref();
        let result = async {
            let serial = serial(&r.serial)?;
            let reason = bounded("reason", &r.reason, MAX_ID)?
                .parse::<RevocationReason>()
                .ok()
                .filter(|reason| reason.revokes())
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "reason \"{}\" is not an RFC 5280 revocation reason",
                        r.reason
                    ))
                })?;
            if let Some(issuer) = &r.issuer {
                required("issuer", issuer, MAX_TEXT)?;
            }
            // Serials are unique per CA only: another issuer means another certificate.
            let registered = self
                .store
                .get_certificate(&serial)
                .await
                .map_err(store_status)?;
            if let (Some(given), Some(reg)) = (&r.issuer, registered.and_then(|c| c.registration))
                && *given != reg.issuer
            {
                return Err(Status::failed_precondition(format!(
                    "certificate {serial} is registered with issuer '{}', not '{given}'",
                    reg.issuer
                )));
            }
            let revoked = self
                .store
                .revoke_certificate(
                    &serial,
                    r.issuer.as_deref(),
                    reason,
                    clock::unix_millis(),
                    &call.actor,
                )
                .await
                .map_err(store_status)?;
            Ok(pb::CertificateRecord::from(&revoked))
        }
        .await;
        call.finish(result)
    }
}

#[tonic::async_trait]
impl pb::decision_service_server::DecisionService for Api {
    async fn check(&self, request: Request<pb::CheckRequest>) -> Answer<pb::CheckResponse> {
        let call = self
            .auth
            .authorize(&request, "/certgate.admin.v1.DecisionService/Check")
            .await?;
        let r = request.get_ref();
        let result = async {
            let raw = certificate(&r.certificate)?;
            let method = bounded("method", &r.method, MAX_ID)?;
            let path = bounded("path", &r.path, MAX_TEXT)?;
            for (field, value) in [("policy", &r.policy), ("host", &r.host)] {
                if let Some(v) = value {
                    bounded(field, v, MAX_ID)?;
                }
            }
            let outcome = self
                .auth
                .checker()
                .check(
                    CheckInput {
                        host: r.host.as_deref(),
                        certificate: Some(raw),
                        encoding: CertEncoding::Auto,
                        policy: r.policy.as_deref(),
                        method: if method.is_empty() { "GET" } else { method },
                        path: if path.is_empty() { "/" } else { path },
                        malformed: None,
                    },
                    clock::unix_now(),
                )
                .await;
            Ok(check_response(&outcome))
        }
        .await;
        call.finish(result)
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for Api {
    async fn list(&self, request: Request<pb::ListAuditRequest>) -> Answer<pb::ListAuditResponse> {
        let call = self
            .auth
            .authorize(&request, "/certgate.admin.v1.AuditService/List")
            .await?;
        let r = request.into_inner();
        let result = async {
            if let Some(p) = &r.principal {
                bounded("principal", p, MAX_ID)?;
            }
            let query = AuditQuery {
                since: r.since,
                principal: r.principal,
            };
            let records = self
                .store
                .audit_records(&query)
                .await
                .map_err(store_status)?;
            Ok(pb::ListAuditResponse {
                records: records.iter().map(Into::into).collect(),
            })
        }
        .await;
        call.finish(result)
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Answer<pb::VerifyAuditResponse> {
        let call = self
            .auth
            .authorize(&request, "/certgate.admin.v1.AuditService/Verify")
            .await?;
        let result = async {
            let records = self
                .store
                .audit_records(&AuditQuery::default())
                .await
                .map_err(store_status)?;
            Ok(pb::VerifyAuditResponse::from(&audit::verify(&records)))
        }
        .await;
        call.finish(result)
    }
}
