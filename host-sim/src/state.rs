//! Host state: everything the host keeps for one VM, stored in the wasmtime `Store` and reached
//! from the ABI glue through `Caller`.
//!
//! This layer owns the ABI's semantics: each host function is a method of [`HostState`] that
//! takes decoded values and answers `Result<T, Fault>` (`fault`: a status, a trap, or over
//! budget; the glue in `imports.rs` turns it into what the guest sees, in one place). The rules of
//! contexts, buffers, maps, local responses, callouts, gRPC, shared data, metrics and foreign
//! functions are in `host_functions`; the methods that keep guest bytes (body and map changes,
//! callouts, properties, shared data, queues, metrics) sit here, next to the data they charge.
//! Host differences are asked of the [`Profile`]; the order of guest callbacks belongs to the
//! driver ([`crate::vm`]). The rules are tested natively, without wasm (`host_functions` tests).
//!
//! Every byte the host keeps on a guest's behalf is charged to the VM's [`HostBudget`]
//! ([`crate::Limits::max_host_bytes`]) through a `budget` charge kept next to the data, so each
//! way the data goes away releases it. The state methods charge before they change anything; a
//! refusal (`Fault::OverBudget`) leaves the state as it was, and the profile decides what the
//! guest sees ([`HostBehaviour::over_budget`](crate::profile::HostBehaviour::over_budget)). Log lines are the one thing the host may drop to make
//! room: a real host has written them out already.

mod budget;
mod fault;
mod host_functions;

pub use crate::abi::{bytes_as_text, LocalResponse, StreamInfo};
use crate::abi::{BufferType, Callback, LogLevel, MapType, MetricType, Pairs, Status};
pub use crate::limits::OverBudget;
use crate::limits::{Limits, MAX_HISTOGRAM_SAMPLES};
use crate::memory::GuestMemory;
use crate::profile::{MapAccess, Profile, StreamPhase};
use crate::wasi::{StdioCapture, WasiOptions};
pub use budget::HostBudget;
pub(crate) use budget::{Charge, GuestGrowth, ENTRY_OVERHEAD};
pub(crate) use fault::Fault;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
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
    #[serde(with = "bytes_as_text")]
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
        crate::abi::find_header(&self.headers, name).map(String::as_str)
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

/// One callback a stream saw and what it returned (kept with the stream's state, read through
/// [`crate::Vm::actions`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionRecord {
    /// e.g. `on_request_headers`.
    pub callback: &'static str,
    /// `Continue` or `Pause`; `None` for callbacks that return nothing or trapped.
    pub action: Option<&'static str>,
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
    /// Whether the guest closed it (`proxy_grpc_close`): a unary call is cancelled by it; a
    /// stream is half-closed and still receives ([`GrpcCall::ended_by_guest`]).
    pub closed: bool,
    /// Timeout for unary calls, in milliseconds.
    pub timeout_ms: Option<u32>,
    /// When a unary call times out, in clock nanoseconds: its timeout as the profile's host
    /// applies it ([`crate::profile::HostBehaviour::effective_call_timeout_ms`]); streams have none.
    #[serde(skip)]
    pub deadline_ns: Option<u64>,
}

impl GrpcCall {
    /// Whether the guest ended the call so that the host forgets it and gives it no more
    /// callbacks: cancelled, or a unary call closed. A closed stream is not ended: Envoy's
    /// `Context::grpcClose` half-closes it (`closeStream()`) and keeps it, marked
    /// `local_closed_`, until the server closes it, so the server's metadata, messages and
    /// close still reach the filter (envoy source/extensions/common/wasm/context.cc `grpcClose`,
    /// `onGrpcCloseWrapper`; ENVOY-1.40: after `proxy_grpc_close` on a stream the probe still
    /// got both echoed messages, the trailing metadata and the close). `proxy_grpc_cancel`
    /// resets it and forgets it (`grpcCancel`).
    pub fn ended_by_guest(&self) -> bool {
        self.cancelled || (self.closed && self.kind == GrpcKind::Call)
    }
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
    /// What the callback may read; `None` when it has nothing (most callbacks): boxed so that
    /// entering and leaving those moves and drops one pointer, not the whole `CallbackData`.
    pub data: Option<Box<CallbackData>>,
}

impl Active {
    /// The callback's data, made empty first when it had none (only the gRPC metadata maps
    /// need a place there even then).
    pub fn data_mut(&mut self) -> &mut CallbackData {
        self.data.get_or_insert_with(Box::default)
    }
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
    /// What the guest added to `body` beyond what the host delivered.
    pub body_growth: GuestGrowth,
    /// What the guest added to `headers` beyond what the host received.
    pub headers_growth: GuestGrowth,
    /// What the guest added to `trailers` beyond what the host received.
    pub trailers_growth: GuestGrowth,
    /// Kong: nginx wrote the request body to a temp file (larger than the client body buffer);
    /// the filter is told its size but cannot read it.
    pub body_in_temp_file: bool,
}

/// Largest buffer capacity a recycled stream keeps for the next one ([`StreamState::recycle`]).
const RECYCLED_BUFFER_MAX_BYTES: usize = 64 * 1024;

/// Empties `bytes`, keeping its allocation for the next stream unless it is large.
fn recycle_buffer(bytes: &mut Vec<u8>) {
    if bytes.capacity() > RECYCLED_BUFFER_MAX_BYTES {
        *bytes = Vec::new();
    } else {
        bytes.clear();
    }
}

impl Direction {
    /// Back to `Direction::default()` but for the capacity of small buffers; what the guest was
    /// charged for is given back now ([`StreamState::recycle`]).
    fn recycle(&mut self) {
        // Destructured so that a new field cannot be forgotten here.
        let Direction {
            headers,
            trailers,
            body,
            body_available,
            forwarded_body,
            headers_forwarded,
            trailers_forwarded,
            paused_in,
            resume_requested,
            queued,
            complete,
            staged_body,
            body_growth,
            headers_growth,
            trailers_growth,
            body_in_temp_file,
        } = self;
        *headers = None;
        *trailers = None;
        recycle_buffer(body);
        *body_available = false;
        recycle_buffer(forwarded_body);
        *headers_forwarded = false;
        *trailers_forwarded = false;
        *paused_in = None;
        *resume_requested = false;
        if !queued.is_empty() || queued.capacity() > 0 {
            *queued = VecDeque::new();
        }
        *complete = false;
        recycle_buffer(staged_body);
        body_growth.recycle();
        headers_growth.recycle();
        trailers_growth.recycle();
        *body_in_temp_file = false;
    }

    /// The host received headers: they replace the map, and whatever the guest had added.
    pub fn set_headers(&mut self, pairs: Pairs) {
        self.headers_growth.host_set(pairs_footprint(&pairs));
        self.headers = Some(pairs);
    }

    /// The host received trailers.
    pub fn set_trailers(&mut self, pairs: Pairs) {
        self.trailers_growth.host_set(pairs_footprint(&pairs));
        self.trailers = Some(pairs);
    }

    /// The host appends a chunk it received to the body buffer.
    pub fn receive_body(&mut self, chunk: &[u8]) {
        self.body.extend_from_slice(chunk);
        self.body_growth.host_added(chunk.len());
    }

    /// The host takes the body buffer to send it on; what the guest added goes with it.
    pub fn take_body(&mut self) -> Vec<u8> {
        self.body_growth.host_set(0);
        std::mem::take(&mut self.body)
    }

    /// `proxy_set_buffer_bytes` on this body: spec prepend (start=0,size=0), append (start >=
    /// length), otherwise replace `size` bytes at `start` (inject when size is 0). The growth
    /// is charged first; a refusal changes nothing.
    fn splice_body(
        &mut self,
        budget: &Arc<HostBudget>,
        start: usize,
        size: usize,
        value: Vec<u8>,
    ) -> Result<(), OverBudget> {
        let start = start.min(self.body.len());
        let end = start.saturating_add(size).min(self.body.len());
        let new_len = self.body.len() - (end - start) + value.len();
        self.body_growth.guest_resize(budget, new_len)?;
        self.body.splice(start..end, value);
        Ok(())
    }
}

/// Bytes a header map holds, as the budget counts them.
pub(crate) fn pairs_footprint<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> usize {
    pairs.iter().map(|(k, v)| pair_footprint(k.as_ref(), v.as_ref())).sum()
}

fn pair_footprint(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

/// A header map a host function may use, with the guest's share of it when it is a stream map.
pub(crate) struct MapSlot<'a> {
    /// The map (`None`: the host has none yet).
    pub pairs: &'a mut Option<Pairs>,
    growth: Option<&'a mut GuestGrowth>,
    budget: &'a Arc<HostBudget>,
}

impl<'a> MapSlot<'a> {
    /// A callout or gRPC map: read-only, nothing to charge.
    fn read_only(pairs: &'a mut Option<Pairs>, budget: &'a Arc<HostBudget>) -> Self {
        MapSlot {
            pairs,
            growth: None,
            budget,
        }
    }

    /// Charges the map's change to `new_total` bytes (callout maps are read-only: nothing to
    /// charge).
    fn resize(&mut self, new_total: usize) -> Result<(), OverBudget> {
        match self.growth.as_deref_mut() {
            Some(growth) => growth.guest_resize(self.budget, new_total),
            None => Ok(()),
        }
    }

    fn total(&self) -> usize {
        self.growth.as_deref().map_or(0, GuestGrowth::total)
    }

    /// `proxy_set_header_map_pairs`.
    fn set_all(mut self, pairs: Pairs) -> Result<(), OverBudget> {
        self.resize(pairs_footprint(&pairs))?;
        *self.pairs = Some(pairs);
        Ok(())
    }

    /// `proxy_add_header_map_value`.
    fn add(mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), OverBudget> {
        let total = self.total() + pair_footprint(&key, &value);
        self.resize(total)?;
        self.pairs.get_or_insert_with(Vec::new).push((key, value));
        Ok(())
    }

    /// `proxy_replace_header_map_value`: "adds or replaces"; the first occurrence keeps its
    /// place, the others go.
    fn replace(mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), OverBudget> {
        let total_before = self.total();
        let pairs = self.pairs.get_or_insert_with(Vec::new);
        let Some(first) = pairs.iter().position(|(k, _)| k.eq_ignore_ascii_case(&key)) else {
            return self.add(key, value);
        };
        let removed: usize = pairs[first + 1..]
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(&key))
            .map(|(k, v)| pair_footprint(k, v))
            .sum();
        let total = total_before.saturating_sub(removed + pairs[first].1.len()) + value.len();
        self.resize(total)?;
        let pairs = self.pairs.get_or_insert_with(Vec::new);
        pairs[first].1 = value;
        let mut index = 0;
        pairs.retain(|(k, _)| {
            let keep = index <= first || !k.eq_ignore_ascii_case(&key);
            index += 1;
            keep
        });
        Ok(())
    }

    /// `proxy_remove_header_map_value`: every occurrence goes.
    fn remove(mut self, key: &[u8]) {
        let total_before = self.total();
        let Some(pairs) = self.pairs.as_mut() else {
            return;
        };
        let removed: usize = pairs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(k, v)| pair_footprint(k, v))
            .sum();
        pairs.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        let total = total_before.saturating_sub(removed);
        // Shrinking is never refused.
        let _ = self.resize(total);
    }
}

/// Data the host holds with the charge for it: dropping it (answered, cancelled, dequeued, its
/// context gone) releases the bytes. Read through `Deref`; changes go through state methods,
/// which charge them.
#[derive(Debug)]
pub(crate) struct Held<T> {
    data: T,
    charge: Charge,
}

impl<T> Held<T> {
    /// A copy of the data, for the embedder (not held by the host, so not charged).
    pub fn to_owned_value(&self) -> T
    where
        T: Clone,
    {
        self.data.clone()
    }
}

impl<T> Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.data
    }
}

/// Properties set with `proxy_set_property` (by the guest, charged) or by the embedder.
#[derive(Debug, Default)]
pub(crate) struct PropertyMap {
    values: HashMap<Vec<u8>, Vec<u8>>,
    /// Paths the guest set (their bytes are in `charge`).
    guest_set: HashMap<Vec<u8>, usize>,
    charge: Charge,
}

impl PropertyMap {
    /// Back to empty, what the guest was charged given back ([`StreamState::recycle`]).
    fn recycle(&mut self) {
        if !self.values.is_empty() || !self.guest_set.is_empty() || self.charge.bytes() > 0 {
            *self = PropertyMap::default();
        }
    }

    /// The value at `path`.
    pub fn get(&self, path: &[u8]) -> Option<&Vec<u8>> {
        self.values.get(path)
    }

    /// The embedder sets a property: not the guest's bytes, so not charged.
    pub fn set_by_host(&mut self, path: Vec<u8>, value: Vec<u8>) {
        if let Some(bytes) = self.guest_set.remove(&path) {
            self.charge.shrink(bytes);
        }
        self.values.insert(path, value);
    }

    /// Moves the guest's share of this map to `budget` (a fresh instance taking the map over);
    /// when it does not fit there, the guest-set properties are dropped rather than kept
    /// uncharged.
    fn rebind(&mut self, budget: &Arc<HostBudget>) {
        if self.charge.resize(budget, self.charge.bytes()).is_err() {
            for (path, _) in self.guest_set.drain() {
                self.values.remove(&path);
            }
            self.charge.clear();
        }
    }

    /// The guest sets a property: charged, or refused with nothing changed.
    fn set_by_guest(&mut self, budget: &Arc<HostBudget>, path: Vec<u8>, value: Vec<u8>) -> Result<(), OverBudget> {
        let old = self.guest_set.get(&path).copied().unwrap_or(0);
        // The path is kept twice: as the value's key and in `guest_set`.
        let new = 2 * path.len() + value.len() + ENTRY_OVERHEAD;
        self.charge.resize(budget, self.charge.bytes() - old + new)?;
        self.guest_set.insert(path.clone(), new);
        self.values.insert(path, value);
        Ok(())
    }
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
    /// The host is passing the filter's own local reply through the filter's response
    /// callbacks ([`crate::profile::HostBehaviour::local_reply_response`]): the response direction is open
    /// again, the request direction stays ended.
    pub local_reply_in_response: bool,
    /// The local reply is the host's own answer to a filter that failed (a trap): it goes to
    /// the client without the filter's response callbacks, which a failed filter never gets.
    pub local_reply_by_host: bool,
    /// Stream facts the properties are computed from.
    pub info: StreamInfo,
    /// Properties the guest set on this stream (Envoy keeps them in the stream's filter state).
    pub properties: PropertyMap,
    /// Listed in [`HostState::touch_stream`]'s list and not taken yet.
    pub touched: bool,
    /// Every callback the stream saw, in order ([`crate::Vm::actions`]).
    pub actions: Vec<ActionRecord>,
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

    /// A new stream of root context `root_id`.
    pub fn new(root_id: u32, info: StreamInfo) -> Self {
        StreamState {
            root_id,
            request: Direction::default(),
            response: Direction::default(),
            local_response: None,
            pending_local_response: None,
            reset: false,
            local_reply_in_response: false,
            local_reply_by_host: false,
            info,
            properties: PropertyMap::default(),
            touched: false,
            actions: Vec::new(),
        }
    }

    /// Empties an ended stream so that its allocation can serve the next stream
    /// ([`StreamState::renew`]): everything it held is let go of, and given back to the budget,
    /// now, as dropping it would; only small buffers keep their capacity.
    pub fn recycle(&mut self) {
        // Destructured so that a new field cannot be forgotten here.
        let StreamState {
            root_id: _,
            request,
            response,
            local_response,
            pending_local_response,
            reset,
            local_reply_in_response,
            local_reply_by_host,
            info,
            properties,
            touched,
            actions,
        } = self;
        request.recycle();
        response.recycle();
        *local_response = None;
        *pending_local_response = None;
        *reset = false;
        *local_reply_in_response = false;
        *local_reply_by_host = false;
        *info = StreamInfo::default();
        properties.recycle();
        *touched = false;
        actions.clear();
    }

    /// A recycled stream ([`StreamState::recycle`]) made the stream `StreamState::new(root_id,
    /// info)` would be.
    pub fn renew(&mut self, root_id: u32, info: StreamInfo) {
        self.root_id = root_id;
        self.info = info;
    }

    /// Whether the host still calls the filter for request/response input.
    pub fn ended(&self) -> bool {
        self.local_response.is_some() || self.reset
    }

    /// Whether the host still calls the filter for input of the request (`true`) or response
    /// direction: a local reply ends the request, and ends the response too unless the host is
    /// passing that reply through the response callbacks.
    pub fn closed(&self, request: bool) -> bool {
        self.reset || (self.local_response.is_some() && (request || !self.local_reply_in_response))
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
    /// Tick timers still armed from instances that trapped, each firing with the period
    /// (ngx_wasm_module, [`crate::profile::HostBehaviour::tick_timers_outlive_instance`]).
    pub inherited_tick_timers: u32,
    /// `proxy_on_done` returned false and the guest has not called `proxy_done` yet.
    pub awaiting_done: bool,
    /// Kept from an instance that trapped, not yet created on the fresh one: created and
    /// configured when its filter next runs ([`crate::Vm`]'s fresh instances, Kong).
    pub dormant: bool,
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

/// A shared queue.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// The VM and root context that registered it: they get `proxy_on_queue_ready`.
    pub owner_vm: u64,
    pub owner_context: u32,
    pub items: VecDeque<Held<Vec<u8>>>,
    /// The charge for the registration itself (its name, kept here and in `queue_ids`): held
    /// for as long as the queue exists.
    pub _registration: Charge,
}

/// A shared data key: the VM id it is scoped to, and the key.
pub(crate) type SharedKey = (String, Vec<u8>);

/// State shared by every VM of one host (Envoy: per process, keyed by VM id; Kong: per nginx
/// worker set): shared data, shared queues and metrics.
#[derive(Debug, Default)]
pub struct Shared {
    inner: Mutex<SharedInner>,
    /// Whether `SharedInner::queue_ready` may hold a notification, so that the host need not
    /// take the lock after every callback to find none ([`Shared::notifications_waiting`]).
    /// Set and cleared only while the lock is held: it is true whenever the map is not empty.
    queue_ready_waiting: AtomicBool,
}

#[derive(Debug, Default)]
pub(crate) struct SharedInner {
    /// (vm_id, key) -> (value, cas), charged to the VM that wrote it last.
    pub data: HashMap<SharedKey, Held<(Vec<u8>, u32)>>,
    pub next_cas: u32,
    pub queues: BTreeMap<u32, Queue>,
    pub queue_ids: HashMap<(String, String), u32>,
    pub next_queue_id: u32,
    /// VM-unique id -> root contexts with queue notifications waiting. Whoever changes it
    /// calls [`Shared::note_notifications`] before releasing the lock.
    pub queue_ready: HashMap<u64, Vec<(u32, u32)>>,
    pub metrics: BTreeMap<u32, Held<Metric>>,
    pub metric_ids: HashMap<String, u32>,
    pub next_metric_id: u32,
    pub next_vm: u64,
}

impl Shared {
    /// A fresh, empty shared state.
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared::default())
    }

    /// Whether any VM may have a queue notification waiting (false: certainly none, as of
    /// the last time the lock was released).
    pub(crate) fn notifications_waiting(&self) -> bool {
        self.queue_ready_waiting.load(Ordering::Acquire)
    }

    /// Records, with the lock held (`inner` is its guard), whether notifications are waiting.
    pub(crate) fn note_notifications(&self, inner: &SharedInner) {
        self.queue_ready_waiting
            .store(!inner.queue_ready.is_empty(), Ordering::Release);
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
            .map(|m| (m.name.clone(), m.to_owned_value()))
            .collect()
    }

    /// The value of a shared data key in VM `vm_id`.
    pub fn shared_data(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.lock().get_data(vm_id, key)
    }

    /// Items waiting in a queue, by VM id and name.
    pub fn queue_items(&self, vm_id: &str, name: &str) -> Option<Vec<Vec<u8>>> {
        let inner = self.lock();
        let id = inner.queue_ids.get(&(vm_id.to_string(), name.to_string()))?;
        inner
            .queues
            .get(id)
            .map(|q| q.items.iter().map(|item| item.to_owned_value()).collect())
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
        self.data
            .get(&(vm_id.to_string(), key.to_vec()))
            .map(|held| held.to_owned_value())
    }

    /// `proxy_set_shared_data`: a non-zero `cas` must match the stored one (spec). Each write
    /// gets a new non-zero cas. The entry is charged to `budget` (the writing VM's); what a
    /// previous write held is released, from whichever VM wrote it.
    pub fn set_data(
        &mut self,
        budget: &Arc<HostBudget>,
        vm_id: &str,
        key: Vec<u8>,
        value: Vec<u8>,
        cas: u32,
    ) -> Result<Status, OverBudget> {
        let footprint = vm_id.len() + key.len() + value.len() + ENTRY_OVERHEAD;
        let slot = (vm_id.to_string(), key);
        let existing = self.data.get_mut(&slot);
        if cas != 0 && existing.as_ref().is_none_or(|held| held.data.1 != cas) {
            return Ok(Status::CasMismatch);
        }
        let next_cas = self.next_cas.wrapping_add(1).max(1);
        match existing {
            Some(held) => {
                held.charge.resize(budget, footprint)?;
                held.data = (value, next_cas);
            }
            None => {
                let charge = budget.charge(footprint)?;
                self.data.insert(
                    slot,
                    Held {
                        data: (value, next_cas),
                        charge,
                    },
                );
            }
        }
        self.next_cas = next_cas;
        Ok(Status::Ok)
    }

    /// `proxy_register_shared_queue`: opens the queue if it exists, else creates it, charged to
    /// `budget`. The registering root context becomes the one notified.
    pub fn register_queue(
        &mut self,
        budget: &Arc<HostBudget>,
        vm_id: &str,
        name: &str,
        owner_vm: u64,
        owner_context: u32,
    ) -> Result<u32, OverBudget> {
        let key = (vm_id.to_string(), name.to_string());
        if let Some(id) = self.queue_ids.get(&key) {
            let id = *id;
            if let Some(q) = self.queues.get_mut(&id) {
                q.owner_vm = owner_vm;
                q.owner_context = owner_context;
            }
            return Ok(id);
        }
        let charge = budget.charge(2 * (vm_id.len() + name.len()) + std::mem::size_of::<Queue>())?;
        self.next_queue_id += 1;
        let id = self.next_queue_id;
        self.queue_ids.insert(key, id);
        self.queues.insert(
            id,
            Queue {
                owner_vm,
                owner_context,
                items: VecDeque::new(),
                _registration: charge,
            },
        );
        Ok(id)
    }

    /// `proxy_resolve_shared_queue`.
    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.queue_ids.get(&(vm_id.to_string(), name.to_string())).copied()
    }

    /// `proxy_enqueue_shared_queue`: appends, charged to `budget` (the enqueuing VM's) until
    /// dequeued, and schedules `proxy_on_queue_ready` for the owner.
    pub fn enqueue(&mut self, budget: &Arc<HostBudget>, id: u32, value: Vec<u8>) -> Result<Status, OverBudget> {
        let Some(q) = self.queues.get_mut(&id) else {
            return Ok(Status::NotFound);
        };
        // The notification scheduled with it is part of what the item costs.
        let footprint = value.len() + ENTRY_OVERHEAD + std::mem::size_of::<(u32, u32)>();
        let charge = budget.charge(footprint)?;
        q.items.push_back(Held { data: value, charge });
        let (vm, ctx) = (q.owner_vm, q.owner_context);
        self.queue_ready.entry(vm).or_default().push((ctx, id));
        Ok(Status::Ok)
    }

    /// `proxy_dequeue_shared_queue`: the item's bytes are released from whichever VM queued it.
    pub fn dequeue(&mut self, id: u32) -> Result<Vec<u8>, Status> {
        let q = self.queues.get_mut(&id).ok_or(Status::NotFound)?;
        let item = q.items.pop_front().ok_or(Status::Empty)?;
        let Held { data, charge } = item;
        drop(charge);
        Ok(data)
    }

    /// `proxy_define_metric`: defining an existing name returns its id (Envoy and Kong both
    /// reuse the metric). A new metric is charged to `budget` (the defining VM's), and so are
    /// the histogram samples host-sim keeps for it.
    pub fn define_metric(
        &mut self,
        budget: &Arc<HostBudget>,
        kind: MetricType,
        name: String,
    ) -> Result<u32, OverBudget> {
        if let Some(id) = self.metric_ids.get(&name) {
            return Ok(*id);
        }
        // The name is kept twice: in the metric and as its key in `metric_ids`.
        let charge = budget.charge(2 * name.len() + std::mem::size_of::<Metric>() + ENTRY_OVERHEAD)?;
        self.next_metric_id += 1;
        let id = self.next_metric_id;
        self.metric_ids.insert(name.clone(), id);
        self.metrics.insert(
            id,
            Held {
                data: Metric {
                    name,
                    kind,
                    value: 0,
                    samples: Vec::new(),
                    count: 0,
                    sum: 0,
                },
                charge,
            },
        );
        Ok(id)
    }

    /// The type of metric `id`, if it exists.
    pub fn metric_kind(&self, id: u32) -> Option<MetricType> {
        self.metrics.get(&id).map(|m| m.kind)
    }

    /// `proxy_increment_metric`: counters may not go down unless `counters_may_decrease`
    /// ([`crate::profile::HostBehaviour::counters_may_decrease`]), histograms cannot be incremented (spec:
    /// BAD_ARGUMENT "when requested delta cannot be applied").
    pub fn increment_metric(&mut self, id: u32, delta: i64, counters_may_decrease: bool) -> Status {
        let Some(Held { data: m, .. }) = self.metrics.get_mut(&id) else {
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

    /// `proxy_record_metric`: sets a gauge or counter, records a histogram sample. The samples
    /// are host-sim's own record for the embedder (hosts keep buckets): one the budget cannot
    /// hold is not kept, and the guest sees OK either way.
    pub fn record_metric(&mut self, id: u32, value: u64) -> Status {
        let Some(Held { data: m, charge }) = self.metrics.get_mut(&id) else {
            return Status::NotFound;
        };
        match m.kind {
            MetricType::Histogram => {
                if m.samples.len() >= MAX_HISTOGRAM_SAMPLES {
                    m.samples.remove(0);
                    m.samples.push(value);
                } else if charge.grow(std::mem::size_of::<u64>()).is_ok() {
                    m.samples.push(value);
                }
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

/// The VM's log: lines in order, bounded in count ([`Limits::max_log_entries`]) and charged to
/// the budget; the oldest give way to new ones, and to other charges.
#[derive(Debug, Default)]
pub(crate) struct LogBook {
    entries: VecDeque<LogEntry>,
    charge: Charge,
    /// Lines dropped so far (oldest evicted, or a line that could not fit at all).
    dropped: u64,
}

impl LogBook {
    fn footprint(entry: &LogEntry) -> usize {
        std::mem::size_of::<LogEntry>() + entry.message.len()
    }

    /// The lines, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &LogEntry> {
        self.entries.iter()
    }

    /// Hands every line to the embedder: the host no longer holds them.
    pub fn take_all(&mut self) -> Vec<LogEntry> {
        self.charge.clear();
        self.entries.drain(..).collect()
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Drops the oldest line; false when there is none.
    fn drop_oldest(&mut self) -> bool {
        let Some(oldest) = self.entries.pop_front() else {
            return false;
        };
        self.charge.shrink(Self::footprint(&oldest));
        self.dropped += 1;
        true
    }

    /// Puts the lines of `older` (a replaced instance's log) in front of this book's, all
    /// charged to `budget` (the older book's charge is given back as it is dropped); the oldest
    /// give way when the count or the budget is exceeded.
    fn absorb(&mut self, budget: &Arc<HostBudget>, mut older: LogBook, max_entries: usize) {
        self.dropped += older.dropped;
        let mine = std::mem::take(&mut self.entries);
        self.charge.clear();
        let lines = std::mem::take(&mut older.entries);
        drop(older);
        for entry in lines.into_iter().chain(mine) {
            self.push(budget, entry, max_entries);
        }
    }

    /// Appends a line, dropping the oldest while the count or the budget is exceeded; a line
    /// larger than the whole budget is dropped itself.
    fn push(&mut self, budget: &Arc<HostBudget>, entry: LogEntry, max_entries: usize) {
        while self.entries.len() >= max_entries.max(1) {
            self.drop_oldest();
        }
        let footprint = Self::footprint(&entry);
        while self.charge.resize(budget, self.charge.bytes() + footprint).is_err() {
            if !self.drop_oldest() {
                self.dropped += 1;
                return;
            }
        }
        self.entries.push_back(entry);
    }
}

/// A host-side function the guest can call with `proxy_call_foreign_function`.
pub type ForeignFunction = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, Status> + Send + Sync>;

/// The store data of one VM. The ABI glue reaches it through methods; the fields the lifecycle
/// driver ([`crate::vm`]) and the properties still walk are `pub(crate)`.
pub struct HostState {
    pub(crate) wasi: WasiP1Ctx,
    stdio: StdioCapture,
    store_limits: StoreLimits,
    pub(crate) limits: Limits,
    memory: GuestMemory,
    pub(crate) profile: Profile,
    pub(crate) clock: crate::wasi::Clock,
    pub(crate) log_level: LogLevel,
    pub(crate) logs: LogBook,
    /// Every byte the host holds for this guest is charged here.
    budget: Arc<HostBudget>,
    pub(crate) active: Option<Active>,
    pub(crate) roots: BTreeMap<u32, RootState>,
    /// Boxed: a stream's state is about a kilobyte, which a map node would otherwise copy in
    /// and out on every insert and remove.
    pub(crate) streams: BTreeMap<u32, Box<StreamState>>,
    next_context_id: u32,
    pub(crate) vm_id: String,
    vm_key: u64,
    pub(crate) plugin_name: String,
    pub(crate) vm_configuration: Vec<u8>,
    pub(crate) http_calls: BTreeMap<u32, Held<HttpCall>>,
    pub(crate) grpc_calls: BTreeMap<u32, Held<GrpcCall>>,
    next_token: u32,
    pub(crate) shared: Arc<Shared>,
    foreign: HashMap<String, ForeignFunction>,
    /// Envoy cluster names `proxy_http_call` accepts.
    clusters: Vec<String>,
    /// Every name is a known cluster ([`crate::VmOptions::any_cluster`]).
    any_cluster: bool,
    /// VM-wide properties set by the embedder or by the guest outside a stream.
    pub(crate) properties: PropertyMap,
    /// Roots that called `proxy_done` and are waiting to be finalized.
    done_roots: Vec<u32>,
    /// Streams something may have changed on since the embedder last looked
    /// ([`HostState::touch_stream`]).
    touched_streams: Vec<u32>,
    /// The stream [`HostState::touch_stream`] touched last, while it is still listed: touching
    /// it again (every callback of a stream touches it) needs no lookup.
    last_touched: Option<u32>,
}

impl HostState {
    /// A VM's fresh host state: no contexts yet, an empty log kept from `log_level` up, a budget
    /// of [`Limits::max_host_bytes`], WASI as `wasi` says, and a key in `shared` (the driver sets
    /// the VM's identity and upstreams).
    pub(crate) fn new(
        profile: Profile,
        log_level: LogLevel,
        limits: &Limits,
        wasi: &WasiOptions,
        shared: Arc<Shared>,
    ) -> HostState {
        let (wasi, stdio, clock) = crate::wasi::build(wasi, limits.max_stdio_bytes_per_callback);
        HostState {
            wasi,
            stdio,
            store_limits: StoreLimitsBuilder::new()
                .memory_size(limits.max_memory_bytes)
                .instances(1)
                .build(),
            limits: limits.clone(),
            memory: GuestMemory::new(None, None),
            profile,
            clock,
            log_level,
            logs: LogBook::default(),
            budget: HostBudget::new(limits.max_host_bytes),
            active: None,
            roots: BTreeMap::new(),
            streams: BTreeMap::new(),
            next_context_id: 0,
            vm_id: String::new(),
            vm_key: shared.allocate_vm_key(),
            plugin_name: String::new(),
            vm_configuration: Vec::new(),
            http_calls: BTreeMap::new(),
            grpc_calls: BTreeMap::new(),
            next_token: 0,
            shared,
            foreign: HashMap::new(),
            clusters: Vec::new(),
            any_cluster: false,
            properties: PropertyMap::default(),
            done_roots: Vec::new(),
            touched_streams: Vec::new(),
            last_touched: None,
        }
    }

    /// The upstream clusters `proxy_http_call` and `proxy_grpc_call` accept (Envoy), or every
    /// name (`any_cluster`).
    pub(crate) fn set_upstreams(&mut self, clusters: Vec<String>, any_cluster: bool) {
        self.clusters = clusters;
        self.any_cluster = any_cluster;
    }

    /// What the store's resource limiter enforces.
    pub(crate) fn store_limits_mut(&mut self) -> &mut StoreLimits {
        &mut self.store_limits
    }

    /// The instance's memory and allocator.
    pub(crate) fn memory(&self) -> &GuestMemory {
        &self.memory
    }

    /// Sets the instance's memory and allocator, once it is instantiated.
    pub(crate) fn set_memory(&mut self, memory: GuestMemory) {
        self.memory = memory;
    }

    /// The VM's limits.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The host this VM behaves like.
    pub(crate) fn profile(&self) -> Profile {
        self.profile
    }

    /// The guest's captured stdout and stderr.
    pub(crate) fn stdio(&self) -> &StdioCapture {
        &self.stdio
    }

    /// A new context id from the VM's counter, never one a root context holds (a host that
    /// numbers roots its own way, [`crate::profile::HostBehaviour::root_context_id`], leaves the
    /// counter to the other contexts).
    pub(crate) fn allocate_context_id(&mut self) -> u32 {
        loop {
            self.next_context_id = self.next_context_id.wrapping_add(1);
            let id = self.next_context_id;
            if id != 0 && !self.roots.contains_key(&id) {
                return id;
            }
        }
    }

    /// The id of a new root context: the host's own number for it when it has one that no
    /// context holds yet, else the next from the counter.
    pub(crate) fn allocate_root_context_id(&mut self, configuration: &[u8]) -> u32 {
        let position = self.roots.len();
        let own = self.profile.root_context_id(&self.plugin_name, configuration, position);
        match own {
            Some(id) if id != 0 && !self.roots.contains_key(&id) && !self.streams.contains_key(&id) => id,
            _ => self.allocate_context_id(),
        }
    }

    /// This VM's key in the shared state (queue notifications are addressed to it).
    pub(crate) fn vm_key(&self) -> u64 {
        self.vm_key
    }

    /// Roots that called `proxy_done` since the last time, for the driver to finalize.
    /// Whether a root called `proxy_done` since the host last took the list.
    pub(crate) fn has_done_roots(&self) -> bool {
        !self.done_roots.is_empty()
    }

    pub(crate) fn take_done_roots(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.done_roots)
    }

    /// Bytes charged to the budget now.
    pub(crate) fn budget_used(&self) -> usize {
        self.budget.used()
    }

    /// Registers a host-side function for `proxy_call_foreign_function`.
    pub(crate) fn register_foreign_function(&mut self, name: &str, function: ForeignFunction) {
        self.foreign.insert(name.to_string(), function);
    }

    /// Whether `name` is an upstream cluster this host knows (Envoy profile).
    pub(crate) fn knows_cluster(&self, name: &str) -> bool {
        self.any_cluster || self.clusters.iter().any(|c| c == name)
    }

    /// Takes over what a replaced instance held for the guest (Kong's fresh instance after a
    /// trap): its context id and token counters, its foreign functions, its log lines, in front of
    /// this VM's, and its properties, both charged to this VM's budget from now on.
    pub(crate) fn adopt(&mut self, old: &mut HostState) {
        self.next_context_id = old.next_context_id;
        self.next_token = old.next_token;
        self.foreign = std::mem::take(&mut old.foreign);
        let older = std::mem::take(&mut old.logs);
        self.logs.absorb(&self.budget, older, self.limits.max_log_entries);
        let mut properties = std::mem::take(&mut old.properties);
        properties.rebind(&self.budget);
        self.properties = properties;
    }

    /// Takes over a replaced instance's streams (Kong's fresh instance after a trap), with the
    /// list of those touched since the host last asked ([`HostState::take_touched_streams`]):
    /// a stream touched just before the trap keeps its `touched` flag, so it must stay listed
    /// or the host would never settle it.
    pub(crate) fn adopt_streams(&mut self, old: &mut HostState) {
        self.streams = std::mem::take(&mut old.streams);
        self.touched_streams = std::mem::take(&mut old.touched_streams);
        self.last_touched = old.last_touched.take();
    }

    /// Appends a log line, dropping the oldest beyond the entry limit or the budget.
    pub(crate) fn push_log(&mut self, level: LogLevel, message: String) {
        let context_id = self.active.as_ref().map(|a| a.effective_id);
        tracing::event!(target: "guest", tracing::Level::DEBUG, level = %level, context_id, "{message}");
        let entry = LogEntry {
            level,
            message,
            context_id,
        };
        self.logs.push(&self.budget, entry, self.limits.max_log_entries);
    }

    /// Drops the oldest log lines until `bytes` fit in the budget, or no line is left: the host
    /// would have written them out already, so they are what gives way.
    fn make_room(&mut self, bytes: usize) {
        while self.budget.available() < bytes && self.logs.drop_oldest() {}
    }

    /// `proxy_set_buffer_bytes`: only the effective stream's bodies are writable.
    pub(crate) fn set_body_bytes(
        &mut self,
        buffer: BufferType,
        start: u32,
        size: u32,
        value: Vec<u8>,
    ) -> Result<(), Fault> {
        self.make_room(value.len());
        let profile = self.profile;
        let id = self.effective().ok_or(Status::NotFound)?;
        let stream = self.streams.get_mut(&id).ok_or(Status::NotFound)?;
        let dir = match buffer {
            BufferType::HttpRequestBody => &mut stream.request,
            BufferType::HttpResponseBody => &mut stream.response,
            // The other buffers are read-only views.
            _ => return Err(Status::BadArgument.into()),
        };
        if !dir.body_available {
            return Err(Status::NotFound.into());
        }
        if !profile.buffer_write_allowed(start as usize, dir.body.len()) {
            return Err(Status::BadArgument.into());
        }
        let write = profile.buffer_write(start as usize, size as usize, value.len());
        let mut value = value;
        value.truncate(write.kept);
        dir.splice_body(&self.budget, write.start, write.removed.unwrap_or(usize::MAX), value)?;
        Ok(())
    }

    /// Where a map lives and whether the current callback may touch it, for a read or a change.
    pub(crate) fn map_slot(&mut self, map: MapType, access: MapAccess) -> Result<MapSlot<'_>, Status> {
        let HostState {
            profile,
            active,
            streams,
            budget,
            ..
        } = self;
        let (profile, budget) = (*profile, &*budget);
        let active = active.as_mut().ok_or(Status::BadArgument)?;
        let callback = active.callback;
        let callback_map = |allowed: &[Callback]| allowed.contains(&callback);
        let call_map = matches!(
            map,
            MapType::HttpCallResponseHeaders
                | MapType::HttpCallResponseTrailers
                | MapType::GrpcCallInitialMetadata
                | MapType::GrpcCallTrailingMetadata
        );
        // Callout and gRPC maps are read-only (spec: they "can be read in" their callback;
        // Envoy's mutable accessor `getMap` has no case for them, so changes are BAD_ARGUMENT).
        if call_map && access == MapAccess::Write {
            return Err(Status::BadArgument);
        }
        // A call without a reply (an Envoy reset) has no maps at all: reading one is refused as
        // a map that is not there (ENVOY-SRC `getConstMap` returns null: BAD_ARGUMENT).
        let missing = unavailable_map_status(callback, access);
        let present = |data: &Option<Pairs>| data.is_some().then_some(()).ok_or(missing);
        match map {
            MapType::HttpCallResponseHeaders if callback_map(&[Callback::HttpCallResponse]) => {
                let data = active.data.as_deref_mut().ok_or(missing)?;
                present(&data.headers)?;
                Ok(MapSlot::read_only(&mut data.headers, budget))
            }
            MapType::HttpCallResponseTrailers if callback_map(&[Callback::HttpCallResponse]) => {
                let data = active.data.as_deref_mut().ok_or(missing)?;
                present(&data.trailers)?;
                Ok(MapSlot::read_only(&mut data.trailers, budget))
            }
            MapType::GrpcCallInitialMetadata if callback_map(&[Callback::GrpcReceiveInitialMetadata]) => {
                Ok(MapSlot::read_only(&mut active.data_mut().headers, budget))
            }
            MapType::GrpcCallTrailingMetadata if callback_map(&[Callback::GrpcReceiveTrailingMetadata]) => {
                Ok(MapSlot::read_only(&mut active.data_mut().headers, budget))
            }
            _ if call_map => Err(Status::BadArgument),
            _ => {
                let id = active.effective_id;
                let stream = streams.get_mut(&id).ok_or(Status::BadArgument)?;
                let phase = StreamPhase {
                    request_paused_in: stream.request.paused_in,
                    response_paused_in: stream.response.paused_in,
                    request_complete: stream.request.complete,
                    response_complete: stream.response.complete,
                };
                if !profile.map_accessible(map, access, callback, phase) {
                    return Err(unavailable_map_status(callback, access));
                }
                let (pairs, growth) = match map {
                    MapType::HttpRequestHeaders => (&mut stream.request.headers, &mut stream.request.headers_growth),
                    MapType::HttpRequestTrailers => (&mut stream.request.trailers, &mut stream.request.trailers_growth),
                    MapType::HttpResponseHeaders => (&mut stream.response.headers, &mut stream.response.headers_growth),
                    _ => (&mut stream.response.trailers, &mut stream.response.trailers_growth),
                };
                Ok(MapSlot {
                    pairs,
                    growth: Some(growth),
                    budget,
                })
            }
        }
    }

    /// `proxy_set_header_map_pairs`.
    pub(crate) fn set_map_pairs(&mut self, map: MapType, pairs: Pairs) -> Result<(), Fault> {
        self.make_room(pairs_footprint(&pairs));
        Ok(self.map_slot(map, MapAccess::Write)?.set_all(pairs)?)
    }

    /// `proxy_add_header_map_value`.
    pub(crate) fn add_map_value(&mut self, map: MapType, key: Vec<u8>, value: Vec<u8>) -> Result<(), Fault> {
        self.make_room(pair_footprint(&key, &value));
        Ok(self.map_slot(map, MapAccess::Write)?.add(key, value)?)
    }

    /// `proxy_replace_header_map_value`.
    pub(crate) fn replace_map_value(&mut self, map: MapType, key: Vec<u8>, value: Vec<u8>) -> Result<(), Fault> {
        self.make_room(pair_footprint(&key, &value));
        Ok(self.map_slot(map, MapAccess::Write)?.replace(key, value)?)
    }

    /// `proxy_remove_header_map_value`.
    pub(crate) fn remove_map_value(&mut self, map: MapType, key: &[u8]) -> Result<(), Fault> {
        self.map_slot(map, MapAccess::Write)?.remove(key);
        Ok(())
    }

    /// Keeps a `proxy_http_call` until it is answered, cancelled or its context ends.
    pub(crate) fn add_http_call(&mut self, call: HttpCall) -> Result<(), Fault> {
        let footprint = std::mem::size_of::<HttpCall>()
            + call.upstream.len()
            + pairs_footprint(&call.headers)
            + call.body.len()
            + pairs_footprint(&call.trailers);
        self.make_room(footprint);
        let charge = self.budget.charge(footprint)?;
        self.http_calls.insert(call.token, Held { data: call, charge });
        Ok(())
    }

    /// Keeps a gRPC call or stream until it is answered or its context ends.
    pub(crate) fn add_grpc_call(&mut self, call: GrpcCall) -> Result<(), Fault> {
        let footprint = std::mem::size_of::<GrpcCall>()
            + call.upstream.len()
            + call.service.len()
            + call.method.len()
            + pairs_footprint(&call.initial_metadata)
            + call.messages.iter().map(|m| m.len() + ENTRY_OVERHEAD).sum::<usize>();
        self.make_room(footprint);
        let charge = self.budget.charge(footprint)?;
        self.grpc_calls.insert(call.token, Held { data: call, charge });
        Ok(())
    }

    /// `proxy_grpc_send`: the message is kept with its stream (charged to it).
    pub(crate) fn grpc_send(&mut self, token: u32, message: Vec<u8>, end_stream: bool) -> Result<(), Fault> {
        self.make_room(message.len() + ENTRY_OVERHEAD);
        let held = self.grpc_calls.get_mut(&token).ok_or(Status::NotFound)?;
        let call = &held.data;
        // Spec: BAD_ARGUMENT for a token that is not an open stream.
        if call.kind != GrpcKind::Stream || call.cancelled || call.closed {
            return Err(Status::BadArgument.into());
        }
        if call.end_stream_sent {
            // After the half-close: the profile's answer; nothing more goes out.
            return Fault::check(self.profile.grpc_send_after_end_status());
        }
        held.charge.grow(message.len() + ENTRY_OVERHEAD)?;
        held.data.messages.push(message);
        held.data.end_stream_sent = end_stream;
        Ok(())
    }

    /// `proxy_grpc_cancel` (`close == false`) or `proxy_grpc_close`. Closing a stream also
    /// half-closes it ([`GrpcCall::ended_by_guest`]).
    pub(crate) fn end_grpc(&mut self, token: u32, close: bool) -> Result<(), Fault> {
        let held = self.grpc_calls.get_mut(&token).ok_or(Status::NotFound)?;
        if close {
            held.data.closed = true;
            held.data.end_stream_sent = true;
        } else {
            held.data.cancelled = true;
        }
        Ok(())
    }

    /// `proxy_set_property`: Envoy keeps guest-set properties in the stream's filter state and,
    /// without a stream, answers NOT_FOUND (ENVOY-SRC `Context::setProperty`); Kong keeps them
    /// with the filter.
    pub(crate) fn set_property(&mut self, path: Vec<u8>, value: Vec<u8>) -> Result<(), Fault> {
        self.make_room(2 * path.len() + value.len() + ENTRY_OVERHEAD);
        let needs_stream = self.profile.properties_need_a_stream();
        let id = self.effective();
        let map = match id.and_then(|id| self.streams.get_mut(&id)) {
            Some(stream) => &mut stream.properties,
            None if needs_stream => return Err(Status::NotFound.into()),
            None => &mut self.properties,
        };
        map.set_by_guest(&self.budget, path, value)?;
        Ok(())
    }

    /// `proxy_set_shared_data` in this VM's id.
    pub(crate) fn set_shared_data(&mut self, key: Vec<u8>, value: Vec<u8>, cas: u32) -> Result<(), Fault> {
        self.make_room(self.vm_id.len() + key.len() + value.len() + ENTRY_OVERHEAD);
        let status = self
            .shared
            .lock()
            .set_data(&self.budget, &self.vm_id, key, value, cas)?;
        Fault::check(status)
    }

    /// `proxy_register_shared_queue` for the effective root context.
    pub(crate) fn register_queue(&mut self, name: &str) -> Result<u32, Fault> {
        let owner = self.effective_root().ok_or(Status::BadArgument)?;
        self.make_room(2 * (self.vm_id.len() + name.len()) + std::mem::size_of::<Queue>());
        let id = self
            .shared
            .lock()
            .register_queue(&self.budget, &self.vm_id, name, self.vm_key, owner)?;
        Ok(id)
    }

    /// `proxy_enqueue_shared_queue`.
    pub(crate) fn enqueue(&mut self, id: u32, value: Vec<u8>) -> Result<(), Fault> {
        self.make_room(value.len() + ENTRY_OVERHEAD + std::mem::size_of::<(u32, u32)>());
        let status = {
            let mut shared = self.shared.lock();
            let status = shared.enqueue(&self.budget, id, value);
            self.shared.note_notifications(&shared);
            status?
        };
        Fault::check(status)
    }

    /// `proxy_define_metric`, under the name the profile's host exports it as.
    pub(crate) fn define_metric(&mut self, kind: MetricType, name: &str) -> Result<u32, Fault> {
        let full_name = self.profile.metric_name(&self.plugin_name, name);
        self.make_room(2 * full_name.len() + std::mem::size_of::<Metric>() + ENTRY_OVERHEAD);
        Ok(self.shared.lock().define_metric(&self.budget, kind, full_name)?)
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
        self.streams.get_mut(&id).map(|s| &mut **s)
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

    /// The token the last call was given (0 before any): calls are numbered in the order they
    /// are made, so those made since a look are the ones above the token seen then.
    pub(crate) fn last_token(&self) -> u32 {
        self.next_token
    }

    /// Notes that something may have changed on stream `id` (a callback ran on it, or the guest
    /// made it the effective context), for [`crate::Vm::take_touched_streams`]; each stream is
    /// listed once until taken. Ids of streams that ended meanwhile are pruned here, so the
    /// list stays as long as the live streams even when nobody takes it.
    pub(crate) fn touch_stream(&mut self, id: u32) {
        if self.last_touched == Some(id) {
            return;
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        self.last_touched = Some(id);
        if !std::mem::replace(&mut stream.touched, true) {
            self.touched_streams.push(id);
            if self.touched_streams.len() > 2 * self.streams.len() + 16 {
                let streams = &self.streams;
                self.touched_streams.retain(|id| streams.contains_key(id));
            }
        }
    }

    /// Adds a new stream. Context ids wrap around after 2^32 contexts, so a new stream may have
    /// the id of one touched long ago: it starts untouched.
    pub(crate) fn insert_stream(&mut self, id: u32, stream: Box<StreamState>) {
        if self.last_touched == Some(id) {
            self.last_touched = None;
        }
        self.streams.insert(id, stream);
    }

    /// The streams touched since the last call ([`HostState::touch_stream`]), oldest first.
    pub(crate) fn take_touched_streams(&mut self) -> Vec<u32> {
        let touched = std::mem::take(&mut self.touched_streams);
        self.last_touched = None;
        for id in &touched {
            if let Some(stream) = self.streams.get_mut(id) {
                stream.touched = false;
            }
        }
        touched
    }

    pub(crate) fn allocate_token(&mut self) -> u32 {
        self.next_token = self.next_token.wrapping_add(1).max(1);
        self.next_token
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }
}

/// The status for a stream map the current callback may not touch (only hosts that police
/// maps by phase refuse one: [`crate::profile::HostBehaviour::map_accessible`]): a read in the
/// access log phase is NOT_FOUND ("Maps might point to nullptr in the access log phase",
/// ENVOY-SRC `getHeaderMapValue`), anything else BAD_ARGUMENT ("Requested map type is not
/// currently available").
fn unavailable_map_status(callback: Callback, access: MapAccess) -> Status {
    if callback == Callback::Log && access == MapAccess::Read {
        Status::NotFound
    } else {
        Status::BadArgument
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn entry(message: &str) -> LogEntry {
        LogEntry {
            level: LogLevel::Info,
            message: message.to_string(),
            context_id: None,
        }
    }

    #[test]
    fn the_log_book_charges_each_line_and_gives_way_to_the_budget() {
        let line = std::mem::size_of::<LogEntry>() + 10;
        let budget = HostBudget::new(3 * line);
        let mut logs = LogBook::default();
        for i in 0..5 {
            logs.push(&budget, entry(&format!("line {i:5}")), 100);
        }
        // Three lines fit; the two oldest gave way.
        let kept: Vec<_> = logs.iter().map(|l| l.message.clone()).collect();
        assert_eq!(kept, ["line     2", "line     3", "line     4"]);
        assert_eq!((budget.used(), logs.dropped()), (3 * line, 2));
        // Other charges make room by dropping the oldest lines.
        assert!(logs.drop_oldest());
        assert_eq!(budget.used(), 2 * line);
        // A line larger than the whole budget is dropped itself.
        logs.push(&budget, entry(&"x".repeat(4 * line)), 100);
        assert_eq!((logs.iter().count(), logs.dropped()), (0, 6));
        assert_eq!(budget.used(), 0);
        // The entry limit still applies; taking the lines releases them.
        logs.push(&budget, entry("line     a"), 1);
        logs.push(&budget, entry("line     b"), 1);
        assert_eq!(logs.iter().count(), 1);
        assert_eq!(logs.take_all().len(), 1);
        assert_eq!(budget.used(), 0);
    }

    fn slot<'a>(pairs: &'a mut Option<Pairs>, growth: &'a mut GuestGrowth, budget: &'a Arc<HostBudget>) -> MapSlot<'a> {
        MapSlot {
            pairs,
            growth: Some(growth),
            budget,
        }
    }

    #[test]
    fn header_map_changes_charge_exactly_what_the_guest_added() {
        let budget = HostBudget::new(1000);
        let mut dir = Direction::default();
        dir.set_headers(vec![(b"host".to_vec(), b"abc".to_vec())]);
        let pair = |k: &str, v: &str| pair_footprint(k.as_bytes(), v.as_bytes());
        slot(&mut dir.headers, &mut dir.headers_growth, &budget)
            .add(b"x".to_vec(), b"12345".to_vec())
            .unwrap();
        slot(&mut dir.headers, &mut dir.headers_growth, &budget)
            .add(b"x".to_vec(), b"678".to_vec())
            .unwrap();
        assert_eq!(budget.used(), pair("x", "12345") + pair("x", "678"));
        // Replace keeps the first occurrence with the new value and drops the others.
        slot(&mut dir.headers, &mut dir.headers_growth, &budget)
            .replace(b"X".to_vec(), b"1".to_vec())
            .unwrap();
        assert_eq!(budget.used(), pair("x", "1"));
        assert_eq!(
            dir.headers_growth.total(),
            pairs_footprint(dir.headers.as_ref().unwrap())
        );
        // Without the host's header the map is smaller than what the host delivered: the growth
        // is measured against the host's share, so nothing is charged (and the guest can never
        // hold more than the host delivered plus the budget).
        slot(&mut dir.headers, &mut dir.headers_growth, &budget).remove(b"host");
        assert_eq!(budget.used(), 0);
        assert_eq!(
            dir.headers_growth.total(),
            pairs_footprint(dir.headers.as_ref().unwrap())
        );
        slot(&mut dir.headers, &mut dir.headers_growth, &budget).remove(b"x");
        assert_eq!((budget.used(), dir.headers_growth.total()), (0, 0));
        // A refused change leaves the map as it was.
        let big = vec![b'v'; 1000];
        let refused = slot(&mut dir.headers, &mut dir.headers_growth, &budget).add(b"big".to_vec(), big.clone());
        assert!(refused.is_err());
        assert_eq!(dir.headers.as_ref().map(Vec::len), Some(0));
        let all = vec![(b"a".to_vec(), big)];
        assert!(slot(&mut dir.headers, &mut dir.headers_growth, &budget)
            .set_all(all)
            .is_err());
        assert_eq!(dir.headers.as_ref().map(Vec::len), Some(0));
        slot(&mut dir.headers, &mut dir.headers_growth, &budget)
            .set_all(vec![(b"a".to_vec(), b"b".to_vec())])
            .unwrap();
        assert_eq!(budget.used(), pair("a", "b"));
        // The host replacing the map releases what the guest had added.
        dir.set_headers(Vec::new());
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn body_writes_charge_growth_beyond_what_the_host_delivered() {
        let budget = HostBudget::new(100);
        let mut dir = Direction::default();
        dir.receive_body(b"0123456789");
        dir.splice_body(&budget, usize::MAX, 0, vec![b'a'; 20]).unwrap();
        assert_eq!(budget.used(), 20);
        // The first 15 bytes replaced by 5: 20 bytes left, 10 more than the host delivered.
        dir.splice_body(&budget, 0, 15, vec![b'b'; 5]).unwrap();
        assert_eq!((dir.body.len(), budget.used()), (20, 10));
        assert!(dir.splice_body(&budget, 0, 0, vec![b'c'; 91]).is_err());
        assert_eq!(dir.body.len(), 20);
        dir.receive_body(b"more");
        assert_eq!(budget.used(), 10);
        let body = dir.take_body();
        assert_eq!((body.len(), budget.used()), (24, 0));
    }

    #[test]
    fn a_recycled_stream_gives_everything_back_and_renews_as_a_new_one() {
        let budget = HostBudget::new(100_000);
        let mut st = StreamState::new(7, StreamInfo::default());
        for dir in [&mut st.request, &mut st.response] {
            dir.set_headers(vec![(b"a".to_vec(), b"1".to_vec())]);
            dir.set_trailers(vec![(b"t".to_vec(), b"2".to_vec())]);
            dir.receive_body(b"0123456789");
            dir.splice_body(&budget, usize::MAX, 0, vec![b'a'; 20]).unwrap();
            dir.forwarded_body = vec![1; 100_000];
            dir.staged_body = vec![2; 10];
            dir.queued.push_back(Queued::Body(vec![3; 5], true));
            dir.body_available = true;
            dir.headers_forwarded = true;
            dir.trailers_forwarded = true;
            dir.paused_in = Some(Callback::RequestBody);
            dir.resume_requested = true;
            dir.complete = true;
            dir.body_in_temp_file = true;
        }
        st.properties
            .set_by_guest(&budget, b"p".to_vec(), vec![0; 100])
            .unwrap();
        let reply = LocalResponse {
            status: 503,
            details: "d".into(),
            headers: vec![("h".into(), "v".into())],
            body: b"b".to_vec(),
            grpc_status: None,
        };
        st.local_response = Some(reply.clone());
        st.pending_local_response = Some(reply);
        (st.reset, st.local_reply_in_response, st.local_reply_by_host, st.touched) = (true, true, true, true);
        st.info.request_id = "id".into();
        st.actions.push(ActionRecord {
            callback: "on_request_headers",
            action: Some("Continue"),
        });
        assert!(budget.used() > 0);

        st.recycle();
        assert_eq!(budget.used(), 0, "what the guest was charged is given back at once");
        // Small buffers keep their allocation, large ones do not.
        assert!(st.request.staged_body.capacity() >= 10);
        assert_eq!(st.request.forwarded_body.capacity(), 0);
        let info = StreamInfo {
            request_id: "next".into(),
            ..StreamInfo::default()
        };
        st.renew(9, info.clone());
        assert_eq!(format!("{st:?}"), format!("{:?}", StreamState::new(9, info)));
    }

    #[test]
    fn properties_charge_guest_values_and_release_them_when_replaced() {
        let budget = HostBudget::new(1000);
        let mut props = PropertyMap::default();
        props.set_by_guest(&budget, b"p".to_vec(), vec![0; 100]).unwrap();
        let one = 2 + 100 + ENTRY_OVERHEAD;
        assert_eq!(budget.used(), one);
        props.set_by_guest(&budget, b"p".to_vec(), vec![0; 10]).unwrap();
        assert_eq!(budget.used(), one - 90);
        assert!(props.set_by_guest(&budget, b"q".to_vec(), vec![0; 1000]).is_err());
        assert_eq!(props.get(b"q"), None);
        props.set_by_host(b"p".to_vec(), b"host".to_vec());
        assert_eq!(
            (budget.used(), props.get(b"p").map(Vec::as_slice)),
            (0, Some(&b"host"[..]))
        );
        props.set_by_guest(&budget, b"r".to_vec(), Vec::new()).unwrap();
        drop(props);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn shared_data_is_charged_to_its_last_writer_and_released_on_overwrite() {
        let (a, b) = (HostBudget::new(1000), HostBudget::new(1000));
        let mut shared = SharedInner::default();
        let entry = |value: usize| 2 + 1 + value + ENTRY_OVERHEAD;
        assert_eq!(
            shared.set_data(&a, "vm", b"k".to_vec(), vec![0; 100], 0),
            Ok(Status::Ok)
        );
        assert_eq!(a.used(), entry(100));
        // Overwritten by another VM: the bytes move to the writer.
        assert_eq!(shared.set_data(&b, "vm", b"k".to_vec(), vec![0; 10], 0), Ok(Status::Ok));
        assert_eq!((a.used(), b.used()), (0, entry(10)));
        // A cas mismatch or a refusal changes nothing.
        assert_eq!(
            shared.set_data(&a, "vm", b"k".to_vec(), vec![0; 5], 12345),
            Ok(Status::CasMismatch)
        );
        assert!(shared.set_data(&b, "vm", b"k".to_vec(), vec![0; 1000], 0).is_err());
        assert!(shared.set_data(&a, "vm", b"new".to_vec(), vec![0; 1000], 0).is_err());
        assert_eq!(shared.get_data("vm", b"k").map(|(v, _)| v.len()), Some(10));
        assert_eq!(shared.get_data("vm", b"new"), None);
        assert_eq!((a.used(), b.used()), (0, entry(10)));
    }

    #[test]
    fn queue_items_are_charged_until_dequeued() {
        let budget = HostBudget::new(10_000);
        let mut shared = SharedInner::default();
        let id = shared.register_queue(&budget, "vm", "q", 1, 1).unwrap();
        let registered = budget.used();
        assert!(registered > 0);
        assert_eq!(shared.register_queue(&budget, "vm", "q", 1, 2), Ok(id));
        assert_eq!(budget.used(), registered, "opening it again charges nothing");
        assert_eq!(shared.enqueue(&budget, id, vec![1; 100]), Ok(Status::Ok));
        assert_eq!(shared.enqueue(&budget, id, vec![2; 200]), Ok(Status::Ok));
        let items = budget.used() - registered;
        assert!(shared.enqueue(&budget, id, vec![0; 10_000]).is_err());
        assert_eq!(shared.enqueue(&budget, 999, vec![0; 1]), Ok(Status::NotFound));
        assert_eq!(shared.dequeue(id).map(|v| v.len()), Ok(100));
        assert_eq!(budget.used(), registered + items - (100 + ENTRY_OVERHEAD + 8));
        assert_eq!(shared.dequeue(id).map(|v| v.len()), Ok(200));
        assert_eq!(budget.used(), registered);
        assert_eq!(shared.dequeue(id), Err(Status::Empty));
    }

    #[test]
    fn metrics_are_charged_and_histogram_samples_stop_at_the_budget() {
        let per_metric = |name: &str| 2 * name.len() + std::mem::size_of::<Metric>() + ENTRY_OVERHEAD;
        let budget = HostBudget::new(per_metric("h") + 3 * 8);
        let mut shared = SharedInner::default();
        let id = shared
            .define_metric(&budget, MetricType::Histogram, "h".into())
            .unwrap();
        assert_eq!(shared.define_metric(&budget, MetricType::Histogram, "h".into()), Ok(id));
        assert!(shared.define_metric(&budget, MetricType::Counter, "c".into()).is_err());
        for value in 1..=5 {
            assert_eq!(shared.record_metric(id, value), Status::Ok);
        }
        let metric = &shared.metrics[&id];
        assert_eq!(
            (metric.samples.as_slice(), metric.count, metric.sum),
            (&[1, 2, 3][..], 5, 15)
        );
        assert_eq!(budget.available(), 0);
    }
}
