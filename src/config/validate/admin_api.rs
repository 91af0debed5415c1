//! `admin_api`: the policy the admin API authorizes with and its listener's TLS material.

use std::collections::HashMap;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::Validator;
use crate::authz::Policy;
use crate::config::raw::RawAdminApi;
use crate::config::{AdminApiSettings, Watched};

impl Validator<'_> {
    /// Checked only when `listen.admin_api` is set: the listener cannot start without a
    /// policy, a certificate and its key, and client CAs (default `trust.ca_bundle`).
    pub(super) fn admin_api(
        &mut self,
        raw: RawAdminApi,
        ca_bundle: &str,
        policies: &HashMap<String, Arc<Policy>>,
        watched: &mut Watched,
    ) -> Option<AdminApiSettings> {
        let policy = match raw.policy {
            Some(name) if policies.contains_key(&name) => Some(name),
            Some(name) => {
                self.problem(
                    "admin_api.policy",
                    format!("\"{name}\" is not one of the policies"),
                );
                None
            }
            None => {
                self.problem(
                    "admin_api.policy",
                    "listen.admin_api is set: name the policy whose permissions say who may \
                     call which method (e.g. `operators`)",
                );
                None
            }
        };
        let tls = raw.tls;
        let cert_pem = self.pem_file("admin_api.tls.cert", tls.cert.as_deref(), watched, |pem| {
            let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>();
            matches!(certs, Ok(c) if !c.is_empty())
        });
        let key_pem = self.pem_file("admin_api.tls.key", tls.key.as_deref(), watched, |pem| {
            PrivateKeyDer::from_pem_slice(pem).is_ok()
        });
        let client_ca = tls.client_ca.as_deref().unwrap_or(ca_bundle);
        let client_ca_pem =
            self.pem_file("admin_api.tls.client_ca", Some(client_ca), watched, |pem| {
                let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>();
                matches!(certs, Ok(c) if !c.is_empty())
            });
        Some(AdminApiSettings {
            policy: policy?,
            cert_pem: cert_pem?,
            key_pem: key_pem?,
            client_ca_pem: client_ca_pem?,
        })
    }

    /// The file `path` names, when set, readable and `parses` accepts it.
    fn pem_file(
        &mut self,
        key: &str,
        path: Option<&str>,
        watched: &mut Watched,
        parses: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let Some(path) = path.filter(|p| !p.is_empty()) else {
            self.problem(key, "listen.admin_api is set: name a PEM file");
            return None;
        };
        let pem = self.read_file(key, path, watched)?;
        if !parses(&pem) {
            self.problem(key, format!("{path} holds no usable PEM for this key"));
            return None;
        }
        Some(pem)
    }
}
