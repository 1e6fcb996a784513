//! abi-probe: a proxy-wasm filter that exercises every host function of ABI v0.2.1 so host-sim's
//! integration tests can check each one on real wasm.
//!
//! What it does is chosen by the request header `x-probe: <scenario>` (per stream) and by the
//! plugin configuration (per root context: whitespace-separated `key=value` or `flag` tokens).
//! Further `x-*` request headers parameterise a scenario. Everything it observes is logged as
//! `probe:<event> <json>` at INFO (see `report`); the tests find those lines by event name.
//!
//! Plugin configuration tokens:
//! - `tick=<ms>`: set the tick period in `on_configure`; every tick logs `probe:tick`.
//! - `queue=<name>`: register a shared queue; `on_queue_ready` drains it (`probe:queue_ready`),
//!   unless `queue_keep` is also given.
//! - `dispatch_on_tick=<upstream>`: make an HTTP call from the root on every tick.
//! - `root_done=defer`: `on_done` of the root returns false; the next tick calls `proxy_done`.
//! - `root_done=never`: `on_done` of the root returns false and `proxy_done` is never called.
//! - `report_delete`: the root logs `probe:root_deleted` when the host deletes it
//!   (`proxy_on_delete`, where the SDK drops the context).
//! - `fail_configure`: `on_configure` returns false.
//! - `set_prop`: `on_configure` calls `proxy_set_property` (reported as `set_property_status`).
//! - `tick_again=<ms>`: `on_configure` sets the tick period a second time.
//! - `trap_in=<callback>` and `trap_kind=<unreachable|panic|loop|alloc>`: misbehave in a root
//!   callback (`vm_start` is selected by the VM configuration `trap` instead).
//!
//! Stream scenarios (`x-probe`) are listed in `Probe::on_http_request_headers`. Any stream may
//! also misbehave with `x-trap-in: <callback>` and `x-trap-kind: <kind>`.

mod raw;
mod report;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MetricType, Status};
use report::{hex, pairs_json, quote, Report};
use std::cell::RefCell;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    // Also installs the SDK's panic hook, which logs the panic message at CRITICAL.
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| Box::new(ProbeRoot::new(context_id)));
}}

thread_local! {
    /// Streams whose `on_done` returned false; the root's next tick calls `proxy_done` for them.
    static PENDING_DONE: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// A pointer far outside any guest memory this probe ever has.
const BAD_PTR: usize = 0xFFFF_FF00;

/// Does something a well-behaved guest never does, ending the callback with a trap.
fn misbehave(kind: &str) -> ! {
    match kind {
        "panic" => panic!("probe panic on purpose"),
        "loop" => {
            let mut i: u64 = 0;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        "alloc" => {
            // Keep every block alive: the allocator must eventually fail to grow memory, and the
            // infallible allocation then aborts (a trap) after printing to stderr.
            let mut keep: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut block = Vec::with_capacity(16 << 20);
                block.resize(16 << 20, 1u8);
                keep.push(std::hint::black_box(block));
            }
        }
        _ => core::arch::wasm32::unreachable(),
    }
}

/// Parsed plugin configuration.
#[derive(Default)]
struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    fn parse(bytes: &[u8]) -> Config {
        let text = String::from_utf8_lossy(bytes);
        let entries = text
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|t| !t.is_empty())
            .map(|t| match t.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (t.to_string(), String::new()),
            })
            .collect();
        Config { entries }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Logs what an `on_http_call_response` saw and returns the response body.
fn report_call_response(
    event: &str,
    ctx: &dyn Context,
    token: u32,
    counts: (usize, usize, usize),
    get_status: bool,
) -> Vec<u8> {
    let (num_headers, body_size, num_trailers) = counts;
    let headers = ctx.get_http_call_response_headers();
    let trailers = ctx.get_http_call_response_trailers();
    let body = ctx.get_http_call_response_body(0, body_size).unwrap_or_default();
    let (size_status, map_size) = raw::header_map_size(6);
    // Raw lookups: the SDK's `get_http_call_response_header` panics on any status but OK and
    // NOT_FOUND, and a call without a reply has no map on Envoy (BAD_ARGUMENT).
    let status_header = raw::header_value(6, ":status");
    let dispatch_status = raw::header_value(6, ":dispatch_status");
    let mut r = Report::new()
        .num("token", token)
        .num("num_headers", num_headers as u64)
        .num("body_size", body_size as u64)
        .num("num_trailers", num_trailers as u64)
        .raw("headers", pairs_json(&headers))
        .raw("trailers", pairs_json(&trailers))
        .bytes("body", Some(&body))
        .bytes("status_header", status_header.bytes.as_deref())
        .num("status_header_status", status_header.status)
        .bytes("dispatch_status", dispatch_status.bytes.as_deref())
        .num("map_size_status", size_status)
        .num("map_size", map_size as u64);
    if get_status {
        let (status, code, message) = raw::get_status();
        r = r
            .num("get_status", status)
            .num("code", code)
            .bytes("message", message.as_deref());
    }
    r.emit(event);
    body
}

// ---- Root context ----------------------------------------------------------------------------

/// The plugin context.
struct ProbeRoot {
    id: u32,
    config: Config,
    ticks: u32,
    done_requested: bool,
}

impl ProbeRoot {
    fn new(id: u32) -> Self {
        ProbeRoot {
            id,
            config: Config::default(),
            ticks: 0,
            done_requested: false,
        }
    }

    fn maybe_trap(&self, callback: &str) {
        if self.config.get("trap_in") == Some(callback) {
            misbehave(self.config.get("trap_kind").unwrap_or("unreachable"));
        }
    }
}

impl Context for ProbeRoot {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, num_trailers: usize) {
        self.maybe_trap("http_call_response");
        report_call_response(
            "root_http_call_response",
            self,
            token,
            (num_headers, body_size, num_trailers),
            false,
        );
    }

    fn on_foreign_function(&mut self, function_id: u32, arguments_size: usize) {
        self.maybe_trap("foreign_function");
        let args = hostcalls::get_buffer(BufferType::CallData, 0, arguments_size).unwrap_or_default();
        let (status, size, _) = raw::buffer_status(8);
        if let Some(upstream) = self.config.get("dispatch_on_foreign") {
            let call = self.dispatch_http_call(
                upstream,
                vec![
                    (":method", "GET"),
                    (":path", "/foreign"),
                    (":authority", "foreign.example"),
                ],
                None,
                vec![],
                Duration::from_secs(1),
            );
            Report::new()
                .num("status", call.map_or_else(|s| s as u32, |_| 0))
                .emit("foreign_dispatch");
        }
        Report::new()
            .num("function_id", function_id)
            .num("arguments_size", arguments_size as u64)
            .bytes("args", args.as_deref())
            .num("status_status", status)
            .num("status_size", size as u64)
            .emit("foreign_function");
    }

    fn on_done(&mut self) -> bool {
        let when = self.config.get("root_done");
        let defer = matches!(when, Some("defer" | "never"));
        Report::new()
            .num("context", self.id)
            .bool("defer", defer)
            .emit("root_on_done");
        if when == Some("defer") {
            self.done_requested = true;
        }
        !defer
    }
}

impl Drop for ProbeRoot {
    fn drop(&mut self) {
        if self.config.has("report_delete") {
            Report::new().num("context", self.id).emit("root_deleted");
        }
    }
}

impl RootContext for ProbeRoot {
    fn on_vm_start(&mut self, vm_configuration_size: usize) -> bool {
        let vm_config = self.get_vm_configuration().unwrap_or_default();
        if vm_config == b"trap" {
            misbehave("unreachable");
        }
        let (status, size, flags) = raw::buffer_status(raw::buffer::VM_CONFIGURATION);
        Report::new()
            .num("context", self.id)
            .num("size", vm_configuration_size as u64)
            .bytes("vm_config", Some(&vm_config))
            .num("status_status", status)
            .num("status_size", size as u64)
            .num("status_flags", flags)
            .emit("vm_start");
        vm_config != b"fail"
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        self.config = Config::parse(&bytes);
        self.maybe_trap("configure");
        let (status, size, _) = raw::buffer_status(raw::buffer::PLUGIN_CONFIGURATION);
        let partial = raw::get_buffer(raw::buffer::PLUGIN_CONFIGURATION, 1, 3);
        let past_end = raw::get_buffer(raw::buffer::PLUGIN_CONFIGURATION, bytes.len() + 1, 10);
        let unavailable = raw::get_buffer(raw::buffer::HTTP_CALL_RESPONSE_BODY, 0, 10);
        let unknown = raw::get_buffer(99, 0, 10);
        let unknown_status = raw::buffer_status(99);
        let mut r = Report::new()
            .num("context", self.id)
            .num("size", plugin_configuration_size as u64)
            .bytes("config", Some(&bytes))
            .num("status_status", status)
            .num("status_size", size as u64)
            .num("partial_status", partial.status)
            .bytes("partial", partial.bytes.as_deref())
            .num("past_end_status", past_end.status)
            .num("unavailable_status", unavailable.status)
            .num("unknown_status", unknown.status)
            .num("unknown_buffer_status", unknown_status.0);
        if let Some(ms) = self.config.get("tick").and_then(|v| v.parse::<u64>().ok()) {
            self.set_tick_period(Duration::from_millis(ms));
        }
        if self.config.has("set_prop") {
            r = r.num(
                "set_property_status",
                raw::set_property(&["probe", "root"], b"root-value"),
            );
        }
        if let Some(ms) = self.config.get("tick_again").and_then(|v| v.parse::<u32>().ok()) {
            r = r.num("tick_again_status", unsafe {
                raw::proxy_set_tick_period_milliseconds(ms)
            });
        }
        if let Some(name) = self.config.get("queue") {
            let id = self.register_shared_queue(name);
            r = r.num("queue_id", id);
        }
        r.emit("configure");
        !self.config.has("fail_configure")
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        self.maybe_trap("tick");
        let mut r = Report::new().num("n", self.ticks).num("now", now_ns());
        if let Some(upstream) = self.config.get("dispatch_on_tick") {
            let call = self.dispatch_http_call(
                upstream,
                vec![(":method", "GET"), (":path", "/tick"), (":authority", "tick.example")],
                None,
                vec![],
                Duration::from_secs(1),
            );
            r = r.num("dispatch_status", call.map_or_else(|s| s as i128, |_| 0));
        }
        for context in PENDING_DONE.with(|p| std::mem::take(&mut *p.borrow_mut())) {
            let set = unsafe { raw::proxy_set_effective_context(context) };
            let done = unsafe { raw::proxy_done() };
            Report::new()
                .num("context", context)
                .num("set_effective_status", set)
                .num("done_status", done)
                .emit("done_called");
        }
        if std::mem::take(&mut self.done_requested) {
            let set = unsafe { raw::proxy_set_effective_context(self.id) };
            let done = unsafe { raw::proxy_done() };
            Report::new()
                .num("context", self.id)
                .num("set_effective_status", set)
                .num("done_status", done)
                .emit("root_done_called");
        }
        r.emit("tick");
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        self.maybe_trap("queue_ready");
        let mut items = Vec::new();
        let final_status = if self.config.has("queue_keep") {
            0
        } else {
            loop {
                let r = raw::dequeue(queue_id);
                match (r.status, r.bytes) {
                    (0, bytes) => items.push(quote(&String::from_utf8_lossy(&bytes.unwrap_or_default()))),
                    (status, _) => break status,
                }
            }
        };
        Report::new()
            .num("context", self.id)
            .num("queue", queue_id)
            .raw("items", format!("[{}]", items.join(",")))
            .num("final_status", final_status)
            .emit("queue_ready");
    }

    fn on_log(&mut self) {
        Report::new().num("context", self.id).emit("root_log");
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe::new(context_id, self.id)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

// ---- HTTP context ----------------------------------------------------------------------------

/// One HTTP stream.
struct Probe {
    id: u32,
    root_id: u32,
    scenario: String,
    /// The request headers as first seen (later phases may not read them on Envoy).
    headers: Vec<(String, String)>,
    /// The `num_headers` the host passed to `on_http_request_headers`.
    num_headers: usize,
    body_calls: u32,
    grpc_token: Option<u32>,
}

impl Probe {
    fn new(id: u32, root_id: u32) -> Self {
        Probe {
            id,
            root_id,
            scenario: String::new(),
            headers: Vec::new(),
            num_headers: 0,
            body_calls: 0,
            grpc_token: None,
        }
    }

    fn arg(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn maybe_trap(&self, callback: &str) {
        if self.arg("x-trap-in") == Some(callback) {
            misbehave(self.arg("x-trap-kind").unwrap_or("unreachable"));
        }
    }

    fn is_kong(&self) -> bool {
        self.arg("x-profile") == Some("kong")
    }

    /// Makes the HTTP call described by the request's `x-*` headers.
    fn dispatch(&self) -> Result<u32, Status> {
        let upstream = self.arg("x-upstream").unwrap_or("cluster_a").to_string();
        let omit = self.arg("x-call-omit").unwrap_or("").to_string();
        let authority = self.arg("x-call-authority").unwrap_or("upstream.example").to_string();
        let path = self.arg("x-call-path").unwrap_or("/call").to_string();
        let headers: Vec<(&str, &str)> = vec![
            (":method", "POST"),
            (":path", path.as_str()),
            (":authority", authority.as_str()),
            ("x-call-header", "1"),
        ]
        .into_iter()
        .filter(|(k, _)| !omit.split(',').any(|o| o == *k))
        .collect();
        let timeout = self.arg("x-timeout-ms").and_then(|v| v.parse().ok()).unwrap_or(5000);
        self.dispatch_http_call(
            &upstream,
            headers,
            Some(b"call-body"),
            vec![("x-call-trailer", "t")],
            Duration::from_millis(timeout),
        )
    }

    fn report_dispatch(event: &str, result: Result<u32, Status>) {
        let (status, token) = match result {
            Ok(token) => (0, token),
            Err(status) => (status as u32, 0),
        };
        Report::new().num("status", status).num("token", token).emit(event);
    }

    fn scenario_log(&self) -> Action {
        for (level, name) in [
            (LogLevel::Trace, "trace"),
            (LogLevel::Debug, "debug"),
            (LogLevel::Info, "info"),
            (LogLevel::Warn, "warn"),
            (LogLevel::Error, "error"),
            (LogLevel::Critical, "critical"),
        ] {
            let _ = hostcalls::log(level, &format!("probe log {name}"));
        }
        let msg = "bad level";
        let bad_level = unsafe { raw::proxy_log(9, msg.as_ptr(), msg.len()) };
        let bad_ptr = unsafe { raw::proxy_log(2, BAD_PTR as *const u8, 16) };
        Report::new()
            .num("bad_level", bad_level)
            .num("bad_ptr", bad_ptr)
            .emit("log");
        Action::Continue
    }

    fn scenario_time(&self) -> Action {
        let mut realtime = 0u64;
        let mut monotonic = 0u64;
        let rt_errno = unsafe { raw::clock_time_get(0, 1, &mut realtime) };
        let mono_errno = unsafe { raw::clock_time_get(1, 1, &mut monotonic) };
        let std_now = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Report::new()
            .num("proxy_ns", now_ns())
            .num("wasi_realtime_ns", realtime)
            .num("wasi_realtime_errno", rt_errno)
            .num("wasi_monotonic_ns", monotonic)
            .num("wasi_monotonic_errno", mono_errno)
            .num("std_now_ns", std_now)
            .emit("time");
        Action::Continue
    }

    fn scenario_wasi(&self) -> Action {
        println!("probe stdout line");
        eprintln!("probe stderr line");
        print!("probe partial line");
        // Rust's stdout is line-buffered: flush so the host sees a line without its newline.
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let mut random = [0u8; 16];
        let errno = unsafe { raw::random_get(random.as_mut_ptr(), random.len()) };
        let env: Vec<(String, String)> = std::env::vars().collect();
        Report::new()
            .str("random", &hex(&random))
            .num("random_errno", errno)
            .raw("env", pairs_json(&env))
            .emit("wasi");
        Action::Continue
    }

    fn scenario_headers(&self) -> Action {
        let (size_status, size) = raw::header_map_size(raw::map::HTTP_REQUEST_HEADERS);
        let pairs = raw::header_map_pairs(raw::map::HTTP_REQUEST_HEADERS);
        let serialized_len = pairs.bytes.as_ref().map_or(0, Vec::len);
        let one = self.get_http_request_header("x-one");
        let upper = self.get_http_request_header("X-ONE");
        let missing = raw::header_value(raw::map::HTTP_REQUEST_HEADERS, "x-missing");
        let multi = self.get_http_request_header("x-multi");
        self.add_http_request_header("x-added", "1");
        self.add_http_request_header("x-multi", "third");
        self.set_http_request_header("x-replace", Some("new"));
        self.set_http_request_header("x-created", Some("created"));
        self.remove_http_request_header("x-remove");
        self.remove_http_request_header("x-never-there");
        // No body in the headers phase: reading or writing it is NOT_FOUND (spec); the plugin
        // configuration exists but is not writable.
        let body_get = raw::get_buffer(raw::buffer::HTTP_REQUEST_BODY, 0, 10).status;
        let body_set = unsafe { raw::proxy_set_buffer_bytes(raw::buffer::HTTP_REQUEST_BODY, 0, 0, b"x".as_ptr(), 1) };
        let config_set =
            unsafe { raw::proxy_set_buffer_bytes(raw::buffer::PLUGIN_CONFIGURATION, 0, 0, b"x".as_ptr(), 1) };
        let unknown_set = unsafe { raw::proxy_set_buffer_bytes(99, 0, 0, b"x".as_ptr(), 1) };
        let unknown_map = raw::header_value(42, "x-one");
        let unknown_map_size = raw::header_map_size(42);
        let after = self.get_http_request_headers();
        Report::new()
            .num("size_status", size_status)
            .num("size", size as u64)
            .num("pairs_status", pairs.status)
            .num("serialized_len", serialized_len as u64)
            .bytes("one", one.as_deref().map(str::as_bytes))
            .bytes("one_upper_lookup", upper.as_deref().map(str::as_bytes))
            .num("missing_status", missing.status)
            .bytes("multi_first", multi.as_deref().map(str::as_bytes))
            .num("unknown_map_status", unknown_map.status)
            .num("unknown_map_size_status", unknown_map_size.0)
            .num("body_get_status", body_get)
            .num("body_set_status", body_set)
            .num("config_set_status", config_set)
            .num("unknown_buffer_set_status", unknown_set)
            .raw("after", pairs_json(&after))
            .emit("headers");
        Action::Continue
    }

    fn scenario_set_headers(&self) -> Action {
        self.set_http_request_headers(vec![
            (":method", "GET"),
            (":path", "/replaced"),
            (":authority", "replaced.example"),
            ("X-Mixed-Case", "v"),
        ]);
        let bytes = proxy_wasm_pairs::encode(&[("x-raw", "1")]);
        let trailers_status =
            unsafe { raw::proxy_set_header_map_pairs(raw::map::HTTP_REQUEST_TRAILERS, bytes.as_ptr(), bytes.len()) };
        let unknown = unsafe { raw::proxy_set_header_map_pairs(42, bytes.as_ptr(), bytes.len()) };
        Report::new()
            .raw("after", pairs_json(&self.get_http_request_headers()))
            .num("unknown_map_status", unknown)
            .num("trailers_status", trailers_status)
            .emit("set_headers");
        Action::Continue
    }

    fn scenario_properties(&self) -> Action {
        let mut r = Report::new();
        if let Some((path, value)) = self.arg("x-set-prop").and_then(|s| s.split_once('=')) {
            let segments: Vec<&str> = path.split('.').collect();
            r = r.num("set_status", raw::set_property(&segments, value.as_bytes()));
        }
        let mut props = Vec::new();
        for path in self.arg("x-props").unwrap_or("").split(',').filter(|p| !p.is_empty()) {
            let segments: Vec<&str> = path.split('.').collect();
            let got = raw::get_property(&segments);
            let value = got.bytes.as_deref().unwrap_or(&[]);
            props.push(format!(
                "{}:{{\"status\":{},\"hex\":{},\"text\":{}}}",
                quote(path),
                got.status,
                quote(&hex(value)),
                quote(&String::from_utf8_lossy(value))
            ));
        }
        r.raw("props", format!("{{{}}}", props.join(","))).emit("properties");
        Action::Continue
    }

    fn scenario_shared(&self) -> Action {
        let key = self.arg("x-key").unwrap_or("probe-key").to_string();
        let missing = raw::get_shared("probe-never-set");
        let sdk_missing = self.get_shared_data("probe-never-set");
        let set1 = raw::set_shared(&key, b"v1", 0);
        let (get1, value1, cas1) = raw::get_shared(&key);
        let set2 = raw::set_shared(&key, b"v2", cas1);
        let stale = raw::set_shared(&key, b"v3", cas1);
        let (sdk_value, sdk_cas) = self.get_shared_data(&key);
        let sdk_stale = self.set_shared_data(&key, Some(b"v4"), Some(cas1));
        let sdk_ok = self.set_shared_data(&key, Some(b"v5"), sdk_cas);
        Report::new()
            .num("missing_status", missing.0)
            .bool("sdk_missing_none", sdk_missing.0.is_none() && sdk_missing.1.is_none())
            .num("set1", set1)
            .num("get1", get1)
            .bytes("value1", value1.as_deref())
            .num("cas1", cas1)
            .num("set2", set2)
            .num("stale", stale)
            .bytes("sdk_value", sdk_value.as_deref())
            .num("sdk_cas", sdk_cas.unwrap_or(0))
            .num("sdk_stale", sdk_stale.map_or_else(|s| s as u32, |_| 0))
            .num("sdk_ok", sdk_ok.map_or_else(|s| s as u32, |_| 0))
            .emit("shared");
        Action::Continue
    }

    fn scenario_queue(&self) -> Action {
        let name = self.arg("x-queue").unwrap_or("probe-queue").to_string();
        let vm_id = self.arg("x-vm-id").unwrap_or("").to_string();
        let (resolve_status, id) = if self.arg("x-register").is_some() {
            (0, self.register_shared_queue(&name))
        } else {
            raw::resolve_queue(&vm_id, &name)
        };
        let mut enqueued = Vec::new();
        for item in self.arg("x-items").unwrap_or("").split(',').filter(|i| !i.is_empty()) {
            enqueued.push(unsafe { raw::proxy_enqueue_shared_queue(id, item.as_ptr(), item.len()) }.to_string());
        }
        let unknown_enqueue = unsafe { raw::proxy_enqueue_shared_queue(424_242, b"x".as_ptr(), 1) };
        let unknown_dequeue = raw::dequeue(424_242).status;
        let unknown_resolve = if self.is_kong() {
            0
        } else {
            raw::resolve_queue(&vm_id, "no-such-queue").0
        };
        Report::new()
            .num("resolve_status", resolve_status)
            .num("id", id)
            .raw("enqueue_statuses", format!("[{}]", enqueued.join(",")))
            .num("unknown_enqueue", unknown_enqueue)
            .num("unknown_dequeue", unknown_dequeue)
            .num("unknown_resolve", unknown_resolve)
            .emit("queue");
        Action::Continue
    }

    fn scenario_dequeue(&self) -> Action {
        let name = self.arg("x-queue").unwrap_or("probe-queue").to_string();
        let id = self.register_shared_queue(&name);
        let mut items = Vec::new();
        let sdk_first = self.dequeue_shared_queue(id);
        if let Ok(Some(bytes)) = &sdk_first {
            items.push(quote(&String::from_utf8_lossy(bytes)));
        }
        let final_status = loop {
            let r = raw::dequeue(id);
            if r.status != 0 {
                break r.status;
            }
            items.push(quote(&String::from_utf8_lossy(&r.bytes.unwrap_or_default())));
        };
        Report::new()
            .num("id", id)
            .raw("items", format!("[{}]", items.join(",")))
            .num("final_status", final_status)
            .emit("dequeue");
        Action::Continue
    }

    fn scenario_metrics(&self) -> Action {
        let counter = hostcalls::define_metric(MetricType::Counter, "probe_counter").unwrap_or(0);
        let gauge = hostcalls::define_metric(MetricType::Gauge, "probe_gauge").unwrap_or(0);
        let histogram = hostcalls::define_metric(MetricType::Histogram, "probe_histogram").unwrap_or(0);
        let counter_again = hostcalls::define_metric(MetricType::Counter, "probe_counter").unwrap_or(0);
        let inc1 = unsafe { raw::proxy_increment_metric(counter, 1) };
        let inc5 = unsafe { raw::proxy_increment_metric(counter, 5) };
        let dec = unsafe { raw::proxy_increment_metric(counter, -1) };
        let gauge_up = unsafe { raw::proxy_increment_metric(gauge, 10) };
        let gauge_down = unsafe { raw::proxy_increment_metric(gauge, -3) };
        let (gauge_get, gauge_after_inc) = raw::get_metric(gauge);
        let gauge_record = unsafe { raw::proxy_record_metric(gauge, 42) };
        let hist10 = unsafe { raw::proxy_record_metric(histogram, 10) };
        let hist20 = unsafe { raw::proxy_record_metric(histogram, 20) };
        let hist_inc = unsafe { raw::proxy_increment_metric(histogram, 1) };
        let (counter_get, counter_value) = raw::get_metric(counter);
        let (gauge_get2, gauge_value) = raw::get_metric(gauge);
        let (hist_get, _) = raw::get_metric(histogram);
        let (unknown_get, _) = raw::get_metric(424_242);
        let unknown_record = unsafe { raw::proxy_record_metric(424_242, 1) };
        let unknown_inc = unsafe { raw::proxy_increment_metric(424_242, 1) };
        let (bad_type, _) = raw::define_metric(7, "probe_bad");
        Report::new()
            .num("counter", counter)
            .num("gauge", gauge)
            .num("histogram", histogram)
            .num("counter_again", counter_again)
            .num("inc1", inc1)
            .num("inc5", inc5)
            .num("dec", dec)
            .num("gauge_up", gauge_up)
            .num("gauge_down", gauge_down)
            .num("gauge_get", gauge_get)
            .num("gauge_after_inc", gauge_after_inc)
            .num("gauge_record", gauge_record)
            .num("hist10", hist10)
            .num("hist20", hist20)
            .num("hist_inc", hist_inc)
            .num("counter_get", counter_get)
            .num("counter_value", counter_value)
            .num("gauge_get2", gauge_get2)
            .num("gauge_value", gauge_value)
            .num("hist_get", hist_get)
            .num("unknown_get", unknown_get)
            .num("unknown_record", unknown_record)
            .num("unknown_inc", unknown_inc)
            .num("bad_type", bad_type)
            .emit("metrics");
        Action::Continue
    }

    /// One metric call, so a host that traps (Kong) can be checked call by call: `x-metric-kind`
    /// counter, gauge, histogram or unknown (an id never defined), `x-metric-op` increment,
    /// record or get, `x-metric-value` the delta or value.
    fn scenario_metric_op(&self) -> Action {
        let kind = self.arg("x-metric-kind").unwrap_or("counter");
        let value: i64 = self.arg("x-metric-value").and_then(|v| v.parse().ok()).unwrap_or(1);
        let id = match kind {
            "gauge" => hostcalls::define_metric(MetricType::Gauge, "probe_op_gauge").unwrap_or(0),
            "histogram" => hostcalls::define_metric(MetricType::Histogram, "probe_op_histogram").unwrap_or(0),
            "unknown" => 424_242,
            _ => hostcalls::define_metric(MetricType::Counter, "probe_op_counter").unwrap_or(0),
        };
        // Reported before the call: on a host that traps, nothing after it runs.
        Report::new().num("id", id).emit("metric_id");
        let (status, read) = match self.arg("x-metric-op").unwrap_or("increment") {
            "record" => (unsafe { raw::proxy_record_metric(id, value as u64) }, 0),
            "get" => raw::get_metric(id),
            _ => (unsafe { raw::proxy_increment_metric(id, value) }, 0),
        };
        Report::new().num("status", status).num("value", read).emit("metric_op");
        Action::Continue
    }

    fn scenario_foreign(&self) -> Action {
        let name = self.arg("x-fn").unwrap_or("probe_echo").to_string();
        let args = self.arg("x-fn-args").unwrap_or("").to_string();
        let r = raw::call_foreign(&name, args.as_bytes());
        let sdk = self.call_foreign_function(&name, Some(args.as_bytes()));
        Report::new()
            .num("status", r.status)
            .bytes("result", r.bytes.as_deref())
            .num("sdk_status", sdk.as_ref().map_or_else(|s| *s as u32, |_| 0))
            .bytes("sdk_result", sdk.ok().flatten().as_deref())
            .emit("foreign");
        Action::Continue
    }

    fn scenario_effective(&self) -> Action {
        let to_root = unsafe { raw::proxy_set_effective_context(self.root_id) };
        let headers_as_root = raw::header_value(raw::map::HTTP_REQUEST_HEADERS, ":path").status;
        // Kong ignores the switch and traps on a tick period from a stream context.
        let tick_as_root = if self.is_kong() {
            u32::MAX
        } else {
            unsafe { raw::proxy_set_tick_period_milliseconds(0) }
        };
        let unknown = unsafe { raw::proxy_set_effective_context(424_242) };
        let back = unsafe { raw::proxy_set_effective_context(self.id) };
        let headers_as_self = raw::header_value(raw::map::HTTP_REQUEST_HEADERS, ":path");
        Report::new()
            .num("to_root", to_root)
            .num("headers_as_root", headers_as_root)
            .num("tick_as_root", tick_as_root)
            .num("unknown", unknown)
            .num("back", back)
            .num("headers_as_self_status", headers_as_self.status)
            .bytes("path", headers_as_self.bytes.as_deref())
            .emit("effective");
        Action::Continue
    }

    fn scenario_streams(&self) -> Action {
        let bad = unsafe { raw::proxy_continue_stream(9) };
        let downstream = unsafe { raw::proxy_continue_stream(2) };
        let request = unsafe { raw::proxy_continue_stream(0) };
        let (close_bad, close_upstream) = if self.is_kong() {
            (0, 0)
        } else {
            unsafe { (raw::proxy_close_stream(9), raw::proxy_close_stream(3)) }
        };
        Report::new()
            .num("continue_unknown", bad)
            .num("continue_downstream", downstream)
            .num("continue_request", request)
            .num("close_unknown", close_bad)
            .num("close_upstream", close_upstream)
            .emit("streams");
        Action::Continue
    }

    fn scenario_nyi(&self) -> Action {
        let function = self.arg("x-fn").unwrap_or("").to_string();
        let mut scratch = [0u32; 4];
        let p = scratch.as_mut_ptr();
        let name = "probe";
        let status = unsafe {
            match function.as_str() {
                "proxy_get_log_level" => raw::proxy_get_log_level(p),
                "proxy_done" => raw::proxy_done(),
                "proxy_close_stream" => raw::proxy_close_stream(0),
                "proxy_get_status" => raw::get_status().0,
                "proxy_resolve_shared_queue" => raw::resolve_queue("", name).0,
                "proxy_grpc_call" => raw::proxy_grpc_call(
                    name.as_ptr(),
                    name.len(),
                    name.as_ptr(),
                    name.len(),
                    name.as_ptr(),
                    name.len(),
                    std::ptr::null(),
                    0,
                    std::ptr::null(),
                    0,
                    1000,
                    p,
                ),
                "proxy_grpc_stream" => raw::proxy_grpc_stream(
                    name.as_ptr(),
                    name.len(),
                    name.as_ptr(),
                    name.len(),
                    name.as_ptr(),
                    name.len(),
                    std::ptr::null(),
                    0,
                    p,
                ),
                "proxy_grpc_send" => raw::proxy_grpc_send(1, name.as_ptr(), name.len(), 0),
                "proxy_grpc_cancel" => raw::proxy_grpc_cancel(1),
                "proxy_grpc_close" => raw::proxy_grpc_close(1),
                _ => u32::MAX,
            }
        };
        Report::new()
            .str("function", &function)
            .num("status", status)
            .emit("nyi");
        Action::Continue
    }

    /// A unary call to `x-upstream` (default `grpc_cluster`) with timeout `x-timeout-ms`
    /// (default 3000); `x-cancel` cancels it at once.
    fn scenario_grpc_call(&mut self) -> Action {
        let upstream = self.arg("x-upstream").unwrap_or("grpc_cluster").to_string();
        let result = self.dispatch_grpc_call(
            &upstream,
            "probe.Service",
            "Unary",
            vec![("x-md", b"md-value")],
            Some(b"grpc-request"),
            Duration::from_millis(self.arg("x-timeout-ms").and_then(|v| v.parse().ok()).unwrap_or(3000)),
        );
        let (status, token) = match result {
            Ok(t) => (0, t),
            Err(s) => (s as u32, 0),
        };
        let mut r = Report::new().num("status", status).num("token", token);
        if status != 0 {
            r.emit("grpc_call");
            return Action::Continue;
        }
        if self.arg("x-cancel").is_some() {
            r = r
                .num("cancel", unsafe { raw::proxy_grpc_cancel(token) })
                .num("cancel_unknown", unsafe { raw::proxy_grpc_cancel(424_242) })
                .num("close_unknown", unsafe { raw::proxy_grpc_close(424_242) });
            r.emit("grpc_call");
            return Action::Continue;
        }
        // A unary call is not a stream: sending on it is BAD_ARGUMENT, an unknown token NOT_FOUND.
        let msg = b"more";
        r = r
            .num("send_on_call", unsafe {
                raw::proxy_grpc_send(token, msg.as_ptr(), msg.len(), 0)
            })
            .num("send_unknown", unsafe {
                raw::proxy_grpc_send(424_242, msg.as_ptr(), msg.len(), 0)
            });
        self.grpc_token = Some(token);
        r.emit("grpc_call");
        Action::Pause
    }

    fn scenario_grpc_stream(&mut self) -> Action {
        let upstream = self.arg("x-upstream").unwrap_or("grpc_cluster").to_string();
        let token = match self.open_grpc_stream(&upstream, "probe.Service", "Stream", vec![("x-md", b"stream")]) {
            Ok(t) => t,
            Err(s) => {
                Report::new().num("status", s as u32).emit("grpc_stream");
                return Action::Continue;
            }
        };
        self.send_grpc_stream_message(token, Some(b"m1"), false);
        let m2 = b"m2";
        let end = unsafe { raw::proxy_grpc_send(token, m2.as_ptr(), m2.len(), 1) };
        let after_end = unsafe { raw::proxy_grpc_send(token, m2.as_ptr(), m2.len(), 0) };
        let mut r = Report::new()
            .num("status", 0)
            .num("token", token)
            .num("send_end", end)
            .num("send_after_end", after_end);
        if let Some(close) = self.arg("x-close") {
            r = r.num("close", unsafe { raw::proxy_grpc_close(token) });
            r.emit("grpc_stream");
            // `wait`: the request waits for the stream's close callback, if the host gives one
            // after the filter's own close.
            if close == "wait" {
                self.grpc_token = Some(token);
                return Action::Pause;
            }
            return Action::Continue;
        }
        self.grpc_token = Some(token);
        r.emit("grpc_stream");
        Action::Pause
    }

    fn scenario_local(&self, raw_call: bool) -> Action {
        if raw_call {
            let headers = proxy_wasm_pairs::encode(&[("x-probe", "local-raw")]);
            let status = raw::send_local_response(403, "probe_denied", b"denied", &headers, 7);
            Report::new().num("status", status).emit("local_raw");
        } else {
            self.send_http_response(
                418,
                vec![("x-probe", "local"), ("content-type", "text/plain")],
                Some(b"teapot"),
            );
        }
        Action::Pause
    }

    fn scenario_badptr_headers(&self) -> Action {
        let bad = BAD_PTR as *const u8;
        let bad_u32 = BAD_PTR as *mut u32;
        let bad_u64 = BAD_PTR as *mut u64;
        let bad_usize = BAD_PTR as *mut usize;
        let bad_pp = BAD_PTR as *mut *mut u8;
        let mut ok_ptr: *mut u8 = std::ptr::null_mut();
        let mut ok_len: usize = 0;
        let mut ok_u32: u32 = 0;
        let path = ":path";
        let v = "v";
        let key = "probe-badptr-key";
        let name = "probe_badptr";
        let headers = proxy_wasm_pairs::encode(&[(":method", "GET"), (":path", "/"), (":authority", "a")]);
        let upstream = self.arg("x-upstream").unwrap_or("cluster_a").to_string();
        // Valid state the return-pointer checks need: a shared key, a queue, a metric.
        raw::set_shared(key, b"value", 0);
        let queue = unsafe {
            let mut id = 0;
            raw::proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id);
            raw::proxy_enqueue_shared_queue(id, b"item".as_ptr(), 4);
            id
        };
        let (_, metric) = raw::define_metric(0, name);
        let mut r = Report::new();
        unsafe {
            r = r
                .num("log", raw::proxy_log(2, bad, 16))
                .num("log_len_overflow", raw::proxy_log(2, 16 as *const u8, usize::MAX - 8))
                .num("get_current_time", raw::proxy_get_current_time_nanoseconds(bad_u64))
                .num("get_header_map_size", raw::proxy_get_header_map_size(0, bad_usize))
                .num(
                    "get_header_map_pairs",
                    raw::proxy_get_header_map_pairs(0, bad_pp, &mut ok_len),
                )
                .num(
                    "get_header_map_pairs_len",
                    raw::proxy_get_header_map_pairs(0, &mut ok_ptr, bad_usize),
                )
                .num("set_header_map_pairs", raw::proxy_set_header_map_pairs(0, bad, 64))
                .num(
                    "get_header_map_value_key",
                    raw::proxy_get_header_map_value(0, bad, 5, &mut ok_ptr, &mut ok_len),
                )
                .num(
                    "get_header_map_value_ret",
                    raw::proxy_get_header_map_value(0, path.as_ptr(), path.len(), bad_pp, &mut ok_len),
                )
                .num(
                    "add_header_map_value",
                    raw::proxy_add_header_map_value(0, bad, 4, v.as_ptr(), 1),
                )
                .num(
                    "add_header_map_value_val",
                    raw::proxy_add_header_map_value(0, v.as_ptr(), 1, bad, 4),
                )
                .num(
                    "replace_header_map_value",
                    raw::proxy_replace_header_map_value(0, bad, 4, v.as_ptr(), 1),
                )
                .num("remove_header_map_value", raw::proxy_remove_header_map_value(0, bad, 4))
                .num(
                    "send_local_response_details",
                    raw::proxy_send_local_response(500, bad, 8, v.as_ptr(), 1, std::ptr::null(), 0, -1),
                )
                .num(
                    "send_local_response_body",
                    raw::proxy_send_local_response(500, v.as_ptr(), 1, bad, 8, std::ptr::null(), 0, -1),
                )
                .num(
                    "send_local_response_headers",
                    raw::proxy_send_local_response(500, v.as_ptr(), 1, v.as_ptr(), 1, bad, 8, -1),
                )
                .num(
                    "http_call_upstream",
                    raw::proxy_http_call(
                        bad,
                        8,
                        headers.as_ptr(),
                        headers.len(),
                        std::ptr::null(),
                        0,
                        std::ptr::null(),
                        0,
                        1000,
                        &mut ok_u32,
                    ),
                )
                .num(
                    "http_call_headers",
                    raw::proxy_http_call(
                        upstream.as_ptr(),
                        upstream.len(),
                        bad,
                        64,
                        std::ptr::null(),
                        0,
                        std::ptr::null(),
                        0,
                        1000,
                        &mut ok_u32,
                    ),
                )
                .num(
                    "http_call_body",
                    raw::proxy_http_call(
                        upstream.as_ptr(),
                        upstream.len(),
                        headers.as_ptr(),
                        headers.len(),
                        bad,
                        8,
                        std::ptr::null(),
                        0,
                        1000,
                        &mut ok_u32,
                    ),
                )
                .num(
                    "http_call_token",
                    raw::proxy_http_call(
                        upstream.as_ptr(),
                        upstream.len(),
                        headers.as_ptr(),
                        headers.len(),
                        std::ptr::null(),
                        0,
                        std::ptr::null(),
                        0,
                        1000,
                        bad_u32,
                    ),
                )
                .num("set_shared_data", raw::proxy_set_shared_data(bad, 8, v.as_ptr(), 1, 0))
                .num(
                    "get_shared_data_key",
                    raw::proxy_get_shared_data(bad, 8, &mut ok_ptr, &mut ok_len, &mut ok_u32),
                )
                .num(
                    "get_shared_data_ret",
                    raw::proxy_get_shared_data(key.as_ptr(), key.len(), bad_pp, &mut ok_len, &mut ok_u32),
                )
                .num(
                    "get_shared_data_cas",
                    raw::proxy_get_shared_data(key.as_ptr(), key.len(), &mut ok_ptr, &mut ok_len, bad_u32),
                )
                .num(
                    "register_shared_queue",
                    raw::proxy_register_shared_queue(bad, 8, &mut ok_u32),
                )
                .num(
                    "register_shared_queue_ret",
                    raw::proxy_register_shared_queue(name.as_ptr(), name.len(), bad_u32),
                )
                .num("enqueue_shared_queue", raw::proxy_enqueue_shared_queue(queue, bad, 8))
                .num(
                    "dequeue_shared_queue",
                    raw::proxy_dequeue_shared_queue(queue, bad_pp, &mut ok_len),
                )
                .num("define_metric", raw::proxy_define_metric(0, bad, 8, &mut ok_u32))
                .num(
                    "define_metric_ret",
                    raw::proxy_define_metric(0, name.as_ptr(), name.len(), bad_u32),
                )
                .num("get_metric", raw::proxy_get_metric(metric, bad_u64))
                .num(
                    "get_property",
                    raw::proxy_get_property(bad, 8, &mut ok_ptr, &mut ok_len),
                )
                .num(
                    "get_property_ret",
                    raw::proxy_get_property(b"plugin_name".as_ptr(), 11, bad_pp, &mut ok_len),
                )
                .num("set_property", raw::proxy_set_property(bad, 8, v.as_ptr(), 1))
                .num("set_property_value", raw::proxy_set_property(v.as_ptr(), 1, bad, 8))
                .num(
                    "call_foreign_function",
                    raw::proxy_call_foreign_function(bad, 8, v.as_ptr(), 1, &mut ok_ptr, &mut ok_len),
                )
                .num(
                    "call_foreign_function_args",
                    raw::proxy_call_foreign_function(v.as_ptr(), 1, bad, 8, &mut ok_ptr, &mut ok_len),
                );
            if !self.is_kong() {
                r = r
                    .num("get_log_level", raw::proxy_get_log_level(bad_u32))
                    .num("get_status", raw::proxy_get_status(bad_u32, &mut ok_ptr, &mut ok_len))
                    .num(
                        "grpc_call",
                        raw::proxy_grpc_call(
                            bad,
                            8,
                            v.as_ptr(),
                            1,
                            v.as_ptr(),
                            1,
                            std::ptr::null(),
                            0,
                            std::ptr::null(),
                            0,
                            1000,
                            &mut ok_u32,
                        ),
                    )
                    .num(
                        "grpc_stream",
                        raw::proxy_grpc_stream(bad, 8, v.as_ptr(), 1, v.as_ptr(), 1, std::ptr::null(), 0, &mut ok_u32),
                    )
                    .num("grpc_send", raw::proxy_grpc_send(1, bad, 8, 0))
                    .num(
                        "resolve_shared_queue",
                        raw::proxy_resolve_shared_queue(bad, 8, name.as_ptr(), name.len(), &mut ok_u32),
                    );
            }
        }
        r.emit("badptr_headers");
        Action::Continue
    }

    fn scenario_badptr_body(&self) {
        let bad = BAD_PTR as *const u8;
        let bad_pp = BAD_PTR as *mut *mut u8;
        let bad_usize = BAD_PTR as *mut usize;
        let bad_u32 = BAD_PTR as *mut u32;
        let mut ok_ptr: *mut u8 = std::ptr::null_mut();
        let mut ok_len: usize = 0;
        let mut ok_flags: u32 = 0;
        let body = raw::buffer::HTTP_REQUEST_BODY;
        unsafe {
            Report::new()
                .num(
                    "get_buffer_bytes_data",
                    raw::proxy_get_buffer_bytes(body, 0, 16, bad_pp, &mut ok_len),
                )
                .num(
                    "get_buffer_bytes_size",
                    raw::proxy_get_buffer_bytes(body, 0, 16, &mut ok_ptr, bad_usize),
                )
                .num(
                    "get_buffer_status_size",
                    raw::proxy_get_buffer_status(body, bad_usize, &mut ok_flags),
                )
                .num(
                    "get_buffer_status_flags",
                    raw::proxy_get_buffer_status(body, &mut ok_len, bad_u32),
                )
                .num("set_buffer_bytes", raw::proxy_set_buffer_bytes(body, 0, 0, bad, 16))
                .emit("badptr_body");
        }
    }

    fn scenario_badmap(&self) -> Action {
        // Truncated sizes, a count far beyond the data, a missing NUL, and a short buffer.
        let truncated: &[u8] = &[5, 0, 0, 0, 1, 0, 0, 0];
        let huge_count: &[u8] = &[0xff, 0xff, 0xff, 0x7f];
        let mut no_nul = proxy_wasm_pairs::encode(&[("k", "v")]);
        let last = no_nul.len() - 1;
        no_nul[last] = b'x';
        let short: &[u8] = &[1, 0];
        let mut r = Report::new();
        for (name, bytes) in [
            ("truncated", truncated),
            ("huge_count", huge_count),
            ("no_nul", &no_nul),
            ("short", short),
        ] {
            let set =
                unsafe { raw::proxy_set_header_map_pairs(raw::map::HTTP_REQUEST_HEADERS, bytes.as_ptr(), bytes.len()) };
            let local = raw::send_local_response(500, "", b"", bytes, -1);
            let upstream = self.arg("x-upstream").unwrap_or("cluster_a").to_string();
            let (call, _) = raw::http_call(&upstream, bytes, b"", &[], 1000);
            r = r
                .num(&format!("{name}_set"), set)
                .num(&format!("{name}_local"), local)
                .num(&format!("{name}_call"), call);
        }
        r.raw("headers_after", pairs_json(&self.get_http_request_headers()))
            .emit("badmap");
        Action::Continue
    }

    fn scenario_grow(&self) -> Action {
        let pages: usize = self.arg("x-pages").and_then(|p| p.parse().ok()).unwrap_or(1);
        let before = core::arch::wasm32::memory_size::<0>();
        let result = core::arch::wasm32::memory_grow::<0>(pages);
        let after = core::arch::wasm32::memory_size::<0>();
        let mut try_alloc = Vec::<u8>::new();
        let bytes: usize = self.arg("x-alloc-bytes").and_then(|p| p.parse().ok()).unwrap_or(0);
        let alloc_ok = try_alloc.try_reserve_exact(bytes).is_ok();
        Report::new()
            .num("before_pages", before as u64)
            .num("grow_result", if result == usize::MAX { -1 } else { result as i128 })
            .num("after_pages", after as u64)
            .bool("alloc_ok", alloc_ok)
            .emit("grow");
        Action::Continue
    }

    /// Which stream maps `callback` may read and measure: per map, the status of a value
    /// lookup (`:status`/`:path`-agnostic key), of `get_header_map_pairs` with the pair count,
    /// and of `get_header_map_size`.
    fn report_map_phase(&self, callback: &str) {
        if self.scenario != "map_phases" {
            return;
        }
        let mut r = Report::new().str("callback", callback);
        for (name, map) in [
            ("request_headers", raw::map::HTTP_REQUEST_HEADERS),
            ("request_trailers", raw::map::HTTP_REQUEST_TRAILERS),
            ("response_headers", raw::map::HTTP_RESPONSE_HEADERS),
            ("response_trailers", raw::map::HTTP_RESPONSE_TRAILERS),
        ] {
            let value = raw::header_value(map, "x-phase-key");
            let pairs = raw::header_map_pairs(map);
            let count = pairs
                .bytes
                .as_ref()
                .and_then(|b| b.get(..4))
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            let (size, _) = raw::header_map_size(map);
            r = r.raw(
                name,
                format!(
                    "{{\"value\":{},\"pairs\":{},\"count\":{count},\"size\":{size}}}",
                    value.status, pairs.status
                ),
            );
        }
        r.emit("map_phase");
    }

    fn report_body(&self, event: &str, buffer: u32, body_size: usize, end_of_stream: bool) {
        let body = hostcalls::get_buffer(
            if buffer == 0 {
                BufferType::HttpRequestBody
            } else {
                BufferType::HttpResponseBody
            },
            0,
            body_size,
        )
        .unwrap_or_default()
        .unwrap_or_default();
        let (status, size, flags) = raw::buffer_status(buffer);
        let partial = raw::get_buffer(buffer, 1, 3);
        let past_end = raw::get_buffer(buffer, body_size + 1, 4);
        Report::new()
            .num("call", self.body_calls)
            .num("size", body_size as u64)
            .bool("eos", end_of_stream)
            .bytes("body", Some(&body))
            .num("status_status", status)
            .num("status_size", size as u64)
            .num("status_flags", flags)
            .bytes("partial", partial.bytes.as_deref())
            .num("past_end_status", past_end.status)
            .emit(event);
    }

    /// Applies `x-body-op` to a body buffer and returns whether to pause for more.
    /// Response header edits any scenario may ask for: `x-local-in-response-headers` sends a
    /// 502 local reply from `on_http_response_headers`; `x-mark-response` adds
    /// `x-probe-saw-status: <:status>` (what the response callback saw, local replies included),
    /// `x-probe-saw-pseudo` (the request's pseudo-header names in order) and
    /// `x-probe-saw-authority` (its `:authority`); `x-mark-names` adds `x-probe-saw-names` (every
    /// request header name as the filter saw it, in order, joined by `,`) and `x-probe-saw-count`
    /// (the `num_headers` its host passed to `on_http_request_headers`);
    /// `x-remove-content-length` removes `content-length`, as a filter that rewrites the body
    /// must, or the client gets the old length. Both are reported as `response_header_edits`.
    /// `x-show-response-names` adds `x-probe-saw-names`: the names of the response headers the
    /// callback was handed, in the host's order.
    fn response_header_edits(&self) {
        if self.arg("x-show-response-names").is_some() {
            let names: Vec<String> = self.get_http_response_headers().into_iter().map(|(k, _)| k).collect();
            self.add_http_response_header("x-probe-saw-names", &names.join(","));
        }
        if self.arg("x-local-in-response-headers").is_some() {
            self.send_http_response(502, vec![("x-probe", "from-response-headers")], Some(b"replaced reply"));
            Report::new().emit("local_in_response_headers");
        }
        let mark = self.arg("x-mark-response").is_some();
        let mark_names = self.arg("x-mark-names").is_some();
        let remove_length = self.arg("x-remove-content-length").is_some();
        if !mark && !mark_names && !remove_length {
            return;
        }
        let status = self.get_http_response_header(":status");
        let length = self.get_http_response_header("content-length");
        if mark {
            self.add_http_response_header("x-probe-saw-status", status.as_deref().unwrap_or("none"));
            // What the request looked like to the filter: its pseudo-headers in order, and
            // `:authority`.
            let pseudo: Vec<&str> = (self.headers.iter())
                .map(|(k, _)| k.as_str())
                .filter(|k| k.starts_with(':'))
                .collect();
            self.add_http_response_header("x-probe-saw-pseudo", &pseudo.join(","));
            let authority = self
                .headers
                .iter()
                .find(|(k, _)| k == ":authority")
                .map(|(_, v)| v.as_str());
            self.add_http_response_header("x-probe-saw-authority", authority.unwrap_or("none"));
        }
        if mark_names {
            let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
            self.add_http_response_header("x-probe-saw-names", &names.join(","));
            self.add_http_response_header("x-probe-saw-count", &self.num_headers.to_string());
        }
        if remove_length {
            self.set_http_response_header("content-length", None);
        }
        Report::new()
            .bytes("status", status.as_deref().map(str::as_bytes))
            .bytes("content_length", length.as_deref().map(str::as_bytes))
            .bool("removed_content_length", remove_length)
            .emit("response_header_edits");
    }

    fn body_ops(&self, buffer: u32, body_size: usize, end_of_stream: bool) -> Action {
        if self.arg("x-body-pause") == Some("until_eos") && !end_of_stream {
            return Action::Pause;
        }
        let set = |start: usize, size: usize, value: &[u8]| unsafe {
            raw::proxy_set_buffer_bytes(buffer, start, size, value.as_ptr(), value.len())
        };
        let status = match self.arg("x-body-op") {
            Some("prepend") => set(0, 0, b"pre-"),
            Some("append") => set(body_size, 0, b"-post"),
            Some("append_max") => set(usize::MAX, 0, b"-max"),
            Some("replace") => set(0, body_size, b"replaced"),
            Some("inject") => set(2, 0, b"XX"),
            Some("replace_mid") => set(1, 2, b"YY"),
            Some("clear") => set(0, body_size, b""),
            _ => return Action::Continue,
        };
        let after = raw::get_buffer(buffer, 0, usize::MAX);
        Report::new()
            .num("status", status)
            .bytes("after", after.bytes.as_deref())
            .emit("body_op");
        Action::Continue
    }
}

impl Context for Probe {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, num_trailers: usize) {
        self.maybe_trap("http_call_response");
        self.report_map_phase("http_call_response");
        let get_status = !self.is_kong();
        let body = report_call_response(
            "http_call_response",
            self,
            token,
            (num_headers, body_size, num_trailers),
            get_status,
        );
        match self.arg("x-after").unwrap_or("resume") {
            "respond" => self.send_http_response(200, vec![("x-from", "callout")], Some(&body)),
            "respond_twice" => {
                self.send_http_response(201, vec![], Some(b"first"));
                self.send_http_response(202, vec![], Some(b"second"));
            }
            "dispatch_again" => Self::report_dispatch("dispatch_again", self.dispatch()),
            "resume_raw" => {
                let status = unsafe { raw::proxy_continue_stream(0) };
                Report::new().num("status", status).emit("resume_raw");
            }
            "nothing" => {}
            _ => self.resume_http_request(),
        }
    }

    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, response_size: usize) {
        self.maybe_trap("grpc_call_response");
        let message = self.get_grpc_call_response_body(0, response_size);
        let (status, code, msg) = raw::get_status();
        Report::new()
            .num("token", token)
            .num("status_code", status_code)
            .num("size", response_size as u64)
            .bytes("message", message.as_deref())
            .num("get_status", status)
            .num("code", code)
            .bytes("status_message", msg.as_deref())
            .emit("grpc_call_response");
        self.resume_http_request();
    }

    fn on_grpc_stream_initial_metadata(&mut self, token: u32, num_elements: u32) {
        self.maybe_trap("grpc_initial_metadata");
        let md: Vec<(String, String)> = self
            .get_grpc_stream_initial_metadata()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let one = self.get_grpc_stream_initial_metadata_value("x-initial");
        Report::new()
            .num("token", token)
            .num("num", num_elements)
            .raw("metadata", pairs_json(&md))
            .bytes("x_initial", one.as_deref())
            .emit("grpc_initial_metadata");
    }

    fn on_grpc_stream_message(&mut self, token: u32, message_size: usize) {
        self.maybe_trap("grpc_message");
        let message = self.get_grpc_stream_message(0, message_size);
        Report::new()
            .num("token", token)
            .num("size", message_size as u64)
            .bytes("message", message.as_deref())
            .emit("grpc_message");
    }

    fn on_grpc_stream_trailing_metadata(&mut self, token: u32, num_elements: u32) {
        self.maybe_trap("grpc_trailing_metadata");
        let md: Vec<(String, String)> = self
            .get_grpc_stream_trailing_metadata()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        Report::new()
            .num("token", token)
            .num("num", num_elements)
            .raw("metadata", pairs_json(&md))
            .emit("grpc_trailing_metadata");
    }

    fn on_grpc_stream_close(&mut self, token: u32, status_code: u32) {
        self.maybe_trap("grpc_close");
        let (status, code, msg) = raw::get_status();
        Report::new()
            .num("token", token)
            .num("status_code", status_code)
            .num("get_status", status)
            .num("code", code)
            .bytes("message", msg.as_deref())
            .emit("grpc_close");
        self.resume_http_request();
    }

    fn on_done(&mut self) -> bool {
        self.maybe_trap("done");
        let defer = self.scenario == "done";
        Report::new()
            .num("context", self.id)
            .bool("defer", defer)
            .emit("on_done");
        if defer {
            PENDING_DONE.with(|p| p.borrow_mut().push(self.id));
        }
        !defer
    }
}

impl HttpContext for Probe {
    /// Scenarios (`x-probe`): `log`, `log_level`, `time`, `wasi`, `headers`, `set_headers`,
    /// `response_headers`, `trailers`, `body`, `response_body`, `read_headers_in_body`,
    /// `callout`, `dispatch_in_response`, `local`, `local_raw`, `local_twice`, `local_in_body`,
    /// `close`, `streams`, `grpc_call`, `grpc_stream`, `shared`, `queue`, `dequeue`, `metrics`,
    /// `properties`, `properties_response`, `foreign`, `effective`, `done`, `done_not_pending`,
    /// `nyi`, `tick_from_stream`, `map_phases`, `pause`, `pause_response`,
    /// `local_in_response_body`, `badptr`, `badmap`, `grow`. `response_body` and `local` apply
    /// `x-body-op` to the response body; any scenario takes the response header edits of
    /// [`Probe::response_header_edits`].
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.headers = self.get_http_request_headers();
        self.num_headers = num_headers;
        self.scenario = self.arg("x-probe").unwrap_or("none").to_string();
        Report::new()
            .num("context", self.id)
            .num("num_headers", num_headers as u64)
            .bool("eos", end_of_stream)
            .str("scenario", &self.scenario)
            .emit("request_headers");
        self.maybe_trap("request_headers");
        self.report_map_phase("request_headers");
        match self.scenario.as_str() {
            "log" => self.scenario_log(),
            "log_level" => {
                let level = hostcalls::get_log_level().map_or(-1, |l| l as i128);
                Report::new().num("level", level).emit("log_level");
                // Also in a local response: the report itself may be below the host's level.
                self.send_http_response(200, vec![], Some(level.to_string().as_bytes()));
                Action::Pause
            }
            "time" => self.scenario_time(),
            "wasi" => self.scenario_wasi(),
            "headers" => self.scenario_headers(),
            "set_headers" => self.scenario_set_headers(),
            "callout" => {
                let calls: u32 = self.arg("x-calls").and_then(|n| n.parse().ok()).unwrap_or(1);
                let mut result = self.dispatch();
                Self::report_dispatch("dispatch", result);
                for _ in 1..calls {
                    result = self.dispatch();
                    Self::report_dispatch("dispatch", result);
                }
                if result.is_ok() && self.arg("x-continue").is_none() {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
            "local" => self.scenario_local(false),
            "local_raw" => self.scenario_local(true),
            "local_twice" => {
                self.send_http_response(401, vec![], Some(b"first"));
                self.send_http_response(402, vec![], Some(b"second"));
                Action::Pause
            }
            "close" => {
                self.reset_http_request();
                Action::Pause
            }
            "streams" => self.scenario_streams(),
            "grpc_call" => self.scenario_grpc_call(),
            "grpc_stream" => self.scenario_grpc_stream(),
            "shared" => self.scenario_shared(),
            "queue" => self.scenario_queue(),
            "dequeue" => self.scenario_dequeue(),
            "metrics" => self.scenario_metrics(),
            "metric_op" => self.scenario_metric_op(),
            "properties" => self.scenario_properties(),
            "foreign" => self.scenario_foreign(),
            "effective" => self.scenario_effective(),
            "done_not_pending" => {
                let status = unsafe { raw::proxy_done() };
                Report::new().num("status", status).emit("done_not_pending");
                Action::Continue
            }
            "nyi" => self.scenario_nyi(),
            "badptr" => self.scenario_badptr_headers(),
            "badmap" => self.scenario_badmap(),
            "grow" => self.scenario_grow(),
            "tick_from_stream" => {
                let status = unsafe { raw::proxy_set_tick_period_milliseconds(50) };
                Report::new().num("status", status).emit("tick_from_stream");
                Action::Continue
            }
            "map_phases" => {
                if self.arg("x-pause").is_some() {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
            "pause" => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.body_calls += 1;
        self.report_body("request_body", raw::buffer::HTTP_REQUEST_BODY, body_size, end_of_stream);
        self.maybe_trap("request_body");
        self.report_map_phase("request_body");
        match self.scenario.as_str() {
            "body" => self.body_ops(raw::buffer::HTTP_REQUEST_BODY, body_size, end_of_stream),
            "read_headers_in_body" => {
                let path = raw::header_value(raw::map::HTTP_REQUEST_HEADERS, ":path");
                let response = raw::header_value(raw::map::HTTP_RESPONSE_HEADERS, ":status");
                Report::new()
                    .num("status", path.status)
                    .bytes("path", path.bytes.as_deref())
                    .num("response_headers_status", response.status)
                    .emit("read_headers_in_body");
                Action::Continue
            }
            "local_in_body" if end_of_stream => {
                self.send_http_response(413, vec![], Some(b"too large"));
                Action::Pause
            }
            "badptr" => {
                self.scenario_badptr_body();
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        self.maybe_trap("request_trailers");
        self.report_map_phase("request_trailers");
        if self.scenario == "trailers" {
            let before = self.get_http_request_trailers();
            let one = self.get_http_request_trailer("x-trailer");
            self.add_http_request_trailer("x-trailer-added", "1");
            self.set_http_request_trailer("x-trailer", Some("replaced"));
            Report::new()
                .num("num", num_trailers as u64)
                .raw("before", pairs_json(&before))
                .bytes("one", one.as_deref().map(str::as_bytes))
                .raw("after", pairs_json(&self.get_http_request_trailers()))
                .emit("request_trailers");
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.maybe_trap("response_headers");
        self.report_map_phase("response_headers");
        Report::new()
            .num("num_headers", num_headers as u64)
            .bool("eos", end_of_stream)
            .emit("response_headers");
        self.response_header_edits();
        match self.scenario.as_str() {
            "response_headers" => {
                let status = self.get_http_response_header(":status");
                let request_path = raw::header_value(raw::map::HTTP_REQUEST_HEADERS, ":path");
                self.set_http_response_header("x-resp-replace", Some("new"));
                self.add_http_response_header("x-resp-added", "1");
                self.remove_http_response_header("x-resp-remove");
                Report::new()
                    .bytes("status", status.as_deref().map(str::as_bytes))
                    .num("request_headers_status", request_path.status)
                    .raw("after", pairs_json(&self.get_http_response_headers()))
                    .emit("response_headers_ops");
                Action::Continue
            }
            "dispatch_in_response" => {
                let result = self.dispatch();
                Self::report_dispatch("dispatch", result);
                Action::Continue
            }
            "properties_response" => self.scenario_properties(),
            "pause_response" => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.body_calls += 1;
        self.report_body(
            "response_body",
            raw::buffer::HTTP_RESPONSE_BODY,
            body_size,
            end_of_stream,
        );
        self.maybe_trap("response_body");
        self.report_map_phase("response_body");
        // A response body rewrite applies to an upstream's response and to the filter's own
        // local reply, which both hosts pass through the response callbacks.
        if matches!(self.scenario.as_str(), "response_body" | "local") {
            return self.body_ops(raw::buffer::HTTP_RESPONSE_BODY, body_size, end_of_stream);
        }
        if self.scenario == "local_in_response_body" {
            self.send_http_response(500, vec![], Some(b"too late"));
            Report::new().emit("local_in_response_body");
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, num_trailers: usize) -> Action {
        self.maybe_trap("response_trailers");
        self.report_map_phase("response_trailers");
        if self.scenario == "trailers" {
            let before = self.get_http_response_trailers();
            self.add_http_response_trailer("x-resp-trailer-added", "1");
            self.remove_http_response_trailer("x-resp-trailer-remove");
            Report::new()
                .num("num", num_trailers as u64)
                .raw("before", pairs_json(&before))
                .raw("after", pairs_json(&self.get_http_response_trailers()))
                .emit("response_trailers");
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.maybe_trap("log");
        self.report_map_phase("log");
        // Spec: request headers are readable in proxy_on_log.
        let path = raw::header_value(raw::map::HTTP_REQUEST_HEADERS, ":path");
        Report::new()
            .num("context", self.id)
            .str("scenario", &self.scenario)
            .num("path_status", path.status)
            .bytes("path", path.bytes.as_deref())
            .emit("on_log");
    }
}
