//! Registering a certificate (`certgate cert register`, `CertificateService/Register`): the
//! certificate is parsed with the configuration's identity rules, and refused unless forced
//! when it does not chain to the trust bundle or names a principal that is not enrolled.

use crate::cert;
use crate::config::Config;
use crate::store::{Actor, Admin, CertificateRecord, StoreError};

/// Why a certificate was not registered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegisterError {
    /// Not a certificate certgate can read.
    #[error("{0}")]
    Unreadable(String),
    /// Neither given nor named by the certificate.
    #[error("the certificate yields no principal id; pass --principal")]
    NoPrincipal,
    /// Does not chain to the trust bundle (and not forced).
    #[error("{0}; pass --force to register it anyway")]
    Untrusted(String),
    /// Its principal is not enrolled (and not forced).
    #[error(
        "principal '{0}' is not enrolled (certgate principal create {0} --type TYPE); pass \
         --force to register anyway"
    )]
    NotEnrolled(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Register the certificate `raw` (PEM or DER) for `principal` (default: the one it names).
pub(crate) async fn register(
    config: &Config,
    store: &dyn Admin,
    raw: &[u8],
    principal: Option<String>,
    force: bool,
    actor: &Actor,
    now_unix: i64,
) -> Result<CertificateRecord, RegisterError> {
    let id = cert::identify(raw, &config.identity, &config.trust, now_unix)
        .map_err(|e| RegisterError::Unreadable(e.to_string()))?;
    let principal_id = principal
        .or(id.principal_id().map(str::to_owned))
        .ok_or(RegisterError::NoPrincipal)?;
    if !force {
        if let Err(failure) = id.chain() {
            return Err(RegisterError::Untrusted(failure.to_string()));
        }
        if store.get_principal(&principal_id).await?.is_none() {
            return Err(RegisterError::NotEnrolled(principal_id));
        }
    }
    let record = CertificateRecord::for_identity(&id, principal_id);
    store.register_certificate(&record, actor).await?;
    Ok(record)
}
