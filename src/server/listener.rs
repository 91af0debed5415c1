//! Accepting connections within `listen.limits`: each listener holds at most its cap of open
//! connections, accept errors (EMFILE above all) pause the accept loop instead of spinning,
//! and HTTP/1 connections get a header-read and a request timeout.
//! It never looks at what a request says; the routers behind it do.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::config::ListenLimits;

/// Descriptors kept out of the listeners' caps for everything else the process opens: stdio,
/// the runtime's epoll and wake-up descriptors, the listeners themselves, the SQLite file and
/// its -wal/-shm, DynamoDB and CRL connection pools, config and CRL files being read.
pub(crate) const RESERVED_FDS: u64 = 128;

/// How long the accept loop rests after an error such as EMFILE: long enough not to burn a
/// core retrying, short enough that a freed descriptor is used promptly.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// At most one warning per listener and kind in this period, so a flood does not also flood
/// the logs.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force, or
/// `None` when it cannot be read.
pub(crate) fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// Lower the largest `caps` until they fit in `nofile - RESERVED_FDS` together ("water
/// filling": small caps such as the admin listener's are kept, large ones share the rest).
/// A cap of 0 (no such listener) stays 0. Returns whether anything was lowered.
pub(crate) fn fit_caps(caps: &mut [usize], nofile: u64) -> bool {
    let budget = usize::try_from(nofile.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    let total = |level: usize, caps: &[usize]| -> usize {
        caps.iter()
            .map(|&c| c.min(level))
            .fold(0, usize::saturating_add)
    };
    if total(usize::MAX, caps) <= budget {
        return false;
    }
    // The highest level at which the caps fit; every listener keeps at least one connection.
    let (mut low, mut high) = (1, caps.iter().copied().max().unwrap_or(1));
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if total(mid, caps) <= budget {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    for cap in caps.iter_mut().filter(|c| **c > 0) {
        *cap = (*cap).min(low);
    }
    true
}

/// A connection holding one of its listener's permits until it is dropped.
pub(crate) struct Limited<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    /// Reported as not vectored, though the socket is: h2 then copies a DATA payload of up
    /// to 1 KiB into its write buffer and goes on buffering, where with vectored writes it
    /// stops at 256 B to hand the payload to `writev` as a slice of its own and writes it
    /// before it takes the next frame. A certgate allow (~600 B with identity headers) would
    /// cost one `writev` per answer; buffered, the answers ready on a connection go out in
    /// one write (1.75 → under 1 write per check at 4 × 16 streams). hyper's HTTP/1 likewise
    /// copies small bodies next to their headers.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Limited<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// A listening socket the accept loop takes connections from.
pub(crate) trait Acceptor: Send + Sync + 'static {
    /// One accepted connection.
    type Io: Send + 'static;
    /// The next connection, set up for serving.
    fn accept(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

/// A TCP listener whose connections get TCP_NODELAY and keepalive.
pub struct Tcp {
    pub(crate) listener: TcpListener,
    /// Idle time before keepalive probes.
    pub(crate) keepalive: Duration,
}

impl Acceptor for Tcp {
    type Io = TcpStream;

    async fn accept(&self) -> io::Result<TcpStream> {
        let (stream, _) = self.listener.accept().await?;
        // Nagle + delayed ACKs would add ~40 ms to every answer.
        let _ = stream.set_nodelay(true);
        // A peer that vanished without a FIN (a node gone, a NAT entry dropped) would
        // otherwise hold its connection, and a permit, forever.
        let keepalive = socket2::TcpKeepalive::new().with_time(self.keepalive);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Ok(stream)
    }
}

impl Acceptor for UnixListener {
    type Io = UnixStream;

    async fn accept(&self) -> io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// The remote address of a connection, which forward-auth judges trusted proxies by.
pub(crate) trait PeerAddr {
    /// `None` when there is none (a unix socket) or it cannot be read.
    fn peer(&self) -> Option<SocketAddr>;
}

impl PeerAddr for TcpStream {
    fn peer(&self) -> Option<SocketAddr> {
        self.peer_addr().ok()
    }
}

impl PeerAddr for UnixStream {
    fn peer(&self) -> Option<SocketAddr> {
        None
    }
}

/// Accept from `listener` while fewer than `cap` of its connections are open, and hand each
/// to the returned channel. At the cap, new connections wait in the kernel's accept queue,
/// where they cost the process no descriptor. The loop ends when the receiver is dropped.
pub(crate) fn spawn_accept<A: Acceptor>(
    listener: A,
    cap: usize,
    name: &'static str,
) -> mpsc::Receiver<Limited<A::Io>> {
    let (tx, rx) = mpsc::channel(1);
    let permits = Arc::new(Semaphore::new(cap));
    tokio::spawn(async move {
        let mut at_cap = Throttle::default();
        let mut failing = Throttle::default();
        loop {
            let permit = match permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    if at_cap.ready() {
                        tracing::warn!(
                            listener = name,
                            max_connections = cap,
                            "connection cap reached; new connections wait"
                        );
                    }
                    tokio::select! {
                        permit = permits.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => return,
                        },
                        _ = tx.closed() => return,
                    }
                }
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            match accepted {
                Ok(io) => {
                    let conn = Limited {
                        io,
                        _permit: permit,
                    };
                    if tx.send(conn).await.is_err() {
                        return;
                    }
                }
                // The peer gave up before we accepted: nothing wrong on our side.
                Err(e) if is_peer_error(&e) => {}
                Err(e) => {
                    if failing.ready() {
                        tracing::warn!(listener = name, error = %e, "accept failed; pausing accepts");
                    }
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            }
        }
    });
    rx
}

fn is_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Lets an event through at most once per [`WARN_EVERY`].
#[derive(Default)]
struct Throttle(Option<Instant>);

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        let ready = self
            .0
            .is_none_or(|last| now.duration_since(last) >= WARN_EVERY);
        if ready {
            self.0 = Some(now);
        }
        ready
    }
}

/// Serve `router` over HTTP/1.1 on the connections `conns` yields, with the header-read and
/// request timeouts of `limits`, until `shutdown`; then let open connections finish.
pub(crate) async fn serve_http<T>(
    mut conns: mpsc::Receiver<Limited<T>>,
    router: axum::Router,
    limits: ListenLimits,
    shutdown: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + PeerAddr + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Also closes a keep-alive connection idle for this long between requests.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut open = tokio::task::JoinSet::new();
    let mut stop = std::pin::pin!(wait_for(shutdown.clone()));
    loop {
        tokio::select! {
            conn = conns.recv() => match conn {
                Some(conn) => {
                    open.spawn(serve_connection(
                        builder.clone(),
                        conn,
                        router.clone(),
                        limits.request_timeout,
                        shutdown.clone(),
                    ));
                }
                None => break,
            },
            () = &mut stop => break,
            Some(_) = open.join_next(), if !open.is_empty() => {}
        }
    }
    // Dropping the receiver ends the accept loop.
    drop(conns);
    while open.join_next().await.is_some() {}
}

/// Serve one connection; on shutdown, finish the request in flight and close.
async fn serve_connection<T>(
    builder: hyper::server::conn::http1::Builder,
    conn: Limited<T>,
    router: axum::Router,
    request_timeout: Duration,
    shutdown: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + PeerAddr + Unpin + Send + 'static,
{
    let peer = conn.io.peer();
    let service = hyper::service::service_fn(move |mut request| {
        // What `into_make_service_with_connect_info` did: handlers read the peer address.
        if let Some(peer) = peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let mut router = router.clone();
        async move {
            let call = tower_service::Service::call(&mut router, request);
            match tokio::time::timeout(request_timeout, call).await {
                Ok(answer) => answer,
                Err(_) => Ok::<_, Infallible>(timed_out()),
            }
        }
    });
    let conn = builder.serve_connection(TokioIo::new(conn), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        () = wait_for(shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Resolves once `shutdown` says stop.
pub(crate) async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn timed_out() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "no answer within listen.limits.request_timeout\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_that_fit_are_kept() {
        let mut caps = [4096, 4096, 64];
        assert!(!fit_caps(&mut caps, 1 << 20));
        assert_eq!(caps, [4096, 4096, 64]);
    }

    #[test]
    fn large_caps_share_what_is_left_and_small_ones_stay() {
        // 1024 descriptors: 896 for listeners; admin keeps its 64, the others share 832.
        let mut caps = [4096, 4096, 64];
        assert!(fit_caps(&mut caps, 1024));
        assert_eq!(caps, [416, 416, 64]);
        assert!(caps.iter().sum::<usize>() as u64 <= 1024 - RESERVED_FDS);
    }

    #[test]
    fn every_listener_keeps_at_least_one_connection() {
        let mut caps = [10, 0, 10, 10];
        assert!(fit_caps(&mut caps, 64));
        assert_eq!(caps, [1, 0, 1, 1]);
    }
}
