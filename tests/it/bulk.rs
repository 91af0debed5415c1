//! Bulk suspension and re-activation (`principal suspend --all --except …`, `principal
//! activate --all-suspended-by-reason …`, `--dry-run`) through the CLI, on the embedded store
//! and on DynamoDB (moto).

use std::path::Path;

use super::harness::{AWS_ENV, Moto};
use super::world::{World, cli_with_env};

const REASON: &str = "CA compromise 2026-12";

/// `principal list -o json` as (id, status, reason).
fn principals(config: &Path, env: &[(&str, &str)]) -> Vec<(String, String, String)> {
    let (code, out) = cli_with_env(config, &["principal", "list", "-o", "json"], env);
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    json.as_array()
        .expect("array")
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
            (s("principal_id"), s("status"), s("suspended_reason"))
        })
        .collect()
}

/// The ids a JSON list printed by the CLI names (stdout only: the dry-run note goes to
/// stderr, which `cli_with_env` appends).
fn ids(out: &str) -> Vec<String> {
    let end = out.rfind(']').expect("a JSON list") + 1;
    let json: serde_json::Value = serde_json::from_str(&out[..end]).expect("JSON");
    json.as_array()
        .expect("array")
        .iter()
        .map(|p| p["principal_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn incident(config: &Path, env: &[(&str, &str)]) {
    let cli = |args: &[&str]| cli_with_env(config, args, env);
    for (id, kind) in [
        ("breakglass@example.com", "admin"),
        ("worker-1@example.com", "worker"),
        ("worker-2@example.com", "worker"),
        ("worker-3@example.com", "worker"),
    ] {
        let (code, out) = cli(&["principal", "create", id, "--type", kind]);
        assert_eq!(code, 0, "{out}");
    }
    let (code, out) = cli(&[
        "principal",
        "suspend",
        "worker-3@example.com",
        "--reason",
        "left the company",
    ]);
    assert_eq!(code, 0, "{out}");
    let before = principals(config, env);

    let suspend_all = |extra: &[&str]| {
        let mut args = vec![
            "principal",
            "suspend",
            "--all",
            "--except",
            "breakglass@example.com",
            "--reason",
            REASON,
            "-o",
            "json",
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let (code, out) = suspend_all(&["--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(ids(&out), ["worker-1@example.com", "worker-2@example.com"]);
    assert!(
        out.contains("dry run: 2 principal(s) would change"),
        "{out}"
    );
    assert_eq!(principals(config, env), before, "a dry run changes nothing");

    // A mistyped exception would lock out the emergency admin: refused, nothing changed.
    let (code, out) = cli(&[
        "principal",
        "suspend",
        "--all",
        "--except",
        "breakglas@example.com",
        "--reason",
        REASON,
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("--except breakglas@example.com: no such principal"),
        "{out}"
    );
    assert_eq!(principals(config, env), before);

    let (code, out) = suspend_all(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(ids(&out), ["worker-1@example.com", "worker-2@example.com"]);
    let s = |id: &str, status: &str, reason: &str| (id.into(), status.into(), reason.into());
    assert_eq!(
        principals(config, env),
        vec![
            s("breakglass@example.com", "active", ""),
            s("worker-1@example.com", "suspended", REASON),
            s("worker-2@example.com", "suspended", REASON),
            s("worker-3@example.com", "suspended", "left the company"),
        ]
    );

    let activate = |extra: &[&str]| {
        let mut args = vec![
            "principal",
            "activate",
            "--all-suspended-by-reason",
            REASON,
            "-o",
            "json",
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let (code, out) = activate(&["--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(ids(&out), ["worker-1@example.com", "worker-2@example.com"]);
    let (code, out) = activate(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        principals(config, env),
        before,
        "only those suspended for the incident come back"
    );
}

#[test]
fn bulk_suspend_and_activate_on_the_embedded_store() {
    let world = World::new();
    incident(&world.config, &[]);
}

#[test]
fn bulk_suspend_and_activate_on_dynamodb() {
    let world = World::new();
    let moto = Moto::start();
    let config = super::dynamodb::replica_config_with(
        &world,
        &moto,
        "a.yaml",
        world.grpc_port,
        world.admin_port,
        "timeout: 5s",
    );
    let (code, out) = cli_with_env(&config, &["store", "init"], AWS_ENV);
    assert_eq!(code, 0, "{out}");
    incident(&config, AWS_ENV);
}
