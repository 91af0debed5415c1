//! The audit trail in the file: table `audit`, one row per record, appended in the
//! transaction of the change it describes.

use rusqlite::Transaction;

use super::*;
use crate::store::audit::{ChainHead, Change};

/// Added in schema version 3. `actor`, `before` and `after` are JSON; the columns are the
/// record's fields, so `audit verify` recomputes the hash from exactly what is stored.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    sequence  INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    reason    TEXT,
    before    TEXT,
    after     TEXT,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
";

const SELECT_AUDIT: &str = "SELECT sequence, at, actor, action, target, reason, before, after, \
     prev_hash, hash FROM audit";

/// Begin an immediate transaction (the write lock first: the chain head read below cannot
/// change before the commit), let `write` make its change and describe it, append the
/// record and commit. An error anywhere rolls everything back.
pub(super) fn audited<T>(
    conn: &mut Connection,
    actor: &Actor,
    write: impl FnOnce(&Transaction<'_>) -> Result<(T, Change), StoreError>,
) -> Result<T, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    let (out, change) = write(&tx)?;
    let head = query(
        &tx,
        "SELECT sequence, hash FROM audit ORDER BY sequence DESC LIMIT 1",
        [],
        |row| {
            Ok(ChainHead {
                sequence: column::<i64>(row, 0, "audit")? as u64,
                hash: column(row, 1, "audit")?,
            })
        },
    )?
    .pop();
    let record = AuditRecord::append(head.as_ref(), crate::clock::unix_millis(), actor, change);
    let text = |v: &Option<serde_json::Value>| v.as_ref().map(serde_json::Value::to_string);
    tx.execute(
        "INSERT INTO audit (sequence, at, actor, action, target, reason, before, after, \
         prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            record.sequence as i64,
            record.at,
            serde_json::to_string(&record.actor).expect("an actor always serializes"),
            record.action,
            record.target,
            record.reason,
            text(&record.before),
            text(&record.after),
            record.prev_hash,
            record.hash
        ],
    )
    .map_err(db)?;
    tx.commit().map_err(db)?;
    Ok(out)
}

/// In an audited transaction: run `update` with `args` on the `kind` record `key` and
/// describe it with `change` (of the record before and after). `NotFound` when the update
/// changed no row.
pub(super) fn update_audited<T>(
    tx: &Transaction<'_>,
    (update, args): (&str, &[&dyn ToSql]),
    (kind, key): (&'static str, &str),
    read: fn(&Connection, &str) -> Result<Option<T>, StoreError>,
    change: impl FnOnce(Option<&T>, &T) -> Change,
) -> Result<(T, Change), StoreError> {
    let not_found = || StoreError::NotFound {
        kind,
        key: key.to_owned(),
    };
    let before = read(tx, key)?;
    if tx.execute(update, args).map_err(db)? == 0 {
        return Err(not_found());
    }
    let after = read(tx, key)?.ok_or_else(not_found)?;
    let change = change(before.as_ref(), &after);
    Ok((after, change))
}

fn read_record(row: &Row<'_>) -> Result<AuditRecord, StoreError> {
    let sequence: i64 = column(row, 0, "audit")?;
    let key = format!("audit:{sequence}");
    let json = |idx: usize, name: &str| -> Result<Option<serde_json::Value>, StoreError> {
        column::<Option<String>>(row, idx, &key)?
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| corrupt(&key, format!("{name} is not JSON: {e}")))
    };
    let actor = column::<String>(row, 2, &key)?;
    Ok(AuditRecord {
        sequence: sequence as u64,
        at: column(row, 1, &key)?,
        actor: serde_json::from_str(&actor)
            .map_err(|e| corrupt(&key, format!("actor is not an actor: {e}")))?,
        action: column(row, 3, &key)?,
        target: column(row, 4, &key)?,
        reason: column(row, 5, &key)?,
        before: json(6, "before")?,
        after: json(7, "after")?,
        prev_hash: column(row, 8, &key)?,
        hash: column(row, 9, &key)?,
    })
}

/// Every record `filter` selects, in sequence order.
pub(super) fn records(
    conn: &Connection,
    filter: &AuditQuery,
) -> Result<Vec<AuditRecord>, StoreError> {
    let sql = format!("{SELECT_AUDIT} ORDER BY sequence");
    let mut all = query(conn, &sql, [], read_record)?;
    all.retain(|r| filter.matches(r));
    Ok(all)
}
