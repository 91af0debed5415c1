//! A configuration naming no decision listener (`listen.grpc: ""`, no `grpc_unix` or `http`),
//! as the Helm chart's module mode renders it: the module runs it (`module_metadata`), `config
//! validate` accepts it with a warning, and `certgate serve` refuses to start on it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::harness::wait_until;
use super::world::{World, cli_with_config};

/// Rewrite the end-to-end configuration at `config` to name no decision listener.
pub(super) fn without_decision_listener(config: &Path) {
    let text = std::fs::read_to_string(config).expect("read config");
    let grpc = text
        .lines()
        .find(|l| l.trim_start().starts_with("grpc: "))
        .expect("a grpc listener to remove");
    let text = text.replacen(grpc, "  grpc: \"\"", 1);
    std::fs::write(config, text).expect("write config");
}

#[test]
fn serve_refuses_a_configuration_only_the_module_can_run() {
    let world = World::new();
    without_decision_listener(&world.config);
    let (code, out) = cli_with_config(&world.config, &["config", "validate"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: listen: none of listen.grpc, listen.grpc_unix and listen.http"),
        "{out}"
    );

    let mut serve = Command::new(env!("CARGO_BIN_EXE_certgate"))
        .args(["serve", "--config"])
        .arg(&world.config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start certgate serve");
    let mut status = None;
    wait_until(Duration::from_secs(20), || {
        status = serve.try_wait().expect("wait");
        status.is_some()
    });
    let Some(status) = status else {
        let _ = serve.kill();
        panic!("certgate serve is serving a configuration with nothing to serve");
    };
    let out = serve.wait_with_output().expect("stderr");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("`certgate serve` has nothing to serve"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("listening"),
        "it bound a listener first: {stderr}"
    );
}
