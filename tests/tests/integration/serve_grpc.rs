//! `host-sim serve`'s gRPC on the real abi-probe `.wasm` (Envoy profile): the filter's
//! `proxy_grpc_call` and `proxy_grpc_stream` reach an in-test gRPC server over HTTP/2 (h2c) and
//! what it answers comes back through the proper callbacks (a unary call: only its outcome; a
//! stream: initial metadata, each message, trailing metadata, close); an error status, a timeout
//! and a refused connection close the call with the status Envoy gives. And `serve` itself
//! accepts HTTP/2 clients (h2c, prior knowledge) next to HTTP/1.1. The probe's reports are read
//! from the gateway's log ([`serve_service::lines_with`]); tests/e2e/test_grpc.py compares the
//! same cases with real Envoy 1.40.

use crate::serve_service::{lines_with, log};
use bytes::{Buf, Bytes, BytesMut};
use host_sim::serve::config::{Deployment, Fallback, Route};
use host_sim::serve::{start, RunningGateway, ServeOptions};
use host_sim::Profile;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kafka_upstream_tests::{engine, wasm_path};
use serde_json::Value;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the in-test gRPC server answers.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Initial metadata `x-initial: yes`, one `pong:<request>` message per request message,
    /// trailers `grpc-status: 0`, `x-trailer: done`.
    Echo,
    /// Trailers-only: `grpc-status: 7`, `grpc-message: denied`.
    Denied,
    /// Headers, then nothing for 30 s (past every call timeout here).
    Slow,
}

/// What the server saw of one call.
#[derive(Debug, Clone, Default)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    messages: Vec<Vec<u8>>,
}

fn framed(message: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}

fn deframe(mut data: Bytes) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    while data.len() >= 5 {
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        data.advance(5);
        let take = len.min(data.len());
        messages.push(data.split_to(take).to_vec());
    }
    messages
}

/// The server's response body: frames as the handler sends them; it ends when the sender goes.
struct ServerBody(tokio::sync::mpsc::Receiver<Frame<Bytes>>);

impl hyper::body::Body for ServerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

async fn answer(
    mode: Mode,
    seen: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<ServerBody>, Infallible> {
    let index = {
        let mut all = seen.lock().unwrap();
        all.push(Seen {
            path: req.uri().path().to_string(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            messages: Vec::new(),
        });
        all.len() - 1
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame<Bytes>>(64);
    let mut response = Response::new(ServerBody(rx));
    response
        .headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    match mode {
        Mode::Denied => {
            response.headers_mut().insert("grpc-status", "7".parse().unwrap());
            response.headers_mut().insert("grpc-message", "denied".parse().unwrap());
            drop(tx);
        }
        Mode::Slow => {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(tx);
            });
        }
        Mode::Echo => {
            response.headers_mut().insert("x-initial", "yes".parse().unwrap());
            let mut body = req.into_body();
            tokio::spawn(async move {
                // Each request message is answered as it arrives; the trailers follow the end
                // of the request.
                while let Some(Ok(frame)) = body.frame().await {
                    if let Ok(data) = frame.into_data() {
                        for message in deframe(data) {
                            seen.lock().unwrap()[index].messages.push(message.clone());
                            let mut reply = b"pong:".to_vec();
                            reply.extend_from_slice(&message);
                            if tx.send(Frame::data(framed(&reply))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let mut trailers = hyper::HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                trailers.insert("x-trailer", "done".parse().unwrap());
                let _ = tx.send(Frame::trailers(trailers)).await;
            });
        }
    }
    Ok(response)
}

/// A gRPC server (HTTP/2 only, h2c) on a loopback port answering every call as `mode` says,
/// keeping what each call sent (bounded: 64 connections).
async fn grpc_server(mode: Mode) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        for _ in 0..64 {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let kept = kept.clone();
            let service = hyper::service::service_fn(move |req| answer(mode, kept.clone(), req));
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(conn), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A loopback port nothing listens on.
async fn refused_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// abi-probe as route `name` (so its log lines are told apart), its `grpc_cluster` at
/// `grpc`; a request the filter lets through gets a direct `200 through`.
async fn gateway(name: &str, grpc: SocketAddr) -> RunningGateway {
    log();
    let route = Route {
        plugin_name: "probe".into(),
        fallback: Fallback::Direct {
            status: 200,
            body: "through".into(),
        },
        ..Route::new(name, wasm_path("abi_probe"), Vec::new())
    };
    let deployment = Deployment {
        upstreams: BTreeMap::from([("grpc_cluster".to_string(), grpc)]),
        ..Deployment::new(Profile::Envoy, vec![route])
    };
    start(ServeOptions::new(deployment, engine().clone()))
        .await
        .expect("gateway starts")
}

/// One HTTP/1.1 request through the gateway; the status it answered.
async fn request(gateway: SocketAddr, headers: &[(&str, &str)]) -> u16 {
    let mut text = String::from("GET /probe HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    let mut conn = tokio::net::TcpStream::connect(gateway).await.expect("connect");
    conn.write_all(text.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut got))
        .await
        .expect("the gateway answers within 20 s")
        .expect("read");
    let text = String::from_utf8_lossy(&got);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The JSON reports `probe:<event>` of route `route`, in order, waiting up to 10 s for at least
/// `at_least` of them (log lines are written by the worker thread).
async fn reports(route: &str, event: &str, at_least: usize) -> Vec<Value> {
    let route_field = format!("route=\"{route}\"");
    let marker = format!("probe:{event} ");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Value> = lines_with(&[&route_field, &marker])
            .iter()
            .filter_map(|line| {
                let json = &line[line.find(&marker)? + marker.len()..];
                serde_json::Deserializer::from_str(json)
                    .into_iter::<Value>()
                    .next()?
                    .ok()
            })
            .collect();
        if found.len() >= at_least || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_reaches_the_server_and_its_message_comes_back() {
    let (server, seen) = grpc_server(Mode::Echo).await;
    let gw = gateway("grpc_ok", server).await;
    assert_eq!(request(gw.local_addr, &[("x-probe", "grpc_call")]).await, 200);
    let response = reports("grpc_ok", "grpc_call_response", 1).await;
    assert_eq!(response.len(), 1, "{response:?}");
    assert_eq!(text(&response[0]["message"]), "pong:grpc-request");
    // A unary call's metadata is not passed on (Envoy's unary handler).
    assert!(reports("grpc_ok", "grpc_initial_metadata", 0).await.is_empty());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/probe.Service/Unary");
    assert_eq!(seen[0].messages, vec![b"grpc-request".to_vec()]);
    let header = |name: &str| seen[0].headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(header("x-md"), Some("md-value"));
    assert_eq!(header("content-type"), Some("application/grpc"));
    assert_eq!(header("te"), Some("trailers"));
    assert!(header("grpc-timeout").is_some_and(|t| t.ends_with('m')));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_status_closes_the_call_with_its_code_and_message() {
    let (server, _) = grpc_server(Mode::Denied).await;
    let gw = gateway("grpc_denied", server).await;
    assert_eq!(request(gw.local_addr, &[("x-probe", "grpc_call")]).await, 200);
    let response = reports("grpc_denied", "grpc_call_response", 1).await;
    assert_eq!(response.len(), 1, "{response:?}");
    // The SDK maps proxy_on_grpc_close of a call to on_grpc_call_response with the status.
    assert_eq!(response[0]["status_code"], 7);
    // Envoy appends the response code details (`enhancedGrpcMessage`).
    assert_eq!(text(&response[0]["status_message"]), "denied{via_upstream}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_times_the_call_out_with_envoys_status() {
    let (server, _) = grpc_server(Mode::Slow).await;
    let gw = gateway("grpc_slow", server).await;
    let status = request(gw.local_addr, &[("x-probe", "grpc_call"), ("x-timeout-ms", "300")]).await;
    assert_eq!(status, 200);
    let response = reports("grpc_slow", "grpc_call_response", 1).await;
    assert_eq!(response.len(), 1, "{response:?}");
    assert_eq!(response[0]["status_code"], 14);
    assert_eq!(
        text(&response[0]["status_message"]),
        "upstream request timeout{response_timeout}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_closes_the_call_as_unavailable() {
    let gw = gateway("grpc_refused", refused_port().await).await;
    assert_eq!(request(gw.local_addr, &[("x-probe", "grpc_call")]).await, 200);
    let response = reports("grpc_refused", "grpc_call_response", 1).await;
    assert_eq!(response.len(), 1, "{response:?}");
    assert_eq!(response[0]["status_code"], 14);
    assert!(text(&response[0]["status_message"]).starts_with("upstream connect error"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_delivers_metadata_each_message_trailers_and_close() {
    let (server, seen) = grpc_server(Mode::Echo).await;
    let gw = gateway("grpc_stream", server).await;
    assert_eq!(request(gw.local_addr, &[("x-probe", "grpc_stream")]).await, 200);
    let initial = reports("grpc_stream", "grpc_initial_metadata", 1).await;
    assert_eq!(initial.len(), 1, "{initial:?}");
    assert_eq!(text(&initial[0]["x_initial"]), "yes");
    let messages: Vec<String> = reports("grpc_stream", "grpc_message", 2)
        .await
        .iter()
        .map(|m| text(&m["message"]).to_string())
        .collect();
    assert_eq!(messages, vec!["pong:m1", "pong:m2"]);
    let trailing = reports("grpc_stream", "grpc_trailing_metadata", 1).await;
    assert_eq!(trailing.len(), 1, "{trailing:?}");
    assert!(trailing[0]["metadata"].to_string().contains("x-trailer"));
    let close = reports("grpc_stream", "grpc_close", 1).await;
    assert_eq!(close.len(), 1, "{close:?}");
    assert_eq!(close[0]["status_code"], 0);
    assert_eq!(text(&close[0]["message"]), "via_upstream");
    // Envoy answers OK to a send after the half-close (and sends nothing more).
    assert_eq!(reports("grpc_stream", "grpc_stream", 1).await[0]["send_after_end"], 0);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].path, "/probe.Service/Stream");
    assert_eq!(seen[0].messages, vec![b"m1".to_vec(), b"m2".to_vec()]);
    gw.shutdown().await;
}

/// A stream the filter closes (`proxy_grpc_close`) is half-closed, not reset: the server gets
/// the end of the filter's messages and what it still answers reaches the filter, whose close
/// callback resumes the request here (Envoy `Context::grpcClose` keeps the stream as
/// `local_closed_` until its server closes it; the e2e differential test checks it against
/// Envoy 1.40).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_filter_closed_is_half_closed_and_still_delivers() {
    let (server, seen) = grpc_server(Mode::Echo).await;
    let gw = gateway("grpc_closed", server).await;
    let headers = [("x-probe", "grpc_stream"), ("x-close", "wait")];
    assert_eq!(request(gw.local_addr, &headers).await, 200);
    assert_eq!(reports("grpc_closed", "grpc_stream", 1).await[0]["close"], 0);
    let messages: Vec<String> = reports("grpc_closed", "grpc_message", 2)
        .await
        .iter()
        .map(|m| text(&m["message"]).to_string())
        .collect();
    assert_eq!(messages, vec!["pong:m1", "pong:m2"]);
    let close = reports("grpc_closed", "grpc_close", 1).await;
    assert_eq!(close.len(), 1, "{close:?}");
    assert_eq!(close[0]["status_code"], 0);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].messages, vec![b"m1".to_vec(), b"m2".to_vec()]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_an_http2_client_with_prior_knowledge() {
    let (server, _) = grpc_server(Mode::Echo).await;
    let gw = gateway("grpc_h2c", server).await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{}/probe", gw.local_addr).parse().unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), client.get(uri))
        .await
        .expect("answered within 20 s")
        .expect("an HTTP/2 answer");
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"through");
    // The filter saw the request (its on_http_request_headers ran).
    assert!(!lines_with(&["route=\"grpc_h2c\"", "probe:"]).is_empty());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_on_an_open_stream_gets_408_and_the_stream_is_reset() {
    log();
    let (server, _) = grpc_server(Mode::Slow).await;
    let route = Route {
        plugin_name: "probe".into(),
        fallback: Fallback::Direct {
            status: 200,
            body: "through".into(),
        },
        ..Route::new("grpc_idle", wasm_path("abi_probe"), Vec::new())
    };
    let deployment = Deployment {
        upstreams: BTreeMap::from([("grpc_cluster".to_string(), server)]),
        ..Deployment::new(Profile::Envoy, vec![route])
    };
    let gw = start(ServeOptions {
        edge: host_sim::limits::EdgeLimits {
            stream_idle_timeout: Duration::from_millis(300),
            ..host_sim::limits::EdgeLimits::default()
        },
        ..ServeOptions::new(deployment, engine().clone())
    })
    .await
    .expect("gateway starts");
    // The stream has no timeout and the server never closes it: the edge's bound answers.
    assert_eq!(request(gw.local_addr, &[("x-probe", "grpc_stream")]).await, 408);
    // The filter's stream ended (its end callbacks ran) without a close for the reset call.
    assert_eq!(reports("grpc_idle", "on_done", 1).await.len(), 1);
    assert!(reports("grpc_idle", "grpc_close", 0).await.is_empty());
    gw.shutdown().await;
}
