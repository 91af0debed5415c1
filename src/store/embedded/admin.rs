//! The admin side: creating, changing and listing records for the CLI.

use super::audit::{audited, records, update_audited};
use super::*;
use crate::store::audit::{Action, Change};

#[async_trait]
impl Admin for EmbeddedStore {
    async fn create_principal(
        &self,
        principal: &Principal,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let (p, actor) = (principal.clone(), actor.clone());
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
            audited(conn, &actor, |tx| {
                tx.execute(
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
                let stored = principal_by_id(tx, &p.principal_id)?.unwrap_or(p.clone());
                Ok((
                    (),
                    Change::principal(Action::PrincipalCreate, None, &stored, None),
                ))
            })
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
        actor: &Actor,
    ) -> Result<Principal, StoreError> {
        let (id, reason, actor) = (principal_id.to_owned(), reason.to_owned(), actor.clone());
        self.run(move |conn| {
            let sql = "UPDATE principals SET status = 'suspended', suspended_at = ?2, \
                       suspended_reason = ?3 WHERE principal_id = ?1";
            audited(conn, &actor, |tx| {
                update_audited(
                    tx,
                    (sql, params![id, at, reason]),
                    ("principal", &id),
                    principal_by_id,
                    |before, after| {
                        Change::principal(Action::PrincipalSuspend, before, after, Some(&reason))
                    },
                )
            })
        })
        .await
    }

    async fn activate_principal(
        &self,
        principal_id: &str,
        actor: &Actor,
    ) -> Result<Principal, StoreError> {
        let (id, actor) = (principal_id.to_owned(), actor.clone());
        self.run(move |conn| {
            let sql = "UPDATE principals SET status = 'active', suspended_at = NULL, \
                       suspended_reason = NULL WHERE principal_id = ?1";
            audited(conn, &actor, |tx| {
                update_audited(
                    tx,
                    (sql, params![id]),
                    ("principal", &id),
                    principal_by_id,
                    |before, after| {
                        Change::principal(Action::PrincipalActivate, before, after, None)
                    },
                )
            })
        })
        .await
    }

    async fn register_certificate(
        &self,
        cert: &CertificateRecord,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let (c, actor) = (cert.clone(), actor.clone());
        if c.registration.is_none() && !c.revoked {
            return Err(StoreError::Unavailable(
                format!(
                    "certificate '{}': neither registered nor revoked",
                    c.serial_number
                )
                .into(),
            ));
        }
        self.run(move |conn| {
            let r = c.registration.as_ref();
            audited(conn, &actor, |tx| {
                tx.execute(
                    "INSERT INTO certificates (serial_number, principal_id, issuer, sha256, \
                 not_before, expires_at, revoked, revoked_at, revocation_reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        c.serial_number,
                        r.map(|r| &r.principal_id),
                        r.map(|r| &r.issuer),
                        r.map(|r| &r.sha256),
                        r.map(|r| r.not_before),
                        r.map(|r| r.expires_at),
                        c.revoked,
                        c.revoked_at,
                        c.revocation_reason
                    ],
                )
                .map_err(|e| insert_error(e, "certificate", &c.serial_number))?;
                let stored = certificate_by_serial(tx, &c.serial_number)?.unwrap_or(c.clone());
                let change = Change::certificate(Action::CertificateRegister, None, &stored, None);
                Ok(((), change))
            })
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
        serial: &Serial,
        issuer: Option<&str>,
        reason: RevocationReason,
        at: EpochMillis,
        actor: &Actor,
    ) -> Result<CertificateRecord, StoreError> {
        let (serial, issuer) = (serial.to_string(), issuer.map(str::to_owned));
        let actor = actor.clone();
        self.run(move |conn| {
            // With an issuer an unknown serial gets a revocation-only row; a registered one
            // keeps its registration either way.
            let reason = reason.as_str();
            let (sql, args) = if issuer.is_some() {
                (
                    "INSERT INTO certificates (serial_number, revoked, revoked_at, \
                     revocation_reason, issuer) VALUES (?1, 1, ?2, ?3, ?4) \
                     ON CONFLICT (serial_number) DO UPDATE SET revoked = 1, revoked_at = ?2, \
                     revocation_reason = ?3",
                    params![serial, at, reason, issuer].to_vec(),
                )
            } else {
                (
                    "UPDATE certificates SET revoked = 1, revoked_at = ?2, \
                     revocation_reason = ?3 WHERE serial_number = ?1",
                    params![serial, at, reason].to_vec(),
                )
            };
            audited(conn, &actor, |tx| {
                update_audited(
                    tx,
                    (sql, &args),
                    ("certificate", &serial),
                    certificate_by_serial,
                    |before, after| {
                        Change::certificate(Action::CertificateRevoke, before, after, Some(reason))
                    },
                )
            })
        })
        .await
    }

    async fn audit_records(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let query = query.clone();
        self.run(move |conn| records(conn, &query)).await
    }
}
