//! A configuration file's text: YAML parse and validation of every key (relative paths
//! resolve in the fuzzing world's directory, so its CA and allowlist files are found).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: { certgate_fuzz::world(); }, |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let w = certgate_fuzz::world();
    let _ = certgate::config::Config::from_yaml(text, &w.dir.join("certgate.yaml"));
});
