//! The revoked serials of one CRL, indexed so that a check is one lookup whatever the size.
//!
//! Layout (measured in `benches/crl.rs`): (hash, entry) pairs sorted by a 64-bit hash of the
//! serial, a radix directory over the top bits of that hash, and the serial bytes in one
//! arena. A lookup hashes the serial, reads one directory slot (the directory is small enough
//! to stay cached) and scans a bucket of about eight entries, so it costs the same for 10 or
//! 10 million serials. About 25 bytes per entry plus the serial bytes; no per-entry
//! allocation.

use std::hash::{BuildHasher, Hasher};

use crate::cert::{RevocationReason, Serial};

/// One listed serial: why and when it was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    /// The entry's reason code (`unspecified` when absent).
    pub reason: RevocationReason,
    /// revocationDate, Unix seconds.
    pub revoked_at: i64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    serial_at: u32,
    serial_len: u16,
    reason: u8,
    revoked_at: i64,
}

/// Why an index could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// More serial bytes than the index addresses (4 GiB), or one absurdly long serial.
    #[error("CRL too large to index: {0}")]
    TooLarge(String),
}

/// Accumulates entries; [`RevocationIndexBuilder::build`] sorts and indexes them.
#[derive(Debug, Default)]
pub struct RevocationIndexBuilder {
    keyed: Vec<(u64, Entry)>,
    serials: Vec<u8>,
}

impl RevocationIndexBuilder {
    /// A builder with room for `entries` entries of about `serial_bytes` bytes in total.
    pub(crate) fn with_capacity(entries: usize, serial_bytes: usize) -> Self {
        RevocationIndexBuilder {
            keyed: Vec::with_capacity(entries),
            serials: Vec::with_capacity(serial_bytes),
        }
    }

    /// Add one revoked serial (DER INTEGER content, sign padding allowed).
    pub fn push(&mut self, serial: &[u8], revoked: Revoked) -> Result<(), IndexError> {
        let serial = Serial::canonical(serial);
        let serial_len = u16::try_from(serial.len())
            .map_err(|_| IndexError::TooLarge(format!("a serial of {} bytes", serial.len())))?;
        let serial_at = u32::try_from(self.serials.len())
            .map_err(|_| IndexError::TooLarge("more than 4 GiB of serials".into()))?;
        self.serials.extend_from_slice(serial);
        self.keyed.push((
            hash(serial),
            Entry {
                serial_at,
                serial_len,
                reason: revoked.reason.code(),
                revoked_at: revoked.revoked_at,
            },
        ));
        Ok(())
    }

    /// Sort by hash and build the directory.
    pub fn build(mut self) -> RevocationIndex {
        self.keyed.sort_unstable_by_key(|(h, _)| *h);
        let len = self.keyed.len();
        // About eight entries (three cache lines) per directory slot, so the directory stays
        // small enough to live in the CPU cache (512 KiB for 1M entries) and a lookup costs
        // one memory access into the sorted entries. At least 2^4 slots so the shift below
        // stays in range.
        let bits = (usize::BITS - len.leading_zeros())
            .saturating_sub(3)
            .clamp(4, 24);
        let shift = 64 - bits;
        let slots = 1usize << bits;
        let mut directory = Vec::with_capacity(slots + 1);
        let mut at = 0usize;
        for slot in 0..slots {
            directory.push(at as u32);
            while at < len && (self.keyed[at].0 >> shift) as usize == slot {
                at += 1;
            }
        }
        directory.push(len as u32);
        self.keyed.shrink_to_fit();
        self.serials.shrink_to_fit();
        RevocationIndex {
            entries: self.keyed,
            serials: self.serials,
            directory,
            shift,
        }
    }
}

/// Revoked serials of one CRL; see the module documentation for the layout.
#[derive(Debug, Clone)]
pub struct RevocationIndex {
    /// (hash, entry) sorted by hash: a bucket scan reads hash and entry from one cache line.
    entries: Vec<(u64, Entry)>,
    serials: Vec<u8>,
    directory: Vec<u32>,
    shift: u32,
}

impl Default for RevocationIndex {
    fn default() -> Self {
        RevocationIndexBuilder::default().build()
    }
}

impl RevocationIndex {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no serial is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(u64, Entry)>()
            + self.serials.capacity()
            + self.directory.capacity() * 4
    }

    /// The entry for `serial`, if listed.
    pub fn get(&self, serial: &Serial) -> Option<Revoked> {
        let serial = serial.as_bytes();
        let h = hash(serial);
        let slot = (h >> self.shift) as usize;
        let (Some(&start), Some(&end)) = (self.directory.get(slot), self.directory.get(slot + 1))
        else {
            return None;
        };
        // Sorted by hash: stop at the first larger one.
        self.entries
            .get(start as usize..end as usize)?
            .iter()
            .take_while(|(candidate, _)| *candidate <= h)
            .filter(|(candidate, _)| *candidate == h)
            .find_map(|(_, e)| {
                let at = e.serial_at as usize;
                let stored = self.serials.get(at..at + e.serial_len as usize)?;
                (stored == serial).then_some(Revoked {
                    reason: RevocationReason::from_code(e.reason),
                    revoked_at: e.revoked_at,
                })
            })
    }
}

/// A fixed-key hash: the index is built from signed CRL content, not attacker-chosen keys,
/// and lookups of absent serials cost the same whatever the hash quality, so there is no
/// flooding to defend against.
fn hash(serial: &[u8]) -> u64 {
    let mut h =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    h.write(serial);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn revoked(n: i64) -> Revoked {
        Revoked {
            reason: RevocationReason::KeyCompromise,
            revoked_at: n,
        }
    }

    fn serial(der_content: &[u8]) -> Serial {
        Serial::from_der_content(der_content)
    }

    #[test]
    fn empty_index_finds_nothing() {
        let index = RevocationIndex::default();
        assert!(index.is_empty());
        assert_eq!(index.get(&serial(&[1, 2, 3])), None);
        assert_eq!(index.get(&serial(&[])), None);
        assert_eq!(index.get(&serial(&[0])), None);
    }

    #[test]
    fn finds_every_listed_serial_and_nothing_else() {
        let mut b = RevocationIndexBuilder::default();
        for i in 0u32..5000 {
            b.push(&(i * 2).to_be_bytes(), revoked(i64::from(i)))
                .expect("push");
        }
        let index = b.build();
        assert_eq!(index.len(), 5000);
        for i in 0u32..5000 {
            assert_eq!(
                index.get(&serial(&(i * 2).to_be_bytes())),
                Some(revoked(i64::from(i)))
            );
            assert_eq!(index.get(&serial(&(i * 2 + 1).to_be_bytes())), None);
        }
    }

    #[test]
    fn sign_padding_and_hex_forms_are_the_same_serial() {
        let mut b = RevocationIndexBuilder::default();
        b.push(&[0x00, 0x80, 0x01], revoked(7)).expect("push");
        b.push(&[0x00], revoked(8)).expect("push");
        let index = b.build();
        assert_eq!(index.get(&serial(&[0x80, 0x01])), Some(revoked(7)));
        assert_eq!(
            index.get(&serial(&[0x00, 0x00, 0x80, 0x01])),
            Some(revoked(7))
        );
        let parsed = |text: &str| text.parse::<Serial>().expect("hex");
        assert_eq!(index.get(&parsed("8001")), Some(revoked(7)));
        assert_eq!(index.get(&parsed("80:01")), Some(revoked(7)));
        assert_eq!(index.get(&parsed("00")), Some(revoked(8)));
        assert_eq!(index.get(&parsed("801")), None, "odd length is 0801");
    }

    proptest! {
        #[test]
        fn index_agrees_with_a_hash_set(
            listed in proptest::collection::hash_set(proptest::collection::vec(1u8..=255, 1..20), 0..300),
            probes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..100),
        ) {
            let mut b = RevocationIndexBuilder::default();
            for s in &listed {
                b.push(s, revoked(1)).expect("push");
            }
            let index = b.build();
            for s in &listed {
                prop_assert!(index.get(&serial(s)).is_some());
            }
            for p in &probes {
                let canonical = Serial::canonical(p);
                let want = listed.iter().any(|s| s.as_slice() == canonical);
                prop_assert_eq!(index.get(&serial(p)).is_some(), want);
            }
        }
    }
}
