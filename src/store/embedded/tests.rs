use super::*;
use crate::store::Actor;
use crate::store::fake::serial;

fn principal(id: &str) -> Principal {
    Principal {
        principal_id: id.to_owned(),
        principal_type: Some("user".to_owned()),
        status: PrincipalStatus::Active,
        suspended_at: None,
        suspended_reason: None,
        roles: Some(vec!["reader".to_owned(), "writer".to_owned()]),
        created_at: Some(1_700_000_000_000),
    }
}

fn cert(serial: &str, principal_id: &str, expires_at: EpochMillis) -> CertificateRecord {
    CertificateRecord {
        serial_number: serial.to_owned(),
        registration: Some(Registration {
            principal_id: principal_id.to_owned(),
            issuer: "CN=Test CA,O=Example".to_owned(),
            sha256: "ab".repeat(32),
            not_before: 1_700_000_000_000,
            expires_at,
        }),
        revoked: false,
        revoked_at: None,
        revocation_reason: None,
    }
}

/// A store on a fresh file; keep the directory alive as long as the store.
fn open() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("certgate.db")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn create_get_list_principals() {
    let (_dir, store) = open();
    let mut bob = principal("bob@example.com");
    bob.roles = None;
    store
        .create_principal(&principal("alice@example.com"), &Actor::cli())
        .await
        .unwrap();
    store.create_principal(&bob, &Actor::cli()).await.unwrap();

    let alice = store.get_principal("alice@example.com").await.unwrap();
    assert_eq!(alice, Some(principal("alice@example.com")));
    assert_eq!(
        store.get_principal("bob@example.com").await.unwrap(),
        Some(bob)
    );
    assert_eq!(store.get_principal("nobody").await.unwrap(), None);
    let ids: Vec<_> = store.list_principals().await.unwrap();
    let ids: Vec<_> = ids.iter().map(|p| p.principal_id.as_str()).collect();
    assert_eq!(ids, ["alice@example.com", "bob@example.com"]);
    store.ping().await.unwrap();
}

#[tokio::test]
async fn duplicates_are_already_exists() {
    let (_dir, store) = open();
    store
        .create_principal(&principal("alice"), &Actor::cli())
        .await
        .unwrap();
    let err = store
        .create_principal(&principal("alice"), &Actor::cli())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists { kind: "principal", key } if key == "alice"),
        "{err:?}"
    );
    store
        .register_certificate(&cert("0a", "alice", 5), &Actor::cli())
        .await
        .unwrap();
    let err = store
        .register_certificate(&cert("0a", "alice", 5), &Actor::cli())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::AlreadyExists {
                kind: "certificate",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn suspend_and_activate() {
    let (_dir, store) = open();
    store
        .create_principal(&principal("alice"), &Actor::cli())
        .await
        .unwrap();

    let suspended = store
        .suspend_principal("alice", "left the company", 42, &Actor::cli())
        .await
        .unwrap();
    assert_eq!(suspended.status, PrincipalStatus::Suspended);
    assert_eq!(suspended.suspended_at, Some(42));
    assert_eq!(
        suspended.suspended_reason.as_deref(),
        Some("left the company")
    );
    assert_eq!(store.get_principal("alice").await.unwrap(), Some(suspended));

    let active = store
        .activate_principal("alice", &Actor::cli())
        .await
        .unwrap();
    assert_eq!(active, principal("alice"));
    assert_eq!(store.get_principal("alice").await.unwrap(), Some(active));
}

#[tokio::test]
async fn updates_of_unknown_keys_are_not_found() {
    let (_dir, store) = open();
    let err = store
        .suspend_principal("ghost", "why", 1, &Actor::cli())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { kind: "principal", key } if key == "ghost"),
        "{err:?}"
    );
    let err = store
        .activate_principal("ghost", &Actor::cli())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                kind: "principal",
                ..
            }
        ),
        "{err:?}"
    );
    let err = store
        .revoke_certificate(
            &serial("ff"),
            None,
            RevocationReason::Superseded,
            1,
            &Actor::cli(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                kind: "certificate",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        store.list_principals().await.unwrap().is_empty(),
        "no silent create"
    );
}

#[tokio::test]
async fn incomplete_records_are_refused_not_filled_in() {
    let (_dir, store) = open();
    let neither = CertificateRecord {
        registration: None,
        ..cert("0c", "alice", 5)
    };
    let err = store
        .register_certificate(&neither, &Actor::cli())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("neither registered nor revoked"),
        "{err}"
    );
    assert_eq!(store.get_certificate(&serial("0c")).await.unwrap(), None);
    let untyped = Principal {
        principal_type: None,
        ..principal("bob")
    };
    let err = store
        .create_principal(&untyped, &Actor::cli())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("with a type"), "{err}");
    assert_eq!(store.get_principal("bob").await.unwrap(), None);
}

#[tokio::test]
async fn register_revoke_and_list_certificates() {
    let (_dir, store) = open();
    for c in [
        cert("03", "alice", 300),
        cert("01", "alice", 100),
        cert("02", "bob", 100),
    ] {
        store.register_certificate(&c, &Actor::cli()).await.unwrap();
    }
    assert_eq!(
        store.get_certificate(&serial("01")).await.unwrap(),
        Some(cert("01", "alice", 100))
    );
    assert_eq!(store.get_certificate(&serial("99")).await.unwrap(), None);

    let revoked = store
        .revoke_certificate(
            &serial("01"),
            None,
            RevocationReason::KeyCompromise,
            77,
            &Actor::cli(),
        )
        .await
        .unwrap();
    assert!(revoked.revoked);
    assert_eq!(revoked.revoked_at, Some(77));
    assert_eq!(revoked.revocation_reason.as_deref(), Some("key_compromise"));
    assert_eq!(
        store.get_certificate(&serial("01")).await.unwrap(),
        Some(revoked)
    );

    let serials = |certs: Vec<CertificateRecord>| -> Vec<String> {
        certs.into_iter().map(|c| c.serial_number).collect()
    };
    let all = store.list_certificates(None, None).await.unwrap();
    assert_eq!(serials(all), ["01", "02", "03"]);
    let alices = store.list_certificates(Some("alice"), None).await.unwrap();
    assert_eq!(serials(alices), ["01", "03"]);
    let expiring = store.list_certificates(None, Some(100)).await.unwrap();
    assert_eq!(serials(expiring), ["01", "02"]);
    let both = store
        .list_certificates(Some("bob"), Some(99))
        .await
        .unwrap();
    assert!(both.is_empty());
}

#[tokio::test]
async fn unreadable_rows_are_corrupt() {
    let (dir, store) = open();
    let raw = Connection::open(dir.path().join("certgate.db")).unwrap();
    raw.execute_batch(
        "INSERT INTO principals (principal_id, principal_type, status, created_at)
             VALUES ('frozen', 'user', 'frozen', 1);
         INSERT INTO principals (principal_id, principal_type, status, roles, created_at)
             VALUES ('badroles', 'user', 'active', '{\"not\": \"a list\"}', 1);
         INSERT INTO certificates (serial_number, principal_id, issuer, sha256,
             not_before, expires_at) VALUES ('0b', 'x', 'CN=CA', 'ab', 'soon', 2);",
    )
    .unwrap();

    for (key, result) in [
        ("frozen", store.get_principal("frozen").await.map(drop)),
        ("badroles", store.get_principal("badroles").await.map(drop)),
        ("0b", store.get_certificate(&serial("0b")).await.map(drop)),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { key: k, .. } if k == key),
            "{err:?}"
        );
    }
    let err = store.list_principals().await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[tokio::test]
async fn two_handles_on_one_file_see_each_others_writes() {
    let (dir, server) = open();
    let cli = EmbeddedStore::open(&dir.path().join("certgate.db")).unwrap();
    server
        .create_principal(&principal("alice"), &Actor::cli())
        .await
        .unwrap();
    cli.suspend_principal("alice", "incident 42", 5, &Actor::cli())
        .await
        .unwrap();
    let seen = server.get_principal("alice").await.unwrap().unwrap();
    assert_eq!(seen.suspended_reason.as_deref(), Some("incident 42"));
    cli.register_certificate(&cert("0c", "alice", 9), &Actor::cli())
        .await
        .unwrap();
    assert!(
        server
            .get_certificate(&serial("0c"))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_do_not_fail_with_locked() {
    let (dir, first) = open();
    first
        .create_principal(&principal("alice"), &Actor::cli())
        .await
        .unwrap();
    let path = dir.path().join("certgate.db");
    let mut tasks = tokio::task::JoinSet::new();
    for handle in 0..4 {
        let store = Arc::new(EmbeddedStore::open(&path).unwrap());
        for i in 0..10 {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                let at = handle * 100 + i;
                store
                    .suspend_principal("alice", "busy", at, &Actor::cli())
                    .await?;
                store
                    .activate_principal("alice", &Actor::cli())
                    .await
                    .map(drop)
            });
        }
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(
        first.get_principal("alice").await.unwrap(),
        Some(principal("alice"))
    );
}

#[test]
fn open_is_idempotent_and_reports_the_path() {
    let (dir, _store) = open();
    EmbeddedStore::open(&dir.path().join("certgate.db")).unwrap();
    let missing = dir.path().join("no/such/dir/certgate.db");
    let Err(StoreError::Unavailable(msg)) = EmbeddedStore::open(&missing) else {
        panic!("opening under a missing directory must fail");
    };
    assert!(msg.detail.contains("no/such/dir"), "{msg}");
}

#[tokio::test]
async fn a_new_store_and_its_wal_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = open();
    // A write, so the -wal and -shm files exist.
    store
        .create_principal(&principal("alice"), &Actor::cli())
        .await
        .unwrap();
    for name in ["certgate.db", "certgate.db-wal", "certgate.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

/// `cert revoke --issuer` of a serial certgate never registered: a revocation-only row,
/// read back as such; revoking it again, or a registered serial with an issuer, keeps what
/// is there. A row without an owner that is not revoked is corrupt, never a registration.
#[tokio::test]
async fn revocation_only_records() {
    let (dir, store) = open();
    let only = store
        .revoke_certificate(
            &serial("0d"),
            Some("CN=Old CA"),
            RevocationReason::KeyCompromise,
            5,
            &Actor::cli(),
        )
        .await
        .unwrap();
    let want = CertificateRecord {
        serial_number: "0d".to_owned(),
        registration: None,
        revoked: true,
        revoked_at: Some(5),
        revocation_reason: Some("key_compromise".to_owned()),
    };
    assert_eq!(only, want);
    assert_eq!(
        store.get_certificate(&serial("0d")).await.unwrap(),
        Some(want)
    );
    store
        .register_certificate(&cert("01", "alice", 100), &Actor::cli())
        .await
        .unwrap();
    let registered = store
        .revoke_certificate(
            &serial("01"),
            Some("CN=Test CA,O=Example"),
            RevocationReason::Superseded,
            6,
            &Actor::cli(),
        )
        .await
        .unwrap();
    assert_eq!(
        registered.registration,
        cert("01", "alice", 100).registration
    );
    let all = store.list_certificates(None, None).await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        store
            .list_certificates(None, Some(1_000))
            .await
            .unwrap()
            .iter()
            .all(|c| c.registration.is_some())
    );

    let raw = Connection::open(dir.path().join("certgate.db")).unwrap();
    raw.execute(
        "UPDATE certificates SET revoked = 0 WHERE serial_number = '0d'",
        [],
    )
    .unwrap();
    let err = store.get_certificate(&serial("0d")).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == "0d"),
        "{err:?}"
    );
}

/// A version 1 file (registration columns NOT NULL) opens as version 2 with its rows intact
/// and then takes revocation-only records.
#[tokio::test]
async fn a_version_1_file_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("certgate.db");
    let v1 = Connection::open(&path).unwrap();
    v1.execute_batch(
        "CREATE TABLE principals (principal_id TEXT PRIMARY KEY, principal_type TEXT NOT NULL,
             status TEXT NOT NULL, suspended_at INTEGER, suspended_reason TEXT, roles TEXT,
             created_at INTEGER NOT NULL);
         CREATE TABLE certificates (serial_number TEXT PRIMARY KEY,
             principal_id TEXT NOT NULL, issuer TEXT NOT NULL, sha256 TEXT NOT NULL,
             not_before INTEGER NOT NULL, expires_at INTEGER NOT NULL,
             revoked INTEGER NOT NULL DEFAULT 0, revoked_at INTEGER, revocation_reason TEXT);
         CREATE INDEX certificates_principal_id ON certificates (principal_id);
         CREATE INDEX certificates_expires_at ON certificates (expires_at);
         INSERT INTO certificates VALUES ('01', 'alice', 'CN=Test CA,O=Example',
             'abababababababababababababababababababababababababababababababab',
             1700000000000, 100, 0, NULL, NULL);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(v1);
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(
        store.get_certificate(&serial("01")).await.unwrap(),
        Some(cert("01", "alice", 100))
    );
    store
        .revoke_certificate(
            &serial("0e"),
            Some("CN=Old CA"),
            RevocationReason::Unspecified,
            1,
            &Actor::cli(),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .list_certificates(Some("alice"), Some(100))
            .await
            .unwrap()
            .len(),
        1
    );
    let raw = Connection::open(&path).unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

/// A version 2 file (before the audit trail) gains an empty chain and audits its next write.
#[tokio::test]
async fn a_version_2_file_gains_the_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("certgate.db");
    drop(EmbeddedStore::open(&path).unwrap());
    let v2 = Connection::open(&path).unwrap();
    v2.execute_batch("DROP TABLE audit; PRAGMA user_version = 2;")
        .unwrap();
    drop(v2);
    let store = EmbeddedStore::open(&path).unwrap();
    assert!(
        store
            .audit_records(&AuditQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    store
        .create_principal(&principal("alice"), &Actor::cli())
        .await
        .unwrap();
    let records = store.audit_records(&AuditQuery::default()).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].action, "principal.create");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_run_on_one_thread_and_a_panic_is_an_error_not_a_hang() {
    let (_dir, store) = open();
    let thread = || store.run(|_| Ok(std::thread::current().id()));
    let (a, b) = tokio::join!(thread(), thread());
    assert_eq!(a.unwrap(), b.unwrap(), "one connection thread");
    let panicked = store.run(|_| -> Result<(), StoreError> { panic!("boom") });
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), panicked).await;
    assert!(
        matches!(answer, Ok(Err(StoreError::Unavailable(_)))),
        "{answer:?}"
    );
    // The thread survives the panic; the connection it poisoned fails closed.
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), thread()).await;
    assert!(
        matches!(next, Ok(Err(StoreError::Unavailable(_)))),
        "{next:?}"
    );
}
