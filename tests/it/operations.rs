//! docs/operations.md, followed as written: every `sh` block of the guide is run with bash
//! (certgate's CLI on the PATH, `CERTGATE_CONFIG` set) against a running certgate behind
//! Envoy 1.40, and what each procedure promises is checked through Envoy — CA rotation with
//! an overlap, mass revocation after a CA compromise, break-glass access, suspension and
//! revocation.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use certgate::pki::{CertAuthority, CertSpec};
use time::Duration as Span;

use super::envoy::Stack;
use super::harness::{Mode, wait_until};
use super::world::{
    Client, World, append_file, deny_reason, now, openssl_serial, openssl_sha256, write_file,
};

/// The guide's `sh` blocks by their `# guide: NAME` line; a block without one fails.
fn guide_blocks() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(testkit::repo().join("docs/operations.md")).expect("guide");
    let mut blocks = BTreeMap::new();
    for block in text.split("```sh\n").skip(1) {
        let body = block.split("```").next().expect("closed block");
        let name = body
            .strip_prefix("# guide: ")
            .and_then(|rest| rest.lines().next())
            .unwrap_or_else(|| panic!("a block without `# guide: NAME`:\n{body}"));
        blocks.insert(name.to_owned(), body.to_owned());
    }
    blocks
}

/// The guide's YAML block (the break-glass policy).
fn guide_yaml() -> String {
    let text = std::fs::read_to_string(testkit::repo().join("docs/operations.md")).expect("guide");
    let block = text.split("```yaml\n").nth(1).expect("a yaml block");
    block.split("```").next().expect("closed").to_owned()
}

struct Guide {
    blocks: BTreeMap<String, String>,
    run: std::cell::RefCell<Vec<String>>,
}

impl Guide {
    /// Run block `name` in `dir` with `env`; its output, or a panic with it.
    fn run(&self, name: &str, dir: &Path, config: &Path, env: &[(&str, &str)]) -> String {
        let block = self
            .blocks
            .get(name)
            .unwrap_or_else(|| panic!("no block {name}"));
        let bin = Path::new(env!("CARGO_BIN_EXE_certgate"))
            .parent()
            .expect("bin dir");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", block])
            .current_dir(dir)
            .env("PATH", path)
            .env("CERTGATE_CONFIG", config)
            .envs(env.iter().copied())
            .output()
            .expect("bash runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "guide block {name} failed:\n{block}\n{text}"
        );
        self.run.borrow_mut().push(name.to_owned());
        text
    }
}

/// A client certificate of `principal` (type `kind`, CN `cn`) from `ca`, valid `lifetime`.
fn issue(
    world: &World,
    ca: &CertAuthority,
    name: &str,
    who: (&str, &str, &str),
    lifetime: Span,
) -> Client {
    let (principal, kind, cn) = who;
    let spec = CertSpec {
        not_before: now() - Span::hours(1),
        not_after: now() - Span::hours(1) + lifetime,
        ..World::spec(principal, kind, cn)
    };
    let issued = ca.issue(&spec).expect("issue");
    let cert = world.path(&format!("{name}.pem"));
    let key = world.path(&format!("{name}-key.pem"));
    write_file(&cert, &issued.cert_pem);
    write_file(&key, &issued.key_pem);
    Client {
        serial: openssl_serial(&cert),
        sha256: openssl_sha256(&cert),
        cert,
        key,
        principal: principal.to_owned(),
    }
}

const WORKER: (&str, &str, &str) = ("worker-1@example.com", "worker", "worker-1.example.com");
const BREAKGLASS: (&str, &str, &str) =
    ("breakglass@example.com", "admin", "breakglass.example.com");

#[test]
fn the_operations_guide_works_as_written() {
    let guide = Guide {
        blocks: guide_blocks(),
        run: Default::default(),
    };
    let world = World::new();
    append_file(&world.config, &guide_yaml());
    // certgate's bundle on its own: curl and Envoy keep trusting the server certificate from
    // ca.pem whatever the procedures do to trust.pem.
    std::fs::copy(&world.ca_pem, world.path("trust.pem")).expect("copy bundle");
    let yaml = std::fs::read_to_string(&world.config).expect("config");
    write_file(
        &world.config,
        yaml.replace("ca_bundle: ca.pem", "ca_bundle: trust.pem"),
    );
    let start = now() - Span::days(1);
    let ca2 = CertAuthority::new("e2e CA 2", start, start + Span::days(3650)).expect("CA");
    let ca3 = CertAuthority::new("e2e CA 3", start, start + Span::days(3650)).expect("CA");
    write_file(&world.path("ca2.pem"), ca2.cert_pem());
    write_file(&world.path("ca3.pem"), ca3.cert_pem());
    let worker2 = issue(&world, &ca2, "worker-ca2", WORKER, Span::days(30));
    let worker3 = issue(&world, &ca3, "worker-ca3", WORKER, Span::days(30));
    let breakglass = issue(&world, &ca3, "breakglass", BREAKGLASS, Span::hours(12));
    let stack = Stack::start_mode_with(Mode::ExtAuthz, world, |_| {});
    let (dir, config) = (stack.world.dir.path(), stack.world.config.as_path());
    let bundle = stack
        .world
        .path("trust.pem")
        .to_str()
        .expect("utf-8")
        .to_owned();
    let path = |name: &str| stack.world.path(name).to_str().expect("utf-8").to_owned();
    let run = |name: &str, env: &[(&str, &str)]| guide.run(name, dir, config, env);
    // Wait until `client` gets `status` (and `reason` for a deny) through Envoy.
    let expect = |client: &Client, status: u16, reason: Option<&str>| {
        let mut last = None;
        let ok = wait_until(Duration::from_secs(10), || {
            let reply = stack.get(Some(client), "/api/jobs");
            let hit = reply.status == status && deny_reason(&reply).as_deref() == reason;
            last = Some(reply);
            hit
        });
        assert!(
            ok,
            "{} expected {status} {reason:?}, got {last:?}\n{}",
            client.cert.display(),
            stack.logs()
        );
    };

    run("breakglass-enrol", &[]);
    let worker = stack.worker.clone();
    expect(&worker, 200, None);

    run("suspend", &[]);
    expect(&worker, 401, Some("principal_suspended"));
    run("activate", &[]);
    expect(&worker, 200, None);

    let listed = run("list-expiring", &[]);
    assert!(listed.contains(&worker.serial), "{listed}");

    // CA rotation: both CAs during the overlap, then only the new one.
    let rotate = [("CA_BUNDLE", bundle.as_str()), ("NEW_CA", &path("ca2.pem"))];
    run("ca-rotation-overlap", &rotate);
    expect(&worker2, 200, None);
    expect(&worker, 200, None);
    run("ca-rotation-retire", &rotate);
    expect(&worker, 401, Some("untrusted_issuer"));
    expect(&worker2, 200, None);

    // CA 2 compromised: CA 3 alone in the bundle, everyone but the emergency admin suspended,
    // then re-activated one by one with certificates from CA 3.
    let compromise = [("CA_BUNDLE", bundle.as_str()), ("NEW_CA", &path("ca3.pem"))];
    run("mass-revocation-drop-ca", &compromise);
    expect(&worker2, 401, Some("untrusted_issuer"));
    let dry_and_real = run("mass-revocation-suspend", &[]);
    assert!(
        dry_and_real.contains("dry run: 2 principal(s) would change"),
        "{dry_and_real}"
    );
    expect(&worker3, 401, Some("principal_suspended"));
    run("mass-revocation-reactivate-one", &[]);
    expect(&worker3, 200, None);
    run("mass-revocation-reactivate-rest", &[]);
    let (code, admin) = stack
        .world
        .cli(&["principal", "get", "admin@example.com", "-o", "json"]);
    assert_eq!(code, 0, "{admin}");
    assert!(admin.contains("\"status\": \"active\""), "{admin}");
    let (code, bg) = stack
        .world
        .cli(&["principal", "get", BREAKGLASS.0, "-o", "json"]);
    assert!(
        code == 0 && bg.contains("\"status\": \"suspended\""),
        "the break-glass admin stays closed: {bg}"
    );

    // Break-glass: opened, decided by its policy, closed again.
    let glass = [("BREAKGLASS_CERT", breakglass.cert.to_str().expect("utf-8"))];
    let opened = run("breakglass-open", &glass);
    assert!(opened.contains("allow"), "{opened}");
    run("breakglass-close", &[]);
    let (code, denied) = stack.world.cli(&[
        "check",
        "--cert",
        &path("breakglass.pem"),
        "--policy",
        "breakglass",
        "--path",
        "/admin/users",
    ]);
    assert_ne!(code, 0, "closed again: {denied}");
    assert!(denied.contains("principal_suspended"), "{denied}");

    // Revoke: the CA 3 certificate in use, registered first.
    let (code, out) = stack
        .world
        .cli(&["cert", "register", "--cert", &path("worker-ca3.pem")]);
    assert_eq!(code, 0, "{out}");
    let revoked = run("revoke", &[("SERIAL", worker3.serial.as_str())]);
    assert!(revoked.contains("key_compromise"), "{revoked}");
    expect(&worker3, 401, Some("certificate_revoked"));

    let mut ran = guide.run.borrow().clone();
    ran.sort();
    ran.dedup();
    let all: Vec<String> = guide.blocks.keys().cloned().collect();
    assert_eq!(ran, all, "every block of the guide is run");
}
