//! The baseline for `cargo xtask bench envoy`: an Envoy ext_authz v3 gRPC server that allows
//! every request without looking at it. Whatever Envoy with this server costs over Envoy
//! alone is the ext_authz round trip itself; certgate is measured against it.
//!
//! Example: `cargo run --release --example trivial_authz -- 127.0.0.1:9001`

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

/// Allows everything, with the parts of a certgate allow chosen on the command line, so that
/// a benchmark can tell what each part costs Envoy (BENCHMARKS.md, "ext_authz through Envoy:
/// instructions per request").
struct AllowAll {
    ok: OkHttpResponse,
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

const SPIFFE_ID: &str = "x-client-spiffe-id";

fn header(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

/// The answer made of `parts`: `headers` (certgate's six identity headers, overwriting),
/// `appended` (the same six with the default append action), `remove` (one
/// `headers_to_remove` name, as certgate for a client without a SPIFFE id), `remove-all`
/// (all seven names), `request-id` (an `x-request-id` response header).
fn answer(parts: &[&str]) -> anyhow::Result<OkHttpResponse> {
    let mut ok = OkHttpResponse::default();
    for part in parts {
        let six = |action| IDENTITY.iter().map(|(k, v)| header(k, v, action)).collect();
        match *part {
            "headers" => ok.headers = six(HeaderAppendAction::OverwriteIfExistsOrAdd),
            "appended" => ok.headers = six(HeaderAppendAction::AppendIfExistsOrAdd),
            "remove" => ok.headers_to_remove = vec![SPIFFE_ID.to_owned()],
            "remove-all" => {
                ok.headers_to_remove = IDENTITY
                    .iter()
                    .map(|(k, _)| *k)
                    .chain([SPIFFE_ID])
                    .map(str::to_owned)
                    .collect();
            }
            "request-id" => {
                ok.response_headers_to_add = vec![header(
                    "x-request-id",
                    "0193f1e2-7a4b-7c3d-9e8f-0123456789ab",
                    HeaderAppendAction::OverwriteIfExistsOrAdd,
                )];
            }
            other => bail!("unknown answer part {other:?}"),
        }
    }
    Ok(ok)
}

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(self.ok.clone())),
            dynamic_metadata: None,
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let usage = "usage: trivial_authz [ADDR:PORT] [--identity-headers] \
                 [--answer=headers|appended,remove|remove-all,request-id]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut parts = Vec::new();
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        match arg.as_str() {
            // As a certgate allow of a client without a SPIFFE id, but the request id.
            "--identity-headers" => parts.extend(["headers", "remove"]),
            _ => match arg.strip_prefix("--answer=") {
                Some(list) => parts.extend(list.split(',')),
                None => bail!("{usage}"),
            },
        }
    }
    let ok = answer(&parts).context(usage)?;
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
        .add_service(AuthorizationServer::new(AllowAll { ok }))
        .serve_with_incoming(
            // As in certgate: without TCP_NODELAY Nagle adds ~40 ms to every answer.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await
        .context("serving")
}
