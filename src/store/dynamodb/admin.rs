//! The admin side: creating, changing and listing records for the CLI.

use super::item::{principal_item, sort_certificates};
use super::*;

impl DynamoStore {
    /// `UpdateItem` on an existing record (`attribute_exists`), returning the new record.
    async fn update_existing(
        &self,
        table: &str,
        (key, value): (&str, &str),
        kind: &'static str,
        expression: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Item, StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(table)
            .key(key, AttributeValue::S(value.to_owned()))
            .update_expression(expression)
            .condition_expression(format!("attribute_exists({key})"))
            .return_values(ReturnValue::AllNew);
        if expression.contains("#s") {
            req = req.expression_attribute_names("#s", "status");
        }
        for (name, v) in values {
            req = req.expression_attribute_values(name, v);
        }
        match req.send().await {
            Ok(out) => out
                .attributes
                .ok_or_else(|| corrupt(value, "update returned no record")),
            Err(e) if is_condition_failed(&e) => Err(StoreError::NotFound {
                kind,
                key: value.to_owned(),
            }),
            Err(e) => Err(sdk_error(table, e)),
        }
    }

    /// `PutItem` of a new record (`attribute_not_exists`).
    async fn put_new(
        &self,
        table: &str,
        key: &str,
        kind: &'static str,
        item: Item,
    ) -> Result<(), StoreError> {
        let value = match item.get(key) {
            Some(AttributeValue::S(v)) => v.clone(),
            _ => String::new(),
        };
        let res = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression(format!("attribute_not_exists({key})"))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => {
                Err(StoreError::AlreadyExists { kind, key: value })
            }
            Err(e) => Err(sdk_error(table, e)),
        }
    }

    fn certificate_item(&self, c: &CertificateRecord) -> Item {
        let mut item = Item::new();
        item.insert("serial_number".into(), s(&c.serial_number));
        if let Some(r) = &c.registration {
            item.insert("principal_id".into(), s(&r.principal_id));
            item.insert("issuer".into(), s(&r.issuer));
            item.insert("fingerprint_sha256".into(), s(&r.sha256));
            item.insert("not_before".into(), n(r.not_before));
            item.insert("expires_at".into(), n(r.expires_at));
            item.insert("expiry_bucket".into(), s(EXPIRY_BUCKET));
            if let Some(keep) = self.settings.purge_expired_after {
                let secs = r.expires_at.div_euclid(1000) + keep.as_secs() as i64;
                item.insert(PURGE_AT.into(), n(secs));
            }
        }
        item.insert("revoked".into(), AttributeValue::Bool(c.revoked));
        if let Some(at) = c.revoked_at {
            item.insert("revoked_at".into(), n(at));
        }
        if let Some(r) = &c.revocation_reason {
            item.insert("revocation_reason".into(), s(r));
        }
        item
    }
}

#[async_trait]
impl Admin for DynamoStore {
    async fn create_principal(
        &self,
        principal: &Principal,
        _actor: &Actor,
    ) -> Result<(), StoreError> {
        let table = &self.settings.principals_table;
        self.put_new(
            table,
            "principal_id",
            "principal",
            principal_item(principal),
        )
        .await
    }

    async fn list_principals(&self) -> Result<Vec<Principal>, StoreError> {
        let items = self.scan_all(&self.settings.principals_table).await?;
        let mut principals = items
            .iter()
            .map(read_principal)
            .collect::<Result<Vec<_>, _>>()?;
        principals.sort_by(|a, b| a.principal_id.cmp(&b.principal_id));
        Ok(principals)
    }

    async fn suspend_principal(
        &self,
        principal_id: &str,
        reason: &str,
        at: EpochMillis,
        _actor: &Actor,
    ) -> Result<Principal, StoreError> {
        let table = &self.settings.principals_table;
        let item = self
            .update_existing(
                table,
                ("principal_id", principal_id),
                "principal",
                "SET #s = :s, suspended_at = :t, suspended_reason = :r",
                vec![(":s", s("suspended")), (":t", n(at)), (":r", s(reason))],
            )
            .await?;
        read_principal(&item)
    }

    async fn activate_principal(
        &self,
        principal_id: &str,
        _actor: &Actor,
    ) -> Result<Principal, StoreError> {
        let table = &self.settings.principals_table;
        let item = self
            .update_existing(
                table,
                ("principal_id", principal_id),
                "principal",
                "SET #s = :s REMOVE suspended_at, suspended_reason",
                vec![(":s", s("active"))],
            )
            .await?;
        read_principal(&item)
    }

    async fn register_certificate(
        &self,
        cert: &CertificateRecord,
        _actor: &Actor,
    ) -> Result<(), StoreError> {
        let table = &self.settings.certificates_table;
        let item = self.certificate_item(cert);
        self.put_new(table, "serial_number", "certificate", item)
            .await
    }

    async fn list_certificates(
        &self,
        principal_id: Option<&str>,
        expiring_before: Option<EpochMillis>,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let table = &self.settings.certificates_table;
        let index = match principal_id {
            Some(p) => Some((BY_PRINCIPAL_INDEX, "principal_id", p)),
            None if expiring_before.is_some() => {
                Some((BY_EXPIRY_INDEX, "expiry_bucket", EXPIRY_BUCKET))
            }
            None => None,
        };
        let items: Vec<Item> = match index {
            // Indexes are eventually consistent by definition; results come sorted by expiry.
            Some((index, hash, value)) => {
                let mut condition = format!("{hash} = :h");
                let mut req = self
                    .client
                    .query()
                    .table_name(table)
                    .index_name(index)
                    .expression_attribute_values(":h", s(value));
                if let Some(before) = expiring_before {
                    condition.push_str(" AND expires_at <= :b");
                    req = req.expression_attribute_values(":b", n(before));
                }
                req.key_condition_expression(condition)
                    .into_paginator()
                    .items()
                    .send()
                    .collect::<Result<_, _>>()
                    .await
                    .map_err(|e| sdk_error(table, e))?
            }
            None => self.scan_all(table).await?,
        };
        let mut certs = items
            .iter()
            .map(read_certificate)
            .collect::<Result<Vec<_>, _>>()?;
        sort_certificates(&mut certs);
        Ok(certs)
    }

    async fn revoke_certificate(
        &self,
        serial: &Serial,
        issuer: Option<&str>,
        reason: RevocationReason,
        at: EpochMillis,
        _actor: &Actor,
    ) -> Result<CertificateRecord, StoreError> {
        let table = &self.settings.certificates_table;
        let key = serial.to_string();
        let expression = "SET revoked = :t, revoked_at = :at, revocation_reason = :r";
        let values = vec![
            (":t", AttributeValue::Bool(true)),
            (":at", n(at)),
            (":r", s(reason.as_str())),
        ];
        let Some(issuer) = issuer else {
            let key = ("serial_number", key.as_str());
            let item = self
                .update_existing(table, key, "certificate", expression, values)
                .await?;
            return read_certificate(&item);
        };
        // Unconditional, as the runbook's revoke-unregistered: a registered item keeps its
        // registration and issuer, an unknown serial becomes a revocation-only record.
        let mut req = self
            .client
            .update_item()
            .table_name(table)
            .key("serial_number", s(&key))
            .update_expression(format!("{expression}, issuer = if_not_exists(issuer, :i)"))
            .expression_attribute_values(":i", s(issuer))
            .return_values(ReturnValue::AllNew);
        for (name, v) in values {
            req = req.expression_attribute_values(name, v);
        }
        let item = req
            .send()
            .await
            .map_err(|e| sdk_error(table, e))?
            .attributes
            .ok_or_else(|| corrupt(&key, "update returned no record"))?;
        read_certificate(&item)
    }

    async fn audit_records(&self, _query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(Vec::new())
    }
}
