//! `certgate serve`: wires the configuration, store, checker and listeners together, reloads
//! the configuration in the background, and drains in-flight checks on SIGTERM.

pub mod ext_authz;
pub mod forward_auth;
pub mod listener;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::sync::watch;

use std::net::IpAddr;

use crate::check::Checker;
use crate::config::StoreBackend;
use crate::config::{self, Config};
use crate::config::{ForwardedSource, Via};
use crate::metrics::Metrics;
use crate::store::{self, CachedStore, Purpose};

/// The gRPC service name Envoy health-checks.
pub const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// The first configured forwarded-certificate source for the way in `via` that `peer` is
/// trusted to set (`peer` `None`: the unix socket) and that the request carries, with the
/// header's value as `header` reads it. Sources of the other way in, and untrusted callers'
/// headers, are ignored.
pub fn forwarded_certificate<'s, T>(
    sources: &'s [ForwardedSource],
    via: Via,
    peer: Option<IpAddr>,
    header: impl Fn(&'s str) -> Option<T>,
) -> Option<(&'s ForwardedSource, T)> {
    sources
        .iter()
        .filter(|s| s.via == via && s.trusts(peer))
        .find_map(|s| header(&s.header).map(|v| (s, v)))
}

/// Open the store a configuration names, with the cache in front.
pub async fn open_store(config: &Config, metrics: &Metrics) -> anyhow::Result<CachedStore> {
    let store = store::open(&config.store.backend, Purpose::Serve)
        .await
        .with_context(|| {
            format!(
                "opening store ({})",
                describe_backend(&config.store.backend)
            )
        })?;
    Ok(CachedStore::new(store, config.store.cache, metrics.clone()))
}

/// One line naming the backend, for logs and errors.
pub fn describe_backend(backend: &StoreBackend) -> String {
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
    let metrics = Metrics::new();
    let store = open_store(&config, &metrics).await?;
    let listen = config.listen.clone();
    let reload_interval = config.reload_interval;
    let checker = Arc::new(Checker::new(config, store, metrics));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<AuthorizationServer<ext_authz::ExtAuthz>>()
        .await;
    let mut tasks = tokio::task::JoinSet::new();

    let limits = listen.limits;
    // ~20,000 idle connections used to exhaust the descriptors and, with them, every
    // listener: take what the hard limit allows, and give each listener its own share.
    let open_file_limit = listener::raise_fd_limit();
    tracing::info!(open_file_limit, "open-file limit");
    let caps = connection_caps(&listen, open_file_limit);
    if let Some(addr) = listen.grpc {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding gRPC listener {addr}"))?;
        tracing::info!(%addr, max_connections = caps.grpc, "ext_authz gRPC listening");
        let tcp = listener::Tcp {
            listener,
            keepalive: limits.tcp_keepalive,
        };
        let incoming = listener::spawn_accept(tcp, caps.grpc, "grpc");
        let router = grpc_router(&checker, health_service.clone(), &limits);
        let signal = wait_for(shutdown_rx.clone());
        tasks.spawn(async move {
            router
                .serve_with_incoming_shutdown(accepted(incoming), signal)
                .await
                .context("gRPC TCP server")
        });
    }
    if let Some(path) = &listen.grpc_unix {
        let listener = bind_unix(path)?;
        tracing::info!(path = %path.display(), max_connections = caps.grpc, "ext_authz gRPC listening on unix socket");
        let incoming = listener::spawn_accept(listener, caps.grpc, "grpc_unix");
        let router = grpc_router(&checker, health_service.clone(), &limits);
        let signal = wait_for(shutdown_rx.clone());
        tasks.spawn(async move {
            router
                .serve_with_incoming_shutdown(accepted(incoming), signal)
                .await
                .context("gRPC unix server")
        });
    }
    if let Some(addr) = listen.http {
        let app = forward_auth::router(checker.clone());
        let conns = bind_http(addr, "forward-auth", caps.http, &limits).await?;
        let shutdown = shutdown_rx.clone();
        tasks.spawn(async move {
            listener::serve_http(conns, app, limits, shutdown).await;
            Ok(())
        });
    }
    if let Some(addr) = listen.admin {
        let app = crate::admin::router(checker.clone());
        let conns = bind_http(addr, "admin", caps.admin, &limits).await?;
        let shutdown = shutdown_rx.clone();
        tasks.spawn(async move {
            listener::serve_http(conns, app, limits, shutdown).await;
            Ok(())
        });
    }
    crate::crl::refresh::spawn(checker.revocation().clone());
    tokio::spawn(reload_loop(
        checker.clone(),
        config_path.to_owned(),
        reload_interval,
    ));

    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down: draining in-flight checks"),
        Some(result) = tasks.join_next() => {
            // A listener stopped on its own: that is an error worth exiting on.
            result.context("server task panicked")??;
        }
    }
    health
        .set_not_serving::<AuthorizationServer<ext_authz::ExtAuthz>>()
        .await;
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

fn grpc_router(
    checker: &Arc<Checker>,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    limits: &config::ListenLimits,
) -> tonic::transport::server::Router {
    let authz = AuthorizationServer::new(ext_authz::ExtAuthz::new(checker.clone()))
        .max_decoding_message_size(limits.grpc_max_message_size);
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

fn connection_caps(listen: &config::Listen, open_file_limit: Option<u64>) -> Caps {
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

async fn bind_http(
    addr: std::net::SocketAddr,
    name: &'static str,
    cap: usize,
    limits: &config::ListenLimits,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<listener::Limited<tokio::net::TcpStream>>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {name} listener {addr}"))?;
    tracing::info!(%addr, max_connections = cap, "{name} listening");
    let tcp = listener::Tcp {
        listener,
        keepalive: limits.tcp_keepalive,
    };
    Ok(listener::spawn_accept(tcp, cap, name))
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

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
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

/// Poll the config and the files it names; put a valid new version in force, refuse (log,
/// count) an invalid one and keep the last good.
async fn reload_loop(checker: Arc<Checker>, path: PathBuf, interval: Duration) {
    let mut watched = checker.config().watched_files.clone();
    // `None`: not known (a file was unreadable when it was taken); the next readable
    // fingerprint is then compared as a change.
    let mut last = config::fingerprint(&watched).ok();
    let mut unreadable_logged = false;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (fp, files) = {
            let watched = watched.clone();
            match tokio::task::spawn_blocking(move || (config::fingerprint(&watched), watched))
                .await
            {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        let fp = match fp {
            Ok(fp) => {
                unreadable_logged = false;
                fp
            }
            Err(unreadable) => {
                // Unchanged as far as anyone knows: keep the configuration (and its caches).
                if !unreadable_logged {
                    tracing::warn!(error = %unreadable, "watched file unreadable; treated as unchanged until it can be read");
                    unreadable_logged = true;
                }
                continue;
            }
        };
        if last == Some(fp) {
            continue;
        }
        last = Some(fp);
        let loaded = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || Config::load(&path)).await
        };
        let metrics = checker.metrics();
        match loaded {
            Ok(Ok(new)) => {
                let old = checker.config();
                if new.listen != old.listen || new.store.backend != old.store.backend {
                    tracing::warn!(
                        "listen addresses or store backend changed: restart to apply them"
                    );
                }
                watched = new.watched_files.clone();
                last = config::fingerprint(&watched).ok();
                checker.replace_config(new);
                metrics.config_reloads.with_label_values(&["success"]).inc();
                metrics.config_last_reload_failed.set(0);
                tracing::info!(config = %path.display(), "configuration reloaded");
            }
            Ok(Err(err)) => {
                // Keep watching the files of the last good config plus the ones the bad
                // version names (an allowlist file that does not exist yet, say), so that
                // fixing either is noticed.
                watched = files;
                for file in err.watched_files.iter() {
                    if !watched.contains(file) {
                        watched.push(file.clone());
                    }
                }
                last = config::fingerprint(&watched).ok();
                metrics.config_reloads.with_label_values(&["failure"]).inc();
                metrics.config_last_reload_failed.set(1);
                tracing::error!(error = %err, "configuration reload refused; previous configuration stays in force");
            }
            Err(join_error) => {
                metrics.config_reloads.with_label_values(&["failure"]).inc();
                metrics.config_last_reload_failed.set(1);
                tracing::error!(error = %join_error, "configuration reload failed; previous configuration stays in force");
            }
        }
    }
}
