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
    let ready = readiness(&checker).await;
    // Exported so an alert can tell "up but not ready" from "down".
    checker.metrics().ready.set(i64::from(ready.is_ok()));
    match ready {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Why certgate cannot decide correctly right now, if it cannot: `/readyz` and gRPC health.
pub(crate) async fn readiness(checker: &Checker) -> Result<(), String> {
    let config = checker.config();
    if config.trust.is_empty() {
        return Err("trust bundle is empty".to_owned());
    }
    checker
        .revocation()
        .readiness(crate::clock::unix_now())
        .map_err(|why| why.to_string())?;
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, checker.store().inner().ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            // The endpoint, table or file path stay in the log; the probe's client sees the
            // kind of failure only.
            tracing::warn!(error = %e, "readiness: store probe failed");
            let cause = match &e {
                StoreError::Unavailable(outage) => outage.cause,
                _ => OutageCause::Failed,
            };
            Err(format!("store unavailable ({})", cause.as_str()))
        }
        Err(_) => Err(format!(
            "store did not answer within {STORE_PROBE_TIMEOUT:?}"
        )),
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
