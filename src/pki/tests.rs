use super::*;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::process::Command;
use x509_parser::prelude::{AttributeTypeAndValue, FromDer, GeneralName, X509Certificate};

const DAY: Duration = Duration::days(1);
const SPIFFE: &str = "spiffe://example.com/ns/x/sa/y";

/// Fixed "now" (2030-03-17): tests never depend on the clock.
fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap()
}

fn ca(cn: &str) -> CertAuthority {
    CertAuthority::new(cn, now() - DAY * 365, now() + DAY * 365).unwrap()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).unwrap();
    assert!(rest.is_empty());
    cert
}

fn unix(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.unix_timestamp() as u64))
}

/// webpki's client-certificate verdict for `leaf` against the single anchor `ca` at `at`.
fn webpki_client(
    ca: &CertAuthority,
    inters: &[&CertAuthority],
    leaf: &IssuedCert,
    at: OffsetDateTime,
) -> Result<(), webpki::Error> {
    let ca_der = CertificateDer::from(ca.cert_der());
    let anchor = webpki::anchor_from_trusted_cert(&ca_der).unwrap();
    let inters: Vec<_> = inters
        .iter()
        .map(|i| CertificateDer::from(i.cert_der()))
        .collect();
    let leaf_der = CertificateDer::from(leaf.cert_der.clone());
    let ee = webpki::EndEntityCert::try_from(&leaf_der).unwrap();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &inters,
        unix(at),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(|_| ())
}

/// `openssl verify -attime now -purpose <purpose>`; Ok(stdout) or Err(stdout + stderr).
fn openssl_verify(
    ca: &CertAuthority,
    inter: Option<&CertAuthority>,
    leaf: &IssuedCert,
    purpose: &str,
) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let mut cmd = Command::new("openssl");
    cmd.arg("verify")
        .arg("-CAfile")
        .arg(write("ca.pem", &ca.cert_pem()));
    if let Some(inter) = inter {
        cmd.arg("-untrusted")
            .arg(write("inter.pem", &inter.cert_pem()));
    }
    cmd.args([
        "-attime",
        &now().unix_timestamp().to_string(),
        "-purpose",
        purpose,
    ]);
    let out = cmd.arg(write("leaf.pem", &leaf.cert_pem)).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// First value of one subject/issuer attribute, e.g. `first(name.iter_common_name())`.
fn first<'a>(mut it: impl Iterator<Item = &'a AttributeTypeAndValue<'a>>) -> &'a str {
    it.next().unwrap().as_str().unwrap()
}

fn eku_of(cert: &X509Certificate<'_>) -> Option<(bool, bool, bool)> {
    let eku = cert.extended_key_usage().unwrap()?.value;
    Some((eku.client_auth, eku.server_auth, eku.code_signing))
}

#[test]
fn client_cert_carries_every_requested_property() {
    let long = "é".repeat(200); // 400 bytes: long-form length
    let spec = CertSpec {
        organizational_unit: Some("service".into()),
        dns_sans: vec!["a.example.com".into(), "b.example.com".into()],
        uri_sans: vec![SPIFFE.into()],
        not_before: now() + Duration::nanoseconds(999_999_999),
        serial: Some(0xdead_beef),
        custom_extensions: vec![
            (vec![1, 3, 6, 1, 4, 1, 99999, 1], "tenant-a".into()),
            (vec![1, 3, 6, 1, 4, 1, 99999, 2], long.clone()),
        ],
        ..CertSpec::client("alice", now(), DAY * 30)
    };
    let issued = ca("Root A").issue(&spec).unwrap();
    assert_eq!(issued.serial, 0xdead_beef);
    assert!(issued.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let cert = parse(&issued.cert_der);

    assert_eq!(first(cert.subject().iter_common_name()), "alice");
    assert_eq!(first(cert.subject().iter_organizational_unit()), "service");
    assert_eq!(first(cert.issuer().iter_common_name()), "Root A");
    assert_eq!(first(cert.issuer().iter_organization()), CA_ORGANIZATION);
    // High bit set: DER adds a 0x00 sign byte that the integer value does not have.
    assert_eq!(cert.raw_serial(), [0x00, 0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(cert.serial.to_str_radix(16), "deadbeef");
    assert_eq!(
        cert.validity().not_before.timestamp(),
        now().unix_timestamp()
    );
    assert_eq!(
        cert.validity().not_after.timestamp(),
        (now() + Duration::days(30)).unix_timestamp()
    );

    let sans = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    let want = [
        GeneralName::DNSName("a.example.com"),
        GeneralName::DNSName("b.example.com"),
        GeneralName::URI(SPIFFE),
    ];
    assert_eq!(sans, &want);
    assert_eq!(eku_of(&cert), Some((true, false, false)));
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && !bc.value.ca);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());

    for (arc, want) in [(1, "tenant-a"), (2, long.as_str())] {
        let oid =
            x509_parser::oid_registry::Oid::from(&[1, 3, 6, 1, 4, 1, 99999, arc][..]).unwrap();
        let ext = cert.get_extension_unique(&oid).unwrap().unwrap();
        assert!(!ext.critical);
        let (rest, s) = x509_parser::asn1_rs::Utf8String::from_der(ext.value).unwrap();
        assert!(rest.is_empty());
        assert_eq!(s.string(), want);
    }
}

#[test]
fn ca_and_intermediate_are_cas() {
    let root = ca("Root A");
    let inter = root
        .intermediate("Inter A", now() - DAY, now() + DAY)
        .unwrap();
    assert!(root.key_pem().contains("PRIVATE KEY") && root.cert_pem().contains("CERTIFICATE"));
    for (der, cn, issuer) in [
        (root.cert_der(), "Root A", "Root A"),
        (inter.cert_der(), "Inter A", "Root A"),
    ] {
        let cert = parse(&der);
        let subject = first(cert.subject().iter_common_name());
        let iss = first(cert.issuer().iter_common_name());
        assert_eq!((subject, iss), (cn, issuer));
        assert!(cert.basic_constraints().unwrap().unwrap().value.ca);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        assert_eq!(eku_of(&cert), None);
    }
}

#[test]
fn eku_variants_and_defaults() {
    let ca = ca("Root A");
    let cases = [
        (Eku::ClientAuth, Some((true, false, false))),
        (Eku::ServerAuth, Some((false, true, false))),
        (Eku::ServerAndClient, Some((true, true, false))),
        (Eku::None, None),
        (Eku::CodeSigning, Some((false, false, true))),
    ];
    for (eku, want) in cases {
        let issued = ca
            .issue(&CertSpec {
                eku,
                ..CertSpec::client("x", now(), DAY)
            })
            .unwrap();
        assert_eq!(eku_of(&parse(&issued.cert_der)), want, "{eku:?}");
    }

    let server = ca
        .issue(&CertSpec::server(&["gw.example.com", "gw"], now(), DAY))
        .unwrap();
    let cert = parse(&server.cert_der);
    assert_eq!(eku_of(&cert), Some((false, true, false)));
    let cn = first(cert.subject().iter_common_name());
    assert_eq!(cn, "gw.example.com");

    // Random serials: positive, 16 hex digits, distinct.
    let a = ca.issue(&CertSpec::client("x", now(), DAY)).unwrap();
    let b = ca.issue(&CertSpec::client("x", now(), DAY)).unwrap();
    assert_ne!(a.serial, b.serial);
    for s in [a.serial, b.serial] {
        assert_eq!(format!("{s:x}").len(), 16);
    }
    assert_eq!(parse(&a.cert_der).raw_serial(), a.serial.to_be_bytes());
}

#[test]
fn no_subject_and_bad_inputs() {
    let ca = ca("Root A");
    let spec = CertSpec {
        common_name: None,
        uri_sans: vec![SPIFFE.into()],
        ..CertSpec::client("", now(), DAY)
    };
    let cert_der = ca.issue(&spec).unwrap().cert_der;
    assert_eq!(parse(&cert_der).subject().iter().count(), 0);

    let bad_san = CertSpec {
        dns_sans: vec!["é.example".into()],
        ..spec.clone()
    };
    assert!(matches!(ca.issue(&bad_san), Err(PkiError::Rcgen(_))));
    let bad_oid = CertSpec {
        custom_extensions: vec![(vec![3, 1], "x".into())],
        ..spec.clone()
    };
    assert!(matches!(ca.issue(&bad_oid), Err(PkiError::InvalidOid(_))));
    // A negative year, and a local time whose UTC equivalent is past year 9999.
    let offset = UtcOffset::from_hms(-2, 0, 0).unwrap();
    let last = time::PrimitiveDateTime::MAX.assume_offset(offset);
    for (not_before, not_after) in [(now().replace_year(-1).unwrap(), now()), (now(), last)] {
        let spec = CertSpec {
            not_before,
            not_after,
            ..spec.clone()
        };
        assert!(matches!(
            ca.issue(&spec),
            Err(PkiError::UnrepresentableTime(_))
        ));
    }
}

#[test]
fn der_utf8_string_lengths() {
    assert_eq!(der_utf8_string(""), [0x0c, 0x00]);
    assert_eq!(der_utf8_string("ab"), [0x0c, 0x02, b'a', b'b']);
    assert_eq!(der_utf8_string(&"a".repeat(127))[..2], [0x0c, 0x7f]);
    assert_eq!(der_utf8_string(&"a".repeat(128))[..3], [0x0c, 0x81, 0x80]);
    assert_eq!(der_utf8_string(&"a".repeat(255))[..3], [0x0c, 0x81, 0xff]);
    assert_eq!(
        der_utf8_string(&"a".repeat(256))[..4],
        [0x0c, 0x82, 0x01, 0x00]
    );
    assert_eq!(
        der_utf8_string(&"a".repeat(70_000))[..5],
        [0x0c, 0x83, 0x01, 0x11, 0x70]
    );
}

#[test]
fn openssl_accepts_chain_and_rejects_strangers() {
    let root = ca("Root A");
    let client = root.issue(&CertSpec::client("alice", now(), DAY)).unwrap();
    openssl_verify(&root, None, &client, "sslclient").unwrap();
    let server = root
        .issue(&CertSpec::server(&["gw.example.com"], now(), DAY))
        .unwrap();
    openssl_verify(&root, None, &server, "sslserver").unwrap();

    let inter = root
        .intermediate("Inter A", now() - DAY, now() + DAY)
        .unwrap();
    let via_inter = inter.issue(&CertSpec::client("bob", now(), DAY)).unwrap();
    openssl_verify(&root, Some(&inter), &via_inter, "sslclient").unwrap();
    assert!(openssl_verify(&root, None, &via_inter, "sslclient").is_err());

    // Same DN, different key, and a different DN: both unknown to openssl.
    for other in [ca("Root A"), ca("Root B")] {
        let stranger = other
            .issue(&CertSpec::client("mallory", now(), DAY))
            .unwrap();
        let err = openssl_verify(&root, None, &stranger, "sslclient").unwrap_err();
        assert!(
            err.contains("unable to get local issuer certificate"),
            "{err}"
        );
    }
    let signing = CertSpec {
        eku: Eku::CodeSigning,
        ..CertSpec::client("c", now(), DAY)
    };
    let err = openssl_verify(&root, None, &root.issue(&signing).unwrap(), "sslclient");
    let err = err.unwrap_err();
    assert!(err.contains("unsuitable certificate purpose"), "{err}");
    let expired = CertSpec::client("old", now() - DAY * 2, DAY);
    let err = openssl_verify(&root, None, &root.issue(&expired).unwrap(), "sslclient");
    let err = err.unwrap_err();
    assert!(err.contains("certificate has expired"), "{err}");
}

/// Observed rustls-webpki 0.103 behaviour, with `KeyUsage::client_auth()`.
#[test]
fn webpki_verdicts() {
    use webpki::Error as E;
    let root = ca("Root A");
    let issue = |ca: &CertAuthority, spec: CertSpec| ca.issue(&spec).unwrap();
    let client = |eku| CertSpec {
        eku,
        ..CertSpec::client("alice", now(), DAY)
    };

    // clientAuth, serverAuth+clientAuth and *no EKU extension* are all accepted.
    for eku in [Eku::ClientAuth, Eku::ServerAndClient, Eku::None] {
        webpki_client(&root, &[], &issue(&root, client(eku)), now()).unwrap();
    }
    // An EKU extension without clientAuth.
    for eku in [Eku::ServerAuth, Eku::CodeSigning] {
        let err = webpki_client(&root, &[], &issue(&root, client(eku)), now()).unwrap_err();
        assert!(matches!(err, E::RequiredEkuNotFoundContext(_)), "{err:?}");
    }

    // Validity: notAfter itself is still valid, one second later is expired.
    let leaf = issue(&root, client(Eku::ClientAuth));
    webpki_client(&root, &[], &leaf, now() + DAY).unwrap();
    let err = webpki_client(&root, &[], &leaf, now() + DAY + Duration::SECOND).unwrap_err();
    assert!(matches!(err, E::CertExpired { .. }), "{err:?}");
    let err = webpki_client(&root, &[], &leaf, now() - Duration::SECOND).unwrap_err();
    assert!(matches!(err, E::CertNotValidYet { .. }), "{err:?}");

    // Unknown CA: a different subject DN is UnknownIssuer; the same DN with another key
    // fails the signature instead.
    let stranger = issue(&ca("Root B"), client(Eku::ClientAuth));
    let err = webpki_client(&root, &[], &stranger, now()).unwrap_err();
    assert!(matches!(err, E::UnknownIssuer), "{err:?}");
    let twin = issue(&ca("Root A"), client(Eku::ClientAuth));
    let err = webpki_client(&root, &[], &twin, now()).unwrap_err();
    assert!(matches!(err, E::InvalidSignatureForPublicKey), "{err:?}");

    // The leaf's own checks (validity, then EKU) run before any issuer lookup.
    let old_stranger = issue(&ca("Root B"), CertSpec::client("old", now() - DAY * 2, DAY));
    let err = webpki_client(&root, &[], &old_stranger, now()).unwrap_err();
    assert!(matches!(err, E::CertExpired { .. }), "{err:?}");
    let server_stranger = issue(&ca("Root B"), client(Eku::ServerAuth));
    let err = webpki_client(&root, &[], &server_stranger, now()).unwrap_err();
    assert!(matches!(err, E::RequiredEkuNotFoundContext(_)), "{err:?}");
    let old_server = CertSpec {
        eku: Eku::ServerAuth,
        ..CertSpec::client("o", now(), DAY)
    };
    let err = webpki_client(&root, &[], &issue(&root, old_server), now() + DAY * 2);
    assert!(matches!(err.unwrap_err(), E::CertExpired { .. }));

    // Intermediates must be supplied; the anchor's own validity is never checked.
    let inter = root
        .intermediate("Inter A", now() - DAY, now() + DAY)
        .unwrap();
    let via_inter = issue(&inter, client(Eku::ClientAuth));
    webpki_client(&root, &[&inter], &via_inter, now()).unwrap();
    let err = webpki_client(&root, &[], &via_inter, now()).unwrap_err();
    assert!(matches!(err, E::UnknownIssuer), "{err:?}");
    let dead_root = CertAuthority::new("Dead", now() - DAY * 10, now() - DAY * 5).unwrap();
    webpki_client(
        &dead_root,
        &[],
        &issue(&dead_root, client(Eku::ClientAuth)),
        now(),
    )
    .unwrap();
    let dead_inter = root
        .intermediate("Dead I", now() - DAY * 10, now() - DAY * 5)
        .unwrap();
    let err = webpki_client(
        &root,
        &[&dead_inter],
        &issue(&dead_inter, client(Eku::None)),
        now(),
    );
    assert!(matches!(err.unwrap_err(), E::CertExpired { .. }));

    // A CA certificate presented as the client certificate.
    let as_leaf = IssuedCert {
        cert_pem: inter.cert_pem(),
        cert_der: inter.cert_der(),
        key_pem: String::new(),
        serial: 0,
    };
    let err = webpki_client(&root, &[], &as_leaf, now()).unwrap_err();
    assert!(matches!(err, E::CaUsedAsEndEntity), "{err:?}");
}
