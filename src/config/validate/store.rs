//! `store`: the backend, its DynamoDB settings, and the cache.

use std::time::Duration;

use super::Validator;
use crate::config::StoreConfig;
use crate::config::raw::{RawDynamo, RawStore};
use crate::store::dynamodb::DynamoSettings;
use crate::store::{CacheSettings, StoreBackend};

impl Validator<'_> {
    /// `store`: the backend and the cache in front of it.
    pub(super) fn store(&mut self, raw: RawStore) -> StoreConfig {
        let backend = match raw.backend.as_str() {
            "embedded" => {
                if raw.dynamodb.is_some() {
                    self.problem(
                        "store.dynamodb",
                        "set, but store.backend is embedded (set store.backend: dynamodb)",
                    );
                }
                StoreBackend::Embedded {
                    path: self.path(&raw.path),
                }
            }
            "dynamodb" => StoreBackend::DynamoDb(self.dynamodb(raw.dynamodb.unwrap_or_default())),
            other => {
                self.problem(
                    "store.backend",
                    format!("unknown backend \"{other}\" (supported: embedded, dynamodb)"),
                );
                StoreBackend::Embedded {
                    path: self.path(&raw.path),
                }
            }
        };
        StoreConfig {
            cache: CacheSettings {
                ttl: self.duration("store.cache_ttl", &raw.cache_ttl),
                max_entries: raw.cache_max_entries,
                stale_if_error: match &raw.stale_if_error {
                    Some(text) => self.duration("store.stale_if_error", text),
                    // A shared network store has outages a local file does not: by default
                    // a replica keeps answering for principals it has seen for one minute.
                    None if matches!(backend, StoreBackend::DynamoDb(_)) => Duration::from_secs(60),
                    None => Duration::ZERO,
                },
            },
            backend,
        }
    }

    fn dynamodb(&mut self, raw: RawDynamo) -> DynamoSettings {
        let key = |k: &str| format!("store.dynamodb.{k}");
        // A derived name is valid when the principals table's is (reported there).
        let audit_table = raw.audit_table.clone().unwrap_or_else(|| {
            match raw.principals_table.strip_suffix("principals") {
                Some(stem) => format!("{stem}audit"),
                None => format!("{}_audit", raw.principals_table),
            }
        });
        let explicit_audit = raw.audit_table.as_ref().map(|t| ("audit_table", t));
        for (name, table) in [
            ("principals_table", &raw.principals_table),
            ("certificates_table", &raw.certificates_table),
        ]
        .into_iter()
        .chain(explicit_audit)
        {
            // DynamoDB's own rule for table names.
            let valid = (3..=255).contains(&table.len())
                && table
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                self.problem(
                    key(name),
                    format!(
                        "\"{table}\" is not a DynamoDB table name (3-255 of a-z A-Z 0-9 _ - .)"
                    ),
                );
            }
        }
        if raw.principals_table == raw.certificates_table {
            self.problem(
                key("certificates_table"),
                "must differ from store.dynamodb.principals_table",
            );
        }
        if [&raw.principals_table, &raw.certificates_table].contains(&&audit_table) {
            self.problem(
                key("audit_table"),
                format!(
                    "\"{audit_table}\" must differ from the principals and certificates tables"
                ),
            );
        }
        if let Some(url) = &raw.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            self.problem(
                key("endpoint_url"),
                format!("\"{url}\" is not an http:// or https:// URL"),
            );
        }
        if raw.max_attempts == 0 {
            self.problem(key("max_attempts"), "must be at least 1");
        }
        let timeout = self.duration(&key("timeout"), &raw.timeout);
        let attempt_timeout = self.duration(&key("attempt_timeout"), &raw.attempt_timeout);
        let admin_timeout = self.duration(&key("admin_timeout"), &raw.admin_timeout);
        for (name, d) in [
            ("timeout", timeout),
            ("attempt_timeout", attempt_timeout),
            ("admin_timeout", admin_timeout),
        ] {
            if d.is_zero() {
                self.problem(key(name), "must be more than 0");
            }
        }
        if attempt_timeout > timeout {
            self.problem(
                key("attempt_timeout"),
                "is longer than store.dynamodb.timeout (the deadline of all attempts)",
            );
        }
        let purge_expired_after = raw
            .purge_expired_after
            .as_deref()
            .map(|t| self.duration(&key("purge_expired_after"), t));
        DynamoSettings {
            region: raw.region.filter(|r| !r.is_empty()),
            endpoint_url: raw.endpoint_url.filter(|u| !u.is_empty()),
            principals_table: raw.principals_table,
            certificates_table: raw.certificates_table,
            audit_table,
            timeout,
            attempt_timeout,
            max_attempts: raw.max_attempts,
            admin_timeout,
            purge_expired_after,
        }
    }
}
