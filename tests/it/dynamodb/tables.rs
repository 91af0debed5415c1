//! The tables through the CLI: migrating the embedded store into DynamoDB, IRSA-style web
//! identity credentials, `store check` on foreign items and `store init --adopt` of
//! pre-existing tables.

use aws_sdk_dynamodb::types::AttributeValue;
use certgate::store::Purpose;

use super::{
    CERTIFICATES, PRINCIPALS, create_hash_key_tables, put_item, put_legacy_items, replica_config, s,
};
use crate::it::harness::{AWS_ENV, Moto, free_port};
use crate::it::store_conformance::{moto_settings, moto_store};
use crate::it::world::{World, cli_with_env, run_async};

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
    // The target's audit trail: one record per copied record, by `store migrate`; the
    // re-run copied nothing and appended nothing.
    let audit = || {
        let (code, out) = cli(&["audit", "list", "-o", "json"]);
        assert_eq!(code, 0, "{out}");
        let records: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
        records
            .iter()
            .map(|r| (r["actor"]["kind"].to_string(), r["action"].to_string()))
            .collect::<Vec<_>>()
    };
    let kinds = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, a)| (format!("\"{k}\""), format!("\"{a}\"")))
            .collect()
    };
    let migrated = [
        ("migrate", "principal.create"),
        ("migrate", "principal.create"),
        ("migrate", "certificate.register"),
        ("migrate", "certificate.register"),
    ];
    assert_eq!(audit(), kinds(&migrated));

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
    let mut then = migrated.to_vec();
    then.push(("cli", "certificate.revoke"));
    assert_eq!(
        audit(),
        kinds(&then),
        "the refused suspension appended nothing"
    );
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
    create_hash_key_tables(&moto);
    let legacy = world.client(
        "legacy",
        "legacy@example.com",
        &World::spec("legacy@example.com", "worker", "legacy.example.com"),
    );
    put_legacy_items(&moto, &legacy);

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
