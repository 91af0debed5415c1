//! The soak (`cargo xtask soak`, which builds and runs this): certgate behind Envoy 1.40 under
//! a steady load of about half its measured capacity while the churn (churn.rs) changes the
//! configuration, the trust bundle, the CRLs and the store underneath, for `--duration`.
//! Every response is judged against what the decision may be for that certificate at that
//! moment (timeline.rs); certgate's RSS and open file descriptors are sampled all along.
//!
//! Exits 1 on any wrong answer, on growth of RSS or fds beyond 10 % after the warm-up (the
//! first fifth of the run), when a churn action failed (a moto restart included), when no
//! allow was right after a re-seeded moto restart, or when certgate's reload counters do
//! not match the edits made.
//!
//! Example: `cargo run --example soak -- --duration 30s --bin-dir target/debug`

mod churn;
mod load;
mod pki;
mod report;
mod restart;
mod timeline;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Parser;
use testkit::{Moto, Proc, envoy_binary, free_port, http_get, port_open};

use churn::{Churn, Expect, Setup, Windows};
use timeline::{BAD, Factor, OK};

/// Slack on top of each documented propagation interval for a busy, shared machine.
const SLACK: Duration = Duration::from_secs(2);
/// How long after the load the last edits may take to be counted by certgate.
const RELOAD_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(about = "certgate soak under churn through Envoy")]
struct Args {
    /// How long to load (e.g. 30s, 10m).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// embedded or dynamodb (moto, frozen every minute, killed and restarted every two).
    #[arg(long, default_value = "embedded")]
    backend: String,
    /// Requests per second; default: half of the capacity measured first.
    #[arg(long)]
    rate: Option<f64>,
    /// Distinct principals (one certificate each, alternately from each CA).
    #[arg(long, default_value_t = 48)]
    principals: usize,
    /// Where certgate and examples/upstream were built.
    #[arg(long, default_value = "target/debug")]
    bin_dir: PathBuf,
    /// Write the report (Markdown) here too.
    #[arg(long)]
    report: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(soak(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Envoy's configuration: envoy/bench/front-proxy.yaml with ext_authz to certgate.
fn envoy_config(dir: &std::path::Path, ports: [u16; 4]) -> Result<String> {
    let [listen, envoy_admin, upstream, grpc] = ports;
    let bench = testkit::repo().join("envoy/bench");
    let filter = std::fs::read_to_string(bench.join("ext_authz.yaml"))?;
    let mut lines = Vec::new();
    for line in std::fs::read_to_string(bench.join("front-proxy.yaml"))?.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        match line.trim() {
            "{{AUTHZ_FILTER}}" => lines.extend(
                filter
                    .lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .map(|l| format!("{indent}{l}")),
            ),
            "{{ROUTE_FILTER_CONFIG}}" => {}
            _ => lines.push(line.to_owned()),
        }
    }
    let file = |name: &str| dir.join(name).display().to_string();
    let values = [
        ("LISTEN_PORT", listen.to_string()),
        ("ENVOY_ADMIN_PORT", envoy_admin.to_string()),
        ("UPSTREAM_PORT", upstream.to_string()),
        ("SERVER_CERT", file("server.pem")),
        ("SERVER_KEY", file("server-key.pem")),
        ("CA_BUNDLE", file("envoy-ca.pem")),
        (
            "AUTHZ_ADDRESS",
            format!("socket_address: {{address: 127.0.0.1, port_value: {grpc}}}"),
        ),
        ("FORWARD_CLIENT_CERT_DETAILS", "SANITIZE".to_owned()),
    ];
    let text = values.iter().fold(lines.join("\n") + "\n", |text, (k, v)| {
        text.replace(&format!("{{{{{k}}}}}"), v)
    });
    // The debug build on a shared machine: a check may wait its turn for a core.
    Ok(text.replace("timeout: 0.5s", "timeout: 2s"))
}

/// RSS (KiB) and open fds of `pid`.
fn sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

/// certgate_config_reloads_total by outcome: (success, failure).
fn reloads(admin: u16) -> (f64, f64) {
    let body = http_get(admin, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let count = |outcome: &str| {
        body.lines()
            .filter(|l| l.starts_with("certgate_config_reloads_total{"))
            .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    (count("success"), count("failure"))
}

async fn soak(args: Args) -> Result<bool> {
    let work = tempfile::Builder::new()
        .prefix("certgate-soak.")
        .tempdir()?;
    let dir = work.path().to_path_buf();
    let bin = testkit::repo().join(&args.bin_dir);
    let pki = pki::write(&dir, args.principals)?;
    let ca_of: Arc<Vec<usize>> = Arc::new(pki.clients.iter().map(|c| c.ca).collect());
    let moto = (args.backend == "dynamodb").then(Moto::start);
    let endpoint = moto.as_ref().map(Moto::endpoint);
    let moto = moto.map(|m| Arc::new(Mutex::new(Some(m))));
    let env: Vec<(String, String)> = testkit::AWS_ENV
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let (grpc, admin) = (free_port(), free_port());
    let setup = Setup {
        dir: dir.clone(),
        config: dir.join("certgate.yaml"),
        certgate: bin.join("certgate"),
        grpc,
        admin,
        dynamodb: endpoint,
        moto,
        env: env.clone(),
    };
    let n = pki.clients.len();
    let expect = Arc::new(Mutex::new(Expect {
        suspended: (0..n).map(|_| Factor::new(OK)).collect(),
        revoked: (0..n).map(|_| Factor::new(OK)).collect(),
        trusted: [Factor::new(OK), Factor::new(BAD)],
        extra: Factor::new(BAD),
        store: Factor::new(OK),
        enrolled: (0..n).map(|_| Factor::new(OK)).collect(),
        restarts: Vec::new(),
    }));
    let windows = Windows {
        reload: Duration::from_secs(1) + SLACK,
        store: Duration::from_secs(1) + SLACK,
        crl: Duration::from_millis(1100) + SLACK,
    };
    let ports = [free_port(), free_port(), free_port(), grpc];
    let clients = Arc::new(load::Clients::new(&pki, ports[0])?);
    let mut churn = Churn::new(setup, pki, Arc::clone(&expect), windows, args.duration);
    churn.prepare()?;
    churn.enrol()?;

    let up = ports[2];
    let _upstream = Proc::spawn_ready(
        "upstream",
        Command::new(bin.join("examples/upstream")).arg(format!("127.0.0.1:{up}")),
        Duration::from_secs(10),
        || port_open(up),
    );
    let certgate = Proc::spawn_ready(
        "certgate",
        Command::new(bin.join("certgate"))
            .args(["serve", "--config"])
            .arg(&churn.setup.config)
            .envs(env),
        Duration::from_secs(20),
        || matches!(http_get(admin, "/readyz"), Some((200, _))),
    );
    let pid = certgate.pid().context("certgate exited")?;
    std::fs::write(dir.join("envoy.yaml"), envoy_config(&dir, ports)?)?;
    let envoy_admin = ports[1];
    let _envoy = Proc::spawn_ready(
        "envoy",
        Command::new(envoy_binary())
            .args(["--concurrency", "1", "--log-level", "warn"])
            .arg("--disable-hot-restart")
            .arg("-c")
            .arg(dir.join("envoy.yaml")),
        Duration::from_secs(20),
        || matches!(http_get(envoy_admin, "/ready"), Some((200, _))),
    );

    let capacity = match args.rate {
        Some(_) => None,
        None => Some(clients.capacity(32, Duration::from_secs(5)).await),
    };
    let rate = args
        .rate
        .unwrap_or_else(|| capacity.unwrap_or(0.0) / 2.0)
        .max(1.0);
    eprintln!("soak: {rate:.0} req/s for {:?}", args.duration);
    let reloads_before = reloads(admin);
    let load_before = load_average();

    let stop = Arc::new(AtomicBool::new(false));
    let sample_every = if args.duration >= Duration::from_secs(180) {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(2)
    };
    let sampler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some((rss, fds)) = sample(pid) {
                    samples.push((start.elapsed().as_secs(), rss, fds));
                }
                let next = sample_every * samples.len() as u32;
                while !stop.load(Ordering::Relaxed) && start.elapsed() < next {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            samples
        })
    };
    let churn_thread = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            churn.run(&stop);
            churn
        })
    };
    let load = tokio::spawn(load::run(
        Arc::clone(&clients),
        Arc::clone(&expect),
        ca_of,
        rate,
        Arc::clone(&stop),
    ));
    let started = Instant::now();
    tokio::time::sleep(args.duration).await;
    stop.store(true, Ordering::Relaxed);
    let tally = load.await?;
    let elapsed = started.elapsed();
    let churn = churn_thread.join().expect("churn thread");
    let samples = sampler.join().expect("sampler thread");
    // The last edits may still be within their reload interval, or longer on a machine
    // so loaded that certgate waits its turn for a core: give them time to be counted.
    let ended = Instant::now();
    let made = (
        churn.counts.valid_edits as f64,
        churn.counts.invalid_edits as f64,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counted = |after: (f64, f64)| (after.0 - reloads_before.0, after.1 - reloads_before.1);
    let mut reloads_after = reloads(admin);
    while counted(reloads_after) != made && ended.elapsed() < RELOAD_GRACE {
        tokio::time::sleep(Duration::from_millis(250)).await;
        reloads_after = reloads(admin);
    }
    let reloads_counted_after = ended.elapsed();
    let alive = sample(pid).is_some();

    let verdict = report::Verdict {
        args_duration: args.duration,
        elapsed,
        backend: &args.backend,
        rate,
        capacity,
        principals: n,
        tally,
        samples,
        counts: churn.counts,
        reloads: counted(reloads_after),
        reloads_counted_after,
        load_before,
        load_after: load_average(),
        alive,
    };
    let (text, ok) = verdict.render();
    println!("{text}");
    if let Some(path) = &args.report {
        std::fs::write(path, &text)?;
    }
    if !ok {
        eprintln!(
            "{}",
            certgate
                .logs()
                .lines()
                .rev()
                // Decisions are in the report; the rest (reloads, store errors) is not.
                .filter(|l| !l.contains("\"message\":\"decision\""))
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(ok)
}

/// /proc/loadavg's three averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
