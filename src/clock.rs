//! The clock edge: the only place certgate reads wall-clock time. Everything below takes
//! `now` as a parameter, so tests need no sleeping and no clock mocking. Times are Unix
//! seconds throughout; the two formatters here are the one way they are shown in messages.

/// Current Unix time in seconds.
#[allow(clippy::disallowed_methods)]
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Current Unix time in milliseconds (store timestamps).
#[allow(clippy::disallowed_methods)]
pub(crate) fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// RFC 3339 text of a Unix time, for messages.
pub(crate) fn rfc3339(unix_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix_secs}"))
}

/// `3h05m`, `2d4h`, `45s`: short durations for messages.
pub(crate) fn human(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let sign = if secs < 0 { "-" } else { "" };
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sign}{sec}s"),
        (0, 0, _) => format!("{sign}{m}m{sec:02}s"),
        (0, _, _) => format!("{sign}{h}h{m:02}m"),
        _ => format!("{sign}{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(45), "45s");
        assert_eq!(human(125), "2m05s");
        assert_eq!(human(3 * 3600 + 60), "3h01m");
        assert_eq!(human(2 * 86_400 + 4 * 3600), "2d4h");
        assert_eq!(human(-30), "-30s");
    }
}
