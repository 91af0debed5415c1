//! Resource limits against a real certgate process: a flood of idle connections on the
//! forward-auth listener leaves the admin and gRPC listeners working, idle connections are
//! closed, an oversized gRPC message is refused before it is decoded, and an unreadable
//! config file is not taken for a changed one.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

use super::dynamodb::metric;
use super::harness::{Certgate, Proc, free_port, http_get, wait_until};
use super::world::World;

/// Forward-auth on `http_port` (reading the X-Original-* pair) and `limits` under `listen:`.
fn configure(world: &World, http_port: u16, limits: &str) {
    let config = std::fs::read_to_string(&world.config).expect("read");
    let config = config.replacen(
        "listen:\n",
        &format!("listen:\n  http: \"127.0.0.1:{http_port}\"\n{limits}"),
        1,
    );
    let config = format!("{config}forward_auth: {{request_headers: original}}\n");
    super::world::write_file(&world.config, config);
}

/// certgate under `ulimit -n {nofile}` (soft and hard), ready.
fn start_with_fd_limit(world: &World, nofile: u32) -> Certgate {
    let mut proc = Proc::spawn(
        "certgate",
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {nofile} && exec \"$0\" serve --config \"$1\""
            ))
            .arg(env!("CARGO_BIN_EXE_certgate"))
            .arg(&world.config)
            .env("CERTGATE_LOG", "info"),
    );
    let ready = wait_until(Duration::from_secs(20), || {
        !proc.is_running() || matches!(http_get(world.admin_port, "/readyz"), Some((200, _)))
    });
    assert!(
        ready && proc.is_running(),
        "certgate did not become ready\n{}",
        proc.logs()
    );
    let pid = proc.pid().expect("running");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(&nofile.to_string())),
        "the fd limit did not apply:\n{limits}"
    );
    Certgate {
        proc,
        admin_port: world.admin_port,
    }
}

fn check_request(certificate: String) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                certificate,
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The gRPC status code of one check (0: answered), or None when nothing answers in time.
fn grpc_check(port: u16, certificate: String) -> Option<tonic::Code> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        super::world::run_async(async move {
            let attempt = async {
                let endpoint =
                    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                        .ok()?
                        .connect_timeout(Duration::from_secs(5));
                let channel = endpoint.connect().await.ok()?;
                let mut client = AuthorizationClient::new(channel);
                Some(match client.check(check_request(certificate)).await {
                    Ok(_) => tonic::Code::Ok,
                    Err(status) => status.code(),
                })
            };
            let _ = tx.send(
                tokio::time::timeout(Duration::from_secs(10), attempt)
                    .await
                    .ok()
                    .flatten(),
            );
        });
    });
    rx.recv_timeout(Duration::from_secs(30)).ok().flatten()
}

/// Whether certgate has closed `stream` (EOF or reset); false while it is still open.
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(5)));
    let mut buf = [0u8; 512];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn an_idle_connection_flood_on_forward_auth_leaves_admin_and_grpc_working() {
    let world = World::new();
    let http_port = free_port();
    configure(
        &world,
        http_port,
        "  limits:\n    http_max_connections: 50\n    grpc_max_connections: 50\n    \
         admin_max_connections: 16\n    header_read_timeout: 2s\n",
    );
    let mut certgate = start_with_fd_limit(&world, 256);

    // More idle connections than the cap, and more than the process has descriptors: half
    // send nothing, half the start of a request head and then nothing.
    let mut flood: Vec<TcpStream> = (0..300)
        .filter_map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", http_port)).ok()?;
            if i % 2 == 1 {
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n");
            }
            Some(s)
        })
        .collect();
    assert!(flood.len() > 50, "only {} connections opened", flood.len());
    // Let certgate accept what it will.
    std::thread::sleep(Duration::from_millis(500));

    for path in ["/healthz", "/readyz"] {
        let answered = http_get(world.admin_port, path);
        assert!(
            matches!(answered, Some((200, _))),
            "admin {path} during the flood: {answered:?}\n{}",
            certgate.proc.logs()
        );
    }
    let code = grpc_check(world.grpc_port, String::new());
    assert_eq!(
        code,
        Some(tonic::Code::Ok),
        "a gRPC check during the flood\n{}",
        certgate.proc.logs()
    );

    // certgate closes every idle connection after the header-read timeout, a batch at a time
    // as permits free up for the ones still in the accept queue.
    let all_closed = wait_until(Duration::from_secs(90), || {
        flood.retain_mut(|s| !closed_by_peer(s));
        flood.is_empty()
    });
    assert!(
        all_closed,
        "{} idle connections still open after the header-read timeout\n{}",
        flood.len(),
        certgate.proc.logs()
    );

    // …and forward-auth answers again (a bare GET names no original request: a 400).
    let answered = http_get(http_port, "/");
    assert!(
        matches!(&answered, Some((400, body)) if body.contains("malformed_request")),
        "forward-auth after the flood: {answered:?}\n{}",
        certgate.proc.logs()
    );
    assert!(certgate.proc.is_running());
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn an_oversized_grpc_check_is_refused_before_it_is_decoded() {
    let world = World::new();
    let certgate = Certgate::start(&world.config, world.admin_port);
    let pid = certgate.proc.pid().expect("running");
    // Warm up: the first check allocates the caches and buffers every later one reuses.
    assert_eq!(
        grpc_check(world.grpc_port, String::new()),
        Some(tonic::Code::Ok)
    );
    let before = vm_rss_kib(pid);
    // 3 MB: under tonic's default of 4 MiB, far over what a CheckRequest needs.
    for _ in 0..10 {
        let code = grpc_check(world.grpc_port, "A".repeat(3_000_000));
        assert!(
            matches!(
                code,
                Some(tonic::Code::OutOfRange | tonic::Code::ResourceExhausted)
            ),
            "a 3 MB CheckRequest was answered with {code:?}, not refused"
        );
    }
    let grown_mib = vm_rss_kib(pid).saturating_sub(before) / 1024;
    assert!(
        grown_mib < 48,
        "RSS grew {grown_mib} MiB over 10 refused 3 MB messages"
    );
    // A normal check still gets its answer.
    assert_eq!(
        grpc_check(world.grpc_port, String::new()),
        Some(tonic::Code::Ok)
    );
}

#[test]
fn an_unreadable_config_file_is_not_a_change() {
    let world = World::new();
    let certgate = Certgate::start(&world.config, world.admin_port);
    // Reading the config path fails (a symlink to a directory in its place, as EMFILE or
    // EACCES would) for several reload intervals (200 ms), then the same file is back. Each
    // swap is one rename, so the path is never missing (a missing file reads as empty,
    // which is a change).
    let aside = world.path("certgate.yaml.aside");
    std::fs::copy(&world.config, &aside).expect("copy config aside");
    let dir = world.path("a-directory");
    std::fs::create_dir(&dir).expect("directory");
    let link = world.path("certgate.yaml.link");
    std::os::unix::fs::symlink(&dir, &link).expect("symlink");
    std::fs::rename(&link, &world.config).expect("unreadable config in place");
    let noticed = wait_until(Duration::from_secs(10), || {
        certgate.proc.logs().contains("cannot read")
    });
    assert!(
        noticed,
        "the unreadable file is logged\n{}",
        certgate.proc.logs()
    );
    std::fs::rename(&aside, &world.config).expect("config back");
    // Absence of a reload cannot be polled for: give it several reload intervals.
    std::thread::sleep(Duration::from_millis(1500));

    let metrics = certgate.metrics();
    let reloads = |outcome: &str| {
        metric(
            &metrics,
            &format!("certgate_config_reloads_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(
        (reloads("failure"), reloads("success")),
        (0.0, 0.0),
        "an unreadable, then unchanged, config was reloaded\n{metrics}"
    );
    let logs = certgate.proc.logs();
    assert!(
        logs.contains("cannot read") && logs.contains("certgate.yaml"),
        "the unreadable file is logged\n{logs}"
    );
}
