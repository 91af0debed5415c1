//! What is wrong with a configuration: each problem with its key path, all of them at once.

use std::fmt;
use std::path::PathBuf;

/// One problem, with its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `policies.admin.max_lifetime`.
    pub(crate) key: String,
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// The configuration cannot be used; lists every problem found.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub(crate) file: PathBuf,
    /// Every problem, in key order of discovery.
    pub(crate) problems: Vec<Problem>,
    /// The files this version names (itself included), so a reload loop can notice the fix.
    pub(crate) watched_files: super::Watched,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration {}:", self.file.display())?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}
