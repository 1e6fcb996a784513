//! Every bound host-sim puts on a guest, in one place (as proxy-wasm-cpp-host keeps them in
//! `limits.h`). Each default cites the host behaviour it models.

use std::fmt;
use std::time::Duration;

/// Samples host-sim keeps per histogram metric (the guest records values with
/// `proxy_record_metric`; hosts aggregate them, host-sim keeps them for tests to read: past this
/// many the oldest sample gives way, while count and sum keep counting every record).
pub(crate) const MAX_HISTOGRAM_SAMPLES: usize = 10_000;

/// Largest callout response body `serve` reads from an upstream before handing it to the guest
/// (Envoy's default buffer limit for callouts is smaller; this only protects the gateway).
pub(crate) const MAX_CALLOUT_RESPONSE_BYTES: usize = 64 << 20;

/// Largest gRPC message `serve` reads from a server for a guest's gRPC call or stream; a longer
/// one ends the call with RESOURCE_EXHAUSTED, as gRPC clients refuse a message above their
/// receive limit (4 MiB by default in grpc-go and grpc-java: `defaultClientMaxReceiveMessageSize`,
/// `DEFAULT_MAX_MESSAGE_SIZE`).
pub(crate) const MAX_GRPC_MESSAGE_BYTES: usize = 4 << 20;

/// Largest block of initial or trailing metadata `serve` accepts from a gRPC server for a guest
/// (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`; a larger block resets the stream, which closes the
/// call as a reset): Envoy's default header limit, `max_response_headers_kb` 60 KiB.
pub(crate) const MAX_GRPC_METADATA_BYTES: u32 = 60 << 10;

/// Largest HTTP/1 request head `serve` records the wire names of (the profile's
/// `request_headers_as_sent`): hyper's own read buffer limit, `DEFAULT_MAX_BUFFER_SIZE`
/// (hyper 1.x src/proto/h1/io.rs:23), so a longer head is hyper's error (431) anyway.
pub(crate) const MAX_WIRE_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// Most header fields in one recorded request head: hyper's own limit, `DEFAULT_MAX_HEADERS`
/// (hyper 1.x src/proto/h1/role.rs:31); more is hyper's error (431) anyway.
pub(crate) const MAX_WIRE_HEAD_FIELDS: usize = 100;

/// Most bytes of recorded request heads one connection keeps ahead of its request handler
/// (pipelined requests; each head counts its method, target and names plus a fixed bookkeeping
/// size per name and per head): twice the largest head. Past it that connection's later requests
/// fall back to hyper's view of their headers (names lower-case, repeats grouped).
pub(crate) const MAX_RECORDED_HEAD_BYTES: usize = 2 * MAX_WIRE_HEAD_BYTES;

/// Resource limits applied to one VM.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest linear memory a guest may grow to. Envoy's default VM limit is 1 GiB
    /// (proxy-wasm-cpp-host `PROXY_WASM_HOST_MAX_WASM_MEMORY_SIZE_BYTES`).
    pub max_memory_bytes: usize,
    /// Most pairs accepted in one serialized map from the guest. Envoy caps a header map at
    /// 1024 pairs (proxy-wasm-cpp-host `PROXY_WASM_HOST_PAIRS_MAX_COUNT`).
    pub max_pairs: usize,
    /// Largest single buffer the guest may hand to the host in one call (body, value, message).
    pub max_guest_buffer_bytes: usize,
    /// Wall-clock budget for one callback into the guest, enforced with wasmtime epochs; a guest
    /// stuck in a loop traps instead of hanging the host.
    pub callback_deadline: Duration,
    /// Optional instruction budget per callback (wasmtime fuel): deterministic, unlike the
    /// deadline, at the cost of some speed. `None` disables fuel metering.
    pub fuel_per_callback: Option<u64>,
    /// Most bytes of WASI stdout/stderr kept per callback before the rest is dropped (and said so).
    pub max_stdio_bytes_per_callback: usize,
    /// Most log entries kept in a VM's log before the oldest are dropped (counted).
    pub max_log_entries: usize,
    /// Most bytes the host holds on the guest's behalf, all kinds together: log lines, body
    /// bytes and header pairs the guest added beyond what the host received, pending HTTP and
    /// gRPC calls (headers, body, messages), shared data entries and queue items it wrote, queues
    /// and metrics it created (histogram samples included), properties it set. Each entry counts
    /// its bytes plus a fixed bookkeeping size, so empty values cost something too. Bytes are
    /// released exactly when the host lets go of them (a call answered, a queue item dequeued,
    /// shared data overwritten, a stream ended, logs taken by the embedder).
    ///
    /// Past it the host refuses what the guest asked it to keep, the way the profile's host
    /// refuses it ([`crate::profile::HostBehaviour::over_budget`]); log lines never cause a refusal, the oldest
    /// are dropped to make room instead. Neither host bounds this per VM: Envoy keeps whatever a
    /// filter hands it, and ngx_wasm_module bounds only its shared memory zones (`shm_kv` /
    /// `shm_queue` sizes, at least 15k, Kong/ngx_wasm_module docs/DIRECTIVES.md). The default
    /// gives the host side the same 1 GiB Envoy allows a guest's own linear memory
    /// (`max_memory_bytes`), so a guest can at most double what it costs the process.
    pub max_host_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory_bytes: 1 << 30,
            max_pairs: 1024,
            max_guest_buffer_bytes: 64 << 20,
            callback_deadline: Duration::from_secs(10),
            fuel_per_callback: None,
            max_stdio_bytes_per_callback: 1 << 20,
            max_log_entries: 100_000,
            max_host_bytes: 1 << 30,
        }
    }
}

/// How often the engine's epoch advances; deadlines are rounded up to this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most tick timers a root keeps from instances that trapped (Kong re-arms one per re-creation,
/// `HostBehaviour::tick_timers_outlive_instance`): a guest that traps on every request must not
/// make each tick cost grow without bound. Real Kong has no such bound.
pub const MAX_INHERITED_TICK_TIMERS: u32 = 64;

/// The bounds of `serve`'s HTTP edge: how long a client may take and how many may be connected.
/// Neither host bounds all of these by default (Envoy leaves request-header and whole-request
/// timeouts off), so the defaults follow nginx, the server under Kong, whose defaults are
/// documented per directive (nginx.org/en/docs/http/ngx_http_core_module.html,
/// ngx_core_module/events docs); each field says which it follows.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// From a request's first byte until its head (request line and headers) is complete. Past
    /// it the connection is closed without an answer, as both hosts do: nginx
    /// `client_header_timeout` (default 60 s), Envoy `request_headers_timeout` (off by default;
    /// "the connection will be closed" when it passes).
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in progress (after it opened or
    /// after its last answer) before it is closed: nginx `keepalive_timeout` (default 75 s);
    /// Envoy's `idle_timeout` (default 1 h) has the same meaning.
    pub idle_timeout: Duration,
    /// From a request's first byte until its body is complete. Past it the client gets 408 and
    /// the connection is closed: Envoy `request_timeout` (off by default; 408 when it passes);
    /// nginx bounds the time between two reads of the body instead (`client_body_timeout`,
    /// default 60 s, 408 too), so a body trickled one byte a minute is held for ever there.
    pub request_timeout: Duration,
    /// Connections open at once. At the cap the listener stops accepting until one closes; the
    /// kernel's backlog holds the rest (back-pressure, not a busy loop). nginx caps connections
    /// per worker (`worker_connections`, default 512); Envoy only with the overload manager's
    /// `global_downstream_max_connections`. The process's open-file limit (`ulimit -n`) must be
    /// above it; when it is not, accept errors pause the listener (nginx does the same on
    /// EMFILE: it disables accept events for a while).
    pub max_connections: usize,
    /// Pause after a failed accept (for example EMFILE at the open-file limit), so the accept
    /// loop never spins.
    pub accept_error_pause: Duration,
    /// Largest request body accepted before the filter sees it; a larger one gets 413 (nginx
    /// `client_max_body_size`, Kong sets no limit; Envoy's wasm filter buffers what the filter
    /// asks for up to the connection manager's buffer limits).
    pub max_request_bytes: usize,
    /// After an early 413 (or 400), how long the rest of the body is read and discarded so the
    /// client, still sending, receives the answer instead of a reset: nginx's lingering close
    /// (`lingering_time`, default 30 s).
    pub lingering_time: Duration,
    /// At shutdown (SIGTERM, or [`crate::serve::RunningGateway::shutdown`]): how long requests
    /// in flight, and then the filters' root contexts (Envoy profile: `proxy_on_done`, waiting
    /// for `proxy_done`), get to finish before the VMs are stopped with whatever they still
    /// hold. Kong's `kong quit` waits 10 s by default (`--timeout`) before it stops nginx.
    pub drain_time: Duration,
    /// How long a request may wait for the filter's answer (a filter holding it on a callout or
    /// gRPC call without a timeout, or on a gRPC stream the server keeps open). Past it the client
    /// gets 408 "stream timeout" and the filter's stream ends, cancelling its calls: Envoy's HTTP
    /// connection manager `stream_idle_timeout` (default 5 min; 408 when no response started).
    /// nginx has no such bound on a paused filter, but Kong's filter calls all time out first.
    pub stream_idle_timeout: Duration,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            header_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            request_timeout: Duration::from_secs(60),
            max_connections: 1024,
            accept_error_pause: Duration::from_millis(100),
            max_request_bytes: 64 << 20,
            lingering_time: Duration::from_secs(30),
            drain_time: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(300),
        }
    }
}

/// A charge the budget could not take: the host refuses the operation that needed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// Bytes the operation needed.
    pub needed: usize,
    /// Bytes the budget still had.
    pub available: usize,
    /// The budget's limit.
    pub limit: usize,
}

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host memory budget exhausted: {} more bytes needed, {} of {} left",
            self.needed, self.available, self.limit
        )
    }
}
