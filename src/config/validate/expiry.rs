//! `inventory.*` and the expiry keys of a policy (`max_lifetime` presets, `expiry_warning`).

use super::Validator;
use crate::config::raw::RawInventory;
use crate::inventory::InventorySettings;

/// Lifetime presets usable by name in `max_lifetime`: name, lifetime and renewal window in
/// days. The renewal window is the policy's `expiry_warning` unless that is set.
pub(crate) const LIFETIME_PRESETS: [(&str, i64, i64); 4] = [
    ("short-47d", 47, 10),
    ("medium-100d", 100, 20),
    ("long-200d", 200, 30),
    ("max-365d", 365, 30),
];

/// `expiry_warning` of a policy that sets neither it nor a preset.
const DEFAULT_EXPIRY_WARNING_SECS: i64 = 30 * 86_400;

const DAY: i64 = 86_400;

impl Validator<'_> {
    /// `max_lifetime` (a duration or a preset name) and `expiry_warning` of policy `key`, in
    /// seconds.
    pub(super) fn expiry(
        &mut self,
        key: &str,
        max_lifetime: Option<String>,
        expiry_warning: Option<String>,
    ) -> (Option<i64>, i64) {
        let lifetime_key = format!("{key}.max_lifetime");
        let mut window = DEFAULT_EXPIRY_WARNING_SECS;
        let max_lifetime_secs = max_lifetime.map(|text| {
            if let Some((_, days, renewal)) = LIFETIME_PRESETS.iter().find(|p| p.0 == text) {
                window = renewal * DAY;
                return days * DAY;
            }
            if let Err(e) = humantime::parse_duration(&text) {
                let names: Vec<&str> = LIFETIME_PRESETS.iter().map(|p| p.0).collect();
                self.problem(
                    &lifetime_key,
                    format!(
                        "\"{text}\" is not a duration ({e}; e.g. 7d) nor a lifetime preset ({})",
                        names.join(", ")
                    ),
                );
                return 0;
            }
            let lifetime = self.duration(&lifetime_key, &text);
            if lifetime.is_zero() {
                self.problem(&lifetime_key, "must be greater than zero");
            }
            i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)
        });
        if let Some(text) = expiry_warning {
            let warning_key = format!("{key}.expiry_warning");
            let parsed = self.duration(&warning_key, &text);
            window = i64::try_from(parsed.as_secs()).unwrap_or(i64::MAX);
            if max_lifetime_secs.is_some_and(|max| max > 0 && window >= max) {
                self.problem(
                    warning_key,
                    "is not shorter than max_lifetime: every certificate would be logged as \
                     expiring from its first use",
                );
            }
        }
        (max_lifetime_secs, window)
    }

    pub(super) fn inventory(&mut self, raw: RawInventory) -> InventorySettings {
        let interval = self.duration("inventory.interval", &raw.interval);
        let refresh_interval = self.duration("inventory.refresh_interval", &raw.refresh_interval);
        for (key, value) in [
            ("inventory.interval", interval),
            ("inventory.refresh_interval", refresh_interval),
        ] {
            if value.is_zero() {
                self.problem(key, "must be greater than zero");
            }
        }
        InventorySettings {
            record: raw.record,
            interval,
            queue_size: self.count("inventory.queue_size", raw.queue_size, 1, 1_000_000) as usize,
            refresh_interval,
            in_use_within: self.duration("inventory.in_use_within", &raw.in_use_within),
        }
    }
}
