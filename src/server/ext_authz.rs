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
use crate::config::identity_headers::{Fields, IdentityField, Removal};
use crate::config::{HeaderNames, Via};
use crate::observe::{self, IdentityIn, RequestMeta, Trace, Transport};

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
        let trace = || {
            observe::otel::Incoming::from_headers(|name| metadata.get(name)?.to_str().ok())
                .or(observe::otel::Incoming::from_headers(header))
        };
        let meta = RequestMeta {
            request_id: &request_id,
            host: http.map_or("", |h| h.host.as_str()),
            transport: Transport::Grpc,
            trace: Trace::from_fn(&trace),
        };
        let sent = sent_identity_headers(config, http.map(|h| &h.headers));
        let outcome = self
            .checker
            .check_in(&generation, input, &meta, crate::clock::unix_now())
            .await;
        self.answers.answer(&outcome, request_id.into_owned(), sent)
    }
}

/// The identity headers an answer must remove when it does not set them: all of them, but
/// under `response.remove_identity_headers: when_sent` only those the request carries. A
/// request that shows no headers at all (Envoy's `encode_raw_headers`) carries all of them.
pub(crate) fn sent_identity_headers(
    config: &crate::config::Config,
    headers: Option<&std::collections::HashMap<String, String>>,
) -> Fields {
    match headers.filter(|h| !h.is_empty()) {
        Some(headers) if config.headers.removal == Removal::WhenSent => config
            .headers
            .all()
            .into_iter()
            .zip(IdentityField::ALL)
            .filter(|(name, _)| headers.contains_key(*name))
            .map(|(_, field)| field)
            .collect(),
        _ => Fields::ALL,
    }
}

/// Build the `CheckResponse` for an outcome: status code, identity headers to set on allow,
/// the identity headers of `sent` it does not set to strip, the JSON body on deny, the
/// request id for the client, and the dynamic metadata; all of it from the configuration that
/// decided.
pub(crate) fn to_response(outcome: &Outcome, request_id: &str, sent: Fields) -> CheckResponse {
    let names = &outcome.config().headers;
    let status = outcome.http_status();
    let (code, http_response) = match outcome.deny_body(request_id) {
        None => {
            let set = identity_headers(outcome);
            let headers_to_remove = unset(names, &set)
                .filter(|(field, _)| sent.has(*field))
                .map(|(_, name)| name.to_owned())
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

/// The identity headers an allow of `outcome` sets upstream.
pub(super) fn identity_headers(outcome: &Outcome) -> Vec<(&str, String)> {
    match outcome.config().observe.identity {
        IdentityIn::HeadersAndMetadata | IdentityIn::HeadersOnly => outcome.allow_headers(),
        IdentityIn::MetadataOnly => Vec::new(),
    }
}

/// The identity headers of `names` that an answer setting `set` leaves to be removed. Envoy
/// applies `headers_to_remove` after `headers`, so only these are: the ones set overwrite
/// whatever the client sent.
pub(super) fn unset<'a>(
    names: &'a HeaderNames,
    set: &'a [(&str, String)],
) -> impl Iterator<Item = (IdentityField, &'a str)> + 'a {
    names
        .all()
        .into_iter()
        .zip(IdentityField::ALL)
        .filter(|(name, _)| !set.iter().any(|(n, _)| n == name))
        .map(|(name, field)| (field, name))
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
