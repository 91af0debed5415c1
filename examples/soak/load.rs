//! The load: mTLS HTTP/1.1 through Envoy with one client (and connection pool) per principal,
//! open loop at a fixed rate, every response judged against [`Expect`] at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use reqwest::{Certificate, Client, Identity};

use crate::churn::Expect;
use crate::pki::Pki;
use crate::timeline::{BAD, right};

/// Requests in flight at most; beyond it a tick's requests are not sent (and counted).
const MAX_IN_FLIGHT: usize = 512;
const TIMEOUT: Duration = Duration::from_secs(5);
/// Every 5th request asks for /extra/*, which the configuration allows every other edit.
const EXTRA_EVERY: u64 = 5;
/// Wrong answers described in full in the report.
const SHOWN: usize = 20;

/// Everything counted.
#[derive(Default)]
pub struct Tally {
    pub requests: u64,
    pub allowed: u64,
    /// certgate's denials by reason (`error` of its JSON body).
    pub denied: BTreeMap<String, u64>,
    /// Responses that are not a decision, by cause.
    pub errors: BTreeMap<String, u64>,
    pub wrong: u64,
    pub wrong_shown: Vec<String>,
    /// Latency in µs, by minute since the start.
    pub minutes: Vec<Vec<u32>>,
    /// Ticks' requests not sent because MAX_IN_FLIGHT were pending.
    pub not_sent: u64,
    /// Per moto restart (by index): from the kill to the first right allow of a request
    /// sent once nothing cached before the kill could answer it.
    pub recoveries: BTreeMap<usize, Duration>,
}

/// One client per principal, trusting the CA of Envoy's server certificate.
pub struct Clients {
    clients: Vec<Client>,
    base: String,
}

impl Clients {
    pub fn new(pki: &Pki, port: u16) -> Result<Clients> {
        let root = Certificate::from_pem(pki.cas[0].cert_pem().as_bytes())?;
        let clients = pki
            .clients
            .iter()
            .map(|c| {
                let pem = std::fs::read(&c.identity)?;
                Client::builder()
                    .use_rustls_tls()
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(root.clone())
                    .identity(Identity::from_pem(&pem)?)
                    .http1_only()
                    .timeout(TIMEOUT)
                    .build()
                    .context("HTTP client")
            })
            .collect::<Result<_>>()?;
        Ok(Clients {
            clients,
            base: format!("https://localhost:{port}"),
        })
    }

    /// Request `n`: which principal and which path.
    fn pick(&self, n: u64) -> (usize, bool) {
        (
            (n % self.clients.len() as u64) as usize,
            n.is_multiple_of(EXTRA_EVERY),
        )
    }

    /// One request: an allow, a certgate deny with its reason, or what went wrong instead.
    async fn send(&self, i: usize, extra: bool) -> std::result::Result<Outcome, String> {
        let path = if extra { "/extra/soak" } else { "/api/soak" };
        let response = self.clients[i]
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| cause(&e))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| cause(&e))?;
        if status == 200 {
            return Ok(Outcome::Allowed);
        }
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_owned));
        match (status, reason) {
            (401 | 403 | 503, Some(reason)) => Ok(Outcome::Denied(reason)),
            (503, None) => Err("503 from Envoy: no decision (ext_authz failed)".into()),
            (s, _) => Err(format!("HTTP {s} without a decision")),
        }
    }

    /// Requests per second with `concurrency` in flight for `duration`, unjudged.
    pub async fn capacity(self: &Arc<Self>, concurrency: u64, duration: Duration) -> f64 {
        let deadline = Instant::now() + duration;
        let done = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..concurrency)
            .map(|w| {
                let (me, done) = (Arc::clone(self), Arc::clone(&done));
                tokio::spawn(async move {
                    let mut n = w;
                    while Instant::now() < deadline {
                        let (i, _) = me.pick(n);
                        if me.send(i, false).await.is_ok() {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        n += concurrency;
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        done.load(Ordering::Relaxed) as f64 / duration.as_secs_f64()
    }
}

enum Outcome {
    Allowed,
    Denied(String),
}

fn cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport (connection reset or closed)".into()
    }
}

/// Open loop at `rate` req/s until `stop`; every response judged.
pub async fn run(
    clients: Arc<Clients>,
    expect: Arc<Mutex<Expect>>,
    ca_of: Arc<Vec<usize>>,
    rate: f64,
    stop: Arc<AtomicBool>,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            sent += 1;
            let Ok(permit) = Arc::clone(&gate).try_acquire_owned() else {
                tally.lock().unwrap().not_sent += 1;
                continue;
            };
            let (clients, expect, ca_of, tally) = (
                Arc::clone(&clients),
                Arc::clone(&expect),
                Arc::clone(&ca_of),
                Arc::clone(&tally),
            );
            let n = sent;
            tokio::spawn(async move {
                let (i, extra) = clients.pick(n);
                let ts = Instant::now();
                let outcome = clients.send(i, extra).await;
                let tr = Instant::now();
                drop(permit);
                let e = expect.lock().unwrap();
                let mut factors = vec![
                    e.suspended[i].possible(ts, tr),
                    e.revoked[i].possible(ts, tr),
                    e.trusted[ca_of[i]].possible(ts, tr),
                    e.store.possible(ts, tr),
                    e.enrolled[i].possible(ts, tr),
                ];
                if extra {
                    factors.push(e.extra.possible(ts, tr));
                }
                let restart = e.restarts.len().checked_sub(1).map(|k| (k, e.restarts[k]));
                drop(e);
                let mut t = tally.lock().unwrap();
                t.requests += 1;
                let minute = (ts - start).as_secs() as usize / 60;
                if t.minutes.len() <= minute {
                    t.minutes.resize_with(minute + 1, Vec::new);
                }
                t.minutes[minute].push((tr - ts).as_micros().min(u32::MAX as u128) as u32);
                let allowed = match outcome {
                    Err(cause) => {
                        *t.errors.entry(cause).or_default() += 1;
                        return;
                    }
                    Ok(Outcome::Allowed) => {
                        t.allowed += 1;
                        true
                    }
                    // Outside a freeze or restart the judge expects the store to answer; one
                    // that answers too late (moto on a saturated machine) is denied 503, fail
                    // closed: an error of the store, not a decision to judge.
                    Ok(Outcome::Denied(reason))
                        if reason == "store_unavailable" && factors[3] & BAD == 0 =>
                    {
                        let cause = "store_unavailable outside a freeze or restart (fail closed)";
                        *t.errors.entry(cause.into()).or_default() += 1;
                        return;
                    }
                    Ok(Outcome::Denied(reason)) => {
                        *t.denied.entry(reason).or_default() += 1;
                        false
                    }
                };
                let is_right = right(allowed, factors.iter().copied());
                if let Some((k, (killed, cached))) = restart
                    && allowed
                    && is_right
                    && ts >= killed + cached
                {
                    t.recoveries.entry(k).or_insert(tr - killed);
                }
                if !is_right {
                    t.wrong += 1;
                    if t.wrong_shown.len() < SHOWN {
                        t.wrong_shown.push(format!(
                            "at {:.1}s principal {i} (CA {}) {}: {}, possible \
                             [suspended, revoked, trusted, store, enrolled{}] = {factors:?} (1 ok, 2 bad)",
                            (ts - start).as_secs_f64(),
                            ca_of[i] + 1,
                            if extra { "/extra/soak" } else { "/api/soak" },
                            if allowed { "allowed" } else { "denied" },
                            if extra { ", extra" } else { "" },
                        ));
                    }
                }
            });
        }
    }
    // Let the requests in flight finish.
    let _ = gate.acquire_many(MAX_IN_FLIGHT as u32).await;
    std::mem::take(&mut *tally.lock().unwrap())
}

/// The `p`-th percentile of `v` (sorted in place), µs.
pub fn percentile(v: &mut [u32], p: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}
