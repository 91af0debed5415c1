//! The filter's `filter_config` (a JSON string) and the per-route policy.

use std::path::PathBuf;
use std::time::Duration;

use certgate::embed::Engine;
use serde::Deserialize;

/// `filter_config` of `DynamicModuleFilter`, as a `google.protobuf.StringValue` holding JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// certgate's configuration file (the same file `certgate serve` reads).
    config: PathBuf,
    /// How long a request waits for the store before `503 store_unavailable`.
    #[serde(default = "default_lookup_timeout_ms")]
    lookup_timeout_ms: u64,
    /// Pass Envoy's `x-forwarded-client-cert` on to the upstream (removed by default).
    #[serde(default)]
    forward_xfcc: bool,
    /// Tests only: `"panic"` makes the request-headers hook panic, to show that a fault in
    /// the module denies the request and Envoy keeps serving.
    #[serde(default)]
    test_fault: Option<Fault>,
}

fn default_lookup_timeout_ms() -> u64 {
    500
}

/// A deliberate failure, for tests.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Panic in the request-headers hook.
    Panic,
}

/// One filter configuration: a running checker and how to apply its answers.
pub struct FilterConfig {
    pub engine: Engine,
    pub lookup_timeout: Duration,
    pub forward_xfcc: bool,
    pub fault: Option<Fault>,
}

impl FilterConfig {
    /// Parse `filter_config` and start the checker it names.
    pub fn load(raw: &[u8]) -> Result<FilterConfig, Error> {
        init_logging();
        let raw: Raw = serde_json::from_slice(raw)
            .map_err(|e| Error(format!("filter_config is not the expected JSON: {e}")))?;
        if raw.lookup_timeout_ms == 0 {
            return Err(Error(
                "filter_config.lookup_timeout_ms must be above 0".into(),
            ));
        }
        let engine = Engine::start(&raw.config)
            .map_err(|e| Error(format!("certgate config {}: {e:#}", raw.config.display())))?;
        Ok(FilterConfig {
            engine,
            lookup_timeout: Duration::from_millis(raw.lookup_timeout_ms),
            forward_xfcc: raw.forward_xfcc,
            fault: raw.test_fault,
        })
    }
}

/// certgate's logs go to Envoy's stderr, as JSON lines (level from `CERTGATE_LOG`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CERTGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Already set by an earlier filter configuration: keep it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .json()
        .flatten_event(true)
        .fmt_fields(certgate::observe::span_fields::JsonSpanFields)
        .try_init();
}

/// The policy a route names (per-route `filter_config`: a `StringValue` with the policy name),
/// the module's `context_extensions.policy`.
pub struct RoutePolicy(pub String);

impl RoutePolicy {
    /// `None` when the value is empty or not a policy-like name.
    pub fn parse(raw: &[u8]) -> Option<RoutePolicy> {
        let name = std::str::from_utf8(raw).ok()?.trim();
        (!name.is_empty()).then(|| RoutePolicy(name.to_owned()))
    }
}

/// Why the filter configuration cannot be used.
#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
