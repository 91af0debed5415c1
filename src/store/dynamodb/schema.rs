//! Creating and adopting the tables (principals, certificates, audit), their indexes and the TTL setting
//! (`certgate store init`).

use super::*;

impl DynamoStore {
    /// Create the three tables, their indexes and the TTL setting when missing; waits until
    /// they are active. Safe to run again: existing tables are left as they are (their
    /// key schema is checked).
    pub async fn init_tables(&self) -> Result<Vec<String>, StoreError> {
        let mut report = Vec::new();
        let principals = &self.settings.principals_table;
        let certificates = &self.settings.certificates_table;
        report.push(self.create_table(principals, "principal_id", false).await?);
        report.push(
            self.create_table(certificates, "serial_number", true)
                .await?,
        );
        let audit = &self.settings.audit_table;
        report.push(self.create_table(audit, AUDIT_KEY, false).await?);
        for table in [principals, certificates, audit] {
            self.wait_active(table).await?;
        }
        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(certificates)
            .send()
            .await
            .map_err(|e| sdk_error(certificates, e))?;
        let enabled = ttl
            .time_to_live_description()
            .and_then(|d| d.attribute_name())
            .is_some_and(|a| a == PURGE_AT);
        if enabled {
            report.push(format!("{certificates}: TTL on {PURGE_AT} already enabled"));
        } else {
            let spec = TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(PURGE_AT)
                .build()
                .map_err(build_error)?;
            self.client
                .update_time_to_live()
                .table_name(certificates)
                .time_to_live_specification(spec)
                .send()
                .await
                .map_err(|e| sdk_error(certificates, e))?;
            report.push(format!("{certificates}: TTL enabled on {PURGE_AT}"));
        }
        Ok(report)
    }

    async fn create_table(
        &self,
        table: &str,
        key: &str,
        indexes: bool,
    ) -> Result<String, StoreError> {
        match self.client.describe_table().table_name(table).send().await {
            Ok(found) => {
                let schema = found
                    .table()
                    .map(|t| t.key_schema())
                    .unwrap_or_default()
                    .iter()
                    .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
                    .collect::<Vec<_>>();
                let want = match key {
                    AUDIT_KEY => vec![
                        ("chain".to_owned(), KeyType::Hash),
                        ("sequence".to_owned(), KeyType::Range),
                    ],
                    key => vec![(key.to_owned(), KeyType::Hash)],
                };
                if schema != want {
                    return Err(StoreError::Unavailable(
                        format!(
                            "table {table} exists with key schema {schema:?}; certgate needs \
                         {want:?}"
                        )
                        .into(),
                    ));
                }
                return Ok(format!("{table}: exists"));
            }
            Err(e) if is_resource_not_found(&e) => {}
            Err(e) => return Err(sdk_error(table, e)),
        }
        let mut req = self
            .client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest);
        req = if key == AUDIT_KEY {
            req.key_schema(key_elem("chain", KeyType::Hash)?)
                .key_schema(key_elem("sequence", KeyType::Range)?)
                .attribute_definitions(attr("chain", ScalarAttributeType::S)?)
                .attribute_definitions(attr("sequence", ScalarAttributeType::N)?)
        } else {
            req.key_schema(key_elem(key, KeyType::Hash)?)
                .attribute_definitions(attr(key, ScalarAttributeType::S)?)
        };
        if indexes {
            for (name, hash) in INDEXES {
                req = req
                    .attribute_definitions(attr(hash, ScalarAttributeType::S)?)
                    .global_secondary_indexes(index(name, hash)?);
            }
            req = req.attribute_definitions(attr("expires_at", ScalarAttributeType::N)?);
        }
        match req.send().await {
            Ok(_) => Ok(format!("{table}: created")),
            // Another `store init` won the race.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                Ok(format!("{table}: exists"))
            }
            Err(e) => Err(sdk_error(table, e)),
        }
    }

    /// `store init --adopt`, after [`DynamoStore::init_tables`]: give tables that existed
    /// before certgate (created with their hash keys only) certgate's indexes, and set
    /// `expiry_bucket` on the registered certificates that lack it. Other attributes are
    /// not touched; safe to run again.
    pub(crate) async fn adopt_tables(&self) -> Result<Vec<String>, StoreError> {
        let table = &self.settings.certificates_table;
        let mut report = Vec::new();
        for (name, hash) in INDEXES {
            report.push(self.adopt_index(table, name, hash).await?);
        }
        let mut set = 0u64;
        for item in self.scan_all(table).await? {
            let registered = matches!(item.get("principal_id"), Some(AttributeValue::S(_)))
                && matches!(item.get("expires_at"), Some(AttributeValue::N(_)));
            let Some(AttributeValue::S(serial)) = item.get("serial_number") else {
                continue;
            };
            if !registered || item.contains_key("expiry_bucket") {
                continue;
            }
            let res = self
                .client
                .update_item()
                .table_name(table)
                .key("serial_number", s(serial))
                .update_expression("SET expiry_bucket = :b")
                .condition_expression(
                    "attribute_exists(serial_number) AND attribute_not_exists(expiry_bucket)",
                )
                .expression_attribute_values(":b", s(EXPIRY_BUCKET))
                .send()
                .await;
            match res {
                Ok(_) => set += 1,
                // Deleted or set by someone else meanwhile.
                Err(e) if is_condition_failed(&e) => {}
                Err(e) => return Err(sdk_error(table, e)),
            }
        }
        report.push(format!(
            "{table}: expiry_bucket set on {set} certificate(s)"
        ));
        Ok(report)
    }

    /// Create index `name` (`hash`, `expires_at`) on `table` unless it exists; waits until
    /// it is active. A provisioned table's index gets the table's capacity.
    async fn adopt_index(&self, table: &str, name: &str, hash: &str) -> Result<String, StoreError> {
        let described = self.describe(table).await?;
        let found = described.as_ref();
        let existing = found
            .map(|t| t.global_secondary_indexes())
            .unwrap_or_default()
            .iter()
            .find(|i| i.index_name() == Some(name));
        if let Some(index) = existing {
            let keys: Vec<_> = index
                .key_schema()
                .iter()
                .map(|k| (k.attribute_name(), k.key_type().clone()))
                .collect();
            if keys != [(hash, KeyType::Hash), ("expires_at", KeyType::Range)] {
                return Err(StoreError::Unavailable(
                    format!(
                        "table {table} has an index {name} with keys {keys:?}; certgate needs \
                         {hash} (hash), expires_at (range)"
                    )
                    .into(),
                ));
            }
            return Ok(format!("{table}: index {name} exists"));
        }
        // The index `store init` gives a new table, moved into an update's create action.
        let index = index(name, hash)?;
        let mut create = aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
            .index_name(index.index_name)
            .set_key_schema(Some(index.key_schema))
            .set_projection(index.projection);
        let on_demand = found
            .and_then(|t| t.billing_mode_summary())
            .and_then(|b| b.billing_mode())
            == Some(&BillingMode::PayPerRequest);
        if !on_demand && let Some(capacity) = found.and_then(|t| t.provisioned_throughput()) {
            create = create.provisioned_throughput(
                aws_sdk_dynamodb::types::ProvisionedThroughput::builder()
                    .read_capacity_units(capacity.read_capacity_units().unwrap_or(1).max(1))
                    .write_capacity_units(capacity.write_capacity_units().unwrap_or(1).max(1))
                    .build()
                    .map_err(build_error)?,
            );
        }
        let create = create.build().map_err(build_error)?;
        self.client
            .update_table()
            .table_name(table)
            .attribute_definitions(attr(hash, ScalarAttributeType::S)?)
            .attribute_definitions(attr("expires_at", ScalarAttributeType::N)?)
            .global_secondary_index_updates(
                aws_sdk_dynamodb::types::GlobalSecondaryIndexUpdate::builder()
                    .create(create)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error(table, e))?;
        let active = |t: &aws_sdk_dynamodb::types::TableDescription| {
            t.global_secondary_indexes().iter().any(|i| {
                i.index_name() == Some(name)
                    && i.index_status() == Some(&aws_sdk_dynamodb::types::IndexStatus::Active)
            })
        };
        self.wait_for(table, &format!("index {name} of {table}"), 1200, active)
            .await?;
        Ok(format!("{table}: index {name} created"))
    }

    /// `DescribeTable` of `table`.
    async fn describe(
        &self,
        table: &str,
    ) -> Result<Option<aws_sdk_dynamodb::types::TableDescription>, StoreError> {
        let out = self
            .client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_error(table, e))?;
        Ok(out.table)
    }

    async fn wait_active(&self, table: &str) -> Result<(), StoreError> {
        let active = |t: &aws_sdk_dynamodb::types::TableDescription| {
            t.table_status() == Some(&TableStatus::Active)
        };
        self.wait_for(table, &format!("table {table}"), 120, active)
            .await
    }

    /// Poll `DescribeTable` of `table` every 500ms, at most `polls` times, until `ready`.
    async fn wait_for(
        &self,
        table: &str,
        what: &str,
        polls: u32,
        ready: impl Fn(&aws_sdk_dynamodb::types::TableDescription) -> bool,
    ) -> Result<(), StoreError> {
        for _ in 0..polls {
            if self.describe(table).await?.as_ref().is_some_and(&ready) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(StoreError::Unavailable(
            format!("{what} did not become ACTIVE within {}s", polls / 2).into(),
        ))
    }
}

/// certgate's indexes on the certificates table: name and hash key; the range key is
/// `expires_at`.
/// Stands for the audit table's key (hash `chain` S, range `sequence` N) in
/// [`DynamoStore::create_table`].
const AUDIT_KEY: &str = "chain, sequence";

const INDEXES: [(&str, &str); 2] = [
    (BY_PRINCIPAL_INDEX, "principal_id"),
    (BY_EXPIRY_INDEX, "expiry_bucket"),
];

/// Index `name` on (`hash`, `expires_at`), projecting every attribute.
fn index(name: &str, hash: &str) -> Result<GlobalSecondaryIndex, StoreError> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key_elem(hash, KeyType::Hash)?)
        .key_schema(key_elem("expires_at", KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(build_error)
}

/// A request builder missing a required field.
pub(super) fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Unavailable(e.to_string().into())
}

/// An attribute definition for a table's or index's key.
fn attr(name: &str, t: ScalarAttributeType) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(t)
        .build()
        .map_err(build_error)
}

/// One element of a table's or index's key schema.
fn key_elem(name: &str, t: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(t)
        .build()
        .map_err(build_error)
}
