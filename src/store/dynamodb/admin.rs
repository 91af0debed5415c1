//! The admin side: creating, changing and listing records for the CLI.

use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};

use super::chain::Planned;
use super::item::{principal_item, sort_certificates};
use super::schema::build_error;
use super::*;
use crate::store::audit::{Action, Change};

/// One attribute's part in an audited update.
enum Op {
    Set(AttributeValue),
    /// Set unless the item has it (`if_not_exists`).
    SetIfMissing(AttributeValue),
    Remove,
}

/// The item `current` (or a new one keyed `key`) with `edits` applied: what DynamoDB holds
/// after the update, so the audit record's `after` is the stored record.
fn edited(current: Option<&Item>, (key_attr, key): (&str, &str), edits: &[(&str, Op)]) -> Item {
    let mut item = current
        .cloned()
        .unwrap_or_else(|| Item::from([(key_attr.to_owned(), s(key))]));
    for (name, op) in edits {
        match op {
            Op::Set(v) => {
                item.insert((*name).to_owned(), v.clone());
            }
            Op::SetIfMissing(v) => {
                item.entry((*name).to_owned()).or_insert_with(|| v.clone());
            }
            Op::Remove => {
                item.remove(*name);
            }
        }
    }
    item
}

impl DynamoStore {
    /// An audited `UpdateItem` of `edits` on the `kind` record `key`; `must_exist`: the
    /// record must be there (`NotFound` otherwise, also when it disappears meanwhile).
    #[allow(clippy::too_many_arguments)]
    async fn update_audited<T>(
        &self,
        actor: &Actor,
        (table, key_attr, key): (&str, &str, &str),
        kind: &'static str,
        edits: Vec<(&str, Op)>,
        must_exist: bool,
        read: fn(&Item) -> Result<T, StoreError>,
        describe: impl Fn(Option<&T>, &T) -> Change,
    ) -> Result<T, StoreError> {
        let not_found = || StoreError::NotFound {
            kind,
            key: key.to_owned(),
        };
        let (mut sets, mut removes) = (Vec::new(), Vec::new());
        let mut update = Update::builder().table_name(table).key(key_attr, s(key));
        for (i, (name, op)) in edits.iter().enumerate() {
            update = update.expression_attribute_names(format!("#a{i}"), *name);
            match op {
                Op::Set(_) => sets.push(format!("#a{i} = :v{i}")),
                Op::SetIfMissing(_) => sets.push(format!("#a{i} = if_not_exists(#a{i}, :v{i})")),
                Op::Remove => removes.push(format!("#a{i}")),
            }
            if let Op::Set(v) | Op::SetIfMissing(v) = op {
                update = update.expression_attribute_values(format!(":v{i}"), v.clone());
            }
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        update = update.update_expression(expression);
        if must_exist {
            update = update
                .condition_expression("attribute_exists(#k)")
                .expression_attribute_names("#k", key_attr);
        }
        let write = TransactWriteItem::builder()
            .update(update.build().map_err(build_error)?)
            .build();
        let plan = |current: Option<Item>| {
            if must_exist && current.is_none() {
                return Err(not_found());
            }
            let before = current.as_ref().map(read).transpose()?;
            let after = read(&edited(current.as_ref(), (key_attr, key), &edits))?;
            Ok(Planned {
                write: write.clone(),
                change: describe(before.as_ref(), &after),
                after,
            })
        };
        self.audited(actor, (table, key_attr, key), plan, not_found)
            .await
    }

    /// An audited `PutItem` of the new `kind` record `item` (`AlreadyExists` when its key is
    /// taken).
    async fn create_audited<T>(
        &self,
        actor: &Actor,
        (table, key_attr): (&str, &str),
        kind: &'static str,
        item: Item,
        read: fn(&Item) -> Result<T, StoreError>,
        describe: impl Fn(&T) -> Change,
    ) -> Result<(), StoreError> {
        let key = match item.get(key_attr) {
            Some(AttributeValue::S(v)) => v.clone(),
            _ => String::new(),
        };
        let exists = || StoreError::AlreadyExists {
            kind,
            key: key.clone(),
        };
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", key_attr)
            .build()
            .map_err(build_error)?;
        let write = TransactWriteItem::builder().put(put).build();
        let plan = |current: Option<Item>| {
            if current.is_some() {
                return Err(exists());
            }
            let after = read(&item)?;
            Ok(Planned {
                write: write.clone(),
                change: describe(&after),
                after: (),
            })
        };
        self.audited(actor, (table, key_attr, &key), plan, exists)
            .await
    }

    fn certificate_item(&self, c: &CertificateRecord) -> Item {
        item::certificate_item(c, self.settings.purge_expired_after)
    }
}

#[async_trait]
impl Admin for DynamoStore {
    async fn create_principal(
        &self,
        principal: &Principal,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let table = &self.settings.principals_table;
        let item = principal_item(principal);
        self.create_audited(
            actor,
            (table, "principal_id"),
            "principal",
            item,
            read_principal,
            |after| Change::principal(Action::PrincipalCreate, None, after, None),
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
        actor: &Actor,
    ) -> Result<Principal, StoreError> {
        let table = &self.settings.principals_table;
        let edits = vec![
            ("status", Op::Set(s("suspended"))),
            ("suspended_at", Op::Set(n(at))),
            ("suspended_reason", Op::Set(s(reason))),
        ];
        self.update_audited(
            actor,
            (table, "principal_id", principal_id),
            "principal",
            edits,
            true,
            read_principal,
            |before, after| {
                Change::principal(Action::PrincipalSuspend, before, after, Some(reason))
            },
        )
        .await
    }

    async fn activate_principal(
        &self,
        principal_id: &str,
        actor: &Actor,
    ) -> Result<Principal, StoreError> {
        let table = &self.settings.principals_table;
        let edits = vec![
            ("status", Op::Set(s("active"))),
            ("suspended_at", Op::Remove),
            ("suspended_reason", Op::Remove),
        ];
        self.update_audited(
            actor,
            (table, "principal_id", principal_id),
            "principal",
            edits,
            true,
            read_principal,
            |before, after| Change::principal(Action::PrincipalActivate, before, after, None),
        )
        .await
    }

    async fn register_certificate(
        &self,
        cert: &CertificateRecord,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let table = &self.settings.certificates_table;
        let item = self.certificate_item(cert);
        self.create_audited(
            actor,
            (table, "serial_number"),
            "certificate",
            item,
            read_certificate,
            |after| Change::certificate(Action::CertificateRegister, None, after, None),
        )
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
        actor: &Actor,
    ) -> Result<CertificateRecord, StoreError> {
        let table = &self.settings.certificates_table;
        let key = serial.to_string();
        let reason = reason.as_str();
        let mut edits = vec![
            ("revoked", Op::Set(AttributeValue::Bool(true))),
            ("revoked_at", Op::Set(n(at))),
            ("revocation_reason", Op::Set(s(reason))),
        ];
        // With an issuer the write is unconditional, as the runbook's revoke-unregistered: a
        // registered item keeps its registration and issuer, an unknown serial becomes a
        // revocation-only record.
        if let Some(issuer) = issuer {
            edits.push(("issuer", Op::SetIfMissing(s(issuer))));
        }
        self.update_audited(
            actor,
            (table, "serial_number", &key),
            "certificate",
            edits,
            issuer.is_none(),
            read_certificate,
            |before, after| {
                Change::certificate(Action::CertificateRevoke, before, after, Some(reason))
            },
        )
        .await
    }

    async fn audit_records(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let mut records = self.chain_records().await?;
        records.retain(|r| query.matches(r));
        Ok(records)
    }
}
