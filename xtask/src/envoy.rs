//! Side by side through Envoy: the same mTLS HTTP/1.1 load (examples/loadgen.rs, HTTPS mode)
//! against Envoy 1.40 `--concurrency 1` (ENVOY_CONCURRENCY) in front of a trivial upstream
//! (examples/upstream.rs), with, in turn,
//!   none            no authorization filter
//!   rbac            Envoy's RBAC filter admitting the client's principal (no extra hop)
//!   trivial         ext_authz gRPC to examples/trivial_authz.rs (allows everything)
//!   trivial-headers the same server answering with certgate's shape of identity headers (six
//!                   set, one removed): what Envoy itself spends applying them
//!   certgate        ext_authz gRPC to `certgate serve` over TCP (bootstrapped config: roles,
//!                   store enrolment with a cached store, the `admin` policy's CN allowlist)
//!   certgate-unix   the same over a unix socket (Envoy `pipe:` address)
//!   certgate-metadata  `certgate` with `response.identity: metadata_only`: the identity as
//!                   dynamic metadata, no header mutations for Envoy to apply
//!   certgate-headers  `certgate` with `response.identity: headers_only`: identity headers,
//!                   no dynamic metadata on allows for Envoy to decode and merge
//!   certgate-lean   `certgate-headers` with the fewest mutations the settings allow: only the
//!                   principal and roles headers, identity headers removed only when sent
//!   certgate-module certgate inside Envoy as the dynamic module (libcertgate_envoy.so), the
//!                   same configuration file and policy, no gRPC hop
//!   trivial-module  a module that decides nothing (module/examples/trivial_module.rs): reads
//!                   the peer certificate's attributes, sets three headers and one metadata
//!                   value; Envoy writes XFCC for it as for certgate-module. The most a module
//!                   can reach on this machine
//!
//! The configurations run interleaved, round after round, and the table shows each
//! configuration's median round by req/s: on a shared machine, load from elsewhere then
//! spreads over all of them instead of sinking one.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use testkit::{Proc, envoy_binary, free_port, http_get, port_open};

use crate::measure::{Load, cargo_build, clock_ticks_per_sec, cpu_ticks, for_report, shown};
use crate::report::{self, log};
use crate::{Run, env_or};

const SECTION: &str = "cargo xtask bench envoy";
const CONFIGS: &str = "none rbac trivial trivial-headers certgate certgate-unix certgate-metadata certgate-headers \
     certgate-lean certgate-module trivial-module";
/// `certgate` with these `response:` settings (README "Envoy dynamic metadata", "Identity
/// headers").
const RESPONSE_VARIANTS: [(&str, &str); 3] = [
    ("certgate-metadata", "identity: metadata_only"),
    ("certgate-headers", "identity: headers_only"),
    (
        "certgate-lean",
        "identity: headers_only, identity_headers: [principal, roles], \
         remove_identity_headers: when_sent",
    ),
];
/// /admin routes ask certgate for its `admin` policy (CN allowlist, admin type only, 7-day
/// certificates), the strictest of the bootstrapped configuration.
const LOAD_PATH: &str = "/admin/bench";

/// Ports and files every rendered Envoy configuration refers to.
struct Setup<'a> {
    listen: u16,
    envoy_admin: u16,
    upstream: u16,
    authz: u16,
    grpc: u16,
    pki: &'a Path,
    socket: &'a Path,
    principal: String,
    certgate_config: &'a Path,
}

/// envoy/bench/front-proxy.yaml for one configuration: the filter fragment in place of the
/// `{{AUTHZ_FILTER}}` line (indented like it, comments dropped), then the placeholders.
fn render(config: &str, s: &Setup<'_>) -> Result<String> {
    let tcp = |port: u16| format!("socket_address: {{address: 127.0.0.1, port_value: {port}}}");
    let (filter, address) = match config {
        "none" => (None, tcp(s.authz)),
        "rbac" => (Some("rbac.yaml"), tcp(s.authz)),
        "trivial" | "trivial-headers" => (Some("ext_authz.yaml"), tcp(s.authz)),
        "certgate" | "certgate-metadata" | "certgate-headers" | "certgate-lean" => {
            (Some("ext_authz.yaml"), tcp(s.grpc))
        }
        "certgate-unix" => (
            Some("ext_authz.yaml"),
            format!("pipe: {{path: {}}}", s.socket.display()),
        ),
        "certgate-module" => (Some("module.yaml"), tcp(s.authz)),
        "trivial-module" => (Some("trivial-module.yaml"), tcp(s.authz)),
        other => bail!("unknown configuration {other} (CONFIGS: {CONFIGS})"),
    };
    let module = config == "certgate-module";
    // Envoy writes the certificate into XFCC for either module, as envoy/module.yaml has it.
    let xfcc = module || config == "trivial-module";
    let dir = testkit::repo().join("envoy/bench");
    let read = |f: Option<&str>| match f {
        Some(f) => std::fs::read_to_string(dir.join(f)),
        None => Ok(String::new()),
    };
    let fragments = [
        ("{{AUTHZ_FILTER}}", read(filter)?),
        (
            "{{ROUTE_FILTER_CONFIG}}",
            read(module.then_some("module-route.yaml"))?,
        ),
    ];
    let mut lines = Vec::new();
    for line in std::fs::read_to_string(dir.join("front-proxy.yaml"))?.lines() {
        match fragments.iter().find(|(name, _)| line.trim() == *name) {
            Some((_, fragment)) => {
                let indent = &line[..line.len() - line.trim_start().len()];
                lines.extend(
                    fragment
                        .lines()
                        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                        .map(|l| format!("{indent}{l}")),
                );
            }
            None => lines.push(line.to_owned()),
        }
    }
    let values = [
        ("LISTEN_PORT", s.listen.to_string()),
        ("ENVOY_ADMIN_PORT", s.envoy_admin.to_string()),
        ("UPSTREAM_PORT", s.upstream.to_string()),
        (
            "SERVER_CERT",
            s.pki.join("server.pem").display().to_string(),
        ),
        (
            "SERVER_KEY",
            s.pki.join("server-key.pem").display().to_string(),
        ),
        ("CA_BUNDLE", s.pki.join("ca.pem").display().to_string()),
        ("AUTHZ_ADDRESS", address),
        ("PRINCIPAL", s.principal.clone()),
        (
            "FORWARD_CLIENT_CERT_DETAILS",
            if xfcc { "SANITIZE_SET" } else { "SANITIZE" }.to_owned(),
        ),
        ("CERTGATE_CONFIG", s.certgate_config.display().to_string()),
    ];
    Ok(values.iter().fold(lines.join("\n") + "\n", |text, (k, v)| {
        text.replace(&format!("{{{{{k}}}}}"), v)
    }))
}

/// The admin certificate's URI SAN, which the RBAC configuration admits.
fn principal(cert: &Path) -> Result<String> {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(cert)
        .output()
        .context("openssl")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split([',', ' ', '\n'])
        .find_map(|w| w.strip_prefix("URI:"))
        .map(str::to_owned)
        .context("cannot read the admin certificate's URI SAN")
}

/// One configuration's round: (req/s, p99 in µs, table row).
struct Round {
    rps: f64,
    p99: f64,
    row: String,
}

/// `cargo xtask bench envoy`.
pub fn bench(run: &Run) -> Result<()> {
    let rounds: usize = env_or("ROUNDS", if run.quick { "1" } else { "3" }).parse()?;
    let connections = env_or("CONNECTIONS", "16");
    let configs = env_or("CONFIGS", CONFIGS);
    let envoy_concurrency = env_or("ENVOY_CONCURRENCY", "1");
    let envoy = envoy_binary();
    let envoy_version = Command::new(&envoy).arg("--version").output()?;
    let envoy_version = String::from_utf8_lossy(&envoy_version.stdout)
        .split_once("version: ")
        .map_or_else(String::new, |(_, v)| v.trim().to_owned());

    let mut build = cargo_build(
        &run.profile,
        &["--bin", "certgate", "--example", "loadgen"]
            .into_iter()
            .chain(["--example", "upstream", "--example", "trivial_authz"])
            .collect::<Vec<_>>(),
    )?;
    if configs.contains("certgate-module") {
        build += "\n";
        build += &cargo_build(&run.profile, &["-p", "certgate-envoy"])?;
    }
    if configs.contains("trivial-module") {
        build += "\n";
        build += &cargo_build(
            &run.profile,
            &["-p", "certgate-envoy", "--example", "trivial_module"],
        )?;
    }
    let certgate = run.bin("certgate");
    let work = tempfile::Builder::new()
        .prefix("certgate-bench-envoy.")
        .tempdir()?;
    let pki = work.path().join("pki");
    let socket = work.path().join("certgate.sock");
    let (grpc, admin) = (free_port(), free_port());
    crate::measure::bootstrap(&certgate, &pki, grpc, admin)?;
    // Both listeners: the unix one only carries load in the certgate-unix configuration.
    let yaml = pki.join("certgate.yaml");
    let text = std::fs::read_to_string(&yaml)?;
    let listen = format!("\nlisten:\n  grpc_unix: {}\n", socket.display());
    if !text.contains("\nlisten:\n") {
        bail!("no top-level listen: section in {}", yaml.display());
    }
    let text = text.replacen("\nlisten:\n", &listen, 1);
    std::fs::write(&yaml, &text)?;
    if text.contains("\nresponse:") {
        bail!("{} already has a response: section", yaml.display());
    }
    // The configurations that are `certgate` with a `response:` section of their own.
    let mut variants = HashMap::new();
    for (config, response) in RESPONSE_VARIANTS {
        let path = pki.join(format!("{config}.yaml"));
        std::fs::write(&path, format!("{text}\nresponse: {{{response}}}\n"))?;
        variants.insert(config, path);
    }

    let setup = Setup {
        listen: free_port(),
        envoy_admin: free_port(),
        upstream: free_port(),
        authz: free_port(),
        grpc,
        pki: &pki,
        socket: &socket,
        principal: principal(&pki.join("admin.pem"))?,
        certgate_config: &yaml,
    };
    let up = setup.upstream;
    let _upstream = Proc::spawn_ready(
        "upstream",
        Command::new(run.bin("examples/upstream")).arg(format!("127.0.0.1:{up}")),
        Duration::from_secs(10),
        || port_open(up),
    );

    let hz = clock_ticks_per_sec();
    let secs = crate::measure::seconds(&run.duration)?;
    let mut loadgen = Command::new(run.bin("examples/loadgen"));
    loadgen
        .arg("--target")
        .arg(format!("https://localhost:{}{LOAD_PATH}", setup.listen))
        .arg("--cert")
        .arg(pki.join("admin.pem"))
        .arg("--key")
        .arg(pki.join("admin-key.pem"))
        .arg("--ca")
        .arg(pki.join("ca.pem"))
        .args(["--connections", &connections, "--duration", &run.duration]);
    let envoy_args = ["--concurrency", &envoy_concurrency, "--log-level", "warn"];
    let mut runs: HashMap<&str, Vec<Round>> = HashMap::new();
    let mut notes = Vec::new();
    for round in 1..=rounds {
        for config in configs.split_whitespace() {
            let rendered = work.path().join(format!("envoy-{config}.yaml"));
            std::fs::write(&rendered, render(config, &setup)?)?;
            let authz_port = setup.authz;
            let authz = match config {
                "trivial" | "trivial-headers" => {
                    let mut cmd = Command::new(run.bin("examples/trivial_authz"));
                    cmd.arg(format!("127.0.0.1:{authz_port}"));
                    if config == "trivial-headers" {
                        cmd.arg("--identity-headers");
                    }
                    Some(Proc::spawn_ready(
                        "trivial_authz",
                        &mut cmd,
                        Duration::from_secs(10),
                        || port_open(authz_port),
                    ))
                }
                "certgate" | "certgate-unix" | "certgate-metadata" | "certgate-headers"
                | "certgate-lean" => Some(Proc::spawn_ready(
                    "certgate",
                    Command::new(&certgate)
                        .args(["serve", "--config"])
                        .arg(variants.get(config).unwrap_or(&yaml)),
                    Duration::from_secs(10),
                    || matches!(http_get(admin, "/readyz"), Some((200, _))),
                )),
                _ => None,
            };
            let envoy_admin = setup.envoy_admin;
            let mut envoy_command = Command::new(&envoy);
            match config {
                "certgate-module" => {
                    envoy_command.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", run.bin(""));
                }
                "trivial-module" => {
                    envoy_command.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", run.bin("examples"));
                }
                _ => {}
            }
            let proxy = Proc::spawn_ready(
                "envoy",
                envoy_command
                    .args(envoy_args)
                    .arg("--disable-hot-restart")
                    .arg("-c")
                    .arg(&rendered),
                Duration::from_secs(10),
                || matches!(http_get(envoy_admin, "/ready"), Some((200, _))),
            );
            if config == "certgate-module"
                && !testkit::wait_until(Duration::from_secs(10), || {
                    matches!(http_get(admin, "/readyz"), Some((200, _)))
                })
            {
                bail!("the module's certgate did not get ready:\n{}", proxy.logs());
            }
            log(&format!(
                "round {round}/{rounds}, {config}: {}",
                shown(&loadgen)
            ));
            let load_avg = crate::measure::load_average(1);
            let envoy_pid = proxy.pid().context("envoy exited")?;
            let authz_pid = authz.as_ref().and_then(Proc::pid);
            let envoy_before = cpu_ticks(envoy_pid)?;
            let authz_before = authz_pid.map(cpu_ticks).transpose()?;
            let load = Load::run(&mut loadgen, hz)?;
            let what = format!("{config}, round {round}");
            notes.extend(load.expect_allowed(&what, !run.quick)?);
            let envoy_cpu = (cpu_ticks(envoy_pid)? - envoy_before) as f64 / hz;
            let (mut authz_cpu, mut authz_per_req, mut authz_rss) =
                ("–".to_owned(), "–".to_owned(), "–".to_owned());
            if let (Some(pid), Some(before)) = (authz_pid, authz_before) {
                let t = (cpu_ticks(pid)? - before) as f64 / hz;
                authz_cpu = format!("{:.2} cores", t / secs);
                let requests = load.count("requests") as f64;
                authz_per_req = format!("{:.1} µs", t / requests * 1e6);
                let kib = crate::measure::peak_rss_kib(pid)?;
                authz_rss = format!("{:.1} MiB", kib as f64 / 1024.0);
            }
            let row = format!(
                "| {config} | {} | {} | {} | {} | {authz_cpu} | {authz_per_req} | {authz_rss} | \
                 {:.2} cores | {:.2} cores | {load_avg} |",
                load.field("rps"),
                load.lat("p50_us"),
                load.lat("p99_us"),
                load.lat("p99.9_us"),
                envoy_cpu / secs,
                load.cpu_secs / secs
            );
            println!("{row}");
            runs.entry(config).or_default().push(Round {
                rps: load.field("rps").parse().unwrap_or(0.0),
                p99: load.field("p99_us").parse().unwrap_or(0.0),
                row,
            });
            drop(proxy);
            // SIGTERM first: certgate removes its unix socket on the way out, and the next
            // round binds it again.
            if let Some(mut authz) = authz {
                authz.terminate(Duration::from_secs(5));
            }
        }
    }

    // Each configuration's median run by req/s.
    let mut median = HashMap::new();
    let mut rows = Vec::new();
    for config in configs.split_whitespace() {
        let list = runs.get_mut(config).context("no run")?;
        list.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        let m = &list[list.len().div_ceil(2) - 1];
        rows.push(m.row.clone());
        median.insert(config, (m.rps, m.p99));
    }
    let ratio = |c: &str, base: &str| {
        let ((r, p), (rb, pb)) = (median.get(c)?, median.get(base)?);
        Some(format!(
            "| {c} / {base} | {:.1}% | {:.1}% |",
            100.0 * r / rb,
            100.0 * p / pb
        ))
    };
    let ratios: Vec<String> = [
        "certgate",
        "certgate-unix",
        "certgate-metadata",
        "certgate-headers",
        "certgate-lean",
        "trivial-headers",
    ]
    .into_iter()
    .filter_map(|c| ratio(c, "trivial"))
    .chain(ratio("certgate-module", "none"))
    .chain(ratio("trivial-module", "none"))
    .chain(ratio("certgate-module", "trivial-module"))
    .chain(ratio("certgate-module", "certgate"))
    .collect();
    let ratio_headers = ratio("certgate", "trivial-headers");

    let mut b = String::new();
    let (begin, end) = report::markers(SECTION);
    writeln!(b, "{begin}\n## Through Envoy, side by side (`{SECTION}`)\n")?;
    writeln!(
        b,
        "Written by `{SECTION}`{}. One run on one\nmachine; every process (load generator, \
         Envoy, authorizer, upstream) shares its cores, so\ncompare rows of the same run only. \
         Timings are never asserted.\n",
        run.quick_note()
    )?;
    write!(b, "{}", report::shortfalls(&notes))?;
    writeln!(b, "| | |\n| --- | --- |")?;
    writeln!(
        b,
        "| date | {} |\n| commit | {} |",
        report::date(),
        report::commit()
    )?;
    writeln!(
        b,
        "| CPU | {}, {} cores |",
        report::cpu_model(),
        report::nproc()
    )?;
    writeln!(
        b,
        "| kernel | {} |\n| Envoy | {envoy_version} |",
        report::kernel()
    )?;
    writeln!(b, "| build | {} |\n\n```\n{build}", run.profile)?;
    writeln!(
        b,
        "{} {} --disable-hot-restart -c envoy-$CONFIG.yaml   # envoy/bench/front-proxy.yaml, \
         rendered",
        crate::measure::relative(&envoy),
        envoy_args.join(" ")
    )?;
    let shown_load = for_report(&loadgen, work.path());
    writeln!(b, "{shown_load}\n```\n")?;
    writeln!(
        b,
        "{connections} mTLS HTTP/1.1 keep-alive connections, one request in flight on each, {} \
         per\nconfiguration and round, {rounds} round(s) interleaved, each row the median round \
         by req/s;\n`GET {LOAD_PATH}` with the bootstrapped admin certificate (every \
         request\nallowed). Authorizer CPU is utime+stime during the load, also per request; \
         RSS is its\npeak (VmHWM); load is the 1-minute load average when the configuration \
         started.\n",
        run.duration
    )?;
    writeln!(
        b,
        "| configuration | req/s | p50 | p99 | p99.9 | authz CPU | authz CPU/req | authz RSS | \
         Envoy CPU | loadgen CPU | load |\n| --- | --- | --- | --- | --- | --- | --- | --- | \
         --- | --- | --- |\n{}",
        rows.join("\n")
    )?;
    if !ratios.is_empty() {
        writeln!(
            b,
            "\n| ratio | req/s | p99 |\n| --- | --- | --- |\n{}",
            ratios.join("\n")
        )?;
        if let Some(r) = ratio_headers {
            writeln!(
                b,
                "{r}\n\n`trivial-headers` answers every check with the header mutations of a \
                 certgate allow\n(six identity headers set, one removed) without deciding \
                 anything: the gap between\nit and `trivial` is what Envoy spends applying \
                 identity headers, and\n`certgate / trivial-headers` is what certgate's \
                 decision costs on top of that."
            )?;
        }
        if configs.contains("trivial-module") {
            writeln!(
                b,
                "\n`trivial-module` decides nothing (module/examples/trivial_module.rs): it \
                 reads the peer\ncertificate's attributes, sets three headers and one \
                 metadata value, with Envoy\nwriting XFCC as for `certgate-module`. \
                 `certgate-module / trivial-module` is what\ncertgate's decision and answer \
                 cost a module."
            )?;
        }
    }
    writeln!(b, "{end}")?;
    print!("{b}");
    report::write_section(SECTION, &run.out("envoy."), &b, false)
}
