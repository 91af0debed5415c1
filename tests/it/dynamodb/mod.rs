//! Many replicas, one truth: two certgate replicas, each behind its own Envoy 1.40, share
//! DynamoDB tables on a real DynamoDB-compatible server (moto). Suspensions made with the
//! CLI and with a raw runbook-style `UpdateItem` reach both; bad data denies; an outage is
//! served from cache for the stale window, then 503, and recovers without a restart; a store
//! timeout right after a corrupt record does not bring back the older answer.

mod audit;
mod inventory;
mod replicas;
mod runbook;
mod tables;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use certgate::store::Purpose;

use super::harness::{
    AWS_ENV, Certgate, CertgateAddress, Curl, EchoUpstream, Envoy, Mode, Moto, Reply, free_port,
    http_get, wait_until,
};
use super::store_conformance::{moto_settings, moto_store};
use super::world::{
    Client, World, certgate_deny, cli_with_env, config_yaml, deny_reason, run_async, write_file,
};

const PRINCIPALS: &str = "e2e_principals";
const CERTIFICATES: &str = "e2e_certificates";

/// A replica: its configuration and an Envoy, deciding through a certgate server in front
/// of it (ext_authz mode) or with certgate inside it (module mode, no server).
struct Replica {
    config: PathBuf,
    admin_port: u16,
    certgate: Option<Certgate>,
    envoy: Envoy,
}

impl Replica {
    /// certgate's metrics, from its admin listener in either mode.
    fn metrics(&self) -> String {
        http_get(self.admin_port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    fn logs(&self) -> String {
        let certgate = self.certgate.as_ref().map(|c| c.proc.logs());
        format!(
            "{}\n{}",
            certgate.unwrap_or_default(),
            self.envoy.proc.logs()
        )
    }
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
    /// Tables made by `store init`, worker-1 enrolled with the CLI; deciding in `mode`.
    fn start(mode: Mode) -> Fleet {
        Fleet::start_with(mode, |_, _, config, worker| init_and_enrol(config, worker))
    }

    /// Two replicas deciding in `mode` on tables that `prepare` (given the world, moto,
    /// replica a's configuration and worker-1's client) made and filled.
    fn start_with(mode: Mode, prepare: impl FnOnce(&World, &Moto, &Path, &Client)) -> Fleet {
        let world = World::new();
        let moto = Moto::start();
        let worker = world.client(
            "worker",
            "worker-1@example.com",
            &World::spec("worker-1@example.com", "worker", "worker-1.example.com"),
        );
        let a = replica_config(&world, &moto, "a.yaml", world.grpc_port, world.admin_port);
        let b = replica_config(&world, &moto, "b.yaml", free_port(), free_port());
        prepare(&world, &moto, &a, &worker);

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
                let certgate = (mode == Mode::ExtAuthz)
                    .then(|| Certgate::start_with_env(&config, admin, AWS_ENV));
                let mut options = world.envoy_options(
                    CertgateAddress::Tcp(grpc),
                    upstream.port,
                    "ACCEPT_UNTRUSTED",
                );
                if mode == Mode::Module {
                    options.module_config = Some(&config);
                }
                let envoy = Envoy::start(&options);
                let ready = wait_until(Duration::from_secs(20), || {
                    matches!(http_get(admin, "/readyz"), Some((200, _)))
                });
                assert!(ready, "replica not ready\n{}", envoy.proc.logs());
                Replica {
                    config,
                    admin_port: admin,
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
            .map(Replica::logs)
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

/// `store init` (twice: idempotent), then worker-1 enrolled with its certificate.
fn init_and_enrol(config: &Path, worker: &Client) {
    let cli = |args: &[&str]| {
        let (code, out) = cli_with_env(config, args, AWS_ENV);
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
    enrol(config, "worker-1@example.com", "worker", worker);
}

/// Both tables as an older deployment's Terraform made them: hash keys only, no certgate
/// indexes, no TTL.
fn create_hash_key_tables(moto: &Moto) {
    let settings = moto_settings(moto, "e2e");
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
}

/// The sum of the samples of `name` (a metric name, with or without labels) in `text`.
pub(super) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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

/// `client`'s principal as an older deployment wrote it: no `principal_type` or `created_at`,
/// its own attributes; its certificate without `expiry_bucket` or `purge_at`.
fn put_legacy_items(moto: &Moto, client: &Client) {
    let n = |v: i64| AttributeValue::N(v.to_string());
    let now = now_ms().parse::<i64>().expect("ms");
    put_item(
        moto,
        PRINCIPALS,
        vec![
            ("principal_id", s(&client.principal)),
            ("status", s("active")),
            ("owner_team", s("ml-infra")),
        ],
    );
    put_item(
        moto,
        CERTIFICATES,
        vec![
            ("serial_number", s(&client.serial)),
            ("principal_id", s(&client.principal)),
            ("issuer", s("CN=e2e CA")),
            ("fingerprint_sha256", s(&client.sha256)),
            ("not_before", n(now - 3_600_000)),
            ("expires_at", n(now + 5 * 86_400_000)),
            ("revoked", AttributeValue::Bool(false)),
            ("hostname", s("gpu-17")),
        ],
    );
}
