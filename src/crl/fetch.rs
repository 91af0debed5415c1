//! Reading CRL bytes from a source: HTTP(S) with conditional GET, or a file. Bounded in time
//! (one deadline from connect to last byte) and in size (checked while streaming, so a huge
//! or endless body is cut off, never buffered). Only transports bytes; judging them is
//! `parse`'s job.

use std::time::{Duration, SystemTime};

use super::{CrlLocation, CrlSettings, CrlSource};

/// `crl.tls`: what an `https://` CRL fetch trusts and presents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CrlTls {
    /// PEM CA certificates that replace the public roots, for a CRL server with a private CA.
    pub(crate) ca_bundle: Option<Vec<u8>>,
    /// PEM client certificate followed by its key, for a server that asks for one.
    pub(crate) identity: Option<Vec<u8>>,
}

/// What the previous successful read returned, to ask "changed since?".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Validators {
    /// HTTP `ETag`.
    pub(crate) etag: Option<String>,
    /// HTTP `Last-Modified`.
    pub(crate) last_modified: Option<String>,
    /// File modification time and length.
    pub(crate) file_stamp: Option<(SystemTime, u64)>,
}

/// The result of one read.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum Fetched {
    /// 304 Not Modified, or the file is unchanged.
    NotModified,
    /// New bytes, with the validators to send next time.
    Body(Vec<u8>, Validators),
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FetchError {
    /// The server answered with a status other than 200 or 304.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The server answered with a redirect, and redirects are not followed.
    #[error(
        "HTTP status {status}: redirect not followed (set crl.follow_redirects to follow one to the same host)"
    )]
    Redirect {
        /// The 3xx status.
        status: u16,
    },
    /// No complete answer within the timeout.
    #[error("no complete response within {0:?}")]
    Timeout(Duration),
    /// Connection refused, DNS, TLS, reset, truncated body…
    #[error("transport error: {0}")]
    Transport(String),
    /// The body or file is larger than `crl.max_size`.
    #[error("CRL larger than the limit of {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// The file cannot be read.
    #[error("cannot read: {0}")]
    Io(String),
}

/// An HTTP client for CRL fetches (rustls; no cookies). The overall deadline is applied per
/// fetch by [`fetch`].
///
/// Redirects are not followed unless `follow_redirects` (`crl.follow_redirects`): a CRL URL
/// is configured to reach one server, and a redirect could point the fetch at an internal
/// address. When followed, only to the same host, never from https to http, at most 3.
///
/// With `crl.tls.ca_bundle` only its CAs are trusted (not the public roots as well): a CRL
/// server of a private PKI has no business presenting a public certificate.
pub fn client(settings: &CrlSettings) -> Result<reqwest::Client, FetchError> {
    let policy = if settings.follow_redirects {
        reqwest::redirect::Policy::custom(|attempt| {
            let (to, first) = (attempt.url(), attempt.previous().first());
            let same_host = first.is_some_and(|f| f.host_str() == to.host_str());
            let downgrade = first.is_some_and(|f| f.scheme() == "https") && to.scheme() != "https";
            if attempt.previous().len() > 3 {
                attempt.error("more than 3 redirects")
            } else if !same_host || downgrade {
                let to = format!("{}://{}", to.scheme(), to.host_str().unwrap_or_default());
                attempt.error(format!(
                    "redirect to {to} refused: only the same host is followed, never https to http"
                ))
            } else {
                attempt.follow()
            }
        })
    } else {
        reqwest::redirect::Policy::none()
    };
    let tls_error = |e: reqwest::Error| FetchError::Transport(format!("crl.tls: {e}"));
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("certgate/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(settings.timeout)
        .redirect(policy);
    if let Some(pem) = &settings.tls.ca_bundle {
        builder = builder.tls_built_in_root_certs(false);
        for ca in reqwest::Certificate::from_pem_bundle(pem).map_err(tls_error)? {
            builder = builder.add_root_certificate(ca);
        }
    }
    if let Some(pem) = &settings.tls.identity {
        builder = builder.identity(reqwest::Identity::from_pem(pem).map_err(tls_error)?);
    }
    builder
        .build()
        .map_err(|e| FetchError::Transport(e.to_string()))
}

/// Read `source` once. `previous` makes the read conditional.
pub async fn fetch(
    client: &reqwest::Client,
    source: &CrlSource,
    previous: &Validators,
    max_size: u64,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    match &source.location {
        CrlLocation::Url(url) => {
            tokio::time::timeout(timeout, fetch_url(client, url, previous, max_size))
                .await
                .unwrap_or(Err(FetchError::Timeout(timeout)))
        }
        CrlLocation::File(path) => fetch_file(path, previous, max_size).await,
    }
}

async fn fetch_url(
    client: &reqwest::Client,
    url: &str,
    previous: &Validators,
    max_size: u64,
) -> Result<Fetched, FetchError> {
    use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
    let transport = |e: reqwest::Error| {
        if e.is_timeout() {
            FetchError::Transport(format!("timed out: {e}"))
        } else {
            // The chain says what failed (connect refused, DNS, TLS…); the top is generic.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            if text.contains("UnknownIssuer") {
                text.push_str(
                    " (the CRL server's certificate is not from a CA certgate trusts for CRLs: set crl.tls.ca_bundle to the CA that issued it)",
                );
            }
            FetchError::Transport(text)
        }
    };
    let mut request = client.get(url);
    if let Some(etag) = &previous.etag {
        request = request.header(IF_NONE_MATCH, etag);
    }
    if let Some(lm) = &previous.last_modified {
        request = request.header(IF_MODIFIED_SINCE, lm);
    }
    let mut response = request.send().await.map_err(transport)?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_MODIFIED
        && (previous.etag.is_some() || previous.last_modified.is_some())
    {
        return Ok(Fetched::NotModified);
    }
    if status.is_redirection() && status != reqwest::StatusCode::NOT_MODIFIED {
        return Err(FetchError::Redirect {
            status: status.as_u16(),
        });
    }
    if status != reqwest::StatusCode::OK {
        return Err(FetchError::Status(status.as_u16()));
    }
    if response.content_length().is_some_and(|n| n > max_size) {
        return Err(FetchError::TooLarge { max: max_size });
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let validators = Validators {
        etag: header(ETAG),
        last_modified: header(LAST_MODIFIED),
        file_stamp: None,
    };
    let mut body = Vec::with_capacity(
        response
            .content_length()
            .map_or(64 * 1024, |n| n.min(max_size) as usize),
    );
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if (body.len() + chunk.len()) as u64 > max_size {
            return Err(FetchError::TooLarge { max: max_size });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched::Body(body, validators))
}

async fn fetch_file(
    path: &std::path::Path,
    previous: &Validators,
    max_size: u64,
) -> Result<Fetched, FetchError> {
    let io = |e: std::io::Error| FetchError::Io(e.to_string());
    let meta = tokio::fs::metadata(path).await.map_err(io)?;
    if meta.len() > max_size {
        return Err(FetchError::TooLarge { max: max_size });
    }
    let stamp = (meta.modified().map_err(io)?, meta.len());
    if previous.file_stamp == Some(stamp) {
        return Ok(Fetched::NotModified);
    }
    let bytes = tokio::fs::read(path).await.map_err(io)?;
    if bytes.len() as u64 > max_size {
        return Err(FetchError::TooLarge { max: max_size });
    }
    Ok(Fetched::Body(
        bytes,
        Validators {
            file_stamp: Some(stamp),
            ..Validators::default()
        },
    ))
}
