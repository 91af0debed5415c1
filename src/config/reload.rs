//! Noticing that a configuration, or a file it names, changed: the reload fingerprints.

use std::path::PathBuf;

/// A watched file exists but cannot be read right now (out of descriptors, permissions, a
/// directory in its place): nothing is known about its contents.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct Unreadable {
    pub(crate) path: PathBuf,
    pub(crate) source: std::io::Error,
}

/// A cheap fingerprint of the contents of `files`, used to notice that a config, CA bundle
/// or allowlist changed. A missing file counts as empty (deleting or creating one is a
/// change); a file that cannot be read is an error, never a change: taking it for one made
/// a process out of descriptors reload, and flush its caches, once it could read again.
pub fn fingerprint(files: &[PathBuf]) -> Result<u64, Unreadable> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut hasher);
        let contents = match std::fs::read(f) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(Unreadable {
                    path: f.clone(),
                    source,
                });
            }
        };
        contents.hash(&mut hasher);
    }
    Ok(hasher.finish())
}
