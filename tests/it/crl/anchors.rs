//! Trust anchors: a CA that has expired, or expires while certgate runs, no longer
//! validates; `config validate` refuses an expired CA and warns before one expires.

use std::time::Duration;

use certgate::pki::CertAuthority;

use super::{Pki, Served, at, decide, gate_with_bundle, worker_spec};
use crate::it::world::now;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_of_an_expired_ca_is_untrusted() {
    let pki = Pki::new();
    let retired = CertAuthority::new(
        "retired",
        at(now()) - time::Duration::days(400),
        at(now()) - time::Duration::days(2),
    )
    .expect("CA");
    let leaf = retired.issue(&worker_spec()).expect("leaf");
    let bundle = format!("{}{}", pki.root.cert_pem(), retired.cert_pem());
    let gate = gate_with_bundle(&bundle, tempfile::tempdir().expect("tempdir"), "");
    let (reason, message) = decide(&gate, &leaf.cert_pem).await;
    assert_eq!(reason, "untrusted_issuer", "{message}");
    assert!(
        message.contains("CN=retired") && message.contains("expired at"),
        "{message}"
    );
    assert_eq!(decide(&gate, &pki.good).await.0, "allow");
}

#[test]
fn a_ca_that_expires_while_certgate_runs_stops_validating() {
    // The CA expires a few seconds after start (plus the 5s clock skew of `Served`).
    let expiry = at(now()) + time::Duration::seconds(3);
    let ca = CertAuthority::new("short-lived CA", expiry - time::Duration::days(30), expiry)
        .expect("CA");
    let leaf = ca.issue(&worker_spec()).expect("leaf");
    let dir = tempfile::tempdir().expect("tempdir");
    let served = Served::new(dir.path(), &ca.cert_pem(), "");
    let certgate = served.start();
    assert_eq!(served.decide(&leaf.cert_pem).0, "allow");
    let mut last = (String::new(), String::new());
    let denied = crate::it::harness::wait_until(Duration::from_secs(30), || {
        last = served.decide(&leaf.cert_pem);
        last.0 == "untrusted_issuer"
    });
    assert!(denied, "still {last:?}\n{}", certgate.proc.logs());
    assert!(
        last.1.contains("CN=short-lived CA") && last.1.contains("expired at"),
        "{}",
        last.1
    );
}

#[test]
fn config_validate_refuses_an_expired_ca_and_warns_before_one_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let valid = CertAuthority::new(
        "valid",
        at(now()) - time::Duration::days(1),
        at(now()) + time::Duration::days(365),
    )
    .expect("CA");
    let expired = CertAuthority::new(
        "retired",
        at(now()) - time::Duration::days(400),
        at(now()) - time::Duration::days(2),
    )
    .expect("CA");
    let expiring = CertAuthority::new(
        "expiring",
        at(now()) - time::Duration::days(300),
        at(now()) + time::Duration::days(10),
    )
    .expect("CA");
    let config = dir.path().join("certgate.yaml");
    std::fs::write(
        &config,
        "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\n",
    )
    .expect("write");
    let validate = |bundle: String| {
        std::fs::write(dir.path().join("ca.pem"), bundle).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
            .args(["config", "validate", "--config"])
            .arg(&config)
            .output()
            .expect("run certgate");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = validate(format!("{}{}", valid.cert_pem(), expired.cert_pem()));
    assert_eq!(code, Some(2), "an expired CA is refused: {stderr}");
    assert!(
        stderr.contains("trust.ca_bundle")
            && stderr.contains("CN=retired")
            && stderr.contains("expired at")
            && stderr.contains("remove it from the bundle"),
        "{stderr}"
    );
    let (code, stderr) = validate(format!("{}{}", valid.cert_pem(), expiring.cert_pem()));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("CN=expiring") && stderr.contains("expires"),
        "{stderr}"
    );
    let (code, stderr) = validate(valid.cert_pem());
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
}
