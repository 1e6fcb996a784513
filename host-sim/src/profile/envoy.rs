//! Envoy's `envoy.filters.http.wasm` on proxy-wasm-cpp-host: what it does differently from the
//! spec's host ([`super::HostBehaviour`]'s defaults), each with its source (the source tags are
//! listed in [`super`]).

use super::{
    shaped_local_reply, AfterTrap, BudgetRefusal, Callback, CalloutFailure, CalloutFailureReply, CalloutUpstream,
    HostBehaviour, HostProperty, HostReply, MapAccess, PropertyFacts, PropertyValue, SecondLocalResponse,
};
use crate::abi::LocalResponse;
use crate::abi::{encode_pairs, Pairs, StreamType};
use crate::hostfn::HostFunction;
use crate::limits::OverBudget;
use crate::Status;

/// Envoy 1.40 (`envoy.filters.http.wasm`, proxy-wasm-cpp-host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envoy;

/// The WASI functions proxy-wasm-cpp-host (Envoy's Wasm host) registers, under both
/// `wasi_snapshot_preview1` and `wasi_unstable`: `FOR_ALL_WASI_FUNCTIONS` in
/// proxy-wasm-cpp-host include/proxy-wasm/exports.h, registered by `WasmBase::registerCallbacks`
/// (src/wasm.cc). Any other import makes the module fail to load ("Failed to load Wasm module due
/// to a missing import", src/wasmtime/wasmtime.cc and src/v8/v8.cc `link`).
const ENVOY_WASI: &[&str] = &[
    "fd_write",
    "fd_read",
    "fd_seek",
    "fd_close",
    "fd_fdstat_get",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "clock_time_get",
    "random_get",
    "proc_exit",
    "path_open",
    "fd_prestat_get",
    "fd_prestat_dir_name",
];

/// A header map as Envoy's map-valued attributes carry it: without pseudo-headers.
fn header_map(headers: Option<&Pairs>) -> PropertyValue {
    PropertyValue::Map(
        headers
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !k.starts_with(b":"))
            .collect(),
    )
}

impl HostBehaviour for Envoy {
    fn name(&self) -> &'static str {
        "envoy"
    }

    /// proxy-wasm-cpp-host src/wasm.cc `WasmBase::registerCallbacks`: the ABI's `env.proxy_*`
    /// functions, except `proxy_get_log_level` for a module declaring ABI 0.2.0 (registered for
    /// 0.2.1 only); `env.pthread_equal` and `env.emscripten_notify_memory_growth`; the WASI
    /// functions of `ENVOY_WASI` under `wasi_snapshot_preview1` and `wasi_unstable`.
    fn links(&self, abi_version: Option<&str>, module: &str, name: &str) -> bool {
        match module {
            "env" => match HostFunction::from_name(name) {
                Some(HostFunction::GetLogLevel) => abi_version != Some("proxy_abi_version_0_2_0"),
                Some(_) => true,
                None => matches!(name, "pthread_equal" | "emscripten_notify_memory_growth"),
            },
            "wasi_snapshot_preview1" | "wasi_unstable" => ENVOY_WASI.contains(&name),
            _ => false,
        }
    }

    /// Envoy presents `:authority, :path, :method, :scheme` (observed: ENVOY-1.40, its HTTP/1
    /// codec fills the header map in that order).
    fn request_pseudo_header_order(&self) -> [&'static str; 4] {
        [":authority", ":path", ":method", ":scheme"]
    }

    /// Envoy moves Host into `:authority`, and its HTTP/1 codec removes Transfer-Encoding
    /// before the filter chain (ENVOY-1.40 in the e2e suite: a chunked request reaches the
    /// filter with neither Content-Length nor Transfer-Encoding). Its connection manager sets
    /// `x-forwarded-proto` before the filters run (e2e: Envoy 1.40).
    fn downstream_request_headers(&self, mut headers: Vec<(String, String)>) -> Vec<(String, String)> {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("host") && !k.eq_ignore_ascii_case("transfer-encoding"));
        if !headers.iter().any(|(k, _)| k == "x-forwarded-proto") {
            headers.push(("x-forwarded-proto".to_string(), "http".to_string()));
        }
        headers
    }

    /// The connection manager adds `x-request-id` to a request without one
    /// (`generate_request_id` defaults to true in its HttpConnectionManager config).
    fn generates_request_id(&self) -> bool {
        true
    }

    /// Envoy lower-cases names (`LowerCaseString`).
    fn normalize_header_name(&self, name: &mut [u8]) {
        lowercase_ascii(name);
    }

    /// Envoy's HTTP/1 codec passes body data with `end_stream = false` and then ends the
    /// message with an empty data frame (`ConnectionImpl::onMessageComplete`, envoy
    /// source/common/http/http1/codec_impl.cc).
    fn request_body_ends_with_empty_call(&self) -> bool {
        true
    }

    /// A filter that answers before the last chunk leaves the rest unread, and Envoy then
    /// closes the connection (e2e: a chunked body over the limit gets 413 with `connection:
    /// close`).
    fn closes_connection_on_unread_request_body(&self) -> bool {
        true
    }

    /// Envoy measures through its mutable map accessor (ENVOY-SRC `getHeaderMapSize` calls
    /// `getMap`), so the size of a read-only or out-of-phase map is BAD_ARGUMENT.
    fn map_size_access(&self) -> MapAccess {
        MapAccess::Write
    }

    /// `getHeaderMapPairs` serializes a null map as empty and returns Ok (ENVOY-SRC).
    fn unavailable_map_pairs_are_empty(&self) -> bool {
        true
    }

    /// proxy-wasm-cpp-host's `get_buffer_bytes` reads nothing from a start past the end and
    /// answers Ok (src/exports.cc:457-471). Observed through Envoy 1.40 in the e2e suite
    /// (test_lifecycle_differential.py: the probe's `past_end_status` on its configuration).
    fn buffer_read_past_end_is_empty(&self) -> bool {
        true
    }

    /// Envoy only writes at the start (replacing `size` bytes) or at/after the end, and answers
    /// BAD_ARGUMENT in between (ENVOY-SRC `Buffer::copyFrom`), which the Rust SDK turns into a
    /// panic.
    fn buffer_write_allowed(&self, start: usize, len: usize) -> bool {
        start == 0 || start >= len
    }

    /// Envoy returns OK and queues each reply as an after-VM-call action (ENVOY-SRC
    /// `Context::sendLocalResponse`, `addAfterVmCallAction`); the first `sendLocalReply` ends
    /// the stream, so the client gets the first reply.
    fn second_local_response(&self) -> SecondLocalResponse {
        SecondLocalResponse::KeepFirst
    }

    /// `DownstreamFilterManager::sendLocalReply` sends a reply to a stream whose response has
    /// not started through `sendLocalReplyViaFilterChain`, which encodes the headers and body
    /// from the first encoder filter (`encodeHeaders(nullptr, ...)`, `encodeData(nullptr,
    /// ...)`), so the wasm filter that sent it gets its response callbacks (envoy
    /// source/common/http/filter_manager.cc). The headers are built by
    /// `Http::Utility::sendLocalReply`/`prepareLocalReply` (source/common/http/utility.cc):
    /// `:status`, the filter's headers (the wasm `Context::sendLocalResponse` passes them as
    /// `modify_headers`), then for a non-empty body `content-length` set to its size and
    /// `content-type: text/plain` unless the filter gave one; an empty body has neither, and
    /// the headers end the stream (no body callback). ENVOY-1.40: the probe's 418 "teapot"
    /// reached its `on_http_response_headers` and a header it added there reached the client.
    fn local_reply_response(
        &self,
        local: &LocalResponse,
        _now: std::time::SystemTime,
    ) -> (Vec<(String, String)>, Vec<u8>) {
        shaped_local_reply(local, local.body.clone(), false)
    }

    /// `sendDirectLocalReply`, shaped by the same `Http::Utility::sendLocalReply` as
    /// [`HostBehaviour::local_reply_response`] (envoy source/common/http/filter_manager.cc).
    fn direct_local_reply(&self, local: &LocalResponse) -> (Vec<(String, String)>, Vec<u8>) {
        self.local_reply_response(local, std::time::SystemTime::UNIX_EPOCH)
    }

    /// An upstream response's body: Envoy's HTTP/1 codec dispatches body data as it reads it
    /// and ends the message with an empty data frame (`ConnectionImpl::onMessageComplete`,
    /// envoy source/common/http/http1/codec_impl.cc), as for request bodies; ENVOY-1.40: a
    /// probe appending in each response body callback got `-post` twice on a 12-byte upstream
    /// body. A local reply's body comes in one call that ends the stream
    /// (`Http::Utility::sendLocalReply` encodes it with `end_stream = true`).
    fn upstream_body_ends_with_empty_call(&self) -> bool {
        true
    }

    /// Envoy's router announces the route's timeout (`x-envoy-expected-rq-timeout-ms`, 15000
    /// for the default 15 s route timeout; envoy source/common/router/router.cc
    /// `FilterUtility::setTimeoutHeaders`, observed in ENVOY-1.40).
    fn proxied_request_headers(&self, _request_id: &str) -> Vec<(String, String)> {
        vec![("x-envoy-expected-rq-timeout-ms".to_string(), "15000".to_string())]
    }

    /// Envoy's router adds `x-envoy-upstream-service-time` (milliseconds; router.cc
    /// `onUpstreamHeaders`, observed in ENVOY-1.40).
    fn upstream_response_header(&self, took: std::time::Duration) -> Option<(String, String)> {
        Some((
            "x-envoy-upstream-service-time".to_string(),
            took.as_millis().to_string(),
        ))
    }

    /// Envoy's `server_header_transformation` defaults to OVERWRITE with `server_name` "envoy"
    /// (observed in ENVOY-1.40: an upstream's `server` is replaced).
    fn server_header(&self) -> Option<&'static str> {
        Some("envoy")
    }

    /// Envoy fails the stream with 503 and an empty body (`failStream`, ENVOY-SRC), a plain
    /// local reply on a connection it keeps.
    fn fail_closed_reply(&self) -> HostReply {
        HostReply {
            status: 503,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A trap marks the `WasmBase` failed for good (proxy-wasm-cpp-host wasm.cc
    /// `addFailCallback` sets `failed_`); see [`AfterTrap::StayFailed`].
    fn after_trap(&self) -> AfterTrap {
        AfterTrap::StayFailed
    }

    /// Envoy has no such bound: proxy-wasm-cpp-host and Envoy's `Context` keep whatever the
    /// guest hands them (header map additions, `httpCall`s, shared data and queues have no cap;
    /// an over-sized header map only fails the request later, with 431, envoyproxy/envoy#34231),
    /// so the process grows until the allocator fails and Envoy aborts. host-sim fails the VM
    /// instead, with a trap, which is how Envoy contains a guest it cannot serve.
    fn over_budget(&self, function: HostFunction, refusal: &OverBudget) -> BudgetRefusal {
        BudgetRefusal::Trap(format!("{}: {refusal}", function.name()))
    }

    /// Envoy reads the timeout as a signed `int` and answers BAD_ARGUMENT to a negative one
    /// (ENVOY-SRC `Context::httpCall`).
    fn call_timeout_valid(&self, timeout_ms: u32) -> bool {
        i32::try_from(timeout_ms).is_ok()
    }

    /// A cluster of the bootstrap (ENVOY-SRC `Context::httpCall` looks the cluster up and
    /// answers BAD_ARGUMENT for an unknown one).
    fn callout_upstream(&self) -> CalloutUpstream {
        CalloutUpstream::Cluster
    }

    /// 0 means no timeout (ENVOY-SRC `Context::httpCall` sets none for 0).
    fn effective_call_timeout_ms(&self, requested: u32) -> Option<u64> {
        (requested > 0).then_some(u64::from(requested))
    }

    /// Envoy's async client marks callouts as internal and announces their timeout (e2e: the
    /// REST proxy saw both from Envoy 1.40).
    fn callout_request_headers(&self, timeout_ms: Option<u64>) -> Vec<(String, String)> {
        let mut headers = vec![("x-envoy-internal".to_string(), "true".to_string())];
        if let Some(ms) = timeout_ms {
            headers.push(("x-envoy-expected-rq-timeout-ms".to_string(), ms.to_string()));
        }
        headers
    }

    /// Envoy's async client runs the router: a timeout becomes a local `504` "upstream request
    /// timeout" and a connection failure a local `503` (both reach the filter as ordinary
    /// responses, their headers counted); only a reset after the response started is a failure
    /// with no reply: `onHttpCallFailure` runs the callback without setting
    /// `http_call_response_`, so the maps do not exist (reading one is BAD_ARGUMENT) and neither
    /// does the body, the call reports `num_headers == 0`, and `proxy_get_status` answers
    /// `BrokenConnection` (11) with message "reset" (ENVOY-SRC).
    fn callout_failure_reply(&self, failure: CalloutFailure) -> CalloutFailureReply {
        let local = |status: u32, body: &[u8]| {
            let headers = vec![
                (":status".to_string(), status.to_string()),
                ("content-length".to_string(), body.len().to_string()),
                ("content-type".to_string(), "text/plain".to_string()),
            ];
            CalloutFailureReply {
                status: (status, ""),
                num_headers: headers.len(),
                headers: Some(headers),
                body: body.to_vec(),
            }
        };
        match failure {
            CalloutFailure::Timeout => local(504, b"upstream request timeout"),
            CalloutFailure::BrokenConnection => local(
                503,
                b"upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            ),
            CalloutFailure::Reset => CalloutFailureReply {
                status: (11, "reset"),
                headers: None,
                body: Vec::new(),
                num_headers: 0,
            },
        }
    }

    /// Envoy's gRPC async client sends the call through the same async HTTP client and router
    /// as a callout, with the request marked as gRPC, so a failure becomes the router's local
    /// reply rendered as a trailers-only gRPC answer: `grpc-status` from the HTTP code (504 and
    /// 503 are UNAVAILABLE, 14: envoy source/common/grpc/status.cc `httpToGrpcStatus`) and
    /// `grpc-message` the reply's body (source/common/http/utility.cc `sendLocalReply` with
    /// `is_grpc`). The gRPC client closes the call with those trailers and appends the stream's
    /// response code details in braces (source/common/grpc/async_client_impl.cc `onTrailers`,
    /// `notifyRemoteClose`, `enhancedGrpcMessage`). Observed with Envoy 1.40
    /// (tests/e2e/test_grpc.py): a timed-out call closes with 14 "upstream request
    /// timeout{response_timeout}", a refused connection with 14 and the router's connect-failure
    /// text plus its details. A reset after the response started is `onReset` ->
    /// `streamError(Internal)`: 13 (its details are not modelled).
    fn grpc_failure_status(&self, failure: CalloutFailure) -> (u32, &'static str) {
        match failure {
            CalloutFailure::Timeout => (14, "upstream request timeout{response_timeout}"),
            CalloutFailure::BrokenConnection => (
                14,
                "upstream connect error or disconnect/reset before headers. reset reason: remote connection \
                 failure{upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_\
                 Connection_refused}}",
            ),
            CalloutFailure::Reset => (13, ""),
        }
    }

    /// A close from the server carries the response code details `via_upstream` (ENVOY-SRC
    /// async_client_impl.cc `enhancedGrpcMessage`: the message, then the details in braces, or
    /// the details alone for an empty message; observed with Envoy 1.40: "denied{via_upstream}",
    /// and "via_upstream" for a stream's OK close).
    fn grpc_server_close_message(&self, message: String) -> String {
        if message.is_empty() {
            "via_upstream".to_string()
        } else {
            format!("{message}{{via_upstream}}")
        }
    }

    /// Envoy's `grpcSend` hands the message to the stream without checking for a half-close and
    /// answers OK (observed with Envoy 1.40, tests/e2e/test_grpc.py).
    fn grpc_send_after_end_status(&self) -> Status {
        Status::Ok
    }

    /// ENVOY-SRC `continueStream`: DOWNSTREAM is OK (a no-op without a network filter),
    /// UPSTREAM is UNIMPLEMENTED; `closeStream` answers OK for both.
    fn tcp_stream_status(&self, stream_type: StreamType, close: bool) -> Status {
        match (stream_type, close) {
            (_, true) | (StreamType::Downstream, false) => Status::Ok,
            _ => Status::Unimplemented,
        }
    }

    /// The connection manager writes the access logs (the filter's `log()` runs `proxy_on_log`)
    /// before it destroys the filters (`doDeferredStreamDestroy`: `log()` then
    /// `destroyFilters()`, envoy source/common/http/conn_manager_impl.cc), and the filter's
    /// `onDestroy` calls `onDone()` then `onDelete()` (ENVOY-SRC `Context::onDestroy`); observed
    /// in ENVOY-1.40. `proxy_on_done`'s return value is ignored for streams.
    fn stream_end_callbacks(&self) -> [Callback; 3] {
        [Callback::Log, Callback::Done, Callback::Delete]
    }

    /// proxy-wasm-cpp-host calls `onDone()`, then `onDelete()` at once or after `proxy_done`,
    /// and never `onLog()` for a root (wasm.cc `startShutdown`, `done`, `finishShutdown`).
    fn root_shutdown_logs(&self) -> bool {
        false
    }

    /// On SIGTERM each worker's VM gets `onDone` for its roots (proxy-wasm-cpp-host
    /// `WasmBase::startShutdown`), but Envoy 1.40 then destroys the VM at once, resetting the
    /// callouts a root just started and never waiting for `proxy_done` (observed with
    /// `--component-log-level wasm:debug,client:debug`: "disconnect. resetting 0 pending
    /// requests" right after the filter's on_done log; e2e tests/e2e/test_shutdown.py).
    /// `serve` deliberately goes further: it waits for the `proxy_done` a root owes, within
    /// `EdgeLimits::drain_time`, so a filter that drains in `proxy_on_done` keeps its promise
    /// there (a documented difference).
    fn finishes_roots_at_shutdown(&self) -> bool {
        true
    }

    /// Envoy's HTTP wasm filter keeps its plugin in a thread-local slot whose initializer,
    /// `getOrCreateThreadLocalPlugin`, runs once per thread (envoy
    /// source/extensions/filters/http/wasm/wasm_filter.cc `FilterConfig::FilterConfig`, lines
    /// 18-24 at 164def28; newer Envoy moved the same callback into
    /// `Common::Wasm::PluginConfig::PluginConfig`, source/extensions/common/wasm/wasm.cc), and
    /// `ThreadLocal::SlotImpl::set` runs it on every worker's dispatcher and then, "Handle main
    /// thread", on the main thread's (source/common/thread_local/thread_local_impl.cc:114-127 at
    /// 033421e1). On each thread proxy-wasm-cpp-host (at 52a02917) clones the base Wasm into a
    /// thread-local VM (src/wasm.cc:628-663 `getOrCreateThreadLocalWasm`, the `thread_local local_wasms` map at
    /// line 41; the clone is a new instance, `wasm_vm()->clone()` at line 218), then starts and
    /// configures the plugin's root context in it (lines 665-706 `getOrCreateThreadLocalPlugin`:
    /// `start`, which calls `proxy_on_vm_start`, then `configure`). The base Wasm itself only
    /// loads and initializes the module (lines 571-613 `createWasm`), and the configuration
    /// canary's clone is killed once it configured (lines 536-569 `WasmHandleBase::canary`). So
    /// the main thread has its own VM and root per filter, whose timer runs on the main
    /// dispatcher (source/extensions/common/wasm/wasm.cc `Wasm::setTimerPeriod`) and whose
    /// callouts go out from there: observed in ENVOY-1.40 (`--concurrency 1`: `probe:configure`
    /// and `probe:tick` from two thread ids, both calling out; e2e
    /// tests/e2e/test_lifecycle_differential.py).
    fn runs_main_thread_root(&self) -> bool {
        true
    }

    /// Typed binary values (ENVOY-SRC `Context::getProperty`, attribute docs): strings as raw
    /// bytes, integers as 8-byte little-endian int64, booleans as one byte, maps serialized
    /// like header maps.
    fn encode_property(&self, value: PropertyValue) -> Vec<u8> {
        match value {
            PropertyValue::Str(s) => s.into_bytes(),
            PropertyValue::Int(i) => i.to_le_bytes().to_vec(),
            PropertyValue::Bool(b) => vec![b as u8],
            PropertyValue::Map(pairs) => encode_pairs(&pairs),
        }
    }

    /// `plugin_root_id` is the configured root id, `plugin_vm_id` the VM's id, and
    /// `request.headers` / `response.headers` are header maps (Envoy attribute docs).
    fn host_property(&self, path: &[&str], facts: &PropertyFacts<'_>) -> HostProperty {
        let value = match path {
            ["plugin_root_id"] => PropertyValue::Str(facts.root_id.unwrap_or_default().to_string()),
            ["plugin_vm_id"] => PropertyValue::Str(facts.vm_id.to_string()),
            ["request", "headers"] | ["response", "headers"] => {
                let Some(stream) = facts.stream else {
                    return HostProperty::NotFound;
                };
                header_map(if path[0] == "request" {
                    stream.request_headers
                } else {
                    stream.response_headers
                })
            }
            _ => return HostProperty::Common,
        };
        HostProperty::Value(value)
    }

    /// Envoy keeps guest properties in the stream's filter state and answers NOT_FOUND from a
    /// root context (ENVOY-SRC `Context::setProperty`).
    fn properties_need_a_stream(&self) -> bool {
        true
    }

    /// Envoy prefixes custom metrics with `wasmcustom.` (ENVOY-SRC `defineMetric`).
    fn metric_name(&self, _plugin_name: &str, name: &str) -> String {
        format!("wasmcustom.{name}")
    }
}

/// `make_ascii_lowercase`, a word at a time: every request header name goes through it, and the
/// byte loop cost about eight instructions per byte. A byte is upper-case ASCII when its low
/// seven bits are in `A..=Z` and its high bit is clear; adding `0x80 - b'A'` (resp.
/// `0x80 - b'Z' - 1`) to the low seven bits sets a byte's high bit exactly when they are at least
/// `A` (resp. above `Z`), without carrying into the next byte. Lower-casing is idempotent, so a
/// name whose length is not a multiple of the word ends with a word overlapping the previous one;
/// names of four to seven bytes are two overlapping four-byte words.
fn lowercase_ascii(bytes: &mut [u8]) {
    let len = bytes.len();
    if len < 4 {
        bytes.make_ascii_lowercase();
    } else if len < 8 {
        lowercase_word::<4>(bytes, 0);
        lowercase_word::<4>(bytes, len - 4);
    } else {
        let mut start = 0;
        while start + 8 <= len {
            lowercase_word::<8>(bytes, start);
            start += 8;
        }
        if start < len {
            lowercase_word::<8>(bytes, len - 8);
        }
    }
}

/// Lower-cases the `N` (at most 8) bytes at `start` as one word ([`lowercase_ascii`]).
fn lowercase_word<const N: usize>(bytes: &mut [u8], start: usize) {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let Some(chunk) = bytes.get_mut(start..start + N) else {
        return;
    };
    // Bytes past `N` stay zero, which is not upper-case: they come out zero.
    let mut word = [0; 8];
    word[..N].copy_from_slice(chunk);
    let w = u64::from_ne_bytes(word);
    let low7 = w & !HIGH;
    let at_least_a = low7 + ONES * u64::from(0x80 - b'A');
    let above_z = low7 + ONES * u64::from(0x80 - b'Z' - 1);
    let upper = at_least_a & !above_z & !w & HIGH;
    chunk.copy_from_slice(&(w | (upper >> 2)).to_ne_bytes()[..N]);
}

#[cfg(test)]
mod tests {
    use super::lowercase_ascii;

    #[test]
    fn lowercase_ascii_is_make_ascii_lowercase_for_every_byte_and_length() {
        // Every byte value at every position of names of every length up to 24 (one, two and
        // three words, with and without an overlapping last word), among upper-case letters and
        // the bytes around the letters' range, against the standard byte loop.
        for len in 0..=24 {
            for position in 0..len {
                for byte in 0..=255u8 {
                    let mut name: Vec<u8> = (0..len).map(|i| b"@AZ[`az{\x80\xc1\xda\xff"[i % 12]).collect();
                    name[position] = byte;
                    let mut expected = name.clone();
                    expected.make_ascii_lowercase();
                    lowercase_ascii(&mut name);
                    assert_eq!(name, expected, "length {len}, byte {byte:#x} at {position}");
                }
            }
        }
    }
}
