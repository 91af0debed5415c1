//! The inventory on DynamoDB (moto): certificates seen through Envoy are listed by `cert
//! list --expiring-within` without registration, while registered records and `store check`
//! are unaffected; with DynamoDB frozen (SIGSTOP) checks are still answered from the cache
//! and the sightings that do not fit the queue are dropped and counted.

use std::time::Duration;

use time::Duration as Span;

use super::super::harness::{AWS_ENV, Certgate, CertgateAddress, EchoUpstream, Envoy, Moto};
use super::super::inventory::{expiring, worker_cert};
use super::super::world::{World, append_file, cli_with_env, write_file};
use super::{SERVING_DEADLINE, enrol, metric, replica_config_with};
use crate::it::harness::{Curl, wait_until};

#[test]
fn dynamodb_inventory_lists_seen_certificates_and_never_holds_a_check() {
    let world = World::new();
    let moto = Moto::start();
    let config = replica_config_with(
        &world,
        &moto,
        "a.yaml",
        world.grpc_port,
        world.admin_port,
        SERVING_DEADLINE,
    );
    // Lookups cached long enough to outlast the freeze; every certificate due for a write
    // again after 100 ms; a one-place queue, so a frozen store fills it at once.
    let yaml = std::fs::read_to_string(&config).expect("config");
    write_file(&config, yaml.replace("cache_ttl: 1s", "cache_ttl: 30s"));
    append_file(
        &config,
        "inventory: {interval: 100ms, refresh_interval: 300ms, queue_size: 1}\n",
    );
    let cli = |args: &[&str]| cli_with_env(&config, args, AWS_ENV);
    let (code, out) = cli(&["store", "init"]);
    assert_eq!(code, 0, "{out}");
    let registered = worker_cert(&world, "registered", Span::days(1), Span::days(20));
    enrol(&config, "worker-1@example.com", "worker", &registered);
    let soon = worker_cert(&world, "soon", Span::days(70), Span::days(80));
    let later = worker_cert(&world, "later", Span::days(1), Span::days(60));
    let latest = worker_cert(&world, "latest", Span::days(1), Span::days(89));

    let certgate = Certgate::start_with_env(&config, world.admin_port, AWS_ENV);
    let upstream = EchoUpstream::start();
    let envoy = Envoy::start(&world.envoy_options(
        CertgateAddress::Tcp(world.grpc_port),
        upstream.port,
        "ACCEPT_UNTRUSTED",
    ));
    let logs = || format!("{}\n{}", certgate.proc.logs(), envoy.proc.logs());
    let get = |client: &super::Client| {
        Curl {
            port: envoy.port,
            ca: &world.ca_pem,
            client: Some((client.cert.as_path(), client.key.as_path())),
            method: "GET",
            path: "/api/jobs",
            headers: vec![],
        }
        .send()
    };
    let all = [&registered, &soon, &later, &latest];
    for client in all {
        let reply = get(client);
        assert_eq!(reply.status, 200, "{}\n{}", reply.body, logs());
    }
    let mut listed = Vec::new();
    let written = wait_until(Duration::from_secs(10), || {
        listed = expiring(cli, "30d").0;
        listed.len() == 2
    });
    assert!(written, "{listed:?}\n{}", logs());
    // By expiry: the unregistered one seen (10 days left), then the registered one once, as
    // its record (19 days left).
    assert_eq!(listed, vec![soon.serial.clone(), registered.serial.clone()]);
    let (_, json) = expiring(cli, "30d");
    assert_eq!(json[0]["registered"], false, "inventory: {json}");
    assert_eq!(json[1]["revoked"], false, "registered record: {json}");
    let (every, _) = expiring(cli, "90d");
    assert_eq!(every.len(), 4, "{every:?}");
    // Inventory items are not certificate records: not listed without the expiry filter,
    // not found by serial, not problems for `store check`.
    let (code, out) = cli(&["cert", "list", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let records: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(records.as_array().map(Vec::len), Some(1), "{records}");
    let (code, out) = cli(&["cert", "get", &soon.serial]);
    assert_ne!(code, 0, "{out}");
    let (code, out) = cli(&["store", "check"]);
    assert_eq!(code, 0, "store check finds nothing wrong: {out}");

    // Frozen DynamoDB: every certificate is due again after the 100 ms interval; the writer
    // hangs on the first batch, the queue holds one, the rest are dropped — and every check
    // is still answered from the cache.
    for client in all {
        assert_eq!(get(client).status, 200, "{}", logs());
    }
    moto.pause();
    std::thread::sleep(Duration::from_millis(150));
    let dropped = wait_until(Duration::from_secs(3), || {
        for client in all {
            let reply = get(client);
            assert_eq!(reply.status, 200, "{}\n{}", reply.body, logs());
        }
        metric(&certgate.metrics(), "certgate_inventory_dropped_total") > 0.0
    });
    moto.resume();
    assert!(dropped, "no drop counted\n{}", certgate.metrics());
}
