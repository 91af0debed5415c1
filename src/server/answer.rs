//! The `CheckResponse` on the wire, and a memo of allow answers.
//!
//! An allow's answer (six identity headers, the `headers_to_remove` list and the dynamic
//! metadata, ~430 bytes) is the same for every request of one identity under one policy and
//! grant, except for the request id (a response header and a metadata field) and, under
//! `response.remove_identity_headers: when_sent`, the removals. Rendering it took ~25
//! allocations per check; the memo keeps it encoded, per identity, and splices the request id
//! and removals in as it writes the bytes.
//!
//! The memo's rules are [`crate::check::memo`]'s; what it keeps is exactly what
//! [`super::ext_authz::to_response`] renders from an allow but the request id and removals.

use std::sync::Arc;

use crate::check::Outcome;
use crate::check::memo::{Entry, Memos};
use crate::config::identity_headers::{Fields, IdentityField};
use envoy_types::ext_authz::v3::pb::{CheckResponse, HttpResponse};
use envoy_types::pb::google::protobuf::Struct;
use prost::Message;
use prost::bytes::BufMut;

/// Identities whose allow answer is kept: the busy clients; each entry is ~600 bytes.
const MEMO_ENTRIES: usize = 4_096;

/// What the gRPC service writes for one check.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Rendered for this request (denies, shadow answers, the first allow of an identity).
    Full(Box<CheckResponse>),
    /// A memoised allow and what is this request's own.
    Memo {
        /// The encoded answer without the request id and removals.
        memo: Arc<Entry<Memo>>,
        /// This request's id.
        request_id: String,
        /// The identity headers to remove if the memo does not set them.
        sent: Fields,
    },
}

impl Answer {
    /// Write the encoded `CheckResponse` to `buf`.
    pub(crate) fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Answer::Full(response) => {
                // Only fails for lack of room, and a `BufMut` grows.
                let _ = response.encode(buf);
            }
            Answer::Memo {
                memo,
                request_id,
                sent,
            } => memo.encode(request_id, *sent, buf),
        }
    }

    /// The `CheckResponse` this answer encodes.
    pub(crate) fn into_message(self) -> Result<CheckResponse, prost::DecodeError> {
        match self {
            Answer::Full(response) => Ok(*response),
            memo @ Answer::Memo { .. } => {
                let mut buf = Vec::new();
                memo.encode(&mut buf);
                CheckResponse::decode(buf.as_slice())
            }
        }
    }
}

/// One identity's encoded allow.
#[derive(Debug)]
pub(crate) struct Memo {
    /// `OkHttpResponse` fields but `headers_to_remove` and `response_headers_to_add`, encoded.
    ok: Box<[u8]>,
    /// The identity headers the answer does not set: removed when the request may carry them.
    unset: Box<[(IdentityField, Box<str>)]>,
    /// Dynamic metadata entries but `request_id`, encoded; `None` when the answer carries no
    /// metadata (`response.identity: headers_only`).
    metadata: Option<Box<[u8]>>,
}

/// Field keys (tag << 3 | wire type) of the fields written here; every tag is below 16.
const fn key(tag: u8, length_delimited: bool) -> u8 {
    (tag << 3) | if length_delimited { 2 } else { 0 }
}

/// `CheckResponse.status`: OK, an empty `google.rpc.Status`.
const STATUS_OK: [u8; 2] = [key(1, true), 0];
const CHECK_RESPONSE_OK: u8 = key(3, true);
const CHECK_RESPONSE_METADATA: u8 = key(4, true);
const OK_RESPONSE_HEADERS_TO_REMOVE: u8 = key(5, true);
const OK_RESPONSE_HEADERS_TO_ADD: u8 = key(6, true);
const HEADER_OPTION_HEADER: u8 = key(1, true);
const HEADER_OPTION_APPEND_ACTION: u8 = key(3, false);
const STRING_1: u8 = key(1, true);
const STRING_2: u8 = key(2, true);
const STRUCT_FIELDS: u8 = key(1, true);
const ENTRY_VALUE: u8 = key(2, true);
const VALUE_STRING: u8 = key(3, true);

/// Bytes of a length-delimited field with `len` bytes of content, key included.
fn field_len(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

fn put_head(buf: &mut impl BufMut, key: u8, len: usize) {
    buf.put_u8(key);
    // Only fails for lack of room, and a `BufMut` grows.
    let _ = prost::encode_length_delimiter(len, buf);
}

fn put_str(buf: &mut impl BufMut, key: u8, text: &str) {
    put_head(buf, key, text.len());
    buf.put_slice(text.as_bytes());
}

/// The `x-request-id` response header option, as `super::ext_authz::header` builds it.
struct RequestIdHeader<'a>(&'a str);

impl RequestIdHeader<'_> {
    const ACTION: u8 = super::ext_authz::APPEND_ACTION as u8;

    fn header_len(&self) -> usize {
        field_len(super::ext_authz::REQUEST_ID.len()) + field_len(self.0.len())
    }

    fn len(&self) -> usize {
        field_len(self.header_len()) + 2
    }

    fn put(&self, buf: &mut impl BufMut) {
        put_head(buf, HEADER_OPTION_HEADER, self.header_len());
        put_str(buf, STRING_1, super::ext_authz::REQUEST_ID);
        put_str(buf, STRING_2, self.0);
        buf.put_slice(&[HEADER_OPTION_APPEND_ACTION, Self::ACTION]);
    }
}

/// The `request_id` entry of the metadata struct.
struct RequestIdEntry<'a>(&'a str);

impl RequestIdEntry<'_> {
    const KEY: &'static str = "request_id";

    fn value_len(&self) -> usize {
        field_len(self.0.len())
    }

    fn len(&self) -> usize {
        field_len(Self::KEY.len()) + field_len(self.value_len())
    }

    fn put(&self, buf: &mut impl BufMut) {
        put_str(buf, STRING_1, Self::KEY);
        put_head(buf, ENTRY_VALUE, self.value_len());
        put_str(buf, VALUE_STRING, self.0);
    }
}

impl Memo {
    fn encode(&self, request_id: &str, sent: Fields, buf: &mut impl BufMut) {
        buf.put_slice(&STATUS_OK);
        let header = RequestIdHeader(request_id);
        let remove = || {
            self.unset
                .iter()
                .filter(move |(field, _)| sent.has(*field))
                .map(|(_, name)| &**name)
        };
        let removals: usize = remove().map(|name| field_len(name.len())).sum();
        put_head(
            buf,
            CHECK_RESPONSE_OK,
            self.ok.len() + removals + field_len(header.len()),
        );
        buf.put_slice(&self.ok);
        for name in remove() {
            put_str(buf, OK_RESPONSE_HEADERS_TO_REMOVE, name);
        }
        put_head(buf, OK_RESPONSE_HEADERS_TO_ADD, header.len());
        header.put(buf);
        let Some(metadata) = &self.metadata else {
            return;
        };
        let entry = RequestIdEntry(request_id);
        put_head(
            buf,
            CHECK_RESPONSE_METADATA,
            metadata.len() + field_len(entry.len()),
        );
        buf.put_slice(metadata);
        put_head(buf, STRUCT_FIELDS, entry.len());
        entry.put(buf);
    }
}

/// The memo of allow answers, by parsed identity.
pub(crate) struct Answers {
    memos: Memos<Memo>,
}

impl Default for Answers {
    fn default() -> Self {
        Answers {
            memos: Memos::new(MEMO_ENTRIES),
        }
    }
}

impl Answers {
    /// The answer to `outcome` for the request `request_id`, which may carry the identity
    /// headers `sent`.
    pub(crate) fn answer(&self, outcome: &Outcome, request_id: String, sent: Fields) -> Answer {
        match self.memos.get(outcome, render) {
            Some(memo) => Answer::Memo {
                memo,
                request_id,
                sent,
            },
            None => Answer::Full(Box::new(super::ext_authz::to_response(
                outcome,
                &request_id,
                sent,
            ))),
        }
    }
}

/// The memo of an allow: the full answer rendered without a request id or removals, then
/// split.
fn render(outcome: &Outcome) -> Memo {
    let response = super::ext_authz::to_response(outcome, "", Fields(0));
    let set = super::ext_authz::identity_headers(outcome);
    let unset = super::ext_authz::unset(&outcome.config().headers, &set)
        .map(|(field, name)| (field, name.into()))
        .collect();
    let ok = match response.http_response {
        Some(HttpResponse::OkResponse(mut ok)) => {
            ok.response_headers_to_add.clear();
            ok.encode_to_vec()
        }
        _ => Vec::new(),
    };
    let metadata = response.dynamic_metadata.map(|mut m| {
        m.fields.remove(RequestIdEntry::KEY);
        Struct { fields: m.fields }.encode_to_vec().into()
    });
    Memo {
        ok: ok.into(),
        unset,
        metadata,
    }
}
