//! `certgate principal …`: enrol, show, list, suspend and re-activate principals, one at a
//! time or in bulk (an incident's "suspend everyone but the emergency admin", and the
//! gradual re-activation after it).

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use crate::clock;
use crate::store::{Actor, Admin, Principal, PrincipalStatus, StoreError};

use super::output::{Output, print, print_list, table};
use super::remote::{Open, RemoteArgs, store};
use super::{Failure, PrincipalCommand};

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

/// A change to principals.
enum Change {
    /// Suspend, with this reason.
    Suspend(String),
    /// Re-activate.
    Activate,
}

/// Which principals a bulk change applies to.
enum Selection {
    /// Active principals but these.
    ActiveExcept(Vec<String>),
    /// Principals suspended with this reason.
    SuspendedBy(String),
}

pub(super) async fn run(
    cmd: PrincipalCommand,
    config: &Option<PathBuf>,
    remote: &RemoteArgs,
) -> Result<ExitCode, Failure> {
    let (principal, output): (Principal, Output) = match cmd {
        PrincipalCommand::Create {
            id,
            principal_type,
            roles,
            output,
        } => {
            let store = store(config, remote, Open::OrCreate).await?;
            let principal = Principal {
                principal_id: id,
                principal_type: Some(principal_type),
                status: PrincipalStatus::Active,
                suspended_at: None,
                suspended_reason: None,
                roles,
                created_at: Some(clock::unix_millis()),
            };
            store.create_principal(&principal, &Actor::cli()).await?;
            (principal, output.output)
        }
        PrincipalCommand::Get { id, output } => {
            let store = store(config, remote, Open::Existing).await?;
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
            let store = store(config, remote, Open::Existing).await?;
            let all = store.list_principals().await?;
            print_list(output.output, &all, HEADER, json, row);
            return Ok(ExitCode::SUCCESS);
        }
        PrincipalCommand::Suspend {
            id,
            all: _,
            except,
            reason,
            dry_run,
            output,
        } => {
            if reason.trim().is_empty() {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "--reason must not be empty"
                )));
            }
            let store = store(config, remote, Open::Existing).await?;
            let change = Change::Suspend(reason);
            let Some(id) = id else {
                let selection = Selection::ActiveExcept(except);
                return bulk_change(store.as_ref(), selection, change, dry_run, output.output)
                    .await;
            };
            one_change(store.as_ref(), &id, change, dry_run, output.output).await?
        }
        PrincipalCommand::Activate {
            id,
            all_suspended_by_reason,
            dry_run,
            output,
        } => {
            let store = store(config, remote, Open::Existing).await?;
            match (id, all_suspended_by_reason) {
                (_, Some(reason)) => {
                    let selection = Selection::SuspendedBy(reason);
                    return bulk_change(
                        store.as_ref(),
                        selection,
                        Change::Activate,
                        dry_run,
                        output.output,
                    )
                    .await;
                }
                (Some(id), None) => {
                    one_change(
                        store.as_ref(),
                        &id,
                        Change::Activate,
                        dry_run,
                        output.output,
                    )
                    .await?
                }
                (None, None) => {
                    return Err(Failure::Usage(anyhow::anyhow!(
                        "name a principal or pass --all-suspended-by-reason"
                    )));
                }
            }
        }
    };
    print(output, &json(&principal), || {
        table(HEADER, [row(&principal)])
    });
    Ok(ExitCode::SUCCESS)
}

/// Change one principal; with `dry_run`, print it as it would be instead.
async fn one_change(
    store: &dyn Admin,
    id: &str,
    change: Change,
    dry_run: bool,
    output: Output,
) -> Result<(Principal, Output), Failure> {
    if dry_run {
        let found = store.get_principal(id).await?.ok_or(StoreError::NotFound {
            kind: "principal",
            key: id.to_owned(),
        })?;
        eprintln!("dry run: nothing was changed");
        return Ok((planned(&change, &found), output));
    }
    Ok((
        apply(store, id, &change, clock::unix_millis()).await?,
        output,
    ))
}

async fn apply(
    store: &dyn Admin,
    id: &str,
    change: &Change,
    at: i64,
) -> Result<Principal, StoreError> {
    let actor = &Actor::cli();
    match change {
        Change::Suspend(reason) => store.suspend_principal(id, reason, at, actor).await,
        Change::Activate => store.activate_principal(id, actor).await,
    }
}

/// `p` as `change` would leave it.
fn planned(change: &Change, p: &Principal) -> Principal {
    match change {
        Change::Suspend(reason) => Principal {
            status: PrincipalStatus::Suspended,
            suspended_reason: Some(reason.clone()),
            ..p.clone()
        },
        Change::Activate => Principal {
            status: PrincipalStatus::Active,
            suspended_at: None,
            suspended_reason: None,
            ..p.clone()
        },
    }
}

/// Apply `change` to every principal `selection` names (or, with `dry_run`, print each as
/// it would be). Prints the changed records; stops at the first failure, after printing
/// what was already changed.
async fn bulk_change(
    store: &dyn Admin,
    selection: Selection,
    change: Change,
    dry_run: bool,
    output: Output,
) -> Result<ExitCode, Failure> {
    let all = store.list_principals().await?;
    if let Selection::ActiveExcept(except) = &selection
        && let Some(unknown) = except
            .iter()
            .find(|id| !all.iter().any(|p| &p.principal_id == *id))
    {
        // A typo here would suspend the one account meant to stay usable.
        return Err(Failure::Usage(anyhow::anyhow!(
            "--except {unknown}: no such principal; nothing changed"
        )));
    }
    let selected: Vec<Principal> = all
        .into_iter()
        .filter(|p| match &selection {
            Selection::ActiveExcept(except) => {
                p.status == PrincipalStatus::Active && !except.contains(&p.principal_id)
            }
            Selection::SuspendedBy(reason) => {
                p.status == PrincipalStatus::Suspended
                    && p.suspended_reason.as_deref() == Some(reason.as_str())
            }
        })
        .collect();
    if dry_run {
        let plan: Vec<Principal> = selected.iter().map(|p| planned(&change, p)).collect();
        eprintln!(
            "dry run: {} principal(s) would change; nothing was changed",
            plan.len()
        );
        print_list(output, &plan, HEADER, json, row);
        return Ok(ExitCode::SUCCESS);
    }
    let at = clock::unix_millis();
    let mut changed = Vec::with_capacity(selected.len());
    let mut failed = None;
    for p in &selected {
        match apply(store, &p.principal_id, &change, at).await {
            Ok(record) => changed.push(record),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    print_list(output, &changed, HEADER, json, row);
    match failed {
        Some(e) => Err(Failure::Failed(anyhow::anyhow!(
            "{e}; {} of {} changed (listed above)",
            changed.len(),
            selected.len()
        ))),
        None => Ok(ExitCode::SUCCESS),
    }
}
