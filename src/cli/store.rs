//! `certgate store …` (create tables, check them, migrate records) and opening the
//! configured store for the other commands.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;

use crate::app;
use crate::config::{Config, StoreBackend};
use crate::store::dynamodb::{Finding, TableCheck};
use crate::store::{self, Actor, Admin, DynamoStore, EmbeddedStore, Purpose, StoreError};

use super::output::{print, table};
use super::{Failure, StoreCommand};

/// Load the configuration and open its existing store. Commands that only read or change
/// records refuse a store file that does not exist: a typo in `store.path` must not look
/// like "every principal vanished".
pub(super) async fn open_existing(config_path: &Path) -> Result<(Config, Arc<dyn Admin>), Failure> {
    let config = Config::load(config_path)?;
    require_store_file(&config)?;
    let store = store::open(&config.store.backend, Purpose::Admin).await?;
    Ok((config, store))
}

pub(super) async fn open_or_create(
    config_path: &Path,
) -> Result<(Config, Arc<dyn Admin>), Failure> {
    let config = Config::load(config_path)?;
    let store = store::open(&config.store.backend, Purpose::Admin).await?;
    Ok((config, store))
}

pub(super) fn require_store_file(config: &Config) -> Result<(), Failure> {
    let StoreBackend::Embedded { path } = &config.store.backend else {
        return Ok(());
    };
    if path.exists() {
        return Ok(());
    }
    Err(Failure::Usage(anyhow::anyhow!(
        "store file {} does not exist (check store.path in {}); `certgate serve`, \
         `certgate bootstrap` or `principal create` create it",
        path.display(),
        config.source.display()
    )))
}

pub(super) async fn run(cmd: StoreCommand, config_path: &Path) -> Result<ExitCode, Failure> {
    match cmd {
        StoreCommand::Init { adopt, output } => {
            let report = init(config_path, adopt).await?;
            print(output.output, &json!({ "result": report }), || {
                report.iter().map(|line| format!("{line}\n")).collect()
            });
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Check { output } => {
            let config = Config::load(config_path)?;
            let StoreBackend::DynamoDb(settings) = &config.store.backend else {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "store check reads DynamoDB tables; the embedded store's schema is \
                     enforced by SQLite"
                )));
            };
            let tables = DynamoStore::connect(settings.clone(), Purpose::Admin)
                .await?
                .check_tables()
                .await?;
            let refused: u64 = tables.iter().map(|t| t.refused).sum();
            print(
                output.output,
                &json!({ "refused": refused, "tables": tables }),
                || check_text(&tables),
            );
            Ok(if refused == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        StoreCommand::Migrate { to, output } => {
            let (target, counts) = migrate(config_path, &to).await?;
            let value = json!({
                "target": target,
                "principals": { "copied": counts[0][0], "already_present": counts[0][1] },
                "certificates": { "copied": counts[1][0], "already_present": counts[1][1] },
            });
            print(output.output, &value, || {
                format!(
                    "principals: {} copied, {} already present\n\
                     certificates: {} copied, {} already present\n",
                    counts[0][0], counts[0][1], counts[1][0], counts[1][1]
                )
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Creates what the backend needs; one line of report per step.
async fn init(config_path: &Path, adopt: bool) -> Result<Vec<String>, Failure> {
    let config = Config::load(config_path)?;
    Ok(match &config.store.backend {
        StoreBackend::Embedded { path } => {
            EmbeddedStore::open(path)?;
            vec![format!("embedded store {} ready", path.display())]
        }
        StoreBackend::DynamoDb(settings) => {
            let store = DynamoStore::connect(settings.clone(), Purpose::Admin).await?;
            let mut report = store.init_tables().await?;
            if adopt {
                report.extend(store.adopt_tables().await?);
            }
            report
        }
    })
}

/// Copies every record into the store of the configuration at `to`: the target's
/// description and, for principals then certificates, [copied, already present].
async fn migrate(from: &Path, to: &Path) -> Result<(String, [[u64; 2]; 2]), Failure> {
    let (_, from) = open_existing(from).await?;
    let (target_config, target) = open_or_create(to).await?;
    let mut counts = [[0u64; 2]; 2];
    let actor = Actor::migrate();
    for p in from.list_principals().await? {
        count(&mut counts[0], target.create_principal(&p, &actor).await)?;
    }
    for c in from.list_certificates(None, None).await? {
        count(
            &mut counts[1],
            target.register_certificate(&c, &actor).await,
        )?;
    }
    Ok((app::describe_backend(&target_config.store.backend), counts))
}

fn count(counts: &mut [u64; 2], copied: Result<(), StoreError>) -> Result<(), Failure> {
    match copied {
        Ok(()) => counts[0] += 1,
        Err(StoreError::AlreadyExists { .. }) => counts[1] += 1,
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

fn check_text(tables: &[TableCheck]) -> String {
    let mut text = String::new();
    for t in tables {
        text.push_str(&format!(
            "{} ({}): {} items, {} refused, {} read with defaults\n",
            t.kind, t.table, t.items, t.refused, t.defaults
        ));
        let problems = t.problems.iter().map(|p| {
            let finding = match p.finding {
                Finding::Refused => "refused",
                Finding::Defaults => "defaults",
            };
            [
                finding.to_owned(),
                p.count.to_string(),
                p.problem.clone(),
                format!("e.g. {}", p.examples.join(", ")),
            ]
        });
        for line in table(&[], problems).lines() {
            text.push_str(&format!("  {line}\n"));
        }
    }
    text
}
