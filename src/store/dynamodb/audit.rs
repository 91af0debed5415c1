//! `certgate store check`: how certgate would read every item of both tables.

use super::item::Fields;
use super::*;

/// How certgate would read one kind of item (`store check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// Refused as corrupt: 503 `store_unavailable` for whoever it concerns.
    Refused,
    /// Read, with a documented default (README "Store", table of attributes).
    Defaults,
}

/// One kind of problem found by [`DynamoStore::check_tables`].
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Problem {
    /// Refused or read with defaults.
    pub(crate) finding: Finding,
    /// What is wrong, without the item's values (`attribute status is missing`).
    pub(crate) problem: String,
    /// How many items have it.
    pub(crate) count: u64,
    /// The keys of the first few of them.
    pub(crate) examples: Vec<String>,
}

/// What [`DynamoStore::check_tables`] found in one table.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct TableCheck {
    /// `principals` or `certificates`.
    pub(crate) kind: &'static str,
    pub(crate) table: String,
    /// Items scanned.
    pub(crate) items: u64,
    /// Items certgate would refuse.
    pub(crate) refused: u64,
    /// Items read with at least one default (and not refused).
    pub(crate) defaults: u64,
    /// By kind of problem, refused first.
    pub(crate) problems: Vec<Problem>,
}

/// Example keys kept per kind of problem.
const CHECK_EXAMPLES: usize = 5;

/// Principal attributes certgate reads; any other is ignored.
const PRINCIPAL_ATTRIBUTES: &[&str] = &[
    "principal_id",
    "principal_type",
    "status",
    "suspended_at",
    "suspended_reason",
    "roles",
    "created_at",
];

/// Certificate attributes certgate reads or writes; any other is ignored.
const CERTIFICATE_ATTRIBUTES: &[&str] = &[
    "serial_number",
    "principal_id",
    "issuer",
    "fingerprint_sha256",
    "not_before",
    "expires_at",
    "revoked",
    "revoked_at",
    "revocation_reason",
    "expiry_bucket",
    PURGE_AT,
];

/// The problem of a corrupt record, without the values it quotes, so items group by kind.
fn problem_kind(err: &StoreError) -> String {
    let StoreError::Corrupt { detail, .. } = err else {
        return err.to_string();
    };
    if detail.starts_with("unknown status") {
        return "unknown status (expected active or suspended)".to_owned();
    }
    match (
        detail.split_once(" = "),
        detail.ends_with("is not an integer"),
    ) {
        (Some((attr, _)), true) => format!("{attr} is not an integer"),
        _ => detail.clone(),
    }
}

/// One item's key and what certgate would make of it (each finding with its problem).
type Classified = (String, Vec<(Finding, String)>);

/// What certgate would make of one principal item: refused, or the defaults it applies.
fn classify_principal(item: &Item) -> Classified {
    let key = Fields::new(item, "principal_id").key.to_owned();
    let mut found = Vec::new();
    match read_principal(item) {
        Err(e) => found.push((Finding::Refused, problem_kind(&e))),
        Ok(p) => {
            if p.principal_type.is_none() {
                found.push((
                    Finding::Defaults,
                    "principal_type missing: the type comes from the certificate (OID, OU)"
                        .to_owned(),
                ));
            }
            if p.created_at.is_none() {
                found.push((
                    Finding::Defaults,
                    "created_at missing: creation time unknown".to_owned(),
                ));
            }
        }
    }
    extra_attributes(item, PRINCIPAL_ATTRIBUTES, &mut found);
    (key, found)
}

/// What certgate would make of one certificate item.
fn classify_certificate(item: &Item) -> Classified {
    let key = Fields::new(item, "serial_number").key.to_owned();
    let mut found = Vec::new();
    match read_certificate(item) {
        Err(e) => found.push((Finding::Refused, problem_kind(&e))),
        Ok(c) if c.registration.is_none() => found.push((
            Finding::Defaults,
            "revocation-only record: revoked, without registration (denied as revoked)".to_owned(),
        )),
        Ok(_) if !item.contains_key("expiry_bucket") => found.push((
            Finding::Defaults,
            "expiry_bucket missing: not listed by cert list --expiring-within \
             (store init --adopt sets it)"
                .to_owned(),
        )),
        Ok(_) => {}
    }
    extra_attributes(item, CERTIFICATE_ATTRIBUTES, &mut found);
    (key, found)
}

fn extra_attributes(item: &Item, known: &[&str], found: &mut Vec<(Finding, String)>) {
    if item.keys().any(|k| !known.contains(&k.as_str())) {
        found.push((Finding::Defaults, "extra attributes, ignored".to_owned()));
    }
}

/// Tally classified items into a [`TableCheck`].
fn tally(
    kind: &'static str,
    table: &str,
    items: &[Item],
    classify: fn(&Item) -> Classified,
) -> TableCheck {
    let mut check = TableCheck {
        kind,
        table: table.to_owned(),
        items: items.len() as u64,
        refused: 0,
        defaults: 0,
        problems: Vec::new(),
    };
    let mut by_kind: std::collections::BTreeMap<(Finding, String), (u64, Vec<String>)> =
        Default::default();
    for item in items {
        let (key, found) = classify(item);
        if found.iter().any(|(f, _)| *f == Finding::Refused) {
            check.refused += 1;
        } else if !found.is_empty() {
            check.defaults += 1;
        }
        for problem in found {
            let entry = by_kind.entry(problem).or_default();
            entry.0 += 1;
            entry.1.push(key.clone());
        }
    }
    check.problems = by_kind
        .into_iter()
        .map(|((finding, problem), (count, mut examples))| {
            examples.sort();
            examples.truncate(CHECK_EXAMPLES);
            Problem {
                finding,
                problem,
                count,
                examples,
            }
        })
        .collect();
    check
}

impl DynamoStore {
    /// `store check`: scan both tables (read only) and report, per kind of problem, how
    /// many items certgate would refuse or read with defaults, with a few example keys.
    pub(crate) async fn check_tables(&self) -> Result<Vec<TableCheck>, StoreError> {
        let principals = &self.settings.principals_table;
        let certificates = &self.settings.certificates_table;
        let p = self.scan_all(principals).await?;
        let c = self.scan_all(certificates).await?;
        Ok(vec![
            tally("principals", principals, &p, classify_principal),
            tally("certificates", certificates, &c, classify_certificate),
        ])
    }
}
