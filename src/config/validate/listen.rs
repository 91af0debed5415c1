//! `listen`, its limits, and the forwarded-certificate headers believed on the listeners.

use std::net::SocketAddr;

use super::Validator;
use crate::cert::CertEncoding;
use crate::config::raw::{RawForwarded, RawLimits};
use crate::config::{ForwardedSource, ListenLimits, TrustedProxy, Via};

impl Validator<'_> {
    pub(super) fn limits(&mut self, raw: &RawLimits) -> ListenLimits {
        let key = |k: &str| format!("listen.limits.{k}");
        let mut connections = |k: &str, v: u64| {
            // More than a million descriptors is beyond any RLIMIT_NOFILE we would get.
            self.count(&key(k), v, 1, 1_000_000) as usize
        };
        let grpc_max_connections = connections("grpc_max_connections", raw.grpc_max_connections);
        let http_max_connections = connections("http_max_connections", raw.http_max_connections);
        let admin_max_connections = connections("admin_max_connections", raw.admin_max_connections);
        let mut positive = |k: &str, text: &str| {
            let d = self.duration(&key(k), text);
            if d.is_zero() && humantime::parse_duration(text).is_ok() {
                self.problem(key(k), "must be greater than zero");
            }
            d
        };
        let header_read_timeout = positive("header_read_timeout", &raw.header_read_timeout);
        let request_timeout = positive("request_timeout", &raw.request_timeout);
        let tcp_keepalive = positive("tcp_keepalive", &raw.tcp_keepalive);
        let size_key = key("grpc_max_message_size");
        let reported = self.problems.len();
        let size = self.size(&size_key, &raw.grpc_max_message_size);
        // 4 KiB: below that not even a certificate fits; 64 MiB: past that one request
        // could hold a noticeable share of a replica's memory.
        let grpc_max_message_size = if self.problems.len() == reported {
            self.count(&size_key, size, 4 << 10, 64 << 20) as usize
        } else {
            ListenLimits::default().grpc_max_message_size
        };
        let grpc_max_concurrent_streams = self.count(
            &key("grpc_max_concurrent_streams"),
            raw.grpc_max_concurrent_streams,
            1,
            100_000,
        ) as u32;
        ListenLimits {
            grpc_max_connections,
            http_max_connections,
            admin_max_connections,
            header_read_timeout,
            request_timeout,
            tcp_keepalive,
            grpc_max_message_size,
            grpc_max_concurrent_streams,
        }
    }

    pub(super) fn addr(&mut self, key: &str, text: Option<&str>) -> Option<SocketAddr> {
        let text = text.filter(|t| !t.is_empty())?;
        text.parse()
            .map_err(|_| {
                self.problem(
                    key,
                    format!("\"{text}\" is not an address like 127.0.0.1:9001"),
                )
            })
            .ok()
    }

    pub(super) fn forwarded(&mut self, i: usize, raw: RawForwarded) -> ForwardedSource {
        let key = format!("forwarded_certificates[{i}]");
        let header = self.header(&format!("{key}.header"), raw.header);
        let via = raw.via.unwrap_or_else(|| {
            self.problem(
                format!("{key}.via"),
                "name the way in this header is believed on: `forward_auth` (the ingress that \
                 calls the HTTP listener sets it) or `ext_authz` (only x-forwarded-client-cert \
                 from an Envoy with forward_client_cert_details: SANITIZE_SET)",
            );
            Via::ForwardAuth
        });
        match via {
            Via::ExtAuthz => {
                // Envoy copies every client header into the CheckRequest; the only header it
                // rewrites itself is XFCC, and only under SANITIZE_SET (SANITIZE drops it).
                if header != "x-forwarded-client-cert" || raw.format != CertEncoding::Xfcc {
                    self.problem(
                        format!("{key}.header"),
                        format!(
                            "\"{header}\" (format {}) cannot be trusted via ext_authz: Envoy \
                             passes client-sent headers through to certgate, so a client without \
                             a certificate could send any enrolled certificate in it; via \
                             ext_authz only `x-forwarded-client-cert` with `format: xfcc` is \
                             accepted",
                            raw.format.as_str()
                        ),
                    );
                }
                if raw.envoy_forward_client_cert.as_deref() != Some("sanitize_set") {
                    self.problem(
                        format!("{key}.envoy_forward_client_cert"),
                        "via ext_authz, XFCC is trusted only from an Envoy that replaces any \
                         client-sent copy: configure its HTTP connection manager with \
                         forward_client_cert_details: SANITIZE_SET (Istio: gatewayTopology \
                         forwardClientCertDetails: SANITIZE_SET) and say so here with \
                         `envoy_forward_client_cert: sanitize_set`",
                    );
                }
            }
            Via::ForwardAuth => {
                if raw.envoy_forward_client_cert.is_some() {
                    self.problem(
                        format!("{key}.envoy_forward_client_cert"),
                        "only meaningful with via: ext_authz",
                    );
                }
            }
        }
        if raw.trusted_proxies.is_empty() {
            self.problem(
                format!("{key}.trusted_proxies"),
                "name the proxies allowed to set this header (CIDRs, or \"unix\" for ext_authz)",
            );
        }
        let trusted = raw
            .trusted_proxies
            .iter()
            .enumerate()
            .filter_map(|(j, text)| {
                let at = format!("{key}.trusted_proxies[{j}]");
                if text == "unix" {
                    if via == Via::ForwardAuth {
                        self.problem(
                            at,
                            "\"unix\" names callers of the gRPC unix socket; the forward-auth \
                             listener is TCP only",
                        );
                        return None;
                    }
                    return Some(TrustedProxy::Unix);
                }
                let net = text
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                net.map(|n| TrustedProxy::Net(canonical_net(n)))
                    .map_err(|_| {
                        self.problem(
                            at,
                            format!("\"{text}\" is not a CIDR, an IP address or \"unix\""),
                        )
                    })
                    .ok()
            })
            .collect();
        ForwardedSource {
            via,
            header,
            encoding: raw.format,
            trusted,
        }
    }
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it is, so it
/// matches peers the way [`ForwardedSource::trusts`] sees them.
fn canonical_net(net: ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(v6) => match (v6.addr().to_ipv4_mapped(), v6.prefix_len()) {
            (Some(v4), len) if len >= 96 => {
                ipnet::Ipv4Net::new(v4, len - 96).map_or(net, ipnet::IpNet::V4)
            }
            _ => net,
        },
        v4 => v4,
    }
}
