//! SIGTERM with a check in flight, through a running `certgate serve`: the check is held
//! inside a DynamoDB lookup (moto frozen with SIGSTOP, store deadline longer than the test
//! needs), certgate's gRPC health turns NOT_SERVING, the check is still answered once the
//! store is back, and the process exits 0.

use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic_health::pb::health_check_response::ServingStatus;

use super::dynamodb::{metric, replica_config_with};
use super::harness::{AWS_ENV, Certgate, Moto, wait_until};
use super::world::{World, check_request, cli_with_env};

#[test]
fn sigterm_finishes_the_check_in_flight_and_reports_not_serving() {
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
    let pid = certgate.proc.pid().expect("running");
    let pem = std::fs::read_to_string(&worker.cert).expect("read");
    let endpoint = format!("http://127.0.0.1:{}", world.grpc_port);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (allowed, exit) = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let mut watch = health
            .watch(tonic_health::pb::HealthCheckRequest {
                service: "envoy.service.auth.v3.Authorization".into(),
            })
            .await
            .expect("watch")
            .into_inner();
        let first = watch.message().await.expect("watch").expect("a status");
        assert_eq!(first.status, ServingStatus::Serving as i32);

        moto.pause();
        let misses = || {
            metric(
                &certgate.metrics(),
                "certgate_cache_lookups_total{cache=\"principal\",result=\"miss\"}",
            )
        };
        let before = misses();
        let check = tokio::spawn(async move {
            let mut client = AuthorizationClient::connect(endpoint)
                .await
                .expect("connect");
            client.check(check_request(&pem, "/api/jobs")).await
        });
        // The check has reached the store (a cache miss is counted before the lookup).
        let in_store = wait_until(Duration::from_secs(10), || misses() > before);
        assert!(
            in_store,
            "the check never reached the store\n{}",
            certgate.metrics()
        );
        assert!(!check.is_finished(), "the frozen store answered?");

        let term = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(term.success());
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
        drop(watch);
        drop(health);
        // Draining: still running while the check waits on the store.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!check.is_finished(), "the in-flight check was dropped");

        moto.resume();
        let answer = tokio::time::timeout(Duration::from_secs(20), check)
            .await
            .expect("the in-flight check is answered")
            .expect("task");
        let exit = tokio::task::block_in_place(|| certgate.proc.terminate(Duration::from_secs(20)));
        (answer, exit)
    });
    let response = allowed.expect("the in-flight check gets an answer, not a reset");
    assert_eq!(
        response.get_ref().status.as_ref().map(|s| s.code),
        Some(0),
        "allowed once the store answers: {response:?}\n{}",
        certgate.proc.logs()
    );
    assert_eq!(exit, Some(0), "exit code\n{}", certgate.proc.logs());
    assert!(
        certgate
            .proc
            .logs()
            .contains("shutting down: draining in-flight checks")
    );
}
