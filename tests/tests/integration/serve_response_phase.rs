//! `host-sim serve`'s response phase on the real abi-probe `.wasm`, in both profiles: the
//! filter's own local reply passes through its `on_http_response_headers/body` (shaped as each
//! host shapes it: `HostBehaviour::local_reply_response`), and the client gets the `content-length`
//! the filter left (`HostBehaviour::keeps_filter_content_length`), so a body rewritten without
//! removing it has the effect it has behind the real host. tests/e2e/test_response_phase.py
//! compares the Envoy profile with real Envoy 1.40 on the same cases.

use host_sim::serve::config::{Deployment, Fallback, Route};
use host_sim::serve::{start, RunningGateway, ServeOptions};
use host_sim::Profile;
use kafka_upstream_tests::{engine, wasm_path};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UPSTREAM_BODY: &[u8] = b"hello world\n";
/// How long the client waits for more bytes before it records what it has.
const READ_WAIT: Duration = Duration::from_millis(1500);

/// An upstream that answers every request on a connection with `UPSTREAM_BODY` and its length
/// (bounded: 64 connections, 16 requests each).
async fn start_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..64 {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                for _ in 0..16 {
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        if got.len() > 1 << 16 {
                            return;
                        }
                    }
                    got.clear();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                        UPSTREAM_BODY.len()
                    );
                    if conn.write_all(head.as_bytes()).await.is_err() || conn.write_all(UPSTREAM_BODY).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// abi-probe behind a one-worker gateway whose route proxies to `upstream`.
async fn start_gateway(profile: Profile, upstream: SocketAddr) -> RunningGateway {
    let route = Route {
        plugin_name: "probe".into(),
        fallback: Fallback::Upstream("backend".into()),
        ..Route::new("probe", wasm_path("abi_probe"), Vec::new())
    };
    let deployment = Deployment {
        upstreams: BTreeMap::from([("backend".to_string(), upstream)]),
        ..Deployment::new(profile, vec![route])
    };
    start(ServeOptions {
        edge: host_sim::limits::EdgeLimits {
            max_request_bytes: 1 << 20,
            ..host_sim::limits::EdgeLimits::default()
        },
        ..ServeOptions::new(deployment, engine().clone())
    })
    .await
    .expect("gateway starts")
}

/// One response as a client reads it off a kept-alive connection.
#[derive(Debug, PartialEq, Eq)]
struct Wire {
    status: u16,
    /// The status line's reason phrase.
    reason: String,
    headers: Vec<(String, String)>,
    /// The body as the framing delimits it (what the client takes as the response).
    body: Vec<u8>,
    /// The declared length was not reached and the connection stayed open.
    waiting: bool,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

async fn exchange(gateway: SocketAddr, headers: &[(&str, &str)]) -> Wire {
    let mut request = String::from("GET /probe HTTP/1.1\r\nhost: probe\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let mut conn = tokio::net::TcpStream::connect(gateway).await.expect("connect");
    conn.write_all(request.as_bytes()).await.expect("write request");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut closed = false;
    loop {
        match tokio::time::timeout(READ_WAIT, conn.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
        assert!(got.len() < 1 << 20, "answer too large");
        if complete(&got) {
            break;
        }
    }
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&got)));
    let head = String::from_utf8_lossy(&got[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line[9..12].parse().expect("status code");
    let reason = status_line.get(13..).unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &got[end + 4..];
    let wire = |body: Vec<u8>, short: bool| Wire {
        status,
        reason: reason.clone(),
        headers: headers.clone(),
        body,
        waiting: short && !closed,
    };
    if let Some(length) = headers.iter().find(|(k, _)| k == "content-length") {
        let length: usize = length.1.parse().expect("numeric content-length");
        let body = rest[..rest.len().min(length)].to_vec();
        let short = body.len() < length;
        return wire(body, short);
    }
    assert!(
        headers.iter().any(|(k, v)| k == "transfer-encoding" && v == "chunked"),
        "neither a length nor chunked: {head}"
    );
    let (body, short) = dechunk(rest);
    wire(body, short)
}

/// Whether `got` holds a whole response (head and the body its framing announces).
fn complete(got: &[u8]) -> bool {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let rest = &got[end + 4..];
    match head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(length) => rest.len() >= length,
        None => !dechunk(rest).1,
    }
}

/// The body of a chunked message, and whether it is incomplete.
fn dechunk(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return (body, true);
        };
        let size_text = String::from_utf8_lossy(&data[..line_end]).to_string();
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else {
            return (body, true);
        };
        data = &data[line_end + 2..];
        if size == 0 {
            return (body, !data.starts_with(b"\r\n"));
        }
        if data.len() < size + 2 {
            return (body, true);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// What each profile's host appends to a local reply body (ngx_wasm_module: a line feed).
fn local_body(profile: Profile, body: &str) -> Vec<u8> {
    match profile {
        Profile::Envoy => body.as_bytes().to_vec(),
        Profile::Kong => format!("{body}\n").into_bytes(),
    }
}

/// What the client gets around a local reply with details, and around a proxied response:
/// nginx writes the details as the reason phrase (ngx_http_wasm_local_response.c:67-85) and its
/// `Connection: keep-alive`; ngx_wasm_module writes nginx's `Server: nginx` into both before the
/// filter sees them (ngx_http_wasm_util.c:149-200), so Kong, which names itself in `Server` only
/// where the response has none (kong/runloop/handler.lua:1601-1606), leaves it. Envoy writes the
/// standard phrase and `server: envoy` on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_writes_its_own_status_line_and_edge_headers() {
    for (profile, reason, server, connection) in [
        (Profile::Kong, "probe_denied", "nginx", Some("keep-alive")),
        (Profile::Envoy, "Forbidden", "envoy", None),
    ] {
        let gateway = start_gateway(profile, start_upstream().await).await;
        let local = exchange(gateway.local_addr, &[("x-probe", "local_raw")]).await;
        assert_eq!(
            (local.status, local.reason.as_str()),
            (403, reason),
            "{profile}: {local:?}"
        );
        assert_eq!(local.header("server"), Some(server), "{profile}");
        assert_eq!(local.header("connection"), connection, "{profile}");
        assert!(local.header("date").is_some(), "{profile}");
        let proxied = exchange(gateway.local_addr, &[("x-probe", "response_body")]).await;
        assert_eq!((proxied.status, proxied.reason.as_str()), (200, "OK"), "{profile}");
        assert_eq!(
            proxied.header("server"),
            Some(server),
            "{profile}: the upstream sent none"
        );
        assert_eq!(proxied.header("connection"), connection, "{profile}");
        gateway.shutdown().await;
    }
}

/// Kong's Lua header filter, which runs after ngx_wasm_module's (the filter never sees its
/// headers), writes its latencies, `Via` and request id on what it proxied and on the filter's
/// own reply (`ctx.KONG_PROXIED` is set before the filter runs), the response latency on what
/// its router answered alone (kong/runloop/handler.lua:1567-1635); Envoy writes none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_writes_its_latency_via_and_request_id_headers() {
    let is_millis = |v: Option<&str>| v.is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
    let is_id = |v: Option<&str>| v.is_some_and(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    let kong = start_gateway(Profile::Kong, start_upstream().await).await;
    let mut ids = Vec::new();
    for probe in [&[("x-probe", "local_raw")][..], &[("x-probe", "response_body")][..]] {
        let wire = exchange(kong.local_addr, probe).await;
        assert!(is_millis(wire.header("x-kong-upstream-latency")), "{probe:?}: {wire:?}");
        assert!(is_millis(wire.header("x-kong-proxy-latency")), "{probe:?}: {wire:?}");
        assert_eq!(wire.header("via"), Some("1.1 kong/3.10.0"), "{probe:?}");
        assert_eq!(wire.header("x-kong-response-latency"), None, "{probe:?}");
        assert!(is_id(wire.header("x-kong-request-id")), "{probe:?}: {wire:?}");
        ids.push(wire.header("x-kong-request-id").map(String::from));
    }
    assert_ne!(ids[0], ids[1], "each request has its own id");
    kong.shutdown().await;
    // A route without an upstream: Kong's router answers on its own.
    let route = Route {
        plugin_name: "probe".into(),
        fallback: Fallback::NotFound,
        ..Route::new("probe", wasm_path("abi_probe"), Vec::new())
    };
    let router = start(ServeOptions::new(
        Deployment::new(Profile::Kong, vec![route]),
        engine().clone(),
    ))
    .await
    .expect("gateway starts");
    let wire = exchange(router.local_addr, &[("x-probe", "nothing")]).await;
    assert_eq!(wire.status, 404, "{wire:?}");
    assert!(is_millis(wire.header("x-kong-response-latency")), "{wire:?}");
    assert_eq!(wire.header("x-kong-proxy-latency"), None);
    assert_eq!(wire.header("via"), None);
    assert_eq!(wire.header("server"), Some("kong/3.10.0"));
    assert!(is_id(wire.header("x-kong-request-id")), "{wire:?}");
    router.shutdown().await;
    let envoy = start_gateway(Profile::Envoy, start_upstream().await).await;
    let wire = exchange(envoy.local_addr, &[("x-probe", "response_body")]).await;
    assert!(
        wire.headers
            .iter()
            .all(|(k, _)| !k.starts_with("x-kong-") && k != "via"),
        "{wire:?}"
    );
    envoy.shutdown().await;
}

/// Kong sends the upstream the request id it answers the client with in `X-Kong-Request-Id`
/// (kong/templates/nginx_kong.lua:205-207, default `headers_upstream = x-kong-request-id`);
/// Envoy's profile sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_sends_its_request_id_upstream() {
    for profile in [Profile::Kong, Profile::Envoy] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<String>();
        tokio::spawn(async move {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 1 << 16 {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = seen_tx.send(String::from_utf8_lossy(&got).to_ascii_lowercase());
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        });
        let gateway = start_gateway(profile, upstream).await;
        let wire = exchange(gateway.local_addr, &[("x-probe", "nothing")]).await;
        let head = tokio::time::timeout(Duration::from_secs(10), seen_rx)
            .await
            .expect("the upstream got the request")
            .expect("request head");
        let sent = head
            .lines()
            .find_map(|l| l.strip_prefix("x-kong-request-id:"))
            .map(|v| v.trim().to_string());
        match profile {
            Profile::Kong => {
                let id = wire.header("x-kong-request-id").expect("client's id");
                assert_eq!(sent.as_deref(), Some(id), "{head}");
            }
            Profile::Envoy => assert_eq!(sent, None, "{head}"),
        }
        gateway.shutdown().await;
    }
}

/// The upstream's response as the filter sees it behind Kong: `:status`, ngx_wasm_module's shim
/// headers (Content-Type, Content-Length, Connection), the upstream's other headers, then the
/// Server (`nginx` under Kong's `server_tokens off`) and Date it writes before the callback
/// (ngx_proxy_wasm_maps.c:199-227, ngx_http_wasm_headers_shims.c:19-40,
/// ngx_http_wasm_util.c:149-200); what the filter leaves goes out, and Kong's Lua header filter,
/// finding a Server, leaves it. Envoy hands the upstream's headers over as they came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_sees_kongs_response_map_order() {
    for profile in [Profile::Kong, Profile::Envoy] {
        let gateway = start_gateway(profile, start_upstream().await).await;
        let wire = exchange(gateway.local_addr, &[("x-show-response-names", "1")]).await;
        let expected = match profile {
            Profile::Kong => ":status,content-type,content-length,connection,server,date",
            Profile::Envoy => ":status,content-type,content-length,x-envoy-upstream-service-time",
        };
        assert_eq!(wire.header("x-probe-saw-names"), Some(expected), "{profile}: {wire:?}");
        if profile == Profile::Kong {
            assert_eq!(wire.header("server"), Some("nginx"), "{wire:?}");
            assert!(wire.header("date").is_some());
        }
        gateway.shutdown().await;
    }
}

/// An upstream that cannot be reached: Kong answers with its own 502 error page (its error
/// handler, kong/error_handlers.lua; text/plain without Accept, with the request id of
/// `X-Kong-Request-Id`), which the filter's response callbacks do not see (the error location
/// runs without the chain: ngx_wasm_module t/04-openresty/ffi/200-proxy_wasm_and_lua_sanity.t
/// TEST 8); Envoy's profile keeps serve's 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_gets_each_hosts_error_reply() {
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    for profile in [Profile::Kong, Profile::Envoy] {
        let gateway = start_gateway(profile, closed).await;
        let wire = exchange(gateway.local_addr, &[("x-mark-response", "1")]).await;
        assert_eq!(
            wire.header("x-probe-saw-status"),
            None,
            "{profile}: not through the filter"
        );
        match profile {
            Profile::Kong => {
                assert_eq!(wire.status, 502, "{wire:?}");
                assert_eq!(wire.header("content-type"), Some("text/plain; charset=utf-8"));
                let id = wire.header("x-kong-request-id").expect("request id");
                let body = String::from_utf8_lossy(&wire.body).to_string();
                assert_eq!(
                    body,
                    format!("An invalid response was received from the upstream server\nrequest_id: {id}\n")
                );
                assert_eq!(wire.header("via"), Some("1.1 kong/3.10.0"));
                assert_eq!(wire.header("server"), Some("kong/3.10.0"));
            }
            Profile::Envoy => assert_eq!(wire.status, 503, "{wire:?}"),
        }
        gateway.shutdown().await;
    }
}

/// The request as the filter saw it behind each host: Envoy's pseudo-header order with the
/// Host header as `:authority` (ENVOY-1.40); ngx_wasm_module's order with its server name and
/// port (`kong:<port>`, ngx_proxy_wasm_maps.c:50-68, :620-668; Kong's `server_name kong`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_sees_each_hosts_pseudo_headers() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let gateway = start_gateway(profile, start_upstream().await).await;
        let port = gateway.local_addr.port();
        let wire = exchange(gateway.local_addr, &[("x-probe", "local"), ("x-mark-response", "1")]).await;
        let (order, authority) = match profile {
            Profile::Envoy => (":authority,:path,:method,:scheme", "probe".to_string()),
            Profile::Kong => (":path,:method,:scheme,:authority", format!("kong:{port}")),
        };
        assert_eq!(wire.header("x-probe-saw-pseudo"), Some(order), "{profile}");
        assert_eq!(
            wire.header("x-probe-saw-authority"),
            Some(authority.as_str()),
            "{profile}"
        );
        gateway.shutdown().await;
    }
}

async fn local_reply_reaches_the_response_callbacks(profile: Profile) {
    let gateway = start_gateway(profile, start_upstream().await).await;
    let wire = exchange(gateway.local_addr, &[("x-probe", "local"), ("x-mark-response", "1")]).await;
    assert_eq!(wire.status, 418, "{wire:?}");
    assert_eq!(
        wire.header("x-probe-saw-status"),
        Some("418"),
        "on_http_response_headers ran for the local reply: {wire:?}"
    );
    let body = local_body(profile, "teapot");
    assert_eq!(wire.body, body);
    assert_eq!(wire.header("content-length"), Some(body.len().to_string().as_str()));
    assert_eq!(wire.header("content-type"), Some("text/plain"));
    assert!(!wire.waiting);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_passes_a_local_reply_through_the_response_callbacks() {
    local_reply_reaches_the_response_callbacks(Profile::Envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_passes_a_local_reply_through_the_response_callbacks() {
    local_reply_reaches_the_response_callbacks(Profile::Kong).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_a_local_reply_body_rewritten_keeps_its_old_length() {
    let gateway = start_gateway(Profile::Envoy, start_upstream().await).await;
    let addr = gateway.local_addr;
    // "teapot" (6) replaced by "replaced" (8): the client reads 6 bytes.
    let stale = exchange(addr, &[("x-probe", "local"), ("x-body-op", "replace")]).await;
    assert_eq!((stale.status, stale.header("content-length")), (418, Some("6")));
    assert_eq!(stale.body, b"replac");
    // Without the header the reply goes out chunked, whole.
    let fixed = exchange(
        addr,
        &[
            ("x-probe", "local"),
            ("x-body-op", "replace"),
            ("x-remove-content-length", "1"),
        ],
    )
    .await;
    assert_eq!(fixed.header("content-length"), None);
    assert_eq!(fixed.header("transfer-encoding"), Some("chunked"));
    assert_eq!(fixed.body, b"replaced");
    gateway.shutdown().await;
}

async fn upstream_body_rewrites(profile: Profile) {
    let gateway = start_gateway(profile, start_upstream().await).await;
    let addr = gateway.local_addr;
    let untouched = exchange(addr, &[("x-probe", "response_body")]).await;
    assert_eq!(untouched.status, 200);
    assert_eq!(untouched.body, UPSTREAM_BODY);
    assert_eq!(
        untouched.header("content-length"),
        Some("12"),
        "the upstream's length is kept"
    );

    // Shrunk to "replaced" (8) under the upstream's content-length 12: the client waits for
    // the 4 bytes that never come.
    let shrunk = &[
        ("x-probe", "response_body"),
        ("x-body-op", "replace"),
        ("x-body-pause", "until_eos"),
    ];
    let stale = exchange(addr, shrunk).await;
    assert_eq!(stale.header("content-length"), Some("12"));
    assert_eq!(stale.body, b"replaced");
    assert!(stale.waiting, "{stale:?}");

    let mut removed = shrunk.to_vec();
    removed.push(("x-remove-content-length", "1"));
    let fixed = exchange(addr, &removed).await;
    assert_eq!(fixed.header("transfer-encoding"), Some("chunked"));
    assert_eq!(fixed.body, b"replaced");
    assert!(!fixed.waiting);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_an_upstream_body_rewritten_keeps_the_stale_length() {
    upstream_body_rewrites(Profile::Envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_an_upstream_body_rewritten_keeps_the_stale_length() {
    upstream_body_rewrites(Profile::Kong).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_a_grown_body_is_cut_at_the_stale_length() {
    let gateway = start_gateway(Profile::Envoy, start_upstream().await).await;
    let grown = exchange(
        gateway.local_addr,
        &[
            ("x-probe", "response_body"),
            ("x-body-op", "append"),
            ("x-body-pause", "until_eos"),
        ],
    )
    .await;
    assert_eq!(grown.header("content-length"), Some("12"));
    assert_eq!(grown.body, UPSTREAM_BODY, "the client reads the old length only");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_body_takes_the_hosts_number_of_body_callbacks() {
    let upstream = start_upstream().await;
    for (profile, appended) in [(Profile::Envoy, "-post-post"), (Profile::Kong, "-post")] {
        let gateway = start_gateway(profile, upstream).await;
        // The probe appends in every body callback: Envoy makes two (the data, then an empty
        // one ending the stream), Kong one.
        let wire = exchange(
            gateway.local_addr,
            &[
                ("x-probe", "response_body"),
                ("x-body-op", "append"),
                ("x-remove-content-length", "1"),
            ],
        )
        .await;
        let mut expected = UPSTREAM_BODY.to_vec();
        expected.extend_from_slice(appended.as_bytes());
        assert_eq!(wire.body, expected, "{profile}");
        gateway.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_the_local_replys_response_callbacks() {
    let upstream = start_upstream().await;
    for profile in [Profile::Envoy, Profile::Kong] {
        let gateway = start_gateway(profile, upstream).await;
        let wire = exchange(
            gateway.local_addr,
            &[("x-probe", "local"), ("x-trap-in", "response_headers")],
        )
        .await;
        match profile {
            // Envoy fails the stream: its 503 replaces the reply.
            Profile::Envoy => assert_eq!((wire.status, wire.body.as_slice()), (503, &b""[..]), "{wire:?}"),
            // ngx_wasm_module fails open: the reply goes out as it was.
            Profile::Kong => assert_eq!((wire.status, wire.body.as_slice()), (418, &b"teapot\n"[..]), "{wire:?}"),
        }
        assert!(!wire.waiting, "{profile}: {wire:?}");
        gateway.shutdown().await;
    }
}

/// A trap in the response callbacks of a proxied response: Envoy fails the stream with 503 and
/// keeps the VM failed (ENVOY-1.40, e2e test_lifecycle_differential.py); ngx_wasm_module fails
/// open, the upstream's response goes out, and the next request gets a fresh instance (KONG-OBS,
/// profile `response_trap_fails_open`, `AfterTrap::FreshInstance`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_an_upstream_responses_callbacks() {
    let upstream = start_upstream().await;
    for profile in [Profile::Envoy, Profile::Kong] {
        let gateway = start_gateway(profile, upstream).await;
        let addr = gateway.local_addr;
        let trapped = exchange(addr, &[("x-probe", "response_body"), ("x-trap-in", "response_headers")]).await;
        let next = exchange(addr, &[("x-probe", "response_body")]).await;
        match profile {
            Profile::Envoy => {
                assert_eq!(trapped.status, 503, "{trapped:?}");
                assert_eq!(next.status, 503, "the VM stays failed: {next:?}");
            }
            Profile::Kong => {
                assert_eq!(
                    (trapped.status, trapped.body.as_slice()),
                    (200, UPSTREAM_BODY),
                    "{trapped:?}"
                );
                assert_eq!((next.status, next.body.as_slice()), (200, UPSTREAM_BODY), "{next:?}");
            }
        }
        assert!(!trapped.waiting, "{profile}: {trapped:?}");
        gateway.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_sent_from_the_response_headers_callback() {
    let upstream = start_upstream().await;
    for profile in [Profile::Envoy, Profile::Kong] {
        let gateway = start_gateway(profile, upstream).await;
        let addr = gateway.local_addr;
        let over_local = exchange(addr, &[("x-probe", "local"), ("x-local-in-response-headers", "1")]).await;
        match profile {
            // Envoy sends the new reply straight to the client, without the filter.
            Profile::Envoy => {
                assert_eq!(
                    (over_local.status, over_local.body.as_slice()),
                    (502, &b"replaced reply"[..])
                );
                assert_eq!(over_local.header("x-probe"), Some("from-response-headers"));
                assert_eq!(over_local.header("content-type"), Some("text/plain"));
            }
            // Kong: the second reply traps ("local response already stashed"); the response
            // phase fails open and the first reply goes out.
            Profile::Kong => assert_eq!((over_local.status, over_local.body.as_slice()), (418, &b"teapot\n"[..])),
        }
        gateway.shutdown().await;
    }
    // Over an upstream response too (Envoy).
    let gateway = start_gateway(Profile::Envoy, upstream).await;
    let over_upstream = exchange(
        gateway.local_addr,
        &[("x-probe", "response_body"), ("x-local-in-response-headers", "1")],
    )
    .await;
    assert_eq!(
        (over_upstream.status, over_upstream.body.as_slice()),
        (502, &b"replaced reply"[..])
    );
    gateway.shutdown().await;
    // Kong keeps the upstream's response: the reply's status (no details: the standard status
    // line), its body with a line feed in place of the upstream's, under the upstream's headers
    // with their stale Content-Length (12: "hello world\n"), so the client reads 12 of the 15
    // bytes; the reply's own headers are dropped (ngx_proxy_wasm_host.c:1087-1111).
    let gateway = start_gateway(Profile::Kong, upstream).await;
    let over_upstream = exchange(
        gateway.local_addr,
        &[("x-probe", "response_body"), ("x-local-in-response-headers", "1")],
    )
    .await;
    assert_eq!(
        (over_upstream.status, over_upstream.reason.as_str()),
        (502, "Bad Gateway"),
        "{over_upstream:?}"
    );
    assert_eq!(over_upstream.header("content-length"), Some("12"));
    assert_eq!(over_upstream.body, b"replaced rep");
    assert_eq!(
        over_upstream.header("x-probe"),
        None,
        "the reply's headers are not used"
    );
    assert_eq!(over_upstream.header("content-type"), Some("text/plain"));
    gateway.shutdown().await;
}

// ---- The VM side: a local reply opened for the response callbacks ---------------------------

fn probe_stream(profile: Profile, extra: &[(&str, &str)]) -> (host_sim::Vm, u32) {
    let mut vm = kafka_upstream_tests::start("abi_probe", profile);
    let root = vm.create_root_context("", b"").expect("root").id;
    let stream = vm.create_http_stream(root).expect("stream");
    let headers = kafka_upstream_tests::request_headers("GET", "/p", "probe", extra);
    vm.send_request_headers(stream, &headers, true)
        .expect("request headers");
    (vm, stream)
}

#[test]
fn a_local_reply_opens_the_response_direction_once() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let (mut vm, stream) = probe_stream(profile, &[("x-probe", "local"), ("x-mark-response", "1")]);
        let local = vm.local_response(stream).cloned().expect("the probe answered");
        // Before opening, the response direction is closed: nothing reaches the filter.
        assert_eq!(
            vm.send_response_headers(stream, &[(":status", "418")], true).unwrap(),
            None
        );
        assert!(vm.open_response_for_local_reply(stream), "{profile}");
        assert!(!vm.open_response_for_local_reply(stream), "{profile}: only once");
        let (headers, body) = profile.local_reply_response(&local, std::time::SystemTime::now());
        vm.send_response_headers(stream, &headers, false)
            .expect("response headers");
        vm.send_response_body(stream, &body, true).expect("response body");
        let seen = vm.response_headers(stream).expect("response headers kept");
        assert_eq!(
            kafka_upstream_tests::header(&seen, "x-probe-saw-status"),
            Some("418"),
            "{profile}"
        );
        assert_eq!(vm.forwarded_response_body(stream), Some(body.as_slice()), "{profile}");
        // The request direction stays ended.
        assert_eq!(vm.send_request_body(stream, b"late", true).unwrap(), None, "{profile}");
    }
}

#[test]
fn the_hosts_answer_to_a_trap_is_not_passed_through_the_filter() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let (mut vm, stream) = probe_stream(profile, &[("x-trap-in", "request_headers")]);
        let reply = vm.local_response(stream).cloned().expect("the host answered the trap");
        assert_eq!(reply.status, profile.fail_closed_status());
        assert!(!vm.open_response_for_local_reply(stream), "{profile}");
    }
}
