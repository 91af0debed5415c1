//! The one in-memory [`Lookup`] the unit tests of the cache and the check share: it counts
//! lookups and can be made failing, corrupt or slow.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{CertificateRecord, Lookup, Principal, PrincipalStatus, StoreError};
use crate::cert::Serial;

#[derive(Default)]
pub(crate) struct FakeStore {
    principals: Mutex<HashMap<String, Principal>>,
    calls: AtomicUsize,
    failing: AtomicBool,
    corrupt: AtomicBool,
    /// How long every principal lookup takes.
    delay: Duration,
}

impl FakeStore {
    /// A store whose principal lookups each take `delay`.
    pub(crate) fn slow(delay: Duration) -> Self {
        FakeStore {
            delay,
            ..Default::default()
        }
    }

    /// Enrol (or replace) an active principal of `principal_type` without a role override.
    pub(crate) fn put(&self, id: &str, principal_type: &str) {
        let principal = Principal {
            principal_id: id.to_owned(),
            principal_type: Some(principal_type.to_owned()),
            status: PrincipalStatus::Active,
            suspended_at: None,
            suspended_reason: None,
            roles: None,
            created_at: Some(0),
        };
        self.principals
            .lock()
            .unwrap()
            .insert(id.to_owned(), principal);
    }

    /// Lookups answered or refused so far.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Make every lookup fail as an unreachable backend would, or stop doing so.
    pub(crate) fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Make principal lookups find an unreadable record, or stop doing so.
    pub(crate) fn corrupt(&self, corrupt: bool) {
        self.corrupt.store(corrupt, Ordering::SeqCst);
    }

    fn outage(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("backend down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Lookup for FakeStore {
    async fn get_principal(&self, id: &str) -> Result<Option<Principal>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.outage()?;
        if self.corrupt.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt {
                key: id.to_owned(),
                detail: "unknown status \"paused\"".to_owned(),
            });
        }
        Ok(self.principals.lock().unwrap().get(id).cloned())
    }

    async fn get_certificate(&self, _: &Serial) -> Result<Option<CertificateRecord>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.outage()?;
        Ok(None)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The serial written `hex`.
pub(crate) fn serial(hex: &str) -> Serial {
    hex.parse().expect("hex serial")
}
