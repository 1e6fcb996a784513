//! The proxy-wasm ABI 0.2.1 glue (wasm32 only): the module's own exports (`proxy_on_*`, no SDK),
//! a root context that parses the configuration and one HTTP context per request that forwards
//! every callback to [`Exchange`] and performs the host operations it asks for. No policy lives
//! here, and no state beyond the [`ContextTable`] the exports look their context up in.
//!
//! Exports (proxy-wasm spec ABI 0.2.1): `proxy_abi_version_0_2_1`, `proxy_on_memory_allocate`,
//! `proxy_on_context_create`, `proxy_on_vm_start`, `proxy_on_configure`, `proxy_on_tick`,
//! `proxy_on_queue_ready`, `proxy_on_request_headers`/`_body`/`_trailers`,
//! `proxy_on_response_headers`/`_body`/`_trailers`, `proxy_on_http_call_response`,
//! `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`, and the reactor's `_initialize` (lib.rs).
//! Both hosts treat every `proxy_on_*` callback as optional: proxy-wasm-cpp-host (Envoy) calls
//! one only when the module exports it (src/context.cc: `if (!wasm_->on_new_connection_)` and
//! the like), and ngx_wasm_module requires only `proxy_on_context_create`, `proxy_on_vm_start`
//! and `proxy_on_configure` (ngx_proxy_wasm.c `ngx_proxy_wasm_filter_init_abi`, "missing one of:
//! on_context_create, on_vm_start, on_plugin_start"). So the callbacks the proxy-wasm Rust SDK
//! 0.2.5 also exported and this filter cannot use are left out: the L4 ones
//! (`proxy_on_new_connection`, `_downstream_data`, `_upstream_data`, the two `_close`), which in
//! the SDK trapped on an HTTP filter's contexts ("invalid context_id"); the gRPC replies
//! (`proxy_on_grpc_*`), which come only for gRPC calls and the filter makes none (the SDK ignored
//! unknown tokens); and `proxy_on_foreign_function`, which comes only after the filter calls a
//! foreign function (ngx_wasm_module's `resolve_lua`) and did nothing in the SDK.
//!
//! Host contract breaches (an unknown context id, a duplicate one, a reply to an unknown call)
//! are logged and answered as harmlessly as the callback allows (`Continue`, `true` for done),
//! never a panic: the SDK panicked on each.
//!
//! Asynchronous mode (`producer_async`): the root context owns the VM's [`Producer`] in an
//! `Rc<RefCell<_>>` and hands a clone to every HTTP context it creates (the VM is
//! single-threaded, and no callback runs inside another, so a borrow never meets another). HTTP
//! contexts only enqueue and answer; every REST proxy call of the producer — batches and health
//! probes — is dispatched by the root context from `on_tick`, and its reply comes back to the
//! root's `on_http_call_response`. That is the one arrangement correct in both hosts:
//! - a call belongs to the context that dispatched it. Envoy cancels an HTTP context's pending
//!   calls when its stream is destroyed, and Kong ties a dispatch to its request (a local
//!   response cancels the request's other pending dispatches), so a batch dispatched from a
//!   request that is answered 200 at once would be cancelled, its records' fate unknown. The
//!   root context lives as long as the plugin;
//! - `on_http_call_response` goes to the context whose callback dispatched the call (the
//!   [`ContextTable`]'s call map), which for a tick is the root, where the producer lives;
//! - Kong allows `dispatch_http_call` only from request headers/body, ticks, call responses and
//!   foreign functions (it traps elsewhere); Envoy allows it anywhere. `on_tick` is allowed in
//!   both, and is also where time-driven work (flush timeout, backoff, probes) must run anyway.
//!   A batch that fills up is therefore sent at the next tick: the tick period is at most
//!   [`producer::MAX_TICK_MS`].
//!
//! The tick period is set once, at the first configuration that turns asynchronous mode on (Kong
//! traps when it is set again).
//!
//! Shutdown: a root context whose `proxy_on_done` returns false is "not done yet" (proxy-wasm
//! spec; proxy-wasm-cpp-host `WasmBase::startShutdown` then waits for `proxy_done`), so the root
//! drains the producer (everything held is sent at once) and calls `proxy_done` after the last
//! reply. `host-sim serve` honours that within its drain time. Real Envoy 1.40 calls
//! `proxy_on_done` on SIGTERM but destroys the VM at once, resetting the callouts just started
//! (observed, tests/e2e/test_shutdown.py), so there the buffer is lost all the same. Kong's
//! engine never shuts a root context down and traps on `proxy_done`; if its `proxy_on_done` ever
//! comes, what is held is dropped and logged.
//! Which host it is comes from the last request (a root context has none to ask with).
//!
//! Schema registry ([`crate::schema_registry`]): the root owns the schema id resolver and
//! dispatches its lookups from `on_tick` (for the same reasons as the producer's calls; a tick is
//! set for it in synchronous mode too); HTTP contexts only read the ids it holds.
//!
//! Metrics ([`crate::metrics`]) are defined in both modes, at the first configuration and again
//! when a configuration changes their prefix (`metrics.prefix`, or the default derived from the
//! `plugin_root_id` property). HTTP contexts apply the exchange's updates as they come; the
//! producer's are drained after each callback. An update is applied only to a metric the host
//! defined and only with the operation its type allows, so no metric call can trap on Kong.
//!
//! Host errors never panic here: every status is handled. Every host call is a raw import
//! (module `raw`), and what the host returns is read in place where it can be:
//! - a call-response header when the call got no reply: Envoy answers `BAD_ARGUMENT` (there is no
//!   response map), Kong answers with its `:dispatch_status` pseudo-header;
//! - the request's header map, read once and decoded in place
//!   ([`crate::exchange::RequestHeaders::from_serialized`]);
//! - the REST proxy calls' header maps, serialized once per configuration with the varying values
//!   spliced in per call ([`crate::wire::MapTemplate`]), and the local answer's, a constant;
//! - the clock, and the `ngx.*` properties with their paths serialized once as constants;
//! - the tick period and the metrics, whose failure (a host without metrics, a refused period)
//!   is reported and handled rather than a trap;
//! - the `plugin_root_id` property, read at configuration for the metrics' default prefix.

use std::cell::{Cell, RefCell};
use std::ptr::null_mut;
use std::rc::Rc;

use crate::config::{self, Config};
use crate::contexts::{Calls, Context, ContextTable, CreateError, Removed};
use crate::exchange::{Exchange, RequestHeaders};
use crate::host::{Action, DispatchError, Host, HostKind, Level};
use crate::metrics::{self, Metric, MetricUpdate};
use crate::producer::{self, Producer};
use crate::rest::ReplyView;
use crate::schema_registry;

/// Called from `_initialize`: the panic hook, which logs without ever panicking itself (a
/// failing log call is ignored).
pub(crate) fn start() {
    std::panic::set_hook(Box::new(|info| {
        raw::log(LogLevel::Critical, &format!("kafka-upstream: panic: {info}"));
    }));
}

/// The ids of the filter's metrics, in [`Metric::ALL`] order (`None`: the host refused it).
type MetricIds = [Option<u32>; Metric::ALL.len()];

/// The metrics as defined for one prefix.
struct Metrics {
    prefix: String,
    ids: MetricIds,
}

/// The plugin-wide context: owns the parsed configuration and, in asynchronous mode, the
/// producer.
struct Root {
    config: Option<Rc<Config>>,
    /// Created by the first configuration with `producer_async`; kept (and drained) if a later
    /// configuration turns it off, so no buffered record is abandoned.
    producer: Option<Rc<RefCell<Producer>>>,
    metrics: Option<Metrics>,
    /// The tick period, once set.
    tick_ms: Option<u32>,
    /// The host as the last request saw it (a root context has no request to ask with). Only
    /// Envoy may be told `proxy_done`: ngx_wasm_module traps on it (not yet implemented).
    seen_host: Rc<Cell<Option<HostKind>>>,
    /// `proxy_on_done` returned false: the producer is draining and `proxy_done` is owed.
    draining: bool,
    /// `schema_registry.confluent`: the schema id resolver, whose lookups the root dispatches from
    /// `on_tick` (allowed there in both hosts, see above) and whose replies come back here.
    schema_registry: Option<Rc<RefCell<schema_registry::Resolver>>>,
    /// The tokens of the lookups in flight: which schema each resolves, for which resolver
    /// (`registry_generation` when it was dispatched).
    registry_calls: Vec<(u32, schema_registry::Part, u32)>,
    /// Counts the resolvers a configuration started: a reply to an earlier one's lookup is
    /// recognised (not taken for a stray call) and dropped.
    registry_generation: u32,
}

impl Root {
    /// A root context before its first configuration.
    fn new() -> Self {
        Root {
            config: None,
            producer: None,
            metrics: None,
            tick_ms: None,
            seen_host: Rc::new(Cell::new(None)),
            draining: false,
            schema_registry: None,
            registry_calls: Vec::new(),
            registry_generation: 0,
        }
    }

    /// While draining, tells the host the plugin is done once the producer holds nothing.
    fn finish_drain_if_empty(&mut self) {
        let Some(producer) = &self.producer else {
            return;
        };
        if self.draining && producer.borrow().is_drained() {
            self.draining = false;
            let status = raw::done();
            if status != status::OK {
                log(
                    LogLevel::Error,
                    &format!("kafka-upstream: the host refused proxy_done: status {status}"),
                );
            }
        }
    }

    /// Defines the metrics under `cfg`'s prefix, unless they already are.
    fn define_metrics(&mut self, cfg: &Config) {
        let prefix = match &cfg.metrics_prefix {
            Some(prefix) => prefix.clone(),
            None => {
                let root_id = raw::property("plugin_root_id")
                    .map(|id| String::from_utf8_lossy(&id).into_owned())
                    .unwrap_or_default();
                metrics::default_prefix(&root_id)
            }
        };
        if self.metrics.as_ref().is_some_and(|m| m.prefix == prefix) {
            return;
        }
        let ids = define_metrics(&prefix);
        self.metrics = Some(Metrics { prefix, ids });
    }

    /// The ids of the defined metrics.
    fn metric_ids(&self) -> Option<&MetricIds> {
        self.metrics.as_ref().map(|m| &m.ids)
    }

    /// Sets up asynchronous mode for `cfg`: producer and tick. False when the host refused the
    /// tick period (nothing would ever be sent).
    fn start_producer(&mut self, cfg: &Rc<Config>) -> bool {
        match &self.producer {
            Some(p) => p.borrow_mut().reconfigure(Rc::clone(cfg)),
            None => self.producer = Some(Rc::new(RefCell::new(Producer::new(Rc::clone(cfg))))),
        }
        if self.tick_ms.is_none() {
            let period = producer::tick_period_ms(cfg);
            let status = raw::set_tick_period(period);
            if status != status::OK {
                log(
                    LogLevel::Error,
                    &format!("kafka-upstream: producer_async needs a tick, and the host refused a {period} ms tick period (status {status})"),
                );
                return false;
            }
            self.tick_ms = Some(period);
        }
        true
    }
}

/// The host deleted the root context (`proxy_on_delete`, which drops it). A root still holding
/// records here was given up on: a host that stopped waiting for `proxy_done` (host-sim serve at
/// the end of its drain time). What it held is dropped, counted and logged, so nothing goes
/// silently.
impl Drop for Root {
    fn drop(&mut self) {
        let Some(producer) = &self.producer else {
            return;
        };
        if producer.borrow().is_drained() {
            return;
        }
        producer.borrow_mut().shutdown();
        report(producer, self.metric_ids());
    }
}

impl Root {
    /// Keeps the resolver when the registry settings did not change (its cache stays valid), or
    /// starts a new one; sets the tick its lookups are dispatched from.
    fn configure_schema_registry(&mut self, cfg: &Config) -> bool {
        let Some(settings) = &cfg.schema_registry else {
            if self.schema_registry.take().is_some() {
                self.registry_generation = self.registry_generation.wrapping_add(1);
            }
            return true;
        };
        let unchanged = self
            .schema_registry
            .as_ref()
            .is_some_and(|r| r.borrow().config() == settings);
        if !unchanged {
            self.schema_registry = Some(Rc::new(RefCell::new(schema_registry::Resolver::new(settings.clone()))));
            self.registry_generation = self.registry_generation.wrapping_add(1);
        }
        if self.tick_ms.is_none() {
            // The producer's own period when it runs too (set once: Kong traps on a second).
            let period = if cfg.producer.enabled {
                producer::tick_period_ms(cfg)
            } else {
                producer::MAX_TICK_MS
            };
            let status = raw::set_tick_period(period);
            if status != status::OK {
                log(
                    LogLevel::Error,
                    &format!("kafka-upstream: schema_registry needs a tick for its lookups, and the host refused a {period} ms tick period (status {status})"),
                );
                return false;
            }
            self.tick_ms = Some(period);
        }
        true
    }

    /// Dispatches the schema id lookups that are due.
    fn dispatch_registry_lookups(&mut self, calls: &mut Calls<'_>) {
        let Some(resolver) = self.schema_registry.clone() else {
            return;
        };
        let now = now_ms();
        let due = resolver.borrow_mut().calls_due(now);
        for call in due {
            let headers = proxy_wasm_pairs::encode(&call.headers);
            match dispatch(calls, &call.upstream, &headers, b"", call.timeout_ms) {
                Ok(token) => self.registry_calls.push((token, call.part, self.registry_generation)),
                Err(refusal) => {
                    let why = refusal.to_string();
                    resolver.borrow_mut().on_reply(call.part, Err(&why), now);
                    log(
                        LogLevel::Error,
                        &format!("kafka-upstream: schema registry lookup: {why}"),
                    );
                }
            }
        }
    }

    /// Takes a lookup's reply; false when `token_id` is not a lookup.
    fn on_registry_reply(&mut self, token_id: u32, num_headers: usize, body_size: usize) -> bool {
        let Some(i) = self.registry_calls.iter().position(|(t, _, _)| *t == token_id) else {
            return false;
        };
        let (_, part, generation) = self.registry_calls.swap_remove(i);
        // A lookup of a resolver a later configuration replaced: its answer is of no use.
        let Some(resolver) = self
            .schema_registry
            .as_ref()
            .filter(|_| generation == self.registry_generation)
        else {
            return true;
        };
        let (status, dispatch_status, body) =
            read_call_response(num_headers, body_size.min(schema_registry::MAX_REPLY_BYTES));
        let status = status
            .as_deref()
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u32>().ok());
        let mut resolver = resolver.borrow_mut();
        match status {
            Some(status) => resolver.on_reply(part, Ok((status, &body)), now_ms()),
            None => {
                let why = dispatch_status
                    .map(|d| String::from_utf8_lossy(&d).into_owned())
                    .unwrap_or_else(|| "no reply".to_string());
                resolver.on_reply(part, Err(&why), now_ms());
            }
        }
        if let Err(schema_registry::Unresolved::Failed(why)) = resolver.ids() {
            log(LogLevel::Error, &format!("kafka-upstream: {why}"));
        }
        true
    }
}

impl Root {
    /// The reply to a call this root dispatched: a schema id lookup's or the producer's.
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize) {
        if self.on_registry_reply(token_id, num_headers, body_size) {
            return;
        }
        let Some(producer) = &self.producer else {
            return;
        };
        let (status, dispatch_status, body) = read_call_response(num_headers, body_size);
        let reply = ReplyView {
            status: status.as_deref(),
            dispatch_status: dispatch_status.as_deref(),
            body: &body,
        };
        let ours = producer.borrow_mut().on_response(token_id, &reply, now_ms());
        if !ours {
            log(
                LogLevel::Error,
                &format!("kafka-upstream: reply to unknown call {token_id} ignored"),
            );
        }
        report(producer, self.metric_ids());
        self.finish_drain_if_empty();
    }

    /// The plugin is being shut down. Returning false asks the host to wait for `proxy_done`
    /// (proxy-wasm-cpp-host wasm.cc `WasmBase::startShutdown` / `done`), so the buffer is
    /// drained and `proxy_done` follows the last acknowledgement. Envoy 1.40 does not wait on
    /// SIGTERM (the VM is destroyed right after this callback, e2e test_shutdown.py); host-sim
    /// serve does, within its drain time. Kong's engine ignores the result and has no
    /// `proxy_done` (ngx_proxy_wasm.c:1385; KONG-DOC NYI): what is held is dropped, counted and
    /// logged.
    fn on_done(&mut self, calls: &mut Calls<'_>) -> bool {
        let Some(producer) = self.producer.clone() else {
            return true;
        };
        if self.seen_host.get() == Some(HostKind::Kong) {
            producer.borrow_mut().shutdown();
            report(&producer, self.metric_ids());
            return true;
        }
        producer.borrow_mut().begin_drain(&mut Glue::root(calls), now_ms());
        report(&producer, self.metric_ids());
        let drained = producer.borrow().is_drained();
        self.draining = !drained;
        drained
    }
}

impl Root {
    fn on_configure(&mut self) -> bool {
        let bytes = match raw::buffer(BufferType::PluginConfiguration, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("kafka-upstream: cannot read the configuration: status {status}"),
                );
                self.config = None;
                return false;
            }
        };
        match config::parse(&bytes) {
            Ok(cfg) => {
                let cfg = Rc::new(cfg);
                self.define_metrics(&cfg);
                if !self.configure_schema_registry(&cfg) {
                    self.config = None;
                    return false;
                }
                if cfg.producer.enabled {
                    if !self.start_producer(&cfg) {
                        self.config = None;
                        return false;
                    }
                } else if let Some(p) = &self.producer {
                    // Synchronous from now on; what is still buffered drains with this config.
                    p.borrow_mut().reconfigure(Rc::clone(&cfg));
                }
                if let Some(p) = &self.producer {
                    p.borrow_mut().set_schema_registry(self.schema_registry.clone());
                }
                self.config = Some(cfg);
                true
            }
            Err(e) => {
                log(LogLevel::Error, &format!("kafka-upstream: invalid configuration: {e}"));
                self.config = None;
                false
            }
        }
    }

    fn on_tick(&mut self, calls: &mut Calls<'_>) {
        self.dispatch_registry_lookups(calls);
        if let Some(producer) = &self.producer {
            producer.borrow_mut().on_tick(&mut Glue::root(calls), now_ms());
            report(producer, self.metric_ids());
        }
        self.finish_drain_if_empty();
    }

    /// The state of a new request of this root.
    fn new_request(&self) -> Request {
        let producer = match (&self.config, &self.producer) {
            (Some(cfg), Some(p)) if cfg.producer.enabled => Some(Rc::clone(p)),
            _ => None,
        };
        let mut exchange = match &producer {
            Some(p) => Exchange::with_producer(self.config.clone(), Rc::clone(p)),
            None => Exchange::new(self.config.clone()),
        };
        if let Some(resolver) = &self.schema_registry {
            exchange = exchange.with_schema_registry(Rc::clone(resolver));
        }
        Request {
            exchange,
            producer,
            metrics: self.metric_ids().copied(),
            seen_host: Rc::clone(&self.seen_host),
        }
    }
}

/// One request.
struct Request {
    exchange: Exchange,
    /// The root's producer, in asynchronous mode.
    producer: Option<Rc<RefCell<Producer>>>,
    metrics: Option<MetricIds>,
    /// The root's record of the host, updated from each request.
    seen_host: Rc<Cell<Option<HostKind>>>,
}

impl Request {
    /// Reports what the producer logged and counted during the callback.
    fn report(&self) {
        if let Some(producer) = &self.producer {
            report(producer, self.metrics.as_ref());
        }
    }
}

impl Request {
    /// The [`Host`] of this request's callbacks: its metrics, and its calls registered for it.
    fn glue<'g, 'c>(metrics: Option<&'g MetricIds>, calls: &'g mut Calls<'c>) -> Glue<'g, 'c> {
        Glue { metrics, calls }
    }

    fn on_http_call_response(&mut self, calls: &mut Calls<'_>, token_id: u32, num_headers: usize, body_size: usize) {
        let (status, dispatch_status, body) = read_call_response(num_headers, body_size);
        let reply = ReplyView {
            status: status.as_deref(),
            dispatch_status: dispatch_status.as_deref(),
            body: &body,
        };
        let mut glue = Self::glue(self.metrics.as_ref(), calls);
        self.exchange.on_call_response(&mut glue, token_id, &reply);
    }

    fn on_request_headers(&mut self, calls: &mut Calls<'_>, end_of_stream: bool) -> Action {
        // One read of the whole map, decoded in place (no pair of allocations per line).
        let headers = RequestHeaders::from_serialized(raw::header_map(MapType::HttpRequestHeaders));
        let mut glue = Self::glue(self.metrics.as_ref(), calls);
        let action = self.exchange.on_request_header_map(&mut glue, headers, end_of_stream);
        if let Some(kind) = self.exchange.host_kind() {
            self.seen_host.set(Some(kind));
        }
        self.report();
        action
    }

    fn on_request_body(&mut self, calls: &mut Calls<'_>, body_size: usize, end_of_stream: bool) -> Action {
        let mut glue = Self::glue(self.metrics.as_ref(), calls);
        let action = self.exchange.on_request_body(&mut glue, body_size, end_of_stream);
        self.report();
        action
    }

    fn on_request_trailers(&mut self, calls: &mut Calls<'_>) -> Action {
        let mut glue = Self::glue(self.metrics.as_ref(), calls);
        let action = self.exchange.on_request_trailers(&mut glue);
        self.report();
        action
    }

    fn on_response_headers(&mut self, calls: &mut Calls<'_>) -> Action {
        let mut glue = Self::glue(self.metrics.as_ref(), calls);
        let action = self.exchange.on_response_headers(&mut glue);
        self.report();
        action
    }

    fn on_log(&mut self, calls: &mut Calls<'_>) {
        let mut glue = Self::glue(self.metrics.as_ref(), calls);
        self.exchange.on_stream_end(&mut glue);
    }
}

/// The reply to a call as the host gives it: `:status` (or Kong's `:dispatch_status` when the call
/// got no reply) and the body.
fn read_call_response(num_headers: usize, body_size: usize) -> (Option<Vec<u8>>, Option<Vec<u8>>, Vec<u8>) {
    // A call without a reply has no header map in Envoy (reading it is BAD_ARGUMENT); Kong
    // still exposes :dispatch_status. Both report num_headers == 0.
    let (status, dispatch_status) = if num_headers > 0 {
        (raw::header_value(MapType::HttpCallResponseHeaders, ":status"), None)
    } else {
        (
            None,
            raw::header_value(MapType::HttpCallResponseHeaders, ":dispatch_status"),
        )
    };
    let body = if body_size > 0 {
        raw::buffer(BufferType::HttpCallResponseBody, body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    (status, dispatch_status, body)
}

fn log(level: LogLevel, message: &str) {
    raw::log(level, message);
}

fn to_log_level(level: Level) -> LogLevel {
    match level {
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

/// The host clock in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    raw::current_time_ns() / 1_000_000
}

/// The property paths the glue reads, serialized as the ABI has them: segments joined by NUL
/// (proxy-wasm SDK 0.2.5 `serialize_property_path`), so no path is built per request.
const NGX_REQUEST_METHOD: &str = "ngx\0request_method";
const NGX_REQUEST_ID: &str = "ngx\0request_id";

/// Defines every metric under `prefix`; a metric the host refuses is logged and left out.
fn define_metrics(prefix: &str) -> MetricIds {
    let mut ids: MetricIds = [None; Metric::ALL.len()];
    for (id, metric) in ids.iter_mut().zip(Metric::ALL) {
        let name = metrics::full_name(prefix, metric);
        match raw::define_metric(metric.kind().abi_type(), &name) {
            Ok(n) => *id = Some(n),
            Err(status) => log(
                LogLevel::Warn,
                &format!("kafka-upstream: the host refused metric {name} (status {status}); it is not reported"),
            ),
        }
    }
    ids
}

/// Applies one update to a defined metric, only with the operation its type allows: counters are
/// incremented (never by a negative amount), gauges set and histograms sampled with
/// `proxy_record_metric`. Kong traps on any other combination and on an unknown id. A gauge is
/// set, never incremented, so with several VMs (Envoy workers, nginx workers) it shows one VM's
/// value.
fn apply(ids: &MetricIds, update: MetricUpdate) {
    if !update.fits_its_metric() {
        return;
    }
    let Some(id) = ids[update.metric().index()] else {
        return;
    };
    match update {
        MetricUpdate::Add(_, n) => raw::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX)),
        MetricUpdate::Set(_, v) | MetricUpdate::Record(_, v) => raw::record_metric(id, v),
    }
}

/// Writes the producer's collected log lines and applies its metric updates.
fn report(producer: &RefCell<Producer>, metrics: Option<&MetricIds>) {
    let (logs, updates) = {
        let mut p = producer.borrow_mut();
        (p.take_logs(), p.take_metric_updates())
    };
    for (level, line) in logs {
        log(to_log_level(level), &line);
    }
    if let Some(ids) = metrics {
        for update in updates {
            apply(ids, update);
        }
    }
}

/// [`Host`] over the proxy-wasm host calls of the current context, with the metrics its updates
/// go to and the registrar of the calls it dispatches (their replies come back to this context).
struct Glue<'g, 'c> {
    metrics: Option<&'g MetricIds>,
    calls: &'g mut Calls<'c>,
}

impl<'g, 'c> Glue<'g, 'c> {
    /// The root context's: its producer's metric updates are applied by [`report`] instead.
    fn root(calls: &'g mut Calls<'c>) -> Self {
        Glue { metrics: None, calls }
    }
}

/// Starts an HTTP call from the context of `calls` and registers it there.
fn dispatch(
    calls: &mut Calls<'_>,
    upstream: &str,
    headers: &[u8],
    body: &[u8],
    timeout_ms: u32,
) -> Result<u32, DispatchError> {
    match raw::http_call(upstream, headers, body, timeout_ms) {
        Ok(token) => {
            if let Some(earlier) = calls.register(token) {
                log(
                    LogLevel::Error,
                    &format!("kafka-upstream: the host gave call token {token} again while context {earlier} still waits for its reply"),
                );
            }
            Ok(token)
        }
        Err(status::BAD_ARGUMENT) => Err(DispatchError::BadArgument),
        Err(status::INTERNAL_FAILURE) => Err(DispatchError::InternalFailure),
        Err(other) => Err(DispatchError::Other(other)),
    }
}

impl Host for Glue<'_, '_> {
    fn dispatch(&mut self, upstream: &str, headers: &[u8], body: &[u8], timeout_ms: u32) -> Result<u32, DispatchError> {
        dispatch(self.calls, upstream, headers, body, timeout_ms)
    }

    fn request_body(&mut self, size: usize) -> Option<Vec<u8>> {
        raw::buffer(BufferType::HttpRequestBody, size).ok().flatten()
    }

    fn respond(&mut self, status: u32, headers: &[u8], body: &[u8]) {
        let refused = raw::send_local_response(status, headers, body);
        if refused != status::OK {
            log(
                LogLevel::Error,
                &format!("kafka-upstream: cannot send the {status} answer: status {refused}"),
            );
        }
    }

    fn log(&mut self, level: Level, message: &str) {
        log(to_log_level(level), message);
    }

    fn now_ms(&mut self) -> u64 {
        now_ms()
    }

    /// Kong's ngx_wasm_module serves nginx variables as `ngx.*` properties, and
    /// `$request_method` exists for every HTTP request nginx parsed (ngx_proxy_wasm_properties.c:
    /// `ngx.*` paths go to `ngx_proxy_wasm_properties_get_ngx`); Envoy has no `ngx` namespace
    /// (NOT_FOUND). Asked for each request, from its own context: a root context cannot tell
    /// (Kong answers every dotted property there with an error, "cannot get scoped properties
    /// outside of a request", ngx_proxy_wasm_properties.c:1105-1113), and an answer kept for the
    /// VM would let one odd request decide for every later one.
    fn host_kind(&mut self) -> HostKind {
        match raw::property(NGX_REQUEST_METHOD) {
            Some(_) => HostKind::Kong,
            None => HostKind::Envoy,
        }
    }

    fn metric(&mut self, update: MetricUpdate) {
        if let Some(ids) = self.metrics {
            apply(ids, update);
        }
    }

    /// nginx's `$request_id` through ngx_wasm_module's `ngx.*` properties (see
    /// [`Host::request_id`]); an error status reads as none.
    fn request_id(&mut self) -> Option<Vec<u8>> {
        raw::property(NGX_REQUEST_ID)
    }
}

/// The proxy-wasm statuses the glue tells apart (spec ABI 0.2.1 "Status").
mod status {
    pub(super) const OK: u32 = 0;
    pub(super) const NOT_FOUND: u32 = 1;
    pub(super) const BAD_ARGUMENT: u32 = 2;
    pub(super) const INTERNAL_FAILURE: u32 = 10;
}

/// Log levels as the ABI numbers them (`proxy_log`).
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
enum LogLevel {
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// The header maps the glue reads (`proxy_get_header_map_*`).
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
enum MapType {
    HttpRequestHeaders = 0,
    HttpCallResponseHeaders = 6,
}

/// The buffers the glue reads (`proxy_get_buffer_bytes`).
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
enum BufferType {
    HttpRequestBody = 0,
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

/// `Continue`, what a callback with nothing to decide returns.
const CONTINUE: u32 = 0;

/// What a request callback returns (`Continue` 0, `Pause` 1).
fn action_code(action: Action) -> u32 {
    match action {
        Action::Continue => CONTINUE,
        Action::Pause => 1,
    }
}

thread_local! {
    /// Every context of the VM. A callback never runs inside another (the host calls the guest
    /// only between callbacks; the one export a host call re-enters, `proxy_on_memory_allocate`,
    /// does not touch it), so the table is borrowed once per callback. Envoy holds back a
    /// callout's reply that arrives while the guest is running (a connection failing inside
    /// `proxy_dispatch_http_call`) until the callback returns: `Context::onHttpCallSuccess` and
    /// `onHttpCallFailure` defer themselves with `addAfterVmCallAction` when
    /// `proxy_wasm::current_context_` is set (envoy source/extensions/common/wasm/context.cc).
    static CONTEXTS: RefCell<ContextTable<Root, Request>> = RefCell::new(ContextTable::new());
}

/// Runs `f` on the context table.
fn with_contexts<T>(f: impl FnOnce(&mut ContextTable<Root, Request>) -> T) -> T {
    CONTEXTS.with(|table| f(&mut table.borrow_mut()))
}

/// Logs a callback for a context the host never created (or already deleted).
fn unknown_context(callback: &str, context_id: u32) {
    log(
        LogLevel::Error,
        &format!("kafka-upstream: {callback} for unknown context {context_id} ignored"),
    );
}

/// Runs a request callback on stream `context_id`; `Continue` for an unknown one.
fn on_stream(callback: &str, context_id: u32, f: impl FnOnce(&mut Request, &mut Calls<'_>) -> Action) -> u32 {
    let action = with_contexts(|table| {
        table
            .stream(context_id)
            .map(|(request, mut calls)| f(request, &mut calls))
    });
    match action {
        Some(action) => action_code(action),
        None => {
            unknown_context(callback, context_id);
            CONTINUE
        }
    }
}

/// Runs a callback on root context `context_id`; `None` for an unknown one (logged).
fn on_root<T>(callback: &str, context_id: u32, f: impl FnOnce(&mut Root, &mut Calls<'_>) -> T) -> Option<T> {
    let result = with_contexts(|table| table.root_mut(context_id).map(|(root, mut calls)| f(root, &mut calls)));
    if result.is_none() {
        unknown_context(callback, context_id);
    }
    result
}

/// The ABI version this module speaks (its presence is the declaration).
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory for a value the host returns: `size` bytes the glue takes ownership of when the host
/// call returns (`Vec::from_raw_parts` with exactly that length and capacity, in `raw`), so it
/// is allocated as a boxed slice of exactly `size` bytes.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut memory: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: `MaybeUninit` needs no initialisation, and the capacity is `size`.
    unsafe { memory.set_len(size) };
    Box::into_raw(memory.into_boxed_slice()).cast::<u8>()
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    let created = with_contexts(|table| table.create(context_id, root_context_id, |_| Root::new(), Root::new_request));
    match created {
        Ok(()) => {}
        Err(CreateError::Duplicate) => log(
            LogLevel::Error,
            &format!("kafka-upstream: the host created context {context_id} twice; the second is ignored"),
        ),
        Err(CreateError::UnknownRoot) => log(
            LogLevel::Error,
            &format!("kafka-upstream: the host created context {context_id} for unknown root context {root_context_id}; it is ignored"),
        ),
    }
}

/// Nothing to do at VM start (the configuration comes with `proxy_on_configure`).
#[no_mangle]
pub extern "C" fn proxy_on_vm_start(context_id: u32, _vm_configuration_size: usize) -> bool {
    on_root("proxy_on_vm_start", context_id, |_, _| true).unwrap_or(false)
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, _plugin_configuration_size: usize) -> bool {
    on_root("proxy_on_configure", context_id, |root, _| root.on_configure()).unwrap_or(false)
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    on_root("proxy_on_tick", context_id, |root, calls| root.on_tick(calls));
}

/// The filter uses no shared queue: nothing to do.
#[no_mangle]
pub extern "C" fn proxy_on_queue_ready(context_id: u32, _queue_id: u32) {
    on_root("proxy_on_queue_ready", context_id, |_, _| ());
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _num_headers: usize, end_of_stream: u32) -> u32 {
    on_stream("proxy_on_request_headers", context_id, |request, calls| {
        request.on_request_headers(calls, end_of_stream != 0)
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(context_id: u32, body_size: usize, end_of_stream: u32) -> u32 {
    on_stream("proxy_on_request_body", context_id, |request, calls| {
        request.on_request_body(calls, body_size, end_of_stream != 0)
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(context_id: u32, _num_trailers: usize) -> u32 {
    on_stream("proxy_on_request_trailers", context_id, |request, calls| {
        request.on_request_trailers(calls)
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context_id: u32, _num_headers: usize, _end_of_stream: u32) -> u32 {
    on_stream("proxy_on_response_headers", context_id, |request, calls| {
        request.on_response_headers(calls)
    })
}

/// The response body passes untouched.
#[no_mangle]
pub extern "C" fn proxy_on_response_body(context_id: u32, _body_size: usize, _end_of_stream: u32) -> u32 {
    on_stream("proxy_on_response_body", context_id, |_, _| Action::Continue)
}

/// The response trailers pass untouched.
#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(context_id: u32, _num_trailers: usize) -> u32 {
    on_stream("proxy_on_response_trailers", context_id, |_, _| Action::Continue)
}

/// A call's reply goes to the context that dispatched it, made the effective context first (as
/// the SDK did: a host may call this on the root context, and the reply's host calls, such as
/// a request's local answer, act on the effective one). A refused switch is logged and the
/// reply still delivered: Envoy and ngx_wasm_module call it on the dispatching context anyway.
#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    _context_id: u32,
    token_id: u32,
    num_headers: usize,
    body_size: usize,
    _num_trailers: usize,
) {
    with_contexts(|table| {
        let Some(context_id) = table.take_call(token_id) else {
            log(
                LogLevel::Error,
                &format!("kafka-upstream: reply to unknown call {token_id} ignored"),
            );
            return;
        };
        // Its context was deleted with the call in flight (take_call forgot it then), so a
        // context is found here unless the host broke the contract.
        let Some((context, mut calls)) = table.get(context_id) else {
            return;
        };
        let switched = raw::set_effective_context(context_id);
        if switched != status::OK {
            log(
                LogLevel::Error,
                &format!("kafka-upstream: the host refused to make context {context_id} effective for the reply to call {token_id} (status {switched})"),
            );
        }
        match context {
            Context::Stream(request) => request.on_http_call_response(&mut calls, token_id, num_headers, body_size),
            Context::Root(root) => root.on_http_call_response(token_id, num_headers, body_size),
        }
    });
}

/// A stream is done at once; a root decides (see [`Root::on_done`]).
#[no_mangle]
pub extern "C" fn proxy_on_done(context_id: u32) -> bool {
    let done = with_contexts(|table| match table.get(context_id) {
        Some((Context::Stream(_), _)) => Some(true),
        Some((Context::Root(root), mut calls)) => Some(root.on_done(&mut calls)),
        None => None,
    });
    done.unwrap_or_else(|| {
        unknown_context("proxy_on_done", context_id);
        true
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_log(context_id: u32) {
    let known = with_contexts(|table| match table.get(context_id) {
        Some((Context::Stream(request), mut calls)) => {
            request.on_log(&mut calls);
            true
        }
        Some((Context::Root(_), _)) => true,
        None => false,
    });
    if !known {
        unknown_context("proxy_on_log", context_id);
    }
}

/// Drops the context (a root's [`Drop`] reports what it still held) and forgets its calls.
#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    // Dropped outside the table's borrow.
    let removed: Option<Removed<Root, Request>> = with_contexts(|table| table.delete(context_id));
    if removed.is_none() {
        unknown_context("proxy_on_delete", context_id);
    }
}

/// The host calls, each status handled by the caller (the imports of module `env`, spec ABI
/// 0.2.1). A value the host returns lives in memory it obtained from
/// [`proxy_on_memory_allocate`], which the caller then owns.
mod raw {
    use super::*;

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize)
            -> u32;
        fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_buffer_data: *mut *mut u8,
            return_buffer_size: *mut usize,
        ) -> u32;
        fn proxy_http_call(
            upstream_data: *const u8,
            upstream_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            body_data: *const u8,
            body_size: usize,
            trailers_data: *const u8,
            trailers_size: usize,
            timeout_ms: u32,
            return_token: *mut u32,
        ) -> u32;
        fn proxy_set_effective_context(context_id: u32) -> u32;
        fn proxy_done() -> u32;
        fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
        fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
        fn proxy_send_local_response(
            status_code: u32,
            status_code_details_data: *const u8,
            status_code_details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
        fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
        fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    }

    /// The `size` bytes the host wrote at `data` for a call that answered OK.
    ///
    /// # Safety
    /// `data` is null or was returned by the host with `size`: memory it obtained from this
    /// module's `proxy_on_memory_allocate(size)`, a boxed slice of exactly `size` bytes, not
    /// owned by anything else.
    unsafe fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
        if data.is_null() {
            None
        } else {
            // SAFETY: as the caller guarantees: allocated by the global allocator with this
            // length and capacity, and owned by no one else.
            Some(unsafe { Vec::from_raw_parts(data, size, size) })
        }
    }

    /// The value of header `key` in `map`, or `None` for any non-OK status (not found, or no such
    /// map right now); OK with no data is an empty value.
    pub(super) fn header_value(map: MapType, key: &str) -> Option<Vec<u8>> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: key pointer/length describe a live &str; the out-pointers are valid locals.
        let status = unsafe { proxy_get_header_map_value(map as u32, key.as_ptr(), key.len(), &mut data, &mut size) };
        if status != status::OK {
            return None;
        }
        // SAFETY: OK: the host returned `data`/`size` (see `owned`).
        Some(unsafe { owned(data, size) }.unwrap_or_default())
    }

    /// The serialized pairs of header map `map`; empty when the host has none (or refuses).
    pub(super) fn header_map(map: MapType) -> Vec<u8> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: the out-pointers are valid locals.
        let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
        if status != status::OK {
            return Vec::new();
        }
        // SAFETY: OK: the host returned `data`/`size` (see `owned`).
        unsafe { owned(data, size) }.unwrap_or_default()
    }

    /// Up to `max` bytes of buffer `buffer` from its start: `Ok(None)` when the host has none
    /// (NOT_FOUND, or OK with no data), `Err` with any other status.
    pub(super) fn buffer(buffer: BufferType, max: usize) -> Result<Option<Vec<u8>>, u32> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: plain integers and valid out-pointers to locals.
        let status = unsafe { proxy_get_buffer_bytes(buffer as u32, 0, max, &mut data, &mut size) };
        match status {
            // SAFETY: OK: the host returned `data`/`size` (see `owned`).
            status::OK => Ok(unsafe { owned(data, size) }),
            status::NOT_FOUND => Ok(None),
            other => Err(other),
        }
    }

    /// Starts an HTTP call (no trailers); its token, or the host's status.
    pub(super) fn http_call(upstream: &str, headers: &[u8], body: &[u8], timeout_ms: u32) -> Result<u32, u32> {
        // The empty trailer map: a count of 0.
        const NO_TRAILERS: [u8; 4] = [0; 4];
        let mut token: u32 = 0;
        // SAFETY: every pointer/length pair describes a live slice; the out-pointer is a valid
        // local.
        let status = unsafe {
            proxy_http_call(
                upstream.as_ptr(),
                upstream.len(),
                headers.as_ptr(),
                headers.len(),
                body.as_ptr(),
                body.len(),
                NO_TRAILERS.as_ptr(),
                NO_TRAILERS.len(),
                timeout_ms,
                &mut token,
            )
        };
        if status == status::OK {
            Ok(token)
        } else {
            Err(status)
        }
    }

    /// Makes `context_id` the context of the following host calls; the host's status.
    pub(super) fn set_effective_context(context_id: u32) -> u32 {
        // SAFETY: plain integer argument.
        unsafe { proxy_set_effective_context(context_id) }
    }

    /// Tells the host the root context finished its shutdown; the host's status.
    pub(super) fn done() -> u32 {
        // SAFETY: no arguments.
        unsafe { proxy_done() }
    }

    /// The value of property `name` (a serialized path: its segments joined by NUL), or `None`
    /// for any non-OK status or no data.
    pub(super) fn property(name: &str) -> Option<Vec<u8>> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: pointer/length describe a live &str and the out-pointers are valid locals.
        let status = unsafe { proxy_get_property(name.as_ptr(), name.len(), &mut data, &mut size) };
        if status != status::OK {
            return None;
        }
        // SAFETY: OK: the host returned `data`/`size` (see `owned`).
        unsafe { owned(data, size) }
    }

    /// The host clock in nanoseconds since the Unix epoch; 0 when the host refuses.
    pub(super) fn current_time_ns() -> u64 {
        let mut ns: u64 = 0;
        // SAFETY: the out-pointer is a valid local.
        let status = unsafe { proxy_get_current_time_nanoseconds(&mut ns) };
        if status == status::OK {
            ns
        } else {
            0
        }
    }

    /// Sends the local response (no status details, no gRPC status); returns the host's status
    /// (0 = OK).
    pub(super) fn send_local_response(status: u32, serialized_headers: &[u8], body: &[u8]) -> u32 {
        // SAFETY: every pointer/length pair describes a live slice (the empty details: a null
        // pointer with length 0).
        unsafe {
            proxy_send_local_response(
                status,
                std::ptr::null(),
                0,
                body.as_ptr(),
                body.len(),
                serialized_headers.as_ptr(),
                serialized_headers.len(),
                -1,
            )
        }
    }

    /// Logs without ever panicking (a refused line is dropped).
    pub(super) fn log(level: LogLevel, message: &str) {
        // SAFETY: pointer/length describe a live &str.
        unsafe {
            proxy_log(level as u32, message.as_ptr(), message.len());
        }
    }

    /// Sets the root context's tick period; returns the host's status (0 = OK).
    pub(super) fn set_tick_period(period_ms: u32) -> u32 {
        // SAFETY: plain integer argument.
        unsafe { proxy_set_tick_period_milliseconds(period_ms) }
    }

    /// Defines a metric (`kind`: 0 counter, 1 gauge, 2 histogram); its id, or the host's status.
    pub(super) fn define_metric(kind: u32, name: &str) -> Result<u32, u32> {
        let mut id: u32 = 0;
        // SAFETY: pointer/length describe a live &str; the out-pointer is a valid local.
        let status = unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
        if status == status::OK {
            Ok(id)
        } else {
            Err(status)
        }
    }

    /// Increments a counter; a refusal is ignored (the metric is informative).
    pub(super) fn increment_metric(id: u32, delta: i64) {
        // SAFETY: plain integer arguments.
        unsafe {
            proxy_increment_metric(id, delta);
        }
    }

    /// Sets a gauge or records a histogram sample; a refusal is ignored.
    pub(super) fn record_metric(id: u32, value: u64) {
        // SAFETY: plain integer arguments.
        unsafe {
            proxy_record_metric(id, value);
        }
    }
}
