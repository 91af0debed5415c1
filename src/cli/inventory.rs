//! `cert list --expiring-within` over the inventory too: the certificates seen in traffic
//! that nobody registered are listed with the registered ones, marked as such.

use serde_json::{Value, json};

use crate::clock::rfc3339;
use crate::store::{Admin, CertificateRecord, EpochMillis, Sighting, StoreError};

use super::output::{Output, print, table};

/// Sightings expiring in `now..=before` (of `principal` when given) whose serial or
/// fingerprint is not among `registered`.
pub(super) async fn unregistered(
    store: &dyn Admin,
    registered: &[CertificateRecord],
    principal: Option<&str>,
    now: EpochMillis,
    before: EpochMillis,
) -> Result<Vec<Sighting>, StoreError> {
    let mut seen = store.list_sightings(Some(before)).await?;
    seen.retain(|s| {
        s.expires_at >= now
            && principal.is_none_or(|p| p == s.principal_id)
            && !registered.iter().any(|c| {
                c.serial_number == s.serial_number
                    || c.registration
                        .as_ref()
                        .is_some_and(|r| r.sha256 == s.sha256)
            })
    });
    Ok(seen)
}

fn sighting_json(s: &Sighting) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("registered".into(), json!(false));
        map.insert("source".into(), json!("inventory"));
        map.insert(
            "expires_at_rfc3339".into(),
            json!(rfc3339(s.expires_at / 1000)),
        );
        map.insert(
            "last_seen_rfc3339".into(),
            json!(rfc3339(s.last_seen / 1000)),
        );
    }
    v
}

fn sighting_row(s: &Sighting) -> [String; 4] {
    [
        s.serial_number.clone(),
        if s.principal_id.is_empty() {
            "-".to_owned()
        } else {
            s.principal_id.clone()
        },
        rfc3339(s.expires_at / 1000),
        format!(
            "seen, not registered (last {})",
            rfc3339(s.last_seen / 1000)
        ),
    ]
}

/// The registered certificates and the unregistered sightings, together by expiry.
pub(super) fn print_expiring(
    output: Output,
    header: &[&str],
    registered: &[CertificateRecord],
    seen: &[Sighting],
    json: fn(&CertificateRecord) -> Value,
    row: fn(&CertificateRecord) -> [String; 4],
) {
    let mut all: Vec<(EpochMillis, Value, [String; 4])> = registered
        .iter()
        .map(|c| (c.expires_at().unwrap_or(i64::MAX), json(c), row(c)))
        .chain(
            seen.iter()
                .map(|s| (s.expires_at, sighting_json(s), sighting_row(s))),
        )
        .collect();
    all.sort_by_key(|(at, _, _)| *at);
    let (values, rows): (Vec<Value>, Vec<[String; 4]>) =
        all.into_iter().map(|(_, v, r)| (v, r)).unzip();
    print(output, &Value::Array(values), || table(header, rows));
}
