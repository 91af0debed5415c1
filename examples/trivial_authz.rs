//! The baseline for `scripts/bench-envoy.sh`: an Envoy ext_authz v3 gRPC server that allows
//! every request without looking at it. Whatever Envoy with this server costs over Envoy
//! alone is the ext_authz round trip itself; certgate is measured against it.
//!
//! Example: `cargo run --release --example trivial_authz -- 127.0.0.1:9001`

use std::net::SocketAddr;

use anyhow::Context as _;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            dynamic_metadata: None,
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:9001")
        .parse()
        .context("usage: trivial_authz [ADDR:PORT]")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(AllowAll))
        .serve_with_incoming(
            // As in certgate: without TCP_NODELAY Nagle adds ~40 ms to every answer.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await
        .context("serving")
}
