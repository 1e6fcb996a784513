//! `host-sim serve` at its edges, on loopback with raw sockets: hostile or broken clients (slow
//! request heads, idle connections, bodies that never finish, malformed, truncated and oversized
//! bodies, more connections than the cap), the headers Envoy's edge adds, and what happens to a
//! filter's buffered records when the gateway stops or the module is reloaded. Every wait is
//! bounded; nothing asserts how long something took.

use crate::serve_common;
use host_sim::limits::EdgeLimits;
use host_sim::serve::config::{Deployment, Route};
use host_sim::serve::{start, RunningGateway, ServeOptions};
use host_sim::Profile;
use kafka_upstream_tests::{engine, wasm_path, with_custom_section};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest any single step below may take before the test fails instead of hanging.
const BOUND: Duration = Duration::from_secs(15);

/// A gateway running the no-op filter (requests it lets through get the default route's 404).
async fn gateway(edge: EdgeLimits) -> RunningGateway {
    let deployment = Deployment::new(Profile::Envoy, vec![Route::new("edge", wasm_path("noop"), Vec::new())]);
    start(ServeOptions {
        edge,
        ..ServeOptions::new(deployment, engine().clone())
    })
    .await
    .expect("gateway starts")
}

fn short_timeouts() -> EdgeLimits {
    EdgeLimits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(700),
        max_request_bytes: 64 << 10,
        ..EdgeLimits::default()
    }
}

/// Reads until the peer closes (or [`BOUND`] passes: then the test fails). Returns what came.
async fn read_to_close(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match tokio::time::timeout(BOUND, conn.read(&mut buf)).await {
            Err(_) => panic!(
                "the gateway kept the connection open; got so far: {:?}",
                String::from_utf8_lossy(&got)
            ),
            // A reset after the answer counts as closed: the answer is what matters.
            Ok(Err(_)) => return got,
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

fn status_of(answer: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(answer);
    let line = text.lines().next()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(BOUND, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_closed_without_an_answer() {
    let gw = gateway(short_timeouts()).await;
    let mut conns = Vec::new();
    for _ in 0..50 {
        let mut conn = connect(gw.local_addr).await;
        conn.write_all(b"GET / HTTP/1.1\r\nhost: a\r\nx-slow: ").await.unwrap();
        conns.push(conn);
    }
    // Keep trickling bytes well past the header timeout: the head's first byte starts the clock.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        for conn in &mut conns {
            let _ = conn.write_all(b"a").await;
        }
    }
    for conn in &mut conns {
        let got = read_to_close(conn).await;
        assert!(
            got.is_empty(),
            "a slow head got an answer: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    // The gateway still serves.
    let mut conn = connect(gw.local_addr).await;
    conn.write_all(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_of(&read_to_close(&mut conn).await), Some(404));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_before_and_between_requests() {
    let gw = gateway(short_timeouts()).await;
    // Opened, never used.
    let mut silent = connect(gw.local_addr).await;
    assert!(read_to_close(&mut silent).await.is_empty());
    // Used once with keep-alive, then left idle: the answer, then the close.
    let mut kept = connect(gw.local_addr).await;
    kept.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let got = read_to_close(&mut kept).await;
    assert_eq!(status_of(&got), Some(404), "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(String::from_utf8_lossy(&got).matches("HTTP/1.1 ").count(), 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_completes_gets_408() {
    let gw = gateway(short_timeouts()).await;
    let mut conn = connect(gw.local_addr).await;
    conn.write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let got = read_to_close(&mut conn).await;
    assert_eq!(status_of(&got), Some(408), "{:?}", String::from_utf8_lossy(&got));
    assert!(String::from_utf8_lossy(&got)
        .to_ascii_lowercase()
        .contains("connection: close"));
    gw.shutdown().await;
}

/// Sends `request`, half-closes, and returns the status of the answer.
async fn answer_to(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut conn = connect(addr).await;
    conn.write_all(request).await.unwrap();
    let _ = conn.shutdown().await;
    let got = read_to_close(&mut conn).await;
    status_of(&got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_truncated_bodies_get_400() {
    let gw = gateway(short_timeouts()).await;
    let head = "POST / HTTP/1.1\r\nhost: a\r\n";
    let cases: [(&str, String); 4] = [
        (
            "bad chunk size",
            format!("{head}transfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
        ),
        (
            "chunk longer than its size",
            format!("{head}transfer-encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n"),
        ),
        (
            "missing last chunk",
            format!("{head}transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n"),
        ),
        (
            "fewer bytes than content-length",
            format!("{head}content-length: 100\r\n\r\nabc"),
        ),
    ];
    for (what, request) in cases {
        assert_eq!(answer_to(gw.local_addr, request.as_bytes()).await, Some(400), "{what}");
    }
    // A well-formed chunked body still goes through (the no-op filter lets it to the 404 route).
    let fine = format!("{head}transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(answer_to(gw.local_addr, fine.as_bytes()).await, Some(404));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_with_a_status_line() {
    let gw = gateway(EdgeLimits {
        max_request_bytes: 1 << 20,
        ..EdgeLimits::default()
    })
    .await;
    // Declared too large: refused from the head. The client sends all 8 MiB anyway and must
    // still read the answer, not a reset.
    let body = vec![b'x'; 8 << 20];
    for head in [
        format!("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: {}\r\n\r\n", body.len()),
        "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n".to_string(),
    ] {
        let chunked = head.contains("chunked");
        let mut conn = connect(gw.local_addr).await;
        let (mut reader, mut writer) = conn.split();
        let send = async {
            writer.write_all(head.as_bytes()).await?;
            if chunked {
                for piece in body.chunks(64 << 10) {
                    writer.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await?;
                    writer.write_all(piece).await?;
                    writer.write_all(b"\r\n").await?;
                }
                writer.write_all(b"0\r\n\r\n").await?;
            } else {
                writer.write_all(&body).await?;
            }
            std::io::Result::Ok(())
        };
        let receive = async {
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(Ok(n)) = tokio::time::timeout(BOUND, reader.read(&mut buf)).await {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got
        };
        let (_, got) = tokio::join!(send, receive);
        assert_eq!(
            status_of(&got),
            Some(413),
            "chunked={chunked}: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_new_clients_wait_instead_of_failing() {
    let gw = gateway(EdgeLimits {
        max_connections: 3,
        ..EdgeLimits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = connect(gw.local_addr).await;
        // A full exchange proves each of them was accepted.
        conn.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(BOUND, conn.read(&mut buf)).await.unwrap().unwrap();
        assert_eq!(status_of(&buf[..n]), Some(404));
        held.push(conn);
    }
    // The fourth connects (the kernel's backlog) but is not served while the cap is held.
    let mut waiting = connect(gw.local_addr).await;
    waiting
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the cap: {early:?}");
    // One closes: the waiting client is served.
    drop(held.pop());
    let got = read_to_close(&mut waiting).await;
    assert_eq!(status_of(&got), Some(404), "{:?}", String::from_utf8_lossy(&got));
    gw.shutdown().await;
}

// ---- Shutdown ---------------------------------------------------------------------------------

/// A gateway running the real filter in asynchronous mode whose batches would not go for a
/// minute on their own, in front of an in-memory REST proxy.
async fn async_gateway(profile: Profile) -> (RunningGateway, std::sync::Arc<rest_proxy::RestProxy>) {
    let (proxy, rest) = serve_common::in_memory_rest_proxy().await;
    let (upstream, upstreams) = match profile {
        Profile::Envoy => (
            "kafka_rest".to_string(),
            BTreeMap::from([("kafka_rest".to_string(), rest)]),
        ),
        Profile::Kong => (rest.to_string(), BTreeMap::new()),
    };
    let config = serde_json::json!({
        "topic": "drained",
        "rest_proxy": {"upstream": upstream},
        "producer_async": true,
        "producer_async_flush_timeout": 60000,
        "producer_request_limits_messages_per_request": 100,
    });
    let route = Route::new("kafka", wasm_path("kafka_upstream"), config.to_string().into_bytes());
    let deployment = Deployment {
        upstreams,
        ..Deployment::new(profile, vec![route])
    };
    let gateway = start(ServeOptions::new(deployment, engine().clone()))
        .await
        .expect("gateway starts");
    (gateway, proxy)
}

/// Sends `n` acknowledged requests (async mode: 200 once buffered) and returns how many the
/// REST proxy has once the gateway has shut down.
async fn records_after_shutdown(profile: Profile, n: usize) -> usize {
    let (gateway, proxy) = async_gateway(profile).await;
    for i in 0..n {
        let mut conn = connect(gateway.local_addr).await;
        let request =
            format!("POST /orders HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\nconnection: close\r\n\r\n{i:04}");
        conn.write_all(request.as_bytes()).await.unwrap();
        let got = read_to_close(&mut conn).await;
        assert_eq!(
            status_of(&got),
            Some(200),
            "{profile}: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let held = proxy.read_records("drained", None, 0, 1000).await.unwrap_or_default();
    assert!(held.is_empty(), "{profile}: the batch went before the shutdown");
    tokio::time::timeout(BOUND, gateway.shutdown())
        .await
        .expect("shutdown within the drain time");
    proxy
        .read_records("drained", None, 0, 1000)
        .await
        .unwrap_or_default()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_shutdown_drains_what_async_mode_acknowledged() {
    // proxy_on_done returns false, the filter sends its buffer, proxy_done follows the acks.
    assert_eq!(records_after_shutdown(Profile::Envoy, 5).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_shutdown_loses_what_async_mode_held_as_kong_does() {
    // ngx_wasm_module never shuts a root context down: the buffer goes with the worker.
    assert_eq!(records_after_shutdown(Profile::Kong, 5).await, 0);
}

// ---- Envoy's edge headers ------------------------------------------------------------------------

/// A backend that answers every request with `server: backend` and records each request head.
async fn recording_backend() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    serve_common::recording_backend(
        b"HTTP/1.1 200 OK\r\nserver: backend\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    )
    .await
}

/// Sends `request` through an Envoy-profile gateway (no-op filter, route to a recording
/// backend) and returns the client's answer and the head the backend received.
async fn through_envoy_edge(generate_request_id: bool, request: &[u8]) -> (String, String) {
    let (backend, heads) = recording_backend().await;
    let route = Route {
        fallback: host_sim::serve::config::Fallback::Upstream("backend".into()),
        ..Route::new("edge", wasm_path("noop"), Vec::new())
    };
    let deployment = Deployment {
        upstreams: BTreeMap::from([("backend".to_string(), backend)]),
        generate_request_id,
        ..Deployment::new(Profile::Envoy, vec![route])
    };
    let gw = start(ServeOptions::new(deployment, engine().clone()))
        .await
        .expect("gateway starts");
    let mut conn = connect(gw.local_addr).await;
    conn.write_all(request).await.unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut conn).await).to_ascii_lowercase();
    gw.shutdown().await;
    let head = heads
        .lock()
        .unwrap()
        .first()
        .cloned()
        .unwrap_or_default()
        .to_ascii_lowercase();
    (answer, head)
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_profile_adds_envoys_edge_headers() {
    let request = b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";
    let (answer, head) = through_envoy_edge(true, request).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    // Responses: Envoy's server name replaces the backend's; the router's service time.
    assert_eq!(header_value(&answer, "server"), Some("envoy"), "{answer}");
    assert!(!answer.contains("server: backend"), "{answer}");
    let took = header_value(&answer, "x-envoy-upstream-service-time");
    assert!(took.is_some_and(|t| t.parse::<u64>().is_ok()), "{answer}");
    // Proxied requests: a request id (UUID v4) and the route's timeout.
    let id = header_value(&head, "x-request-id").unwrap_or_else(|| panic!("no x-request-id: {head}"));
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.as_bytes()[14], b'4', "{id}");
    assert_eq!(
        header_value(&head, "x-envoy-expected-rq-timeout-ms"),
        Some("15000"),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_is_kept_when_sent_and_not_invented_when_turned_off() {
    let (_, head) = through_envoy_edge(
        true,
        b"GET /x HTTP/1.1\r\nhost: a\r\nx-request-id: mine\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(header_value(&head, "x-request-id"), Some("mine"), "{head}");
    let (_, head) = through_envoy_edge(false, b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").await;
    assert_eq!(header_value(&head, "x-request-id"), None, "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_sends_what_the_replaced_vm_had_buffered() {
    // The module from a file of the test's own, so a new build can replace it.
    let dir = std::env::temp_dir().join(format!("host-sim-reload-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let filter = dir.join("kafka_upstream.wasm");
    let original = std::fs::read(wasm_path("kafka_upstream")).unwrap();
    std::fs::write(&filter, &original).unwrap();
    let (proxy, rest) = serve_common::in_memory_rest_proxy().await;
    let config = serde_json::json!({
        "topic": "reloaded",
        "rest_proxy": {"upstream": "kafka_rest"},
        "producer_async": true,
        "producer_async_flush_timeout": 60000,
    });
    let deployment = Deployment {
        upstreams: BTreeMap::from([("kafka_rest".to_string(), rest)]),
        ..Deployment::new(
            Profile::Envoy,
            vec![Route::new("kafka", filter.clone(), config.to_string().into_bytes())],
        )
    };
    let gateway = start(ServeOptions {
        reload_poll: Some(Duration::from_millis(50)),
        ..ServeOptions::new(deployment, engine().clone())
    })
    .await
    .expect("gateway starts");
    for i in 0..3 {
        let mut conn = connect(gateway.local_addr).await;
        let request =
            format!("POST /orders HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\nconnection: close\r\n\r\n{i:04}");
        conn.write_all(request.as_bytes()).await.unwrap();
        assert_eq!(status_of(&read_to_close(&mut conn).await), Some(200));
    }
    let records = || async {
        proxy
            .read_records("reloaded", None, 0, 100)
            .await
            .unwrap_or_default()
            .len()
    };
    assert_eq!(records().await, 0, "the batch went before the reload");
    std::fs::write(&filter, with_custom_section(&original, "reload-drain")).unwrap();
    // The old VM's root is shut down once its streams are gone, and drains (bounded wait).
    let mut written = 0;
    for _ in 0..200 {
        written = records().await;
        if written == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(written, 3, "records the replaced VM held");
}
