//! Items to records and back: strict where a value decides access, lenient elsewhere.

use super::*;

/// Strict readers of one item: every problem names the record and the attribute.
pub(super) struct Fields<'a> {
    item: &'a Item,
    pub(super) key: &'a str,
}

impl<'a> Fields<'a> {
    pub(super) fn new(item: &'a Item, key_attr: &str) -> Self {
        let key = match item.get(key_attr) {
            Some(AttributeValue::S(k)) => k.as_str(),
            _ => "?",
        };
        Fields { item, key }
    }

    fn missing(&self, name: &str) -> StoreError {
        corrupt(self.key, format!("attribute {name} is missing"))
    }

    fn wrong(&self, name: &str, want: &str) -> StoreError {
        corrupt(self.key, format!("attribute {name} is not of type {want}"))
    }

    fn opt_str(&self, name: &str) -> Result<Option<String>, StoreError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.wrong(name, "S")),
        }
    }

    pub(super) fn str(&self, name: &str) -> Result<String, StoreError> {
        self.opt_str(name)?.ok_or_else(|| self.missing(name))
    }

    fn opt_num(&self, name: &str) -> Result<Option<i64>, StoreError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| {
                corrupt(
                    self.key,
                    format!("attribute {name} = {v} is not an integer"),
                )
            }),
            Some(_) => Err(self.wrong(name, "N")),
        }
    }

    pub(super) fn num(&self, name: &str) -> Result<i64, StoreError> {
        self.opt_num(name)?.ok_or_else(|| self.missing(name))
    }

    fn bool(&self, name: &str) -> Result<bool, StoreError> {
        match self.item.get(name) {
            None => Err(self.missing(name)),
            Some(AttributeValue::Bool(b)) => Ok(*b),
            Some(_) => Err(self.wrong(name, "BOOL")),
        }
    }

    fn opt_str_list(&self, name: &str) -> Result<Option<Vec<String>>, StoreError> {
        let values: Vec<&String> = match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => return Ok(None),
            Some(AttributeValue::L(list)) => list
                .iter()
                .map(|v| v.as_s().map_err(|_| self.wrong(name, "L of S")))
                .collect::<Result<_, _>>()?,
            Some(AttributeValue::Ss(set)) => set.iter().collect(),
            Some(_) => return Err(self.wrong(name, "L of S")),
        };
        Ok(Some(values.into_iter().cloned().collect()))
    }
}

pub(super) fn read_principal(item: &Item) -> Result<Principal, StoreError> {
    let f = Fields::new(item, "principal_id");
    let status = match f.str("status")?.as_str() {
        "active" => PrincipalStatus::Active,
        "suspended" => PrincipalStatus::Suspended,
        other => {
            return Err(corrupt(
                f.key,
                format!("unknown status \"{other}\" (expected active or suspended)"),
            ));
        }
    };
    Ok(Principal {
        principal_id: f.str("principal_id")?,
        principal_type: f.opt_str("principal_type")?,
        status,
        suspended_at: f.opt_num("suspended_at")?,
        suspended_reason: f.opt_str("suspended_reason")?,
        roles: f.opt_str_list("roles")?,
        created_at: f.opt_num("created_at")?,
    })
}

/// A certificate item. `revoked` decides and is read strictly (missing or not a BOOL:
/// corrupt). An item with `revoked = true` is a revocation whatever else it holds: when its
/// registration attributes are missing or unreadable it is a revocation-only record, and
/// unreadable `revoked_at`/`revocation_reason` are left out of it. An item with
/// `revoked = false` must be a complete registration.
pub(super) fn read_certificate(item: &Item) -> Result<CertificateRecord, StoreError> {
    let f = Fields::new(item, "serial_number");
    let serial_number = f.str("serial_number")?;
    let revoked = f.bool("revoked")?;
    let registration = read_registration(&f);
    if revoked {
        return Ok(CertificateRecord {
            serial_number,
            registration: registration.ok(),
            revoked,
            revoked_at: f.opt_num("revoked_at").ok().flatten(),
            revocation_reason: f.opt_str("revocation_reason").ok().flatten(),
        });
    }
    Ok(CertificateRecord {
        serial_number,
        registration: Some(registration?),
        revoked,
        revoked_at: f.opt_num("revoked_at")?,
        revocation_reason: f.opt_str("revocation_reason")?,
    })
}

fn read_registration(f: &Fields<'_>) -> Result<Registration, StoreError> {
    Ok(Registration {
        principal_id: f.str("principal_id")?,
        issuer: f.str("issuer")?,
        sha256: f.str("fingerprint_sha256")?,
        not_before: f.num("not_before")?,
        expires_at: f.num("expires_at")?,
    })
}

pub(super) fn principal_item(p: &Principal) -> Item {
    let mut item = Item::new();
    item.insert("principal_id".into(), s(&p.principal_id));
    if let Some(t) = &p.principal_type {
        item.insert("principal_type".into(), s(t));
    }
    item.insert("status".into(), s(p.status.as_str()));
    if let Some(at) = p.suspended_at {
        item.insert("suspended_at".into(), n(at));
    }
    if let Some(r) = &p.suspended_reason {
        item.insert("suspended_reason".into(), s(r));
    }
    if let Some(roles) = &p.roles {
        item.insert(
            "roles".into(),
            AttributeValue::L(roles.iter().map(|r| s(r)).collect()),
        );
    }
    if let Some(at) = p.created_at {
        item.insert("created_at".into(), n(at));
    }
    item
}

/// A certificate item; `purge_after` (the store's `purge_expired_after`) sets its TTL attribute.
pub(super) fn certificate_item(c: &CertificateRecord, purge_after: Option<Duration>) -> Item {
    let mut item = Item::new();
    item.insert("serial_number".into(), s(&c.serial_number));
    if let Some(r) = &c.registration {
        item.insert("principal_id".into(), s(&r.principal_id));
        item.insert("issuer".into(), s(&r.issuer));
        item.insert("fingerprint_sha256".into(), s(&r.sha256));
        item.insert("not_before".into(), n(r.not_before));
        item.insert("expires_at".into(), n(r.expires_at));
        item.insert("expiry_bucket".into(), s(EXPIRY_BUCKET));
        if let Some(keep) = purge_after {
            let secs = r.expires_at.div_euclid(1000) + keep.as_secs() as i64;
            item.insert(PURGE_AT.into(), n(secs));
        }
    }
    item.insert("revoked".into(), AttributeValue::Bool(c.revoked));
    if let Some(at) = c.revoked_at {
        item.insert("revoked_at".into(), n(at));
    }
    if let Some(r) = &c.revocation_reason {
        item.insert("revocation_reason".into(), s(r));
    }
    item
}

pub(super) fn sort_certificates(certs: &mut [CertificateRecord]) {
    certs.sort_by(|a, b| {
        (a.expires_at(), &a.serial_number).cmp(&(b.expires_at(), &b.serial_number))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn good_principal() -> Item {
        item(&[
            ("principal_id", s("alice")),
            ("principal_type", s("user")),
            ("status", s("suspended")),
            ("suspended_at", n(5)),
            ("suspended_reason", s("INC-1")),
            ("roles", AttributeValue::L(vec![s("reader")])),
            ("created_at", n(1)),
        ])
    }

    #[test]
    fn principal_round_trips_through_an_item() {
        let p = read_principal(&good_principal()).unwrap();
        assert_eq!(p.status, PrincipalStatus::Suspended);
        assert_eq!(p.suspended_reason.as_deref(), Some("INC-1"));
        assert_eq!(p.roles, Some(vec!["reader".to_owned()]));
        assert_eq!(read_principal(&principal_item(&p)).unwrap(), p);
    }

    #[test]
    fn bad_principal_items_are_corrupt_and_say_why() {
        let cases: Vec<(&str, AttributeValue, &str)> = vec![
            ("status", s("paused"), "unknown status \"paused\""),
            (
                "status",
                AttributeValue::Bool(true),
                "status is not of type S",
            ),
            ("created_at", s("yesterday"), "created_at is not of type N"),
            (
                "created_at",
                AttributeValue::N("1.5".into()),
                "not an integer",
            ),
            (
                "roles",
                AttributeValue::L(vec![n(1)]),
                "roles is not of type L of S",
            ),
        ];
        for (attr, value, want) in cases {
            let mut it = good_principal();
            it.insert(attr.into(), value);
            let err = read_principal(&it).unwrap_err().to_string();
            assert!(err.contains("alice") && err.contains(want), "{attr}: {err}");
        }
        let mut it = good_principal();
        it.remove("status");
        let err = read_principal(&it).unwrap_err().to_string();
        assert!(err.contains("status is missing"), "{err}");
    }

    #[test]
    fn principal_type_and_created_at_may_be_missing_and_extra_attributes_are_ignored() {
        let mut it = good_principal();
        it.remove("principal_type");
        it.remove("created_at");
        it.insert("team".into(), s("ml-infra"));
        it.insert("last_login".into(), AttributeValue::Bool(true));
        let p = read_principal(&it).unwrap();
        assert_eq!((p.principal_type, p.created_at), (None, None));
        assert_eq!(p.status, PrincipalStatus::Suspended);
        let back = principal_item(&read_principal(&it).unwrap());
        assert!(!back.contains_key("principal_type") && !back.contains_key("created_at"));
    }

    #[test]
    fn a_revoked_item_is_a_revocation_whatever_else_it_lacks() {
        // What the runbook's unconditional `update-item` creates on an unknown serial.
        let only = item(&[
            ("serial_number", s("0b")),
            ("revoked", AttributeValue::Bool(true)),
            ("revoked_at", n(9)),
            ("revocation_reason", s("key_compromise")),
        ]);
        let c = read_certificate(&only).unwrap();
        assert!(c.revoked && c.registration.is_none());
        assert_eq!(c.revocation_reason.as_deref(), Some("key_compromise"));
        assert_eq!(c.revoked_at, Some(9));
        // Partial or malformed registration, malformed details: still a revocation.
        let mut partial = only.clone();
        partial.insert("principal_id".into(), s("alice"));
        partial.insert("expires_at".into(), s("soon"));
        partial.insert("revoked_at".into(), s("yesterday"));
        let c = read_certificate(&partial).unwrap();
        assert!(c.revoked && c.registration.is_none() && c.revoked_at.is_none());
        // Not revoked: everything is required.
        let mut not_revoked = only.clone();
        not_revoked.insert("revoked".into(), AttributeValue::Bool(false));
        let err = read_certificate(&not_revoked).unwrap_err().to_string();
        assert!(
            err.contains("0b") && err.contains("principal_id is missing"),
            "{err}"
        );
        // Missing `revoked`: corrupt, never read as not revoked.
        let mut no_flag = only;
        no_flag.remove("revoked");
        let err = read_certificate(&no_flag).unwrap_err().to_string();
        assert!(err.contains("revoked is missing"), "{err}");
    }

    #[test]
    fn certificate_items_need_a_boolean_revoked() {
        let mut it = item(&[
            ("serial_number", s("0a")),
            ("principal_id", s("alice")),
            ("issuer", s("CN=CA")),
            ("fingerprint_sha256", s("ab")),
            ("not_before", n(1)),
            ("expires_at", n(2)),
            ("revoked", AttributeValue::Bool(false)),
        ]);
        assert!(!read_certificate(&it).unwrap().revoked);
        it.insert("revoked".into(), s("false"));
        let err = read_certificate(&it).unwrap_err().to_string();
        assert!(
            err.contains("0a") && err.contains("revoked is not of type BOOL"),
            "{err}"
        );
    }
}
