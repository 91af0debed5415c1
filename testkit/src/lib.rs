//! Loopback process helpers shared by certgate's integration tests (`tests/it/harness.rs`) and
//! benchmarks (`cargo xtask bench`): free ports, child processes that are killed on drop (with
//! their logs kept for failure messages), readiness polling, plain HTTP probes, and the
//! external peers scripts/setup.sh installs (Envoy, moto). It does not depend on certgate, so
//! the tests link a single copy of certgate's types.

mod peers;
mod proc;

pub use peers::{AWS_ENV, Moto, envoy_binary, moto_binary};
pub use proc::Proc;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The repository root (testkit/ sits directly under it).
pub fn repo() -> PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A port that was free a moment ago and that nothing else in this process will be handed.
///
/// Ports come from below Linux's ephemeral range (32768–60999): the kernel gives those to the
/// outgoing connections of every process under test (curl, Envoy, moto, certgate's own
/// clients), so a port picked there by binding `:0` could be taken as a source port before the
/// process it was meant for binds it ("Address already in use" in CI). A counter keeps the
/// tests of this process apart; the start depends on the process id, so two test runs on one
/// machine start far apart.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let start = std::process::id().wrapping_mul(7_919) % COUNT;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) as u32;
        let port = (FIRST + (start + n) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}

/// One plain HTTP/1.1 GET on loopback (Envoy refuses HTTP/1.0): (status, body), or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Whether something accepts TCP connections on the loopback port.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Poll `ready` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
