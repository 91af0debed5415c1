//! certgate inside Envoy 1.40: an HTTP filter loaded as a dynamic module
//! (`envoy.filters.http.dynamic_modules`, `libcertgate_envoy.so`) that decides every request
//! with certgate's own checker (`certgate::embed`) instead of asking a certgate server over
//! gRPC. The hooks Envoy calls are here; what a request becomes and how an answer is applied
//! is in `filter`.
//!
//! Every hook runs inside `catch_unwind`: a panic unwinding into Envoy aborts the process, so a
//! panic becomes a local 500 for that request (never a forwarded request) and Envoy serves on.

mod abi;
mod config;
mod filter;
mod required_hooks;

use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use abi::{Buffer, FilterEnvoy};
use config::{FilterConfig, RoutePolicy};
use filter::Filter;

/// Run `hook`, turning a panic into `fallback` (Envoy must never see an unwind).
fn guarded<T>(name: &str, fallback: T, hook: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(hook)).unwrap_or_else(|_| {
        tracing::error!(hook = name, "certgate module hook panicked");
        fallback
    })
}

/// The ABI version this module was written against (Envoy 1.40).
#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    c"v0.2.0".as_ptr()
}

/// A configuration parsed from the `filter_config` bytes in `config`, boxed for Envoy to
/// hold; or null, and Envoy refuses the filter, so no request is served without a working
/// checker.
fn make<T>(
    what: &str,
    config: Buffer,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> *const c_void {
    guarded(what, std::ptr::null(), || {
        // SAFETY: Envoy passes the filter_config bytes for the duration of this hook.
        match parse(unsafe { config.bytes() }) {
            Ok(value) => Box::into_raw(Box::new(value)).cast_const().cast(),
            Err(why) => {
                tracing::error!(error = why, "certgate module: {what} refused");
                eprintln!("certgate module: {what} refused: {why}");
                std::ptr::null()
            }
        }
    })
}

/// Drop what [`make`] gave Envoy.
///
/// # Safety
/// `ptr` must come from `make::<T>` and be released once.
unsafe fn release<T>(what: &str, ptr: *const c_void) {
    // SAFETY: per the contract.
    guarded(what, (), || {
        drop(unsafe { Box::from_raw(ptr.cast::<T>().cast_mut()) })
    });
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _config_envoy: *mut c_void,
    _name: Buffer,
    config: Buffer,
) -> *const c_void {
    make("filter_config", config, |raw| {
        FilterConfig::load(raw).map_err(|e| e.to_string())
    })
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    // SAFETY: Envoy destroys what config_new returned, once.
    unsafe { release::<FilterConfig>("filter_config", config) }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: Buffer,
    config: Buffer,
) -> *const c_void {
    make("per-route filter_config", config, |raw| {
        RoutePolicy::parse(raw).ok_or_else(|| "it must name a policy".to_owned())
    })
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(config: *const c_void) {
    // SAFETY: Envoy destroys what per_route_config_new returned, once.
    unsafe { release::<RoutePolicy>("per-route filter_config", config) }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy: FilterEnvoy,
) -> *mut c_void {
    guarded("filter_new", std::ptr::null_mut(), || {
        let filter = Filter::new(config.cast::<FilterConfig>());
        Box::into_raw(Box::new(filter)).cast()
    })
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *mut c_void) {
    guarded("filter_destroy", (), || {
        // SAFETY: from Box::into_raw in filter_new, destroyed once. A lookup still pending
        // holds its own handles and finds no one to resume.
        drop(unsafe { Box::from_raw(filter.cast::<Filter>()) });
    });
}

/// The filter behind a module pointer.
///
/// # Safety
/// `filter` must come from `envoy_dynamic_module_on_http_filter_new` and not be destroyed.
unsafe fn filter<'a>(filter: *mut c_void) -> &'a mut Filter {
    // SAFETY: per the contract; Envoy calls a stream's hooks on one thread.
    unsafe { &mut *filter.cast::<Filter>() }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoy,
    module: *mut c_void,
    _end_of_stream: bool,
) -> u32 {
    guarded_reply(envoy, "request_headers", || {
        // SAFETY: Envoy passes the pointer filter_new returned.
        unsafe { filter(module) }.on_request_headers(envoy)
    })
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    envoy: FilterEnvoy,
    module: *mut c_void,
    _event_id: u64,
) {
    guarded_reply(envoy, "scheduled", || {
        // SAFETY: Envoy passes the pointer filter_new returned.
        unsafe { filter(module) }.on_scheduled(envoy);
        abi::HEADERS_STOP_ITERATION
    });
}

/// [`guarded`] for the hooks that decide: a panic answers 500 locally, so the request is
/// never forwarded undecided.
fn guarded_reply(envoy: FilterEnvoy, name: &str, hook: impl FnOnce() -> u32) -> u32 {
    guarded(name, None, || Some(hook())).unwrap_or_else(|| {
        filter::internal_error(envoy);
        abi::HEADERS_STOP_ITERATION
    })
}
