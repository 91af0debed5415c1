//! Test harness: certgate from the built binary, Envoy from the repository's template, an
//! in-process echo upstream, and curl. Ports, processes, readiness polling and the external
//! peers (Envoy, moto) come from the `testkit` crate, re-exported here so that tests import
//! everything from `super::harness`.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use testkit::{
    AWS_ENV, Moto, Proc, envoy_binary, free_port, http_get, port_open, repo, wait_until,
};

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
        let proc = Proc::spawn_ready(
            "certgate",
            Command::new(env!("CARGO_BIN_EXE_certgate"))
                .args(["serve", "--config"])
                .arg(config)
                .env("CERTGATE_LOG", "info")
                .envs(env.iter().copied()),
            Duration::from_secs(20),
            || matches!(http_get(admin_port, "/readyz"), Some((200, _))),
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

/// Envoy running `envoy/front-proxy.yaml` (or `envoy/module.yaml`).
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
    /// `Some(certgate.yaml)`: run `envoy/module.yaml`, certgate inside Envoy as the dynamic
    /// module with this configuration, instead of ext_authz to `certgate`.
    pub module_config: Option<&'a Path>,
}

/// Where the decision is made: a certgate server Envoy asks over ext_authz gRPC, or certgate
/// inside Envoy as its dynamic module. The end-to-end decision tests run in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ExtAuthz,
    Module,
}

/// `fn NAME(mode: Mode)` as two tests, `NAME::ext_authz` and `NAME::module`.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn ext_authz() {
                super::$name($crate::it::harness::Mode::ExtAuthz)
            }
            #[test]
            fn module() {
                super::$name($crate::it::harness::Mode::Module)
            }
        }
    )*};
}
pub(crate) use in_both_modes;

/// The directory holding libcertgate_envoy.so, built once per test run.
pub fn module_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let built = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "certgate-envoy"])
            .current_dir(repo())
            .status()
            .is_ok_and(|s| s.success());
        assert!(built, "cargo build -p certgate-envoy failed");
    });
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo().join("target"), PathBuf::from)
        .join("debug")
}

impl Envoy {
    pub fn start(o: &EnvoyOptions<'_>) -> Envoy {
        Self::start_with(o, &[])
    }

    /// Start with some template variables overridden (`INCLUDE_PEER_CERTIFICATE`,
    /// `FORWARD_CLIENT_CERT_DETAILS`, `NORMALIZE_PATH`, `ESCAPED_SLASHES_ACTION`,
    /// `ADMIN_ROUTE_CONTEXT`, `OTLP_PORT`, `TRACE_SAMPLING`; in module mode `MODULE_OPTIONS`).
    pub fn start_with(o: &EnvoyOptions<'_>, overrides: &[(&str, &str)]) -> Envoy {
        Self::start_edited(o, overrides, &|config| config)
    }

    /// [`Self::start_with`], then `edit` applied to the rendered configuration: for a test
    /// that needs what the shipped template does not leave open (another
    /// `forward_client_cert_details`, an access log).
    pub fn start_edited(
        o: &EnvoyOptions<'_>,
        overrides: &[(&str, &str)],
        edit: &dyn Fn(String) -> String,
    ) -> Envoy {
        let port = free_port();
        let admin = free_port();
        let address = match &o.certgate {
            CertgateAddress::Tcp(p) => {
                format!("socket_address: {{address: 127.0.0.1, port_value: {p}}}")
            }
            CertgateAddress::Unix(path) => format!("pipe: {{path: \"{}\"}}", path.display()),
        };
        let template = if o.module_config.is_some() {
            "envoy/module.yaml"
        } else {
            "envoy/front-proxy.yaml"
        };
        let template = std::fs::read_to_string(repo().join(template)).expect(template);
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
            ("ADMIN_ROUTE_CONTEXT", "{policy: admin}".to_owned()),
            ("OTLP_PORT", "4317".to_owned()),
            ("TRACE_SAMPLING", "0".to_owned()),
            (
                "CERTGATE_CONFIG",
                o.module_config
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("MODULE_OPTIONS", String::new()),
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
        let rendered = edit(rendered);
        let mut config = tempfile::Builder::new()
            .suffix(".yaml")
            .tempfile()
            .expect("tempfile");
        config
            .write_all(rendered.as_bytes())
            .expect("write envoy config");
        let mut command = Command::new(envoy_binary());
        if o.module_config.is_some() {
            command
                .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir())
                .env("CERTGATE_LOG", "info")
                .envs(AWS_ENV.iter().copied());
        }
        let proc = Proc::spawn_ready(
            "envoy",
            command.arg("-c").arg(config.path()).args([
                "--concurrency",
                "1",
                "--log-level",
                "warn",
                "--disable-hot-restart",
                // Access logs reach their files within 100 ms rather than Envoy's default
                // 10 s, so a test reading one waits for the request, not the timer.
                "--file-flush-interval-msec",
                "100",
            ]),
            Duration::from_secs(30),
            || matches!(http_get(admin, "/ready"), Some((200, _))) && port_open(port),
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
                        // A repeated header shows as its values joined, so a forged copy
                        // beside the real value cannot pass for it.
                        let mut headers = serde_json::Map::new();
                        for name in req.headers().keys() {
                            let values: Vec<_> = req
                                .headers()
                                .get_all(name)
                                .iter()
                                .map(|v| v.to_str().unwrap_or("<binary>"))
                                .collect();
                            headers.insert(name.as_str().to_owned(), values.join(", ").into());
                        }
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
