//! The DynamoDB store on loopback: the same gRPC Check load (examples/loadgen.rs, admin.pem)
//! against `certgate serve` with, one at a time,
//!   embedded          the bootstrapped configuration (SQLite, store.cache_ttl as bootstrapped)
//!   dynamodb-cached   the same records in DynamoDB (moto on loopback), same cache_ttl
//!   dynamodb-cold     DynamoDB with `cache_ttl: 0s` and `stale_if_error: 0s`: every check
//!                     reads both records from DynamoDB; a lighter load, and deadlines wide
//!                     enough (timeout 2s, attempt_timeout 1s) for moto's Python latency
//! and, for each, checks/s, latency, allow/deny/error counts, certgate CPU and peak RSS, and
//! the backend calls during the load (certgate_store_calls_total on /metrics, before/after).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use testkit::{AWS_ENV, Moto, Proc, free_port, http_get};

use crate::measure::{
    Load, cargo_build, clock_ticks_per_sec, cpu_ticks, for_report, metric_sum, shown,
};
use crate::report::{self, log};
use crate::{Run, env_or};

const SECTION: &str = "cargo xtask bench dynamodb";

/// (calls, error calls, stale answers) of the store, from /metrics.
fn store_metrics(admin_port: u16) -> Result<[f64; 3]> {
    let (_, body) = http_get(admin_port, "/metrics").context("no /metrics")?;
    Ok([
        metric_sum(&body, "certgate_store_calls_total", None),
        metric_sum(
            &body,
            "certgate_store_calls_total",
            Some("outcome=\"error\""),
        ),
        metric_sum(&body, "certgate_store_stale_served_total", None),
    ])
}

/// The top-level `store:` section of a configuration file: (start, end) byte offsets.
fn store_section(text: &str) -> Option<(usize, usize)> {
    let start = if text.starts_with("store:") {
        0
    } else {
        text.find("\nstore:")? + 1
    };
    let mut end = start
        + text[start..]
            .find('\n')
            .map_or(text.len() - start, |n| n + 1);
    for line in text[end..].split_inclusive('\n') {
        if line.trim().is_empty() || line.starts_with([' ', '\t']) {
            end += line.len();
        } else {
            break;
        }
    }
    Some((start, end))
}

/// The DynamoDB configurations: the bootstrapped file with its `store:` section replaced (same
/// cache_ttl for the cached one), written next to it so that relative paths (ca.pem, the
/// allowlist) resolve the same. Returns the bootstrapped cache_ttl.
fn write_configs(src: &Path, endpoint: &str, cached: &Path, cold: &Path) -> Result<String> {
    let text = std::fs::read_to_string(src)?;
    let (start, end) =
        store_section(&text).with_context(|| format!("no store: section in {}", src.display()))?;
    let ttl = text[start..end]
        .lines()
        .find_map(|l| l.trim().strip_prefix("cache_ttl:"))
        .and_then(|v| v.split_whitespace().next())
        .with_context(|| format!("no store.cache_ttl in {}", src.display()))?
        .to_owned();
    let store = |cache_ttl: &str, extra_store: &str, extra_dynamodb: &str| {
        format!(
            "{}store:\n  backend: dynamodb\n  cache_ttl: {cache_ttl}\n{extra_store}  dynamodb:\n    \
             region: eu-west-1\n    endpoint_url: {endpoint}\n{extra_dynamodb}{}",
            &text[..start],
            &text[end..]
        )
    };
    std::fs::write(cached, store(&ttl, "", ""))?;
    // Nothing cached, and nothing stale either: a failed read is a visible 503, not an old
    // answer served in its place.
    let timeout = env_or("COLD_TIMEOUT", "2s");
    let attempt = env_or("COLD_ATTEMPT_TIMEOUT", "1s");
    std::fs::write(
        cold,
        store(
            "0s",
            "  stale_if_error: 0s\n",
            &format!("    timeout: {timeout}\n    attempt_timeout: {attempt}\n"),
        ),
    )?;
    Ok(ttl)
}

/// One configuration's results.
struct Measured {
    row: String,
    commands: [Command; 2],
    load: Load,
}

/// One `certgate serve`, one load run, one row.
fn run_config(
    name: &str,
    config: &Path,
    (conns, conc): (&str, &str),
    ports: (u16, u16),
    moto: &Moto,
    run: &Run,
) -> Result<Measured> {
    let (grpc_port, admin_port) = ports;
    let hz = clock_ticks_per_sec();
    let mut serve = Command::new(run.bin("certgate"));
    serve
        .args(["serve", "--config"])
        .arg(config)
        .envs(AWS_ENV.iter().copied());
    log(&format!("[{name}] {}", shown(&serve)));
    let mut server = Proc::spawn_ready("certgate", &mut serve, Duration::from_secs(30), || {
        matches!(http_get(admin_port, "/readyz"), Some((200, _)))
    });
    let pid = server.pid().context("certgate exited")?;
    let pki = config.parent().context("config dir")?;
    let mut loadgen = Command::new(run.bin("examples/loadgen"));
    loadgen
        .arg("--target")
        .arg(format!("http://127.0.0.1:{grpc_port}"))
        .arg("--cert")
        .arg(pki.join("admin.pem"))
        .args([
            "--connections",
            conns,
            "--concurrency",
            conc,
            "--duration",
            &run.duration,
        ])
        .args(["--path", "/api/hello"]);
    log(&format!("[{name}] {}", shown(&loadgen)));
    let before = store_metrics(admin_port)?;
    let load_avg = crate::measure::load_average(1);
    let moto_pid = moto.proc.pid().context("moto_server exited")?;
    let moto_before = cpu_ticks(moto_pid)?;
    let ticks_before = cpu_ticks(pid)?;
    let load = Load::run(&mut loadgen, hz)?;
    let cpu = (cpu_ticks(pid)? - ticks_before) as f64 / hz;
    let moto_cpu = (cpu_ticks(moto_pid)? - moto_before) as f64 / hz;
    let rss_kib = crate::measure::peak_rss_kib(pid)?;
    let after = store_metrics(admin_port)?;
    eprint!("{}", load.output);

    log(&format!("[{name}] stopping certgate (SIGTERM)"));
    match server.terminate(Duration::from_secs(10)) {
        Some(0) => {}
        Some(code) => bail!("certgate ({name}) exited with status {code} after SIGTERM"),
        None => bail!("certgate ({name}) did not stop within 10s of SIGTERM"),
    }
    if load.field("requests").is_empty() {
        bail!("loadgen ({name}) failed without a report:\n{}", load.output);
    }
    let checks = (load.count("allowed") + load.count("denied")) as f64;
    let [calls, call_errors, stale] = [0, 1, 2].map(|i| after[i] - before[i]);
    let per_1000 = calls * 1000.0 / checks.max(1.0);
    log(&format!(
        "[{name}] {checks} checks, {calls} store calls ({per_1000:.2} per 1000 checks)"
    ));
    let secs = crate::measure::seconds(&run.duration)?;
    let moto_cpu = if name == "embedded" {
        "—".to_owned()
    } else {
        format!("{moto_cpu:.2} s")
    };
    let row = format!(
        "| {name} | {conns} × {conc} | {} | {} | {} | {} | {} / {} / {} | {cpu:.2} s ({:.2} \
         cores) | {:.1} MiB | {calls} ({call_errors} errors, {stale} stale) | {per_1000:.2} | \
         {moto_cpu} | {:.2} s | {load_avg} |",
        load.field("rps"),
        load.lat("p50_us"),
        load.lat("p99_us"),
        load.lat("p99.9_us"),
        load.field("allowed"),
        load.field("denied"),
        load.field("errors"),
        cpu / secs,
        rss_kib as f64 / 1024.0,
        load.cpu_secs
    );
    Ok(Measured {
        row,
        commands: [serve, loadgen],
        load,
    })
}

/// `cargo xtask bench dynamodb`.
pub fn bench(run: &Run) -> Result<()> {
    let connections = env_or("CONNECTIONS", "4");
    let concurrency = env_or("CONCURRENCY", "16");
    let cold_connections = env_or("COLD_CONNECTIONS", "1");
    let cold_concurrency = env_or("COLD_CONCURRENCY", "4");
    let build = cargo_build(&run.profile, &["--examples", "--bin", "certgate"])?;
    let certgate = run.bin("certgate");
    let work = tempfile::Builder::new()
        .prefix("certgate-bench-dynamodb.")
        .tempdir()?;
    let tmp = |cmd: &Command| for_report(cmd, work.path());

    let moto = Moto::start();
    let moto_cmd = format!(
        "{} -H 127.0.0.1 -p {}",
        crate::measure::relative(&testkit::moto_binary()),
        moto.port
    );
    let (grpc_port, admin_port) = (free_port(), free_port());
    let pki = work.path().join("pki");
    let bootstrap = crate::measure::bootstrap(&certgate, &pki, grpc_port, admin_port)?;
    let embedded = pki.join("certgate.yaml");
    let cached = pki.join("dynamodb.yaml");
    let cold = pki.join("dynamodb-cold.yaml");
    let ttl = write_configs(&embedded, &moto.endpoint(), &cached, &cold)?;

    let mut init = Command::new(&certgate);
    init.args(["store", "init", "--config"]).arg(&cached);
    let mut migrate = Command::new(&certgate);
    migrate
        .args(["store", "migrate", "--config"])
        .arg(&embedded)
        .arg("--to")
        .arg(&cached);
    // init also warms moto up (its first DynamoDB request loads the service model).
    for cmd in [&mut init, &mut migrate] {
        crate::measure::run(cmd.envs(AWS_ENV.iter().copied()))?;
    }

    let ports = (grpc_port, admin_port);
    let full = (connections.as_str(), concurrency.as_str());
    let light = (cold_connections.as_str(), cold_concurrency.as_str());
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for (name, config, load) in [
        ("embedded", &embedded, full),
        ("dynamodb-cached", &cached, full),
        ("dynamodb-cold", &cold, light),
    ] {
        let m = run_config(name, config, load, ports, &moto, run)?;
        // In a full run every configuration with a cache must allow everything; the cold one
        // reads moto for every check and may miss a deadline on a loaded machine, which the
        // report notes.
        let strict = !run.quick && name != "dynamodb-cold";
        notes.extend(m.load.expect_allowed(name, strict)?);
        results.push((name, m));
    }

    let cold_rps: f64 = results[2].1.load.field("rps").parse().unwrap_or(0.0);
    let cold_round_ms = if cold_rps > 0.0 {
        format!("{:.0}", 1000.0 / cold_rps)
    } else {
        "n/a".into()
    };
    let moto_python = testkit::moto_binary().with_file_name("python");
    let moto_version = Command::new(moto_python)
        .args(["-c", "import moto; print(moto.__version__)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".into(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        });
    let section = |path: &Path| -> Result<String> {
        let text = std::fs::read_to_string(path)?;
        let (start, end) = store_section(&text).context("store section")?;
        Ok(text[start..end].trim_end().to_owned())
    };
    let nproc = report::nproc();

    let (_, end) = report::markers(SECTION);
    let mut b = report::machine_head(SECTION, "DynamoDB store", run.quick_note(), &notes);
    writeln!(
        b,
        "| toolchain | {} ({} build) |",
        report::rustc(),
        run.profile
    )?;
    writeln!(
        b,
        "| DynamoDB | moto_server {moto_version} (Python) on loopback, same machine |\n"
    )?;
    writeln!(b, "### Commands\n\n```\n{build}\n{moto_cmd} &")?;
    let aws: Vec<String> = AWS_ENV.iter().map(|(k, v)| format!("{k}={v}")).collect();
    writeln!(b, "export {}", aws.join(" "))?;
    writeln!(b, "{}", tmp(&bootstrap))?;
    writeln!(
        b,
        "# dynamodb.yaml, dynamodb-cold.yaml: certgate.yaml with its store: section replaced \
         (below)"
    )?;
    writeln!(b, "{}\n{}", tmp(&init), tmp(&migrate))?;
    for (_, m) in &results {
        writeln!(b, "{}\n{}", tmp(&m.commands[0]), tmp(&m.commands[1]))?;
    }
    writeln!(
        b,
        "```\n\nThe `store:` sections (the rest of each file is the bootstrapped one):\n"
    )?;
    writeln!(
        b,
        "```yaml\n# certgate.yaml (embedded, as bootstrapped)\n{}",
        section(&embedded)?
    )?;
    writeln!(
        b,
        "# dynamodb.yaml (dynamodb-cached)\n{}",
        section(&cached)?
    )?;
    writeln!(
        b,
        "# dynamodb-cold.yaml (dynamodb-cold)\n{}\n```\n",
        section(&cold)?
    )?;
    writeln!(b, "### ext_authz gRPC `Check` over loopback, by store\n")?;
    writeln!(
        b,
        "{} of `GET /api/hello` with the enrolled admin certificate per configuration, one\n\
         configuration at a time; certgate, the load generator and moto share the machine's\n\
         {nproc} cores.\n",
        run.duration
    )?;
    writeln!(
        b,
        "| configuration | connections × in flight | checks/s | p50 | p99 | p99.9 | allowed / \
         denied / errors | certgate CPU | certgate peak RSS | store calls during the load | \
         store calls per 1000 checks | moto CPU | loadgen CPU | load average (1 min) before \
         |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )?;
    for (_, m) in &results {
        writeln!(b, "{}", m.row)?;
    }
    write!(
        b,
        "{}",
        include_str!("dynamodb-notes.md")
            .replace("{TTL}", &ttl)
            .replace("{COLD_CONCURRENCY}", &cold_concurrency)
            .replace("{COLD_ROUND_MS}", &cold_round_ms)
            .replace("{NPROC}", &nproc.to_string())
    )?;
    writeln!(b, "{end}")?;
    report::write_section(SECTION, &run.out("dynamodb."), &b, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_section_ends_at_the_next_top_level_key() {
        let text =
            "listen:\n  grpc: x\nstore:\n  backend: embedded\n\n  cache_ttl: 2s # c\nroles: {}\n";
        let (start, end) = store_section(text).unwrap();
        assert_eq!(
            &text[start..end],
            "store:\n  backend: embedded\n\n  cache_ttl: 2s # c\n"
        );
    }

    #[test]
    fn metric_sums_match_the_name_exactly_and_filter_by_label() {
        let body = "# HELP certgate_store_calls_total x\n\
                    certgate_store_calls_total{outcome=\"ok\"} 3\n\
                    certgate_store_calls_total{outcome=\"error\"} 2\n\
                    certgate_store_calls_total_other 100\n";
        assert_eq!(metric_sum(body, "certgate_store_calls_total", None), 5.0);
        let errors = metric_sum(
            body,
            "certgate_store_calls_total",
            Some("outcome=\"error\""),
        );
        assert_eq!(errors, 2.0);
    }
}
