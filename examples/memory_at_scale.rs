//! Memory at scale: how much resident memory certgate needs for many distinct clients.
//!
//! Builds a real `Checker` (configuration file, trust bundle, embedded SQLite store, the
//! caches of the server) in a temporary directory and runs four phases, printing VmRSS and
//! VmHWM (/proc/self/status) after each:
//!
//! 1. `store`: the store opened as the server opens it. Its `--principals` principals are
//!    enrolled through the store API by a child process (this program with `--fill-only`),
//!    or were by an earlier run (`--store FILE`): enrolment frees most of what it allocates,
//!    and memory freed in this process would be reused by the phases after it and hide their
//!    growth.
//! 2. `store cache`: every client's principal and certificate looked up once through the
//!    store cache (`store.cache_max_entries` bounds it), as the first check of each would.
//! 3. `identities`: `--identities` distinct client certificates (one CA, ECDSA P-256, one key
//!    pair shared by all leaves to save time; every identity field filled: principal id and
//!    type extensions, OU, CN, SPIFFE URI SAN), each checked once through `Checker::check`
//!    exactly as the server does (URL-encoded PEM as Envoy forwards it). Certificates are
//!    generated one at a time and dropped after their check, so the growth of this phase is
//!    the identity cache (`identity.cache_max_entries`): the store answers are cache hits.
//! 4. `hits`: a sample of 1,000 of those certificates (kept from phase 3) checked again,
//!    to confirm the identities are still cached: none was evicted.
//!
//! Bytes per identity is the RSS growth of phase 3 divided by the identities (allocator
//! overhead included, which is what a deployment pays).
//!
//! Run: `cargo run --release --example memory_at_scale -- --identities 100000 --principals 1000000`
//! (add `--store /tmp/principals.db` to keep the enrolled store for the next run)

use std::path::{Path, PathBuf};
use std::time::Instant;

/// The allocator the `certgate` binary uses (src/main.rs), so the numbers are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context as _, bail};
use clap::Parser;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use certgate::cert::Serial;
use certgate::check::{CheckInput, Checker};
use certgate::config::{Config, DEFAULT_PRINCIPAL_ID_OID, DEFAULT_PRINCIPAL_TYPE_OID};
use certgate::metrics::Metrics;
use certgate::pki::{CertAuthority, CertSpec};
use certgate::store::{Actor, Admin, EmbeddedStore, Principal, PrincipalStatus};

/// Certificates kept from phase 3 and checked again in phase 4.
const SAMPLE: usize = 1_000;

/// Everything but RFC 3986 unreserved characters is escaped, as Envoy does for
/// `source.certificate`.
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Debug, Parser)]
#[command(
    about = "Resident memory of certgate's caches and store with many distinct clients",
    after_help = "Example:\n  memory_at_scale --identities 100000 --principals 1000000"
)]
struct Args {
    /// Distinct client certificates checked (and cached).
    #[arg(long, default_value_t = 100_000)]
    identities: usize,
    /// Principals enrolled in the embedded store (at least --identities are useful: the
    /// certificates name principals 0..identities).
    #[arg(long, default_value_t = 1_000_000)]
    principals: usize,
    /// The SQLite file of the store: enrolled when it does not exist, used as it is when it
    /// does (default: a new one in a temporary directory).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Only enrol `--principals` principals into this new SQLite file, then exit.
    #[arg(long, hide = true)]
    fill_only: Option<PathBuf>,
}

/// VmRSS, VmHWM, RssAnon (the heap, stacks) and RssFile (the mapped binary and libraries), in
/// KiB.
fn memory_parts() -> anyhow::Result<[u64; 4]> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .with_context(|| format!("{name} not in /proc/self/status"))
    };
    Ok([
        field("VmRSS:")?,
        field("VmHWM:")?,
        field("RssAnon:")?,
        field("RssFile:")?,
    ])
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Prints one line per phase and returns the RSS in KiB.
fn report(phase: &str, started: Instant, before_rss: u64) -> anyhow::Result<u64> {
    let [rss, hwm, anon, file] = memory_parts()?;
    println!(
        "| {phase} | {:.1} s | {:.1} MiB | {:+.1} MiB | {:.1} MiB | {:.1} / {:.1} MiB |",
        started.elapsed().as_secs_f64(),
        mib(rss),
        mib(rss) - mib(before_rss),
        mib(hwm),
        mib(anon),
        mib(file),
    );
    Ok(rss)
}

fn principal_id(i: usize) -> String {
    format!("worker-{i}@example.com")
}

/// Serial of client `i`: positive, 16 hex digits, as `CertSpec` draws them.
fn serial(i: usize) -> u64 {
    (1 << 62) | i as u64
}

fn config_yaml(identities: usize, store: &Path) -> String {
    let entries = identities.max(1);
    // Both caches' bounds are estimates (quick_cache may evict a fraction of a percent
    // early): 2% headroom so that (nearly) all N identities and store answers stay cached.
    let entries = entries + entries / 50 + 1;
    format!(
        r#"trust: {{ca_bundle: ca.pem}}
identity:
  cache_ttl: 1h
  cache_max_entries: {entries}
store:
  path: {store:?}
  cache_ttl: 1h                   # phase 3 must find phase 2's answers
  cache_max_entries: {entries}
roles_by_type: {{worker: [worker]}}
policies:
  default:
    permissions: {{worker: ["GET /api/*"]}}
"#
    )
}

fn main() -> anyhow::Result<()> {
    // As the `certgate` binary does first thing (src/main.rs).
    certgate::app::huge_pages::disable();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    rt.block_on(run(&args))
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let now_unix = certgate::clock::unix_now();
    if let Some(path) = &args.fill_only {
        return fill_store(path, args.principals, now_unix).await;
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let store_path = args
        .store
        .clone()
        .unwrap_or_else(|| dir.path().join("certgate.db"));
    let fill_started = Instant::now();
    if !store_path.exists() {
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(["--principals", &args.principals.to_string(), "--fill-only"])
            .arg(&store_path)
            .status()
            .context("enrolling the principals in a child process")?;
        if !status.success() {
            bail!("enrolling the principals failed: {status}");
        }
    }
    let now = time::OffsetDateTime::from_unix_timestamp(now_unix)?;
    let ca = CertAuthority::new(
        "certgate memory CA",
        now - time::Duration::hours(1),
        now + time::Duration::days(30),
    )?;
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).context("writing ca.pem")?;
    let config_path = dir.path().join("certgate.yaml");
    std::fs::write(&config_path, config_yaml(args.identities, &store_path))
        .context("writing config")?;

    println!(
        "identities: {}, principals: {}\n",
        args.identities, args.principals
    );
    println!("| phase | time | VmRSS | change | VmHWM | RssAnon / RssFile |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let started = Instant::now();
    let start_rss = report("start", started, memory_parts()?[0])?;

    let config = Config::load(&config_path)?;
    let metrics = Metrics::new();
    let store = certgate::app::open_store(&config, &metrics).await?;
    let checker = Checker::new(config, store, metrics);
    let rss = report("1 store", fill_started, start_rss)?;

    let started = Instant::now();
    for i in 0..args.identities {
        checker.store().principal(&principal_id(i)).await?;
        checker
            .store()
            .certificate(&Serial::from_der_content(&serial(i).to_be_bytes()))
            .await?;
    }
    let before_identities = report("2 store cache", started, rss)?;

    let started = Instant::now();
    let key = CertAuthority::new_leaf_key()?;
    let (mut allowed, mut denied) = (0usize, 0usize);
    let misses_before = lookups(&checker, "identity", "miss");
    let store_misses_before = lookups(&checker, "principal", "miss");
    let sample_every = (args.identities / SAMPLE).max(1);
    let mut sample = Vec::with_capacity(SAMPLE + 1);
    for i in 0..args.identities {
        let certificate = client_certificate(&ca, &key, i, now)?;
        let outcome = checker.check(input(&certificate), now_unix).await;
        if i % sample_every == 0 {
            sample.push(certificate);
        }
        match outcome.decision {
            Ok(_) => allowed += 1,
            Err(deny) if i < args.principals => {
                bail!("client {i} denied: {} {}", deny.reason, deny.message)
            }
            Err(_) => denied += 1,
        }
    }
    let after_identities = report("3 identities", started, before_identities)?;
    let parsed = lookups(&checker, "identity", "miss") - misses_before;
    if parsed != args.identities as u64 {
        bail!("{parsed} identities parsed, expected {}", args.identities);
    }
    if lookups(&checker, "principal", "miss") != store_misses_before {
        bail!("phase 3 asked the store: its growth would not be the identity cache alone");
    }

    let started = Instant::now();
    let hits_before = lookups(&checker, "identity", "hit");
    for certificate in &sample {
        checker.check(input(certificate), now_unix).await;
    }
    report("4 hits", started, after_identities)?;
    let hits = lookups(&checker, "identity", "hit") - hits_before;
    // The bound is an estimate (quick_cache shards it and admits new keys as "cold"): a
    // few early evictions are expected, many would mean the phase measured too little.
    let evicted = sample.len() as u64 - hits;
    println!(
        "sampled identities still cached: {hits} of {}",
        sample.len()
    );
    if evicted * 100 > sample.len() as u64 {
        bail!(
            "{evicted} of {} sampled identities were evicted",
            sample.len()
        );
    }

    println!("\nchecks: {allowed} allowed, {denied} denied (principal not enrolled)");
    println!(
        "identity cache: {} entries; {hits} of {} sampled second checks were hits",
        checker.cached_identities(),
        sample.len()
    );
    if args.identities > 0 {
        let n = args.identities as f64;
        println!(
            "bytes per cached identity (phase 3): {:.0}",
            (after_identities as f64 - before_identities as f64) * 1024.0 / n
        );
        println!(
            "bytes per cached principal + certificate lookup (phase 2): {:.0}",
            (before_identities as f64 - rss as f64) * 1024.0 / n
        );
    }
    Ok(())
}

fn lookups(checker: &Checker, cache: &str, result: &str) -> u64 {
    checker
        .metrics()
        .cache_lookups
        .with_label_values(&[cache, result])
        .get()
}

fn input(certificate: &[u8]) -> CheckInput<'_> {
    CheckInput {
        host: None,
        certificate: Some(certificate),
        encoding: Default::default(),
        policy: None,
        method: "GET",
        path: "/api/hello",
        malformed: None,
    }
}

/// Client `i`'s certificate, URL-encoded as Envoy forwards it. ECDSA signatures are
/// randomized, so calling this twice gives two distinct certificates (hence phase 4's
/// sample kept from phase 3).
fn client_certificate(
    ca: &CertAuthority,
    key: &rcgen::KeyPair,
    i: usize,
    now: time::OffsetDateTime,
) -> anyhow::Result<Vec<u8>> {
    let oid =
        |dotted: &str| -> Vec<u64> { dotted.split('.').filter_map(|a| a.parse().ok()).collect() };
    let spec = CertSpec {
        organizational_unit: Some("worker".into()),
        uri_sans: vec![format!("spiffe://example.com/worker/worker-{i}")],
        serial: Some(serial(i)),
        custom_extensions: vec![
            (oid(DEFAULT_PRINCIPAL_ID_OID), principal_id(i)),
            (oid(DEFAULT_PRINCIPAL_TYPE_OID), "worker".into()),
        ],
        ..CertSpec::client(
            &format!("worker-{i}.example.com"),
            now - time::Duration::minutes(5),
            time::Duration::days(30),
        )
    };
    let pem = ca.issue_with_key(&spec, key)?.cert_pem;
    Ok(utf8_percent_encode(&pem, URL_ENCODE)
        .to_string()
        .into_bytes())
}

/// Enrol `count` workers through the store API, as `certgate principal create` does.
async fn fill_store(path: &Path, count: usize, now_unix: i64) -> anyhow::Result<()> {
    let store = EmbeddedStore::open(path)?;
    for i in 0..count {
        let principal = Principal {
            principal_id: principal_id(i),
            principal_type: Some("worker".into()),
            status: PrincipalStatus::Active,
            suspended_at: None,
            suspended_reason: None,
            roles: None,
            created_at: Some(now_unix * 1000),
        };
        store.create_principal(&principal, &Actor::cli()).await?;
    }
    Ok(())
}
