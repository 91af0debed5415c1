//! `certgate serve`: wires the configuration, store, checker and listeners together, reloads
//! the configuration in the background, and drains in-flight checks on SIGTERM.

pub mod ext_authz;
pub mod forward_auth;

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

    if let Some(addr) = listen.grpc {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding gRPC listener {addr}"))?;
        tracing::info!(%addr, "ext_authz gRPC listening");
        let router = grpc_router(&checker, health_service.clone());
        let signal = wait_for(shutdown_rx.clone());
        tasks.spawn(async move {
            router
                .serve_with_incoming_shutdown(
                    // Nagle + delayed ACKs would add ~40 ms to every answer; tonic only sets
                    // TCP_NODELAY on listeners it creates itself.
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    signal,
                )
                .await
                .context("gRPC TCP server")
        });
    }
    if let Some(path) = &listen.grpc_unix {
        let listener = bind_unix(path)?;
        tracing::info!(path = %path.display(), "ext_authz gRPC listening on unix socket");
        let router = grpc_router(&checker, health_service.clone());
        let signal = wait_for(shutdown_rx.clone());
        tasks.spawn(async move {
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    signal,
                )
                .await
                .context("gRPC unix server")
        });
    }
    if let Some(addr) = listen.http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding forward-auth listener {addr}"))?;
        tracing::info!(%addr, "HTTP forward-auth listening");
        // Nagle would delay every answer to the ingress, as on the gRPC listener.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = forward_auth::router(checker.clone())
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let signal = wait_for(shutdown_rx.clone());
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
                .context("forward-auth server")
        });
    }
    if let Some(addr) = listen.admin {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding admin listener {addr}"))?;
        tracing::info!(%addr, "admin listening");
        let app = crate::admin::router(checker.clone());
        let signal = wait_for(shutdown_rx.clone());
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
                .context("admin server")
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
) -> tonic::transport::server::Router {
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(AuthorizationServer::new(ext_authz::ExtAuthz::new(
            checker.clone(),
        )))
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
    let mut last = config::fingerprint(&watched);
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
        if fp == last {
            continue;
        }
        last = fp;
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
                last = config::fingerprint(&watched);
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
                last = config::fingerprint(&watched);
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
