//! `response.identity_headers` and `response.remove_identity_headers`: which identity headers an
//! allow sets, and when a client-sent copy is removed. Each identity header Envoy applies costs
//! it ~5,000 instructions per request and each removal ~1,000 (BENCHMARKS.md, "ext_authz through
//! Envoy: instructions per request"), so a deployment whose applications read only some of
//! them can ask for less.

use serde::Deserialize;

/// An identity header, by its key under `headers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum IdentityField {
    Principal,
    PrincipalType,
    Roles,
    Cn,
    Serial,
    Sha256,
    SpiffeId,
}

impl IdentityField {
    /// Every field, in the order of [`super::HeaderNames::all`].
    pub(crate) const ALL: [IdentityField; 7] = [
        IdentityField::Principal,
        IdentityField::PrincipalType,
        IdentityField::Roles,
        IdentityField::Cn,
        IdentityField::Serial,
        IdentityField::Sha256,
        IdentityField::SpiffeId,
    ];

    /// Its bit in a [`Fields`] set.
    pub(crate) const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of identity fields, one bit each in the order of [`IdentityField::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields(pub(crate) u8);

impl Fields {
    /// All seven.
    pub(crate) const ALL: Fields = Fields((1 << IdentityField::ALL.len()) - 1);

    /// Whether `field` is in the set.
    pub(crate) const fn has(self, field: IdentityField) -> bool {
        self.0 & field.bit() != 0
    }
}

impl FromIterator<IdentityField> for Fields {
    fn from_iter<I: IntoIterator<Item = IdentityField>>(fields: I) -> Self {
        Fields(fields.into_iter().fold(0, |set, f| set | f.bit()))
    }
}

/// `response.remove_identity_headers`: when an ext_authz answer removes an identity header a
/// client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Removal {
    /// Every answer removes every identity header it does not set, sent or not.
    #[default]
    Always,
    /// Only those the `CheckRequest` shows the client sent. Safe only when Envoy sends
    /// certgate every request header (no `allowed_headers` on the ext_authz filter, no
    /// `encode_raw_headers`); a request whose headers are missing altogether is treated as
    /// carrying all of them.
    WhenSent,
}
