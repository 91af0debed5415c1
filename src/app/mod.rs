//! `certgate serve`: wires the configuration, store, checker and listeners together, reloads
//! the configuration in the background, and drains in-flight checks on SIGTERM.

pub mod huge_pages;
pub(crate) mod reload;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::check::Checker;
use crate::config::{Config, Listen, ListenLimits, StoreBackend};
use crate::metrics::Metrics;
use crate::server::listener::{self, Acceptor, PeerAddr};
use crate::server::{ext_authz, forward_auth, health};
use crate::store::{self, CachedStore, Purpose};

/// Open the store a configuration names, with the cache in front.
pub async fn open_store(config: &Config, metrics: &Metrics) -> anyhow::Result<CachedStore> {
    let store = open_backend(config).await?;
    let backend = match config.store.backend {
        StoreBackend::Embedded { .. } => "embedded",
        StoreBackend::DynamoDb(_) => "dynamodb",
    };
    Ok(CachedStore::new(store, config.store.cache, metrics.clone()).labelled(metrics, backend))
}

/// Open the backend a configuration names, without the cache.
async fn open_backend(config: &Config) -> anyhow::Result<Arc<dyn store::Admin>> {
    store::open(&config.store.backend, Purpose::Serve)
        .await
        .with_context(|| {
            format!(
                "opening store ({})",
                describe_backend(&config.store.backend)
            )
        })
}

/// One line naming the backend, for logs and errors.
pub(crate) fn describe_backend(backend: &StoreBackend) -> String {
    match backend {
        StoreBackend::Embedded { path } => format!("embedded {}", path.display()),
        StoreBackend::DynamoDb(d) => format!(
            "dynamodb tables {} and {}{}",
            d.principals_table,
            d.certificates_table,
            d.endpoint_url
                .as_deref()
                .map(|u| format!(" at {u}"))
                .unwrap_or_default()
        ),
    }
}

/// Run the server until SIGTERM or SIGINT, then drain and return.
pub async fn serve(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    if let Some(why) = config.listen.nothing_to_serve() {
        anyhow::bail!("{}: {why}", config_path.display());
    }
    let metrics = Metrics::new();
    let backend = open_backend(&config).await?;
    let store = CachedStore::new(backend.clone(), config.store.cache, metrics.clone());
    let listen = config.listen.clone();
    let reload_interval = config.reload_interval;
    let inventory = config.inventory.clone();
    let admin_api = config.admin_api.clone();
    let mut checker = Checker::new(config, store, metrics.clone());
    if let Some(queue) =
        crate::inventory::spawn_writer(backend.clone(), &inventory, metrics.inventory.clone())
    {
        checker.record_inventory_into(queue);
    }
    let checker = Arc::new(checker);
    crate::inventory::tiers::spawn(backend.clone(), checker.clone(), &inventory);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let health_service = health::server(shutdown_rx.clone(), checker.clone());

    let limits = listen.limits;
    // ~20,000 idle connections used to exhaust the descriptors and, with them, every
    // listener: take what the hard limit allows, and give each listener its own share.
    let open_file_limit = listener::raise_fd_limit();
    tracing::info!(open_file_limit, "open-file limit");
    let caps = connection_caps(&listen, open_file_limit);
    let grpc = || {
        let router = grpc_router(&checker, health_service.clone(), &limits);
        Service::Grpc(Box::new(router))
    };
    let mut listeners = Listeners {
        tasks: JoinSet::new(),
        limits,
        shutdown: shutdown_rx,
    };
    if let Some(addr) = listen.grpc {
        let tcp = bind_tcp(addr, "ext_authz gRPC", caps.grpc, &limits).await?;
        listeners.spawn(tcp, "grpc", caps.grpc, grpc());
    }
    if let Some(path) = &listen.grpc_unix {
        let unix = bind_unix(path)?;
        tracing::info!(path = %path.display(), max_connections = caps.grpc, "ext_authz gRPC listening on unix socket");
        listeners.spawn(unix, "grpc_unix", caps.grpc, grpc());
    }
    if let Some(addr) = listen.http {
        let tcp = bind_tcp(addr, "forward-auth", caps.http, &limits).await?;
        let app = forward_auth::router(checker.clone());
        listeners.spawn(tcp, "forward-auth", caps.http, Service::Http(app));
    }
    if let Some(addr) = listen.admin {
        let tcp = bind_tcp(addr, "admin", caps.admin, &limits).await?;
        let app = crate::admin::router(checker.clone());
        listeners.spawn(tcp, "admin", caps.admin, Service::Http(app));
    }
    if let (Some(addr), Some(settings)) = (listen.admin_api, &admin_api) {
        let router = crate::admin_api::router(checker.clone(), backend, settings, &limits)?;
        let tcp = bind_tcp(addr, "admin API", caps.admin, &limits).await?;
        listeners.spawn(
            tcp,
            "admin_api",
            caps.admin,
            Service::Grpc(Box::new(router)),
        );
    }
    crate::crl::refresh::spawn(checker.revocation().clone());
    tokio::spawn(reload::reload_loop(
        checker.clone(),
        config_path.to_owned(),
        reload_interval,
    ));

    let mut tasks = listeners.tasks;
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down: draining in-flight checks"),
        Some(result) = tasks.join_next() => {
            // A listener stopped on its own: that is an error worth exiting on.
            result.context("server task panicked")??;
        }
    }
    // Health turns NOT_SERVING and the listeners drain on the same signal.
    let _ = shutdown_tx.send(true);
    while let Some(result) = tasks.join_next().await {
        result.context("server task panicked")??;
    }
    if let Some(path) = &listen.grpc_unix {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("stopped");
    Ok(())
}

/// What answers on a listener.
enum Service {
    Grpc(Box<tonic::transport::server::Router>),
    Http(axum::Router),
}

/// The running listeners and what they share.
struct Listeners {
    tasks: JoinSet<anyhow::Result<()>>,
    limits: ListenLimits,
    shutdown: watch::Receiver<bool>,
}

impl Listeners {
    /// Accept on `acceptor`, at most `cap` connections at once, and serve `service` on them
    /// until shutdown.
    fn spawn<A>(&mut self, acceptor: A, name: &'static str, cap: usize, service: Service)
    where
        A: Acceptor,
        A::Io: tonic::transport::server::Connected
            + AsyncRead
            + AsyncWrite
            + PeerAddr
            + Unpin
            + Send
            + 'static,
    {
        let incoming = listener::spawn_accept(acceptor, cap, name);
        let limits = self.limits;
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            match service {
                Service::Grpc(router) => router
                    .serve_with_incoming_shutdown(accepted(incoming), listener::wait_for(shutdown))
                    .await
                    .with_context(|| format!("{name} server")),
                Service::Http(router) => {
                    listener::serve_http(incoming, router, limits, shutdown).await;
                    Ok(())
                }
            }
        });
    }
}

fn grpc_router(
    checker: &Arc<Checker>,
    health: tonic_health::pb::health_server::HealthServer<health::Health>,
    limits: &ListenLimits,
) -> tonic::transport::server::Router {
    let authz = crate::server::authz_service::AuthorizationService::new(
        ext_authz::ExtAuthz::new(checker.clone()),
        limits.grpc_max_message_size,
    );
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.grpc_max_concurrent_streams)
        .timeout(limits.request_timeout)
        // Envoy keeps its ext_authz connections open for long; pings find the dead ones.
        .http2_keepalive_interval(Some(limits.tcp_keepalive))
        .http2_keepalive_timeout(Some(GRPC_PING_TIMEOUT))
        .add_service(health.max_decoding_message_size(limits.grpc_max_message_size))
        .add_service(authz)
}

/// How long an HTTP/2 keepalive ping may go unanswered before the connection is closed.
const GRPC_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Connection caps per listener, lowered to fit the open-file limit when they would not.
#[derive(Debug, Clone, Copy)]
struct Caps {
    grpc: usize,
    http: usize,
    admin: usize,
}

fn connection_caps(listen: &Listen, open_file_limit: Option<u64>) -> Caps {
    let l = &listen.limits;
    let on = |present: bool, cap: usize| if present { cap } else { 0 };
    // Only listeners that exist take descriptors; the unix socket has a cap of its own.
    let mut caps = [
        on(listen.grpc.is_some(), l.grpc_max_connections),
        on(listen.grpc_unix.is_some(), l.grpc_max_connections),
        on(listen.http.is_some(), l.http_max_connections),
        on(listen.admin.is_some(), l.admin_max_connections),
    ];
    let lowered = open_file_limit.is_some_and(|nofile| listener::fit_caps(&mut caps, nofile));
    let fitted = Caps {
        grpc: caps[0].max(caps[1]),
        http: caps[2],
        admin: caps[3],
    };
    if lowered {
        tracing::warn!(
            open_file_limit,
            reserved = listener::RESERVED_FDS,
            grpc = fitted.grpc,
            http = fitted.http,
            admin = fitted.admin,
            "listen.limits connection caps lowered to fit the open-file limit"
        );
    }
    fitted
}

/// The connections `incoming` yields, as tonic's incoming stream.
fn accepted<T>(
    incoming: tokio::sync::mpsc::Receiver<T>,
) -> impl tokio_stream::Stream<Item = Result<T, std::io::Error>> {
    use tokio_stream::StreamExt as _;
    tokio_stream::wrappers::ReceiverStream::new(incoming).map(Ok)
}

async fn bind_tcp(
    addr: std::net::SocketAddr,
    name: &'static str,
    cap: usize,
    limits: &ListenLimits,
) -> anyhow::Result<listener::Tcp> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {name} listener {addr}"))?;
    tracing::info!(%addr, max_connections = cap, "{name} listening");
    Ok(listener::Tcp {
        listener,
        keepalive: limits.tcp_keepalive,
    })
}

fn bind_unix(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    // A socket left by a previous run would make bind fail; only remove sockets, never files.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
    }
    tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding unix socket {}", path.display()))
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
