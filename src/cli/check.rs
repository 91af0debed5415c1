//! `certgate check`: a dry-run decision for one certificate, exactly as the server decides.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::cert::CertEncoding;
use crate::check::{CheckInput, Checker};
use crate::clock::rfc3339;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::{app, clock, crl};

use super::Failure;
use super::output::{Output, fields, print};
use super::store::require_store_file;

/// What the command was asked to decide.
pub(super) struct Request<'a> {
    pub(super) cert: &'a Path,
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) policy: Option<&'a str>,
    pub(super) host: Option<&'a str>,
}

pub(super) async fn run(
    config_path: &Path,
    request: Request<'_>,
    output: Output,
) -> Result<ExitCode, Failure> {
    let config = Config::load(config_path)?;
    let raw = std::fs::read(request.cert)
        .with_context(|| format!("reading {}", request.cert.display()))
        .map_err(Failure::Usage)?;
    let metrics = Metrics::new();
    require_store_file(&config)?;
    let store = app::open_store(&config, &metrics).await?;
    let checker = Checker::new(config, store, metrics);
    // The server keeps CRLs loaded in the background; a dry run loads them once, now.
    crl::refresh::load_once(checker.revocation()).await;
    let outcome = checker
        .check(
            CheckInput {
                host: request.host,
                certificate: Some(&raw),
                encoding: CertEncoding::Auto,
                policy: request.policy,
                method: request.method,
                path: request.path,
                malformed: None,
            },
            clock::unix_now(),
        )
        .await;
    let headers: serde_json::Map<String, Value> = outcome
        .allow_headers()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
    let (decision, reason, message) = match &outcome.decision {
        Ok(_) => ("allow", None, "allowed".to_owned()),
        Err(deny) => ("deny", Some(deny.reason.as_str()), deny.message.clone()),
    };
    let grant = outcome.decision.as_ref().ok();
    // Which `policy_routes` entry chose the policy, as its key path and what it matches.
    let route = outcome.route.map(|i| {
        let described = outcome
            .config()
            .policy_routes
            .describe(i)
            .unwrap_or_default();
        format!("policy_routes[{i}] {described}")
    });
    let value = json!({
        "decision": decision,
        "status": outcome.http_status(),
        "reason": reason,
        "message": message,
        "policy": outcome.policy,
        "route": route.as_deref(),
        "principal": outcome.principal(),
        "principal_type": grant.map(|g| g.principal_type.as_str()),
        "roles": grant.map(|g| g.roles.clone()),
        "headers": headers,
        "certificate": outcome.identity().map(|id| json!({
            "subject": id.subject(),
            "issuer": id.issuer(),
            "serial": id.serial().to_string(),
            "sha256": id.sha256_hex(),
            "not_before": rfc3339(id.not_before()),
            "not_after": rfc3339(id.not_after()),
        })),
    });
    print(output, &value, || {
        let mut lines = vec![
            ("decision", decision.to_owned()),
            ("status", outcome.http_status().to_string()),
            ("policy", outcome.policy.clone()),
            ("route", route.clone().unwrap_or_else(|| "-".to_owned())),
            ("principal", outcome.principal().unwrap_or("-").to_owned()),
        ];
        lines.extend(reason.map(|r| ("reason", r.to_owned())));
        lines.push(("message", message.clone()));
        lines.extend(
            headers
                .iter()
                .map(|(k, v)| ("header", format!("{k}: {}", v.as_str().unwrap_or_default()))),
        );
        fields(lines)
    });
    Ok(if outcome.decision.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
