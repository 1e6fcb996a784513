//! Host behaviour profiles: Envoy and Kong (ngx_wasm_module) as overrides of one host.
//!
//! The ABI glue and the lifecycle driver ask the profile at each point where the two hosts are
//! documented or observed to differ; nothing else in host-sim branches on the host. Sources:
//! - KONG-DOC: Kong/ngx_wasm_module docs/PROXY_WASM.md ("Supported ... host functions").
//! - KONG-DIFF: Kong/ngx_wasm_module docs/PROXY_WASM_HOST_DIFFERENCES.md.
//! - KONG-SRC: ngx_wasm_module src/http/proxy_wasm/ngx_http_proxy_wasm.c and
//!   src/common/proxy_wasm/ngx_proxy_wasm_host.c.
//! - ENVOY-SRC: envoy source/extensions/common/wasm/context.cc and proxy-wasm-cpp-host exports.cc.
//! - ENVOY-1.40: behaviour observed running a Rust proxy-wasm filter in Envoy 1.40.0 (V8).
//! - KONG-OBS: behaviour observed running filters in nginx 1.26.3 with ngx_wasm_module
//!   (wasmtime 26).

pub use crate::abi::Callback;
use crate::abi::{LogLevel, MapType, MetricType, Status, StreamType};
use crate::hostfn::HostFunction;
use crate::state::{LocalResponse, OverBudget};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// Which host to behave like.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Envoy's `envoy.filters.http.wasm` on proxy-wasm-cpp-host.
    Envoy,
    /// Kong 3.x on ngx_wasm_module.
    Kong,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Envoy => "envoy",
            Profile::Kong => "kong",
        })
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "envoy" => Ok(Profile::Envoy),
            "kong" => Ok(Profile::Kong),
            other => Err(format!("unknown profile {other:?} (expected envoy or kong)")),
        }
    }
}

/// Whether a host function reads a map or changes it (hosts police the two differently).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MapAccess {
    /// `proxy_get_header_map_value`, `proxy_get_header_map_pairs`.
    Read,
    /// `proxy_set_header_map_pairs`, add, replace, remove (and, on Envoy,
    /// `proxy_get_header_map_size`: see [`Profile::map_size_access`]).
    Write,
}

/// Where a stream stands, as far as which of its maps a callback may touch.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamPhase {
    /// The request phase the filter paused in and has not resumed.
    pub request_paused_in: Option<Callback>,
    /// The response phase the filter paused in and has not resumed.
    pub response_paused_in: Option<Callback>,
    /// The request reached end of stream.
    pub request_complete: bool,
    /// The response reached end of stream.
    pub response_complete: bool,
}

/// What a host does with a second local response on a stream.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SecondLocalResponse {
    /// The guest traps.
    Trap,
    /// OK, but the first reply is the one the client gets.
    KeepFirst,
}

/// How request bodies reach the guest.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BodyDelivery {
    /// Each chunk as it arrives; a paused body accumulates and `body_size` is cumulative
    /// (spec `proxy_on_request_body`; Envoy).
    Chunks,
    /// The whole body once, with `end_of_stream = true`, after nginx read all of it (KONG-SRC
    /// ngx_http_proxy_wasm.c:57-82 passes `req_body_len` and eof 1; ngx_wasm_ops.c:478-486 reads
    /// the body in the content phase). No call for an empty body, a chunked `0\r\n\r\n` body
    /// included: the read handler returns before the filters when nginx kept no buffer
    /// (ngx_http_proxy_wasm.c:96-102) and the content phase skips them for a zero length
    /// (ngx_wasm_ops.c:526-529). A body larger than nginx's `client_body_buffer_size` is
    /// buffered to a temp file: the call still comes, with the file's size
    /// (ngx_http_proxy_wasm.c:112-131; ngx_wasm_module t/03-proxy_wasm/004-on_http_phases.t
    /// TEST 6), but the body cannot be read ([`Profile::spilled_request_body_log`]).
    WholeOnce,
}

/// nginx's default `client_body_buffer_size` on x86-64, which Kong keeps
/// (`nginx_http_client_body_buffer_size = 8k` in Kong's kong.conf.default; nginx docs
/// ngx_http_core_module `client_body_buffer_size`: "two memory pages", 8K on x86-64). A larger
/// request body is written to a temp file.
pub const DEFAULT_CLIENT_BODY_BUFFER_BYTES: usize = 8 * 1024;

/// What the host does when a callout fails rather than answering.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CalloutFailure {
    /// The callout did not answer within its timeout.
    Timeout,
    /// No connection could be made, or it broke before a response.
    BrokenConnection,
    /// The stream was reset after it started.
    Reset,
}

/// What a host function does when the host-memory budget cannot hold what it asked to keep
/// ([`Profile::over_budget`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetRefusal {
    /// The call returns this status, with nothing kept.
    Status(Status),
    /// The guest traps with this message.
    Trap(String),
}

/// What a host does with a VM whose guest trapped.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AfterTrap {
    /// The VM stays failed until the configuration is loaded again: every later stream fails
    /// closed, or passes without the filter under `fail_open`, and ticks and other root
    /// callbacks stop. proxy-wasm-cpp-host: a trap marks the `WasmBase` failed for good
    /// (wasm.cc `addFailCallback` sets `failed_`); `CHECK_FAIL_HTTP` (context.cc) answers each
    /// stream callback of a failed VM with Continue when `plugin_->fail_open_`, else
    /// `failStream` (Envoy: 503 `wasm_fail_stream`, ENVOY-SRC `Context::failStream`);
    /// `onTick`, `onQueueReady`, `onDone`, `onLog`, `onDelete` skip a failed VM. ENVOY-1.40:
    /// later requests got 503 and ticks stopped.
    StayFailed,
    /// The next request gets a fresh instance of the module: each root context is created and
    /// configured again (`proxy_on_context_create`, `proxy_on_configure`) but
    /// `proxy_on_vm_start` does not run (KONG-SRC ngx_proxy_wasm.c:1000-1006 invalidates a
    /// trapped instance; :1203-1210 resets the root exec for the new instance; :1232-1242 runs
    /// on_vm_start only when the root context is created for the first time). Streams that
    /// were in flight on the trapped instance fail closed here (ngx_wasm_module re-creates
    /// their context on the new instance, host-sim does not), and the trapping stream gets no
    /// end callbacks.
    FreshInstance,
}

/// A metric host call, for [`Profile::metric_trap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricOp {
    /// `proxy_increment_metric`.
    Increment,
    /// `proxy_record_metric`.
    Record,
    /// `proxy_get_metric`.
    Get,
}

impl Profile {
    /// Whether the host provides a host function at all. Kong traps on the ones it has not
    /// implemented (KONG-DOC, "NYI" rows): log level, `proxy_done`, stream close, gRPC,
    /// `proxy_get_status`, `proxy_resolve_shared_queue`.
    pub fn implements(self, f: HostFunction) -> bool {
        match self {
            Profile::Envoy => true,
            Profile::Kong => !matches!(
                f,
                HostFunction::GetLogLevel
                    | HostFunction::Done
                    | HostFunction::CloseStream
                    | HostFunction::GrpcCall
                    | HostFunction::GrpcStream
                    | HostFunction::GrpcSend
                    | HostFunction::GrpcCancel
                    | HostFunction::GrpcClose
                    | HostFunction::GetStatus
                    | HostFunction::ResolveSharedQueue
            ),
        }
    }

    /// The `end_of_stream` the guest sees on request headers. Kong always passes `false`, even for
    /// a request without a body (KONG-DIFF; KONG-SRC `ngx_http_proxy_wasm_on_request_headers`).
    pub fn request_headers_end_of_stream(self, real: bool) -> bool {
        match self {
            Profile::Envoy => real,
            Profile::Kong => false,
        }
    }

    /// The trap a metric call ends in on this host, if any. ngx_wasm_module traps where Envoy
    /// answers with a status (ngx_proxy_wasm_host.c, `ngx_proxy_wasm_hfuncs_increment_metric`,
    /// `_record_metric`, `_get_metric`; ngx_wa_metrics.c): an unknown id, an increment of
    /// anything but a counter, a record into a counter, a read of a histogram. `kind` is the
    /// metric's type, `None` when no metric has `id`.
    pub fn metric_trap(self, op: MetricOp, id: u32, kind: Option<MetricType>) -> Option<String> {
        if self == Profile::Envoy {
            return None;
        }
        let (doing, wrong_kind) = match op {
            MetricOp::Increment => (
                "could not increment metric id",
                (kind != Some(MetricType::Counter)).then_some("metric not a counter"),
            ),
            MetricOp::Record => (
                "could not record value in metric id",
                (kind == Some(MetricType::Counter)).then_some("metric is a counter"),
            ),
            MetricOp::Get => (
                "could not retrieve metric id",
                (kind == Some(MetricType::Histogram)).then_some("metric is a histogram"),
            ),
        };
        let reason = if kind.is_none() {
            Some("metric not found")
        } else {
            wrong_kind
        }?;
        Some(format!("{doing} \"{id}\": {reason}"))
    }

    /// What `function` does when the host-memory budget ([`crate::Limits::max_host_bytes`])
    /// cannot hold what it asked the host to keep (`refusal` says how much).
    ///
    /// Envoy has no such bound: proxy-wasm-cpp-host and Envoy's `Context` keep whatever the
    /// guest hands them (header map additions, `httpCall`s, shared data and queues have no cap;
    /// an over-sized header map only fails the request later, with 431, envoyproxy/envoy#34231),
    /// so the process grows until the allocator fails and Envoy aborts. host-sim fails the VM
    /// instead, with a trap, which is how Envoy contains a guest it cannot serve.
    ///
    /// ngx_wasm_module answers an allocation failure in most host functions with
    /// INTERNAL_FAILURE (`ngx_proxy_wasm_result_err`, KONG-SRC ngx_proxy_wasm_host.c: set_buffer
    /// :548, set_header_map_pairs :761, add/replace_header_map_value :804/:838, dispatch_http_call
    /// :1228, set_property :989), and traps where its fixed-size shared memory zones are full:
    /// `shm_kv` ("failed setting value to shm (could not write to slab)", :1393; Kong/
    /// ngx_wasm_module docs/DIRECTIVES.md `shm_kv ... eviction=none`), `shm_queue` ("could not
    /// enqueue (queue is full)", :1497; DIRECTIVES.md: "writes will fail when the allocated
    /// memory slab is full") and the metrics zone ("no memory (increase \"slab_size\"
    /// directive)", :1664). A queue registration allocates nothing in Kong (its zones are
    /// configured); host-sim creates the queue there, and refuses it with INTERNAL_FAILURE. `proxy_log` is never refused on either host: the oldest log lines
    /// give way instead ([`crate::state`]).
    pub fn over_budget(self, function: HostFunction, refusal: &OverBudget) -> BudgetRefusal {
        let name = function.name();
        match self {
            Profile::Envoy => BudgetRefusal::Trap(format!("{name}: {refusal}")),
            Profile::Kong => match function {
                HostFunction::SetSharedData => {
                    BudgetRefusal::Trap("failed setting value to shm (could not write to slab)".into())
                }
                HostFunction::EnqueueSharedQueue => BudgetRefusal::Trap("could not enqueue (queue is full)".into()),
                HostFunction::DefineMetric => {
                    BudgetRefusal::Trap("could not define metric: no memory (increase \"slab_size\" directive)".into())
                }
                _ => BudgetRefusal::Status(Status::InternalFailure),
            },
        }
    }

    /// Whether `proxy_increment_metric` with a negative delta lowers a counter. Envoy refuses
    /// it (BAD_ARGUMENT); ngx_wasm_module adds the delta (`counter += n`, ngx_wa_metrics.c).
    pub fn counters_may_decrease(self) -> bool {
        self == Profile::Kong
    }

    /// A header name as the host stores it: Envoy lower-cases names (`LowerCaseString`), nginx
    /// keeps them as given.
    pub fn header_name(self, mut name: Vec<u8>) -> Vec<u8> {
        if self == Profile::Envoy {
            name.make_ascii_lowercase();
        }
        name
    }

    /// How request bodies are delivered.
    pub fn request_body_delivery(self) -> BodyDelivery {
        match self {
            Profile::Envoy => BodyDelivery::Chunks,
            Profile::Kong => BodyDelivery::WholeOnce,
        }
    }

    /// Whether request trailers reach the filter (`proxy_on_request_trailers`). ngx_wasm_module
    /// never calls it (KONG-DOC: `on_http_request_trailers` is NYI; ngx_http_proxy_wasm.c runs no
    /// request-trailers step), so on Kong trailers only end the body.
    pub fn delivers_request_trailers(self) -> bool {
        self == Profile::Envoy
    }

    /// Whether a request body of `len` bytes reaches the filter as readable bytes, given the
    /// client body buffer. Kong: nginx writes a body larger than `client_body_buffer_size` to a
    /// temp file, and ngx_wasm_module cannot hand that to a filter (KONG-SRC
    /// ngx_proxy_wasm_host.c:77-83; its test t/03-proxy_wasm/hfuncs/113-proxy_get_http_request_body.t
    /// TEST 3). Envoy buffers in memory.
    pub fn request_body_readable(self, len: usize, client_body_buffer_bytes: usize) -> bool {
        match self {
            Profile::Envoy => true,
            Profile::Kong => len <= client_body_buffer_bytes,
        }
    }

    /// The host's error line when the filter reads a request body buffered to a file (Kong,
    /// ngx_proxy_wasm_host.c:78-81; the temp file's path is host-sim's stand-in).
    pub fn spilled_request_body_log(self, stream: u32) -> String {
        format!("cannot read request body buffered to file at \"client_body_temp/{stream:010}\"")
    }

    /// Whether a stream's header or trailer map may be touched from `callback`.
    ///
    /// Envoy follows the spec ("`HTTP_REQUEST_HEADERS` can be read in `proxy_on_log`, and read
    /// and modified from `proxy_on_request_headers` (or for as long as request processing is
    /// paused from it)", and likewise for the other three maps). ENVOY-SRC `Context::getMap` /
    /// `getConstMap`: each map pointer is set for its own callback and kept only while the
    /// filter stops iteration there (`decodeHeaders` clears `request_headers_` on Continue);
    /// trailers may also be added from the body callback at end of stream (`addDecodedTrailers`);
    /// `proxy_on_log` reads request headers, response headers and response trailers but changes
    /// nothing. ENVOY-1.40 answered BAD_ARGUMENT to a request header read from `on_request_body`.
    /// Kong keeps the nginx request and serves its headers in every phase (KONG-SRC maps).
    pub fn map_accessible(self, map: MapType, access: MapAccess, callback: Callback, phase: StreamPhase) -> bool {
        if self == Profile::Kong {
            return true;
        }
        let log_read = callback == Callback::Log && access == MapAccess::Read;
        let (own, paused, body, complete) = match map {
            MapType::HttpRequestHeaders => (Callback::RequestHeaders, phase.request_paused_in, None, false),
            MapType::HttpRequestTrailers => (
                Callback::RequestTrailers,
                phase.request_paused_in,
                Some(Callback::RequestBody),
                phase.request_complete,
            ),
            MapType::HttpResponseHeaders => (Callback::ResponseHeaders, phase.response_paused_in, None, false),
            MapType::HttpResponseTrailers => (
                Callback::ResponseTrailers,
                phase.response_paused_in,
                Some(Callback::ResponseBody),
                phase.response_complete,
            ),
            // Call and gRPC maps are decided by the ABI glue (they live with the callback).
            _ => return true,
        };
        // The access log phase has no request trailers (ENVOY-SRC `getConstMap`).
        let in_log = log_read && map != MapType::HttpRequestTrailers;
        let trailers_at_end = body.is_some_and(|b| (callback == b || paused == Some(b)) && complete);
        callback == own || paused == Some(own) || in_log || trailers_at_end
    }

    /// The status for a stream map the current callback may not touch: Envoy answers a read in
    /// the access log phase with NOT_FOUND ("Maps might point to nullptr in the access log
    /// phase", ENVOY-SRC `getHeaderMapValue`), BAD_ARGUMENT otherwise ("Requested map type is
    /// not currently available").
    pub fn unavailable_map_status(self, callback: Callback, access: MapAccess) -> Status {
        if callback == Callback::Log && access == MapAccess::Read {
            Status::NotFound
        } else {
            Status::BadArgument
        }
    }

    /// How `proxy_get_header_map_size` is policed: Envoy measures through its mutable map
    /// accessor (ENVOY-SRC `getHeaderMapSize` calls `getMap`), so the size of a read-only or
    /// out-of-phase map is BAD_ARGUMENT; elsewhere it is a read.
    pub fn map_size_access(self) -> MapAccess {
        match self {
            Profile::Envoy => MapAccess::Write,
            Profile::Kong => MapAccess::Read,
        }
    }

    /// Whether `proxy_get_header_map_pairs` on a map that is not available answers OK with an
    /// empty map (Envoy: `getHeaderMapPairs` serializes a null map as empty and returns Ok,
    /// ENVOY-SRC) rather than BAD_ARGUMENT (Kong: `ngx_proxy_wasm_maps_get_all` fails).
    pub fn unavailable_map_pairs_are_empty(self) -> bool {
        self == Profile::Envoy
    }

    /// Required pseudo-headers of a `proxy_http_call`. Envoy: `:method`, `:path`, `:authority`
    /// (ENVOY-SRC `Context::httpCall`, spec). Kong: `:method` and `:path` (KONG-DOC
    /// dispatch_http_call; `:authority` only sets Host).
    pub fn required_call_headers(self) -> &'static [&'static str] {
        match self {
            Profile::Envoy => &[":method", ":path", ":authority"],
            Profile::Kong => &[":method", ":path"],
        }
    }

    /// Whether `proxy_http_call` may be made from `callback`. Kong allows dispatch only from
    /// request headers/body, ticks, dispatch responses and foreign function callbacks, and traps
    /// elsewhere (KONG-DIFF); Envoy allows it anywhere a context exists.
    pub fn dispatch_allowed(self, callback: Callback) -> bool {
        match self {
            Profile::Envoy => true,
            Profile::Kong => matches!(
                callback,
                Callback::RequestHeaders
                    | Callback::RequestBody
                    | Callback::Tick
                    | Callback::HttpCallResponse
                    | Callback::ForeignFunction
            ),
        }
    }

    /// What a second `proxy_send_local_response` on one stream does. Kong traps ("local
    /// response already stashed", KONG-SRC `ngx_proxy_wasm_hfuncs_send_local_response`). Envoy
    /// returns OK and queues each reply as an after-VM-call action (ENVOY-SRC
    /// `Context::sendLocalResponse`, `addAfterVmCallAction`); the first `sendLocalReply` ends the
    /// stream, so the client gets the first reply.
    pub fn second_local_response(self) -> SecondLocalResponse {
        match self {
            Profile::Envoy => SecondLocalResponse::KeepFirst,
            Profile::Kong => SecondLocalResponse::Trap,
        }
    }

    /// Whether `proxy_set_effective_context` switches the context host functions act on. Kong
    /// ignores the call and answers OK (KONG-SRC `ngx_proxy_wasm_hfuncs_set_effective_context`);
    /// Envoy switches, and answers BAD_ARGUMENT for an unknown context (spec).
    pub fn effective_context_switches(self) -> bool {
        self == Profile::Envoy
    }

    /// Why `proxy_set_tick_period_milliseconds` traps, if it does. Kong traps when called from
    /// a context other than the root ("can only set tick_period in root context") and when a
    /// period is already set ("tick_period already set") (KONG-SRC
    /// `ngx_proxy_wasm_hfuncs_set_tick_period`). Envoy applies the period to the root of the
    /// calling context, any number of times (proxy-wasm-cpp-host `setTimerPeriod`).
    pub fn tick_period_refusal(self, from_root: bool, already_set: bool) -> Option<&'static str> {
        match self {
            Profile::Envoy => None,
            Profile::Kong if !from_root => Some("can only set tick_period in root context"),
            Profile::Kong if already_set => Some("tick_period already set"),
            Profile::Kong => None,
        }
    }

    /// The status of `proxy_continue_stream` / `proxy_close_stream` for a TCP stream type on an
    /// HTTP stream (spec: OK, or UNIMPLEMENTED when continuation is not supported). ENVOY-SRC
    /// `continueStream`: DOWNSTREAM is OK (a no-op without a network filter), UPSTREAM is
    /// UNIMPLEMENTED; `closeStream` answers OK for both. Kong does not implement
    /// `proxy_close_stream` at all, and continues only HTTP streams.
    pub fn tcp_stream_status(self, stream_type: StreamType, close: bool) -> Status {
        match (self, stream_type, close) {
            (Profile::Envoy, _, true) => Status::Ok,
            (Profile::Envoy, StreamType::Downstream, false) => Status::Ok,
            _ => Status::Unimplemented,
        }
    }

    /// Whether `proxy_send_local_response` traps once the response headers went to the client
    /// (Kong: "response already sent", KONG-SRC); Envoy accepts it and resets the stream.
    pub fn late_local_response_traps(self) -> bool {
        self == Profile::Kong
    }

    /// The response a host passes through the filter's own response callbacks when the filter
    /// answered with `proxy_send_local_response` before any response started: `:status`, the
    /// headers the filter sees in `on_http_response_headers`, and the body it sees in
    /// `on_http_response_body`. What the filter leaves there is what the client gets.
    ///
    /// Envoy: `DownstreamFilterManager::sendLocalReply` sends a reply to a stream whose
    /// response has not started through `sendLocalReplyViaFilterChain`, which encodes the
    /// headers and body from the first encoder filter (`encodeHeaders(nullptr, ...)`,
    /// `encodeData(nullptr, ...)`), so the wasm filter that sent it gets its response callbacks
    /// (envoy source/common/http/filter_manager.cc). The headers are built by
    /// `Http::Utility::sendLocalReply`/`prepareLocalReply` (source/common/http/utility.cc):
    /// `:status`, the filter's headers (the wasm `Context::sendLocalResponse` passes them as
    /// `modify_headers`), then for a non-empty body `content-length` set to its size and
    /// `content-type: text/plain` unless the filter gave one; an empty body has neither, and
    /// the headers end the stream (no body callback). ENVOY-1.40: the probe's 418 "teapot"
    /// reached its `on_http_response_headers` and a header it added there reached the client.
    ///
    /// Kong: ngx_wasm_module stashes the reply with a line feed appended to a non-empty body
    /// (KONG-SRC src/http/ngx_http_wasm_local_response.c:132-141) and flushes it through nginx's
    /// header and body filters (:179-236: the filter's headers, `Content-Type` from nginx's
    /// `default_type` for a body, `Content-Length` of the body with its line feed, then
    /// `ngx_http_wasm_send_chain_link`), where the wasm filter module runs
    /// `on_response_headers` and `on_response_body` (src/http/ngx_http_wasm_filter_module.c:
    /// 66-131 header filter, 142+ body filter); t/03-proxy_wasm/hfuncs/
    /// 102-proxy_send_local_response.t TEST 6 logs both callbacks for a reply without a body.
    /// nginx's own `Server`, `Date` and `Connection` headers are not modelled here.
    pub fn local_reply_response(self, local: &LocalResponse) -> (Vec<(String, String)>, Vec<u8>) {
        let mut body = local.body.clone();
        if self == Profile::Kong && !body.is_empty() {
            body.push(b'\n');
        }
        let mut headers = vec![(":status".to_string(), local.status.to_string())];
        headers.extend(
            local
                .headers
                .iter()
                .filter(|(k, _)| !k.starts_with(':'))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
        );
        let has = |headers: &[(String, String)], name: &str| headers.iter().any(|(k, _)| k == name);
        match self {
            Profile::Envoy if body.is_empty() => {
                headers.retain(|(k, _)| k != "content-length" && k != "content-type");
            }
            Profile::Envoy | Profile::Kong => {
                if !body.is_empty() && !has(&headers, "content-type") {
                    headers.push(("content-type".into(), "text/plain".into()));
                }
                headers.retain(|(k, _)| k != "content-length");
                headers.push(("content-length".into(), body.len().to_string()));
            }
        }
        (headers, body)
    }

    /// The headers and body of a local reply the filter sent once a response was passing
    /// through its response callbacks but before that response's headers went out: the host
    /// sends it without the filter's callbacks. Envoy: `sendDirectLocalReply`, shaped by the
    /// same `Http::Utility::sendLocalReply` as [`Profile::local_reply_response`] (envoy
    /// source/common/http/filter_manager.cc). Kong: the reply as the filter gave it;
    /// ngx_wasm_module's own outcome there (a broken status line and the upstream's stale
    /// Content-Length, KONG-OBS, host.c:1087-1111) is not modelled.
    pub fn direct_local_reply(self, local: &LocalResponse) -> (Vec<(String, String)>, Vec<u8>) {
        match self {
            Profile::Envoy => self.local_reply_response(local),
            Profile::Kong => (local.headers.clone(), local.body.clone()),
        }
    }

    /// Whether the host calls `on_http_response_body` for a response whose body is `body`.
    /// Envoy ends the stream with the headers when there is no body (`Http::Utility::
    /// sendLocalReply` encodes headers with `end_stream` = empty body; its HTTP/1 codec does the
    /// same for an upstream response without one). ngx_wasm_module always runs the body filter
    /// with the last buffer, 0 bytes and end of stream included (`ngx_http_wasm_send_chain_link`
    /// sends `NGX_HTTP_LAST` for no body, KONG-SRC src/http/ngx_http_wasm_util.c;
    /// t/03-proxy_wasm/hfuncs/102-proxy_send_local_response.t TEST 6: "on_response_body,
    /// 0 bytes, eof: true").
    pub fn response_body_callback(self, body: &[u8]) -> bool {
        match self {
            Profile::Envoy => !body.is_empty(),
            Profile::Kong => true,
        }
    }

    /// Whether an upstream's response body reaches `on_http_response_body` as its data with
    /// `end_of_stream = false` followed by an empty call with `end_of_stream = true`, rather than
    /// in one call that ends the stream. Envoy's HTTP/1 codec dispatches body data as it reads
    /// it and ends the message with an empty data frame (`ConnectionImpl::onMessageComplete`,
    /// envoy source/common/http/http1/codec_impl.cc), as for request bodies; ENVOY-1.40: a probe
    /// appending in each response body callback got `-post` twice on a 12-byte upstream body.
    /// A local reply's body comes in one call that ends the stream on both hosts
    /// (`Http::Utility::sendLocalReply` encodes it with `end_stream = true`). Kong: one call,
    /// with the last buffer (not observed separately against nginx).
    pub fn upstream_body_ends_with_empty_call(self) -> bool {
        self == Profile::Envoy
    }

    /// Whether the client gets the `content-length` the filter left on the response, rather
    /// than one the host computes from the body the filter let through. Both hosts keep it, so
    /// a filter that rewrites a body without removing the header sends a stale length: a
    /// longer body is read up to the old length (the rest corrupts the connection), a shorter
    /// one leaves the client waiting; without the header the response goes out chunked.
    /// Envoy: the filter manager passes the headers the filters left to the codec
    /// (`FilterManager::encodeHeaders` -> `encodeHeaders` of the connection manager), and the
    /// HTTP/1 codec frames by `content-length` when present, else chunked (envoy
    /// source/common/http/http1/codec_impl.cc `StreamEncoderImpl::encodeHeadersBase`);
    /// ENVOY-1.40: `content-length: 12` with a 17-byte body (5 bytes left on the connection),
    /// with an 8-byte body (client waiting), and chunked once the filter removed it.
    /// Kong: ngx_wasm_module does not clear the length when the filter replaces the body; it
    /// logs "overriding response body chunk while Content-Length header already sent"
    /// (KONG-SRC src/http/ngx_http_wasm_util.c `ngx_http_wasm_set_resp_body`, whose
    /// `ngx_http_clear_content_length` in `ngx_http_wasm_send_header` is compiled out); KONG-OBS:
    /// the client got the old length, and chunked once the filter removed it.
    pub fn keeps_filter_content_length(self) -> bool {
        true
    }

    /// Whether a trap in the filter's response callbacks while its own local reply passes
    /// through them still lets that reply out unchanged (`true`), or the host answers the
    /// client with its failure status instead (`false`). Envoy: the failed filter fails the
    /// stream (`Context::failStream`, ENVOY-SRC, `sendLocalReply` with 503), and as the reply's
    /// headers exist but were not sent, the filter manager sends the 503 straight to the codec
    /// (`sendDirectLocalReply`, envoy source/common/http/filter_manager.cc); ENVOY-1.40: 503
    /// with an empty body. Kong: a trap in the response phase fails open, the response already
    /// chosen goes out (KONG-OBS: a trap in on_response_headers delivered the upstream
    /// response; for a local reply this follows from that observation, it was not run).
    pub fn local_reply_survives_response_trap(self) -> bool {
        self == Profile::Kong
    }

    /// Whether `proxy_set_buffer_bytes` may write at `start` into a body of `len` bytes. The spec
    /// allows prepend, append, inject and replace anywhere; Envoy only at the start (replacing
    /// `size` bytes) or at/after the end, and answers BAD_ARGUMENT in between (ENVOY-SRC
    /// `Buffer::copyFrom`), which the Rust SDK turns into a panic.
    pub fn buffer_write_allowed(self, start: usize, len: usize) -> bool {
        match self {
            Profile::Envoy => start == 0 || start >= len,
            Profile::Kong => true,
        }
    }

    /// Whether `proxy_set_property` needs a stream: Envoy keeps guest properties in the stream's
    /// filter state and answers NOT_FOUND from a root context (ENVOY-SRC `Context::setProperty`).
    pub fn properties_need_a_stream(self) -> bool {
        self == Profile::Envoy
    }

    /// Whether a `proxy_http_call` timeout is acceptable: Envoy reads it as a signed `int` and
    /// answers BAD_ARGUMENT to a negative one (ENVOY-SRC `Context::httpCall`).
    pub fn call_timeout_valid(self, timeout_ms: u32) -> bool {
        match self {
            Profile::Envoy => i32::try_from(timeout_ms).is_ok(),
            Profile::Kong => true,
        }
    }

    /// Whether a local response sent from `proxy_on_http_call_response` cancels the stream's
    /// other pending dispatches (Kong, KONG-DIFF).
    pub fn local_response_cancels_dispatches(self) -> bool {
        self == Profile::Kong
    }

    /// The status a host answers the client with when the filter traps or fails: Envoy fails the
    /// stream with 503 (`failStream`, ENVOY-SRC); Kong/nginx answers 500.
    pub fn fail_closed_status(self) -> u32 {
        match self {
            Profile::Envoy => 503,
            Profile::Kong => 500,
        }
    }

    /// What the host does with a VM after its guest trapped ([`AfterTrap`]).
    pub fn after_trap(self) -> AfterTrap {
        match self {
            Profile::Envoy => AfterTrap::StayFailed,
            Profile::Kong => AfterTrap::FreshInstance,
        }
    }

    /// Headers of the reply to a stream the filter failed, besides the profile's body type.
    /// nginx answers the failed request with `Connection: close` (KONG-OBS, nginx 1.26.3 with
    /// ngx_wasm_module: "After a trap: the client gets 500 ... and `Connection: close`");
    /// Envoy's `failStream` is a plain local reply on a connection it keeps.
    pub fn fail_closed_closes_connection(self) -> bool {
        self == Profile::Kong
    }

    /// The timeout a callout gets for a requested `timeout_ms`. Envoy: 0 means none. Kong: the
    /// socket timeouts apply, 60 s by default (`proxy_wasm_socket_*_timeout`).
    pub fn effective_call_timeout_ms(self, requested: u32) -> Option<u64> {
        match (self, requested) {
            (Profile::Envoy, 0) => None,
            (Profile::Kong, 0) => Some(60_000),
            (_, ms) => Some(ms as u64),
        }
    }

    /// The response headers and body the guest sees when a callout fails.
    ///
    /// Envoy's async client runs the router: a timeout becomes a local `504` "upstream request
    /// timeout" and a connection failure a local `503` (both reach the filter as ordinary
    /// responses); only a reset after the response started is a failure with no headers, which
    /// proxy-wasm reports as `num_headers == 0`. Kong reports every failure with no headers plus
    /// a `:dispatch_status` pseudo-header ("timeout", "broken connection", ...) (KONG-DOC).
    pub fn callout_failure(self, failure: CalloutFailure) -> (Vec<(String, String)>, Vec<u8>) {
        match (self, failure) {
            (Profile::Envoy, CalloutFailure::Timeout) => (
                vec![
                    (":status".into(), "504".into()),
                    ("content-length".into(), "24".into()),
                    ("content-type".into(), "text/plain".into()),
                ],
                b"upstream request timeout".to_vec(),
            ),
            (Profile::Envoy, CalloutFailure::BrokenConnection) => {
                let body =
                    b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
                        .to_vec();
                (
                    vec![
                        (":status".into(), "503".into()),
                        ("content-length".into(), body.len().to_string()),
                        ("content-type".into(), "text/plain".into()),
                    ],
                    body,
                )
            }
            (Profile::Envoy, CalloutFailure::Reset) => (Vec::new(), Vec::new()),
            (Profile::Kong, failure) => {
                let status = match failure {
                    CalloutFailure::Timeout => "timeout",
                    CalloutFailure::BrokenConnection => "broken connection",
                    CalloutFailure::Reset => "reader failure",
                };
                (vec![(":dispatch_status".into(), status.into())], Vec::new())
            }
        }
    }

    /// What `proxy_get_status` answers in `proxy_on_http_call_response` for a failed callout,
    /// when the failure is not an HTTP response: Envoy's `onHttpCallFailure` sets the status to
    /// `BrokenConnection` (11) with message "reset" (ENVOY-SRC). `None`: the HTTP status (spec).
    pub fn callout_failure_status(self, failure: CalloutFailure) -> Option<(u32, &'static str)> {
        match (self, failure) {
            (Profile::Envoy, CalloutFailure::Reset) => Some((11, "reset")),
            _ => None,
        }
    }

    /// Whether a failed callout still has a reply the guest can read (header and trailer maps,
    /// body). Envoy's `onHttpCallFailure` (a reset) runs the callback without setting
    /// `http_call_response_`, so the maps do not exist (reading one is BAD_ARGUMENT) and neither
    /// does the body (ENVOY-SRC); its timeouts and connect failures are local replies, and Kong
    /// always has the `:dispatch_status` map.
    pub fn callout_failure_has_reply(self, failure: CalloutFailure) -> bool {
        !(self == Profile::Envoy && failure == CalloutFailure::Reset)
    }

    /// Whether the failure headers count in `num_headers` of `proxy_on_http_call_response`.
    /// Kong's `:dispatch_status` is readable but the call reports zero headers (KONG-DOC).
    pub fn failure_headers_counted(self) -> bool {
        self == Profile::Envoy
    }

    /// The name a metric is stored under: Envoy prefixes custom metrics with `wasmcustom.`
    /// (ENVOY-SRC `defineMetric`); Kong with `pw.<filter name>.` (KONG-DOC metrics).
    pub fn metric_name(self, plugin_name: &str, name: &str) -> String {
        match self {
            Profile::Envoy => format!("wasmcustom.{name}"),
            Profile::Kong => format!("pw.{plugin_name}.{name}"),
        }
    }

    /// Whether decrementing a counter is rejected (Envoy: BAD_ARGUMENT, spec example).
    pub fn counter_decrement_rejected(self) -> bool {
        true
    }

    /// The start functions to run after instantiation, in order. Spec and Envoy: `_initialize`
    /// then `main` if `_initialize` exists, else `_start`. Kong runs the first of `_start` or
    /// `_initialize` it finds (KONG-DIFF).
    pub fn start_functions(self, has_initialize: bool, has_main: bool, has_start: bool) -> Vec<&'static str> {
        match self {
            Profile::Envoy => {
                if has_initialize {
                    let mut v = vec!["_initialize"];
                    if has_main {
                        v.push("main");
                    }
                    v
                } else if has_start {
                    vec!["_start"]
                } else {
                    Vec::new()
                }
            }
            Profile::Kong => {
                if has_start {
                    vec!["_start"]
                } else if has_initialize {
                    vec!["_initialize"]
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// The callbacks that end an HTTP stream, in the order the host calls them. Neither host
    /// waits for `proxy_done`: `proxy_on_done`'s return value is ignored for streams, and
    /// `proxy_on_delete` follows at once.
    ///
    /// Envoy: the connection manager writes the access logs (the filter's `log()` runs
    /// `proxy_on_log`) before it destroys the filters (`doDeferredStreamDestroy`: `log()` then
    /// `destroyFilters()`, envoy source/common/http/conn_manager_impl.cc), and the filter's
    /// `onDestroy` calls `onDone()` then `onDelete()` (ENVOY-SRC `Context::onDestroy`); observed
    /// in ENVOY-1.40. Kong: the log phase calls `proxy_on_done` (its result cast to void), then
    /// `proxy_on_log` (KONG-SRC ngx_proxy_wasm.c:1378-1391, `ngx_proxy_wasm_on_log`), and the
    /// done step `proxy_on_delete` (ngx_proxy_wasm.c:1395-1430, `proxy_on_context_finalize` is
    /// `proxy_on_delete` for ABI 0.2.1).
    pub fn stream_end_callbacks(self) -> [Callback; 3] {
        match self {
            Profile::Envoy => [Callback::Log, Callback::Done, Callback::Delete],
            Profile::Kong => [Callback::Done, Callback::Log, Callback::Delete],
        }
    }

    /// Whether a root context being shut down gets `proxy_on_log` between `proxy_on_done` and
    /// `proxy_on_delete`. proxy-wasm-cpp-host (Envoy) calls `onDone()`, then `onDelete()` at
    /// once or after `proxy_done`, and never `onLog()` for a root (wasm.cc `startShutdown`,
    /// `done`, `finishShutdown`). ngx_wasm_module never shuts a root context down before its
    /// worker exits; host-sim keeps the spec's sequence there.
    pub fn root_shutdown_logs(self) -> bool {
        self == Profile::Kong
    }

    /// Whether the host shuts root contexts down (`proxy_on_done`) when it stops. Envoy does:
    /// on SIGTERM each worker's VM gets `onDone` for its roots (proxy-wasm-cpp-host
    /// `WasmBase::startShutdown`), but Envoy 1.40 then destroys the VM at once, resetting the
    /// callouts a root just started and never waiting for `proxy_done` (observed with
    /// `--component-log-level wasm:debug,client:debug`: "disconnect. resetting 0 pending
    /// requests" right after the filter's on_done log; e2e tests/e2e/test_shutdown.py).
    /// `serve` deliberately goes further: it waits for the `proxy_done` a root owes, within
    /// `EdgeLimits::drain_time`, so a filter that drains in `proxy_on_done` keeps its promise
    /// there (a documented difference). ngx_wasm_module never shuts a root down: a worker's exit
    /// destroys the instances' stores (ngx_proxy_wasm.c `ngx_proxy_wasm_root_destroy`) and root
    /// contexts are never finalized (`destroy_pwexec`: "never called on root rexec for now").
    pub fn finishes_roots_at_shutdown(self) -> bool {
        self == Profile::Envoy
    }

    /// The order of a request's pseudo-headers as the filter sees them. Envoy 1.40 presents
    /// `:authority, :path, :method, :scheme` (observed: ENVOY-1.40, its HTTP/1 codec fills the
    /// header map in that order); ngx_wasm_module builds them from the request line as
    /// `:method, :path, :scheme` and `:authority` from Host (KONG-SRC
    /// ngx_http_proxy_wasm_headers/properties), which host-sim keeps as
    /// `:method, :path, :authority, :scheme`.
    pub fn request_pseudo_header_order(self) -> [&'static str; 4] {
        match self {
            Profile::Envoy => [":authority", ":path", ":method", ":scheme"],
            Profile::Kong => [":method", ":path", ":authority", ":scheme"],
        }
    }

    /// Headers the host's router adds to a request it proxies upstream, after the filter chain
    /// (the filter never sees them). Envoy's router announces the route's timeout
    /// (`x-envoy-expected-rq-timeout-ms`, 15000 for the default 15 s route timeout; envoy
    /// source/common/router/router.cc `FilterUtility::setTimeoutHeaders`, observed in
    /// ENVOY-1.40). nginx adds nothing of its own.
    pub fn proxied_request_headers(self) -> Vec<(String, String)> {
        match self {
            Profile::Envoy => vec![("x-envoy-expected-rq-timeout-ms".to_string(), "15000".to_string())],
            Profile::Kong => Vec::new(),
        }
    }

    /// A header the host adds to an upstream's response before the filter's response callbacks
    /// see it, given how long the upstream took. Envoy's router adds
    /// `x-envoy-upstream-service-time` (milliseconds; router.cc `onUpstreamHeaders`, observed in
    /// ENVOY-1.40); Kong adds its own latency headers in its Lua layer, after the filters.
    pub fn upstream_response_header(self, took: std::time::Duration) -> Option<(String, String)> {
        match self {
            Profile::Envoy => Some((
                "x-envoy-upstream-service-time".to_string(),
                took.as_millis().to_string(),
            )),
            Profile::Kong => None,
        }
    }

    /// The `server` header the host puts on every response it sends, replacing the upstream's
    /// or the filter's: Envoy's `server_header_transformation` defaults to OVERWRITE with
    /// `server_name` "envoy" (observed in ENVOY-1.40: an upstream's `server` is replaced). Kong's
    /// nginx sets its own in its Lua layer; the bare module leaves it to nginx.
    pub fn server_header(self) -> Option<&'static str> {
        match self {
            Profile::Envoy => Some("envoy"),
            Profile::Kong => None,
        }
    }

    /// The host's log level reported by `proxy_get_log_level` by default.
    pub fn default_log_level(self) -> LogLevel {
        LogLevel::Trace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(headers: &[(&str, &str)], body: &[u8]) -> LocalResponse {
        LocalResponse {
            status: 418,
            details: String::new(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.to_vec(),
            grpc_status: None,
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn envoy_shapes_a_local_reply_with_length_and_text_type() {
        let (headers, body) = Profile::Envoy.local_reply_response(&reply(&[("x-a", "1")], b"teapot"));
        assert_eq!(body, b"teapot");
        assert_eq!(
            headers,
            pairs(&[
                (":status", "418"),
                ("x-a", "1"),
                ("content-type", "text/plain"),
                ("content-length", "6")
            ])
        );
        // The filter's content type stays; its content-length is replaced by the body's.
        let (headers, _) = Profile::Envoy.local_reply_response(&reply(
            &[("Content-Type", "application/json"), ("content-length", "99")],
            b"{}",
        ));
        assert_eq!(
            headers,
            pairs(&[
                (":status", "418"),
                ("content-type", "application/json"),
                ("content-length", "2")
            ])
        );
    }

    #[test]
    fn envoy_drops_length_and_type_from_an_empty_local_reply() {
        let (headers, body) = Profile::Envoy.local_reply_response(&reply(
            &[("content-type", "text/html"), ("content-length", "5"), ("x-b", "2")],
            b"",
        ));
        assert!(body.is_empty());
        assert_eq!(headers, pairs(&[(":status", "418"), ("x-b", "2")]));
        assert!(!Profile::Envoy.response_body_callback(&body));
    }

    #[test]
    fn kong_appends_a_line_feed_and_counts_it() {
        let (headers, body) = Profile::Kong.local_reply_response(&reply(&[], b"teapot"));
        assert_eq!(body, b"teapot\n");
        assert_eq!(
            headers,
            pairs(&[
                (":status", "418"),
                ("content-type", "text/plain"),
                ("content-length", "7")
            ])
        );
        let (headers, body) = Profile::Kong.local_reply_response(&reply(&[], b""));
        assert!(body.is_empty());
        assert_eq!(headers, pairs(&[(":status", "418"), ("content-length", "0")]));
        assert!(
            Profile::Kong.response_body_callback(&body),
            "nginx runs the body filter for the last buffer"
        );
    }

    #[test]
    fn only_envoy_ends_an_upstream_body_with_an_empty_call() {
        assert!(Profile::Envoy.upstream_body_ends_with_empty_call());
        assert!(!Profile::Kong.upstream_body_ends_with_empty_call());
    }

    #[test]
    fn both_hosts_keep_the_filters_content_length() {
        assert!(Profile::Envoy.keeps_filter_content_length());
        assert!(Profile::Kong.keeps_filter_content_length());
    }
}
