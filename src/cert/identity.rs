//! [`Identity`]: what one certificate says, packed compactly for the identity cache.

use std::sync::Arc;

use super::{
    Anchor, ChainFailure, ClientAuthUsage, MalformedCertificate, PrincipalIdSource, Serial,
};

/// Everything the decision needs from one certificate, built once per distinct certificate.
///
/// Kept compact because the identity cache holds one per distinct client certificate
/// (100,000 by default): the text fields share one heap block (`text`, each field at its
/// span in `spans`), and a field found inside the text already packed (the CN and OU are
/// inside the subject, a type often equals the OU) is not copied again; the principal id
/// points at the SPIFFE id or CN when it is one of them, the serial and the SHA-256 are kept
/// as bytes, the verifying CA is shared with the trust bundle (and so is the issuer DN, which
/// is the CA's subject for every leaf it verifies) and the rare chain failure is boxed. See
/// "Memory at scale" in BENCHMARKS.md for what an entry costs.
#[derive(Clone)]
pub struct Identity {
    text: Box<str>,
    spans: Spans,
    principal_id: PrincipalIdField,
    serial: Serial,
    sha256: [u8; 32],
    not_before: i64,
    not_after: i64,
    client_auth: ClientAuthUsage,
    svid: SvidShape,
    /// The issuer DN is the verifying CA's subject, so it is not in `text`.
    issuer_is_anchor: bool,
    chain: Result<Arc<Anchor>, Box<ChainFailure>>,
}

/// What the X509-SVID rules look at beyond the SPIFFE id (`authz::spiffe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SvidShape {
    /// URI SANs, of any scheme (saturating).
    pub(crate) uri_sans: u8,
    /// basicConstraints says cA.
    pub(crate) ca: bool,
}

/// The text fields, in the order they are packed: the subject first, so that the fields
/// inside it are found there. An optional field is absent when empty: `identify` never keeps
/// an empty CN, OU, extension or SPIFFE id.
#[derive(Clone, Copy)]
enum TextField {
    Subject,
    Issuer,
    CommonName,
    OrganizationalUnit,
    TypeFromOid,
    SpiffeId,
    /// The principal id when it came from the extension (else it is another field).
    PrincipalId,
}

const TEXT_FIELDS: usize = TextField::PrincipalId as usize + 1;

/// Where each text field lies in [`Identity::text`], start and end.
#[derive(Clone)]
enum Spans {
    /// 16-bit positions: any text under 64 KiB, so every real certificate.
    Narrow([[u16; 2]; TEXT_FIELDS]),
    /// Longer text, possible only for a certificate near the input limit with huge names.
    Wide(Box<[[u32; 2]; TEXT_FIELDS]>),
}

impl Spans {
    fn new(wide: [[u32; 2]; TEXT_FIELDS]) -> Self {
        let mut narrow = [[0u16; 2]; TEXT_FIELDS];
        for (n, w) in narrow.iter_mut().flatten().zip(wide.iter().flatten()) {
            match u16::try_from(*w) {
                Ok(v) => *n = v,
                Err(_) => return Spans::Wide(Box::new(wide)),
            }
        }
        Spans::Narrow(narrow)
    }

    fn get(&self, field: TextField) -> (usize, usize) {
        let i = field as usize;
        match self {
            Spans::Narrow(spans) => (spans[i][0].into(), spans[i][1].into()),
            Spans::Wide(spans) => (spans[i][0] as usize, spans[i][1] as usize),
        }
    }
}

/// Which text field holds the principal id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrincipalIdField {
    None,
    Own,
    SpiffeId,
    CommonName,
}

/// The fields of an [`Identity`] before packing.
pub(super) struct IdentityParts {
    pub(super) principal_id: Option<(PrincipalIdSource, String)>,
    pub(super) type_from_oid: Option<String>,
    pub(super) organizational_unit: Option<String>,
    pub(super) common_name: Option<String>,
    pub(super) spiffe_id: Option<String>,
    pub(super) serial: Serial,
    pub(super) issuer: String,
    pub(super) subject: String,
    pub(super) sha256: [u8; 32],
    pub(super) not_before: i64,
    pub(super) not_after: i64,
    pub(super) client_auth: ClientAuthUsage,
    pub(super) svid: SvidShape,
    pub(super) chain: Result<Arc<Anchor>, ChainFailure>,
}

impl Identity {
    pub(super) fn pack(parts: IdentityParts) -> Result<Self, MalformedCertificate> {
        let principal_id = match &parts.principal_id {
            None => PrincipalIdField::None,
            Some((PrincipalIdSource::Spiffe, _)) => PrincipalIdField::SpiffeId,
            Some((PrincipalIdSource::Cn, _)) => PrincipalIdField::CommonName,
            Some((PrincipalIdSource::Oid, _)) => PrincipalIdField::Own,
        };
        let own_principal = match (&parts.principal_id, principal_id) {
            (Some((_, id)), PrincipalIdField::Own) => id.as_str(),
            _ => "",
        };
        let issuer_is_anchor = matches!(&parts.chain, Ok(anchor) if anchor.subject == parts.issuer);
        let fields: [&str; TEXT_FIELDS] = [
            &parts.subject,
            if issuer_is_anchor { "" } else { &parts.issuer },
            parts.common_name.as_deref().unwrap_or_default(),
            parts.organizational_unit.as_deref().unwrap_or_default(),
            parts.type_from_oid.as_deref().unwrap_or_default(),
            parts.spiffe_id.as_deref().unwrap_or_default(),
            own_principal,
        ];
        let mut text = String::with_capacity(fields.iter().map(|f| f.len()).sum());
        let mut spans = [[0u32; 2]; TEXT_FIELDS];
        for (span, field) in spans.iter_mut().zip(fields) {
            if field.is_empty() {
                continue;
            }
            let start = text.find(field).unwrap_or_else(|| {
                text.push_str(field);
                text.len() - field.len()
            });
            // The input is at most 64 KiB of DER; its text fields cannot reach 4 GiB.
            let at = |i: usize| u32::try_from(i).map_err(|_| MalformedCertificate::TooLarge(i));
            *span = [at(start)?, at(start + field.len())?];
        }
        Ok(Identity {
            // A fresh block of the exact size: shrinking `text` in place would keep its
            // capacity (mimalloc keeps a block that is at most half unused).
            text: Box::from(text.as_str()),
            spans: Spans::new(spans),
            principal_id,
            serial: parts.serial,
            sha256: parts.sha256,
            not_before: parts.not_before,
            not_after: parts.not_after,
            client_auth: parts.client_auth,
            svid: parts.svid,
            issuer_is_anchor,
            chain: parts.chain.map_err(Box::new),
        })
    }

    fn text(&self, field: TextField) -> &str {
        let (start, end) = self.spans.get(field);
        self.text.get(start..end).unwrap_or_default()
    }

    fn optional(&self, field: TextField) -> Option<&str> {
        Some(self.text(field)).filter(|v| !v.is_empty())
    }

    /// Principal id per the identity rules; `None` if no source yields one.
    pub fn principal_id(&self) -> Option<&str> {
        match self.principal_id {
            PrincipalIdField::None => None,
            PrincipalIdField::Own => Some(self.text(TextField::PrincipalId)),
            PrincipalIdField::SpiffeId => self.spiffe_id(),
            PrincipalIdField::CommonName => self.common_name(),
        }
    }

    /// Principal type from the custom extension, if present.
    pub(crate) fn type_from_oid(&self) -> Option<&str> {
        self.optional(TextField::TypeFromOid)
    }

    /// Subject OU (a principal type source).
    pub(crate) fn organizational_unit(&self) -> Option<&str> {
        self.optional(TextField::OrganizationalUnit)
    }

    /// Subject CN.
    pub(crate) fn common_name(&self) -> Option<&str> {
        self.optional(TextField::CommonName)
    }

    /// First `spiffe://` URI SAN.
    pub(crate) fn spiffe_id(&self) -> Option<&str> {
        self.optional(TextField::SpiffeId)
    }

    /// Serial number.
    pub fn serial(&self) -> &Serial {
        &self.serial
    }

    /// Issuer DN (RFC 4514 text).
    pub(crate) fn issuer(&self) -> &str {
        match &self.chain {
            Ok(anchor) if self.issuer_is_anchor => &anchor.subject,
            _ => self.text(TextField::Issuer),
        }
    }

    /// Subject DN (RFC 4514 text).
    pub(crate) fn subject(&self) -> &str {
        self.text(TextField::Subject)
    }

    /// Lowercase hex SHA-256 of the DER encoding (the `x-client-cert-sha256` value).
    pub(crate) fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// SHA-256 of the DER encoding.
    pub(crate) fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }

    /// notBefore, Unix seconds.
    pub(crate) fn not_before(&self) -> i64 {
        self.not_before
    }

    /// notAfter, Unix seconds.
    pub(crate) fn not_after(&self) -> i64 {
        self.not_after
    }

    /// Extended key usage, as far as client authentication goes.
    pub(crate) fn client_auth(&self) -> ClientAuthUsage {
        self.client_auth
    }

    /// URI SAN count and CA flag, for the X509-SVID rules.
    pub(crate) fn svid(&self) -> SvidShape {
        self.svid
    }

    /// Outcome of the chain verification against the trust bundle: the CA whose key
    /// verified it. The CA's own validity is not judged here; see [`Self::chain_at`].
    pub(crate) fn chain(&self) -> Result<&Anchor, &ChainFailure> {
        match &self.chain {
            Ok(anchor) => Ok(anchor),
            Err(failure) => Err(failure),
        }
    }

    /// The chain at `now` (Unix seconds, ± `skew`): as [`Self::chain`], and the verifying CA
    /// must itself be valid then. Judged per check, not when the identity is cached, because
    /// a CA can expire while its leaves are still cached.
    pub(crate) fn chain_at(&self, now: i64, skew: i64) -> Result<&Anchor, ChainFailure> {
        let anchor = self.chain().map_err(Clone::clone)?;
        match anchor.unusable_at(now, skew) {
            Some(failure) => Err(failure),
            None => Ok(anchor),
        }
    }

    /// Certificate lifetime (notAfter − notBefore) in seconds.
    pub(crate) fn lifetime_secs(&self) -> i64 {
        self.not_after - self.not_before
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("principal_id", &self.principal_id())
            .field("type_from_oid", &self.type_from_oid())
            .field("organizational_unit", &self.organizational_unit())
            .field("common_name", &self.common_name())
            .field("spiffe_id", &self.spiffe_id())
            .field("serial", &self.serial())
            .field("sha256", &self.sha256_hex())
            .field("issuer", &self.issuer())
            .field("subject", &self.subject())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("client_auth", &self.client_auth)
            .field("chain", &self.chain())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(subject: &str, cn: &str, ou: &str, kind: &str, own_id: &str) -> IdentityParts {
        let some = |v: &str| Some(v.to_owned()).filter(|v| !v.is_empty());
        IdentityParts {
            principal_id: Some((PrincipalIdSource::Oid, own_id.to_owned())),
            type_from_oid: some(kind),
            organizational_unit: some(ou),
            common_name: some(cn),
            spiffe_id: Some("spiffe://example.com/w/1".into()),
            serial: Serial::from_der_content(&[1, 2]),
            issuer: "CN=other".into(),
            subject: subject.to_owned(),
            sha256: [7; 32],
            not_before: 1,
            not_after: 2,
            client_auth: ClientAuthUsage::Allowed,
            svid: SvidShape::default(),
            chain: Err(ChainFailure::UnknownIssuer {
                issuer: "CN=other".into(),
            }),
        }
    }

    fn fields(id: &Identity) -> [Option<&str>; 7] {
        [
            id.principal_id(),
            id.type_from_oid(),
            id.organizational_unit(),
            id.common_name(),
            id.spiffe_id(),
            Some(id.issuer()),
            Some(id.subject()),
        ]
    }

    #[test]
    fn a_field_inside_the_subject_is_not_copied_and_reads_back_whole() {
        let id = Identity::pack(parts(
            "OU=worker, CN=w1.example.com",
            "w1.example.com",
            "worker",
            "worker",
            "w1@example.com",
        ))
        .unwrap();
        assert_eq!(
            fields(&id),
            [
                Some("w1@example.com"),
                Some("worker"),
                Some("worker"),
                Some("w1.example.com"),
                Some("spiffe://example.com/w/1"),
                Some("CN=other"),
                Some("OU=worker, CN=w1.example.com"),
            ]
        );
        let copied = "OU=worker, CN=w1.example.comCN=otherspiffe://example.com/w/1w1@example.com";
        assert_eq!(&*id.text, copied);
    }

    #[test]
    fn a_field_the_subject_escapes_is_kept_as_it_is() {
        // RFC 4514 escapes the comma in the subject text, so the CN is not found there.
        let id = Identity::pack(parts("CN=a\\, b", "a, b", "", "", "a, b")).unwrap();
        assert_eq!(id.common_name(), Some("a, b"));
        assert_eq!(id.principal_id(), Some("a, b"));
        assert_eq!(id.subject(), "CN=a\\, b");
        assert_eq!((id.organizational_unit(), id.type_from_oid()), (None, None));
    }

    #[test]
    fn text_beyond_64_kib_reads_back_too() {
        let cn = "c".repeat(40_000);
        let own = "p".repeat(40_000);
        let id = Identity::pack(parts(&format!("CN={cn}"), &cn, "ou", "t", &own)).unwrap();
        assert!(matches!(id.spans, Spans::Wide(_)));
        assert_eq!(id.common_name(), Some(cn.as_str()));
        assert_eq!(id.principal_id(), Some(own.as_str()));
        assert_eq!(id.organizational_unit(), Some("ou"));
        assert_eq!(id.type_from_oid(), Some("t"));
        assert_eq!(id.subject(), format!("CN={cn}"));
    }
}
