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

use std::borrow::Cow;
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

/// What the proxy knows about one request, borrowed from its buffers while it is decided on
/// the caller's thread; copied only when the decision must wait for the store.
#[derive(Debug, Default)]
pub struct Request<'a> {
    /// Policy the route names, if any (the default policy otherwise).
    pub policy: Option<Cow<'a, str>>,
    /// `:method`.
    pub method: Cow<'a, str>,
    /// `:path`, as the proxy normalised it.
    pub path: Cow<'a, str>,
    /// `:authority`: `policy_routes` match on it when the route names no policy.
    pub host: Cow<'a, str>,
    /// `x-request-id`, echoed in a deny body.
    pub request_id: Cow<'a, str>,
}

impl Request<'_> {
    fn into_owned(self) -> Request<'static> {
        Request {
            policy: self.policy.map(|p| Cow::Owned(p.into_owned())),
            method: Cow::Owned(self.method.into_owned()),
            path: Cow::Owned(self.path.into_owned()),
            host: Cow::Owned(self.host.into_owned()),
            request_id: Cow::Owned(self.request_id.into_owned()),
        }
    }

    /// What the checker reads of the request, with the certificate as far as it is known.
    fn input<'r>(
        &'r self,
        forwarded: Option<&'r [u8]>,
        malformed: Option<RequestProblem<'static>>,
    ) -> CheckInput<'r> {
        CheckInput {
            certificate: forwarded,
            encoding: CertEncoding::Xfcc,
            policy: self.policy.as_deref(),
            host: Some(&*self.host).filter(|h| !h.is_empty()),
            method: &self.method,
            path: &self.path,
            malformed,
        }
    }
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
    pub fn decide(&self, request: Request<'_>, peer: Peer<'_>, deadline: Duration) -> Decision {
        let generation = self.checker.generation();
        let now = crate::clock::unix_now();
        let mut presented = Presented::from(certificate(&self.checker, &generation, &peer, now));
        // No future, timer or runtime for a decision the caches can make.
        if presented.forwarded.is_none() {
            let input = request.input(None, presented.malformed);
            let request_id = request_id(Some(&request.request_id));
            let meta = RequestMeta {
                host: &request.host,
                ..RequestMeta::module(&request_id)
            };
            let known = presented.known.take();
            match self
                .checker
                .check_now(&generation, input, known, &meta, now)
            {
                Ok(outcome) => {
                    return Decision::Ready(Answer::new(outcome, &request_id, &self.renderings));
                }
                Err(known) => presented.known = known,
            }
        }
        self.decide_later(request.into_owned(), generation, presented, now, deadline)
    }

    /// [`Self::decide`] when the store must be asked: a future, polled once here (it may
    /// still find everything it needs) and otherwise finished on the engine's runtime.
    fn decide_later(
        &self,
        request: Request<'static>,
        generation: Arc<Generation>,
        presented: Presented,
        now: i64,
        deadline: Duration,
    ) -> Decision {
        let Some(runtime) = self.runtime.as_ref() else {
            unreachable!("the runtime lives until the engine is dropped")
        };
        let _entered = runtime.enter();
        let checker = self.checker.clone();
        let renderings = self.renderings.clone();
        let mut decision: PendingFuture = Box::pin(async move {
            let input = request.input(presented.forwarded.as_deref(), presented.malformed);
            let request_id = request_id(Some(&request.request_id));
            let meta = RequestMeta {
                host: &request.host,
                ..RequestMeta::module(&request_id)
            };
            let check = async {
                match presented.known {
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

/// [`Certificate`] as the checker takes it.
struct Presented {
    /// An XFCC value for the checker to parse and report.
    forwarded: Option<Vec<u8>>,
    malformed: Option<RequestProblem<'static>>,
    known: Option<(CachedIdentity, bool)>,
}

impl From<Certificate> for Presented {
    fn from(certificate: Certificate) -> Presented {
        let (forwarded, malformed, known) = match certificate {
            Certificate::None => (None, None, None),
            Certificate::Known(known) => (None, None, Some(known)),
            Certificate::Forwarded(xfcc) => (Some(xfcc), None, None),
            Certificate::Problem(problem) => (None, Some(problem), None),
        };
        Presented {
            forwarded,
            malformed,
            known,
        }
    }
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
