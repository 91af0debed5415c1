//! `certgate cert …`: register, show, list and revoke certificates in the store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::clock;
use crate::clock::rfc3339;
use crate::registration::{self, RegisterError};
use crate::store::{Actor, CertificateRecord, StoreError};

use super::output::{print, print_list, table};
use super::remote::{Open, RemoteArgs, store};
use super::store::open_or_create;
use super::{CertCommand, Failure, config_path};

const HEADER: &[&str] = &["SERIAL", "PRINCIPAL", "EXPIRES", "STATUS"];

/// A certificate as JSON: its fields, `revocation_only` (true for a record that only says
/// the serial is revoked, with no registration) and the expiry as RFC 3339 when known.
fn json(c: &CertificateRecord) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("revocation_only".into(), json!(c.registration.is_none()));
        if let Some(at) = c.expires_at() {
            map.insert("expires_at_rfc3339".into(), json!(rfc3339(at / 1000)));
        }
    }
    v
}

fn row(c: &CertificateRecord) -> [String; 4] {
    let status = if c.revoked {
        format!(
            "revoked ({}){}",
            c.revocation_reason.as_deref().unwrap_or("unspecified"),
            if c.registration.is_none() {
                ", revocation-only record"
            } else {
                ""
            }
        )
    } else if c.expires_at().is_some_and(|at| at < clock::unix_millis()) {
        "expired".to_owned()
    } else {
        "valid".to_owned()
    };
    [
        c.serial_number.clone(),
        c.principal_id().unwrap_or("-").to_owned(),
        c.expires_at()
            .map_or_else(|| "-".to_owned(), |at| rfc3339(at / 1000)),
        status,
    ]
}

pub(super) async fn run(
    cmd: CertCommand,
    config: &Option<PathBuf>,
    remote: &RemoteArgs,
) -> Result<ExitCode, Failure> {
    let (record, output) = match cmd {
        CertCommand::Register {
            cert: path,
            principal,
            force,
            output,
        } => (
            register(config, remote, &path, principal, force).await?,
            output.output,
        ),
        CertCommand::Get { serial, output } => {
            let store = store(config, remote, Open::Existing).await?;
            let found =
                store
                    .get_certificate(&serial)
                    .await?
                    .ok_or_else(|| StoreError::NotFound {
                        kind: "certificate",
                        key: serial.to_string(),
                    })?;
            (found, output.output)
        }
        CertCommand::List {
            principal,
            expiring_within,
            output,
        } => {
            let store = store(config, remote, Open::Existing).await?;
            let now = clock::unix_millis();
            let before = expiring_within.map(|d| now.saturating_add(d.as_millis() as i64));
            let mut all = store
                .list_certificates(principal.as_deref(), before)
                .await?;
            if let Some(before) = before {
                all.retain(|c| c.expires_at().is_some_and(|at| at >= now));
                let seen = super::inventory::unregistered(
                    store.as_ref(),
                    &all,
                    principal.as_deref(),
                    now,
                    before,
                )
                .await?;
                super::inventory::print_expiring(output.output, HEADER, &all, &seen, json, row);
                return Ok(ExitCode::SUCCESS);
            }
            print_list(output.output, &all, HEADER, json, row);
            return Ok(ExitCode::SUCCESS);
        }
        CertCommand::Revoke {
            serial,
            reason,
            issuer,
            output,
        } => {
            let store = store(config, remote, Open::Existing).await?;
            // Serials are unique per CA only: an issuer that is not the registered one means
            // the operator has another certificate in mind.
            let registered = store.get_certificate(&serial).await?;
            if let (Some(given), Some(r)) = (&issuer, registered.and_then(|c| c.registration))
                && *given != r.issuer
            {
                return Err(Failure::Failed(anyhow::anyhow!(
                    "certificate {serial} is registered with issuer '{}', not '{given}'",
                    r.issuer
                )));
            }
            let revoked = store
                .revoke_certificate(
                    &serial,
                    issuer.as_deref(),
                    reason,
                    clock::unix_millis(),
                    &Actor::cli(),
                )
                .await
                .map_err(|e| match e {
                    StoreError::NotFound { .. } => Failure::Failed(anyhow::anyhow!(
                        "{e}; to revoke a certificate that was never registered, pass --issuer \
                         with its issuer DN"
                    )),
                    e => e.into(),
                })?;
            (revoked, output.output)
        }
    };
    print(output, &json(&record), || table(HEADER, [row(&record)]));
    Ok(ExitCode::SUCCESS)
}

/// Registers the certificate at `path` for `principal` (default: the certificate's own),
/// refusing an untrusted certificate or an unknown principal unless `force`; with --server,
/// the server parses and checks it.
async fn register(
    config: &Option<PathBuf>,
    remote: &RemoteArgs,
    path: &Path,
    principal: Option<String>,
    force: bool,
) -> Result<CertificateRecord, Failure> {
    let raw = std::fs::read(path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(Failure::Usage)?;
    let failed =
        |e: &dyn std::fmt::Display| Failure::Failed(anyhow::anyhow!("{}: {e}", path.display()));
    if let Some(remote) = remote.connect().await? {
        return Ok(remote.register(raw, principal, force).await?);
    }
    let (config, store) = open_or_create(config_path(config)?).await?;
    registration::register(
        &config,
        store.as_ref(),
        &raw,
        principal,
        force,
        &Actor::cli(),
        clock::unix_now(),
    )
    .await
    .map_err(|e| match e {
        RegisterError::NoPrincipal => Failure::Usage(e.into()),
        RegisterError::Store(e) => e.into(),
        e => failed(&e),
    })
}
