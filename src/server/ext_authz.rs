//! Envoy ext_authz v3 `Authorization/Check`: the only place that knows the Envoy wire types.
//! Translates a `CheckRequest` into a [`CheckInput`] and an [`Outcome`] into a
//! `CheckResponse`; never decides anything itself.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use super::answer::{Answer, Answers};
use crate::cert::CertEncoding;
use crate::check::{CheckInput, Checker, Outcome};
use crate::config::Via;
use crate::observe::{self, IdentityIn, RequestMeta, Transport};

/// The ext_authz gRPC service.
pub struct ExtAuthz {
    checker: Arc<Checker>,
    answers: Answers,
}

impl ExtAuthz {
    /// Serve checks with `checker`.
    pub fn new(checker: Arc<Checker>) -> Self {
        ExtAuthz {
            checker,
            answers: Answers::default(),
        }
    }
}

/// The decoded answer, for callers in process (tests, fuzzing); the server writes the
/// encoded [`Answer`] itself (`super::authz_service`).
#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        self.answer(request)
            .await
            .into_message()
            .map(Response::new)
            .map_err(|e| Status::internal(format!("certgate could not read its answer: {e}")))
    }
}

impl ExtAuthz {
    /// Decide one `Check` and answer it.
    pub(crate) async fn answer(&self, request: Request<CheckRequest>) -> Answer {
        let peer = request.remote_addr().map(|a| a.ip());
        let (metadata, _, request) = request.into_parts();
        let attributes = request.attributes.as_ref();
        let http = attributes
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        // One generation from reading the request to answering it: trusted proxies here, the
        // decision, and the header names and deny detail of the answer.
        let generation = self.checker.generation();
        let config = &generation.config;
        // Envoy's own view of the TLS peer first. Without one, only a `via: ext_authz` source
        // (XFCC from an Envoy that runs SANITIZE_SET, so a client-sent copy never gets here)
        // and only from a trusted caller: Envoy copies every other client header verbatim.
        let (certificate, encoding) = match attributes
            .and_then(|a| a.source.as_ref())
            .map(|peer| peer.certificate.as_bytes())
            .filter(|c| !c.is_empty())
        {
            Some(cert) => (Some(cert), CertEncoding::Auto),
            None => super::forwarded_certificate(
                &config.forwarded_certificates,
                Via::ExtAuthz,
                peer,
                |name| http.and_then(|h| h.headers.get(name)).map(String::as_bytes),
            )
            .map_or((None, CertEncoding::Auto), |(s, c)| (Some(c), s.encoding)),
        };
        let input = CheckInput {
            certificate,
            encoding,
            policy: attributes
                .and_then(|a| a.context_extensions.get("policy"))
                .map(String::as_str),
            host: http.map(|h| h.host.as_str()),
            method: http.map_or("", |h| h.method.as_str()),
            path: http.map_or("", |h| h.path.as_str()),
            malformed: None,
        };
        let header = |name: &str| http.and_then(|h| h.headers.get(name)).map(String::as_str);
        let request_id = observe::request_id::request_id(header("x-request-id"));
        // Envoy's tracer puts the ext_authz call's own span in the gRPC metadata; the
        // request's headers carry the downstream span's context.
        let grpc_trace =
            observe::otel::Incoming::from_headers(|name| metadata.get(name)?.to_str().ok());
        let meta = RequestMeta {
            request_id: &request_id,
            host: http.map_or("", |h| h.host.as_str()),
            transport: Transport::Grpc,
            trace: grpc_trace.or(observe::otel::Incoming::from_headers(header)),
        };
        let outcome = self
            .checker
            .check_in(&generation, input, &meta, crate::clock::unix_now())
            .await;
        self.answers.answer(&outcome, request_id.into_owned())
    }
}

/// Build the `CheckResponse` for an outcome: status code, identity headers to set on allow,
/// identity headers to strip on every answer, the JSON body on deny, the request id for the
/// client, and the dynamic metadata; all of it from the configuration that decided.
pub(crate) fn to_response(outcome: &Outcome, request_id: &str) -> CheckResponse {
    let names = &outcome.config().headers;
    let identity_in = outcome.config().observe.identity;
    let status = outcome.http_status();
    let (code, http_response) = match outcome.deny_body(request_id) {
        None => {
            let set = match identity_in {
                IdentityIn::HeadersAndMetadata | IdentityIn::HeadersOnly => outcome.allow_headers(),
                IdentityIn::MetadataOnly => Vec::new(),
            };
            // Envoy applies `headers_to_remove` after `headers`, so only the identity headers
            // not set here are removed; the ones set here overwrite whatever the client sent.
            let headers_to_remove = names
                .all()
                .iter()
                .filter(|n| !set.iter().any(|(name, _)| name == *n))
                .map(|n| (*n).to_owned())
                .collect();
            let headers = set
                .into_iter()
                .map(|(name, value)| header(name, value))
                .collect();
            let ok = OkHttpResponse {
                headers,
                headers_to_remove,
                response_headers_to_add: vec![header(REQUEST_ID, request_id.to_owned())],
                ..Default::default()
            };
            (tonic::Code::Ok, HttpResponse::OkResponse(ok))
        }
        Some(body) => {
            let code = match status {
                400 => tonic::Code::InvalidArgument,
                401 => tonic::Code::Unauthenticated,
                403 => tonic::Code::PermissionDenied,
                _ => tonic::Code::Unavailable,
            };
            let denied = DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: i32::from(status),
                }),
                headers: vec![
                    header("content-type", "application/json".into()),
                    header(REQUEST_ID, request_id.to_owned()),
                ],
                body,
            };
            (code, HttpResponse::DeniedResponse(denied))
        }
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: code as i32,
            message: String::new(),
            details: Vec::new(),
        }),
        http_response: Some(http_response),
        dynamic_metadata: super::metadata::wanted(outcome)
            .then(|| super::metadata::of(outcome, request_id)),
    }
}

/// The response header that carries the request id back to the client.
pub(super) const REQUEST_ID: &str = "x-request-id";

/// How every header of an answer is applied.
pub(super) const APPEND_ACTION: i32 = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;

fn header(name: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value,
            raw_value: Vec::new(),
        }),
        append_action: APPEND_ACTION,
        ..Default::default()
    }
}
