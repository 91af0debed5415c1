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
use crate::check::{CheckInput, Checker};

/// Every path and method is an auth request; the policy comes from `?policy=NAME`.
pub fn router(checker: Arc<Checker>) -> Router {
    Router::new().fallback(auth).with_state(checker)
}

fn first<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
}

async fn auth(
    State(checker): State<Arc<Checker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let config = checker.config();
    let certificate =
        super::forwarded_certificate(&config.forwarded_certificates, Some(peer.ip()), |name| {
            headers.get(name).and_then(|v| v.to_str().ok())
        });
    let input = CheckInput {
        certificate: certificate.map(|(c, _)| c),
        encoding: certificate.map_or(CertEncoding::Auto, |(_, e)| e),
        policy: query.get("policy").map(String::as_str),
        // nginx / ingress-nginx send X-Original-*, Traefik and Caddy X-Forwarded-*.
        method: first(&headers, &["x-original-method", "x-forwarded-method"]).unwrap_or("GET"),
        path: first(&headers, &["x-original-uri", "x-forwarded-uri"]).unwrap_or("/"),
    };
    let request_id = first(&headers, &["x-request-id"]).unwrap_or("");
    let outcome = checker.check(input, crate::clock::unix_now()).await;
    let status = StatusCode::from_u16(outcome.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    match outcome.deny_body(config.deny_detail, request_id) {
        Some(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => {
            let mut response = StatusCode::OK.into_response();
            for (name, value) in outcome.allow_headers(&config.headers) {
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
