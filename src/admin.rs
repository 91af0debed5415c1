//! Admin HTTP listener (README "Operating it"): `/healthz` (the process is alive), `/readyz` (config, trust
//! bundle, CRLs and store usable; the reason when not), `/metrics` (Prometheus text format).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::check::Checker;
use crate::store::{OutageCause, StoreError};

/// How long `/readyz` waits for the store before reporting it unusable.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn router(checker: Arc<Checker>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(checker)
}

async fn readyz(State(checker): State<Arc<Checker>>) -> impl IntoResponse {
    let (status, body) = readiness(&checker).await;
    // Exported so an alert can tell "up but not ready" from "down".
    checker
        .metrics()
        .ready
        .set(i64::from(status == StatusCode::OK));
    (status, body)
}

async fn readiness(checker: &Checker) -> (StatusCode, String) {
    let config = checker.config();
    if config.trust.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: trust bundle is empty\n".to_owned(),
        );
    }
    if let Err(why) = checker.revocation().readiness(crate::clock::unix_now()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        );
    }
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, checker.store().inner().ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Err(e)) => {
            // The endpoint, table or file path stay in the log; the probe's client sees the
            // kind of failure only.
            tracing::warn!(error = %e, "readiness: store probe failed");
            let cause = match &e {
                StoreError::Unavailable(outage) => outage.cause,
                _ => OutageCause::Failed,
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: store unavailable ({})\n", cause.as_str()),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: store did not answer within {STORE_PROBE_TIMEOUT:?}\n"),
        ),
    }
}

async fn metrics(State(checker): State<Arc<Checker>>) -> impl IntoResponse {
    checker.revocation().export_gauges(crate::clock::unix_now());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        checker.metrics().render(),
    )
}
