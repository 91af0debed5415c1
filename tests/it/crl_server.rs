//! A CRL server on loopback for the CRL tests: raw HTTP/1.1, so every fault can be produced
//! (down, an error status, slow, truncated, a redirect) and its body swapped while it runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mode {
    /// 200 with the body (304 when If-None-Match matches).
    Serve,
    /// This status, no CRL.
    Status(u16),
    /// Wait this long, then serve.
    Slow(Duration),
    /// Promise the whole body in Content-Length, send half, close.
    Truncate,
    /// 302 Found to this URL.
    Redirect(String),
}

#[derive(Debug)]
struct Serving {
    mode: Mode,
    body: Vec<u8>,
    requests: usize,
    not_modified: usize,
}

/// A CRL server on a fixed loopback port that can be stopped and started again.
pub(super) struct CrlServer {
    port: u16,
    state: Arc<Mutex<Serving>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CrlServer {
    pub(super) fn new(body: Vec<u8>) -> CrlServer {
        let port = super::harness::free_port();
        let state = Arc::new(Mutex::new(Serving {
            mode: Mode::Serve,
            body,
            requests: 0,
            not_modified: 0,
        }));
        let mut server = CrlServer {
            port,
            state,
            stop: None,
            thread: None,
        };
        server.start();
        server
    }

    /// A server that is down: its port is chosen but nothing listens.
    pub(super) fn down(body: Vec<u8>) -> CrlServer {
        let mut server = CrlServer::new(body);
        server.stop();
        server
    }

    pub(super) fn start(&mut self) {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", self.port)).expect("bind CRL server");
        listener.set_nonblocking(true).expect("nonblocking");
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let state = self.state.clone();
        self.thread = Some(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    tokio::select! {
                        _ = &mut rx => return,
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                tokio::spawn(answer(stream, state.clone()));
                            }
                        }
                    }
                }
            });
        }));
        self.stop = Some(tx);
    }

    pub(super) fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    pub(super) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/root.crl", self.port)
    }

    pub(super) fn set(&self, mode: Mode, body: Option<Vec<u8>>) {
        let mut s = self.state.lock().expect("lock");
        s.mode = mode;
        if let Some(body) = body {
            s.body = body;
        }
    }

    pub(super) fn requests(&self) -> (usize, usize) {
        let s = self.state.lock().expect("lock");
        (s.requests, s.not_modified)
    }
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn etag(body: &[u8]) -> String {
    use sha2::Digest;
    format!("\"{}\"", hex::encode(&sha2::Sha256::digest(body)[..8]))
}

async fn answer(mut stream: tokio::net::TcpStream, state: Arc<Mutex<Serving>>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
    let if_none_match = text
        .lines()
        .find_map(|l| l.strip_prefix("if-none-match:"))
        .map(|v| v.trim().to_owned());
    let (mode, body) = {
        let mut s = state.lock().expect("lock");
        s.requests += 1;
        (s.mode.clone(), s.body.clone())
    };
    let tag = etag(&body);
    let head = |status: &str, len: usize| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/pkix-crl\r\nETag: {tag}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    };
    match mode {
        Mode::Status(code) => {
            let reply = format!(
                "HTTP/1.1 {code} Oops\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops"
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        }
        Mode::Redirect(to) => {
            let reply = format!(
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        }
        Mode::Truncate => {
            let _ = stream
                .write_all(head("200 OK", body.len()).as_bytes())
                .await;
            let _ = stream.write_all(&body[..body.len() / 2]).await;
        }
        Mode::Serve | Mode::Slow(_) => {
            if let Mode::Slow(d) = mode {
                tokio::time::sleep(d).await;
            }
            if if_none_match.as_deref() == Some(tag.to_ascii_lowercase().as_str()) {
                state.lock().expect("lock").not_modified += 1;
                let _ = stream
                    .write_all(head("304 Not Modified", 0).as_bytes())
                    .await;
            } else {
                let _ = stream
                    .write_all(head("200 OK", body.len()).as_bytes())
                    .await;
                let _ = stream.write_all(&body).await;
            }
        }
    }
    let _ = stream.shutdown().await;
}
