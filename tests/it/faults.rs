//! Faults while serving: certgate killed with SIGKILL under load through Envoy and restarted
//! (nothing allowed without a decision; recovery time measured), a CRL server that dribbles
//! its answer byte by byte (the fetch deadline fires, the CRL in force stays, with none yet
//! checks are denied 503), and a full disk under the embedded store and under the CRL cache
//! (a clear error, nothing corrupted, the old data still served). SIGTERM draining in-flight
//! checks: `drain`. Clock jumps: the decision at validity boundaries ± skew, `src/check/
//! tests_clock.rs` (the clock is a parameter).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certgate::pki::{CertAuthority, CrlSpec};

use super::crl_server::{CrlServer, Mode as CrlMode};
use super::envoy::Stack;
use super::harness::{Certgate, Mode, free_port, http_get, wait_until};
use super::world::{World, grpc_decision, now, write_file};

// ---------------------------------------------------------------------------------------
// SIGKILL under load

/// A response through Envoy: when it was sent and received, its status and body.
struct Seen {
    sent: Instant,
    received: Instant,
    status: u16,
    body: String,
}

#[test]
fn sigkill_under_load_fails_closed_and_recovers_after_restart() {
    let mut stack = Stack::start_mode_with(Mode::ExtAuthz, World::new(), |_| {});
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
            let (port, ca) = (stack.envoy.port, stack.world.ca_pem.clone());
            let (cert, key) = (stack.worker.cert.clone(), stack.worker.key.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let reply = super::harness::Curl {
                        port,
                        ca: &ca,
                        client: Some((&cert, &key)),
                        method: "GET",
                        path: "/api/jobs",
                        headers: vec![],
                    }
                    .send();
                    seen.lock().unwrap().push(Seen {
                        sent,
                        received: Instant::now(),
                        status: reply.status,
                        body: reply.body,
                    });
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let certgate = stack.certgate.take().expect("certgate");
    let pid = certgate.proc.pid().expect("running").to_string();
    let killed_at = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .is_ok_and(|s| s.success())
    );
    drop(certgate);
    std::thread::sleep(Duration::from_secs(2));
    let restarted_at = Instant::now();
    let config = stack.world.config.clone();
    stack.certgate = Some(Certgate::start(&config, stack.world.admin_port));
    let ready_at = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().expect("sender");
    }
    let seen = seen.lock().unwrap();
    let before = seen.iter().filter(|s| s.received < killed_at).count();
    assert!(before > 0, "no request answered before the kill");
    // Sent after the kill and answered before the restart began: certgate was down the whole
    // time, so Envoy must have answered 503 itself (failure_mode_allow: false).
    let down: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.sent > killed_at && s.received < restarted_at)
        .collect();
    assert!(!down.is_empty(), "no request while certgate was down");
    for s in &down {
        assert_eq!(
            (s.status, s.body.contains("\"error\"")),
            (503, false),
            "while certgate was down: {} {}",
            s.status,
            s.body
        );
    }
    // Nothing else than an allow or Envoy's 503: no reset reaches the client, no other status.
    let odd: Vec<(u16, &str)> = seen
        .iter()
        .filter(|s| s.status != 200 && s.status != 503)
        .map(|s| (s.status, s.body.as_str()))
        .collect();
    assert!(odd.is_empty(), "answers other than 200/503: {odd:?}");
    let first_allow = seen
        .iter()
        .filter(|s| s.sent > restarted_at && s.status == 200)
        .map(|s| s.received)
        .min()
        .expect("allowed again after the restart");
    let recovery = first_allow.duration_since(restarted_at);
    let after_ready = first_allow.saturating_duration_since(ready_at);
    eprintln!(
        "SIGKILL: {} answers while down (all 503 from Envoy); restart to ready {:?}, restart \
         to first allow {recovery:?} ({after_ready:?} after ready)",
        down.len(),
        ready_at - restarted_at
    );
    assert!(
        after_ready < Duration::from_secs(2),
        "Envoy took {after_ready:?} after certgate was ready to allow again"
    );
}

// ---------------------------------------------------------------------------------------
// A CRL server dribbling bytes

/// A CRL server: the first `good` requests get `crl` at once; every later one gets the
/// headers, then one byte of the body every 200 ms (each read makes progress, so only a
/// deadline over the whole fetch ends it).
fn dribbling_server(crl: Vec<u8>, good: usize) -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/ca.crl", listener.local_addr().expect("addr"));
    let served = Arc::new(Mutex::new(0usize));
    let count = Arc::clone(&served);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let crl = crl.clone();
            let n = {
                let mut c = count.lock().unwrap();
                *c += 1;
                *c
            };
            std::thread::spawn(move || {
                let mut request = [0u8; 2048];
                let _ = stream.read(&mut request);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: \
                     {}\r\nConnection: close\r\n\r\n",
                    crl.len()
                );
                let _ = stream.write_all(head.as_bytes());
                if n <= good {
                    let _ = stream.write_all(&crl);
                    return;
                }
                for byte in &crl {
                    if stream.write_all(&[*byte]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }
    });
    (url, served)
}

/// A certgate configuration in `dir` trusting `ca` (subject `CN=dribble`), workers allowed
/// GET /api/* without enrolment, `crl` (indented two spaces) under `crl:` followed by the
/// issuer with `source`: (config, gRPC port, admin port).
fn crl_config(dir: &Path, ca: &CertAuthority, crl: &str, source: &str) -> (PathBuf, u16, u16) {
    let (grpc, admin) = (free_port(), free_port());
    write_file(&dir.join("ca.pem"), ca.cert_pem());
    let config = dir.join("certgate.yaml");
    write_file(
        &config,
        format!(
            "listen: {{grpc: \"127.0.0.1:{grpc}\", admin: \"127.0.0.1:{admin}\"}}\n\
             trust: {{ca_bundle: ca.pem}}\nstore: {{path: certgate.db}}\n\
             roles_by_type: {{worker: [worker]}}\n\
             policies:\n  default:\n    require_enrolment: false\n    permissions: {{worker: [\"GET /api/*\"]}}\n\
             crl:\n{crl}\
             \x20 issuers:\n    - ca: \"CN=dribble, O=certgate dev\"\n      sources: [{source}]\n"
        ),
    );
    (config, grpc, admin)
}

/// A served certgate whose CRL source `url` has a 1 s deadline and is refreshed every 500 ms:
/// (config dir, certgate, gRPC port).
fn crl_gate(ca: &CertAuthority, url: &str, readiness: &str) -> (tempfile::TempDir, Certgate, u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    let crl = format!(
        "  timeout: 1s\n  retry_backoff: 200ms\n  max_retry_backoff: 500ms\n  readiness: {readiness}\n"
    );
    let source = format!("{{url: \"{url}\", refresh_interval: 500ms}}");
    let (config, grpc, admin) = crl_config(dir.path(), ca, &crl, &source);
    let certgate = Certgate::start(&config, admin);
    (dir, certgate, grpc)
}

fn dribble_pki() -> (CertAuthority, String, String, u64) {
    let start = now() - time::Duration::days(1);
    let ca = CertAuthority::new("dribble", start, start + time::Duration::days(30)).expect("CA");
    let spec = World::spec("w@example.com", "worker", "w.example.com");
    let good = ca.issue(&spec).expect("leaf").cert_pem;
    let revoked = ca.issue(&spec).expect("leaf");
    (ca, good, revoked.cert_pem, revoked.serial)
}

#[test]
fn a_crl_server_dribbling_bytes_times_out_and_the_crl_in_force_stays() {
    let (ca, good, revoked, serial) = dribble_pki();
    let crl = ca
        .crl(&CrlSpec {
            revoked: vec![(serial, None)],
            ..CrlSpec::new(now() - time::Duration::minutes(1), time::Duration::days(1))
        })
        .expect("CRL")
        .der;
    let (url, served) = dribbling_server(crl, 1);
    let (_dir, certgate, grpc) = crl_gate(&ca, &url, "wait");
    assert_eq!(
        grpc_decision(grpc, &revoked, "/api/x").0,
        "certificate_revoked"
    );
    // Later rounds dribble: wait for two of them to end in the fetch deadline.
    let timed_out = || {
        certgate.metrics().lines().any(|l| {
            l.starts_with("certgate_crl_fetches_total")
                && l.contains("outcome=\"error\"")
                && l.rsplit_once(' ')
                    .is_some_and(|(_, v)| v.parse::<f64>().unwrap_or(0.0) >= 2.0)
        })
    };
    assert!(
        wait_until(Duration::from_secs(20), timed_out),
        "no fetch ended in error while the server dribbled ({} requests)\n{}",
        served.lock().unwrap(),
        certgate.metrics()
    );
    assert!(
        certgate.proc.logs().contains("no complete response within"),
        "the log names the deadline\n{}",
        certgate.proc.logs()
    );
    // Meanwhile checks are answered at once, from the CRL in force.
    let started = Instant::now();
    assert_eq!(
        grpc_decision(grpc, &revoked, "/api/x").0,
        "certificate_revoked"
    );
    assert_eq!(grpc_decision(grpc, &good, "/api/x").0, "allow");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "checks waited on the dribbling fetch: {:?}",
        started.elapsed()
    );
    assert!(matches!(
        http_get(certgate.admin_port, "/readyz"),
        Some((200, _))
    ));
}

#[test]
fn a_crl_server_dribbling_from_the_start_leaves_checks_denied_503() {
    let (ca, good, _, _) = dribble_pki();
    let crl = ca
        .crl(&CrlSpec::new(now(), time::Duration::days(1)))
        .expect("CRL")
        .der;
    let (url, _) = dribbling_server(crl, 0);
    let (_dir, certgate, grpc) = crl_gate(&ca, &url, "serve");
    let (reason, message) = grpc_decision(grpc, &good, "/api/x");
    assert_eq!(reason, "revocation_status_unknown", "{message}");
    assert!(
        wait_until(Duration::from_secs(10), || certgate
            .proc
            .logs()
            .contains("no complete response within")),
        "{}",
        certgate.proc.logs()
    );
    assert_eq!(
        grpc_decision(grpc, &good, "/api/x").0,
        "revocation_status_unknown"
    );
}

// ---------------------------------------------------------------------------------------
// Disk full

/// A 1 MiB tmpfs at `dir`, unmounted on drop. Needs root (CI runs as root); `None` otherwise.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path) -> Option<SmallFs> {
        std::fs::create_dir_all(dir).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: mounting a tmpfs needs root");
        }
        ok.then(|| SmallFs(dir.to_owned()))
    }

    /// Write a filler file until the file system is full.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.0.join("filler")).expect("filler");
        let block = vec![0u8; 4096];
        while f.write_all(&block).and_then(|()| f.flush()).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).expect("remove filler");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_under_the_embedded_store_fails_writes_clearly_and_keeps_serving() {
    let world = World::new();
    let Some(fs) = SmallFs::mount(&world.path("full")) else {
        return;
    };
    let config = world.path("certgate.yaml");
    let yaml = std::fs::read_to_string(&config).expect("config");
    write_file(
        &config,
        yaml.replace("path: certgate.db", "path: full/certgate.db"),
    );
    let id = "worker-1@example.com";
    let worker = world.client("worker", id, &World::spec(id, "worker", "w.example.com"));
    let cert = worker.cert.to_str().expect("utf-8");
    for args in [
        &["principal", "create", id, "--type", "worker"][..],
        &["cert", "register", "--cert", cert],
    ] {
        let (code, out) = world.cli(args);
        assert_eq!(code, 0, "certgate {args:?}: {out}");
    }
    let certgate = Certgate::start(&config, world.admin_port);
    let pem = std::fs::read_to_string(&worker.cert).expect("pem");
    assert_eq!(grpc_decision(world.grpc_port, &pem, "/api/x").0, "allow");

    fs.fill();
    let mut refused = 0;
    for n in 0..50 {
        let id = format!("p{n}@example.com");
        let (code, out) = world.cli(&["principal", "create", &id, "--type", "worker"]);
        if code != 0 {
            assert!(
                out.contains("full") || out.contains("space"),
                "the error says the disk is full: {out}"
            );
            eprintln!("disk full, the CLI says: {}", out.trim());
            refused += 1;
            break;
        }
    }
    assert_eq!(refused, 1, "no write was refused on a full disk");
    let (code, out) = world.cli(&[
        "principal",
        "suspend",
        "worker-1@example.com",
        "--reason",
        "x",
    ]);
    assert_ne!(
        code, 0,
        "a suspension on a full disk reported success: {out}"
    );
    // What was there is still served and still readable.
    assert_eq!(grpc_decision(world.grpc_port, &pem, "/api/x").0, "allow");
    let (code, out) = world.cli(&["principal", "get", "worker-1@example.com"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("active"), "{out}");
    let integrity: String = rusqlite::Connection::open(world.path("full/certgate.db"))
        .expect("open")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok");

    fs.free();
    world.suspend("worker-1@example.com", "disk freed");
    assert!(
        wait_until(Duration::from_secs(10), || grpc_decision(
            world.grpc_port,
            &pem,
            "/api/x"
        )
        .0 == "principal_suspended"),
        "{}",
        certgate.proc.logs()
    );
}

#[test]
fn a_full_disk_under_the_crl_cache_keeps_the_crl_in_force_and_the_cached_file_whole() {
    let (ca, good, revoked, serial) = dribble_pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(fs) = SmallFs::mount(&dir.path().join("cache")) else {
        return;
    };
    let crl = |age: i64, serials: &[u64]| {
        ca.crl(&CrlSpec {
            revoked: serials.iter().map(|s| (*s, None)).collect(),
            ..CrlSpec::new(
                now() - time::Duration::seconds(age),
                time::Duration::days(1),
            )
        })
        .expect("CRL")
        .der
    };
    // Only CRLs fetched from URLs are cached (a file source is on disk already).
    let server = CrlServer::new(crl(120, &[]));
    let (config, grpc, admin) = crl_config(
        dir.path(),
        &ca,
        "  cache_dir: cache\n  high_water_file: high-water.json\n",
        &format!("{{url: \"{}\", refresh_interval: 200ms}}", server.url()),
    );
    let certgate = Certgate::start(&config, admin);
    assert_eq!(grpc_decision(grpc, &revoked, "/api/x").0, "allow");
    let cache = dir.path().join("cache");
    let cached = || {
        std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "crl"))
    };
    assert!(wait_until(Duration::from_secs(10), || cached().is_some()));
    let before = std::fs::read(cached().expect("cached CRL")).expect("read");

    fs.fill();
    server.set(CrlMode::Serve, Some(crl(10, &[serial])));
    assert!(
        wait_until(Duration::from_secs(10), || grpc_decision(
            grpc, &revoked, "/api/x"
        )
        .0 == "certificate_revoked"),
        "the newer CRL is in force even though it cannot be cached\n{}",
        certgate.proc.logs()
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            let logs = certgate.proc.logs();
            logs.contains("No space left on device") || logs.contains("os error 28")
        }),
        "the failed write is logged\n{}",
        certgate.proc.logs()
    );
    let logs = certgate.proc.logs();
    if let Some(line) = logs.lines().find(|l| l.contains("cannot persist the CRL")) {
        eprintln!("disk full under the CRL cache, certgate logs: {line}");
    }
    assert_eq!(grpc_decision(grpc, &good, "/api/x").0, "allow");
    let after = std::fs::read(cached().expect("cached CRL")).expect("read");
    assert_eq!(
        after, before,
        "the cached CRL was damaged by the failed write"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&cache)
        .expect("cache dir")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "filler")
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "temporary files left behind: {leftovers:?}"
    );
    fs.free();
}
