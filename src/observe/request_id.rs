//! The id that ties a check's deny body, response header, log lines, decision log and trace
//! together: the proxy's `x-request-id` when it sent a usable one, otherwise a new UUIDv7
//! (time-ordered, so ids sort like the log).

use std::borrow::Cow;

/// Longest id taken from a proxy; a longer one is replaced, never truncated, so two
/// different ids never become one.
const MAX_LEN: usize = 128;

/// The id of this check: `sent` when it is 1–128 visible ASCII characters (it is echoed
/// into a response header and a JSON log line), else a new UUIDv7.
pub(crate) fn request_id(sent: Option<&str>) -> Cow<'_, str> {
    match sent {
        Some(id) if usable(id) => Cow::Borrowed(id),
        _ => Cow::Owned(new_id().to_string()),
    }
}

/// A new UUIDv7: the clock's milliseconds and 74 bits from `fastrand`'s thread-local
/// generator. The id correlates, it guards nothing; `Uuid::now_v7` draws from the operating
/// system on every call, a getrandom syscall that was ~9% of a cached check without a
/// proxy's id (BENCHMARKS.md, "Decision, in process").
fn new_id() -> uuid::Uuid {
    let ms = u64::try_from(crate::clock::unix_millis()).unwrap_or(0);
    let mut random = [0u8; 10];
    fastrand::fill(&mut random);
    uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid()
}

fn usable(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_id_is_kept() {
        let id = "5f0c7e8a-1b2c-4d3e-8f90-a1b2c3d4e5f6";
        assert!(matches!(request_id(Some(id)), Cow::Borrowed(b) if b == id));
    }

    #[test]
    fn missing_or_unusable_ids_are_replaced_by_distinct_uuid_v7s() {
        let long = "a".repeat(MAX_LEN + 1);
        for sent in [
            None,
            Some(""),
            Some("two words"),
            Some("caf\u{e9}"),
            Some(&long),
        ] {
            let id = request_id(sent);
            let uuid = uuid::Uuid::parse_str(&id).expect("a UUID");
            assert_eq!(uuid.get_version_num(), 7, "{sent:?}");
        }
        assert_ne!(request_id(None), request_id(None));
    }

    #[test]
    fn new_ids_are_distinct_and_carry_the_time() {
        let before = crate::clock::unix_millis();
        let ids: std::collections::HashSet<uuid::Uuid> = (0..10_000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 10_000);
        let after = crate::clock::unix_millis();
        for id in ids {
            let (secs, nanos) = id.get_timestamp().expect("a v7 timestamp").to_unix();
            let at = std::time::Duration::new(secs, nanos).as_millis();
            assert!(
                (before..=after).contains(&i64::try_from(at).expect("millis")),
                "{id}"
            );
        }
    }
}
