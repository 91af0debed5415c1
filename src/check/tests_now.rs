//! The synchronous check of the module (`Checker::check_now`) against the asynchronous one
//! (`check_peer_in` / `check_in`) on the same request and the same warm caches: the same
//! outcome, the same decision log line and span (as the module's JSON log layer prints
//! them), the same metrics; and no synchronous decision when the store must be asked.

use serde_json::Value;

use super::tests::{Fixture, fixture_with, input};
use super::*;
use crate::observe::span_fields::JsonSpanFields;
use crate::observe::span_fields::tests::{Lines, no_thread_without_a_subscriber};

const NOW: i64 = 1_790_000_000;

/// Policies reaching the rows the certificate and the store decide, besides `default`.
const POLICIES: &str = concat!(
    "  allowlist:\n    cn_allowlist: [someone-else]\n    permissions: {worker: [\"GET /api/*\"]}\n",
    "  short:\n    max_lifetime: 1h\n    permissions: {worker: [\"GET /api/*\"]}\n",
    "  humans:\n    allowed_principal_types: [human]\n    permissions: {worker: [\"GET /api/*\"]}\n",
    "  shadow:\n    enforce: false\n    permissions: {worker: [\"GET /api/*\"]}\n",
    "log: {decisions: all}\n",
);

/// The JSON lines written since the last call, without what differs between two runs of one
/// check (the times and the latency).
fn take(lines: &Lines) -> Vec<Value> {
    let bytes = std::mem::take(&mut *lines.0.lock().expect("lock"));
    let text = String::from_utf8(bytes).expect("utf-8");
    text.lines()
        .map(|line| {
            let mut value: Value = serde_json::from_str(line).expect("a JSON line");
            let object = value.as_object_mut().expect("object");
            for key in ["timestamp", "time", "latency_us"] {
                object.remove(key);
            }
            value
        })
        .collect()
}

/// Every certgate counter and histogram count, by series (the latency buckets and sums differ
/// between two runs of one check).
fn counts(f: &Fixture) -> Vec<(String, f64)> {
    f.checker
        .metrics()
        .render()
        .lines()
        .filter(|line| line.starts_with("certgate_"))
        .filter(|line| !line.contains("_bucket{") && !line.contains("_sum"))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// What `after` counts more than `before`, by series.
fn delta(before: &[(String, f64)], after: &[(String, f64)]) -> Vec<(String, f64)> {
    after
        .iter()
        .map(|(series, value)| {
            let was = before
                .iter()
                .find(|(s, _)| s == series)
                .map_or(0.0, |p| p.1);
            (series.clone(), value - was)
        })
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

/// The connection's certificate as the module knows it: by digest, from the identity cache.
fn known(f: &Fixture, der: Vec<u8>) -> (CachedIdentity, bool) {
    let digest: [u8; 32] = Sha256::digest(&der).into();
    f.checker
        .peer_identity(
            &f.checker.generation(),
            &digest,
            move || Ok::<_, ()>(der),
            NOW,
        )
        .expect("the connection's certificate")
}

/// What one check left behind: its outcome, log lines and counted metrics.
type Trace = (String, Vec<Value>, Vec<(String, f64)>);

/// Decide `input` (with the connection's certificate `der`, if any) asynchronously and then
/// synchronously, after a first asynchronous check has warmed every cache.
async fn both(
    f: &Fixture,
    lines: &Lines,
    input: CheckInput<'_>,
    der: Option<&[u8]>,
    now: i64,
) -> (Trace, Trace) {
    let generation = f.checker.generation();
    let meta = RequestMeta::module("r-1");
    let identity = || der.map(|der| known(f, der.to_vec()));
    let check = || async {
        match identity() {
            Some(known) => {
                f.checker
                    .check_peer_in(&generation, input, known, &meta, now)
                    .await
            }
            None => f.checker.check_in(&generation, input, &meta, now).await,
        }
    };
    check().await;
    // The store's answers cached too, also for the rows that end before the store.
    if let Some((cached, _)) = identity()
        && let Ok(id) = cached.as_ref()
    {
        let _ = f.checker.store().certificate(id.serial()).await;
        let _ = f.checker.store().principal(store_key(id)).await;
    }
    take(lines);
    let before = counts(f);
    let later = check().await;
    let between = counts(f);
    let asynchronous = (format!("{later:?}"), take(lines), delta(&before, &between));
    let now = f
        .checker
        .check_now(&generation, input, identity(), &meta, now)
        .expect("decided without the store");
    let synchronous = (format!("{now:?}"), take(lines), delta(&between, &counts(f)));
    (asynchronous, synchronous)
}

fn reason(trace: &Trace) -> Option<String> {
    let line = trace
        .1
        .iter()
        .find(|l| l["target"] == "certgate::decision")?;
    Some(line["reason"].as_str().unwrap_or("allow").to_owned())
}

#[tokio::test]
async fn the_synchronous_check_decides_logs_and_counts_as_the_asynchronous_one() {
    no_thread_without_a_subscriber();
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .json()
        .flatten_event(true)
        .fmt_fields(JsonSpanFields)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let f = fixture_with(false, POLICIES);
    let good = cert::decode_certificate(f.good.as_bytes()).expect("DER");
    let stranger = cert::decode_certificate(f.stranger.as_bytes()).expect("DER");
    let garbage = b"not a certificate".to_vec();
    let problem = RequestProblem::Repeated("x-forwarded-client-cert");
    let with = |policy: &'static str, path: &'static str| CheckInput {
        certificate: None,
        policy: Some(policy),
        path,
        ..input("")
    };
    let (good, stranger) = (Some(&good[..]), Some(&stranger[..]));
    let api = with("default", "/api/x");
    let rows: Vec<(&str, CheckInput<'_>, Option<&[u8]>, i64)> = vec![
        ("allow", api, good, NOW),
        ("permission_denied", with("default", "/admin"), good, NOW),
        ("permission_denied", with("humans", "/api/x"), good, NOW),
        ("permission_denied", with("shadow", "/admin"), good, NOW),
        ("cn_not_allowed", with("allowlist", "/api/x"), good, NOW),
        (
            "lifetime_exceeds_policy",
            with("short", "/api/x"),
            good,
            NOW,
        ),
        ("certificate_expired", api, good, NOW + 3 * 86_400),
        ("untrusted_issuer", api, stranger, NOW),
        ("malformed_certificate", api, Some(&garbage[..]), NOW),
        ("unknown_policy", with("nope", "/api/x"), good, NOW),
        ("malformed_request", with("default", "/api/../x"), good, NOW),
        (
            "malformed_request",
            CheckInput {
                method: "G T",
                ..api
            },
            good,
            NOW,
        ),
        (
            "malformed_request",
            CheckInput {
                malformed: Some(problem),
                ..api
            },
            good,
            NOW,
        ),
        ("no_client_certificate", api, None, NOW),
    ];
    for (row, input, der, now) in rows {
        let (asynchronous, synchronous) = both(&f, &lines, input, der, now).await;
        assert_eq!(
            reason(&asynchronous).as_deref(),
            Some(row),
            "{row}: {:?}",
            asynchronous.1
        );
        assert_eq!(synchronous.0, asynchronous.0, "{row}: outcome");
        assert_eq!(synchronous.1, asynchronous.1, "{row}: log lines");
        assert_eq!(synchronous.2, asynchronous.2, "{row}: metrics");
        assert!(
            asynchronous
                .2
                .iter()
                .any(|(s, _)| s.starts_with("certgate_decisions_total")),
            "{row}: {:?}",
            asynchronous.2
        );
    }
}

#[tokio::test]
async fn the_synchronous_check_declines_when_the_store_must_be_asked() {
    let f = fixture_with(true, "");
    let good = cert::decode_certificate(f.good.as_bytes()).expect("DER");
    let generation = f.checker.generation();
    let meta = RequestMeta::module("r-1");
    let before = counts(&f);
    let input = CheckInput {
        certificate: None,
        ..input("")
    };
    let declined = f.checker.check_now(
        &generation,
        input,
        Some(known(&f, good.clone())),
        &meta,
        NOW,
    );
    let Err(Some((handed_back, _))) = declined else {
        panic!("decided without the store: {declined:?}");
    };
    assert!(handed_back.is_ok());
    // Nothing was recorded but the identity-cache miss of `known` itself.
    let recorded = delta(&before, &counts(&f));
    assert!(
        recorded.iter().all(|(s, _)| s.contains("\"identity\"")),
        "{recorded:?}"
    );
    // A forwarded certificate is parsed by the asynchronous check.
    let forwarded =
        f.checker
            .check_now(&generation, super::tests::input(&f.good), None, &meta, NOW);
    assert!(matches!(forwarded, Err(None)));
    // The store down, nothing cached: the asynchronous check answers 503.
    let outcome = f
        .checker
        .check_peer_in(&generation, input, known(&f, good), &meta, NOW)
        .await;
    let deny = outcome.decision.expect_err("denied");
    assert_eq!(deny.reason, ReasonCode::StoreUnavailable);
}

/// Counts the `check` spans opened.
#[derive(Clone, Default)]
struct Opened(Arc<std::sync::atomic::AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Opened {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "check" {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The `check` span opens when the check logs a line, and every line of the check is in it
/// with the request id: the store's failure, then the decision. An allow that logs nothing
/// (denies only are logged by default) opens none, in either check.
#[tokio::test]
async fn a_check_logs_inside_its_span_and_one_that_logs_nothing_opens_none() {
    use tracing_subscriber::prelude::*;
    no_thread_without_a_subscriber();
    let lines = Lines::default();
    let writer = lines.clone();
    let opened = Opened::default();
    let subscriber = tracing_subscriber::registry().with(opened.clone()).with(
        tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .fmt_fields(JsonSpanFields),
    );
    let _logging = tracing::subscriber::set_default(subscriber);
    let count = || opened.0.load(std::sync::atomic::Ordering::Relaxed);

    let down = fixture_with(true, "");
    let good = cert::decode_certificate(down.good.as_bytes()).expect("DER");
    let meta = RequestMeta::module("r-7");
    let outcome = down
        .checker
        .check_peer_in(
            &down.checker.generation(),
            CheckInput {
                certificate: None,
                ..input("")
            },
            known(&down, good.clone()),
            &meta,
            NOW,
        )
        .await;
    assert_eq!(
        outcome.decision.expect_err("denied").reason,
        ReasonCode::StoreUnavailable
    );
    let logged = take(&lines);
    let messages: Vec<_> = logged.iter().map(|l| l["message"].clone()).collect();
    assert_eq!(messages, ["store lookup failed", "decision"], "{logged:?}");
    for line in &logged {
        assert_eq!(line["span"]["name"], "check", "{line}");
        assert_eq!(line["span"]["request_id"], "r-7", "{line}");
    }
    assert_eq!(count(), 1);

    let up = fixture_with(false, "");
    let good = cert::decode_certificate(up.good.as_bytes()).expect("DER");
    let generation = up.checker.generation();
    let api = CheckInput {
        certificate: None,
        ..input("")
    };
    let allowed = up
        .checker
        .check_peer_in(&generation, api, known(&up, good.clone()), &meta, NOW)
        .await;
    assert!(allowed.decision.is_ok(), "{allowed:?}");
    let now = up
        .checker
        .check_now(&generation, api, Some(known(&up, good)), &meta, NOW)
        .expect("decided from the caches");
    assert!(now.decision.is_ok(), "{now:?}");
    // The certificate expires within a day: the inventory's watch warns once, on its own
    // (it always has: the sighting is recorded after the check's span).
    let rest = take(&lines);
    assert!(
        rest.iter()
            .all(|l| l["target"] == "certgate::inventory" && l.get("span").is_none()),
        "{rest:?}"
    );
    assert_eq!(count(), 1, "an allow that logs nothing opened a span");
}
