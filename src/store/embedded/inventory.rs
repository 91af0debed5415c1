//! The inventory table of the embedded store (created on open, next to the other tables;
//! older certgate versions ignore it).

use super::*;
use crate::store::inventory::{Inventory, Sighting};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS inventory (
    sha256        TEXT PRIMARY KEY,
    serial_number TEXT NOT NULL,
    issuer        TEXT NOT NULL,
    principal_id  TEXT NOT NULL,
    not_before    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS inventory_expires_at ON inventory (expires_at);
";

fn read_sighting(row: &Row<'_>) -> Result<Sighting, StoreError> {
    let key: String = column(row, 0, "<unreadable sha256>")?;
    Ok(Sighting {
        serial_number: column(row, 1, &key)?,
        issuer: column(row, 2, &key)?,
        principal_id: column(row, 3, &key)?,
        not_before: column(row, 4, &key)?,
        expires_at: column(row, 5, &key)?,
        first_seen: column(row, 6, &key)?,
        last_seen: column(row, 7, &key)?,
        sha256: key,
    })
}

#[async_trait]
impl Inventory for EmbeddedStore {
    async fn record_sightings(&self, batch: &[Sighting]) -> Result<(), StoreError> {
        let batch = batch.to_vec();
        self.run(move |conn| {
            // One transaction per batch: one fsync however many certificates it holds.
            let tx = conn.transaction().map_err(db)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO inventory (sha256, serial_number, issuer, principal_id, \
                         not_before, expires_at, first_seen, last_seen) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                         ON CONFLICT (sha256) DO UPDATE SET \
                         last_seen = max(last_seen, excluded.last_seen)",
                    )
                    .map_err(db)?;
                for s in &batch {
                    stmt.execute(params![
                        s.sha256,
                        s.serial_number,
                        s.issuer,
                        s.principal_id,
                        s.not_before,
                        s.expires_at,
                        s.first_seen,
                        s.last_seen
                    ])
                    .map_err(db)?;
                }
            }
            tx.commit().map_err(db)
        })
        .await
    }

    async fn list_sightings(
        &self,
        expiring_before: Option<EpochMillis>,
    ) -> Result<Vec<Sighting>, StoreError> {
        self.run(move |conn| {
            let sql = "SELECT sha256, serial_number, issuer, principal_id, not_before, \
                       expires_at, first_seen, last_seen FROM inventory \
                       WHERE expires_at <= ?1 ORDER BY expires_at, sha256";
            query(
                conn,
                sql,
                [expiring_before.unwrap_or(i64::MAX)],
                read_sighting,
            )
        })
        .await
    }
}
