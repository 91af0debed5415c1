//! Report text: the machine, the formatting of numbers, and BENCHMARKS.md sections.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

/// `==> message` on stderr, the progress lines of every benchmark.
pub fn log(message: &str) {
    eprintln!("==> {message}");
}

/// A latency in µs as a table cell: µs below 1 ms, ms from there.
pub fn lat(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn stdout_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(testkit::repo())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The short commit, marked when the tree has uncommitted changes.
pub fn commit() -> String {
    let mut commit = stdout_of("git", &["rev-parse", "--short", "HEAD"]);
    if commit.is_empty() {
        commit = "unknown".into();
    }
    if !stdout_of("git", &["status", "--porcelain"]).is_empty() {
        commit.push_str(" (with uncommitted changes)");
    }
    commit
}

/// The current UTC time, `YYYY-MM-DD HH:MM UTC`.
pub fn date() -> String {
    stdout_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

/// The CPU model name.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(": "))
        .map_or_else(String::new, |(_, v)| v.to_owned())
}

/// Online CPUs.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Total memory in GiB, one decimal.
pub fn mem_gib() -> String {
    let kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    format!("{:.1}", kib / 1_048_576.0)
}

/// `uname -sr`.
pub fn kernel() -> String {
    stdout_of("uname", &["-sr"])
}

/// `rustc --version`.
pub fn rustc() -> String {
    stdout_of("rustc", &["--version"])
}

/// `note` on a run that did not allow every request, warned on stderr and returned for the
/// report's [`shortfalls`].
pub fn shortfall(note: String) -> String {
    eprintln!("WARNING: not every request was allowed: {note}");
    note
}

/// The runs that did not allow every request, as a block that stands out under a section's
/// title; empty when there are none.
pub fn shortfalls(notes: &[String]) -> String {
    if notes.is_empty() {
        return String::new();
    }
    let list: String = notes.iter().map(|n| format!("- {n}\n")).collect();
    format!(
        "**Not every request was allowed.** Every benchmarked request is meant to be; the \
         numbers below include these:\n\n{list}\n"
    )
}

/// The start of the grpc and dynamodb sections, up to the Machine table's kernel row: begin
/// marker, title, provenance, the [`shortfalls`] of `notes`, date, commit and hardware.
pub fn machine_head(section: &str, title: &str, quick_note: &str, notes: &[String]) -> String {
    let (begin, _) = markers(section);
    format!(
        "{begin}\n## {title} (`{section}`)\n\nWritten by `{section}`{quick_note}. Numbers from one \
         run on one\nmachine: compare runs on the same machine only. Timings are never \
         asserted.\n\n{}### Machine\n\n| | |\n| --- | --- |\n| date | {} |\n| commit | {} |\n\
         | CPU | {} |\n| cores (nproc) | {} |\n| memory | {} GiB |\n| kernel | {} |\n",
        shortfalls(notes),
        date(),
        commit(),
        cpu_model(),
        nproc(),
        mem_gib(),
        kernel()
    )
}

/// The begin and end markers of the section `name` writes.
pub fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- {name}: begin (generated; other sections of this file are kept) -->"),
        format!("<!-- {name}: end -->"),
    )
}

/// Put `block` (from its begin marker to its end marker and a newline) into the report at
/// `out`, replacing the previous run's section of `name`; other sections stay as they are.
/// A missing section is appended, or with `top`, put right after the title.
pub fn write_section(name: &str, out: &Path, block: &str, top: bool) -> Result<()> {
    let text = std::fs::read_to_string(out).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let begin = format!("<!-- {name}: begin");
    let end = format!("<!-- {name}: end -->\n");
    let text = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &text[..b], &text[e + end.len()..]),
        _ if top => match text.split_once('\n') {
            Some((title, rest)) => format!("{title}\n\n{block}{rest}"),
            None => format!("{text}\n\n{block}"),
        },
        _ => format!("{}\n\n{block}", text.trim_end_matches('\n')),
    };
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, text).with_context(|| format!("write {}", out.display()))?;
    log(&format!("wrote {}", out.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(name: &str, body: &str) -> String {
        let (begin, end) = markers(name);
        format!("{begin}\n{body}\n{end}\n")
    }

    #[test]
    fn a_section_replaces_its_previous_run_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("B.md");
        write_section("a", &out, &block("a", "one"), true).unwrap();
        write_section("b", &out, &block("b", "two"), false).unwrap();
        std::fs::write(
            &out,
            std::fs::read_to_string(&out).unwrap() + "\nhand-written\n",
        )
        .unwrap();
        write_section("a", &out, &block("a", "three"), true).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            text,
            format!(
                "# Benchmarks\n\n{}\n{}\nhand-written\n",
                block("a", "three"),
                block("b", "two")
            )
        );
    }

    #[test]
    fn shortfalls_stand_above_the_machine_table_and_only_when_there_are_some() {
        let head = machine_head("s", "t", "", &["x: 9 of 10 requests allowed".to_owned()]);
        let warning = head.find("**Not every request was allowed.**").unwrap();
        assert!(warning < head.find("### Machine").unwrap());
        assert!(head.contains("\n- x: 9 of 10 requests allowed\n"));
        assert!(!machine_head("s", "t", "", &[]).contains("Not every request"));
    }

    #[test]
    fn latencies_switch_to_milliseconds_at_one() {
        assert_eq!(lat(999.4), "999 µs");
        assert_eq!(lat(1234.0), "1.23 ms");
    }
}
