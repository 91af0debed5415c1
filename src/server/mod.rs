//! The transport adapters: Envoy ext_authz over gRPC, gRPC health, HTTP forward-auth, and the
//! listeners that accept their connections within `listen.limits`. They translate the wire to
//! a [`crate::check::CheckInput`] and an [`crate::check::Outcome`] back; none decides anything.

pub(crate) mod answer;
pub mod authz_service;
pub mod ext_authz;
pub(crate) mod forward_auth;
pub(crate) mod health;
pub(crate) mod listener;
pub(crate) mod metadata;

use std::net::IpAddr;

use crate::config::{ForwardedSource, Via};

/// The first configured forwarded-certificate source for the way in `via` that `peer` is
/// trusted to set (`peer` `None`: the unix socket) and that the request carries, with the
/// header's value as `header` reads it. Sources of the other way in, and untrusted callers'
/// headers, are ignored.
pub(crate) fn forwarded_certificate<'s, T>(
    sources: &'s [ForwardedSource],
    via: Via,
    peer: Option<IpAddr>,
    header: impl Fn(&'s str) -> Option<T>,
) -> Option<(&'s ForwardedSource, T)> {
    sources
        .iter()
        .filter(|s| s.via == via && s.trusts(peer))
        .find_map(|s| header(&s.header).map(|v| (s, v)))
}
