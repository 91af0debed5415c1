//! A configuration reload under load: every answer is rendered from the configuration that
//! decided it. Two generations differ both in what they decide (an extra role, `gen-a` or
//! `gen-b`, in the roles header's value) and in how the answer is written (every identity
//! header named `x-a-…` or `x-b-…`), so an answer decided by one and rendered by the other
//! shows as a roles value that does not match its header names.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;

use super::forward_auth::{NGINX_SOURCE, escaped, setup};
use super::grpc::request;
use super::world::World;

/// Identity header fields and the suffix each generation gives its name.
const HEADERS: &[(&str, &str)] = &[
    ("principal", "principal"),
    ("principal_type", "type"),
    ("roles", "roles"),
    ("cn", "cn"),
    ("serial", "serial"),
    ("sha256", "sha256"),
    ("spiffe_id", "spiffe"),
];

/// The configuration of generation `g` (`a` or `b`) on top of `base`.
fn generation(base: &str, g: char) -> String {
    let names: Vec<String> = HEADERS
        .iter()
        .map(|(field, suffix)| format!("{field}: x-{g}-{suffix}"))
        .collect();
    let base = base
        .replacen(
            "  admin: [admin]\n",
            &format!("  admin: [admin, gen-{g}]\n"),
            1,
        )
        .replacen("interval: 200ms", "interval: 10ms", 1);
    assert!(base.contains("interval: 10ms"), "reload interval not found");
    assert!(
        base.contains(&format!("gen-{g}")),
        "roles_by_type not found"
    );
    format!("{base}headers: {{{}}}\n", names.join(", "))
}

/// Put a generation in force the way an operator's tool would: a complete file at once.
fn write_config(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// The generation one allow answer was written in, or why it is not one generation:
/// `names` are the identity header names it sets or removes, `roles` the roles value.
fn judge<'n>(
    names: impl IntoIterator<Item = &'n str>,
    roles: Option<&str>,
) -> Result<char, String> {
    let mut names = names.into_iter().peekable();
    let g = match names.peek().map(|n| n.as_bytes()) {
        Some([b'x', b'-', g @ (b'a' | b'b'), b'-', ..]) => char::from(*g),
        other => return Err(format!("unexpected identity header {other:?}")),
    };
    let prefix = format!("x-{g}-");
    let all: Vec<&str> = names.collect();
    if let Some(other) = all.iter().find(|n| !n.starts_with(&prefix)) {
        return Err(format!(
            "header names of two generations: {all:?} ({other})"
        ));
    }
    let roles = roles.ok_or_else(|| format!("no {prefix}roles header in {all:?}"))?;
    if !roles.split(',').any(|r| r == format!("gen-{g}")) {
        return Err(format!(
            "{prefix}* headers with roles '{roles}' decided by another generation"
        ));
    }
    Ok(g)
}

async fn grpc_answer(
    client: &mut AuthorizationClient<tonic::transport::Channel>,
    pem: &str,
) -> Result<char, String> {
    let certificate =
        percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string();
    let request = request(certificate, "/api/x", &[]);
    let response = client
        .check(request)
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    judge_response(response)
}

/// [`judge`] of an ext_authz answer: the names it sets and removes, and the roles it sets.
fn judge_response(response: CheckResponse) -> Result<char, String> {
    let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
        return Err(format!("not allowed: {response:?}"));
    };
    let set = ok.headers.iter().filter_map(|h| h.header.as_ref());
    let roles = set
        .clone()
        .find(|h| h.key.ends_with("-roles"))
        .map(|h| h.value.as_str());
    let names = set
        .map(|h| h.key.as_str())
        .chain(ok.headers_to_remove.iter().map(String::as_str));
    judge(names, roles)
}

async fn http_answer(client: &reqwest::Client, port: u16, cert: &str) -> Result<char, String> {
    let response = client
        .get(format!("http://127.0.0.1:{port}/"))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/api/x")
        .header("ssl-client-cert", cert)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("not allowed: {}", response.status()));
    }
    let headers = response.headers();
    let identity = headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("x-a-") || k.starts_with("x-b-"));
    let roles = headers
        .iter()
        .find(|(k, _)| k.as_str().ends_with("-roles"))
        .and_then(|(_, v)| v.to_str().ok());
    judge(identity, roles)
}

/// Concurrent tasks, each asking again and again until stopped, and what they were answered.
#[derive(Default)]
struct Load {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<Vec<Result<char, String>>>,
}

impl Load {
    /// One more task asking `ask`.
    fn spawn<F, A>(&mut self, mut ask: F)
    where
        F: FnMut() -> A + Send + 'static,
        A: Future<Output = Result<char, String>> + Send,
    {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(ask().await);
            }
            seen
        });
    }

    /// Stop every task; all the answers.
    async fn stop(mut self) -> Vec<Result<char, String>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut answers = Vec::new();
        while let Some(seen) = self.tasks.join_next().await {
            answers.extend(seen.expect("load task"));
        }
        answers
    }
}

/// A runtime whose tasks run on two threads, so a reload can land in the middle of a check.
fn parallel() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// No answer mixes two generations, and both were seen.
fn assert_one_generation_each(answers: &[Result<char, String>]) {
    let wrong: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(
        wrong.is_empty(),
        "{} of {} answers: {:?}",
        wrong.len(),
        answers.len(),
        &wrong[..wrong.len().min(5)]
    );
    let count = |g| answers.iter().filter(|a| **a == Ok(g)).count();
    assert!(
        count('a') > 0 && count('b') > 0,
        "a: {}, b: {}",
        count('a'),
        count('b')
    );
}

#[test]
fn answers_during_reloads_come_from_one_configuration() {
    let s = setup(NGINX_SOURCE);
    let base = std::fs::read_to_string(&s.world.config).expect("read");
    let config = s.world.config.clone();
    write_config(&config, &generation(&base, 'a'));
    let pem = std::fs::read_to_string(&s.admin.cert).expect("read");
    let header_cert = escaped(&s.admin.cert);
    let (grpc_port, http_port) = (s.world.grpc_port, s.http_port);
    let answers = parallel().block_on(async move {
        let mut client = AuthorizationClient::connect(format!("http://127.0.0.1:{grpc_port}"))
            .await
            .expect("connect");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while grpc_answer(&mut client, &pem).await != Ok('a') {
            assert!(
                tokio::time::Instant::now() < deadline,
                "generation a never in force"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut load = Load::default();
        for _ in 0..6 {
            let (pem, client) = (pem.clone(), client.clone());
            load.spawn(move || {
                let (pem, mut client) = (pem.clone(), client.clone());
                async move { grpc_answer(&mut client, &pem).await }
            });
        }
        let http = reqwest::Client::new();
        for _ in 0..2 {
            let (cert, http) = (header_cert.clone(), http.clone());
            load.spawn(move || {
                let (cert, http) = (cert.clone(), http.clone());
                async move { http_answer(&http, http_port, &cert).await }
            });
        }
        // A mix needs a reload to land between reading the request and answering it, a
        // window of microseconds: reload every 10 ms and flip for long enough to get ~100
        // swaps under load, ending on b.
        for round in 0..120 {
            let g = if round % 2 == 0 { 'b' } else { 'a' };
            write_config(&config, &generation(&base, g));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        write_config(&config, &generation(&base, 'b'));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while grpc_answer(&mut client, &pem).await != Ok('b') {
            assert!(
                tokio::time::Instant::now() < deadline,
                "generation b never in force"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        load.stop().await
    });
    assert_one_generation_each(&answers);
}

/// The same under thousands of reloads a second, in process: the reload that lands between
/// an adapter reading the request and answering it, a window of microseconds, is then common.
#[test]
fn answers_during_rapid_reloads_come_from_one_configuration() {
    use certgate::check::Checker;
    use certgate::config::Config;
    use certgate::server::ext_authz::ExtAuthz;
    use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;

    let world = World::new();
    let (admin, _) = world.admin_and_worker();
    let base = std::fs::read_to_string(&world.config).expect("read");
    let load = |g| Config::from_yaml(&generation(&base, g), &world.config).expect("valid");
    let (a, b) = (load('a'), load('b'));
    let pem = std::fs::read_to_string(&admin.cert).expect("read");
    let certificate =
        percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC).to_string();
    let answers = parallel().block_on(async move {
        let metrics = certgate::metrics::Metrics::new();
        let store = certgate::app::open_store(&a, &metrics)
            .await
            .expect("store");
        let checker = Arc::new(Checker::new(a.clone(), store, metrics));
        let service = Arc::new(ExtAuthz::new(checker.clone()));
        let mut load = Load::default();
        for _ in 0..4 {
            let (service, certificate) = (service.clone(), certificate.clone());
            load.spawn(move || {
                let service = service.clone();
                let request = tonic::Request::new(request(certificate.clone(), "/api/x", &[]));
                async move {
                    let response = service.check(request).await.expect("rpc").into_inner();
                    judge_response(response)
                }
            });
        }
        for round in 0..20_000 {
            checker.replace_config(if round % 2 == 0 { b.clone() } else { a.clone() });
            tokio::task::yield_now().await;
        }
        load.stop().await
    });
    assert_one_generation_each(&answers);
}
