//! Keeping the configuration current while serving: poll the config file and the files it
//! names, put a valid new version in force (identity caches and CRL settings with it), and
//! refuse an invalid one while keeping the last good.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::check::Checker;
use crate::config::{Config, Watched};

/// Poll the config and the files it names; put a valid new version in force, refuse (log,
/// count) an invalid one and keep the last good.
pub(crate) async fn reload_loop(checker: Arc<Checker>, path: PathBuf, interval: Duration) {
    // What the configuration in force was read from, byte for byte: a change made while it
    // was being loaded shows up at the next poll.
    let mut watched = checker.config().watched_files.clone();
    let mut last = watched.fingerprint();
    let mut unreadable_logged = false;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let read = {
            let watched = watched.clone();
            match tokio::task::spawn_blocking(move || Watched::read(watched.paths())).await {
                Ok(read) => read,
                Err(_) => continue,
            }
        };
        let now = match read {
            Ok(now) => {
                unreadable_logged = false;
                now
            }
            Err(unreadable) => {
                // Unchanged as far as anyone knows: keep the configuration (and its caches).
                if !unreadable_logged {
                    tracing::warn!(error = %unreadable, "watched file unreadable; treated as unchanged until it can be read");
                    unreadable_logged = true;
                }
                continue;
            }
        };
        if now.fingerprint() == last {
            continue;
        }
        let loaded = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || Config::load(&path)).await
        };
        let metrics = checker.metrics();
        match loaded {
            Ok(Ok(new)) => {
                let old = checker.config();
                if new.listen != old.listen || new.store.backend != old.store.backend {
                    tracing::warn!(
                        "listen addresses or store backend changed: restart to apply them"
                    );
                }
                watched = new.watched_files.clone();
                checker.replace_config(new);
                metrics.config_reloads.with_label_values(&["success"]).inc();
                metrics.config_last_reload_failed.set(0);
                tracing::info!(config = %path.display(), "configuration reloaded");
            }
            Ok(Err(err)) => {
                // Keep watching the files of the last good config plus the ones the bad
                // version names (an allowlist file that does not exist yet, say), so that
                // fixing either is noticed.
                watched = err.watched_files.clone();
                watched.extend_from(&now);
                metrics.config_reloads.with_label_values(&["failure"]).inc();
                metrics.config_last_reload_failed.set(1);
                tracing::error!(error = %err, "configuration reload refused; previous configuration stays in force");
            }
            Err(join_error) => {
                // Tried once for these bytes; the next change is tried again.
                watched = now;
                metrics.config_reloads.with_label_values(&["failure"]).inc();
                metrics.config_last_reload_failed.set(1);
                tracing::error!(error = %join_error, "configuration reload failed; previous configuration stays in force");
            }
        }
        last = watched.fingerprint();
    }
}
