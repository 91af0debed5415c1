//! The part of Envoy 1.40's dynamic-module C ABI (`source/extensions/dynamic_modules/abi/abi.h`,
//! ABI `v0.2.0`) this module uses, declared by hand: types, enum values and the callbacks
//! Envoy exports. `scripts/check-module-symbols.sh` checks every callback named here against
//! the pinned Envoy binary, because Envoy binds lazily and a missing one aborts at first call.

use std::ffi::c_void;

/// `envoy_dynamic_module_type_envoy_buffer` / `..._module_buffer`: borrowed bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl Buffer {
    pub const NULL: Buffer = Buffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    pub fn of(bytes: &[u8]) -> Buffer {
        Buffer {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }

    /// The bytes, for as long as Envoy keeps them (the current hook at most).
    ///
    /// # Safety
    /// `ptr` must point to `length` readable bytes for `'a`.
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            return &[];
        }
        // SAFETY: the caller vouches for the buffer.
        unsafe { std::slice::from_raw_parts(self.ptr, self.length) }
    }
}

/// `envoy_dynamic_module_type_module_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    pub key: Buffer,
    pub value: Buffer,
}

/// `envoy_dynamic_module_type_module_key_value_pair`: one entry of a metadata batch.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KeyValue {
    pub key: Buffer,
    pub value: Buffer,
}

/// `envoy_dynamic_module_type_http_header_type_RequestHeader`.
pub const REQUEST_HEADER: u32 = 0;

/// `envoy_dynamic_module_type_on_http_filter_request_headers_status`.
pub const HEADERS_CONTINUE: u32 = 0;
pub const HEADERS_STOP_ITERATION: u32 = 1;
pub const HEADERS_STOP_ALL_ITERATION_AND_BUFFER: u32 = 3;
/// `Continue` of the body and trailers statuses.
pub const CONTINUE: u32 = 0;

/// `envoy_dynamic_module_type_attribute_id_ConnectionSha256PeerCertificateDigest`.
pub const ATTRIBUTE_PEER_SHA256: u32 = 38;

pub type FilterEnvoy = *mut c_void;
pub type Scheduler = *mut c_void;

unsafe extern "C" {
    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoy,
        header_type: u32,
    ) -> usize;

    /// Fills `result` (room for `get_headers_size` entries) with every header of the map.
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoy,
        header_type: u32,
        result: *mut Header,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoy,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;

    /// Appends a value; unlike set_header it does not look for the name's existing values.
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoy,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoy,
        status_code: u32,
        headers: *const Header,
        headers_size: usize,
        body: Buffer,
        details: Buffer,
    );

    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterEnvoy,
        attribute_id: u32,
        result: *mut Buffer,
    ) -> bool;

    /// Sets every entry under `namespace`, merging into the stream's metadata once.
    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
        filter: FilterEnvoy,
        namespace: Buffer,
        entries: *const KeyValue,
        count: usize,
    );

    pub fn envoy_dynamic_module_callback_get_most_specific_route_config(
        filter: FilterEnvoy,
    ) -> *const c_void;

    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter: FilterEnvoy,
    ) -> Scheduler;

    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: Scheduler,
        event_id: u64,
    );

    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: Scheduler);

    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoy);
}
