//! What observing a check costs (BENCHMARKS.md "Decision log and tracing"): the cached
//! decision of `benches/decision.rs` (`certgate bootstrap` admin, identity and store answers
//! cached, an allow) with the JSON log formatter writing to a sink, under
//!
//! - `observe/log_off`: log level `warn` (no check span, no decision event);
//! - `observe/log_deny_only`: `info`, `log.decisions: deny` (span, no event for an allow);
//! - `observe/log_all`: `info`, `log.decisions: all` (span and one event per check);
//! - `observe/trace_1pct`, `observe/trace_100pct`: `log.decisions: deny` plus OpenTelemetry
//!   spans sampled at 1% and 100%, exported in batches to an endpoint nobody listens on
//!   (the export fails off the hot path; what is measured is building and queueing spans).
//!
//! Run: `cargo bench --bench observe -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::path::Path;

use criterion::Criterion;
use tokio::runtime::Runtime;
use tracing_subscriber::layer::SubscriberExt as _;

use certgate::bootstrap::{self, BootstrapArgs};
use certgate::check::{CheckInput, Checker};
use certgate::config::Config;
use certgate::metrics::Metrics;
use certgate::observe::{TracingSettings, otel};

fn setup(rt: &Runtime, dir: &Path) -> (Checker, Vec<u8>, i64) {
    let now = certgate::clock::unix_now();
    let args = BootstrapArgs {
        out_dir: dir.to_owned(),
        domain: "example.com".into(),
        grpc_listen: ([127, 0, 0, 1], 0).into(),
        admin_listen: ([127, 0, 0, 1], 0).into(),
        admin_api_listen: None,
        force: false,
    };
    rt.block_on(bootstrap::run(&args, now)).expect("bootstrap");
    let config = Config::load(&dir.join("certgate.yaml")).expect("config");
    let metrics = Metrics::new();
    let store = rt
        .block_on(certgate::app::open_store(&config, &metrics))
        .expect("store");
    let pem = std::fs::read_to_string(dir.join("admin.pem")).expect("admin.pem");
    let encoded: String =
        percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC).to_string();
    (
        Checker::new(config, store, metrics),
        encoded.into_bytes(),
        now,
    )
}

/// Put the bootstrap configuration plus `extra` in force.
fn configure(checker: &Checker, dir: &Path, extra: &str) {
    let base = std::fs::read_to_string(dir.join("certgate.yaml")).expect("config");
    let path = dir.join("observe.yaml");
    std::fs::write(&path, format!("{base}{extra}")).expect("write");
    checker.replace_config(Config::load(&path).expect("config"));
}

fn bench_check(
    c: &mut Criterion,
    rt: &Runtime,
    checker: &Checker,
    cert: &[u8],
    now: i64,
    name: &str,
) {
    let input = CheckInput {
        certificate: Some(cert),
        method: "GET",
        path: "/api/hello",
        ..Default::default()
    };
    let outcome = rt.block_on(checker.check(input, now));
    assert!(outcome.decision.is_ok(), "the bench measures an allow");
    c.bench_function(name, |b| {
        b.iter(|| black_box(rt.block_on(checker.check(black_box(input), now))))
    });
}

fn json_to_sink(
    level: &str,
) -> impl tracing::Subscriber + Send + Sync + for<'s> tracing_subscriber::registry::LookupSpan<'s> {
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_writer(std::io::sink)
        .with_filter(tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::registry().with(layer)
}

use tracing_subscriber::Layer as _;

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (checker, cert, now) = setup(&rt, dir.path());
    for (name, level, decisions) in [
        ("observe/log_off", "warn", "deny"),
        ("observe/log_deny_only", "info", "deny"),
        ("observe/log_all", "info", "all"),
    ] {
        configure(
            &checker,
            dir.path(),
            &format!("log: {{decisions: {decisions}}}\n"),
        );
        tracing::subscriber::with_default(json_to_sink(level), || {
            bench_check(c, &rt, &checker, &cert, now, name)
        });
    }
    configure(&checker, dir.path(), "log: {decisions: deny}\n");
    // The exporter's connection lives on the runtime; spans are sampled per check.
    let _runtime = rt.enter();
    for (name, ratio) in [("observe/trace_1pct", 0.01), ("observe/trace_100pct", 1.0)] {
        let settings = TracingSettings {
            enabled: true,
            endpoint: Some("http://127.0.0.1:9".into()),
            sample_ratio: Some(ratio),
        };
        let (layer, _exporting) = otel::layer(&settings).expect("otel").expect("enabled");
        let subscriber = json_to_sink("info").with(layer);
        tracing::subscriber::with_default(subscriber, || {
            bench_check(c, &rt, &checker, &cert, now, name)
        });
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
        .configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
}
