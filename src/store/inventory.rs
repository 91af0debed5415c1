//! The certificate inventory: what certgate saw in traffic, kept apart from the records the
//! decision reads. A sighting never registers, revokes or changes a certificate record, so
//! recording can neither grant nor deny anything.

use async_trait::async_trait;
use serde::Serialize;

use super::{EpochMillis, StoreError};

/// One certificate certgate accepted, as the inventory keeps it (keyed by `sha256`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sighting {
    /// Lowercase hex SHA-256 of the DER certificate: the key.
    pub sha256: String,
    /// Lowercase hex serial, no colons.
    pub serial_number: String,
    /// Issuer distinguished name, RFC 4514 text.
    pub issuer: String,
    /// The principal the certificate named (empty when it named none).
    pub principal_id: String,
    /// notBefore.
    pub not_before: EpochMillis,
    /// notAfter.
    pub expires_at: EpochMillis,
    /// When certgate first recorded it.
    pub first_seen: EpochMillis,
    /// When certgate last recorded it (at most one write per `inventory.interval`).
    pub last_seen: EpochMillis,
}

/// The inventory side of a backend. `first_seen` of a stored sighting is never overwritten.
#[async_trait]
pub trait Inventory: Send + Sync + 'static {
    /// Upsert a batch: create what is new, move `last_seen` of what is known.
    async fn record_sightings(&self, batch: &[Sighting]) -> Result<(), StoreError>;
    /// Sightings with `expires_at <= expiring_before` (all without it), ordered by expiry.
    async fn list_sightings(
        &self,
        expiring_before: Option<EpochMillis>,
    ) -> Result<Vec<Sighting>, StoreError>;
}
