//! `certgate probe URL`: one HTTP(S) GET that exits 0 or 1. The image has no shell or curl,
//! so the chart's `helm test` Pod runs this against the Service: `/readyz` on the admin port
//! and, in service mode, one forward-auth check without a client certificate.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow};

use super::Failure;

/// How long a probe may take unless `--timeout` says otherwise.
const DEFAULT_TIMEOUT: &str = "5s";

/// Bytes of a failing answer's body quoted in the message.
const QUOTED_BODY: usize = 300;

#[derive(clap::Args)]
pub(super) struct ProbeArgs {
    /// URL to GET, e.g. http://certgate:9901/readyz.
    url: String,
    /// The status the answer must have (default: any 2xx).
    #[arg(long)]
    expect_status: Option<u16>,
    /// The `error` field certgate's JSON deny must carry, e.g. `no_client_certificate` for a
    /// forward-auth check without a certificate.
    #[arg(long)]
    expect_error: Option<String>,
    /// A request header, `NAME: VALUE` (repeatable), e.g. the X-Original-Method/URI pair a
    /// forward-auth check needs.
    #[arg(long = "header", short = 'H', value_parser = header)]
    headers: Vec<(String, String)>,
    /// CA certificates (PEM) to verify an https URL with, in addition to the built-in roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Give up after this long (connect and answer).
    #[arg(long, default_value = DEFAULT_TIMEOUT, value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub(super) async fn run(args: ProbeArgs) -> Result<ExitCode, Failure> {
    let url =
        reqwest::Url::parse(&args.url).map_err(|e| Failure::Usage(anyhow!("{}: {e}", args.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Failure::Usage(anyhow!("{url}: only http and https")));
    }
    let mut client = reqwest::Client::builder()
        .timeout(args.timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &args.ca {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(Failure::Usage)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{}: not PEM certificates", path.display()))
            .map_err(Failure::Usage)?;
        for cert in certs {
            client = client.add_root_certificate(cert);
        }
    }
    let client = client
        .build()
        .map_err(|e| Failure::Failed(anyhow!("HTTP client: {e}")))?;
    let mut request = client.get(url.clone());
    for (name, value) in &args.headers {
        request = request.header(name, value);
    }
    let reply = request
        .send()
        .await
        .map_err(|e| Failure::Failed(anyhow!("GET {url}: {}", chain(&e))))?;
    let status = reply.status().as_u16();
    let body = reply.text().await.unwrap_or_default();
    judge(
        &url,
        status,
        &body,
        args.expect_status,
        args.expect_error.as_deref(),
    )
    .map_err(Failure::Failed)?;
    println!("ok: GET {url} answered {status}");
    Ok(ExitCode::SUCCESS)
}

/// `NAME: VALUE` of `--header`.
fn header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not NAME: VALUE"))?;
    let name = name.trim();
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|e| format!("{name:?}: {e}"))?;
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// Whether an answer is the expected one; the error says what came instead.
fn judge(
    url: &reqwest::Url,
    status: u16,
    body: &str,
    expect_status: Option<u16>,
    expect_error: Option<&str>,
) -> anyhow::Result<()> {
    let quoted: String = body.chars().take(QUOTED_BODY).collect();
    let status_ok = match expect_status {
        Some(want) => status == want,
        None => (200..300).contains(&status),
    };
    if !status_ok {
        let want = expect_status.map_or_else(|| "2xx".to_owned(), |s| s.to_string());
        return Err(anyhow!(
            "GET {url} answered {status}, expected {want}: {quoted}"
        ));
    }
    if let Some(want) = expect_error {
        let got = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned));
        if got.as_deref() != Some(want) {
            return Err(anyhow!(
                "GET {url} answered {status} without error {want:?}: {quoted}"
            ));
        }
    }
    Ok(())
}

/// The error and its causes on one line (reqwest's top-level message omits the cause, e.g.
/// "connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> reqwest::Url {
        reqwest::Url::parse("http://certgate:9901/readyz").expect("url")
    }

    #[test]
    fn any_2xx_passes_by_default_and_other_statuses_fail_with_the_body() {
        assert!(judge(&url(), 200, "ok", None, None).is_ok());
        assert!(judge(&url(), 204, "", None, None).is_ok());
        let err = judge(&url(), 503, "{\"causes\":[\"crl\"]}", None, None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("answered 503, expected 2xx"), "{text}");
        assert!(text.contains("causes"), "{text}");
        assert!(judge(&url(), 302, "", None, None).is_err(), "no redirects");
    }

    #[test]
    fn an_expected_deny_needs_its_status_and_its_error() {
        let deny = r#"{"error":"no_client_certificate","message":"m","request_id":"r"}"#;
        let want = Some("no_client_certificate");
        assert!(judge(&url(), 401, deny, Some(401), want).is_ok());
        assert!(judge(&url(), 200, deny, Some(401), want).is_err());
        let other = r#"{"error":"store_unavailable"}"#;
        assert!(judge(&url(), 401, other, Some(401), want).is_err());
        assert!(judge(&url(), 401, "not json", Some(401), want).is_err());
    }
}
