//! A fetched CRL (DER or PEM): decode, profile parse, signature, times, index.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: { certgate_fuzz::world(); }, |data: &[u8]| {
    let w = certgate_fuzz::world();
    let _ = w.crl.run(data, w.now);
});
