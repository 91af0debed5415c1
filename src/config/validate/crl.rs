//! `crl`: sources and freshness per issuing CA, resolved against the trust bundle.

use std::path::{Path, PathBuf};

use super::Validator;
use crate::cert::TrustBundle;
use crate::config::dn::dn_matches;
use crate::config::raw::RawCrl;
use crate::crl::{CrlIssuer, CrlLocation, CrlSettings, CrlSource, Freshness};

impl Validator<'_> {
    pub(super) fn crl(&mut self, raw: RawCrl, trust: Option<&TrustBundle>) -> CrlSettings {
        let max_age = self.duration("crl.max_age", &raw.max_age);
        if max_age.is_zero() {
            self.problem("crl.max_age", "must be greater than zero");
        }
        let grace = self.duration("crl.next_update_grace", &raw.next_update_grace);
        let url_interval = self.duration("crl.refresh_interval", &raw.refresh_interval);
        let file_interval = self.duration("crl.file_refresh_interval", &raw.file_refresh_interval);
        let timeout = self.duration("crl.timeout", &raw.timeout);
        let retry_backoff = self.duration("crl.retry_backoff", &raw.retry_backoff);
        let max_retry_backoff = self.duration("crl.max_retry_backoff", &raw.max_retry_backoff);
        for (key, d) in [
            ("crl.refresh_interval", url_interval),
            ("crl.file_refresh_interval", file_interval),
            ("crl.timeout", timeout),
            ("crl.retry_backoff", retry_backoff),
        ] {
            if d.is_zero() {
                self.problem(key, "must be greater than zero");
            }
        }
        let max_size = self.size("crl.max_size", &raw.max_size);
        // Subjects of the bundle's CAs, as text and DER, to resolve `ca:`.
        let subjects: Vec<(String, Vec<u8>)> = trust
            .map(|t| {
                t.ca_certificates()
                    .iter()
                    .filter_map(|der| {
                        use x509_parser::prelude::FromDer;
                        let (_, c) =
                            x509_parser::certificate::X509Certificate::from_der(der).ok()?;
                        Some((c.subject().to_string(), c.subject().as_raw().to_vec()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut issuers: Vec<CrlIssuer> = Vec::new();
        for (i, ri) in raw.issuers.into_iter().enumerate() {
            let key = format!("crl.issuers[{i}]");
            let found = subjects.iter().find(|(text, _)| dn_matches(&ri.ca, text));
            let (name, subject_der) = match (found, trust) {
                (Some((text, der)), _) => (text.clone(), der.clone()),
                (None, Some(_)) => {
                    let known: Vec<String> =
                        subjects.iter().map(|(t, _)| format!("'{t}'")).collect();
                    self.problem(
                        format!("{key}.ca"),
                        format!(
                            "no CA of the trust bundle has the subject '{}' (the bundle has: {})",
                            ri.ca,
                            known.join(", ")
                        ),
                    );
                    continue;
                }
                // The bundle itself is broken; that problem is already reported.
                (None, None) => continue,
            };
            if issuers.iter().any(|other| other.name == name) {
                self.problem(
                    format!("{key}.ca"),
                    format!("'{name}' is configured twice; list all its sources under one entry"),
                );
                continue;
            }
            if ri.sources.is_empty() {
                self.problem(
                    format!("{key}.sources"),
                    "must list at least one url or file",
                );
            }
            let mut sources = Vec::new();
            for (j, rs) in ri.sources.into_iter().enumerate() {
                let skey = format!("{key}.sources[{j}]");
                let (location, default_interval) = match (rs.url, rs.file) {
                    (Some(url), None) => {
                        let lower = url.to_ascii_lowercase();
                        if !(lower.starts_with("http://") || lower.starts_with("https://"))
                            || url.parse::<axum::http::Uri>().is_err()
                        {
                            self.problem(
                                format!("{skey}.url"),
                                format!("\"{url}\" is not an http:// or https:// URL"),
                            );
                        }
                        (CrlLocation::Url(url), url_interval)
                    }
                    (None, Some(file)) => (CrlLocation::File(self.path(&file)), file_interval),
                    _ => {
                        self.problem(skey, "give exactly one of url or file");
                        continue;
                    }
                };
                let refresh_interval = match rs.refresh_interval {
                    Some(text) => {
                        let d = self.duration(&format!("{skey}.refresh_interval"), &text);
                        if d.is_zero() {
                            self.problem(
                                format!("{skey}.refresh_interval"),
                                "must be greater than zero",
                            );
                        }
                        d
                    }
                    None => default_interval,
                };
                sources.push(CrlSource {
                    location,
                    refresh_interval,
                });
            }
            let issuer_max_age = match &ri.max_age {
                Some(t) => self.duration(&format!("{key}.max_age"), t),
                None => max_age,
            };
            let issuer_grace = match &ri.next_update_grace {
                Some(t) => self.duration(&format!("{key}.next_update_grace"), t),
                None => grace,
            };
            issuers.push(CrlIssuer {
                name,
                subject_der,
                freshness: Freshness {
                    max_age_secs: issuer_max_age.as_secs() as i64,
                    next_update_grace_secs: issuer_grace.as_secs() as i64,
                },
                sources,
            });
        }
        self.crl_keys_are_not_shared(&issuers, trust);
        let cache_dir = raw
            .cache_dir
            .filter(|d| !d.is_empty())
            .map(|d| self.path(&d).components().collect::<PathBuf>());
        let high_water_file = self.crl_high_water_file(raw.high_water_file, cache_dir.as_deref());
        CrlSettings {
            readiness: raw.readiness,
            timeout,
            retry_backoff,
            max_retry_backoff: max_retry_backoff.max(retry_backoff),
            max_size,
            cache_dir,
            high_water_file,
            follow_redirects: raw.follow_redirects,
            issuers,
            // `crl.tls` names files: read by `crl_tls`, which records them for reload.
            tls: Default::default(),
        }
    }

    /// CRL state is keyed by CA key; one key under two configured issuer names would make
    /// one name's CRL decide for the other's certificates.
    fn crl_keys_are_not_shared(&mut self, issuers: &[CrlIssuer], trust: Option<&TrustBundle>) {
        let Some(trust) = trust else { return };
        let configured =
            |ca: &crate::cert::Anchor| issuers.iter().any(|i| i.subject_der == ca.subject_der);
        let cas: Vec<_> = trust.cas().iter().filter(|ca| configured(ca)).collect();
        for (i, a) in cas.iter().enumerate() {
            if let Some(b) = cas[..i]
                .iter()
                .find(|b| b.key == a.key && b.subject_der != a.subject_der)
            {
                self.problem(
                    "crl.issuers",
                    format!(
                        "CAs #{} '{}' and #{} '{}' of the trust bundle share one key ({}) under two names;                          certgate keeps CRLs per CA key, so configure CRLs for one of them only",
                        b.position, b.subject, a.position, a.subject, a.key
                    ),
                );
            }
        }
    }

    /// `crl.high_water_file`: as given, else beside `cache_dir` (`<cache_dir>.high-water.json`)
    /// when there is one; never inside it, where whoever can plant an old CRL could also
    /// lower the mark.
    fn crl_high_water_file(
        &mut self,
        raw: Option<String>,
        cache_dir: Option<&Path>,
    ) -> Option<PathBuf> {
        let file = match (raw.filter(|f| !f.is_empty()), cache_dir) {
            (Some(file), _) => self.path(&file).components().collect::<PathBuf>(),
            (None, Some(dir)) => {
                let mut file = dir.as_os_str().to_owned();
                file.push(".high-water.json");
                PathBuf::from(file)
            }
            (None, None) => return None,
        };
        if let Some(dir) = cache_dir
            && file.starts_with(dir)
        {
            self.problem(
                "crl.high_water_file",
                format!(
                    "{} is inside crl.cache_dir ({}): whoever can write the cache could lower                      the mark that keeps older CRLs out; put it elsewhere",
                    file.display(),
                    dir.display()
                ),
            );
        }
        Some(file)
    }
}
