//! Principal and certificate state (README "Store"): the [`Lookup`] side the decision reads
//! and the [`Admin`] side the CLI writes, the embedded SQLite and DynamoDB backends, and the
//! TTL cache that sits in front of every backend.
//! Nothing here decides anything: it only answers "what does the store say".

pub mod audit;
pub(crate) mod cache;
pub(crate) mod cache_key;
pub mod dynamodb;
pub(crate) mod embedded;
pub mod facts;
#[cfg(test)]
pub(crate) mod fake;
pub mod inventory;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cert::{RevocationReason, Serial};

pub use audit::{Actor, AuditQuery, AuditRecord, Verification};
pub use cache::CachedStore;
pub use dynamodb::{DynamoStore, Purpose};
pub use embedded::EmbeddedStore;
pub use facts::{CertificateFacts, PrincipalFacts};
pub use inventory::{Inventory, Sighting};

/// `store.backend` and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    /// One SQLite file (`store.path`).
    Embedded {
        /// Path of the SQLite file.
        path: PathBuf,
    },
    /// Amazon DynamoDB tables (`store.dynamodb`).
    DynamoDb(dynamodb::DynamoSettings),
}

/// Open the backend `store.backend` names. The embedded file is created when missing;
/// DynamoDB tables are not (`certgate store init` does that). The server hands it to
/// [`CachedStore`] as a [`Lookup`]; commands use the [`Admin`] side.
pub async fn open(backend: &StoreBackend, purpose: Purpose) -> Result<Arc<dyn Admin>, StoreError> {
    Ok(match backend {
        StoreBackend::Embedded { path } => Arc::new(EmbeddedStore::open(path)?),
        StoreBackend::DynamoDb(settings) => {
            Arc::new(DynamoStore::connect(settings.clone(), purpose).await?)
        }
    })
}

/// Milliseconds since the Unix epoch, the unit of every stored time (as in the runbooks).
pub(crate) type EpochMillis = i64;

/// Whether a principal may currently authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalStatus {
    /// May authenticate.
    Active,
    /// Blocked until re-activated; `suspended_reason` says why.
    Suspended,
}

impl PrincipalStatus {
    /// The stored spelling: `active` or `suspended`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PrincipalStatus::Active => "active",
            PrincipalStatus::Suspended => "suspended",
        }
    }
}

/// A principal record (README "Store").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Stable id, e.g. `admin@example.com` or a SPIFFE id.
    pub principal_id: String,
    /// admin, user, worker, service, …; `None` when the record has none (an item written
    /// before certgate): the type then comes from the next source of
    /// `identity.principal_type_sources` (the certificate's OID or OU).
    pub principal_type: Option<String>,
    /// active or suspended.
    pub status: PrincipalStatus,
    /// When it was suspended, if it is.
    pub suspended_at: Option<EpochMillis>,
    /// Why it was suspended, shown in the deny message.
    pub suspended_reason: Option<String>,
    /// Role override; when `None` the roles come from the configuration for its type.
    pub roles: Option<Vec<String>>,
    /// When the record was created; `None`: unknown (an item written before certgate).
    pub created_at: Option<EpochMillis>,
}

/// A certificate record (README "Store"): a registered certificate, or a revocation-only
/// record — an item that says `revoked = true` of a serial certgate never registered (the
/// runbook's unconditional `update-item` revoke creates one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// Lowercase hex serial, no colons: the key.
    pub serial_number: String,
    /// What `cert register` recorded; `None` for a revocation-only record (then `revoked`
    /// is always true).
    #[serde(flatten)]
    pub registration: Option<Registration>,
    /// Revoked in the store (independent of CRLs).
    pub revoked: bool,
    /// When it was revoked.
    pub revoked_at: Option<EpochMillis>,
    /// A [`crate::cert::RevocationReason`] name (free text when written by hand).
    pub revocation_reason: Option<String>,
}

/// The registration part of a [`CertificateRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The principal the certificate belongs to.
    pub principal_id: String,
    /// Issuer distinguished name, RFC 4514 text.
    pub issuer: String,
    /// Lowercase hex SHA-256 of the DER certificate.
    pub sha256: String,
    /// notBefore.
    pub not_before: EpochMillis,
    /// notAfter.
    pub expires_at: EpochMillis,
}

impl CertificateRecord {
    /// A fresh, unrevoked record for a parsed certificate, owned by `principal_id`.
    pub(crate) fn for_identity(id: &crate::cert::Identity, principal_id: String) -> Self {
        CertificateRecord {
            serial_number: id.serial().to_string(),
            registration: Some(Registration {
                principal_id,
                issuer: id.issuer().to_owned(),
                sha256: id.sha256_hex(),
                not_before: id.not_before() * 1000,
                expires_at: id.not_after() * 1000,
            }),
            revoked: false,
            revoked_at: None,
            revocation_reason: None,
        }
    }

    /// The owner, when registered.
    pub(crate) fn principal_id(&self) -> Option<&str> {
        self.registration.as_ref().map(|r| r.principal_id.as_str())
    }

    /// notAfter, when registered.
    pub(crate) fn expires_at(&self) -> Option<EpochMillis> {
        self.registration.as_ref().map(|r| r.expires_at)
    }
}

/// Something went wrong talking to a backend. Not a decision: the caller turns it into
/// `store_unavailable` (fail closed) or a CLI error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or answered with an error.
    #[error("store unavailable: {0}")]
    Unavailable(Outage),
    /// A record exists but cannot be read (bad data in the table).
    #[error("corrupt record {key}: {detail}")]
    Corrupt {
        /// Principal id or serial of the bad record.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The record to update does not exist.
    #[error("{kind} '{key}' not found")]
    NotFound {
        /// `principal` or `certificate`.
        kind: &'static str,
        /// Its key.
        key: String,
    },
    /// The record to create already exists.
    #[error("{kind} '{key}' already exists")]
    AlreadyExists {
        /// `principal` or `certificate`.
        kind: &'static str,
        /// Its key.
        key: String,
    },
    /// The admin API refused or failed a remote command's call (the remote CLI's store).
    #[error("{0}")]
    Remote(String),
}

/// Why a backend could not answer: a coarse, typed cause that may be shown to a client, and
/// the full text (endpoint, table, file path) that only goes to the logs.
#[derive(Debug)]
pub struct Outage {
    /// What kind of failure, for the client.
    pub(crate) cause: OutageCause,
    /// Everything known, for the logs.
    pub(crate) detail: String,
}

impl Outage {
    /// An outage of `cause`, described by `detail`.
    pub(crate) fn new(cause: OutageCause, detail: impl Into<String>) -> Self {
        Outage {
            cause,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// A failure that is neither a timeout nor an unreachable backend.
impl From<String> for Outage {
    fn from(detail: String) -> Self {
        Outage::new(OutageCause::Failed, detail)
    }
}

impl From<&str> for Outage {
    fn from(detail: &str) -> Self {
        Outage::new(OutageCause::Failed, detail)
    }
}

/// The kinds of [`Outage`], named without any internal detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum OutageCause {
    /// No answer within the deadline.
    Timeout,
    /// No connection could be made.
    Unreachable,
    /// The backend answered with an error, or the local file failed.
    Failed,
}

impl OutageCause {
    /// Client-facing name: `timeout`, `unreachable`, `backend error`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OutageCause::Timeout => "timeout",
            OutageCause::Unreachable => "unreachable",
            OutageCause::Failed => "backend error",
        }
    }
}

/// What the decision path reads, through [`CachedStore`]: the two lookups a check makes and
/// the readiness probe.
#[async_trait]
pub trait Lookup: Send + Sync + 'static {
    /// One principal, or `None` when it is not enrolled.
    async fn get_principal(&self, principal_id: &str) -> Result<Option<Principal>, StoreError>;
    /// One certificate, or `None` when not registered. Backends key records by the serial's
    /// display (lowercase hex, no colons), the format runbooks write.
    async fn get_certificate(
        &self,
        serial: &Serial,
    ) -> Result<Option<CertificateRecord>, StoreError>;
    /// Cheap reachability probe for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// What the CLI changes and lists, implemented by [`EmbeddedStore`] and [`DynamoStore`] (one
/// conformance suite runs against both). It reads too: a command checks what it changes.
/// The inventory of certificates seen in traffic comes with it ([`Inventory`]).
#[async_trait]
pub trait Admin: Lookup + Inventory {
    /// Create a principal; `AlreadyExists` if the id is taken.
    async fn create_principal(
        &self,
        principal: &Principal,
        actor: &Actor,
    ) -> Result<(), StoreError>;
    /// All principals, ordered by id.
    async fn list_principals(&self) -> Result<Vec<Principal>, StoreError>;
    /// Suspend; `NotFound` for an unknown principal (never a silent create).
    async fn suspend_principal(
        &self,
        principal_id: &str,
        reason: &str,
        at: EpochMillis,
        actor: &Actor,
    ) -> Result<Principal, StoreError>;
    /// Re-activate; clears the suspension fields. `NotFound` for an unknown principal.
    async fn activate_principal(
        &self,
        principal_id: &str,
        actor: &Actor,
    ) -> Result<Principal, StoreError>;
    /// Register a certificate; `AlreadyExists` if the serial is taken.
    async fn register_certificate(
        &self,
        cert: &CertificateRecord,
        actor: &Actor,
    ) -> Result<(), StoreError>;
    /// Certificates, optionally only one principal's and/or only those with
    /// `expires_at <= expiring_before`, ordered by `expires_at`.
    async fn list_certificates(
        &self,
        principal_id: Option<&str>,
        expiring_before: Option<EpochMillis>,
    ) -> Result<Vec<CertificateRecord>, StoreError>;
    /// Revoke. A serial that was never registered gets a revocation-only record when
    /// `issuer` names the certificate's issuer (kept with the record), so a certificate
    /// certgate never saw can still be denied; without an issuer it is `NotFound`.
    async fn revoke_certificate(
        &self,
        serial: &Serial,
        issuer: Option<&str>,
        reason: RevocationReason,
        at: EpochMillis,
        actor: &Actor,
    ) -> Result<CertificateRecord, StoreError>;
    /// Every write above appends one [`AuditRecord`] in the same transaction; these are
    /// the records `query` selects, in sequence order.
    async fn audit_records(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;
}

/// Cache settings for [`CachedStore`].
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// How long a lookup (found or not found) is reused.
    pub(crate) ttl: Duration,
    /// Bound on cached entries per kind (principals, certificates).
    pub(crate) max_entries: u64,
    /// When the backend fails, an entry older than `ttl` but younger than
    /// `ttl + stale_if_error` is still served (and counted); beyond that the lookup fails.
    pub(crate) stale_if_error: Duration,
}
