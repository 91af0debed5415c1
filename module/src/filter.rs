//! One HTTP stream: read what the decision needs out of Envoy's buffers, decide (inline on a
//! cache hit, paused on the engine's runtime otherwise), and apply the answer.

use std::sync::{Arc, Mutex, PoisonError};

use certgate::embed::{Answer, Decision, Peer, Request, XFCC};

use crate::abi::{self, Buffer, FilterEnvoy, Header, KeyValue};
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
        match decide(envoy, config) {
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

/// The request headers, borrowed from Envoy for the current hook: read in one crossing
/// rather than one per name.
struct Headers<'a>(Vec<(&'a [u8], &'a [u8])>);

impl<'a> Headers<'a> {
    fn read(envoy: FilterEnvoy) -> Headers<'a> {
        // SAFETY: called on the stream's worker thread during one of its hooks.
        let count = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers_size(envoy, abi::REQUEST_HEADER)
        };
        let mut raw: Vec<Header> = (0..count)
            .map(|_| Header {
                key: Buffer::NULL,
                value: Buffer::NULL,
            })
            .collect();
        // SAFETY: `raw` has room for the `count` entries Envoy writes; Envoy keeps the bytes
        // until the hook returns or a header is set.
        let read = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers(
                envoy,
                abi::REQUEST_HEADER,
                raw.as_mut_ptr(),
            )
        };
        if !read {
            return Headers(Vec::new());
        }
        // SAFETY: as above.
        Headers(
            raw.iter()
                .map(|h| unsafe { (h.key.bytes(), h.value.bytes()) })
                .collect(),
        )
    }

    /// Every value of `name` (lowercase, as Envoy keeps names), in order.
    fn all(&self, name: &str) -> Vec<&'a [u8]> {
        self.0
            .iter()
            .filter(|(key, _)| *key == name.as_bytes())
            .map(|(_, value)| *value)
            .collect()
    }

    /// The first value of `name`, as text.
    fn text(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(key, _)| *key == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }
}

/// Decide the request of this hook: what the decision needs is copied out of Envoy (its
/// buffers die with the hook), the client certificate only borrowed while deciding.
fn decide(envoy: FilterEnvoy, config: &FilterConfig) -> Decision {
    let mut digest = Buffer::NULL;
    // SAFETY: a valid out-pointer; a missing attribute leaves it null, which reads as "no
    // client certificate" and is denied.
    let peer_sha256 = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
            envoy,
            abi::ATTRIBUTE_PEER_SHA256,
            &mut digest,
        );
        digest.bytes()
    };
    // SAFETY: Envoy returns the pointer per_route_config_new made, or null.
    let route = unsafe { abi::envoy_dynamic_module_callback_get_most_specific_route_config(envoy) };
    // SAFETY: a non-null route config is a live RoutePolicy (Envoy keeps the route config alive
    // for the stream).
    let policy = unsafe { route.cast::<RoutePolicy>().as_ref() }.map(|p| p.0.clone());
    let headers = Headers::read(envoy);
    let request = Request {
        policy,
        method: headers.text(":method"),
        path: headers.text(":path"),
        host: headers.text(":authority"),
        request_id: headers.text("x-request-id"),
    };
    let xfcc = || headers.all(XFCC);
    let peer = Peer {
        sha256_hex: peer_sha256,
        xfcc: &xfcc,
    };
    config.engine.decide(request, peer, config.lookup_timeout)
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
    let metadata = answer.metadata();
    let entries: Vec<KeyValue> = metadata
        .iter()
        .map(|(key, value)| KeyValue {
            key: Buffer::of(key.as_bytes()),
            value: Buffer::of(value.as_bytes()),
        })
        .collect();
    // SAFETY: Envoy copies the namespace and every entry before returning.
    unsafe {
        abi::envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
            envoy,
            Buffer::of(METADATA_NAMESPACE.as_bytes()),
            entries.as_ptr(),
            entries.len(),
        );
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
