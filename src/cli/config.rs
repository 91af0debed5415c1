//! `certgate config validate`: every problem of a configuration at once, and warnings about
//! trust anchors that expire soon.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::clock;
use crate::clock::rfc3339;
use crate::config::Config;

use super::Failure;
use super::output::{Output, print};

/// CAs of the trust bundle expire in this many seconds or fewer: `config validate` warns.
const ANCHOR_EXPIRY_WARNING_SECS: i64 = 30 * 86_400;

pub(super) fn validate(config_path: &Path, output: Output) -> Result<ExitCode, Failure> {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(err) => {
            let problems: Vec<Value> = err
                .problems
                .iter()
                .map(|p| json!({"key": p.key, "message": p.message}))
                .collect();
            let value = json!({"valid": false, "file": config_path, "problems": problems});
            match output {
                Output::Json => print(output, &value, String::new),
                Output::Table => eprintln!("{err}"),
            }
            return Ok(ExitCode::from(2));
        }
    };
    let mut policies: Vec<_> = config.policies.keys().cloned().collect();
    policies.sort();
    let mut warnings = expiring_anchors(&config, clock::unix_now());
    warnings.extend(config.listen.nothing_to_serve().map(str::to_owned));
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let value = json!({
        "valid": true,
        "file": config_path,
        "policies": policies,
        "default_policy": config.default_policy,
        "trust_bundle_cas": config.trust.len(),
        "crl_issuers": config.crl.issuers.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
        "warnings": warnings,
    });
    print(output, &value, || {
        format!(
            "{}: valid ({} policies, {} CA certificates in the trust bundle)\n",
            config_path.display(),
            policies.len(),
            config.trust.len()
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// A warning per CA of the bundle that expires within 30 days of `now` (an expired one is
/// already refused by the configuration).
fn expiring_anchors(config: &Config, now: i64) -> Vec<String> {
    config
        .trust
        .cas()
        .iter()
        .filter(|ca| ca.not_after.saturating_sub(now) <= ANCHOR_EXPIRY_WARNING_SECS)
        .map(|ca| {
            format!(
                "trust.ca_bundle: CA #{} '{}' expires at {} (in {}); once expired it validates \
                 nothing and certgate refuses the bundle, so replace it before then",
                ca.position,
                ca.subject,
                rfc3339(ca.not_after),
                clock::human(ca.not_after.saturating_sub(now))
            )
        })
        .collect()
}
