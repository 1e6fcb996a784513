//! The HTTP/1.1 client `serve` uses (with the HTTP/2 one for gRPC calls, [`super::grpc`]) for the filter's callouts and for passing requests through:
//! hyper-util's pooled client over plain TCP, so a callout reuses connections as Envoy's
//! cluster connection pools do.

use super::grpc::GrpcClient;
use crate::limits::MAX_CALLOUT_RESPONSE_BYTES;
use crate::profile::{CalloutFailure, Profile};
use crate::state::HttpCall;
use crate::vm::HttpCallReply;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

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
    /// The HTTP/2 client for gRPC calls.
    grpc: GrpcClient,
}

impl Default for Client {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector),
            grpc: GrpcClient::default(),
        }
    }
}

impl Client {
    /// The HTTP/2 client gRPC calls go through ([`super::grpc`]).
    pub fn grpc(&self) -> &GrpcClient {
        &self.grpc
    }

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
        let body = Limited::new(response.into_body(), MAX_CALLOUT_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading upstream body: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(UpstreamResponse { status, headers, body })
    }
}

/// A guest's HTTP callout as `serve` sends it, for a route's VM and a WasmService's alike.
pub struct Callout {
    /// Where it goes: the cluster's address (Envoy) or the call's own `host:port` (Kong); `None`
    /// when the cluster is unknown.
    target: Option<String>,
    /// `:scheme https`: serve has no TLS client, so the call fails as a broken connection.
    tls: bool,
    request: UpstreamRequest,
    /// What is left of the call's deadline, as the VM handed it out.
    timeout: Option<Duration>,
    /// The host whose router sends it (it may add a header to the reply).
    profile: Profile,
}

impl Callout {
    /// Prepares `call`, which has `time_left` before its deadline ([`crate::NewCall::Http`]),
    /// with the headers the profile's host adds to a callout
    /// ([`crate::profile::HostBehaviour::callout_request_headers`]). The VM's deadline (the profile's
    /// `effective_call_timeout_ms`, counted from when the guest made the call) is the only
    /// timeout: at that moment the request is dropped, which closes its connection, as Envoy
    /// resets the upstream request when a callout times out; no timeout (Envoy's 0) waits as
    /// long as the upstream takes.
    pub fn new(
        profile: Profile,
        upstreams: &BTreeMap<String, SocketAddr>,
        call: HttpCall,
        time_left: Option<Duration>,
    ) -> Self {
        let target = profile.callout_upstream().target(upstreams, &call.upstream);
        let mut headers = call.headers.clone();
        headers.extend(profile.callout_request_headers(profile.effective_call_timeout_ms(call.timeout_ms)));
        Callout {
            target,
            tls: call.header(":scheme") == Some("https"),
            request: UpstreamRequest::from_call_headers(&headers, call.body),
            timeout: time_left,
            profile,
        }
    }

    /// Sends it with `client` and returns the reply the guest gets.
    pub async fn send(self, client: Client) -> HttpCallReply {
        let target = match (self.target, self.tls) {
            (_, true) => {
                tracing::warn!("host-sim serve has no TLS client: callout with :scheme https fails");
                return HttpCallReply::Failure(CalloutFailure::BrokenConnection);
            }
            (None, false) => return HttpCallReply::Failure(CalloutFailure::BrokenConnection),
            (Some(target), false) => target,
        };
        let started = std::time::Instant::now();
        let sent = client.send(&target, self.request);
        let outcome = match self.timeout {
            Some(timeout) => tokio::time::timeout(timeout, sent).await,
            None => Ok(sent.await),
        };
        match outcome {
            Ok(Ok(mut resp)) => {
                // A callout goes through the host's router as a proxied request does, so its
                // reply carries the same added header (Envoy's async client runs the router
                // filter; ENVOY-1.40 in e2e test_lifecycle_differential.py: the reply to a
                // tick's callout ends with `x-envoy-upstream-service-time`).
                resp.headers
                    .extend(self.profile.upstream_response_header(started.elapsed()));
                HttpCallReply::Response {
                    status: resp.status,
                    headers: resp.headers,
                    body: resp.body,
                    trailers: Vec::new(),
                }
            }
            Ok(Err(_)) => HttpCallReply::Failure(CalloutFailure::BrokenConnection),
            Err(_) => HttpCallReply::Failure(CalloutFailure::Timeout),
        }
    }
}
