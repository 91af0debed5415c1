//! One HTTP stream: read what the decision needs out of Envoy's buffers, decide (inline on a
//! cache hit, paused on the engine's runtime otherwise), and apply the answer.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use certgate::embed::{Answer, Decision, METADATA_ENTRIES, Peer, Request, XFCC};
use smallvec::SmallVec;

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
        let headers = Headers::read(envoy);
        match decide(envoy, config, &headers) {
            Decision::Ready(answer) => {
                if apply(envoy, config, &answer, &headers) {
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
        if apply(envoy, self.config(), &answer, &Headers::read(envoy)) {
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

/// Request headers read without an allocation: Envoy's own and a client's usual ones fit.
const INLINE_HEADERS: usize = 24;

/// The request headers, borrowed from Envoy for the current hook: read in one crossing
/// rather than one per name, and valid until a header is set. `complete` is false when Envoy
/// would not hand them over: then every name counts as present, so nothing a client may have
/// sent is left in place on the strength of a failed read.
struct Headers<'a> {
    raw: SmallVec<[Header; INLINE_HEADERS]>,
    complete: bool,
    _loan: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> Headers<'a> {
    fn read(envoy: FilterEnvoy) -> Headers<'a> {
        // SAFETY: called on the stream's worker thread during one of its hooks.
        let count = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers_size(envoy, abi::REQUEST_HEADER)
        };
        let empty = Header {
            key: Buffer::NULL,
            value: Buffer::NULL,
        };
        let mut raw = SmallVec::from_elem(empty, count);
        // SAFETY: `raw` has room for the `count` entries Envoy writes.
        let read = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers(
                envoy,
                abi::REQUEST_HEADER,
                raw.as_mut_ptr(),
            )
        };
        if !read {
            raw.clear();
        }
        Headers {
            raw,
            complete: read,
            _loan: std::marker::PhantomData,
        }
    }

    fn pairs(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        // SAFETY: Envoy keeps the bytes until the hook returns or a header is set, and
        // `apply` reads what it needs of them before setting any.
        self.raw
            .iter()
            .map(|h| unsafe { (h.key.bytes(), h.value.bytes()) })
    }

    /// Every value of `name` (lowercase, as Envoy keeps names), in order.
    fn all(&self, name: &str) -> Vec<&'a [u8]> {
        self.pairs()
            .filter(|(key, _)| *key == name.as_bytes())
            .map(|(_, value)| value)
            .collect()
    }

    /// The first value of `name`, as text (borrowed unless it is not UTF-8).
    fn text(&self, name: &str) -> Cow<'a, str> {
        self.pairs()
            .find(|(key, _)| *key == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v))
            .unwrap_or_default()
    }

    /// Whether the request carries `name` (in any case: configured names need not be
    /// lowercase, and Envoy lowercases what it is given), or may carry it because the read
    /// failed.
    fn has(&self, name: &str) -> bool {
        !self.complete
            || self
                .pairs()
                .any(|(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Decide the request of this hook, borrowing what the decision needs from Envoy's buffers
/// (the engine copies it if the decision outlives the hook).
fn decide(envoy: FilterEnvoy, config: &FilterConfig, headers: &Headers<'_>) -> Decision {
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
    let policy = unsafe { route.cast::<RoutePolicy>().as_ref() }.map(|p| Cow::Borrowed(&*p.0));
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

/// Set (`Some`, appended after any value the request has) or remove (`None`) `name`.
fn header(envoy: FilterEnvoy, name: &str, value: Option<&str>) {
    let name = Buffer::of(name.as_bytes());
    // SAFETY: Envoy copies key and value before returning.
    unsafe {
        match value {
            Some(value) => abi::envoy_dynamic_module_callback_http_add_header(
                envoy,
                abi::REQUEST_HEADER,
                name,
                Buffer::of(value.as_bytes()),
            ),
            None => abi::envoy_dynamic_module_callback_http_set_header(
                envoy,
                abi::REQUEST_HEADER,
                name,
                Buffer::NULL,
            ),
        };
    }
}

/// Apply `answer` to the request whose headers are `headers`: identity headers (and the
/// removal of forged ones and of XFCC) on allow, a local reply on deny; metadata either way.
/// Returns whether the request goes on.
fn apply(
    envoy: FilterEnvoy,
    config: &FilterConfig,
    answer: &Answer,
    headers: &Headers<'_>,
) -> bool {
    // What the request carries is read before the first header is set (which ends Envoy's
    // loan of the header bytes).
    let names = answer.identity_header_names();
    let forged = names.map(|name| headers.has(name));
    let xfcc = !config.forward_xfcc && headers.has(XFCC);
    let empty = KeyValue {
        key: Buffer::NULL,
        value: Buffer::NULL,
    };
    let mut entries = [empty; METADATA_ENTRIES];
    let mut count = 0;
    for (entry, (key, value)) in entries.iter_mut().zip(answer.metadata()) {
        *entry = KeyValue {
            key: Buffer::of(key.as_bytes()),
            value: Buffer::of(value.as_bytes()),
        };
        count += 1;
    }
    if count > 0 {
        // SAFETY: Envoy copies the namespace and every entry before returning.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
                envoy,
                Buffer::of(METADATA_NAMESPACE.as_bytes()),
                entries.as_ptr(),
                count,
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
    // Whatever the client sent under an identity header name never reaches the upstream: it
    // is removed (a request without one, the usual case, costs no call), and only then are
    // the identity's values added.
    for (name, _) in names.iter().zip(forged).filter(|(_, forged)| *forged) {
        header(envoy, name, None);
    }
    for (name, value) in answer.allow_headers() {
        header(envoy, name, Some(value));
    }
    if xfcc {
        header(envoy, XFCC, None);
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
