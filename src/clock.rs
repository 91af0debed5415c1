//! The clock edge: the only place certgate reads wall-clock time. Everything below takes
//! `now` as a parameter, so tests need no sleeping and no clock mocking.

/// Current Unix time in seconds.
#[allow(clippy::disallowed_methods)]
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Current Unix time in milliseconds (store timestamps).
#[allow(clippy::disallowed_methods)]
pub fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
