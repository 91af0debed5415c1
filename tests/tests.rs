//! Integration tests: one binary, modules under tests/it/. They start real peers (Envoy 1.40,
//! certgate's own binary, curl) on loopback.

mod it;
