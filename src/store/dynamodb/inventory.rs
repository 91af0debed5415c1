//! The inventory in the certificates table, as items of their own kind. An inventory item is
//! keyed `seen#<sha256>` — never a serial, so the decision's `GetItem` by serial cannot read
//! it — carries `item_kind = inventory`, no `principal_id` (so `by_principal` leaves it out)
//! and `expiry_bucket = seen` (its own partition of `by_expiry`, which `cert list` of
//! registered certificates does not query). Writes are conditional on the key being absent
//! or already an inventory item, so they can never change a registration or a revocation.

use super::item::Fields;
use super::*;
use crate::store::inventory::{Inventory, Sighting};

/// Prefix of an inventory item's key.
const KEY_PREFIX: &str = "seen#";
/// `item_kind` of an inventory item.
const KIND: &str = "inventory";
/// `expiry_bucket` of inventory items: their partition of the expiry index.
const BUCKET: &str = "seen";

/// Whether a scanned certificates-table item is an inventory item (skipped by everything
/// that reads certificate records).
pub(super) fn is_inventory(item: &Item) -> bool {
    matches!(item.get("item_kind"), Some(AttributeValue::S(k)) if k == KIND)
}

fn read_sighting(item: &Item) -> Result<Sighting, StoreError> {
    let f = Fields::new(item, "serial_number");
    Ok(Sighting {
        sha256: f.str("fingerprint_sha256")?,
        serial_number: f.str("seen_serial")?,
        issuer: f.str("issuer")?,
        principal_id: f.str("seen_principal")?,
        not_before: f.num("not_before")?,
        expires_at: f.num("expires_at")?,
        first_seen: f.num("first_seen")?,
        last_seen: f.num("last_seen")?,
    })
}

impl DynamoStore {
    async fn record_one(&self, table: &str, seen: &Sighting) -> Result<(), StoreError> {
        let mut update = String::from(
            "SET item_kind = :k, fingerprint_sha256 = :h, seen_serial = :serial, \
             issuer = :i, seen_principal = :p, not_before = :nb, expires_at = :e, \
             expiry_bucket = :b, first_seen = if_not_exists(first_seen, :first), \
             last_seen = :last",
        );
        let mut req = self.client.update_item();
        // Expired certificates leave the inventory as their records do (the table's TTL).
        if let Some(keep) = self.settings.purge_expired_after {
            update.push_str(", purge_at = :purge");
            let secs = seen.expires_at.div_euclid(1000) + keep.as_secs() as i64;
            req = req.expression_attribute_values(":purge", n(secs));
        }
        let res = req
            .table_name(table)
            .key("serial_number", s(&format!("{KEY_PREFIX}{}", seen.sha256)))
            .condition_expression("attribute_not_exists(serial_number) OR item_kind = :k")
            .update_expression(update)
            .expression_attribute_values(":k", s(KIND))
            .expression_attribute_values(":h", s(&seen.sha256))
            .expression_attribute_values(":serial", s(&seen.serial_number))
            .expression_attribute_values(":i", s(&seen.issuer))
            .expression_attribute_values(":p", s(&seen.principal_id))
            .expression_attribute_values(":nb", n(seen.not_before))
            .expression_attribute_values(":e", n(seen.expires_at))
            .expression_attribute_values(":b", s(BUCKET))
            .expression_attribute_values(":first", n(seen.first_seen))
            .expression_attribute_values(":last", n(seen.last_seen))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            // Someone wrote a non-inventory item under an inventory key: leave it alone.
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk_error(table, e)),
        }
    }
}

#[async_trait]
impl Inventory for DynamoStore {
    async fn record_sightings(&self, batch: &[Sighting]) -> Result<(), StoreError> {
        // BatchWriteItem only puts whole items, which would reset first_seen: one UpdateItem
        // each, at most once per certificate per interval.
        let table = &self.settings.certificates_table;
        for sighting in batch {
            self.record_one(table, sighting).await?;
        }
        Ok(())
    }

    async fn list_sightings(
        &self,
        expiring_before: Option<EpochMillis>,
    ) -> Result<Vec<Sighting>, StoreError> {
        let table = &self.settings.certificates_table;
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(table)
            .index_name(BY_EXPIRY_INDEX)
            .key_condition_expression("expiry_bucket = :h AND expires_at <= :b")
            .expression_attribute_values(":h", s(BUCKET))
            .expression_attribute_values(":b", n(expiring_before.unwrap_or(i64::MAX)))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(|e| sdk_error(table, e))?;
        items
            .iter()
            .filter(|item| is_inventory(item))
            .map(read_sighting)
            .collect()
    }
}
