//! The audit trail's types (README "Operating certgate"): who changed what, and the records a
//! backend appends in the same transaction as the change they describe.

use serde::{Deserialize, Serialize};

use super::EpochMillis;

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

fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
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
