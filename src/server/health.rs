//! gRPC health (`grpc.health.v1.Health`) of the server (`""`) and the ext_authz service:
//! SERVING until shutdown starts, NOT_SERVING from then on.
//! A `Watch` stream ends right after it reports NOT_SERVING: the graceful shutdown waits for
//! every open stream, and a stream that ended only with the process would hold the drain.

use std::pin::Pin;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::ext_authz::ExtAuthz;

/// The services health is reported for; any other name is NOT_FOUND.
const SERVICES: [&str; 2] = ["", <AuthorizationServer<ExtAuthz> as NamedService>::NAME];

/// The health service, driven by the shutdown signal (`true`: shutting down).
pub fn server(shutdown: watch::Receiver<bool>) -> HealthServer<Health> {
    HealthServer::new(Health { shutdown })
}

/// The `grpc.health.v1.Health` service.
pub(crate) struct Health {
    shutdown: watch::Receiver<bool>,
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

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for Health {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        known(&request)?;
        let status = if *self.shutdown.borrow() {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        Ok(Response::new(response(status)))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        known(&request)?;
        // The current status first, then NOT_SERVING once shutdown starts (or the signal
        // is gone with the server), then the end of the stream.
        let serving = WatchStream::new(self.shutdown.clone())
            .take_while(|stopping| !stopping)
            .map(|_| ServingStatus::Serving);
        let statuses = serving
            .chain(tokio_stream::once(ServingStatus::NotServing))
            .map(|status| Ok(response(status)));
        Ok(Response::new(Box::pin(statuses)))
    }
}

#[cfg(test)]
mod tests {
    use tonic_health::pb::health_server::Health as _;

    use super::*;

    fn request(service: &str) -> Request<HealthCheckRequest> {
        Request::new(HealthCheckRequest {
            service: service.to_owned(),
        })
    }

    #[tokio::test]
    async fn a_watch_reports_not_serving_and_ends_when_shutdown_starts() {
        let (shutdown, rx) = watch::channel(false);
        let health = Health { shutdown: rx };
        let mut stream = health
            .watch(request(SERVICES[1]))
            .await
            .unwrap()
            .into_inner();
        let next = |s: Option<Result<HealthCheckResponse, Status>>| s.unwrap().unwrap().status;
        assert_eq!(next(stream.next().await), ServingStatus::Serving as i32);
        shutdown.send(true).unwrap();
        assert_eq!(next(stream.next().await), ServingStatus::NotServing as i32);
        assert!(stream.next().await.is_none());
        let check = health.check(request("")).await.unwrap().into_inner();
        assert_eq!(check.status, ServingStatus::NotServing as i32);
    }

    #[tokio::test]
    async fn unknown_services_are_not_found() {
        let (_shutdown, rx) = watch::channel(false);
        let health = Health { shutdown: rx };
        let status = health.check(request("other")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(health.watch(request("other")).await.is_err());
    }
}
