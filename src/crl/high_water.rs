//! The high-water marks: per CA key, the thisUpdate of the newest CRL ever installed, kept in
//! `crl.high_water_file` so that "an older CRL never replaces a newer one" holds across
//! restarts too. Without it, an older but validly signed CRL planted in `cache_dir` (or
//! replayed by a source while nothing is in force) would be loaded at start and un-revoke
//! every certificate revoked since.
//!
//! The file must live where whoever can write `cache_dir` cannot (the configuration refuses
//! it inside `cache_dir`); it holds no secret. thisUpdate is the order the in-memory rule
//! already uses, so the two can never disagree; a CA that re-numbers its CRLs (cRLNumber)
//! does not lock itself out.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cert::CaKey;

/// Why the high-water file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum HighWaterError {
    /// It exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// It is not a high-water file.
    #[error("{path} is not a certgate CRL high-water file: {detail}")]
    Malformed {
        /// The file.
        path: String,
        /// The parser's reason.
        detail: String,
    },
}

/// One CA key's mark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mark {
    /// thisUpdate of the newest CRL installed, Unix seconds.
    this_update: i64,
    /// The CA's name, for a human reading the file.
    issuer: String,
}

/// The marks, keyed by CA key (hex of [`CaKey`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HighWater {
    version: u32,
    marks: BTreeMap<String, Mark>,
}

impl HighWater {
    /// thisUpdate of the newest CRL of `key` installed, if any.
    pub(crate) fn newest(&self, key: &CaKey) -> Option<i64> {
        self.marks.get(&key.hex()).map(|m| m.this_update)
    }

    /// Raise the mark of `key` to `this_update` (never lowers it).
    pub(crate) fn raise(&mut self, key: CaKey, this_update: i64, issuer: &str) {
        let mark = self.marks.entry(key.hex()).or_insert_with(|| Mark {
            this_update,
            issuer: issuer.to_owned(),
        });
        if this_update > mark.this_update {
            mark.this_update = this_update;
            issuer.clone_into(&mut mark.issuer);
        }
    }

    /// Raise every mark to `other`'s.
    pub(crate) fn merge(&mut self, other: &HighWater) {
        for (key, mark) in &other.marks {
            if let Some(key) = CaKey::from_hex(key) {
                self.raise(key, mark.this_update, &mark.issuer);
            }
        }
    }

    /// The file's content.
    pub(crate) fn to_json(&self) -> String {
        let file = HighWater {
            version: 1,
            marks: self.marks.clone(),
        };
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// Parse the file's content.
    pub(crate) fn from_json(text: &str, path: &Path) -> Result<HighWater, HighWaterError> {
        let malformed = |detail: String| HighWaterError::Malformed {
            path: path.display().to_string(),
            detail,
        };
        let file: HighWater = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        if file.version != 1 {
            return Err(malformed(format!("unknown version {}", file.version)));
        }
        if let Some(bad) = file.marks.keys().find(|k| CaKey::from_hex(k).is_none()) {
            return Err(malformed(format!("\"{bad}\" is not a CA key")));
        }
        Ok(file)
    }
}

/// Read `path`; a file that does not exist yet is no marks (the first start).
pub async fn read(path: &Path) -> Result<HighWater, HighWaterError> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => HighWater::from_json(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HighWater::default()),
        Err(source) => Err(HighWaterError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Write `bytes` to `path` atomically: a temp file beside it, then rename.
pub(crate) async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    // One temp name per process: `certgate check` and `serve` may write at the same time.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let written = match tokio::fs::write(&tmp, bytes).await {
        Ok(()) => tokio::fs::rename(&tmp, path).await,
        Err(e) => Err(e),
    };
    if written.is_err() {
        // A partial temp file (a full disk) would keep the space it took, and one more
        // would be left by every process that fails the same way.
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_only_rise_and_round_trip() {
        let (a, b) = (CaKey([1; 32]), CaKey([2; 32]));
        let mut marks = HighWater::default();
        marks.raise(a, 100, "CN=a");
        marks.raise(a, 50, "CN=a");
        marks.raise(b, 7, "CN=b");
        assert_eq!((marks.newest(&a), marks.newest(&b)), (Some(100), Some(7)));
        let path = Path::new("hw.json");
        let back = HighWater::from_json(&marks.to_json(), path).expect("parses");
        assert_eq!(back.newest(&a), Some(100));
        let mut lower = HighWater::default();
        lower.raise(a, 10, "CN=a");
        lower.merge(&back);
        assert_eq!(lower.newest(&a), Some(100));
        assert_eq!(HighWater::default().newest(&a), None);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_one() {
        let path = Path::new("hw.json");
        for text in [
            "",
            "{}",
            "[1]",
            "{\"version\":2,\"marks\":{}}",
            "{\"version\":1,\"marks\":{\"zz\":{\"this_update\":1,\"issuer\":\"x\"}}}",
        ] {
            assert!(HighWater::from_json(text, path).is_err(), "{text}");
        }
    }
}
