//! The request header map `host-sim serve` hands the real abi-probe `.wasm` in each profile.
//! Kong: ngx_wasm_module's pseudo-headers, then nginx's header list as the client wrote it
//! (order, letter case, a repeated name at each of its positions) on every request of a
//! kept-alive HTTP/1 connection, pipelined or not, past sized and chunked bodies; the count
//! passed to `on_http_request_headers` leaves the pseudo-headers out; HTTP/2 names stay
//! lower-case (RFC 9113 §8.2.2). Envoy: lower-case names as its codec makes them (unchanged).
//! The probe's `x-mark-names` puts what it saw into its local reply's headers.

use host_sim::serve::config::{Deployment, Route};
use host_sim::serve::{start, RunningGateway, ServeOptions};
use host_sim::Profile;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kafka_upstream_tests::{engine, wasm_path};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest a test waits for its answers.
const BOUND: Duration = Duration::from_secs(20);

/// abi-probe on a one-worker gateway; the requests below have it answer locally (418).
async fn probe_gateway(profile: Profile) -> RunningGateway {
    let route = Route {
        plugin_name: "probe".into(),
        ..Route::new("probe", wasm_path("abi_probe"), Vec::new())
    };
    start(ServeOptions::new(
        Deployment::new(profile, vec![route]),
        engine().clone(),
    ))
    .await
    .expect("gateway starts")
}

/// One answer read off a connection: status and headers (names lower-cased by the reader).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Writes `wire` in one piece on one connection and reads `count` answers off it, each framed
/// by its content-length (a local reply always has one).
async fn pipelined(gateway: SocketAddr, wire: &[u8], count: usize) -> Vec<Answer> {
    let mut conn = tokio::net::TcpStream::connect(gateway).await.expect("connect");
    conn.write_all(wire).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut answers = Vec::new();
    while answers.len() < count {
        if let Some((answer, used)) = parse_answer(&got) {
            answers.push(answer);
            got.drain(..used);
            continue;
        }
        let n = tokio::time::timeout(BOUND, conn.read(&mut buf))
            .await
            .expect("answers within the bound")
            .expect("read");
        assert!(n > 0, "connection closed after {} answers", answers.len());
        got.extend_from_slice(&buf[..n]);
        assert!(got.len() < 1 << 20, "answers too large");
    }
    answers
}

/// The first whole answer in `got` and its length.
fn parse_answer(got: &[u8]) -> Option<(Answer, usize)> {
    let end = got.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&got[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.get(9..12)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("a local reply has a content-length");
    let used = end + 4 + length;
    (got.len() >= used).then_some((Answer { status, headers }, used))
}

/// A request with mixed-case names and a repeated one, with no body.
const PLAIN: &str = "GET /probe HTTP/1.1\r\nHost: probe\r\nUser-Agent: wire-test\r\nX-MiXeD-Case: 1\r\n\
    x-probe: local\r\nX-Dup: first\r\nx-mark-names: 1\r\nx-dup: second\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_hands_the_filter_each_pipelined_requests_headers_as_the_client_wrote_them() {
    let gateway = probe_gateway(Profile::Kong).await;
    let chunked = "POST /probe HTTP/1.1\r\nHOST: probe\r\nTransfer-Encoding: chunked\r\nX-Probe: local\r\n\
        X-Mark-Names: 1\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n";
    let sized =
        "PUT /probe HTTP/1.1\r\nhost: probe\r\nContent-Length: 4\r\nx-PROBE: local\r\nx-mark-NAMES: 1\r\n\r\nGET ";
    let wire = format!("{PLAIN}{chunked}{sized}{PLAIN}");
    let answers = pipelined(gateway.local_addr, wire.as_bytes(), 4).await;
    let pseudo = ":path,:method,:scheme,:authority";
    let expected = [
        (
            format!("{pseudo},Host,User-Agent,X-MiXeD-Case,x-probe,X-Dup,x-mark-names,x-dup"),
            "7",
        ),
        (format!("{pseudo},HOST,Transfer-Encoding,X-Probe,X-Mark-Names"), "4"),
        (format!("{pseudo},host,Content-Length,x-PROBE,x-mark-NAMES"), "4"),
        (
            format!("{pseudo},Host,User-Agent,X-MiXeD-Case,x-probe,X-Dup,x-mark-names,x-dup"),
            "7",
        ),
    ];
    for (i, (answer, (names, count))) in answers.iter().zip(&expected).enumerate() {
        assert_eq!(answer.status, 418, "request {i}: {answer:?}");
        assert_eq!(answer.header("x-probe-saw-names"), Some(names.as_str()), "request {i}");
        assert_eq!(
            answer.header("x-probe-saw-count"),
            Some(*count),
            "request {i}: ngx_wasm_module counts nginx's header list, not its pseudo-headers"
        );
    }
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_keeps_the_wire_names_on_requests_sent_one_at_a_time_on_a_kept_alive_connection() {
    let gateway = probe_gateway(Profile::Kong).await;
    let mut conn = tokio::net::TcpStream::connect(gateway.local_addr)
        .await
        .expect("connect");
    for round in 0..3 {
        conn.write_all(PLAIN.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let answer = loop {
            if let Some((answer, used)) = parse_answer(&got) {
                assert_eq!(used, got.len(), "one answer per request");
                break answer;
            }
            let n = tokio::time::timeout(BOUND, conn.read(&mut buf))
                .await
                .expect("an answer within the bound")
                .expect("read");
            assert!(n > 0, "closed in round {round}");
            got.extend_from_slice(&buf[..n]);
        };
        assert_eq!(
            answer.header("x-probe-saw-names"),
            Some(":path,:method,:scheme,:authority,Host,User-Agent,X-MiXeD-Case,x-probe,X-Dup,x-mark-names,x-dup"),
            "round {round}"
        );
    }
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_still_hands_the_filter_lower_case_names_with_repeats_together() {
    // Envoy's HTTP/1 codec lower-cases every name (source/common/http/http1/codec_impl.cc,
    // `completeCurrentHeader`); the profile keeps hyper's map, a repeated name's values together.
    let gateway = probe_gateway(Profile::Envoy).await;
    let answers = pipelined(gateway.local_addr, PLAIN.as_bytes(), 1).await;
    assert_eq!(
        answers[0].header("x-probe-saw-names"),
        Some(
            ":authority,:path,:method,:scheme,user-agent,x-mixed-case,x-probe,x-dup,x-dup,x-mark-names,\
             x-forwarded-proto,x-request-id"
        )
    );
    assert_eq!(
        answers[0].header("x-probe-saw-count"),
        Some("12"),
        "pseudo-headers counted"
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_over_http2_hands_the_filter_the_lower_case_names_of_the_wire() {
    let gateway = probe_gateway(Profile::Kong).await;
    let tcp = tokio::net::TcpStream::connect(gateway.local_addr)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2c handshake");
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method("GET")
        .uri(format!("http://{}/probe", gateway.local_addr))
        .header("X-MiXeD-Case", "1")
        .header("x-probe", "local")
        .header("x-mark-names", "1")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(BOUND, sender.send_request(request))
        .await
        .expect("an answer within the bound")
        .expect("response");
    assert_eq!(response.status(), 418);
    let names = response.headers()["x-probe-saw-names"].to_str().unwrap().to_string();
    assert_eq!(
        names,
        ":path,:method,:scheme,:authority,x-mixed-case,x-probe,x-mark-names"
    );
    let _ = response.into_body().collect().await;
    drop(sender);
    gateway.shutdown().await;
}
