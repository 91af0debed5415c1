//! The certificate inventory and expiry watch, end to end through Envoy 1.40 with the
//! embedded store: certificates nobody registered are listed by `cert list
//! --expiring-within` once seen in traffic and counted in the expiry tiers; the "expires
//! soon" warning follows each policy's `expiry_warning`. And what both backends promise of the
//! inventory itself (first_seen kept, never a certificate record), and the gauges the alerts
//! read for a failing CRL source and readiness.

use std::sync::Arc;
use std::time::Duration;

use certgate::cert::Serial;
use certgate::pki::CertSpec;
use certgate::store::{Admin, EmbeddedStore, Purpose, Sighting};
use time::Duration as Span;

use super::dynamodb::metric;
use super::harness::{
    Certgate, CertgateAddress, Curl, EchoUpstream, Envoy, Moto, Reply, wait_until,
};
use super::store_conformance::{moto_settings, moto_store};
use super::world::{Client, World, append_file, now};

/// certgate (inventory written every second) behind Envoy, principals enrolled, no
/// certificate registered.
pub(super) struct Traffic {
    pub world: World,
    pub certgate: Certgate,
    pub envoy: Envoy,
    _upstream: EchoUpstream,
}

impl Traffic {
    pub(super) fn start(world: World, principals: &[(&str, &str)]) -> Traffic {
        world.enrol(principals, &[]);
        append_file(
            &world.config,
            "inventory: {interval: 1s, refresh_interval: 300ms}\n",
        );
        let certgate = Certgate::start(&world.config, world.admin_port);
        let upstream = EchoUpstream::start();
        let envoy = Envoy::start(&world.envoy_options(
            CertgateAddress::Tcp(world.grpc_port),
            upstream.port,
            "ACCEPT_UNTRUSTED",
        ));
        Traffic {
            world,
            certgate,
            envoy,
            _upstream: upstream,
        }
    }

    pub(super) fn get(&self, client: &Client, path: &str) -> Reply {
        Curl {
            port: self.envoy.port,
            ca: &self.world.ca_pem,
            client: Some((client.cert.as_path(), client.key.as_path())),
            method: "GET",
            path,
            headers: vec![],
        }
        .send()
    }

    pub(super) fn logs(&self) -> String {
        format!("{}\n{}", self.certgate.proc.logs(), self.envoy.proc.logs())
    }
}

/// A worker certificate issued `age` ago, valid for `lifetime`.
pub(super) fn worker_cert(world: &World, name: &str, age: Span, lifetime: Span) -> Client {
    let principal = "worker-1@example.com";
    let spec = CertSpec {
        not_before: now() - age,
        not_after: now() - age + lifetime,
        ..World::spec(principal, "worker", "worker-1.example.com")
    };
    world.client(name, principal, &spec)
}

/// The serials `cert list --expiring-within within -o json` prints, with the JSON.
pub(super) fn expiring(
    cli: impl Fn(&[&str]) -> (i32, String),
    within: &str,
) -> (Vec<String>, serde_json::Value) {
    let (code, out) = cli(&["cert", "list", "--expiring-within", within, "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON list");
    let serials = json
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["serial_number"].as_str().unwrap_or_default().to_owned())
        .collect();
    (serials, json)
}

#[test]
fn certificates_seen_in_traffic_are_listed_without_registration() {
    let world = World::new();
    let soon = worker_cert(&world, "soon", Span::days(70), Span::days(80));
    let later = worker_cert(&world, "later", Span::days(1), Span::days(60));
    let latest = worker_cert(&world, "latest", Span::days(1), Span::days(89));
    let traffic = Traffic::start(world, &[("worker-1@example.com", "worker")]);
    let cli = |args: &[&str]| traffic.world.cli(args);
    let (before, _) = expiring(cli, "90d");
    assert!(
        before.is_empty(),
        "nothing registered, nothing seen: {before:?}"
    );

    for client in [&soon, &later, &latest] {
        let reply = traffic.get(client, "/api/jobs");
        assert_eq!(reply.status, 200, "{}\n{}", reply.body, traffic.logs());
    }
    let mut listed = Vec::new();
    let written = wait_until(Duration::from_secs(10), || {
        listed = expiring(cli, "30d").0;
        !listed.is_empty()
    });
    assert!(written, "nothing recorded\n{}", traffic.logs());
    assert_eq!(
        listed,
        vec![soon.serial.clone()],
        "only the one within 30 days"
    );
    let (all, json) = expiring(cli, "90d");
    assert_eq!(
        all,
        [
            soon.serial.clone(),
            later.serial.clone(),
            latest.serial.clone()
        ]
    );
    let first = &json[0];
    assert_eq!(first["principal_id"], "worker-1@example.com", "{first}");
    assert_eq!(first["sha256"], soon.sha256, "{first}");
    assert_eq!(first["registered"], false, "{first}");
    assert_eq!(first["issuer"], "O=certgate dev, CN=e2e CA", "{first}");
    let (code, table) = cli(&["cert", "list", "--expiring-within", "30d"]);
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains(&soon.serial) && table.contains("seen, not registered"),
        "{table}"
    );
    // Registration is unchanged: the certificates are still unknown to `cert get`.
    let (code, out) = cli(&["cert", "get", &soon.serial]);
    assert_ne!(code, 0, "{out}");

    // The tiers come from the inventory: one certificate within 30 days, none within 7.
    let tiers = wait_until(Duration::from_secs(5), || {
        metric(
            &traffic.certgate.metrics(),
            "certgate_certificates_expiring{within=\"30d\"}",
        ) == 1.0
    });
    let text = traffic.certgate.metrics();
    assert!(tiers, "{text}");
    assert_eq!(
        metric(&text, "certgate_certificates_expiring{within=\"7d\"}"),
        0.0,
        "{text}"
    );
    let ca_left = metric(
        &text,
        "certgate_ca_expiry_seconds{ca=\"O=certgate dev, CN=e2e CA\"}",
    );
    assert!(
        (3600.0 * 24.0 * 3640.0..3600.0 * 24.0 * 3650.0).contains(&ca_left),
        "CA valid 3650 days from yesterday: {ca_left}\n{text}"
    );
    assert_eq!(
        metric(&text, "certgate_inventory_dropped_total"),
        0.0,
        "{text}"
    );
    // Started once /readyz answered 200: the gauge the not-ready alert reads says so.
    assert_eq!(metric(&text, "certgate_ready"), 1.0, "{text}");
}

#[test]
fn a_seven_day_admin_certificate_is_logged_only_inside_its_policys_window() {
    let world = World::new();
    let yaml = std::fs::read_to_string(&world.config).expect("config");
    let yaml = yaml.replace(
        "    max_lifetime: 7d\n",
        "    max_lifetime: 7d\n    expiry_warning: 24h\n",
    );
    super::world::write_file(&world.config, yaml);
    let admin = |name: &str, age: Span| {
        let spec = CertSpec {
            not_before: now() - age,
            not_after: now() - age + Span::days(7),
            ..World::spec("admin@example.com", "admin", "admin.example.com")
        };
        world.client(name, "admin@example.com", &spec)
    };
    let fresh = admin("fresh", Span::days(1));
    let last_day = admin("last-day", Span::hours(7 * 24 - 12));
    let traffic = Traffic::start(world, &[("admin@example.com", "admin")]);
    for client in [&fresh, &last_day] {
        let reply = traffic.get(client, "/admin/users");
        assert_eq!(reply.status, 200, "{}\n{}", reply.body, traffic.logs());
    }
    let warned = |serial: &str| {
        traffic.certgate.proc.logs().lines().any(|l| {
            l.contains("client certificate expires soon")
                && l.contains(&format!("\"serial\":\"{serial}\""))
        })
    };
    assert!(
        wait_until(Duration::from_secs(5), || warned(&last_day.serial)),
        "12 hours left is inside the admin policy's 24h window\n{}",
        traffic.logs()
    );
    assert!(
        !warned(&fresh.serial),
        "6 days left is outside it (the default 30d would have warned)\n{}",
        traffic.logs()
    );
    // The alert tiers: the last-day certificate is in the 24h tier (the emergency alert), the
    // other only in the 7d one.
    let tiers = wait_until(Duration::from_secs(5), || {
        let text = traffic.certgate.metrics();
        metric(&text, "certgate_certificates_expiring{within=\"24h\"}") == 1.0
            && metric(&text, "certgate_certificates_expiring{within=\"7d\"}") == 2.0
    });
    assert!(tiers, "{}", traffic.certgate.metrics());
    let text = traffic.certgate.metrics();
    assert_eq!(
        metric(
            &text,
            "certgate_client_cert_expiry_seconds_count{policy=\"admin\"}"
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "certgate_client_cert_expiry_seconds_bucket{policy=\"admin\",le=\"86400\"}"
        ),
        1.0,
        "{text}"
    );
}

fn sighting(sha: &str, serial: &str, expires_at: i64, seen_at: i64) -> Sighting {
    Sighting {
        sha256: sha.repeat(64 / sha.len()),
        serial_number: serial.into(),
        issuer: "CN=CA".into(),
        principal_id: "worker-1@example.com".into(),
        not_before: 0,
        expires_at,
        first_seen: seen_at,
        last_seen: seen_at,
    }
}

/// What both backends promise of the inventory.
async fn inventory_conforms(store: Arc<dyn Admin>) {
    let a = sighting("a", "0a", 3_000, 100);
    let b = sighting("b", "0b", 1_000, 100);
    store
        .record_sightings(&[a.clone(), b.clone()])
        .await
        .expect("record");
    // Seen again later: last_seen moves, first_seen stays.
    store
        .record_sightings(&[sighting("a", "0a", 3_000, 500)])
        .await
        .expect("record again");
    let all = store.list_sightings(None).await.expect("list");
    assert_eq!(
        all,
        vec![
            b.clone(),
            Sighting {
                last_seen: 500,
                ..a
            }
        ],
        "ordered by expiry"
    );
    let soon = store.list_sightings(Some(2_000)).await.expect("list");
    assert_eq!(soon, vec![b]);
    // A sighting is not a certificate record: nothing for the decision, nothing listed.
    let serial: Serial = "0a".parse().expect("hex");
    assert_eq!(store.get_certificate(&serial).await.expect("get"), None);
    assert!(
        store
            .list_certificates(None, None)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store
            .list_certificates(None, Some(i64::MAX))
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn embedded_inventory_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("certgate.db")).expect("open");
    inventory_conforms(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_inventory_conforms() {
    let moto = tokio::task::spawn_blocking(Moto::start)
        .await
        .expect("moto");
    let settings = certgate::store::dynamodb::DynamoSettings {
        purge_expired_after: Some(Duration::from_secs(86_400)),
        ..moto_settings(&moto, "inventory")
    };
    let store = Arc::new(moto_store(settings, Purpose::Admin).await);
    store.init_tables().await.expect("init");
    inventory_conforms(store.clone()).await;
    // Expired certificates leave the inventory with the table's TTL, as records do.
    let item = store
        .client()
        .get_item()
        .table_name("inventory_certificates")
        .key(
            "serial_number",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("seen#{}", "b".repeat(64))),
        )
        .send()
        .await
        .expect("get")
        .item
        .expect("the inventory item");
    assert_eq!(
        item["purge_at"].as_n().map(String::as_str),
        Ok("86401"),
        "{item:?}"
    );
    assert_eq!(
        item["item_kind"].as_s().map(String::as_str),
        Ok("inventory"),
        "{item:?}"
    );
}

#[test]
fn failing_crl_source_and_not_ready_are_exported_for_the_alerts() {
    let world = World::new();
    let dead = super::harness::free_port();
    let url = format!("http://127.0.0.1:{dead}/ca.crl");
    append_file(
        &world.config,
        &format!(
            "crl:\n  retry_backoff: 50ms\n  max_retry_backoff: 100ms\n  timeout: 1s\n  \
             issuers:\n    - ca: \"O=certgate dev, CN=e2e CA\"\n      sources:\n        \
             - url: {url}\n"
        ),
    );
    let certgate = super::world::spawn_certgate(&world.config, world.admin_port, &[]);
    let series = format!("certgate_crl_consecutive_failures{{source=\"{url}\"}}");
    let failing = wait_until(Duration::from_secs(10), || {
        metric(&certgate.metrics(), &series) > 2.0
    });
    assert!(failing, "{}\n{}", certgate.metrics(), certgate.proc.logs());
    // The CRL is required and never loaded: /readyz fails, and says so in the gauge.
    let ready = super::harness::http_get(world.admin_port, "/readyz");
    assert!(matches!(ready, Some((503, _))), "{ready:?}");
    assert_eq!(metric(&certgate.metrics(), "certgate_ready"), 0.0);
}
