//! The soak's verdict and its Markdown report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::churn::Counts;
use crate::load::{Tally, percentile};
use crate::restart::Record;

/// RSS and fds may grow this much from the warm-up's end to the last fifth of the run.
const GROWTH_BOUND: f64 = 0.10;
/// fds are few: a couple more open at every sample (a CRL file being read) is not growth.
const FD_SLACK: u64 = 2;

/// Everything measured.
pub struct Verdict<'a> {
    pub args_duration: Duration,
    pub elapsed: Duration,
    pub backend: &'a str,
    pub rate: f64,
    pub capacity: Option<f64>,
    pub principals: usize,
    pub tally: Tally,
    /// (seconds since the load started, RSS KiB, open fds).
    pub samples: Vec<(u64, u64, u64)>,
    pub counts: Counts,
    /// certgate_config_reloads_total deltas: (success, failure).
    pub reloads: (f64, f64),
    /// When `reloads` was read, from the end of the load.
    pub reloads_counted_after: Duration,
    pub load_before: String,
    pub load_after: String,
    pub alive: bool,
}

/// The smallest and the largest value in `[from, to)` seconds.
fn range(
    samples: &[(u64, u64, u64)],
    from: u64,
    to: u64,
    pick: fn(&(u64, u64, u64)) -> u64,
) -> (u64, u64) {
    let values = samples.iter().filter(|s| s.0 >= from && s.0 < to).map(pick);
    (values.clone().min().unwrap_or(0), values.max().unwrap_or(0))
}

impl Verdict<'_> {
    /// The report, and whether the soak passed.
    pub fn render(mut self) -> (String, bool) {
        let mut failures = Vec::new();
        let t = &mut self.tally;
        let total = self.args_duration.as_secs().max(1);
        let fifth = (total / 5).max(1);
        // Warm-up: the first fifth; compared: the next fifth against the last one.
        let rss = |from, to| range(&self.samples, from, to, |s| s.1).1;
        let fds = |from, to| range(&self.samples, from, to, |s| s.2);
        let (rss0, rss1) = (rss(fifth, 2 * fifth), rss(total - fifth, u64::MAX));
        // fds are judged by the fewest open in each window: a leak raises every sample, while
        // the store's connection pool (DynamoDB: a new connection for each lookup that timed
        // out) comes and goes with the load and only moves the peaks.
        let ((fds0, most0), (fds1, most1)) = (fds(fifth, 2 * fifth), fds(total - fifth, u64::MAX));
        let growth = |a: u64, b: u64| b as f64 / a.max(1) as f64 - 1.0;
        if t.requests == 0 {
            failures.push("no request was answered".to_owned());
        }
        if t.wrong > 0 {
            failures.push(format!("{} wrong answers", t.wrong));
        }
        // A short run is all warm-up: growth is reported, judged from 3 minutes on.
        let judged = total >= 180;
        if judged && growth(rss0, rss1) > GROWTH_BOUND {
            failures.push(format!("RSS grew {:.1} %", 100.0 * growth(rss0, rss1)));
        }
        if judged && fds1 > fds0 + FD_SLACK && growth(fds0, fds1) > GROWTH_BOUND {
            failures.push(format!("fds grew from {fds0} to {fds1}"));
        }
        let c = &self.counts;
        let expected = (c.valid_edits as f64, c.invalid_edits as f64);
        if self.reloads != expected {
            failures.push(format!(
                "reloads counted {:?} (success, failure), expected {expected:?}",
                self.reloads
            ));
        }
        failures.extend(c.failures.iter().map(|f| format!("churn: {f}")));
        for (k, r) in c.restarts.iter().enumerate() {
            if r.reseeded.is_some() && !t.recoveries.contains_key(&k) {
                failures.push(format!(
                    "no right allow after the moto restart at {} s",
                    r.at
                ));
            }
        }
        if !self.alive {
            failures.push("certgate is not running at the end".to_owned());
        }

        let mut r = String::new();
        let _ = writeln!(r, "| | |\n| --- | --- |");
        let _ = writeln!(
            r,
            "| backend | {} |\n| duration | {:.0} s of load |\n| rate | {:.0} req/s{} |\n| \
             principals | {} (one certificate each, half from each CA) |\n| load average \
             (1/5/15 min) | {} at the start, {} at the end |",
            self.backend,
            self.elapsed.as_secs_f64(),
            self.rate,
            self.capacity
                .map(|c| format!(" (half of {c:.0} req/s measured for 5 s)"))
                .unwrap_or_default(),
            self.principals,
            self.load_before,
            self.load_after,
        );
        let denied: u64 = t.denied.values().sum();
        let errors: u64 = t.errors.values().sum();
        let _ = writeln!(
            r,
            "| requests | {} |\n| allowed | {} |\n| denied | {denied} ({}) |\n| errors | \
             {errors}{} |\n| not sent (client at {} in flight) | {} |\n| **wrong answers** | \
             **{}** |",
            t.requests,
            t.allowed,
            t.denied
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            if t.errors.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    t.errors
                        .iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            512,
            t.not_sent,
            t.wrong
        );
        let _ = writeln!(
            r,
            "| certgate RSS, peak | {:.1} MiB after warm-up → {:.1} MiB in the last fifth ({:+.1} %) |",
            rss0 as f64 / 1024.0,
            rss1 as f64 / 1024.0,
            100.0 * growth(rss0, rss1)
        );
        let _ = writeln!(
            r,
            "| certgate open fds, fewest (most) | {fds0} ({most0}) after warm-up → {fds1} \
             ({most1}) in the last fifth |"
        );
        let _ = writeln!(
            r,
            "| config reloads (success / refused) | {} / {} counted by certgate {:.1} s after \
             the load, {} / {} edits made |",
            self.reloads.0,
            self.reloads.1,
            self.reloads_counted_after.as_secs_f64(),
            c.valid_edits,
            c.invalid_edits
        );
        let _ = writeln!(
            r,
            "| churn | {} suspensions, {} activations; CRLs: {} newer, {} forged, {} stale; \
             trust bundle: {}; {} store freezes |",
            c.suspensions,
            c.activations,
            c.crl_newer,
            c.crl_forged,
            c.crl_stale,
            if c.rotation.is_empty() {
                "unchanged".to_owned()
            } else {
                c.rotation.join(", ")
            },
            c.freezes
        );
        if self.backend == "dynamodb" {
            let _ = writeln!(
                r,
                "| moto restarts (SIGKILL, restarted empty, store re-seeded), times from the \
                 kill | {} |",
                restarts(&c.restarts, &t.recoveries)
            );
        }
        let p99: Vec<String> = t
            .minutes
            .iter_mut()
            .enumerate()
            .map(|(m, v)| format!("{}: {:.1} ms", m + 1, percentile(v, 0.99) as f64 / 1000.0))
            .collect();
        let _ = writeln!(r, "| p99 by minute | {} |", p99.join(", "));
        let every: Vec<String> = self
            .samples
            .iter()
            .map(|(s, rss, fds)| format!("{s}s {:.1} MiB {fds} fds", *rss as f64 / 1024.0))
            .collect();
        let _ = writeln!(r, "\nSamples: {}", every.join("; "));
        for w in &t.wrong_shown {
            let _ = writeln!(r, "- wrong: {w}");
        }
        let ok = failures.is_empty();
        let _ = writeln!(
            r,
            "\nVerdict: {}",
            if ok {
                "pass".to_owned()
            } else {
                format!("FAIL: {}", failures.join("; "))
            }
        );
        (r, ok)
    }
}

/// Each restart's recovery, for the report.
fn restarts(records: &[Record], recoveries: &BTreeMap<usize, Duration>) -> String {
    let secs =
        |d: Option<Duration>| d.map_or("—".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
    let each: Vec<String> = records
        .iter()
        .enumerate()
        .map(|(k, r)| {
            format!(
                "at {} s: moto answering after {}, `store init` done {}, {} active principals \
                 re-enrolled {} ({} suspended left out until re-activated), first right \
                 allow {}",
                r.at,
                secs(r.up),
                secs(r.initialised),
                r.enrolled,
                if r.reseeded.is_some() {
                    secs(r.reseeded)
                } else {
                    "— (the run ended first)".to_owned()
                },
                r.left_out,
                secs(recoveries.get(&k).copied())
            )
        })
        .collect();
    if each.is_empty() {
        "none (a run needs 40 s left at 20 s, 140 s, …)".to_owned()
    } else {
        format!("{}: {}", each.len(), each.join("; "))
    }
}
