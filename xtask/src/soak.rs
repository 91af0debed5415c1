//! `cargo xtask soak [--duration 10m] [--backend embedded|dynamodb] [--rate N]`: builds
//! certgate, examples/upstream and examples/soak (PROFILE, debug by default) and runs the soak
//! (examples/soak/main.rs: Envoy in front of certgate under load and churn, every answer
//! judged). Its report goes to stdout and to target/soak-report.md (`$OUT`); the exit status
//! is the soak's.

use std::process::Command;

use anyhow::{Result, bail};

use crate::env_or;
use crate::measure::{cargo_build, run};

/// Options passed through to the soak, with a value each.
const OPTIONS: &[&str] = &["--duration", "--backend", "--rate", "--principals"];

/// `cargo xtask soak ARGS…`.
pub fn soak(args: &[&str]) -> Result<()> {
    let mut pass = Vec::new();
    let mut rest = args.iter();
    while let Some(option) = rest.next() {
        match (OPTIONS.contains(option), rest.next()) {
            (true, Some(value)) => pass.extend([*option, *value]),
            _ => bail!(
                "usage: cargo xtask soak [--duration 10m] [--backend embedded|dynamodb] \
                 [--rate N] [--principals N]"
            ),
        }
    }
    let profile = env_or("PROFILE", "debug");
    cargo_build(
        &profile,
        &[
            "--bin",
            "certgate",
            "--example",
            "upstream",
            "--example",
            "soak",
        ],
    )?;
    let bin = format!("target/{profile}");
    let out = testkit::repo().join(env_or("OUT", "target/soak-report.md"));
    let mut soak = Command::new(testkit::repo().join(&bin).join("examples/soak"));
    soak.args(&pass)
        .args(["--bin-dir", &bin, "--report"])
        .arg(&out);
    run(&mut soak)
}
