//! Clock jumps: the decision at a certificate's and its CA's validity boundaries ± the
//! configured skew, and a clock that jumps forward and back between checks of a certificate
//! the identity cache already holds (each check is judged at the `now` it is given, never
//! at the time the identity was cached).

use std::time::Duration;

use super::*;
use crate::pki::{CertAuthority, CertSpec};
use crate::store::CacheSettings;
use crate::store::fake::FakeStore;

const T0: i64 = 1_790_000_000;
const SKEW: i64 = 60;
const DAY: i64 = 86_400;
/// The leaf: valid T0 .. T0 + 5 days.
const LEAF_NOT_AFTER: i64 = T0 + 5 * DAY;
/// Its CA expires first: T0 − 10 days .. T0 + 3 days.
const CA_NOT_AFTER: i64 = T0 + 3 * DAY;

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).expect("time")
}

/// A checker with `trust.clock_skew: 60s` and an identity cache of an hour, trusting a CA
/// valid T0 − 10 days .. `ca_not_after`; and the leaf.
fn fixture(ca_not_after: i64) -> (Checker, String, tempfile::TempDir) {
    let ca = CertAuthority::new("clock", at(T0 - 10 * DAY), at(ca_not_after)).expect("CA");
    let spec = CertSpec {
        organizational_unit: Some("worker".into()),
        not_after: at(LEAF_NOT_AFTER),
        ..CertSpec::client("w1", at(T0), time::Duration::days(1))
    };
    let leaf = ca.issue(&spec).expect("leaf").cert_pem;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("write");
    let yaml = format!(
        "trust: {{ca_bundle: ca.pem, clock_skew: {SKEW}s}}\nidentity: {{cache_ttl: 1h}}\n\
         roles_by_type: {{worker: [worker]}}\n\
         policies:\n  default:\n    permissions: {{worker: [\"GET /api/*\"]}}\n"
    );
    let config = Config::from_yaml(&yaml, &dir.path().join("c.yaml")).expect("valid");
    let store = Arc::new(FakeStore::default());
    store.put("w1", "worker");
    let settings = CacheSettings {
        ttl: Duration::from_secs(60),
        max_entries: 100,
        stale_if_error: Duration::ZERO,
    };
    let metrics = Metrics::new();
    let cached = CachedStore::new(store, settings, metrics.clone());
    (Checker::new(config, cached, metrics), leaf, dir)
}

/// The reason code of a GET /api/x with `cert` at `now`, or "allow".
async fn decide(checker: &Checker, cert: &str, now: i64) -> &'static str {
    match checker.check(super::tests::input(cert), now).await.decision {
        Ok(_) => "allow",
        Err(deny) => deny.reason.as_str(),
    }
}

#[tokio::test]
async fn validity_boundaries_hold_to_the_second_within_the_skew() {
    // (the CA's notAfter, now, the decision)
    let cases = [
        (CA_NOT_AFTER, T0 - SKEW - 1, "certificate_not_yet_valid"),
        (CA_NOT_AFTER, T0 - SKEW, "allow"),
        (CA_NOT_AFTER, CA_NOT_AFTER + SKEW, "allow"),
        (CA_NOT_AFTER, CA_NOT_AFTER + SKEW + 1, "untrusted_issuer"),
        // A CA that outlives the leaf: the leaf's own end.
        (T0 + 30 * DAY, LEAF_NOT_AFTER + SKEW, "allow"),
        (
            T0 + 30 * DAY,
            LEAF_NOT_AFTER + SKEW + 1,
            "certificate_expired",
        ),
    ];
    for (ca_not_after, now, want) in cases {
        // A fresh checker each time: nothing cached from a neighbouring second.
        let (checker, leaf, _dir) = fixture(ca_not_after);
        assert_eq!(
            decide(&checker, &leaf, now).await,
            want,
            "at T0{:+}s",
            now - T0
        );
    }
}

#[tokio::test]
async fn a_clock_jumping_forward_and_back_is_judged_at_each_check() {
    let (checker, leaf, _dir) = fixture(CA_NOT_AFTER);
    // Cached at T0 + 1h, then the clock jumps: each answer follows the `now` it is given.
    let jumps = [
        (T0 + 3600, "allow"),
        (T0 - DAY, "certificate_not_yet_valid"),
        (T0 + 7200, "allow"),
        (CA_NOT_AFTER + SKEW + 1, "untrusted_issuer"),
        (T0 + 3 * 3600, "allow"),
        (LEAF_NOT_AFTER + DAY, "untrusted_issuer"),
        (T0 + 4 * 3600, "allow"),
    ];
    for (now, want) in jumps {
        assert_eq!(
            decide(&checker, &leaf, now).await,
            want,
            "after a jump to T0{:+}s",
            now - T0
        );
    }
}
