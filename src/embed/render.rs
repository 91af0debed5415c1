//! What an answer puts on the request: identity headers and dynamic metadata, rendered once
//! per identity for allows (the module's metadata carries no request id, so an allow's
//! rendering is a function of what [`crate::check::memo`] compares) and afresh otherwise.

use std::ops::Deref;
use std::sync::Arc;

use crate::check::Outcome;
use crate::check::memo::{Entry, Memos};
use crate::observe::IdentityIn;

/// Identities whose rendering is kept: the busy clients; each entry is ~500 bytes.
const MEMO_ENTRIES: usize = 4_096;

/// The headers and metadata of one answer.
#[derive(Debug, PartialEq)]
pub(crate) struct Rendered {
    /// Identity headers to set upstream (none on deny).
    pub(crate) headers: Vec<(Box<str>, Box<str>)>,
    /// Dynamic metadata entries.
    pub(crate) metadata: Vec<(&'static str, Box<str>)>,
}

/// An answer's rendering: an allow's from the memo, anything else its own.
#[derive(Debug)]
pub(crate) enum Rendering {
    Memo(Arc<Entry<Rendered>>),
    Own(Rendered),
}

impl Deref for Rendering {
    type Target = Rendered;

    fn deref(&self) -> &Rendered {
        match self {
            Rendering::Memo(entry) => entry,
            Rendering::Own(rendered) => rendered,
        }
    }
}

/// The memo of allow renderings, by parsed identity.
pub(crate) struct Renderings(Memos<Rendered>);

impl Default for Renderings {
    fn default() -> Self {
        Renderings(Memos::new(MEMO_ENTRIES))
    }
}

impl Renderings {
    pub(crate) fn of(&self, outcome: &Outcome) -> Rendering {
        match self.0.get(outcome, render) {
            Some(entry) => Rendering::Memo(entry),
            None => Rendering::Own(render(outcome)),
        }
    }
}

/// Render `outcome`'s headers and metadata: `policy`, `principal_type` and `roles` (allow) or
/// `reason` (deny), then `principal`, `serial` and `cn` when the certificate yields them.
/// `response.identity` applies as in ext_authz mode: `metadata_only` sets no identity header,
/// `headers_only` gives an allow no metadata.
pub(crate) fn render(outcome: &Outcome) -> Rendered {
    let identity_in = outcome.config().observe.identity;
    let headers = match identity_in {
        IdentityIn::MetadataOnly => Vec::new(),
        IdentityIn::HeadersAndMetadata | IdentityIn::HeadersOnly => outcome
            .allow_headers()
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect(),
    };
    if outcome.decision.is_ok() && identity_in == IdentityIn::HeadersOnly {
        return Rendered {
            headers,
            metadata: Vec::new(),
        };
    }
    let mut metadata = vec![("policy", outcome.policy.as_str().into())];
    match &outcome.decision {
        Ok(grant) => {
            metadata.push(("principal_type", grant.principal_type.as_str().into()));
            metadata.push(("roles", grant.roles.join(",").into()));
        }
        Err(deny) => metadata.push(("reason", deny.reason.as_str().into())),
    }
    if let Some(id) = outcome.identity() {
        if let Some(principal) = id.principal_id() {
            metadata.push(("principal", principal.into()));
        }
        metadata.push(("serial", id.serial().to_string().into()));
        if let Some(cn) = id.common_name() {
            metadata.push(("cn", cn.into()));
        }
    }
    Rendered { headers, metadata }
}
