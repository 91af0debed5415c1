//! HTTP forward-auth for ingresses (nginx `auth_request`, ingress-nginx `auth-url`, Traefik
//! `forwardAuth`, Caddy `forward_auth`): translates an auth subrequest into a [`CheckInput`]
//! and an [`Outcome`] into 200 + identity headers, or 401/403/503 + the JSON deny body.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::cert::CertEncoding;
use crate::check::{CheckInput, Checker, Outcome, RequestProblem};
use crate::config::{RequestHeaders, Via};
use crate::observe::{self, RequestMeta, Transport};

/// Every path and method is an auth request; the policy comes from `?policy=NAME`.
pub(crate) fn router(checker: Arc<Checker>) -> Router {
    Router::new().fallback(auth).with_state(checker)
}

/// The one value of header `name`: absent, repeated and non-UTF-8 values are problems, never
/// a reason to look elsewhere.
fn single<'a>(headers: &'a HeaderMap, name: &'a str) -> Result<&'a str, RequestProblem<'a>> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(RequestProblem::Missing(name))?;
    if values.next().is_some() {
        return Err(RequestProblem::Repeated(name));
    }
    std::str::from_utf8(value.as_bytes()).map_err(|_| RequestProblem::NotText(name))
}

async fn auth(
    State(checker): State<Arc<Checker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    // One generation from reading the request to answering it: trusted proxies and request
    // header names here, the decision, and the header names and deny detail of the answer.
    let generation = checker.generation();
    let config = &generation.config;
    let mut malformed = None;
    // A trusted ingress sets the certificate header itself (replacing any client copy); two
    // copies mean something upstream appended instead of replacing.
    let certificate = super::forwarded_certificate(
        &config.forwarded_certificates,
        Via::ForwardAuth,
        Some(peer.ip()),
        |name| headers.contains_key(name).then(|| single(&headers, name)),
    )
    .and_then(|(source, value)| match value {
        Ok(value) => Some((value.as_bytes(), source.encoding)),
        Err(problem) => {
            malformed = Some(problem);
            None
        }
    });
    // Only the pair this deployment names (config requires it with listen.http): a client
    // can add the other pair, and ingresses pass unknown headers on.
    let (method_header, uri_header) = config
        .forward_auth_request_headers
        .unwrap_or(RequestHeaders::Original)
        .names();
    let method = single(&headers, method_header);
    let path = single(&headers, uri_header);
    if malformed.is_none() {
        malformed = method.err().or(path.err());
    }
    // Read only when routes can use it: an ingress that does not send it keeps working. The
    // ingress must set it itself (a client-sent copy would choose the route).
    let host_header = config
        .forward_auth_request_headers
        .unwrap_or(RequestHeaders::Original)
        .host_name();
    let host = match single(&headers, host_header) {
        _ if config.policy_routes.is_empty() => None,
        Ok(host) => Some(host),
        Err(RequestProblem::Missing(_)) => None,
        Err(problem) => {
            malformed = malformed.or(Some(problem));
            None
        }
    };
    let input = CheckInput {
        certificate: certificate.map(|(c, _)| c),
        encoding: certificate.map_or(CertEncoding::Auto, |(_, e)| e),
        policy: query.get("policy").map(String::as_str),
        host,
        method: method.unwrap_or_default(),
        path: path.unwrap_or_default(),
        malformed,
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let request_id = observe::request_id::request_id(header("x-request-id"));
    let trace = || observe::otel::Incoming::from_headers(header);
    let meta = RequestMeta {
        request_id: &request_id,
        host: header("host").unwrap_or(""),
        transport: Transport::ForwardAuth,
        trace: observe::Trace::from_fn(&trace),
    };
    let outcome = checker
        .check_in(&generation, input, &meta, crate::clock::unix_now())
        .await;
    let status = StatusCode::from_u16(outcome.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = response(&outcome, status, &request_id);
    if let Ok(value) = HeaderValue::try_from(request_id.as_ref()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

fn response(outcome: &Outcome, status: StatusCode, request_id: &str) -> Response {
    match outcome.deny_body(request_id) {
        Some(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => {
            let mut response = StatusCode::OK.into_response();
            for (name, value) in outcome.allow_headers() {
                if let (Ok(name), Ok(value)) =
                    (HeaderName::try_from(name), HeaderValue::try_from(value))
                {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
    }
}
