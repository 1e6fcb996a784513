//! WASI preview 1 for the guest, on `wasmtime-wasi` (the maintained implementation).
//!
//! Per the proxy-wasm spec ("Logging", `fd_write`): stdout becomes `info` log lines and stderr
//! `error` lines. Clocks and randomness are deterministic by default (a virtual clock the driver
//! advances, a seeded RNG) so tests replay exactly; real ones on request. No filesystem and no
//! environment unless the embedder asks (spec: "Exposing the host's environment variables is
//! highly discouraged").

use bytes::Bytes;
use rand::SeedableRng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// The virtual clock starts at 2024-01-01T00:00:00Z so guest timestamps are stable.
pub const VIRTUAL_EPOCH_NS: u64 = 1_704_067_200 * 1_000_000_000;

/// The time source shared by WASI clocks, `proxy_get_current_time_nanoseconds` and timers.
#[derive(Clone, Debug)]
pub enum Clock {
    /// Moves only when the driver advances it.
    Virtual(Arc<AtomicU64>),
    /// The system clock.
    Real,
}

impl Clock {
    /// A virtual clock at [`VIRTUAL_EPOCH_NS`].
    pub fn virtual_clock() -> Clock {
        Clock::Virtual(Arc::new(AtomicU64::new(VIRTUAL_EPOCH_NS)))
    }

    /// Nanoseconds since the Unix epoch.
    pub fn now_ns(&self) -> u64 {
        match self {
            Clock::Virtual(ns) => ns.load(Ordering::SeqCst),
            Clock::Real => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        }
    }

    /// Moves a virtual clock to `ns` (never backwards). No effect on the real clock.
    pub fn set_ns(&self, ns: u64) {
        if let Clock::Virtual(cur) = self {
            cur.fetch_max(ns, Ordering::SeqCst);
        }
    }

    /// Whether this is the virtual clock.
    pub fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual(_))
    }
}

struct VirtualWall(Arc<AtomicU64>);
impl HostWallClock for VirtualWall {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

struct VirtualMonotonic(Arc<AtomicU64>);
impl HostMonotonicClock for VirtualMonotonic {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst) - VIRTUAL_EPOCH_NS
    }
}

/// Where guest stdout/stderr bytes collect until the driver turns them into log lines after each
/// callback. Bounded: past the limit bytes are dropped and counted.
#[derive(Clone, Default)]
pub struct StdioCapture {
    pub(crate) stdout: Arc<Mutex<Sink>>,
    pub(crate) stderr: Arc<Mutex<Sink>>,
    /// Set by every write to either sink, taken by [`StdioCapture::take_written`]: the host
    /// looks at the sinks after each callback, and most callbacks write nothing.
    written: Arc<AtomicBool>,
}

#[derive(Default)]
pub(crate) struct Sink {
    pub bytes: Vec<u8>,
    pub limit: usize,
    pub dropped: u64,
}

impl Sink {
    fn push(&mut self, data: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        let take = room.min(data.len());
        self.bytes.extend_from_slice(&data[..take]);
        self.dropped += (data.len() - take) as u64;
    }
}

impl StdioCapture {
    fn new(limit: usize) -> Self {
        let sink = || {
            Arc::new(Mutex::new(Sink {
                limit,
                ..Sink::default()
            }))
        };
        StdioCapture {
            stdout: sink(),
            stderr: sink(),
            written: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the guest wrote to stdout or stderr since the last call (then drain both).
    pub(crate) fn take_written(&self) -> bool {
        self.written.swap(false, Ordering::AcqRel)
    }

    /// Takes complete lines (and, at the end of a callback, any partial line) out of a sink.
    pub(crate) fn drain(sink: &Arc<Mutex<Sink>>) -> (Vec<String>, u64) {
        let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = std::mem::take(&mut s.bytes);
        let dropped = std::mem::take(&mut s.dropped);
        drop(s);
        if bytes.is_empty() {
            // The usual case after a callback: nothing written.
            return (Vec::new(), dropped);
        }
        let text = String::from_utf8_lossy(&bytes);
        let lines = text
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect();
        (lines, dropped)
    }
}

#[derive(Clone)]
struct SinkStream(Arc<Mutex<Sink>>, Arc<AtomicBool>);

impl SinkStream {
    fn push(&self, bytes: &[u8]) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(bytes);
        self.1.store(true, Ordering::Release);
    }
}

impl IsTerminal for SinkStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for SinkStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for SinkStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always writable: overflow is dropped and counted rather than blocking the guest.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for SinkStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for SinkStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// What the guest's WASI world looks like.
#[derive(Debug, Clone, Default)]
pub struct WasiOptions {
    /// Use the system clocks instead of the virtual clock.
    pub real_clock: bool,
    /// Use OS randomness instead of the seeded generator.
    pub real_random: bool,
    /// Seed of the deterministic generator.
    pub random_seed: u64,
    /// Environment variables visible to the guest (none by default).
    pub env: Vec<(String, String)>,
}

/// Builds the WASI context, the stdio capture and the clock for one VM.
pub(crate) fn build(options: &WasiOptions, stdio_limit: usize) -> (wasmtime_wasi::p1::WasiP1Ctx, StdioCapture, Clock) {
    let capture = StdioCapture::new(stdio_limit);
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(SinkStream(capture.stdout.clone(), capture.written.clone()))
        .stderr(SinkStream(capture.stderr.clone(), capture.written.clone()))
        .envs(&options.env)
        .allow_blocking_current_thread(true);
    let clock = if options.real_clock {
        Clock::Real
    } else {
        let clock = Clock::virtual_clock();
        if let Clock::Virtual(ns) = &clock {
            builder
                .wall_clock(VirtualWall(ns.clone()))
                .monotonic_clock(VirtualMonotonic(ns.clone()));
        }
        clock
    };
    if !options.real_random {
        builder
            .secure_random(rand::rngs::StdRng::seed_from_u64(options.random_seed))
            .insecure_random(rand::rngs::StdRng::seed_from_u64(options.random_seed ^ 0x5eed))
            .insecure_random_seed(options.random_seed as u128);
    }
    (builder.build_p1(), capture, clock)
}

/// WASI preview 1 functions (`wasi_snapshot_preview1`, witx of WASI 0.2 snapshot 1), all of
/// which `wasmtime-wasi` provides.
pub const PREVIEW1_FUNCTIONS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];
