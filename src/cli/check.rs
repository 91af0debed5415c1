//! `certgate check`: a dry-run decision for one certificate, exactly as the server decides;
//! with --server, the server's own decision (`DecisionService/Check`), printed the same way.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::admin_api::convert::check_response;
use crate::admin_api::pb::{self, CheckResponse};
use crate::cert::CertEncoding;
use crate::check::{CheckInput, Checker};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::{app, clock, crl};

use super::output::{Output, fields, print};
use super::remote::RemoteArgs;
use super::store::require_store_file;
use super::{Failure, config_path};

/// What the command was asked to decide.
pub(super) struct Request<'a> {
    pub(super) cert: &'a Path,
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) policy: Option<&'a str>,
    pub(super) host: Option<&'a str>,
}

pub(super) async fn run(
    config: &Option<PathBuf>,
    remote: &RemoteArgs,
    request: Request<'_>,
    output: Output,
) -> Result<ExitCode, Failure> {
    let raw = std::fs::read(request.cert)
        .with_context(|| format!("reading {}", request.cert.display()))
        .map_err(Failure::Usage)?;
    let response = match remote.connect().await? {
        Some(remote) => {
            let asked = pb::CheckRequest {
                certificate: raw,
                method: request.method.to_owned(),
                path: request.path.to_owned(),
                policy: request.policy.map(str::to_owned),
                host: request.host.map(str::to_owned),
            };
            remote.check(asked).await?
        }
        None => local(config_path(config)?, &raw, &request).await?,
    };
    render(&response, output);
    Ok(if response.decision == "allow" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn local(
    config_path: &Path,
    raw: &[u8],
    request: &Request<'_>,
) -> Result<CheckResponse, Failure> {
    let config = Config::load(config_path)?;
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
                certificate: Some(raw),
                encoding: CertEncoding::Auto,
                policy: request.policy,
                method: request.method,
                path: request.path,
                malformed: None,
            },
            clock::unix_now(),
        )
        .await;
    Ok(check_response(&outcome))
}

fn render(r: &CheckResponse, output: Output) {
    let allowed = r.decision == "allow";
    let headers: serde_json::Map<String, Value> = r
        .headers
        .iter()
        .map(|h| (h.name.clone(), Value::String(h.value.clone())))
        .collect();
    let value = json!({
        "decision": r.decision,
        "status": r.status,
        "reason": r.reason,
        "message": r.message,
        "policy": r.policy,
        "route": r.route,
        "principal": r.principal,
        "principal_type": r.principal_type,
        "roles": allowed.then_some(&r.roles),
        "headers": headers,
        "certificate": r.certificate.as_ref().map(|c| json!({
            "subject": c.subject,
            "issuer": c.issuer,
            "serial": c.serial,
            "sha256": c.sha256,
            "not_before": c.not_before,
            "not_after": c.not_after,
        })),
    });
    print(output, &value, || {
        let mut lines = vec![
            ("decision", r.decision.clone()),
            ("status", r.status.to_string()),
            ("policy", r.policy.clone()),
            ("route", r.route.clone().unwrap_or_else(|| "-".to_owned())),
            (
                "principal",
                r.principal.clone().unwrap_or_else(|| "-".to_owned()),
            ),
        ];
        lines.extend(r.reason.clone().map(|reason| ("reason", reason)));
        lines.push(("message", r.message.clone()));
        lines.extend(
            headers
                .iter()
                .map(|(k, v)| ("header", format!("{k}: {}", v.as_str().unwrap_or_default()))),
        );
        fields(lines)
    });
}
