//! CRL benchmarks (BENCHMARKS.md, section "CRL"):
//!
//! - `crl/lookup_*`: one revocation lookup (serial → hash → directory → bucket)
//!   in the index of a 1,000,000-entry CRL, for listed and unlisted random serials;
//! - `crl/load_verify_1m`: decode + parse + signature + index of that CRL (time);
//! - `check/cached_decision_*`: a full `Checker::check` of a cached identity with CRLs off
//!   and with the 1M-entry CRL in force.
//!
//! Peak memory of a load is measured in a fresh process, reading VmHWM:
//! `cargo bench --bench crl -- --peak-memory`.
//!
//! Under `cargo test --benches` (no `--bench` argument) every benchmark runs once on a
//! 10,000-entry CRL, as a smoke test.

use std::hint::black_box;
use std::sync::Arc;

use certgate::cert::Serial;
use certgate::check::{CheckInput, Checker};
use certgate::config::Config;
use certgate::crl::VerifiedCrl;
use certgate::metrics::Metrics;
use certgate::pki::{CertAuthority, CertSpec, CrlSpec};
use criterion::{BatchSize, Criterion};
use time::{Duration, OffsetDateTime};

const ENTRIES: u64 = 1_000_000;

/// The i-th listed serial: scattered, positive, 8 bytes.
fn listed(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 2) | (1 << 61)
}

struct Fixture {
    ca: CertAuthority,
    crl_der: Vec<u8>,
    dir: tempfile::TempDir,
    now: i64,
}

fn fixture(entries: u64) -> Fixture {
    let now = certgate::clock::unix_now();
    let t = OffsetDateTime::from_unix_timestamp(now).expect("time");
    let ca =
        CertAuthority::new("bench CA", t - Duration::days(1), t + Duration::days(365)).expect("CA");
    let started = std::time::Instant::now();
    let crl_der = ca
        .crl(&CrlSpec {
            revoked: (0..entries)
                .map(|i| (listed(i), Some(rcgen::RevocationReason::KeyCompromise)))
                .collect(),
            ..CrlSpec::new(t - Duration::minutes(5), Duration::days(1))
        })
        .expect("CRL")
        .der;
    eprintln!(
        "generated a {entries}-entry CRL: {} bytes in {:?}",
        crl_der.len(),
        started.elapsed()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("write");
    Fixture {
        ca,
        crl_der,
        dir,
        now,
    }
}

fn config(f: &Fixture, with_crl: bool) -> Config {
    let crl = if with_crl {
        "crl:\n  issuers:\n    - ca: \"CN=bench CA, O=certgate dev\"\n      sources: [{file: bench.crl}]\n"
    } else {
        ""
    };
    let yaml = format!(
        "trust: {{ca_bundle: ca.pem}}\nstore: {{path: bench.db, cache_ttl: 1h}}\n\
         identity: {{cache_ttl: 1h}}\nroles_by_type: {{worker: [worker]}}\n\
         policies:\n  default:\n    require_enrolment: false\n    permissions: {{worker: [\"GET /api/*\"]}}\n{crl}"
    );
    Config::from_yaml(&yaml, &f.dir.path().join("certgate.yaml")).expect("valid config")
}

fn load(f: &Fixture, config: &Config) -> VerifiedCrl {
    VerifiedCrl::load(
        &f.crl_der,
        &config.trust,
        &config.crl.issuers[0],
        f.now,
        60,
        "bench",
    )
    .expect("valid CRL")
}

fn benches(c: &mut Criterion, f: &Fixture, entries: u64) {
    let with_crl = config(f, true);
    let crl = load(f, &with_crl);
    eprintln!(
        "index of {} entries: {} heap bytes",
        crl.index.len(),
        crl.index.heap_bytes()
    );

    let mut group = c.benchmark_group("crl");
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    group.bench_function("lookup_listed_1m", |b| {
        b.iter_batched(
            || Serial::from_der_content(&listed(next() % entries).to_be_bytes()),
            |serial| assert!(black_box(crl.index.get(&serial)).is_some()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("lookup_unlisted_1m", |b| {
        b.iter_batched(
            || Serial::from_der_content(&(next() | (1 << 63)).to_be_bytes()),
            |serial| black_box(crl.index.get(&serial)),
            BatchSize::SmallInput,
        )
    });
    // The same lookups in a 1,000-entry index (all in cache): what the 1M numbers add is
    // memory latency, not work.
    let small = {
        let mut b = certgate::crl::RevocationIndexBuilder::default();
        for i in 0..1000 {
            let revoked = certgate::crl::Revoked {
                reason: certgate::cert::RevocationReason::KeyCompromise,
                revoked_at: 0,
            };
            b.push(&listed(i).to_be_bytes(), revoked).expect("push");
        }
        b.build()
    };
    group.bench_function("lookup_listed_1k", |b| {
        b.iter_batched(
            || Serial::from_der_content(&listed(next() % 1000).to_be_bytes()),
            |serial| assert!(black_box(small.get(&serial)).is_some()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("lookup_unlisted_1k", |b| {
        b.iter_batched(
            || Serial::from_der_content(&(next() | (1 << 63)).to_be_bytes()),
            |serial| black_box(small.get(&serial)),
            BatchSize::SmallInput,
        )
    });
    group.sample_size(10);
    group.bench_function("load_verify_1m", |b| {
        b.iter(|| black_box(load(f, &with_crl)))
    });
    group.finish();

    // The cached decision, CRLs off and on: same certificate, identity and store answers
    // cached, so the difference is the CRL lookup.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let t = OffsetDateTime::from_unix_timestamp(f.now).expect("time");
    let leaf =
        f.ca.issue(&CertSpec {
            organizational_unit: Some("worker".into()),
            ..CertSpec::client("w1", t - Duration::hours(1), Duration::days(5))
        })
        .expect("leaf")
        .cert_pem;
    let mut group = c.benchmark_group("check");
    for (name, with) in [
        ("cached_decision_crl_off", false),
        ("cached_decision_crl_1m", true),
    ] {
        let config = config(f, with);
        let metrics = Metrics::new();
        let store = runtime
            .block_on(certgate::app::open_store(&config, &metrics))
            .expect("store");
        let checker = Arc::new(Checker::new(config.clone(), store, metrics));
        if with {
            let offered = checker.revocation().offer(load(f, &config), f.now);
            assert_eq!(offered, certgate::crl::Offered::Installed);
        }
        let input = CheckInput {
            host: None,
            certificate: Some(leaf.as_bytes()),
            encoding: Default::default(),
            policy: None,
            method: "GET",
            path: "/api/jobs",
            malformed: None,
        };
        let first = runtime.block_on(checker.check(input, f.now));
        assert!(first.decision.is_ok(), "{:?}", first.decision);
        group.bench_function(name, |b| {
            b.to_async(&runtime)
                .iter(|| async { black_box(checker.check(input, f.now).await) })
        });
    }
    group.finish();
}

/// VmHWM / VmRSS of this process, kB.
fn memory_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--peak-memory-load") {
        // Child: the CRL file and the CA bundle are given; nothing else is allocated.
        let (crl_path, dir) = (&args[i + 1], &args[i + 2]);
        let before = memory_kb("VmHWM:");
        let bytes = std::fs::read(crl_path).expect("read CRL");
        let after_read = memory_kb("VmHWM:");
        let yaml = "trust: {ca_bundle: ca.pem}\npolicies: {default: {}}\ncrl:\n  issuers:\n    - ca: \"CN=bench CA, O=certgate dev\"\n      sources: [{file: bench.crl}]\n";
        let config = Config::from_yaml(yaml, &std::path::Path::new(dir).join("c.yaml"))
            .expect("valid config");
        let started = std::time::Instant::now();
        let crl = VerifiedCrl::load(
            &bytes,
            &config.trust,
            &config.crl.issuers[0],
            certgate::clock::unix_now(),
            60,
            "bench",
        )
        .expect("valid CRL");
        let took = started.elapsed();
        drop(bytes);
        println!(
            "entries {} | CRL {} MB | load+verify+index {:.2?} | VmHWM before read {} MB, after read {} MB, after load {} MB | VmRSS holding the index {} MB | index heap {} MB",
            crl.index.len(),
            std::fs::metadata(crl_path).map(|m| m.len()).unwrap_or(0) >> 20,
            took,
            before >> 10,
            after_read >> 10,
            memory_kb("VmHWM:") >> 10,
            memory_kb("VmRSS:") >> 10,
            crl.index.heap_bytes() >> 20,
        );
        return;
    }
    if args.iter().any(|a| a == "--peak-memory") {
        let f = fixture(ENTRIES);
        let path = f.dir.path().join("bench.crl");
        std::fs::write(&path, &f.crl_der).expect("write");
        let exe = std::env::current_exe().expect("exe");
        let out = std::process::Command::new(exe)
            .arg("--peak-memory-load")
            .arg(&path)
            .arg(f.dir.path())
            .output()
            .expect("child");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        return;
    }
    let entries = if args.iter().any(|a| a == "--bench") {
        ENTRIES
    } else {
        10_000
    };
    let f = fixture(entries);
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &f, entries);
    c.final_summary();
}
