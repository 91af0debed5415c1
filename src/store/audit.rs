//! The audit trail's types (README "Operating certgate"): who changed what, and the records a
//! backend appends in the same transaction as the change they describe.

use serde::{Deserialize, Serialize};

use super::{CertificateRecord, EpochMillis, Principal};

/// Who made a change. Stored with its audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// An admin API call, identified by the caller's verified client certificate.
    Api {
        /// The principal the certificate belongs to.
        principal_id: String,
        /// The certificate's subject CN, when it has one.
        cn: Option<String>,
        /// The certificate's serial (lowercase hex, as stored).
        serial: String,
        /// SHA-256 of the certificate's DER (lowercase hex).
        sha256: String,
    },
    /// A local command (`certgate principal …`, `certgate cert …`, `certgate bootstrap`),
    /// as the operating-system user who ran it.
    Cli {
        /// The OS user name (or `uid:N` when it has none).
        user: String,
    },
    /// `certgate store migrate`, as the operating-system user who ran it.
    Migrate {
        /// The OS user name (or `uid:N` when it has none).
        user: String,
    },
}

impl Actor {
    /// The OS user running this process, for a local command.
    pub fn cli() -> Self {
        Actor::Cli { user: os_user() }
    }

    /// The OS user running `store migrate`.
    pub fn migrate() -> Self {
        Actor::Migrate { user: os_user() }
    }
}

/// `USER`, else `LOGNAME`, else the real uid (`uid:N`): a service account or a container
/// often has no name, and the uid still tells who ran the command.
fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid:{}", rustix::process::getuid().as_raw()))
}

/// What a write did, named in its record's `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `principal.create`
    PrincipalCreate,
    /// `principal.suspend`
    PrincipalSuspend,
    /// `principal.activate`
    PrincipalActivate,
    /// `certificate.register`
    CertificateRegister,
    /// `certificate.revoke`
    CertificateRevoke,
}

impl Action {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::PrincipalCreate => "principal.create",
            Action::PrincipalSuspend => "principal.suspend",
            Action::PrincipalActivate => "principal.activate",
            Action::CertificateRegister => "certificate.register",
            Action::CertificateRevoke => "certificate.revoke",
        }
    }
}

/// One write's change, before it is linked into the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What was done.
    pub action: Action,
    /// `principal:ID` or `certificate:SERIAL`.
    pub target: String,
    /// The reason given, when the action takes one.
    pub reason: Option<String>,
    /// The record before (JSON), `None` when it did not exist.
    pub before: Option<serde_json::Value>,
    /// The record after (JSON).
    pub after: Option<serde_json::Value>,
}

impl Change {
    /// A change to principal `after`, which was `before`.
    pub fn principal(
        action: Action,
        before: Option<&Principal>,
        after: &Principal,
        reason: Option<&str>,
    ) -> Self {
        Change {
            action,
            target: format!("principal:{}", after.principal_id),
            reason: reason.map(str::to_owned),
            before: before.map(json),
            after: Some(json(after)),
        }
    }

    /// A change to certificate `after`, which was `before`.
    pub fn certificate(
        action: Action,
        before: Option<&CertificateRecord>,
        after: &CertificateRecord,
        reason: Option<&str>,
    ) -> Self {
        Change {
            action,
            target: format!("certificate:{}", after.serial_number),
            reason: reason.map(str::to_owned),
            before: before.map(json),
            after: Some(json(after)),
        }
    }
}

fn json<T: Serialize>(record: &T) -> serde_json::Value {
    serde_json::to_value(record).unwrap_or(serde_json::Value::Null)
}

/// The last record of a chain, which the next one links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Its sequence.
    pub sequence: u64,
    /// Its hash.
    pub hash: String,
}

/// One appended audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub sequence: u64,
    /// When the change was made.
    pub at: EpochMillis,
    /// Who made it.
    pub actor: Actor,
    /// What was done (`principal.suspend`, `certificate.revoke`, …).
    pub action: String,
    /// What it was done to (`principal:ID`, `certificate:SERIAL`).
    pub target: String,
    /// The reason given, when the action takes one.
    pub reason: Option<String>,
    /// The record before the change (JSON), `None` when it did not exist.
    pub before: Option<serde_json::Value>,
    /// The record after the change (JSON).
    pub after: Option<serde_json::Value>,
    /// `hash` of the previous record (empty for the first).
    pub prev_hash: String,
    /// SHA-256 over this record's canonical encoding, `prev_hash` included (lowercase hex).
    pub hash: String,
}

/// Which audit records to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records made at or after this time.
    pub since: Option<EpochMillis>,
    /// Only records whose target is this principal or one of its certificates.
    pub principal: Option<String>,
}

impl AuditQuery {
    /// Whether `record` is one this query selects: a principal's records are those whose
    /// target is it, and those of certificates whose record (before or after) names it.
    pub fn matches(&self, record: &AuditRecord) -> bool {
        let recent = self.since.is_none_or(|since| record.at >= since);
        let concerns = self.principal.as_deref().is_none_or(|id| {
            record.target.strip_prefix("principal:") == Some(id)
                || [&record.before, &record.after]
                    .into_iter()
                    .flatten()
                    .any(|r| r.get("principal_id").and_then(serde_json::Value::as_str) == Some(id))
        });
        recent && concerns
    }
}

/// What `certgate audit verify` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Whether every record's hash and link hold and sequences have no gap.
    pub is_valid: bool,
    /// How many records the chain holds.
    pub total_entries: u64,
    /// The first record that does not verify, when one does not.
    pub first_invalid_sequence: Option<u64>,
}

impl AuditRecord {
    /// The record that follows `prev` (or starts the chain), with its hash computed.
    #[allow(clippy::too_many_arguments)]
    pub fn next(
        prev: Option<&AuditRecord>,
        at: EpochMillis,
        actor: &Actor,
        action: &str,
        target: String,
        reason: Option<&str>,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> Self {
        let mut record = AuditRecord {
            sequence: prev.map_or(1, |p| p.sequence + 1),
            at,
            actor: actor.clone(),
            action: action.to_owned(),
            target,
            reason: reason.map(str::to_owned),
            before,
            after,
            prev_hash: prev.map_or_else(String::new, |p| p.hash.clone()),
            hash: String::new(),
        };
        record.hash = record.computed_hash();
        record
    }

    /// The record of `change`, linked after `head` (or starting the chain).
    pub fn append(
        head: Option<&ChainHead>,
        at: EpochMillis,
        actor: &Actor,
        change: Change,
    ) -> Self {
        let mut record = AuditRecord::next(
            None,
            at,
            actor,
            change.action.as_str(),
            change.target,
            change.reason.as_deref(),
            change.before,
            change.after,
        );
        if let Some(head) = head {
            record.sequence = head.sequence + 1;
            record.prev_hash = head.hash.clone();
            record.hash = record.computed_hash();
        }
        record
    }

    /// This record as the head the next one links to.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            sequence: self.sequence,
            hash: self.hash.clone(),
        }
    }

    /// SHA-256 (lowercase hex) over the canonical encoding of every field but `hash`: JSON
    /// with object keys sorted at every level and no insignificant whitespace, so any
    /// implementation can recompute it from the stored fields.
    pub fn computed_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(fields) = &mut value {
            fields.remove("hash");
        }
        let mut canonical = String::new();
        write_canonical(&value, &mut canonical);
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Checks a whole chain, in stored order: sequences 1, 2, 3… without gaps, each record's
/// `prev_hash` is its predecessor's `hash`, and each `hash` is the recomputed one. The first
/// position where any of that fails is reported (an edited, deleted or moved record).
pub fn verify(records: &[AuditRecord]) -> Verification {
    let mut prev_hash = "";
    let first_invalid_sequence = records.iter().zip(1u64..).find_map(|(record, expected)| {
        let valid = record.sequence == expected
            && record.prev_hash == prev_hash
            && record.hash == record.computed_hash();
        prev_hash = &record.hash;
        (!valid).then_some(expected)
    });
    Verification {
        is_valid: first_invalid_sequence.is_none(),
        total_entries: records.len() as u64,
        first_invalid_sequence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<AuditRecord> {
        let actor = Actor::Cli { user: "ops".into() };
        let mut records: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let record = AuditRecord::next(
                records.last(),
                1_700_000_000_000 + i as i64,
                &actor,
                "principal.suspend",
                format!("principal:w{i}"),
                Some("incident"),
                Some(serde_json::json!({"status": "active", "b": 1})),
                Some(serde_json::json!({"status": "suspended", "b": 1})),
            );
            records.push(record);
        }
        records
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let v = verify(&chain(5));
        assert_eq!(
            v,
            Verification {
                is_valid: true,
                total_entries: 5,
                first_invalid_sequence: None
            }
        );
        assert_eq!(verify(&[]).total_entries, 0);
    }

    #[test]
    fn an_edited_record_is_pinpointed() {
        let mut records = chain(5);
        records[2].reason = Some("routine".into());
        assert_eq!(verify(&records).first_invalid_sequence, Some(3));
    }

    #[test]
    fn a_deleted_or_moved_record_is_pinpointed() {
        let mut records = chain(5);
        records.remove(1);
        assert_eq!(verify(&records).first_invalid_sequence, Some(2));
        let mut records = chain(5);
        records.swap(3, 4);
        assert_eq!(verify(&records).first_invalid_sequence, Some(4));
    }

    #[test]
    fn a_rehashed_edit_still_breaks_the_link_to_its_successor() {
        let mut records = chain(4);
        records[1].actor = Actor::Cli {
            user: "intruder".into(),
        };
        records[1].hash = records[1].computed_hash();
        assert_eq!(verify(&records).first_invalid_sequence, Some(3));
    }

    #[test]
    fn a_principal_query_selects_its_records_and_its_certificates() {
        let actor = Actor::Cli { user: "ops".into() };
        let record = |target: &str, after: serde_json::Value| {
            AuditRecord::next(
                None,
                10,
                &actor,
                "x",
                target.into(),
                None,
                None,
                Some(after),
            )
        };
        let query = AuditQuery {
            principal: Some("w1".into()),
            since: Some(10),
        };
        assert!(query.matches(&record("principal:w1", serde_json::json!({}))));
        let cert = serde_json::json!({"serial_number": "0a", "principal_id": "w1"});
        assert!(query.matches(&record("certificate:0a", cert)));
        assert!(!query.matches(&record("principal:w10", serde_json::json!({}))));
        let other = serde_json::json!({"principal_id": "w2"});
        assert!(!query.matches(&record("certificate:0b", other)));
        let later = AuditQuery {
            since: Some(11),
            ..AuditQuery::default()
        };
        assert!(!later.matches(&record("principal:w1", serde_json::json!({}))));
    }

    #[test]
    fn the_hash_does_not_depend_on_key_order() {
        let record = &chain(1)[0];
        let mut reordered = record.clone();
        reordered.before = Some(serde_json::json!({"b": 1, "status": "active"}));
        assert_eq!(record.computed_hash(), reordered.computed_hash());
    }

    /// Found by the `store_items` fuzz target: a number that is not an exact `f64` (here an
    /// integer beyond `u64`) must read back from its written text as the same value, or a
    /// rewritten record no longer verifies.
    #[test]
    fn a_record_with_an_inexact_number_survives_a_rewrite() {
        let mut record = chain(1).remove(0);
        record.before = Some(serde_json::from_str(r#"{"n": 17600000000000000000000000}"#).unwrap());
        record.hash = record.computed_hash();
        let rewritten: AuditRecord =
            serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        assert_eq!(rewritten, record);
        assert_eq!(rewritten.computed_hash(), record.hash);
    }
}
