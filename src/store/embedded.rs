//! The embedded backend: one SQLite file in WAL mode that `certgate serve` and CLI
//! invocations can use at the same time. It stores and reads records and never panics on
//! what it finds in the file: a row it cannot read is `StoreError::Corrupt`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::{FromSql, ToSql, Value};
use rusqlite::{Connection, Params, Row, TransactionBehavior, ffi, params, params_from_iter};

use super::{
    CertificateRecord, EpochMillis, Principal, PrincipalStatus, Registration, Store, StoreError,
};

/// Stored in `PRAGMA user_version`; bump it (and migrate) when the schema changes.
const SCHEMA_VERSION: i64 = 1;

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
    principal_id      TEXT NOT NULL,
    issuer            TEXT NOT NULL,
    sha256            TEXT NOT NULL,
    not_before        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    revoked           INTEGER NOT NULL DEFAULT 0,
    revoked_at        INTEGER,
    revocation_reason TEXT
);
CREATE INDEX IF NOT EXISTS certificates_principal_id ON certificates (principal_id);
CREATE INDEX IF NOT EXISTS certificates_expires_at ON certificates (expires_at);
";

const SELECT_PRINCIPALS: &str = "SELECT principal_id, principal_type, status, suspended_at, \
     suspended_reason, roles, created_at FROM principals";

const SELECT_CERTIFICATES: &str = "SELECT serial_number, principal_id, issuer, sha256, \
     not_before, expires_at, revoked, revoked_at, revocation_reason FROM certificates";

/// The SQLite-backed [`Store`]. One connection per handle, used from blocking threads;
/// other processes may open the same file concurrently.
pub struct EmbeddedStore {
    conn: Arc<Mutex<Connection>>,
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
        Ok(EmbeddedStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Run `f` on the connection in a blocking thread.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().map_err(|_| {
                StoreError::Unavailable("SQLite connection poisoned by an earlier panic".into())
            })?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("SQLite task failed: {e}").into()))?
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
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
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
    Ok(CertificateRecord {
        registration: Some(Registration {
            principal_id: column(row, 1, &key)?,
            issuer: column(row, 2, &key)?,
            sha256: column(row, 3, &key)?,
            not_before: column(row, 4, &key)?,
            expires_at: column(row, 5, &key)?,
        }),
        revoked: column(row, 6, &key)?,
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

/// In one transaction: run `update` with `args`, then read the `kind` record `key` back;
/// `NotFound` when the update changed no row.
fn update_and_read<T>(
    conn: &mut Connection,
    update: &str,
    args: &[&dyn ToSql],
    kind: &'static str,
    key: &str,
    read: fn(&Connection, &str) -> Result<Option<T>, StoreError>,
) -> Result<T, StoreError> {
    let not_found = || StoreError::NotFound {
        kind,
        key: key.to_owned(),
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    if tx.execute(update, args).map_err(db)? == 0 {
        return Err(not_found());
    }
    let record = read(&tx, key)?.ok_or_else(not_found)?;
    tx.commit().map_err(db)?;
    Ok(record)
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get_principal(&self, principal_id: &str) -> Result<Option<Principal>, StoreError> {
        let id = principal_id.to_owned();
        self.run(move |conn| principal_by_id(conn, &id)).await
    }

    async fn get_certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        let serial = serial.to_owned();
        self.run(move |conn| certificate_by_serial(conn, &serial))
            .await
    }

    async fn create_principal(&self, principal: &Principal) -> Result<(), StoreError> {
        let p = principal.clone();
        let (Some(principal_type), Some(created_at)) = (&p.principal_type, p.created_at) else {
            return Err(StoreError::Unavailable(
                format!(
                    "principal '{}': the embedded store keeps only principals with a type and \
                     a creation time",
                    p.principal_id
                )
                .into(),
            ));
        };
        let (principal_type, created_at) = (principal_type.clone(), created_at);
        self.run(move |conn| {
            let roles = p.roles.as_ref().map(|roles| {
                serde_json::to_string(roles).expect("a list of strings always serializes")
            });
            conn.execute(
                "INSERT INTO principals (principal_id, principal_type, status, suspended_at, \
                 suspended_reason, roles, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    p.principal_id,
                    principal_type,
                    p.status.as_str(),
                    p.suspended_at,
                    p.suspended_reason,
                    roles,
                    created_at
                ],
            )
            .map_err(|e| insert_error(e, "principal", &p.principal_id))?;
            Ok(())
        })
        .await
    }

    async fn list_principals(&self) -> Result<Vec<Principal>, StoreError> {
        self.run(|conn| {
            let sql = format!("{SELECT_PRINCIPALS} ORDER BY principal_id");
            query(conn, &sql, [], read_principal)
        })
        .await
    }

    async fn suspend_principal(
        &self,
        principal_id: &str,
        reason: &str,
        at: EpochMillis,
    ) -> Result<Principal, StoreError> {
        let (id, reason) = (principal_id.to_owned(), reason.to_owned());
        self.run(move |conn| {
            let sql = "UPDATE principals SET status = 'suspended', suspended_at = ?2, \
                       suspended_reason = ?3 WHERE principal_id = ?1";
            update_and_read(
                conn,
                sql,
                params![id, at, reason],
                "principal",
                &id,
                principal_by_id,
            )
        })
        .await
    }

    async fn activate_principal(&self, principal_id: &str) -> Result<Principal, StoreError> {
        let id = principal_id.to_owned();
        self.run(move |conn| {
            let sql = "UPDATE principals SET status = 'active', suspended_at = NULL, \
                       suspended_reason = NULL WHERE principal_id = ?1";
            update_and_read(conn, sql, params![id], "principal", &id, principal_by_id)
        })
        .await
    }

    async fn register_certificate(&self, cert: &CertificateRecord) -> Result<(), StoreError> {
        let c = cert.clone();
        let Some(r) = c.registration.clone() else {
            return Err(StoreError::Unavailable(
                format!(
                    "certificate '{}': the embedded store keeps only registered certificates, \
                     not revocation-only records",
                    c.serial_number
                )
                .into(),
            ));
        };
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO certificates (serial_number, principal_id, issuer, sha256, \
                 not_before, expires_at, revoked, revoked_at, revocation_reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    c.serial_number,
                    r.principal_id,
                    r.issuer,
                    r.sha256,
                    r.not_before,
                    r.expires_at,
                    c.revoked,
                    c.revoked_at,
                    c.revocation_reason
                ],
            )
            .map_err(|e| insert_error(e, "certificate", &c.serial_number))?;
            Ok(())
        })
        .await
    }

    async fn list_certificates(
        &self,
        principal_id: Option<&str>,
        expiring_before: Option<EpochMillis>,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        // Only the filters given go into the SQL, so SQLite can use the matching index.
        let mut sql = format!("{SELECT_CERTIFICATES} WHERE 1 = 1");
        let mut args = Vec::new();
        if let Some(id) = principal_id {
            sql.push_str(" AND principal_id = ?");
            args.push(Value::from(id.to_owned()));
        }
        if let Some(before) = expiring_before {
            sql.push_str(" AND expires_at <= ?");
            args.push(Value::from(before));
        }
        sql.push_str(" ORDER BY expires_at, serial_number");
        self.run(move |conn| query(conn, &sql, params_from_iter(args), read_certificate))
            .await
    }

    async fn revoke_certificate(
        &self,
        serial: &str,
        reason: &str,
        at: EpochMillis,
    ) -> Result<CertificateRecord, StoreError> {
        let (serial, reason) = (serial.to_owned(), reason.to_owned());
        self.run(move |conn| {
            let sql = "UPDATE certificates SET revoked = 1, revoked_at = ?2, \
                       revocation_reason = ?3 WHERE serial_number = ?1";
            let args = params![serial, at, reason];
            update_and_read(
                conn,
                sql,
                args,
                "certificate",
                &serial,
                certificate_by_serial,
            )
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(db))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(id: &str) -> Principal {
        Principal {
            principal_id: id.to_owned(),
            principal_type: Some("user".to_owned()),
            status: PrincipalStatus::Active,
            suspended_at: None,
            suspended_reason: None,
            roles: Some(vec!["reader".to_owned(), "writer".to_owned()]),
            created_at: Some(1_700_000_000_000),
        }
    }

    fn cert(serial: &str, principal_id: &str, expires_at: EpochMillis) -> CertificateRecord {
        CertificateRecord {
            serial_number: serial.to_owned(),
            registration: Some(Registration {
                principal_id: principal_id.to_owned(),
                issuer: "CN=Test CA,O=Example".to_owned(),
                sha256: "ab".repeat(32),
                not_before: 1_700_000_000_000,
                expires_at,
            }),
            revoked: false,
            revoked_at: None,
            revocation_reason: None,
        }
    }

    /// A store on a fresh file; keep the directory alive as long as the store.
    fn open() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("certgate.db")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn create_get_list_principals() {
        let (_dir, store) = open();
        let mut bob = principal("bob@example.com");
        bob.roles = None;
        store
            .create_principal(&principal("alice@example.com"))
            .await
            .unwrap();
        store.create_principal(&bob).await.unwrap();

        let alice = store.get_principal("alice@example.com").await.unwrap();
        assert_eq!(alice, Some(principal("alice@example.com")));
        assert_eq!(
            store.get_principal("bob@example.com").await.unwrap(),
            Some(bob)
        );
        assert_eq!(store.get_principal("nobody").await.unwrap(), None);
        let ids: Vec<_> = store.list_principals().await.unwrap();
        let ids: Vec<_> = ids.iter().map(|p| p.principal_id.as_str()).collect();
        assert_eq!(ids, ["alice@example.com", "bob@example.com"]);
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn duplicates_are_already_exists() {
        let (_dir, store) = open();
        store.create_principal(&principal("alice")).await.unwrap();
        let err = store
            .create_principal(&principal("alice"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::AlreadyExists { kind: "principal", key } if key == "alice"),
            "{err:?}"
        );
        store
            .register_certificate(&cert("0a", "alice", 5))
            .await
            .unwrap();
        let err = store
            .register_certificate(&cert("0a", "alice", 5))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::AlreadyExists {
                    kind: "certificate",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn suspend_and_activate() {
        let (_dir, store) = open();
        store.create_principal(&principal("alice")).await.unwrap();

        let suspended = store
            .suspend_principal("alice", "left the company", 42)
            .await
            .unwrap();
        assert_eq!(suspended.status, PrincipalStatus::Suspended);
        assert_eq!(suspended.suspended_at, Some(42));
        assert_eq!(
            suspended.suspended_reason.as_deref(),
            Some("left the company")
        );
        assert_eq!(store.get_principal("alice").await.unwrap(), Some(suspended));

        let active = store.activate_principal("alice").await.unwrap();
        assert_eq!(active, principal("alice"));
        assert_eq!(store.get_principal("alice").await.unwrap(), Some(active));
    }

    #[tokio::test]
    async fn updates_of_unknown_keys_are_not_found() {
        let (_dir, store) = open();
        let err = store
            .suspend_principal("ghost", "why", 1)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound { kind: "principal", key } if key == "ghost"),
            "{err:?}"
        );
        let err = store.activate_principal("ghost").await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NotFound {
                    kind: "principal",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = store
            .revoke_certificate("ff", "superseded", 1)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NotFound {
                    kind: "certificate",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            store.list_principals().await.unwrap().is_empty(),
            "no silent create"
        );
    }

    #[tokio::test]
    async fn incomplete_records_are_refused_not_filled_in() {
        let (_dir, store) = open();
        let only = CertificateRecord {
            registration: None,
            revoked: true,
            ..cert("0c", "alice", 5)
        };
        let err = store.register_certificate(&only).await.unwrap_err();
        assert!(err.to_string().contains("revocation-only"), "{err}");
        assert_eq!(store.get_certificate("0c").await.unwrap(), None);
        let untyped = Principal {
            principal_type: None,
            ..principal("bob")
        };
        let err = store.create_principal(&untyped).await.unwrap_err();
        assert!(err.to_string().contains("with a type"), "{err}");
        assert_eq!(store.get_principal("bob").await.unwrap(), None);
    }

    #[tokio::test]
    async fn register_revoke_and_list_certificates() {
        let (_dir, store) = open();
        for c in [
            cert("03", "alice", 300),
            cert("01", "alice", 100),
            cert("02", "bob", 100),
        ] {
            store.register_certificate(&c).await.unwrap();
        }
        assert_eq!(
            store.get_certificate("01").await.unwrap(),
            Some(cert("01", "alice", 100))
        );
        assert_eq!(store.get_certificate("99").await.unwrap(), None);

        let revoked = store
            .revoke_certificate("01", "key_compromise", 77)
            .await
            .unwrap();
        assert!(revoked.revoked);
        assert_eq!(revoked.revoked_at, Some(77));
        assert_eq!(revoked.revocation_reason.as_deref(), Some("key_compromise"));
        assert_eq!(store.get_certificate("01").await.unwrap(), Some(revoked));

        let serials = |certs: Vec<CertificateRecord>| -> Vec<String> {
            certs.into_iter().map(|c| c.serial_number).collect()
        };
        let all = store.list_certificates(None, None).await.unwrap();
        assert_eq!(serials(all), ["01", "02", "03"]);
        let alices = store.list_certificates(Some("alice"), None).await.unwrap();
        assert_eq!(serials(alices), ["01", "03"]);
        let expiring = store.list_certificates(None, Some(100)).await.unwrap();
        assert_eq!(serials(expiring), ["01", "02"]);
        let both = store
            .list_certificates(Some("bob"), Some(99))
            .await
            .unwrap();
        assert!(both.is_empty());
    }

    #[tokio::test]
    async fn unreadable_rows_are_corrupt() {
        let (dir, store) = open();
        let raw = Connection::open(dir.path().join("certgate.db")).unwrap();
        raw.execute_batch(
            "INSERT INTO principals (principal_id, principal_type, status, created_at)
                 VALUES ('frozen', 'user', 'frozen', 1);
             INSERT INTO principals (principal_id, principal_type, status, roles, created_at)
                 VALUES ('badroles', 'user', 'active', '{\"not\": \"a list\"}', 1);
             INSERT INTO certificates (serial_number, principal_id, issuer, sha256,
                 not_before, expires_at) VALUES ('0b', 'x', 'CN=CA', 'ab', 'soon', 2);",
        )
        .unwrap();

        for (key, result) in [
            ("frozen", store.get_principal("frozen").await.map(drop)),
            ("badroles", store.get_principal("badroles").await.map(drop)),
            ("0b", store.get_certificate("0b").await.map(drop)),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt { key: k, .. } if k == key),
                "{err:?}"
            );
        }
        let err = store.list_principals().await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn two_handles_on_one_file_see_each_others_writes() {
        let (dir, server) = open();
        let cli = EmbeddedStore::open(&dir.path().join("certgate.db")).unwrap();
        server.create_principal(&principal("alice")).await.unwrap();
        cli.suspend_principal("alice", "incident 42", 5)
            .await
            .unwrap();
        let seen = server.get_principal("alice").await.unwrap().unwrap();
        assert_eq!(seen.suspended_reason.as_deref(), Some("incident 42"));
        cli.register_certificate(&cert("0c", "alice", 9))
            .await
            .unwrap();
        assert!(server.get_certificate("0c").await.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_do_not_fail_with_locked() {
        let (dir, first) = open();
        first.create_principal(&principal("alice")).await.unwrap();
        let path = dir.path().join("certgate.db");
        let mut tasks = tokio::task::JoinSet::new();
        for handle in 0..4 {
            let store = Arc::new(EmbeddedStore::open(&path).unwrap());
            for i in 0..10 {
                let store = Arc::clone(&store);
                tasks.spawn(async move {
                    let at = handle * 100 + i;
                    store.suspend_principal("alice", "busy", at).await?;
                    store.activate_principal("alice").await.map(drop)
                });
            }
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap().unwrap();
        }
        assert_eq!(
            first.get_principal("alice").await.unwrap(),
            Some(principal("alice"))
        );
    }

    #[test]
    fn open_is_idempotent_and_reports_the_path() {
        let (dir, _store) = open();
        EmbeddedStore::open(&dir.path().join("certgate.db")).unwrap();
        let missing = dir.path().join("no/such/dir/certgate.db");
        let Err(StoreError::Unavailable(msg)) = EmbeddedStore::open(&missing) else {
            panic!("opening under a missing directory must fail");
        };
        assert!(msg.detail.contains("no/such/dir"), "{msg}");
    }

    #[tokio::test]
    async fn a_new_store_and_its_wal_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, store) = open();
        // A write, so the -wal and -shm files exist.
        store.create_principal(&principal("alice")).await.unwrap();
        for name in ["certgate.db", "certgate.db-wal", "certgate.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }
}
