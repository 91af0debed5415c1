//! A bounded memo of what an adapter renders from an allow (the ext_authz answer, the module's
//! identity headers and metadata), so a busy client's answer is not rebuilt on every request.
//!
//! An entry is used only for an outcome decided with the same configuration generation and the
//! same parsed identity (both compared by address, held weakly so an address cannot be reused
//! while the entry lives), the same policy and an equal grant. The decision itself runs on
//! every check, so a suspension, a revocation, a role change or a reload denies or changes the
//! grant and the entry is not used; what it saves is only the rendering, which must be a
//! function of exactly those inputs.

use std::ops::Deref;
use std::sync::{Arc, Weak};

use quick_cache::sync::Cache;

use crate::authz::Grant;
use crate::cert::{Identity, MalformedCertificate};
use crate::check::Outcome;
use crate::config::Config;

type ParsedIdentity = Result<Identity, MalformedCertificate>;

/// One identity's rendering, and what it was rendered from.
#[derive(Debug)]
pub(crate) struct Entry<T> {
    config: Weak<Config>,
    identity: Weak<ParsedIdentity>,
    policy: Box<str>,
    grant: Grant,
    rendered: T,
}

impl<T> Entry<T> {
    fn fits(&self, outcome: &Outcome, identity: &Arc<ParsedIdentity>, grant: &Grant) -> bool {
        std::ptr::eq(self.identity.as_ptr(), Arc::as_ptr(identity))
            && std::ptr::eq(self.config.as_ptr(), Arc::as_ptr(outcome.config()))
            && *self.policy == *outcome.policy
            && self.grant == *grant
    }
}

impl<T> Deref for Entry<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.rendered
    }
}

/// Renderings of enforced allows, per parsed identity.
pub(crate) struct Memos<T> {
    entries: Cache<usize, Arc<Entry<T>>>,
}

impl<T> Memos<T> {
    /// A memo of at most `entries` identities.
    pub(crate) fn new(entries: usize) -> Memos<T> {
        Memos {
            entries: Cache::new(entries),
        }
    }

    /// The rendering of `outcome`: the memo's when one fits, else `render`'s, kept for the
    /// identity's next requests. `None` (nothing rendered) for anything but an enforced allow
    /// with a parsed identity: those are rendered by the caller, every time.
    pub(crate) fn get(
        &self,
        outcome: &Outcome,
        render: impl FnOnce(&Outcome) -> T,
    ) -> Option<Arc<Entry<T>>> {
        let (Ok(grant), Some(identity), false) =
            (&outcome.decision, &outcome.identity, outcome.shadow)
        else {
            return None;
        };
        let address = Arc::as_ptr(identity) as usize;
        match self.entries.get(&address) {
            Some(entry) if entry.fits(outcome, identity, grant) => Some(entry),
            _ => {
                let entry = Arc::new(Entry {
                    config: Arc::downgrade(outcome.config()),
                    identity: Arc::downgrade(identity),
                    policy: outcome.policy.as_str().into(),
                    grant: grant.clone(),
                    rendered: render(outcome),
                });
                self.entries.insert(address, entry.clone());
                Some(entry)
            }
        }
    }
}
