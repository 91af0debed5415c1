//! Criterion benchmarks of the decision path, in process and without a network.
//!
//! Setup is `certgate bootstrap` into a temporary directory (dev CA, enrolled admin, the
//! configuration it writes), then the benches below on a current-thread Tokio runtime:
//!
//! - `check/cached_identity`: `Checker::check` for the bootstrap admin certificate, already
//!   seen: identity cache hit and store cache hits. This is the steady-state cost per request
//!   (the bootstrap `store.cache_ttl` of 2s means one SQLite refresh per key every 2s, which
//!   is noise at this rate).
//! - `check/first_seen`: `Checker::check` for a certificate never seen before: decode, X.509
//!   parse, chain verification (one ECDSA P-256 signature), identity cache insert; the store
//!   lookups are cache hits. The bench issues `FIRST_SEEN_POOL` distinct certificates from a
//!   second CA appended to the trust bundle, all carrying the enrolled admin's principal id and
//!   certificate serial (so the store answers from its cache and the decision is an allow).
//!   Each round walks the pool once; between rounds the identity cache is emptied by putting a
//!   copy of the configuration in force, outside the timed region (`iter_custom`), so every
//!   timed check is a miss. Chosen over a tiny identity cache, whose CLOCK eviction spares
//!   recently read entries, which would let some iterations hit.
//! - `identify/parse_and_verify`: `cert::identify` alone on the admin certificate.
//! - `authz/check_certificate+check_principal`: the pure decision functions alone, with the
//!   store facts looked up once beforehand.
//!
//! Run: `cargo bench --bench decision -- --warm-up-time 1 --measurement-time 3`.

use std::cell::Cell;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use criterion::Criterion;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::runtime::Runtime;

use certgate::authz::{self, RequestInfo, StoreFacts};
use certgate::bootstrap::{self, BootstrapArgs};
use certgate::cert::{self, Identity};
use certgate::check::{CheckInput, Checker};
use certgate::config::{Config, DEFAULT_PRINCIPAL_ID_OID, DEFAULT_PRINCIPAL_TYPE_OID};
use certgate::metrics::Metrics;
use certgate::pki::{CertAuthority, CertSpec};

/// Distinct certificates for `check/first_seen`; generating them takes well under a second.
const FIRST_SEEN_POOL: usize = 2_000;

const METHOD: &str = "GET";
const PATH: &str = "/api/hello";

/// Everything but RFC 3986 unreserved characters is escaped, as Envoy does for
/// `source.certificate`.
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn url_encode(pem: &str) -> Vec<u8> {
    utf8_percent_encode(pem, URL_ENCODE)
        .to_string()
        .into_bytes()
}

/// The bootstrapped world the benches share.
struct Fixture {
    _dir: tempfile::TempDir,
    now: i64,
    checker: Checker,
    /// The bootstrap admin certificate, URL-encoded as Envoy forwards it.
    admin: Vec<u8>,
    /// Never-seen certificates for `check/first_seen`, URL-encoded.
    first_seen: Vec<Vec<u8>>,
}

impl Fixture {
    fn new(rt: &Runtime) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let now = certgate::clock::unix_now();
        let args = BootstrapArgs {
            out_dir: dir.path().to_owned(),
            domain: "example.com".into(),
            grpc_listen: ([127, 0, 0, 1], 0).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            admin_api_listen: None,
            force: false,
        };
        rt.block_on(bootstrap::run(&args, now))?;
        let admin_pem = read(&dir.path().join("admin.pem"))?;
        let first_seen = issue_first_seen(dir.path(), &admin_pem, now)?;

        let config = Config::load(&dir.path().join("certgate.yaml"))?;
        let metrics = Metrics::new();
        let store = rt.block_on(certgate::app::open_store(&config, &metrics))?;
        let fixture = Fixture {
            _dir: dir,
            now,
            checker: Checker::new(config, store, metrics),
            admin: url_encode(&admin_pem),
            first_seen,
        };
        // A bench of a deny would measure the wrong path: make sure both inputs are allowed.
        for cert in [&fixture.admin, &fixture.first_seen[0]] {
            let outcome = rt.block_on(fixture.checker.check(fixture.input(cert), now));
            if let Err(deny) = outcome.decision {
                bail!("bench certificate denied: {} {}", deny.reason, deny.message);
            }
        }
        Ok(fixture)
    }

    fn input<'a>(&self, certificate: &'a [u8]) -> CheckInput<'a> {
        CheckInput {
            host: None,
            certificate: Some(certificate),
            encoding: Default::default(),
            policy: None,
            method: METHOD,
            path: PATH,
            malformed: None,
        }
    }

    /// The admin certificate's identity and store facts, for the pure-function benches.
    fn admin_facts(&self, rt: &Runtime) -> anyhow::Result<(Identity, StoreFacts)> {
        let config = self.checker.config();
        let id = cert::identify(&self.admin, &config.identity, &config.trust, self.now)?;
        let principal_id = id.principal_id().unwrap_or_default().to_owned();
        let store = self.checker.store();
        let facts = rt.block_on(async {
            anyhow::Ok(StoreFacts {
                certificate: store.certificate(id.serial()).await?,
                principal: store.principal(&principal_id).await?,
            })
        })?;
        Ok((id, facts))
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Issue the never-seen pool from a second CA, which is appended to the bootstrap trust
/// bundle (`ca.pem`) before the configuration is loaded.
fn issue_first_seen(dir: &Path, admin_pem: &str, now_unix: i64) -> anyhow::Result<Vec<Vec<u8>>> {
    let trust = Config::load(&dir.join("certgate.yaml"))?;
    let admin = cert::identify(
        admin_pem.as_bytes(),
        &trust.identity,
        &trust.trust,
        now_unix,
    )?;
    let serial = u64::from_str_radix(&admin.serial().to_string(), 16)
        .with_context(|| format!("admin serial {} does not fit in 64 bits", admin.serial()))?;
    let principal_id = admin
        .principal_id()
        .context("bootstrap admin certificate has no principal id")?
        .to_owned();

    let now = time::OffsetDateTime::from_unix_timestamp(now_unix)?;
    let ca = CertAuthority::new(
        "certgate bench CA",
        now - time::Duration::hours(1),
        now + time::Duration::days(30),
    )?;
    let bundle = dir.join("ca.pem");
    let mut pem = read(&bundle)?;
    pem.push_str(&ca.cert_pem());
    std::fs::write(&bundle, pem).with_context(|| format!("writing {}", bundle.display()))?;

    let oid =
        |dotted: &str| -> Vec<u64> { dotted.split('.').filter_map(|a| a.parse().ok()).collect() };
    let start = now - time::Duration::minutes(5);
    // 30 days: within the default policy's 90 days, and outside the 7-day expiry warning.
    let spec = CertSpec {
        organizational_unit: Some("admin".into()),
        serial: Some(serial),
        custom_extensions: vec![
            (oid(DEFAULT_PRINCIPAL_ID_OID), principal_id),
            (oid(DEFAULT_PRINCIPAL_TYPE_OID), "admin".into()),
        ],
        ..CertSpec::client("admin.example.com", start, time::Duration::days(30))
    };
    (0..FIRST_SEEN_POOL)
        .map(|_| Ok(url_encode(&ca.issue(&spec)?.cert_pem)))
        .collect()
}

fn benches(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot build the Tokio runtime: {e}"),
    };
    let fixture = match Fixture::new(&rt) {
        Ok(f) => f,
        Err(e) => panic!("benchmark setup failed: {e:#}"),
    };
    let (admin_id, admin_facts) = match fixture.admin_facts(&rt) {
        Ok(v) => v,
        Err(e) => panic!("benchmark setup failed: {e:#}"),
    };
    let now = fixture.now;
    let checker = &fixture.checker;

    let mut group = c.benchmark_group("check");
    group.bench_function("cached_identity", |b| {
        let input = fixture.input(&fixture.admin);
        b.to_async(&rt).iter(|| checker.check(input, now));
    });
    // The cursor outlives the closure below, which criterion calls once per sample: every
    // timed check must present a certificate the current identity cache has not seen. It
    // starts at the end so the first round also drops the setup's own check.
    let next = Cell::new(fixture.first_seen.len());
    let misses = || {
        checker
            .metrics()
            .cache_lookups
            .with_label_values(&["identity", "miss"])
            .get()
    };
    let (timed_checks, misses_before) = (Cell::new(0u64), misses());
    group.bench_function("first_seen", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (next, timed_checks, fixture) = (&next, &timed_checks, &fixture);
            async move {
                let mut timed = Duration::ZERO;
                let mut remaining = iters;
                while remaining > 0 {
                    if next.get() == fixture.first_seen.len() {
                        // Same configuration, fresh (empty) identity cache; not timed.
                        checker.replace_config(Config::clone(&checker.config()));
                        next.set(0);
                    }
                    let round = remaining.min((fixture.first_seen.len() - next.get()) as u64);
                    let certs = &fixture.first_seen[next.get()..next.get() + round as usize];
                    let started = Instant::now();
                    for cert in certs {
                        black_box(checker.check(fixture.input(cert), now).await);
                    }
                    timed += started.elapsed();
                    next.set(next.get() + round as usize);
                    remaining -= round;
                }
                timed_checks.set(timed_checks.get() + iters);
                timed
            }
        });
    });
    // Correctness of the bench, not a timing: a hit would make first_seen measure the cache.
    let hits = timed_checks.get().saturating_sub(misses() - misses_before);
    if hits > 0 {
        panic!("check/first_seen: {hits} timed checks hit the identity cache");
    }
    group.finish();

    let config = checker.config();
    let mut group = c.benchmark_group("identify");
    group.bench_function("parse_and_verify", |b| {
        b.iter(|| {
            cert::identify(
                black_box(&fixture.admin),
                &config.identity,
                &config.trust,
                now,
            )
        });
    });
    group.finish();

    let Some(policy) = config.policies.get(&config.default_policy) else {
        panic!("bootstrap configuration has no default policy");
    };
    let mut group = c.benchmark_group("authz");
    group.bench_function("check_certificate+check_principal", |b| {
        b.iter(|| {
            let id = black_box(&admin_id);
            authz::check_certificate(id, policy, &config.certificate_rules, now)?;
            authz::check_principal(
                id,
                policy,
                &config.principal_rules,
                black_box(&admin_facts),
                RequestInfo {
                    method: METHOD,
                    path: PATH,
                },
            )
        });
    });
    group.finish();
}

fn main() {
    // Short defaults keep a full run under a minute; command-line flags still override them.
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
}
