//! `host-sim serve` end to end on loopback: real HTTP requests through the real
//! `kafka_upstream.wasm` into the embedded REST proxy, records read back; and a hot reload of
//! the module under load without a failed request.

use crate::serve_common::{in_memory_rest_proxy, in_memory_rest_proxy_with};
use host_sim::limits::EdgeLimits;
use host_sim::serve::config::{Deployment, Route};
use host_sim::serve::upstream::{Client, UpstreamRequest, UpstreamResponse};
use host_sim::serve::{start, RunningGateway, ServeOptions};
use host_sim::Profile;
use kafka_upstream_tests::{engine, wasm_path, with_custom_section};
use rest_proxy::{Flavor, RestProxy, RestProxyConfig};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

async fn start_gateway(
    profile: Profile,
    filter: &Path,
    config: Value,
    rest: SocketAddr,
    reload: Option<Duration>,
) -> RunningGateway {
    let mut upstreams = BTreeMap::new();
    if profile == Profile::Envoy {
        upstreams.insert("kafka_rest".to_string(), rest);
        // The embedded REST proxy serves the Schema Registry API on the same listener.
        upstreams.insert("schema_registry".to_string(), rest);
    }
    let route = Route {
        plugin_name: "kafka_upstream".into(),
        ..Route::new("kafka", filter.to_path_buf(), config.to_string().into_bytes())
    };
    let deployment = Deployment {
        upstreams,
        ..Deployment::new(profile, vec![route])
    };
    start(ServeOptions {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        workers: 2,
        edge: EdgeLimits {
            max_request_bytes: 8 << 20,
            ..EdgeLimits::default()
        },
        reload_poll: reload,
        ..ServeOptions::new(deployment, engine().clone())
    })
    .await
    .expect("gateway starts")
}

/// Sends one request to the gateway (`:authority` gateway.test) and returns its answer.
pub(crate) async fn send(
    gateway: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> UpstreamResponse {
    let mut all = vec![
        (":method".to_string(), method.to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "gateway.test".to_string()),
    ];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Client::default()
        .send(
            &gateway.to_string(),
            UpstreamRequest::from_call_headers(&all, body.to_vec()),
        )
        .await
        .expect("gateway answers")
}

fn body_json(resp: &UpstreamResponse) -> Value {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&resp.body)))
}

async fn messages(proxy: &RestProxy, topic: &str) -> Vec<Value> {
    let records = proxy.read_records(topic, None, 0, 1000).await.unwrap_or_default();
    records
        .iter()
        .map(|r| {
            serde_json::from_slice(r.value.as_deref().expect("record has a value")).expect("value is the message JSON")
        })
        .collect()
}

fn all_flags(upstream: &str) -> Value {
    json!({
        "topic": "orders",
        "rest_proxy": {"upstream": upstream},
        "forward_method": true, "forward_uri": true, "forward_headers": true, "forward_body": true
    })
}

async fn requests_reach_the_rest_proxy(profile: Profile) {
    let (proxy, rest) = in_memory_rest_proxy().await;
    let upstream = match profile {
        Profile::Envoy => "kafka_rest".to_string(),
        Profile::Kong => rest.to_string(),
    };
    let gateway = start_gateway(profile, &wasm_path("kafka_upstream"), all_flags(&upstream), rest, None).await;
    let addr = gateway.local_addr;
    let sent = json!({"message": "message sent"});

    let get = send(addr, "GET", "/orders?id=7&tag=a&tag=b", &[], b"").await;
    assert_eq!((get.status, body_json(&get)), (200, sent.clone()), "GET");

    let doc = br#"{"order":42,"items":[1,2]}"#;
    let post = send(
        addr,
        "POST",
        "/orders",
        &[("content-type", "application/json"), ("content-length", "26")],
        doc,
    )
    .await;
    assert_eq!((post.status, body_json(&post)), (200, sent.clone()), "POST JSON");

    let form = b"name=ada&lang=rust&lang=c";
    let posted_form = send(
        addr,
        "POST",
        "/forms",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("content-length", "25"),
        ],
        form,
    )
    .await;
    assert_eq!(posted_form.status, 200, "form");

    let binary = [0u8, 159, 146, 150, 255];
    let posted_binary = send(
        addr,
        "PUT",
        "/blob",
        &[("content-type", "application/octet-stream"), ("content-length", "5")],
        &binary,
    )
    .await;
    assert_eq!(posted_binary.status, 200, "binary");

    let big = vec![b'x'; (1 << 20) + 1];
    let big_len = big.len().to_string();
    let oversized = send(
        addr,
        "POST",
        "/big",
        &[("content-type", "text/plain"), ("content-length", &big_len)],
        &big,
    )
    .await;
    assert_eq!(oversized.status, 413, "oversized body");

    let produced = messages(&proxy, "orders").await;
    assert_eq!(
        produced.len(),
        4,
        "one record per accepted request, none for the 413: {produced:#?}"
    );
    assert_eq!(produced[0]["method"], "GET");
    assert_eq!(produced[0]["uri"], "/orders?id=7&tag=a&tag=b");
    assert_eq!(produced[0]["uri_args"], json!({"id": "7", "tag": ["a", "b"]}));
    assert_eq!(produced[0]["headers"]["host"], "gateway.test");
    assert_eq!(produced[1]["body"], std::str::from_utf8(doc).unwrap());
    assert_eq!(produced[1]["body_args"], json!({"order": 42, "items": [1, 2]}));
    assert_eq!(produced[2]["body_args"], json!({"name": "ada", "lang": ["rust", "c"]}));
    assert_eq!(produced[3]["body_base64"], true);
    assert_eq!(produced[3]["method"], "PUT");
    // One callout per record, each handed to the transport once (`Vm::take_new_calls`); the
    // filter answered the oversized request itself (413), without a callout.
    let status = body_json(&send(gateway.admin_addr.expect("admin listener"), "GET", "/status", &[], b"").await);
    assert_eq!(
        (status["callouts"].as_u64(), status["requests"].as_u64()),
        (Some(4), Some(5)),
        "{profile}: {status}"
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_profile_gateway_produces_every_request() {
    requests_reach_the_rest_proxy(Profile::Envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_profile_gateway_produces_every_request() {
    requests_reach_the_rest_proxy(Profile::Kong).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_in_many_pieces_reaches_the_record_whole() {
    // Envoy's profile streams the pieces to the filter as they arrive, Kong's reads them whole
    // first (and within its client body buffer, 8k: a larger body is not readable there).
    for (profile, numbers, piece_len) in [(Profile::Envoy, 20_000, 7_000), (Profile::Kong, 1_000, 700)] {
        let doc = format!(
            "{{\"items\":[{}]}}",
            (0..numbers).map(|i: u32| i.to_string()).collect::<Vec<_>>().join(",")
        );
        let mut request = b"POST /orders HTTP/1.1\r\nhost: gateway.test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for piece in doc.as_bytes().chunks(piece_len) {
            request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            request.extend_from_slice(piece);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        let (proxy, rest) = in_memory_rest_proxy().await;
        let upstream = match profile {
            Profile::Envoy => "kafka_rest".to_string(),
            Profile::Kong => rest.to_string(),
        };
        let gateway = start_gateway(profile, &wasm_path("kafka_upstream"), all_flags(&upstream), rest, None).await;
        let (status, answer) = raw_exchange(gateway.local_addr, &request).await;
        assert_eq!(status, 200, "{profile}: {}", String::from_utf8_lossy(&answer));
        let produced = messages(&proxy, "orders").await;
        assert_eq!(produced.len(), 1, "{profile}");
        assert_eq!(produced[0]["body"], doc.as_str(), "{profile}");
        gateway.shutdown().await;
    }
}

/// One raw HTTP/1.1 exchange on a fresh connection: `request` as bytes, the answer's status and
/// body (the gateway answers with a Content-Length; bounded in time and size).
async fn raw_exchange(gateway: SocketAddr, request: &[u8]) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(gateway).await.expect("connect");
    conn.write_all(request).await.expect("write request");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n");
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .expect("the answer has a content-length");
            if got.len() >= end + 4 + length {
                let status = head[9..12].parse().expect("status code");
                return (status, got[end + 4..end + 4 + length].to_vec());
            }
        }
        assert!(got.len() < 1 << 20, "answer too large");
        let n = tokio::time::timeout_at(deadline, conn.read(&mut buf))
            .await
            .expect("the gateway answers in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed before a full answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_empty_post_is_answered_by_the_filter_in_both_profiles() {
    // Kong (ngx_wasm_module) calls no on_request_body for an empty chunked body: the filter
    // fails closed when the response comes back instead of letting the default route answer.
    // Envoy delivers the empty end of stream, and the filter produces an empty record.
    for profile in [Profile::Kong, Profile::Envoy] {
        let (proxy, rest) = in_memory_rest_proxy().await;
        let upstream = match profile {
            Profile::Envoy => "kafka_rest".to_string(),
            Profile::Kong => rest.to_string(),
        };
        let gateway = start_gateway(profile, &wasm_path("kafka_upstream"), all_flags(&upstream), rest, None).await;
        let request = b"POST /orders HTTP/1.1\r\nHost: gateway.test\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let (status, body) = raw_exchange(gateway.local_addr, request).await;
        let body: Value = serde_json::from_slice(&body).expect("a JSON answer from the filter");
        let produced = messages(&proxy, "orders").await;
        match profile {
            Profile::Kong => {
                assert_eq!(
                    (status, body),
                    (
                        500,
                        json!({"message": "Internal Server Error", "error": "could not read the request body"})
                    ),
                    "kong: the filter's answer, not the default route's 404"
                );
                assert!(produced.is_empty(), "kong: nothing produced: {produced:#?}");
            }
            Profile::Envoy => {
                assert_eq!((status, body), (200, json!({"message": "message sent"})), "envoy");
                assert_eq!(produced.len(), 1, "envoy: {produced:#?}");
                assert_eq!(produced[0]["body"], "", "envoy");
            }
        }
        gateway.shutdown().await;
    }
}

/// The shipped kong.yml through `serve --kong`'s own loader, its filter pointed at this test's
/// REST proxy, with the client body buffer `kong.conf.example` sets (or Kong's default).
async fn shipped_kong_gateway(rest: SocketAddr, kong_conf: bool) -> (RunningGateway, u64) {
    let root = kafka_upstream_tests::workspace_dir();
    let filters_dir = wasm_path("kafka_upstream").parent().unwrap().to_path_buf();
    let mut deployment =
        host_sim::serve::config::from_kong_file(&root.join("kong.yml"), &filters_dir).expect("kong.yml");
    let mut max_body_size = 0;
    for route in &mut deployment.routes {
        let mut config: Value = serde_json::from_slice(&route.config).expect("JSON config");
        config["rest_proxy"]["upstream"] = json!(rest.to_string());
        max_body_size = max_body_size.max(config["max_body_size"].as_u64().expect("kong.yml sets max_body_size"));
        route.config = config.to_string().into_bytes();
    }
    if kong_conf {
        deployment.client_body_buffer_bytes =
            host_sim::serve::config::kong_conf_client_body_buffer(&root.join("kong.conf.example"))
                .expect("kong.conf.example")
                .expect("kong.conf.example sets nginx_http_client_body_buffer_size");
    }
    let gateway = start(ServeOptions {
        deployment,
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: None,
        workers: 1,
        edge: EdgeLimits {
            max_request_bytes: 8 << 20,
            ..EdgeLimits::default()
        },
        reload_poll: None,
        engine: engine().clone(),
        access_log: false,
    })
    .await
    .expect("gateway starts");
    (gateway, max_body_size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_kong_files_accept_their_own_max_body_size() {
    let (proxy, rest) = in_memory_rest_proxy().await;
    let (gateway, max_body_size) = shipped_kong_gateway(rest, true).await;
    let body = vec![b'k'; max_body_size as usize];
    let length = body.len().to_string();
    let headers = [("content-type", "text/plain"), ("content-length", length.as_str())];
    let resp = send(gateway.local_addr, "POST", "/kafka", &headers, &body).await;
    assert_eq!(
        (resp.status, body_json(&resp)),
        (200, json!({"message": "message sent"})),
        "a body of max_body_size ({max_body_size} bytes) with kong.conf.example's buffer"
    );
    let produced = messages(&proxy, "kafka-upstream").await;
    assert_eq!(produced.len(), 1);
    assert_eq!(produced[0]["body"].as_str().map(str::len), Some(max_body_size as usize));
    gateway.shutdown().await;

    // Without the setting (Kong's 8k default), the same body is buffered to a file and the
    // filter answers 500 rather than producing a record without it.
    let (gateway, _) = shipped_kong_gateway(rest, false).await;
    let resp = send(gateway.local_addr, "POST", "/kafka", &headers, &body).await;
    assert_eq!(resp.status, 500, "{:?}", String::from_utf8_lossy(&resp.body));
    assert_eq!(
        messages(&proxy, "kafka-upstream").await.len(),
        1,
        "nothing more produced"
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_proxy_down_is_a_502_not_a_200() {
    let (_proxy, rest) = in_memory_rest_proxy().await;
    // A port nothing listens on: bind, note it, close it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = all_flags("kafka_rest");
    config["rest_proxy"]["timeout"] = json!(2000);
    let gateway = start_gateway(Profile::Envoy, &wasm_path("kafka_upstream"), config, dead, None).await;
    let resp = send(gateway.local_addr, "GET", "/x", &[], b"").await;
    assert_eq!(resp.status, 502);
    assert_eq!(body_json(&resp)["message"], "Bad Gateway");
    let _ = rest;
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_loses_no_request() {
    let (proxy, rest) = in_memory_rest_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let filter = dir.path().join("kafka_upstream.wasm");
    let original = std::fs::read(wasm_path("kafka_upstream")).unwrap();
    std::fs::write(&filter, &original).unwrap();
    let gateway = start_gateway(
        Profile::Envoy,
        &filter,
        all_flags("kafka_rest"),
        rest,
        Some(Duration::from_millis(50)),
    )
    .await;
    let addr = gateway.local_addr;
    let admin = gateway.admin_addr.unwrap();
    let status_sha = || async move {
        let resp = send(admin, "GET", "/status", &[], b"").await;
        body_json(&resp)["routes"][0]["sha256"].as_str().unwrap().to_string()
    };
    let before = status_sha().await;

    // Four clients, 60 requests each, while the module is swapped underneath them.
    let mut clients = Vec::new();
    for c in 0..4 {
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..60 {
                let resp = send(addr, "GET", &format!("/load?c={c}&i={i}"), &[], b"").await;
                statuses.push(resp.status);
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let changed = with_custom_section(&original, "v2");
    let staging = dir.path().join("kafka_upstream.wasm.new");
    std::fs::write(&staging, &changed).unwrap();
    std::fs::rename(&staging, &filter).unwrap();

    let mut total = 0;
    for client in clients {
        let statuses = client.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == 200),
            "a request failed during reload: {statuses:?}"
        );
        total += statuses.len();
    }
    // The watcher polls every 50 ms; give it a bounded moment to finish if the load was quick.
    let mut after = status_sha().await;
    for _ in 0..100 {
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = status_sha().await;
    }
    assert_ne!(before, after, "the admin endpoint shows the new module's sha256");
    assert_eq!(
        messages(&proxy, "orders").await.len(),
        total,
        "every acknowledged request is in the topic"
    );
    let after_reload = send(addr, "GET", "/after", &[], b"").await;
    assert_eq!(after_reload.status, 200);
    gateway.shutdown().await;
}

// ---- After a trap ---------------------------------------------------------------------------

/// A one-worker gateway (so every request meets the same VM) running the abi-probe filter,
/// whose requests trap on demand (`x-trap-in`); requests the filter lets through get 404.
async fn start_probe_gateway(profile: Profile, fail_open: bool) -> RunningGateway {
    let route = Route {
        plugin_name: "probe".into(),
        fail_open,
        ..Route::new("probe", wasm_path("abi_probe"), Vec::new())
    };
    start(ServeOptions {
        edge: EdgeLimits {
            max_request_bytes: 1 << 20,
            ..EdgeLimits::default()
        },
        ..ServeOptions::new(Deployment::new(profile, vec![route]), engine().clone())
    })
    .await
    .expect("gateway starts")
}

fn header_of<'a>(resp: &'a UpstreamResponse, name: &str) -> Option<&'a str> {
    resp.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_profile_runs_the_filter_while_the_body_is_still_arriving() {
    // Envoy runs the filter from the request headers on and hands it the body as it arrives: a
    // local reply from on_request_headers reaches a client that has sent only part of its body
    // (the rest goes unread, the connection closed).
    let gateway = start_probe_gateway(Profile::Envoy, false).await;
    let partial = b"POST / HTTP/1.1\r\nhost: a\r\nx-probe: local\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
    let (status, body) = raw_exchange(gateway.local_addr, partial).await;
    assert_eq!((status, body.as_slice()), (418, &b"teapot"[..]));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_keeps_a_trapped_vm_failed() {
    let gateway = start_probe_gateway(Profile::Envoy, false).await;
    let addr = gateway.local_addr;
    let fine = send(addr, "GET", "/p", &[("x-probe", "local")], b"").await;
    assert_eq!(fine.status, 418, "the filter answers");
    let trapped = send(addr, "GET", "/p", &[("x-trap-in", "request_headers")], b"").await;
    assert_eq!(trapped.status, 503);
    // The VM stays failed: every later request gets 503 without the filter running.
    for _ in 0..3 {
        let later = send(addr, "GET", "/p", &[("x-probe", "none")], b"").await;
        assert_eq!(later.status, 503);
    }
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_fail_open_passes_requests_once_the_vm_failed() {
    let gateway = start_probe_gateway(Profile::Envoy, true).await;
    let addr = gateway.local_addr;
    send(addr, "GET", "/p", &[("x-trap-in", "request_headers")], b"").await;
    let later = send(addr, "GET", "/p", &[("x-probe", "local")], b"").await;
    assert_eq!(later.status, 404, "the route answers: the failed filter is skipped");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_answers_a_trap_with_500_and_recovers_on_a_fresh_instance() {
    let gateway = start_probe_gateway(Profile::Kong, false).await;
    let addr = gateway.local_addr;
    let trapped = send(addr, "GET", "/p", &[("x-trap-in", "request_headers")], b"").await;
    assert_eq!(trapped.status, 500);
    assert_eq!(header_of(&trapped, "connection"), Some("close"));
    // The next request runs the filter (its local reply) on a fresh instance.
    let later = send(addr, "GET", "/p", &[("x-probe", "local")], b"").await;
    assert_eq!(later.status, 418, "{:?}", String::from_utf8_lossy(&later.body));
    gateway.shutdown().await;
}

// ---- Callout timeouts ---------------------------------------------------------------------

async fn a_timed_out_callout_writes_nothing(profile: Profile) {
    let (proxy, rest) = in_memory_rest_proxy().await;
    let upstream = match profile {
        Profile::Envoy => "kafka_rest".to_string(),
        Profile::Kong => rest.to_string(),
    };
    let config = json!({"topic": "orders", "rest_proxy": {"upstream": upstream, "timeout": 300}});
    let gateway = start_gateway(profile, &wasm_path("kafka_upstream"), config, rest, None).await;
    let addr = gateway.local_addr;
    // Past the 300 ms timeout, but well before the old grace of timeout + 1 s after which the
    // gateway used to drop the request: a gateway that waits past its timeout gets the answer
    // and the record is written.
    let delay_ms = 800;
    let delay = rest_proxy::Fault::from_json(json!({"kind": "delay", "delay_ms": delay_ms})).unwrap();
    proxy.faults().push(vec![delay]);
    let headers = [("content-type", "application/json"), ("content-length", "9")];
    let late = send(addr, "POST", "/orders", &headers, br#"{"id": 1}"#).await;
    assert_eq!(late.status, 504, "{profile}: {:?}", String::from_utf8_lossy(&late.body));
    // The gateway dropped the request at the timeout: once the REST proxy's delay is over, the
    // record it would then have produced must not exist.
    tokio::time::sleep(Duration::from_millis(delay_ms + 1000)).await;
    let written = messages(&proxy, "orders").await;
    assert!(written.is_empty(), "{profile}: the client got 504, yet {written:?}");
    // The same path works without the delay.
    let on_time = send(addr, "POST", "/orders", &headers, br#"{"id": 2}"#).await;
    assert_eq!(on_time.status, 200, "{profile}");
    assert_eq!(messages(&proxy, "orders").await.len(), 1, "{profile}");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_callout_timeout_cancels_the_upstream_request() {
    a_timed_out_callout_writes_nothing(Profile::Envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_callout_timeout_cancels_the_upstream_request() {
    a_timed_out_callout_writes_nothing(Profile::Kong).await;
}

// ---- Observability ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_metrics_are_prometheus_text() {
    let (_proxy, rest) = in_memory_rest_proxy().await;
    let gateway = start_gateway(Profile::Envoy, &wasm_path("abi_probe"), json!(""), rest, None).await;
    let addr = gateway.local_addr;
    let admin = gateway.admin_addr.expect("admin listener");
    send(addr, "GET", "/p", &[("x-probe", "metrics")], b"").await;
    let resp = Client::default()
        .send(
            &admin.to_string(),
            UpstreamRequest::from_call_headers(
                &[
                    (":method".into(), "GET".into()),
                    (":path".into(), "/metrics".into()),
                    (":authority".into(), "admin".into()),
                ],
                Vec::new(),
            ),
        )
        .await
        .expect("admin answers");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.as_str()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(resp.body).unwrap();
    // The probe's counter took +1 and +5 (its -1 is refused on Envoy); its histogram 10 and 20.
    for line in [
        "# TYPE wasmcustom_probe_counter counter",
        "wasmcustom_probe_counter 6",
        "# TYPE wasmcustom_probe_gauge gauge",
        "# TYPE wasmcustom_probe_histogram histogram",
        "wasmcustom_probe_histogram_bucket{le=\"+Inf\"} 2",
        "wasmcustom_probe_histogram_sum 30",
        "wasmcustom_probe_histogram_count 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
    }
    gateway.shutdown().await;
}

/// The filter in sync mode against each REST-proxy flavour, on the real `.wasm` (Envoy profile):
/// binary and JSON produce answer 200 with the record stored; a record over the broker's
/// `message.max.bytes` answers 502 carrying that flavour's per-record error (and its HTTP status);
/// a v3 configuration answers 200 against Confluent and 502 against the v2-only proxies (404).
async fn flavor_through_the_filter(flavor: Flavor, too_large: (u16, &[Option<i64>]), v3_status: u16) {
    let (proxy, rest) = in_memory_rest_proxy_with(RestProxyConfig {
        flavor,
        max_request_bytes: flavor.default_max_request_bytes(),
        // Room for a few hundred bytes of message, not for the large body below.
        message_max_bytes: 2048,
        ..RestProxyConfig::default()
    })
    .await;
    let filter = wasm_path("kafka_upstream");
    let config = |format: &str, api: &str| {
        let mut c = all_flags("kafka_rest");
        c["rest_proxy"]["format"] = json!(format);
        c["rest_proxy"]["api"] = json!(api);
        if api == "v3" {
            c["rest_proxy"]["cluster_id"] = json!("host-sim");
        }
        c["error_handling"] = json!({"return_error_message": true});
        c
    };
    let sent = json!({"message": "message sent"});
    let doc = br#"{"n":12345678901234567890123}"#;
    let json_headers = [("content-type", "application/json"), ("content-length", "29")];
    for format in ["binary", "json"] {
        let gateway = start_gateway(Profile::Envoy, &filter, config(format, "v2"), rest, None).await;
        let addr = gateway.local_addr;
        let ok = send(addr, "POST", "/orders", &json_headers, doc).await;
        assert_eq!((ok.status, body_json(&ok)), (200, sent.clone()), "{flavor} {format}");

        let big = vec![b'x'; 4096];
        let len = big.len().to_string();
        let failed = send(
            addr,
            "POST",
            "/orders",
            &[("content-type", "text/plain"), ("content-length", &len)],
            &big,
        )
        .await;
        let answer = body_json(&failed);
        assert_eq!(failed.status, 502, "{flavor} {format}: {answer}");
        assert_eq!(
            answer["rest_proxy"]["status"].as_i64(),
            Some(i64::from(too_large.0)),
            "{flavor} {format}: {answer}"
        );
        assert!(
            too_large.1.contains(&answer["rest_proxy"]["error_code"].as_i64()),
            "{flavor} {format}: {answer}"
        );
        gateway.shutdown().await;
    }
    let stored = messages(&proxy, "orders").await;
    assert_eq!(stored.len(), 2, "{flavor}: one record per 200, none for the 502s");
    assert_eq!(stored[0]["body"], std::str::from_utf8(doc).unwrap());
    let gateway = start_gateway(Profile::Envoy, &filter, config("binary", "v3"), rest, None).await;
    let v3 = send(gateway.local_addr, "POST", "/orders", &json_headers, doc).await;
    assert_eq!(
        v3.status,
        v3_status,
        "{flavor} v3: {:?}",
        String::from_utf8_lossy(&v3.body)
    );
    if v3_status == 502 {
        assert_eq!(body_json(&v3)["rest_proxy"]["status"], json!(404), "{flavor} v3");
    }
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_flavor_through_the_filter() {
    // 200 with error_code 50002 in offsets: the filter still answers 502.
    flavor_through_the_filter(Flavor::Confluent, (200, &[Some(50002)]), 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn karapace_flavor_through_the_filter() {
    // 422 with error_code 1 in the record's `offsets` entry, which the filter reports.
    flavor_through_the_filter(Flavor::Karapace, (422, &[Some(1)]), 502).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redpanda_flavor_through_the_filter() {
    // 200 with the partition's Kafka error 10 (MESSAGE_TOO_LARGE).
    flavor_through_the_filter(Flavor::Redpanda, (200, &[Some(10)]), 502).await;
}

/// Issue #12's acceptance run: asynchronous mode against a REST proxy flavour, with records the
/// broker refuses (over its `message.max.bytes`) mixed into the batches. Karapace answers such a
/// batch 422 with one `offsets` entry per record and writes the others; Redpanda refuses the
/// partition's whole batch (one entry per partition), and the filter then retries each of its
/// records alone. Either way every other record is written exactly once, each refused one is
/// retried alone until dropped, and the filter's metrics (summed over the workers, as `/stats`
/// shows them) equal what the REST proxy holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_karapace_partial_failures_write_every_good_record_once() {
    async_partial_failures_write_every_good_record_once(Flavor::Karapace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_redpanda_batch_refusals_write_every_good_record_once() {
    async_partial_failures_write_every_good_record_once(Flavor::Redpanda).await;
}

/// Redpanda answers a written batch with one `offsets` entry per partition, not per record: the
/// filter takes it as every record written, and sends none of them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_redpanda_batches_it_wrote_are_written_once() {
    let (proxy, rest) = in_memory_rest_proxy_with(RestProxyConfig {
        flavor: Flavor::Redpanda,
        max_request_bytes: Flavor::Redpanda.default_max_request_bytes(),
        ..RestProxyConfig::default()
    })
    .await;
    let mut config = all_flags("kafka_rest");
    config["producer_async"] = json!(true);
    // Long enough for each batch to fill up to its five records.
    config["producer_async_flush_timeout"] = json!(10_000);
    config["producer_request_limits_messages_per_request"] = json!(5);
    let gateway = start_gateway(Profile::Envoy, &wasm_path("kafka_upstream"), config, rest, None).await;
    const REQUESTS: usize = 10;
    for i in 0..REQUESTS {
        let body = format!("{i:04}");
        let resp = send(
            gateway.local_addr,
            "POST",
            "/orders",
            &[("content-type", "text/plain"), ("content-length", "4")],
            body.as_bytes(),
        )
        .await;
        assert_eq!(resp.status, 200, "request {i}: {}", String::from_utf8_lossy(&resp.body));
    }
    let admin = gateway.admin_addr.expect("admin listener");
    let sent = |stats: &Value| {
        stats["wasmcustom.kafka_upstream.messages_sent"]["value"]
            .as_u64()
            .unwrap_or(0)
    };
    let mut stats = Value::Null;
    for _ in 0..200 {
        stats = body_json(&send(admin, "GET", "/stats", &[], b"").await);
        if sent(&stats) >= REQUESTS as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sent(&stats), REQUESTS as u64, "{stats}");
    // Give a wrongly retried batch time to arrive before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bodies: Vec<String> = messages(&proxy, "orders")
        .await
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_string())
        .collect();
    bodies.sort();
    let expected: Vec<String> = (0..REQUESTS).map(|i| format!("{i:04}")).collect();
    assert_eq!(bodies, expected, "every record exactly once");
    assert_eq!(
        stats["wasmcustom.kafka_upstream.messages_retried"]["value"]
            .as_u64()
            .unwrap_or(0),
        0,
        "{stats}"
    );
    gateway.shutdown().await;
}

async fn async_partial_failures_write_every_good_record_once(flavor: Flavor) {
    let (proxy, rest) = in_memory_rest_proxy_with(RestProxyConfig {
        flavor,
        max_request_bytes: flavor.default_max_request_bytes(),
        message_max_bytes: 2048,
        ..RestProxyConfig::default()
    })
    .await;
    let mut config = all_flags("kafka_rest");
    config["producer_async"] = json!(true);
    config["producer_async_flush_timeout"] = json!(20);
    config["producer_request_limits_messages_per_request"] = json!(11);
    config["producer_request_retries_max_attempts"] = json!(3);
    config["producer_request_retries_backoff_timeout"] = json!(10);
    let gateway = start_gateway(Profile::Envoy, &wasm_path("kafka_upstream"), config, rest, None).await;
    let addr = gateway.local_addr;
    let admin = gateway.admin_addr.expect("admin listener");

    const REQUESTS: usize = 44;
    let too_large = |i: usize| i % 11 == 5;
    for i in 0..REQUESTS {
        let body = if too_large(i) {
            format!("{i:04}{}", "x".repeat(4096))
        } else {
            format!("{i:04}")
        };
        let len = body.len().to_string();
        let resp = send(
            addr,
            "POST",
            "/orders",
            &[("content-type", "text/plain"), ("content-length", &len)],
            body.as_bytes(),
        )
        .await;
        assert_eq!(resp.status, 200, "request {i}: {}", String::from_utf8_lossy(&resp.body));
    }
    let refused = (0..REQUESTS).filter(|&i| too_large(i)).count();

    // The filter's counters, summed over every metric whose name ends in `.{name}`.
    let counter = |stats: &Value, name: &str| -> u64 {
        let suffix = format!(".{name}");
        let mut total = 0;
        let mut add = |key: &str, v: &Value| {
            if key.ends_with(&suffix) {
                total += v["value"].as_u64().or_else(|| v.as_u64()).unwrap_or(0);
            }
        };
        match stats {
            Value::Object(map) => map.iter().for_each(|(k, v)| add(k, v)),
            Value::Array(items) => items.iter().for_each(|m| add(m["name"].as_str().unwrap_or(""), m)),
            _ => {}
        }
        total
    };
    // Bounded wait for every record to be settled: sent, or dropped after its attempts.
    let mut stats = Value::Null;
    for _ in 0..200 {
        stats = body_json(&send(admin, "GET", "/stats", &[], b"").await);
        if counter(&stats, "messages_sent") + counter(&stats, "messages_dropped") >= REQUESTS as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored = messages(&proxy, "orders").await;
    let mut bodies: Vec<String> = stored
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_string())
        .collect();
    bodies.sort();
    let expected: Vec<String> = (0..REQUESTS)
        .filter(|&i| !too_large(i))
        .map(|i| format!("{i:04}"))
        .collect();
    assert_eq!(bodies, expected, "every record the broker accepts, exactly once");
    assert_eq!(counter(&stats, "messages_sent"), stored.len() as u64, "{stats}");
    assert_eq!(counter(&stats, "messages_dropped"), refused as u64, "{stats}");
    // A partial failure never marks the REST proxy unhealthy: a later request is still taken.
    let later = send(
        addr,
        "POST",
        "/orders",
        &[("content-type", "text/plain"), ("content-length", "4")],
        b"late",
    )
    .await;
    assert_eq!(later.status, 200, "{}", String::from_utf8_lossy(&later.body));
    gateway.shutdown().await;
}

// ---- Record headers (filter/src/record_headers.rs) --------------------------------------------

/// Record headers through `host-sim serve` into the embedded REST proxy (in memory, v3), read
/// back over HTTP from its records endpoint: forwarded, renamed, repeated (kept as separate
/// headers) and static headers, nothing withheld leaking.
async fn record_headers_reach_the_records_endpoint(profile: Profile) {
    let (_proxy, rest) = in_memory_rest_proxy().await;
    let upstream = match profile {
        Profile::Envoy => "kafka_rest".to_string(),
        Profile::Kong => rest.to_string(),
    };
    let config = json!({
        "topic": "orders",
        "rest_proxy": {"upstream": upstream, "api": "v3", "cluster_id": "host-sim"},
        "headers": {
            "forward_all_by_default": true,
            // The Envoy profile adds x-forwarded-proto, as Envoy does.
            "exclude_headers": ["content-type", "content-length", "host", "user-agent", "x-forwarded-proto"],
            "name_mappings": {"x-correlation-id": "trace-id"},
            "static_headers": {"source": "serve"}
        }
    });
    let gateway = start_gateway(profile, &wasm_path("kafka_upstream"), config, rest, None).await;
    let headers = [
        ("content-type", "application/json"),
        ("content-length", "2"),
        ("X-Correlation-Id", "c-1"),
        ("x-tag", "a"),
        ("x-tag", "b"),
        ("authorization", "Bearer secret"),
    ];
    let answer = send(gateway.local_addr, "POST", "/orders", &headers, b"{}").await;
    assert_eq!(
        (answer.status, body_json(&answer)),
        (200, json!({"message": "message sent"})),
        "{profile}"
    );
    let read = Client::default()
        .send(
            &rest.to_string(),
            UpstreamRequest::from_call_headers(
                &[
                    (":method".to_string(), "GET".to_string()),
                    (":path".to_string(), "/_sim/topics/orders/records".to_string()),
                    (":authority".to_string(), rest.to_string()),
                ],
                Vec::new(),
            ),
        )
        .await
        .expect("records endpoint answers");
    assert_eq!(read.status, 200, "{profile}: {:?}", String::from_utf8_lossy(&read.body));
    let records = body_json(&read);
    let records = records
        .get("records")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| panic!("{profile}: no records in {records}"));
    assert_eq!(records.len(), 1, "{profile}: {records:?}");
    let got: Vec<(String, String)> = records[0]["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("{profile}: no headers in {}", records[0]))
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap_or_default().to_string(),
                h["value_utf8"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    // Envoy's connection manager gave the request an x-request-id before the filter ran (the
    // gateway's default, as Envoy's), and forward-all mode forwards it; its value is random.
    let got: Vec<(String, String)> = got
        .into_iter()
        .map(|(n, v)| {
            if n == "x-request-id" {
                (n, "<uuid>".to_string())
            } else {
                (n, v)
            }
        })
        .collect();
    let mut want: Vec<(&str, &str)> = vec![("trace-id", "c-1"), ("x-tag", "a"), ("x-tag", "b")];
    if profile == Profile::Envoy {
        want.push(("x-request-id", "<uuid>"));
    }
    want.push(("source", "serve"));
    let want: Vec<(String, String)> = want.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    assert_eq!(got, want, "{profile}");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_profile_record_headers_reach_the_records_endpoint() {
    record_headers_reach_the_records_endpoint(Profile::Envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_profile_record_headers_reach_the_records_endpoint() {
    record_headers_reach_the_records_endpoint(Profile::Kong).await;
}

/// `schema_registry.confluent` (Kong 3.11+ fields) with `message.mode: body`, as Kong's own
/// example pairs them: the filter looks the subject's latest version up in the embedded Schema
/// Registry from the root context, sends the body with that schema id (v2 `avro` content type and
/// `value_schema_id`; v3 `schema_id`), and the REST proxy writes Confluent's wire format. A body
/// that does not match is refused by the REST proxy and nothing is written; a subject the
/// registry does not have gives a 503 that names it, and nothing is sent.
async fn schema_registry_records(profile: Profile, api: &str) {
    let (proxy, rest) = in_memory_rest_proxy().await;
    let order =
        r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"item","type":"string"}]}"#;
    let id = proxy
        .schema_registry()
        .register("orders-value", rest_proxy::schema_registry::SchemaType::Avro, order)
        .unwrap();
    let (upstream, registry_upstream) = match profile {
        Profile::Envoy => ("kafka_rest".to_string(), Some("schema_registry")),
        Profile::Kong => (rest.to_string(), None),
    };
    let mut rest_proxy = json!({"upstream": upstream, "format": "json"});
    if api == "v3" {
        rest_proxy["api"] = json!("v3");
        rest_proxy["cluster_id"] = json!("host-sim");
    }
    let mut confluent = json!({
        "url": format!("http://{rest}"),
        "value_schema": {"subject_name": "orders-value", "schema_version": "latest"}
    });
    if let Some(u) = registry_upstream {
        confluent["upstream"] = json!(u);
    }
    let config = json!({"topic": "orders", "rest_proxy": rest_proxy, "message": {"mode": "body"},
                        "schema_registry": {"confluent": confluent.clone()}});
    let gateway = start_gateway(profile, &wasm_path("kafka_upstream"), config, rest, None).await;
    let headers = [("content-type", "application/json")];
    // The first lookup goes out at the first tick after configuration: until its answer, requests
    // get 503 and nothing is sent. Bounded wait, no timing asserted.
    let mut answer = send(
        gateway.local_addr,
        "POST",
        "/orders",
        &headers,
        br#"{"id":7,"item":"pen"}"#,
    )
    .await;
    for _ in 0..200 {
        if answer.status != 503 {
            break;
        }
        assert!(
            String::from_utf8_lossy(&answer.body).contains("schema registry"),
            "{profile} {api}: {:?}",
            String::from_utf8_lossy(&answer.body)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = send(
            gateway.local_addr,
            "POST",
            "/orders",
            &headers,
            br#"{"id":7,"item":"pen"}"#,
        )
        .await;
    }
    assert_eq!(
        (answer.status, body_json(&answer)),
        (200, json!({"message": "message sent"})),
        "{profile} {api}"
    );
    let records = proxy.read_records("orders", None, 0, 100).await.unwrap();
    assert_eq!(records.len(), 1, "{profile} {api}");
    // Magic byte, schema id, then the Avro binary of {"id":7,"item":"pen"}: zigzag 7 = 14, "pen".
    let mut want = vec![0u8];
    want.extend_from_slice(&id.to_be_bytes());
    want.extend_from_slice(&[14, 6, b'p', b'e', b'n']);
    assert_eq!(records[0].value.as_deref(), Some(&want[..]), "{profile} {api}");

    // A body that does not match the schema: refused by the REST proxy, nothing written.
    let bad = send(gateway.local_addr, "POST", "/orders", &headers, br#"{"id":"seven"}"#).await;
    assert!(bad.status >= 400, "{profile} {api}: {}", bad.status);
    assert_ne!(bad.status, 200, "{profile} {api}");
    assert_eq!(
        proxy.read_records("orders", None, 0, 100).await.unwrap().len(),
        1,
        "{profile} {api}"
    );
    gateway.shutdown().await;

    // A subject the registry does not have: 503 naming it, nothing sent.
    confluent["value_schema"]["subject_name"] = json!("missing-value");
    let config = json!({"topic": "orders", "rest_proxy": rest_proxy, "message": {"mode": "body"},
                        "schema_registry": {"confluent": confluent}});
    let gateway = start_gateway(profile, &wasm_path("kafka_upstream"), config, rest, None).await;
    let mut answer = send(
        gateway.local_addr,
        "POST",
        "/orders",
        &headers,
        br#"{"id":8,"item":"ink"}"#,
    )
    .await;
    for _ in 0..200 {
        if String::from_utf8_lossy(&answer.body).contains("40401") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = send(
            gateway.local_addr,
            "POST",
            "/orders",
            &headers,
            br#"{"id":8,"item":"ink"}"#,
        )
        .await;
    }
    assert_eq!(answer.status, 503, "{profile} {api}");
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(
        text.contains("subject 'missing-value'") && text.contains("Subject 'missing-value' not found."),
        "{profile} {api}: {text}"
    );
    assert_eq!(
        proxy.read_records("orders", None, 0, 100).await.unwrap().len(),
        1,
        "{profile} {api}"
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_profile_schema_registry_v2() {
    schema_registry_records(Profile::Envoy, "v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_profile_schema_registry_v2() {
    schema_registry_records(Profile::Kong, "v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_profile_schema_registry_v3() {
    schema_registry_records(Profile::Envoy, "v3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_profile_schema_registry_v3() {
    schema_registry_records(Profile::Kong, "v3").await;
}

/// `schema_registry.confluent` with `producer_async`: a record accepted before the lookup is
/// answered waits in the buffer and goes out with the schema id; once a lookup has failed (a
/// missing subject), requests get 503 naming it and nothing is sent.
async fn schema_registry_async_records(profile: Profile) {
    let (proxy, rest) = in_memory_rest_proxy().await;
    let order =
        r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"item","type":"string"}]}"#;
    let id = proxy
        .schema_registry()
        .register("orders-value", rest_proxy::schema_registry::SchemaType::Avro, order)
        .unwrap();
    let upstream = match profile {
        Profile::Envoy => "kafka_rest".to_string(),
        Profile::Kong => rest.to_string(),
    };
    let config = |subject: &str| {
        let mut confluent = json!({"url": format!("http://{rest}"), "value_schema": {"subject_name": subject}});
        if profile == Profile::Envoy {
            confluent["upstream"] = json!("schema_registry");
        }
        json!({"topic": "orders", "rest_proxy": {"upstream": upstream, "api": "v3", "cluster_id": "host-sim", "format": "json"},
               "message": {"mode": "body"}, "producer_async": true, "producer_async_flush_timeout": 20,
               "schema_registry": {"confluent": confluent}})
    };
    let gateway = start_gateway(
        profile,
        &wasm_path("kafka_upstream"),
        config("orders-value"),
        rest,
        None,
    )
    .await;
    let headers = [("content-type", "application/json")];
    let answer = send(
        gateway.local_addr,
        "POST",
        "/orders",
        &headers,
        br#"{"id":7,"item":"pen"}"#,
    )
    .await;
    assert_eq!(
        (answer.status, body_json(&answer)),
        (200, json!({"message": "message sent"})),
        "{profile}"
    );
    let mut records = Vec::new();
    for _ in 0..200 {
        // The topic is created by the first record (auto-creation).
        records = proxy.read_records("orders", None, 0, 100).await.unwrap_or_default();
        if !records.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut want = vec![0u8];
    want.extend_from_slice(&id.to_be_bytes());
    want.extend_from_slice(&[14, 6, b'p', b'e', b'n']);
    assert_eq!(records.len(), 1, "{profile}");
    assert_eq!(records[0].value.as_deref(), Some(&want[..]), "{profile}");
    gateway.shutdown().await;

    let gateway = start_gateway(
        profile,
        &wasm_path("kafka_upstream"),
        config("missing-value"),
        rest,
        None,
    )
    .await;
    let mut answer = send(
        gateway.local_addr,
        "POST",
        "/orders",
        &headers,
        br#"{"id":8,"item":"ink"}"#,
    )
    .await;
    for _ in 0..200 {
        if answer.status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = send(
            gateway.local_addr,
            "POST",
            "/orders",
            &headers,
            br#"{"id":8,"item":"ink"}"#,
        )
        .await;
    }
    assert_eq!(answer.status, 503, "{profile}");
    assert!(
        String::from_utf8_lossy(&answer.body).contains("Subject 'missing-value' not found."),
        "{profile}: {:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        proxy.read_records("orders", None, 0, 100).await.unwrap().len(),
        1,
        "{profile}"
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_profile_schema_registry_async() {
    schema_registry_async_records(Profile::Envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_profile_schema_registry_async() {
    schema_registry_async_records(Profile::Kong).await;
}
