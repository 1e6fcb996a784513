//! `serve`: the filter as a real HTTP/1.1 gateway.
//!
//! A tokio/hyper server accepts requests ([`edge`] bounds what a client may cost), picks the
//! route by longest path prefix and hands the request to a worker thread that owns one VM per
//! filter (`worker`), round-robin; the answer comes back on a oneshot channel. The routes of an
//! Envoy connection manager share its one wasm filter, so one VM and root context per thread;
//! a Kong route runs its filter chain, every filter of one module on that module's one VM per
//! thread, each with a root context of its own ([`config::instance_plan`]). The body is read
//! within the edge's limits (over `max_request_bytes`, malformed or too slow: 413, 400, 408) as
//! the profile's host reads it ([`crate::profile::BodyDelivery`]): for Envoy the request goes to
//! the worker at its first piece of body and the rest follows as it arrives (a refusal then ends
//! the filter's stream; an answer before the end leaves the rest unread); for Kong the body is
//! read whole first, so the edge decides before the filter sees the request. For a profile whose
//! filter sees the headers as the client wrote them (Kong), each HTTP/1 connection's bytes also
//! go through a [`heads::HeadRecorder`] that recovers every request's header names in wire order
//! and case. The root context lives for the VM's
//! lifetime and serves every request, ticks run on real time, and callouts become real HTTP
//! requests ([`upstream`]). The `.wasm` files are watched: a changed module is loaded (from
//! the precompiled cache when possible) and new requests get it while in-flight ones finish on
//! the old VM. An optional admin listener reports the module hashes, counters and metrics.
//! An Envoy bootstrap's WasmServices run beside the routes, each VM on a thread of its own
//! (`service`). Where the profile's host also runs each filter's root context on a main thread
//! (Envoy, [`crate::profile::HostBehaviour::runs_main_thread_root`]), one more worker, which
//! gets no requests, holds a VM per filter for it (`worker::Thread::Main`).

pub mod config;
pub mod edge;
pub mod grpc;
pub mod heads;
pub mod observe;
mod service;
pub mod upstream;
pub mod wire;
mod worker;

use crate::engine::{Engine, Module};
use crate::limits::EdgeLimits;
use crate::profile::{BodyDelivery, EdgeFacts, Profile};
use crate::state::{Shared, StreamInfo};
use config::{Deployment, Route};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use wire::{Framing, WireBody};
use worker::{Command, GatewayResponse, Incoming as WorkerRequest, Thread, Worker};

/// Counters the admin endpoint reports.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Callouts started.
    pub callouts: AtomicU64,
    /// Module reloads applied.
    pub reloads: AtomicU64,
}

/// How to run a gateway.
pub struct ServeOptions {
    /// Routes, upstreams and profile.
    pub deployment: Deployment,
    /// Where to listen for traffic.
    pub listen: SocketAddr,
    /// Where to listen for the admin endpoint (`GET /status`, `GET /stats`), if anywhere.
    pub admin_listen: Option<SocketAddr>,
    /// Request worker threads, each with its own VMs (the Envoy profile's main thread, which
    /// takes no requests, comes on top).
    pub workers: usize,
    /// Timeouts, the connection cap and the body size limit of the listener.
    pub edge: EdgeLimits,
    /// How often the `.wasm` files are checked for changes; `None` disables hot reload.
    pub reload_poll: Option<Duration>,
    /// The engine (and its module cache).
    pub engine: Engine,
    /// Write one access log line per request on stdout ([`observe::AccessLogLine`]).
    pub access_log: bool,
}

impl ServeOptions {
    /// `deployment` on an ephemeral loopback port, one worker, no admin listener, the default
    /// edge limits, no hot reload and no access log. Change fields with struct update syntax.
    pub fn new(deployment: Deployment, engine: Engine) -> ServeOptions {
        ServeOptions {
            deployment,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: None,
            workers: 1,
            edge: EdgeLimits::default(),
            reload_poll: None,
            engine,
            access_log: false,
        }
    }
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why (not a `source`: the message already says it, once).
        reason: std::io::Error,
    },
    /// A filter module could not be loaded.
    #[error("route {route}: {reason}")]
    Module {
        /// The route.
        route: String,
        /// Why.
        reason: crate::HostError,
    },
    /// A filter refused to start with its route's configuration: `proxy_on_vm_start` or
    /// `proxy_on_configure` returned false or trapped. Envoy rejects such a configuration
    /// before it serves (proxy-wasm-cpp-host wasm.cc `WasmHandleBase::canary` starts and
    /// configures a clone first; ENVOY-1.40 exits on a trap in `on_configure`); Kong's Lua layer
    /// gets the error back when it loads the filter chain (ngx_wasm_module
    /// src/common/lua/ngx_wasm_lua_ffi.c:112-118).
    #[error("route {route}: {reason}")]
    FilterStart {
        /// The route.
        route: String,
        /// What failed, with the filter's own error lines.
        reason: String,
    },
    /// No routes.
    #[error("nothing to serve: no routes")]
    NoRoutes,
    /// A route has several filters ([`config::Route::chained`]) under a profile that hands the
    /// filter the body chunk by chunk: serve runs a chain only as ngx_wasm_module does, the
    /// whole body once (Kong).
    #[error(
        "route {route}: a filter chain needs a profile that reads the whole request body first (the kong profile)"
    )]
    ChainNeedsWholeBody {
        /// The route.
        route: String,
    },
}

#[derive(Debug, Clone, Serialize)]
struct RouteStatus {
    name: String,
    path_prefix: String,
    filter: PathBuf,
    sha256: String,
    /// The filters that run after `filter` on this route (the rest of a Kong filter chain).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    chained: Vec<ChainedStatus>,
}

/// A later filter of a route's chain, with the sha256 of the module it runs now.
#[derive(Debug, Clone, Serialize)]
struct ChainedStatus {
    filter: PathBuf,
    sha256: String,
}

struct Shared_ {
    profile: Profile,
    routes: Vec<Route>,
    /// The module of each of the workers' VM slots ([`config::instance_plan`]), in their order.
    vm_filters: Vec<PathBuf>,
    /// The sha256 of the module each filter file holds now (what a reload compares with).
    module_sha256: RwLock<BTreeMap<PathBuf, String>>,
    status: RwLock<Vec<RouteStatus>>,
    /// The request workers, round-robin.
    workers: Vec<Sender<Command>>,
    /// The main thread's worker, which takes no requests ([`Thread::Main`]), if the profile's
    /// host has one.
    main_thread: Option<Sender<Command>>,
    next_worker: AtomicUsize,
    next_request: AtomicU64,
    stats: Arc<Stats>,
    metrics: Arc<Shared>,
    edge: EdgeLimits,
    access_log: bool,
    generate_request_id: bool,
}

impl Shared_ {
    /// Every thread that runs the routes' VMs: the request workers and the main thread; what
    /// concerns every VM (a reload, the shutdown) goes to each.
    fn every_thread(&self) -> impl Iterator<Item = &Sender<Command>> {
        self.workers.iter().chain(self.main_thread.iter())
    }
}

/// A gateway that is running. Dropping it does not stop it: call [`RunningGateway::shutdown`].
pub struct RunningGateway {
    /// The traffic listener's address (useful with port 0).
    pub local_addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    done: oneshot::Receiver<()>,
}

impl RunningGateway {
    /// Stops accepting, lets in-flight requests finish and the filters' root contexts drain (as
    /// the profile's host does) within `EdgeLimits::drain_time`, then stops the workers.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
    }

    /// Waits until the gateway stops on its own (it does not, unless its workers die).
    pub async fn wait(self) {
        let _ = self.done.await;
    }

    /// A handle that stops the gateway when sent `true`.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Binds the listeners, loads the modules, starts the workers and serves until shut down.
pub async fn start(options: ServeOptions) -> Result<RunningGateway, ServeError> {
    let ServeOptions {
        deployment,
        listen,
        admin_listen,
        workers,
        edge,
        reload_poll,
        engine,
        access_log,
    } = options;
    if deployment.routes.is_empty() {
        return Err(ServeError::NoRoutes);
    }
    if deployment.profile.request_body_delivery() == crate::profile::BodyDelivery::Chunks {
        if let Some(route) = deployment.routes.iter().find(|r| !r.chained.is_empty()) {
            return Err(ServeError::ChainNeedsWholeBody {
                route: route.name.clone(),
            });
        }
    }
    let mut modules: BTreeMap<PathBuf, Module> = BTreeMap::new();
    for route in &deployment.routes {
        for filter in route.chain() {
            if !modules.contains_key(&filter.filter) {
                let module = engine.load_file(&filter.filter).map_err(|reason| ServeError::Module {
                    route: route.name.clone(),
                    reason,
                })?;
                tracing::info!(filter = %filter.filter.display(), sha256 = %module.sha256(), from_cache = module.loaded_from_cache(), "filter module loaded");
                modules.insert(filter.filter.clone(), module);
            }
        }
    }
    for (index, service) in deployment.services.iter().enumerate() {
        if !modules.contains_key(&service.filter) {
            let module = engine.load_file(&service.filter).map_err(|reason| ServeError::Module {
                route: service::label(index, service),
                reason,
            })?;
            modules.insert(service.filter.clone(), module);
        }
    }
    let plan = config::instance_plan(deployment.profile, &deployment.routes);
    // Once per VM slot, as the workers start it (its first route gives the VM's settings).
    for vm in &plan.vms {
        check_filter_starts(
            deployment.profile,
            &deployment.routes,
            vm,
            &deployment.upstreams,
            &modules[&vm.filter],
        )?;
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|reason| ServeError::Bind { addr: listen, reason })?;
    let local_addr = listener
        .local_addr()
        .map_err(|reason| ServeError::Bind { addr: listen, reason })?;
    let admin = match admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|reason| ServeError::Bind { addr, reason })?,
        ),
        None => None,
    };
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());

    let stats = Arc::new(Stats::default());
    let metrics = Shared::new();
    let upstreams = Arc::new(deployment.upstreams.clone());
    let client = upstream::Client::default();
    let service_context = service::ServiceContext {
        profile: deployment.profile,
        upstreams: upstreams.clone(),
        client: client.clone(),
        runtime: tokio::runtime::Handle::current(),
        shared: metrics.clone(),
    };
    let mut services = Vec::new();
    for (index, wasm_service) in deployment.services.iter().enumerate() {
        let started = service::start(
            index,
            wasm_service,
            &modules[&wasm_service.filter],
            workers,
            &service_context,
        );
        match started {
            Ok(running) => services.extend(running),
            Err(e) => {
                stop_services(services, std::time::Instant::now()).await;
                return Err(e);
            }
        }
    }
    let mut senders = Vec::new();
    let mut threads = Vec::new();
    // The request workers, then, where the profile's host has one, the main thread: it takes no
    // requests but runs each route's root context in a VM of its own, as Envoy's main thread
    // does (`HostBehaviour::runs_main_thread_root`), on the same worker loop (start,
    // ticks, callouts, reloads, shutdown).
    let main_thread = deployment.profile.runs_main_thread_root();
    let threads_wanted = (0..workers.max(1))
        .map(Thread::Worker)
        .chain(main_thread.then_some(Thread::Main));
    let mut main_sender = None;
    for thread in threads_wanted {
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = Worker {
            thread,
            profile: deployment.profile,
            upstreams: upstreams.clone(),
            runtime: tokio::runtime::Handle::current(),
            commands: tx.clone(),
            stats: stats.clone(),
            client: client.clone(),
            shared: metrics.clone(),
            client_body_buffer_bytes: deployment.client_body_buffer_bytes,
            drain_time: edge.drain_time,
        };
        let worker_plan = worker::WorkerPlan {
            routes: deployment.routes.clone(),
            chains: plan.chains.clone(),
            slots: (plan.vms.iter())
                .map(|vm| worker::SlotPlan {
                    name: (vm.routes.iter().map(|&i| deployment.routes[i].name.as_str()))
                        .collect::<Vec<_>>()
                        .join(","),
                    settings: deployment.routes[vm.routes[0]].clone(),
                    roots: (vm.roots.iter())
                        .filter_map(|&(route, position)| deployment.routes[route].chain_filter(position))
                        .collect(),
                    module: modules[&vm.filter].clone(),
                })
                .collect(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("host-sim-worker-{thread}"))
            .spawn(move || worker.run(worker_plan, rx))
            .expect("spawning a worker thread");
        match thread {
            Thread::Worker(_) => senders.push(tx),
            Thread::Main => main_sender = Some(tx),
        }
        threads.push(handle);
    }
    let status = deployment
        .routes
        .iter()
        .map(|r| RouteStatus {
            name: r.name.clone(),
            path_prefix: r.path_prefix.clone(),
            filter: r.filter.clone(),
            sha256: modules[&r.filter].sha256().to_string(),
            chained: (r.chained.iter())
                .map(|c| ChainedStatus {
                    filter: c.filter.clone(),
                    sha256: modules[&c.filter].sha256().to_string(),
                })
                .collect(),
        })
        .collect();
    let shared = Arc::new(Shared_ {
        profile: deployment.profile,
        routes: deployment.routes.clone(),
        vm_filters: plan.vms.iter().map(|vm| vm.filter.clone()).collect(),
        module_sha256: RwLock::new(
            (plan.vms.iter())
                .map(|vm| (vm.filter.clone(), modules[&vm.filter].sha256().to_string()))
                .collect(),
        ),
        status: RwLock::new(status),
        workers: senders,
        main_thread: main_sender,
        next_worker: AtomicUsize::new(0),
        next_request: AtomicU64::new(0),
        stats,
        metrics,
        edge,
        access_log,
        generate_request_id: deployment.generate_request_id,
    });
    let (stop, stop_rx) = watch::channel(false);
    if let Some(poll) = reload_poll {
        tokio::spawn(watch_modules(shared.clone(), engine.clone(), poll, stop_rx.clone()));
    }
    if let Some(admin) = admin {
        tokio::spawn(serve_admin(admin, shared.clone(), stop_rx.clone()));
    }
    let (done_tx, done) = oneshot::channel();
    tokio::spawn(async move {
        let deadline = serve_traffic(listener, local_addr, shared.clone(), stop_rx).await;
        for worker in shared.every_thread() {
            let _ = worker.send(Command::Shutdown { deadline });
        }
        stop_services(services, deadline).await;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        let _ = done_tx.send(());
    });
    Ok(RunningGateway {
        local_addr,
        admin_addr,
        stop,
        done,
    })
}

/// Shuts the WasmServices' root contexts down and waits for their threads (bounded by
/// `deadline`, which each service honours).
async fn stop_services(services: Vec<service::RunningService>, deadline: std::time::Instant) {
    for running in &services {
        let _ = running.commands.send(service::ServiceCommand::Shutdown { deadline });
    }
    let _ = tokio::task::spawn_blocking(move || {
        for running in services {
            let _ = running.thread.join();
        }
    })
    .await;
}

/// Starts a route's filter once, as the workers will, and fails when it does not come up
/// (Envoy's canary, [`ServeError::FilterStart`]). Its own metrics and shared data go to a
/// scratch state, not the gateway's.
fn check_filter_starts(
    profile: Profile,
    routes: &[Route],
    vm: &config::VmPlan,
    upstreams: &BTreeMap<String, SocketAddr>,
    module: &Module,
) -> Result<(), ServeError> {
    let settings = &routes[vm.routes[0]];
    let mut options = worker::vm_options(profile, settings, upstreams, Shared::new());
    let filters: Vec<(&Route, config::ChainedFilter)> = (vm.roots.iter())
        .filter_map(|&(route, position)| Some((&routes[route], routes[route].chain_filter(position)?)))
        .collect();
    if let Some((_, first)) = filters.first() {
        options.plugin_name = first.plugin_name.clone();
    }
    let mut vm = crate::Vm::start(module, options).map_err(|e| ServeError::FilterStart {
        route: settings.name.clone(),
        reason: format!("the filter failed to start: {e}"),
    })?;
    // Each filter's root context, in the order the workers create them.
    for (route, filter) in filters {
        let failure = match vm.create_root_context(&filter.root_id, &filter.config) {
            Ok(root) if !root.vm_start_ok => Some("proxy_on_vm_start returned false".to_string()),
            Ok(root) if !root.configure_ok => {
                Some("the filter rejected its configuration (proxy_on_configure returned false)".to_string())
            }
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        let Some(what) = failure else {
            continue;
        };
        // The filter says why in its log; its warnings and errors go with the message.
        let said: Vec<String> = vm
            .take_logs()
            .into_iter()
            .filter(|line| line.level >= crate::LogLevel::Warn)
            .map(|line| line.message)
            .filter(|message| !what.contains(message.as_str()))
            .collect();
        let reason = if said.is_empty() {
            what
        } else {
            format!("{what}: {}", said.join("; "))
        };
        return Err(ServeError::FilterStart {
            route: route.name.clone(),
            reason,
        });
    }
    Ok(())
}

/// Serves until told to stop, then stops accepting and lets the requests in flight finish within
/// the drain time. Returns the drain's deadline, which the workers' own shutdown shares.
async fn serve_traffic(
    listener: TcpListener,
    local: SocketAddr,
    shared: Arc<Shared_>,
    mut stop: watch::Receiver<bool>,
) -> std::time::Instant {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(shared.edge.max_connections.max(1)));
    let mut accept_failing = false;
    loop {
        tokio::select! {
            (stream, peer, permit) = edge::accept(&listener, &slots, &shared.edge, &mut accept_failing) => {
                let _ = stream.set_nodelay(true);
                let (io, clock, heads) = edge::TrackedIo::new(stream, shared.profile.request_headers_as_sent());
                let handler_shared = shared.clone();
                let handler_clock = clock.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let shared = handler_shared.clone();
                    let clock = handler_clock.clone();
                    // Taken as hyper hands the request over: one head per HTTP/1 request, in order.
                    let as_sent = headers_as_sent(&req, heads.as_deref());
                    async move {
                        let started = clock.request_started();
                        let answer = handle(req, shared, peer, local, started, as_sent).await;
                        clock.request_finished();
                        answer
                    }
                });
                // HTTP/1.1, or HTTP/2 with prior knowledge (h2c: a gRPC client's connection),
                // told apart by the connection preface as Envoy's `codec_type: AUTO` does.
                // HTTP/1.1: half-closed clients still get their answer, and a body cut short by
                // the client's EOF reaches the handler as an error (400) instead of a silent close.
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().half_close(true);
                let conn = builder.serve_connection(TokioIo::new(io), service).into_owned();
                let conn = graceful.watch(conn);
                let limits = shared.edge.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = conn => {}
                        expired = edge::watchdog(clock, limits) => {
                            tracing::debug!(%peer, ?expired, "connection closed by its edge timeout");
                        }
                    }
                    drop(permit);
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let deadline = std::time::Instant::now() + shared.edge.drain_time;
    tracing::info!(drain_time = ?shared.edge.drain_time, "shutting down: no new connections; requests in flight and the filters get the drain time to finish");
    if tokio::time::timeout_at(deadline.into(), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain time over with connections still open; they are closed");
    }
    deadline
}

fn json_response(status: StatusCode, body: &str) -> Response<WireBody> {
    let mut resp = Response::new(WireBody::exact(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// 16 random bytes for the `n`th request: the process's randomly keyed hasher over `n`, so
/// they differ between requests and processes.
fn request_random_bytes(n: u64) -> [u8; 16] {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(std::collections::hash_map::RandomState::new);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&keys.hash_one((n, 0u8)).to_be_bytes());
    bytes[8..].copy_from_slice(&keys.hash_one((n, 1u8)).to_be_bytes());
    bytes
}

/// The `n`th request's id as 32 hex digits of 16 random bytes, the shape of nginx's
/// `$request_id` and of Kong's `$kong_request_id` (lua-kong-nginx-module), which Kong sends as
/// `X-Kong-Request-Id` ([`crate::profile::EdgeFacts::request_id`]).
/// It is made for every response (the edge headers' facts), so it is written into one string
/// rather than a string per byte.
pub(super) fn hex_request_id(n: u64) -> String {
    lower_hex(&request_random_bytes(n))
}

/// `bytes` as lowercase hex digits, written into one string.
fn lower_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut hex = String::with_capacity(2 * bytes.len());
    for b in bytes {
        // Writing into a String cannot fail.
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// A random (version 4) UUID for the `n`th request, as Envoy's request ids are: 122 bits of
/// [`request_random_bytes`], so ids differ between requests and processes.
fn uuid_v4(n: u64) -> String {
    let mut bytes = request_random_bytes(n);
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex = lower_hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Why a request body was not accepted.
#[derive(Debug)]
enum BodyRefusal {
    /// Larger than `max_request_bytes` (declared or received).
    TooLarge,
    /// Malformed or cut short: a bad chunk, a missing last chunk, fewer bytes than declared.
    Malformed(String),
    /// Not complete within `request_timeout` of the request's first byte.
    TimedOut,
}

impl BodyRefusal {
    /// The answer, always closing the connection: what is left of the body cannot be trusted
    /// to end where the next request starts.
    fn response(&self) -> Response<WireBody> {
        let (status, body) = match self {
            BodyRefusal::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                r#"{"message":"Request size limit exceeded"}"#.to_string(),
            ),
            BodyRefusal::Malformed(why) => (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "message": format!("Bad request: the request body could not be read: {why}") })
                    .to_string(),
            ),
            BodyRefusal::TimedOut => (
                StatusCode::REQUEST_TIMEOUT,
                r#"{"message":"request timeout"}"#.to_string(),
            ),
        };
        let mut resp = json_response(status, &body);
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        resp
    }
}

/// Reads a whole request body within the edge's limits. A body refused before its end keeps
/// being read and discarded in the background for up to `lingering_time` (nginx's lingering
/// close): a client still sending then reads the answer instead of a connection reset.
async fn read_body(
    body: Incoming,
    headers: &hyper::HeaderMap,
    edge: &EdgeLimits,
    started: tokio::time::Instant,
) -> Result<Vec<u8>, BodyRefusal> {
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > edge.max_request_bytes as u64) {
        linger(body, edge.lingering_time);
        return Err(BodyRefusal::TooLarge);
    }
    let mut body = body;
    let mut bytes = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let deadline = started + edge.request_timeout;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyRefusal::TimedOut),
            Ok(None) => return Ok(bytes),
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => return Err(BodyRefusal::Malformed(e.to_string())),
        };
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > edge.max_request_bytes {
                linger(body, edge.lingering_time);
                return Err(BodyRefusal::TooLarge);
            }
            bytes.extend_from_slice(&data);
        }
    }
}

/// The request's `content-length`, when it has a readable one.
fn declared_length(headers: &hyper::HeaderMap) -> Option<u64> {
    headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Reads the start of a body the filter gets as it arrives: up to its first data, within the
/// edge's limits as [`read_body`] applies them. Returns that data and, unless the body ended
/// with it (or before any), the rest to stream ([`stream_body`]).
async fn read_body_start(
    body: Incoming,
    headers: &hyper::HeaderMap,
    edge: &EdgeLimits,
    started: tokio::time::Instant,
) -> Result<(Vec<u8>, Option<Incoming>), BodyRefusal> {
    if declared_length(headers).is_some_and(|n| n > edge.max_request_bytes as u64) {
        linger(body, edge.lingering_time);
        return Err(BodyRefusal::TooLarge);
    }
    let mut body = body;
    let deadline = started + edge.request_timeout;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyRefusal::TimedOut),
            Ok(None) => return Ok((Vec::new(), None)),
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => return Err(BodyRefusal::Malformed(e.to_string())),
        };
        if let Ok(data) = frame.into_data() {
            if data.len() > edge.max_request_bytes {
                linger(body, edge.lingering_time);
                return Err(BodyRefusal::TooLarge);
            }
            if !data.is_empty() {
                return Ok((data.to_vec(), Some(body)));
            }
        }
    }
}

/// Passes the rest of a streamed body to the worker as it arrives ([`Command::RequestBody`])
/// while waiting for the answer, within the edge's limits as [`read_body`] applies them:
/// a refusal ends the stream at the worker ([`Command::RequestAborted`]) and is the client's
/// answer. An answer before the body's end leaves the rest unread (lingering close).
async fn stream_body(
    mut body: Incoming,
    (route, key): (usize, u64),
    worker: &Sender<Command>,
    edge: &EdgeLimits,
    started: tokio::time::Instant,
    mut answer: oneshot::Receiver<GatewayResponse>,
    received: &mut u64,
) -> Result<Result<GatewayResponse, oneshot::error::RecvError>, BodyRefusal> {
    let deadline = started + edge.request_timeout;
    let refusal = loop {
        let frame = tokio::select! {
            biased;
            given = &mut answer => {
                linger(body, edge.lingering_time);
                return Ok(given);
            }
            frame = tokio::time::timeout_at(deadline, body.frame()) => frame,
        };
        match frame {
            Err(_) => break BodyRefusal::TimedOut,
            Ok(None) => {
                let _ = worker.send(Command::RequestBody {
                    route,
                    key,
                    data: Vec::new(),
                    end: true,
                });
                return Ok(answer.await);
            }
            Ok(Some(Err(e))) => break BodyRefusal::Malformed(e.to_string()),
            Ok(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if *received + data.len() as u64 > edge.max_request_bytes as u64 {
                    linger(body, edge.lingering_time);
                    break BodyRefusal::TooLarge;
                }
                *received += data.len() as u64;
                let _ = worker.send(Command::RequestBody {
                    route,
                    key,
                    data: data.to_vec(),
                    end: false,
                });
            }
        }
    };
    let _ = worker.send(Command::RequestAborted { route, key });
    Err(refusal)
}

/// Reads and discards the rest of `body` for at most `time`.
fn linger(mut body: Incoming, time: Duration) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(time, async { while let Some(Ok(_)) = body.frame().await {} }).await;
    });
}

/// An HTTP/1 request's headers as the client wrote them, from its connection's recorder
/// ([`heads`]; kept only for a profile whose filter sees them,
/// [`crate::profile::HostBehaviour::request_headers_as_sent`]). `None` over HTTP/2, whose
/// names are lower-case on the wire (RFC 9113 §8.2.2), and when the recorder has no head that
/// agrees with hyper's request (then it stops for the connection: hyper's view serves).
fn headers_as_sent(
    req: &Request<Incoming>,
    heads: Option<&Mutex<heads::HeadRecorder>>,
) -> Option<Vec<(String, String)>> {
    let heads = heads?;
    if !matches!(req.version(), Version::HTTP_10 | Version::HTTP_11) {
        return None;
    }
    let mut heads = heads.lock().ok()?;
    let head = heads.next_head()?;
    let ordered = heads::in_wire_order(&head, req.method(), req.uri(), req.headers());
    if ordered.is_none() {
        tracing::debug!(method = %head.method, target = %head.target, "a recorded request head does not agree with hyper's request: the connection's requests keep hyper's header names from here on");
        heads.lost_track();
    }
    ordered
}

/// Serves one request and, when asked for, writes its access log line. `as_sent`: the
/// request's headers as the client wrote them ([`headers_as_sent`]).
async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared_>,
    peer: SocketAddr,
    local: SocketAddr,
    started: tokio::time::Instant,
    as_sent: Option<Vec<(String, String)>>,
) -> Result<Response<WireBody>, std::io::Error> {
    if !shared.access_log {
        return route_request(req, &shared, (peer, local), started, as_sent, &mut Served::default()).await;
    }
    let start = SystemTime::now();
    let clock = std::time::Instant::now();
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let protocol = format!("{:?}", req.version());
    let mut served = Served::default();
    let result = route_request(req, &shared, (peer, local), started, as_sent, &mut served).await;
    let (status, sent) = match &result {
        Ok(resp) => (resp.status().as_u16(), resp.body().len()),
        Err(_) => (0, 0),
    };
    let line = observe::AccessLogLine {
        start,
        method: &method,
        path: &path,
        protocol: &protocol,
        status,
        received: served.received,
        sent,
        duration: clock.elapsed(),
        route: served.route.map(|i| shared.routes[i].name.as_str()),
    };
    // One write per line: lines of concurrent requests never interleave.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), format!("{line}\n").as_bytes());
    result
}

/// What [`route_request`] learned for the access log.
#[derive(Default)]
struct Served {
    received: u64,
    route: Option<usize>,
}

async fn route_request(
    req: Request<Incoming>,
    shared: &Shared_,
    (peer, local): (SocketAddr, SocketAddr),
    started: tokio::time::Instant,
    as_sent: Option<Vec<(String, String)>>,
    served: &mut Served,
) -> Result<Response<WireBody>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let Some(route) = shared
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| path.starts_with(&r.path_prefix))
        .max_by_key(|(_, r)| r.path_prefix.len())
        .map(|(i, _)| i)
    else {
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            r#"{"message":"no Route matched with those values"}"#,
        ));
    };
    served.route = Some(route);
    // A host that reads the body in pieces (Envoy) runs the filter from the request headers on
    // and hands it each piece as it arrives. A host that hands the filter the whole body once
    // (Kong: nginx reads it whole, `client_body_buffer_size` deciding whether it stays readable,
    // before ngx_wasm_module's body step; sources at `BodyDelivery::WholeOnce`) gets it read
    // whole first, so the edge's refusals and the spilled-body rule see the whole body before
    // the filter sees the request.
    let streamed = shared.profile.request_body_delivery() == BodyDelivery::Chunks;
    let read = if streamed {
        read_body_start(body, &parts.headers, &shared.edge, started).await
    } else {
        read_body(body, &parts.headers, &shared.edge, started)
            .await
            .map(|body| (body, None))
    };
    let (body, rest) = match read {
        Ok(read) => read,
        Err(refusal) => return Ok(refusal.response()),
    };
    let authority = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(String::from)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| local.to_string());
    let mut headers: Vec<(String, String)> = shared
        .profile
        .request_pseudo_header_order()
        .iter()
        .map(|name| {
            let value = match *name {
                ":method" => parts.method.as_str().to_string(),
                ":path" => path.clone(),
                ":authority" => shared.profile.request_authority(&authority, local.port()),
                _ => "http".to_string(),
            };
            (name.to_string(), value)
        })
        .collect();
    match as_sent {
        Some(as_sent) => headers.extend(as_sent),
        None => {
            for (name, value) in &parts.headers {
                headers.push((
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                ));
            }
        }
    }
    // What the host's codec and connection manager change before the filters run.
    let mut headers = shared.profile.downstream_request_headers(headers);
    served.received = body.len() as u64;
    let request_id = shared.next_request.fetch_add(1, Ordering::Relaxed);
    // ... and, unless told not to, an x-request-id (`Deployment::generate_request_id`).
    if shared.generate_request_id && !headers.iter().any(|(k, _)| k == "x-request-id") {
        headers.push(("x-request-id".to_string(), uuid_v4(request_id)));
    }
    let info = StreamInfo {
        source_address: peer.ip().to_string().into(),
        source_port: peer.port(),
        destination_address: local.ip().to_string().into(),
        destination_port: local.port(),
        protocol: format!("{:?}", parts.version).replace("HTTP/", "HTTP/").into(),
        request_id: format!("host-sim-{request_id:016x}").into(),
    };
    let (respond, answer) = oneshot::channel();
    let worker = shared.next_worker.fetch_add(1, Ordering::Relaxed) % shared.workers.len();
    let worker = &shared.workers[worker];
    let sent = worker.send(Command::Request(WorkerRequest {
        route,
        headers,
        body,
        info,
        respond,
        body_key: rest.as_ref().map(|_| request_id),
        request_key: request_id,
    }));
    if sent.is_err() {
        return Ok(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"message":"host-sim worker unavailable"}"#,
        ));
    }
    // However long the filter holds the request (a callout or gRPC call without a timeout, a
    // gRPC stream the server keeps open), the edge answers after `stream_idle_timeout` with
    // Envoy's 408 "stream timeout" and ends the filter's stream, which cancels its calls.
    let waited = tokio::time::timeout(shared.edge.stream_idle_timeout, async {
        match rest {
            None => Ok(answer.await),
            Some(rest) => {
                let received = &mut served.received;
                stream_body(
                    rest,
                    (route, request_id),
                    worker,
                    &shared.edge,
                    started,
                    answer,
                    received,
                )
                .await
            }
        }
    })
    .await;
    let answer = match waited {
        Ok(Ok(answer)) => answer,
        Ok(Err(refusal)) => return Ok(refusal.response()),
        Err(_) => {
            let _ = worker.send(Command::RequestAbandoned {
                route,
                request_key: request_id,
            });
            tracing::warn!(route = %shared.routes[route].name, "no answer from the filter within the stream idle timeout: 408");
            let mut resp = Response::new(WireBody::exact("stream timeout".to_string()));
            *resp.status_mut() = StatusCode::REQUEST_TIMEOUT;
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain"),
            );
            return Ok(resp);
        }
    };
    match answer {
        Ok(GatewayResponse {
            status,
            headers,
            body,
            framing,
            reason,
            origin,
            upstream_via,
            sent_upstream_at,
        }) => {
            // What passed through the filter goes out with the content-length the filter left,
            // stale or absent (then chunked), as the hosts send it ([`wire`]).
            let declared = match framing {
                Framing::Computed => None,
                Framing::AsFilterLeft => wire::declared_length(&headers),
            };
            let mut resp = Response::new(match framing {
                Framing::Computed => WireBody::exact(body),
                Framing::AsFilterLeft => WireBody::declared(body, declared),
            });
            // Envoy names itself on every response it sends, replacing any other `server`.
            let server = shared.profile.server_header();
            if let Some(server) = server {
                resp.headers_mut()
                    .insert(hyper::header::SERVER, hyper::header::HeaderValue::from_static(server));
            }
            *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            for (k, v) in headers {
                let length = k.eq_ignore_ascii_case("content-length");
                if k.starts_with(':') || k.eq_ignore_ascii_case("transfer-encoding") || (length && declared.is_none()) {
                    continue;
                }
                if server.is_some() && k.eq_ignore_ascii_case("server") {
                    continue;
                }
                if length && resp.headers().contains_key(hyper::header::CONTENT_LENGTH) {
                    continue;
                }
                if let (Ok(name), Ok(value)) = (
                    hyper::header::HeaderName::from_bytes(k.as_bytes()),
                    hyper::header::HeaderValue::from_str(&v),
                ) {
                    resp.headers_mut().append(name, value);
                }
            }
            // The host's own edge headers, after the filter (profile `edge_response_headers`).
            let arrived = started.into_std();
            let edge = EdgeFacts {
                origin,
                request_id: hex_request_id(request_id),
                upstream_via,
                sent_upstream_after: sent_upstream_at.map(|at| at.saturating_duration_since(arrived)),
                answered_after: arrived.elapsed(),
            };
            for (name, value, replace) in shared.profile.edge_response_headers(&edge) {
                let name = hyper::header::HeaderName::from_static(name);
                let Ok(value) = hyper::header::HeaderValue::from_str(&value) else {
                    continue;
                };
                if replace || !resp.headers().contains_key(&name) {
                    resp.headers_mut().insert(name, value);
                }
            }
            if let Some(phrase) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
                resp.extensions_mut().insert(phrase);
            }
            Ok(resp)
        }
        // The filter reset the stream: close the connection without an answer.
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "stream reset by the filter",
        )),
    }
}

async fn watch_modules(shared: Arc<Shared_>, engine: Engine, poll: Duration, mut stop: watch::Receiver<bool>) {
    let stamp = |path: &PathBuf| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
    };
    let mut files: BTreeMap<PathBuf, Option<(u64, SystemTime)>> = shared
        .vm_filters
        .iter()
        .map(|path| (path.clone(), stamp(path)))
        .collect();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
        for (path, last) in files.iter_mut() {
            let now = stamp(path);
            if now == *last || now.is_none() {
                continue;
            }
            *last = now;
            let Ok(bytes) = std::fs::read(path) else { continue };
            let engine = engine.clone();
            let loaded = tokio::task::spawn_blocking(move || engine.load_bytes(&bytes)).await;
            let module = match loaded {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    tracing::error!(filter = %path.display(), "reload refused, keeping the running module: {e}");
                    continue;
                }
                Err(_) => continue,
            };
            let unchanged = (shared.module_sha256.read())
                .map(|known| known.get(path).is_some_and(|sha| sha == module.sha256()))
                .unwrap_or(false);
            if unchanged {
                continue;
            }
            if let Ok(mut known) = shared.module_sha256.write() {
                known.insert(path.clone(), module.sha256().to_string());
            }
            tracing::info!(filter = %path.display(), sha256 = %module.sha256(), "filter module changed: new requests use it, in-flight ones finish on the old one");
            shared.stats.reloads.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut status) = shared.status.write() {
                for r in status.iter_mut() {
                    if &r.filter == path {
                        r.sha256 = module.sha256().to_string();
                    }
                    for c in r.chained.iter_mut().filter(|c| &c.filter == path) {
                        c.sha256 = module.sha256().to_string();
                    }
                }
            }
            // Once per VM slot whose filter this is (routes sharing a filter reload together).
            let slots = shared.vm_filters.iter().enumerate();
            for (index, _) in slots.filter(|(_, filter)| *filter == path) {
                for worker in shared.every_thread() {
                    let _ = worker.send(Command::Reload {
                        slot: index,
                        module: module.clone(),
                    });
                }
            }
        }
    }
}

async fn serve_admin(listener: TcpListener, shared: Arc<Shared_>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let shared = shared.clone();
                    async move { Ok::<_, std::io::Error>(admin(req.uri().path(), &shared)) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            _ = stop.changed() => return,
        }
    }
}

fn admin(path: &str, shared: &Shared_) -> Response<WireBody> {
    match path {
        "/status" => {
            let routes = shared.status.read().map(|s| s.clone()).unwrap_or_default();
            let body = serde_json::json!({
                "profile": shared.profile,
                "routes": routes,
                "workers": shared.workers.len(),
                "requests": shared.stats.requests.load(Ordering::Relaxed),
                "callouts": shared.stats.callouts.load(Ordering::Relaxed),
                "reloads": shared.stats.reloads.load(Ordering::Relaxed),
            });
            json_response(StatusCode::OK, &body.to_string())
        }
        "/stats" => json_response(
            StatusCode::OK,
            &serde_json::to_string(&shared.metrics.metrics()).unwrap_or_default(),
        ),
        "/metrics" => {
            let mut resp = Response::new(WireBody::exact(observe::prometheus_text(&shared.metrics.metrics())));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(observe::PROMETHEUS_CONTENT_TYPE),
            );
            resp
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            r#"{"message":"admin endpoints: /status, /stats, /metrics"}"#,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::uuid_v4;

    #[test]
    fn request_ids_are_version_4_uuids_that_differ() {
        let a = uuid_v4(1);
        let b = uuid_v4(2);
        assert_ne!(a, b);
        for id in [&a, &b] {
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                vec![8, 4, 4, 4, 12],
                "{id}"
            );
            assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{id}");
            assert!(parts[2].starts_with('4'), "{id}");
            assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "{id}");
        }
    }
}
