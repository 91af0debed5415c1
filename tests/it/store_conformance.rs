//! One conformance suite for every store backend, so the embedded store and DynamoDB cannot
//! drift: the same calls, the same answers, the same errors. The DynamoDB run talks to a
//! real DynamoDB-compatible server (moto) through the AWS SDK.

use std::sync::Arc;
use std::time::Duration;

use certgate::cert::{RevocationReason, Serial};
use certgate::store::dynamodb::DynamoSettings;
use certgate::store::{
    Actor, Admin, CertificateRecord, DynamoStore, EmbeddedStore, Lookup, Principal,
    PrincipalStatus, Purpose, Registration, StoreError,
};

use super::harness::Moto;

fn principal(id: &str, kind: &str, roles: Option<&[&str]>) -> Principal {
    Principal {
        principal_id: id.to_owned(),
        principal_type: Some(kind.to_owned()),
        status: PrincipalStatus::Active,
        suspended_at: None,
        suspended_reason: None,
        roles: roles.map(|r| r.iter().map(|s| (*s).to_owned()).collect()),
        created_at: Some(1_700_000_000_000),
    }
}

fn certificate(serial: &str, owner: &str, expires_at: i64) -> CertificateRecord {
    CertificateRecord {
        serial_number: serial.to_owned(),
        registration: Some(Registration {
            principal_id: owner.to_owned(),
            issuer: "CN=conformance CA, O=certgate".to_owned(),
            sha256: format!("{serial:0>64}"),
            not_before: expires_at - 86_400_000,
            expires_at,
        }),
        revoked: false,
        revoked_at: None,
        revocation_reason: None,
    }
}

/// A serial as the CLI would parse it.
fn serial(hex: &str) -> Serial {
    hex.parse().expect("hex serial")
}

fn serials(certs: &[CertificateRecord]) -> Vec<&str> {
    certs.iter().map(|c| c.serial_number.as_str()).collect()
}

/// Every behaviour the CLI and the decision rely on, in one pass over a fresh store.
async fn conformance(store: Arc<dyn Admin>) {
    store.ping().await.expect("ping");

    // create, get, list
    let alice = principal("alice@example.com", "user", None);
    let bob = principal("bob@example.com", "admin", Some(&["admin", "auditor"]));
    let carol = principal("carol@example.com", "worker", Some(&[]));
    for p in [&bob, &alice, &carol] {
        store
            .create_principal(p, &Actor::cli())
            .await
            .expect("create");
    }
    assert_eq!(
        store.get_principal("alice@example.com").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.get_principal("bob@example.com").await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(
        store.get_principal("carol@example.com").await.unwrap(),
        Some(carol.clone())
    );
    assert_eq!(
        store.get_principal("nobody@example.com").await.unwrap(),
        None
    );
    let ids: Vec<String> = store
        .list_principals()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.principal_id)
        .collect();
    assert_eq!(
        ids,
        ["alice@example.com", "bob@example.com", "carol@example.com"]
    );

    // a second create is a conflict and changes nothing
    let err = store
        .create_principal(
            &principal("alice@example.com", "admin", None),
            &Actor::cli(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists { kind: "principal", key } if key == "alice@example.com"),
        "{err:?}"
    );
    assert_eq!(
        store.get_principal("alice@example.com").await.unwrap(),
        Some(alice.clone())
    );

    // suspend with a reason, activate
    let suspended = store
        .suspend_principal(
            "alice@example.com",
            "INC-4711: key on a laptop that was stolen",
            42,
            &Actor::cli(),
        )
        .await
        .expect("suspend");
    assert_eq!(suspended.status, PrincipalStatus::Suspended);
    assert_eq!(suspended.suspended_at, Some(42));
    assert_eq!(
        suspended.suspended_reason.as_deref(),
        Some("INC-4711: key on a laptop that was stolen")
    );
    assert_eq!(
        suspended.principal_type.as_deref(),
        Some("user"),
        "other fields untouched"
    );
    assert_eq!(
        store.get_principal("alice@example.com").await.unwrap(),
        Some(suspended)
    );
    let active = store
        .activate_principal("alice@example.com", &Actor::cli())
        .await
        .expect("activate");
    assert_eq!(active, alice, "activation clears the suspension fields");
    assert_eq!(
        store.get_principal("alice@example.com").await.unwrap(),
        Some(alice.clone())
    );

    // updates of unknown keys are errors, never a silent create
    for err in [
        store
            .suspend_principal("ghost@example.com", "x", 1, &Actor::cli())
            .await
            .unwrap_err(),
        store
            .activate_principal("ghost@example.com", &Actor::cli())
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(&err, StoreError::NotFound { kind: "principal", key } if key == "ghost@example.com"),
            "{err:?}"
        );
    }
    assert_eq!(
        store.get_principal("ghost@example.com").await.unwrap(),
        None
    );
    let err = store
        .revoke_certificate(
            &serial("ffff"),
            None,
            RevocationReason::Superseded,
            1,
            &Actor::cli(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::NotFound {
                kind: "certificate",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.get_certificate(&serial("ffff")).await.unwrap(), None);

    // certificates: register, get, list by owner and by expiry
    let day = 86_400_000;
    let t0 = 1_800_000_000_000;
    let certs = [
        certificate("0a", "alice@example.com", t0 + 40 * day),
        certificate("0b", "bob@example.com", t0 + 5 * day),
        certificate("0c", "alice@example.com", t0 + 10 * day),
        certificate("0d", "bob@example.com", t0 + 90 * day),
    ];
    for c in &certs {
        store
            .register_certificate(c, &Actor::cli())
            .await
            .expect("register");
    }
    assert_eq!(
        store.get_certificate(&serial("0c")).await.unwrap(),
        Some(certs[2].clone())
    );
    let err = store
        .register_certificate(&certs[0], &Actor::cli())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::AlreadyExists {
                kind: "certificate",
                ..
            }
        ),
        "{err:?}"
    );
    let all = store.list_certificates(None, None).await.unwrap();
    assert_eq!(serials(&all), ["0b", "0c", "0a", "0d"], "ordered by expiry");
    let alices = store
        .list_certificates(Some("alice@example.com"), None)
        .await
        .unwrap();
    assert_eq!(serials(&alices), ["0c", "0a"]);
    let soon = store
        .list_certificates(None, Some(t0 + 10 * day))
        .await
        .unwrap();
    assert_eq!(
        serials(&soon),
        ["0b", "0c"],
        "expires_at <= the bound, bound included"
    );
    let bobs_soon = store
        .list_certificates(Some("bob@example.com"), Some(t0 + 30 * day))
        .await
        .unwrap();
    assert_eq!(serials(&bobs_soon), ["0b"]);
    assert!(
        store
            .list_certificates(Some("nobody"), None)
            .await
            .unwrap()
            .is_empty()
    );

    // revoke
    let revoked = store
        .revoke_certificate(
            &serial("0a"),
            None,
            RevocationReason::KeyCompromise,
            77,
            &Actor::cli(),
        )
        .await
        .expect("revoke");
    assert!(revoked.revoked);
    assert_eq!(revoked.revoked_at, Some(77));
    assert_eq!(revoked.revocation_reason.as_deref(), Some("key_compromise"));
    assert_eq!(
        revoked.registration, certs[0].registration,
        "other fields untouched"
    );
    assert_eq!(
        store.get_certificate(&serial("0a")).await.unwrap(),
        Some(revoked)
    );
    // A serial never registered: with its issuer, a revocation-only record; a registered
    // serial revoked with an issuer keeps its registration.
    let only = store
        .revoke_certificate(
            &serial("ffff"),
            Some("CN=old CA"),
            RevocationReason::CaCompromise,
            78,
            &Actor::cli(),
        )
        .await
        .expect("revocation-only");
    let want = CertificateRecord {
        serial_number: "ffff".to_owned(),
        registration: None,
        revoked: true,
        revoked_at: Some(78),
        revocation_reason: Some("ca_compromise".to_owned()),
    };
    assert_eq!(only, want);
    assert_eq!(
        store.get_certificate(&serial("ffff")).await.unwrap(),
        Some(want)
    );
    let again = store
        .revoke_certificate(
            &serial("0b"),
            Some("CN=conformance CA, O=certgate"),
            RevocationReason::Superseded,
            79,
            &Actor::cli(),
        )
        .await
        .expect("revoke registered");
    assert_eq!(again.registration, certs[1].registration);
    let err = store
        .register_certificate(&certificate("ffff", "alice@example.com", t0), &Actor::cli())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists { .. }),
        "a revoked serial is not registered over: {err:?}"
    );

    // concurrent updates: one create wins, the rest conflict; parallel suspensions all land
    let racers: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_principal(
                        &principal("racer@example.com", &format!("type-{i}"), None),
                        &Actor::cli(),
                    )
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        match r.await.expect("task") {
            Ok(()) => won += 1,
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one concurrent create succeeds");
    let many: Vec<String> = (0..12)
        .map(|i| format!("worker-{i:02}@example.com"))
        .collect();
    for id in &many {
        store
            .create_principal(&principal(id, "worker", None), &Actor::cli())
            .await
            .expect("create");
    }
    let suspends: Vec<_> = many
        .iter()
        .cloned()
        .map(|id| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .suspend_principal(&id, "rotation", 9, &Actor::cli())
                    .await
            })
        })
        .collect();
    for s in suspends {
        s.await.expect("task").expect("suspend");
    }
    let listed = store.list_principals().await.unwrap();
    let suspended = listed
        .iter()
        .filter(|p| p.principal_id.starts_with("worker-"))
        .filter(|p| p.status == PrincipalStatus::Suspended)
        .count();
    assert_eq!(suspended, many.len(), "no update lost");
    assert_eq!(listed.len(), 3 + 1 + many.len());

    // One audit record per write that happened (3 creates, suspend, activate, 4 registers,
    // 3 revokes, the racer that won, 12 creates, 12 suspends), concurrent ones included,
    // in one chain.
    let records = store
        .audit_records(&certgate::store::AuditQuery::default())
        .await
        .unwrap();
    let v = certgate::store::audit::verify(&records);
    assert!(v.is_valid, "{v:?}");
    assert_eq!(v.total_entries, 3 + 2 + 4 + 3 + 1 + 12 + 12);
}

#[tokio::test]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("certgate.db")).expect("open");
    conformance(Arc::new(store)).await;
}

/// Settings for a store on `moto`, with the deadlines of an admin command.
pub fn moto_settings(moto: &Moto, prefix: &str) -> DynamoSettings {
    DynamoSettings {
        region: Some("eu-west-1".into()),
        endpoint_url: Some(moto.endpoint()),
        principals_table: format!("{prefix}_principals"),
        certificates_table: format!("{prefix}_certificates"),
        audit_table: format!("{prefix}_audit"),
        ..DynamoSettings::default()
    }
}

/// A client for `moto` with static credentials (moto accepts any).
pub async fn moto_store(settings: DynamoSettings, purpose: Purpose) -> DynamoStore {
    DynamoStore::connect_with(settings, purpose, |loader| {
        loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
    })
    .await
    .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_conforms() {
    // Concurrent writes race through transactions: moto must apply them one at a time.
    let moto = tokio::task::spawn_blocking(Moto::start_serial)
        .await
        .expect("moto");
    let store = moto_store(moto_settings(&moto, "conformance"), Purpose::Admin).await;
    let report = store.init_tables().await.expect("init");
    assert_eq!(report.len(), 4, "{report:?}");
    // Idempotent: a second init finds the three tables and the TTL setting.
    let again = store.init_tables().await.expect("init again");
    assert!(
        again
            .iter()
            .all(|l| l.contains("exists") || l.contains("already")),
        "{again:?}"
    );
    conformance(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_unreachable_is_unavailable_within_its_deadline() {
    let moto = tokio::task::spawn_blocking(Moto::start)
        .await
        .expect("moto");
    let settings = moto_settings(&moto, "deadline");
    let admin = moto_store(settings.clone(), Purpose::Admin).await;
    admin.init_tables().await.expect("init");
    let serving = moto_store(settings, Purpose::Serve).await;
    assert_eq!(serving.get_principal("a").await.unwrap(), None);

    moto.pause();
    let started = std::time::Instant::now();
    let err = serving.get_principal("a").await.unwrap_err();
    let took = started.elapsed();
    moto.resume();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    // The serving deadline (250ms by default) bounds a lookup; without it the SDK's own
    // defaults let one take 3.1s. Half of that still leaves a loaded machine 6× the deadline.
    assert!(took < Duration::from_millis(1500), "a lookup took {took:?}");
    assert_eq!(serving.get_principal("a").await.unwrap(), None, "recovers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_missing_table_says_how_to_create_it() {
    let moto = tokio::task::spawn_blocking(Moto::start)
        .await
        .expect("moto");
    // Admin deadlines: moto's very first request (it loads its DynamoDB model) can take
    // longer than the serving deadline.
    let store = moto_store(moto_settings(&moto, "missing"), Purpose::Admin).await;
    let err = store.get_principal("a").await.unwrap_err().to_string();
    assert!(
        err.contains("missing_principals") && err.contains("certgate store init"),
        "{err}"
    );
}
