//! `inventory.*`, `expiry_warning` and the `max_lifetime` presets.

use super::*;

const BASE: &str = "listen: {grpc: \"127.0.0.1:9001\"}\ntrust: {ca_bundle: ca.pem}\n";

#[test]
fn presets_set_the_lifetime_and_the_renewal_window() {
    let dir = dir_with_ca();
    let yaml = format!(
        "{BASE}policies:\n  default: {{max_lifetime: short-47d}}\n  \
         year: {{max_lifetime: max-365d, expiry_warning: 45d}}\n  \
         admin: {{max_lifetime: 7d, expiry_warning: 24h}}\n  plain: {{}}\n"
    );
    let config = load(&dir, &yaml).expect("valid");
    let p = |name: &str| config.policies[name].clone();
    assert_eq!(p("default").max_lifetime_secs, Some(47 * 86_400));
    assert_eq!(
        p("default").expiry_warning_secs,
        10 * 86_400,
        "the preset's window"
    );
    assert_eq!(p("year").max_lifetime_secs, Some(365 * 86_400));
    assert_eq!(
        p("year").expiry_warning_secs,
        45 * 86_400,
        "expiry_warning wins"
    );
    assert_eq!(p("admin").expiry_warning_secs, 86_400);
    assert_eq!(p("plain").expiry_warning_secs, 30 * 86_400, "the default");
    let inv = &config.inventory;
    assert!(inv.record);
    assert_eq!(inv.interval, std::time::Duration::from_secs(3600));
    assert_eq!(inv.queue_size, 10_000);
}

#[test]
fn bad_expiry_and_inventory_values_are_reported_with_their_keys() {
    let dir = dir_with_ca();
    let yaml = format!(
        "{BASE}policies:\n  default: {{max_lifetime: short-48d}}\n  \
         admin: {{max_lifetime: 7d, expiry_warning: 7d}}\n  \
         other: {{expiry_warning: soon}}\n\
         inventory: {{interval: 0s, queue_size: 0, refresh_interval: 3x, in_use_within: x}}\n"
    );
    let err = load(&dir, &yaml).expect_err("invalid");
    assert_problems_at(
        &err,
        &[
            "policies.default.max_lifetime",
            "policies.admin.expiry_warning",
            "policies.other.expiry_warning",
            "inventory.interval",
            "inventory.queue_size",
            "inventory.refresh_interval",
            "inventory.in_use_within",
        ],
    );
    let text = err.to_string();
    assert!(
        text.contains("short-47d, medium-100d, long-200d, max-365d"),
        "{text}"
    );
    assert!(text.contains("is not shorter than max_lifetime"), "{text}");
    let unknown = format!("{BASE}policies: {{default: {{}}}}\ninventory: {{recrd: true}}\n");
    let err = load(&dir, &unknown).expect_err("unknown key");
    assert_problems_at(&err, &["inventory.recrd"]);
}
