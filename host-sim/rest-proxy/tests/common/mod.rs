//! Shared helpers of the integration tests: start a REST proxy on 127.0.0.1:0 and speak real
//! HTTP/1.1 to it with a hyper client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rest_proxy::{RestProxy, RestProxyConfig, TopicSpec};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const BINARY_V2: &str = "application/vnd.kafka.binary.v2+json";
pub const JSON_V2: &str = "application/vnd.kafka.json.v2+json";
pub const V2_RESPONSE: &str = "application/vnd.kafka.v2+json";
pub const JSON: &str = "application/json";

/// A running proxy.
pub struct TestServer {
    pub addr: SocketAddr,
    pub proxy: Arc<RestProxy>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("serve failed: {e}"),
                Err(e) => panic!("serve task failed: {e}"),
            }
        }
    }

    pub async fn post(&self, path: &str, content_type: &str, body: &str) -> HttpResponse {
        send(self.addr, Method::POST, path, Some(content_type), body.to_string())
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    pub async fn get(&self, path: &str) -> HttpResponse {
        send(self.addr, Method::GET, path, None, String::new())
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn delete(&self, path: &str) -> HttpResponse {
        send(self.addr, Method::DELETE, path, None, String::new())
            .await
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}"))
    }

    /// The records of a topic read back through `/_sim/`.
    pub async fn read_back(&self, topic: &str, query: &str) -> Vec<Value> {
        let r = self.get(&format!("/_sim/topics/{topic}/records?{query}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        match r.json().get("records") {
            Some(Value::Array(items)) => items.clone(),
            other => panic!("no records in {other:?}"),
        }
    }
}

/// A memory-backed config with the given topics and auto-creation setting.
pub fn memory_config(topics: &[&str], auto_create: bool) -> RestProxyConfig {
    RestProxyConfig {
        auto_create_topics: auto_create,
        topics: topics
            .iter()
            .map(|t| t.parse::<TopicSpec>().unwrap_or_else(|e| panic!("topic {t}: {e}")))
            .collect(),
        ..RestProxyConfig::default()
    }
}

/// Starts a proxy on an ephemeral loopback port.
pub async fn start(config: RestProxyConfig) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
    let proxy =
        RestProxy::new(RestProxyConfig { listen: addr, ..config }).unwrap_or_else(|e| panic!("RestProxy::new: {e}"));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(Arc::clone(&proxy).serve(listener, async move {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        proxy,
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts Confluent's error envelope.
    pub fn assert_error(&self, status: u16, error_code: i64) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        assert_eq!(v["error_code"], Value::from(error_code), "body: {}", self.text());
        let obj = v.as_object().unwrap_or_else(|| panic!("not an object"));
        assert_eq!(obj.len(), 2, "envelope has exactly error_code and message: {v}");
        v["message"]
            .as_str()
            .unwrap_or_else(|| panic!("message is not a string: {v}"))
            .to_string()
    }
}

/// Sends one request on a fresh connection; `Err` when the connection fails or is dropped.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Result<HttpResponse, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string());
    if let Some(ct) = content_type {
        builder = builder.header(CONTENT_TYPE, ct);
    }
    let req = builder.body(Full::new(body.into())).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(HttpResponse { status, headers, body })
}

/// Base64 of a string.
pub fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
