//! The runbook of deploy/dynamodb/README.md, as an operator without certgate's CLI runs it:
//! every `# runbook:` block executed as written by bash with the real `aws` CLI (.venv,
//! scripts/setup.sh) against moto, and both replicas' answers through Envoy checked after
//! each — on tables `store init` created, on tables as deploy/dynamodb/terraform/main.tf
//! defines them, and on hash-key-only tables of an older deployment, with items it wrote,
//! adopted with `store init --adopt`.

use std::collections::HashMap;
use std::process::Command;

use super::{
    CERTIFICATES, Fleet, PRINCIPALS, TTL_AND_SLACK, assert_reason, create_hash_key_tables, enrol,
    put_legacy_items,
};
use crate::it::harness::{AWS_ENV, Mode, Moto, repo};
use crate::it::world::{World, cli_with_env};

/// The `# runbook: NAME` blocks of deploy/dynamodb/README.md, by name.
fn blocks() -> HashMap<String, String> {
    let readme = std::fs::read_to_string(repo().join("deploy/dynamodb/README.md")).expect("read");
    readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|rest| {
            let block = rest.split("```").next()?;
            let name = block.strip_prefix("# runbook: ")?.lines().next()?;
            Some((name.to_owned(), block.to_owned()))
        })
        .collect()
}

/// Runs the blocks against the fleet's moto, with the README's table variables set.
struct Runbook {
    blocks: HashMap<String, String>,
    endpoint: String,
}

impl Runbook {
    fn new(moto: &Moto) -> Runbook {
        assert!(
            repo().join(".venv/bin/aws").is_file(),
            "no aws CLI in .venv: run `SETUP_MOTO=1 bash scripts/setup.sh`"
        );
        let blocks = blocks();
        for name in [
            "suspend",
            "reactivate",
            "suspend-all",
            "certificates-of-principal",
            "revoke",
            "revoke-unregistered",
            "expiring",
            "expiring-scan",
        ] {
            assert!(blocks.contains_key(name), "no `# runbook: {name}` block");
        }
        Runbook {
            blocks,
            endpoint: moto.endpoint(),
        }
    }

    /// Block `name` with the first assignment of each `VAR` replaced by `VAR='value'` (as an
    /// operator edits the block), run by bash; its stdout. Fails the test if it fails.
    fn run(&self, name: &str, vars: &[(&str, &str)]) -> String {
        let mut block = self.blocks[name].clone();
        for (var, value) in vars {
            let line = block
                .lines()
                .find(|l| l.starts_with(&format!("{var}=")))
                .unwrap_or_else(|| panic!("block {name} assigns no {var}"))
                .to_owned();
            block = block.replacen(&line, &format!("{var}='{value}'"), 1);
        }
        let path = format!(
            "{}:{}",
            repo().join(".venv/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &block])
            .envs(AWS_ENV.iter().copied())
            .env("PATH", path)
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_DEFAULT_REGION", "eu-west-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_PAGER", "")
            .env("CERTGATE_PRINCIPALS_TABLE", PRINCIPALS)
            .env("CERTGATE_CERTIFICATES_TABLE", CERTIFICATES)
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "runbook {name} {vars:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

/// `0a1b…` as openssl prints it in `-serial` (upper case, colons), which the blocks
/// normalise.
fn openssl_form(serial: &str) -> String {
    serial
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// Every block, in the order of an incident, with both replicas' answers after each.
fn walk(fleet: &Fleet, runbook: &Runbook) {
    let config = &fleet.replicas[0].config;
    let worker = fleet.worker.clone();
    let ops = fleet.world.client(
        "ops",
        "ops@example.com",
        &World::spec("ops@example.com", "admin", "ops.example.com"),
    );
    enrol(config, "ops@example.com", "admin", &ops);
    // Enrolled; its certificate was never registered.
    let stranger = fleet.world.client(
        "stranger",
        "stranger@example.com",
        &World::spec("stranger@example.com", "worker", "stranger.example.com"),
    );
    let (code, out) = cli_with_env(
        config,
        &[
            "principal",
            "create",
            "stranger@example.com",
            "--type",
            "worker",
        ],
        AWS_ENV,
    );
    assert_eq!(code, 0, "{out}");
    for client in [&worker, &ops, &stranger] {
        fleet.all_answer(client, 200, TTL_AND_SLACK);
    }

    let who = [("PRINCIPAL", "worker-1@example.com")];
    runbook.run("suspend", &[who[0], ("REASON", "RB-1 credentials leaked")]);
    let replies = fleet.all_answer(&worker, 401, TTL_AND_SLACK);
    assert_reason(&replies, "principal_suspended", "RB-1 credentials leaked");
    fleet.all_answer(&ops, 200, TTL_AND_SLACK);
    runbook.run("reactivate", &who);
    fleet.all_answer(&worker, 200, TTL_AND_SLACK);

    let out = runbook.run("certificates-of-principal", &who);
    assert!(out.contains(&worker.serial), "{out}");
    assert!(!out.contains(&ops.serial), "{out}");
    for name in ["expiring", "expiring-scan"] {
        let out = runbook.run(name, &[]);
        for serial in [&worker.serial, &ops.serial] {
            assert!(out.contains(serial.as_str()), "{name}: {serial} in {out}");
        }
    }

    // The brake for one type, then for everyone.
    let out = runbook.run("suspend-all", &[("TYPE", "admin"), ("REASON", "RB-2 stop")]);
    assert!(out.contains("suspended ops@example.com"), "{out}");
    assert!(!out.contains("worker-1@example.com"), "{out}");
    let replies = fleet.all_answer(&ops, 401, TTL_AND_SLACK);
    assert_reason(&replies, "principal_suspended", "RB-2 stop");
    fleet.all_answer(&worker, 200, TTL_AND_SLACK);
    let out = runbook.run("suspend-all", &[("TYPE", ""), ("REASON", "RB-3 stop all")]);
    assert!(out.contains("suspended worker-1@example.com"), "{out}");
    assert!(out.contains("suspended stranger@example.com"), "{out}");
    for client in [&worker, &stranger] {
        let replies = fleet.all_answer(client, 401, TTL_AND_SLACK);
        assert_reason(&replies, "principal_suspended", "RB-3 stop all");
    }
    // ops was suspended already: the scan of active principals no longer finds it.
    assert!(!out.contains("ops@example.com"), "{out}");
    for id in [
        "worker-1@example.com",
        "ops@example.com",
        "stranger@example.com",
    ] {
        runbook.run("reactivate", &[("PRINCIPAL", id)]);
    }
    for client in [&worker, &ops, &stranger] {
        fleet.all_answer(client, 200, TTL_AND_SLACK);
    }

    let serial = openssl_form(&worker.serial);
    runbook.run("revoke", &[("SERIAL", &serial), ("REASON", "superseded")]);
    let replies = fleet.all_answer(&worker, 401, TTL_AND_SLACK);
    assert_reason(&replies, "certificate_revoked", "superseded");
    let serial = openssl_form(&stranger.serial);
    runbook.run(
        "revoke-unregistered",
        &[("SERIAL", &serial), ("REASON", "key_compromise")],
    );
    let replies = fleet.all_answer(&stranger, 401, TTL_AND_SLACK);
    assert_reason(&replies, "certificate_revoked", "key_compromise");
    fleet.all_answer(&ops, 200, TTL_AND_SLACK);
}

#[test]
fn the_runbook_works_as_written_on_tables_certgate_created() {
    let fleet = Fleet::start(Mode::ExtAuthz);
    walk(&fleet, &Runbook::new(&fleet.moto));
}

#[test]
fn the_runbook_works_as_written_on_tables_the_reference_terraform_created() {
    let fleet = Fleet::start_with(Mode::ExtAuthz, |_, moto, config, worker| {
        let out = Command::new(repo().join(".venv/bin/python"))
            .current_dir(repo())
            .args(["scripts/deploy_dynamodb/check.py", "tf-tables"])
            .args([moto.endpoint().as_str(), PRINCIPALS, CERTIFICATES])
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (code, out) = cli_with_env(config, &["store", "init"], AWS_ENV);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("e2e_certificates: exists"), "{out}");
        enrol(config, "worker-1@example.com", "worker", worker);
    });
    walk(&fleet, &Runbook::new(&fleet.moto));
}

/// An older deployment's tables and items: `store check` reports them, `store init --adopt`
/// adds certgate's indexes and TTL, and then both replicas serve the adopted principal
/// through Envoy, and the runbook works on them.
#[test]
fn the_runbook_works_as_written_on_adopted_tables_of_an_older_deployment() {
    let fleet = Fleet::start_with(Mode::ExtAuthz, |_, moto, config, worker| {
        create_hash_key_tables(moto);
        put_legacy_items(moto, worker);
        let (code, out) = cli_with_env(config, &["store", "check"], AWS_ENV);
        assert_eq!(code, 0, "nothing refused: {out}");
        assert!(out.contains("expiry_bucket missing"), "{out}");
        let (code, out) = cli_with_env(config, &["store", "init", "--adopt"], AWS_ENV);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("e2e_certificates: index by_expiry created"),
            "{out}"
        );
        let (code, out) = cli_with_env(config, &["store", "check"], AWS_ENV);
        assert_eq!(code, 0, "{out}");
        assert!(!out.contains("expiry_bucket missing"), "{out}");
    });
    // Served by both replicas, typed by the certificate (the item has no principal_type).
    let worker = fleet.worker.clone();
    for reply in fleet.all_answer(&worker, 200, TTL_AND_SLACK) {
        assert_eq!(
            reply.upstream_header("x-client-principal-type").as_deref(),
            Some("worker"),
            "{reply:?}"
        );
    }
    walk(&fleet, &Runbook::new(&fleet.moto));
}
