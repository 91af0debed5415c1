//! certgate inside another process: the Envoy dynamic module (`module/`) loads the library and
//! decides with the same [`Checker`] as `certgate serve` — the same configuration file and hot
//! reload, CRL refresh, identity and store caches, reason codes and deny body. The embedding
//! owns nothing but the wire: it reads the request into a [`Request`], calls
//! [`Engine::decide`], and applies the [`Answer`].
//!
//! A decision that needs no I/O (identity and store answers cached) is made on the caller's
//! thread; one that does finishes on the engine's own runtime and is handed to a callback, so
//! the caller never blocks.

pub(crate) mod render;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::authz::{Deny, ReasonCode};
use crate::cert::CachedIdentity;
use crate::cert::{self, CertEncoding};
use crate::check::{CheckInput, Checker, Generation, Outcome, PeerMiss, RequestProblem};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::observe::RequestMeta;
use crate::observe::request_id::request_id;
use crate::server::listener;
use render::{Rendering, Renderings};

/// The header Envoy puts the client certificate in (`forward_client_cert_details: SANITIZE_SET`
/// with `set_current_client_cert_details: {cert: true}`).
pub const XFCC: &str = "x-forwarded-client-cert";

/// A running checker with its background work (configuration reload, CRL refresh, store
/// lookups, the admin listener) on a runtime of its own.
pub struct Engine {
    checker: Arc<Checker>,
    renderings: Arc<Renderings>,
    runtime: Option<tokio::runtime::Runtime>,
    _shutdown: watch::Sender<bool>,
}

/// What the proxy knows about one request, copied out of its buffers.
#[derive(Debug, Default)]
pub struct Request {
    /// Policy the route names, if any (the default policy otherwise).
    pub policy: Option<String>,
    /// `:method`.
    pub method: String,
    /// `:path`, as the proxy normalised it.
    pub path: String,
    /// `:authority`: `policy_routes` match on it when the route names no policy.
    pub host: String,
    /// `x-request-id`, echoed in a deny body.
    pub request_id: String,
}

/// The client certificate of the request's connection, borrowed from the proxy for the
/// duration of [`Engine::decide`].
pub struct Peer<'a> {
    /// SHA-256 (hex) of the certificate the client presented on this connection, from the
    /// TLS layer itself; empty without one.
    pub sha256_hex: &'a [u8],
    /// Every value of [`XFCC`] on the request. Read only when the identity cache does not
    /// know the certificate by its digest: a cached client costs no certificate decoding.
    pub xfcc: &'a dyn Fn() -> Vec<&'a [u8]>,
}

/// A decision, rendered with the configuration that made it.
#[derive(Debug)]
pub struct Answer {
    outcome: Outcome,
    body: Option<String>,
    rendering: Rendering,
}

impl Engine {
    /// Load the configuration at `config_path`, open its store, and start the reload loop, the
    /// CRL refresher and (when `listen.admin` is set) the admin listener with `/metrics` and
    /// `/readyz`. `listen.grpc`, `listen.grpc_unix` and `listen.http` are not served.
    pub fn start(config_path: &Path) -> anyhow::Result<Engine> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("certgate")
            .enable_all()
            .build()
            .context("starting the certgate runtime")?;
        let (shutdown, stopped) = watch::channel(false);
        let checker = runtime.block_on(async {
            let config = Config::load(config_path)?;
            let metrics = Metrics::new();
            let store = crate::app::open_store(&config, &metrics).await?;
            let reload_interval = config.reload_interval;
            let admin = config.listen.admin;
            let limits = config.listen.limits;
            let checker = Arc::new(Checker::new(config, store, metrics));
            if let Some(addr) = admin {
                let tcp = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding admin listener {addr}"))?;
                let acceptor = listener::Tcp {
                    listener: tcp,
                    keepalive: limits.tcp_keepalive,
                };
                let incoming =
                    listener::spawn_accept(acceptor, limits.admin_max_connections, "admin");
                let app = crate::admin::router(checker.clone());
                tokio::spawn(listener::serve_http(incoming, app, limits, stopped));
            }
            crate::crl::refresh::spawn(checker.revocation().clone());
            tokio::spawn(crate::app::reload::reload_loop(
                checker.clone(),
                config_path.to_owned(),
                reload_interval,
            ));
            anyhow::Ok(checker)
        })?;
        Ok(Engine {
            checker,
            renderings: Arc::default(),
            runtime: Some(runtime),
            _shutdown: shutdown,
        })
    }

    /// Decide `request`: on the caller's thread when that needs no I/O, otherwise
    /// [`Decision::Pending`], to be finished on the engine's runtime. A pending decision
    /// that takes longer than `deadline` becomes `503 store_unavailable`.
    pub fn decide(&self, request: Request, peer: Peer<'_>, deadline: Duration) -> Decision {
        let Some(runtime) = self.runtime.as_ref() else {
            unreachable!("the runtime lives until the engine is dropped")
        };
        let _entered = runtime.enter();
        let checker = self.checker.clone();
        let renderings = self.renderings.clone();
        let generation = checker.generation();
        let now = crate::clock::unix_now();
        let certificate = certificate(&checker, &generation, &peer, now);
        let mut decision: PendingFuture = Box::pin(async move {
            let (forwarded, malformed, known) = match certificate {
                Certificate::None => (None, None, None),
                Certificate::Known(known) => (None, None, Some(known)),
                Certificate::Forwarded(xfcc) => (Some(xfcc), None, None),
                Certificate::Problem(problem) => (None, Some(problem), None),
            };
            let input = CheckInput {
                certificate: forwarded.as_deref(),
                encoding: CertEncoding::Xfcc,
                policy: request.policy.as_deref(),
                host: Some(request.host.as_str()).filter(|h| !h.is_empty()),
                method: &request.method,
                path: &request.path,
                malformed,
            };
            let request_id = request_id(Some(&request.request_id));
            let meta = RequestMeta {
                host: &request.host,
                ..RequestMeta::module(&request_id)
            };
            let check = async {
                match known {
                    Some(known) => {
                        let check = checker.check_peer_in(&generation, input, known, &meta, now);
                        check.await
                    }
                    None => checker.check_in(&generation, input, &meta, now).await,
                }
            };
            let outcome = tokio::time::timeout(deadline, check)
                .await
                .unwrap_or_else(|_| {
                    let config = &generation.config;
                    let policy = request
                        .policy
                        .as_deref()
                        .filter(|p| !p.is_empty())
                        .unwrap_or(&config.default_policy);
                    let deny = Deny::new(
                        ReasonCode::StoreUnavailable,
                        format!("principal store did not answer within {deadline:?}"),
                    );
                    Outcome::denied(config.clone(), policy, deny)
                });
            Answer::new(outcome, &request_id, &renderings)
        });
        match poll_once(decision.as_mut()) {
            Poll::Ready(answer) => Decision::Ready(answer),
            Poll::Pending => Decision::Pending(Pending {
                future: decision,
                runtime: runtime.handle().clone(),
            }),
        }
    }
}

type PendingFuture = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// The result of [`Engine::decide`].
pub enum Decision {
    /// Decided on the caller's thread.
    Ready(Answer),
    /// Waiting for the store: call [`Pending::then`].
    Pending(Pending),
}

/// A decision waiting for I/O; dropping it abandons the decision.
pub struct Pending {
    future: PendingFuture,
    runtime: tokio::runtime::Handle,
}

impl Pending {
    /// Finish on the engine's runtime and hand the answer to `done`, on one of its threads.
    pub fn then(self, done: impl FnOnce(Answer) + Send + 'static) {
        let future = self.future;
        self.runtime.spawn(async move { done(future.await) });
    }
}

/// One poll with a waker that does nothing: the future is polled again, with a real waker,
/// by the runtime when it was not ready.
fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// The certificate to decide with, as far as it can be known before deciding.
enum Certificate {
    /// The connection has no client certificate.
    None,
    /// The connection's certificate, parsed (or found in the identity cache by its digest).
    Known((CachedIdentity, bool)),
    /// An XFCC value whose certificate does not decode: the checker reports it from the
    /// header, as in ext_authz mode.
    Forwarded(Vec<u8>),
    /// The request cannot be judged: refused as malformed.
    Problem(RequestProblem<'static>),
}

/// The connection attribute holding the certificate digest (for a deny's message).
const PEER_DIGEST: &str = "connection.sha256_peer_certificate_digest";

/// The connection's certificate: by its digest from the identity cache, else the one in
/// Envoy's XFCC, and only when it is the one the client presented on this connection (so a
/// client-sent XFCC that a misconfigured Envoy let through is never an identity).
fn certificate(
    checker: &Checker,
    generation: &Generation,
    peer: &Peer<'_>,
    now: i64,
) -> Certificate {
    if peer.sha256_hex.is_empty() {
        return Certificate::None;
    }
    let mut sha256 = [0u8; 32];
    if hex::decode_to_slice(peer.sha256_hex, &mut sha256).is_err() {
        return Certificate::Problem(RequestProblem::NotText(PEER_DIGEST));
    }
    match checker.peer_identity(generation, &sha256, || xfcc_der(&(peer.xfcc)()), now) {
        Ok(known) => Certificate::Known(known),
        Err(PeerMiss::Unavailable(certificate)) => certificate,
        Err(PeerMiss::NotTheConnections) => {
            tracing::warn!(
                "x-forwarded-client-cert does not carry the connection's certificate: is Envoy \
                 set to forward_client_cert_details SANITIZE_SET?"
            );
            Certificate::Problem(RequestProblem::Missing(XFCC))
        }
    }
}

/// The DER certificate in the one XFCC value Envoy set, or what to decide with instead.
fn xfcc_der(values: &[&[u8]]) -> Result<Vec<u8>, Certificate> {
    let xfcc = match values {
        [one] => *one,
        [] => return Err(Certificate::Problem(RequestProblem::Missing(XFCC))),
        _ => return Err(Certificate::Problem(RequestProblem::Repeated(XFCC))),
    };
    match cert::extract(CertEncoding::Xfcc, xfcc) {
        Ok(Some(carried)) => {
            cert::decode_certificate(&carried).map_err(|_| Certificate::Forwarded(xfcc.to_vec()))
        }
        // No certificate in Envoy's own element although the connection has one, or one
        // that does not decode.
        _ => Err(Certificate::Forwarded(xfcc.to_vec())),
    }
}

impl Answer {
    fn new(outcome: Outcome, request_id: &str, renderings: &Renderings) -> Answer {
        let body = outcome.deny_body(request_id);
        let rendering = renderings.of(&outcome);
        Answer {
            outcome,
            body,
            rendering,
        }
    }

    /// 200 to forward the request, or the deny's status.
    pub fn status(&self) -> u16 {
        self.outcome.http_status()
    }

    /// The JSON deny body (`application/json`); `None` on allow.
    pub fn deny_body(&self) -> Option<&str> {
        self.body.as_deref()
    }

    /// Identity headers to set on the forwarded request (none on deny).
    pub fn allow_headers(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.rendering.headers.iter().map(|(n, v)| (&**n, &**v))
    }

    /// Every configured identity header name: the ones not set by [`Self::allow_headers`]
    /// must be removed from the forwarded request, whatever the client sent.
    pub fn identity_header_names(&self) -> [&str; 7] {
        self.outcome.config().headers.all()
    }

    /// Dynamic metadata for access logs and later filters: `policy`, then `principal_type` and
    /// `roles` (allow) or `reason` (deny), then `principal`, `serial`, `cn` (when known); at
    /// most [`METADATA_ENTRIES`].
    pub fn metadata(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.rendering.metadata.iter().map(|(k, v)| (*k, &**v))
    }
}

/// The most entries [`Answer::metadata`] has.
pub const METADATA_ENTRIES: usize = 6;

impl Drop for Engine {
    /// Stops the background work without waiting for it: Envoy drops a filter configuration
    /// on its main thread.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertAuthority, CertSpec};

    /// An XFCC value as Envoy writes it with `cert: true`, and the certificate's DER.
    fn xfcc_and_der(cn: &str) -> (Vec<u8>, Vec<u8>) {
        let now = time::OffsetDateTime::now_utc();
        let ca = CertAuthority::new("ca", now, now + time::Duration::days(10)).expect("CA");
        let leaf = ca
            .issue(&CertSpec::client(cn, now, time::Duration::days(1)))
            .expect("leaf");
        let pem = percent_encoding::utf8_percent_encode(
            &leaf.cert_pem,
            percent_encoding::NON_ALPHANUMERIC,
        );
        (
            format!("Hash=00;Cert=\"{pem}\"").into_bytes(),
            leaf.cert_der,
        )
    }

    fn der(found: Result<Vec<u8>, Certificate>) -> Option<Vec<u8>> {
        found.ok()
    }

    fn problem(found: Result<Vec<u8>, Certificate>) -> Option<RequestProblem<'static>> {
        match found {
            Err(Certificate::Problem(problem)) => Some(problem),
            _ => None,
        }
    }

    #[test]
    fn the_certificate_is_read_from_the_one_xfcc_value_envoy_set() {
        let (alice_xfcc, alice) = xfcc_and_der("alice");
        let (mallory_xfcc, _) = xfcc_and_der("mallory");

        assert_eq!(der(xfcc_der(&[&alice_xfcc])), Some(alice));

        // No XFCC although the connection has a certificate, or two of them: malformed.
        assert_eq!(problem(xfcc_der(&[])), Some(RequestProblem::Missing(XFCC)));
        assert_eq!(
            problem(xfcc_der(&[&alice_xfcc, &mallory_xfcc])),
            Some(RequestProblem::Repeated(XFCC))
        );

        // A value without a decodable certificate goes to the checker, which reports it.
        let broken = b"Hash=00;Cert=\"%2D%2D%2D\"".to_vec();
        assert!(matches!(
            xfcc_der(&[&broken]),
            Err(Certificate::Forwarded(v)) if v == broken
        ));
    }
}
