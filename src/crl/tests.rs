//! The shared state: what a check sees as CRLs come, go stale, or fail to verify.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::*;
use crate::cert::Anchor;
use crate::config::Config;
use crate::pki::{CertAuthority, CrlSpec};

const NOW: i64 = 1_790_000_000;

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).expect("time")
}

struct Fixture {
    root: CertAuthority,
    other: CertAuthority,
    config: Arc<Config>,
    _dir: tempfile::TempDir,
}

fn config_with(
    dir: &tempfile::TempDir,
    crl_yaml: &str,
) -> Result<Config, Vec<crate::config::Problem>> {
    let yaml = format!(
        "trust: {{ca_bundle: ca.pem}}\npolicies:\n  default: {{}}\n  lax: {{revocation: optional}}\n{crl_yaml}"
    );
    Config::from_yaml(&yaml, &dir.path().join("certgate.yaml"))
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = CertAuthority::new("root", at(NOW - 86_400), at(NOW + 365 * 86_400)).expect("CA");
    let other = CertAuthority::new("other", at(NOW - 86_400), at(NOW + 365 * 86_400)).expect("CA");
    std::fs::write(
        dir.path().join("ca.pem"),
        format!("{}{}", root.cert_pem(), other.cert_pem()),
    )
    .expect("write");
    let config = config_with(
        &dir,
        "crl:\n  issuers:\n    - ca: \"CN=root, O=certgate dev\"\n      sources: [{url: \"http://127.0.0.1:1/root.crl\"}]\n    - ca: \"O=certgate dev, CN=other\"\n      max_age: 2h\n      sources: [{file: other.crl}]\n",
    )
    .unwrap_or_else(|p| panic!("{p:?}"));
    Fixture {
        root,
        other,
        config: Arc::new(config),
        _dir: dir,
    }
}

fn issuer<'a>(f: &'a Fixture, cn: &str) -> &'a CrlIssuer {
    f.config
        .crl
        .issuers
        .iter()
        .find(|i| i.name.contains(&format!("CN={cn}")))
        .expect("configured issuer")
}

/// A CRL of `ca` issued at `this_update`, valid one day, listing `serials`.
fn crl(ca: &CertAuthority, this_update: i64, serials: &[u64]) -> Vec<u8> {
    ca.crl(&CrlSpec {
        revoked: serials
            .iter()
            .map(|s| (*s, Some(rcgen::RevocationReason::KeyCompromise)))
            .collect(),
        ..CrlSpec::new(at(this_update), Duration::days(1))
    })
    .expect("crl")
    .der
}

fn load(f: &Fixture, cn: &str, der: &[u8], source: &str) -> Result<VerifiedCrl, CrlError> {
    VerifiedCrl::load(der, &f.config.trust, issuer(f, cn), NOW, 60, source)
}

fn revocation(f: &Fixture) -> Revocation {
    Revocation::new(f.config.crl_inputs(), Metrics::new())
}

/// Look up as a check does, for a certificate issued by the CA of the bundle in force whose
/// subject is `issuer` (the first of that name).
trait StatusByName {
    fn status_of(&self, issuer: &str, serial_hex: &str, now: i64) -> CrlStatus;
}

impl StatusByName for Revocation {
    fn status_of(&self, issuer: &str, serial_hex: &str, now: i64) -> CrlStatus {
        let inputs = self.inputs();
        match inputs.trust.cas().iter().find(|ca| ca.subject == issuer) {
            Some(ca) => {
                let serial = serial_hex.parse().expect("hex serial");
                self.snapshot().status(ca, &serial, now)
            }
            None => CrlStatus::NotConfigured,
        }
    }
}

fn root_name(f: &Fixture) -> String {
    issuer(f, "root").name.clone()
}

#[test]
fn issuers_are_resolved_in_either_dn_order() {
    let f = fixture();
    assert_eq!(f.config.crl.issuers.len(), 2);
    assert_eq!(issuer(&f, "other").freshness.max_age_secs, 7200);
    assert_eq!(
        issuer(&f, "root").freshness.max_age_secs,
        86_400,
        "default 24h"
    );
    assert_eq!(
        issuer(&f, "root").sources[0].refresh_interval,
        std::time::Duration::from_secs(3600),
        "URLs refresh hourly by default"
    );
    assert!(f.config.crl_required(), "policy default requires CRLs");
}

#[test]
fn nothing_loaded_means_unknown_for_configured_issuers_only() {
    let f = fixture();
    let state = revocation(&f);
    let CrlStatus::Unknown(why) = state.status_of(&root_name(&f), "01", NOW) else {
        panic!("expected unknown");
    };
    let why = why.to_string();
    assert!(
        why.contains("no CRL of issuer") && why.contains("CN=root"),
        "{why}"
    );
    assert_eq!(
        state.status_of("CN=someone else", "01", NOW),
        CrlStatus::NotConfigured
    );
    let ready = state
        .readiness(NOW)
        .expect_err("not ready without CRLs")
        .to_string();
    assert!(
        ready.contains("CN=root") && ready.contains("CN=other"),
        "{ready}"
    );
}

#[test]
fn a_loaded_crl_answers_revoked_or_not_listed() {
    let f = fixture();
    let state = revocation(&f);
    let loaded = load(&f, "root", &crl(&f.root, NOW - 60, &[0x42]), "test").expect("valid");
    assert_eq!(state.offer(loaded, NOW), Offered::Installed);
    let name = root_name(&f);
    assert_eq!(
        state.status_of(&name, "42", NOW),
        CrlStatus::Revoked {
            reason: "key_compromise",
            revoked_at: NOW - 60 - 3600
        }
    );
    assert_eq!(state.status_of(&name, "43", NOW), CrlStatus::NotListed);
    let still = state
        .readiness(NOW)
        .expect_err("other issuer missing")
        .to_string();
    assert!(!still.contains("CN=root"), "{still}");
}

#[test]
fn freshness_is_judged_at_check_time() {
    let f = fixture();
    let state = revocation(&f);
    let loaded = load(&f, "other", &crl(&f.other, NOW - 60, &[]), "test").expect("valid");
    assert_eq!(state.offer(loaded, NOW), Offered::Installed);
    let name = issuer(&f, "other").name.clone();
    assert_eq!(state.status_of(&name, "01", NOW), CrlStatus::NotListed);
    // max_age of this issuer is 2h: three hours later the same CRL is stale.
    let later = NOW + 3 * 3600;
    let CrlStatus::Unknown(why) = state.status_of(&name, "01", later) else {
        panic!("expected stale");
    };
    let why = why.to_string();
    assert!(
        why.contains("stale") && why.contains("3h01m ago") && why.contains("max_age is 2h"),
        "{why}"
    );
}

#[test]
fn past_next_update_is_stale_even_when_young() {
    let f = fixture();
    let state = revocation(&f);
    let short = f
        .root
        .crl(&CrlSpec::new(at(NOW - 60), Duration::minutes(10)))
        .expect("crl")
        .der;
    let loaded = load(&f, "root", &short, "test").expect("valid");
    assert_eq!(state.offer(loaded, NOW), Offered::Installed);
    let CrlStatus::Unknown(why) = state.status_of(&root_name(&f), "01", NOW + 3600) else {
        panic!("expected past nextUpdate");
    };
    let why = why.to_string();
    assert!(why.contains("past its nextUpdate"), "{why}");
}

#[test]
fn a_stale_crl_is_never_installed() {
    let f = fixture();
    let state = revocation(&f);
    let old = crl(&f.root, NOW - 3 * 86_400, &[]);
    let loaded = load(&f, "root", &old, "http://x/stale.crl").expect("verifies");
    assert_eq!(state.offer(loaded, NOW), Offered::Stale);
    let CrlStatus::Unknown(why) = state.status_of(&root_name(&f), "01", NOW) else {
        panic!("expected unknown");
    };
    let why = why.to_string();
    assert!(
        why.contains("http://x/stale.crl served a CRL that is stale"),
        "{why}"
    );
}

#[test]
fn an_older_crl_never_replaces_a_newer_one() {
    let f = fixture();
    let state = revocation(&f);
    let new = load(&f, "root", &crl(&f.root, NOW - 60, &[7]), "a").expect("valid");
    let old = load(&f, "root", &crl(&f.root, NOW - 600, &[]), "b").expect("valid");
    let same = load(&f, "root", &crl(&f.root, NOW - 60, &[7]), "b").expect("valid");
    assert_eq!(state.offer(new, NOW), Offered::Installed);
    assert_eq!(state.offer(old, NOW), Offered::Older);
    assert_eq!(
        state.offer(same, NOW),
        Offered::Unchanged,
        "a mirror, same second"
    );
    assert!(matches!(
        state.status_of(&root_name(&f), "07", NOW),
        CrlStatus::Revoked { .. }
    ));
}

#[test]
fn unverifiable_crls_are_refused_with_the_reason() {
    let f = fixture();
    let lookalike = CertAuthority::new("root", at(NOW - 86_400), at(NOW + 86_400)).expect("CA");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            b"<html>502 Bad Gateway</html>".to_vec(),
            "malformed",
        ),
        (
            "truncated",
            crl(&f.root, NOW - 60, &[1, 2])[..40].to_vec(),
            "malformed",
        ),
        (
            "another issuer",
            crl(&f.other, NOW - 60, &[]),
            "wrong_issuer",
        ),
        (
            "same name, other key",
            crl(&lookalike, NOW - 60, &[]),
            "bad_signature",
        ),
        (
            "from the future",
            crl(&f.root, NOW + 3600, &[]),
            "bad_times",
        ),
    ];
    for (what, bytes, kind) in cases {
        let err = load(&f, "root", &bytes, "test").expect_err(what);
        assert_eq!(err.kind(), kind, "{what}: {err}");
    }
}

#[test]
fn a_refused_crl_leaves_the_good_one_in_force() {
    let f = fixture();
    let state = revocation(&f);
    let good = load(&f, "root", &crl(&f.root, NOW - 60, &[9]), "a").expect("valid");
    assert_eq!(state.offer(good, NOW), Offered::Installed);
    state.record_failure(
        &root_name(&f),
        RefreshFailure {
            class: FailureClass::FetchFailed,
            detail: "a: HTTP status 500".into(),
        },
    );
    assert!(matches!(
        state.status_of(&root_name(&f), "09", NOW),
        CrlStatus::Revoked { .. }
    ));
    // Once stale, the message carries the last failure too.
    let CrlStatus::Unknown(why) = state.status_of(&root_name(&f), "09", NOW + 2 * 86_400) else {
        panic!("expected stale");
    };
    let why = why.to_string();
    assert!(why.contains("HTTP status 500"), "{why}");
}

#[test]
fn reconfigure_keeps_crls_whose_issuer_and_key_remain() {
    let f = fixture();
    let state = revocation(&f);
    let good = load(&f, "root", &crl(&f.root, NOW - 60, &[9]), "a").expect("valid");
    state.offer(good, NOW);
    // Same config with a longer grace: the CRL stays.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("ca.pem"),
        format!("{}{}", f.root.cert_pem(), f.other.cert_pem()),
    )
    .expect("write");
    let yaml = "crl:\n  next_update_grace: 1h\n  issuers:\n    - ca: \"CN=root, O=certgate dev\"\n      sources: [{url: \"http://127.0.0.1:1/root.crl\"}]\n";
    state.reconfigure(config_with(&dir, yaml).expect("valid").crl_inputs());
    assert!(matches!(
        state.status_of(&root_name(&f), "09", NOW),
        CrlStatus::Revoked { .. }
    ));
    // The root CA replaced by a look-alike with another key: the CRL goes.
    let lookalike = CertAuthority::new("root", at(NOW - 86_400), at(NOW + 86_400)).expect("CA");
    std::fs::write(dir.path().join("ca.pem"), lookalike.cert_pem()).expect("write");
    state.reconfigure(config_with(&dir, yaml).expect("valid").crl_inputs());
    assert!(matches!(
        state.status_of(&root_name(&f), "09", NOW),
        CrlStatus::Unknown(_)
    ));
}

#[test]
fn readiness_can_be_waived() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), f.root.cert_pem()).expect("write");
    let serve = "crl:\n  readiness: serve\n  issuers:\n    - ca: \"CN=root,O=certgate dev\"\n      sources: [{file: r.crl}]\n";
    let state = Revocation::new(
        config_with(&dir, serve).expect("valid").crl_inputs(),
        Metrics::new(),
    );
    assert_eq!(state.readiness(NOW), Ok(()));
    assert!(matches!(
        state.status_of(&root_name(&f), "01", NOW),
        CrlStatus::Unknown(_)
    ));
}

#[test]
fn gauges_follow_the_crl_in_force() {
    let f = fixture();
    let metrics = Metrics::new();
    let state = Revocation::new(f.config.crl_inputs(), metrics.clone());
    let good = load(&f, "root", &crl(&f.root, NOW - 60, &[1, 2, 3]), "a").expect("valid");
    state.offer(good, NOW);
    state.export_gauges(NOW);
    let name = root_name(&f);
    assert_eq!(metrics.crl_entries.with_label_values(&[&name]).get(), 3);
    assert_eq!(
        metrics.crl_age_seconds.with_label_values(&[&name]).get(),
        60.0
    );
    assert_eq!(
        metrics
            .crl_next_update_seconds
            .with_label_values(&[&name])
            .get(),
        86_400.0 - 60.0
    );
    assert_eq!(metrics.crl_usable.with_label_values(&[&name]).get(), 1);
    let other = issuer(&f, "other").name.clone();
    assert_eq!(metrics.crl_usable.with_label_values(&[&other]).get(), 0);
}

#[test]
fn a_large_crl_loads_and_indexes() {
    let f = fixture();
    let serials: Vec<u64> = (0..20_000u64).map(|i| i * 7 + 1).collect();
    let loaded = load(&f, "root", &crl(&f.root, NOW - 60, &serials), "big").expect("valid");
    assert_eq!(loaded.index.len(), 20_000);
    let serial = |n: u64| crate::cert::Serial::from_der_content(&n.to_be_bytes());
    assert!(loaded.index.get(&serial(8)).is_some());
    assert!(loaded.index.get(&serial(9)).is_none());
}

#[test]
fn a_policy_only_reload_keeps_crls_and_updates_readiness() {
    let f = fixture();
    let state = revocation(&f);
    let good = load(&f, "root", &crl(&f.root, NOW - 60, &[9]), "a").expect("valid");
    state.offer(good, NOW);
    assert!(state.readiness(NOW).is_err(), "the other issuer has no CRL");
    // Same CRL settings; every policy now optional: nothing requires CRLs for readiness.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("ca.pem"),
        format!("{}{}", f.root.cert_pem(), f.other.cert_pem()),
    )
    .expect("write");
    let mut relaxed = Config::from_yaml(
        "trust: {ca_bundle: ca.pem}\npolicies:\n  default: {revocation: optional}\n",
        &dir.path().join("certgate.yaml"),
    )
    .expect("valid");
    relaxed.crl = f.config.crl.clone();
    let relaxed = relaxed.crl_inputs();
    assert!(f.config.crl_inputs().loads_like(&relaxed));
    state.reconfigure(relaxed);
    assert_eq!(state.readiness(NOW), Ok(()));
    assert!(matches!(
        state.status_of(&root_name(&f), "09", NOW),
        CrlStatus::Revoked { .. }
    ));
}

#[test]
fn a_crl_verified_by_a_ca_no_longer_trusted_is_not_installed() {
    let f = fixture();
    let state = revocation(&f);
    // Verified under the current bundle, offered after a reload that replaced the root CA.
    let late = load(&f, "root", &crl(&f.root, NOW - 60, &[9]), "a").expect("valid");
    let dir = tempfile::tempdir().expect("tempdir");
    let lookalike = CertAuthority::new("root", at(NOW - 86_400), at(NOW + 86_400)).expect("CA");
    std::fs::write(dir.path().join("ca.pem"), lookalike.cert_pem()).expect("write");
    let yaml =
        "crl:\n  issuers:\n    - ca: \"CN=root, O=certgate dev\"\n      sources: [{file: r.crl}]\n";
    state.reconfigure(config_with(&dir, yaml).expect("valid").crl_inputs());
    assert_eq!(state.offer(late, NOW), Offered::Unconfigured);
    assert!(matches!(
        state.status_of(&root_name(&f), "09", NOW),
        CrlStatus::Unknown(_)
    ));
}

/// A CA rollover: two CAs named `CN=ca, O=certgate dev` with two keys, the new one first in
/// the bundle, one issuer entry for the name.
struct Rollover {
    old: CertAuthority,
    new: CertAuthority,
    state: Revocation,
    _dir: tempfile::TempDir,
}

fn rollover() -> Rollover {
    let dir = tempfile::tempdir().expect("tempdir");
    let (from, to) = (at(NOW - 86_400), at(NOW + 365 * 86_400));
    let old = CertAuthority::new("ca", from, to).expect("CA");
    let new = CertAuthority::new("ca", from, to).expect("CA");
    std::fs::write(
        dir.path().join("ca.pem"),
        format!("{}{}", new.cert_pem(), old.cert_pem()),
    )
    .expect("write");
    let yaml = "crl:\n  issuers:\n    - ca: \"CN=ca, O=certgate dev\"\n      sources: [{file: a.crl}, {file: b.crl}]\n";
    let config = config_with(&dir, yaml).unwrap_or_else(|p| panic!("{p:?}"));
    Rollover {
        old,
        new,
        state: Revocation::new(config.crl_inputs(), Metrics::new()),
        _dir: dir,
    }
}

impl Rollover {
    fn anchor(&self, ca: &CertAuthority) -> Arc<Anchor> {
        let der = ca.cert_der();
        let inputs = self.state.inputs();
        let at = inputs
            .trust
            .ca_certificates()
            .iter()
            .position(|c| c.as_ref() == der.as_slice())
            .expect("in the bundle");
        inputs.trust.cas()[at].clone()
    }

    fn offer(&self, ca: &CertAuthority, this_update: i64, serials: &[u64]) -> Offered {
        let inputs = self.state.inputs();
        let crl = VerifiedCrl::load(
            &crl(ca, this_update, serials),
            &inputs.trust,
            &inputs.settings.issuers[0],
            NOW,
            60,
            "test",
        )
        .expect("valid");
        assert_eq!(
            crl.verified_by,
            self.anchor(ca).key,
            "verified by its signer"
        );
        self.state.offer(crl, NOW)
    }

    fn status(&self, ca: &CertAuthority, serial: &str) -> CrlStatus {
        let serial = serial.parse().expect("hex serial");
        self.state.snapshot().status(&self.anchor(ca), &serial, NOW)
    }
}

#[test]
fn each_key_of_one_name_has_its_own_crl() {
    let r = rollover();
    assert_eq!(r.state.snapshot().issuers().len(), 2, "one state per key");
    // The old CA revokes 0x42; the new CA publishes a later CRL without it.
    assert_eq!(r.offer(&r.old, NOW - 120, &[0x42]), Offered::Installed);
    assert_eq!(r.offer(&r.new, NOW - 60, &[0x43]), Offered::Installed);
    assert!(matches!(r.status(&r.old, "42"), CrlStatus::Revoked { .. }));
    assert_eq!(r.status(&r.new, "42"), CrlStatus::NotListed);
    // …and the new CA's CRL decides nothing for the old CA's certificates.
    assert_eq!(r.status(&r.old, "43"), CrlStatus::NotListed);
    assert!(matches!(r.status(&r.new, "43"), CrlStatus::Revoked { .. }));
    // An older CRL of one key is "older" for that key only.
    assert_eq!(r.offer(&r.old, NOW - 600, &[]), Offered::Older);
    assert_eq!(r.offer(&r.new, NOW - 30, &[]), Offered::Installed);
    assert!(matches!(r.status(&r.old, "42"), CrlStatus::Revoked { .. }));
}

#[test]
fn a_key_without_a_crl_is_unknown_for_its_certificates_only() {
    let r = rollover();
    assert_eq!(r.offer(&r.new, NOW - 60, &[]), Offered::Installed);
    assert_eq!(r.status(&r.new, "42"), CrlStatus::NotListed);
    let CrlStatus::Unknown(why) = r.status(&r.old, "42") else {
        panic!("the old key has no CRL");
    };
    let why = why.to_string();
    let old_key = r.anchor(&r.old).key;
    assert!(
        why.contains("CN=ca") && why.contains(&old_key.to_string()),
        "{why}"
    );
    let ready = r
        .state
        .readiness(NOW)
        .expect_err("one key has no CRL")
        .to_string();
    assert!(ready.contains(&old_key.to_string()), "{ready}");
    assert!(
        !ready.contains(&r.anchor(&r.new).key.to_string()),
        "{ready}"
    );
}

#[test]
fn shared_names_get_one_gauge_series_per_key() {
    let r = rollover();
    r.offer(&r.old, NOW - 60, &[1, 2]);
    r.state.export_gauges(NOW);
    let label = |ca: &CertAuthority| format!("O=certgate dev, CN=ca [key {}]", r.anchor(ca).key);
    let m = r.state.metrics();
    assert_eq!(m.crl_entries.with_label_values(&[&label(&r.old)]).get(), 2);
    assert_eq!(m.crl_usable.with_label_values(&[&label(&r.new)]).get(), 0);
}

#[test]
fn the_high_water_mark_keeps_older_crls_out_after_a_restart() {
    let f = fixture();
    let first = revocation(&f);
    let newer = load(&f, "root", &crl(&f.root, NOW - 60, &[7]), "a").expect("valid");
    assert_eq!(first.offer(newer, NOW), Offered::Installed);
    let marks = HighWater::from_json(&first.high_water().to_json(), std::path::Path::new("hw"))
        .expect("round trip");

    // "Restart": fresh state, the marks read back, an older CRL offered first.
    let second = revocation(&f);
    second.merge_high_water(&marks);
    let older = load(&f, "root", &crl(&f.root, NOW - 600, &[]), "cache").expect("valid");
    assert_eq!(second.offer(older, NOW), Offered::OlderThanSeen);
    let CrlStatus::Unknown(why) = second.status_of(&root_name(&f), "07", NOW) else {
        panic!("nothing usable in force");
    };
    let why = why.to_string();
    assert!(
        why.contains("older than the newest one already installed"),
        "{why}"
    );
    let ready = second.readiness(NOW).expect_err("not ready").to_string();
    assert!(ready.contains("CRL older than one already seen"), "{ready}");
    // The same CRL again, or a newer one, is fine.
    let same = load(&f, "root", &crl(&f.root, NOW - 60, &[7]), "b").expect("valid");
    assert_eq!(second.offer(same, NOW), Offered::Installed);
    assert!(matches!(
        second.status_of(&root_name(&f), "07", NOW),
        CrlStatus::Revoked { .. }
    ));
}
