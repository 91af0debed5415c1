//! Measuring processes: CPU time and peak RSS from /proc, load generator runs, builds.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::report::log;

/// A command line as it would be typed (for the log and the report's Commands block).
pub fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A command line for the report: `$TMP` for the run's scratch directory, paths in the
/// repository relative to its root (the report is read next to it).
pub fn for_report(cmd: &Command, work: &Path) -> String {
    let root = format!("{}/", testkit::repo().display());
    shown(cmd)
        .replace(&work.display().to_string(), "$TMP")
        .replace(&root, "")
}

/// `certgate bootstrap` of a dev PKI and configuration into `pki`, listening on loopback;
/// returned for the report.
pub fn bootstrap(certgate: &Path, pki: &Path, grpc: u16, admin: u16) -> Result<Command> {
    let mut cmd = Command::new(certgate);
    cmd.args(["bootstrap", "--out-dir"])
        .arg(pki)
        .arg("--grpc-listen")
        .arg(format!("127.0.0.1:{grpc}"))
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{admin}"))
        .stdout(std::process::Stdio::null());
    run(&mut cmd)?;
    Ok(cmd)
}

/// A path relative to the repository root when it lies inside it.
pub fn relative(path: &Path) -> String {
    let root = testkit::repo();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Run `cmd` in the repository, failing on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = shown(cmd);
    log(&line);
    let status = cmd
        .current_dir(testkit::repo())
        .status()
        .with_context(|| format!("cannot run {line}"))?;
    if !status.success() {
        bail!("{line} failed ({status})");
    }
    Ok(())
}

/// `cargo build [--release] ARGS…`, returned for the report. With `BUILD=0` the binaries
/// already in target/ are measured as they are (a release build takes half an hour on a busy
/// two-core machine), and the report says so.
pub fn cargo_build(profile: &str, args: &[&str]) -> Result<String> {
    let shown = format!("cargo build{} {}", release_flag(profile), args.join(" "));
    if std::env::var("BUILD").is_ok_and(|b| b == "0") {
        return Ok(format!("# not run (BUILD=0): {shown}"));
    }
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("build");
    if profile == "release" {
        cmd.arg("--release");
    }
    cmd.args(args);
    run(&mut cmd)?;
    Ok(shown)
}

fn release_flag(profile: &str) -> &'static str {
    if profile == "release" {
        " --release"
    } else {
        ""
    }
}

/// Fields of /proc/`pid`/stat after the command name (which may hold spaces), from `state`.
fn stat_fields(pid: &str) -> Result<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    Ok(rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect())
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let f = stat_fields(&pid.to_string())?;
    Ok(f[11] + f[12])
}

/// cutime + cstime of this process: the CPU of children it has waited for. The difference
/// around one `Command::output` is that command's CPU (bash's `time`).
pub fn waited_children_ticks() -> Result<u64> {
    let f = stat_fields("self")?;
    Ok(f[13] + f[14])
}

/// Clock ticks per second.
pub fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Peak resident set size (VmHWM) in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmHWM")
}

/// The first `n` fields of /proc/loadavg (1, 5, 15 minutes).
pub fn load_average(n: usize) -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(n)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The sum of every sample of metric `name` (whatever its labels), or of those whose labels
/// contain `label` when given.
pub fn metric_sum(body: &str, name: &str, label: Option<&str>) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            series
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
                && label.is_none_or(|label| series.contains(label))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// `10s`, `500ms`, `1m`, `1h` in seconds.
pub fn seconds(duration: &str) -> Result<f64> {
    let digits = duration.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: f64 = digits
        .parse()
        .with_context(|| format!("duration {duration}"))?;
    Ok(match &duration[digits.len()..] {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        unit => bail!("duration {duration}: unknown unit {unit}"),
    })
}

/// loadgen's `key value` report lines, by key.
fn fields(report: &str) -> HashMap<String, String> {
    report
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(char::is_whitespace)?;
            Some((k.to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// One examples/loadgen.rs run: its `key value` report and its own CPU seconds.
pub struct Load {
    /// The report lines, by key.
    pub fields: HashMap<String, String>,
    /// user + sys of the load generator.
    pub cpu_secs: f64,
    /// Whether it exited 0 (it exits non-zero when requests failed).
    pub ok: bool,
    /// Everything it printed, for error messages.
    pub output: String,
}

impl Load {
    /// Run `cmd` (a loadgen command) to completion.
    pub fn run(cmd: &mut Command, hz: f64) -> Result<Load> {
        let before = waited_children_ticks()?;
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {}", shown(cmd)))?;
        let cpu_secs = (waited_children_ticks()? - before) as f64 / hz;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(Load {
            fields: fields(&stdout),
            cpu_secs,
            ok: out.status.success(),
            output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        })
    }

    /// A report field, `""` if absent.
    pub fn field(&self, key: &str) -> &str {
        self.fields.get(key).map_or("", String::as_str)
    }

    /// A numeric report field, 0 if absent.
    pub fn count(&self, key: &str) -> u64 {
        self.field(key).parse().unwrap_or(0)
    }

    /// A latency field (µs) as a table cell.
    pub fn lat(&self, key: &str) -> String {
        crate::report::lat(self.field(key).parse().unwrap_or(0.0))
    }

    /// Judge a run whose requests are all meant to be allowed. `strict`: fail unless every
    /// request was (a deny or an error is a broken setup, not a number). Otherwise fail only
    /// when loadgen gave no report or nothing was allowed, and return the shortfall for the
    /// report, warned on stderr too: one 503 from a debug build on a busy machine is noise.
    pub fn expect_allowed(&self, what: &str, strict: bool) -> Result<Option<String>> {
        let (requests, allowed) = (self.count("requests"), self.count("allowed"));
        if self.ok && requests > 0 && allowed == requests {
            return Ok(None);
        }
        if strict || self.field("requests").is_empty() || allowed == 0 {
            bail!(
                "{what}: not every request was allowed (loadgen {}):\n{}",
                if self.ok { "exited 0" } else { "failed" },
                self.output
            );
        }
        let first = self
            .fields
            .get("first_error")
            .map(|e| format!(" (first error: {e})"))
            .unwrap_or_default();
        Ok(Some(crate::report::shortfall(format!(
            "{what}: {allowed} of {requests} requests allowed, {} denied, {} errors{first}",
            self.field("denied"),
            self.field("errors")
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(ok: bool, report: &str) -> Load {
        Load {
            fields: fields(report),
            cpu_secs: 0.0,
            ok,
            output: report.to_owned(),
        }
    }

    #[test]
    fn a_lenient_run_reports_what_was_not_allowed_and_fails_only_when_nothing_was() {
        let all = load(true, "requests 10\nallowed 10\ndenied 0\nerrors 0\n");
        assert_eq!(all.expect_allowed("x", true).unwrap(), None);
        let some = load(
            false,
            "requests 10\nallowed 9\ndenied 0\nerrors 1\nfirst_error 503\n",
        );
        assert!(some.expect_allowed("x", true).is_err());
        let note = some.expect_allowed("x", false).unwrap().unwrap();
        assert_eq!(
            note,
            "x: 9 of 10 requests allowed, 0 denied, 1 errors (first error: 503)"
        );
        let none = load(false, "requests 10\nallowed 0\ndenied 0\nerrors 10\n");
        assert!(none.expect_allowed("x", false).is_err());
        let no_report = load(false, "error: connecting to http://127.0.0.1:1\n");
        assert!(no_report.expect_allowed("x", false).is_err());
    }
}
