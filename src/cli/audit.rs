//! `certgate audit …`: read the audit trail (README "Audit trail"), check its hash chain,
//! and export it as JSON lines for a SIEM.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::clock::{self, rfc3339};
use crate::store::Admin;
use crate::store::audit::{self, Actor, AuditQuery, AuditRecord};

use super::output::{Output, fields, print, print_list};
use super::remote::RemoteArgs;
use super::store::open_existing;
use super::{AuditCommand, Failure, config_path};

const HEADER: &[&str] = &["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "REASON"];

fn json(r: &AuditRecord) -> Value {
    let mut value = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("at_rfc3339".into(), json!(rfc3339(r.at.div_euclid(1000))));
    }
    value
}

/// Who, in one cell: `cli:alice`, `migrate:root`, `api:ops@example.com (serial 1a2b)`.
fn actor(a: &Actor) -> String {
    match a {
        Actor::Api {
            principal_id,
            serial,
            ..
        } => format!("api:{principal_id} (serial {serial})"),
        Actor::Cli { user } => format!("cli:{user}"),
        Actor::Migrate { user } => format!("migrate:{user}"),
    }
}

fn row(r: &AuditRecord) -> [String; 6] {
    [
        r.sequence.to_string(),
        rfc3339(r.at.div_euclid(1000)),
        actor(&r.actor),
        r.action.clone(),
        r.target.clone(),
        r.reason.clone().unwrap_or_default(),
    ]
}

/// `--since`: an RFC 3339 time (`2026-12-01T09:00:00Z`) or a duration back from now (`24h`).
pub(super) fn since(text: &str) -> Result<i64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        let since_epoch = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| format!("{text} is before 1970"))?;
        return Ok(since_epoch.as_millis() as i64);
    }
    let back = humantime::parse_duration(text).map_err(|_| {
        format!("{text:?} is neither an RFC 3339 time (2026-12-01T09:00:00Z) nor a duration (24h)")
    })?;
    Ok(clock::unix_millis() - back.as_millis() as i64)
}

pub(super) async fn run(
    cmd: AuditCommand,
    config: &Option<PathBuf>,
    remote: &RemoteArgs,
) -> Result<ExitCode, Failure> {
    let server = remote.connect().await?;
    let store = match &server {
        Some(server) => Arc::new(server.clone()) as Arc<dyn Admin>,
        None => open_existing(config_path(config)?).await?.1,
    };
    match cmd {
        AuditCommand::List {
            since,
            principal,
            output,
        } => {
            let query = AuditQuery { since, principal };
            let records = store.audit_records(&query).await?;
            print_list(output.output, &records, HEADER, json, row);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { output } => {
            let v = match &server {
                Some(server) => server.verify_audit().await?,
                None => audit::verify(&store.audit_records(&AuditQuery::default()).await?),
            };
            let value = serde_json::to_value(&v).unwrap_or(Value::Null);
            print(output.output, &value, || {
                fields([
                    ("is_valid", v.is_valid.to_string()),
                    ("total_entries", v.total_entries.to_string()),
                    (
                        "first_invalid_sequence",
                        v.first_invalid_sequence
                            .map_or_else(|| "-".to_owned(), |s| s.to_string()),
                    ),
                ])
            });
            if !v.is_valid && output.output == Output::Table {
                eprintln!(
                    "error: the audit chain is broken at sequence {}: a record was edited, \
                     deleted or moved",
                    v.first_invalid_sequence.unwrap_or_default()
                );
            }
            Ok(if v.is_valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuditCommand::Export {
            since,
            principal,
            out,
        } => {
            let records = store
                .audit_records(&AuditQuery { since, principal })
                .await?;
            export(&records, out.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One JSON object per line (the `audit list -o json` objects), to `out` or stdout. A file
/// is written whole or not at all: a SIEM picking it up never reads half a record.
fn export(records: &[AuditRecord], out: Option<&Path>) -> Result<(), Failure> {
    let mut text = String::new();
    for r in records {
        text.push_str(&json(r).to_string());
        text.push('\n');
    }
    let Some(path) = out.filter(|p| *p != Path::new("-")) else {
        super::output::emit(&text);
        return Ok(());
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e)
            .context(format!("cannot write {}", path.display()))
            .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_a_duration_back_from_now() {
        assert_eq!(since("2026-12-01T09:00:00Z"), Ok(1_796_115_600_000));
        let day_ago = since("24h").unwrap();
        let want = clock::unix_millis() - 86_400_000;
        assert!((want - day_ago).abs() < 5_000, "{day_ago} vs {want}");
        assert!(since("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
