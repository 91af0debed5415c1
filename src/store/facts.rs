//! What the decision reads of the store's records, in the form the store cache keeps them.
//! With every client a distinct principal the cache holds a principal and a certificate
//! answer per client, so these carry only what rows 8–12 read (no ids, no registration), and
//! the common answers share one allocation: an active principal without a role override is
//! its type alone, and every registered certificate that is not revoked is the same answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{CertificateRecord, EpochMillis, Principal, PrincipalStatus};

/// What rows 9–12 read of a principal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalFacts {
    principal_type: Option<Box<str>>,
    roles: Option<Box<[String]>>,
    suspended: bool,
    suspended_reason: Option<Box<str>>,
}

impl PrincipalFacts {
    /// The record's type, if it has one.
    pub fn principal_type(&self) -> Option<&str> {
        self.principal_type.as_deref()
    }

    /// The record's role override, if it has one.
    pub fn roles(&self) -> Option<&[String]> {
        self.roles.as_deref()
    }

    /// `Some` when suspended: the recorded reason, if any.
    pub fn suspension(&self) -> Option<Option<&str>> {
        self.suspended.then_some(self.suspended_reason.as_deref())
    }

    /// An active principal without a role override: the only kind worth sharing.
    fn type_only(&self) -> bool {
        !self.suspended && self.roles.is_none()
    }
}

impl From<&Principal> for PrincipalFacts {
    fn from(p: &Principal) -> Self {
        PrincipalFacts {
            principal_type: p.principal_type.as_deref().map(Box::from),
            roles: p.roles.clone().map(Vec::into_boxed_slice),
            suspended: p.status == PrincipalStatus::Suspended,
            suspended_reason: p.suspended_reason.as_deref().map(Box::from),
        }
    }
}

/// What row 8 reads of a certificate record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateFacts {
    /// Registered (or recorded) and not revoked.
    NotRevoked,
    /// Revoked in the store.
    Revoked {
        /// When, if recorded.
        at: Option<EpochMillis>,
        /// A [`crate::cert::RevocationReason`] name, or free text written by hand.
        reason: Option<Box<str>>,
    },
}

impl From<&CertificateRecord> for CertificateFacts {
    fn from(record: &CertificateRecord) -> Self {
        if record.revoked {
            CertificateFacts::Revoked {
                at: record.revoked_at,
                reason: record.revocation_reason.as_deref().map(Box::from),
            }
        } else {
            CertificateFacts::NotRevoked
        }
    }
}

/// Distinct type-only principal answers kept for sharing; types are few (the keys of
/// `roles_by_type`), so a store with more is written by hand and those answers are not shared.
const SHARED_TYPES: usize = 256;

/// Hands out the compact answers, sharing the common ones.
pub(super) struct Facts {
    not_revoked: Arc<CertificateFacts>,
    by_type: Mutex<HashMap<Option<Box<str>>, Arc<PrincipalFacts>>>,
}

impl Facts {
    pub(super) fn new() -> Self {
        Facts {
            not_revoked: Arc::new(CertificateFacts::NotRevoked),
            by_type: Mutex::default(),
        }
    }

    pub(super) fn principal(&self, record: &Principal) -> Arc<PrincipalFacts> {
        let facts = PrincipalFacts::from(record);
        if !facts.type_only() {
            return Arc::new(facts);
        }
        let mut by_type = self.by_type.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = by_type.get(&facts.principal_type) {
            return shared.clone();
        }
        let facts = Arc::new(facts);
        if by_type.len() < SHARED_TYPES {
            by_type.insert(facts.principal_type.clone(), facts.clone());
        }
        facts
    }

    pub(super) fn certificate(&self, record: &CertificateRecord) -> Arc<CertificateFacts> {
        match CertificateFacts::from(record) {
            CertificateFacts::NotRevoked => self.not_revoked.clone(),
            revoked => Arc::new(revoked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(kind: Option<&str>) -> Principal {
        Principal {
            principal_id: "w@x".into(),
            principal_type: kind.map(str::to_owned),
            status: PrincipalStatus::Active,
            suspended_at: None,
            suspended_reason: None,
            roles: None,
            created_at: None,
        }
    }

    #[test]
    fn only_active_principals_without_roles_are_shared_and_each_keeps_what_it_says() {
        let facts = Facts::new();
        let (a, b) = (principal(Some("worker")), principal(Some("worker")));
        assert!(Arc::ptr_eq(&facts.principal(&a), &facts.principal(&b)));
        let admin = facts.principal(&principal(Some("admin")));
        assert_eq!(admin.principal_type(), Some("admin"));
        let untyped = facts.principal(&principal(None));
        assert_eq!(untyped.principal_type(), None);

        let suspended = Principal {
            status: PrincipalStatus::Suspended,
            suspended_reason: Some("left".into()),
            ..principal(Some("worker"))
        };
        let shared = facts.principal(&a);
        let got = facts.principal(&suspended);
        assert!(!Arc::ptr_eq(&shared, &got));
        assert_eq!(got.suspension(), Some(Some("left")));
        assert_eq!(shared.suspension(), None, "the shared answer is untouched");

        let roles = Principal {
            roles: Some(vec!["admin".into()]),
            ..principal(Some("worker"))
        };
        let got = facts.principal(&roles);
        assert_eq!(got.roles(), Some(&["admin".to_owned()][..]));
        assert_eq!(facts.principal(&a).roles(), None);
    }

    #[test]
    fn revoked_certificates_keep_when_and_why() {
        let facts = Facts::new();
        let record = CertificateRecord {
            serial_number: "0a".into(),
            registration: None,
            revoked: true,
            revoked_at: Some(5_000),
            revocation_reason: Some("key_compromise".into()),
        };
        assert_eq!(
            *facts.certificate(&record),
            CertificateFacts::Revoked {
                at: Some(5_000),
                reason: Some("key_compromise".into())
            }
        );
        let valid = CertificateRecord {
            revoked: false,
            ..record
        };
        assert!(Arc::ptr_eq(
            &facts.certificate(&valid),
            &facts.certificate(&valid)
        ));
    }
}
