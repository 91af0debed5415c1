//! The remote side of the CLI: the admin API as a store. [`Remote`] implements the store
//! traits the `principal` and `cert` commands are written against, so they run unchanged
//! on a local store or a server; what has no method in the API says so.

use std::path::PathBuf;

use anyhow::Context as _;
use async_trait::async_trait;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use super::pb;
use super::pb::audit_service_client::AuditServiceClient;
use super::pb::certificate_service_client::CertificateServiceClient;
use super::pb::decision_service_client::DecisionServiceClient;
use super::pb::principal_service_client::PrincipalServiceClient;
use crate::cert::{RevocationReason, Serial};
use crate::store::{
    Actor, Admin, AuditQuery, AuditRecord, CertificateRecord, EpochMillis, Inventory, Lookup,
    Principal, Sighting, StoreError, Verification,
};

/// Where the admin API is and the files to reach it with (`--server`, `--cacert`,
/// `--client-cert`, `--client-key`).
#[derive(Debug, Clone)]
pub(crate) struct RemoteSettings {
    /// `https://host:port`.
    pub(crate) server: String,
    /// CA bundle the server's certificate must chain to.
    pub(crate) cacert: PathBuf,
    /// The operator's client certificate.
    pub(crate) client_cert: PathBuf,
    /// Its private key.
    pub(crate) client_key: PathBuf,
}

/// A connection to the admin API (cloning shares the connection).
#[derive(Clone)]
pub(crate) struct Remote {
    channel: Channel,
    server: String,
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

impl Remote {
    /// Connect over TLS with the client certificate; fails early on a bad URL, a missing
    /// file or an unreachable server.
    pub(crate) async fn connect(settings: &RemoteSettings) -> anyhow::Result<Remote> {
        let ca = read(&settings.cacert, "--cacert")?;
        let cert = read(&settings.client_cert, "--client-cert")?;
        let key = read(&settings.client_key, "--client-key")?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key));
        let server = &settings.server;
        let channel = Endpoint::from_shared(server.clone())
            .with_context(|| format!("--server {server}: not a URL"))?
            .tls_config(tls)
            .context("TLS settings of the admin API client")?
            .connect()
            .await
            .with_context(|| format!("connecting to the admin API at {server}"))?;
        Ok(Remote {
            channel,
            server: server.clone(),
        })
    }

    fn principals(&self) -> PrincipalServiceClient<Channel> {
        PrincipalServiceClient::new(self.channel.clone())
    }

    fn certificates(&self) -> CertificateServiceClient<Channel> {
        CertificateServiceClient::new(self.channel.clone())
    }

    /// A failed call as the store error the commands report; `key` names what was asked
    /// for, for NOT_FOUND and ALREADY_EXISTS.
    fn error(&self, status: Status, kind: &'static str, key: &str) -> StoreError {
        match status.code() {
            Code::NotFound => StoreError::NotFound {
                kind,
                key: key.to_owned(),
            },
            Code::AlreadyExists => StoreError::AlreadyExists {
                kind,
                key: key.to_owned(),
            },
            code => StoreError::Remote(format!(
                "the admin API at {} answered {code:?}: {}",
                self.server,
                status.message()
            )),
        }
    }

    fn unsupported(&self, what: &str) -> StoreError {
        StoreError::Remote(format!("{what} is not available through the admin API"))
    }

    /// `CertificateService/Register`: the server parses and checks the certificate.
    pub(crate) async fn register(
        &self,
        certificate: Vec<u8>,
        principal_id: Option<String>,
        force: bool,
    ) -> Result<CertificateRecord, StoreError> {
        let request = pb::RegisterCertificateRequest {
            certificate,
            principal_id,
            force,
        };
        match self.certificates().register(request).await {
            Ok(r) => Ok(r.into_inner().into()),
            // The server's message names the certificate's serial.
            Err(s) if s.code() == Code::AlreadyExists => {
                Err(StoreError::Remote(s.message().into()))
            }
            Err(s) => Err(self.error(s, "certificate", "")),
        }
    }

    /// `DecisionService/Check`.
    pub(crate) async fn check(
        &self,
        request: pb::CheckRequest,
    ) -> Result<pb::CheckResponse, StoreError> {
        DecisionServiceClient::new(self.channel.clone())
            .check(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.error(s, "decision", ""))
    }

    /// `AuditService/Verify`: the server checks the chain as it stores it (records fetched
    /// over the API could not show a tampered encoding the conversion hides).
    pub(crate) async fn verify_audit(&self) -> Result<Verification, StoreError> {
        let v = AuditServiceClient::new(self.channel.clone())
            .verify(pb::VerifyAuditRequest {})
            .await
            .map_err(|s| self.error(s, "audit", ""))?
            .into_inner();
        Ok(Verification {
            is_valid: v.is_valid,
            total_entries: v.total_entries,
            first_invalid_sequence: v.first_invalid_sequence,
        })
    }
}

/// A lookup that found nothing is `None`, as from a local store.
fn found<T>(result: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match result {
        Ok(t) => Ok(Some(t)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Lookup for Remote {
    async fn get_principal(&self, principal_id: &str) -> Result<Option<Principal>, StoreError> {
        let request = pb::GetPrincipalRequest {
            principal_id: principal_id.to_owned(),
        };
        found(
            self.principals()
                .get(request)
                .await
                .map(|r| r.into_inner().into())
                .map_err(|s| self.error(s, "principal", principal_id)),
        )
    }

    async fn get_certificate(
        &self,
        serial: &Serial,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let key = serial.to_string();
        let request = pb::GetCertificateRequest {
            serial: key.clone(),
        };
        found(
            self.certificates()
                .get(request)
                .await
                .map(|r| r.into_inner().into())
                .map_err(|s| self.error(s, "certificate", &key)),
        )
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Err(self.unsupported("a store readiness probe"))
    }
}

#[async_trait]
impl Inventory for Remote {
    async fn record_sightings(&self, _batch: &[Sighting]) -> Result<(), StoreError> {
        Err(self.unsupported("recording sightings"))
    }

    async fn list_sightings(
        &self,
        expiring_before: Option<EpochMillis>,
    ) -> Result<Vec<Sighting>, StoreError> {
        let request = pb::ListSightingsRequest { expiring_before };
        let response = self
            .certificates()
            .list_sightings(request)
            .await
            .map_err(|s| self.error(s, "sighting", ""))?;
        Ok(response
            .into_inner()
            .sightings
            .into_iter()
            .map(Into::into)
            .collect())
    }
}

/// The actor of a remote write is the caller's certificate, as the server verified it: the
/// `actor` a command passes is not sent.
#[async_trait]
impl Admin for Remote {
    async fn create_principal(&self, principal: &Principal, _: &Actor) -> Result<(), StoreError> {
        let request = pb::CreatePrincipalRequest {
            principal_id: principal.principal_id.clone(),
            principal_type: principal.principal_type.clone().unwrap_or_default(),
            roles: principal.roles.clone().map(|roles| pb::Roles { roles }),
        };
        self.principals()
            .create(request)
            .await
            .map(drop)
            .map_err(|s| self.error(s, "principal", &principal.principal_id))
    }

    async fn list_principals(&self) -> Result<Vec<Principal>, StoreError> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListPrincipalsRequest {
                status: pb::PrincipalStatus::Unspecified.into(),
                page_size: 1000,
                page_token,
            };
            let page = self
                .principals()
                .list(request)
                .await
                .map_err(|s| self.error(s, "principal", ""))?
                .into_inner();
            all.extend(page.principals.into_iter().map(Principal::from));
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    async fn suspend_principal(
        &self,
        principal_id: &str,
        reason: &str,
        _at: EpochMillis,
        _: &Actor,
    ) -> Result<Principal, StoreError> {
        let request = pb::SuspendPrincipalRequest {
            principal_id: principal_id.to_owned(),
            reason: reason.to_owned(),
        };
        self.principals()
            .suspend(request)
            .await
            .map(|r| r.into_inner().into())
            .map_err(|s| self.error(s, "principal", principal_id))
    }

    async fn activate_principal(
        &self,
        principal_id: &str,
        _: &Actor,
    ) -> Result<Principal, StoreError> {
        let request = pb::ActivatePrincipalRequest {
            principal_id: principal_id.to_owned(),
        };
        self.principals()
            .activate(request)
            .await
            .map(|r| r.into_inner().into())
            .map_err(|s| self.error(s, "principal", principal_id))
    }

    async fn register_certificate(
        &self,
        _: &CertificateRecord,
        _: &Actor,
    ) -> Result<(), StoreError> {
        // The server registers from the certificate itself ([`Remote::register`]).
        Err(self.unsupported("registering a record without its certificate"))
    }

    async fn list_certificates(
        &self,
        principal_id: Option<&str>,
        expiring_before: Option<EpochMillis>,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let request = pb::ListCertificatesRequest {
            principal_id: principal_id.map(str::to_owned),
            expiring_before,
        };
        let response = self
            .certificates()
            .list(request)
            .await
            .map_err(|s| self.error(s, "certificate", ""))?;
        Ok(response
            .into_inner()
            .certificates
            .into_iter()
            .map(Into::into)
            .collect())
    }

    async fn revoke_certificate(
        &self,
        serial: &Serial,
        issuer: Option<&str>,
        reason: RevocationReason,
        _at: EpochMillis,
        _: &Actor,
    ) -> Result<CertificateRecord, StoreError> {
        let key = serial.to_string();
        let request = pb::RevokeCertificateRequest {
            serial: key.clone(),
            reason: reason.as_str().to_owned(),
            issuer: issuer.map(str::to_owned),
        };
        self.certificates()
            .revoke(request)
            .await
            .map(|r| r.into_inner().into())
            .map_err(|s| self.error(s, "certificate", &key))
    }

    async fn audit_records(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let request = pb::ListAuditRequest {
            since: query.since,
            principal: query.principal.clone(),
        };
        let response = AuditServiceClient::new(self.channel.clone())
            .list(request)
            .await
            .map_err(|s| self.error(s, "audit", ""))?;
        Ok(response
            .into_inner()
            .records
            .into_iter()
            .map(Into::into)
            .collect())
    }
}
