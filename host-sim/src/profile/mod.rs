//! Host behaviour: what a proxy-wasm host does at each point where hosts are documented or
//! observed to differ, as the trait [`HostBehaviour`].
//!
//! The trait's default methods are the proxy-wasm ABI 0.2.1 spec's behaviour (SPEC); where the
//! spec leaves a point to the host and there is a do-nothing answer (the host adds no header,
//! exposes no extra attribute), that is the default; where there is none (the status of a
//! failed stream, what happens after a trap), the method has no default and every host says
//! what it does. This is the shape of proxy-wasm-cpp-host, whose `ContextBase`
//! (include/proxy-wasm/context.h) declares each host-specific ABI call as a virtual method that
//! embedders such as Envoy's `Context` (envoy source/extensions/common/wasm/context.cc)
//! override. Each host is a unit struct in its own file that overrides only what differs,
//! citing its source: [`envoy::Envoy`] and [`kong::Kong`]. [`Profile`] only selects one: it
//! dereferences to its host's behaviour, so `profile.method()` asks the host. Adding a host (or
//! a host version) is one file here plus one arm in [`Profile`].
//!
//! The ABI glue, the lifecycle driver, the properties, `serve` and the CLI ask the profile;
//! nothing outside this module branches on which host it is (they may match on the vocabulary
//! values it returns, such as [`BodyDelivery`]). Sources:
//! - SPEC: proxy-wasm/spec abi-versions/v0.2.1/README.md.
//! - KONG-DOC: Kong/ngx_wasm_module docs/PROXY_WASM.md ("Supported ... host functions").
//! - KONG-DIFF: Kong/ngx_wasm_module docs/PROXY_WASM_HOST_DIFFERENCES.md.
//! - KONG-SRC: ngx_wasm_module src/http/proxy_wasm/ngx_http_proxy_wasm.c and
//!   src/common/proxy_wasm/ngx_proxy_wasm_host.c.
//! - ENVOY-SRC: envoy source/extensions/common/wasm/context.cc and proxy-wasm-cpp-host exports.cc.
//! - ENVOY-1.40: behaviour observed running a Rust proxy-wasm filter in Envoy 1.40.0 (V8).
//! - KONG-OBS: behaviour observed running filters in nginx 1.26.3 with ngx_wasm_module
//!   (wasmtime 26).

pub mod envoy;
pub mod kong;

use crate::abi::{LocalResponse, StreamInfo, MAIN_EXPORT, START_EXPORT};
use crate::abi::{LogLevel, MapType, MetricType, Pairs, Status, StreamType};
use crate::hostfn::HostFunction;
use crate::limits::OverBudget;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Which host to behave like: a selector of a [`HostBehaviour`], which it dereferences to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Envoy (envoy.filters.http.wasm on proxy-wasm-cpp-host).
    Envoy,
    /// Kong 3.x (ngx_wasm_module).
    Kong,
}

impl Profile {
    /// Every profile, in the order reports list them.
    pub const ALL: [Profile; 2] = [Profile::Envoy, Profile::Kong];

    /// The name of the profile, as `--profile` and transcripts spell it.
    pub fn name(self) -> &'static str {
        self.behaviour().name()
    }

    /// The host this profile selects.
    pub fn behaviour(self) -> &'static dyn HostBehaviour {
        match self {
            Profile::Envoy => &envoy::Envoy,
            Profile::Kong => &kong::Kong,
        }
    }
}

impl std::ops::Deref for Profile {
    type Target = dyn HostBehaviour;
    fn deref(&self) -> &Self::Target {
        self.behaviour()
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Profile::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Profile::ALL.iter().map(|p| p.name()).collect();
            format!("unknown profile {s:?} (expected {})", names.join(" or "))
        })
    }
}

pub use crate::abi::Callback;

/// Whether a host function reads a map or changes it (hosts police the two differently).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MapAccess {
    /// `proxy_get_header_map_value`, `proxy_get_header_map_pairs`.
    Read,
    /// `proxy_set_header_map_pairs`, add, replace, remove (and, on Envoy,
    /// `proxy_get_header_map_size`: see [`HostBehaviour::map_size_access`]).
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
    /// TEST 6), but the body cannot be read ([`HostBehaviour::request_body_readable`]).
    WholeOnce,
}

/// nginx's default `client_body_buffer_size` on x86-64, which Kong keeps
/// (`nginx_http_client_body_buffer_size = 8k` in Kong's kong.conf.default; nginx docs
/// ngx_http_core_module `client_body_buffer_size`: "two memory pages", 8K on x86-64). A larger
/// request body is written to a temp file.
pub const DEFAULT_CLIENT_BODY_BUFFER_BYTES: usize = 8 * 1024;

/// The change `proxy_set_buffer_bytes` makes to a body ([`HostBehaviour::buffer_write`]): the
/// bytes from `start` (clamped to the body) up to `start + removed` (to the end for `None`) give
/// way to the first `kept` bytes of the guest's value.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BufferWrite {
    /// Where the change starts.
    pub start: usize,
    /// How many bytes it removes from there; `None`: all of them.
    pub removed: Option<usize>,
    /// How many bytes of the value go in.
    pub kept: usize,
}

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
/// ([`HostBehaviour::over_budget`]).
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
    /// configured again (`proxy_on_context_create`, `proxy_on_configure`) when its filter next
    /// runs (the request's at once; with several filters on the instance, each other's at its
    /// own next request) but `proxy_on_vm_start` does not run (KONG-SRC ngx_proxy_wasm.c:1000-1006 invalidates a
    /// trapped instance; :1203-1210 resets the root exec for the new instance; :1232-1242 runs
    /// on_vm_start only when the root context is created for the first time). Streams that
    /// were in flight on the trapped instance fail closed here (ngx_wasm_module re-creates
    /// their context on the new instance, host-sim does not), and the trapping stream gets no
    /// end callbacks.
    FreshInstance,
}

/// A metric host call, for [`HostBehaviour::metric_trap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricOp {
    /// `proxy_increment_metric`.
    Increment,
    /// `proxy_record_metric`.
    Record,
    /// `proxy_get_metric`.
    Get,
}

/// What the guest sees in `proxy_on_http_call_response` for a callout that failed rather than
/// answering ([`HostBehaviour::callout_failure_reply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutFailureReply {
    /// What `proxy_get_status` answers there: a code and a message.
    pub status: (u32, &'static str),
    /// The reply's headers, `:status` included when there is one; `None` when the failure has
    /// no reply at all (its header and trailer maps and its body do not exist).
    pub headers: Option<Vec<(String, String)>>,
    /// The reply's body (empty without a reply).
    pub body: Vec<u8>,
    /// The `num_headers` argument of `proxy_on_http_call_response`.
    pub num_headers: usize,
}

/// A reply the host makes itself (not the filter's), e.g. to a stream whose filter failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReply {
    /// HTTP status.
    pub status: u32,
    /// Headers, without `:status`.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// Who made a response the edge sends ([`EdgeFacts::origin`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum ResponseOrigin {
    /// The upstream the route proxies to.
    #[default]
    Upstream,
    /// The filter (its local reply), or the host for a stream the filter had already taken
    /// (its failure reply after a trap): the request got past the host's routing into the
    /// filter chain.
    Filter,
    /// The host's router, on its own (a route's direct response, its no-route answer).
    Router,
}

/// What the host's edge knows about a response as it writes its own headers
/// ([`HostBehaviour::edge_response_headers`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeFacts {
    /// Who made the response.
    pub origin: ResponseOrigin,
    /// The host's id of the request (32 hex digits).
    pub request_id: String,
    /// The `Via` header of the upstream's response as the upstream sent it, if any.
    pub upstream_via: Option<String>,
    /// When the request went upstream, counted from its arrival (`None`: it never did).
    pub sent_upstream_after: Option<std::time::Duration>,
    /// When the response reached the edge, after the filter's response callbacks, counted from
    /// the request's arrival.
    pub answered_after: std::time::Duration,
}

/// What the `upstream` argument of `proxy_http_call` names.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CalloutUpstream {
    /// A cluster the host's configuration defines (Envoy).
    Cluster,
    /// A `host:port` to connect to (Kong).
    HostPort,
}

impl CalloutUpstream {
    /// Where a callout (HTTP or gRPC) naming `upstream` goes: the cluster's address from
    /// `clusters` (Envoy; `None` when no cluster has that name) or the name itself as
    /// `host:port` (Kong).
    pub fn target(self, clusters: &BTreeMap<String, SocketAddr>, upstream: &str) -> Option<String> {
        match self {
            CalloutUpstream::Cluster => clusters.get(upstream).map(|a| a.to_string()),
            CalloutUpstream::HostPort => Some(upstream.to_string()),
        }
    }
}

/// A property's value before the host encodes it ([`HostBehaviour::encode_property`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A map, e.g. a header map.
    Map(Pairs),
}

/// How a host answers a property path ([`HostBehaviour::host_property`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostProperty {
    /// The host has no rule of its own for the path: the common attributes apply
    /// (`crate::properties`).
    Common,
    /// The host's own value.
    Value(PropertyValue),
    /// The host has no such property.
    NotFound,
    /// The host knows the property but does not implement it: NOT_FOUND, and the host logs
    /// this line at this level, once per read.
    Unsupported(LogLevel, String),
}

/// What a property lookup may read: the VM, the effective root and, from a stream context,
/// the stream.
pub struct PropertyFacts<'a> {
    /// The VM's id.
    pub(crate) vm_id: &'a str,
    /// The configured root id of the effective root context, if there is one.
    pub(crate) root_id: Option<&'a str>,
    /// The effective stream, from a stream context.
    pub(crate) stream: Option<StreamFacts<'a>>,
}

/// What a property lookup may read of the effective stream.
#[derive(Clone, Copy)]
pub struct StreamFacts<'a> {
    /// Its context id.
    pub(crate) id: u32,
    /// Its connection facts.
    pub(crate) info: &'a StreamInfo,
    /// Its request headers, once the host has them.
    pub(crate) request_headers: Option<&'a Pairs>,
    /// Its response headers, once the host has them.
    pub(crate) response_headers: Option<&'a Pairs>,
}

impl PropertyFacts<'_> {
    /// A request header's value (case-insensitive name), as text.
    pub(crate) fn request_header(&self, name: &str) -> Option<String> {
        find_header(self.stream?.request_headers, name)
    }

    /// A response header's value (case-insensitive name), as text.
    pub(crate) fn response_header(&self, name: &str) -> Option<String> {
        find_header(self.stream?.response_headers, name)
    }
}

fn find_header(headers: Option<&Pairs>, name: &str) -> Option<String> {
    crate::abi::find_header(headers?, name).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The headers and body of a local reply as Envoy's `Http::Utility::sendLocalReply` and
/// ngx_wasm_module's local response shape them ([`HostBehaviour::local_reply_response`]):
/// `:status`, the filter's headers lower-cased, then for a non-empty `body` a `content-type:
/// text/plain` unless the filter gave one and `content-length` of the body; for an empty body,
/// `content-length: 0` when `length_when_empty`, else neither header.
fn shaped_local_reply(
    local: &LocalResponse,
    body: Vec<u8>,
    length_when_empty: bool,
) -> (Vec<(String, String)>, Vec<u8>) {
    let mut headers = vec![(":status".to_string(), local.status.to_string())];
    headers.extend(
        local
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
    );
    if body.is_empty() && !length_when_empty {
        headers.retain(|(k, _)| k != "content-length" && k != "content-type");
    } else {
        if !body.is_empty() && !headers.iter().any(|(k, _)| k == "content-type") {
            headers.push(("content-type".into(), "text/plain".into()));
        }
        headers.retain(|(k, _)| k != "content-length");
        headers.push(("content-length".into(), body.len().to_string()));
    }
    (headers, body)
}

/// What a proxy-wasm host does where hosts differ. Default methods are the spec's behaviour
/// (SPEC) or, where the spec is silent, a host that adds nothing; methods without a default are
/// points every host decides for itself. Implementations override only what differs from the
/// default, citing their source.
pub trait HostBehaviour: Send + Sync {
    /// The profile's name (`envoy`, `kong`).
    fn name(&self) -> &'static str;

    // ---- Linking and starting a module ---------------------------------------------------

    /// Whether the host links the function import `module.name` at all, for a module declaring
    /// `abi_version` (its `proxy_abi_version_*` export). A host that does not refuses to load
    /// the module, whether or not the import is ever called ([`crate::Vm::start`] refuses it):
    /// proxy-wasm-cpp-host fails the VM with "Failed to load Wasm module due to a missing
    /// import: module.name" (src/v8/v8.cc:387-391, src/wamr/wamr.cc:306-310), so Envoy rejects
    /// the configuration; ngx_wasm_module logs "failed importing ...: missing host function" and
    /// "failed linking ... module" at emerg for an `env` import it has no host function for
    /// (src/wasm/vm/ngx_wavm.c:720-743, :770-775), and wasmtime refuses to instantiate a module
    /// with any other import its WASI does not define.
    fn links(&self, abi_version: Option<&str>, module: &str, name: &str) -> bool;

    /// Whether the host provides a host function at all (SPEC: every ABI function has a
    /// defined answer, UNIMPLEMENTED included). A host that links a function it has not
    /// implemented traps when it is called.
    fn implements(&self, _function: HostFunction) -> bool {
        true
    }

    /// The start functions to run after instantiation, in order. SPEC: `_initialize`, then
    /// `main` ("called only if `_initialize` is also exported"); `_start` only when
    /// `_initialize` is not exported.
    fn start_functions(&self, has_initialize: bool, has_main: bool, has_start: bool) -> Vec<&'static str> {
        if has_initialize {
            let mut v = vec![Callback::Start.export_name()];
            if has_main {
                v.push(MAIN_EXPORT);
            }
            v
        } else if has_start {
            vec![START_EXPORT]
        } else {
            Vec::new()
        }
    }

    // ---- Streams: what the filter sees ---------------------------------------------------

    /// The `end_of_stream` the guest sees on request or response headers (SPEC: whether the
    /// headers end the request, or the response).
    fn headers_end_of_stream(&self, real: bool) -> bool {
        real
    }

    /// A request's headers as the host presents them to the filter chain, from the headers the
    /// client sent (pseudo-headers first). Default: as sent.
    fn downstream_request_headers(&self, headers: Vec<(String, String)>) -> Vec<(String, String)> {
        headers
    }

    /// Whether the host adds an `x-request-id` to a request without one before the filters run.
    fn generates_request_id(&self) -> bool {
        false
    }

    /// The order of a request's pseudo-headers as the filter sees them.
    fn request_pseudo_header_order(&self) -> [&'static str; 4];

    /// The `:authority` the filter sees, given the request's Host (or request-line authority)
    /// and the listener's port. Default: the request's.
    fn request_authority(&self, requested: &str, _listener_port: u16) -> String {
        requested.to_string()
    }

    /// Changes a header name in place into the form the host stores it in. Default: as given.
    fn normalize_header_name(&self, _name: &mut [u8]) {}

    /// Whether the filter sees an HTTP/1 request's headers as the client wrote them (`serve`):
    /// names in the client's letter case, in wire order, a repeated name at each of its own
    /// positions ([`crate::serve::heads`] recovers them from the connection's bytes). Default:
    /// as hyper parses them, names lower-case and a repeated name's values together at its
    /// first position (the spec leaves names and order to the host).
    fn request_headers_as_sent(&self) -> bool {
        false
    }

    /// The `num_headers` argument of `proxy_on_request_headers` and `proxy_on_response_headers`,
    /// for the header pairs as the filter sees them. Default: every pair, pseudo-headers
    /// included, as proxy-wasm-cpp-host hosts count the map (Envoy
    /// source/extensions/common/wasm/context.cc `Context::decodeHeaders` and `encodeHeaders`
    /// pass `headerSize(&headers)`, the map's size).
    fn headers_count(&self, pairs: &Pairs) -> usize {
        pairs.len()
    }

    /// How request bodies are delivered. SPEC `proxy_on_request_body`: each chunk as it
    /// arrives.
    fn request_body_delivery(&self) -> BodyDelivery {
        BodyDelivery::Chunks
    }

    /// Whether a request body's data reaches `proxy_on_request_body` with `end_of_stream =
    /// false` followed by an empty call with `end_of_stream = true`, rather than with the last
    /// chunk ending the stream (the default).
    fn request_body_ends_with_empty_call(&self) -> bool {
        false
    }

    /// Whether the host closes the client's connection after answering a request whose body
    /// the filter left unread (it answered before the last chunk). Default: it does not.
    fn closes_connection_on_unread_request_body(&self) -> bool {
        false
    }

    /// Whether request trailers reach the filter (SPEC `proxy_on_request_trailers`).
    fn delivers_request_trailers(&self) -> bool {
        true
    }

    /// Whether a request body of `len` bytes reaches the filter as readable bytes, given the
    /// client body buffer. Default: always.
    fn request_body_readable(&self, _len: usize, _client_body_buffer_bytes: usize) -> bool {
        true
    }

    /// Whether a stream's header or trailer map may be touched from `callback`. SPEC:
    /// "`HTTP_REQUEST_HEADERS` can be read in `proxy_on_log`, and read and modified from
    /// `proxy_on_request_headers` (or for as long as request processing is paused from it)",
    /// and likewise for the other three maps, so trailers may also be touched from the body
    /// callback at end of stream (where a filter adds them). The access log phase reads request
    /// headers, response headers and response trailers but changes nothing, and has no request
    /// trailers: that is Envoy's reading of the spec (ENVOY-SRC `Context::getMap` /
    /// `getConstMap`: each map pointer is set for its own callback and kept only while the
    /// filter stops iteration there, `decodeHeaders` clears `request_headers_` on Continue;
    /// `addDecodedTrailers` from the body callback; ENVOY-1.40 answered BAD_ARGUMENT to a
    /// request header read from `on_request_body`).
    fn map_accessible(&self, map: MapType, access: MapAccess, callback: Callback, phase: StreamPhase) -> bool {
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

    /// How `proxy_get_header_map_size` is policed (SPEC: it reads the map).
    fn map_size_access(&self) -> MapAccess {
        MapAccess::Read
    }

    /// Whether `proxy_get_header_map_pairs` on a map that is not available answers OK with an
    /// empty map rather than an error (the default).
    fn unavailable_map_pairs_are_empty(&self) -> bool {
        false
    }

    /// Whether `proxy_get_buffer_bytes` from a `start` past the end of the buffer answers OK
    /// with no bytes, rather than BAD_ARGUMENT (the default).
    fn buffer_read_past_end_is_empty(&self) -> bool {
        false
    }

    /// What `proxy_set_buffer_bytes(start, size, value)` does to a body, for a value of
    /// `value_len` bytes. SPEC: the value replaces the `size` bytes at `start` (`size` 0 inserts
    /// it there).
    fn buffer_write(&self, start: usize, size: usize, value_len: usize) -> BufferWrite {
        BufferWrite {
            start,
            removed: Some(size),
            kept: value_len,
        }
    }

    /// Whether `proxy_set_buffer_bytes` may write at `start` into a body of `len` bytes. SPEC:
    /// prepend, append, inject and replace anywhere.
    fn buffer_write_allowed(&self, _start: usize, _len: usize) -> bool {
        true
    }

    // ---- Local replies and responses ------------------------------------------------------

    /// What a second `proxy_send_local_response` on one stream does.
    fn second_local_response(&self) -> SecondLocalResponse;

    /// Whether `proxy_send_local_response` traps once the response headers went to the
    /// client. Default: it does not.
    fn late_local_response_traps(&self) -> bool {
        false
    }

    /// Whether a local response sent from `proxy_on_http_call_response` cancels the stream's
    /// other pending dispatches. Default: they stay.
    fn local_response_cancels_dispatches(&self) -> bool {
        false
    }

    /// The response a host passes through the filter's own response callbacks when the filter
    /// answered with `proxy_send_local_response` before any response started: `:status`, the
    /// headers the filter sees in `on_http_response_headers`, and the body it sees in
    /// `on_http_response_body`. What the filter leaves there is what the client gets. `now` is
    /// the host's wall clock, for a host that dates its replies.
    fn local_reply_response(
        &self,
        local: &LocalResponse,
        now: std::time::SystemTime,
    ) -> (Vec<(String, String)>, Vec<u8>);

    /// The headers and body of a local reply the filter sent once a response was passing
    /// through its response callbacks but before that response's headers went out: the host
    /// sends it without the filter's callbacks. Default: the reply as the filter gave it.
    fn direct_local_reply(&self, local: &LocalResponse) -> (Vec<(String, String)>, Vec<u8>) {
        (local.headers.clone(), local.body.clone())
    }

    /// What becomes of a local reply the filter sent from `on_http_response_headers` of a
    /// response that has not gone out: `None` (the default), the host sends the reply instead
    /// ([`HostBehaviour::direct_local_reply`]); `Some(body)`, the host keeps the response it
    /// had, headers as the filter left them, takes the reply's status (and its details as the
    /// status line, [`HostBehaviour::local_reply_reason`]) and sends `body` in place of the
    /// response's body, framed by the headers the response kept.
    fn local_reply_replaces_body(&self, _local: &LocalResponse) -> Option<Vec<u8>> {
        None
    }

    /// Whether the host calls `on_http_response_body` for a response whose body is `body`.
    /// Default: when there is a body.
    fn response_body_callback(&self, body: &[u8]) -> bool {
        !body.is_empty()
    }

    /// Whether an upstream's response body reaches `on_http_response_body` as its data with
    /// `end_of_stream = false` followed by an empty call with `end_of_stream = true`, rather
    /// than in one call that ends the stream (the default).
    fn upstream_body_ends_with_empty_call(&self) -> bool {
        false
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
    fn keeps_filter_content_length(&self) -> bool {
        true
    }

    /// Headers the host's router adds to a request it proxies upstream, after the filter chain
    /// (the filter never sees them), given the host's id of the request
    /// ([`EdgeFacts::request_id`]). Default: none.
    fn proxied_request_headers(&self, _request_id: &str) -> Vec<(String, String)> {
        Vec::new()
    }

    /// An upstream's response headers (`:status` first) as the host's map presents them to the
    /// filter's response callbacks, at `now`. Default: as the upstream sent them.
    fn upstream_response_headers(
        &self,
        headers: Vec<(String, String)>,
        _now: std::time::SystemTime,
    ) -> Vec<(String, String)> {
        headers
    }

    /// A header the host adds to an upstream's response before the filter's response callbacks
    /// see it, given how long the upstream took. Default: none.
    fn upstream_response_header(&self, _took: std::time::Duration) -> Option<(String, String)> {
        None
    }

    /// The `server` header the host puts on every response it sends, replacing the upstream's
    /// or the filter's. Default: none.
    fn server_header(&self) -> Option<&'static str> {
        None
    }

    /// The reason phrase of a local reply's status line, given the filter's `details`.
    /// Default: none (the status's standard phrase).
    fn local_reply_reason(&self, _details: &str) -> Option<String> {
        None
    }

    /// Headers the host's edge writes on a response after the filter's callbacks (the filter
    /// never sees them), as `(name, value, replace)`: `replace` overwrites a header of that
    /// name, otherwise the header is added only when the response has none. `edge` says where
    /// the response came from and how long the request took. Default: none.
    fn edge_response_headers(&self, _edge: &EdgeFacts) -> Vec<(&'static str, String, bool)> {
        Vec::new()
    }

    // ---- Failures ---------------------------------------------------------------------------

    /// The reply a host answers the client with when the filter traps or fails (the spec
    /// leaves it to the host).
    fn fail_closed_reply(&self) -> HostReply;

    /// The reply the client gets when the upstream a route proxies to cannot be reached (no
    /// connection, or it broke before a response), given the request's headers and the host's
    /// id of the request; it does not pass through the filter's response callbacks. `None` (the
    /// default): serve's own 503 naming the reset reason.
    fn upstream_unreachable_reply(
        &self,
        _request_headers: &[(String, String)],
        _request_id: &str,
    ) -> Option<HostReply> {
        None
    }

    /// Whether a trap in the filter's response callbacks lets the response out as it was
    /// (`true`): an upstream's response goes on without the filter, and the filter's own local
    /// reply passing through them goes out unchanged; or the host fails the stream with its
    /// failure reply (`false`, the default).
    fn response_trap_fails_open(&self) -> bool {
        false
    }

    /// What the host does with a VM after its guest trapped ([`AfterTrap`]).
    fn after_trap(&self) -> AfterTrap;

    /// What `function` does when the host-memory budget ([`crate::Limits::max_host_bytes`])
    /// cannot hold what it asked the host to keep (`refusal` says how much). The spec sets no
    /// bound.
    fn over_budget(&self, function: HostFunction, refusal: &OverBudget) -> BudgetRefusal;

    // ---- Callouts -----------------------------------------------------------------------------

    /// Whether `proxy_http_call` may be made from `callback` (SPEC: from any context).
    fn dispatch_allowed(&self, _callback: Callback) -> bool {
        true
    }

    /// Whether a `proxy_http_call` timeout is acceptable (SPEC: any `uint32_t`).
    fn call_timeout_valid(&self, _timeout_ms: u32) -> bool {
        true
    }

    /// What the `upstream` argument of `proxy_http_call` names (SPEC: "unknown `upstream`" is
    /// BAD_ARGUMENT, what names one is the host's).
    fn callout_upstream(&self) -> CalloutUpstream;

    /// Required pseudo-headers of a `proxy_http_call`. SPEC: BAD_ARGUMENT "when `headers` are
    /// missing required `:authority`, `:method` and/or `:path` values".
    fn required_call_headers(&self) -> &'static [&'static str] {
        &[":method", ":path", ":authority"]
    }

    /// The timeout a callout gets for a requested `timeout_ms`, in milliseconds (`None`: it
    /// waits as long as the upstream takes). The one authority on callout timeouts: the VM's
    /// deadline and `serve`'s request both follow it.
    fn effective_call_timeout_ms(&self, requested: u32) -> Option<u64>;

    /// Headers the host adds to a callout's request, given its effective timeout
    /// ([`HostBehaviour::effective_call_timeout_ms`]). Default: none.
    fn callout_request_headers(&self, _timeout_ms: Option<u64>) -> Vec<(String, String)> {
        Vec::new()
    }

    /// What the guest sees in `proxy_on_http_call_response` when a callout fails rather than
    /// answering: the status `proxy_get_status` reports, the reply's headers and body, and the
    /// header count.
    fn callout_failure_reply(&self, failure: CalloutFailure) -> CalloutFailureReply;

    /// The gRPC status (code, message) `proxy_on_grpc_close` gets when a gRPC call or stream fails
    /// in the host rather than being closed by its server. Default: the codes gRPC gives each
    /// (grpc/grpc doc/statuscodes.md): DEADLINE_EXCEEDED (4) for a timeout, UNAVAILABLE (14) for
    /// a connection that could not be made, INTERNAL (13) for a stream reset.
    fn grpc_failure_status(&self, failure: CalloutFailure) -> (u32, &'static str) {
        match failure {
            CalloutFailure::Timeout => (4, "Deadline Exceeded"),
            CalloutFailure::BrokenConnection => (14, "Unavailable"),
            CalloutFailure::Reset => (13, ""),
        }
    }

    /// The message `proxy_on_grpc_close` gets with a close that came from the server
    /// (`grpc-message`, empty when none). Default: as sent.
    fn grpc_server_close_message(&self, message: String) -> String {
        message
    }

    /// What `proxy_grpc_send` returns on a stream the guest already half-closed (nothing more
    /// is sent). Default: BAD_ARGUMENT, the spec's answer for a stream that is not open.
    fn grpc_send_after_end_status(&self) -> Status {
        Status::BadArgument
    }

    /// The gRPC status of a response whose HTTP status is not 200 and that carries no
    /// `grpc-status`. Default: gRPC's mapping (grpc/grpc doc/http-grpc-status-mapping.md), which
    /// Envoy's gRPC client applies too (envoy source/common/grpc/async_client_impl.cc
    /// `AsyncStreamImpl::onHeaders`, `Utility::httpToGrpcStatus`).
    fn grpc_status_for_http_status(&self, http_status: u16) -> u32 {
        match http_status {
            400 => 13,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502..=504 => 14,
            _ => 2,
        }
    }

    // ---- Contexts, timers, streams ----------------------------------------------------------

    /// The id a new root context gets, given its filter's name, its configuration and how many
    /// root contexts the VM already has; `None` (the default): the next number of the VM's one
    /// counter, which every context takes its id from, so the first root is 1 and its streams
    /// follow.
    fn root_context_id(&self, _filter_name: &str, _configuration: &[u8], _position: usize) -> Option<u32> {
        None
    }

    /// Whether `proxy_set_effective_context` switches the context host functions act on
    /// (SPEC: "Changes the effective context to `context_id`", BAD_ARGUMENT for an unknown one).
    fn effective_context_switches(&self) -> bool {
        true
    }

    /// Whether a root's tick timer stays armed when a fresh instance replaces one that trapped
    /// ([`AfterTrap::FreshInstance`]), so a period the re-created root sets again adds a second
    /// timer and each fires `proxy_on_tick`. Default: the timer goes with the instance.
    fn tick_timers_outlive_instance(&self) -> bool {
        false
    }

    /// Why `proxy_set_tick_period_milliseconds` traps, if it does (SPEC: it sets the period).
    fn tick_period_refusal(&self, _from_root: bool, _already_set: bool) -> Option<&'static str> {
        None
    }

    /// The status of `proxy_continue_stream` / `proxy_close_stream` for a TCP stream type on an
    /// HTTP stream. SPEC: OK, or UNIMPLEMENTED when continuation is not supported; the default
    /// is the latter.
    fn tcp_stream_status(&self, _stream_type: StreamType, _close: bool) -> Status {
        Status::Unimplemented
    }

    /// The callbacks that end an HTTP stream, in the order the host calls them. SPEC:
    /// `proxy_on_done`, then `proxy_on_log` and `proxy_on_delete` ("called after `true` was
    /// returned from `proxy_on_done`"). For streams no host waits for `proxy_done`.
    fn stream_end_callbacks(&self) -> [Callback; 3] {
        [Callback::Done, Callback::Log, Callback::Delete]
    }

    /// Whether a root context being shut down gets `proxy_on_log` between `proxy_on_done` and
    /// `proxy_on_delete` (SPEC: `proxy_on_log` follows `proxy_on_done` for any context).
    fn root_shutdown_logs(&self) -> bool {
        true
    }

    /// Whether the host shuts root contexts down (`proxy_on_done`) when it stops (SPEC:
    /// `proxy_on_done` is "called when the host is done processing context").
    fn finishes_roots_at_shutdown(&self) -> bool {
        true
    }

    /// Whether a gateway also runs each HTTP filter's root context on a thread that takes no
    /// requests (a "main thread"), in a VM of its own, beside one per request worker: started
    /// and configured there, ticking and calling out like the workers' roots. The spec knows
    /// no threads; the default is none, as Kong's engine has: ngx_wasm_module loads its VM and
    /// starts the filters' root contexts in each nginx worker process only
    /// (`init_process`, at 3bed2783: src/wasm/ngx_wasm_core_module.c:481-495 `ngx_wavm_load`,
    /// src/http/ngx_http_wasm_module.c:471-502 `ngx_proxy_wasm_start`), while the master
    /// process's `init_module` (ngx_wasm_core_module.c:450-477) only initializes the VM.
    fn runs_main_thread_root(&self) -> bool {
        false
    }

    /// Whether every filter of one module runs on one instance per worker thread, whatever
    /// route or chain it is on, each filter with a root context of its own in it (`true`); or
    /// each configured filter has an instance of its own (`false`, the default; Envoy: one VM
    /// per wasm filter config and thread, shared by the routes of its connection manager). The
    /// spec leaves instances to the host.
    fn shares_instance_per_module(&self) -> bool {
        false
    }

    // ---- Properties and metrics --------------------------------------------------------------

    /// A property's value as the host encodes it (the spec leaves encodings to the host).
    fn encode_property(&self, value: PropertyValue) -> Vec<u8>;

    /// The host's own answer for a property path, before the common attributes
    /// (`crate::properties`). Default: the common attributes.
    fn host_property(&self, _path: &[&str], _facts: &PropertyFacts<'_>) -> HostProperty {
        HostProperty::Common
    }

    /// Whether `proxy_set_property` needs a stream. Default: any context may set one.
    fn properties_need_a_stream(&self) -> bool {
        false
    }

    /// The name a metric is stored under (SPEC: the name the guest defined).
    fn metric_name(&self, _plugin_name: &str, name: &str) -> String {
        name.to_string()
    }

    /// Whether `proxy_increment_metric` with a negative delta lowers a counter. SPEC:
    /// BAD_ARGUMENT "when the requested `delta` cannot be applied to `metric_id` (e.g. trying
    /// to decrement counter)".
    fn counters_may_decrease(&self) -> bool {
        false
    }

    /// The trap a metric call ends in on this host, if any (SPEC: metric calls answer with a
    /// status). `kind` is the metric's type, `None` when no metric has `id`.
    fn metric_trap(&self, _op: MetricOp, _id: u32, _kind: Option<MetricType>) -> Option<String> {
        None
    }
}

impl dyn HostBehaviour {
    /// A header name as the host stores it: [`HostBehaviour::normalize_header_name`] is the one
    /// hook, so every path that stores a name agrees.
    pub fn header_name(&self, mut name: Vec<u8>) -> Vec<u8> {
        self.normalize_header_name(&mut name);
        name
    }

    /// The status of [`HostBehaviour::fail_closed_reply`].
    pub fn fail_closed_status(&self) -> u32 {
        self.fail_closed_reply().status
    }

    /// The host's error line when the filter reads a request body buffered to a file, which
    /// only a host whose [`HostBehaviour::request_body_readable`] refuses some bodies does:
    /// nginx's (ngx_proxy_wasm_host.c:78-81; the temp file's path is host-sim's stand-in).
    pub fn spilled_request_body_log(&self, stream: u32) -> String {
        format!("cannot read request body buffered to file at \"client_body_temp/{stream:010}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

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

    /// The local reply `profile` passes through the response callbacks for a 418 with
    /// `headers` and `body`, dated at the Unix epoch.
    fn shaped(profile: Profile, headers: &[(&str, &str)], body: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
        profile.local_reply_response(&reply(headers, body), UNIX_EPOCH)
    }

    #[test]
    fn envoy_shapes_a_local_reply_with_length_and_text_type() {
        let (headers, body) = shaped(Profile::Envoy, &[("x-a", "1")], b"teapot");
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
        let (headers, _) = shaped(
            Profile::Envoy,
            &[("Content-Type", "application/json"), ("content-length", "99")],
            b"{}",
        );
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
        let (headers, body) = shaped(
            Profile::Envoy,
            &[("content-type", "text/html"), ("content-length", "5"), ("x-b", "2")],
            b"",
        );
        assert!(body.is_empty());
        assert_eq!(headers, pairs(&[(":status", "418"), ("x-b", "2")]));
        assert!(!Profile::Envoy.response_body_callback(&body));
    }

    #[test]
    fn envoy_closes_failed_grpc_calls_as_its_router_answers_and_the_spec_by_grpc_codes() {
        let envoy = |f| Profile::Envoy.grpc_failure_status(f);
        assert_eq!(
            envoy(CalloutFailure::Timeout),
            (14, "upstream request timeout{response_timeout}")
        );
        assert!(envoy(CalloutFailure::BrokenConnection)
            .1
            .contains("remote connection failure{"));
        assert_eq!(
            Profile::Envoy.grpc_server_close_message("denied".into()),
            "denied{via_upstream}"
        );
        assert_eq!(Profile::Envoy.grpc_server_close_message(String::new()), "via_upstream");
        assert_eq!(Profile::Envoy.grpc_send_after_end_status(), Status::Ok);
        assert_eq!(envoy(CalloutFailure::BrokenConnection).0, 14);
        assert!(envoy(CalloutFailure::BrokenConnection)
            .1
            .starts_with("upstream connect error"));
        assert_eq!(envoy(CalloutFailure::Reset), (13, ""));
        assert_eq!(Profile::Envoy.grpc_status_for_http_status(503), 14);
        // The spec's defaults (Kong never gets here: its gRPC functions trap).
        let spec = &SpecHost as &dyn HostBehaviour;
        assert_eq!(spec.grpc_server_close_message("denied".into()), "denied");
        assert_eq!(spec.grpc_send_after_end_status(), Status::BadArgument);
        assert_eq!(spec.grpc_failure_status(CalloutFailure::Timeout).0, 4);
        assert_eq!(spec.grpc_failure_status(CalloutFailure::BrokenConnection).0, 14);
        assert_eq!(
            [400, 401, 403, 404, 429, 503, 500].map(|s| spec.grpc_status_for_http_status(s)),
            [13, 16, 7, 12, 14, 14, 2]
        );
    }

    #[test]
    fn kong_appends_a_line_feed_and_counts_it() {
        let (headers, body) = shaped(Profile::Kong, &[], b"teapot");
        assert_eq!(body, b"teapot\n");
        assert_eq!(
            headers,
            pairs(&[
                (":status", "418"),
                ("content-type", "text/plain"),
                ("content-length", "7"),
                ("connection", "keep-alive"),
                ("server", "nginx"),
                ("date", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ])
        );
        let (headers, body) = shaped(Profile::Kong, &[], b"");
        assert!(body.is_empty());
        assert_eq!(
            headers,
            pairs(&[
                (":status", "418"),
                ("content-length", "0"),
                ("connection", "keep-alive"),
                ("server", "nginx"),
                ("date", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ])
        );
        assert!(
            Profile::Kong.response_body_callback(&body),
            "nginx runs the body filter for the last buffer"
        );
    }

    #[test]
    fn kong_shows_a_local_reply_in_nginx_map_order_with_its_connection_flag() {
        let given = [
            ("X-A", "1"),
            ("Connection", "close"),
            ("Content-Type", "application/json"),
            ("Server", "mine"),
        ];
        let (headers, _) = shaped(Profile::Kong, &given, b"{}");
        // The shims first, then nginx's list: the filter's own Server stays, so none is added.
        let order: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            order,
            [
                ":status",
                "content-type",
                "content-length",
                "connection",
                "x-a",
                "server",
                "date"
            ]
        );
        let value = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(
            value("connection"),
            Some("close"),
            "the filter's Connection cleared keep-alive"
        );
        assert_eq!(value("server"), Some("mine"));
        assert_eq!(value("content-length"), Some("3"), "the body with its line feed");
    }

    /// `proxy_set_buffer_bytes` on "hello" as each host changes it.
    fn written(host: &dyn HostBehaviour, start: usize, size: usize, value: &[u8]) -> Vec<u8> {
        let write = host.buffer_write(start, size, value.len());
        let mut body = b"hello".to_vec();
        let from = write.start.min(body.len());
        let to = write
            .removed
            .map_or(body.len(), |n| from.saturating_add(n).min(body.len()));
        body.splice(from..to, value[..write.kept].iter().copied());
        body
    }

    /// A `proxy_set_buffer_bytes` case: start, size, value, the spec's result, ngx_wasm_module's.
    type WriteCase = (usize, usize, &'static str, &'static str, &'static str);

    #[test]
    fn kong_truncates_at_the_start_and_cuts_the_value_to_the_size() {
        let cases: [WriteCase; 8] = [
            (0, 0, "pre-", "pre-hello", "pre-hello"),
            (5, 0, "-post", "hello-post", "hello-post"),
            (usize::MAX, 0, "-max", "hello-max", "hello-max"),
            (0, 5, "replaced", "replaced", "repla"),
            (2, 0, "XX", "heXXllo", "heXX"),
            (1, 2, "YY", "hYYlo", "hYY"),
            (0, 5, "", "", ""),
            (0, 0, "", "hello", ""),
        ];
        for (start, size, value, spec, kong) in cases {
            let value = value.as_bytes();
            assert_eq!(
                written(&SpecHost, start, size, value),
                spec.as_bytes(),
                "spec {start} {size}"
            );
            assert_eq!(
                written(&envoy::Envoy, start, size, value),
                spec.as_bytes(),
                "envoy {start} {size}"
            );
            assert_eq!(
                written(&kong::Kong, start, size, value),
                kong.as_bytes(),
                "kong {start} {size}"
            );
        }
    }

    #[test]
    fn kong_writes_details_as_the_reason_and_names_itself_on_replies_it_makes() {
        assert_eq!(
            Profile::Kong.local_reply_reason("Teapot Time").as_deref(),
            Some("Teapot Time")
        );
        assert_eq!(Profile::Kong.local_reply_reason(""), None);
        assert_eq!(Profile::Envoy.local_reply_reason("Teapot Time"), None);
        assert_eq!(SpecHost.local_reply_reason("x"), None);
        assert!(Profile::Envoy.edge_response_headers(&EdgeFacts::default()).is_empty());
    }

    /// ngx_wasm_module's response map: `:status`, the shims Content-Type, Content-Length,
    /// Connection, the upstream's other headers (its hop-by-hop ones left out), then the Server
    /// and Date nginx writes where the upstream sent none (ngx_http_wasm_headers_shims.c:19-40,
    /// ngx_http_wasm_util.c:149-200); Envoy's map is the upstream's.
    #[test]
    fn kong_presents_an_upstream_response_in_its_maps_order() {
        let upstream = pairs(&[
            (":status", "200"),
            ("x-a", "1"),
            ("content-length", "5"),
            ("connection", "close"),
            ("Content-Type", "text/plain"),
            ("x-b", "2"),
        ]);
        let epoch = std::time::SystemTime::UNIX_EPOCH;
        assert_eq!(
            Profile::Kong.upstream_response_headers(upstream.clone(), epoch),
            pairs(&[
                (":status", "200"),
                ("content-type", "text/plain"),
                ("content-length", "5"),
                ("connection", "keep-alive"),
                ("x-a", "1"),
                ("x-b", "2"),
                ("server", "nginx"),
                ("date", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ])
        );
        // The upstream's own Server and Date stay where they were (Kong's proxy_pass_header).
        let own = pairs(&[(":status", "204"), ("date", "d"), ("server", "up")]);
        assert_eq!(
            Profile::Kong.upstream_response_headers(own.clone(), epoch),
            pairs(&[
                (":status", "204"),
                ("connection", "keep-alive"),
                ("date", "d"),
                ("server", "up")
            ])
        );
        assert_eq!(
            Profile::Envoy.upstream_response_headers(upstream.clone(), epoch),
            upstream
        );
    }

    /// Kong's 502 error page for an unreachable upstream, in the template the request asks for
    /// (kong/error_handlers.lua:25, :50-90; kong/tools/http.lua:392-430); the spec's host has
    /// none of its own.
    #[test]
    fn kong_answers_an_unreachable_upstream_with_its_error_page() {
        let page = |headers: &[(&str, &str)]| {
            Profile::Kong
                .upstream_unreachable_reply(&pairs(headers), "0123abcd")
                .expect("Kong's page")
        };
        let message = "An invalid response was received from the upstream server";
        let plain = page(&[]);
        assert_eq!(plain.status, 502);
        assert_eq!(plain.headers, pairs(&[("content-type", "text/plain; charset=utf-8")]));
        assert_eq!(plain.body, format!("{message}\nrequest_id: 0123abcd\n").into_bytes());
        let json = page(&[("Accept", "application/json, text/html;q=0.5")]);
        assert_eq!(
            json.body,
            format!("{{\n  \"message\":\"{message}\",\n  \"request_id\":\"0123abcd\"\n}}").into_bytes()
        );
        assert_eq!(json.headers[0].1, "application/json; charset=utf-8");
        // Without Accept, the request's own Content-Type decides.
        let html = page(&[("content-type", "text/html")]);
        assert!(String::from_utf8_lossy(&html.body).contains(&format!("<p>{message}.</p>")));
        assert_eq!(
            page(&[("accept", "application/xml")]).headers[0].1,
            "application/xml; charset=utf-8"
        );
        assert_eq!(
            page(&[("accept", "image/png")]).headers[0].1,
            "application/json; charset=utf-8"
        );
        assert!(Profile::Envoy.upstream_unreachable_reply(&[], "x").is_none());
    }

    /// ngx_wasm_module turns a reply from the response headers callback into the response's
    /// body, a line feed appended to a non-empty one (ngx_proxy_wasm_host.c:1087-1111); Envoy
    /// sends the reply instead.
    #[test]
    fn kong_replaces_the_body_with_a_reply_from_the_response_headers() {
        assert_eq!(
            Profile::Kong.local_reply_replaces_body(&reply(&[("x-a", "1")], b"late")),
            Some(b"late\n".to_vec())
        );
        assert_eq!(
            Profile::Kong.local_reply_replaces_body(&reply(&[], b"")),
            Some(Vec::new())
        );
        assert_eq!(Profile::Envoy.local_reply_replaces_body(&reply(&[], b"late")), None);
    }

    /// ngx_wasm_module's root id is nginx's CRC-32 of name, configuration and the entry's
    /// stand-in (ngx_proxy_wasm.c:117-133): the standard check value for "123456789", and
    /// different for another configuration or position; Envoy numbers roots from its counter.
    #[test]
    fn kong_numbers_roots_by_crc32_of_the_filter() {
        assert_eq!(
            Profile::Kong.root_context_id("12345", b"678", 9),
            Some(0xcbf4_3926),
            "CRC-32 check value"
        );
        let id = Profile::Kong.root_context_id("kafka_upstream", b"{}", 0);
        assert_eq!(id, Profile::Kong.root_context_id("kafka_upstream", b"{}", 0));
        assert_ne!(id, Profile::Kong.root_context_id("kafka_upstream", b"{ }", 0));
        assert_ne!(id, Profile::Kong.root_context_id("kafka_upstream", b"{}", 1));
        assert_eq!(Profile::Envoy.root_context_id("kafka_upstream", b"{}", 0), None);
    }

    /// Kong's Lua header filter on a response the upstream answered after 30 ms, the request
    /// having gone upstream after 12 ms: the latencies, its `Via` after the upstream's, its
    /// `Server` only where none is, the request id (kong/runloop/handler.lua:1567-1635).
    #[test]
    fn kong_writes_latencies_via_and_request_id_on_what_it_proxied() {
        let facts = EdgeFacts {
            origin: ResponseOrigin::Upstream,
            request_id: "0123456789abcdef0123456789abcdef".into(),
            upstream_via: Some("1.0 fred".into()),
            sent_upstream_after: Some(std::time::Duration::from_millis(12)),
            answered_after: std::time::Duration::from_micros(30_900),
        };
        let owned = |list: &[(&'static str, &str, bool)]| {
            list.iter().map(|(k, v, r)| (*k, v.to_string(), *r)).collect::<Vec<_>>()
        };
        assert_eq!(
            Profile::Kong.edge_response_headers(&facts),
            owned(&[
                ("x-kong-upstream-latency", "18", true),
                ("x-kong-proxy-latency", "12", true),
                ("via", "1.0 fred, 1.1 kong/3.10.0", true),
                ("server", "kong/3.10.0", false),
                ("x-kong-request-id", "0123456789abcdef0123456789abcdef", true),
                ("connection", "keep-alive", false),
            ])
        );
        // The filter's own reply (no upstream): both latencies run to the header filter.
        let local = EdgeFacts {
            origin: ResponseOrigin::Filter,
            upstream_via: None,
            sent_upstream_after: None,
            ..facts.clone()
        };
        assert_eq!(
            Profile::Kong.edge_response_headers(&local)[..3],
            owned(&[
                ("x-kong-upstream-latency", "30", true),
                ("x-kong-proxy-latency", "30", true),
                ("via", "1.1 kong/3.10.0", true),
            ])[..]
        );
        // A reply Kong's router made on its own: the response latency, and Kong's Server over
        // any other.
        let router = EdgeFacts {
            origin: ResponseOrigin::Router,
            ..local
        };
        assert_eq!(
            Profile::Kong.edge_response_headers(&router),
            owned(&[
                ("x-kong-response-latency", "30", true),
                ("server", "kong/3.10.0", true),
                ("x-kong-request-id", "0123456789abcdef0123456789abcdef", true),
                ("connection", "keep-alive", false),
            ])
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

    /// A host with only the decisions the spec leaves open, so the defaults can be seen.
    struct SpecHost;

    impl HostBehaviour for SpecHost {
        fn name(&self) -> &'static str {
            "spec"
        }
        fn links(&self, _abi_version: Option<&str>, module: &str, _name: &str) -> bool {
            module == "env"
        }
        fn request_pseudo_header_order(&self) -> [&'static str; 4] {
            [":method", ":path", ":authority", ":scheme"]
        }
        fn second_local_response(&self) -> SecondLocalResponse {
            SecondLocalResponse::KeepFirst
        }
        fn local_reply_response(
            &self,
            local: &LocalResponse,
            _now: std::time::SystemTime,
        ) -> (Vec<(String, String)>, Vec<u8>) {
            (local.headers.clone(), local.body.clone())
        }
        fn fail_closed_reply(&self) -> HostReply {
            HostReply {
                status: 500,
                headers: Vec::new(),
                body: Vec::new(),
            }
        }
        fn after_trap(&self) -> AfterTrap {
            AfterTrap::StayFailed
        }
        fn over_budget(&self, _function: HostFunction, _refusal: &OverBudget) -> BudgetRefusal {
            BudgetRefusal::Status(Status::InternalFailure)
        }
        fn callout_upstream(&self) -> CalloutUpstream {
            CalloutUpstream::HostPort
        }
        fn effective_call_timeout_ms(&self, requested: u32) -> Option<u64> {
            Some(u64::from(requested))
        }
        fn callout_failure_reply(&self, _failure: CalloutFailure) -> CalloutFailureReply {
            CalloutFailureReply {
                status: (0, ""),
                headers: None,
                body: Vec::new(),
                num_headers: 0,
            }
        }
        fn encode_property(&self, value: PropertyValue) -> Vec<u8> {
            format!("{value:?}").into_bytes()
        }
    }

    #[test]
    fn kong_maps_request_properties_to_nginx_variables() {
        let info = StreamInfo::default();
        let bytes = |list: &[(&str, &str)]| -> Pairs {
            list.iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect()
        };
        let plain = bytes(&[(":path", "/p"), ("host", "a.example")]);
        let full = bytes(&[(":path", "/p?x=1"), ("content-length", "3"), ("x-request-id", "r-1")]);
        let response = bytes(&[(":status", "201")]);
        let ask = |path: &[&str], request: &Pairs, response: Option<&Pairs>| {
            let facts = PropertyFacts {
                vm_id: "vm",
                root_id: None,
                stream: Some(StreamFacts {
                    id: 2,
                    info: &info,
                    request_headers: Some(request),
                    response_headers: response,
                }),
            };
            (
                Profile::Kong.host_property(path, &facts),
                Profile::Envoy.host_property(path, &facts),
            )
        };
        let str = |s: &str| HostProperty::Value(PropertyValue::Str(s.to_string()));
        let not_found = (HostProperty::NotFound, HostProperty::Common);
        assert_eq!(ask(&["request", "id"], &plain, None), not_found);
        assert_eq!(ask(&["request", "id"], &full, None).0, str("r-1"));
        assert_eq!(ask(&["request", "size"], &plain, None), not_found);
        assert_eq!(ask(&["request", "size"], &full, None).0, str("3"));
        assert_eq!(ask(&["request", "query"], &plain, None), not_found);
        assert_eq!(ask(&["request", "query"], &full, None).0, str("x=1"));
        assert_eq!(ask(&["connection", "mtls"], &plain, None), not_found);
        assert_eq!(ask(&["response", "code"], &plain, None).0, str("000"));
        assert_eq!(
            ask(&["response", "code"], &plain, Some(&response)).0,
            HostProperty::Common
        );
        // The machine's name, not the Host header.
        let (kong_host, envoy_host) = ask(&["request", "host"], &plain, None);
        assert_eq!(envoy_host, HostProperty::Common);
        assert_eq!(kong_host, ask(&["ngx", "hostname"], &plain, None).0);
        assert_ne!(kong_host, str("a.example"));
    }

    #[test]
    fn kongs_authority_is_its_server_name_and_port() {
        assert_eq!(Profile::Kong.request_authority("a.example", 8000), "kong:8000");
        assert_eq!(Profile::Envoy.request_authority("a.example", 8000), "a.example");
    }

    #[test]
    fn each_host_orders_the_request_pseudo_headers_its_own_way() {
        assert_eq!(
            Profile::Kong.request_pseudo_header_order(),
            [":path", ":method", ":scheme", ":authority"]
        );
        assert_eq!(
            Profile::Envoy.request_pseudo_header_order(),
            [":authority", ":path", ":method", ":scheme"]
        );
    }

    #[test]
    fn the_profile_selects_its_host_by_name() {
        for profile in Profile::ALL {
            assert_eq!(profile.to_string().parse::<Profile>(), Ok(profile));
            assert_eq!(profile.name(), profile.behaviour().name());
        }
        assert_eq!(Profile::Envoy.name(), "envoy");
        assert_eq!(Profile::Kong.name(), "kong");
        assert_eq!(
            "nginx".parse::<Profile>(),
            Err("unknown profile \"nginx\" (expected envoy or kong)".to_string())
        );
    }

    #[test]
    fn the_defaults_are_the_specs_lifecycle_and_only_the_differing_host_overrides_it() {
        let spec = SpecHost;
        assert_eq!(spec.start_functions(true, true, true), vec!["_initialize", "main"]);
        assert_eq!(spec.start_functions(false, true, true), vec!["_start"]);
        assert_eq!(
            Profile::Envoy.start_functions(true, true, true),
            vec!["_initialize", "main"]
        );
        assert_eq!(Profile::Kong.start_functions(true, true, true), vec!["_start"]);
        assert_eq!(Profile::Kong.start_functions(true, true, false), vec!["_initialize"]);

        assert_eq!(
            spec.stream_end_callbacks(),
            [Callback::Done, Callback::Log, Callback::Delete]
        );
        assert_eq!(Profile::Kong.stream_end_callbacks(), spec.stream_end_callbacks());
        assert_eq!(
            Profile::Envoy.stream_end_callbacks(),
            [Callback::Log, Callback::Done, Callback::Delete]
        );
        assert!(spec.root_shutdown_logs() && Profile::Kong.root_shutdown_logs());
        assert!(!Profile::Envoy.root_shutdown_logs());
        assert!(!spec.tick_timers_outlive_instance() && !Profile::Envoy.tick_timers_outlive_instance());
        assert!(Profile::Kong.tick_timers_outlive_instance());
        assert!(spec.finishes_roots_at_shutdown() && Profile::Envoy.finishes_roots_at_shutdown());
        assert!(!Profile::Kong.finishes_roots_at_shutdown());
        assert!(!spec.runs_main_thread_root() && !Profile::Kong.runs_main_thread_root());
        assert!(Profile::Envoy.runs_main_thread_root());
    }

    #[test]
    fn the_defaults_are_the_specs_host_functions_and_each_override_narrows_them() {
        let spec = SpecHost;
        assert!(spec.implements(HostFunction::GetLogLevel) && Profile::Envoy.implements(HostFunction::GetLogLevel));
        assert!(!Profile::Kong.implements(HostFunction::GetLogLevel));
        assert_eq!(spec.required_call_headers(), &[":method", ":path", ":authority"]);
        assert_eq!(Profile::Envoy.required_call_headers(), spec.required_call_headers());
        assert_eq!(Profile::Kong.required_call_headers(), &[":method", ":path"]);
        assert!(spec.dispatch_allowed(Callback::ResponseHeaders));
        assert!(Profile::Envoy.dispatch_allowed(Callback::ResponseHeaders));
        assert!(!Profile::Kong.dispatch_allowed(Callback::ResponseHeaders));
        assert!(Profile::Kong.dispatch_allowed(Callback::Tick));
        assert!(spec.call_timeout_valid(u32::MAX) && Profile::Kong.call_timeout_valid(u32::MAX));
        assert!(!Profile::Envoy.call_timeout_valid(u32::MAX));
        assert!(!spec.buffer_read_past_end_is_empty() && !Profile::Kong.buffer_read_past_end_is_empty());
        assert!(Profile::Envoy.buffer_read_past_end_is_empty());
        assert!(spec.buffer_write_allowed(3, 10) && Profile::Kong.buffer_write_allowed(3, 10));
        assert!(!Profile::Envoy.buffer_write_allowed(3, 10));
        assert!(Profile::Envoy.buffer_write_allowed(0, 10) && Profile::Envoy.buffer_write_allowed(10, 10));
        assert!(!spec.counters_may_decrease() && !Profile::Envoy.counters_may_decrease());
        assert!(Profile::Kong.counters_may_decrease());
        assert_eq!(spec.metric_name("f", "hits"), "hits");
        assert_eq!(Profile::Envoy.metric_name("f", "hits"), "wasmcustom.hits");
        assert_eq!(Profile::Kong.metric_name("f", "hits"), "pw.f.hits");
        assert_eq!(spec.metric_trap(MetricOp::Get, 7, None), None);
        assert_eq!(Profile::Envoy.metric_trap(MetricOp::Get, 7, None), None);
        assert_eq!(
            Profile::Kong.metric_trap(MetricOp::Get, 7, None).as_deref(),
            Some("could not retrieve metric id \"7\": metric not found")
        );
        assert_eq!(spec.map_size_access(), MapAccess::Read);
        assert_eq!(Profile::Kong.map_size_access(), MapAccess::Read);
        assert_eq!(Profile::Envoy.map_size_access(), MapAccess::Write);
        assert_eq!(
            spec.tcp_stream_status(StreamType::Downstream, false),
            Status::Unimplemented
        );
        assert_eq!(
            Profile::Envoy.tcp_stream_status(StreamType::Downstream, false),
            Status::Ok
        );
        assert_eq!(
            Profile::Envoy.tcp_stream_status(StreamType::Upstream, false),
            Status::Unimplemented
        );
        assert_eq!(Profile::Envoy.tcp_stream_status(StreamType::Upstream, true), Status::Ok);
    }

    #[test]
    fn the_default_map_rule_is_the_specs_phases_and_kong_serves_every_phase() {
        let paused = StreamPhase {
            request_paused_in: Some(Callback::RequestHeaders),
            ..StreamPhase::default()
        };
        let none = StreamPhase::default();
        let (headers, trailers) = (MapType::HttpRequestHeaders, MapType::HttpRequestTrailers);
        for host in [&SpecHost as &dyn HostBehaviour, &envoy::Envoy] {
            assert!(host.map_accessible(headers, MapAccess::Write, Callback::RequestHeaders, none));
            assert!(host.map_accessible(headers, MapAccess::Write, Callback::RequestBody, paused));
            assert!(!host.map_accessible(headers, MapAccess::Read, Callback::RequestBody, none));
            assert!(host.map_accessible(headers, MapAccess::Read, Callback::Log, none));
            assert!(!host.map_accessible(headers, MapAccess::Write, Callback::Log, none));
            assert!(!host.map_accessible(trailers, MapAccess::Read, Callback::Log, none));
        }
        assert!(Profile::Kong.map_accessible(headers, MapAccess::Write, Callback::Log, none));
        assert!(Profile::Kong.map_accessible(trailers, MapAccess::Read, Callback::RequestBody, none));
    }

    #[test]
    fn each_host_links_its_own_imports() {
        for profile in Profile::ALL {
            assert!(profile.links(None, "env", "proxy_log"), "{profile}");
            assert!(!profile.links(None, "other", "proxy_log"), "{profile}");
        }
        assert!(Profile::Envoy.links(None, "env", "proxy_get_log_level"));
        assert!(!Profile::Envoy.links(Some("proxy_abi_version_0_2_0"), "env", "proxy_get_log_level"));
        assert!(Profile::Kong.links(Some("proxy_abi_version_0_2_0"), "env", "proxy_get_log_level"));
        assert!(Profile::Envoy.links(None, "wasi_unstable", "fd_write"));
        assert!(!Profile::Kong.links(None, "wasi_unstable", "fd_write"));
        assert!(Profile::Kong.links(None, "wasi_snapshot_preview1", "sock_accept"));
        assert!(!Profile::Envoy.links(None, "wasi_snapshot_preview1", "sock_accept"));
    }

    #[test]
    fn a_failed_callout_is_one_reply_per_host() {
        let timeout = Profile::Envoy.callout_failure_reply(CalloutFailure::Timeout);
        assert_eq!(timeout.status, (504, ""));
        assert_eq!(timeout.body, b"upstream request timeout");
        assert_eq!(
            timeout.headers.as_deref(),
            Some(
                &pairs(&[
                    (":status", "504"),
                    ("content-length", "24"),
                    ("content-type", "text/plain")
                ])[..]
            )
        );
        assert_eq!(timeout.num_headers, 3);
        let broken = Profile::Envoy.callout_failure_reply(CalloutFailure::BrokenConnection);
        assert_eq!(broken.status, (503, ""));
        assert_eq!(
            broken.headers.unwrap()[1],
            ("content-length".to_string(), broken.body.len().to_string())
        );
        let reset = Profile::Envoy.callout_failure_reply(CalloutFailure::Reset);
        assert_eq!(
            reset,
            CalloutFailureReply {
                status: (11, "reset"),
                headers: None,
                body: Vec::new(),
                num_headers: 0
            }
        );
        for (failure, text) in [
            (CalloutFailure::Timeout, "timeout"),
            (CalloutFailure::BrokenConnection, "broken connection"),
            (CalloutFailure::Reset, "reader failure"),
        ] {
            let reply = Profile::Kong.callout_failure_reply(failure);
            assert_eq!(reply.headers, Some(pairs(&[(":dispatch_status", text)])));
            assert_eq!((reply.status, reply.num_headers, reply.body.len()), ((0, ""), 0, 0));
        }
    }

    #[test]
    fn the_profile_alone_decides_a_callouts_timeout_and_what_announces_it() {
        assert_eq!(Profile::Envoy.effective_call_timeout_ms(0), None);
        assert_eq!(Profile::Envoy.effective_call_timeout_ms(250), Some(250));
        assert_eq!(Profile::Kong.effective_call_timeout_ms(0), Some(60_000));
        assert_eq!(Profile::Kong.effective_call_timeout_ms(250), Some(250));
        assert_eq!(
            Profile::Envoy.callout_request_headers(Profile::Envoy.effective_call_timeout_ms(250)),
            pairs(&[("x-envoy-internal", "true"), ("x-envoy-expected-rq-timeout-ms", "250")])
        );
        assert_eq!(
            Profile::Envoy.callout_request_headers(Profile::Envoy.effective_call_timeout_ms(0)),
            pairs(&[("x-envoy-internal", "true")])
        );
        assert!(Profile::Kong.callout_request_headers(Some(60_000)).is_empty());
        assert_eq!(Profile::Envoy.callout_upstream(), CalloutUpstream::Cluster);
        assert_eq!(Profile::Kong.callout_upstream(), CalloutUpstream::HostPort);
    }

    #[test]
    fn a_failed_stream_gets_each_hosts_reply() {
        let envoy = Profile::Envoy.fail_closed_reply();
        assert_eq!((envoy.status, envoy.headers.len(), envoy.body.len()), (503, 0, 0));
        let kong = Profile::Kong.fail_closed_reply();
        assert_eq!(kong.status, 500);
        assert!(kong.headers.contains(&("connection".to_string(), "close".to_string())));
        assert_eq!(kong.body, br#"{"message":"An unexpected error occurred"}"#);
        assert_eq!(Profile::Kong.fail_closed_status(), 500);
        assert_eq!(Profile::Envoy.fail_closed_status(), 503);
    }

    #[test]
    fn envoys_codec_rewrites_the_request_headers_and_nginx_keeps_them() {
        let sent = pairs(&[
            (":method", "POST"),
            ("host", "a.example"),
            ("transfer-encoding", "chunked"),
            ("x-a", "1"),
        ]);
        assert_eq!(
            Profile::Envoy.downstream_request_headers(sent.clone()),
            pairs(&[(":method", "POST"), ("x-a", "1"), ("x-forwarded-proto", "http")])
        );
        let proto = pairs(&[("x-forwarded-proto", "https")]);
        assert_eq!(Profile::Envoy.downstream_request_headers(proto.clone()), proto);
        assert_eq!(Profile::Kong.downstream_request_headers(sent.clone()), sent);
        assert!(Profile::Envoy.generates_request_id() && !Profile::Kong.generates_request_id());
        assert!(Profile::Envoy.request_body_ends_with_empty_call());
        assert!(!Profile::Kong.request_body_ends_with_empty_call());
        assert!(Profile::Envoy.closes_connection_on_unread_request_body());
        assert!(!Profile::Kong.closes_connection_on_unread_request_body());
    }

    #[test]
    fn properties_are_typed_on_envoy_and_text_on_kong() {
        assert_eq!(
            Profile::Envoy.encode_property(PropertyValue::Int(5)),
            5i64.to_le_bytes()
        );
        assert_eq!(Profile::Kong.encode_property(PropertyValue::Int(5)), b"5");
        assert_eq!(Profile::Envoy.encode_property(PropertyValue::Bool(true)), [1]);
        assert_eq!(Profile::Kong.encode_property(PropertyValue::Bool(true)), b"true");
        for profile in Profile::ALL {
            assert_eq!(profile.encode_property(PropertyValue::Str("x".into())), b"x");
        }
        let facts = PropertyFacts {
            vm_id: "vm-1",
            root_id: Some("root-a"),
            stream: None,
        };
        let str = |s: &str| HostProperty::Value(PropertyValue::Str(s.to_string()));
        assert_eq!(Profile::Envoy.host_property(&["plugin_root_id"], &facts), str("root-a"));
        assert_eq!(Profile::Kong.host_property(&["plugin_root_id"], &facts), str("0"));
        assert_eq!(Profile::Envoy.host_property(&["plugin_vm_id"], &facts), str("vm-1"));
        assert_eq!(
            Profile::Kong.host_property(&["plugin_vm_id"], &facts),
            HostProperty::Unsupported(LogLevel::Critical, "NYI - \"plugin_vm_id\" property".into())
        );
        assert_eq!(
            Profile::Kong.host_property(&["upstream", "transport_failure_reason"], &facts),
            HostProperty::Unsupported(
                LogLevel::Critical,
                "NYI - \"upstream.transport_failure_reason\" property".into()
            )
        );
        assert_eq!(
            Profile::Kong.host_property(&["route_name"], &facts),
            HostProperty::Unsupported(LogLevel::Error, "\"route_name\" property not supported".into())
        );
        assert_eq!(
            Profile::Envoy.host_property(&["route_name"], &facts),
            HostProperty::Common
        );
        assert_eq!(
            Profile::Kong.host_property(&["destination", "port"], &facts),
            HostProperty::NotFound
        );
        assert_eq!(
            Profile::Kong.host_property(&["ngx", "uri"], &facts),
            HostProperty::NotFound
        );
        assert_eq!(
            Profile::Envoy.host_property(&["ngx", "uri"], &facts),
            HostProperty::Common
        );
        assert_eq!(
            SpecHost.host_property(&["plugin_root_id"], &facts),
            HostProperty::Common
        );
        for profile in Profile::ALL {
            assert_eq!(
                profile.host_property(&["request", "path"], &facts),
                HostProperty::Common
            );
        }
    }
}
