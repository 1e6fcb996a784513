//! Host state: everything the host keeps for one VM, stored in the wasmtime `Store` and reached
//! from the ABI glue through `Caller`.
//!
//! This layer holds data and the rules that are the same on every host (spec semantics of
//! buffers, maps, shared data, queues and metrics). Host differences are asked of the
//! [`Profile`]; the order of guest callbacks belongs to the driver.

use crate::abi::{LogLevel, MetricType, Pairs, Status};
use crate::limits::Limits;
use crate::memory::GuestMemory;
use crate::profile::{Callback, Profile};
use crate::wasi::StdioCapture;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use wasmtime::StoreLimits;
use wasmtime_wasi::p1::WasiP1Ctx;

/// One log line produced by the guest (`proxy_log`, or WASI stdout/stderr).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// Its level (stdout is `info`, stderr is `error`, per spec `fd_write`).
    pub level: LogLevel,
    /// The message.
    pub message: String,
    /// The context the guest was running in, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_id: Option<u32>,
}

/// A response the filter sent itself with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u32,
    /// Status code details (Envoy's response code details).
    pub details: String,
    /// Response headers as the filter gave them.
    pub headers: Vec<(String, String)>,
    /// Response body.
    #[serde(with = "crate::transcript::bytes_as_text")]
    pub body: Vec<u8>,
    /// gRPC status, when the filter set one (`-1`/absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<i32>,
}

/// A `proxy_http_call` the guest made, waiting for an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpCall {
    /// The token the guest got back.
    pub token: u32,
    /// The context that made the call (its response is delivered there).
    pub context_id: u32,
    /// The upstream as the guest named it (Envoy cluster, Kong `host:port`).
    pub upstream: String,
    /// Request headers, pseudo-headers included.
    pub headers: Vec<(String, String)>,
    /// Request body.
    #[serde(with = "crate::transcript::bytes_as_text")]
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: Vec<(String, String)>,
    /// The timeout the guest asked for, in milliseconds.
    pub timeout_ms: u32,
    /// When the host gives up on the call (virtual or real clock, nanoseconds), if ever.
    #[serde(skip)]
    pub deadline_ns: Option<u64>,
}

impl HttpCall {
    /// A request header by name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Whether a gRPC token came from `proxy_grpc_call` or `proxy_grpc_stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrpcKind {
    /// A unary call.
    Call,
    /// A stream.
    Stream,
}

/// A gRPC call or stream the guest opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrpcCall {
    /// The token.
    pub token: u32,
    /// Unary call or stream.
    pub kind: GrpcKind,
    /// The context that opened it.
    pub context_id: u32,
    /// Upstream (cluster) name.
    pub upstream: String,
    /// Service name.
    pub service: String,
    /// Method name.
    pub method: String,
    /// Initial metadata.
    pub initial_metadata: Vec<(String, String)>,
    /// Messages sent so far (the unary request, or each `proxy_grpc_send`).
    #[serde(skip)]
    pub messages: Vec<Vec<u8>>,
    /// Whether the guest half-closed the stream (`end_stream`).
    pub end_stream_sent: bool,
    /// Whether the guest cancelled it.
    pub cancelled: bool,
    /// Whether the guest closed it.
    pub closed: bool,
    /// Timeout for unary calls, in milliseconds.
    pub timeout_ms: Option<u32>,
}

/// Data only readable during a particular callback.
#[derive(Debug, Default)]
pub(crate) struct CallbackData {
    /// `HTTP_CALL_RESPONSE_HEADERS` / `GRPC_CALL_INITIAL_METADATA` / `GRPC_CALL_TRAILING_METADATA`.
    pub headers: Option<Pairs>,
    /// `HTTP_CALL_RESPONSE_TRAILERS`.
    pub trailers: Option<Pairs>,
    /// `HTTP_CALL_RESPONSE_BODY` / `GRPC_CALL_MESSAGE` / `FOREIGN_FUNCTION_ARGUMENTS` /
    /// `PLUGIN_CONFIGURATION` / `VM_CONFIGURATION`.
    pub buffer: Option<Vec<u8>>,
    /// What `proxy_get_status` answers.
    pub status: Option<(u32, Vec<u8>)>,
}

/// The callback the guest is running now.
#[derive(Debug)]
pub(crate) struct Active {
    pub callback: Callback,
    /// The context host functions act on (`proxy_set_effective_context` changes it).
    pub effective_id: u32,
    pub data: CallbackData,
}

/// One direction (request or response) of an HTTP stream.
#[derive(Debug, Default)]
pub(crate) struct Direction {
    pub headers: Option<Pairs>,
    pub trailers: Option<Pairs>,
    /// The body buffer the guest sees now (cumulative while paused).
    pub body: Vec<u8>,
    /// Whether the body buffer is available to the guest at all.
    pub body_available: bool,
    /// What the filter let through so far.
    pub forwarded_body: Vec<u8>,
    pub headers_forwarded: bool,
    pub trailers_forwarded: bool,
    /// Set when the guest paused in this phase and has not resumed.
    pub paused_in: Option<Callback>,
    /// The guest asked to resume this direction (`proxy_continue_stream`).
    pub resume_requested: bool,
    /// Body chunks and trailers waiting while the direction is paused.
    pub queued: VecDeque<Queued>,
    /// The guest saw end of stream.
    pub complete: bool,
    /// Kong buffers the whole request body before delivering it once.
    pub staged_body: Vec<u8>,
}

/// Input that arrived while a direction was paused.
#[derive(Debug)]
pub(crate) enum Queued {
    Body(Vec<u8>, bool),
    Trailers(Pairs),
}

/// An HTTP stream context.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub root_id: u32,
    pub request: Direction,
    pub response: Direction,
    /// Sent to the client (the stream is over for the filter's request path).
    pub local_response: Option<LocalResponse>,
    /// Asked for during the current callback; Envoy sends it when the callback returns.
    pub pending_local_response: Option<LocalResponse>,
    /// The guest reset the stream with `proxy_close_stream`.
    pub reset: bool,
    /// Stream facts the properties are computed from.
    pub info: StreamInfo,
    /// Properties the guest set on this stream (Envoy keeps them in the stream's filter state).
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
}

impl StreamState {
    /// The request (`true`) or response direction.
    pub fn direction_mut(&mut self, request: bool) -> &mut Direction {
        if request {
            &mut self.request
        } else {
            &mut self.response
        }
    }

    /// A new stream of root context `root_id`. (Built field by field: a `..Default::default()`
    /// would build and drop a default `StreamInfo`, three allocations per request.)
    pub fn new(root_id: u32, info: StreamInfo) -> Self {
        StreamState {
            root_id,
            request: Direction::default(),
            response: Direction::default(),
            local_response: None,
            pending_local_response: None,
            reset: false,
            info,
            properties: HashMap::new(),
        }
    }

    /// Whether the host still calls the filter for request/response input.
    pub fn ended(&self) -> bool {
        self.local_response.is_some() || self.reset
    }
}

/// Facts about the downstream connection and request that hosts expose as properties.
#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    /// Client address.
    pub source_address: String,
    /// Client port.
    pub source_port: u16,
    /// Listener address.
    pub destination_address: String,
    /// Listener port.
    pub destination_port: u16,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: String,
    /// A request id (Envoy's `x-request-id`).
    pub request_id: String,
}

impl Default for StreamInfo {
    fn default() -> Self {
        StreamInfo {
            source_address: "127.0.0.1".into(),
            source_port: 50000,
            destination_address: "127.0.0.1".into(),
            destination_port: 8000,
            protocol: "HTTP/1.1".into(),
            request_id: String::new(),
        }
    }
}

/// A root (plugin) context.
#[derive(Debug, Default)]
pub(crate) struct RootState {
    pub root_id: String,
    /// `PLUGIN_CONFIGURATION`, kept to configure a fresh instance after a trap (Kong).
    pub configuration: Vec<u8>,
    pub tick_period_ms: u32,
    pub next_tick_ns: Option<u64>,
    /// `proxy_on_done` returned false and the guest has not called `proxy_done` yet.
    pub awaiting_done: bool,
}

/// A metric as the host keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// The name under which the host exports it (profile prefix included).
    pub name: String,
    /// Counter, gauge or histogram.
    #[serde(serialize_with = "serialize_metric_type")]
    pub kind: MetricType,
    /// Counter/gauge value; for histograms the last recorded value.
    pub value: u64,
    /// Histogram samples (bounded: the newest are kept).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<u64>,
    /// Histogram sample count.
    pub count: u64,
    /// Histogram sample sum.
    pub sum: u128,
}

fn serialize_metric_type<S: serde::Serializer>(kind: &MetricType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match kind {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram => "histogram",
    })
}

/// Histogram samples kept per metric.
const MAX_HISTOGRAM_SAMPLES: usize = 10_000;

/// A shared queue.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// The VM and root context that registered it: they get `proxy_on_queue_ready`.
    pub owner_vm: u64,
    pub owner_context: u32,
    pub items: VecDeque<Vec<u8>>,
}

/// State shared by every VM of one host (Envoy: per process, keyed by VM id; Kong: per nginx
/// worker set): shared data, shared queues and metrics.
#[derive(Debug, Default)]
pub struct Shared {
    inner: Mutex<SharedInner>,
}

#[derive(Debug, Default)]
pub(crate) struct SharedInner {
    /// (vm_id, key) -> (value, cas).
    pub data: HashMap<(String, Vec<u8>), (Vec<u8>, u32)>,
    pub next_cas: u32,
    pub queues: BTreeMap<u32, Queue>,
    pub queue_ids: HashMap<(String, String), u32>,
    pub next_queue_id: u32,
    /// VM-unique id -> root contexts with queue notifications waiting.
    pub queue_ready: HashMap<u64, Vec<(u32, u32)>>,
    pub metrics: BTreeMap<u32, Metric>,
    pub metric_ids: HashMap<String, u32>,
    pub next_metric_id: u32,
    pub next_vm: u64,
}

impl Shared {
    /// A fresh, empty shared state.
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared::default())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SharedInner> {
        // A poisoned lock only means another VM's thread panicked mid-update; the maps are still
        // structurally valid, so keep serving rather than cascading the panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A snapshot of every metric, by exported name.
    pub fn metrics(&self) -> BTreeMap<String, Metric> {
        self.lock()
            .metrics
            .values()
            .map(|m| (m.name.clone(), m.clone()))
            .collect()
    }

    /// The value of a shared data key in VM `vm_id`.
    pub fn shared_data(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.lock().data.get(&(vm_id.to_string(), key.to_vec())).cloned()
    }

    /// Items waiting in a queue, by VM id and name.
    pub fn queue_items(&self, vm_id: &str, name: &str) -> Option<Vec<Vec<u8>>> {
        let inner = self.lock();
        let id = inner.queue_ids.get(&(vm_id.to_string(), name.to_string()))?;
        inner.queues.get(id).map(|q| q.items.iter().cloned().collect())
    }

    pub(crate) fn allocate_vm_key(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_vm += 1;
        inner.next_vm
    }
}

impl SharedInner {
    /// `proxy_get_shared_data`.
    pub fn get_data(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.data.get(&(vm_id.to_string(), key.to_vec())).cloned()
    }

    /// `proxy_set_shared_data`: a non-zero `cas` must match the stored one (spec). Each write
    /// gets a new non-zero cas.
    pub fn set_data(&mut self, vm_id: &str, key: Vec<u8>, value: Vec<u8>, cas: u32) -> Status {
        let slot = (vm_id.to_string(), key);
        if cas != 0 {
            match self.data.get(&slot) {
                Some((_, current)) if *current == cas => {}
                _ => return Status::CasMismatch,
            }
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        let cas = self.next_cas;
        self.data.insert(slot, (value, cas));
        Status::Ok
    }

    /// `proxy_register_shared_queue`: opens the queue if it exists, else creates it. The
    /// registering root context becomes the one notified.
    pub fn register_queue(&mut self, vm_id: &str, name: &str, owner_vm: u64, owner_context: u32) -> u32 {
        let key = (vm_id.to_string(), name.to_string());
        if let Some(id) = self.queue_ids.get(&key) {
            let id = *id;
            if let Some(q) = self.queues.get_mut(&id) {
                q.owner_vm = owner_vm;
                q.owner_context = owner_context;
            }
            return id;
        }
        self.next_queue_id += 1;
        let id = self.next_queue_id;
        self.queue_ids.insert(key, id);
        self.queues.insert(
            id,
            Queue {
                owner_vm,
                owner_context,
                items: VecDeque::new(),
            },
        );
        id
    }

    /// `proxy_resolve_shared_queue`.
    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.queue_ids.get(&(vm_id.to_string(), name.to_string())).copied()
    }

    /// `proxy_enqueue_shared_queue`: appends and schedules `proxy_on_queue_ready` for the owner.
    pub fn enqueue(&mut self, id: u32, value: Vec<u8>) -> Status {
        let Some(q) = self.queues.get_mut(&id) else {
            return Status::NotFound;
        };
        q.items.push_back(value);
        let (vm, ctx) = (q.owner_vm, q.owner_context);
        self.queue_ready.entry(vm).or_default().push((ctx, id));
        Status::Ok
    }

    /// `proxy_dequeue_shared_queue`.
    pub fn dequeue(&mut self, id: u32) -> Result<Vec<u8>, Status> {
        let q = self.queues.get_mut(&id).ok_or(Status::NotFound)?;
        q.items.pop_front().ok_or(Status::Empty)
    }

    /// `proxy_define_metric`: defining an existing name returns its id (Envoy and Kong both
    /// reuse the metric).
    pub fn define_metric(&mut self, kind: MetricType, name: String) -> u32 {
        if let Some(id) = self.metric_ids.get(&name) {
            return *id;
        }
        self.next_metric_id += 1;
        let id = self.next_metric_id;
        self.metric_ids.insert(name.clone(), id);
        self.metrics.insert(
            id,
            Metric {
                name,
                kind,
                value: 0,
                samples: Vec::new(),
                count: 0,
                sum: 0,
            },
        );
        id
    }

    /// The type of metric `id`, if it exists.
    pub fn metric_kind(&self, id: u32) -> Option<MetricType> {
        self.metrics.get(&id).map(|m| m.kind)
    }

    /// `proxy_increment_metric`: counters may not go down unless `counters_may_decrease`
    /// ([`crate::Profile::counters_may_decrease`]), histograms cannot be incremented (spec:
    /// BAD_ARGUMENT "when requested delta cannot be applied").
    pub fn increment_metric(&mut self, id: u32, delta: i64, counters_may_decrease: bool) -> Status {
        let Some(m) = self.metrics.get_mut(&id) else {
            return Status::NotFound;
        };
        match m.kind {
            MetricType::Counter if delta < 0 && !counters_may_decrease => Status::BadArgument,
            MetricType::Histogram => Status::BadArgument,
            _ => {
                m.value = if delta >= 0 {
                    m.value.saturating_add(delta as u64)
                } else {
                    m.value.saturating_sub(delta.unsigned_abs())
                };
                Status::Ok
            }
        }
    }

    /// `proxy_record_metric`: sets a gauge or counter, records a histogram sample.
    pub fn record_metric(&mut self, id: u32, value: u64) -> Status {
        let Some(m) = self.metrics.get_mut(&id) else {
            return Status::NotFound;
        };
        match m.kind {
            MetricType::Histogram => {
                if m.samples.len() >= MAX_HISTOGRAM_SAMPLES {
                    m.samples.remove(0);
                }
                m.samples.push(value);
                m.count += 1;
                m.sum += value as u128;
                m.value = value;
            }
            _ => m.value = value,
        }
        Status::Ok
    }

    /// `proxy_get_metric`: histograms have no single value (BAD_ARGUMENT, as Envoy answers).
    pub fn get_metric(&self, id: u32) -> Result<u64, Status> {
        let m = self.metrics.get(&id).ok_or(Status::NotFound)?;
        match m.kind {
            MetricType::Histogram => Err(Status::BadArgument),
            _ => Ok(m.value),
        }
    }
}

/// A host-side function the guest can call with `proxy_call_foreign_function`.
pub type ForeignFunction = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, Status> + Send + Sync>;

/// The store data of one VM.
pub struct HostState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) stdio: StdioCapture,
    pub(crate) store_limits: StoreLimits,
    pub(crate) limits: Limits,
    pub(crate) memory: GuestMemory,
    pub(crate) profile: Profile,
    pub(crate) clock: crate::wasi::Clock,
    pub(crate) log_level: LogLevel,
    pub(crate) logs: VecDeque<LogEntry>,
    pub(crate) logs_dropped: u64,
    pub(crate) active: Option<Active>,
    pub(crate) roots: BTreeMap<u32, RootState>,
    pub(crate) streams: BTreeMap<u32, StreamState>,
    pub(crate) next_context_id: u32,
    pub(crate) vm_id: String,
    pub(crate) vm_key: u64,
    pub(crate) plugin_name: String,
    pub(crate) vm_configuration: Vec<u8>,
    pub(crate) http_calls: BTreeMap<u32, HttpCall>,
    pub(crate) grpc_calls: BTreeMap<u32, GrpcCall>,
    pub(crate) next_token: u32,
    pub(crate) shared: Arc<Shared>,
    pub(crate) foreign: HashMap<String, ForeignFunction>,
    /// Envoy cluster names `proxy_http_call` accepts.
    pub(crate) clusters: Vec<String>,
    /// Every name is a known cluster ([`crate::VmOptions::any_cluster`]).
    pub(crate) any_cluster: bool,
    /// VM-wide properties set by the embedder or by the guest outside a stream.
    pub(crate) properties: HashMap<Vec<u8>, Vec<u8>>,
    /// Roots that called `proxy_done` and are waiting to be finalized.
    pub(crate) done_roots: Vec<u32>,
}

impl HostState {
    /// Whether `name` is an upstream cluster this host knows (Envoy profile).
    pub(crate) fn knows_cluster(&self, name: &str) -> bool {
        self.any_cluster || self.clusters.iter().any(|c| c == name)
    }

    /// Appends a log line, dropping the oldest beyond the limit.
    pub(crate) fn push_log(&mut self, level: LogLevel, message: String) {
        let context_id = self.active.as_ref().map(|a| a.effective_id);
        if self.logs.len() >= self.limits.max_log_entries {
            self.logs.pop_front();
            self.logs_dropped += 1;
        }
        tracing::event!(target: "guest", tracing::Level::DEBUG, level = %level, context_id, "{message}");
        self.logs.push_back(LogEntry {
            level,
            message,
            context_id,
        });
    }

    /// The effective context id, if a callback is running.
    pub(crate) fn effective(&self) -> Option<u32> {
        self.active.as_ref().map(|a| a.effective_id)
    }

    pub(crate) fn callback(&self) -> Option<Callback> {
        self.active.as_ref().map(|a| a.callback)
    }

    /// The stream the effective context belongs to.
    pub(crate) fn effective_stream(&mut self) -> Option<&mut StreamState> {
        let id = self.effective()?;
        self.streams.get_mut(&id)
    }

    /// The root context that owns the effective context (itself, for a root).
    pub(crate) fn effective_root(&self) -> Option<u32> {
        let id = self.effective()?;
        if self.roots.contains_key(&id) {
            Some(id)
        } else {
            self.streams.get(&id).map(|s| s.root_id)
        }
    }

    pub(crate) fn allocate_token(&mut self) -> u32 {
        self.next_token = self.next_token.wrapping_add(1).max(1);
        self.next_token
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }
}
