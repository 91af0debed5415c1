//! The item decoders on outside bytes, for the `store_items` fuzz target (`fuzzing`
//! feature). Whoever can write to the tables — a runbook's `aws dynamodb` command, an older
//! tool, an attacker with table access — writes what these read on every replica.

use aws_sdk_dynamodb::primitives::Blob;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::chain::{read_record, record_item};
use super::item::{certificate_item, principal_item};
use super::*;
use crate::store::audit::{self, Actor, AuditRecord};

/// Decode every line of `input` (one item in DynamoDB's JSON, as `aws dynamodb scan` prints
/// it: `{"sequence": {"N": "1"}, …}`) as a principal, a certificate and an audit record, and
/// verify the records that decode as one chain. Whatever decodes must come back unchanged
/// from a write and a read: a record that did not would stop verifying once rewritten.
/// Returns how many audit records decoded.
pub(crate) fn decode_items(input: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(input) else {
        return 0;
    };
    let items = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|value| item_from_json(value.as_object()?));
    let mut records = Vec::new();
    for item in items {
        if let Ok(p) = read_principal(&item) {
            let again = read_principal(&principal_item(&p)).ok();
            assert_eq!(
                again.as_ref(),
                Some(&p),
                "a principal changes when rewritten"
            );
        }
        if let Ok(c) = read_certificate(&item) {
            let again = read_certificate(&certificate_item(&c, None)).ok();
            assert_eq!(
                again.as_ref(),
                Some(&c),
                "a certificate changes when rewritten"
            );
        }
        if let Ok(r) = read_record(&item) {
            let again = read_record(&record_item(&r)).ok();
            assert_eq!(
                again.as_ref(),
                Some(&r),
                "an audit record changes when rewritten"
            );
            records.push(r);
        }
    }
    let verification = audit::verify(&records);
    assert_eq!(
        verification.is_valid,
        verification.first_invalid_sequence.is_none()
    );
    records.len()
}

fn item_from_json(map: &Map<String, Value>) -> Option<Item> {
    map.iter()
        .map(|(name, value)| Some((name.clone(), attribute(value)?)))
        .collect()
}

fn attribute(value: &Value) -> Option<AttributeValue> {
    let map = value.as_object().filter(|m| m.len() == 1)?;
    let (kind, value) = map.iter().next()?;
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array()?
            .iter()
            .map(|s| Some(s.as_str()?.to_owned()))
            .collect()
    };
    Some(match (kind.as_str(), value) {
        ("S", Value::String(v)) => AttributeValue::S(v.clone()),
        ("N", Value::String(v)) => AttributeValue::N(v.clone()),
        ("B", Value::String(v)) => AttributeValue::B(Blob::new(STANDARD.decode(v).ok()?)),
        ("BOOL", Value::Bool(v)) => AttributeValue::Bool(*v),
        ("NULL", Value::Bool(v)) => AttributeValue::Null(*v),
        ("SS", v) => AttributeValue::Ss(strings(v)?),
        ("NS", v) => AttributeValue::Ns(strings(v)?),
        ("L", Value::Array(v)) => {
            AttributeValue::L(v.iter().map(attribute).collect::<Option<_>>()?)
        }
        ("M", Value::Object(v)) => AttributeValue::M(item_from_json(v)?),
        _ => return None,
    })
}

fn item_to_json(item: &Item) -> Value {
    Value::Object(
        item.iter()
            .map(|(name, value)| (name.clone(), attribute_to_json(value)))
            .collect(),
    )
}

fn attribute_to_json(value: &AttributeValue) -> Value {
    let (kind, value) = match value {
        AttributeValue::S(v) => ("S", Value::from(v.as_str())),
        AttributeValue::N(v) => ("N", Value::from(v.as_str())),
        AttributeValue::Bool(v) => ("BOOL", Value::from(*v)),
        AttributeValue::L(v) => ("L", v.iter().map(attribute_to_json).collect()),
        other => unreachable!("certgate writes no {other:?}"),
    };
    Value::Object(Map::from_iter([(kind.to_owned(), value)]))
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("a store record always serializes")
}

/// Seed inputs: items as certgate writes them — principals, certificates (registered and
/// revocation-only) and a chain of audit records — one file per table, one item per line.
pub(crate) fn seed_items() -> Vec<(&'static str, Vec<u8>)> {
    let alice = Principal {
        principal_id: "alice@example.com".into(),
        principal_type: Some("admin".into()),
        status: PrincipalStatus::Active,
        suspended_at: None,
        suspended_reason: None,
        roles: Some(vec!["admin".into(), "reader".into()]),
        created_at: Some(1_760_000_000_000),
    };
    let suspended = Principal {
        status: PrincipalStatus::Suspended,
        suspended_at: Some(1_760_000_500_000),
        suspended_reason: Some("INC-42: laptop lost".into()),
        roles: None,
        ..alice.clone()
    };
    let registered = CertificateRecord {
        serial_number: "7f3a9c01".into(),
        registration: Some(Registration {
            principal_id: alice.principal_id.clone(),
            issuer: "CN=Example CA,O=Example".into(),
            sha256: "ab".repeat(32),
            not_before: 1_760_000_000_000,
            expires_at: 1_767_000_000_000,
        }),
        revoked: false,
        revoked_at: None,
        revocation_reason: None,
    };
    let revoked_only = CertificateRecord {
        serial_number: "0a".into(),
        registration: None,
        revoked: true,
        revoked_at: Some(1_760_000_600_000),
        revocation_reason: Some("keyCompromise".into()),
    };
    let operator = Actor::Api {
        principal_id: "operator@example.com".into(),
        cn: Some("operator".into()),
        serial: "01".into(),
        sha256: "cd".repeat(32),
    };
    let created = AuditRecord::next(
        None,
        1_760_000_000_000,
        &Actor::Cli {
            user: "root".into(),
        },
        "principal.create",
        "principal:alice@example.com".into(),
        None,
        None,
        Some(json(&alice)),
    );
    let suspension = AuditRecord::next(
        Some(&created),
        1_760_000_500_000,
        &operator,
        "principal.suspend",
        "principal:alice@example.com".into(),
        Some("INC-42: laptop lost"),
        Some(json(&alice)),
        Some(json(&suspended)),
    );
    let revocation = AuditRecord::next(
        Some(&suspension),
        1_760_000_600_000,
        &Actor::Migrate {
            user: "uid:1000".into(),
        },
        "certificate.revoke",
        "certificate:0a".into(),
        Some("keyCompromise"),
        None,
        Some(json(&revoked_only)),
    );
    let lines = |items: Vec<Item>| -> Vec<u8> {
        let mut out = String::new();
        for item in &items {
            out.push_str(&item_to_json(item).to_string());
            out.push('\n');
        }
        out.into_bytes()
    };
    vec![
        (
            "principals",
            lines(vec![principal_item(&alice), principal_item(&suspended)]),
        ),
        (
            "certificates",
            lines(vec![
                certificate_item(&registered, Some(Duration::from_secs(86_400))),
                certificate_item(&revoked_only, None),
            ]),
        ),
        (
            "audit",
            lines(
                [created, suspension, revocation]
                    .iter()
                    .map(record_item)
                    .collect(),
            ),
        ),
    ]
}
