//! How results reach stdout: pretty JSON for scripts, tables and `label value` lists for
//! people, all through one table renderer so that long ids widen a column instead of
//! breaking the layout.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use comfy_table::{ContentArrangement, Table, presets};
use serde_json::Value;

use super::Failure;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(super) enum Output {
    Table,
    Json,
}

#[derive(Args, Clone, Copy)]
pub(super) struct OutputArg {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub(super) output: Output,
}

/// Columns left-aligned and separated by one space, no borders; an empty `header` prints
/// no header line.
pub(super) fn table<R: IntoIterator<Item = String>>(
    header: &[&str],
    rows: impl IntoIterator<Item = R>,
) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    if !header.is_empty() {
        t.set_header(header.to_vec());
    }
    for row in rows {
        t.add_row(row.into_iter().collect::<Vec<_>>());
    }
    t.column_iter_mut().for_each(|c| {
        c.set_padding((0, 1));
    });
    t.lines()
        .map(|line| format!("{}\n", line.trim_end()))
        .collect()
}

/// `label value` lines, the values aligned.
pub(super) fn fields<'a>(rows: impl IntoIterator<Item = (&'a str, String)>) -> String {
    table(&[], rows.into_iter().map(|(k, v)| [k.to_owned(), v]))
}

/// Write to stdout; a closed pipe (`certgate principal list | head`) ends the program quietly
/// instead of panicking.
pub(super) fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// `value` as JSON, or the text `table` renders.
pub(super) fn print(output: Output, value: &Value, table: impl FnOnce() -> String) {
    match output {
        Output::Json => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        )),
        Output::Table => emit(&table()),
    }
}

/// A list: a JSON array of `json` of each item, or a table with one `row` per item.
pub(super) fn print_list<T, R: IntoIterator<Item = String>>(
    output: Output,
    items: &[T],
    header: &[&str],
    json: impl Fn(&T) -> Value,
    row: impl Fn(&T) -> R,
) {
    print(
        output,
        &Value::Array(items.iter().map(&json).collect()),
        || table(header, items.iter().map(row)),
    );
}

/// Writes generated text (a completion script, a man page) to stdout; a reader that stops
/// early (`| head`) is not an error.
pub(super) fn print_generated(text: &[u8]) -> Result<ExitCode, Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Failed(
            anyhow::Error::new(e).context("cannot write to stdout"),
        )),
        _ => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_id_widens_its_column_and_no_line_ends_in_spaces() {
        let long = "a-principal-id-much-longer-than-forty-characters@example.com";
        let text = table(
            &["PRINCIPAL", "TYPE"],
            [
                vec![long.to_owned(), "worker".to_owned()],
                vec!["x".to_owned(), String::new()],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!("{:<w$} TYPE", "PRINCIPAL", w = long.len())
        );
        assert_eq!(lines[1], format!("{long} worker"));
        assert_eq!(lines[2], "x");
        assert_eq!(
            fields([("a", "1".to_owned()), ("bcd", "2".to_owned())]),
            "a   1\nbcd 2\n"
        );
    }
}
