//! The HTTP-filter hooks Envoy 1.40 requires at load that certgate's module (and the bench's
//! trivial module, `examples/trivial_module.rs`) have nothing to do in: a request is decided
//! by its headers alone, and paused (headers and body) until then.

use std::ffi::c_void;

use crate::abi::{self, FilterEnvoy};

/// After the filter and module pointers, the parameters as abi.h declares them; the status
/// ones answer Continue (0).
macro_rules! no_op_hooks {
    (status { $($status:ident($($arg:ty),*);)* } void { $($void:ident($($varg:ty),*);)* }) => {
        $(
            #[unsafe(no_mangle)]
            extern "C" fn $status(_: FilterEnvoy, _: *mut c_void $(, _: $arg)*) -> u32 {
                abi::CONTINUE
            }
        )*
        $(
            #[unsafe(no_mangle)]
            extern "C" fn $void(_: FilterEnvoy, _: *mut c_void $(, _: $varg)*) {}
        )*
    };
}

no_op_hooks! {
    status {
        envoy_dynamic_module_on_http_filter_request_body(bool);
        envoy_dynamic_module_on_http_filter_request_trailers();
        envoy_dynamic_module_on_http_filter_response_headers(bool);
        envoy_dynamic_module_on_http_filter_response_body(bool);
        envoy_dynamic_module_on_http_filter_response_trailers();
    }
    void {
        envoy_dynamic_module_on_http_filter_stream_complete();
        // callout id, result, headers, headers size, body chunks, chunks size
        envoy_dynamic_module_on_http_filter_http_callout_done(u64, u32, *const c_void, usize, *const c_void, usize);
        // stream id, headers, size, end of stream
        envoy_dynamic_module_on_http_filter_http_stream_headers(u64, *const c_void, usize, bool);
        // stream id, data chunks, size, end of stream
        envoy_dynamic_module_on_http_filter_http_stream_data(u64, *const c_void, usize, bool);
        // stream id, trailers, size
        envoy_dynamic_module_on_http_filter_http_stream_trailers(u64, *const c_void, usize);
        envoy_dynamic_module_on_http_filter_http_stream_complete(u64);
        // stream id, reset reason
        envoy_dynamic_module_on_http_filter_http_stream_reset(u64, u32);
        envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark();
        envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark();
    }
}
