//! SIGTERM with checks in flight, through a running `certgate serve`: the checks are held
//! inside a DynamoDB lookup (moto frozen with SIGSTOP, store deadline longer than the test
//! needs), certgate's gRPC health turns NOT_SERVING, every check is still answered once the
//! store is back, and the process exits 0; an open health Watch stream does not hold the
//! drain.

use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic_health::pb::HealthCheckResponse;
use tonic_health::pb::health_check_response::ServingStatus;

use super::dynamodb::{metric, replica_config_with};
use super::harness::{AWS_ENV, Certgate, Moto, wait_until};
use super::world::{World, check_request, cli_with_env};

const AUTHORIZATION: &str = "envoy.service.auth.v3.Authorization";
/// Checks held in the frozen store when SIGTERM arrives.
const IN_FLIGHT: usize = 8;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A health `Watch` of the ext_authz service on its own connection, past its first status
/// (SERVING).
async fn watch_health(endpoint: String) -> tonic::Streaming<HealthCheckResponse> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: AUTHORIZATION.into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("watch").expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    watch
}

/// The next status on `watch` (within 10 s) is NOT_SERVING.
async fn turns_not_serving(watch: &mut tonic::Streaming<HealthCheckResponse>) {
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("health changes after SIGTERM")
        .expect("watch")
        .expect("a status");
    assert_eq!(
        next.status,
        ServingStatus::NotServing as i32,
        "health after SIGTERM"
    );
}

fn sigterm(certgate: &Certgate) {
    let pid = certgate.proc.pid().expect("running");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
}

#[test]
fn sigterm_finishes_the_checks_in_flight_and_reports_not_serving() {
    let world = World::new();
    let moto = Moto::start();
    let worker = world.client(
        "worker",
        "worker-1@example.com",
        &World::spec("worker-1@example.com", "worker", "worker-1.example.com"),
    );
    // One attempt with a deadline far beyond the test: a frozen store holds the check.
    let config = replica_config_with(
        &world,
        &moto,
        "drain.yaml",
        world.grpc_port,
        world.admin_port,
        "timeout: 60s, attempt_timeout: 60s, max_attempts: 1",
    );
    for args in [
        &["store", "init"][..],
        &[
            "principal",
            "create",
            "worker-1@example.com",
            "--type",
            "worker",
        ],
        &[
            "cert",
            "register",
            "--cert",
            worker.cert.to_str().expect("utf-8"),
        ],
    ] {
        let (code, out) = cli_with_env(&config, args, AWS_ENV);
        assert_eq!(code, 0, "certgate {args:?}: {out}");
    }
    let mut certgate = Certgate::start_with_env(&config, world.admin_port, AWS_ENV);
    let pem = std::fs::read_to_string(&worker.cert).expect("read");
    let endpoint = format!("http://127.0.0.1:{}", world.grpc_port);
    let (allowed, exit) = runtime().block_on(async {
        let mut watch = watch_health(endpoint.clone()).await;
        moto.pause();
        let misses = || {
            metric(
                &certgate.metrics(),
                "certgate_cache_lookups_total{cache=\"principal\",result=\"miss\"}",
            )
        };
        let before = misses();
        // Several checks in flight, on one connection as Envoy multiplexes them.
        let channel = tonic::transport::Endpoint::from_shared(endpoint)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let checks: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (mut client, pem) = (AuthorizationClient::new(channel.clone()), pem.clone());
                tokio::spawn(async move { client.check(check_request(&pem, "/api/jobs")).await })
            })
            .collect();
        // The check has reached the store (a cache miss is counted before the lookup).
        let in_store = wait_until(Duration::from_secs(10), || misses() > before);
        assert!(
            in_store,
            "the check never reached the store\n{}",
            certgate.metrics()
        );
        assert!(
            checks.iter().all(|c| !c.is_finished()),
            "the frozen store answered?"
        );

        sigterm(&certgate);
        turns_not_serving(&mut watch).await;
        drop(watch);
        // Draining: still running while the check waits on the store.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            checks.iter().all(|c| !c.is_finished()),
            "an in-flight check was dropped"
        );
        assert!(certgate.proc.is_running(), "exited with a check in flight");

        moto.resume();
        let mut answers = Vec::new();
        for check in checks {
            let answer = tokio::time::timeout(Duration::from_secs(20), check)
                .await
                .expect("every in-flight check is answered")
                .expect("task");
            answers.push(answer);
        }
        let exit = tokio::task::block_in_place(|| certgate.proc.terminate(Duration::from_secs(20)));
        (answers, exit)
    });
    for answer in allowed {
        let response = answer.expect("an in-flight check gets an answer, not a transport error");
        assert_eq!(
            response.get_ref().status.as_ref().map(|s| s.code),
            Some(0),
            "allowed once the store answers: {response:?}\n{}",
            certgate.proc.logs()
        );
    }
    assert_eq!(exit, Some(0), "exit code\n{}", certgate.proc.logs());
    assert!(
        certgate
            .proc
            .logs()
            .contains("shutting down: draining in-flight checks")
    );
}

/// A health `Watch` stream (gRPC client-side health checking keeps one open per connection)
/// sees NOT_SERVING and does not hold the process past the drain.
#[test]
fn an_open_health_watch_does_not_hold_the_shutdown() {
    let world = World::new();
    let mut certgate = Certgate::start(&world.config, world.admin_port);
    let endpoint = format!("http://127.0.0.1:{}", world.grpc_port);
    let exited = runtime().block_on(async {
        let mut watch = watch_health(endpoint).await;
        sigterm(&certgate);
        turns_not_serving(&mut watch).await;
        // The stream stays open on the client side while the process drains.
        let exited = wait_until(Duration::from_secs(10), || !certgate.proc.is_running());
        drop(watch);
        exited
    });
    assert!(
        exited,
        "an open health Watch held the shutdown for 10 s\n{}",
        certgate.proc.logs()
    );
}
