//! Kong 3.x on ngx_wasm_module: what it does differently from the spec's host
//! ([`super::HostBehaviour`]'s defaults), each with its source (the source tags are listed in
//! [`super`]).

use super::{
    shaped_local_reply, AfterTrap, BodyDelivery, BudgetRefusal, BufferWrite, Callback, CalloutFailure,
    CalloutFailureReply, CalloutUpstream, EdgeFacts, HostBehaviour, HostProperty, HostReply, MapAccess, MapType,
    MetricOp, PropertyFacts, PropertyValue, ResponseOrigin, SecondLocalResponse, StreamPhase,
};
use crate::abi::LocalResponse;
use crate::abi::{encode_pairs, LogLevel, MetricType, Status, START_EXPORT};
use crate::hostfn::HostFunction;
use crate::limits::OverBudget;
use crate::wasi::PREVIEW1_FUNCTIONS;

/// Kong 3.x (ngx_wasm_module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kong;

/// ABI 0.1.0 host functions ngx_wasm_module still defines for any module (its `ngx_proxy_wasm_hfuncs[]`
/// rows marked `<= 0.2.1` or `0.1.0` that ABI 0.2.1 dropped); Envoy registers them for ABI 0.1.0
/// modules only, which host-sim does not load.
const KONG_LEGACY: &[&str] = &[
    "proxy_continue_request",
    "proxy_continue_response",
    "proxy_resume_downstream",
    "proxy_resume_upstream",
    "proxy_get_configuration",
    "proxy_clear_route_cache",
];

/// Kong's `Server` header: `kong/<version>` (Kong kong/meta.lua `_SERVER_TOKENS`; 3.10.0 is the
/// version of the Kong source this profile was checked against).
const KONG_SERVER_TOKENS: &str = "kong/3.10.0";

/// The `Server` nginx writes under Kong's `server_tokens off` (kong/templates/nginx_kong.lua:2;
/// ngx_wasm_module src/http/ngx_http_wasm_util.c:166-186 writes the bare `nginx` then).
const KONG_NGINX_SERVER: &str = "nginx";

/// The HTTP version Kong proxies with and names in its `Via` header (Kong
/// kong/runloop/handler.lua:76 `DEFAULT_PROXY_HTTP_VERSION`).
const KONG_PROXY_HTTP_VERSION: &str = "1.1";

/// The timeout of a callout that asks for none: the Wasm socket timeouts apply, 60 s by default
/// (Kong/ngx_wasm_module docs/DIRECTIVES.md `socket_connect_timeout`, `socket_read_timeout`,
/// `socket_send_timeout`).
const DEFAULT_CALL_TIMEOUT_MS: u64 = 60_000;

impl HostBehaviour for Kong {
    fn name(&self) -> &'static str {
        "kong"
    }

    /// ngx_wasm_module src/wasm/vm/ngx_wavm.c `ngx_wavm_module_link`: an `env` import without a
    /// host function fails with "missing host function". It links the ABI's `env.proxy_*`
    /// functions and the older names of `KONG_LEGACY` (the table `ngx_proxy_wasm_hfuncs[]` in
    /// src/common/proxy_wasm/ngx_proxy_wasm_host.c; the ones it has not implemented link and trap
    /// when called); all of `wasi_snapshot_preview1` through wasmtime's WASI
    /// (src/wasm/wrt/ngx_wrt_wasmtime.c:260-300); nothing under `wasi_unstable` or any other
    /// module.
    fn links(&self, _abi_version: Option<&str>, module: &str, name: &str) -> bool {
        match module {
            "env" => HostFunction::from_name(name).is_some() || KONG_LEGACY.contains(&name),
            "wasi_snapshot_preview1" => PREVIEW1_FUNCTIONS.contains(&name),
            _ => false,
        }
    }

    /// Kong traps on the host functions it has not implemented (KONG-DOC, "NYI" rows): log
    /// level, `proxy_done`, stream close, gRPC, `proxy_get_status`,
    /// `proxy_resolve_shared_queue`.
    /// The gRPC ones (`proxy_grpc_call`, `_stream`, `_send`, `_cancel`, `_close`) are bound to
    /// `ngx_proxy_wasm_hfuncs_nop`, which returns `NGX_WAVM_NYI`, a trap of the calling
    /// instance (ngx_wasm_module src/common/proxy_wasm/ngx_proxy_wasm_host.c, "grpc callouts"
    /// entries of `ngx_proxy_wasm_hfuncs`): a filter's gRPC call never leaves Kong.
    fn implements(&self, function: HostFunction) -> bool {
        !matches!(
            function,
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
        )
    }

    /// Kong runs the first of `_start` or `_initialize` it finds (KONG-DIFF).
    fn start_functions(&self, has_initialize: bool, _has_main: bool, has_start: bool) -> Vec<&'static str> {
        if has_start {
            vec![START_EXPORT]
        } else if has_initialize {
            vec![Callback::Start.export_name()]
        } else {
            Vec::new()
        }
    }

    /// ngx_wasm_module always passes `false`, on request and response headers alike, even
    /// without a body (KONG-DIFF; src/http/proxy_wasm/ngx_http_proxy_wasm.c:36-41 and
    /// :193-198 at 3bed2783, `/* eof: 0 */`; commit 5f7e19e5 "always pass 'eof=false' in header
    /// steps": nginx does not know yet whether a body follows).
    fn headers_end_of_stream(&self, _real: bool) -> bool {
        false
    }

    /// ngx_wasm_module puts its special keys first, in its table's order `:path, :method,
    /// :scheme, :authority` (src/common/proxy_wasm/ngx_proxy_wasm_maps.c:50-68, emitted in that
    /// order before nginx's header list by `ngx_proxy_wasm_maps_get_all` :169-193; KONG-OBS).
    /// nginx keeps Host as an ordinary header too.
    fn request_pseudo_header_order(&self) -> [&'static str; 4] {
        [":path", ":method", ":scheme", ":authority"]
    }

    /// ngx_wasm_module's `:authority` is the server block's `server_name` (the machine's host
    /// name without one) and the listener's port, whatever the Host header says
    /// (src/common/proxy_wasm/ngx_proxy_wasm_maps.c:620-668, `ngx_proxy_wasm_maps_get_authority`;
    /// KONG-OBS); Kong's proxy server block is `server_name kong` (Kong
    /// kong/templates/nginx_kong.lua:91).
    fn request_authority(&self, _requested: &str, listener_port: u16) -> String {
        format!("kong:{listener_port}")
    }

    /// The filter reads nginx's request header list, `r->headers_in.headers`
    /// (src/common/proxy_wasm/ngx_proxy_wasm_maps.c:106-113), which nginx fills one entry per
    /// header line in arrival order, keeping the client's spelling (nginx
    /// src/http/ngx_http_request.c `ngx_http_process_request_headers` pushes each parsed line
    /// onto the list with its `key` as received and only a separate `lowcase_key`); KONG-OBS:
    /// `Host`, `User-Agent`, `X-MiXeD-Case` arrive as sent.
    fn request_headers_as_sent(&self) -> bool {
        true
    }

    /// ngx_wasm_module counts nginx's header list only: on a request
    /// `ngx_http_wasm_req_headers_count` (src/http/ngx_http_wasm_headers_request.c:145-148,
    /// passed by src/http/proxy_wasm/ngx_http_proxy_wasm.c:26), on a response
    /// `ngx_http_wasm_resp_headers_count` plus the shim headers (ngx_http_proxy_wasm.c:184-185);
    /// its pseudo-headers (`:path`…, `:status`) are computed special keys outside those lists
    /// (ngx_proxy_wasm_maps.c:45-68), so they are not counted (KONG-OBS).
    fn headers_count(&self, pairs: &crate::abi::Pairs) -> usize {
        pairs.iter().filter(|(name, _)| !name.starts_with(b":")).count()
    }

    /// nginx reads the whole body first ([`BodyDelivery::WholeOnce`]).
    fn request_body_delivery(&self) -> BodyDelivery {
        BodyDelivery::WholeOnce
    }

    /// ngx_wasm_module never calls `proxy_on_request_trailers` (KONG-DOC:
    /// `on_http_request_trailers` is NYI; ngx_http_proxy_wasm.c runs no request-trailers step),
    /// so on Kong trailers only end the body.
    fn delivers_request_trailers(&self) -> bool {
        false
    }

    /// nginx writes a body larger than `client_body_buffer_size` to a temp file, and
    /// ngx_wasm_module cannot hand that to a filter (KONG-SRC ngx_proxy_wasm_host.c:77-83; its
    /// test t/03-proxy_wasm/hfuncs/113-proxy_get_http_request_body.t TEST 3).
    fn request_body_readable(&self, len: usize, client_body_buffer_bytes: usize) -> bool {
        len <= client_body_buffer_bytes
    }

    /// ngx_wasm_module's `proxy_set_buffer_bytes` prepends for start 0 and size 0 with a value
    /// (ngx_proxy_wasm_host.c:499-501, :529-531); otherwise it clears the body from `start` on
    /// and appends the value cut to `size` bytes (`ngx_http_wasm_set_req_body` /
    /// `_set_resp_body`, src/http/ngx_http_wasm_util.c:282 and :371 `body->len =
    /// ngx_min(body->len, max)`, then `ngx_wasm_chain_append`, whose `ngx_wasm_chain_clear`
    /// drops everything from the offset, src/wasm/ngx_wasm_util.c:64-104, :239), where a size of
    /// 0 with a start past 0 means the whole value (ngx_proxy_wasm_host.c:468-470). So size 0
    /// appends at `start` rather than inserting, and a value longer than `size` (the SDK's
    /// `set_http_response_body(0, chunk_size, ..)`) is cut to the chunk (KONG-OBS: "a
    /// replacement longer than the chunk is cut to the chunk size").
    fn buffer_write(&self, start: usize, size: usize, value_len: usize) -> BufferWrite {
        if start == 0 && size == 0 && value_len > 0 {
            return BufferWrite {
                start: 0,
                removed: Some(0),
                kept: value_len,
            };
        }
        let max = if start > 0 && size == 0 { value_len } else { size };
        BufferWrite {
            start,
            removed: None,
            kept: value_len.min(max),
        }
    }

    /// Kong keeps the nginx request and serves its headers in every phase (KONG-SRC maps).
    fn map_accessible(&self, _map: MapType, _access: MapAccess, _callback: Callback, _phase: StreamPhase) -> bool {
        true
    }

    /// Kong traps ("local response already stashed", KONG-SRC
    /// `ngx_proxy_wasm_hfuncs_send_local_response`).
    fn second_local_response(&self) -> SecondLocalResponse {
        SecondLocalResponse::Trap
    }

    /// Kong traps once the response headers went to the client ("response already sent",
    /// KONG-SRC); Envoy accepts it and resets the stream.
    fn late_local_response_traps(&self) -> bool {
        true
    }

    /// KONG-DIFF: a local response from `proxy_on_http_call_response` cancels the stream's other
    /// pending dispatches.
    fn local_response_cancels_dispatches(&self) -> bool {
        true
    }

    /// ngx_wasm_module stashes the reply with a line feed appended to a non-empty body
    /// (KONG-SRC src/http/ngx_http_wasm_local_response.c:132-141) and flushes it through nginx's
    /// header and body filters (:179-236: the filter's headers, `Content-Type` from nginx's
    /// `default_type` for a body, `Content-Length` of the body with its line feed, then
    /// `ngx_http_wasm_send_chain_link`), where the wasm filter module runs
    /// `on_response_headers` and `on_response_body` (src/http/ngx_http_wasm_filter_module.c:
    /// 66-131 header filter, 142+ body filter); t/03-proxy_wasm/hfuncs/
    /// 102-proxy_send_local_response.t TEST 6 logs both callbacks for a reply without a body.
    /// nginx's header filter chain runs ngx_wasm_module's header filter, which puts nginx's own
    /// `Server` and `Date` into the header list before the callback when the reply has none
    /// (`ngx_http_wasm_produce_resp_headers`, as for an upstream's response), so the map the
    /// filter sees is shaped as an upstream response's is ([`HostBehaviour::upstream_response_headers`]):
    /// `:status`, the shims (Content-Type, Content-Length, Connection), the filter's other
    /// headers, `Server: nginx`, `Date`. A `Connection` header the filter gave goes to nginx's
    /// keep-alive flag instead of the list (`ngx_http_wasm_set_connection_header_handler`,
    /// src/http/ngx_http_wasm_headers_response.c:376-411: `close` clears it, `keep-alive` sets
    /// it), which the Connection shim then reads (src/http/ngx_http_wasm_headers_shims.c:
    /// 187-203). The reason phrase comes
    /// ([`HostBehaviour::local_reply_reason`]). A reply sent from the response headers
    /// callback instead replaces the body of the response in place
    /// ([`HostBehaviour::local_reply_replaces_body`]).
    fn local_reply_response(
        &self,
        local: &LocalResponse,
        now: std::time::SystemTime,
    ) -> (Vec<(String, String)>, Vec<u8>) {
        let (headers, body) = shaped_local_reply(local, local_reply_body(local), true);
        let closes = headers
            .iter()
            .any(|(k, v)| k == "connection" && v.to_ascii_lowercase().contains("close"));
        let connection = if closes { "close" } else { "keep-alive" };
        (nginx_response_map(headers, now, connection), body)
    }

    /// From `on_response_headers` (header filter entered, body filter not yet; `serve` applies
    /// this over an upstream's response, the only kind behind Kong's filter chain it models),
    /// `proxy_send_local_response` does not stash a reply: it sets the reply's body, with a
    /// line feed appended to a non-empty one, as the response's body chunk and its status and
    /// details as the response's status and status line, and ignores the reply's headers
    /// (src/common/proxy_wasm/ngx_proxy_wasm_host.c:1087-1111; `ngx_http_wasm_set_resp_status`,
    /// src/http/ngx_http_wasm_util.c:326-342). The response keeps its headers, the upstream's
    /// Content-Length included, stale for the new body (KONG-OBS), and the body filter sends the
    /// chunk in place of the upstream's body (src/http/ngx_http_wasm_filter_module.c:177-181).
    /// nginx writes a status line set this way as `HTTP/1.1 <details>`, without the code
    /// (nginx src/http/ngx_http_header_filter_module.c, `status_line.len`), the "broken status
    /// line" KONG-OBS saw; hyper always writes the code, so host-sim's client gets
    /// `HTTP/1.1 <status> <details>` there, and the exact line only without details (then
    /// nginx writes the status's standard one, as hyper does). Not modelled: ngx_wasm_module
    /// then runs `on_response_body` with the replacement chunk; host-sim's filter gets no more
    /// response callbacks after the reply.
    fn local_reply_replaces_body(&self, local: &LocalResponse) -> Option<Vec<u8>> {
        Some(local_reply_body(local))
    }

    /// ngx_wasm_module writes the status line as `<status> <details>` when the filter gave
    /// details (src/http/ngx_http_wasm_local_response.c:67-85 builds it, :204-207 sets it as the
    /// response's status line; KONG-OBS: the reason phrase was the filter's details).
    fn local_reply_reason(&self, details: &str) -> Option<String> {
        (!details.is_empty()).then(|| details.to_string())
    }

    /// Kong sends the request id it names in `X-Kong-Request-Id` to the upstream too
    /// (`proxy_set_header X-Kong-Request-Id $kong_request_id`, kong/templates/nginx_kong.lua:
    /// 205-207, with the default `headers_upstream = x-kong-request-id`,
    /// kong/templates/kong_defaults.lua:72), after the filter chain.
    fn proxied_request_headers(&self, request_id: &str) -> Vec<(String, String)> {
        vec![("x-kong-request-id".to_string(), request_id.to_string())]
    }

    /// ngx_wasm_module's response map: `:status` (its special keys,
    /// src/common/proxy_wasm/ngx_proxy_wasm_maps.c:72-75), then the shim headers nginx keeps
    /// outside its header list, in their table's order, Content-Type, Content-Length,
    /// Transfer-Encoding, Connection (`keep-alive` on a kept-alive connection), Keep-Alive, Vary
    /// (src/http/ngx_http_wasm_headers_shims.c:18-40, injected by `ngx_proxy_wasm_maps_get_all`
    /// from the response-headers step on, ngx_proxy_wasm_maps.c:199-227, and marshalled before the
    /// list, src/common/proxy_wasm/ngx_proxy_wasm_util.c:380-395), then nginx's header
    /// list: the upstream's other headers in their order (nginx's proxy module keeps the
    /// hop-by-hop Connection and Keep-Alive out of it; Kong passes the upstream's Server and Date
    /// on, kong/templates/nginx_kong.lua:208-209 `proxy_pass_header`), and the Server and Date
    /// ngx_wasm_module writes into that list before the filter's callback when the response has
    /// none (`ngx_http_wasm_produce_resp_headers`, src/http/ngx_http_wasm_util.c:149-200, called
    /// from the header filter at src/http/ngx_http_wasm_filter_module.c:90 before
    /// `ngx_wasm_ops_resume`): `Server: nginx` under Kong's `server_tokens off`
    /// (kong/templates/nginx_kong.lua:2; :166-186 of util.c pick the bare name) and the current
    /// HTTP date (KONG-OBS on bare nginx: `:status`, Content-Type, Content-Length, Connection,
    /// the upstream's other headers, nginx's own Server and Date). The filter can change or
    /// remove them, and what it leaves goes out; Kong's Lua header filter, which runs after it,
    /// then finds a `Server` and leaves it ([`HostBehaviour::edge_response_headers`]).
    fn upstream_response_headers(
        &self,
        headers: Vec<(String, String)>,
        now: std::time::SystemTime,
    ) -> Vec<(String, String)> {
        nginx_response_map(headers, now, "keep-alive")
    }

    /// What the client gets on top of what the filter left, written after the filter's
    /// response callbacks, which therefore never see them:
    /// - nginx's header filter writes `Connection: keep-alive` on a response to a kept-alive
    ///   connection (nginx src/http/ngx_http_header_filter_module.c, `r->keepalive`; KONG-OBS:
    ///   Connection on local replies and proxied responses), and `Date` (hyper writes it for
    ///   host-sim).
    /// - Kong's Lua header filter (`header_filter_by_lua_block { Kong.header_filter() }`, Kong
    ///   kong/templates/nginx_kong.lua:153; its error location :401 too) writes the headers
    ///   of the default `headers = server_tokens, latency_tokens, x-kong-request-id` (Kong
    ///   kong/templates/kong_defaults.lua:71), in kong/runloop/handler.lua
    ///   `header_filter.after` (:1567-1635), by whether `ctx.KONG_PROXIED` is set. Kong sets it
    ///   at the end of its access phase (kong/init.lua:1240-1246), right after attaching the
    ///   filter chain (kong/runloop/wasm.lua:1021-1044), before the filter's request
    ///   callbacks run, so it is set for every response the filter saw a request for: the
    ///   upstream's, the filter's own local reply, the error page after a trap; only replies
    ///   Kong's router makes on its own ([`ResponseOrigin::Router`]) go without it.
    ///   With it: `X-Kong-Upstream-Latency` (`KONG_WAITING_TIME`), `X-Kong-Proxy-Latency`,
    ///   `Via: <upstream's Via>, 1.1 kong/3.10.0` (proxy_http_version 1.1, :76, :1580-1599) and
    ///   `Server: kong/3.10.0` only when the response has none (:1601-1606). Without it:
    ///   `X-Kong-Response-Latency` and `Server: kong/3.10.0` replacing any other (:1608-1624).
    ///   Then `X-Kong-Request-Id` (:1627-1634), `$kong_request_id` (32 hex digits).
    ///   The latencies are whole milliseconds (kong/init.lua `get_now_ms`) measured from the
    ///   request's start (`KONG_PROCESSING_START`): `KONG_PROXY_LATENCY` until the request went
    ///   upstream (`KONG_BALANCER_ENDED_AT`, kong/init.lua:1354, :1425, :1464), else until the
    ///   header filter (:1636-1638); `KONG_WAITING_TIME` from the request going upstream (else
    ///   from the end of Kong's access phase, which in host-sim, with no Lua plugins, is the
    ///   request's start) until the header filter (:1631-1634); `KONG_RESPONSE_LATENCY` until the
    ///   header filter (:1641-1643).
    ///
    /// That the filter sees none of them: Kong builds ngx_wasm_module as a dynamic module
    /// (Kong BUILD.bazel:193-201, `wasmx_module_flag` default `dynamic`;
    /// build/openresty/wasmx/rules.bzl:12-15) that its nginx.conf loads with `load_module`
    /// (kong/templates/nginx.lua:3-4). nginx appends a dynamic module's
    /// `ngx_http_wasm_filter_module`, the last name of its order list (ngx_wasm_module
    /// config:393-395), after every static module, lua-nginx-module (an `HTTP_AUX_FILTER`)
    /// included (nginx src/core/ngx_module.c:211-251); filters are chained in module order, each
    /// putting itself in front (ngx_http_wasm_filter_module.c:57-63), so ngx_wasm_module's
    /// header filter, which runs `on_response_headers`, comes before Lua's
    /// `header_filter_by_lua`, and nginx's own header filter (Connection, Date) is last.
    fn edge_response_headers(&self, edge: &EdgeFacts) -> Vec<(&'static str, String, bool)> {
        let millis = |d: std::time::Duration| d.as_millis().to_string();
        let mut headers = Vec::new();
        if edge.origin == ResponseOrigin::Router {
            headers.push(("x-kong-response-latency", millis(edge.answered_after), true));
            headers.push(("server", KONG_SERVER_TOKENS.to_string(), true));
        } else {
            let waiting = edge
                .answered_after
                .saturating_sub(edge.sent_upstream_after.unwrap_or_default());
            let proxy_latency = edge.sent_upstream_after.unwrap_or(edge.answered_after);
            let kong_via = format!("{KONG_PROXY_HTTP_VERSION} {KONG_SERVER_TOKENS}");
            let via = match &edge.upstream_via {
                Some(upstream) => format!("{upstream}, {kong_via}"),
                None => kong_via,
            };
            headers.push(("x-kong-upstream-latency", millis(waiting), true));
            headers.push(("x-kong-proxy-latency", millis(proxy_latency), true));
            headers.push(("via", via, true));
            headers.push(("server", KONG_SERVER_TOKENS.to_string(), false));
        }
        headers.push(("x-kong-request-id", edge.request_id.clone(), true));
        headers.push(("connection", "keep-alive".to_string(), false));
        headers
    }

    /// ngx_wasm_module always runs the body filter with the last buffer, 0 bytes and end of
    /// stream included (`ngx_http_wasm_send_chain_link` sends `NGX_HTTP_LAST` for no body,
    /// KONG-SRC src/http/ngx_http_wasm_util.c; t/03-proxy_wasm/hfuncs/
    /// 102-proxy_send_local_response.t TEST 6: "on_response_body, 0 bytes, eof: true"). An
    /// upstream body comes in one call, with the last buffer (not observed separately against
    /// nginx).
    fn response_body_callback(&self, _body: &[u8]) -> bool {
        true
    }

    /// Kong/nginx answers 500 with Kong's JSON error body, and closes the connection (KONG-OBS,
    /// nginx 1.26.3 with ngx_wasm_module: "After a trap: the client gets 500 ... and
    /// `Connection: close`").
    fn fail_closed_reply(&self) -> HostReply {
        HostReply {
            status: 500,
            headers: vec![
                (
                    "content-type".to_string(),
                    "application/json; charset=utf-8".to_string(),
                ),
                ("connection".to_string(), "close".to_string()),
            ],
            body: br#"{"message":"An unexpected error occurred"}"#.to_vec(),
        }
    }

    /// Kong's 502 error page. nginx answers an unreachable upstream with 502, which Kong's
    /// `error_page 500 502 503 504 /kong_error_handler` (kong/templates/nginx_kong.lua:103-105)
    /// redirects to its Lua error handler: `An invalid response was received from the upstream
    /// server` (kong/error_handlers.lua:25) in the error template the request's `Accept` picks,
    /// else its `Content-Type`, else `error_default_type = text/plain`
    /// (kong/error_handlers.lua:50-77, kong/templates/kong_defaults.lua `error_default_type`;
    /// templates and MIME types kong/tools/http.lua:392-430), with the request id
    /// (`kong_error_page`). Bare ngx_wasm_module would send nginx's HTML 502 page through the
    /// filter's response callbacks (KONG-OBS); behind Kong the filter's callbacks do not see
    /// this page: the internal redirect to the error location leaves the chain attached to the
    /// original location, which only gets its end callbacks at the request pool's cleanup
    /// (ngx_wasm_module t/04-openresty/ffi/200-proxy_wasm_and_lua_sanity.t TEST 8, "/error does
    /// not concern itself with any chain"). This models Kong's, the gateway the profile is for.
    fn upstream_unreachable_reply(&self, request_headers: &[(String, String)], request_id: &str) -> Option<HostReply> {
        Some(kong_error_page(
            502,
            "An invalid response was received from the upstream server",
            request_headers,
            request_id,
        ))
    }

    /// A trap in the response phase fails open, the response already chosen goes out
    /// (KONG-OBS: a trap in on_response_headers delivered the upstream response; for a local
    /// reply this follows from that observation, it was not run). ngx_wasm_module's header
    /// filter ignores what the wasm step returned, a trap's error status included, and passes
    /// the response on to the next nginx filter (src/http/ngx_http_wasm_filter_module.c:92-125,
    /// `ngx_wasm_ops_resume` then `ngx_http_next_header_filter`).
    fn response_trap_fails_open(&self) -> bool {
        true
    }

    /// See [`AfterTrap::FreshInstance`] (KONG-SRC ngx_proxy_wasm.c:1000-1006, :1203-1210,
    /// :1232-1242).
    fn after_trap(&self) -> AfterTrap {
        AfterTrap::FreshInstance
    }

    /// ngx_wasm_module's default isolation, `none`: every filter of a module uses the one
    /// instance of the worker's store, found by module (KONG-SRC ngx_proxy_wasm.c:981-1011
    /// `get_instance`, :1114-1117; the store is the worker's, ngx_http_wasm_util.c:450-461;
    /// docs/DIRECTIVES.md `proxy_wasm_isolation`), with a root context per filter, looked up by
    /// the filter's id (ngx_proxy_wasm.c:1146-1249). Kong attaches its chains without an
    /// isolation (kong/runloop/wasm.lua `proxy_wasm.attach(chain.c_plan)`), so the location's
    /// `proxy_wasm_isolation` applies (ngx_wasm_ops.c:423-427), `none` unless set
    /// (ngx_http_wasm_module.c:434-435; Kong injects it only from `nginx_http_proxy_wasm_isolation`).
    fn shares_instance_per_module(&self) -> bool {
        true
    }

    /// ngx_wasm_module answers an allocation failure in most host functions with
    /// INTERNAL_FAILURE (`ngx_proxy_wasm_result_err`, KONG-SRC ngx_proxy_wasm_host.c: set_buffer
    /// :548, set_header_map_pairs :761, add/replace_header_map_value :804/:838, dispatch_http_call
    /// :1228, set_property :989), and traps where its fixed-size shared memory zones are full:
    /// `shm_kv` ("failed setting value to shm (could not write to slab)", :1393; Kong/
    /// ngx_wasm_module docs/DIRECTIVES.md `shm_kv ... eviction=none`), `shm_queue` ("could not
    /// enqueue (queue is full)", :1497; DIRECTIVES.md: "writes will fail when the allocated
    /// memory slab is full") and the metrics zone ("no memory (increase \"slab_size\"
    /// directive)", :1664). A queue registration allocates nothing in Kong (its zones are
    /// configured); host-sim creates the queue there, and refuses it with INTERNAL_FAILURE.
    /// `proxy_log` is never refused on either host: the oldest log lines give way instead
    /// ([`crate::state`]).
    fn over_budget(&self, function: HostFunction, _refusal: &OverBudget) -> BudgetRefusal {
        match function {
            HostFunction::SetSharedData => {
                BudgetRefusal::Trap("failed setting value to shm (could not write to slab)".into())
            }
            HostFunction::EnqueueSharedQueue => BudgetRefusal::Trap("could not enqueue (queue is full)".into()),
            HostFunction::DefineMetric => {
                BudgetRefusal::Trap("could not define metric: no memory (increase \"slab_size\" directive)".into())
            }
            _ => BudgetRefusal::Status(Status::InternalFailure),
        }
    }

    /// Kong allows dispatch only from request headers/body, ticks, dispatch responses and
    /// foreign function callbacks, and traps elsewhere (KONG-DIFF).
    fn dispatch_allowed(&self, callback: Callback) -> bool {
        matches!(
            callback,
            Callback::RequestHeaders
                | Callback::RequestBody
                | Callback::Tick
                | Callback::HttpCallResponse
                | Callback::ForeignFunction
        )
    }

    /// A `host:port` (KONG-DOC dispatch_http_call).
    fn callout_upstream(&self) -> CalloutUpstream {
        CalloutUpstream::HostPort
    }

    /// `:method` and `:path` (KONG-DOC dispatch_http_call; `:authority` only sets Host).
    fn required_call_headers(&self) -> &'static [&'static str] {
        &[":method", ":path"]
    }

    /// 0 means the socket timeouts, 60 s by default (`DEFAULT_CALL_TIMEOUT_MS`).
    fn effective_call_timeout_ms(&self, requested: u32) -> Option<u64> {
        Some(match requested {
            0 => DEFAULT_CALL_TIMEOUT_MS,
            ms => u64::from(ms),
        })
    }

    /// Kong reports every failure with no headers plus a `:dispatch_status` pseudo-header
    /// ("timeout", "broken connection", ...), readable although the call reports zero headers;
    /// `proxy_get_status` is not implemented (KONG-DOC).
    fn callout_failure_reply(&self, failure: CalloutFailure) -> CalloutFailureReply {
        let status = match failure {
            CalloutFailure::Timeout => "timeout",
            CalloutFailure::BrokenConnection => "broken connection",
            CalloutFailure::Reset => "reader failure",
        };
        CalloutFailureReply {
            status: (0, ""),
            headers: Some(vec![(":dispatch_status".to_string(), status.to_string())]),
            body: Vec::new(),
            num_headers: 0,
        }
    }

    /// Kong ignores the call and answers OK (KONG-SRC
    /// `ngx_proxy_wasm_hfuncs_set_effective_context`).
    fn effective_context_switches(&self) -> bool {
        false
    }

    /// ngx_wasm_module arms a timer per `proxy_set_tick_period_milliseconds` whose event holds
    /// the root's exec (ngx_proxy_wasm_host.c:268-305), and a fresh instance reuses that exec
    /// with its period reset to 0 (ngx_proxy_wasm.c:1203-1210); the old timer stays armed and
    /// re-arms itself while the exec has a period (`ngx_proxy_wasm_filter_tick_handler`,
    /// ngx_proxy_wasm_util.c:194-240). So a period set in on_configure, which runs again on the
    /// fresh instance, adds a timer at each re-creation; one set in on_vm_start, which does not
    /// run again, stops (KONG-OBS: "ticks set in on_configure continue on the re-created
    /// instance and every re-creation adds another timer: ticks double").
    fn tick_timers_outlive_instance(&self) -> bool {
        true
    }

    /// Kong traps when called from a context other than the root ("can only set tick_period in
    /// root context") and when a period is already set ("tick_period already set") (KONG-SRC
    /// `ngx_proxy_wasm_hfuncs_set_tick_period`).
    fn tick_period_refusal(&self, from_root: bool, already_set: bool) -> Option<&'static str> {
        if !from_root {
            Some("can only set tick_period in root context")
        } else if already_set {
            Some("tick_period already set")
        } else {
            None
        }
    }

    /// ngx_wasm_module never shuts a root down: a worker's exit destroys the instances' stores
    /// (ngx_proxy_wasm.c `ngx_proxy_wasm_root_destroy`) and root contexts are never finalized
    /// (`destroy_pwexec`: "never called on root rexec for now"). host-sim keeps the spec's
    /// sequence where it does shut one down (the default `root_shutdown_logs`).
    fn finishes_roots_at_shutdown(&self) -> bool {
        false
    }

    /// Every value as a string (Kong/ngx_wasm_module docs/PROXY_WASM.md, properties): integers
    /// in decimal, booleans as `true`/`false` (KONG-SRC `get_connection_mtls`).
    fn encode_property(&self, value: PropertyValue) -> Vec<u8> {
        match value {
            PropertyValue::Str(s) => s.into_bytes(),
            PropertyValue::Int(i) => i.to_string().into_bytes(),
            PropertyValue::Bool(b) => b.to_string().into_bytes(),
            PropertyValue::Map(pairs) => encode_pairs(&pairs),
        }
    }

    /// Kong maps each attribute to an nginx variable and exposes nginx variables under `ngx.*`
    /// (KONG-SRC `ngx_proxy_wasm_properties.c`, table `pw2ngx`): `plugin_root_id` is always
    /// "0" (`get_filter_root_id`, :398-420, formats its own still-empty cache string as an
    /// integer, which reads its zero length; KONG-OBS "0"; Kong has no root id setting) and
    /// `plugin_vm_id` is NYI; `source.address` is `$remote_addr`, the address alone;
    /// `destination.*` are `$proxy_protocol_addr`/`_port`, unset without the PROXY protocol.
    ///
    /// Where `pw2ngx` maps an attribute to something else than the common attributes
    /// (ngx_proxy_wasm_properties.c, the line of its row): `request.host` is `$hostname`, the
    /// machine's name, not the Host header (:463-465; KONG-OBS); `request.id` is the request's
    /// own `x-request-id` header, NOT_FOUND without one (:481-483, `get_request_id` :146-153;
    /// KONG-OBS); `request.query` is `$args`, NOT_FOUND without a `?` (:478-480; KONG-OBS);
    /// `request.size` is `$content_length`, the Content-Length header, NOT_FOUND without one
    /// (:493-495; KONG-OBS); `connection.mtls` reads `$https`, which plain HTTP does not set, so
    /// NOT_FOUND (:592-594, `get_connection_mtls` :327-345; KONG-OBS); `response.code` is
    /// `$status`, "000" before a response (:508-510; KONG-OBS during request headers).
    ///
    /// The rows `pw2ngx` binds to `nyi` log `NYI - "<path>" property` at `[alert]`
    /// (`NGX_LOG_WASM_NYI`, src/wasm/ngx_wasm.h:13) on every read, those bound to
    /// `not_supported` `"<path>" property not supported` at `[error]` (:70-85), and both answer
    /// NOT_FOUND (`kong_unimplemented_property`; KONG-OBS: `plugin_vm_id` NOT_FOUND with an
    /// `[alert] NYI` per read).
    fn host_property(&self, path: &[&str], facts: &PropertyFacts<'_>) -> HostProperty {
        if let Some(unimplemented) = kong_unimplemented_property(path) {
            return unimplemented;
        }
        let request_header = |name: &str| facts.request_header(name).map(PropertyValue::Str);
        let value = match path {
            ["plugin_root_id"] => Some(PropertyValue::Str("0".to_string())),
            ["destination", ..] | ["connection", "mtls"] => None,
            ["request", "host"] => Some(PropertyValue::Str(machine_hostname().to_string())),
            ["request", "id"] => request_header("x-request-id"),
            ["request", "size"] => request_header("content-length"),
            ["request", "query"] => facts.request_header(":path").and_then(|path| {
                path.split_once('?')
                    .map(|(_, query)| PropertyValue::Str(query.to_string()))
            }),
            ["response", "code"] if facts.stream.is_some() && facts.response_header(":status").is_none() => {
                Some(PropertyValue::Str("000".to_string()))
            }
            ["source", "address"] => facts
                .stream
                .map(|stream| PropertyValue::Str(stream.info.source_address.to_string())),
            ["ngx", var] => nginx_variable(var, facts).map(PropertyValue::Str),
            _ => return HostProperty::Common,
        };
        value.map_or(HostProperty::NotFound, HostProperty::Value)
    }

    /// ngx_wasm_module's root context id is its filter's id, a CRC-32 of the filter's module
    /// name, its configuration and the decimal address of the filter's entry in the chain's
    /// plan (`get_filter_id`, src/common/proxy_wasm/ngx_proxy_wasm.c:117-133, set at :154,
    /// used as the root's id at :1161-1162; the address, src/wasm/ngx_wasm_ops.c:97-99, tells
    /// apart two entries of one filter with one configuration). HTTP contexts take
    /// 1, 2, … from a counter of the worker process (`next_id`, ngx_proxy_wasm.c:48, :289),
    /// which roots do not use (KONG-OBS: "HTTP contexts 1, 2, … per worker; the root context id
    /// is a crc32 value"). host-sim cannot know the address, and stands in the root's position
    /// among the VM's roots for it: the id has Kong's shape and stays the same for the same
    /// filter, configuration and position, but is not the number a given nginx process
    /// computes. The counter is host-sim's per VM, where nginx's is shared by every filter chain
    /// of the worker.
    fn root_context_id(&self, filter_name: &str, configuration: &[u8], position: usize) -> Option<u32> {
        Some(filter_id(filter_name, configuration, position))
    }

    /// Kong prefixes custom metrics with `pw.<filter name>.` (KONG-DOC metrics).
    fn metric_name(&self, plugin_name: &str, name: &str) -> String {
        format!("pw.{plugin_name}.{name}")
    }

    /// ngx_wasm_module adds the delta (`counter += n`, ngx_wa_metrics.c).
    fn counters_may_decrease(&self) -> bool {
        true
    }

    /// See the free function `metric_trap` below.
    fn metric_trap(&self, op: MetricOp, id: u32, kind: Option<MetricType>) -> Option<String> {
        metric_trap(op, id, kind)
    }
}

/// The properties ngx_wasm_module's `pw2ngx` table (src/common/proxy_wasm/
/// ngx_proxy_wasm_properties.c, the line of each row) binds to its `nyi` handler: not yet
/// implemented.
const KONG_NYI_PROPERTIES: &[&str] = &[
    "response.grpc_status",                      // :517
    "response.trailers",                         // :520
    "upstream.tls_version",                      // :541
    "upstream.subject_local_certificate",        // :544
    "upstream.subject_peer_certificate",         // :547
    "upstream.dns_san_local_certificate",        // :550
    "upstream.dns_san_peer_certificate",         // :553
    "upstream.uri_san_local_certificate",        // :556
    "upstream.uri_san_peer_certificate",         // :559
    "upstream.sha256_peer_certificate_digest",   // :562
    "upstream.local_address",                    // :565
    "upstream.transport_failure_reason",         // :568
    "connection.subject_peer_certificate",       // :595
    "connection.dns_san_local_certificate",      // :598
    "connection.dns_san_peer_certificate",       // :601
    "connection.uri_san_local_certificate",      // :604
    "connection.uri_san_peer_certificate",       // :607
    "connection.sha256_peer_certificate_digest", // :610
    "plugin_vm_id",                              // :632
];

/// The properties `pw2ngx` binds to its `not_supported` handler (Envoy attributes nginx has no
/// counterpart for).
const KONG_NOT_SUPPORTED_PROPERTIES: &[&str] = &[
    "response.code_details",          // :523
    "response.flags",                 // :526
    "connection.termination_details", // :613
    "node",                           // :635
    "cluster_name",                   // :638
    "cluster_metadata",               // :641
    "listener_direction",             // :644
    "listener_metadata",              // :647
    "route_name",                     // :650
    "route_metadata",                 // :653
    "upstream_host_metadata",         // :656
];

/// What ngx_wasm_module answers and logs for a property it knows but does not implement: its
/// `nyi` handler logs `NYI - "<path>" property` at `NGX_LOG_WASM_NYI`, which is
/// `NGX_LOG_ALERT` (src/wasm/ngx_wasm.h:13; proxy-wasm's highest level, critical, stands for
/// nginx's alert here), `not_supported` logs `"<path>" property not supported` at
/// `NGX_LOG_ERR`; both decline, which the host function answers with NOT_FOUND
/// (ngx_proxy_wasm_properties.c:70-85). The path is written with dots.
fn kong_unimplemented_property(path: &[&str]) -> Option<HostProperty> {
    // Compared segment by segment: a property read that is none of them (nearly all) joins
    // nothing.
    let named = |list: &[&'static str]| {
        list.iter()
            .copied()
            .find(|dotted| dotted.split('.').eq(path.iter().copied()))
    };
    if let Some(dotted) = named(KONG_NYI_PROPERTIES) {
        let line = format!("NYI - \"{dotted}\" property");
        return Some(HostProperty::Unsupported(LogLevel::Critical, line));
    }
    if let Some(dotted) = named(KONG_NOT_SUPPORTED_PROPERTIES) {
        let line = format!("\"{dotted}\" property not supported");
        return Some(HostProperty::Unsupported(LogLevel::Error, line));
    }
    None
}

/// Kong's error page for `status` with `message` (kong/error_handlers.lua:50-90): the template
/// of the media type the request's `Accept` names first, else its `Content-Type`, else Kong's
/// `error_default_type` `text/plain` (kong/tools/http.lua `get_response_type`, whose q-values and
/// wildcards this reading leaves out: a type it does not name JSON, HTML, XML or text gets
/// Kong's default JSON), each with the request id.
fn kong_error_page(status: u32, message: &str, request_headers: &[(String, String)], request_id: &str) -> HostReply {
    let header = |name: &str| crate::abi::find_header(request_headers, name).map(|v| v.to_ascii_lowercase());
    let wanted = header("accept")
        .or_else(|| header("content-type"))
        .unwrap_or_else(|| "text/plain".to_string());
    let first = wanted.split(',').next().unwrap_or_default();
    let media = first.split(';').next().unwrap_or_default().trim();
    let (content_type, body) = if media.contains("html") {
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n    <title>Error</title>\n  </head>\n  <body>\n    <h1>Error</h1>\n    <p>{message}.</p>\n    <p>request_id: {request_id}</p>\n  </body>\n</html>\n"
            ),
        )
    } else if media.contains("xml") {
        (
            "application/xml; charset=utf-8",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error>\n  <message>{message}</message>\n  <requestid>{request_id}</requestid>\n</error>\n"
            ),
        )
    } else if media.starts_with("text/") || media == "text" {
        (
            "text/plain; charset=utf-8",
            format!("{message}\nrequest_id: {request_id}\n"),
        )
    } else {
        (
            "application/json; charset=utf-8",
            format!("{{\n  \"message\":\"{message}\",\n  \"request_id\":\"{request_id}\"\n}}"),
        )
    };
    HostReply {
        status,
        headers: vec![("content-type".to_string(), content_type.to_string())],
        body: body.into_bytes(),
    }
}

/// ngx_wasm_module's filter id (`get_filter_id`, ngx_proxy_wasm.c:117-133): nginx's CRC-32
/// (src/core/ngx_crc32.h: the IEEE polynomial, reflected, `ngx_crc32_init` 0xffffffff and
/// `ngx_crc32_final` inverting) over the name, the configuration and the decimal `data`
/// (host-sim's stand-in: the root's position, see [`Kong::root_context_id`]).
fn filter_id(name: &str, configuration: &[u8], data: usize) -> u32 {
    let data = data.to_string();
    let mut crc = 0xffff_ffffu32;
    for &byte in name.as_bytes().iter().chain(configuration).chain(data.as_bytes()) {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A response's headers as ngx_wasm_module's map presents them to `on_response_headers`
/// ([`HostBehaviour::upstream_response_headers`] has the sources): `:status`, the shims nginx
/// keeps outside its header list (Content-Type, Content-Length, then Connection with the value
/// nginx's keep-alive flag gives, `connection`), the other headers in their order without the
/// hop-by-hop ones, and nginx's own Server and Date when the response has none.
fn nginx_response_map(
    headers: Vec<(String, String)>,
    now: std::time::SystemTime,
    connection: &str,
) -> Vec<(String, String)> {
    const SHIMS: [&str; 2] = ["content-type", "content-length"];
    const HOP_BY_HOP: [&str; 3] = ["connection", "keep-alive", "transfer-encoding"];
    let has = |name: &str| crate::abi::find_header(&headers, name).is_some();
    let (server, date) = (has("server"), has("date"));
    let mut map: Vec<(String, String)> = Vec::with_capacity(headers.len() + 3);
    map.extend(headers.iter().filter(|(k, _)| k == ":status").cloned());
    for shim in SHIMS {
        if let Some(value) = crate::abi::find_header(&headers, shim) {
            map.push((shim.to_string(), value.clone()));
        }
    }
    map.push(("connection".to_string(), connection.to_string()));
    map.extend(headers.into_iter().filter(|(k, _)| {
        !k.starts_with(':')
            && !SHIMS.iter().any(|s| k.eq_ignore_ascii_case(s))
            && !HOP_BY_HOP.iter().any(|h| k.eq_ignore_ascii_case(h))
    }));
    if !server {
        map.push(("server".to_string(), KONG_NGINX_SERVER.to_string()));
    }
    if !date {
        map.push(("date".to_string(), httpdate::fmt_http_date(now)));
    }
    map
}

/// The body ngx_wasm_module sends for a local reply: the filter's, with a line feed appended
/// to a non-empty one (src/http/ngx_http_wasm_local_response.c:132-141; the same for a reply
/// that replaces a response's body from on_response_headers).
fn local_reply_body(local: &LocalResponse) -> Vec<u8> {
    let mut body = local.body.clone();
    if !body.is_empty() {
        body.push(b'\n');
    }
    body
}

/// nginx's `$hostname`: the machine's host name (Linux: /proc/sys/kernel/hostname, as
/// gethostname(2) reports it), `localhost` where it cannot be read.
fn machine_hostname() -> &'static str {
    static HOSTNAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOSTNAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    })
}

/// An nginx variable of the effective stream (`ngx.<name>` properties).
fn nginx_variable(name: &str, facts: &PropertyFacts<'_>) -> Option<String> {
    if name == "hostname" {
        return Some(machine_hostname().to_string());
    }
    let stream = facts.stream?;
    let (stream_id, info) = (stream.id, stream.info);
    let path = facts.request_header(":path").unwrap_or_default();
    Some(match name {
        "request_uri" => path,
        "uri" => path.split('?').next().unwrap_or_default().to_string(),
        "args" => path.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default(),
        "request_method" => facts.request_header(":method")?,
        "scheme" => facts.request_header(":scheme").unwrap_or_else(|| "http".into()),
        // nginx's `$host`: the Host header's name, lower-case, without its port, else the
        // server name (nginx.org/en/docs/http/ngx_http_core_module.html#var_host).
        "host" => facts
            .request_header("host")
            .map(|host| match host.rsplit_once(':') {
                Some((name, _)) if !host.ends_with(']') => name.to_ascii_lowercase(),
                _ => host.to_ascii_lowercase(),
            })
            .unwrap_or_else(|| "kong".to_string()),
        "remote_addr" => info.source_address.to_string(),
        "remote_port" => info.source_port.to_string(),
        "server_addr" => info.destination_address.to_string(),
        "server_port" => info.destination_port.to_string(),
        "server_protocol" => info.protocol.to_string(),
        "content_length" => facts.request_header("content-length")?,
        "content_type" => facts.request_header("content-type")?,
        // nginx's `$request_id`: "unique request identifier generated from 16 random bytes,
        // in hexadecimal" (nginx.org/en/docs/http/ngx_http_core_module.html#var_request_id),
        // whatever the request's headers say. The stream's id when it has one, else 32 hex
        // digits of its context id.
        "request_id" if info.request_id.is_empty() => format!("{stream_id:032x}"),
        "request_id" => info.request_id.to_string(),
        other => {
            let name = other.strip_prefix("http_")?.replace('_', "-");
            facts.request_header(&name)?
        }
    })
}

/// ngx_wasm_module traps where Envoy answers with a status (ngx_proxy_wasm_host.c,
/// `ngx_proxy_wasm_hfuncs_increment_metric`, `_record_metric`, `_get_metric`; ngx_wa_metrics.c):
/// an unknown id, an increment of anything but a counter, a record into a counter, a read of a
/// histogram.
fn metric_trap(op: MetricOp, id: u32, kind: Option<MetricType>) -> Option<String> {
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
