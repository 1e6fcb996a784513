//! Every bound host-sim puts on a guest, in one place (as proxy-wasm-cpp-host keeps them in
//! `limits.h`). Each default cites the host behaviour it models.

use std::time::Duration;

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
    /// refuses it ([`crate::Profile::over_budget`]); log lines never cause a refusal, the oldest
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
