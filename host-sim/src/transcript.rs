//! The JSON shapes of the `host-sim` CLI, defined once so the CLI, integration tests and other
//! tools read and write the same files: the request file, the HTTP and gRPC call response files
//! and the upstream response file that `host-sim run` takes, the [`Transcript`] it prints, and
//! the [`ModuleReport`] of `host-sim info`.
//!
//! Bodies travel as `"body": "..."` plus `"body_base64": bool`: UTF-8 text when the bytes are
//! valid UTF-8, else standard base64 with `body_base64: true`. Header maps are arrays of
//! `[name, value]` pairs, in order, duplicates allowed (as the ABI carries them). Input files
//! reject unknown keys, so a misspelt key is an error rather than silently ignored.

use crate::engine::ModuleInfo;
use crate::hostfn::HostFunction;
use crate::profile::{CalloutFailure, Profile};
use crate::reachability::Reachability;
use crate::vm::{GrpcReply, HttpCallReply};
use crate::wasi::PREVIEW1_FUNCTIONS;
use base64::Engine as _;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// How bodies of the host's records serialize (defined with them, in [`crate::state`]).
pub use crate::state::bytes_as_text;

/// A header map as the files carry it: `[name, value]` pairs in order.
pub type Headers = Vec<(String, String)>;

// ---- Bodies ----------------------------------------------------------------------------------

/// Encodes bytes for a `"body"` key: `(text, false)` when they are UTF-8, else
/// `(base64, true)`.
pub fn encode_body(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(bytes), true),
    }
}

/// Decodes a `"body"` value; `key` names it in the error.
pub fn decode_body(text: &str, base64: bool, key: &str) -> Result<Vec<u8>, String> {
    if !base64 {
        return Ok(text.as_bytes().to_vec());
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("`{key}` is not valid base64 (`body_base64` is true): {e}"))
}

// ---- Header pairs ----------------------------------------------------------------------------

/// One `[name, value]` pair, with an error that says so when the shape is wrong.
struct Pair(String, String);

impl<'de> Deserialize<'de> for Pair {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pair, D::Error> {
        struct PairVisitor;
        impl<'de> Visitor<'de> for PairVisitor {
            type Value = Pair;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a [name, value] pair of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Pair, A::Error> {
                let name: String = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let value: String = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(Pair(name, value))
            }
        }
        d.deserialize_seq(PairVisitor)
    }
}

fn pairs<'de, D: Deserializer<'de>>(d: D) -> Result<Headers, D::Error> {
    let pairs = Vec::<Pair>::deserialize(d)?;
    Ok(pairs.into_iter().map(|Pair(k, v)| (k, v)).collect())
}

fn optional_pairs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Headers>, D::Error> {
    pairs(d).map(Some)
}

// ---- Request file ----------------------------------------------------------------------------

/// The request `host-sim run` sends through the filter (`--request FILE`).
///
/// ```json
/// {"headers":[[":method","POST"],[":path","/p?x=1"],[":authority","h"]],
///  "body":"...","body_base64":false,"trailers":[]}
/// ```
///
/// `body_chunks` (an array of strings, instead of `body`) sends the body in several chunks;
/// `body_base64` applies to every chunk. An absent or empty body means a request without a body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "RawRequestFile", into = "RawRequestFile")]
pub struct RequestFile {
    /// Request headers, pseudo-headers included.
    pub headers: Headers,
    /// The body as the chunks it arrives in; empty for a request without a body.
    pub body_chunks: Vec<Vec<u8>>,
    /// Request trailers; empty for none.
    pub trailers: Headers,
}

impl RequestFile {
    /// Parses a request file.
    pub fn from_json(bytes: &[u8]) -> Result<RequestFile, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Whether the request has a body.
    pub fn has_body(&self) -> bool {
        !self.body_chunks.is_empty()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequestFile {
    #[serde(deserialize_with = "pairs")]
    headers: Headers,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(default)]
    body_base64: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_chunks: Option<Vec<String>>,
    #[serde(default, deserialize_with = "pairs")]
    trailers: Headers,
}

impl TryFrom<RawRequestFile> for RequestFile {
    type Error = String;
    fn try_from(raw: RawRequestFile) -> Result<RequestFile, String> {
        let body_chunks = match (raw.body, raw.body_chunks) {
            (Some(_), Some(_)) => return Err("give `body` or `body_chunks`, not both".into()),
            (Some(body), None) if body.is_empty() => Vec::new(),
            (Some(body), None) => vec![decode_body(&body, raw.body_base64, "body")?],
            (None, Some(chunks)) => chunks
                .iter()
                .map(|c| decode_body(c, raw.body_base64, "body_chunks"))
                .collect::<Result<_, _>>()?,
            (None, None) => Vec::new(),
        };
        Ok(RequestFile {
            headers: raw.headers,
            body_chunks,
            trailers: raw.trailers,
        })
    }
}

impl From<RequestFile> for RawRequestFile {
    fn from(r: RequestFile) -> RawRequestFile {
        let base64 = r.body_chunks.iter().any(|c| std::str::from_utf8(c).is_err());
        let encode = |c: &Vec<u8>| {
            if base64 {
                base64::engine::general_purpose::STANDARD.encode(c)
            } else {
                String::from_utf8_lossy(c).into_owned()
            }
        };
        let (body, body_chunks) = match r.body_chunks.as_slice() {
            [] => (None, None),
            [one] => (Some(encode(one)), None),
            many => (None, Some(many.iter().map(encode).collect())),
        };
        RawRequestFile {
            headers: r.headers,
            body,
            body_base64: base64,
            body_chunks,
            trailers: r.trailers,
        }
    }
}

// ---- HTTP call response file -----------------------------------------------------------------

/// How `host-sim run` answers one `proxy_http_call` (`--http-call-response FILE`, in the order
/// the calls are made).
///
/// ```json
/// {"status":200,"headers":[["content-type","application/json"]],"body":"...","body_base64":false}
/// {"failure":"timeout"}            // also "broken_connection" and "reset"
/// ```
///
/// `headers` exclude `:status` (it comes from `status`); `trailers` is optional. What the guest
/// sees for a failure is the profile's (see [`crate::profile::HostBehaviour::callout_failure_reply`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawCallResponse", into = "RawCallResponse")]
pub struct CallResponseFile {
    /// The answer, as the driver takes it.
    pub reply: HttpCallReply,
}

impl CallResponseFile {
    /// Parses a response file.
    pub fn from_json(bytes: &[u8]) -> Result<CallResponseFile, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(
        default,
        deserialize_with = "optional_pairs",
        skip_serializing_if = "Option::is_none"
    )]
    headers: Option<Headers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_base64: Option<bool>,
    #[serde(
        default,
        deserialize_with = "optional_pairs",
        skip_serializing_if = "Option::is_none"
    )]
    trailers: Option<Headers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

/// The `"failure"` names, as the files spell them.
const FAILURES: &[(&str, CalloutFailure)] = &[
    ("timeout", CalloutFailure::Timeout),
    ("broken_connection", CalloutFailure::BrokenConnection),
    ("reset", CalloutFailure::Reset),
];

/// The file name of a callout failure (`timeout`, `broken_connection`, `reset`).
pub fn failure_name(failure: CalloutFailure) -> &'static str {
    FAILURES
        .iter()
        .find(|(_, f)| *f == failure)
        .map_or("timeout", |(name, _)| name)
}

impl TryFrom<RawCallResponse> for CallResponseFile {
    type Error = String;
    fn try_from(raw: RawCallResponse) -> Result<CallResponseFile, String> {
        if let Some(name) = raw.failure {
            let others = [
                ("status", raw.status.is_some()),
                ("headers", raw.headers.is_some()),
                ("body", raw.body.is_some()),
                ("body_base64", raw.body_base64.is_some()),
                ("trailers", raw.trailers.is_some()),
            ];
            if let Some((key, _)) = others.iter().find(|(_, present)| *present) {
                return Err(format!("a `failure` answer takes no other keys (found `{key}`)"));
            }
            let failure = FAILURES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, f)| *f)
                .ok_or_else(|| format!("unknown failure {name:?} (expected timeout, broken_connection or reset)"))?;
            return Ok(CallResponseFile {
                reply: HttpCallReply::Failure(failure),
            });
        }
        let status = raw
            .status
            .ok_or("needs `status` (a response) or `failure` (timeout, broken_connection or reset)")?;
        if !(100..=599).contains(&status) {
            return Err(format!("`status` {status} is not an HTTP status (100-599)"));
        }
        let headers = raw.headers.unwrap_or_default();
        if crate::abi::find_header(&headers, ":status").is_some() {
            return Err("give the status as `status`, not as a `:status` header".into());
        }
        let body = decode_body(
            raw.body.as_deref().unwrap_or_default(),
            raw.body_base64.unwrap_or(false),
            "body",
        )?;
        Ok(CallResponseFile {
            reply: HttpCallReply::Response {
                status,
                headers,
                body,
                trailers: raw.trailers.unwrap_or_default(),
            },
        })
    }
}

impl From<CallResponseFile> for RawCallResponse {
    fn from(r: CallResponseFile) -> RawCallResponse {
        match r.reply {
            HttpCallReply::Failure(failure) => RawCallResponse {
                status: None,
                headers: None,
                body: None,
                body_base64: None,
                trailers: None,
                failure: Some(failure_name(failure).to_string()),
            },
            HttpCallReply::Response {
                status,
                headers,
                body,
                trailers,
            } => {
                let (body, base64) = encode_body(&body);
                RawCallResponse {
                    status: Some(status),
                    headers: Some(headers),
                    body: Some(body),
                    body_base64: Some(base64),
                    trailers: (!trailers.is_empty()).then_some(trailers),
                    failure: None,
                }
            }
        }
    }
}

// ---- Upstream response file -------------------------------------------------------------------

/// The upstream's answer to the forwarded request (`--upstream-response FILE`): it drives the
/// filter's response callbacks once the whole request went upstream.
///
/// ```json
/// {"status":200,"headers":[["content-type","text/plain"]],"body":"hello","body_base64":false,
///  "trailers":[],"chunk_size":2}
/// ```
///
/// `chunk_size` (bytes per chunk, the last one shorter) or `chunk_sizes` (each chunk's size, in
/// order, adding up to the body's length) splits the body into several
/// `on_http_response_body` calls; without either the body arrives in one chunk. `headers`
/// exclude `:status` (it comes from `status`) and are passed as given, `content-length`
/// included.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "RawUpstreamResponse", into = "RawUpstreamResponse")]
pub struct UpstreamResponseFile {
    /// HTTP status.
    pub status: u16,
    /// Response headers, without `:status`.
    pub headers: Headers,
    /// The body as the chunks it arrives in; empty for a response without a body.
    pub body_chunks: Vec<Vec<u8>>,
    /// Response trailers; empty for none.
    pub trailers: Headers,
}

impl UpstreamResponseFile {
    /// Parses an upstream response file.
    pub fn from_json(bytes: &[u8]) -> Result<UpstreamResponseFile, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The whole body.
    pub fn body(&self) -> Vec<u8> {
        self.body_chunks.concat()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamResponse {
    status: Option<u16>,
    #[serde(default, deserialize_with = "pairs")]
    headers: Headers,
    #[serde(default)]
    body: String,
    #[serde(default)]
    body_base64: bool,
    #[serde(default, deserialize_with = "pairs", skip_serializing_if = "Vec::is_empty")]
    trailers: Headers,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunk_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunk_sizes: Option<Vec<usize>>,
}

impl TryFrom<RawUpstreamResponse> for UpstreamResponseFile {
    type Error = String;
    fn try_from(raw: RawUpstreamResponse) -> Result<UpstreamResponseFile, String> {
        let status = raw
            .status
            .ok_or("missing field `status` (the upstream's HTTP status)")?;
        if !(100..=599).contains(&status) {
            return Err(format!("`status` {status} is not an HTTP status (100-599)"));
        }
        if crate::abi::find_header(&raw.headers, ":status").is_some() {
            return Err("`headers`: give the status as `status`, not as a `:status` header".into());
        }
        let body = decode_body(&raw.body, raw.body_base64, "body")?;
        let body_chunks = match (raw.chunk_size, raw.chunk_sizes) {
            (Some(_), Some(_)) => return Err("give `chunk_size` or `chunk_sizes`, not both".into()),
            (Some(0), None) => return Err("`chunk_size` must be at least 1 byte".into()),
            (Some(size), None) => body.chunks(size).map(<[u8]>::to_vec).collect(),
            (None, Some(sizes)) => {
                let total: usize = sizes.iter().fold(0usize, |sum, n| sum.saturating_add(*n));
                if total != body.len() {
                    return Err(format!(
                        "`chunk_sizes` add up to {total} bytes but `body` has {} bytes",
                        body.len()
                    ));
                }
                let mut rest = body.as_slice();
                sizes
                    .iter()
                    .map(|n| {
                        let (chunk, tail) = rest.split_at(*n);
                        rest = tail;
                        chunk.to_vec()
                    })
                    .collect()
            }
            (None, None) if body.is_empty() => Vec::new(),
            (None, None) => vec![body],
        };
        Ok(UpstreamResponseFile {
            status,
            headers: raw.headers,
            body_chunks,
            trailers: raw.trailers,
        })
    }
}

impl From<UpstreamResponseFile> for RawUpstreamResponse {
    fn from(r: UpstreamResponseFile) -> RawUpstreamResponse {
        let (body, body_base64) = encode_body(&r.body());
        let chunk_sizes = (r.body_chunks.len() > 1).then(|| r.body_chunks.iter().map(Vec::len).collect());
        RawUpstreamResponse {
            status: Some(r.status),
            headers: r.headers,
            body,
            body_base64,
            trailers: r.trailers,
            chunk_size: None,
            chunk_sizes,
        }
    }
}

// ---- gRPC call response file -----------------------------------------------------------------

/// How `host-sim run` answers one gRPC call or stream the filter opened
/// (`--grpc-call-response FILE`, in the order the calls are made).
///
/// ```json
/// {"initial_metadata":[["x-md","1"]],"messages":["..."],"messages_base64":false,
///  "trailing_metadata":[["x-t","1"]],"status":0,"status_message":""}
/// ```
///
/// Every key is optional. A stream (`proxy_grpc_stream`) gets each part given through its
/// callback (`proxy_on_grpc_receive_initial_metadata`, `proxy_on_grpc_receive` per message,
/// `proxy_on_grpc_receive_trailing_metadata`, then `proxy_on_grpc_close` with `status` and
/// `status_message`); without `status` it stays open. A unary call (`proxy_grpc_call`) gets
/// only its outcome, as in Envoy: the first message through `proxy_on_grpc_receive` when
/// `status` is 0 or absent, else `proxy_on_grpc_close` (see `scenario::run_scenario`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "RawGrpcResponse", into = "RawGrpcResponse")]
pub struct GrpcResponseFile {
    /// The answer, as the driver takes it.
    pub reply: GrpcReply,
}

impl GrpcResponseFile {
    /// Parses a gRPC call response file.
    pub fn from_json(bytes: &[u8]) -> Result<GrpcResponseFile, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrpcResponse {
    #[serde(
        default,
        deserialize_with = "optional_pairs",
        skip_serializing_if = "Option::is_none"
    )]
    initial_metadata: Option<Headers>,
    #[serde(default)]
    messages: Vec<String>,
    #[serde(default)]
    messages_base64: bool,
    #[serde(
        default,
        deserialize_with = "optional_pairs",
        skip_serializing_if = "Option::is_none"
    )]
    trailing_metadata: Option<Headers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status_message: Option<String>,
}

impl TryFrom<RawGrpcResponse> for GrpcResponseFile {
    type Error = String;
    fn try_from(raw: RawGrpcResponse) -> Result<GrpcResponseFile, String> {
        // gRPC status codes are 0 (OK) to 16 (UNAUTHENTICATED) (grpc/grpc doc/statuscodes.md).
        if let Some(code) = raw.status.filter(|c| *c > 16) {
            return Err(format!("`status` {code} is not a gRPC status code (0-16)"));
        }
        if raw.status.is_none() && raw.status_message.is_some() {
            return Err("`status_message` needs `status` (the gRPC status code that closes the call)".into());
        }
        let messages = raw
            .messages
            .iter()
            .map(|m| decode_body(m, raw.messages_base64, "messages"))
            .collect::<Result<_, _>>()?;
        Ok(GrpcResponseFile {
            reply: GrpcReply {
                initial_metadata: raw.initial_metadata,
                messages,
                trailing_metadata: raw.trailing_metadata,
                close: raw.status.map(|code| (code, raw.status_message.unwrap_or_default())),
            },
        })
    }
}

impl From<GrpcResponseFile> for RawGrpcResponse {
    fn from(r: GrpcResponseFile) -> RawGrpcResponse {
        let (messages, messages_base64) = encode_messages(&r.reply.messages);
        let (status, status_message) = match r.reply.close {
            Some((code, message)) => (Some(code), Some(message)),
            None => (None, None),
        };
        RawGrpcResponse {
            initial_metadata: r.reply.initial_metadata,
            messages,
            messages_base64,
            trailing_metadata: r.reply.trailing_metadata,
            status,
            status_message,
        }
    }
}

/// Encodes a list of messages for a `"messages"` key: all UTF-8 text, or all base64 with the
/// flag set when any of them is not UTF-8.
pub fn encode_messages(messages: &[Vec<u8>]) -> (Vec<String>, bool) {
    let base64 = messages.iter().any(|m| std::str::from_utf8(m).is_err());
    let encoded = messages
        .iter()
        .map(|m| {
            if base64 {
                base64::engine::general_purpose::STANDARD.encode(m)
            } else {
                String::from_utf8_lossy(m).into_owned()
            }
        })
        .collect();
    (encoded, base64)
}

// ---- Transcript ------------------------------------------------------------------------------

/// What happened to one request: the JSON `host-sim run` prints.
///
/// The keys of the issue (`configure_ok`, `actions`, `http_calls`, `local_response`, `logs`,
/// `trap`) are stable; the others are additions that help read them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    /// Hex sha256 of the module that ran.
    pub module_sha256: String,
    /// `envoy` or `kong`.
    pub profile: String,
    /// Envoy with a cluster list (`--cluster`): the names `proxy_http_call` accepted. Absent
    /// when every name was accepted, and for Kong, whose calls take `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<String>>,
    /// What `proxy_on_vm_start` returned (true when not exported).
    pub vm_start_ok: bool,
    /// What `proxy_on_configure` returned (true when not exported). When false (or the VM did
    /// not start), no request was sent and the lists below are empty.
    pub configure_ok: bool,
    /// Every stream callback, in order, with the action it returned (`null` when it returns
    /// none, as `on_http_call_response`, or trapped).
    pub actions: Vec<TranscriptAction>,
    /// Every `proxy_http_call`, in the order made.
    pub http_calls: Vec<TranscriptHttpCall>,
    /// The local response the stream ended with, if any (the filter's, or the profile's 5xx
    /// after a trap).
    pub local_response: Option<TranscriptLocalResponse>,
    /// Whether the whole request (headers, body, trailers) went upstream and no local response
    /// was sent.
    pub forwarded_upstream: bool,
    /// What the upstream received, as the filter left it; absent when the request headers
    /// never went upstream.
    pub upstream_request: Option<UpstreamRequest>,
    /// Where the request stayed paused when the stream ended without a local response
    /// (`on_request_headers`, ...).
    pub paused_in: Option<String>,
    /// Response files given but not used because fewer calls were made.
    pub unused_http_call_responses: usize,
    /// Every `proxy_grpc_call` and `proxy_grpc_stream`, in the order made.
    #[serde(default)]
    pub grpc_calls: Vec<TranscriptGrpcCall>,
    /// gRPC response files given but not used because fewer gRPC calls were made.
    #[serde(default)]
    pub unused_grpc_call_responses: usize,
    /// With `--upstream-response`: whether it reached the filter, and why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_response: Option<UpstreamResponseUse>,
    /// What the client got: the filter's local response, or the upstream response as the
    /// filter let it through. Absent when neither came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_response: Option<ClientResponse>,
    /// With `--advance-ms`: what each step of the virtual clock made the filter do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub time_steps: Vec<TimeStep>,
    /// Every log line, guest and host, in order.
    pub logs: Vec<TranscriptLog>,
    /// Why the VM failed, when a callback trapped; `null` otherwise.
    pub trap: Option<String>,
}

/// What became of the `--upstream-response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamResponseUse {
    /// Whether it went through the filter's response callbacks.
    pub used: bool,
    /// Why it was not used: the filter answered locally, or the request never went upstream
    /// whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
}

/// Where the client's response came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseSource {
    /// The upstream response (`--upstream-response`), through the filter.
    Upstream,
    /// The filter's local response (or the host's, after a trap).
    Local,
    /// No response: the stream was reset before one (`proxy_close_stream`).
    Reset,
}

/// The response the client gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResponse {
    /// `upstream` or `local`.
    pub source: ResponseSource,
    /// HTTP status; `null` when the response headers never reached the client (the filter held
    /// them).
    pub status: Option<u32>,
    /// Response headers as the filter left them (without `:status`); empty when they never
    /// reached the client.
    pub headers: Headers,
    /// The body the client got (see `body_base64`): after the filter's edits, only what the
    /// filter let through.
    pub body: String,
    /// Whether `body` is base64.
    pub body_base64: bool,
    /// Response trailers as the filter left them.
    pub trailers: Headers,
    /// Whether the client got the whole response.
    pub complete: bool,
    /// Where the filter held the upstream response when the run ended (`on_response_headers`,
    /// ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_in: Option<String>,
    /// The stream was reset instead (a local response after the response headers had gone,
    /// `proxy_close_stream`, or a trap once the response had started).
    pub reset: bool,
}

impl ClientResponse {
    /// The body bytes.
    pub fn body_bytes(&self) -> Result<Vec<u8>, String> {
        decode_body(&self.body, self.body_base64, "body")
    }
}

/// What one `--advance-ms` step made the filter do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeStep {
    /// How far the clock moved, in milliseconds.
    pub advance_ms: u64,
    /// The virtual time after the step, in milliseconds since the run began.
    pub at_ms: u64,
    /// `proxy_on_tick` calls during the step.
    pub ticks: u64,
    /// Indexes into `http_calls` of the calls whose timeout fired during the step.
    pub timeouts: Vec<usize>,
    /// Indexes into `grpc_calls` of the unary gRPC calls whose timeout fired during the step
    /// (each closed with the profile's timeout status).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_timeouts: Vec<usize>,
    /// Indexes into `http_calls` of the calls made during the step.
    pub http_calls: Vec<usize>,
    /// Indexes into `grpc_calls` of the gRPC calls made during the step.
    pub grpc_calls: Vec<usize>,
    /// Indexes into `http_calls` of the calls a response file answered at the end of the step.
    pub http_calls_answered: Vec<usize>,
    /// Indexes into `grpc_calls` of the gRPC calls a response file answered at the end of the
    /// step.
    pub grpc_calls_answered: Vec<usize>,
    /// Stream callbacks during the step (a timed-out call's `on_http_call_response`, the
    /// response phase once the request went upstream, the end of the stream).
    pub actions: Vec<TranscriptAction>,
    /// The log lines of the step (also in the transcript's `logs`).
    pub logs: Vec<TranscriptLog>,
    /// Whether the filter sent its local response during the step.
    pub local_response: bool,
    /// Why the VM failed, when a callback of the step trapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trap: Option<String>,
}

/// One gRPC call or stream as the filter opened it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptGrpcCall {
    /// `call` (unary, `proxy_grpc_call`) or `stream` (`proxy_grpc_stream`).
    pub kind: String,
    /// The upstream (Envoy cluster) as the filter named it.
    pub upstream: String,
    /// The service name.
    pub service: String,
    /// The method name.
    pub method: String,
    /// Initial metadata the filter sent.
    pub initial_metadata: Headers,
    /// The messages the filter sent (the unary request, or each `proxy_grpc_send`), see
    /// `messages_base64`.
    pub messages: Vec<String>,
    /// Whether `messages` are base64 (any of them not UTF-8).
    pub messages_base64: bool,
    /// The timeout the filter asked for (unary calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// What became of it (`cancelled` also when the filter closed a unary call; a stream it
    /// closed is half-closed and can still be answered).
    pub outcome: CallOutcome,
    /// Index (from 0) of the `--grpc-call-response` file that answered it.
    pub response: Option<usize>,
}

/// One stream callback and its action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptAction {
    /// e.g. `on_request_headers`.
    pub callback: String,
    /// `Continue`, `Pause`, or `null`.
    pub action: Option<String>,
}

/// What became of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// Answered with the response file at `response`.
    Answered,
    /// No response file was left for it; the host cancelled it when the stream ended (a root
    /// context's call stays open).
    Unanswered,
    /// Its timeout fired during an `--advance-ms` step; the filter got the profile's timeout
    /// failure.
    TimedOut,
    /// The host dropped it before it was answered (a trap, or Kong's local response from a
    /// dispatch callback cancelling the others).
    Cancelled,
}

/// One `proxy_http_call` as the filter made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptHttpCall {
    /// The upstream as the filter named it (Envoy cluster, Kong `host:port`).
    pub upstream: String,
    /// Request headers, pseudo-headers included.
    pub headers: Headers,
    /// Request body (see `body_base64`).
    pub body: String,
    /// Whether `body` is base64.
    pub body_base64: bool,
    /// Request trailers.
    pub trailers: Headers,
    /// The timeout the filter asked for.
    pub timeout_ms: u32,
    /// What became of it.
    pub outcome: CallOutcome,
    /// Index (from 0) of the `--http-call-response` file that answered it.
    pub response: Option<usize>,
}

impl TranscriptHttpCall {
    /// The body bytes.
    pub fn body_bytes(&self) -> Result<Vec<u8>, String> {
        decode_body(&self.body, self.body_base64, "body")
    }
}

/// The local response the stream ended with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptLocalResponse {
    /// HTTP status.
    pub status: u32,
    /// Response headers as the filter gave them.
    pub headers: Headers,
    /// Response body (see `body_base64`).
    pub body: String,
    /// Whether `body` is base64.
    pub body_base64: bool,
    /// Status code details (Envoy's response code details).
    pub details: String,
    /// gRPC status, when the filter set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<i32>,
}

impl TranscriptLocalResponse {
    /// The body bytes.
    pub fn body_bytes(&self) -> Result<Vec<u8>, String> {
        decode_body(&self.body, self.body_base64, "body")
    }
}

/// The request as it went upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamRequest {
    /// Headers as the filter left them.
    pub headers: Headers,
    /// Body the filter let through (see `body_base64`).
    pub body: String,
    /// Whether `body` is base64.
    pub body_base64: bool,
    /// Trailers as the filter left them.
    pub trailers: Headers,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptLog {
    /// `trace`, `debug`, `info`, `warn`, `error` or `critical`.
    pub level: String,
    /// The message.
    pub message: String,
    /// The context the guest was running in, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<u32>,
}

// ---- Module report (`host-sim info`) ---------------------------------------------------------

/// What one host makes of a module's imports, with the call graph's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostImports {
    /// Function imports this host does not link at all, as `module.name`: it refuses to load the
    /// module, whether or not the import is ever called.
    pub cannot_link: Vec<String>,
    /// Host functions this host lacks (it links them as traps) that some code path from the
    /// module's exports calls: the guest traps if that path runs.
    pub reachable_unimplemented: Vec<String>,
    /// Host functions this host lacks that the module imports but no code path calls.
    pub imported_only_unimplemented: Vec<String>,
}

/// What `host-sim info` says about a module.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleReport {
    /// Size, hash, ABI version, exports and imports.
    #[serde(flatten)]
    pub info: ModuleInfo,
    /// Function imports host-sim does not provide at all (neither a proxy-wasm host function
    /// nor WASI preview 1), as `module.name`: they link as traps.
    pub unknown_imports: Vec<String>,
    /// Per profile, the imported proxy-wasm host functions that host does not implement (the
    /// guest traps if it calls them).
    pub unimplemented: BTreeMap<String, Vec<String>>,
    /// Per profile, its imports split by whether it links them and whether code calls them.
    pub hosts: BTreeMap<String, HostImports>,
    /// The call graph: for each function import, whether a code path can call it.
    pub reachability: Reachability,
}

impl ModuleReport {
    /// Classifies a module's imports, using the call graph built from the same module.
    pub fn new(info: &ModuleInfo, reachability: Reachability) -> ModuleReport {
        let mut unknown_imports = Vec::new();
        let mut host_functions = Vec::new();
        for import in &info.imports {
            let (module, name) = import.split_once('.').unwrap_or(("", import));
            match module {
                "env" => match HostFunction::from_name(name) {
                    Some(f) => host_functions.push(f),
                    None => unknown_imports.push(import.clone()),
                },
                "wasi_snapshot_preview1" if PREVIEW1_FUNCTIONS.contains(&name) => {}
                _ => unknown_imports.push(import.clone()),
            }
        }
        let mut unimplemented = BTreeMap::new();
        let mut hosts = BTreeMap::new();
        for profile in Profile::ALL {
            let missing: Vec<HostFunction> = host_functions
                .iter()
                .copied()
                .filter(|f| !profile.implements(*f))
                .collect();
            let cannot_link = info
                .imports
                .iter()
                .filter(|import| {
                    let (module, name) = import.split_once('.').unwrap_or(("", import));
                    !profile.links(info.abi_version.as_deref(), module, name)
                })
                .cloned()
                .collect();
            // An import the call graph does not list counts as reachable: never understate a trap.
            let (reachable, imported_only): (Vec<HostFunction>, Vec<HostFunction>) = missing
                .iter()
                .partition(|f| reachability.is_reachable(&format!("env.{}", f.name())) != Some(false));
            let names = |list: Vec<HostFunction>| list.iter().map(|f| f.name().to_string()).collect();
            hosts.insert(
                profile.to_string(),
                HostImports {
                    cannot_link,
                    reachable_unimplemented: names(reachable),
                    imported_only_unimplemented: names(imported_only),
                },
            );
            unimplemented.insert(profile.to_string(), names(missing));
        }
        ModuleReport {
            info: info.clone(),
            unknown_imports,
            unimplemented,
            hosts,
            reachability,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Result<RequestFile, String> {
        RequestFile::from_json(json.as_bytes()).map_err(|e| e.to_string())
    }

    fn response(json: &str) -> Result<CallResponseFile, String> {
        CallResponseFile::from_json(json.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn request_file_of_the_issue() {
        let r = request(
            r#"{"headers":[[":method","POST"],[":path","/p?x=1"],[":authority","h"],["content-type","application/json"]],"body":"{}","body_base64":false,"trailers":[]}"#,
        )
        .unwrap();
        assert_eq!(r.headers.len(), 4);
        assert_eq!(r.headers[1], (":path".to_string(), "/p?x=1".to_string()));
        assert_eq!(r.body_chunks, vec![b"{}".to_vec()]);
        assert!(r.trailers.is_empty());
    }

    #[test]
    fn request_body_forms() {
        let r = request(r#"{"headers":[],"body":"AAEC/w==","body_base64":true}"#).unwrap();
        assert_eq!(r.body_chunks, vec![vec![0, 1, 2, 255]]);
        let r = request(r#"{"headers":[],"body_chunks":["ab","","cd"]}"#).unwrap();
        assert_eq!(r.body_chunks, vec![b"ab".to_vec(), b"".to_vec(), b"cd".to_vec()]);
        let r = request(r#"{"headers":[],"body":""}"#).unwrap();
        assert!(!r.has_body());
        let r = request(r#"{"headers":[],"trailers":[["grpc-status","0"]]}"#).unwrap();
        assert!(!r.has_body());
        assert_eq!(r.trailers.len(), 1);
    }

    #[test]
    fn request_bad_shapes_are_clear() {
        let e = request(r#"{"body":"x"}"#).unwrap_err();
        assert!(e.contains("missing field `headers`"), "{e}");
        let e = request(r#"{"headers":[[":method"]]}"#).unwrap_err();
        assert!(e.contains("expected a [name, value] pair of strings"), "{e}");
        let e = request(r#"{"headers":[[":method","GET","x"]]}"#).unwrap_err();
        assert!(e.contains("[name, value] pair"), "{e}");
        let e = request(r#"{"headers":[[":status",200]]}"#).unwrap_err();
        assert!(e.contains("expected a string"), "{e}");
        let e = request(r#"{"headers":{":method":"GET"}}"#).unwrap_err();
        assert!(e.contains("expected a sequence"), "{e}");
        let e = request(r#"{"headers":[],"header":[]}"#).unwrap_err();
        assert!(e.contains("unknown field `header`"), "{e}");
        let e = request(r#"{"headers":[],"body":"a","body_chunks":["b"]}"#).unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = request(r#"{"headers":[],"body":"!!","body_base64":true}"#).unwrap_err();
        assert!(e.contains("not valid base64"), "{e}");
        let e = request(r#"{"headers":[],"#).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn request_round_trips() {
        for r in [
            RequestFile::default(),
            RequestFile {
                headers: vec![(":method".into(), "GET".into())],
                body_chunks: vec![vec![0xff, 0], b"x".to_vec()],
                trailers: vec![("t".into(), "1".into())],
            },
            RequestFile {
                headers: vec![],
                body_chunks: vec![b"hello".to_vec()],
                trailers: vec![],
            },
        ] {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(RequestFile::from_json(json.as_bytes()).unwrap(), r, "{json}");
        }
    }

    #[test]
    fn call_response_forms() {
        let r = response(r#"{"status":200,"headers":[["content-type","application/vnd.kafka.v2+json"]],"body":"{}"}"#)
            .unwrap();
        assert_eq!(
            r.reply,
            HttpCallReply::Response {
                status: 200,
                headers: vec![("content-type".into(), "application/vnd.kafka.v2+json".into())],
                body: b"{}".to_vec(),
                trailers: vec![],
            }
        );
        let r = response(r#"{"status":204}"#).unwrap();
        assert!(matches!(r.reply, HttpCallReply::Response { status: 204, .. }));
        for (name, failure) in FAILURES {
            let r = response(&format!(r#"{{"failure":"{name}"}}"#)).unwrap();
            assert_eq!(r.reply, HttpCallReply::Failure(*failure));
            let back = serde_json::to_string(&r).unwrap();
            assert_eq!(back, format!(r#"{{"failure":"{name}"}}"#));
        }
    }

    #[test]
    fn call_response_bad_shapes_are_clear() {
        let e = response(r#"{}"#).unwrap_err();
        assert!(e.contains("needs `status`"), "{e}");
        let e = response(r#"{"failure":"timeout","status":200}"#).unwrap_err();
        assert!(e.contains("takes no other keys (found `status`)"), "{e}");
        let e = response(r#"{"failure":"eof"}"#).unwrap_err();
        assert!(e.contains("unknown failure \"eof\""), "{e}");
        let e = response(r#"{"status":42}"#).unwrap_err();
        assert!(e.contains("not an HTTP status"), "{e}");
        let e = response(r#"{"status":"200"}"#).unwrap_err();
        assert!(e.contains("invalid type: string"), "{e}");
        let e = response(r#"{"status":200,"headers":[[":status","200"]]}"#).unwrap_err();
        assert!(e.contains("not as a `:status` header"), "{e}");
        let e = response(r#"{"status":200,"bdy":""}"#).unwrap_err();
        assert!(e.contains("unknown field `bdy`"), "{e}");
    }

    fn upstream(json: &str) -> Result<UpstreamResponseFile, String> {
        UpstreamResponseFile::from_json(json.as_bytes()).map_err(|e| e.to_string())
    }

    fn grpc(json: &str) -> Result<GrpcResponseFile, String> {
        GrpcResponseFile::from_json(json.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn upstream_response_forms() {
        let r = upstream(r#"{"status":200,"headers":[["content-length","5"]],"body":"hello","trailers":[["t","1"]]}"#)
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.headers, vec![("content-length".to_string(), "5".to_string())]);
        assert_eq!(r.body_chunks, vec![b"hello".to_vec()]);
        assert_eq!(r.trailers, vec![("t".to_string(), "1".to_string())]);
        let r = upstream(r#"{"status":200,"body":"hello","chunk_size":2}"#).unwrap();
        assert_eq!(r.body_chunks, vec![b"he".to_vec(), b"ll".to_vec(), b"o".to_vec()]);
        let r = upstream(r#"{"status":200,"body":"hello","chunk_sizes":[1,0,4]}"#).unwrap();
        assert_eq!(r.body_chunks, vec![b"h".to_vec(), b"".to_vec(), b"ello".to_vec()]);
        let r = upstream(r#"{"status":204}"#).unwrap();
        assert!(r.body_chunks.is_empty() && r.headers.is_empty() && r.trailers.is_empty());
        let r = upstream(r#"{"status":200,"body":"AP8=","body_base64":true,"chunk_size":1}"#).unwrap();
        assert_eq!(r.body_chunks, vec![vec![0], vec![0xff]]);
        for r in [
            upstream(r#"{"status":200,"body":"hello","chunk_sizes":[2,3],"trailers":[["t","1"]]}"#).unwrap(),
            upstream(r#"{"status":500,"body":"AP8=","body_base64":true}"#).unwrap(),
            upstream(r#"{"status":204}"#).unwrap(),
        ] {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(upstream(&json).unwrap(), r, "{json}");
        }
    }

    #[test]
    fn upstream_response_bad_shapes_name_the_field() {
        for (json, expected) in [
            (r#"{"body":"x"}"#, "missing field `status`"),
            (r#"{"status":42}"#, "`status` 42 is not an HTTP status"),
            (r#"{"status":"200"}"#, "invalid type: string"),
            (
                r#"{"status":200,"headers":[[":status","200"]]}"#,
                "`headers`: give the status as `status`",
            ),
            (r#"{"status":200,"headers":[["a"]]}"#, "[name, value] pair"),
            (r#"{"status":200,"trailers":{"a":"b"}}"#, "expected a sequence"),
            (
                r#"{"status":200,"body":"!!","body_base64":true}"#,
                "`body` is not valid base64",
            ),
            (
                r#"{"status":200,"body":"ab","chunk_size":1,"chunk_sizes":[2]}"#,
                "`chunk_size` or `chunk_sizes`, not both",
            ),
            (
                r#"{"status":200,"body":"ab","chunk_size":0}"#,
                "`chunk_size` must be at least 1",
            ),
            (
                r#"{"status":200,"body":"ab","chunk_sizes":[1,2]}"#,
                "`chunk_sizes` add up to 3 bytes but `body` has 2",
            ),
            (r#"{"status":200,"chunk_sizes":[-1]}"#, "invalid value: integer `-1`"),
            (r#"{"status":200,"chunks":[1]}"#, "unknown field `chunks`"),
        ] {
            let e = upstream(json).unwrap_err();
            assert!(e.contains(expected), "{json}: {e}");
        }
    }

    #[test]
    fn grpc_response_forms() {
        let r = grpc(
            r#"{"initial_metadata":[["a","1"]],"messages":["m1","m2"],"trailing_metadata":[["t","2"]],"status":14,"status_message":"down"}"#,
        )
        .unwrap();
        assert_eq!(
            r.reply,
            GrpcReply {
                initial_metadata: Some(vec![("a".into(), "1".into())]),
                messages: vec![b"m1".to_vec(), b"m2".to_vec()],
                trailing_metadata: Some(vec![("t".into(), "2".into())]),
                close: Some((14, "down".into())),
            }
        );
        assert_eq!(grpc("{}").unwrap().reply, GrpcReply::default());
        let r = grpc(r#"{"messages":["AP8="],"messages_base64":true,"status":0}"#).unwrap();
        assert_eq!(r.reply.messages, vec![vec![0, 0xff]]);
        assert_eq!(r.reply.close, Some((0, String::new())));
        for json in [
            r#"{"messages":["AP8=","YQ=="],"messages_base64":true}"#,
            r#"{"initial_metadata":[],"status":2,"status_message":"x"}"#,
        ] {
            let r = grpc(json).unwrap();
            let back = serde_json::to_string(&r).unwrap();
            assert_eq!(grpc(&back).unwrap(), r, "{back}");
        }
    }

    #[test]
    fn grpc_response_bad_shapes_name_the_field() {
        for (json, expected) in [
            (r#"{"status":17}"#, "`status` 17 is not a gRPC status code (0-16)"),
            (r#"{"status_message":"x"}"#, "`status_message` needs `status`"),
            (r#"{"messages":"x"}"#, "expected a sequence"),
            (
                r#"{"messages":["!!"],"messages_base64":true}"#,
                "`messages` is not valid base64",
            ),
            (r#"{"initial_metadata":[["a"]]}"#, "[name, value] pair"),
            (r#"{"message":["x"]}"#, "unknown field `message`"),
        ] {
            let e = grpc(json).unwrap_err();
            assert!(e.contains(expected), "{json}: {e}");
        }
    }

    #[test]
    fn bodies_are_text_or_base64() {
        assert_eq!(encode_body(b"hi"), ("hi".to_string(), false));
        assert_eq!(encode_body(&[0xff]), ("/w==".to_string(), true));
        assert_eq!(decode_body("/w==", true, "body").unwrap(), vec![0xff]);
    }

    /// A module importing `imports` (all `(func)`), whose export `run` calls the ones in `called`.
    fn module_with(imports: &[&str], called: &[&str]) -> (ModuleInfo, Reachability) {
        let mut text = String::from("(module");
        for import in imports {
            let (module, name) = import.split_once('.').unwrap();
            text.push_str(&format!(r#" (import "{module}" "{name}" (func ${import}))"#));
        }
        text.push_str(r#" (func (export "run")"#);
        for import in called {
            text.push_str(&format!(" call ${import}"));
        }
        text.push_str("))");
        let bytes = wat::parse_str(&text).unwrap();
        let info = ModuleInfo {
            size: bytes.len(),
            sha256: "00".into(),
            abi_version: Some("proxy_abi_version_0_2_1".into()),
            exports: vec!["run".into()],
            imports: imports.iter().map(|i| i.to_string()).collect(),
            version: None,
        };
        (info, crate::reachability::analyze(&bytes).unwrap())
    }

    #[test]
    fn module_report_classifies_imports() {
        let imports = [
            "env.proxy_log",
            "env.proxy_get_log_level",
            "env.proxy_grpc_call",
            "env.proxy_done",
            "env.proxy_not_a_thing",
            "wasi_snapshot_preview1.fd_write",
            "wasi_snapshot_preview1.path_filestat_get",
            "wasi_unstable.fd_write",
        ];
        let (info, reach) = module_with(&imports, &["env.proxy_log", "env.proxy_done"]);
        let report = ModuleReport::new(&info, reach);
        assert_eq!(
            report.unknown_imports,
            vec!["env.proxy_not_a_thing", "wasi_unstable.fd_write"]
        );
        assert!(report.unimplemented["envoy"].is_empty());
        assert_eq!(
            report.unimplemented["kong"],
            vec!["proxy_get_log_level", "proxy_grpc_call", "proxy_done"]
        );
        let envoy = &report.hosts["envoy"];
        assert_eq!(
            envoy.cannot_link,
            vec!["env.proxy_not_a_thing", "wasi_snapshot_preview1.path_filestat_get"]
        );
        assert!(envoy.reachable_unimplemented.is_empty() && envoy.imported_only_unimplemented.is_empty());
        let kong = &report.hosts["kong"];
        assert_eq!(
            kong.cannot_link,
            vec!["env.proxy_not_a_thing", "wasi_unstable.fd_write"]
        );
        assert_eq!(kong.reachable_unimplemented, vec!["proxy_done"]);
        assert_eq!(
            kong.imported_only_unimplemented,
            vec!["proxy_get_log_level", "proxy_grpc_call"]
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["sha256"], "00");
        assert_eq!(json["unimplemented"]["kong"][0], "proxy_get_log_level");
        assert_eq!(json["hosts"]["kong"]["reachable_unimplemented"][0], "proxy_done");
        assert_eq!(json["reachability"]["imports"][3]["from"], "export run");
    }

    #[test]
    fn envoy_links_get_log_level_for_abi_0_2_1_only() {
        let (mut info, reach) = module_with(&["env.proxy_get_log_level"], &[]);
        assert!(ModuleReport::new(&info, reach.clone()).hosts["envoy"]
            .cannot_link
            .is_empty());
        info.abi_version = Some("proxy_abi_version_0_2_0".into());
        assert_eq!(
            ModuleReport::new(&info, reach).hosts["envoy"].cannot_link,
            vec!["env.proxy_get_log_level"]
        );
        assert!(Profile::Envoy.links(None, "env", "pthread_equal"));
        assert!(Profile::Envoy.links(None, "wasi_unstable", "proc_exit"));
        assert!(!Profile::Kong.links(None, "wasi_unstable", "proc_exit"));
        assert!(!Profile::Kong.links(None, "env", "pthread_equal"));
        assert!(Profile::Kong.links(None, "env", "proxy_continue_request"));
        assert!(!Profile::Envoy.links(None, "env", "proxy_continue_request"));
        assert!(Profile::Kong.links(None, "wasi_snapshot_preview1", "path_filestat_get"));
        assert!(!Profile::Envoy.links(None, "other", "proxy_log"));
    }
}
