//! DynamoDB items (one per line, DynamoDB's JSON) read back as principals, certificates and
//! audit records; what decodes must survive a rewrite, and the records verify as a chain.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = certgate::fuzzing::store_items(data);
});
