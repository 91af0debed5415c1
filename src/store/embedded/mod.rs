//! The embedded backend: one SQLite file in WAL mode that `certgate serve` and CLI
//! invocations can use at the same time. It stores and reads records and never panics on
//! what it finds in the file: a row it cannot read is `StoreError::Corrupt`.

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::{FromSql, ToSql, Value};
use rusqlite::{Connection, Params, Row, TransactionBehavior, ffi, params, params_from_iter};

use super::{
    Actor, Admin, AuditQuery, AuditRecord, CertificateRecord, EpochMillis, Lookup, Principal,
    PrincipalStatus, Registration, StoreError,
};
use crate::cert::{RevocationReason, Serial};

mod admin;
mod audit;
mod inventory;
#[cfg(test)]
mod tests;

/// Stored in `PRAGMA user_version`; bump it (and migrate) when the schema changes.
const SCHEMA_VERSION: i64 = 3;

/// How long a statement waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS principals (
    principal_id     TEXT PRIMARY KEY,
    principal_type   TEXT NOT NULL,
    status           TEXT NOT NULL,
    suspended_at     INTEGER,
    suspended_reason TEXT,
    roles            TEXT, -- JSON array of strings; NULL: the roles of the type
    created_at       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS certificates (
    serial_number     TEXT PRIMARY KEY,
    -- NULL in a revocation-only record (revoked = 1, no registration; issuer kept).
    principal_id      TEXT,
    issuer            TEXT,
    sha256            TEXT,
    not_before        INTEGER,
    expires_at        INTEGER,
    revoked           INTEGER NOT NULL DEFAULT 0,
    revoked_at        INTEGER,
    revocation_reason TEXT
);
CREATE INDEX IF NOT EXISTS certificates_principal_id ON certificates (principal_id);
CREATE INDEX IF NOT EXISTS certificates_expires_at ON certificates (expires_at);
";

/// Version 1 → 2: the registration columns become nullable (revocation-only records). SQLite
/// cannot drop a NOT NULL constraint in place, so the table is rebuilt; rows are unchanged.
const V1_TO_V2: &str = "
ALTER TABLE certificates RENAME TO certificates_v1;
DROP INDEX IF EXISTS certificates_principal_id;
DROP INDEX IF EXISTS certificates_expires_at;
";

const V1_TO_V2_COPY: &str = "
INSERT INTO certificates SELECT serial_number, principal_id, issuer, sha256, not_before,
    expires_at, revoked, revoked_at, revocation_reason FROM certificates_v1;
DROP TABLE certificates_v1;
";

const SELECT_PRINCIPALS: &str = "SELECT principal_id, principal_type, status, suspended_at, \
     suspended_reason, roles, created_at FROM principals";

const SELECT_CERTIFICATES: &str = "SELECT serial_number, principal_id, issuer, sha256, \
     not_before, expires_at, revoked, revoked_at, revocation_reason FROM certificates";

/// The SQLite-backed store ([`Lookup`] and [`Admin`]). One connection per handle, used from
/// one thread of its own; other processes may open the same file concurrently.
pub struct EmbeddedStore {
    conn: Arc<Mutex<Connection>>,
    /// Work for the connection's thread. One thread, not Tokio's blocking pool: the connection
    /// serves one call at a time anyway, and the pool started a thread for most calls of a
    /// burst of misses (35 for 200,000 sequential lookups), each with its own allocator heap
    /// and SQLite's allocations spread over them (see "Memory at scale" in BENCHMARKS.md).
    jobs: mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

/// Run each job in turn until every sender is gone. A job that panics is dropped with its
/// reply channel, so its caller gets an error; the thread goes on with the next.
fn serve(jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

impl EmbeddedStore {
    /// Open `path`, creating the file and schema if missing. Blocks (up to the busy
    /// timeout) while another process holds the write lock; call it at start-up.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        owner_only(path)?;
        let fail =
            |e: rusqlite::Error| StoreError::Unavailable(format!("{}: {e}", path.display()).into());
        let mut conn = Connection::open(path).map_err(fail)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(fail)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "SQLite store is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail)?;
        let found = migrate(&mut conn).map_err(fail)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Unavailable(
                format!(
                    "{}: schema version {found} is newer than this certgate supports \
                 ({SCHEMA_VERSION})",
                    path.display()
                )
                .into(),
            ));
        }
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("certgate-sqlite".into())
            .spawn(move || serve(queue))
            .map_err(|e| {
                StoreError::Unavailable(format!("starting the SQLite thread: {e}").into())
            })?;
        Ok(EmbeddedStore {
            conn: Arc::new(Mutex::new(conn)),
            jobs,
        })
    }

    /// Run `f` on the connection, on the connection's thread.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = conn
                .lock()
                .map_err(|_| {
                    StoreError::Unavailable("SQLite connection poisoned by an earlier panic".into())
                })
                .and_then(|mut conn| f(&mut conn));
            let _ = reply.send(result);
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the SQLite thread is gone".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("SQLite task failed (it panicked)".into()))?
    }
}

/// Create `path` readable and writable by its owner only, unless it exists. SQLite would
/// create it 0644 (less the umask), and gives the -wal and -shm files it creates later the
/// mode of the database file, so this covers all three. An existing file keeps its mode, with
/// a warning when others can read it: changing it could lock out a CLI user or group the
/// operator set it up for.
fn owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let failed =
        |e: std::io::Error| StoreError::Unavailable(format!("{}: {e}", path.display()).into());
    match created {
        // `mode` is filtered by the umask, which can only remove bits; set it outright so the
        // result does not depend on the umask at all.
        Ok(file) => file
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(failed),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)
                .map_err(failed)?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "the store file can be read by other users; chmod 600 it unless that is intended"
                );
            }
            Ok(())
        }
        Err(e) => Err(failed(e)),
    }
}

/// Create the schema unless it is there; returns the version found before.
fn migrate(conn: &mut Connection) -> rusqlite::Result<i64> {
    // Immediate: two processes opening a new file at once must not both create it.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found < SCHEMA_VERSION {
        if found == 1 {
            tx.execute_batch(V1_TO_V2)?;
        }
        tx.execute_batch(SCHEMA)?;
        // Version 2 → 3: the audit trail starts empty.
        tx.execute_batch(audit::SCHEMA)?;
        if found == 1 {
            tx.execute_batch(V1_TO_V2_COPY)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    // Not versioned: a file from before the inventory gains the table, and an older
    // certgate still opens a file that has it.
    tx.execute_batch(inventory::SCHEMA)?;
    tx.commit()?;
    Ok(found)
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string().into())
}

/// A primary-key conflict is `AlreadyExists`; anything else is the database failing.
fn insert_error(e: rusqlite::Error, kind: &'static str, key: &str) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::AlreadyExists {
                kind,
                key: key.to_owned(),
            }
        }
        e => db(e),
    }
}

fn corrupt(key: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        detail: detail.into(),
    }
}

/// Every row `sql` returns, each read by `read`.
fn query<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    read: fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        out.push(read(row)?);
    }
    Ok(out)
}

/// Column `idx` of the record `key`; a value of the wrong type is corruption (the tables
/// are not STRICT, so a hand-edited row can hold anything).
fn column<T: FromSql>(row: &Row<'_>, idx: usize, key: &str) -> Result<T, StoreError> {
    row.get(idx).map_err(|e| corrupt(key, e.to_string()))
}

fn read_principal(row: &Row<'_>) -> Result<Principal, StoreError> {
    let key: String = column(row, 0, "<unreadable principal_id>")?;
    let status = match column::<String>(row, 2, &key)?.as_str() {
        "active" => PrincipalStatus::Active,
        "suspended" => PrincipalStatus::Suspended,
        other => return Err(corrupt(&key, format!("unknown status {other:?}"))),
    };
    let roles = column::<Option<String>>(row, 5, &key)?
        .map(|json| serde_json::from_str(&json))
        .transpose()
        .map_err(|e| corrupt(&key, format!("roles is not a JSON list of strings: {e}")))?;
    Ok(Principal {
        principal_type: Some(column(row, 1, &key)?),
        status,
        suspended_at: column(row, 3, &key)?,
        suspended_reason: column(row, 4, &key)?,
        roles,
        created_at: Some(column(row, 6, &key)?),
        principal_id: key,
    })
}

fn read_certificate(row: &Row<'_>) -> Result<CertificateRecord, StoreError> {
    let key: String = column(row, 0, "<unreadable serial_number>")?;
    let revoked = column(row, 6, &key)?;
    // A row without an owner is a revocation-only record; one that is not revoked is
    // corrupt, never read as a registration.
    let registration = match column::<Option<String>>(row, 1, &key)? {
        Some(principal_id) => Some(Registration {
            principal_id,
            issuer: column(row, 2, &key)?,
            sha256: column(row, 3, &key)?,
            not_before: column(row, 4, &key)?,
            expires_at: column(row, 5, &key)?,
        }),
        None if revoked => None,
        None => {
            return Err(corrupt(
                &key,
                "principal_id is NULL and the row is not revoked",
            ));
        }
    };
    Ok(CertificateRecord {
        registration,
        revoked,
        revoked_at: column(row, 7, &key)?,
        revocation_reason: column(row, 8, &key)?,
        serial_number: key,
    })
}

fn principal_by_id(conn: &Connection, id: &str) -> Result<Option<Principal>, StoreError> {
    let sql = format!("{SELECT_PRINCIPALS} WHERE principal_id = ?1");
    Ok(query(conn, &sql, [id], read_principal)?.pop())
}

fn certificate_by_serial(
    conn: &Connection,
    serial: &str,
) -> Result<Option<CertificateRecord>, StoreError> {
    let sql = format!("{SELECT_CERTIFICATES} WHERE serial_number = ?1");
    Ok(query(conn, &sql, [serial], read_certificate)?.pop())
}

#[async_trait]
impl Lookup for EmbeddedStore {
    async fn get_principal(&self, principal_id: &str) -> Result<Option<Principal>, StoreError> {
        let id = principal_id.to_owned();
        self.run(move |conn| principal_by_id(conn, &id)).await
    }

    async fn get_certificate(
        &self,
        serial: &Serial,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let serial = serial.to_string();
        self.run(move |conn| certificate_by_serial(conn, &serial))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(db))
            .await
    }
}
