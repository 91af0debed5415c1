//! What the revocation state is told to follow: the `crl` section, and the inputs CRL
//! verification shares with the chain check. `config` builds these from the YAML; nothing
//! here knows the file.

use std::path::PathBuf;
use std::time::Duration;

use crate::cert::TrustBundle;

/// Whether `/readyz` waits for CRLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub(crate) enum CrlReadiness {
    /// Not ready while a configured issuer has no usable CRL (the reason is in `/readyz`).
    #[default]
    Wait,
    /// Ready at once; checks that need a missing CRL are denied 503 meanwhile.
    Serve,
}

/// How long a CRL stays usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// Unusable once `now − thisUpdate` exceeds this (seconds).
    pub(crate) max_age_secs: i64,
    /// Still usable this long after nextUpdate (seconds).
    pub(crate) next_update_grace_secs: i64,
}

/// Where a CRL is read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub(crate) enum CrlLocation {
    /// `http://` or `https://` URL.
    Url(String),
    /// A file, refreshed by something else (cron, a sidecar).
    File(PathBuf),
}

/// One source of an issuer's CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CrlSource {
    /// URL or file.
    pub(crate) location: CrlLocation,
    /// Time between successful refreshes (jittered by ±10%).
    pub(crate) refresh_interval: Duration,
}

impl CrlSource {
    /// The URL or path, as shown in logs and the `source` metric label.
    pub(crate) fn label(&self) -> String {
        match &self.location {
            CrlLocation::Url(u) => u.clone(),
            CrlLocation::File(p) => p.display().to_string(),
        }
    }
}

/// The CRL configuration of one issuing CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlIssuer {
    /// The CA's subject DN, as certgate prints it (and as `Identity::issuer` is).
    pub(crate) name: String,
    /// The CA's subject Name, DER: a CRL must carry exactly this issuer.
    pub(crate) subject_der: Vec<u8>,
    /// Freshness limits.
    pub(crate) freshness: Freshness,
    /// Sources, all refreshed; the newest verified CRL wins.
    pub(crate) sources: Vec<CrlSource>,
}

/// Settings of the `crl` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlSettings {
    /// `/readyz` behaviour.
    pub(crate) readiness: CrlReadiness,
    /// Per HTTP fetch, connect to last byte.
    pub(crate) timeout: Duration,
    /// First delay after a failed fetch; doubles on each further failure.
    pub(crate) retry_backoff: Duration,
    /// Cap of the failure delay.
    pub(crate) max_retry_backoff: Duration,
    /// Largest CRL accepted, bytes.
    pub(crate) max_size: u64,
    /// Where the last good CRL of each CA key is kept across restarts.
    pub(crate) cache_dir: Option<PathBuf>,
    /// Where the newest thisUpdate installed per CA key is recorded, outside `cache_dir`
    /// (set whenever `cache_dir` is; see [`HighWater`](super::HighWater)).
    pub(crate) high_water_file: Option<PathBuf>,
    /// Follow HTTP redirects of CRL URLs (to the same host only, never https → http).
    pub(crate) follow_redirects: bool,
    /// Per issuing CA.
    pub issuers: Vec<CrlIssuer>,
    /// TLS of `https://` sources (`crl.tls`).
    pub(crate) tls: super::fetch::CrlTls,
}

impl Default for CrlSettings {
    fn default() -> Self {
        CrlSettings {
            readiness: CrlReadiness::Wait,
            timeout: Duration::from_secs(10),
            retry_backoff: Duration::from_secs(1),
            max_retry_backoff: Duration::from_secs(300),
            max_size: 64 << 20,
            cache_dir: None,
            high_water_file: None,
            follow_redirects: false,
            issuers: Vec::new(),
            tls: super::fetch::CrlTls::default(),
        }
    }
}

/// Everything the revocation state follows. A reload hands over a new value; CRLs are
/// refetched only when `loads_like` says they would load differently.
#[derive(Debug, Clone)]
pub(crate) struct CrlInputs {
    /// The `crl` section.
    pub(crate) settings: CrlSettings,
    /// The CAs whose keys verify CRLs (the trust bundle of the chain check).
    pub(crate) trust: TrustBundle,
    /// Tolerance on thisUpdate/nextUpdate, seconds (the chain check's clock skew).
    pub(crate) clock_skew_secs: i64,
    /// Whether some policy requires a usable CRL (so `/readyz` waits for CRLs).
    pub(crate) required: bool,
}

impl CrlInputs {
    /// Whether CRLs load and verify identically under both (same sources, limits, trust
    /// bundle and clock skew), so the refresher and the loaded CRLs can stay as they are.
    pub(crate) fn loads_like(&self, other: &CrlInputs) -> bool {
        self.settings == other.settings
            && self.trust.ca_certificates() == other.trust.ca_certificates()
            && self.clock_skew_secs == other.clock_skew_secs
    }
}
