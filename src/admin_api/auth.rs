//! Who may call an admin API method: the caller's verified TLS client certificate, checked
//! by the same [`Checker`] as any request, against `admin_api.policy`.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

use crate::cert::CertEncoding;
use crate::check::{CheckInput, Checker};
use crate::clock;
use crate::config::DenyDetail;
use crate::store::Actor;

/// The metadata key a refusal carries its reason code in.
pub(crate) const REASON_KEY: &str = "x-certgate-reason";

pub(crate) struct Authorizer {
    checker: Arc<Checker>,
    policy: String,
}

/// An authorized call: its caller, and where its outcome is counted.
pub(crate) struct Call {
    pub(crate) actor: Actor,
    method: &'static str,
    checker: Arc<Checker>,
}

impl Call {
    /// Count the call's outcome (`ok` or the gRPC code) and hand the result on.
    pub(crate) fn finish<T>(self, result: Result<T, Status>) -> Result<tonic::Response<T>, Status> {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(status) => code_name(status.code()),
        };
        count(&self.checker, self.method, outcome);
        result.map(tonic::Response::new)
    }
}

fn count(checker: &Checker, method: &str, outcome: &str) {
    checker
        .metrics()
        .admin_api_requests
        .with_label_values(&[method, outcome])
        .inc();
}

impl Authorizer {
    pub(crate) fn new(checker: Arc<Checker>, policy: String) -> Self {
        Authorizer { checker, policy }
    }

    /// The checker calls are authorized by (and dry-run decisions made with).
    pub(crate) fn checker(&self) -> &Checker {
        &self.checker
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> Arc<crate::config::Config> {
        self.checker.config()
    }

    /// The decision for the caller of `method` (its gRPC path): the caller as an
    /// [`Actor::Api`] on allow, else the refusal with the decision's reason code.
    pub(crate) async fn authorize<T>(
        &self,
        request: &Request<T>,
        method: &'static str,
    ) -> Result<Call, Status> {
        let decided = self.decide(request, method).await;
        if let Err(status) = &decided {
            let reason = status
                .metadata()
                .get(REASON_KEY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("refused");
            count(&self.checker, method, reason);
        }
        Ok(Call {
            actor: decided?,
            method,
            checker: self.checker.clone(),
        })
    }

    async fn decide<T>(&self, request: &Request<T>, method: &'static str) -> Result<Actor, Status> {
        // The TLS layer requires a client certificate; without one no request gets here,
        // but a connection made some other way must still be refused.
        let Some(leaf) = request.peer_certs().and_then(|c| c.first().cloned()) else {
            return Err(refusal(
                Code::Unauthenticated,
                "no_client_certificate",
                "no client certificate",
            ));
        };
        let outcome = self
            .checker
            .check(
                CheckInput {
                    certificate: Some(leaf.as_ref()),
                    encoding: CertEncoding::Auto,
                    policy: Some(&self.policy),
                    host: None,
                    method: "POST",
                    path: method,
                    malformed: None,
                },
                clock::unix_now(),
            )
            .await;
        // A shadow policy (`enforce: false`) answers its denies as allows on the proxy path;
        // here a deny is a deny.
        if let Err(deny) = &outcome.decision {
            let code = match deny.reason.http_status() {
                401 => Code::Unauthenticated,
                403 => Code::PermissionDenied,
                503 => Code::Unavailable,
                _ => Code::InvalidArgument,
            };
            let message = match outcome.config().deny_detail {
                DenyDetail::Full => deny.message.as_str(),
                DenyDetail::Reason => "refused",
            };
            return Err(refusal(code, deny.reason.as_str(), message));
        }
        let id = outcome
            .identity()
            .ok_or_else(|| Status::internal("allowed without an identity"))?;
        Ok(Actor::Api {
            principal_id: id.principal_id().unwrap_or_default().to_owned(),
            cn: id.common_name().map(str::to_owned),
            serial: id.serial().to_string(),
            sha256: id.sha256_hex(),
        })
    }
}

/// A refused call: the reason code leads the message and is in the metadata.
fn refusal(code: Code, reason: &'static str, message: &str) -> Status {
    let mut status = Status::new(code, format!("{reason}: {message}"));
    status
        .metadata_mut()
        .insert(REASON_KEY, MetadataValue::from_static(reason));
    status
}

/// The gRPC code as a metric label (`not_found`, `invalid_argument`, …).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
        Code::Unknown => "unknown",
    }
}
