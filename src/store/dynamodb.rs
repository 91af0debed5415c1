//! The Amazon DynamoDB backend, for many replicas sharing one truth.
//!
//! The tables keep the attribute names of the existing runbooks (README "Store"), so an operator's
//! `aws dynamodb update-item` fallback is honoured by every running replica within the
//! cache TTL. Layout (also `deploy/dynamodb/`):
//!
//! - principals, hash key `principal_id` (S): `principal_type` (S), `status` (S, `active` |
//!   `suspended`), `suspended_at` (N, epoch ms), `suspended_reason` (S), `roles` (L of S),
//!   `created_at` (N, epoch ms).
//! - certificates, hash key `serial_number` (S): `principal_id`, `issuer`,
//!   `fingerprint_sha256` (S), `not_before`, `expires_at` (N, epoch ms), `revoked` (BOOL),
//!   `revoked_at` (N), `revocation_reason` (S), `expiry_bucket` (S, always `all`), `purge_at`
//!   (N, epoch seconds, the optional TTL attribute). Indexes `by_principal` (`principal_id`,
//!   `expires_at`) and `by_expiry` (`expiry_bucket`, `expires_at`).
//!
//! Every call has an explicit deadline and retry budget so a slow DynamoDB cannot hold a
//! check past Envoy's timeout. What decides access is read strictly — a principal without a
//! known `status`, a certificate without a BOOL `revoked`, a wrong type in an attribute that
//! is read is `StoreError::Corrupt`, which the decision turns into a deny; `principal_type`
//! and `created_at` may be missing, extra attributes are ignored, and a certificate item with
//! `revoked = true` is a revocation whatever else it lacks (README "Store", table of
//! attributes).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ReturnValue, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification,
};

use super::{
    CertificateRecord, EpochMillis, Outage, OutageCause, Principal, PrincipalStatus, Registration,
    Store, StoreError,
};

/// Value of `expiry_bucket` on every certificate: the one partition of the expiry index.
/// Certificate writes are rare, so one partition is no hot spot, and
/// `cert list --expiring-within` becomes one `Query` instead of a `Scan`.
pub const EXPIRY_BUCKET: &str = "all";
/// Index of certificates by owner, sorted by expiry.
pub const BY_PRINCIPAL_INDEX: &str = "by_principal";
/// Index of all certificates sorted by expiry.
pub const BY_EXPIRY_INDEX: &str = "by_expiry";
/// The DynamoDB TTL attribute (epoch seconds) on certificates.
pub const PURGE_AT: &str = "purge_at";

/// Settings of the DynamoDB backend (`store.dynamodb` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoSettings {
    /// AWS region; `None`: the standard chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Endpoint override for DynamoDB-compatible servers (DynamoDB Local, moto).
    pub endpoint_url: Option<String>,
    /// Name of the principals table.
    pub principals_table: String,
    /// Name of the certificates table.
    pub certificates_table: String,
    /// Deadline of one lookup on the serving path, retries included.
    pub timeout: Duration,
    /// Deadline of one attempt.
    pub attempt_timeout: Duration,
    /// Attempts per call (1 = no retry).
    pub max_attempts: u32,
    /// Deadline of one CLI / admin call (writes, scans, table creation).
    pub admin_timeout: Duration,
    /// When set, certificates get `purge_at` = expiry + this, and DynamoDB's TTL deletes
    /// them that long after they expired.
    pub purge_expired_after: Option<Duration>,
}

impl Default for DynamoSettings {
    fn default() -> Self {
        DynamoSettings {
            region: None,
            endpoint_url: None,
            principals_table: "certgate_principals".into(),
            certificates_table: "certgate_certificates".into(),
            timeout: Duration::from_millis(250),
            attempt_timeout: Duration::from_millis(100),
            max_attempts: 3,
            admin_timeout: Duration::from_secs(10),
            purge_expired_after: None,
        }
    }
}

/// Who opens the store: the server (short deadlines, eventually consistent reads) or an
/// operator's command (long deadlines, strongly consistent reads so a command sees the
/// write it just made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `certgate serve` and the dry-run `certgate check`.
    Serve,
    /// Day-2 commands: principal/cert/store.
    Admin,
}

/// The DynamoDB-backed [`Store`].
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    settings: DynamoSettings,
    consistent_read: bool,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl DynamoStore {
    /// Build a client from the standard AWS configuration chain (environment, profile,
    /// web identity / IRSA, container and instance roles) and `settings`. No request is
    /// made; credentials are resolved on first use.
    pub async fn connect(settings: DynamoSettings, purpose: Purpose) -> Result<Self, StoreError> {
        Self::connect_with(settings, purpose, |loader| loader).await
    }

    /// [`DynamoStore::connect`], with a last say over the AWS configuration (tests use it to
    /// give static credentials to a local server).
    pub async fn connect_with(
        settings: DynamoSettings,
        purpose: Purpose,
        customize: impl FnOnce(aws_config::ConfigLoader) -> aws_config::ConfigLoader,
    ) -> Result<Self, StoreError> {
        let (operation, attempt, attempts) = match purpose {
            Purpose::Serve => (
                settings.timeout,
                settings.attempt_timeout,
                settings.max_attempts,
            ),
            Purpose::Admin => (settings.admin_timeout, settings.admin_timeout, 3),
        };
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(attempt)
                    .operation_timeout(operation)
                    .operation_attempt_timeout(attempt)
                    .build(),
            )
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(10))
                    .with_max_backoff(Duration::from_millis(100)),
            );
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk_config = customize(loader).load().await;
        if sdk_config.region().is_none() {
            return Err(StoreError::Unavailable(
                "DynamoDB: no AWS region (set store.dynamodb.region or AWS_REGION)".into(),
            ));
        }
        Ok(DynamoStore {
            client: Client::new(&sdk_config),
            settings,
            consistent_read: purpose == Purpose::Admin,
        })
    }

    /// The SDK client, for callers that need a raw DynamoDB call.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The settings this store was opened with.
    pub fn settings(&self) -> &DynamoSettings {
        &self.settings
    }

    /// Create both tables, their indexes and the TTL setting when missing; waits until
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
        for table in [principals, certificates] {
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
                .map_err(|e| StoreError::Unavailable(e.to_string().into()))?;
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
                if schema != [(key.to_owned(), KeyType::Hash)] {
                    return Err(StoreError::Unavailable(
                        format!(
                            "table {table} exists with key schema {schema:?}; certgate needs \
                         hash key {key} only"
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
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key_elem(key, KeyType::Hash)?)
            .attribute_definitions(attr(key, ScalarAttributeType::S)?);
        if indexes {
            req = req
                .attribute_definitions(attr("principal_id", ScalarAttributeType::S)?)
                .attribute_definitions(attr("expiry_bucket", ScalarAttributeType::S)?)
                .attribute_definitions(attr("expires_at", ScalarAttributeType::N)?);
            for (name, hash) in [
                (BY_PRINCIPAL_INDEX, "principal_id"),
                (BY_EXPIRY_INDEX, "expiry_bucket"),
            ] {
                let index = GlobalSecondaryIndex::builder()
                    .index_name(name)
                    .key_schema(key_elem(hash, KeyType::Hash)?)
                    .key_schema(key_elem("expires_at", KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.to_string().into()))?;
                req = req.global_secondary_indexes(index);
            }
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
    pub async fn adopt_tables(&self) -> Result<Vec<String>, StoreError> {
        let table = &self.settings.certificates_table;
        let mut report = Vec::new();
        for (name, hash) in [
            (BY_PRINCIPAL_INDEX, "principal_id"),
            (BY_EXPIRY_INDEX, "expiry_bucket"),
        ] {
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
        let mut create = aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
            .index_name(name)
            .key_schema(key_elem(hash, KeyType::Hash)?)
            .key_schema(key_elem("expires_at", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            );
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
                    .map_err(|e| StoreError::Unavailable(e.to_string().into()))?,
            );
        }
        let create = create
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string().into()))?;
        let hash_type = ScalarAttributeType::S;
        self.client
            .update_table()
            .table_name(table)
            .attribute_definitions(attr(hash, hash_type)?)
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

    async fn get_item(
        &self,
        table: &str,
        key: &str,
        value: &str,
    ) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key(key, AttributeValue::S(value.to_owned()))
            .consistent_read(self.consistent_read)
            .send()
            .await
            .map_err(|e| sdk_error(table, e))?;
        Ok(out.item)
    }

    /// Every item of `table` (admin commands only: a `Scan` reads the whole table).
    async fn scan_all(&self, table: &str) -> Result<Vec<Item>, StoreError> {
        self.client
            .scan()
            .table_name(table)
            .consistent_read(self.consistent_read)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(|e| sdk_error(table, e))
    }

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

/// How certgate would read one kind of item (`store check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// Refused as corrupt: 503 `store_unavailable` for whoever it concerns.
    Refused,
    /// Read, with a documented default (README "Store", table of attributes).
    Defaults,
}

/// One kind of problem found by [`DynamoStore::check_tables`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// Refused or read with defaults.
    pub finding: Finding,
    /// What is wrong, without the item's values (`attribute status is missing`).
    pub problem: String,
    /// How many items have it.
    pub count: u64,
    /// The keys of the first few of them.
    pub examples: Vec<String>,
}

/// What [`DynamoStore::check_tables`] found in one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableCheck {
    /// `principals` or `certificates`.
    pub kind: &'static str,
    /// The table name.
    pub table: String,
    /// Items scanned.
    pub items: u64,
    /// Items certgate would refuse.
    pub refused: u64,
    /// Items read with at least one default (and not refused).
    pub defaults: u64,
    /// By kind of problem, refused first.
    pub problems: Vec<Problem>,
}

/// Example keys kept per kind of problem.
const CHECK_EXAMPLES: usize = 5;

/// Principal attributes certgate reads; any other is ignored.
const PRINCIPAL_ATTRIBUTES: &[&str] = &[
    "principal_id",
    "principal_type",
    "status",
    "suspended_at",
    "suspended_reason",
    "roles",
    "created_at",
];

/// Certificate attributes certgate reads or writes; any other is ignored.
const CERTIFICATE_ATTRIBUTES: &[&str] = &[
    "serial_number",
    "principal_id",
    "issuer",
    "fingerprint_sha256",
    "not_before",
    "expires_at",
    "revoked",
    "revoked_at",
    "revocation_reason",
    "expiry_bucket",
    PURGE_AT,
];

/// The problem of a corrupt record, without the values it quotes, so items group by kind.
fn problem_kind(err: &StoreError) -> String {
    let StoreError::Corrupt { detail, .. } = err else {
        return err.to_string();
    };
    if detail.starts_with("unknown status") {
        return "unknown status (expected active or suspended)".to_owned();
    }
    match (
        detail.split_once(" = "),
        detail.ends_with("is not an integer"),
    ) {
        (Some((attr, _)), true) => format!("{attr} is not an integer"),
        _ => detail.clone(),
    }
}

/// One item's key and what certgate would make of it (each finding with its problem).
type Classified = (String, Vec<(Finding, String)>);

/// What certgate would make of one principal item: refused, or the defaults it applies.
fn classify_principal(item: &Item) -> Classified {
    let key = Fields::new(item, "principal_id").key.to_owned();
    let mut found = Vec::new();
    match read_principal(item) {
        Err(e) => found.push((Finding::Refused, problem_kind(&e))),
        Ok(p) => {
            if p.principal_type.is_none() {
                found.push((
                    Finding::Defaults,
                    "principal_type missing: the type comes from the certificate (OID, OU)"
                        .to_owned(),
                ));
            }
            if p.created_at.is_none() {
                found.push((
                    Finding::Defaults,
                    "created_at missing: creation time unknown".to_owned(),
                ));
            }
        }
    }
    extra_attributes(item, PRINCIPAL_ATTRIBUTES, &mut found);
    (key, found)
}

/// What certgate would make of one certificate item.
fn classify_certificate(item: &Item) -> Classified {
    let key = Fields::new(item, "serial_number").key.to_owned();
    let mut found = Vec::new();
    match read_certificate(item) {
        Err(e) => found.push((Finding::Refused, problem_kind(&e))),
        Ok(c) if c.registration.is_none() => found.push((
            Finding::Defaults,
            "revocation-only record: revoked, without registration (denied as revoked)".to_owned(),
        )),
        Ok(_) if !item.contains_key("expiry_bucket") => found.push((
            Finding::Defaults,
            "expiry_bucket missing: not listed by cert list --expiring-within \
             (store init --adopt sets it)"
                .to_owned(),
        )),
        Ok(_) => {}
    }
    extra_attributes(item, CERTIFICATE_ATTRIBUTES, &mut found);
    (key, found)
}

fn extra_attributes(item: &Item, known: &[&str], found: &mut Vec<(Finding, String)>) {
    if item.keys().any(|k| !known.contains(&k.as_str())) {
        found.push((Finding::Defaults, "extra attributes, ignored".to_owned()));
    }
}

/// Tally classified items into a [`TableCheck`].
fn tally(
    kind: &'static str,
    table: &str,
    items: &[Item],
    classify: fn(&Item) -> Classified,
) -> TableCheck {
    let mut check = TableCheck {
        kind,
        table: table.to_owned(),
        items: items.len() as u64,
        refused: 0,
        defaults: 0,
        problems: Vec::new(),
    };
    let mut by_kind: std::collections::BTreeMap<(Finding, String), (u64, Vec<String>)> =
        Default::default();
    for item in items {
        let (key, found) = classify(item);
        if found.iter().any(|(f, _)| *f == Finding::Refused) {
            check.refused += 1;
        } else if !found.is_empty() {
            check.defaults += 1;
        }
        for problem in found {
            let entry = by_kind.entry(problem).or_default();
            entry.0 += 1;
            entry.1.push(key.clone());
        }
    }
    check.problems = by_kind
        .into_iter()
        .map(|((finding, problem), (count, mut examples))| {
            examples.sort();
            examples.truncate(CHECK_EXAMPLES);
            Problem {
                finding,
                problem,
                count,
                examples,
            }
        })
        .collect();
    check
}

impl DynamoStore {
    /// `store check`: scan both tables (read only) and report, per kind of problem, how
    /// many items certgate would refuse or read with defaults, with a few example keys.
    pub async fn check_tables(&self) -> Result<Vec<TableCheck>, StoreError> {
        let principals = &self.settings.principals_table;
        let certificates = &self.settings.certificates_table;
        let p = self.scan_all(principals).await?;
        let c = self.scan_all(certificates).await?;
        Ok(vec![
            tally("principals", principals, &p, classify_principal),
            tally("certificates", certificates, &c, classify_certificate),
        ])
    }
}

type Item = HashMap<String, AttributeValue>;

/// An attribute definition for a table's or index's key.
fn attr(name: &str, t: ScalarAttributeType) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(t)
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string().into()))
}

/// One element of a table's or index's key schema.
fn key_elem(name: &str, t: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(t)
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string().into()))
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn corrupt(key: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        detail: detail.into(),
    }
}

fn is_condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

fn is_resource_not_found<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "ResourceNotFoundException")
}

fn sdk_error<E, R>(table: &str, e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let hint = if is_resource_not_found(&e) {
        " (does the table exist? `certgate store init` creates it)"
    } else {
        ""
    };
    let cause = match &e {
        SdkError::TimeoutError(_) => OutageCause::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => OutageCause::Timeout,
        SdkError::DispatchFailure(d) if d.is_io() => OutageCause::Unreachable,
        _ => OutageCause::Failed,
    };
    StoreError::Unavailable(Outage::new(
        cause,
        format!("DynamoDB {table}: {}{hint}", DisplayErrorContext(&e)),
    ))
}

/// Strict readers of one item: every problem names the record and the attribute.
struct Fields<'a> {
    item: &'a Item,
    key: &'a str,
}

impl<'a> Fields<'a> {
    fn new(item: &'a Item, key_attr: &str) -> Self {
        let key = match item.get(key_attr) {
            Some(AttributeValue::S(k)) => k.as_str(),
            _ => "?",
        };
        Fields { item, key }
    }

    fn missing(&self, name: &str) -> StoreError {
        corrupt(self.key, format!("attribute {name} is missing"))
    }

    fn wrong(&self, name: &str, want: &str) -> StoreError {
        corrupt(self.key, format!("attribute {name} is not of type {want}"))
    }

    fn opt_str(&self, name: &str) -> Result<Option<String>, StoreError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.wrong(name, "S")),
        }
    }

    fn str(&self, name: &str) -> Result<String, StoreError> {
        self.opt_str(name)?.ok_or_else(|| self.missing(name))
    }

    fn opt_num(&self, name: &str) -> Result<Option<i64>, StoreError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| {
                corrupt(
                    self.key,
                    format!("attribute {name} = {v} is not an integer"),
                )
            }),
            Some(_) => Err(self.wrong(name, "N")),
        }
    }

    fn num(&self, name: &str) -> Result<i64, StoreError> {
        self.opt_num(name)?.ok_or_else(|| self.missing(name))
    }

    fn bool(&self, name: &str) -> Result<bool, StoreError> {
        match self.item.get(name) {
            None => Err(self.missing(name)),
            Some(AttributeValue::Bool(b)) => Ok(*b),
            Some(_) => Err(self.wrong(name, "BOOL")),
        }
    }

    fn opt_str_list(&self, name: &str) -> Result<Option<Vec<String>>, StoreError> {
        let values: Vec<&String> = match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => return Ok(None),
            Some(AttributeValue::L(list)) => list
                .iter()
                .map(|v| v.as_s().map_err(|_| self.wrong(name, "L of S")))
                .collect::<Result<_, _>>()?,
            Some(AttributeValue::Ss(set)) => set.iter().collect(),
            Some(_) => return Err(self.wrong(name, "L of S")),
        };
        Ok(Some(values.into_iter().cloned().collect()))
    }
}

fn read_principal(item: &Item) -> Result<Principal, StoreError> {
    let f = Fields::new(item, "principal_id");
    let status = match f.str("status")?.as_str() {
        "active" => PrincipalStatus::Active,
        "suspended" => PrincipalStatus::Suspended,
        other => {
            return Err(corrupt(
                f.key,
                format!("unknown status \"{other}\" (expected active or suspended)"),
            ));
        }
    };
    Ok(Principal {
        principal_id: f.str("principal_id")?,
        principal_type: f.opt_str("principal_type")?,
        status,
        suspended_at: f.opt_num("suspended_at")?,
        suspended_reason: f.opt_str("suspended_reason")?,
        roles: f.opt_str_list("roles")?,
        created_at: f.opt_num("created_at")?,
    })
}

/// A certificate item. `revoked` decides and is read strictly (missing or not a BOOL:
/// corrupt). An item with `revoked = true` is a revocation whatever else it holds: when its
/// registration attributes are missing or unreadable it is a revocation-only record, and
/// unreadable `revoked_at`/`revocation_reason` are left out of it. An item with
/// `revoked = false` must be a complete registration.
fn read_certificate(item: &Item) -> Result<CertificateRecord, StoreError> {
    let f = Fields::new(item, "serial_number");
    let serial_number = f.str("serial_number")?;
    let revoked = f.bool("revoked")?;
    let registration = read_registration(&f);
    if revoked {
        return Ok(CertificateRecord {
            serial_number,
            registration: registration.ok(),
            revoked,
            revoked_at: f.opt_num("revoked_at").ok().flatten(),
            revocation_reason: f.opt_str("revocation_reason").ok().flatten(),
        });
    }
    Ok(CertificateRecord {
        serial_number,
        registration: Some(registration?),
        revoked,
        revoked_at: f.opt_num("revoked_at")?,
        revocation_reason: f.opt_str("revocation_reason")?,
    })
}

fn read_registration(f: &Fields<'_>) -> Result<Registration, StoreError> {
    Ok(Registration {
        principal_id: f.str("principal_id")?,
        issuer: f.str("issuer")?,
        sha256: f.str("fingerprint_sha256")?,
        not_before: f.num("not_before")?,
        expires_at: f.num("expires_at")?,
    })
}

fn principal_item(p: &Principal) -> Item {
    let mut item = Item::new();
    item.insert("principal_id".into(), s(&p.principal_id));
    if let Some(t) = &p.principal_type {
        item.insert("principal_type".into(), s(t));
    }
    item.insert("status".into(), s(p.status.as_str()));
    if let Some(at) = p.suspended_at {
        item.insert("suspended_at".into(), n(at));
    }
    if let Some(r) = &p.suspended_reason {
        item.insert("suspended_reason".into(), s(r));
    }
    if let Some(roles) = &p.roles {
        item.insert(
            "roles".into(),
            AttributeValue::L(roles.iter().map(|r| s(r)).collect()),
        );
    }
    if let Some(at) = p.created_at {
        item.insert("created_at".into(), n(at));
    }
    item
}

fn sort_certificates(certs: &mut [CertificateRecord]) {
    certs.sort_by(|a, b| {
        (a.expires_at(), &a.serial_number).cmp(&(b.expires_at(), &b.serial_number))
    });
}

#[async_trait]
impl Store for DynamoStore {
    async fn get_principal(&self, principal_id: &str) -> Result<Option<Principal>, StoreError> {
        let table = &self.settings.principals_table;
        self.get_item(table, "principal_id", principal_id)
            .await?
            .map(|item| read_principal(&item))
            .transpose()
    }

    async fn get_certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        let table = &self.settings.certificates_table;
        self.get_item(table, "serial_number", serial)
            .await?
            .map(|item| read_certificate(&item))
            .transpose()
    }

    async fn create_principal(&self, principal: &Principal) -> Result<(), StoreError> {
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

    async fn activate_principal(&self, principal_id: &str) -> Result<Principal, StoreError> {
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

    async fn register_certificate(&self, cert: &CertificateRecord) -> Result<(), StoreError> {
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
        serial: &str,
        reason: &str,
        at: EpochMillis,
    ) -> Result<CertificateRecord, StoreError> {
        let table = &self.settings.certificates_table;
        let item = self
            .update_existing(
                table,
                ("serial_number", serial),
                "certificate",
                "SET revoked = :t, revoked_at = :at, revocation_reason = :r",
                vec![
                    (":t", AttributeValue::Bool(true)),
                    (":at", n(at)),
                    (":r", s(reason)),
                ],
            )
            .await?;
        read_certificate(&item)
    }

    /// A `GetItem` of a key that is never written: needs only the permission the server
    /// has anyway, and proves credentials, network and table.
    async fn ping(&self) -> Result<(), StoreError> {
        let table = &self.settings.principals_table;
        self.get_item(table, "principal_id", "certgate:readiness-probe")
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn good_principal() -> Item {
        item(&[
            ("principal_id", s("alice")),
            ("principal_type", s("user")),
            ("status", s("suspended")),
            ("suspended_at", n(5)),
            ("suspended_reason", s("INC-1")),
            ("roles", AttributeValue::L(vec![s("reader")])),
            ("created_at", n(1)),
        ])
    }

    #[test]
    fn principal_round_trips_through_an_item() {
        let p = read_principal(&good_principal()).unwrap();
        assert_eq!(p.status, PrincipalStatus::Suspended);
        assert_eq!(p.suspended_reason.as_deref(), Some("INC-1"));
        assert_eq!(p.roles, Some(vec!["reader".to_owned()]));
        assert_eq!(read_principal(&principal_item(&p)).unwrap(), p);
    }

    #[test]
    fn bad_principal_items_are_corrupt_and_say_why() {
        let cases: Vec<(&str, AttributeValue, &str)> = vec![
            ("status", s("paused"), "unknown status \"paused\""),
            (
                "status",
                AttributeValue::Bool(true),
                "status is not of type S",
            ),
            ("created_at", s("yesterday"), "created_at is not of type N"),
            (
                "created_at",
                AttributeValue::N("1.5".into()),
                "not an integer",
            ),
            (
                "roles",
                AttributeValue::L(vec![n(1)]),
                "roles is not of type L of S",
            ),
        ];
        for (attr, value, want) in cases {
            let mut it = good_principal();
            it.insert(attr.into(), value);
            let err = read_principal(&it).unwrap_err().to_string();
            assert!(err.contains("alice") && err.contains(want), "{attr}: {err}");
        }
        let mut it = good_principal();
        it.remove("status");
        let err = read_principal(&it).unwrap_err().to_string();
        assert!(err.contains("status is missing"), "{err}");
    }

    #[test]
    fn principal_type_and_created_at_may_be_missing_and_extra_attributes_are_ignored() {
        let mut it = good_principal();
        it.remove("principal_type");
        it.remove("created_at");
        it.insert("team".into(), s("ml-infra"));
        it.insert("last_login".into(), AttributeValue::Bool(true));
        let p = read_principal(&it).unwrap();
        assert_eq!((p.principal_type, p.created_at), (None, None));
        assert_eq!(p.status, PrincipalStatus::Suspended);
        let back = principal_item(&read_principal(&it).unwrap());
        assert!(!back.contains_key("principal_type") && !back.contains_key("created_at"));
    }

    #[test]
    fn a_revoked_item_is_a_revocation_whatever_else_it_lacks() {
        // What the runbook's unconditional `update-item` creates on an unknown serial.
        let only = item(&[
            ("serial_number", s("0b")),
            ("revoked", AttributeValue::Bool(true)),
            ("revoked_at", n(9)),
            ("revocation_reason", s("key_compromise")),
        ]);
        let c = read_certificate(&only).unwrap();
        assert!(c.revoked && c.registration.is_none());
        assert_eq!(c.revocation_reason.as_deref(), Some("key_compromise"));
        assert_eq!(c.revoked_at, Some(9));
        // Partial or malformed registration, malformed details: still a revocation.
        let mut partial = only.clone();
        partial.insert("principal_id".into(), s("alice"));
        partial.insert("expires_at".into(), s("soon"));
        partial.insert("revoked_at".into(), s("yesterday"));
        let c = read_certificate(&partial).unwrap();
        assert!(c.revoked && c.registration.is_none() && c.revoked_at.is_none());
        // Not revoked: everything is required.
        let mut not_revoked = only.clone();
        not_revoked.insert("revoked".into(), AttributeValue::Bool(false));
        let err = read_certificate(&not_revoked).unwrap_err().to_string();
        assert!(
            err.contains("0b") && err.contains("principal_id is missing"),
            "{err}"
        );
        // Missing `revoked`: corrupt, never read as not revoked.
        let mut no_flag = only;
        no_flag.remove("revoked");
        let err = read_certificate(&no_flag).unwrap_err().to_string();
        assert!(err.contains("revoked is missing"), "{err}");
    }

    #[test]
    fn certificate_items_need_a_boolean_revoked() {
        let mut it = item(&[
            ("serial_number", s("0a")),
            ("principal_id", s("alice")),
            ("issuer", s("CN=CA")),
            ("fingerprint_sha256", s("ab")),
            ("not_before", n(1)),
            ("expires_at", n(2)),
            ("revoked", AttributeValue::Bool(false)),
        ]);
        assert!(!read_certificate(&it).unwrap().revoked);
        it.insert("revoked".into(), s("false"));
        let err = read_certificate(&it).unwrap_err().to_string();
        assert!(
            err.contains("0a") && err.contains("revoked is not of type BOOL"),
            "{err}"
        );
    }
}
