//! gRPC health (`grpc.health.v1.Health`) of the server (`""`) and the ext_authz service. It
//! follows readiness (`/readyz`): SERVING while certgate can decide correctly, NOT_SERVING
//! while it cannot (a required issuer's CRL unusable, the store down) and from shutdown on.
//! A `Watch` stream re-probes every [`WATCH_INTERVAL`], reports changes, and ends right after
//! it reports NOT_SERVING for shutdown: the graceful shutdown waits for every open stream,
//! and a stream that ended only with the process would hold the drain.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::ext_authz::ExtAuthz;
use crate::check::Checker;

/// The services health is reported for; any other name is NOT_FOUND.
const SERVICES: [&str; 2] = ["", <AuthorizationServer<ExtAuthz> as NamedService>::NAME];

/// How often an open `Watch` re-probes readiness.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Whether the service can decide correctly now.
#[tonic::async_trait]
pub(crate) trait Readiness: Send + Sync + 'static {
    async fn ready(&self) -> bool;
}

#[tonic::async_trait]
impl Readiness for Checker {
    async fn ready(&self) -> bool {
        crate::admin::readiness(self).await.is_ok()
    }
}

/// The health service, driven by readiness and the shutdown signal (`true`: shutting down).
pub(crate) fn server(
    shutdown: watch::Receiver<bool>,
    readiness: Arc<dyn Readiness>,
) -> HealthServer<Health> {
    HealthServer::new(Health {
        shutdown,
        readiness,
    })
}

/// The `grpc.health.v1.Health` service.
pub(crate) struct Health {
    shutdown: watch::Receiver<bool>,
    readiness: Arc<dyn Readiness>,
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

fn known(request: &Request<HealthCheckRequest>) -> Result<(), Status> {
    if SERVICES.contains(&request.get_ref().service.as_str()) {
        Ok(())
    } else {
        Err(Status::not_found("service not registered"))
    }
}

async fn status(shutdown: &watch::Receiver<bool>, readiness: &dyn Readiness) -> ServingStatus {
    if !*shutdown.borrow() && readiness.ready().await {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for Health {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        known(&request)?;
        let status = status(&self.shutdown, self.readiness.as_ref()).await;
        Ok(Response::new(response(status)))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        known(&request)?;
        let (tx, rx) = mpsc::channel(4);
        let mut shutdown = self.shutdown.clone();
        let readiness = self.readiness.clone();
        // Ends when the client goes away (send fails) or after shutdown is reported.
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let now = status(&shutdown, readiness.as_ref()).await;
                if last != Some(now) && tx.send(now).await.is_err() {
                    return;
                }
                last = Some(now);
                if *shutdown.borrow() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                    // A sender gone with the server is a shutdown too.
                    changed = shutdown.changed() => if changed.is_err() {
                        let _ = tx.send(ServingStatus::NotServing).await;
                        return;
                    },
                }
            }
        });
        let statuses = ReceiverStream::new(rx).map(|status| Ok(response(status)));
        Ok(Response::new(Box::pin(statuses)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tonic_health::pb::health_server::Health as _;

    use super::*;

    struct Flag(AtomicBool);

    #[tonic::async_trait]
    impl Readiness for Flag {
        async fn ready(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn request(service: &str) -> Request<HealthCheckRequest> {
        Request::new(HealthCheckRequest {
            service: service.to_owned(),
        })
    }

    fn health(ready: bool) -> (watch::Sender<bool>, Arc<Flag>, Health) {
        let (shutdown, rx) = watch::channel(false);
        let flag = Arc::new(Flag(AtomicBool::new(ready)));
        let health = Health {
            shutdown: rx,
            readiness: flag.clone(),
        };
        (shutdown, flag, health)
    }

    fn next(s: Option<Result<HealthCheckResponse, Status>>) -> i32 {
        s.unwrap().unwrap().status
    }

    #[tokio::test]
    async fn a_watch_reports_not_serving_and_ends_when_shutdown_starts() {
        let (shutdown, _, health) = health(true);
        let mut stream = health
            .watch(request(SERVICES[1]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(next(stream.next().await), ServingStatus::Serving as i32);
        shutdown.send(true).unwrap();
        assert_eq!(next(stream.next().await), ServingStatus::NotServing as i32);
        assert!(stream.next().await.is_none());
        let check = health.check(request("")).await.unwrap().into_inner();
        assert_eq!(check.status, ServingStatus::NotServing as i32);
    }

    #[tokio::test]
    async fn a_watch_follows_readiness_both_ways() {
        let (_shutdown, flag, health) = health(true);
        let mut stream = health.watch(request("")).await.unwrap().into_inner();
        assert_eq!(next(stream.next().await), ServingStatus::Serving as i32);
        flag.0.store(false, Ordering::SeqCst);
        assert_eq!(next(stream.next().await), ServingStatus::NotServing as i32);
        let check = health.check(request("")).await.unwrap().into_inner();
        assert_eq!(check.status, ServingStatus::NotServing as i32);
        flag.0.store(true, Ordering::SeqCst);
        assert_eq!(next(stream.next().await), ServingStatus::Serving as i32);
    }

    #[tokio::test]
    async fn unknown_services_are_not_found() {
        let (_shutdown, _, health) = health(true);
        let status = health.check(request("other")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(health.watch(request("other")).await.is_err());
    }
}
