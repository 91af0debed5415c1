//! Span fields for the JSON log layer, written as the JSON object text it expects.
//!
//! The layer formats a span's fields when the span opens, whether or not a line of that span
//! is ever printed; with its own `JsonFields` that is a map of `serde_json` values serialised
//! on every check (~5k instructions of a module request that logs nothing). This writes the
//! same object straight out. The layer parses the text back when it prints a line, so what
//! is printed is unchanged.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// A [`FormatFields`] writing `{"name":value,…}`.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonSpanFields;

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        writer.write_char('{')?;
        let mut object = Object {
            out: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut object);
        object.result?;
        writer.write_char('}')
    }

    /// Fields recorded after the span opened join its object (a name recorded again is
    /// printed with its last value, as the layer reads the text into a map).
    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        if current.fields.is_empty() {
            return self.format_fields(current.as_writer(), fields);
        }
        current.fields.pop();
        let first = current.fields.ends_with('{');
        let mut writer = current.as_writer();
        let mut object = Object {
            out: &mut writer,
            first,
            result: Ok(()),
        };
        fields.record(&mut object);
        object.result?;
        writer.write_char('}')
    }
}

/// Writes one object's members.
struct Object<'a, W> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<W: Write> Object<'_, W> {
    fn member(&mut self, name: &str, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "\"" } else { ",\"" };
        self.first = false;
        self.result = (self.out.write_str(separator))
            .and_then(|()| Escaped(&mut *self.out).write_str(name))
            .and_then(|()| self.out.write_str("\":"))
            .and_then(|()| value(self.out));
    }
}

fn string<W: Write>(out: &mut W, text: fmt::Arguments<'_>) -> fmt::Result {
    out.write_char('"')?;
    Escaped(&mut *out).write_fmt(text)?;
    out.write_char('"')
}

impl<W: Write> Visit for Object<'_, W> {
    /// Written directly rather than through `format_args!`: a check's span has one of these
    /// (its request id), and the formatting machinery costs more than the escaping.
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field.name(), |out| {
            out.write_char('"')?;
            Escaped(&mut *out).write_str(value)?;
            out.write_char('"')
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field.name(), |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field.name(), |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field.name(), |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.member(field.name(), |out| {
            if value.is_finite() {
                write!(out, "{value:?}")
            } else {
                out.write_str("null")
            }
        });
    }

    /// As the layer's own formatter: `log.*` fields are left out, a raw identifier's `r#`
    /// dropped.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.member(name, |out| string(out, format_args!("{value:?}")));
    }
}

/// Writes text as the inside of a JSON string.
struct Escaped<'a, W>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..0x20 => "",
                _ => continue,
            };
            self.0.write_str(&text[plain..at])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = at + 1;
        }
        self.0.write_str(&text[plain..])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};

    use super::*;

    /// A log writer for tests: everything written, kept.
    #[derive(Clone, Default)]
    pub(crate) struct Lines(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Call before a test sets a thread-local subscriber to read what is logged. tracing
    /// caches each callsite's interest for the whole process, computed when the callsite is
    /// first reached; with at most one subscriber registered it asks the default of the thread
    /// that got there, so a test running a check with no subscriber pins the decision log
    /// to "never" for every thread, and a capturing test running beside it misses lines (seen
    /// about once in three `cargo test --lib` runs). A global subscriber that keeps nothing
    /// leaves no thread without one, and the rebuild undoes any pinning done before it.
    pub(crate) fn no_thread_without_a_subscriber() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Fails only if a global subscriber exists, which is as good.
            let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
            tracing::callsite::rebuild_interest_cache();
        });
    }

    /// The JSON lines the layer prints for one span and its events, with the given fields.
    fn printed(cheap: bool) -> Vec<Value> {
        no_thread_without_a_subscriber();
        let lines = Lines::default();
        let writer = lines.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .json()
            .flatten_event(true);
        let run = || {
            let span = tracing::info_span!(
                "check",
                otel.name = "Check",
                request_id = "r-\"1\"\\\n\u{1}é",
                n = -3i64,
                u = 7u64,
                ok = true,
                x = 1.5f64,
                d = ?Some("debug"),
                later = tracing::field::Empty,
            );
            span.in_scope(|| tracing::info!(k = "v", "inside"));
            span.record("later", "recorded");
            span.in_scope(|| tracing::warn!("after the record"));
        };
        if cheap {
            tracing::subscriber::with_default(builder.fmt_fields(JsonSpanFields).finish(), run);
        } else {
            tracing::subscriber::with_default(builder.finish(), run);
        }
        let text = String::from_utf8(lines.0.lock().expect("lock").clone()).expect("utf-8");
        text.lines()
            .map(|line| {
                let mut value: Value = serde_json::from_str(line).expect("a JSON line");
                value.as_object_mut().expect("object").remove("timestamp");
                value
            })
            .collect()
    }

    #[test]
    fn lines_print_as_with_the_layers_own_field_formatter() {
        let cheap = printed(true);
        assert_eq!(cheap, printed(false));
        assert_eq!(cheap.len(), 2);
        assert_eq!(
            cheap[1]["span"],
            json!({
                "name": "check",
                "otel.name": "Check",
                "request_id": "r-\"1\"\\\n\u{1}é",
                "n": -3,
                "u": 7,
                "ok": true,
                "x": 1.5,
                "d": "Some(\"debug\")",
                "later": "recorded",
            })
        );
    }
}
