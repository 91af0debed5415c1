//! Row 7b (fail-secure CRLs) end to end: Envoy 1.40 in front of a running `certgate serve`
//! whose issuer has a CRL source on loopback (`crl_server`). A CRL that is missing or stale
//! is a 503 carrying certgate's JSON body (`revocation_status_unknown`), never Envoy's own
//! bodiless 503 and never an allow; the CRL server coming back is enough to recover; with
//! `readiness: wait` `/readyz` names the issuer; `cache_dir` carries the last good CRL across a
//! real restart while the CRL server is down.

use std::time::Duration;

use certgate::pki::CrlSpec;
use rcgen::RevocationReason::KeyCompromise;

use super::crl_server::{CrlServer, Mode as Serving};
use super::envoy::Stack;
use super::harness::{
    Certgate, CertgateAddress, Curl, EchoUpstream, Envoy, Mode, Reply, http_get, in_both_modes,
    wait_until,
};
use super::world::{Client, World, append_file, certgate_deny, deny_reason, now, spawn_certgate};

/// The World CA's subject, as `crl.issuers[].ca` names it.
const ISSUER: &str = "CN=e2e CA, O=certgate dev";

/// A `crl:` section for the World CA with one URL source polled every 200 ms.
fn crl_yaml(readiness: &str, extra: &str, url: &str) -> String {
    format!(
        "crl:\n  readiness: {readiness}\n  timeout: 400ms\n  retry_backoff: 100ms\n  \
         max_retry_backoff: 200ms\n{extra}  issuers:\n    - ca: \"{ISSUER}\"\n      \
         sources: [{{url: \"{url}\", refresh_interval: 200ms}}]\n"
    )
}

/// A CRL of the World CA issued a second ago, valid for `validity_secs`, listing `serials`.
fn crl(world: &World, validity_secs: i64, serials: &[&Client]) -> Vec<u8> {
    let revoked = serials
        .iter()
        .map(|c| {
            let serial = u64::from_str_radix(&c.serial, 16).expect("a u64 serial");
            (serial, Some(KeyCompromise))
        })
        .collect();
    world
        .crl(&CrlSpec {
            revoked,
            ..CrlSpec::new(
                now() - time::Duration::seconds(1),
                time::Duration::seconds(validity_secs),
            )
        })
        .der
}

/// Poll `get` (10 s unless `within`) until its answer satisfies `want`; return that answer,
/// or fail with the last one and `logs`.
#[track_caller]
fn until(
    within: Duration,
    what: &str,
    get: impl Fn() -> Reply,
    want: impl Fn(&Reply) -> bool,
    logs: impl Fn() -> String,
) -> Reply {
    let mut last = None;
    let reached = wait_until(within, || {
        let reply = get();
        let done = want(&reply);
        last = Some(reply);
        done
    });
    let reply = last.expect("at least one request");
    assert!(reached, "{what}: last answer {reply:?}\n{}", logs());
    reply
}

/// certgate's 503 `revocation_status_unknown` (not Envoy's own 503).
fn unknown(reply: &Reply) -> bool {
    reply.status == 503 && deny_reason(reply).as_deref() == Some("revocation_status_unknown")
}

fn message(reply: &Reply) -> String {
    certgate_deny(reply)
        .and_then(|b| b["message"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn down_then_up_then_stale_then_back_without_a_restart(mode: Mode) {
    let mut server = CrlServer::down(Vec::new());
    let url = server.url();
    let stack = Stack::start_in(
        mode,
        World::new(),
        |w| append_file(&w.config, &crl_yaml("serve", "", &url)),
        "ACCEPT_UNTRUSTED",
        &[],
    );
    let allowed = std::cell::Cell::new(0);
    let get = || {
        let reply = stack.request(Some(&stack.worker), "GET", "/api/jobs", vec![]);
        allowed.set(allowed.get() + usize::from(reply.status == 200));
        reply
    };
    let logs = || stack.logs();
    // The process deciding: certgate's server, or Envoy holding the module.
    let decider = || {
        stack
            .certgate
            .as_ref()
            .map_or(&stack.envoy.proc, |c| &c.proc)
    };
    let pid = decider().pid();

    // readiness: serve — ready without a CRL, and every check of the issuer's certificates
    // denied 503 with certgate's body naming the issuer.
    let reply = until(
        Duration::from_secs(10),
        "CRL server down: 503 revocation_status_unknown",
        get,
        unknown,
        logs,
    );
    let text = message(&reply);
    assert!(text.contains("e2e CA"), "the issuer is named: {text}");
    assert!(
        matches!(http_get(stack.world.admin_port, "/readyz"), Some((200, _))),
        "readiness: serve is ready without CRLs"
    );
    let metrics = stack.metrics();
    assert!(
        metrics.contains("certgate_crl_usable{issuer=\"O=certgate dev, CN=e2e CA\"} 0"),
        "{metrics}"
    );

    // The server comes up with a CRL that is fresh for a few seconds only.
    server.set(Serving::Serve, Some(crl(&stack.world, 12, &[])));
    server.start();
    until(
        Duration::from_secs(8),
        "CRL loaded: allowed",
        get,
        |r| r.status == 200,
        logs,
    );

    // The server fails from now on; the CRL in force passes its nextUpdate.
    server.set(Serving::Status(500), None);
    let reply = until(
        Duration::from_secs(30),
        "CRL in force stale: 503 revocation_status_unknown",
        get,
        |r| unknown(r) && message(r).contains("stale"),
        logs,
    );
    let text = message(&reply);
    assert!(
        text.contains("e2e CA") && text.contains("HTTP status 500"),
        "issuer and last refresh error named: {text}"
    );

    // The server is back with a current CRL: allowed again, same process.
    server.set(Serving::Serve, Some(crl(&stack.world, 86_400, &[])));
    until(
        Duration::from_secs(10),
        "CRL server back: allowed",
        get,
        |r| r.status == 200,
        logs,
    );
    assert_eq!(decider().pid(), pid, "no restart");
    assert_eq!(
        stack.upstream.requests(),
        allowed.get(),
        "only allowed requests reached the upstream"
    );
}

in_both_modes!(down_then_up_then_stale_then_back_without_a_restart);

#[test]
fn readiness_wait_names_the_issuer_and_cache_dir_survives_a_restart() {
    let world = World::new();
    let (_admin, worker) = world.admin_and_worker();
    let revoked = world.client(
        "revoked",
        "worker-1@example.com",
        &World::spec("worker-1@example.com", "worker", "worker-1.example.com"),
    );
    world.enrol(&[], &[&revoked]);
    let mut server = CrlServer::down(Vec::new());
    append_file(
        &world.config,
        &crl_yaml("wait", "  cache_dir: crl-cache\n", &server.url()),
    );
    let mut certgate = spawn_certgate(&world.config, world.admin_port, &[]);
    let upstream = EchoUpstream::start();
    let envoy = Envoy::start(&world.envoy_options(
        CertgateAddress::Tcp(world.grpc_port),
        upstream.port,
        "ACCEPT_UNTRUSTED",
    ));
    let get = |client: &Client| {
        Curl {
            port: envoy.port,
            ca: &world.ca_pem,
            client: Some((client.cert.as_path(), client.key.as_path())),
            method: "GET",
            path: "/api/jobs",
            headers: vec![],
        }
        .send()
    };

    // Not ready while the CRL server is down: /readyz names the CA and the kind of failure
    // (never the URL), and checks are denied 503 with certgate's body.
    let readyz = || http_get(world.admin_port, "/readyz").unwrap_or((0, String::new()));
    let (status, body) = readyz();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("not ready: no CRL of issuer 'O=certgate dev, CN=e2e CA'")
            || body.contains(&format!("not ready: no CRL of issuer '{ISSUER}'")),
        "{body}"
    );
    assert!(!body.contains("127.0.0.1"), "no URL in /readyz: {body}");
    let reply = get(&worker);
    assert!(unknown(&reply), "{reply:?}\n{}", certgate.proc.logs());

    // The server comes up: ready, and the CRL decides.
    server.set(Serving::Serve, Some(crl(&world, 86_400, &[&revoked])));
    server.start();
    let ready = wait_until(Duration::from_secs(10), || readyz().0 == 200);
    assert!(ready, "{:?}\n{}", readyz(), certgate.proc.logs());
    let logs = |c: &Certgate| format!("{}\n{}", c.proc.logs(), envoy.proc.logs());
    // The worker is allowed (after a few tries: Envoy reconnects lazily) and the revoked
    // certificate is denied by the CRL.
    let the_crl_decides = |certgate: &Certgate, when: &str| {
        until(
            Duration::from_secs(10),
            &format!("allowed {when}"),
            || get(&worker),
            |r| r.status == 200,
            || logs(certgate),
        );
        let reply = get(&revoked);
        assert_eq!(
            (reply.status, deny_reason(&reply).as_deref()),
            (401, Some("certificate_revoked")),
            "{when}: {reply:?}\n{}",
            logs(certgate)
        );
    };
    the_crl_decides(&certgate, "once the CRL is loaded");
    let cache = world.path("crl-cache");
    let persisted = wait_until(Duration::from_secs(10), || {
        std::fs::read_dir(&cache).is_ok_and(|d| d.count() > 0)
    });
    assert!(persisted, "nothing in {}", cache.display());

    // A real restart with the CRL server down: ready from the cache alone (readiness: wait
    // would hold /readyz at 503 otherwise), and the cached CRL still decides.
    assert_eq!(certgate.proc.terminate(Duration::from_secs(10)), Some(0));
    server.stop();
    certgate = Certgate::start(&world.config, world.admin_port);
    the_crl_decides(&certgate, "after the restart");
    let failed_fetch = wait_until(Duration::from_secs(10), || {
        certgate.metrics().lines().any(|l| {
            l.starts_with("certgate_crl_fetches_total")
                && l.contains("outcome=\"error\"")
                && !l.ends_with(" 0")
        })
    });
    assert!(
        failed_fetch,
        "the CRL server was down for the restarted process\n{}",
        certgate.metrics()
    );
    assert_eq!(readyz().0, 200);
}
