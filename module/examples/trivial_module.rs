//! A trivial Envoy dynamic module, the benchmark's reference point for certgate's module
//! (`cargo xtask bench envoy`, configuration `trivial-module`): it decides nothing. It reads
//! the connection's mTLS flag and the peer certificate's subject, first URI SAN and SHA-256
//! digest, answers 403 without a client certificate, and otherwise sets three request headers
//! and one dynamic-metadata value and removes `x-forwarded-client-cert`: the least a module
//! that passes an identity on can do. What certgate's module costs beyond this row is the
//! decision and its richer answer; what this row costs beyond no filter is Envoy's own.
//!
//! Built with `cargo build --release -p certgate-envoy --example trivial_module`
//! (`target/release/examples/libtrivial_module.so`).

#[allow(
    dead_code,
    reason = "the ABI as certgate's module declares it; this uses part"
)]
#[path = "../src/abi.rs"]
mod abi;
#[path = "../src/required_hooks.rs"]
mod required_hooks;

use std::ffi::{c_char, c_void};

use abi::{Buffer, FilterEnvoy};

/// `envoy_dynamic_module_type_attribute_id` values (abi.h, Envoy 1.40).
const ATTRIBUTE_MTLS: u32 = 29;
const ATTRIBUTE_PEER_SUBJECT: u32 = 33;
const ATTRIBUTE_PEER_URI_SAN: u32 = 37;

unsafe extern "C" {
    fn envoy_dynamic_module_callback_http_filter_get_attribute_bool(
        filter: FilterEnvoy,
        attribute_id: u32,
        result: *mut bool,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter: FilterEnvoy,
        namespace: Buffer,
        key: Buffer,
        value: Buffer,
    );
}

/// Something non-null for Envoy to hold: the module keeps no state.
const STATE: *const c_void = std::ptr::NonNull::<u8>::dangling()
    .as_ptr()
    .cast_const()
    .cast();

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    c"v0.2.0".as_ptr()
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _config_envoy: *mut c_void,
    _name: Buffer,
    _config: Buffer,
) -> *const c_void {
    STATE
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_config: *const c_void) {}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_new(
    _config: *const c_void,
    _filter_envoy: FilterEnvoy,
) -> *mut c_void {
    STATE.cast_mut()
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_filter: *mut c_void) {}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _envoy: FilterEnvoy,
    _module: *mut c_void,
    _event_id: u64,
) {
}

/// The peer certificate's attribute `id`, copied out of Envoy's buffer (valid only until the
/// next setter); empty when Envoy has none.
fn attribute(envoy: FilterEnvoy, id: u32) -> Vec<u8> {
    let mut value = Buffer::NULL;
    // SAFETY: on the stream's worker thread, inside its headers hook; the buffer is read
    // before any setter runs.
    unsafe {
        if abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
            envoy, id, &mut value,
        ) {
            value.bytes().to_vec()
        } else {
            Vec::new()
        }
    }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoy,
    _module: *mut c_void,
    _end_of_stream: bool,
) -> u32 {
    let mut mtls = false;
    // SAFETY: on the stream's worker thread, inside its headers hook.
    let known = unsafe {
        envoy_dynamic_module_callback_http_filter_get_attribute_bool(
            envoy,
            ATTRIBUTE_MTLS,
            &mut mtls,
        )
    };
    if !(known && mtls) {
        // SAFETY: as above; the body and details are static.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                envoy,
                403,
                std::ptr::null(),
                0,
                Buffer::of(b"no client certificate\n"),
                Buffer::of(b"trivial_module_no_certificate"),
            );
        }
        return abi::HEADERS_STOP_ITERATION;
    }
    let subject = attribute(envoy, ATTRIBUTE_PEER_SUBJECT);
    let uri = attribute(envoy, ATTRIBUTE_PEER_URI_SAN);
    let digest = attribute(envoy, abi::ATTRIBUTE_PEER_SHA256);
    let set = |name: &str, value: Buffer| {
        // SAFETY: as above; Envoy copies the name and value.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                envoy,
                abi::REQUEST_HEADER,
                Buffer::of(name.as_bytes()),
                value,
            )
        };
    };
    set("x-client-subject", Buffer::of(&subject));
    set("x-client-uri-san", Buffer::of(&uri));
    set("x-client-cert-sha256", Buffer::of(&digest));
    // A null value removes the header.
    set("x-forwarded-client-cert", Buffer::NULL);
    // SAFETY: as above; Envoy copies the namespace, key and value.
    unsafe {
        envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
            envoy,
            Buffer::of(b"trivial"),
            Buffer::of(b"subject"),
            Buffer::of(&subject),
        );
    }
    abi::HEADERS_CONTINUE
}
