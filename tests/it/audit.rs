//! The audit trail: every write of every backend appends one record with its actor, and
//! only a write that happened does; `certgate audit verify` (the real binary) finds an
//! edited, deleted or moved record; two processes writing at once leave one chain; and
//! `audit list` prints what an operator reads. The DynamoDB side is in `dynamodb::audit`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use certgate::cert::{RevocationReason, Serial};
use certgate::store::audit::verify;
use certgate::store::{
    Actor, Admin, AuditQuery, AuditRecord, CertificateRecord, EmbeddedStore, Principal,
    PrincipalStatus, Registration, StoreError,
};
use serde_json::{Value, json};

use super::world::{World, cli_with_env};

fn ops() -> Actor {
    Actor::Cli { user: "ops".into() }
}

fn api() -> Actor {
    Actor::Api {
        principal_id: "admin@example.com".into(),
        cn: Some("admin.example.com".into()),
        serial: "0abc".into(),
        sha256: "ab".repeat(32),
    }
}

fn worker(id: &str) -> Principal {
    Principal {
        principal_id: id.to_owned(),
        principal_type: Some("worker".into()),
        status: PrincipalStatus::Active,
        suspended_at: None,
        suspended_reason: None,
        roles: None,
        created_at: Some(1_700_000_000_000),
    }
}

fn cert(serial: &str, owner: &str) -> CertificateRecord {
    CertificateRecord {
        serial_number: serial.to_owned(),
        registration: Some(Registration {
            principal_id: owner.to_owned(),
            issuer: "CN=audit CA".into(),
            sha256: "cd".repeat(32),
            not_before: 1_700_000_000_000,
            expires_at: 1_900_000_000_000,
        }),
        revoked: false,
        revoked_at: None,
        revocation_reason: None,
    }
}

fn serial(hex: &str) -> Serial {
    hex.parse().expect("serial")
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("json")
}

/// Every kind of write, some refused, on a fresh store: one record per write that happened,
/// with its actor, action, target, reason, before and after; the chain verifies; the
/// filters select what they say.
pub async fn audit_conforms(store: Arc<dyn Admin>) {
    let w1 = worker("w1@example.com");
    store.create_principal(&w1, &ops()).await.expect("create");
    let suspended = store
        .suspend_principal("w1@example.com", "INC-9 leaked key", 5, &api())
        .await
        .expect("suspend");
    let active = store
        .activate_principal("w1@example.com", &ops())
        .await
        .expect("activate");
    let c = cert("0a", "w1@example.com");
    store
        .register_certificate(&c, &api())
        .await
        .expect("register");
    let revoked = store
        .revoke_certificate(
            &serial("0a"),
            None,
            RevocationReason::KeyCompromise,
            7,
            &ops(),
        )
        .await
        .expect("revoke");
    let only = store
        .revoke_certificate(
            &serial("0f"),
            Some("CN=old"),
            RevocationReason::CaCompromise,
            8,
            &ops(),
        )
        .await
        .expect("revocation-only");
    store
        .create_principal(&worker("w2@example.com"), &Actor::migrate())
        .await
        .expect("create w2");

    // Refused writes append nothing.
    let refused = [
        store.create_principal(&w1, &ops()).await.unwrap_err(),
        store
            .suspend_principal("ghost", "x", 1, &ops())
            .await
            .unwrap_err(),
        store.activate_principal("ghost", &ops()).await.unwrap_err(),
        store.register_certificate(&c, &ops()).await.unwrap_err(),
        store
            .revoke_certificate(&serial("0e"), None, RevocationReason::Superseded, 1, &ops())
            .await
            .unwrap_err(),
    ];
    for err in &refused {
        assert!(
            matches!(
                err,
                StoreError::NotFound { .. } | StoreError::AlreadyExists { .. }
            ),
            "{err:?}"
        );
    }

    let records = store
        .audit_records(&AuditQuery::default())
        .await
        .expect("records");
    let seen: Vec<(u64, &str, &str, Option<&str>)> = records
        .iter()
        .map(|r| {
            (
                r.sequence,
                r.action.as_str(),
                r.target.as_str(),
                r.reason.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "principal.create", "principal:w1@example.com", None),
            (
                2,
                "principal.suspend",
                "principal:w1@example.com",
                Some("INC-9 leaked key")
            ),
            (3, "principal.activate", "principal:w1@example.com", None),
            (4, "certificate.register", "certificate:0a", None),
            (
                5,
                "certificate.revoke",
                "certificate:0a",
                Some("key_compromise")
            ),
            (
                6,
                "certificate.revoke",
                "certificate:0f",
                Some("ca_compromise")
            ),
            (7, "principal.create", "principal:w2@example.com", None),
        ],
        "one record per write that happened, none for the {} refused",
        refused.len()
    );
    let actors: Vec<&Actor> = records.iter().map(|r| &r.actor).collect();
    let (ops, api, migrate) = (ops(), api(), Actor::migrate());
    assert_eq!(actors, [&ops, &api, &ops, &api, &ops, &ops, &migrate]);
    let states = |r: &AuditRecord| (r.before.clone(), r.after.clone());
    assert_eq!(states(&records[0]), (None, Some(to_json(&w1))));
    assert_eq!(
        states(&records[1]),
        (Some(to_json(&w1)), Some(to_json(&suspended)))
    );
    assert_eq!(
        states(&records[2]),
        (Some(to_json(&suspended)), Some(to_json(&active)))
    );
    assert_eq!(states(&records[3]), (None, Some(to_json(&c))));
    assert_eq!(
        states(&records[4]),
        (Some(to_json(&c)), Some(to_json(&revoked)))
    );
    assert_eq!(states(&records[5]), (None, Some(to_json(&only))));
    assert_eq!(records[1].after.as_ref().unwrap()["status"], "suspended");

    let v = verify(&records);
    assert!(v.is_valid && v.total_entries == 7, "{v:?}");
    assert_eq!(records[0].prev_hash, "");
    assert_eq!(records[3].prev_hash, records[2].hash);

    // The principal filter: its own records and those of its certificates.
    let of_w1 = AuditQuery {
        principal: Some("w1@example.com".into()),
        ..AuditQuery::default()
    };
    let sequences = |rs: Vec<AuditRecord>| rs.iter().map(|r| r.sequence).collect::<Vec<_>>();
    assert_eq!(
        sequences(store.audit_records(&of_w1).await.unwrap()),
        [1, 2, 3, 4, 5]
    );
    let since = AuditQuery {
        since: Some(records[6].at),
        ..AuditQuery::default()
    };
    let recent = store.audit_records(&since).await.unwrap();
    assert!(recent.iter().all(|r| r.at >= records[6].at), "{recent:?}");
    assert_eq!(recent.last().map(|r| r.sequence), Some(7));
}

#[tokio::test]
async fn embedded_store_audits_every_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("certgate.db")).expect("open");
    audit_conforms(Arc::new(store)).await;
}

/// `certgate audit verify -o json` on `config`: (exit code, its JSON).
fn verify_json(config: &Path) -> (i32, Value) {
    verify_json_with_env(config, &[])
}

/// [`verify_json`] with extra environment variables.
pub fn verify_json_with_env(config: &Path, env: &[(&str, &str)]) -> (i32, Value) {
    let (code, out) = cli_with_env(config, &["audit", "verify", "-o", "json"], env);
    let json = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    (code, json)
}

fn sqlite(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.execute_batch(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A world with two principals and five audited CLI writes (records 1–5).
fn world_with_history() -> World {
    let world = World::new();
    for (id, kind) in [("w1@example.com", "worker"), ("w2@example.com", "worker")] {
        let (code, out) = world.cli(&["principal", "create", id, "--type", kind]);
        assert_eq!(code, 0, "{out}");
    }
    world.suspend("w1@example.com", "INC-1");
    world.suspend("w2@example.com", "INC-2");
    let (code, out) = world.cli(&["principal", "activate", "w1@example.com"]);
    assert_eq!(code, 0, "{out}");
    world
}

#[test]
fn audit_verify_pinpoints_an_edited_deleted_or_moved_record_in_the_file() {
    let world = world_with_history();
    let db = world.path("certgate.db");
    let intact = json!({"is_valid": true, "total_entries": 5, "first_invalid_sequence": null});
    assert_eq!(verify_json(&world.config), (0, intact.clone()));

    // Edited: the reason of record 3 rewritten.
    sqlite(
        &db,
        "UPDATE audit SET reason = 'routine' WHERE sequence = 3",
    );
    let broken = |total: u64, at: u64| json!({"is_valid": false, "total_entries": total, "first_invalid_sequence": at});
    assert_eq!(verify_json(&world.config), (1, broken(5, 3)));
    let (code, out) = world.cli(&["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(out.contains("is_valid               false"), "{out}");
    assert!(out.contains("first_invalid_sequence 3"), "{out}");
    assert!(out.contains("broken at sequence 3"), "{out}");
    sqlite(&db, "UPDATE audit SET reason = 'INC-1' WHERE sequence = 3");
    assert_eq!(verify_json(&world.config), (0, intact.clone()));

    // Deleted: record 2 gone.
    sqlite(
        &db,
        "CREATE TABLE saved AS SELECT * FROM audit WHERE sequence = 2;
         DELETE FROM audit WHERE sequence = 2;",
    );
    assert_eq!(verify_json(&world.config), (1, broken(4, 2)));
    sqlite(
        &db,
        "INSERT INTO audit SELECT * FROM saved; DROP TABLE saved;",
    );
    assert_eq!(verify_json(&world.config), (0, intact));

    // Moved: records 4 and 5 swap places.
    sqlite(
        &db,
        "UPDATE audit SET sequence = -1 WHERE sequence = 4;
         UPDATE audit SET sequence = 4 WHERE sequence = 5;
         UPDATE audit SET sequence = 5 WHERE sequence = -1;",
    );
    assert_eq!(verify_json(&world.config), (1, broken(5, 4)));
}

#[test]
fn audit_list_prints_what_an_operator_reads() {
    let world = world_with_history();
    let (code, out) = world.cli(&["audit", "list"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        words(lines[0]),
        ["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "REASON"]
    );
    let user = match Actor::cli() {
        Actor::Cli { user } => format!("cli:{user}"),
        other => panic!("{other:?}"),
    };
    let row = words(lines[2]);
    assert_eq!(row[0], "2");
    assert!(
        row[1].ends_with('Z') && row[1].len() == 20,
        "RFC 3339 time: {out}"
    );
    assert_eq!(
        row[2..],
        [
            user.as_str(),
            "principal.create",
            "principal:w2@example.com"
        ]
    );
    assert_eq!(
        words(lines[4])[2..],
        [
            user.as_str(),
            "principal.suspend",
            "principal:w2@example.com",
            "INC-2"
        ]
    );

    let (code, out) = world.cli(&[
        "audit",
        "list",
        "--principal",
        "w1@example.com",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{out}");
    let records: Vec<Value> = serde_json::from_str(&out).expect("json");
    let seq: Vec<&Value> = records.iter().map(|r| &r["sequence"]).collect();
    assert_eq!(seq, [1, 3, 5]);
    assert_eq!(records[1]["action"], "principal.suspend");
    assert_eq!(records[1]["reason"], "INC-1");
    assert_eq!(records[1]["before"]["status"], "active");
    assert_eq!(records[1]["after"]["status"], "suspended");
    assert_eq!(records[1]["after"]["suspended_reason"], "INC-1");
    assert_eq!(records[1]["actor"]["kind"], "cli");

    // Nothing since a future time; the export is one JSON object per line.
    let (code, out) = world.cli(&["audit", "list", "--since", "2099-01-01T00:00:00Z"]);
    assert_eq!((code, out.lines().count()), (0, 1), "header only: {out}");
    let file = world.path("audit.jsonl");
    let (code, out) = world.cli(&["audit", "export", "--out", &file.display().to_string()]);
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(&file).expect("export");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[4]["action"], "principal.activate");
    let (code, out) = world.cli(&["audit", "list", "--since", "yesterday"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("RFC 3339"), "{out}");
}

/// Two processes, each a loop of 25 suspensions and 25 re-activations of its own principal
/// with the real CLI, at the same time on one file: one unbroken chain of all 100 writes.
#[test]
fn two_processes_writing_at_once_leave_one_chain_in_the_file() {
    let world = World::new();
    for id in ["a@example.com", "b@example.com"] {
        let (code, out) = world.cli(&["principal", "create", id, "--type", "worker"]);
        assert_eq!(code, 0, "{out}");
    }
    let loops: Vec<_> = ["a@example.com", "b@example.com"]
        .into_iter()
        .map(|id| write_loop(&world.config, id))
        .collect();
    for child in loops {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, v) = verify_json(&world.config);
    assert_eq!(
        (code, v),
        (
            0,
            json!({"is_valid": true, "total_entries": 102, "first_invalid_sequence": null})
        )
    );
}

/// A bash loop of 25 × (suspend, activate) of `id` with the real binary.
pub fn write_loop(config: &Path, id: &str) -> std::process::Child {
    write_loop_with_env(config, id, &[])
}

/// [`write_loop`] with extra environment variables.
pub fn write_loop_with_env(config: &Path, id: &str, env: &[(&str, &str)]) -> std::process::Child {
    let script = "for i in $(seq 25); do \
         \"$CERTGATE\" principal suspend \"$ID\" --reason \"round $i\" >/dev/null && \
         \"$CERTGATE\" principal activate \"$ID\" >/dev/null || exit 1; done";
    Command::new("bash")
        .args(["-c", script])
        .env("CERTGATE", env!("CARGO_BIN_EXE_certgate"))
        .env("CERTGATE_CONFIG", config)
        .env("ID", id)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bash")
}
