//! A request path (UTF-8, as the proxies hand it over); the first byte's low bit picks the
//! policy's path mode (strict or lenient). `normalize_path` asserts what an accepted path
//! must look like.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The world is only made here for its seed corpus (scripts/fuzz starts any target first).
fuzz_target!(init: { certgate_fuzz::world(); }, |data: &[u8]| {
    let Some((&mode, path)) = data.split_first() else {
        return;
    };
    if let Ok(path) = std::str::from_utf8(path) {
        certgate::fuzzing::normalize_path(path, mode & 1 == 1);
    }
});
