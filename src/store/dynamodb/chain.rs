//! The audit trail in DynamoDB: a table of its own (`store.dynamodb.audit_table`), one
//! partition (`chain` = `certgate`) sorted by `sequence`, and a head item (sequence 0) that
//! names the last record. Every audited write is one `TransactWriteItems`: the change with
//! its own condition, the record (`attribute_not_exists`) and the head moved on (condition:
//! it still names the record this one links to). A replica that lost the race to another
//! re-reads the head and the record it changes and tries again, so the chain stays linear.

use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};

use super::schema::build_error;
use super::*;
use crate::store::audit::{ChainHead, Change};

/// The one partition key value: the chain is one, ordered by its sort key.
const CHAIN: &str = "certgate";
/// The head item's sequence; records start at 1.
const HEAD: i64 = 0;
/// Attempts of one audited write when other writers keep winning the head. A writer
/// retries only when another made progress, so this is reached only under a storm of
/// writers (the admin deadline bounds each attempt).
const ATTEMPTS: u32 = 50;
/// Longest pause between two attempts; the pause is random up to a cap that grows with
/// each lost race, so racing writers spread out.
const MAX_BACKOFF_MS: u64 = 200;

/// What one audited write does to its record, worked out from the record as it is now.
pub(super) struct Planned<T> {
    /// The change, with its condition.
    pub(super) write: TransactWriteItem,
    /// The record after the change (what the write returns).
    pub(super) after: T,
    /// How the audit record describes it.
    pub(super) change: Change,
}

/// Why a planned write did not happen.
enum Outcome {
    /// Another writer moved the head first: plan again.
    Lost,
    /// The change's own condition failed.
    ConditionFailed,
    Failed(StoreError),
}

impl DynamoStore {
    /// Run one audited write on the `key_attr = key` item of `table`: `plan` sees the item as
    /// it is and returns the change (or refuses), `refused` is the error when the change's
    /// condition fails at write time.
    pub(super) async fn audited<T>(
        &self,
        actor: &Actor,
        (table, key_attr, key): (&str, &str, &str),
        plan: impl Fn(Option<Item>) -> Result<Planned<T>, StoreError>,
        refused: impl Fn() -> StoreError,
    ) -> Result<T, StoreError> {
        for attempt in 1..=ATTEMPTS {
            let head = self.chain_head().await?;
            let current = self.consistent_get(table, key_attr, key).await?;
            let planned = plan(current)?;
            let record = AuditRecord::append(
                head.as_ref(),
                crate::clock::unix_millis(),
                actor,
                planned.change,
            );
            match self.commit(planned.write, &record, head.as_ref()).await {
                Ok(()) => return Ok(planned.after),
                Err(Outcome::ConditionFailed) => return Err(refused()),
                Err(Outcome::Failed(e)) => return Err(e),
                Err(Outcome::Lost) => {
                    tracing::debug!(attempt, "audit chain head moved; retrying the write");
                    let cap = (10 * u64::from(attempt)).min(MAX_BACKOFF_MS);
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(1..=cap))).await;
                }
            }
        }
        Err(StoreError::Unavailable(
            format!(
                "DynamoDB {}: could not append to the audit chain in {ATTEMPTS} attempts (other \
                 writers kept moving its head, or the head item, sequence 0, is damaged); \
                 nothing was changed",
                self.settings.audit_table
            )
            .into(),
        ))
    }

    async fn consistent_get(
        &self,
        table: &str,
        key_attr: &str,
        key: &str,
    ) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key(key_attr, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(table, e))?;
        Ok(out.item)
    }

    async fn chain_head(&self) -> Result<Option<ChainHead>, StoreError> {
        let table = &self.settings.audit_table;
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("chain", s(CHAIN))
            .key("sequence", n(HEAD))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(table, e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let f = item::Fields::new(&item, "chain");
        Ok(Some(ChainHead {
            sequence: f.num("head_sequence")? as u64,
            hash: f.str("head_hash")?,
        }))
    }

    async fn commit(
        &self,
        write: TransactWriteItem,
        record: &AuditRecord,
        head: Option<&ChainHead>,
    ) -> Result<(), Outcome> {
        let table = &self.settings.audit_table;
        let build = |e| Outcome::Failed(build_error(e));
        let put_record = Put::builder()
            .table_name(table)
            .set_item(Some(record_item(record)))
            .condition_expression("attribute_not_exists(chain)")
            .build()
            .map_err(build)?;
        let mut move_head = Update::builder()
            .table_name(table)
            .key("chain", s(CHAIN))
            .key("sequence", n(HEAD))
            .update_expression("SET head_sequence = :n, head_hash = :h")
            .expression_attribute_values(":n", n(record.sequence as i64))
            .expression_attribute_values(":h", s(&record.hash));
        move_head = match head {
            None => move_head.condition_expression("attribute_not_exists(chain)"),
            Some(head) => move_head
                .condition_expression("head_sequence = :prev")
                .expression_attribute_values(":prev", n(head.sequence as i64)),
        };
        let result = self
            .client
            .transact_write_items()
            // Idempotent: when the SDK re-sends a transaction that was applied but whose
            // answer was lost, DynamoDB answers success instead of a failed condition (which
            // would read as "already exists" or a lost race, and write the change twice).
            .client_request_token(&record.hash[..36])
            .transact_items(write)
            .transact_items(TransactWriteItem::builder().put(put_record).build())
            .transact_items(
                TransactWriteItem::builder()
                    .update(move_head.build().map_err(build)?)
                    .build(),
            )
            .send()
            .await;
        let e = match result {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let reasons: Vec<&str> = match e.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None"))
                .collect(),
            Some(TransactWriteItemsError::TransactionInProgressException(_)) => {
                return Err(Outcome::Lost);
            }
            _ => return Err(Outcome::Failed(sdk_error(table, e))),
        };
        match reasons.as_slice() {
            ["ConditionalCheckFailed", ..] => Err(Outcome::ConditionFailed),
            // The head or the record's slot was taken, or another transaction held an item.
            [_, record, head]
                if [*record, *head].contains(&"ConditionalCheckFailed")
                    || reasons.contains(&"TransactionConflict") =>
            {
                Err(Outcome::Lost)
            }
            _ => Err(Outcome::Failed(sdk_error(table, e))),
        }
    }

    /// Every record, in sequence order (admin only: reads the whole chain).
    pub(super) async fn chain_records(&self) -> Result<Vec<AuditRecord>, StoreError> {
        let table = &self.settings.audit_table;
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(table)
            .key_condition_expression("chain = :c AND #q > :h")
            .expression_attribute_names("#q", "sequence")
            .expression_attribute_values(":c", s(CHAIN))
            .expression_attribute_values(":h", n(HEAD))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(|e| sdk_error(table, e))?;
        items.iter().map(read_record).collect()
    }
}

pub(super) fn record_item(r: &AuditRecord) -> Item {
    let json = |v: &serde_json::Value| s(&v.to_string());
    let mut item = Item::new();
    item.insert("chain".into(), s(CHAIN));
    item.insert("sequence".into(), n(r.sequence as i64));
    item.insert("at".into(), n(r.at));
    item.insert(
        "actor".into(),
        s(&serde_json::to_string(&r.actor).expect("an actor always serializes")),
    );
    item.insert("action".into(), s(&r.action));
    item.insert("target".into(), s(&r.target));
    if let Some(reason) = &r.reason {
        item.insert("reason".into(), s(reason));
    }
    if let Some(before) = &r.before {
        item.insert("before".into(), json(before));
    }
    if let Some(after) = &r.after {
        item.insert("after".into(), json(after));
    }
    item.insert("prev_hash".into(), s(&r.prev_hash));
    item.insert("hash".into(), s(&r.hash));
    item
}

pub(super) fn read_record(item: &Item) -> Result<AuditRecord, StoreError> {
    let sequence = match item.get("sequence") {
        Some(AttributeValue::N(v)) => v.clone(),
        _ => "?".to_owned(),
    };
    let key = format!("audit:{sequence}");
    let f = item::Fields::new(item, "sequence");
    let text = |name: &str| match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v.as_str())),
        Some(_) => Err(corrupt(&key, format!("attribute {name} is not of type S"))),
    };
    let json = |name: &str| -> Result<Option<serde_json::Value>, StoreError> {
        text(name)?
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(&key, format!("{name} is not JSON: {e}")))
    };
    let actor = text("actor")?.ok_or_else(|| corrupt(&key, "attribute actor is missing"))?;
    Ok(AuditRecord {
        sequence: f.num("sequence")? as u64,
        at: f.num("at")?,
        actor: serde_json::from_str(actor)
            .map_err(|e| corrupt(&key, format!("actor is not an actor: {e}")))?,
        action: f.str("action")?,
        target: f.str("target")?,
        reason: text("reason")?.map(str::to_owned),
        before: json("before")?,
        after: json("after")?,
        prev_hash: f.str("prev_hash")?,
        hash: f.str("hash")?,
    })
}
