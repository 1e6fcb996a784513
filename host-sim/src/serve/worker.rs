//! A gateway worker: one OS thread that owns a VM per VM slot (wasmtime stores are driven from
//! one thread, as each Envoy worker owns its VM) and runs every request's stream lifecycle on
//! it. A slot is one filter instance and the filters (root contexts) on it
//! ([`super::config::instance_plan`]: Envoy's routes of one connection manager share one VM and
//! root context per thread; every Kong filter of one module runs on that module's VM, with a root
//! context of its own); each request keeps its route, whose fallback answers it. A route whose
//! chain has several filters (Kong) runs each request through all of them in chain order
//! ([`ChainRequest`]), a stream per filter. The worker is a transport around the VM's event API: it waits for a [`Command`] (a
//! request, a callout's reply, an upstream's response, a reload, shutdown) or for the next tick,
//! applies it to the one instance it concerns, runs what is due on each VM
//! ([`Vm::run_due_work`]: ticks on real time, queue notifications), and then settles only the
//! instances something happened on ([`Worker::settle`]): their guest logs go out, each call the
//! guest dispatched is sent once ([`Vm::take_new_calls`]) as a real HTTP request on the tokio
//! runtime with the time left of the deadline the VM set, and their streams that reached an end
//! are answered, closed or passed to the route's fallback (only the streams something happened on
//! are looked at, [`Vm::take_touched_streams`], never every stream in flight per event). Replies
//! come back as commands, so a request waiting for its callout never blocks the others on the
//! same worker.
//!
//! The main thread ([`Thread::Main`], Envoy profile) is a worker that gets no requests: its
//! roots start, tick, call out, are replaced on reload and shut down through the same loop.
//!
//! The request body goes to the filter in pieces of at most 64 KiB as the edge passes it on
//! ([`super`]): for Envoy as it arrives ([`Command::RequestBody`]), for Kong whole (the VM
//! delivers it once, at its end). Every response the client gets from the filter's side, its own
//! local reply included, passes through the filter's response callbacks as the profile's host
//! passes it, and keeps the framing the filter left ([`super::wire`]).

use super::config::{ChainedFilter, Fallback, Link, Route};
use super::grpc::GrpcCalls;
use super::upstream::{self, UpstreamRequest, UpstreamResponse};
use super::wire::Framing;
use super::Stats;
use crate::abi::LogLevel;
use crate::engine::Module;
use crate::profile::{Profile, ResponseOrigin};
use crate::state::{LocalResponse, StreamInfo};
use crate::vm::{GrpcReply, HttpCallReply, NewCall, Vm, VmOptions};
use crate::wasi::WasiOptions;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How much request body the filter gets per `on_request_body` (Envoy's HTTP/1 codec hands over
/// what each socket read returned; 64 KiB is a typical read).
const BODY_CHUNK: usize = 64 * 1024;

/// A response as the filters are handed it: headers (`:status` first) and body.
type HandedResponse = (Vec<(String, String)>, Vec<u8>);

/// The answer a worker gives the HTTP server for one request.
#[derive(Debug)]
pub struct GatewayResponse {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Whether host-sim computes the length, or the headers the filter left frame the body.
    pub framing: Framing,
    /// The status line's reason phrase when the host writes its own (a Kong local reply's
    /// `details`, [`crate::profile::HostBehaviour::local_reply_reason`]); `None`: the standard one.
    pub reason: Option<String>,
    /// Who made the response (the host's edge headers differ,
    /// [`crate::profile::HostBehaviour::edge_response_headers`]).
    pub origin: ResponseOrigin,
    /// The `Via` header of the upstream's response as the upstream sent it.
    pub upstream_via: Option<String>,
    /// When the request went upstream, if it did.
    pub sent_upstream_at: Option<std::time::Instant>,
}

/// A request handed to a worker.
pub struct Incoming {
    pub route: usize,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub info: StreamInfo,
    /// Dropped without an answer when the filter resets the stream.
    pub respond: oneshot::Sender<GatewayResponse>,
    /// Set when `body` is only the start of a body that follows as [`Command::RequestBody`]
    /// under this key (a host that reads the body in pieces, [`crate::profile::BodyDelivery::Chunks`]).
    pub body_key: Option<u64>,
    /// The request's own key (unique in the gateway), for [`Command::RequestAbandoned`].
    pub request_key: u64,
}

/// What a worker reacts to.
pub enum Command {
    Request(Incoming),
    /// More of a streamed request body ([`Incoming::body_key`]); `end` after the last of it.
    RequestBody {
        route: usize,
        key: u64,
        data: Vec<u8>,
        end: bool,
    },
    /// The edge refused the rest of a streamed body (400, 408, 413) and answers the client
    /// itself: the stream ends without the filter's answer.
    RequestAborted {
        route: usize,
        key: u64,
    },
    /// The edge gave up waiting for the filter's answer (`EdgeLimits::stream_idle_timeout`) and
    /// answered the client itself: the stream ends, and with it its pending calls.
    RequestAbandoned {
        route: usize,
        request_key: u64,
    },
    /// A callout's reply, for the VM slot (`slot`, an index into the worker's slots) whose
    /// instance of `generation` made it.
    CallDone {
        slot: usize,
        generation: u64,
        token: u32,
        reply: HttpCallReply,
    },
    /// What a gRPC server sent on a call or stream ([`super::grpc`]), for `Vm::respond_grpc`.
    GrpcReceived {
        slot: usize,
        generation: u64,
        token: u32,
        reply: GrpcReply,
    },
    UpstreamDone {
        slot: usize,
        generation: u64,
        stream: u32,
        /// When the request went upstream.
        sent_at: std::time::Instant,
        result: Result<UpstreamResponse, String>,
    },
    /// A new module for the VM slot `slot` ([`super::config::instance_plan`]'s order).
    Reload {
        slot: usize,
        module: Module,
    },
    /// Finish the requests in flight, then shut the filters' root contexts down as the profile's
    /// host does, and stop; whatever is still pending at `deadline` is abandoned (and logged).
    Shutdown {
        deadline: std::time::Instant,
    },
}

struct PendingStream {
    respond: Option<oneshot::Sender<GatewayResponse>>,
    passed_through: bool,
    /// The filter answered at the headers while a body was still announced: Envoy then closes
    /// the connection rather than drain the unread body (`connection: close`, e2e: Envoy 1.40).
    answered_before_body: bool,
    /// The key of a streamed body still arriving ([`Incoming::body_key`]); an answer before
    /// its end likewise closes the connection.
    body_key: Option<u64>,
    /// [`Incoming::request_key`].
    request_key: u64,
    /// The route the request came in on (its index in the deployment): whose fallback answers
    /// what the filter lets through.
    route: usize,
    /// Set when the stream is one filter's part of a request that runs a chain of several
    /// ([`ChainRequest`], by its request key): the chain, not the stream, answers the client.
    chain: Option<u64>,
}

/// Where a chain request's step stands: the filter (its index in the chain) whose request
/// headers or body callback runs, or past them all (proxied, or answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChainStep {
    RequestHeaders(usize),
    RequestBody(usize),
    Past,
}

/// One filter's stream of a chain request: the VM slot and instance it lives on.
#[derive(Debug, Clone, Copy)]
struct ChainLink {
    slot: usize,
    generation: u64,
    stream: u32,
}

/// A request on a route whose chain has several filters (Kong filter chains). ngx_wasm_module
/// creates every filter's context when the chain starts (KONG-SRC ngx_proxy_wasm.c:242-296
/// `ngx_proxy_wasm_ctx`), then runs each step through the filters in chain order, resuming at
/// the filter after one that paused once it continues (:640-760 `ngx_proxy_wasm_resume`: a
/// paused filter counts as done for the step, `exec_index++`): every filter's request headers
/// callback, then every filter's body callback, then the response steps, again in chain order
/// (the chain is reset to its first filter for them, :652-656; t/03-proxy_wasm/
/// 007-on_http_instance_isolation.t TEST 1 shows the order). Each filter is handed the request as
/// the filters before it left it. A local reply stops the request steps where it is sent (action
/// DONE, :490-495 `action2rc`; ngx_proxy_wasm_host.c:1120-1124) and then passes through every
/// filter's response callbacks, those after the answering one included (007 TEST 2: the second
/// filter gets `on_response_headers` for the first one's reply without ever having seen the
/// request headers).
struct ChainRequest {
    respond: Option<oneshot::Sender<GatewayResponse>>,
    route: usize,
    links: Vec<ChainLink>,
    step: ChainStep,
    /// Whether the current step's filter has been handed its input.
    handed: bool,
    /// The request as the filters so far left it.
    headers: Vec<(String, String)>,
    /// The current body step's filter's own view of the headers when it was handed the body:
    /// that view dates from its headers step, so it replaces [`ChainRequest::headers`] only if
    /// the filter changed it in its body callback (an earlier filter's body-step change must
    /// reach the upstream).
    headers_before_body: Option<Vec<(String, String)>>,
    body: Vec<u8>,
    has_body: bool,
}

struct Instance {
    generation: u64,
    vm: Vm,
    /// The root context of each of the slot's filters ([`VmSlot::roots`], same order).
    roots: Vec<u32>,
    streams: HashMap<u32, PendingStream>,
    /// Streams whose body is still arriving, by [`Incoming::body_key`].
    bodies: HashMap<u64, u32>,
    calls_in_flight: HashSet<u32>,
    /// gRPC calls and streams in flight (reset when the instance goes).
    grpc: GrpcCalls,
    /// The VM failure already logged, so it is logged once.
    reported_failure: Option<String>,
    /// A replaced instance with no streams left: when its root context was shut down.
    finishing_since: Option<std::time::Instant>,
    /// Something happened on this VM since its last [`Worker::settle`]: a command for it, a
    /// timer or queue notification, a root shut down. Only such instances are looked at.
    touched: bool,
}

/// One filter instance per thread and the filters (root contexts) that run on it
/// ([`super::config::instance_plan`]: Envoy's routes of one connection manager share its wasm
/// filter; Kong's filters of one module share its instance, each with its own root context).
struct VmSlot {
    /// For logs: the names of its routes, comma-separated.
    name: String,
    /// The route whose settings the VM starts with (VM id and configuration, `fail_open`).
    settings: Route,
    /// Its filters, one root context each, in creation order.
    roots: Vec<ChainedFilter>,
    current: Option<Instance>,
    draining: Vec<Instance>,
    module: Module,
}

/// What a worker runs ([`super::config::instance_plan`]): each VM slot, and each route's chain.
pub struct WorkerPlan {
    /// Every route of the deployment (their fallbacks answer what the filters let through).
    pub routes: Vec<Route>,
    /// Per route: its filters, in order, as slot (an index into `slots`) and root.
    pub chains: Vec<Vec<Link>>,
    /// Per VM slot: a name for logs, the route giving the VM's settings, its filters and module.
    pub slots: Vec<SlotPlan>,
}

/// One VM slot of a [`WorkerPlan`].
pub struct SlotPlan {
    /// Its routes' names, comma-separated.
    pub name: String,
    /// The route whose settings the VM starts with.
    pub settings: Route,
    /// Its filters (root contexts), in creation order.
    pub roots: Vec<ChainedFilter>,
    /// The module.
    pub module: Module,
}

impl VmSlot {
    /// The current instance and those replaced by a reload that still finish their work.
    fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.current.iter().chain(self.draining.iter())
    }

    fn instances_mut(&mut self) -> impl Iterator<Item = &mut Instance> {
        self.current.iter_mut().chain(self.draining.iter_mut())
    }
}

/// A worker's view of the deployment (routes, their chains) and its chain requests in flight.
struct RunState {
    routes: Vec<Route>,
    /// Per route: its filters ([`WorkerPlan::chains`]).
    route_chains: Vec<Vec<Link>>,
    /// Requests running a chain of several filters, by request key.
    chains: HashMap<u64, ChainRequest>,
}

/// Which of the gateway's threads a [`Worker`] is, as its log lines name it (`worker=0`,
/// `worker=main`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    /// A request worker (`--workers`), by its index.
    Worker(usize),
    /// The thread that takes no requests and runs each VM slot's main-thread root context, where
    /// the profile's host has one ([`crate::profile::HostBehaviour::runs_main_thread_root`]).
    Main,
}

impl std::fmt::Display for Thread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Thread::Worker(index) => write!(f, "{index}"),
            Thread::Main => f.write_str("main"),
        }
    }
}

pub struct Worker {
    /// Which thread this is: a request worker, or the main thread (which only gets reloads and
    /// the shutdown: its roots tick, call out and shut down as a worker's do).
    pub thread: Thread,
    pub profile: Profile,
    pub upstreams: Arc<BTreeMap<String, SocketAddr>>,
    pub runtime: tokio::runtime::Handle,
    pub commands: Sender<Command>,
    pub stats: Arc<Stats>,
    pub client: upstream::Client,
    pub shared: Arc<crate::state::Shared>,
    /// The deployment's client body buffer (Kong profile).
    pub client_body_buffer_bytes: usize,
    /// How long a replaced or stopping filter gets to finish (`EdgeLimits::drain_time`).
    pub drain_time: Duration,
}

impl Worker {
    /// Runs until `Shutdown` (after the in-flight requests finish) or until every sender is gone.
    pub fn run(self, plan: WorkerPlan, inbox: Receiver<Command>) {
        let WorkerPlan {
            routes,
            chains: route_chains,
            slots,
        } = plan;
        let mut slots: Vec<VmSlot> = slots
            .into_iter()
            .map(|slot| VmSlot {
                name: slot.name,
                settings: slot.settings,
                roots: slot.roots,
                current: None,
                draining: Vec::new(),
                module: slot.module,
            })
            .collect();
        let mut generation = 0u64;
        for (i, slot) in slots.iter_mut().enumerate() {
            generation += 1;
            slot.current = self.start_instance(i, slot, generation);
        }
        let mut state = RunState {
            routes,
            route_chains,
            chains: HashMap::new(),
        };
        let mut shutdown: Option<std::time::Instant> = None;
        let mut roots_finishing = false;
        loop {
            let wait = self.next_wait(&slots);
            match inbox.recv_timeout(wait) {
                Ok(Command::Shutdown { deadline }) => shutdown = Some(deadline),
                Ok(command) => self.apply(command, &mut slots, &mut state, &mut generation),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            for instance in slots.iter_mut().flat_map(VmSlot::instances_mut) {
                if instance.vm.run_due_work() {
                    instance.touched = true;
                }
            }
            self.settle_all(&mut slots, &mut state);
            for slot in slots.iter_mut() {
                self.retire_replaced(slot);
                self.report_failure(slot);
            }
            if let Some(deadline) = shutdown {
                if self.shutdown_step(&mut slots, &mut roots_finishing, deadline) {
                    // What the roots said as they went (`proxy_on_done` that returned true, then
                    // `proxy_on_delete`) is logged before the worker stops.
                    self.flush_guest_logs(&mut slots);
                    return;
                }
            }
            // What the roots' shutdown started (their last callouts) goes out now.
            self.settle_all(&mut slots, &mut state);
        }
    }

    /// Settles every touched instance ([`Worker::settle_touched`]) and moves on the chain
    /// requests whose streams something happened on, which may touch further instances: again,
    /// a bounded number of rounds (what is left waits for the next event).
    fn settle_all(&self, slots: &mut [VmSlot], state: &mut RunState) {
        for _ in 0..16 {
            let mut keys = self.settle_touched(slots, &state.routes);
            if keys.is_empty() {
                return;
            }
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                self.advance_chain(key, slots, state);
            }
        }
    }

    /// Applies one command to the instance it concerns, which is then [`Instance::touched`].
    fn apply(&self, command: Command, slots: &mut [VmSlot], state: &mut RunState, generation: &mut u64) {
        // The slot of a route's first filter; a route this worker does not know (never sent by
        // the gateway) concerns no instance.
        let first_link = |route: usize| {
            (state.route_chains.get(route))
                .and_then(|chain| chain.first().copied())
                .filter(|link| link.vm < slots.len())
        };
        let slot_index = |route: usize| first_link(route).map(|link| link.vm);
        match command {
            Command::Request(req) => {
                let Some(link) = first_link(req.route) else {
                    let _ = req.respond.send(plain(500, "host-sim: no such route\n"));
                    return;
                };
                if state.route_chains[req.route].len() > 1 {
                    self.begin_chain(req, slots, state, generation);
                    return;
                }
                let slot = link.vm;
                if slots[slot].current.is_none() {
                    *generation += 1;
                    slots[slot].current = self.start_instance(slot, &slots[slot], *generation);
                }
                match slots[slot].current.as_mut() {
                    Some(instance) => {
                        instance.touched = true;
                        match instance.roots.get(link.root).copied() {
                            Some(root) => self.begin(instance, root, req),
                            None => {
                                let _ = req.respond.send(plain(500, "host-sim: no such filter\n"));
                            }
                        }
                    }
                    None => {
                        let _ = req
                            .respond
                            .send(plain(500, "host-sim: the filter failed to start; see the log\n"));
                    }
                }
            }
            Command::RequestBody { route, key, data, end } => {
                let Some(slot) = slot_index(route) else { return };
                if let Some(instance) = slots[slot].instances_mut().find(|i| i.bodies.contains_key(&key)) {
                    instance.touched = true;
                    self.body_arrived(instance, key, &data, end);
                }
            }
            Command::RequestAborted { route, key } => {
                let Some(slot) = slot_index(route) else { return };
                if let Some(instance) = slots[slot].instances_mut().find(|i| i.bodies.contains_key(&key)) {
                    instance.touched = true;
                    if let Some(stream) = instance.bodies.remove(&key) {
                        instance.streams.remove(&stream);
                        let _ = instance.vm.finish_stream(stream);
                    }
                }
            }
            Command::RequestAbandoned { route, request_key } => {
                if let Some(request) = state.chains.remove(&request_key) {
                    // Every filter's stream ends; the client has its answer from the edge.
                    self.end_chain_streams(&request, slots);
                    return;
                }
                let Some(slot) = slot_index(route) else { return };
                for instance in slots[slot].instances_mut() {
                    let found = (instance.streams.iter()).find(|(_, p)| p.request_key == request_key);
                    if let Some((&stream, _)) = found {
                        instance.touched = true;
                        if let Some(p) = instance.streams.remove(&stream) {
                            if let Some(key) = p.body_key {
                                instance.bodies.remove(&key);
                            }
                        }
                        let _ = instance.vm.finish_stream(stream);
                        break;
                    }
                }
            }
            Command::CallDone {
                slot,
                generation: g,
                token,
                reply,
            } => {
                if let Some(instance) = slots.get_mut(slot).and_then(|s| find(s, g)) {
                    instance.touched = true;
                    instance.calls_in_flight.remove(&token);
                    // A call whose stream ended meanwhile is gone: its reply is dropped.
                    let _ = instance.vm.respond_http_call(token, reply);
                }
            }
            Command::GrpcReceived {
                slot,
                generation: g,
                token,
                reply,
            } => {
                if let Some(instance) = slots.get_mut(slot).and_then(|s| find(s, g)) {
                    instance.touched = true;
                    // A call the guest ended or whose context ended is gone: dropped.
                    let _ = instance.vm.respond_grpc(token, reply);
                }
            }
            Command::UpstreamDone {
                slot,
                generation: g,
                stream,
                sent_at,
                result,
            } => {
                let Some(instance) = slots.get_mut(slot).and_then(|s| find(s, g)) else {
                    return;
                };
                instance.touched = true;
                match instance.streams.get(&stream).and_then(|p| p.chain) {
                    // A chain request's upstream answer (sent under its first filter's stream).
                    Some(key) => self.chain_upstream_done(key, slots, state, sent_at, result),
                    None => self.upstream_done(instance, stream, sent_at, result),
                }
            }
            Command::Reload { slot: index, module } => {
                let Some(slot) = slots.get_mut(index) else { return };
                *generation += 1;
                slot.module = module;
                if let Some(fresh) = self.start_instance(index, slot, *generation) {
                    if let Some(old) = slot.current.replace(fresh) {
                        slot.draining.push(old);
                    }
                }
            }
            Command::Shutdown { .. } => {}
        }
    }

    /// Logs what every VM's guest said since its last settle, and nothing else.
    fn flush_guest_logs(&self, slots: &mut [VmSlot]) {
        for slot in slots.iter_mut() {
            let VmSlot {
                name,
                current,
                draining,
                ..
            } = slot;
            for instance in current.iter_mut().chain(draining.iter_mut()) {
                for line in instance.vm.take_logs() {
                    guest_log(name, &self.thread, &line);
                }
            }
        }
    }

    /// Settles every instance something happened on ([`Worker::settle`]); returns the chain
    /// requests whose streams were among what happened (for [`Worker::advance_chain`]).
    fn settle_touched(&self, slots: &mut [VmSlot], routes: &[Route]) -> Vec<u64> {
        let mut chains = Vec::new();
        for (index, slot) in slots.iter_mut().enumerate() {
            let VmSlot {
                name,
                current,
                draining,
                ..
            } = slot;
            for instance in current.iter_mut().chain(draining.iter_mut()) {
                if std::mem::take(&mut instance.touched) {
                    chains.extend(self.settle(index, name, routes, instance));
                }
            }
        }
        chains
    }

    /// Logs a slot's VM failure once. A VM whose guest trapped stays: the profile decides what
    /// later requests get (`AfterTrap`: Envoy keeps it failed until the module is reloaded, for
    /// every route using it, as Envoy's one per-thread plugin is; Kong starts a fresh instance at
    /// the next request).
    fn report_failure(&self, slot: &mut VmSlot) {
        if let Some(current) = slot.current.as_mut() {
            let failure = current.vm.failure().map(String::from);
            if failure.is_some() && failure != current.reported_failure {
                tracing::error!(route = %slot.name, worker = %self.thread, reason = failure.as_deref().unwrap_or_default(), "the filter's VM failed");
            }
            current.reported_failure = failure;
        }
    }

    /// Lets instances replaced by a reload go once their streams have ended. Where the profile's
    /// host shuts root contexts down, the old root gets `proxy_on_done` first and the instance
    /// stays (its callouts and ticks going on) until it has called `proxy_done`, within the drain
    /// time; then it is given up on (`Vm::abandon_root`) so the filter can count what it drops. An
    /// asynchronous filter's buffer in the old VM is thus sent, not silently lost on reload.
    fn retire_replaced(&self, slot: &mut VmSlot) {
        for old in slot.draining.iter_mut() {
            if old.streams.is_empty() && old.finishing_since.is_none() {
                old.finishing_since = Some(std::time::Instant::now());
                for root in old.roots.clone() {
                    if old.vm.root_shutdown_pending(root) {
                        let _ = old.vm.finish_root(root);
                        old.touched = true;
                    }
                }
            }
        }
        if slot.draining.is_empty() {
            return;
        }
        let route = slot.name.clone();
        slot.draining.retain_mut(|old| {
            let Some(since) = old.finishing_since else {
                return true;
            };
            let owing: Vec<u32> = (old.roots.iter().copied())
                .filter(|&root| old.vm.root_shutdown_pending(root))
                .collect();
            if !owing.is_empty() && since.elapsed() < self.drain_time {
                return true;
            }
            if !owing.is_empty() {
                tracing::warn!(route = %route, worker = %self.thread, callouts_pending = old.calls_in_flight.len() + old.grpc.len(), "a replaced filter had not called proxy_done within the drain time; its root context is deleted with what it still holds");
                for root in owing {
                    old.vm.abandon_root(root);
                }
            }
            for line in old.vm.take_logs() {
                guest_log(&route, &self.thread, &line);
            }
            false
        });
    }

    /// One step of shutting down; true when the worker may stop. Requests in flight finish
    /// first; then, where the profile's host does so, each VM's root context is shut down
    /// (`proxy_on_done`) and the worker waits for those that owe `proxy_done` while their
    /// callouts and ticks go on; at `deadline` whatever is left is abandoned, and said so.
    fn shutdown_step(&self, slots: &mut [VmSlot], roots_finishing: &mut bool, deadline: std::time::Instant) -> bool {
        let streams_left: usize = slots.iter().flat_map(VmSlot::instances).map(|i| i.streams.len()).sum();
        if streams_left == 0 && !*roots_finishing {
            *roots_finishing = true;
            for instance in slots.iter_mut().filter_map(|s| s.current.as_mut()) {
                for root in instance.roots.clone() {
                    if instance.vm.root_shutdown_pending(root) {
                        let _ = instance.vm.finish_root(root);
                        instance.touched = true;
                    }
                }
            }
        }
        let unfinished: Vec<usize> = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                (s.current.as_ref()).is_some_and(|i| i.roots.iter().any(|&root| i.vm.root_shutdown_pending(root)))
            })
            .map(|(index, _)| index)
            .collect();
        // Replaced instances finish on their own clock (`retire_replaced`).
        if *roots_finishing && unfinished.is_empty() && slots.iter().all(|s| s.draining.is_empty()) {
            return true;
        }
        if std::time::Instant::now() < deadline {
            return false;
        }
        if streams_left > 0 {
            tracing::warn!(
                worker = %self.thread,
                requests = streams_left,
                "drain time over: requests still in flight are abandoned"
            );
        }
        for index in unfinished {
            let slot = &mut slots[index];
            let Some(instance) = slot.current.as_mut() else {
                continue;
            };
            tracing::warn!(
                route = %slot.name,
                worker = %self.thread,
                callouts_pending = instance.calls_in_flight.len() + instance.grpc.len(),
                "drain time over: the filter had not called proxy_done; its root context is deleted with what it still holds"
            );
            // proxy_on_delete lets the filter say (and count) what it gives up.
            for root in instance.roots.clone() {
                if instance.vm.root_shutdown_pending(root) {
                    instance.vm.abandon_root(root);
                }
            }
            for line in instance.vm.take_logs() {
                guest_log(&slot.name, &self.thread, &line);
            }
        }
        true
    }

    fn next_wait(&self, slots: &[VmSlot]) -> Duration {
        let next = slots
            .iter()
            .flat_map(VmSlot::instances)
            .filter_map(|i| i.vm.next_timer_ns().map(|t| (t, i.vm.now_ns())))
            .map(|(t, now)| Duration::from_nanos(t.saturating_sub(now)))
            .min()
            .unwrap_or(Duration::from_millis(250));
        next.clamp(Duration::from_millis(1), Duration::from_millis(250))
    }

    /// Starts the slot's VM and a root context for each of its filters, in order (ngx_wasm_module
    /// starts each filter's root context, `proxy_on_vm_start` and `proxy_on_configure` included,
    /// on the shared instance: KONG-SRC ngx_proxy_wasm.c:1213-1240; 007-on_http_instance_isolation.t
    /// TEST 1 logs both filters' on_vm_start and on_configure).
    fn start_instance(&self, index: usize, slot: &VmSlot, generation: u64) -> Option<Instance> {
        let name = &slot.name;
        let mut options = vm_options(self.profile, &slot.settings, &self.upstreams, self.shared.clone());
        options.client_body_buffer_bytes = self.client_body_buffer_bytes;
        if let Some(first) = slot.roots.first() {
            // The module's filter name (Kong: every filter of the module has it).
            options.plugin_name = first.plugin_name.clone();
        }
        let started = Vm::start(&slot.module, options).and_then(|mut vm| {
            let mut roots = Vec::with_capacity(slot.roots.len());
            for filter in &slot.roots {
                roots.push(vm.create_root_context(&filter.root_id, &filter.config)?);
            }
            Ok((vm, roots))
        });
        match started {
            Ok((mut vm, roots)) => {
                for line in vm.take_logs() {
                    guest_log(name, &self.thread, &line);
                }
                if roots.iter().any(|root| !root.configure_ok) {
                    tracing::error!(route = %name, worker = %self.thread, "the filter rejected its configuration (proxy_on_configure returned false)");
                    return None;
                }
                tracing::debug!(route = %name, worker = %self.thread, index, generation, sha256 = %slot.module.sha256(), "filter VM started");
                Some(Instance {
                    generation,
                    vm,
                    roots: roots.iter().map(|root| root.id).collect(),
                    streams: HashMap::new(),
                    bodies: HashMap::new(),
                    calls_in_flight: HashSet::new(),
                    grpc: GrpcCalls::default(),
                    reported_failure: None,
                    finishing_since: None,
                    touched: true,
                })
            }
            Err(e) => {
                tracing::error!(route = %name, worker = %self.thread, "cannot start the filter: {e}");
                None
            }
        }
    }

    /// Starts a request on the root context `root` of `instance` (a route with one filter).
    fn begin(&self, instance: &mut Instance, root: u32, req: Incoming) {
        let Incoming {
            headers,
            body,
            info,
            respond,
            body_key,
            request_key,
            route,
        } = req;
        let stream = match instance.vm.create_http_stream_with(root, info) {
            Ok(s) => s,
            Err(e) => {
                let _ = respond.send(plain(500, &format!("host-sim: {e}\n")));
                return;
            }
        };
        instance.streams.insert(
            stream,
            PendingStream {
                respond: Some(respond),
                passed_through: false,
                answered_before_body: false,
                body_key,
                request_key,
                route,
                chain: None,
            },
        );
        if let Some(key) = body_key {
            instance.bodies.insert(key, stream);
        }
        let has_body = !body.is_empty() || body_key.is_some();
        let _ = instance.vm.send_request_headers(stream, &headers, !has_body);
        // The body goes to the filter in chunks, as gateways read it off the socket; a filter that
        // answers before the last chunk leaves the rest unread, and Envoy then closes the
        // connection (e2e: a chunked body over the limit gets 413 with connection: close).
        // How the body ends is the profile's (`request_body_ends_with_empty_call`); Kong buffers
        // the whole body anyway.
        let chunks = body.len().div_ceil(BODY_CHUNK);
        let empty_end = self.profile.request_body_ends_with_empty_call();
        let mut pieces: Vec<(&[u8], bool)> = body
            .chunks(BODY_CHUNK)
            .enumerate()
            .map(|(i, c)| (c, !empty_end && i + 1 == chunks))
            .collect();
        if empty_end && has_body && body_key.is_none() {
            pieces.push((&[], true));
        }
        for (chunk, end_of_stream) in pieces {
            if instance.vm.local_response(stream).is_some() {
                if let Some(p) = instance.streams.get_mut(&stream) {
                    p.answered_before_body = self.profile.closes_connection_on_unread_request_body();
                }
                break;
            }
            let _ = instance.vm.send_request_body(stream, chunk, end_of_stream);
        }
    }

    /// More of a streamed body (Envoy, [`crate::profile::BodyDelivery::Chunks`]): to the filter in pieces of at
    /// most [`BODY_CHUNK`], each with `end_of_stream=false`, and after the last an empty call
    /// that ends the stream, as at the start ([`Worker::begin`]). Once the filter has answered,
    /// the rest goes unread ([`Worker::finish`] closes the connection).
    fn body_arrived(&self, instance: &mut Instance, key: u64, data: &[u8], end: bool) {
        let Some(&stream) = instance.bodies.get(&key) else {
            return;
        };
        if end {
            instance.bodies.remove(&key);
            if let Some(p) = instance.streams.get_mut(&stream) {
                p.body_key = None;
            }
        }
        let mut pieces: Vec<(&[u8], bool)> = data.chunks(BODY_CHUNK).map(|c| (c, false)).collect();
        if end {
            pieces.push((&[], true));
        }
        for (chunk, end_of_stream) in pieces {
            if instance.vm.local_response(stream).is_some() {
                break;
            }
            let _ = instance.vm.send_request_body(stream, chunk, end_of_stream);
        }
    }

    /// After something happened on an instance: its guest's log lines go out, the calls it
    /// dispatched are sent, and its streams that reached an end are answered or passed on.
    /// `slot_index`, `name`: the instance's [`VmSlot`]'s; `routes`: the deployment's. Returns the
    /// chain requests among its streams something happened on, which the caller moves on.
    fn settle(&self, slot_index: usize, name: &str, routes: &[Route], instance: &mut Instance) -> Vec<u64> {
        for line in instance.vm.take_logs() {
            guest_log(name, &self.thread, &line);
        }
        self.send_new_calls(slot_index, instance);
        let chains = self.answer_settled_streams(slot_index, routes, instance);
        // After the streams that ended are finished, so their calls are reset now.
        instance.grpc.sync(&mut instance.vm);
        chains
    }

    /// Sends each call the guest dispatched since the last look, once ([`Vm::take_new_calls`]);
    /// its reply comes back as [`Command::CallDone`].
    fn send_new_calls(&self, slot_index: usize, instance: &mut Instance) {
        for new in instance.vm.take_new_calls() {
            let (call, time_left) = match new {
                NewCall::Http { call, time_left } => (call, time_left),
                NewCall::Grpc { call, time_left } => {
                    self.stats.callouts.fetch_add(1, Ordering::Relaxed);
                    let (commands, generation, token) = (self.commands.clone(), instance.generation, call.token);
                    let deliver = Box::new(move |reply: GrpcReply| {
                        let _ = commands.send(Command::GrpcReceived {
                            slot: slot_index,
                            generation,
                            token,
                            reply,
                        });
                    });
                    let client = self.client.grpc();
                    (instance.grpc).start(
                        &self.runtime,
                        client,
                        self.profile,
                        &self.upstreams,
                        call,
                        time_left,
                        deliver,
                    );
                    continue;
                }
            };
            instance.calls_in_flight.insert(call.token);
            self.stats.callouts.fetch_add(1, Ordering::Relaxed);
            let token = call.token;
            let callout = upstream::Callout::new(self.profile, &self.upstreams, call, time_left);
            let client = self.client.clone();
            let commands = self.commands.clone();
            let generation = instance.generation;
            self.runtime.spawn(async move {
                let reply = callout.send(client).await;
                let _ = commands.send(Command::CallDone {
                    slot: slot_index,
                    generation,
                    token,
                    reply,
                });
            });
        }
    }

    /// Looks at each stream of the instance something happened on ([`Vm::take_touched_streams`]:
    /// not every stream it has, per event): one the filter answered gets its answer, one it
    /// reset is closed, one whose request went through whole goes to the route's fallback.
    fn answer_settled_streams(&self, slot_index: usize, routes: &[Route], instance: &mut Instance) -> Vec<u64> {
        // Answering one stream runs its callbacks, in which the guest may move another stream
        // on: those are looked at in a further round (bounded; what is left waits for the next
        // event on this instance, as it is still listed).
        let mut chains = Vec::new();
        for _ in 0..16 {
            let touched = instance.vm.take_touched_streams();
            if touched.is_empty() {
                break;
            }
            for stream in touched {
                match instance.streams.get(&stream).map(|p| p.chain) {
                    // A filter's stream of a chain request: the chain decides (`advance_chain`).
                    Some(Some(key)) => chains.push(key),
                    Some(None) => self.answer_if_settled(slot_index, routes, instance, stream),
                    None => {}
                }
            }
        }
        chains
    }

    fn answer_if_settled(&self, slot_index: usize, routes: &[Route], instance: &mut Instance, stream: u32) {
        let vm = &mut instance.vm;
        let response = if let Some(local) = vm.local_response(stream).cloned() {
            Some(self.local_reply(vm, stream, &local))
        } else if vm.stream_reset(stream) || !vm.stream_exists(stream) {
            // The filter reset the stream: drop the responder so the client's connection
            // is closed without an answer, as Envoy resets it.
            if let Some(p) = instance.streams.remove(&stream) {
                if let Some(key) = p.body_key {
                    instance.bodies.remove(&key);
                }
                drop(p.respond);
            }
            let _ = vm.finish_stream(stream);
            return;
        } else if vm.request_forwarded_complete(stream) && !instance.streams[&stream].passed_through {
            if let Some(p) = instance.streams.get_mut(&stream) {
                p.passed_through = true;
            }
            // The stream's own route's fallback; a route the deployment does not have (never
            // sent by the gateway) gets the no-route answer.
            let route = instance.streams[&stream].route;
            let fallback = routes.get(route).map_or(&Fallback::NotFound, |r| &r.fallback);
            self.pass_to_fallback(slot_index, fallback, instance, stream)
        } else {
            None
        };
        if let Some(response) = response {
            self.finish(instance, stream, response);
        }
    }

    /// A request the filter let through goes where the route sends it: a direct response or
    /// the no-route answer (both through the filter's response callbacks, returned here), or
    /// the upstream, whose answer comes back as [`Command::UpstreamDone`] (`None` here).
    fn pass_to_fallback(
        &self,
        slot_index: usize,
        fallback: &Fallback,
        instance: &mut Instance,
        stream: u32,
    ) -> Option<GatewayResponse> {
        if let Some((headers, body)) = self.router_reply(fallback) {
            return Some(self.through_response_filter(&mut instance.vm, stream, headers, body, ResponseOrigin::Router));
        }
        let Fallback::Upstream(name) = fallback else {
            return None;
        };
        let mut headers = instance.vm.request_headers(stream).unwrap_or_default();
        let request_key = instance.streams.get(&stream).map(|p| p.request_key).unwrap_or_default();
        let body = instance.vm.forwarded_request_body(stream).unwrap_or_default().to_vec();
        headers.extend(
            self.profile
                .proxied_request_headers(&super::hex_request_id(request_key)),
        );
        self.send_upstream(name, headers, body, slot_index, instance.generation, stream);
        None
    }

    /// The router's own answer for a fallback that is not an upstream: a direct response, or
    /// the no-route answer; `None` for an upstream.
    fn router_reply(&self, fallback: &Fallback) -> Option<HandedResponse> {
        match fallback {
            // Envoy's router answers a direct_response with a local reply
            // (`sendLocalReply`), shaped as the filter's own would be.
            Fallback::Direct { status, body } => {
                let direct = LocalResponse {
                    status: u32::from(*status),
                    details: "direct_response".into(),
                    headers: Vec::new(),
                    body: body.as_bytes().to_vec(),
                    grpc_status: None,
                };
                Some(self.profile.local_reply_response(&direct, std::time::SystemTime::now()))
            }
            Fallback::NotFound => {
                let body = br#"{"message":"no Route matched with those values"}"#.to_vec();
                let headers = vec![
                    (":status".to_string(), "404".to_string()),
                    ("content-type".into(), "application/json; charset=utf-8".into()),
                    ("content-length".into(), body.len().to_string()),
                ];
                Some((headers, body))
            }
            Fallback::Upstream(_) => None,
        }
    }

    /// Sends a request the filters let through to the upstream `name` (a cluster, else
    /// `host:port`); the answer comes back as [`Command::UpstreamDone`] for `stream` of the
    /// slot's instance of `generation`.
    fn send_upstream(
        &self,
        name: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        slot_index: usize,
        generation: u64,
        stream: u32,
    ) {
        let target = self
            .upstreams
            .get(name)
            .map(|a| a.to_string())
            .unwrap_or_else(|| name.to_string());
        let request = UpstreamRequest::from_call_headers(&headers, body);
        let commands = self.commands.clone();
        let client = self.client.clone();
        let profile = self.profile;
        self.runtime.spawn(async move {
            let started = std::time::Instant::now();
            let result = client
                .send(&target, request)
                .await
                .map(|mut response| {
                    // The router's header, there before the filter sees the response.
                    response
                        .headers
                        .extend(profile.upstream_response_header(started.elapsed()));
                    response
                })
                .map_err(|e| e.to_string());
            let _ = commands.send(Command::UpstreamDone {
                slot: slot_index,
                generation,
                stream,
                sent_at: started,
                result,
            });
        });
    }

    fn upstream_done(
        &self,
        instance: &mut Instance,
        stream: u32,
        sent_at: std::time::Instant,
        result: Result<UpstreamResponse, String>,
    ) {
        let request_key = instance.streams.get(&stream).map(|p| p.request_key).unwrap_or_default();
        let request_headers = instance.vm.request_headers(stream).unwrap_or_default();
        let (upstream_via, reply) = self.upstream_reply(result, &request_headers, request_key);
        let mut response = match reply {
            Ok((headers, body)) => {
                self.through_response_filter(&mut instance.vm, stream, headers, body, ResponseOrigin::Upstream)
            }
            Err(host_answer) => host_answer,
        };
        response.upstream_via = upstream_via;
        response.sent_upstream_at = Some(sent_at);
        self.finish(instance, stream, response);
    }

    /// What an upstream's answer gives the filters: its response (`Ok`: headers with `:status`
    /// first, and body) with the upstream's `Via`, or the host's own answer when the upstream
    /// could not be reached (`Err`).
    fn upstream_reply(
        &self,
        result: Result<UpstreamResponse, String>,
        request_headers: &[(String, String)],
        request_key: u64,
    ) -> (Option<String>, Result<HandedResponse, GatewayResponse>) {
        let upstream_via = result.as_ref().ok().and_then(|resp| {
            resp.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("via"))
                .map(|(_, v)| v.clone())
        });
        let reply = match result {
            Ok(resp) => {
                // The filter sees the upstream's headers with its content-length (both hosts keep
                // it, `HostBehaviour::keeps_filter_content_length`); transfer-encoding is the
                // connection's business, which both hosts' HTTP/1 codecs consume.
                // The filter sees them as the host's map presents them
                // (`HostBehaviour::upstream_response_headers`).
                let mut headers = vec![(":status".to_string(), resp.status.to_string())];
                headers.extend(
                    resp.headers
                        .into_iter()
                        .filter(|(k, _)| !k.eq_ignore_ascii_case("transfer-encoding")),
                );
                let headers = self
                    .profile
                    .upstream_response_headers(headers, std::time::SystemTime::now());
                Ok((headers, resp.body))
            }
            Err(e) => {
                // The host's own answer to an unreachable upstream (`upstream_unreachable_reply`),
                // which does not pass through the filter's response callbacks.
                let request_id = super::hex_request_id(request_key);
                Err(
                    match self.profile.upstream_unreachable_reply(request_headers, &request_id) {
                        Some(reply) => GatewayResponse {
                            status: u16::try_from(reply.status).unwrap_or(502),
                            headers: reply.headers,
                            body: reply.body,
                            framing: Framing::Computed,
                            reason: None,
                            origin: ResponseOrigin::Filter,
                            upstream_via: None,
                            sent_upstream_at: None,
                        },
                        None => plain(
                            503,
                            &format!("upstream connect error or disconnect/reset before headers. reset reason: {e}"),
                        ),
                    },
                )
            }
        };
        (upstream_via, reply)
    }

    /// The answer to a stream the filter ended with a local reply. The filter's own reply passes
    /// through its response callbacks, shaped as the profile's host shapes it
    /// ([`crate::profile::HostBehaviour::local_reply_response`]); the host's answer to a failed filter, and a
    /// reply the filter sent once a response had started (Envoy sends that one straight to the
    /// codec), go out as they are.
    fn local_reply(&self, vm: &mut Vm, stream: u32, local: &LocalResponse) -> GatewayResponse {
        let Some(passed) = vm.pass_local_reply(stream) else {
            return unfiltered_reply(local);
        };
        let reason = self.profile.local_reply_reason(&local.details);
        if !passed.trapped {
            return GatewayResponse {
                reason,
                ..self.response_left_by_filter(vm, stream, &passed.headers, ResponseOrigin::Filter)
            };
        }
        if self.profile.response_trap_fails_open() {
            return GatewayResponse {
                status: local.status as u16,
                headers: passed
                    .headers
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with(':'))
                    .collect(),
                body: passed.body,
                framing: Framing::AsFilterLeft,
                reason,
                origin: ResponseOrigin::Filter,
                upstream_via: None,
                sent_upstream_at: None,
            };
        }
        GatewayResponse {
            status: self.profile.fail_closed_status() as u16,
            headers: Vec::new(),
            body: Vec::new(),
            framing: Framing::Computed,
            reason: None,
            origin: ResponseOrigin::Filter,
            upstream_via: None,
            sent_upstream_at: None,
        }
    }

    /// Runs a response (`headers` with `:status` first) through the filter's response callbacks
    /// and returns what it let out, framed by the headers it left.
    fn through_response_filter(
        &self,
        vm: &mut Vm,
        stream: u32,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        from: ResponseOrigin,
    ) -> GatewayResponse {
        let body_callback = self.profile.response_body_callback(&body);
        let _ = vm.send_response_headers(stream, &headers, !body_callback);
        if body_callback {
            let empty_end = from == ResponseOrigin::Upstream
                && !body.is_empty()
                && self.profile.upstream_body_ends_with_empty_call();
            let _ = vm.send_response_body(stream, &body, !empty_end);
            if empty_end {
                let _ = vm.send_response_body(stream, &[], true);
            }
        }
        self.response_left_by_filter(vm, stream, &headers, from)
    }

    /// What a response's callbacks let out: a local reply the filter sent from them instead, or
    /// the response as the filter left it (`given`: the headers it was handed), framed by the
    /// headers it left; `origin`: who made the response the filter was handed.
    fn response_left_by_filter(
        &self,
        vm: &mut Vm,
        stream: u32,
        given: &[(String, String)],
        origin: ResponseOrigin,
    ) -> GatewayResponse {
        let opened_for_local_reply = vm.local_reply_in_response(stream);
        let local = vm.local_response(stream).filter(|_| !opened_for_local_reply);
        // Over an upstream's response, a host that turns the reply into the response's new
        // status and body (Kong) keeps the headers as the filter left them, stale Content-Length
        // included. The router's own replies (`Fallback`) keep the direct reply: behind Kong
        // they never reach the filter, so there is nothing to model them on.
        let replaces = |l: &LocalResponse| match origin {
            ResponseOrigin::Upstream => self.profile.local_reply_replaces_body(l),
            _ => None,
        };
        if let Some((local, body)) = local.and_then(|l| Some((l, replaces(l)?))) {
            let headers = vm.response_headers(stream).unwrap_or_else(|| given.to_vec());
            return GatewayResponse {
                status: local.status as u16,
                headers: headers.into_iter().filter(|(k, _)| !k.starts_with(':')).collect(),
                body,
                framing: Framing::AsFilterLeft,
                reason: self.profile.local_reply_reason(&local.details),
                origin,
                upstream_via: None,
                sent_upstream_at: None,
            };
        }
        if let Some(local) = local {
            // A local reply from the response callbacks: the response has not gone out yet, so
            // the host sends this one instead, without the filter.
            let (headers, body) = self.profile.direct_local_reply(local);
            return GatewayResponse {
                status: local.status as u16,
                headers: headers.into_iter().filter(|(k, _)| !k.starts_with(':')).collect(),
                body,
                framing: Framing::Computed,
                reason: None,
                origin: ResponseOrigin::Filter,
                upstream_via: None,
                sent_upstream_at: None,
            };
        }
        let status_given = given
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(500);
        let headers = vm.response_headers(stream).unwrap_or_else(|| given.to_vec());
        let status = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(status_given);
        GatewayResponse {
            status,
            headers: headers.into_iter().filter(|(k, _)| !k.starts_with(':')).collect(),
            body: vm.forwarded_response_body(stream).unwrap_or_default().to_vec(),
            framing: if self.profile.keeps_filter_content_length() {
                Framing::AsFilterLeft
            } else {
                Framing::Computed
            },
            reason: None,
            origin,
            upstream_via: None,
            sent_upstream_at: None,
        }
    }

    /// Starts a request on a route whose chain has several filters ([`ChainRequest`]): a
    /// stream for each filter, in chain order, on its slot's current instance (started if need
    /// be, as for one filter), then the first step. The body comes whole ([`Incoming::body`]):
    /// `start` refuses chains under a profile that streams it (`ServeError::ChainNeedsWholeBody`).
    fn begin_chain(&self, req: Incoming, slots: &mut [VmSlot], state: &mut RunState, generation: &mut u64) {
        let Incoming {
            headers,
            body,
            info,
            respond,
            request_key,
            route,
            ..
        } = req;
        let mut request = ChainRequest {
            respond: Some(respond),
            route,
            links: Vec::with_capacity(state.route_chains[route].len()),
            step: ChainStep::RequestHeaders(0),
            handed: false,
            headers,
            headers_before_body: None,
            has_body: !body.is_empty(),
            body,
        };
        // The route's chain ([`RunState::route_chains`]), read by index: `Link` is `Copy`.
        for position in 0..state.route_chains[route].len() {
            let link = &state.route_chains[route][position];
            if slots[link.vm].current.is_none() {
                *generation += 1;
                slots[link.vm].current = self.start_instance(link.vm, &slots[link.vm], *generation);
            }
            let created = match slots[link.vm].current.as_mut() {
                None => Err("the filter failed to start; see the log".to_string()),
                Some(instance) => match instance.roots.get(link.root) {
                    None => Err("no such filter".to_string()),
                    Some(&root) => (instance.vm.create_http_stream_with(root, info.clone()))
                        .map(|stream| (instance, stream))
                        .map_err(|e| e.to_string()),
                },
            };
            match created {
                Ok((instance, stream)) => {
                    instance.touched = true;
                    instance.streams.insert(
                        stream,
                        PendingStream {
                            respond: None,
                            passed_through: false,
                            answered_before_body: false,
                            body_key: None,
                            request_key,
                            route,
                            chain: Some(request_key),
                        },
                    );
                    request.links.push(ChainLink {
                        slot: link.vm,
                        generation: instance.generation,
                        stream,
                    });
                }
                Err(e) => {
                    self.end_chain_streams(&request, slots);
                    if let Some(respond) = request.respond.take() {
                        let _ = respond.send(plain(500, &format!("host-sim: {e}\n")));
                    }
                    return;
                }
            }
        }
        state.chains.insert(request_key, request);
        self.advance_chain(request_key, slots, state);
    }

    /// Moves a chain request on as far as its filters let it: each filter in turn is handed
    /// the request headers (then the body) as the filters before it left them; a filter that
    /// pauses holds the chain until it continues (its stream's next event brings the request
    /// back here), a local reply or a reset ends it, and past the last filter the request goes
    /// to the route's fallback.
    fn advance_chain(&self, key: u64, slots: &mut [VmSlot], state: &mut RunState) {
        // Each round hands one filter one step, or moves past a step: bounded by the chain.
        let rounds = state.chains.get(&key).map_or(0, |r| 2 * r.links.len() + 3);
        for _ in 0..rounds {
            let Some(request) = state.chains.get_mut(&key) else {
                return;
            };
            // A filter the request has already passed can still end it from a later callback (a
            // callout's answer, a trap there): its local reply or reset settles the request now,
            // as it does on a route with one filter, not only the filter the chain waits on.
            // In the body step every filter has had its headers step.
            let passed = match request.step {
                ChainStep::RequestHeaders(i) => i.min(request.links.len()),
                ChainStep::RequestBody(_) | ChainStep::Past => request.links.len(),
            };
            if let Some((index, settled)) = settled_link(&request.links[..passed], slots) {
                self.end_chain_early(key, index, settled, slots, state);
                return;
            }
            let (index, body_step) = match request.step {
                ChainStep::RequestHeaders(i) => (i, false),
                ChainStep::RequestBody(i) => (i, true),
                // Waiting for the upstream, nothing settled: its answer moves the request on.
                ChainStep::Past => return,
            };
            if index == request.links.len() {
                request.handed = false;
                if !body_step && request.has_body {
                    request.step = ChainStep::RequestBody(0);
                    continue;
                }
                request.step = ChainStep::Past;
                self.chain_to_fallback(key, slots, state);
                return;
            }
            let link = request.links[index];
            let Some(instance) = link_instance(slots, link) else {
                let request = state.chains.remove(&key);
                if let Some(mut request) = request {
                    self.finish_chain(
                        &mut request,
                        slots,
                        plain(500, "host-sim: the filter's instance is gone\n"),
                    );
                }
                return;
            };
            instance.touched = true;
            let vm = &mut instance.vm;
            if !std::mem::replace(&mut request.handed, true) {
                if body_step {
                    request.headers_before_body = vm.request_headers(link.stream);
                    let _ = vm.send_request_body(link.stream, &request.body, true);
                } else {
                    let _ = vm.send_request_headers(link.stream, &request.headers, !request.has_body);
                }
            }
            if let Some(settled) = link_settled(vm, link.stream) {
                self.end_chain_early(key, index, settled, slots, state);
                return;
            }
            let through = if body_step {
                vm.request_forwarded_complete(link.stream)
            } else {
                vm.request_headers_forwarded(link.stream)
            };
            if !through {
                return;
            }
            if let Some(headers) = vm.request_headers(link.stream) {
                if !body_step || request.headers_before_body.as_ref() != Some(&headers) {
                    request.headers = headers;
                }
            }
            if body_step {
                request.body = vm.forwarded_request_body(link.stream).unwrap_or_default().to_vec();
            }
            request.handed = false;
            request.step = if body_step {
                ChainStep::RequestBody(index + 1)
            } else {
                ChainStep::RequestHeaders(index + 1)
            };
        }
    }

    /// A filter of the chain (`index`) ended the request early: its local reply goes out
    /// ([`Worker::chain_local_reply`]), or, for a reset, the client's connection closes without
    /// an answer. A request waiting for the upstream is counted when the upstream's answer comes
    /// back to no stream, as for a route with one filter.
    fn end_chain_early(&self, key: u64, index: usize, settled: Settled, slots: &mut [VmSlot], state: &mut RunState) {
        let Some(request) = state.chains.get_mut(&key) else {
            return;
        };
        let waiting_upstream = matches!(request.step, ChainStep::Past);
        match settled {
            Settled::LocalReply => {
                request.step = ChainStep::Past;
                self.chain_local_reply(key, index, slots, state);
            }
            Settled::Reset => {
                if let Some(mut request) = state.chains.remove(&key) {
                    request.respond = None;
                    self.end_chain_streams(&request, slots);
                    if !waiting_upstream {
                        self.stats.requests.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// A chain request every filter let through goes to its route's fallback: the router's own
    /// reply through the chain's response callbacks now, or the upstream (answered in
    /// [`Worker::chain_upstream_done`]).
    fn chain_to_fallback(&self, key: u64, slots: &mut [VmSlot], state: &mut RunState) {
        let Some(request) = state.chains.get(&key) else {
            return;
        };
        let fallback = (state.routes.get(request.route)).map_or(&Fallback::NotFound, |r| &r.fallback);
        if let Some((headers, body)) = self.router_reply(fallback) {
            let response = self.chain_response(request, slots, headers, body, ResponseOrigin::Router);
            if let Some(mut request) = state.chains.remove(&key) {
                self.finish_chain(&mut request, slots, response);
            }
            return;
        }
        let Fallback::Upstream(name) = fallback else {
            return;
        };
        let Some(request) = state.chains.get_mut(&key) else {
            return;
        };
        let first = request.links[0];
        let mut headers = request.headers.clone();
        headers.extend(self.profile.proxied_request_headers(&super::hex_request_id(key)));
        // Past the last filter nothing reads the body again: it moves to the upstream.
        let body = std::mem::take(&mut request.body);
        self.send_upstream(name, headers, body, first.slot, first.generation, first.stream);
    }

    /// The upstream's answer to a chain request: through every filter's response callbacks,
    /// or the host's own answer when it could not be reached.
    fn chain_upstream_done(
        &self,
        key: u64,
        slots: &mut [VmSlot],
        state: &mut RunState,
        sent_at: std::time::Instant,
        result: Result<UpstreamResponse, String>,
    ) {
        let Some(request) = state.chains.get(&key) else {
            return;
        };
        let (upstream_via, reply) = self.upstream_reply(result, &request.headers, key);
        let mut response = match reply {
            Ok((headers, body)) => self.chain_response(request, slots, headers, body, ResponseOrigin::Upstream),
            Err(host_answer) => host_answer,
        };
        response.upstream_via = upstream_via;
        response.sent_upstream_at = Some(sent_at);
        if let Some(mut request) = state.chains.remove(&key) {
            self.finish_chain(&mut request, slots, response);
        }
    }

    /// A filter of the chain (`index`) answered with a local reply. The filter's own reply
    /// passes through the response callbacks of every filter of the chain, in order. The host's
    /// answer to a failed filter goes out as it is, and no filter of the chain is called again,
    /// not even to end its stream: ngx_wasm_module stops every later step at the filter that
    /// failed ("filter chain failed resuming: previous error", KONG-SRC ngx_proxy_wasm.c:479-493
    /// `action2rc`, checked before each filter of a step, the log and done steps included, which
    /// resume at that filter, :686-700), and frees the contexts without calling into them
    /// (:373-406 `ngx_proxy_wasm_ctx_destroy`; 007-on_http_instance_isolation.t TEST 2: after the
    /// trap neither filter gets a response, log or done step).
    fn chain_local_reply(&self, key: u64, index: usize, slots: &mut [VmSlot], state: &mut RunState) {
        let Some(request) = state.chains.get(&key) else {
            return;
        };
        let link = request.links[index];
        let Some(instance) = link_instance(slots, link) else {
            return;
        };
        let Some(local) = instance.vm.local_response(link.stream).cloned() else {
            return;
        };
        let passes = instance.vm.open_response_for_local_reply(link.stream);
        let response = if passes {
            let (headers, body) = self.profile.local_reply_response(&local, std::time::SystemTime::now());
            let response = self.chain_response(request, slots, headers, body, ResponseOrigin::Filter);
            GatewayResponse {
                reason: response
                    .reason
                    .clone()
                    .or(self.profile.local_reply_reason(&local.details)),
                ..response
            }
        } else {
            unfiltered_reply(&local)
        };
        let Some(mut request) = state.chains.remove(&key) else {
            return;
        };
        if passes {
            self.finish_chain(&mut request, slots, response);
            return;
        }
        if let Some(respond) = request.respond.take() {
            let _ = respond.send(response);
        }
        for link in &request.links {
            if let Some(instance) = link_instance(slots, *link) {
                instance.touched = true;
                instance.streams.remove(&link.stream);
                let _ = instance.vm.discard_stream(link.stream);
            }
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs a response (`headers` with `:status` first) through every filter's response
    /// callbacks in chain order (ngx_wasm_module's response steps run the chain from its first
    /// filter, KONG-SRC ngx_proxy_wasm.c:652-656), each handed the response as the filter before
    /// it left it; returns what the last one let out.
    fn chain_response(
        &self,
        request: &ChainRequest,
        slots: &mut [VmSlot],
        mut headers: Vec<(String, String)>,
        mut body: Vec<u8>,
        origin: ResponseOrigin,
    ) -> GatewayResponse {
        let mut out = None;
        for link in &request.links {
            let Some(instance) = link_instance(slots, *link) else {
                continue;
            };
            instance.touched = true;
            // The response the filter before left is what this one is handed.
            if let Some(previous) = out.take() {
                let GatewayResponse {
                    status,
                    headers: left,
                    body: left_body,
                    ..
                } = previous;
                headers = std::iter::once((":status".to_string(), status.to_string()))
                    .chain(left)
                    .collect();
                body = left_body;
            }
            let (handed, handed_body) = (std::mem::take(&mut headers), std::mem::take(&mut body));
            out = Some(self.through_response_filter(&mut instance.vm, link.stream, handed, handed_body, origin));
        }
        out.unwrap_or_else(|| plain(500, "host-sim: the filters' instances are gone\n"))
    }

    /// Answers a chain request and ends every filter's stream, in chain order.
    fn finish_chain(&self, request: &mut ChainRequest, slots: &mut [VmSlot], response: GatewayResponse) {
        if let Some(respond) = request.respond.take() {
            let _ = respond.send(response);
        }
        self.end_chain_streams(request, slots);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends every filter's stream of a chain request step by step, as ngx_wasm_module does:
    /// every filter's end callbacks before `proxy_on_delete` (its log step: `proxy_on_done`,
    /// `proxy_on_log`), in chain order, then every filter's `proxy_on_delete` (its done step)
    /// ([`Vm::log_stream`]).
    fn end_chain_streams(&self, request: &ChainRequest, slots: &mut [VmSlot]) {
        for link in &request.links {
            if let Some(instance) = link_instance(slots, *link) {
                let _ = instance.vm.log_stream(link.stream);
            }
        }
        for link in &request.links {
            if let Some(instance) = link_instance(slots, *link) {
                instance.touched = true;
                instance.streams.remove(&link.stream);
                let _ = instance.vm.finish_stream(link.stream);
            }
        }
    }

    fn finish(&self, instance: &mut Instance, stream: u32, mut response: GatewayResponse) {
        if let Some(p) = instance.streams.remove(&stream) {
            if let Some(key) = p.body_key {
                instance.bodies.remove(&key);
            }
            // An answer while a streamed body is still coming leaves the rest unread, as
            // `answered_before_body` (only Envoy's piecewise reading streams a body).
            if p.answered_before_body || p.body_key.is_some() {
                response.headers.push(("connection".into(), "close".into()));
            }
            if let Some(respond) = p.respond {
                let _ = respond.send(response);
            }
        }
        let _ = instance.vm.finish_stream(stream);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// A local reply that goes out as it is, through no response callback: the host's answer to a
/// failed filter, or a reply sent once a response had started.
fn unfiltered_reply(local: &LocalResponse) -> GatewayResponse {
    GatewayResponse {
        status: local.status as u16,
        headers: local.headers.clone(),
        body: local.body.clone(),
        framing: Framing::Computed,
        reason: None,
        origin: ResponseOrigin::Filter,
        upstream_via: None,
        sent_upstream_at: None,
    }
}

/// How a filter of a chain ended its request early.
#[derive(Clone, Copy)]
enum Settled {
    /// It sent a local reply (or trapped, which answers with the host's own reply).
    LocalReply,
    /// It reset its stream, or its stream is gone.
    Reset,
}

/// The first of `links` whose filter has ended the request (a local reply first, then a
/// reset), with its index.
fn settled_link(links: &[ChainLink], slots: &[VmSlot]) -> Option<(usize, Settled)> {
    links.iter().enumerate().find_map(|(index, link)| {
        let instance = (slots.get(link.slot)).and_then(|s| s.instances().find(|i| i.generation == link.generation))?;
        link_settled(&instance.vm, link.stream).map(|settled| (index, settled))
    })
}

/// Whether the filter on `stream` has ended its request: a local reply first, then a reset.
fn link_settled(vm: &Vm, stream: u32) -> Option<Settled> {
    if vm.local_response(stream).is_some() {
        Some(Settled::LocalReply)
    } else if vm.stream_reset(stream) || !vm.stream_exists(stream) {
        Some(Settled::Reset)
    } else {
        None
    }
}

/// Emits a guest log line at its own level under the `guest` target, so the guest's verbosity
/// is set apart from host-sim's own (`--guest-log-level`); Critical has no tracing level of its
/// own and goes out as an error that says so.
pub(super) fn guest_log(route: &str, thread: &dyn std::fmt::Display, line: &crate::LogEntry) {
    let message = &line.message;
    let worker = tracing::field::display(thread);
    match line.level {
        LogLevel::Trace => tracing::trace!(target: "guest", route, worker, "{message}"),
        LogLevel::Debug => tracing::debug!(target: "guest", route, worker, "{message}"),
        LogLevel::Info => tracing::info!(target: "guest", route, worker, "{message}"),
        LogLevel::Warn => tracing::warn!(target: "guest", route, worker, "{message}"),
        LogLevel::Error => tracing::error!(target: "guest", route, worker, "{message}"),
        LogLevel::Critical => tracing::error!(target: "guest", route, worker, critical = true, "{message}"),
    }
}

/// How a route's VMs start (for a shared slot, its first route's): the route's ids and `fail_open`, the deployment's upstreams as
/// clusters, real clocks and randomness.
pub(super) fn vm_options(
    profile: Profile,
    route: &Route,
    upstreams: &BTreeMap<String, SocketAddr>,
    shared: Arc<crate::state::Shared>,
) -> VmOptions {
    let mut options = VmOptions::new(profile);
    options.vm_id = route.vm_id.clone();
    options.plugin_name = route.plugin_name.clone();
    options.vm_configuration = route.vm_configuration.clone();
    options.clusters = upstreams.keys().cloned().collect();
    options.shared = Some(shared);
    options.fail_open = route.fail_open;
    // The callout task enforces each call's deadline, as the VM hands it out, on the real
    // request (`Worker::send_new_calls`).
    options.callouts_time_out = false;
    options.wasi = WasiOptions {
        real_clock: true,
        real_random: true,
        ..WasiOptions::default()
    };
    options
}

fn find(slot: &mut VmSlot, generation: u64) -> Option<&mut Instance> {
    slot.instances_mut().find(|i| i.generation == generation)
}

/// The instance a chain filter's stream lives on, while it is there.
fn link_instance(slots: &mut [VmSlot], link: ChainLink) -> Option<&mut Instance> {
    slots.get_mut(link.slot).and_then(|s| find(s, link.generation))
}

fn plain(status: u16, text: &str) -> GatewayResponse {
    GatewayResponse {
        status,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: text.as_bytes().to_vec(),
        framing: Framing::Computed,
        reason: None,
        origin: ResponseOrigin::Filter,
        upstream_via: None,
        sent_upstream_at: None,
    }
}
