//! Direct gRPC `Check` load against `certgate serve` on a bootstrapped dev PKI
//! (examples/loadgen.rs, then h2load when installed), certgate's CPU time and peak RSS, then
//! the criterion benches of the decision (benches/decision.rs).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use testkit::{Proc, free_port, http_get};

use crate::measure::{Load, cargo_build, clock_ticks_per_sec, cpu_ticks, for_report, shown};
use crate::report::{self, log};
use crate::{Run, env_or};

const SECTION: &str = "cargo xtask bench grpc";

/// `taskset -c CPU` before `cmd` when PIN=1.
fn pinned(pin: bool, cpu: &str, program: &Path) -> Command {
    if pin {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", cpu]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// The sum of certgate_decisions_total on the admin listener.
fn decisions(admin_port: u16) -> f64 {
    let (_, body) = http_get(admin_port, "/metrics").unwrap_or_default();
    crate::measure::metric_sum(&body, "certgate_decisions_total", None)
}

/// What h2load measured (the second table row).
struct H2load {
    commands: [String; 2],
    output: String,
    decisions: f64,
    cpu_secs: f64,
    client_cpu_secs: f64,
}

/// `cargo xtask bench grpc`.
pub fn bench(run: &Run) -> Result<()> {
    let connections = env_or("CONNECTIONS", "4");
    let concurrency = env_or("CONCURRENCY", "16");
    // Streams in flight per connection for the h2load row: deep enough to keep certgate busy
    // (throughput, not latency: the mean latency is mostly queueing at this depth).
    let h2load_streams = env_or("H2LOAD_STREAMS", "128");
    let skip_criterion = run.quick || env_or("SKIP_CRITERION", "0") == "1";
    let pin = env_or("PIN", "0") == "1";

    let build = cargo_build(&run.profile, &["--examples", "--bin", "certgate"])?;
    let certgate = run.bin("certgate");
    let loadgen = run.bin("examples/loadgen");
    let work = tempfile::Builder::new()
        .prefix("certgate-bench.")
        .tempdir()?;
    let tmp = |cmd: &Command| for_report(cmd, work.path());
    let pki = work.path().join("pki");
    let (grpc_port, admin_port) = (free_port(), free_port());

    let bootstrap = crate::measure::bootstrap(&certgate, &pki, grpc_port, admin_port)?;

    let mut serve = pinned(pin, "0", &certgate);
    serve
        .args(["serve", "--config"])
        .arg(pki.join("certgate.yaml"));
    log(&shown(&serve));
    let mut server = Proc::spawn_ready("certgate", &mut serve, Duration::from_secs(10), || {
        matches!(http_get(admin_port, "/readyz"), Some((200, _)))
    });
    let pid = server.pid().context("certgate exited")?;
    let hz = clock_ticks_per_sec();

    let mut loadgen_cmd = pinned(pin, "1", &loadgen);
    loadgen_cmd
        .arg("--target")
        .arg(format!("http://127.0.0.1:{grpc_port}"))
        .arg("--cert")
        .arg(pki.join("admin.pem"))
        .args(["--connections", &connections, "--concurrency", &concurrency])
        .args(["--duration", &run.duration, "--path", "/api/hello"]);
    log(&shown(&loadgen_cmd));
    let load_before = crate::measure::load_average(3);
    let ticks_before = cpu_ticks(pid)?;
    let load = Load::run(&mut loadgen_cmd, hz)?;
    eprint!("{}", load.output);
    let cpu_secs = (cpu_ticks(pid)? - ticks_before) as f64 / hz;
    let rss_kib = crate::measure::peak_rss_kib(pid)?;
    let mut notes: Vec<String> = load
        .expect_allowed("gRPC load", !run.quick)?
        .into_iter()
        .collect();

    // The same request from h2load (nghttp2, C, one thread): a much cheaper client, so more
    // of the cores are left to certgate. The gRPC-framed CheckRequest comes from loadgen.
    let h2 = if Command::new("h2load").arg("--version").output().is_ok() {
        let body = work.path().join("check-request.bin");
        let mut write = Command::new(&loadgen);
        write
            .arg("--target")
            .arg(format!("http://127.0.0.1:{grpc_port}"))
            .arg("--cert")
            .arg(pki.join("admin.pem"))
            .args(["--path", "/api/hello", "--write-request"])
            .arg(&body);
        crate::measure::run(&mut write)?;
        let secs = run.duration.trim_end_matches('s');
        let mut h2load = pinned(pin, "1", Path::new("h2load"));
        h2load
            .args(["-c", &connections, "-m", &h2load_streams, "-D", secs, "-d"])
            .arg(&body)
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg(format!(
                "http://127.0.0.1:{grpc_port}/envoy.service.auth.v3.Authorization/Check"
            ));
        log(&shown(&h2load));
        let decisions_before = decisions(admin_port);
        let ticks_before = cpu_ticks(pid)?;
        let client = Load::run(&mut h2load, hz)?;
        // Every check is meant to be allowed: gRPC carries a deny in a 200, but any other
        // status is a broken run, or in a quick run one to report.
        let counts: Vec<u64> = client
            .output
            .lines()
            .find_map(|l| l.strip_prefix("status codes: "))
            .map(|codes| {
                codes
                    .split(", ")
                    .map(|c| {
                        c.split(' ')
                            .next()
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let ok = counts.first().copied().unwrap_or(0);
        let other: u64 = counts.iter().skip(1).sum();
        if !client.ok || ok == 0 || (other > 0 && !run.quick) {
            bail!("h2load failed or saw non-2xx answers:\n{}", client.output);
        }
        if other > 0 {
            notes.push(report::shortfall(format!(
                "h2load: {other} of {} answers not 2xx",
                ok + other
            )));
        }
        let h2 = H2load {
            commands: [tmp(&write), tmp(&h2load)],
            decisions: decisions(admin_port) - decisions_before,
            cpu_secs: (cpu_ticks(pid)? - ticks_before) as f64 / hz,
            client_cpu_secs: client.cpu_secs,
            output: client.output,
        };
        for line in h2.output.lines().filter(|l| {
            [
                "finished in",
                "requests:",
                "status codes",
                "time for request",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        }) {
            println!("{line}");
        }
        Some(h2)
    } else {
        log("h2load not installed (Debian: nghttp2-client): skipping the h2load row");
        None
    };

    log("stopping certgate (SIGTERM)");
    match server.terminate(Duration::from_secs(10)) {
        Some(0) => {}
        Some(code) => bail!("certgate exited with status {code} after SIGTERM"),
        None => bail!("certgate did not stop within 10s of SIGTERM"),
    }

    let criterion = if skip_criterion {
        None
    } else {
        let mut bench = Command::new("cargo");
        bench.args(["bench", "--bench", "decision", "--"]);
        bench.args(["--warm-up-time", "1", "--measurement-time", "3"]);
        crate::measure::run(&mut bench)?;
        Some((shown(&bench), criterion_rows()?))
    };

    let load_secs = crate::measure::seconds(&run.duration)?;
    let checks = (load.count("allowed") + load.count("denied")) as f64;
    let per_cpu = |n: f64, c: f64| {
        if c > 0.0 {
            format!("{:.0}", n / c)
        } else {
            "n/a".into()
        }
    };
    let (_, end) = report::markers(SECTION);
    let mut b = report::machine_head(
        SECTION,
        "ext_authz decision and gRPC load",
        run.quick_note(),
        &notes,
    );
    writeln!(
        b,
        "| load average before the load run (1/5/15 min) | {load_before} |"
    )?;
    writeln!(b, "| toolchain | {} |\n", report::rustc())?;
    writeln!(b, "### Commands\n\n```\n{build}")?;
    writeln!(b, "{}", tmp(&bootstrap))?;
    writeln!(b, "{}", tmp(&serve))?;
    writeln!(b, "{}", tmp(&loadgen_cmd))?;
    if let Some(h2) = &h2 {
        writeln!(b, "{}\n{}", h2.commands[0], h2.commands[1])?;
    }
    if let Some((cmd, _)) = &criterion {
        writeln!(b, "{cmd}")?;
    }
    writeln!(b, "```\n\n### ext_authz gRPC `Check` over loopback\n")?;
    writeln!(
        b,
        "{connections} HTTP/2 connections × {concurrency} requests in flight, {}, one\nenrolled \
         admin certificate (identity and store cache hits after the first request),\n`GET \
         /api/hello`. Load generator and certgate share the machine's {} cores{}.\n",
        run.duration,
        report::nproc(),
        if pin {
            " (pinned: certgate CPU 0, loadgen CPU 1)"
        } else {
            ""
        }
    )?;
    writeln!(
        b,
        "| checks/s | p50 | p90 | p99 | p99.9 | max | certgate CPU | checks per certgate \
         CPU-second | certgate peak RSS | loadgen CPU |\n| --- | --- | --- | --- | --- | --- | \
         --- | --- | --- | --- |"
    )?;
    writeln!(
        b,
        "| {} | {} | {} | {} | {} | {} | {cpu_secs:.2} s ({:.2} cores) | {} | {:.1} MiB | \
         {:.2} s |",
        load.field("rps"),
        load.lat("p50_us"),
        load.lat("p90_us"),
        load.lat("p99_us"),
        load.lat("p99.9_us"),
        load.lat("max_us"),
        cpu_secs / load_secs,
        per_cpu(checks, cpu_secs),
        rss_kib as f64 / 1024.0,
        load.cpu_secs
    )?;
    if let Some(h2) = &h2 {
        let line = |prefix: &str| {
            h2.output
                .lines()
                .find(|l| l.starts_with(prefix))
                .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let word = |v: &[String], i: usize| v.get(i).cloned().unwrap_or_default();
        let finished = line("finished in");
        let rps: f64 = word(&finished, 3).replace(',', "").parse().unwrap_or(0.0);
        // h2load's "time for request" line: min max mean sd (no percentiles).
        let timing = line("time for request:");
        writeln!(
            b,
            "| {rps:.0} (h2load) | mean {} | | | | {} | {:.2} s | {} | | {:.2} s |",
            word(&timing, 5),
            word(&timing, 4),
            h2.cpu_secs,
            per_cpu(h2.decisions, h2.cpu_secs),
            h2.client_cpu_secs
        )?;
        let ok = word(&line("requests:"), 7);
        writeln!(
            b,
            "\nRequests {}: allowed {}, denied {}, errors {}. certgate CPU is\nutime+stime of \
             its process during the load (/proc/PID/stat), peak RSS its VmHWM;\nloadgen CPU is \
             user+sys of the load generator.\nSecond row: the same gRPC request body sent by \
             h2load (nghttp2's C load generator,\none thread, {connections} connections × \
             {h2load_streams} streams in flight: a throughput run; the\nlatency at that depth is \
             mostly queueing): {ok} requests answered, {}\ndecisions counted by certgate; h2load \
             reports min/max/mean/sd, not percentiles.",
            load.field("requests"),
            load.field("allowed"),
            load.field("denied"),
            load.field("errors"),
            h2.decisions
        )?;
    } else {
        writeln!(
            b,
            "\nRequests {}: allowed {}, denied {}, errors {}. certgate CPU is\nutime+stime of \
             its process during the load (/proc/PID/stat), peak RSS its VmHWM;\nloadgen CPU is \
             user+sys of the load generator.",
            load.field("requests"),
            load.field("allowed"),
            load.field("denied"),
            load.field("errors")
        )?;
    }
    if let Some((_, rows)) = &criterion {
        writeln!(
            b,
            "\n### Decision, in process (criterion)\n\nMedian time per iteration, with \
             criterion's 95% confidence interval of the median.\nSee `benches/decision.rs` for \
             what each bench covers.\n\n| bench | median | 95% CI |\n| --- | --- | --- |\n{rows}"
        )?;
    }
    writeln!(b, "{end}")?;
    report::write_section(SECTION, &run.out(""), &b, true)
}

/// One table row per criterion bench: median and its 95% confidence interval.
fn criterion_rows() -> Result<String> {
    let root = testkit::repo().join("target/criterion");
    let mut estimates = Vec::new();
    for group in std::fs::read_dir(&root)?.flatten() {
        let Ok(benches) = std::fs::read_dir(group.path()) else {
            continue;
        };
        for bench in benches.flatten() {
            let new = bench.path().join("new");
            if new.join("estimates.json").exists() {
                estimates.push(new);
            }
        }
    }
    estimates.sort();
    let fmt = |ns: f64| {
        if ns >= 1000.0 {
            format!("{:.2} µs", ns / 1000.0)
        } else {
            format!("{ns:.0} ns")
        }
    };
    let mut rows = Vec::new();
    for dir in estimates {
        let json = |f: &str| -> Result<serde_json::Value> {
            Ok(serde_json::from_str(&std::fs::read_to_string(
                dir.join(f),
            )?)?)
        };
        let (bench, e) = (json("benchmark.json")?, json("estimates.json")?);
        let median = &e["median"];
        let num = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
        rows.push(format!(
            "| `{}` | {} | {} – {} |",
            bench["full_id"].as_str().unwrap_or("?"),
            fmt(num(&median["point_estimate"])),
            fmt(num(&median["confidence_interval"]["lower_bound"])),
            fmt(num(&median["confidence_interval"]["upper_bound"]))
        ));
    }
    Ok(rows.join("\n"))
}
