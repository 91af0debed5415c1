//! `cargo xtask bench {grpc,envoy,dynamodb,all} [--quick]`: certgate's load benchmarks on
//! loopback, each writing its own section of BENCHMARKS.md.
//!
//!   grpc      direct gRPC `Check` load (examples/loadgen.rs, and h2load when installed)
//!             against `certgate serve`, then the criterion benches of the decision
//!   envoy     through Envoy 1.40: none / RBAC / trivial ext_authz (with and without identity
//!             headers) / certgate over TCP and over a unix socket
//!   dynamodb  embedded store vs DynamoDB (moto), cached and cold
//!
//! `cargo xtask soak [--duration 10m] [--backend embedded|dynamodb] [--rate N]`: the soak
//! under churn (soak.rs, examples/soak/), judged answer by answer; exits non-zero on a wrong
//! answer or growth.
//!
//! `--quick` (what scripts/test.sh runs): debug build, 2s of load per configuration, one
//! round, no criterion, reports under target/. It fails only when a benchmark cannot run or
//! allows nothing; requests denied or failed are reported at the top of the section and on
//! stderr, because one 503 from a debug build on a busy CI machine is noise, not a broken
//! setup. A full run fails on any of them. Nothing is asserted about speed.
//!
//! Knobs are environment variables, as documented in BENCHMARKS.md: DURATION, CONNECTIONS,
//! CONCURRENCY, OUT, PROFILE (release|debug), PIN, H2LOAD_STREAMS, SKIP_CRITERION (grpc);
//! ROUNDS, CONFIGS, ENVOY_CONCURRENCY, ENVOY_BIN (envoy); COLD_CONNECTIONS,
//! COLD_CONCURRENCY, COLD_TIMEOUT, COLD_ATTEMPT_TIMEOUT, MOTO_BIN (dynamodb).

mod dynamodb;
mod envoy;
mod grpc;
mod measure;
mod report;
mod soak;

use anyhow::{Result, bail};

/// What every benchmark shares: where to build, which profile, and the report file.
pub struct Run {
    /// `--quick`.
    pub quick: bool,
    /// `release` or `debug`.
    pub profile: String,
    /// `$DURATION` of load per configuration (`10s`, `500ms`, `1m`).
    pub duration: String,
}

impl Run {
    fn new(quick: bool, full_duration: &str) -> Run {
        let default_profile = if quick { "debug" } else { "release" };
        let default_duration = if quick { "2s" } else { full_duration };
        Run {
            quick,
            profile: env_or("PROFILE", default_profile),
            duration: env_or("DURATION", default_duration),
        }
    }

    /// `$OUT`, else BENCHMARKS.md, else for `--quick` target/BENCHMARKS.`quick_name`.quick.md.
    fn out(&self, quick_name: &str) -> std::path::PathBuf {
        let default = if self.quick {
            format!("target/BENCHMARKS.{quick_name}quick.md")
        } else {
            "BENCHMARKS.md".to_owned()
        };
        testkit::repo().join(env_or("OUT", &default))
    }

    /// The built binaries: target/PROFILE.
    fn bin(&self, name: &str) -> std::path::PathBuf {
        testkit::repo()
            .join("target")
            .join(&self.profile)
            .join(name)
    }

    /// ` (--quick)` after "Written by", or nothing.
    fn quick_note(&self) -> &'static str {
        if self.quick { " (`--quick`)" } else { "" }
    }
}

/// `$name`, or `default` when unset or empty.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn main() {
    if let Err(e) = run(std::env::args().skip(1).collect()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Vec<String>) -> Result<()> {
    if args.first().is_some_and(|a| a == "soak") {
        let rest: Vec<&str> = args[1..].iter().map(String::as_str).collect();
        return soak::soak(&rest);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--quick")
        .collect();
    match words.as_slice() {
        ["bench", "grpc"] => grpc::bench(&Run::new(quick, "10s")),
        ["bench", "envoy"] => envoy::bench(&Run::new(quick, "5s")),
        ["bench", "dynamodb"] => dynamodb::bench(&Run::new(quick, "10s")),
        ["bench", "all"] => {
            grpc::bench(&Run::new(quick, "10s"))?;
            envoy::bench(&Run::new(quick, "5s"))?;
            dynamodb::bench(&Run::new(quick, "10s"))
        }
        _ => bail!(
            "usage: cargo xtask bench {{grpc|envoy|dynamodb|all}} [--quick] | cargo xtask soak …"
        ),
    }
}
