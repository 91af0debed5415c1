//! One HTTP stream: read what the decision needs out of Envoy's buffers, decide (inline on a
//! cache hit, paused on the engine's runtime otherwise), and apply the answer.

use std::sync::{Arc, Mutex, PoisonError};

use certgate::embed::{Answer, Decision, Request, XFCC};

use crate::abi::{self, Buffer, FilterEnvoy, Header};
use crate::config::{Fault, FilterConfig, RoutePolicy};

/// Dynamic metadata namespace of the answer (`%DYNAMIC_METADATA(certgate:principal)%`).
const METADATA_NAMESPACE: &str = "certgate";

/// An answer computed on the engine's runtime, waiting for the stream's worker thread.
type Slot = Arc<Mutex<Option<Answer>>>;

/// The module side of one stream.
pub struct Filter {
    config: *const FilterConfig,
    pending: Option<Slot>,
}

impl Filter {
    /// A stream of `config` (which Envoy keeps alive while any of its streams exist).
    pub fn new(config: *const FilterConfig) -> Filter {
        Filter {
            config,
            pending: None,
        }
    }

    fn config(&self) -> &FilterConfig {
        // SAFETY: Envoy destroys a filter configuration only after all of its filters.
        unsafe { &*self.config }
    }

    /// Decide from the request headers. Nothing of the request (body included) goes
    /// upstream before the answer: a pending lookup pauses with StopAllIterationAndBuffer.
    pub fn on_request_headers(&mut self, envoy: FilterEnvoy) -> u32 {
        let config = self.config();
        if config.fault == Some(Fault::Panic) {
            panic!("test_fault: panic in the request-headers hook");
        }
        let request = read_request(envoy);
        match config.engine.decide(request, config.lookup_timeout) {
            Decision::Ready(answer) => {
                if apply(envoy, config, &answer) {
                    abi::HEADERS_CONTINUE
                } else {
                    abi::HEADERS_STOP_ITERATION
                }
            }
            Decision::Pending(pending) => {
                let slot = Slot::default();
                // SAFETY: called on the stream's worker thread during one of its hooks.
                let scheduler = Wake(unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_scheduler_new(envoy)
                });
                let answered = slot.clone();
                pending.then(move |answer| {
                    *answered.lock().unwrap_or_else(PoisonError::into_inner) = Some(answer);
                    scheduler.wake();
                });
                self.pending = Some(slot);
                abi::HEADERS_STOP_ALL_ITERATION_AND_BUFFER
            }
        }
    }

    /// The pending answer arrived: apply it and let the request go on, or answer it.
    pub fn on_scheduled(&mut self, envoy: FilterEnvoy) {
        let answer = self
            .pending
            .take()
            .and_then(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner).take());
        let Some(answer) = answer else {
            internal_error(envoy);
            return;
        };
        if apply(envoy, self.config(), &answer) {
            // SAFETY: on the stream's worker thread, inside its scheduled hook.
            unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_decoding(envoy) };
        }
    }
}

/// A stream's scheduler, handed to the runtime thread that finishes the lookup.
struct Wake(abi::Scheduler);

// SAFETY: Envoy's scheduler commit and delete may be called from any thread.
unsafe impl Send for Wake {}

impl Wake {
    /// Run the stream's scheduled hook on its worker (a no-op when the client has gone).
    fn wake(self) {
        // SAFETY: the scheduler came from scheduler_new and is deleted exactly once, here.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(self.0, 0);
            abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(self.0);
        }
    }
}

/// Every value of request header `name`, in order; borrowed for the current hook.
fn header_values<'a>(envoy: FilterEnvoy, name: &str) -> Vec<&'a [u8]> {
    let mut values = Vec::new();
    let mut count = 0usize;
    let mut index = 0;
    loop {
        let mut value = Buffer::NULL;
        // SAFETY: valid out-pointers; Envoy keeps the value until the hook returns.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                envoy,
                abi::REQUEST_HEADER,
                Buffer::of(name.as_bytes()),
                &mut value,
                index,
                &mut count,
            )
        };
        if !found || index >= count {
            return values;
        }
        // SAFETY: as above.
        values.push(unsafe { value.bytes() });
        index += 1;
    }
}

fn header_text(envoy: FilterEnvoy, name: &str) -> String {
    header_values(envoy, name)
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// Copy out of Envoy what the decision needs (its buffers die with the hook).
fn read_request(envoy: FilterEnvoy) -> Request {
    let mut digest = Buffer::NULL;
    // SAFETY: a valid out-pointer; a missing attribute leaves it null, which reads as "no
    // client certificate" and is denied.
    let peer_sha256 = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
            envoy,
            abi::ATTRIBUTE_PEER_SHA256,
            &mut digest,
        )
        .then(|| String::from_utf8_lossy(digest.bytes()).into_owned())
    };
    // SAFETY: Envoy returns the pointer per_route_config_new made, or null.
    let route = unsafe { abi::envoy_dynamic_module_callback_get_most_specific_route_config(envoy) };
    // SAFETY: a non-null route config is a live RoutePolicy (Envoy keeps the route config alive
    // for the stream).
    let policy = unsafe { route.cast::<RoutePolicy>().as_ref() }.map(|p| p.0.clone());
    Request {
        peer_sha256: peer_sha256.unwrap_or_default(),
        xfcc: header_values(envoy, XFCC)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect(),
        policy,
        method: header_text(envoy, ":method"),
        path: header_text(envoy, ":path"),
        host: header_text(envoy, ":authority"),
        request_id: header_text(envoy, "x-request-id"),
    }
}

fn set_header(envoy: FilterEnvoy, name: &str, value: Option<&str>) {
    let value = value.map_or(Buffer::NULL, |v| Buffer::of(v.as_bytes()));
    // SAFETY: Envoy copies key and value before returning.
    unsafe {
        abi::envoy_dynamic_module_callback_http_set_header(
            envoy,
            abi::REQUEST_HEADER,
            Buffer::of(name.as_bytes()),
            value,
        );
    }
}

/// Apply `answer`: identity headers (and the removal of forged ones and of XFCC) on allow,
/// a local reply on deny; metadata either way. Returns whether the request goes on.
fn apply(envoy: FilterEnvoy, config: &FilterConfig, answer: &Answer) -> bool {
    for (key, value) in answer.metadata() {
        // SAFETY: Envoy copies the three buffers.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
                envoy,
                Buffer::of(METADATA_NAMESPACE.as_bytes()),
                Buffer::of(key.as_bytes()),
                Buffer::of(value.as_bytes()),
            );
        }
    }
    if let Some(body) = answer.deny_body() {
        send(
            envoy,
            answer.status(),
            "application/json",
            body,
            "certgate_denied",
        );
        return false;
    }
    let set = answer.allow_headers();
    // Whatever the client sent under an identity header name never reaches the upstream:
    // the names set here are overwritten, the others removed.
    for name in answer.identity_header_names() {
        if !set.iter().any(|(n, _)| *n == name) {
            set_header(envoy, name, None);
        }
    }
    for (name, value) in &set {
        set_header(envoy, name, Some(value));
    }
    if !config.forward_xfcc {
        set_header(envoy, XFCC, None);
    }
    true
}

fn send(envoy: FilterEnvoy, status: u16, content_type: &str, body: &str, details: &str) {
    let headers = [Header {
        key: Buffer::of(b"content-type"),
        value: Buffer::of(content_type.as_bytes()),
    }];
    // SAFETY: Envoy copies headers, body and details before returning.
    unsafe {
        abi::envoy_dynamic_module_callback_http_send_response(
            envoy,
            u32::from(status),
            headers.as_ptr(),
            headers.len(),
            Buffer::of(body.as_bytes()),
            Buffer::of(details.as_bytes()),
        );
    }
}

/// The answer when the module itself failed (a panic in a hook): 500, never a forward.
pub fn internal_error(envoy: FilterEnvoy) {
    send(
        envoy,
        500,
        "text/plain",
        "certgate module: internal error\n",
        "certgate_internal_error",
    );
}
