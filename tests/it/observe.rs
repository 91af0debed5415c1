//! What a check leaves behind, through real Envoy 1.40: the decision log line and the trace
//! (in an OTLP receiver that Envoy and certgate both export to) found from a deny's
//! `request_id`, certgate's dynamic metadata in Envoy's access log, shadow policies, and
//! gRPC health following readiness.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::envoy::Stack;
use super::harness::{Proc, free_port, port_open, repo, wait_until};
use super::world::{World, append_file, certgate_deny};

/// The OTLP/gRPC receiver of tests/it/otlp_receiver.py, printing received spans as JSON.
struct Receiver {
    proc: Proc,
    port: u16,
}

impl Receiver {
    fn start() -> Receiver {
        let port = free_port();
        let proc = Proc::spawn_ready(
            "otlp-receiver",
            Command::new(repo().join(".venv/bin/python"))
                .arg(repo().join("tests/it/otlp_receiver.py"))
                .arg(port.to_string()),
            Duration::from_secs(20),
            || port_open(port),
        );
        Receiver { proc, port }
    }

    fn spans(&self) -> Vec<Value> {
        json_lines(&self.proc.logs())
    }
}

/// Each `key` of `line` is the string `want`.
#[track_caller]
fn assert_fields(line: &Value, fields: &[(&str, &str)]) {
    for (key, want) in fields {
        assert_eq!(line[*key], *want, "{key} in {line}");
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

/// The one JSON line of `lines` whose `key` is `value`, waiting up to 20 s for it.
fn line_with(lines: impl Fn() -> Vec<Value>, key: &str, value: &str, what: &str) -> Value {
    let mut found = None;
    wait_until(Duration::from_secs(20), || {
        found = lines().into_iter().find(|l| l[key] == value);
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no {what} with {key}={value}"))
}

fn traced_stack(receiver: &Receiver, extra_config: &str) -> Stack {
    let otlp = receiver.port;
    let extra = format!(
        "tracing: {{enabled: true, endpoint: \"http://127.0.0.1:{otlp}\", sample_ratio: 1.0}}\n\
         log: {{decisions: all}}\n{extra_config}"
    );
    Stack::start_configured(
        World::new(),
        |w| append_file(&w.config, &extra),
        "ACCEPT_UNTRUSTED",
        &[("OTLP_PORT", &otlp.to_string()), ("TRACE_SAMPLING", "100")],
    )
}

#[test]
fn a_denys_request_id_finds_its_decision_log_line_its_trace_and_its_access_log_line() {
    let receiver = Receiver::start();
    let stack = traced_stack(&receiver, "");
    // A worker on the admin route: policy `admin` admits admins only.
    let reply = stack.get(Some(&stack.worker), "/admin/users");
    assert_eq!(reply.status, 403, "{}\n{}", reply.body, stack.logs());
    let body = certgate_deny(&reply).expect("certgate's deny body");
    let request_id = body["request_id"].as_str().unwrap().to_owned();
    assert!(!request_id.is_empty());

    let decisions = || {
        json_lines(&stack.certgate().proc.logs())
            .into_iter()
            .filter(|l| l["target"] == "certgate::decision")
            .collect()
    };
    let log = line_with(decisions, "request_id", &request_id, "decision log line");
    assert_fields(
        &log,
        &[
            ("decision", "deny"),
            ("mode", "enforce"),
            ("reason", "cn_not_allowed"),
            ("policy", "admin"),
            ("principal", "worker-1@example.com"),
            ("cn", "worker-1.example.com"),
            ("serial", stack.worker.serial.as_str()),
            ("sha256", stack.worker.sha256.as_str()),
            ("method", "GET"),
            ("path", "/admin/users"),
            ("transport", "grpc"),
        ],
    );
    assert_eq!(log["status"], 403, "{log}");
    assert!(log["latency_us"].is_u64(), "{log}");
    assert!(log["time"].is_string(), "{log}");
    let trace_id = log["trace_id"].as_str().expect("trace_id").to_owned();
    assert_eq!(trace_id.len(), 32, "{log}");

    // certgate's Check span: in the decision's trace, a child of Envoy's span for the
    // ext_authz call, with the decision's attributes.
    let checks = || {
        receiver
            .spans()
            .into_iter()
            .filter(|s| s["name"] == "Check")
            .collect()
    };
    let check = line_with(checks, "trace_id", &trace_id, "Check span");
    assert_eq!(check["service"], "certgate", "{check}");
    assert_fields(
        &check["attributes"],
        &[
            ("decision", "deny"),
            ("reason", "cn_not_allowed"),
            ("policy", "admin"),
            ("principal", "worker-1@example.com"),
            ("request_id", request_id.as_str()),
        ],
    );
    let parent = check["parent_span_id"].as_str().unwrap().to_owned();
    let envoy_span = line_with(|| receiver.spans(), "span_id", &parent, "parent span");
    assert_eq!(envoy_span["service"], "front-proxy", "{envoy_span}");
    assert_eq!(envoy_span["trace_id"], trace_id.as_str(), "{envoy_span}");

    // Envoy's access log has the metadata of the deny, and of an allow.
    let access = || json_lines(&stack.envoy.proc.logs());
    let denied = line_with(access, "request_id", &request_id, "access log line");
    assert_fields(
        &denied,
        &[
            ("decision", "deny"),
            ("reason", "cn_not_allowed"),
            ("policy", "admin"),
            ("principal", "worker-1@example.com"),
            ("cn", "worker-1.example.com"),
            ("serial", stack.worker.serial.as_str()),
            ("certgate_request_id", request_id.as_str()),
        ],
    );
    assert_eq!(stack.get(Some(&stack.worker), "/api/jobs").status, 200);
    let allowed = line_with(access, "path", "/api/jobs", "access log line");
    assert_fields(
        &allowed,
        &[
            ("decision", "allow"),
            ("policy", "default"),
            ("principal", "worker-1@example.com"),
            ("principal_type", "worker"),
            ("roles", "worker"),
            ("mode", "enforce"),
        ],
    );
}

#[test]
fn a_shadow_policy_lets_a_would_be_deny_through_without_identity_but_never_an_untrusted_certificate()
 {
    let receiver = Receiver::start();
    let stack = Stack::start_configured(
        World::new(),
        |w| {
            let text = std::fs::read_to_string(&w.config).unwrap();
            let shadowed = text.replace(
                "  admin:\n    max_lifetime: 7d\n",
                "  admin:\n    enforce: false\n    max_lifetime: 7d\n",
            );
            assert_ne!(text, shadowed, "the admin policy is in the config");
            std::fs::write(&w.config, shadowed).unwrap();
        },
        "ACCEPT_UNTRUSTED",
        &[("OTLP_PORT", &receiver.port.to_string())],
    );
    let reply = stack.get(Some(&stack.worker), "/admin/users");
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, stack.logs());
    let seen: Value = reply.json();
    assert!(
        seen.get("x-client-principal").is_none(),
        "a shadow allow carries no identity: {seen}"
    );
    let access = || json_lines(&stack.envoy.proc.logs());
    let line = line_with(access, "path", "/admin/users", "access log line");
    assert_eq!(line["mode"], "shadow", "{line}");
    assert_eq!(line["decision"], "deny", "{line}");
    assert_eq!(line["reason"], "cn_not_allowed", "{line}");
    let decisions = || {
        json_lines(&stack.certgate().proc.logs())
            .into_iter()
            .filter(|l| l["target"] == "certgate::decision")
            .collect()
    };
    let log = line_with(decisions, "mode", "shadow", "shadow decision log line");
    assert_eq!(log["reason"], "cn_not_allowed", "{log}");
    let metrics = stack.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("certgate_decisions_total")
                && l.contains("mode=\"shadow\"")
                && l.contains("reason=\"cn_not_allowed\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );

    let stranger = stack.world.stranger(
        "stranger",
        "admin@example.com",
        &World::spec("admin@example.com", "admin", "admin.example.com"),
    );
    let reply = stack.get(Some(&stranger), "/admin/users");
    assert_eq!(reply.status, 401, "{}", reply.body);
    let body = certgate_deny(&reply).expect("certgate's deny body");
    assert_eq!(body["error"], "untrusted_issuer");
}

/// A CRL of the World CA issued a second ago, valid for `validity_secs`, numbered `number`.
fn crl(world: &World, validity_secs: i64, number: u64) -> Vec<u8> {
    let spec = certgate::pki::CrlSpec {
        number,
        ..certgate::pki::CrlSpec::new(
            super::world::now() - time::Duration::seconds(1),
            time::Duration::seconds(validity_secs),
        )
    };
    world.crl(&spec).der
}

#[test]
fn grpc_health_is_not_serving_while_a_required_crl_is_unusable_and_serving_again_after() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let world = World::new();
    world.admin_and_worker();
    let crl_file = world.path("ca.crl");
    // Usable for a few seconds only: then past its nextUpdate, and the issuer's CRL is required.
    std::fs::write(&crl_file, crl(&world, 4, 1)).unwrap();
    append_file(
        &world.config,
        "crl:\n  readiness: wait\n  file_refresh_interval: 200ms\n  issuers:\n    - ca: \
         \"CN=e2e CA, O=certgate dev\"\n      sources: [{file: ca.crl}]\n",
    );
    let certgate = super::harness::Certgate::start(&world.config, world.admin_port);
    let port = world.grpc_port;
    let fresh = crl(&world, 86_400, 2);
    let logs = certgate.proc.logs();
    super::world::run_async(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut health = HealthClient::new(channel);
        let request = || HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        };
        let mut watch = health.watch(request()).await.expect("watch").into_inner();
        let mut next = async || {
            let message = tokio::time::timeout(Duration::from_secs(15), watch.message()).await;
            message
                .expect("a status within 15 s")
                .expect("rpc")
                .expect("a message")
                .status
        };
        assert_eq!(next().await, ServingStatus::Serving as i32, "{logs}");
        assert_eq!(next().await, ServingStatus::NotServing as i32);
        let check = health.check(request()).await.expect("check").into_inner();
        assert_eq!(check.status, ServingStatus::NotServing as i32);
        std::fs::write(&crl_file, fresh).unwrap();
        assert_eq!(next().await, ServingStatus::Serving as i32);
        let check = health.check(request()).await.expect("check").into_inner();
        assert_eq!(check.status, ServingStatus::Serving as i32);
    });
    drop(certgate);
}

#[test]
fn forward_auth_returns_the_request_id_it_was_given_or_a_new_uuid_v7_and_logs_it() {
    let world = World::new();
    let http_port = free_port();
    let text = std::fs::read_to_string(&world.config).unwrap();
    let text = text.replacen(
        "listen:\n",
        &format!("listen:\n  http: \"127.0.0.1:{http_port}\"\n"),
        1,
    );
    std::fs::write(
        &world.config,
        format!("{text}forward_auth: {{request_headers: original}}\n"),
    )
    .unwrap();
    let certgate = super::harness::Certgate::start(&world.config, world.admin_port);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ask = |request_id: Option<&str>| {
        let mut request = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{http_port}/auth"))
            .header("X-Original-Method", "GET")
            .header("X-Original-URI", "/api/jobs");
        if let Some(id) = request_id {
            request = request.header("X-Request-Id", id);
        }
        let (header, body) = runtime.block_on(async {
            let response = request.send().await.expect("forward-auth answers");
            let header = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            let body: Value = response.json().await.expect("JSON deny body");
            (header, body)
        });
        assert_eq!(body["error"], "no_client_certificate", "{body}");
        assert_eq!(body["request_id"], header.as_str(), "{body}");
        header
    };
    assert_eq!(ask(Some("ingress-7f3a")), "ingress-7f3a");
    let generated = ask(None);
    let uuid = uuid::Uuid::parse_str(&generated).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 7, "{generated}");

    let decisions = || json_lines(&certgate.proc.logs());
    let log = line_with(decisions, "request_id", &generated, "decision log line");
    assert_fields(
        &log,
        &[
            ("target", "certgate::decision"),
            ("decision", "deny"),
            ("reason", "no_client_certificate"),
            ("transport", "forward-auth"),
            ("method", "GET"),
            ("path", "/api/jobs"),
        ],
    );
}
