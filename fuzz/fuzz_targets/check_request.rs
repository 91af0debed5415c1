//! An ext_authz `CheckRequest` as protobuf bytes, through the gRPC service in process: the
//! translation to a `CheckInput`, the whole check against an enrolled embedded store, and the
//! rendering of the `CheckResponse`. The service must answer every request (a deny at worst),
//! never fail the call.
#![no_main]

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization as _;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(init: { certgate_fuzz::world(); }, |data: &[u8]| {
    let Ok(request) = CheckRequest::decode(data) else {
        return;
    };
    let w = certgate_fuzz::world();
    let response = w
        .runtime
        .block_on(w.service.check(tonic::Request::new(request)));
    let response = response.expect("the service answers every request");
    assert!(response.get_ref().status.is_some());
});
