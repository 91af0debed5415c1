//! Many replicas, one truth: two certgate replicas, each behind its own Envoy 1.40, share
//! DynamoDB tables on a real DynamoDB-compatible server (moto). Suspensions made with the
//! CLI and with a raw runbook-style `UpdateItem` reach both; bad data denies; an outage is
//! served from cache for the stale window, then 503, and recovers without a restart. A store
//! timeout right after a corrupt record bringing back the older answer is a known bug (its
//! test is ignored).

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use certgate::store::Purpose;

use super::harness::{
    AWS_ENV, Certgate, CertgateAddress, Curl, EchoUpstream, Envoy, Moto, Reply, free_port,
    wait_until,
};
use super::store_conformance::{moto_settings, moto_store};
use super::world::{
    Client, World, certgate_deny, cli_with_env, config_yaml, deny_reason, run_async, write_file,
};

const PRINCIPALS: &str = "e2e_principals";
const CERTIFICATES: &str = "e2e_certificates";

/// A replica: its configuration, certgate, and an Envoy in front of it.
struct Replica {
    config: PathBuf,
    certgate: Certgate,
    envoy: Envoy,
}

struct Fleet {
    world: World,
    moto: Moto,
    worker: Client,
    replicas: Vec<Replica>,
    _upstream: EchoUpstream,
}

/// Serving deadlines at half of Envoy's 0.5 s ext_authz timeout, so that certgate's own 503
/// (with its body) normally arrives before Envoy gives up with a bodiless one; the tests still
/// only count a deny that carries certgate's body. Shorter deadlines make moto, slow under a
/// full suite, time out on ordinary lookups.
pub(super) const SERVING_DEADLINE: &str = "timeout: 250ms, attempt_timeout: 100ms";

fn store_yaml(moto: &Moto, deadline: &str) -> String {
    format!(
        "store:\n  backend: dynamodb\n  cache_ttl: 1s\n  stale_if_error: 4s\n  dynamodb: {{\
         region: eu-west-1, endpoint_url: \"{}\", principals_table: {PRINCIPALS}, \
         certificates_table: {CERTIFICATES}, {deadline}}}\n",
        moto.endpoint()
    )
}

fn replica_config(world: &World, moto: &Moto, name: &str, grpc: u16, admin: u16) -> PathBuf {
    replica_config_with(world, moto, name, grpc, admin, SERVING_DEADLINE)
}

/// A replica's configuration with `deadline` (flow-mapping entries) for its DynamoDB calls.
pub(super) fn replica_config_with(
    world: &World,
    moto: &Moto,
    name: &str,
    grpc: u16,
    admin: u16,
    deadline: &str,
) -> PathBuf {
    let yaml = config_yaml(&format!("127.0.0.1:{grpc}"), &format!("127.0.0.1:{admin}")).replace(
        "store: {path: certgate.db, cache_ttl: 1s}\n",
        &store_yaml(moto, deadline),
    );
    assert!(
        yaml.contains("backend: dynamodb"),
        "template changed: {yaml}"
    );
    let path = world.path(name);
    write_file(&path, yaml);
    path
}

impl Fleet {
    fn start() -> Fleet {
        let world = World::new();
        let moto = Moto::start();
        let worker = world.client(
            "worker",
            "worker-1@example.com",
            &World::spec("worker-1@example.com", "worker", "worker-1.example.com"),
        );
        let a = replica_config(&world, &moto, "a.yaml", world.grpc_port, world.admin_port);
        let b = replica_config(&world, &moto, "b.yaml", free_port(), free_port());
        let cli = |args: &[&str]| {
            let (code, out) = cli_with_env(&a, args, AWS_ENV);
            assert_eq!(code, 0, "certgate {args:?}: {out}");
            out
        };
        let init = cli(&["store", "init"]);
        assert!(init.contains("e2e_principals: created"), "{init}");
        assert!(init.contains("TTL enabled on purge_at"), "{init}");
        let again = cli(&["store", "init"]);
        assert!(
            again.contains("e2e_principals: exists"),
            "idempotent: {again}"
        );
        cli(&[
            "principal",
            "create",
            "worker-1@example.com",
            "--type",
            "worker",
        ]);
        cli(&[
            "cert",
            "register",
            "--cert",
            worker.cert.to_str().expect("utf-8"),
        ]);

        let upstream = EchoUpstream::start();
        let replicas = [a, b]
            .into_iter()
            .map(|config| {
                let text = std::fs::read_to_string(&config).expect("read");
                let port = |key: &str| -> u16 {
                    let line = text.lines().find(|l| l.trim_start().starts_with(key));
                    let addr = line.and_then(|l| l.split('"').nth(1)).expect("listen line");
                    addr.rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .expect("port")
                };
                let (grpc, admin) = (port("grpc:"), port("admin:"));
                let certgate = Certgate::start_with_env(&config, admin, AWS_ENV);
                let envoy = Envoy::start(&world.envoy_options(
                    CertgateAddress::Tcp(grpc),
                    upstream.port,
                    "ACCEPT_UNTRUSTED",
                ));
                Replica {
                    config,
                    certgate,
                    envoy,
                }
            })
            .collect();
        Fleet {
            world,
            moto,
            worker,
            replicas,
            _upstream: upstream,
        }
    }

    fn get(&self, replica: &Replica, client: &Client) -> Reply {
        Curl {
            port: replica.envoy.port,
            ca: &self.world.ca_pem,
            client: Some((client.cert.as_path(), client.key.as_path())),
            method: "GET",
            path: "/api/jobs",
            headers: vec![],
        }
        .send()
    }

    fn statuses(&self, client: &Client) -> Vec<u16> {
        self.replicas
            .iter()
            .map(|r| self.get(r, client).status)
            .collect()
    }

    /// Wait (up to `within`) until every replica answers `status` — a deny only with
    /// certgate's body, never Envoy's own error page; then return the replies.
    fn all_answer(&self, client: &Client, status: u16, within: Duration) -> Vec<Reply> {
        let answers = |r: &Reply| r.status == status && (status == 200 || deny_reason(r).is_some());
        let ok = wait_until(within, || {
            self.replicas
                .iter()
                .all(|replica| answers(&self.get(replica, client)))
        });
        let replies: Vec<Reply> = self.replicas.iter().map(|r| self.get(r, client)).collect();
        assert!(
            ok && replies.iter().all(answers),
            "expected {status} from every replica within {within:?}, got {:?}\n{}",
            replies
                .iter()
                .map(|r| (r.status, &r.body))
                .collect::<Vec<_>>(),
            self.logs()
        );
        replies
    }

    fn cli(&self, args: &[&str]) -> (i32, String) {
        cli_with_env(&self.replicas[0].config, args, AWS_ENV)
    }

    /// A raw `UpdateItem` on the principals table, as an operator without the CLI would send
    /// it (`aws dynamodb update-item`, deploy/dynamodb/README.md).
    fn update_principal(&self, id: &str, expression: &str, values: Vec<(&str, AttributeValue)>) {
        let settings = moto_settings(&self.moto, "e2e");
        let (id, expression) = (id.to_owned(), expression.to_owned());
        let values: Vec<(String, AttributeValue)> =
            values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        run_async(async move {
            let store = moto_store(settings, Purpose::Admin).await;
            let mut req = store
                .client()
                .update_item()
                .table_name(PRINCIPALS)
                .key("principal_id", AttributeValue::S(id))
                .update_expression(expression)
                .condition_expression("attribute_exists(principal_id)")
                .expression_attribute_names("#s", "status");
            for (k, v) in values {
                req = req.expression_attribute_values(k, v);
            }
            req.send().await.expect("update-item");
        });
    }

    /// The airunner runbook's "Revoke a Specific Certificate", exactly: an unconditional
    /// `aws dynamodb update-item --table-name … --key '{"serial_number": {"S": "<serial>"}}'
    /// --update-expression "SET revoked = :true, revoked_at = :now, revocation_reason = :reason"`.
    /// On a serial that was never registered it creates an item with only these attributes.
    fn runbook_revoke(&self, serial: &str, reason: &str) {
        self.update_certificate(
            serial,
            "SET revoked = :true, revoked_at = :now, revocation_reason = :reason",
            vec![
                (":true", AttributeValue::Bool(true)),
                (":now", AttributeValue::N(now_ms())),
                (":reason", s(reason)),
            ],
        );
    }

    /// An unconditional raw `UpdateItem` on the certificates table.
    fn update_certificate(
        &self,
        serial: &str,
        expression: &str,
        values: Vec<(&str, AttributeValue)>,
    ) {
        let settings = moto_settings(&self.moto, "e2e");
        let (serial, expression) = (serial.to_owned(), expression.to_owned());
        let values: Vec<(String, AttributeValue)> =
            values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        run_async(async move {
            let store = moto_store(settings, Purpose::Admin).await;
            let mut req = store
                .client()
                .update_item()
                .table_name(CERTIFICATES)
                .key("serial_number", AttributeValue::S(serial))
                .update_expression(expression);
            for (k, v) in values {
                req = req.expression_attribute_values(k, v);
            }
            req.send().await.expect("update-item");
        });
    }

    /// A raw `PutItem` replacing a principal record with `item`.
    fn put_principal(&self, item: Vec<(&str, AttributeValue)>) {
        put_item(&self.moto, PRINCIPALS, item);
    }

    fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| format!("{}\n{}", r.certgate.proc.logs(), r.envoy.proc.logs()))
            .collect::<Vec<_>>()
            .join("\n")
            + &self.moto.proc.logs()
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

/// Now, in epoch milliseconds, as DynamoDB number text (`date +%s%3N`).
fn now_ms() -> String {
    std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .expect("clock")
        .as_millis()
        .to_string()
}

fn assert_reason(replies: &[Reply], error: &str, message: &str) {
    for r in replies {
        let body = certgate_deny(r).unwrap_or_else(|| panic!("not certgate's answer: {r:?}"));
        assert_eq!(body["error"], error, "{body}");
        let text = body["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{message:?} not in {body}");
    }
}

const TTL_AND_SLACK: Duration = Duration::from_secs(6);

#[test]
fn suspensions_reach_every_replica_by_cli_and_by_raw_update_item() {
    let fleet = Fleet::start();
    let worker = fleet.worker.clone();
    fleet.all_answer(&worker, 200, Duration::from_secs(10));

    let (code, out) = fleet.cli(&[
        "principal",
        "suspend",
        "worker-1@example.com",
        "--reason",
        "INC-7: laptop stolen",
    ]);
    assert_eq!(code, 0, "{out}");
    let replies = fleet.all_answer(&worker, 401, TTL_AND_SLACK);
    assert_reason(&replies, "principal_suspended", "INC-7: laptop stolen");
    let (code, out) = fleet.cli(&["principal", "activate", "worker-1@example.com"]);
    assert_eq!(code, 0, "{out}");
    fleet.all_answer(&worker, 200, TTL_AND_SLACK);

    // The runbook's fallback: aws dynamodb update-item ... --update-expression
    // "SET #s = :s, suspended_reason = :r, suspended_at = :t"
    fleet.update_principal(
        "worker-1@example.com",
        "SET #s = :s, suspended_reason = :r, suspended_at = :t",
        vec![
            (":s", s("suspended")),
            (":r", s("RB-12 emergency: key exfiltrated")),
            (":t", AttributeValue::N(now_ms())),
        ],
    );
    let replies = fleet.all_answer(&worker, 401, TTL_AND_SLACK);
    assert_reason(
        &replies,
        "principal_suspended",
        "RB-12 emergency: key exfiltrated",
    );
    let (code, out) = fleet.cli(&["principal", "get", "worker-1@example.com", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("RB-12 emergency"),
        "the CLI reads the runbook's write: {out}"
    );
    fleet.update_principal(
        "worker-1@example.com",
        "SET #s = :s REMOVE suspended_at, suspended_reason",
        vec![(":s", s("active"))],
    );
    fleet.all_answer(&worker, 200, TTL_AND_SLACK);

    // Bad data in the table: a clear deny naming the record, never an allow or a panic.
    let good = |status: AttributeValue| {
        vec![
            ("principal_id", s("worker-1@example.com")),
            ("principal_type", s("worker")),
            ("status", status),
            ("created_at", AttributeValue::N("1".into())),
        ]
    };
    let bad: Vec<(Vec<(&str, AttributeValue)>, &str)> = vec![
        (good(s("paused")), "unknown status \"paused\""),
        (
            good(AttributeValue::Bool(true)),
            "attribute status is not of type S",
        ),
        (
            good(s("active"))
                .into_iter()
                .filter(|(k, _)| *k != "status")
                .collect(),
            "attribute status is missing",
        ),
    ];
    for (item, why) in bad {
        fleet.put_principal(item);
        let replies = fleet.all_answer(&worker, 503, TTL_AND_SLACK);
        assert_reason(&replies, "store_unavailable", why);
        assert_reason(&replies, "store_unavailable", "worker-1@example.com");
    }
    for r in &fleet.replicas {
        assert!(
            r.certgate
                .proc
                .logs()
                .contains("corrupt record worker-1@example.com"),
            "the bad record is logged\n{}",
            r.certgate.proc.logs()
        );
    }
    fleet.put_principal(good(s("active")));
    fleet.all_answer(&worker, 200, TTL_AND_SLACK);
}

/// The airunner runbook's unconditional revoke, on a serial certgate never registered and on
/// a registered one: 401 `certificate_revoked` with the reason on every replica, and the CLI
/// shows the unregistered one as a revocation-only record.
#[test]
fn runbook_revoke_of_unregistered_and_registered_serials_denies_on_every_replica() {
    let fleet = Fleet::start();
    let worker = fleet.worker.clone();
    // Enrolled, but its certificate was never registered: allowed until revoked.
    let stranger = fleet.world.client(
        "stranger",
        "worker-2@example.com",
        &World::spec("worker-2@example.com", "worker", "worker-2.example.com"),
    );
    let (code, out) = fleet.cli(&[
        "principal",
        "create",
        "worker-2@example.com",
        "--type",
        "worker",
    ]);
    assert_eq!(code, 0, "{out}");
    fleet.all_answer(&stranger, 200, Duration::from_secs(10));
    fleet.all_answer(&worker, 200, Duration::from_secs(10));

    fleet.runbook_revoke(&stranger.serial, "key_compromise");
    let replies = fleet.all_answer(&stranger, 401, TTL_AND_SLACK);
    assert_reason(&replies, "certificate_revoked", "key_compromise");
    assert_reason(&replies, "certificate_revoked", &stranger.serial);
    for r in &replies {
        assert!(
            !r.body.contains("principal_id"),
            "no table layout: {}",
            r.body
        );
    }

    let (code, out) = fleet.cli(&["cert", "get", &stranger.serial, "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let got: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(got["revocation_only"], true, "{got}");
    assert_eq!(got["revoked"], true, "{got}");
    assert_eq!(got["revocation_reason"], "key_compromise", "{got}");
    let (code, out) = fleet.cli(&["cert", "list"]);
    assert_eq!(code, 0, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&stranger.serial))
        .unwrap_or_else(|| panic!("{} listed: {out}", stranger.serial));
    assert!(
        line.contains("revoked (key_compromise), revocation-only record"),
        "{out}"
    );
    let (code, out) = fleet.cli(&["cert", "list", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&stranger.serial), "{out}");

    // A registered certificate: the same command keeps its registration.
    fleet.runbook_revoke(&worker.serial, "superseded");
    let replies = fleet.all_answer(&worker, 401, TTL_AND_SLACK);
    assert_reason(&replies, "certificate_revoked", "superseded");
    let (code, out) = fleet.cli(&["cert", "get", &worker.serial, "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let got: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(got["revocation_only"], false, "{got}");
    assert_eq!(got["principal_id"], "worker-1@example.com", "{got}");

    // What decides stays strict: a `revoked` that is not a BOOL is refused, never allowed.
    fleet.update_certificate(
        &stranger.serial,
        "SET revoked = :v",
        vec![(":v", s("true"))],
    );
    let replies = fleet.all_answer(&stranger, 503, TTL_AND_SLACK);
    assert_reason(&replies, "store_unavailable", "revoked is not of type BOOL");
}

/// A principal item as a deployment older than certgate wrote it: no `principal_type`, no
/// `created_at`, attributes certgate does not know. The type then comes from the
/// certificate (OID/OU), the roles from `roles_by_type`; the CLI shows it.
#[test]
fn principal_items_without_type_or_creation_time_and_with_extra_attributes_are_served() {
    let fleet = Fleet::start();
    let worker = fleet.worker.clone();
    fleet.all_answer(&worker, 200, Duration::from_secs(10));
    fleet.put_principal(vec![
        ("principal_id", s("worker-1@example.com")),
        ("status", s("active")),
        ("email", s("worker-1@example.com")),
        ("team", s("ml-infra")),
        ("last_login", AttributeValue::N("1700000000000".into())),
        ("tags", AttributeValue::L(vec![s("gpu")])),
    ]);
    // Served with the type of the certificate, not refused as corrupt.
    let ok = wait_until(TTL_AND_SLACK, || {
        fleet.replicas.iter().all(|r| {
            let reply = fleet.get(r, &worker);
            reply.status == 200
                && reply.upstream_header("x-client-principal-type").as_deref() == Some("worker")
        })
    });
    assert!(ok, "{:?}\n{}", fleet.statuses(&worker), fleet.logs());
    let (code, out) = fleet.cli(&["principal", "get", "worker-1@example.com", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let got: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(got["principal_type"], serde_json::Value::Null, "{got}");
    assert_eq!(got["created_at"], serde_json::Value::Null, "{got}");
    let (code, out) = fleet.cli(&["principal", "list"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("worker-1@example.com"), "{out}");

    // Suspension through the runbook still works on such an item, and still decides.
    fleet.update_principal(
        "worker-1@example.com",
        "SET #s = :s, suspended_reason = :r, suspended_at = :t",
        vec![
            (":s", s("suspended")),
            (":r", s("INC-9")),
            (":t", AttributeValue::N(now_ms())),
        ],
    );
    let replies = fleet.all_answer(&worker, 401, TTL_AND_SLACK);
    assert_reason(&replies, "principal_suspended", "INC-9");
}

#[test]
fn an_outage_is_served_from_cache_for_the_window_then_503_and_recovers() {
    let mut fleet = Fleet::start();
    let worker = fleet.worker.clone();
    // Enrolled, never seen by the replicas: nothing of it is cached.
    let newcomer = fleet.world.client(
        "newcomer",
        "newcomer@example.com",
        &World::spec("newcomer@example.com", "worker", "newcomer.example.com"),
    );
    enrol(
        &fleet.replicas[0].config,
        "newcomer@example.com",
        "worker",
        &newcomer,
    );
    fleet.all_answer(&worker, 200, Duration::from_secs(10));

    // Frozen DynamoDB: requests hang until certgate's own deadline. Past the 1 s TTL every
    // replica serves the cached principal from the stale window (counted); before it, from
    // the cache. Either way, every answer until then is an allow.
    fleet.moto.pause();
    let mut seen = Vec::new();
    let stale_served = wait_until(Duration::from_secs(4), || {
        seen.extend(fleet.statuses(&worker));
        fleet
            .replicas
            .iter()
            .all(|r| metric(&r.certgate.metrics(), "certgate_store_stale_served_total") > 0.0)
    });
    assert!(stale_served, "no stale answers counted\n{}", fleet.logs());
    assert!(
        seen.iter().all(|s| *s == 200),
        "a cached principal is allowed within the stale window: {seen:?}\n{}",
        fleet.logs()
    );
    // Nothing cached: certgate's 503, never an allow.
    let replies = fleet.all_answer(&newcomer, 503, Duration::from_secs(4));
    assert_reason(
        &replies,
        "store_unavailable",
        "principal store unavailable (timeout)",
    );
    // 1s TTL + 4s stale window: then the cached principal is refused too.
    let replies = fleet.all_answer(&worker, 503, Duration::from_secs(10));
    assert_reason(
        &replies,
        "store_unavailable",
        "principal store unavailable (timeout)",
    );
    // The client is not told where the store is; the logs are.
    let endpoint = fleet.moto.endpoint();
    let host_port = endpoint.trim_start_matches("http://");
    for r in &replies {
        for internal in ["e2e_", "DynamoDB", host_port] {
            assert!(!r.body.contains(internal), "{internal:?} in {}", r.body);
        }
    }
    for r in &fleet.replicas {
        let logs = r.certgate.proc.logs();
        assert!(
            logs.lines()
                .any(|l| l.contains("store lookup failed") && l.contains("e2e_")),
            "the full error is logged\n{logs}"
        );
    }
    fleet.moto.resume();
    fleet.all_answer(&worker, 200, TTL_AND_SLACK);
    fleet.all_answer(&newcomer, 200, TTL_AND_SLACK);

    // Killed outright (connection refused), then back: in-memory moto comes back empty, so
    // the operator re-creates the tables and records; the replicas pick them up unrestarted.
    let port = fleet.moto.port;
    fleet.moto.proc.terminate(Duration::from_secs(2));
    fleet.all_answer(&worker, 503, Duration::from_secs(10));
    fleet.moto = Moto::start_on(port);
    let (code, out) = fleet.cli(&["store", "init"]);
    assert_eq!(code, 0, "{out}");
    enrol(
        &fleet.replicas[0].config,
        "worker-1@example.com",
        "worker",
        &worker,
    );
    fleet.all_answer(&worker, 200, TTL_AND_SLACK);
}

/// Create the principal and register the client's certificate with the CLI.
fn enrol(config: &Path, id: &str, kind: &str, client: &Client) {
    let cert = client.cert.to_str().expect("utf-8");
    for args in [
        &["principal", "create", id, "--type", kind][..],
        &["cert", "register", "--cert", cert],
    ] {
        let (code, out) = cli_with_env(config, args, AWS_ENV);
        assert_eq!(code, 0, "certgate {args:?}: {out}");
    }
}

/// The sum of the samples of `name` (a metric name, with or without labels) in `text`.
pub(super) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn cli_migrates_the_embedded_store_into_dynamodb_and_works_on_it() {
    let world = World::new();
    let (admin, worker) = world.admin_and_worker(); // enrolled in the embedded store
    let moto = Moto::start();
    let dynamo = replica_config(&world, &moto, "dynamo.yaml", free_port(), free_port());
    let cli = |args: &[&str]| cli_with_env(&dynamo, args, AWS_ENV);

    let (code, out) = cli(&["store", "init"]);
    assert_eq!(code, 0, "{out}");
    let embedded = world.config.to_str().expect("utf-8");
    let migrate = [
        "store",
        "migrate",
        "--config",
        embedded,
        "--to",
        dynamo.to_str().expect("utf-8"),
    ];
    let (code, out) = cli_with_env(&world.config, &migrate, AWS_ENV);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("principals: 2 copied, 0 already present"),
        "{out}"
    );
    assert!(
        out.contains("certificates: 2 copied, 0 already present"),
        "{out}"
    );
    let (code, out) = cli_with_env(&world.config, &migrate, AWS_ENV);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("principals: 0 copied, 2 already present"),
        "re-run: {out}"
    );

    // Day-2 commands against DynamoDB.
    let (code, out) = cli(&["principal", "list", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).expect("json");
    let ids: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["principal_id"].as_str())
        .collect();
    assert_eq!(ids, ["admin@example.com", "worker-1@example.com"]);
    let (code, out) = cli(&["cert", "list", "--expiring-within", "30d", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    for c in [&admin, &worker] {
        assert!(out.contains(&c.serial), "{} in {out}", c.serial);
    }
    let (code, out) = cli(&["cert", "list", "--expiring-within", "1h"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(&worker.serial), "expires in 5 days: {out}");
    let (code, out) = cli(&["principal", "suspend", "ghost@example.com", "--reason", "x"]);
    assert_eq!(code, 1, "suspending an unknown principal fails: {out}");
    assert!(out.contains("not found"), "{out}");
    let (code, out) = cli(&["principal", "get", "ghost@example.com"]);
    assert_eq!(code, 1, "{out}");
    let (code, out) = cli(&["cert", "revoke", &worker.serial, "--reason", "superseded"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(&[
        "check",
        "--cert",
        worker.cert.to_str().expect("utf-8"),
        "--path",
        "/api/jobs",
        "-o",
        "json",
    ]);
    assert_eq!(code, 1, "revoked in DynamoDB → deny: {out}");
    assert!(out.contains("certificate_revoked"), "{out}");
    let (code, out) = cli(&[
        "check",
        "--cert",
        admin.cert.to_str().expect("utf-8"),
        "--path",
        "/api/jobs",
    ]);
    assert_eq!(code, 0, "{out}");
}

/// EKS IRSA: no keys in the environment, only a role ARN and a projected token file; the
/// SDK's web identity provider exchanges them at STS (here moto's) for credentials.
#[test]
fn web_identity_credentials_irsa_style() {
    let world = World::new();
    let moto = Moto::start();
    let dynamo = replica_config(&world, &moto, "dynamo.yaml", free_port(), free_port());
    let (code, out) = cli_with_env(&dynamo, &["store", "init"], AWS_ENV);
    assert_eq!(code, 0, "{out}");
    let token = world.path("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6Y2VydGdhdGU6Y2VydGdhdGUifQ.c2ln")
        .expect("write");
    let sts = moto.endpoint();
    let irsa = [
        ("AWS_REGION", "eu-west-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/certgate"),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token.to_str().expect("utf-8"),
        ),
        ("AWS_ENDPOINT_URL_STS", sts.as_str()),
    ];
    let (code, out) = cli_with_env(
        &dynamo,
        &[
            "principal",
            "create",
            "svc@example.com",
            "--type",
            "service",
        ],
        &irsa,
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli_with_env(&dynamo, &["principal", "get", "svc@example.com"], &irsa);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("svc@example.com"), "{out}");
    // Without any credentials the store is unavailable (exit 1), with the SDK's reason.
    let none = [
        ("AWS_REGION", "eu-west-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let (code, out) = cli_with_env(&dynamo, &["principal", "get", "svc@example.com"], &none);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("store unavailable"), "{out}");
}

/// A raw `PutItem` of `item` into `table`.
fn put_item(moto: &Moto, table: &str, item: Vec<(&str, AttributeValue)>) {
    let settings = moto_settings(moto, "e2e");
    let table = table.to_owned();
    let item = item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    run_async(async move {
        let store = moto_store(settings, Purpose::Admin).await;
        store
            .client()
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .send()
            .await
            .expect("put-item");
    });
}

/// `store check` on tables holding airunner-shaped items: what would be refused and what is
/// read with defaults, per kind, with example keys; exit 1 while anything is refused.
#[test]
fn store_check_reports_refused_and_defaulted_items() {
    let world = World::new();
    let moto = Moto::start();
    let config = replica_config(&world, &moto, "dynamo.yaml", free_port(), free_port());
    let cli = |args: &[&str]| cli_with_env(&config, args, AWS_ENV);
    let (code, out) = cli(&["store", "init"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(&["principal", "create", "ok@example.com", "--type", "worker"]);
    assert_eq!(code, 0, "{out}");
    let n = |v: &str| AttributeValue::N(v.to_owned());
    for id in ["legacy-1@example.com", "legacy-2@example.com"] {
        put_item(
            &moto,
            PRINCIPALS,
            vec![
                ("principal_id", s(id)),
                ("status", s("active")),
                ("email", s(id)),
            ],
        );
    }
    let with_status = |status: &str| {
        put_item(
            &moto,
            PRINCIPALS,
            vec![
                ("principal_id", s("paused@example.com")),
                ("principal_type", s("worker")),
                ("status", s(status)),
                ("created_at", n("1")),
            ],
        );
    };
    with_status("paused");
    put_item(
        &moto,
        CERTIFICATES,
        vec![
            ("serial_number", s("0a")),
            ("revoked", AttributeValue::Bool(true)),
            ("revoked_at", n("1")),
            ("revocation_reason", s("key_compromise")),
        ],
    );
    put_item(
        &moto,
        CERTIFICATES,
        vec![
            ("serial_number", s("0b")),
            ("principal_id", s("ok@example.com")),
            ("issuer", s("CN=CA")),
            ("fingerprint_sha256", s("ab")),
            ("not_before", n("1")),
            ("expires_at", n("2")),
            ("revoked", s("false")),
        ],
    );

    let (code, out) = cli(&["store", "check", "-o", "json"]);
    assert_eq!(code, 1, "something would be refused: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["refused"], 2, "{report}");
    let table = |kind: &str| {
        report["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .find(|t| t["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("{kind} in {report}"))
    };
    let problem = |t: &serde_json::Value, text: &str| {
        t["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .find(|p| p["problem"].as_str().unwrap_or_default().contains(text))
            .cloned()
            .unwrap_or_else(|| panic!("{text:?} in {t}"))
    };
    let principals = table("principals");
    assert_eq!(
        (
            principals["items"].clone(),
            principals["refused"].clone(),
            principals["defaults"].clone()
        ),
        (4.into(), 1.into(), 2.into()),
        "{principals}"
    );
    let status = problem(&principals, "unknown status");
    assert_eq!(status["finding"], "refused", "{status}");
    assert_eq!(
        status["examples"],
        serde_json::json!(["paused@example.com"])
    );
    let untyped = problem(&principals, "principal_type missing");
    assert_eq!(untyped["finding"], "defaults", "{untyped}");
    assert_eq!(untyped["count"], 2, "{untyped}");
    assert_eq!(
        untyped["examples"],
        serde_json::json!(["legacy-1@example.com", "legacy-2@example.com"])
    );
    assert_eq!(problem(&principals, "created_at missing")["count"], 2);
    assert_eq!(problem(&principals, "extra attributes")["count"], 2);
    let certificates = table("certificates");
    assert_eq!(certificates["refused"], 1, "{certificates}");
    let bad = problem(&certificates, "revoked is not of type BOOL");
    assert_eq!(bad["examples"], serde_json::json!(["0b"]));
    let only = problem(&certificates, "revocation-only record");
    assert_eq!(only["finding"], "defaults", "{only}");
    assert_eq!(only["examples"], serde_json::json!(["0a"]));

    // Repaired: nothing refused, exit 0; the text form lists what is read with defaults.
    with_status("suspended");
    put_item(
        &moto,
        CERTIFICATES,
        vec![
            ("serial_number", s("0b")),
            ("revoked", AttributeValue::Bool(true)),
        ],
    );
    let (code, out) = cli(&["store", "check"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("principals (e2e_principals): 4 items, 0 refused, 2 read with defaults"),
        "{out}"
    );
    assert!(
        out.contains("e.g. legacy-1@example.com, legacy-2@example.com"),
        "{out}"
    );
}

/// `store init --adopt` on tables created the way the runbook's reference Terraform does (hash
/// keys only, no certgate indexes, no TTL), holding airunner-shaped items: indexes and TTL
/// added, `expiry_bucket` set, other attributes untouched; the principal is then served.
#[test]
fn store_init_adopt_gives_pre_existing_tables_certgates_indexes() {
    let world = World::new();
    let moto = Moto::start();
    let config = replica_config(&world, &moto, "dynamo.yaml", free_port(), free_port());
    let cli = |args: &[&str]| cli_with_env(&config, args, AWS_ENV);
    let settings = moto_settings(&moto, "e2e");
    run_async(async move {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        let store = moto_store(settings, Purpose::Admin).await;
        for (table, key) in [
            (PRINCIPALS, "principal_id"),
            (CERTIFICATES, "serial_number"),
        ] {
            store
                .client()
                .create_table()
                .table_name(table)
                .billing_mode(BillingMode::PayPerRequest)
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(key)
                        .key_type(KeyType::Hash)
                        .build()
                        .expect("key"),
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(key)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .expect("attr"),
                )
                .send()
                .await
                .expect("create table");
        }
    });
    let legacy = world.client(
        "legacy",
        "legacy@example.com",
        &World::spec("legacy@example.com", "worker", "legacy.example.com"),
    );
    let n = |v: i64| AttributeValue::N(v.to_string());
    let now = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .expect("clock")
        .as_millis() as i64;
    put_item(
        &moto,
        PRINCIPALS,
        vec![
            ("principal_id", s("legacy@example.com")),
            ("status", s("active")),
            ("owner_team", s("ml-infra")),
        ],
    );
    put_item(
        &moto,
        CERTIFICATES,
        vec![
            ("serial_number", s(&legacy.serial)),
            ("principal_id", s("legacy@example.com")),
            ("issuer", s("CN=e2e CA")),
            ("fingerprint_sha256", s("ab")),
            ("not_before", n(now - 86_400_000)),
            ("expires_at", n(now + 5 * 86_400_000)),
            ("revoked", AttributeValue::Bool(false)),
            ("hostname", s("gpu-17")),
        ],
    );

    let (code, out) = cli(&["store", "check"]);
    assert_eq!(code, 0, "nothing refused: {out}");
    assert!(out.contains("expiry_bucket missing"), "{out}");
    let (code, out) = cli(&["store", "init", "--adopt"]);
    assert_eq!(code, 0, "{out}");
    for line in [
        "e2e_principals: exists",
        "TTL enabled on purge_at",
        "e2e_certificates: index by_principal created",
        "e2e_certificates: index by_expiry created",
        "e2e_certificates: expiry_bucket set on 1 certificate(s)",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    let (code, out) = cli(&["store", "init", "--adopt"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("index by_expiry exists"), "idempotent: {out}");
    assert!(
        out.contains("expiry_bucket set on 0 certificate(s)"),
        "{out}"
    );

    for args in [
        &["cert", "list", "--expiring-within", "30d", "-o", "json"][..],
        &[
            "cert",
            "list",
            "--principal",
            "legacy@example.com",
            "-o",
            "json",
        ],
    ] {
        let (code, out) = cli(args);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&legacy.serial), "{args:?}: {out}");
    }
    let settings = moto_settings(&moto, "e2e");
    let serial = legacy.serial.clone();
    run_async(async move {
        let store = moto_store(settings, Purpose::Admin).await;
        let item = store
            .client()
            .get_item()
            .table_name(CERTIFICATES)
            .key("serial_number", AttributeValue::S(serial))
            .send()
            .await
            .expect("get-item")
            .item
            .expect("item");
        assert_eq!(
            item.get("hostname"),
            Some(&s("gpu-17")),
            "untouched: {item:?}"
        );
        assert_eq!(item.get("expiry_bucket"), Some(&s("all")), "{item:?}");
    });
    let (code, out) = cli(&["store", "check"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("expiry_bucket missing"), "{out}");

    // The adopted principal is served (the server's exact pipeline), typed by its certificate.
    let cert = legacy.cert.to_str().expect("utf-8");
    let (code, out) = cli(&["check", "--cert", cert, "--path", "/api/jobs", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"principal_type\": \"worker\""), "{out}");
}

/// A corrupt record replaces what was known: when the store then times out, the older good
/// answer must not come back from the stale window.
#[test]
fn a_timeout_after_a_corrupt_record_does_not_bring_back_the_old_answer() {
    let fleet = Fleet::start();
    let worker = fleet.worker.clone();
    fleet.all_answer(&worker, 200, Duration::from_secs(10));
    put_item(
        &fleet.moto,
        PRINCIPALS,
        vec![
            ("principal_id", s("worker-1@example.com")),
            ("principal_type", s("worker")),
            ("status", s("paused")),
            ("created_at", AttributeValue::N("1".into())),
        ],
    );
    fleet.all_answer(&worker, 503, TTL_AND_SLACK);
    fleet.moto.pause();
    // Past the TTL of the corrupt answer, within the stale window of the good one.
    let mut seen = Vec::new();
    let stale = wait_until(Duration::from_secs(3), || {
        seen.extend(fleet.statuses(&worker));
        fleet.replicas.iter().all(|r| {
            metric(
                &r.certgate.metrics(),
                "certgate_store_calls_total{operation=\"get_principal\",outcome=\"error\"}",
            ) > 2.0
        })
    });
    fleet.moto.resume();
    assert!(stale, "no failed lookups\n{}", fleet.logs());
    assert!(
        seen.iter().all(|s| *s != 200),
        "the good answer came back after the corrupt one: {seen:?}\n{}",
        fleet.logs()
    );
}
