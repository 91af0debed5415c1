//! `crl.tls`: the CA bundle (and optional client certificate) for `https://` CRL sources
//! served by a private CA. The files are read here, and checked the way the fetcher will use
//! them, so a bad file is a configuration problem and not a failed fetch later.

use super::Validator;
use crate::config::Watched;
use crate::config::raw::RawCrlTls;
use crate::crl::fetch::CrlTls;

impl Validator<'_> {
    pub(super) fn crl_tls(&mut self, raw: RawCrlTls, watched: &mut Watched) -> CrlTls {
        let ca_bundle = raw.ca_bundle.filter(|f| !f.is_empty()).and_then(|file| {
            let pem = self.read_file("crl.tls.ca_bundle", &file, watched)?;
            match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) if !certs.is_empty() => Some(pem),
                Ok(_) => {
                    self.problem("crl.tls.ca_bundle", "holds no CERTIFICATE");
                    None
                }
                Err(e) => {
                    self.problem("crl.tls.ca_bundle", format!("not PEM certificates: {e}"));
                    None
                }
            }
        });
        let identity = match (raw.client_cert, raw.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert = self.read_file("crl.tls.client_cert", &cert, watched);
                let key = self.read_file("crl.tls.client_key", &key, watched);
                cert.zip(key).and_then(|(mut pem, key)| {
                    pem.push(b'\n');
                    pem.extend_from_slice(&key);
                    match reqwest::Identity::from_pem(&pem) {
                        Ok(_) => Some(pem),
                        Err(e) => {
                            self.problem(
                                "crl.tls.client_cert",
                                format!("client certificate and key not usable: {e}"),
                            );
                            None
                        }
                    }
                })
            }
            (Some(_), None) => {
                self.problem("crl.tls.client_key", "client_cert is set: give its key too");
                None
            }
            (None, Some(_)) => {
                self.problem(
                    "crl.tls.client_cert",
                    "client_key is set: give its certificate too",
                );
                None
            }
        };
        CrlTls {
            ca_bundle,
            identity,
        }
    }
}
