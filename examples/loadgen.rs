//! Load generator for certgate's ext_authz gRPC `Check`, on loopback: sends the requests
//! Envoy would send (client certificate as URL-encoded PEM in `source.certificate`) from
//! `--connections` HTTP/2 connections with `--concurrency` requests in flight on each, for
//! `--duration`, then prints throughput, latency percentiles and the allow/deny/error counts.
//!
//! With an `https://` target it drives Envoy instead: mutual TLS with `--cert`/`--key`,
//! `--connections` HTTP/1.1 keep-alive connections with one request in flight on each (2xx
//! counts as allowed, 401/403 as denied, anything else as an error).
//!
//! Example: `cargo run --release --example loadgen -- --cert pki/admin.pem --duration 2s`
//!
//! Example (through Envoy): `loadgen --target https://localhost:8443/admin/x --cert
//! pki/admin.pem --key pki/admin-key.pem --ca pki/ca.pem --connections 16`
//!
//! Exits 1 on a usage or connection problem, or when any request failed (a deny is an
//! answer, not a failure).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tonic::transport::{Channel, Endpoint};

/// Everything but RFC 3986 unreserved characters is escaped, as Envoy does for
/// `source.certificate`.
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A request that takes longer than this counts as an error (and cannot hold the run open).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    about = "Load generator for certgate's ext_authz gRPC Check, bounded by --duration",
    after_help = "Example:\n  loadgen --target http://127.0.0.1:9001 --cert pki/admin.pem --duration 2s"
)]
struct Args {
    /// certgate's ext_authz gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:9001")]
    target: String,
    /// Client certificate to present (PEM file); sent URL-encoded, as Envoy does.
    #[arg(long)]
    cert: PathBuf,
    /// The client certificate's private key (PEM file); HTTPS targets only.
    #[arg(long)]
    key: Option<PathBuf>,
    /// CA to verify an HTTPS target's server certificate against (PEM file).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// HTTP/2 connections to open.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    connections: u32,
    /// Requests in flight on each connection.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// How long to send requests (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Request path.
    #[arg(long, default_value = "/api/hello")]
    path: String,
    /// Request method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Policy to ask for (`context_extensions["policy"]`); the default policy when absent.
    #[arg(long)]
    policy: Option<String>,
    /// Worker threads of the client runtime (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Write the gRPC-framed `CheckRequest` to this file and exit, for other load
    /// generators (`h2load --data FILE -H 'content-type: application/grpc' …`).
    #[arg(long)]
    write_request: Option<PathBuf>,
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    /// Latency of each answered request, nanoseconds.
    latencies_ns: Vec<u64>,
    allowed: u64,
    denied: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_ns.extend(other.latencies_ns);
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Returns whether every request was answered.
async fn run(args: Args) -> anyhow::Result<bool> {
    let pem = std::fs::read_to_string(&args.cert)
        .with_context(|| format!("reading certificate {}", args.cert.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        bail!("{} is not a PEM certificate", args.cert.display());
    }
    if args.target.starts_with("https://") {
        return https::run(&args, &pem).await;
    }
    let request = check_request(&args, &pem);
    if let Some(path) = &args.write_request {
        // gRPC length-prefixed message: compression flag 0, big-endian length, protobuf.
        let body = prost::Message::encode_to_vec(&request);
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
        framed.extend_from_slice(&body);
        std::fs::write(path, framed).with_context(|| format!("writing {}", path.display()))?;
        return Ok(true);
    }
    let endpoint = Endpoint::from_shared(args.target.clone())
        .with_context(|| format!("bad --target {}", args.target))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true);

    let mut channels = Vec::new();
    for _ in 0..args.connections {
        // One `connect` is one HTTP/2 connection; clones of a channel share it.
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to {}", args.target))?;
        channels.push(channel);
    }
    preflight(channels[0].clone(), &request).await?;

    let started = Instant::now();
    let deadline = started + args.duration;
    let mut workers = tokio::task::JoinSet::new();
    for channel in &channels {
        for _ in 0..args.concurrency {
            workers.spawn(worker(channel.clone(), request.clone(), deadline));
        }
    }
    let mut total = Tally::default();
    while let Some(tally) = workers.join_next().await {
        total.merge(tally.context("worker task panicked")?);
    }
    let elapsed = started.elapsed();
    report(&args, &mut total, elapsed);
    Ok(total.errors == 0 && total.allowed + total.denied > 0)
}

/// Drive an HTTPS endpoint (Envoy's mTLS listener) with HTTP/1.1 keep-alive connections.
mod https {
    use std::time::{Duration, Instant};

    use anyhow::Context as _;
    use reqwest::{Certificate, Client, Identity, StatusCode, Url};

    use super::{Args, REQUEST_TIMEOUT, Tally};

    pub async fn run(args: &Args, pem: &str) -> anyhow::Result<bool> {
        let key_path = args
            .key
            .as_ref()
            .context("an https:// target needs --key")?;
        let key = std::fs::read_to_string(key_path)
            .with_context(|| format!("reading key {}", key_path.display()))?;
        let identity = Identity::from_pem(format!("{pem}\n{key}").as_bytes())
            .context("client certificate and key")?;
        let url =
            Url::parse(&args.target).with_context(|| format!("bad --target {}", args.target))?;
        let ca = match &args.ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading CA {}", path.display()))?;
                Some(Certificate::from_pem(&pem).context("--ca")?)
            }
            None => None,
        };
        // One client per connection: each worker sends one request at a time on its own
        // keep-alive connection, as a 16-connection HTTP/1.1 load does.
        let mut clients = Vec::new();
        for _ in 0..args.connections {
            let mut builder = Client::builder()
                .use_rustls_tls()
                .identity(identity.clone())
                .http1_only()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(1)
                .timeout(REQUEST_TIMEOUT)
                .connect_timeout(Duration::from_secs(3));
            if let Some(ca) = &ca {
                builder = builder
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(ca.clone());
            }
            // `localhost` may resolve to ::1 first; the listeners here are IPv4 loopback.
            if let (Some("localhost"), Some(port)) = (url.host_str(), url.port_or_known_default()) {
                builder = builder.resolve("localhost", ([127, 0, 0, 1], port).into());
            }
            let client = builder.build().context("building the HTTPS client")?;
            let status = client
                .get(url.clone())
                .send()
                .await
                .with_context(|| format!("first request to {url}"))?
                .status();
            if !status.is_success() {
                eprintln!("warning: the first request was answered {status}");
            }
            clients.push(client);
        }
        let started = Instant::now();
        let deadline = started + args.duration;
        let mut workers = tokio::task::JoinSet::new();
        for client in clients {
            workers.spawn(worker(client, url.clone(), deadline));
        }
        let mut total = Tally::default();
        while let Some(tally) = workers.join_next().await {
            total.merge(tally.context("worker task panicked")?);
        }
        super::report(args, &mut total, started.elapsed());
        Ok(total.errors == 0 && total.allowed + total.denied > 0)
    }

    async fn worker(client: Client, url: Url, deadline: Instant) -> Tally {
        let mut tally = Tally::default();
        while Instant::now() < deadline {
            let sent = Instant::now();
            let answer = match client.get(url.clone()).send().await {
                // The body is read so that the connection is reused.
                Ok(response) => {
                    let status = response.status();
                    response.bytes().await.map(|_| status)
                }
                Err(e) => Err(e),
            };
            let latency = sent.elapsed();
            match answer {
                Ok(status) if status.is_success() => tally.allowed += 1,
                Ok(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => tally.denied += 1,
                Ok(status) => {
                    tally.errors += 1;
                    tally
                        .first_error
                        .get_or_insert_with(|| format!("HTTP {status}"));
                    continue;
                }
                Err(e) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert_with(|| format!("{e:#}"));
                    continue;
                }
            }
            tally
                .latencies_ns
                .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        }
        tally
    }
}

/// The `CheckRequest` Envoy sends for a request on an mTLS listener.
fn check_request(args: &Args, pem: &str) -> CheckRequest {
    let mut context_extensions = HashMap::new();
    if let Some(policy) = &args.policy {
        context_extensions.insert("policy".to_owned(), policy.clone());
    }
    let headers = HashMap::from([
        (":method".to_owned(), args.method.clone()),
        (":path".to_owned(), args.path.clone()),
        (":authority".to_owned(), "api.example.com".to_owned()),
        ("x-request-id".to_owned(), "loadgen".to_owned()),
    ]);
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                certificate: utf8_percent_encode(pem, URL_ENCODE).to_string(),
                ..Default::default()
            }),
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    id: "loadgen".to_owned(),
                    method: args.method.clone(),
                    path: args.path.clone(),
                    host: "api.example.com".to_owned(),
                    scheme: "https".to_owned(),
                    protocol: "HTTP/1.1".to_owned(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions,
            ..Default::default()
        }),
    }
}

/// One request before the run: fail fast on a server that does not answer, and say so when
/// the certificate is denied (the run still measures denies).
async fn preflight(channel: Channel, request: &CheckRequest) -> anyhow::Result<()> {
    let mut client = AuthorizationClient::new(channel);
    let response = tokio::time::timeout(REQUEST_TIMEOUT, client.check(request.clone()))
        .await
        .context("first Check timed out")?
        .context("first Check failed")?
        .into_inner();
    let code = response.status.as_ref().map_or(0, |s| s.code);
    if code != 0 {
        use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
        let body = match &response.http_response {
            Some(HttpResponse::DeniedResponse(d)) => d.body.as_str(),
            _ => "",
        };
        eprintln!("warning: the certificate is denied (gRPC code {code}): {body}");
    }
    Ok(())
}

async fn worker(channel: Channel, request: CheckRequest, deadline: Instant) -> Tally {
    let mut client = AuthorizationClient::new(channel);
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        let sent = Instant::now();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, client.check(request.clone())).await;
        let latency = sent.elapsed();
        match answer {
            Ok(Ok(response)) => {
                let code = response.get_ref().status.as_ref().map_or(0, |s| s.code);
                if code == 0 {
                    tally.allowed += 1;
                } else {
                    tally.denied += 1;
                }
                tally
                    .latencies_ns
                    .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
            }
            Ok(Err(status)) => {
                tally.errors += 1;
                tally
                    .first_error
                    .get_or_insert_with(|| format!("gRPC status: {status}"));
            }
            Err(_) => {
                tally.errors += 1;
                tally
                    .first_error
                    .get_or_insert_with(|| format!("no answer within {REQUEST_TIMEOUT:?}"));
            }
        }
    }
    tally
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1_000.0)
}

/// Plain `key value` lines, so scripts can read them with awk.
fn report(args: &Args, total: &mut Tally, elapsed: Duration) {
    total.latencies_ns.sort_unstable();
    let lat = &total.latencies_ns;
    let answered = total.allowed + total.denied;
    let secs = elapsed.as_secs_f64();
    println!("target          {}", args.target);
    let in_flight = if args.target.starts_with("https://") {
        1
    } else {
        args.concurrency
    };
    println!(
        "load            {} connections x {} in flight, {:.2}s",
        args.connections, in_flight, secs
    );
    println!("requests        {}", answered + total.errors);
    println!("allowed         {}", total.allowed);
    println!("denied          {}", total.denied);
    println!("errors          {}", total.errors);
    println!("rps             {:.0}", answered as f64 / secs.max(1e-9));
    println!("p50_us          {}", micros(percentile(lat, 50.0)));
    println!("p90_us          {}", micros(percentile(lat, 90.0)));
    println!("p99_us          {}", micros(percentile(lat, 99.0)));
    println!("p99.9_us        {}", micros(percentile(lat, 99.9)));
    println!(
        "max_us          {}",
        micros(lat.last().copied().unwrap_or(0))
    );
    if let Some(e) = &total.first_error {
        println!("first_error     {e}");
    }
}
