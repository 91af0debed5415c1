//! The upstream application for `cargo xtask bench envoy`: a plain HTTP/1.1 server on loopback
//! that answers every request with `200 ok`, so that Envoy's forwarding costs next to nothing
//! beyond itself and the measured differences are the authorization filters'.
//!
//! Example: `cargo run --release --example upstream -- 127.0.0.1:8080`

use std::net::SocketAddr;

use anyhow::Context as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:8080")
        .parse()
        .context("usage: upstream [ADDR:PORT]")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let app = axum::Router::new().fallback(|| async { "ok\n" });
    axum::serve(listener, app).await.context("serving")
}
