//! Two replicas behind their own Envoys on shared tables: suspensions by CLI and by raw
//! `UpdateItem`, runbook revocations, principal items written by other tools, an outage
//! served from cache then 503, and a timeout right after a corrupt record (the older answer
//! must not come back).

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{Fleet, PRINCIPALS, TTL_AND_SLACK, assert_reason, enrol, metric, now_ms, put_item, s};
use crate::it::harness::{Mode, Moto, in_both_modes, wait_until};
use crate::it::world::World;

fn suspensions_reach_every_replica_by_cli_and_by_raw_update_item(mode: Mode) {
    let fleet = Fleet::start(mode);
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
            r.logs().contains("corrupt record worker-1@example.com"),
            "the bad record is logged\n{}",
            r.logs()
        );
    }
    fleet.put_principal(good(s("active")));
    fleet.all_answer(&worker, 200, TTL_AND_SLACK);
}

/// The airunner runbook's unconditional revoke, on a serial certgate never registered and on
/// a registered one: 401 `certificate_revoked` with the reason on every replica, and the CLI
/// shows the unregistered one as a revocation-only record.
fn runbook_revoke_of_unregistered_and_registered_serials_denies_on_every_replica(mode: Mode) {
    let fleet = Fleet::start(mode);
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

    // certgate's CLI writes the same revocation-only record with --issuer.
    let other = fleet.world.client(
        "other",
        "worker-2@example.com",
        &World::spec("worker-2@example.com", "worker", "worker-2b.example.com"),
    );
    fleet.all_answer(&other, 200, Duration::from_secs(10));
    let (code, out) = fleet.cli(&[
        "cert",
        "revoke",
        &other.serial,
        "--reason",
        "cessation_of_operation",
        "--issuer",
        "CN=e2e CA",
    ]);
    assert_eq!(code, 0, "{out}");
    let replies = fleet.all_answer(&other, 401, TTL_AND_SLACK);
    assert_reason(&replies, "certificate_revoked", "cessation_of_operation");

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
fn principal_items_without_type_or_creation_time_and_with_extra_attributes_are_served(mode: Mode) {
    let fleet = Fleet::start(mode);
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

fn an_outage_is_served_from_cache_for_the_window_then_503_and_recovers(mode: Mode) {
    let mut fleet = Fleet::start(mode);
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
            .all(|r| metric(&r.metrics(), "certgate_store_stale_served_total") > 0.0)
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
        let logs = r.logs();
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

/// A corrupt record replaces what was known: when the store then times out, the older good
/// answer must not come back from the stale window.
fn a_timeout_after_a_corrupt_record_does_not_bring_back_the_old_answer(mode: Mode) {
    let fleet = Fleet::start(mode);
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
                &r.metrics(),
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

in_both_modes!(
    suspensions_reach_every_replica_by_cli_and_by_raw_update_item,
    runbook_revoke_of_unregistered_and_registered_serials_denies_on_every_replica,
    principal_items_without_type_or_creation_time_and_with_extra_attributes_are_served,
    an_outage_is_served_from_cache_for_the_window_then_503_and_recovers,
    a_timeout_after_a_corrupt_record_does_not_bring_back_the_old_answer,
);
