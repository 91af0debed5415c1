//! The soak's PKI: two client CAs (the rotation's old and new), a forger per CA (its name,
//! another key), Envoy's server certificate, and one client certificate per
//! principal, alternately from each CA.

use std::path::{Path, PathBuf};

use anyhow::Result;
use certgate::pki::{CertAuthority, CertSpec, CrlSpec};
use time::{Duration, OffsetDateTime};

/// certgate's default identity extensions (principal id, principal type).
const ID_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 1, 1];
const TYPE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 1, 2];

/// A client certificate on disk.
pub struct Client {
    /// Principal id (`soak-NN`).
    pub principal: String,
    /// 0: the old CA, 1: the new one.
    pub ca: usize,
    /// Serial, for CRLs.
    pub serial: u64,
    /// Certificate and key, PEM, in one file (what reqwest's identity takes).
    pub identity: PathBuf,
}

/// The CAs and where their files are.
pub struct Pki {
    /// Old and new client CA.
    pub cas: [CertAuthority; 2],
    /// Each CA's name with another key: they sign the forged CRLs.
    pub forgers: [CertAuthority; 2],
    /// One per principal.
    pub clients: Vec<Client>,
}

/// The subject of CA `i` as the configuration names it.
pub fn ca_name(i: usize) -> String {
    format!("CN=soak CA {}, O=certgate dev", i + 1)
}

/// Write everything under `dir`: ca-1.pem, ca-2.pem, envoy-ca.pem (both, what Envoy's
/// listener verifies against), server.pem/server-key.pem, client-NN.pem.
pub fn write(dir: &Path, principals: usize) -> Result<Pki> {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0)?;
    let start = now - Duration::days(1);
    let end = now + Duration::days(365);
    let ca = |n: usize| CertAuthority::new(&format!("soak CA {n}"), start, end);
    let cas = [ca(1)?, ca(2)?];
    let forgers = [ca(1)?, ca(2)?];
    for (n, ca) in cas.iter().enumerate() {
        std::fs::write(dir.join(format!("ca-{}.pem", n + 1)), ca.cert_pem())?;
    }
    std::fs::write(
        dir.join("envoy-ca.pem"),
        cas[0].cert_pem() + &cas[1].cert_pem(),
    )?;
    let server = cas[0].issue(&CertSpec::server(&["localhost"], start, Duration::days(30)))?;
    std::fs::write(dir.join("server.pem"), &server.cert_pem)?;
    std::fs::write(dir.join("server-key.pem"), &server.key_pem)?;
    let key = CertAuthority::new_leaf_key()?;
    let mut clients = Vec::with_capacity(principals);
    for n in 0..principals {
        let principal = format!("soak-{n:02}");
        let spec = CertSpec {
            organizational_unit: Some("worker".into()),
            custom_extensions: vec![
                (ID_OID.to_vec(), principal.clone()),
                (TYPE_OID.to_vec(), "worker".into()),
            ],
            serial: Some(0x50_0000 + n as u64),
            ..CertSpec::client(&principal, start, Duration::days(30))
        };
        let issued = cas[n % 2].issue_with_key(&spec, &key)?;
        let identity = dir.join(format!("client-{n:02}.pem"));
        std::fs::write(&identity, issued.cert_pem + &issued.key_pem)?;
        clients.push(Client {
            principal,
            ca: n % 2,
            serial: issued.serial,
            identity,
        });
    }
    Ok(Pki {
        cas,
        forgers,
        clients,
    })
}

/// A CRL of `ca` (or of the forger) issued `age` ago, listing `revoked`, PEM.
pub fn crl(ca: &CertAuthority, number: u64, age: Duration, revoked: &[u64]) -> Result<String> {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0)?;
    let spec = CrlSpec {
        number,
        revoked: revoked.iter().map(|s| (*s, None)).collect(),
        ..CrlSpec::new(now - age, Duration::days(7))
    };
    Ok(ca.crl(&spec)?.pem)
}

/// A replayed CRL: issued `age` ago and already past its nextUpdate.
pub fn stale_crl(ca: &CertAuthority, age: Duration) -> Result<String> {
    let this_update = OffsetDateTime::now_utc().replace_nanosecond(0)? - age;
    let spec = CrlSpec::new(this_update, age / 2);
    Ok(ca.crl(&spec)?.pem)
}
