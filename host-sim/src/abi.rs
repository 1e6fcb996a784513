//! The proxy-wasm ABI v0.2.1 vocabulary: status codes, enums and the map (pairs) codec.
//!
//! Everything here mirrors `abi-versions/v0.2.1/README.md` of the proxy-wasm spec ("Types" and
//! "Serialization"). It is defined once and shared by the host, the CLI and the tests, so a
//! discriminant can never drift between them.

use serde::Serialize;
use std::borrow::Cow;
use std::fmt;

/// `proxy_status_t`: what every host function returns to the guest.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// `OK`.
    Ok = 0,
    /// `NOT_FOUND`.
    NotFound = 1,
    /// `BAD_ARGUMENT`.
    BadArgument = 2,
    /// `SERIALIZATION_FAILURE`.
    SerializationFailure = 3,
    /// `PARSE_FAILURE`.
    ParseFailure = 4,
    /// `INVALID_MEMORY_ACCESS`.
    InvalidMemoryAccess = 6,
    /// `EMPTY`.
    Empty = 7,
    /// `CAS_MISMATCH`.
    CasMismatch = 8,
    /// `INTERNAL_FAILURE`.
    InternalFailure = 10,
    /// `UNIMPLEMENTED`.
    Unimplemented = 12,
}

impl Status {
    /// The value handed to the guest.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Declares a `#[repr(u32)]` ABI enum with explicit discriminants and a checked decoder, so a
/// guest-supplied integer outside the spec's range is a `None`, never a panic.
macro_rules! abi_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:expr),+ $(,)? }) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant = $value),+ }

        impl $name {
            /// Decodes a raw ABI value; `None` for a value the spec does not define.
            pub fn from_raw(raw: u32) -> Option<Self> {
                match raw { $($value => Some(Self::$variant),)+ _ => None }
            }
            /// Every value, in discriminant order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
        }
    };
}

abi_enum! {
    /// `proxy_log_level_t`.
    LogLevel { /** TRACE */ Trace = 0, /** DEBUG */ Debug = 1, /** INFO */ Info = 2,
               /** WARN */ Warn = 3, /** ERROR */ Error = 4, /** CRITICAL */ Critical = 5 }
}

abi_enum! {
    /// `proxy_action_t`: what a stream callback asks the host to do next.
    Action { /** CONTINUE */ Continue = 0, /** PAUSE */ Pause = 1 }
}

abi_enum! {
    /// `proxy_buffer_type_t`.
    BufferType {
        /** HTTP_REQUEST_BODY */ HttpRequestBody = 0,
        /** HTTP_RESPONSE_BODY */ HttpResponseBody = 1,
        /** DOWNSTREAM_DATA */ DownstreamData = 2,
        /** UPSTREAM_DATA */ UpstreamData = 3,
        /** HTTP_CALL_RESPONSE_BODY */ HttpCallResponseBody = 4,
        /** GRPC_CALL_MESSAGE */ GrpcCallMessage = 5,
        /** VM_CONFIGURATION */ VmConfiguration = 6,
        /** PLUGIN_CONFIGURATION */ PluginConfiguration = 7,
        /** FOREIGN_FUNCTION_ARGUMENTS */ ForeignFunctionArguments = 8,
    }
}

abi_enum! {
    /// `proxy_map_type_t`.
    MapType {
        /** HTTP_REQUEST_HEADERS */ HttpRequestHeaders = 0,
        /** HTTP_REQUEST_TRAILERS */ HttpRequestTrailers = 1,
        /** HTTP_RESPONSE_HEADERS */ HttpResponseHeaders = 2,
        /** HTTP_RESPONSE_TRAILERS */ HttpResponseTrailers = 3,
        /** GRPC_CALL_INITIAL_METADATA */ GrpcCallInitialMetadata = 4,
        /** GRPC_CALL_TRAILING_METADATA */ GrpcCallTrailingMetadata = 5,
        /** HTTP_CALL_RESPONSE_HEADERS */ HttpCallResponseHeaders = 6,
        /** HTTP_CALL_RESPONSE_TRAILERS */ HttpCallResponseTrailers = 7,
    }
}

abi_enum! {
    /// `proxy_stream_type_t`.
    StreamType { /** HTTP_REQUEST */ HttpRequest = 0, /** HTTP_RESPONSE */ HttpResponse = 1,
                 /** DOWNSTREAM */ Downstream = 2, /** UPSTREAM */ Upstream = 3 }
}

abi_enum! {
    /// `proxy_metric_type_t`.
    MetricType { /** COUNTER */ Counter = 0, /** GAUGE */ Gauge = 1, /** HISTOGRAM */ Histogram = 2 }
}

abi_enum! {
    /// `proxy_peer_type_t`.
    PeerType { /** UNKNOWN */ Unknown = 0, /** LOCAL */ Local = 1, /** REMOTE */ Remote = 2 }
}

impl serde::Serialize for LogLevel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        })
    }
}

impl Action {
    /// `Continue` or `Pause`, as transcripts spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Continue => "Continue",
            Action::Pause => "Pause",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! callbacks {
    ($($(#[$doc:meta])* $variant:ident => $export:literal),+ $(,)?) => {
        /// Which guest callback is running; decides what a host function may touch. Each names
        /// the guest export it invokes (spec "Functions exposed by the module"), written here once.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Callback { $($(#[$doc])* $variant),+ }

        impl Callback {
            /// The guest export this callback invokes.
            pub fn export_name(self) -> &'static str {
                match self { $(Callback::$variant => $export),+ }
            }

            /// The transcript name (`on_request_headers`, ...): the export name without its
            /// `proxy_` or `_` prefix, worked out at compile time (every recorded callback
            /// asks for it).
            pub fn transcript_name(self) -> &'static str {
                match self { $(Callback::$variant => const { transcript_name_of($export) }),+ }
            }
        }
    };
}

/// The WASI command entry point, run when a module has no `_initialize` (spec "Start functions").
pub const START_EXPORT: &str = "_start";
/// `main(argc, argv)`, run after `_initialize` when exported (spec "Start functions").
pub const MAIN_EXPORT: &str = "main";

callbacks! {
    /// `_initialize` (its export name), then `main` or `_start`: see [`START_EXPORT`].
    Start => "_initialize",
    /// `proxy_on_context_create`.
    ContextCreate => "proxy_on_context_create",
    /// `proxy_on_vm_start`.
    VmStart => "proxy_on_vm_start",
    /// `proxy_on_configure`.
    Configure => "proxy_on_configure",
    /// `proxy_on_tick`.
    Tick => "proxy_on_tick",
    /// `proxy_on_queue_ready`.
    QueueReady => "proxy_on_queue_ready",
    /// `proxy_on_foreign_function`.
    ForeignFunction => "proxy_on_foreign_function",
    /// `proxy_on_request_headers`.
    RequestHeaders => "proxy_on_request_headers",
    /// `proxy_on_request_body`.
    RequestBody => "proxy_on_request_body",
    /// `proxy_on_request_trailers`.
    RequestTrailers => "proxy_on_request_trailers",
    /// `proxy_on_response_headers`.
    ResponseHeaders => "proxy_on_response_headers",
    /// `proxy_on_response_body`.
    ResponseBody => "proxy_on_response_body",
    /// `proxy_on_response_trailers`.
    ResponseTrailers => "proxy_on_response_trailers",
    /// `proxy_on_http_call_response`.
    HttpCallResponse => "proxy_on_http_call_response",
    /// `proxy_on_grpc_receive_initial_metadata`.
    GrpcReceiveInitialMetadata => "proxy_on_grpc_receive_initial_metadata",
    /// `proxy_on_grpc_receive`.
    GrpcReceive => "proxy_on_grpc_receive",
    /// `proxy_on_grpc_receive_trailing_metadata`.
    GrpcReceiveTrailingMetadata => "proxy_on_grpc_receive_trailing_metadata",
    /// `proxy_on_grpc_close`.
    GrpcClose => "proxy_on_grpc_close",
    /// `proxy_on_done`.
    Done => "proxy_on_done",
    /// `proxy_on_log`.
    Log => "proxy_on_log",
    /// `proxy_on_delete`.
    Delete => "proxy_on_delete",
}

/// An export name without its `proxy_` prefix, then without a leading `_`
/// ([`Callback::transcript_name`]).
const fn transcript_name_of(export: &'static str) -> &'static str {
    const PROXY: &[u8] = b"proxy_";
    let bytes = export.as_bytes();
    let mut skip = 0;
    if bytes.len() >= PROXY.len() {
        let mut i = 0;
        while i < PROXY.len() && bytes[i] == PROXY[i] {
            i += 1;
        }
        if i == PROXY.len() {
            skip = PROXY.len();
        }
    }
    if bytes.len() > skip && bytes[skip] == b'_' {
        skip += 1;
    }
    match std::str::from_utf8(bytes.split_at(skip).1) {
        Ok(name) => name,
        Err(_) => panic!("export names are ASCII"),
    }
}

/// A header map (or gRPC metadata, or trailers) as the ABI carries it: ordered pairs of byte
/// strings, duplicates allowed.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The value of the first header named `name` in `headers`, the name compared ASCII
/// case-insensitively as HTTP field names are (RFC 9110 section 5.1); for byte pairs ([`Pairs`])
/// and text pairs alike.
pub fn find_header<'a, K: AsRef<[u8]>, V>(headers: &'a [(K, V)], name: &str) -> Option<&'a V> {
    headers
        .iter()
        .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v)
}

/// Why a serialized map could not be decoded (the shared codec's error).
pub use proxy_wasm_pairs::Error as PairsError;

/// Serializes pairs per the spec: `u32` count, `(u32 key_len, u32 value_len)` per pair, then each
/// key and value followed by `NUL`. Integers are little-endian. The codec is the workspace's one
/// (`proxy-wasm-pairs`), shared with the filter and the test filters.
pub fn encode_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    proxy_wasm_pairs::encode(pairs)
}

/// Decodes a serialized map. An empty buffer and a single `0x00` byte both mean an empty map
/// (spec, "Serialization"). `max_pairs` bounds the declared count before anything is allocated.
pub fn decode_pairs(bytes: &[u8], max_pairs: usize) -> Result<Pairs, PairsError> {
    decode_pairs_with(bytes, max_pairs, |k, v| (k.to_vec(), v.to_vec()))
}

/// Decodes a serialized map like [`decode_pairs`], turning each key and value into an item with
/// `item` straight from the serialized bytes (so a caller that wants strings copies each key and
/// value once, and one that reads guest memory in place copies nothing else). The guest wrote
/// these bytes: every count and length is checked against the buffer before it is used, and a
/// malformed map is an error, never a panic.
pub fn decode_pairs_with<T>(
    bytes: &[u8],
    max_pairs: usize,
    item: impl FnMut(&[u8], &[u8]) -> T,
) -> Result<Vec<T>, PairsError> {
    proxy_wasm_pairs::decode_with(bytes, max_pairs, item)
}

/// Property paths are their segments joined by `NUL` (spec, "Serialization"; SDK `get_property`).
pub fn encode_property_path<S: AsRef<str>>(segments: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(s.as_ref().as_bytes());
    }
    out
}

/// Splits a serialized property path into its segments (lossy UTF-8; property names are ASCII).
pub fn decode_property_path(bytes: &[u8]) -> Vec<String> {
    let trimmed = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    trimmed
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// How the host's records ([`LocalResponse`], [`crate::HttpCall`]) serialize bodies: serializes bytes as a UTF-8 string when they are valid UTF-8, else as base64 with a marker.
pub mod bytes_as_text {
    use base64::Engine as _;
    use serde::Serializer;

    /// Serde `serialize_with` helper.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.serialize_str(&format!(
                "base64:{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )),
        }
    }
}

/// A response the filter sent itself with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u32,
    /// Status code details (Envoy's response code details).
    pub details: String,
    /// Response headers as the filter gave them.
    pub headers: Vec<(String, String)>,
    /// Response body.
    #[serde(with = "bytes_as_text")]
    pub body: Vec<u8>,
    /// gRPC status, when the filter set one (`-1`/absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<i32>,
}

/// Facts about the downstream connection and request that hosts expose as properties.
///
/// The text fields are `Cow`s so that the defaults (a driver that does not set them, as the
/// bench and most tests do) cost no allocation per stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    /// Client address.
    pub source_address: Cow<'static, str>,
    /// Client port.
    pub source_port: u16,
    /// Listener address.
    pub destination_address: Cow<'static, str>,
    /// Listener port.
    pub destination_port: u16,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: Cow<'static, str>,
    /// A request id (Envoy's `x-request-id`).
    pub request_id: Cow<'static, str>,
}

impl Default for StreamInfo {
    fn default() -> Self {
        StreamInfo {
            source_address: Cow::Borrowed("127.0.0.1"),
            source_port: 50000,
            destination_address: Cow::Borrowed("127.0.0.1"),
            destination_port: 8000,
            protocol: Cow::Borrowed("HTTP/1.1"),
            request_id: Cow::Borrowed(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_header_takes_the_first_of_a_name_in_any_case() {
        let text = vec![
            ("Via".to_string(), "a".to_string()),
            ("via".to_string(), "b".to_string()),
        ];
        assert_eq!(find_header(&text, "VIA").map(String::as_str), Some("a"));
        assert_eq!(find_header(&text, "vi"), None);
        let bytes: Pairs = vec![(b"X-Id".to_vec(), b"7".to_vec())];
        assert_eq!(find_header(&bytes, "x-id").map(Vec::as_slice), Some(&b"7"[..]));
    }

    #[test]
    fn transcript_names_are_export_names_without_their_prefix() {
        assert_eq!(Callback::Start.transcript_name(), "initialize");
        assert_eq!(Callback::RequestHeaders.transcript_name(), "on_request_headers");
        assert_eq!(Callback::Delete.transcript_name(), "on_delete");
        assert_eq!(transcript_name_of("proxy"), "proxy");
        assert_eq!(transcript_name_of("proxy__x"), "x");
        assert_eq!(transcript_name_of(""), "");
    }

    #[test]
    fn pairs_round_trip_matches_spec_example() {
        // The spec's example: {{"a": "1"}, {"b": "22"}}.
        let encoded = encode_pairs(&[("a", "1"), ("b", "22")]);
        let mut expected = vec![2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
        expected.extend_from_slice(b"a\x001\x00b\x0022\x00");
        assert_eq!(encoded, expected);
        let decoded = decode_pairs(&encoded, 16).unwrap();
        assert_eq!(
            decoded,
            vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"22".to_vec())]
        );
    }

    #[test]
    fn empty_maps_in_both_spellings() {
        assert!(decode_pairs(&[], 1).unwrap().is_empty());
        assert!(decode_pairs(&[0], 1).unwrap().is_empty());
        assert_eq!(encode_pairs::<&str, &str>(&[]), vec![0, 0, 0, 0]);
    }

    #[test]
    fn malformed_maps_are_errors_not_panics() {
        let good = encode_pairs(&[("key", "value")]);
        for cut in 1..good.len() {
            assert!(decode_pairs(&good[..cut], 16).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        let nul = 4 + 8 + 3;
        bad[nul] = b'x';
        assert_eq!(decode_pairs(&bad, 16), Err(PairsError::MissingTerminator));
        assert_eq!(
            decode_pairs(&u32::MAX.to_le_bytes(), 16),
            Err(PairsError::TooManyPairs(u32::MAX as usize))
        );
        let mut huge_len = good;
        huge_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_pairs(&huge_len, 16), Err(PairsError::Truncated));
    }

    #[test]
    fn enums_decode_only_spec_values() {
        assert_eq!(MapType::from_raw(7), Some(MapType::HttpCallResponseTrailers));
        assert_eq!(MapType::from_raw(8), None);
        assert_eq!(BufferType::from_raw(8), Some(BufferType::ForeignFunctionArguments));
        assert_eq!(LogLevel::from_raw(6), None);
        assert_eq!(Status::Unimplemented.code(), 12);
    }

    #[test]
    fn property_paths() {
        let p = encode_property_path(&["request", "headers"]);
        assert_eq!(p, b"request\0headers");
        assert_eq!(decode_property_path(&p), vec!["request", "headers"]);
    }
}
