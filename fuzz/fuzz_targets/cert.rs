//! A forwarded certificate as Envoy's `source.certificate` carries it (URL-encoded PEM, PEM or
//! DER): decoding, the X.509 parse, identity extraction and chain verification.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: { certgate_fuzz::world(); }, |data: &[u8]| {
    let w = certgate_fuzz::world();
    let _ = certgate::cert::identify(data, &w.config.identity, &w.config.trust, w.now);
});
