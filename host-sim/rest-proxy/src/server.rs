//! The HTTP face: [`RestProxy`] routes requests to the v2, v3 and `/_sim/` handlers, reads bodies
//! under the size limit, resolves topics and partitions for produce requests, and serves
//! HTTP/1.1 connections with graceful shutdown.
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

use crate::codec::{ProduceRecord, APPLICATION_JSON, V2_JSON};
use crate::config::{validate_topic_name, RestProxyConfig};
use crate::error::{ApiError, ConnectionDropped, RestProxyError};
use crate::faults::{Fault, FaultAction, FaultQueue};
use crate::flavor::{Api, Flavor};
use crate::partitioner::{partition_for_key, RoundRobin};
use crate::storage::{Appended, Backend, RecordFailure, StorageError, StoredRecord};
use crate::{sim, v2, v3};

/// How long [`RestProxy::serve`] waits for open connections after shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How many bytes past the limit are read and discarded before answering 413, so a client that is
/// still sending sees the answer rather than a reset connection.
const DRAIN_AFTER_LIMIT: usize = 16 * 1024 * 1024;

/// An answer before it becomes a `hyper::Response`.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Content-Type.
    pub content_type: &'static str,
    /// Body.
    pub body: Bytes,
    /// `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Reply {
    /// A JSON reply of any serializable value.
    pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, content_type: &'static str, value: &T) -> Reply {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Reply {
            status,
            content_type,
            body: Bytes::from(body),
            allow: None,
        }
    }

    /// Confluent's error envelope for `e`.
    pub fn error(e: &ApiError, content_type: &'static str) -> Reply {
        Reply::json(e.status, content_type, &e.body())
    }
}

/// Why a produce request failed as a whole, before any record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProduceError {
    /// The topic name is illegal (Kafka's `InvalidTopicException`).
    InvalidTopic(String),
    /// The topic does not exist and auto-creation is off.
    TopicNotFound,
    /// A record asked for a partition the topic does not have.
    PartitionNotFound,
    /// The backend failed before producing (broker unreachable for metadata); applies to every
    /// record.
    Backend(RecordFailure),
}

/// What the fault queue decided for one produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultOutcome {
    /// No fault (or only a delay): produce normally.
    Proceed,
    /// Answer with this error.
    HttpError(ApiError),
    /// Fail the records this hits, produce the others.
    RecordError(InjectedFailure),
    /// Drop the connection.
    Drop,
}

/// A `record_error` fault applied to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFailure {
    /// The failure of each record hit.
    pub failure: RecordFailure,
    /// Records whose 1-based position is a multiple of this are hit.
    pub every: u32,
}

impl InjectedFailure {
    /// Whether the record at 0-based `index` is hit.
    pub fn hits(&self, index: usize) -> bool {
        (index + 1) % (self.every.max(1) as usize) == 0
    }
}

/// How a flavour's producer groups the records of one request into Kafka batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// Every record succeeds or fails alone (a producer that checks each record's size and
    /// splits refused batches): the good records of a request are written.
    PerRecord,
    /// One batch per partition, accepted or refused as a whole: a bad record fails every record
    /// of its partition, and none of them is written.
    PerPartition,
}

/// What happens to a record that asks for a partition the topic does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingPartition {
    /// The whole request is refused ([`ProduceError::PartitionNotFound`]); nothing is written.
    RejectRequest,
    /// The record fails with Kafka's UNKNOWN_TOPIC_OR_PARTITION.
    FailRecord,
}

/// How one flavour produces: see [`crate::flavor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducePlan {
    /// Batching of the records.
    pub batching: Batching,
    /// Records asking for a partition that does not exist.
    pub missing_partition: MissingPartition,
}

/// The records of one request bound for one partition, produced as one batch.
struct PartitionGroup {
    partition: i64,
    /// Their positions in the request.
    slots: Vec<usize>,
    /// The first failure already known for one of them (fails the whole batch).
    failure: Option<RecordFailure>,
    records: Vec<ProduceRecord>,
}

/// What became of one record of a produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOutcome {
    /// The partition it was (or would have been) written to; a requested partition is kept even
    /// when the topic does not have it.
    pub partition: i64,
    /// Where it landed, or why not.
    pub result: Result<Appended, RecordFailure>,
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
    config: RestProxyConfig,
    backend: Backend,
    faults: FaultQueue,
    round_robin: RoundRobin,
    schema_registry: crate::schema_registry::SchemaRegistry,
}

impl RestProxy {
    /// Validates `config` and builds the proxy; pre-configured in-memory topics exist at once,
    /// the Kafka bridge connects on first use (call [`check_backend`](Self::check_backend) to
    /// connect now).
    pub fn new(config: RestProxyConfig) -> Result<Arc<RestProxy>, RestProxyError> {
        config.validate()?;
        let backend = Backend::new(&config);
        Ok(Arc::new(RestProxy {
            config,
            backend,
            faults: FaultQueue::default(),
            round_robin: RoundRobin::default(),
            schema_registry: crate::schema_registry::SchemaRegistry::default(),
        }))
    }

    /// The configuration in force.
    pub fn config(&self) -> &RestProxyConfig {
        &self.config
    }

    /// The storage backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The fault queue (what `/_sim/faults` edits), for tests that prefer Rust to HTTP.
    pub fn faults(&self) -> &FaultQueue {
        &self.faults
    }

    /// The embedded Schema Registry (served under `/subjects` and `/schemas`).
    pub fn schema_registry(&self) -> &crate::schema_registry::SchemaRegistry {
        &self.schema_registry
    }

    /// Connects to the broker and creates the configured topics (Kafka bridge); a no-op in memory.
    pub async fn check_backend(&self) -> Result<(), RestProxyError> {
        self.backend.check().await.map_err(RestProxyError::from)
    }

    /// The records held by one in-memory partition, oldest first; `None` when the topic or
    /// partition does not exist or the backend is the Kafka bridge (use
    /// [`read_records`](Self::read_records) there).
    pub fn records(&self, topic: &str, partition: u32) -> Option<Vec<StoredRecord>> {
        match &self.backend {
            Backend::Memory(m) => m.records(topic, partition),
            Backend::Kafka(_) => None,
        }
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
        self.backend.read(topic, partition, from_offset, limit).await
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
            return Ok(crate::schema_registry::api::handle(&self.schema_registry, route, body));
        }
        let family = family_of(req.uri().path());
        let ct = family.content_type();
        let flavor = self.config.flavor;
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
            .unwrap_or_else(|| self.config.listen.to_string());
        let declared_len = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = self.read_body(body, declared_len).await;
        let ct_ref = content_type.as_deref();
        let reply = match route {
            Route::Root => Reply::json(StatusCode::OK, V2_JSON, &serde_json::json!({})),
            Route::V2Topics => v2::list_topics(self).await,
            Route::V2Topic(t) => v2::get_topic(self, &t).await,
            Route::V2Produce(t, p) => {
                return match flavor {
                    Flavor::Confluent => v2::produce(self, &t, p.as_deref(), ct_ref, body).await,
                    Flavor::Karapace => crate::flavor::karapace::produce(self, &t, p.as_deref(), ct_ref, body).await,
                    // No partition-produce route in pandaproxy: only `/topics/{t}` gets here.
                    Flavor::Redpanda => crate::flavor::redpanda::produce(self, &t, ct_ref, body).await,
                };
            }
            Route::V3Clusters => v3::list_clusters(self, &host),
            Route::V3Cluster(c) => v3::get_cluster(self, &host, &c),
            Route::V3Produce(c, t) => return v3::produce(self, &c, &t, ct_ref, body).await,
            Route::SimHealth => sim::health(self),
            Route::SimTopics => sim::topics(self).await,
            Route::SimTopic(t) => sim::delete_topic(self, &t).await,
            Route::SimRecords(t) => sim::records(self, &t, parts.uri.query()).await,
            Route::SimFaults => sim::faults(self, &parts.method, body),
            Route::SimReset => sim::reset(self),
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
        let limit = self.config.max_request_bytes;
        // pandaproxy counts a fixed overhead on top of Content-Length (see flavor::redpanda).
        let overhead = self.config.flavor.request_overhead();
        let mut body = std::pin::pin!(body);
        let mut buf = BytesMut::new();
        let mut over = declared_len.is_some_and(|n| n.saturating_add(overhead as u64) > limit as u64);
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

    /// Takes the next fault for a produce request to `topic` and applies its delay.
    pub(crate) async fn take_fault(&self, topic: &str) -> FaultOutcome {
        let Some(fault) = self.faults.take(topic) else {
            return FaultOutcome::Proceed;
        };
        tracing::info!(topic, fault = %fault.to_json(), "rest-proxy: injecting fault");
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
        match fault.action {
            FaultAction::HttpError {
                status,
                error_code,
                message,
            } => FaultOutcome::HttpError(Fault::api_error(status, error_code, &message)),
            FaultAction::RecordError {
                error_code,
                message,
                every,
            } => FaultOutcome::RecordError(InjectedFailure {
                failure: RecordFailure::injected(error_code, message),
                every,
            }),
            FaultAction::DropConnection => FaultOutcome::Drop,
            FaultAction::Delay => FaultOutcome::Proceed,
        }
    }

    /// Resolves `topic` (creating it when allowed), picks each record's partition, and stores
    /// the records as `plan` says, failing the records `injected` hits. One outcome per record, in
    /// order. Nothing is stored when this returns `Err`.
    pub async fn produce(
        &self,
        topic: &str,
        records: Vec<ProduceRecord>,
        plan: ProducePlan,
        injected: Option<&InjectedFailure>,
    ) -> Result<Vec<RecordOutcome>, ProduceError> {
        validate_topic_name(topic).map_err(ProduceError::InvalidTopic)?;
        let count = match self.backend.partition_count(topic).await {
            Ok(Some(n)) => n,
            Ok(None) if self.config.auto_create_topics => self
                .backend
                .create_topic(topic, self.config.default_partitions)
                .await
                .map_err(storage_to_produce)?,
            Ok(None) => return Err(ProduceError::TopicNotFound),
            Err(e) => return Err(storage_to_produce(e)),
        };
        // Each record's partition, and the failure already known for it (a missing partition or
        // an injected fault); records without one go to the backend.
        let mut placed: Vec<(i64, Option<RecordFailure>, ProduceRecord)> = Vec::with_capacity(records.len());
        for (i, r) in records.into_iter().enumerate() {
            let (partition, mut failure) = match (r.partition, &r.key) {
                (Some(p), _) => match u32::try_from(p) {
                    Ok(p) if p < count => (i64::from(p), None),
                    _ if plan.missing_partition == MissingPartition::RejectRequest => {
                        return Err(ProduceError::PartitionNotFound)
                    }
                    _ => (i64::from(p), Some(RecordFailure::unknown_topic_or_partition())),
                },
                (None, Some(key)) => (i64::from(partition_for_key(key, count)), None),
                (None, None) => (i64::from(self.round_robin.next(topic, count)), None),
            };
            if failure.is_none() {
                failure = injected.filter(|f| f.hits(i)).map(|f| f.failure.clone());
            }
            placed.push((partition, failure, r));
        }
        let limit = self.config.message_max_bytes;
        let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; placed.len()];
        match plan.batching {
            Batching::PerRecord => {
                let mut slots = Vec::new();
                let mut batch = Vec::new();
                for (i, (partition, failure, record)) in placed.into_iter().enumerate() {
                    match (failure, u32::try_from(partition)) {
                        (None, Ok(p)) => {
                            slots.push((i, partition));
                            batch.push((p, record));
                        }
                        (failure, _) => {
                            let failure = failure.unwrap_or_else(RecordFailure::unknown_topic_or_partition);
                            outcomes[i] = Some(RecordOutcome {
                                partition,
                                result: Err(failure),
                            })
                        }
                    }
                }
                if !batch.is_empty() {
                    let results = self.backend.append(topic, batch, limit).await;
                    for ((i, partition), result) in slots.into_iter().zip(results) {
                        outcomes[i] = Some(RecordOutcome { partition, result });
                    }
                }
            }
            Batching::PerPartition => {
                // Partitions in the order they first appear.
                let mut groups: Vec<PartitionGroup> = Vec::new();
                for (i, (partition, failure, record)) in placed.into_iter().enumerate() {
                    let g = match groups.iter().position(|g| g.partition == partition) {
                        Some(g) => g,
                        None => {
                            groups.push(PartitionGroup {
                                partition,
                                slots: Vec::new(),
                                failure: None,
                                records: Vec::new(),
                            });
                            groups.len() - 1
                        }
                    };
                    let group = &mut groups[g];
                    group.slots.push(i);
                    if group.failure.is_none() {
                        group.failure = failure;
                    }
                    group.records.push(record);
                }
                for group in groups {
                    let PartitionGroup {
                        partition,
                        slots,
                        failure,
                        records,
                    } = group;
                    let results: Vec<Result<Appended, RecordFailure>> = match (failure, u32::try_from(partition)) {
                        (None, Ok(p)) => match self.backend.append_batch(topic, p, records, limit).await {
                            Ok(appended) => appended.into_iter().map(Ok).collect(),
                            Err(f) => vec![Err(f); slots.len()],
                        },
                        (failure, _) => {
                            let f = failure.unwrap_or_else(RecordFailure::unknown_topic_or_partition);
                            vec![Err(f); slots.len()]
                        }
                    };
                    for (i, result) in slots.into_iter().zip(results) {
                        outcomes[i] = Some(RecordOutcome { partition, result });
                    }
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| RecordOutcome {
                    partition: -1,
                    result: Err(RecordFailure::fatal("record was not produced")),
                })
            })
            .collect())
    }

    /// Forgets per-topic partitioner state (after a topic is deleted).
    pub(crate) fn forget_topic(&self, topic: &str) {
        self.round_robin.forget(topic);
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
            tracing::info!(%addr, backend = self.backend.kind(), "rest-proxy listening");
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

fn storage_to_produce(e: StorageError) -> ProduceError {
    match e {
        StorageError::TopicNotFound(_) => ProduceError::TopicNotFound,
        StorageError::PartitionNotFound { .. } => ProduceError::PartitionNotFound,
        StorageError::Kafka(f) => ProduceError::Backend(f),
        StorageError::Unsupported(what) => {
            ProduceError::Backend(RecordFailure::fatal(format!("{what} is not supported")))
        }
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
