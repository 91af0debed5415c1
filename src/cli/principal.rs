//! `certgate principal …`: enrol, show, list, suspend and re-activate principals.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use crate::clock;
use crate::store::{Principal, PrincipalStatus, StoreError};

use super::output::{Output, print, print_list, table};
use super::store::{open_existing, open_or_create};
use super::{Failure, PrincipalCommand, config_path};

const HEADER: &[&str] = &["PRINCIPAL", "TYPE", "STATUS", "ROLES", "REASON"];

fn json(p: &Principal) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

fn row(p: &Principal) -> [String; 5] {
    [
        p.principal_id.clone(),
        p.principal_type.clone().unwrap_or_else(|| "-".to_owned()),
        p.status.as_str().to_owned(),
        p.roles.as_ref().map_or("-".to_owned(), |r| r.join(",")),
        p.suspended_reason.clone().unwrap_or_default(),
    ]
}

pub(super) async fn run(
    cmd: PrincipalCommand,
    config: &Option<PathBuf>,
) -> Result<ExitCode, Failure> {
    let (principal, output): (Principal, Output) = match cmd {
        PrincipalCommand::Create {
            id,
            principal_type,
            roles,
            output,
        } => {
            let (_, store) = open_or_create(config_path(config)?).await?;
            let principal = Principal {
                principal_id: id,
                principal_type: Some(principal_type),
                status: PrincipalStatus::Active,
                suspended_at: None,
                suspended_reason: None,
                roles,
                created_at: Some(clock::unix_millis()),
            };
            store.create_principal(&principal).await?;
            (principal, output.output)
        }
        PrincipalCommand::Get { id, output } => {
            let (_, store) = open_existing(config_path(config)?).await?;
            let found = store
                .get_principal(&id)
                .await?
                .ok_or(StoreError::NotFound {
                    kind: "principal",
                    key: id,
                })?;
            (found, output.output)
        }
        PrincipalCommand::List { output } => {
            let (_, store) = open_existing(config_path(config)?).await?;
            let all = store.list_principals().await?;
            print_list(output.output, &all, HEADER, json, row);
            return Ok(ExitCode::SUCCESS);
        }
        PrincipalCommand::Suspend { id, reason, output } => {
            if reason.trim().is_empty() {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "--reason must not be empty"
                )));
            }
            let (_, store) = open_existing(config_path(config)?).await?;
            let suspended = store
                .suspend_principal(&id, &reason, clock::unix_millis())
                .await?;
            (suspended, output.output)
        }
        PrincipalCommand::Activate { id, output } => {
            let (_, store) = open_existing(config_path(config)?).await?;
            (store.activate_principal(&id).await?, output.output)
        }
    };
    print(output, &json(&principal), || {
        table(HEADER, [row(&principal)])
    });
    Ok(ExitCode::SUCCESS)
}
