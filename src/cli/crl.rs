//! `certgate crl inspect`: what a CRL says, whether it verifies against the trust bundle and
//! is fresh, and whether it lists a serial.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::cert::Serial;
use crate::clock;
use crate::clock::{human, rfc3339};
use crate::config::Config;
use crate::crl::{self, ParsedCrl, Revoked};

use super::Failure;
use super::output::{Output, fields, print};

/// Freshness of a CRL whose issuer is not configured under `crl.issuers`.
const DEFAULT_FRESHNESS: crl::Freshness = crl::Freshness {
    max_age_secs: 86_400,
    next_update_grace_secs: 0,
};

pub(super) async fn inspect(
    source: &str,
    config_path: Option<&Path>,
    serial: Option<&Serial>,
    output: Output,
) -> Result<ExitCode, Failure> {
    let config = config_path.map(Config::load).transpose()?;
    let bytes = read(source, config.as_ref()).await?;
    let failed = |e: crl::CrlError| Failure::Failed(anyhow::anyhow!("{source}: {e}"));
    let der = crl::decode_crl(&bytes).map_err(failed)?;
    let parsed = ParsedCrl::parse(&der).map_err(failed)?;
    let listed = match serial {
        None => None,
        Some(serial) => Some((serial, parsed.find(serial).map_err(failed)?)),
    };
    let report = Report {
        source,
        size: der.len(),
        now: clock::unix_now(),
        signature: Signature::check(&parsed, config.as_ref()),
        issuer: Issuer::of(&parsed, config.as_ref()),
        parsed,
        listed,
    };
    print(output, &report.json(), || report.text());
    let listed = report.listed.is_some_and(|(_, found)| found.is_some());
    Ok(if report.signature.valid == Some(false) || listed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The CRL's bytes from an http(s) URL (with the configured limits) or a file.
async fn read(source: &str, config: Option<&Config>) -> Result<Vec<u8>, Failure> {
    let lower = source.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return std::fs::read(source)
            .with_context(|| format!("reading {source}"))
            .map_err(Failure::Usage);
    }
    let defaults = crl::CrlSettings::default();
    let settings = config.map_or(&defaults, |c| &c.crl);
    let location = crl::CrlSource {
        location: crl::CrlLocation::Url(source.to_owned()),
        refresh_interval: std::time::Duration::from_secs(3600),
    };
    let client = crl::fetch::client(settings).map_err(|e| Failure::Failed(e.into()))?;
    let fetched = crl::fetch::fetch(
        &client,
        &location,
        &Default::default(),
        settings.max_size,
        settings.timeout,
    )
    .await;
    match fetched {
        Ok(crl::fetch::Fetched::Body(bytes, _)) => Ok(bytes),
        Ok(_) => Err(Failure::Failed(anyhow::anyhow!(
            "{source}: unexpected 304 Not Modified"
        ))),
        Err(e) => Err(Failure::Failed(anyhow::anyhow!("{source}: {e}"))),
    }
}

/// The signature against the configured trust bundle; unchecked without a configuration.
struct Signature {
    /// `None`: not checked.
    valid: Option<bool>,
    json: Value,
    text: String,
}

impl Signature {
    fn check(parsed: &ParsedCrl<'_>, config: Option<&Config>) -> Signature {
        let Some(config) = config else {
            return Signature {
                valid: None,
                json: json!({"checked": false}),
                text: "not checked (pass --config to check against the trust bundle)".to_owned(),
            };
        };
        match parsed.verify_signature(config.trust.ca_certificates()) {
            Ok(i) => {
                let key = config.trust.cas().get(i).map(|ca| ca.key);
                Signature {
                    valid: Some(true),
                    json: json!({"checked": true, "valid": true, "ca_index": i + 1,
                                 "ca_key_sha256": key.map(|k| k.hex())}),
                    text: format!(
                        "valid: signed by CA #{} of the trust bundle (key {})",
                        i + 1,
                        key.map_or_else(String::new, |k| k.to_string())
                    ),
                }
            }
            Err(e) => Signature {
                valid: Some(false),
                json: json!({"checked": true, "valid": false, "error": e.to_string()}),
                text: format!("INVALID: {e}"),
            },
        }
    }
}

/// Whether the CRL's issuer is configured under `crl.issuers`, and the freshness that applies.
struct Issuer {
    with_config: bool,
    configured: bool,
    freshness: crl::Freshness,
}

impl Issuer {
    fn of(parsed: &ParsedCrl<'_>, config: Option<&Config>) -> Issuer {
        let configured = config.and_then(|c| {
            c.crl
                .issuers
                .iter()
                .find(|i| i.subject_der.as_slice() == parsed.issuer_der())
        });
        Issuer {
            with_config: config.is_some(),
            configured: configured.is_some(),
            freshness: configured.map_or(DEFAULT_FRESHNESS, |i| i.freshness),
        }
    }

    /// What the freshness line adds when the default max_age applied.
    fn default_note(&self) -> &'static str {
        match (self.with_config, self.configured) {
            (true, false) => " (issuer not configured under crl.issuers; default max_age 24h)",
            (false, _) => " (default max_age 24h)",
            (true, true) => "",
        }
    }
}

struct Report<'a> {
    source: &'a str,
    size: usize,
    now: i64,
    parsed: ParsedCrl<'a>,
    signature: Signature,
    issuer: Issuer,
    listed: Option<(&'a Serial, Option<Revoked>)>,
}

impl Report<'_> {
    fn age(&self) -> i64 {
        self.now - self.parsed.this_update
    }

    /// How the CRL is too old to use at `now`, if it is: judged as the server judges it.
    fn stale(&self) -> Option<crl::Staleness> {
        let parsed = &self.parsed;
        (self.issuer.freshness).judge(parsed.this_update, parsed.next_update, self.now)
    }

    fn json(&self) -> Value {
        let parsed = &self.parsed;
        let stale = self.stale();
        json!({
            "source": self.source,
            "issuer": parsed.issuer,
            "this_update": rfc3339(parsed.this_update),
            "next_update": rfc3339(parsed.next_update),
            "age_seconds": self.age(),
            "seconds_to_next_update": parsed.next_update - self.now,
            "entries": parsed.count_entries(),
            "sha256": parsed.sha256(),
            "size_bytes": self.size,
            "signature": self.signature.json,
            "configured_issuer": self.issuer.configured,
            "fresh": stale.is_none(),
            "stale_reason": stale.map(|s| s.to_string()),
            "serial": self.listed.map(|(s, found)| json!({
                "serial": s.to_string(),
                "listed": found.is_some(),
                "reason": found.map(|r| r.reason.as_str()),
                "revoked_at": found.map(|r| rfc3339(r.revoked_at)),
            })),
        })
    }

    fn text(&self) -> String {
        let (parsed, now) = (&self.parsed, self.now);
        let next_update = if parsed.next_update >= now {
            format!("in {}", human(parsed.next_update - now))
        } else {
            format!("{} ago", human(now - parsed.next_update))
        };
        let freshness = self
            .stale()
            .map_or_else(|| "fresh".to_owned(), |s| s.to_string());
        let mut lines = vec![
            ("issuer", parsed.issuer.clone()),
            (
                "this_update",
                format!(
                    "{} ({} ago)",
                    rfc3339(parsed.this_update),
                    human(self.age())
                ),
            ),
            (
                "next_update",
                format!("{} ({next_update})", rfc3339(parsed.next_update)),
            ),
            ("entries", parsed.count_entries().to_string()),
            ("sha256", parsed.sha256()),
            ("size", format!("{} bytes", self.size)),
            ("signature", self.signature.text.clone()),
            (
                "freshness",
                format!("{freshness}{}", self.issuer.default_note()),
            ),
        ];
        lines.extend(self.listed.map(|(serial, found)| {
            let listed = match found {
                Some(r) => format!("REVOKED ({}) at {}", r.reason, rfc3339(r.revoked_at)),
                None => "not listed".to_owned(),
            };
            ("serial", format!("{serial}: {listed}"))
        }));
        fields(lines)
    }
}
