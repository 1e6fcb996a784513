//! The HTTP/1.1 client `serve` uses for the filter's callouts and for passing requests through:
//! hyper-util's pooled client over plain TCP, so a callout reuses connections as Envoy's
//! cluster connection pools do.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest upstream response body read (Envoy's default buffer limit for callouts is smaller;
/// this only protects the gateway).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A request built from proxy-wasm style headers (`:method`, `:path`, `:authority` plus the rest).
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    method: String,
    path: String,
    authority: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl UpstreamRequest {
    /// Splits pseudo-headers from the others.
    pub fn from_call_headers(headers: &[(String, String)], body: Vec<u8>) -> Self {
        let pseudo = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        UpstreamRequest {
            method: pseudo(":method").unwrap_or_else(|| "GET".into()),
            path: pseudo(":path").unwrap_or_else(|| "/".into()),
            authority: pseudo(":authority"),
            headers: headers
                .iter()
                .filter(|(k, _)| {
                    !k.starts_with(':')
                        && !k.eq_ignore_ascii_case("content-length")
                        && !k.eq_ignore_ascii_case("transfer-encoding")
                })
                .cloned()
                .collect(),
            body,
        }
    }
}

/// A response, body read whole.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    /// Status.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// A pooled client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl Client {
    /// Sends `request` to `target` (`host:port`).
    pub async fn send(&self, target: &str, request: UpstreamRequest) -> anyhow::Result<UpstreamResponse> {
        let uri: hyper::Uri = format!("http://{target}{}", request.path).parse()?;
        let mut builder = hyper::Request::builder().method(request.method.as_str()).uri(uri);
        if let Some(authority) = &request.authority {
            builder = builder.header(hyper::header::HOST, authority);
        }
        for (k, v) in &request.headers {
            if k.eq_ignore_ascii_case("host") && request.authority.is_some() {
                continue;
            }
            builder = builder.header(k.as_str(), v.as_str());
        }
        let response = self
            .inner
            .request(builder.body(Full::new(Bytes::from(request.body)))?)
            .await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading upstream body: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(UpstreamResponse { status, headers, body })
    }
}
