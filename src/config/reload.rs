//! Noticing that a configuration, or a file it names, changed: the reload fingerprints.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

/// A watched file exists but cannot be read right now (out of descriptors, permissions, a
/// directory in its place): nothing is known about its contents.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct Unreadable {
    pub(crate) path: PathBuf,
    pub(crate) source: std::io::Error,
}

/// The files a configuration was read from, each with a hash of the bytes that were read.
///
/// A configuration records what it actually read, so a file that changes while a reload reads
/// it differs from the recorded hash at the next poll and is loaded then. Reading the files
/// again after the load instead lost such a change for good: the newer bytes became the
/// baseline while the older ones stayed in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watched {
    files: Vec<(PathBuf, u64)>,
}

impl Watched {
    /// Record that `path` was read and held `contents` (empty for a missing file).
    pub(crate) fn record(&mut self, path: PathBuf, contents: &[u8]) {
        let mut hasher = DefaultHasher::new();
        contents.hash(&mut hasher);
        self.files.push((path, hasher.finish()));
    }

    /// Read `paths` now. A missing file counts as empty (deleting or creating one is a
    /// change); a file that cannot be read is an error, never a change: taking it for one
    /// made a process out of descriptors reload, and flush its caches, once it could read
    /// again.
    pub fn read<'p>(paths: impl IntoIterator<Item = &'p Path>) -> Result<Watched, Unreadable> {
        let mut watched = Watched::default();
        for path in paths {
            let contents = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(source) => {
                    return Err(Unreadable {
                        path: path.to_owned(),
                        source,
                    });
                }
            };
            watched.record(path.to_owned(), &contents);
        }
        Ok(watched)
    }

    /// The watched paths, in the order they were read.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(path, _)| path.as_path())
    }

    /// Whether `path` is watched.
    pub fn contains(&self, path: &Path) -> bool {
        self.paths().any(|p| p == path)
    }

    /// Add the files of `other` this set does not watch yet, with the hashes `other` read.
    pub fn extend_from(&mut self, other: &Watched) {
        for (path, hash) in &other.files {
            if !self.contains(path) {
                self.files.push((path.clone(), *hash));
            }
        }
    }

    /// One number for the whole set: equal when no watched file changed.
    pub fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.files.hash(&mut hasher);
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_read_matches_a_later_read_of_the_same_bytes_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("certgate.yaml");
        std::fs::write(&file, "a").expect("write");
        let mut loaded = Watched::default();
        loaded.record(file.clone(), b"a");
        let now = |f: &Path| Watched::read([f]).expect("readable").fingerprint();
        assert_eq!(now(&file), loaded.fingerprint());
        std::fs::write(&file, "b").expect("write");
        assert_ne!(now(&file), loaded.fingerprint());
        std::fs::remove_file(&file).expect("remove");
        let mut missing = Watched::default();
        missing.record(file.clone(), b"");
        assert_eq!(now(&file), missing.fingerprint());
    }
}
