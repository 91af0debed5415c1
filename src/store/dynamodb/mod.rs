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
    KeyType, Projection, ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};

use super::{
    Actor, Admin, AuditQuery, AuditRecord, CertificateRecord, EpochMillis, Lookup, Outage,
    OutageCause, Principal, PrincipalStatus, Registration, StoreError,
};
use crate::cert::{RevocationReason, Serial};

mod admin;
mod audit;
mod chain;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz;
mod inventory;
mod item;
mod schema;

pub use audit::Finding;
pub(crate) use audit::TableCheck;
use item::{read_certificate, read_principal};

/// Value of `expiry_bucket` on every certificate: the one partition of the expiry index.
/// Certificate writes are rare, so one partition is no hot spot, and
/// `cert list --expiring-within` becomes one `Query` instead of a `Scan`.
pub(crate) const EXPIRY_BUCKET: &str = "all";
/// Index of certificates by owner, sorted by expiry.
pub(crate) const BY_PRINCIPAL_INDEX: &str = "by_principal";
/// Index of all certificates sorted by expiry.
pub(crate) const BY_EXPIRY_INDEX: &str = "by_expiry";
/// The DynamoDB TTL attribute (epoch seconds) on certificates.
pub(crate) const PURGE_AT: &str = "purge_at";

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
    /// Name of the audit table (README "Audit trail").
    pub audit_table: String,
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
            audit_table: "certgate_audit".into(),
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

/// The DynamoDB-backed store ([`Lookup`] and [`Admin`]).
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
    pub(crate) async fn connect(
        settings: DynamoSettings,
        purpose: Purpose,
    ) -> Result<Self, StoreError> {
        Self::connect_with(settings, purpose, |loader| loader).await
    }

    /// `DynamoStore::connect`, with a last say over the AWS configuration (tests use it to
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
}

impl DynamoStore {
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

    /// Every item of `table` but inventory items (admin commands only: a `Scan` reads the
    /// whole table).
    async fn scan_all(&self, table: &str) -> Result<Vec<Item>, StoreError> {
        let items: Vec<Item> = self
            .client
            .scan()
            .table_name(table)
            .consistent_read(self.consistent_read)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(|e| sdk_error(table, e))?;
        Ok(items
            .into_iter()
            .filter(|item| !inventory::is_inventory(item))
            .collect())
    }
}

type Item = HashMap<String, AttributeValue>;

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

#[async_trait]
impl Lookup for DynamoStore {
    async fn get_principal(&self, principal_id: &str) -> Result<Option<Principal>, StoreError> {
        let table = &self.settings.principals_table;
        self.get_item(table, "principal_id", principal_id)
            .await?
            .map(|item| read_principal(&item))
            .transpose()
    }

    async fn get_certificate(
        &self,
        serial: &Serial,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let table = &self.settings.certificates_table;
        self.get_item(table, "serial_number", &serial.to_string())
            .await?
            .map(|item| read_certificate(&item))
            .transpose()
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
