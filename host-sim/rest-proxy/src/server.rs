//! The HTTP face: [`RestProxy`] routes requests to the v2, v3 and `/_sim/` handlers (giving them
//! its [`Cluster`]), reads bodies under the size limit, and serves HTTP/1.1 connections with
//! graceful shutdown.
//!
//! Routing follows Jersey's order in kafka-rest: unknown path → 404, known path with another
//! method → 405, Content-Type the resource does not consume → 415, then the body (413 when over
//! the limit), then the resource's own checks.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::cluster::Cluster;
use crate::codec::{APPLICATION_JSON, V2_JSON};
use crate::config::{ConfigError, RestProxyConfig};
use crate::error::{ApiError, ConnectionDropped};
use crate::faults::FaultQueue;
use crate::flavor::confluent::{v2, v3};
use crate::flavor::{Api, Flavor};
use crate::model::StoredRecord;
use crate::reply::Reply;
use crate::sim;
use crate::storage::{Backend, StorageError};

/// How long [`RestProxy::serve`] waits for open connections after shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How many bytes past the limit are read and discarded before answering 413, so a client that is
/// still sending sees the answer rather than a reset connection.
const DRAIN_AFTER_LIMIT: usize = 16 * 1024 * 1024;

/// Errors of the Rust API of the REST proxy.
///
/// Each message is complete in itself and names no `source()`: a caller that prints the error
/// chain (anyhow's `{:#}`) would otherwise print the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum RestProxyError {
    /// The configuration was rejected.
    #[error("invalid REST proxy configuration: {0}")]
    Config(ConfigError),
    /// The storage backend failed (Kafka unreachable, broker error).
    #[error("REST proxy storage: {0}")]
    Storage(StorageError),
    /// Accepting connections failed.
    #[error("REST proxy listener: {0}")]
    Io(std::io::Error),
}

impl From<ConfigError> for RestProxyError {
    fn from(e: ConfigError) -> Self {
        RestProxyError::Config(e)
    }
}

impl From<StorageError> for RestProxyError {
    fn from(e: StorageError) -> Self {
        RestProxyError::Storage(e)
    }
}

impl From<std::io::Error> for RestProxyError {
    fn from(e: std::io::Error) -> Self {
        RestProxyError::Io(e)
    }
}

/// Which API a path belongs to: decides the Content-Type of error answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V2,
    Json,
}

impl Family {
    fn content_type(self) -> &'static str {
        match self {
            Family::V2 => V2_JSON,
            Family::Json => APPLICATION_JSON,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Root,
    V2Topics,
    V2Topic(String),
    V2Produce(String, Option<String>),
    V3Clusters,
    V3Cluster(String),
    V3Produce(String, String),
    SimHealth,
    SimTopics,
    SimTopic(String),
    SimRecords(String),
    SimFaults,
    SimReset,
}

/// Maps a path and method to a route; the `Err` is the 404 or 405 to answer.
fn route(method: &Method, path: &str) -> Result<Route, (ApiError, Option<&'static str>)> {
    let trimmed = if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    // Confluent Cloud serves v3 under `/kafka/v3/...`; accept both.
    let trimmed = match trimmed.strip_prefix("/kafka") {
        Some(rest) if rest.starts_with("/v3/") || rest == "/v3" => rest,
        _ => trimmed,
    };
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    let s = |i: usize| segs[i].to_string();
    let (route, allowed): (Route, &'static [Method]) = match segs.as_slice() {
        [""] => (Route::Root, &[Method::GET]),
        ["topics"] => (Route::V2Topics, &[Method::GET]),
        ["topics", _] => {
            if method == Method::POST {
                (Route::V2Produce(s(1), None), &[Method::GET, Method::POST])
            } else {
                (Route::V2Topic(s(1)), &[Method::GET, Method::POST])
            }
        }
        ["topics", _, "partitions", _] => (Route::V2Produce(s(1), Some(s(3))), &[Method::POST]),
        ["v3", "clusters"] => (Route::V3Clusters, &[Method::GET]),
        ["v3", "clusters", _] => (Route::V3Cluster(s(2)), &[Method::GET]),
        ["v3", "clusters", _, "topics", _, "records"] => (Route::V3Produce(s(2), s(4)), &[Method::POST]),
        ["_sim", "health"] => (Route::SimHealth, &[Method::GET]),
        ["_sim", "topics"] => (Route::SimTopics, &[Method::GET]),
        ["_sim", "topics", _] => (Route::SimTopic(s(2)), &[Method::DELETE]),
        ["_sim", "topics", _, "records"] => (Route::SimRecords(s(2)), &[Method::GET]),
        ["_sim", "faults"] => (Route::SimFaults, &[Method::GET, Method::POST, Method::DELETE]),
        ["_sim", "reset"] => (Route::SimReset, &[Method::POST]),
        _ => return Err((ApiError::no_such_path(), None)),
    };
    if allowed.contains(method) || (method == Method::HEAD && allowed.contains(&Method::GET)) {
        Ok(route)
    } else {
        let allow = match allowed {
            [Method::GET] => "GET, HEAD, OPTIONS",
            [Method::POST] => "POST, OPTIONS",
            [Method::DELETE] => "DELETE, OPTIONS",
            [Method::GET, Method::POST] => "GET, HEAD, POST, OPTIONS",
            _ => "GET, HEAD, POST, DELETE, OPTIONS",
        };
        Err((ApiError::method_not_allowed(), Some(allow)))
    }
}

impl Route {
    /// The part of the API the route belongs to.
    fn api(&self) -> Api {
        match self {
            Route::Root => Api::Root,
            Route::V2Topics | Route::V2Topic(_) | Route::V2Produce(_, None) => Api::V2Topics,
            Route::V2Produce(_, Some(_)) => Api::V2PartitionProduce,
            Route::V3Clusters | Route::V3Cluster(_) | Route::V3Produce(..) => Api::V3,
            Route::SimHealth
            | Route::SimTopics
            | Route::SimTopic(_)
            | Route::SimRecords(_)
            | Route::SimFaults
            | Route::SimReset => Api::Sim,
        }
    }
}

/// The API a path that matched no route would belong to, to pick whose 404 to answer.
fn api_of_unrouted(path: &str) -> Api {
    if path.starts_with("/_sim/") {
        Api::Sim
    } else if path.starts_with("/topics") || path == "/" {
        Api::V2Topics
    } else {
        Api::V3
    }
}

fn family_of(path: &str) -> Family {
    if path == "/" || path.starts_with("/topics") {
        Family::V2
    } else {
        Family::Json
    }
}

/// The embedded Kafka REST proxy. Build it with [`RestProxy::new`], then either
/// [`serve`](RestProxy::serve) it on a listener or call [`handle`](RestProxy::handle) from
/// another server.
#[derive(Debug)]
pub struct RestProxy {
    cluster: Cluster,
}

impl RestProxy {
    /// Validates `config` and builds the proxy; pre-configured in-memory topics exist at once,
    /// the Kafka bridge connects on first use (call [`check_backend`](Self::check_backend) to
    /// connect now).
    pub fn new(config: RestProxyConfig) -> Result<Arc<RestProxy>, RestProxyError> {
        Ok(Arc::new(RestProxy {
            cluster: Cluster::new(config)?,
        }))
    }

    /// The state and produce pipeline behind the handlers.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The configuration in force.
    pub fn config(&self) -> &RestProxyConfig {
        self.cluster.config()
    }

    /// The storage backend.
    pub fn backend(&self) -> &Backend {
        self.cluster.backend()
    }

    /// The fault queue (what `/_sim/faults` edits), for tests that prefer Rust to HTTP.
    pub fn faults(&self) -> &FaultQueue {
        self.cluster.faults()
    }

    /// The embedded Schema Registry (served under `/subjects` and `/schemas`).
    pub fn schema_registry(&self) -> &crate::schema_registry::SchemaRegistry {
        self.cluster.schema_registry()
    }

    /// Connects to the broker and creates the configured topics (Kafka bridge); a no-op in memory.
    pub async fn check_backend(&self) -> Result<(), RestProxyError> {
        self.cluster.backend().check().await.map_err(RestProxyError::from)
    }

    /// The records held by one in-memory partition, oldest first; `None` when the topic or
    /// partition does not exist or the backend is the Kafka bridge (use
    /// [`read_records`](Self::read_records) there).
    pub fn records(&self, topic: &str, partition: u32) -> Option<Vec<StoredRecord>> {
        self.cluster.records(topic, partition)
    }

    /// Up to `limit` records of `topic` from `from_offset` on, of one partition or of every
    /// partition in turn; works with both backends.
    pub async fn read_records(
        &self,
        topic: &str,
        partition: Option<u32>,
        from_offset: i64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        self.cluster.read_records(topic, partition, from_offset, limit).await
    }

    /// Answers one request. `Err(ConnectionDropped)` means a fault asked for the connection to be
    /// closed without an answer; an embedding server must do so.
    pub async fn handle<B>(&self, req: Request<B>) -> Result<Response<Full<Bytes>>, ConnectionDropped>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let reply = self.dispatch(req).await?;
        tracing::debug!(%method, %path, status = reply.status.as_u16(), "rest-proxy request");
        let mut builder = Response::builder()
            .status(reply.status)
            .header(CONTENT_TYPE, reply.content_type);
        if let Some(allow) = reply.allow {
            builder = builder.header(ALLOW, allow);
        }
        let body = if method == Method::HEAD {
            Bytes::new()
        } else {
            reply.body
        };
        Ok(builder.body(Full::new(body)).unwrap_or_else(|_| {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }))
    }

    async fn dispatch<B>(&self, req: Request<B>) -> Result<Reply, ConnectionDropped>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        if crate::schema_registry::api::is_registry_path(req.uri().path()) {
            let route = crate::schema_registry::api::route(req.method(), req.uri().path());
            let body = self.read_body(req.into_body(), None).await;
            return Ok(crate::schema_registry::api::handle(
                self.cluster.schema_registry(),
                route,
                body,
            ));
        }
        let family = family_of(req.uri().path());
        let ct = family.content_type();
        let flavor = self.cluster.config().flavor;
        let route = match route(req.method(), req.uri().path()) {
            Ok(r) if flavor.serves(r.api()) => r,
            Ok(_) => {
                // A route this flavour does not have: its own 404.
                let _ = self.read_body(req.into_body(), None).await;
                return Ok(flavor.not_found());
            }
            Err((e, allow)) => {
                let served = e.status != StatusCode::NOT_FOUND && flavor.serves(api_of_unrouted(req.uri().path()));
                // Drain the body so a keep-alive connection stays usable.
                let _ = self.read_body(req.into_body(), None).await;
                if !served && flavor != Flavor::Confluent {
                    return Ok(flavor.not_found());
                }
                let mut reply = Reply::error(&e, ct);
                reply.allow = allow;
                return Ok(reply);
            }
        };
        let (parts, body) = req.into_parts();
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let host = parts
            .headers
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| self.cluster.config().listen.to_string());
        let declared_len = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = self.read_body(body, declared_len).await;
        let ct_ref = content_type.as_deref();
        let reply = match route {
            Route::Root => Reply::json(StatusCode::OK, V2_JSON, &serde_json::json!({})),
            Route::V2Topics => v2::list_topics(&self.cluster).await,
            Route::V2Topic(t) => v2::get_topic(&self.cluster, &t).await,
            Route::V2Produce(t, p) => {
                return flavor.produce_v2(&self.cluster, &t, p.as_deref(), ct_ref, body).await;
            }
            Route::V3Clusters => v3::list_clusters(&self.cluster, &host),
            Route::V3Cluster(c) => v3::get_cluster(&self.cluster, &host, &c),
            Route::V3Produce(c, t) => return v3::produce(&self.cluster, &c, &t, ct_ref, body).await,
            Route::SimHealth => sim::health(&self.cluster),
            Route::SimTopics => sim::topics(&self.cluster).await,
            Route::SimTopic(t) => sim::delete_topic(&self.cluster, &t).await,
            Route::SimRecords(t) => sim::records(&self.cluster, &t, parts.uri.query()).await,
            Route::SimFaults => sim::faults(&self.cluster, &parts.method, body),
            Route::SimReset => sim::reset(&self.cluster),
        };
        Ok(reply)
    }

    /// Reads a body up to `max_request_bytes`; past it, drains a bounded amount more and answers
    /// 413.
    async fn read_body<B>(&self, body: B, declared_len: Option<u64>) -> Result<Bytes, ApiError>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let limit = self.cluster.config().max_request_bytes;
        // pandaproxy counts a fixed overhead on top of Content-Length (see flavor::redpanda).
        let overhead = self.cluster.config().flavor.request_overhead();
        let mut body = std::pin::pin!(body);
        let mut over = declared_len.is_some_and(|n| n.saturating_add(overhead as u64) > limit as u64);
        // The declared length, when within the limit, sizes the buffer at once: growing it frame
        // by frame copied a batch's body several times over into ever larger fresh allocations
        // (their page faults were most of the difference; the `produce_batch` example measures
        // it). At most the limit is reserved, and a body shorter than declared only wastes it.
        let mut buf = match declared_len {
            Some(n) if !over => BytesMut::with_capacity(n as usize),
            _ => BytesMut::new(),
        };
        let mut drained = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => return Err(ApiError::bad_request(format!("Error reading the request body: {e}"))),
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if over {
                drained += data.len();
                if drained > DRAIN_AFTER_LIMIT {
                    break;
                }
                continue;
            }
            if buf.len() + data.len() + overhead > limit {
                over = true;
                drained = buf.len() + data.len();
                buf.clear();
                continue;
            }
            buf.extend_from_slice(&data);
        }
        if over {
            Err(ApiError::too_large(limit))
        } else {
            Ok(buf.freeze())
        }
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` completes, then lets open connections
    /// finish for up to [`SHUTDOWN_GRACE`].
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, backend = self.cluster.backend().kind(), "rest-proxy listening");
        }
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let proxy = Arc::clone(&self);
                        let mut stop = stop_rx.clone();
                        tasks.spawn(async move {
                            let svc = service_fn(move |req| {
                                let proxy = Arc::clone(&proxy);
                                async move { proxy.handle(req).await }
                            });
                            let conn = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc);
                            let mut conn = std::pin::pin!(conn);
                            tokio::select! {
                                r = conn.as_mut() => {
                                    if let Err(e) = r {
                                        tracing::debug!(error = %e, "rest-proxy connection ended");
                                    }
                                }
                                () = async { drop(stop.wait_for(|s| *s).await) } => {
                                    conn.as_mut().graceful_shutdown();
                                    let _ = conn.await;
                                }
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "rest-proxy accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!("rest-proxy: connections still open after the grace period, closing them");
            tasks.abort_all();
        }
        tracing::info!("rest-proxy stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(method: Method, path: &str) -> Route {
        match route(&method, path) {
            Ok(r) => r,
            Err((e, _)) => panic!("{method} {path}: {e}"),
        }
    }

    fn err(method: Method, path: &str) -> (u16, Option<&'static str>) {
        match route(&method, path) {
            Ok(r) => panic!("{method} {path}: expected an error, got {r:?}"),
            Err((e, allow)) => (e.status.as_u16(), allow),
        }
    }

    #[test]
    fn routes_confluent_paths() {
        assert_eq!(ok(Method::POST, "/topics/t"), Route::V2Produce("t".into(), None));
        assert_eq!(ok(Method::POST, "/topics/t/"), Route::V2Produce("t".into(), None));
        assert_eq!(ok(Method::GET, "/topics/t"), Route::V2Topic("t".into()));
        assert_eq!(
            ok(Method::POST, "/topics/t/partitions/2"),
            Route::V2Produce("t".into(), Some("2".into()))
        );
        assert_eq!(
            ok(Method::POST, "/v3/clusters/c/topics/t/records"),
            Route::V3Produce("c".into(), "t".into())
        );
        assert_eq!(
            ok(Method::POST, "/kafka/v3/clusters/c/topics/t/records"),
            Route::V3Produce("c".into(), "t".into())
        );
        assert_eq!(ok(Method::GET, "/"), Route::Root);
        assert_eq!(ok(Method::HEAD, "/topics"), Route::V2Topics);
        assert_eq!(ok(Method::DELETE, "/_sim/faults"), Route::SimFaults);
    }

    /// A body in the frames given, as hyper hands over what it read from a socket.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|chunk| Ok(hyper::body::Frame::data(chunk))))
        }
    }

    async fn produce_in_frames(proxy: &RestProxy, body: &[u8], frame: usize, declared: Option<usize>) -> Vec<u8> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/topics/framed")
            .header(CONTENT_TYPE, "application/vnd.kafka.binary.v2+json");
        if let Some(n) = declared {
            request = request.header(CONTENT_LENGTH, n);
        }
        let frames = body.chunks(frame).map(Bytes::copy_from_slice).collect();
        let response = proxy
            .handle(request.body(Frames(frames)).unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap_or_else(|_| panic!("connection dropped"));
        assert_eq!(response.status(), StatusCode::OK);
        let answer = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| match e {})
            .to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_else(|e| panic!("{e}"));
        let (Some(partition), Some(offset)) = (
            answer["offsets"][0]["partition"].as_u64(),
            answer["offsets"][0]["offset"].as_i64(),
        ) else {
            panic!("no offset in {answer}");
        };
        let stored = proxy.records("framed", partition as u32).unwrap_or_default();
        let record = stored
            .iter()
            .find(|r| r.offset == offset)
            .unwrap_or_else(|| panic!("offset {offset} not stored"));
        record.value.as_ref().map(|v| v.to_vec()).unwrap_or_default()
    }

    #[tokio::test]
    async fn a_body_in_many_frames_is_read_whole_whatever_length_it_declares() {
        let proxy = RestProxy::new(RestProxyConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let value: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let body = format!(
            r#"{{"records":[{{"value":"{}"}}]}}"#,
            crate::codec::encode_base64(&value)
        );
        // The buffer is sized from Content-Length when there is one; a declared length shorter
        // or longer than the body, or none, must not change what is read.
        for declared in [Some(body.len()), Some(10), Some(body.len() * 2), None] {
            assert_eq!(
                produce_in_frames(&proxy, body.as_bytes(), 700, declared).await,
                value,
                "{declared:?}"
            );
        }
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(err(Method::GET, "/nope"), (404, None));
        assert_eq!(err(Method::GET, "/topics/t/x"), (404, None));
        assert_eq!(err(Method::GET, "/kafka/topics"), (404, None));
        assert_eq!(
            err(Method::DELETE, "/topics/t"),
            (405, Some("GET, HEAD, POST, OPTIONS"))
        );
        assert_eq!(
            err(Method::GET, "/v3/clusters/c/topics/t/records"),
            (405, Some("POST, OPTIONS"))
        );
        assert_eq!(err(Method::POST, "/topics"), (405, Some("GET, HEAD, OPTIONS")));
    }
}
