//! The CLI as operators use it: bootstrap → check, config validate, Day-2 store commands,
//! `--output json` and the exit codes (0 ok/allow, 1 deny/failed, 2 usage/config error).

use super::world::cli_with_config;

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn bootstrap() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
            .args(["bootstrap", "--out-dir"])
            .arg(dir.path())
            .output()
            .expect("run bootstrap");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn run(&self, args: &[&str]) -> (i32, String) {
        cli_with_config(&self.dir.path().join("certgate.yaml"), args)
    }

    fn json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let (code, out) = self.run(args);
        let json = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        (code, json)
    }
}

#[test]
fn bootstrap_then_check_works_without_edits() {
    let pki = Pki::bootstrap();
    let admin = pki.path("admin.pem");
    let (code, json) = pki.json(&[
        "check",
        "--cert",
        &admin,
        "--path",
        "/api/jobs",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["decision"], "allow");
    assert_eq!(json["status"], 200);
    assert_eq!(json["reason"], serde_json::Value::Null);
    assert_eq!(json["principal"], "admin@example.com");
    assert_eq!(json["headers"]["x-client-principal"], "admin@example.com");
    assert_eq!(json["headers"]["x-client-roles"], "admin");

    let worker = pki.path("worker.pem");
    let args = [
        "check",
        "--cert",
        &worker,
        "--path",
        "/admin/users",
        "--policy",
        "admin",
        "-o",
        "json",
    ];
    let (code, json) = pki.json(&args);
    assert_eq!(code, 1, "a deny exits 1: {json}");
    assert_eq!(json["decision"], "deny");
    assert_eq!(json["status"], 403);
    assert_eq!(json["reason"], "lifetime_exceeds_policy");
    assert_eq!(
        json["message"],
        "Certificate lifetime (30.0 days) exceeds maximum (7 days) of policy 'admin'"
    );
}

#[test]
fn config_validate_names_every_bad_key_and_exits_2() {
    let pki = Pki::bootstrap();
    let (code, out) = pki.run(&["config", "validate"]);
    assert_eq!(code, 0, "{out}");
    let config = pki.dir.path().join("certgate.yaml");
    let good = std::fs::read_to_string(&config).expect("read");
    let bad = good
        .replace("max_lifetime: 7d", "max_lifetime: 7x")
        .replace("ca_bundle: ca.pem", "ca_bundle: nowhere.pem")
        .replace("cache_ttl: 2s", "cache_ttl: soon");
    std::fs::write(&config, bad).expect("write");
    let (code, out) = pki.run(&["config", "validate"]);
    assert_eq!(code, 2, "{out}");
    for key in [
        "policies.admin.max_lifetime",
        "trust.ca_bundle",
        "store.cache_ttl",
    ] {
        assert!(out.contains(key), "{key} not named in:\n{out}");
    }
    let (code, json) = pki.json(&["config", "validate", "-o", "json"]);
    assert_eq!(code, 2);
    assert_eq!(json["valid"], false);
    assert_eq!(json["problems"].as_array().map(Vec::len), Some(3), "{json}");
    // serve refuses to start on it, with the same exit code.
    let (code, out) = pki.run(&["serve"]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn day_two_commands() {
    let pki = Pki::bootstrap();
    let (code, json) = pki.json(&["principal", "list", "-o", "json"]);
    assert_eq!(code, 0);
    // admin, operator (of the admin API) and worker-1.
    assert_eq!(json.as_array().map(Vec::len), Some(3), "{json}");

    let (code, json) = pki.json(&[
        "principal",
        "suspend",
        "worker-1@example.com",
        "--reason",
        "Compromised credentials detected",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["status"], "suspended");
    assert_eq!(json["suspended_reason"], "Compromised credentials detected");
    assert!(
        json["suspended_at"]
            .as_i64()
            .is_some_and(|t| t > 1_700_000_000_000),
        "epoch ms"
    );
    let worker = pki.path("worker.pem");
    let (code, json) = pki.json(&[
        "check",
        "--cert",
        &worker,
        "--path",
        "/api/jobs",
        "-o",
        "json",
    ]);
    assert_eq!(
        (code, json["reason"].as_str()),
        (1, Some("principal_suspended"))
    );
    let (code, json) = pki.json(&[
        "principal",
        "activate",
        "worker-1@example.com",
        "-o",
        "json",
    ]);
    assert_eq!((code, json["status"].as_str()), (0, Some("active")));

    let (code, out) = pki.run(&[
        "principal",
        "suspend",
        "nobody@example.com",
        "--reason",
        "x",
    ]);
    assert_eq!(code, 1, "suspending an unknown principal fails: {out}");
    assert!(out.contains("not found"), "{out}");
    let (code, _) = pki.run(&[
        "principal",
        "create",
        "svc@example.com",
        "--type",
        "service",
        "--roles",
        "reader",
    ]);
    assert_eq!(code, 0);
    let (code, out) = pki.run(&[
        "principal",
        "create",
        "svc@example.com",
        "--type",
        "service",
    ]);
    assert_eq!(code, 1, "duplicate create fails: {out}");

    // Expiry: the admin certificate lives 7 days, the worker's 30.
    let (code, json) = pki.json(&["cert", "list", "--expiring-within", "10d", "-o", "json"]);
    assert_eq!(code, 0);
    let principals: Vec<&str> = json
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["principal_id"].as_str())
        .collect();
    assert_eq!(principals, ["admin@example.com"]);
    let (_, json) = pki.json(&[
        "cert",
        "list",
        "--principal",
        "worker-1@example.com",
        "-o",
        "json",
    ]);
    let serial = json[0]["serial_number"]
        .as_str()
        .expect("worker cert registered")
        .to_owned();

    let (code, out) = pki.run(&["cert", "revoke", &serial, "--reason", "stolen"]);
    assert_eq!(
        code, 2,
        "an unknown RFC 5280 reason is a usage error: {out}"
    );
    let upper = serial.to_uppercase();
    let (code, json) = pki.json(&[
        "cert",
        "revoke",
        &upper,
        "--reason",
        "key_compromise",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(
        (
            json["revoked"].as_bool(),
            json["revocation_reason"].as_str()
        ),
        (Some(true), Some("key_compromise"))
    );
    let (code, json) = pki.json(&[
        "check",
        "--cert",
        &worker,
        "--path",
        "/api/jobs",
        "-o",
        "json",
    ]);
    assert_eq!(
        (code, json["reason"].as_str()),
        (1, Some("certificate_revoked"))
    );

    let (code, out) = pki.run(&["cert", "get", "ffff"]);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _) = cli_with_config(
        std::path::Path::new("/nonexistent.yaml"),
        &["principal", "list"],
    );
    assert_eq!(code, 2, "a missing config file is a configuration error");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
        .args(["principal", "frobnicate"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_wrong_store_path_is_an_error_not_an_empty_store() {
    let pki = Pki::bootstrap();
    let config = pki.dir.path().join("certgate.yaml");
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &config,
        text.replace("path: certgate.db", "path: certgte.db"),
    )
    .expect("write");
    for args in [
        &["principal", "list"][..],
        &["principal", "suspend", "admin@example.com", "--reason", "x"],
        &["check", "--cert", &pki.path("admin.pem")],
    ] {
        let (code, out) = pki.run(args);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(
            out.contains("certgte.db") && out.contains("does not exist"),
            "{out}"
        );
    }
    assert!(
        !pki.dir.path().join("certgte.db").exists(),
        "no empty store was created"
    );
}

#[test]
fn register_refuses_untrusted_certificates_and_unknown_principals() {
    let pki = Pki::bootstrap();
    let now = time::OffsetDateTime::now_utc();
    let stranger =
        certgate::pki::CertAuthority::new("other", now, now + time::Duration::days(1)).expect("CA");
    let leaf = stranger
        .issue(&certgate::pki::CertSpec::client(
            "x",
            now,
            time::Duration::days(1),
        ))
        .expect("leaf");
    let path = pki.dir.path().join("stranger.pem");
    std::fs::write(&path, &leaf.cert_pem).expect("write");
    let path = path.display().to_string();
    let (code, out) = pki.run(&["cert", "register", "--cert", &path]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("trust bundle") && out.contains("--force"),
        "{out}"
    );

    let (code, out) = pki.run(&[
        "cert",
        "register",
        "--cert",
        &pki.path("admin.pem"),
        "--principal",
        "ghost@example.com",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not enrolled"), "{out}");
    let (code, out) = pki.run(&["cert", "register", "--cert", &path, "--force"]);
    assert_eq!(code, 0, "--force registers anyway: {out}");
}

#[test]
fn config_validate_refuses_durations_their_consumers_cannot_take() {
    let pki = Pki::bootstrap();
    let config = pki.dir.path().join("certgate.yaml");
    let good = std::fs::read_to_string(&config).expect("read");
    // 2000 years panicked in the store cache's builder at start; validation accepted it.
    std::fs::write(&config, good.replace("cache_ttl: 2s", "cache_ttl: 2000y")).expect("write");
    let (code, out) = pki.run(&["config", "validate"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("store.cache_ttl") && out.contains("2000y"),
        "the key and value are named:\n{out}"
    );
    let (code, out) = pki.run(&["serve"]);
    assert_eq!(code, 2, "serve refuses it too, without a panic: {out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn the_embedded_store_file_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::bootstrap();
    let mode = |name: &str| {
        std::fs::metadata(pki.dir.path().join(name))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    assert_eq!(mode("certgate.db"), 0o600, "bootstrap's store");
    let config = pki.dir.path().join("certgate.yaml");
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(&config, text.replace("path: certgate.db", "path: fresh.db")).expect("write");
    let (code, out) = pki.run(&["store", "init"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(mode("fresh.db"), 0o600, "store init's file");
    for sibling in ["fresh.db-wal", "fresh.db-shm"] {
        if pki.dir.path().join(sibling).exists() {
            assert_eq!(mode(sibling), 0o600, "{sibling}");
        }
    }
}

fn certgate(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
        .args(args)
        .env_remove("CERTGATE_CONFIG")
        .output()
        .expect("run certgate");
    assert!(
        out.stderr.is_empty(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8 output"),
    )
}

#[test]
fn version_names_the_crate_version_and_the_commit() {
    let (code, out) = certgate(&["--version"]);
    assert_eq!(code, 0, "{out}");
    let expected = format!(
        "certgate {} ({})\n",
        env!("CARGO_PKG_VERSION"),
        env!("CERTGATE_GIT_COMMIT")
    );
    assert_eq!(out, expected);
    let commit = env!("CERTGATE_GIT_COMMIT");
    assert!(
        commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{commit}"
    );
}

#[test]
fn completions_for_each_shell_cover_the_commands_and_options() {
    // What each shell's script looks like: a marker of that shell's completion API, then the
    // subcommands (nested ones too), a global option and its values must be offered.
    for (shell, marker) in [
        ("bash", "complete -F _certgate"),
        ("zsh", "#compdef certgate"),
        ("fish", "complete -c certgate"),
    ] {
        let (code, script) = certgate(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {script}");
        assert!(
            script.contains(marker),
            "{shell}: no {marker:?} in\n{script}"
        );
        for word in [
            "serve",
            "check",
            "bootstrap",
            "principal",
            "suspend",
            "completions",
            "config",
            "log-format", // fish spells options `-l log-format`
            "json",       // and the values of --log-format
        ] {
            assert!(script.contains(word), "{shell}: {word} is not completed");
        }
    }
    let (code, _) = cli_with_config(std::path::Path::new("/x"), &["completions", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is a usage error");
}

#[test]
fn man_page_is_roff_for_certgate_and_its_commands() {
    let (code, page) = certgate(&["man"]);
    assert_eq!(code, 0, "{page}");
    assert!(page.contains(".TH certgate 1"), "{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH SUBCOMMANDS", ".SH VERSION"] {
        assert!(page.contains(section), "no {section} in\n{page}");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("man1");
    let (code, out) = certgate(&["man", "--out-dir", out_dir.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{out}");
    for page in [
        "certgate.1",
        "certgate-serve.1",
        "certgate-principal-suspend.1",
    ] {
        let text =
            std::fs::read_to_string(out_dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}: {text}");
    }
}

#[test]
fn every_serial_spelling_finds_the_certificate_and_long_ids_keep_the_columns() {
    let pki = Pki::bootstrap();
    let (_, json) = pki.json(&["cert", "list", "-o", "json"]);
    let serial = json[0]["serial_number"]
        .as_str()
        .expect("a registered certificate")
        .to_owned();
    let colons = serial
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    for spelling in [format!("0x{serial}"), format!("00{serial}"), colons] {
        let (code, json) = pki.json(&["cert", "get", &spelling, "-o", "json"]);
        assert_eq!(
            (code, json["serial_number"].as_str()),
            (0, Some(serial.as_str())),
            "{spelling}"
        );
    }
    let (code, out) = pki.run(&["cert", "get", "not-hex"]);
    assert_eq!(code, 2, "a malformed serial is a usage error: {out}");

    let long = format!("{}@example.com", "a-very-long-principal-id".repeat(3));
    let (code, out) = pki.run(&["principal", "create", &long, "--type", "service"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = pki.run(&["principal", "list"]);
    assert_eq!(code, 0, "{out}");
    let type_column = |line: &str| line.find(" service").or_else(|| line.find(" admin"));
    let header = out.lines().next().expect("header");
    let row = out.lines().find(|l| l.starts_with(&long)).expect("listed");
    let admin = out
        .lines()
        .find(|l| l.starts_with("admin@"))
        .expect("listed");
    assert_eq!(header.find(" TYPE"), type_column(row), "{out}");
    assert_eq!(header.find(" TYPE"), type_column(admin), "{out}");
}
