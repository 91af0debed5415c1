//! The baseline for `cargo xtask bench envoy`: an Envoy ext_authz v3 gRPC server that allows
//! every request without looking at it. Whatever Envoy with this server costs over Envoy
//! alone is the ext_authz round trip itself; certgate is measured against it.
//!
//! Example: `cargo run --release --example trivial_authz -- 127.0.0.1:9001`

use std::net::SocketAddr;

use anyhow::Context as _;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

/// Allows everything; with `identity_headers`, answers with the same shape of header
/// mutations as a certgate allow (six identity headers set, one removed), so a benchmark can
/// tell Envoy's cost of applying them from certgate's cost of deciding.
struct AllowAll {
    identity_headers: bool,
}

const IDENTITY: [(&str, &str); 6] = [
    ("x-client-principal", "admin@example.com"),
    ("x-client-principal-type", "admin"),
    ("x-client-roles", "admin"),
    ("x-client-cn", "admin.example.com"),
    ("x-client-cert-serial", "5f3a9c0e2b7d4a61"),
    (
        "x-client-cert-sha256",
        "9b2e4c1d7a6f5e3b8c0d1a2f4e6b8d0c2a4e6f8b1d3c5e7a9b0c2d4e6f8a1b3c",
    ),
];

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let mut ok = OkHttpResponse::default();
        if self.identity_headers {
            ok.headers = IDENTITY
                .iter()
                .map(|(k, v)| HeaderValueOption {
                    header: Some(HeaderValue {
                        key: (*k).to_owned(),
                        value: (*v).to_owned(),
                        raw_value: Vec::new(),
                    }),
                    append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                    ..Default::default()
                })
                .collect();
            ok.headers_to_remove = vec!["x-client-spiffe-id".to_owned()];
        }
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(ok)),
            dynamic_metadata: None,
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let usage = "usage: trivial_authz [ADDR:PORT] [--identity-headers]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let identity_headers = args.iter().any(|a| a == "--identity-headers");
    let addr: SocketAddr = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or("127.0.0.1:9001", String::as_str)
        .parse()
        .context(usage)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(AllowAll { identity_headers }))
        .serve_with_incoming(
            // As in certgate: without TCP_NODELAY Nagle adds ~40 ms to every answer.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await
        .context("serving")
}
