//! certgate's gRPC API driven directly (no Envoy): hostile input gets a clean deny, never a
//! crash; health checks answer; `unknown_policy` and `malformed_request` carry their status
//! and gRPC code; the peer certificate wins over a trusted forwarded one. SIGTERM with a
//! check in flight: `drain`.

use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use prost::Message;

use super::harness::Certgate;
use super::world::World;

pub(super) fn request(certificate: String, path: &str, headers: &[(&str, String)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "127.0.0.1".into(),
                        ..Default::default()
                    })),
                }),
                certificate,
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), v.clone()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn deny_body(response: &CheckResponse) -> Option<(u16, serde_json::Value)> {
    match response.http_response.as_ref()? {
        HttpResponse::DeniedResponse(d) => Some((
            d.status.as_ref().map_or(0, |s| s.code as u16),
            serde_json::from_str(&d.body).expect("deny body is JSON"),
        )),
        _ => None,
    }
}

/// The `x-client-principal` an allow sets; `None` for a deny.
fn allowed_principal(response: &CheckResponse) -> Option<String> {
    match response.http_response.as_ref()? {
        HttpResponse::OkResponse(ok) => ok
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == "x-client-principal")
            .map(|h| h.value.clone()),
        _ => None,
    }
}

struct Setup {
    world: World,
    _certgate: Certgate,
    admin_pem: String,
}

fn setup() -> Setup {
    setup_with("")
}

/// [`setup`] with `extra` appended to the configuration.
fn setup_with(extra: &str) -> Setup {
    let world = World::new();
    super::world::append_file(&world.config, extra);
    let admin = world.client(
        "admin",
        "admin@example.com",
        &World::spec("admin@example.com", "admin", "admin.example.com"),
    );
    world.enrol(&[("admin@example.com", "admin")], &[&admin]);
    let certgate = Certgate::start(&world.config, world.admin_port);
    let admin_pem = std::fs::read_to_string(&admin.cert).expect("read");
    Setup {
        world,
        _certgate: certgate,
        admin_pem,
    }
}

fn url_encode(pem: &str) -> String {
    percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn client(port: u16) -> AuthorizationClient<tonic::transport::Channel> {
    AuthorizationClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect")
}

#[test]
fn hostile_certificates_get_a_clean_deny() {
    let s = setup();
    let port = s.world.grpc_port;
    let admin_pem = s.admin_pem.clone();
    super::world::run_async(async move {
        let mut c = client(port).await;
        // The real thing first: allowed, so the denials below are about the input.
        let ok = c
            .check(request(url_encode(&admin_pem), "/api/x", &[]))
            .await
            .expect("rpc");
        assert_eq!(
            ok.get_ref().status.as_ref().map(|s| s.code),
            Some(0),
            "{ok:?}"
        );

        let chain = format!("{admin_pem}{admin_pem}");
        let truncated = admin_pem[..admin_pem.len() / 2].to_owned();
        let random: String = (0..2000)
            .map(|i| char::from(b'!' + (i * 7 % 90) as u8))
            .collect();
        let huge = "A".repeat(200_000);
        let cases: Vec<(&str, String, &str)> = vec![
            ("random text", random, "malformed_certificate"),
            (
                "truncated PEM",
                url_encode(&truncated),
                "malformed_certificate",
            ),
            ("a chain", url_encode(&chain), "malformed_certificate"),
            ("huge", huge, "malformed_certificate"),
            (
                "bad percent escapes",
                "%ZZ%-----BEGIN%20CERT".into(),
                "malformed_certificate",
            ),
            ("empty", String::new(), "no_client_certificate"),
        ];
        for (name, cert, reason) in cases {
            let response = c.check(request(cert, "/api/x", &[])).await.expect("rpc");
            let (status, body) =
                deny_body(response.get_ref()).unwrap_or_else(|| panic!("{name}: not denied"));
            assert_eq!(status, 401, "{name}");
            assert_eq!(body["error"], reason, "{name}: {body}");
            assert_ne!(
                response.get_ref().status.as_ref().map(|s| s.code),
                Some(0),
                "{name}"
            );
        }

        // Huge headers are carried, not choked on: still a normal decision.
        let big = vec![
            ("x-big", "b".repeat(60_000)),
            ("x-request-id", "rid-1".to_owned()),
        ];
        let response = c
            .check(request(url_encode(&admin_pem), "/api/x", &big))
            .await
            .expect("rpc");
        assert_eq!(response.get_ref().status.as_ref().map(|s| s.code), Some(0));
        let response = c
            .check(request("junk".into(), "/api/x", &big))
            .await
            .expect("rpc");
        let (_, body) = deny_body(response.get_ref()).expect("denied");
        assert_eq!(body["request_id"], "rid-1");
    });
}

#[test]
fn invalid_utf8_on_the_wire_is_refused_and_the_server_lives_on() {
    let s = setup();
    let port = s.world.grpc_port;
    let admin_pem = s.admin_pem.clone();
    super::world::run_async(async move {
        // Encode a real request, then corrupt the certificate string into invalid UTF-8.
        let marker = "Z".repeat(64);
        let mut bytes = request(marker.clone(), "/api/x", &[]).encode_to_vec();
        let at = bytes
            .windows(marker.len())
            .position(|w| w == marker.as_bytes())
            .expect("marker present");
        bytes[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/envoy.service.auth.v3.Authorization/Check",
        );
        let result: Result<tonic::Response<Vec<u8>>, tonic::Status> =
            grpc.unary(tonic::Request::new(bytes), path, RawCodec).await;
        let status = result.expect_err("invalid UTF-8 must not be answered OK");
        assert_ne!(status.code(), tonic::Code::Ok);

        // …and the server still decides the next request.
        let mut c = client(port).await;
        let ok = c
            .check(request(url_encode(&admin_pem), "/api/x", &[]))
            .await
            .expect("rpc");
        assert_eq!(ok.get_ref().status.as_ref().map(|s| s.code), Some(0));
    });
}

#[test]
fn grpc_health_reports_serving() {
    let s = setup();
    let port = s.world.grpc_port;
    super::world::run_async(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        for service in ["", "envoy.service.auth.v3.Authorization"] {
            let response = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("health rpc");
            assert_eq!(
                response.get_ref().status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
                "service {service:?}"
            );
        }
    });
}

/// Sends raw bytes as the request message and returns the raw response bytes.
#[derive(Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Through the running server: a route naming a policy the configuration does not define is
/// 403 `unknown_policy` (gRPC PERMISSION_DENIED); an ambiguous path is 400
/// `malformed_request` (INVALID_ARGUMENT). Envoy answers the denied response's HTTP status.
#[test]
fn unknown_policy_and_ambiguous_paths_are_denied_with_their_status() {
    let s = setup();
    let port = s.world.grpc_port;
    let admin_pem = s.admin_pem.clone();
    super::world::run_async(async move {
        let mut c = client(port).await;
        let mut unknown = request(url_encode(&admin_pem), "/api/x", &[]);
        if let Some(a) = unknown.attributes.as_mut() {
            a.context_extensions.insert("policy".into(), "nope".into());
        }
        let response = c.check(unknown).await.expect("rpc");
        let (status, body) = deny_body(response.get_ref()).expect("denied");
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("unknown_policy"))
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("'nope'"),
            "{body}"
        );
        assert_eq!(
            response.get_ref().status.as_ref().map(|s| s.code),
            Some(tonic::Code::PermissionDenied as i32)
        );

        for path in ["/api/..;/x", "/api/%2e%2e/admin", "/api/a%2fb", "/api//x"] {
            let response = c
                .check(request(url_encode(&admin_pem), path, &[]))
                .await
                .expect("rpc");
            let (status, body) = deny_body(response.get_ref()).expect("denied");
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("malformed_request")),
                "{path}: {body}"
            );
            assert_eq!(
                response.get_ref().status.as_ref().map(|s| s.code),
                Some(tonic::Code::InvalidArgument as i32)
            );
        }
    });
}

/// The caller is a trusted Envoy (127.0.0.1, an `ext_authz` XFCC source trusting it): a
/// certificate in `source.certificate` decides even when XFCC names another one; the XFCC
/// certificate is read only when `source.certificate` is empty.
#[test]
fn the_peer_certificate_wins_over_a_trusted_forwarded_one() {
    let s = setup_with(super::forward_auth::SOURCES);
    let worker = s.world.client(
        "worker",
        "worker-1@example.com",
        &World::spec("worker-1@example.com", "worker", "worker-1.example.com"),
    );
    s.world
        .enrol(&[("worker-1@example.com", "worker")], &[&worker]);
    let worker_pem = std::fs::read_to_string(&worker.cert).expect("read");
    let port = s.world.grpc_port;
    let xfcc = vec![(
        "x-forwarded-client-cert",
        format!("By=spiffe://gw;Cert=\"{}\"", url_encode(&s.admin_pem)),
    )];
    super::world::run_async(async move {
        let mut c = client(port).await;
        let both = c
            .check(request(url_encode(&worker_pem), "/api/jobs", &xfcc))
            .await
            .expect("rpc");
        assert_eq!(
            allowed_principal(both.get_ref()).as_deref(),
            Some("worker-1@example.com"),
            "{both:?}"
        );
        let header_only = c
            .check(request(String::new(), "/api/jobs", &xfcc))
            .await
            .expect("rpc");
        assert_eq!(
            allowed_principal(header_only.get_ref()).as_deref(),
            Some("admin@example.com"),
            "the header is trusted here: {header_only:?}"
        );
    });
}

/// Many answers in flight on one HTTP/2 connection, written out together: h2 copies an answer
/// under 1 KiB into its write buffer behind the others and writes a longer one on its own
/// (certgate's connections report non-vectored writes for that). Each still reaches its own
/// request, whole: 240 checks at once on one channel, two in three allows (~600 B answers)
/// and one in three a deny naming its own 1.5 KB policy.
#[test]
fn answers_written_together_each_reach_their_own_request() {
    let s = setup();
    let port = s.world.grpc_port;
    let admin_pem = s.admin_pem.clone();
    super::world::run_async(async move {
        let channel = client(port).await;
        let mut checks = tokio::task::JoinSet::new();
        for i in 0..240 {
            let mut c = channel.clone();
            let mut check = request(url_encode(&admin_pem), "/api/x", &[]);
            let policy = (i % 3 == 0).then(|| format!("{i:03}-{}", "p".repeat(1500)));
            if let (Some(policy), Some(a)) = (&policy, check.attributes.as_mut()) {
                a.context_extensions.insert("policy".into(), policy.clone());
            }
            checks.spawn(async move {
                let answer = c.check(check).await.expect("rpc").into_inner();
                (policy, answer)
            });
        }
        let mut seen = 0;
        while let Some(done) = checks.join_next().await {
            let (policy, answer) = done.expect("task");
            seen += 1;
            match policy {
                Some(policy) => {
                    assert!(answer.encoded_len() > 1024, "{}", answer.encoded_len());
                    let (status, body) = deny_body(&answer).expect("denied");
                    assert_eq!(status, 403, "{body}");
                    assert!(
                        body["message"]
                            .as_str()
                            .is_some_and(|m| m.contains(&format!("'{policy}'"))),
                        "another request's deny: {body}"
                    );
                }
                None => {
                    assert!(answer.encoded_len() < 1024, "{}", answer.encoded_len());
                    assert_eq!(
                        allowed_principal(&answer).as_deref(),
                        Some("admin@example.com"),
                        "not allowed as the admin: {answer:?}"
                    );
                }
            }
        }
        assert_eq!(seen, 240);
    });
}
