//! The lifecycle driver: a running VM with a stateful, inspectable Rust API.
//!
//! A [`Vm`] owns one wasmtime `Store` (no global state: many VMs run in parallel in one
//! process). It creates root and HTTP contexts, feeds request and response events in the order
//! the profile's host would, records the [`Action`] of every callback, captures local responses
//! and outgoing calls, answers them, and moves a virtual clock that fires ticks and callout
//! timeouts. Every call into the guest goes through one choke point (`Vm::invoke`) that sets
//! the callback's context, deadline and fuel, contains traps and turns WASI output into logs.

use crate::abi::{Action, LogLevel, Pairs, MAIN_EXPORT, START_EXPORT};
use crate::engine::Module;
use crate::error::HostError;
use crate::limits::{Limits, EPOCH_TICK};
use crate::memory::GuestMemory;
use crate::profile::{
    AfterTrap, BodyDelivery, Callback, CalloutFailure, HostBehaviour, Profile, DEFAULT_CLIENT_BODY_BUFFER_BYTES,
};
pub use crate::state::ActionRecord;
use crate::state::{
    Active, CallbackData, Direction, ForeignFunction, GrpcCall, GrpcKind, HostState, HttpCall, LocalResponse, LogEntry,
    Metric, Queued, RootState, Shared, StreamInfo, StreamState,
};
use crate::wasi::{StdioCapture, WasiOptions};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Store, TypedFunc, WasmParams, WasmResults};

/// The filter's own local reply as the host handed it to the filter's response callbacks
/// ([`Vm::pass_local_reply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedLocalReply {
    /// The headers (`:status` first) the filter's `on_http_response_headers` was given.
    pub headers: Vec<(String, String)>,
    /// The body its `on_http_response_body` was given.
    pub body: Vec<u8>,
    /// Whether the filter trapped in those callbacks.
    pub trapped: bool,
}

/// A call the guest dispatched, as [`Vm::take_new_calls`] hands it to the transport: once,
/// when it is new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewCall {
    /// A `proxy_http_call`.
    Http {
        /// The call as the guest made it.
        call: HttpCall,
        /// What is left of its deadline ([`HttpCall::deadline_ns`], the profile's timeout
        /// counted from when the guest made the call) on the VM's clock now; `None` when the
        /// host waits as long as the upstream takes. The transport gives up on the request then.
        time_left: Option<Duration>,
    },
    /// A `proxy_grpc_call` or `proxy_grpc_stream`, as opened (what the guest does on it later
    /// is read with [`Vm::grpc_progress`]).
    Grpc {
        /// The call as the guest opened it.
        call: GrpcCall,
        /// What is left of a unary call's deadline ([`GrpcCall::deadline_ns`]) on the VM's
        /// clock now; `None` for streams and calls without a timeout.
        time_left: Option<Duration>,
    },
}

/// What the guest did on an open gRPC call or stream since a transport last looked
/// ([`Vm::grpc_progress`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcProgress {
    /// Messages sent after the first `from` ones (`proxy_grpc_send`).
    pub messages: Vec<Vec<u8>>,
    /// The guest half-closed its side (`end_stream`, or `proxy_grpc_close` on a stream; always
    /// so for a unary call).
    pub end_stream_sent: bool,
    /// The guest ended it: the host resets it and gives it no more callbacks
    /// ([`crate::state::GrpcCall::ended_by_guest`]).
    pub ended_by_guest: bool,
}

/// How to start a VM.
#[derive(Clone)]
pub struct VmOptions {
    /// Which host to behave like.
    pub profile: Profile,
    /// The VM id (Envoy `vm_config.vm_id`); shared data and queues are scoped by it.
    pub vm_id: String,
    /// The plugin (filter) name: Envoy `config.name`, Kong filter name.
    pub plugin_name: String,
    /// Bytes of `VM_CONFIGURATION`, given to `proxy_on_vm_start`.
    pub vm_configuration: Vec<u8>,
    /// Upstream clusters `proxy_http_call` and gRPC accept (Envoy profile).
    pub clusters: Vec<String>,
    /// Accept every upstream name as a configured cluster (Envoy profile), for runs where the
    /// deployment's clusters are not known (`host-sim run` without `--cluster`).
    pub any_cluster: bool,
    /// Resource limits.
    pub limits: Limits,
    /// WASI clocks, randomness, environment.
    pub wasi: WasiOptions,
    /// The host log level: lower guest log lines are dropped, as hosts do.
    pub log_level: LogLevel,
    /// Shared data, queues and metrics; pass the same one to VMs that should share them.
    pub shared: Option<Arc<Shared>>,
    /// nginx's `client_body_buffer_size` (Kong: `nginx_http_client_body_buffer_size`): a larger
    /// request body is buffered to a file the filter cannot read (Kong profile only; see
    /// [`crate::profile::HostBehaviour::request_body_readable`]).
    pub client_body_buffer_bytes: usize,
    /// Envoy's `fail_open`: once the VM has failed, streams pass without the filter instead of
    /// failing closed ([`crate::profile::AfterTrap::StayFailed`]). Kong has no such setting.
    pub fail_open: bool,
    /// Whether the VM itself answers a callout that passes its deadline
    /// ([`HttpCall::deadline_ns`](crate::HttpCall), from the profile's timeout) with the
    /// profile's timeout failure. On by default; `serve` turns it off because its HTTP client
    /// enforces the same deadline on the real request and reports the timeout, so whether the
    /// upstream answered in time is decided in one place.
    pub callouts_time_out: bool,
}

impl VmOptions {
    /// Defaults for a profile: deterministic WASI, Envoy-like limits, log everything.
    pub fn new(profile: Profile) -> Self {
        VmOptions {
            profile,
            vm_id: String::new(),
            plugin_name: "filter".into(),
            vm_configuration: Vec::new(),
            clusters: Vec::new(),
            any_cluster: false,
            limits: Limits::default(),
            wasi: WasiOptions::default(),
            log_level: LogLevel::Trace,
            shared: None,
            client_body_buffer_bytes: DEFAULT_CLIENT_BODY_BUFFER_BYTES,
            fail_open: false,
            callouts_time_out: true,
        }
    }
}

/// A root context as created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RootContext {
    /// Its context id.
    pub id: u32,
    /// What `proxy_on_vm_start` returned (true when not exported).
    pub vm_start_ok: bool,
    /// What `proxy_on_configure` returned (true when not exported).
    pub configure_ok: bool,
}

/// How a callout ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpCallReply {
    /// The upstream answered.
    Response {
        /// HTTP status.
        status: u16,
        /// Response headers (without `:status`).
        headers: Vec<(String, String)>,
        /// Response body.
        body: Vec<u8>,
        /// Response trailers.
        trailers: Vec<(String, String)>,
    },
    /// The callout failed; the profile decides what the guest sees.
    Failure(CalloutFailure),
}

/// An answer to a gRPC call or stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcReply {
    /// Initial metadata (`proxy_on_grpc_receive_initial_metadata`), if any.
    pub initial_metadata: Option<Vec<(String, String)>>,
    /// Messages (`proxy_on_grpc_receive` each).
    pub messages: Vec<Vec<u8>>,
    /// Trailing metadata, if any.
    pub trailing_metadata: Option<Vec<(String, String)>>,
    /// gRPC status for `proxy_on_grpc_close`; `None` keeps the stream open.
    pub close: Option<(u32, String)>,
}

/// A guest-side failure that ended a callback, or why no guest code ran.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Trapped {
    reason: String,
    /// The VM had failed before the callback (or the context lived on an instance that
    /// trapped): the guest was not called at all.
    before: bool,
}

/// An exported callback, if the module has it. Behind an `Arc` because every callback clones
/// its function out of [`Exports`] (the call borrows the store mutably), and cloning a
/// `TypedFunc` clones its registered type.
type Export<P, R> = Option<Arc<TypedFunc<P, R>>>;

#[derive(Clone)]
struct Exports {
    context_create: Export<(u32, u32), ()>,
    vm_start: Export<(u32, u32), u32>,
    configure: Export<(u32, u32), u32>,
    tick: Export<u32, ()>,
    queue_ready: Export<(u32, u32), ()>,
    foreign_function: Export<(u32, u32, u32), ()>,
    request_headers: Export<(u32, u32, u32), u32>,
    request_body: Export<(u32, u32, u32), u32>,
    request_trailers: Export<(u32, u32), u32>,
    response_headers: Export<(u32, u32, u32), u32>,
    response_body: Export<(u32, u32, u32), u32>,
    response_trailers: Export<(u32, u32), u32>,
    /// `proxy_on_http_call_response(context, token, headers, body_size, trailers)`.
    http_call_response: Export<(u32, u32, u32, u32, u32), ()>,
    grpc_initial_metadata: Export<(u32, u32, u32), ()>,
    grpc_receive: Export<(u32, u32, u32), ()>,
    grpc_trailing_metadata: Export<(u32, u32, u32), ()>,
    grpc_close: Export<(u32, u32, u32), ()>,
    done: Export<u32, u32>,
    log: Export<u32, ()>,
    delete: Export<u32, ()>,
}

/// A running VM: one instance of a module and the host state around it.
pub struct Vm {
    store: Store<HostState>,
    exports: Exports,
    failed: Option<String>,
    /// Every callback's deadline in epoch ticks, from `options.limits` ([`deadline_ticks`]),
    /// computed once (it takes a 128-bit division).
    deadline_ticks: u64,
    sha256: String,
    client_body_buffer_bytes: usize,
    /// What the VM was started from, to start a fresh instance after a trap (Kong).
    module: Module,
    options: VmOptions,
    /// Streams whose guest context lived on an instance that trapped: no guest code runs for
    /// them on the fresh one.
    stale_streams: HashSet<u32>,
    /// Streams whose end callbacks before `proxy_on_delete` have run ([`Vm::log_stream`]).
    logged_streams: HashSet<u32>,
    /// `proxy_on_tick` calls made so far (guest code ran or not), for drivers that report what
    /// a stretch of time did.
    ticks_fired: u64,
    /// The last call token [`Vm::take_new_calls`] has looked at: the calls made since are
    /// the pending ones with a later token.
    calls_seen_up_to: u32,
    /// The actions of the last finished streams, oldest first ([`FINISHED_ACTIONS_KEPT`]): only
    /// [`Vm::actions`] reads them, so they sit in finishing order, added and dropped at the ends.
    finished: VecDeque<(u32, Vec<ActionRecord>)>,
    /// The emptied action list of the finished stream that left [`Vm::finished`] last, for the
    /// next stream to record into (no allocation per stream once `finished` is full).
    spare_actions: Option<Vec<ActionRecord>>,
    /// The last finished stream's state, emptied ([`StreamState::recycle`]), for the next
    /// stream: no allocation, and no kilobyte of state built and copied, per stream.
    spare_stream: Option<Box<StreamState>>,
    /// Header maps of finished streams, emptied, whose allocations the next streams' headers
    /// reuse ([`SPARE_MAPS`]).
    spare_maps: Vec<Pairs>,
}

/// How many finished streams' [`Vm::actions`] stay readable: a transport that runs for ever
/// (`serve`) must not keep a record for every stream it ever had.
pub const FINISHED_ACTIONS_KEPT: usize = 1024;

/// How many callbacks' actions one stream records ([`Vm::actions`]): a stream that lives long
/// and gets many events (a gRPC stream's messages, a body in many chunks) must not make its
/// record grow without bound; the first ones are kept, which is what a transcript reads.
pub const MAX_ACTIONS_PER_STREAM: usize = 4096;

/// The largest action list kept for the next stream to record into: an ordinary lifecycle
/// needs a handful, and a long stream's list must not stay allocated for ever.
const SPARE_ACTIONS_CAPACITY: usize = 64;

/// Most emptied header maps kept for reuse, and the most bytes one may hold to be kept: a
/// stream's headers are then copied into allocations a finished stream left instead of two new
/// ones per header.
const SPARE_MAPS: usize = 8;
const SPARE_MAP_MAX_BYTES: usize = 16 * 1024;

impl Vm {
    /// Instantiates `module` and runs its start functions (spec "Integration").
    ///
    /// A module with an import the profile's host cannot link is refused here, as the real host
    /// refuses to load it ([`crate::profile::HostBehaviour::links`]). host-sim's own linker links
    /// such imports as traps ([`Module`]), so `info` can still load the module and report them.
    pub fn start(module: &Module, options: VmOptions) -> Result<Vm, HostError> {
        let info = module.info();
        let unlinkable: Vec<String> = info
            .imports
            .iter()
            .filter(|import| {
                let (from, name) = import.split_once('.').unwrap_or(("", import));
                !options.profile.links(info.abi_version.as_deref(), from, name)
            })
            .cloned()
            .collect();
        if !unlinkable.is_empty() {
            return Err(HostError::Unlinkable {
                profile: options.profile.name(),
                imports: unlinkable,
            });
        }
        let shared = options.shared.clone().unwrap_or_default();
        let mut state = HostState::new(
            options.profile,
            options.log_level,
            &options.limits,
            &options.wasi,
            shared,
        );
        state.vm_id = options.vm_id.clone();
        state.plugin_name = options.plugin_name.clone();
        state.vm_configuration = options.vm_configuration.clone();
        state.set_upstreams(options.clusters.clone(), options.any_cluster);
        let mut store = Store::new(&module.engine.engine, state);
        store.limiter(|s| s.store_limits_mut());
        store.epoch_deadline_trap();
        // Start functions get the same deadline as callbacks.
        let deadline_ticks = deadline_ticks(&options.limits);
        Self::arm(&mut store, deadline_ticks, options.limits.fuel_per_callback);
        let instance = module
            .pre
            .instantiate(&mut store)
            .map_err(|e| HostError::Instantiate(format!("{e:#}")))?;
        let memory = instance.get_memory(&mut store, "memory");
        let allocate = instance
            .get_typed_func::<u32, u32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<u32, u32>(&mut store, "malloc"))
            .ok();
        store.data_mut().set_memory(GuestMemory::new(memory, allocate));

        // Export names are written once, in `Callback` (abi.rs).
        macro_rules! export {
            ($callback:ident) => {{
                let name = Callback::$callback.export_name();
                match instance.get_func(&mut store, name) {
                    None => None,
                    Some(f) => Some(Arc::new(
                        f.typed(&store).map_err(|_| HostError::BadExport(name.into()))?,
                    )),
                }
            }};
        }
        let exports = Exports {
            context_create: export!(ContextCreate),
            vm_start: export!(VmStart),
            configure: export!(Configure),
            tick: export!(Tick),
            queue_ready: export!(QueueReady),
            foreign_function: export!(ForeignFunction),
            request_headers: export!(RequestHeaders),
            request_body: export!(RequestBody),
            request_trailers: export!(RequestTrailers),
            response_headers: export!(ResponseHeaders),
            response_body: export!(ResponseBody),
            response_trailers: export!(ResponseTrailers),
            http_call_response: export!(HttpCallResponse),
            grpc_initial_metadata: export!(GrpcReceiveInitialMetadata),
            grpc_receive: export!(GrpcReceive),
            grpc_trailing_metadata: export!(GrpcReceiveTrailingMetadata),
            grpc_close: export!(GrpcClose),
            done: export!(Done),
            log: export!(Log),
            delete: export!(Delete),
        };

        let mut has = |name: &str| instance.get_func(&mut store, name).is_some();
        let (has_init, has_main, has_start) = (has(Callback::Start.export_name()), has(MAIN_EXPORT), has(START_EXPORT));
        let mut vm = Vm {
            store,
            exports,
            failed: None,
            deadline_ticks,
            sha256: module.sha256().to_string(),
            client_body_buffer_bytes: options.client_body_buffer_bytes,
            module: module.clone(),
            options: options.clone(),
            stale_streams: HashSet::new(),
            logged_streams: HashSet::new(),
            ticks_fired: 0,
            calls_seen_up_to: 0,
            finished: VecDeque::new(),
            spare_actions: None,
            spare_stream: None,
            spare_maps: Vec::new(),
        };
        for name in options.profile.start_functions(has_init, has_main, has_start) {
            let result = if name == MAIN_EXPORT {
                let f = instance
                    .get_typed_func::<(u32, u32), u32>(&mut vm.store, MAIN_EXPORT)
                    .map_err(|_| HostError::BadExport(MAIN_EXPORT.into()))?;
                vm.invoke(Callback::Start, 0, None, Some(Arc::new(f)), (0, 0))
                    .map(|_| ())
            } else {
                let f = instance
                    .get_typed_func::<(), ()>(&mut vm.store, name)
                    .map_err(|_| HostError::BadExport(name.into()))?;
                vm.invoke(Callback::Start, 0, None, Some(Arc::new(f)), ()).map(|_| ())
            };
            result.map_err(|t| HostError::Start(t.reason))?;
        }
        Ok(vm)
    }

    /// Arms one callback's bounds: its deadline, `ticks` epochs from now ([`deadline_ticks`]),
    /// and its fuel when the VM meters fuel.
    fn arm(store: &mut Store<HostState>, ticks: u64, fuel: Option<u64>) {
        store.set_epoch_deadline(ticks);
        if let Some(fuel) = fuel {
            // Fails only when the engine has fuel disabled, which `Limits` documents.
            let _ = store.set_fuel(fuel);
        }
    }

    /// The one choke point for calling into the guest: sets the callback context, deadline and
    /// fuel; contains a trap (the VM is then failed, as Envoy marks a crashed VM); turns WASI
    /// output into log lines. `Ok(None)` when the guest does not export the callback.
    fn invoke<P: WasmParams, R: WasmResults>(
        &mut self,
        callback: Callback,
        context_id: u32,
        data: Option<Box<CallbackData>>,
        func: Export<P, R>,
        params: P,
    ) -> Result<Option<R>, Trapped> {
        // Whether the guest runs or not, the host moves the context's stream on after this.
        self.store.data_mut().touch_stream(context_id);
        if let Some(reason) = &self.failed {
            return Err(Trapped {
                reason: reason.clone(),
                before: true,
            });
        }
        if !self.stale_streams.is_empty() && self.stale_streams.contains(&context_id) {
            return Err(Trapped {
                reason: "the context lived on an instance that trapped".into(),
                before: true,
            });
        }
        let Some(func) = func else {
            return Ok(None);
        };
        // The store's limits are these options' (`Vm::start`): armed without copying them.
        Self::arm(
            &mut self.store,
            self.deadline_ticks,
            self.options.limits.fuel_per_callback,
        );
        self.store.data_mut().active = Some(Active {
            callback,
            effective_id: context_id,
            data,
        });
        let result = func.call(&mut self.store, params);
        self.store.data_mut().active = None;
        self.drain_stdio();
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                // `_start` of a WASI command ends with proc_exit(0): that is success.
                if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    if exit.0 == 0 {
                        return Ok(None);
                    }
                }
                let message = format!("{} trapped: {}", callback.transcript_name(), trap_message(&e));
                self.store.data_mut().push_log(LogLevel::Critical, message.clone());
                self.failed = Some(message.clone());
                Err(Trapped {
                    reason: message,
                    before: false,
                })
            }
        }
    }

    /// Runs after every callback: one atomic swap, inline, when the guest wrote nothing (the
    /// usual case); otherwise the sinks are drained in place (no clone of their `Arc`s).
    #[inline]
    fn drain_stdio(&mut self) {
        if self.store.data().stdio().take_written() {
            self.drain_written_stdio();
        }
    }

    fn drain_written_stdio(&mut self) {
        for (stdout, level) in [(true, LogLevel::Info), (false, LogLevel::Error)] {
            let (lines, dropped) = {
                let stdio = self.store.data().stdio();
                StdioCapture::drain(if stdout { &stdio.stdout } else { &stdio.stderr })
            };
            let state = self.store.data_mut();
            for line in lines {
                state.push_log(level, line);
            }
            if dropped > 0 {
                state.push_log(
                    LogLevel::Warn,
                    format!("host-sim: dropped {dropped} bytes of guest output over the limit"),
                );
            }
        }
    }

    // ---- Contexts ---------------------------------------------------------------------------

    fn next_id(&mut self) -> u32 {
        self.store.data_mut().allocate_context_id()
    }

    /// Creates a root (plugin) context: `proxy_on_context_create(id, 0)`, then
    /// `proxy_on_vm_start` and `proxy_on_configure` with `configuration` as
    /// `PLUGIN_CONFIGURATION` (proxy-wasm-cpp-host `start` then `configure`).
    pub fn create_root_context(&mut self, root_id: &str, configuration: &[u8]) -> Result<RootContext, HostError> {
        let id = self.store.data_mut().allocate_root_context_id(configuration);
        self.store.data_mut().roots.insert(
            id,
            RootState {
                root_id: root_id.to_string(),
                configuration: configuration.to_vec(),
                ..RootState::default()
            },
        );
        self.root_context_create(id)?;
        let vm_config = self.store.data().vm_configuration.clone();
        let len = vm_config.len() as u32;
        let f = self.exports.vm_start.clone();
        let vm_start_ok = self
            .invoke(Callback::VmStart, id, buffer_data(vm_config), f, (id, len))
            .map_err(vm_failed)?
            .is_none_or(|r| r != 0);
        let configure_ok = self.configure_root(id, configuration.to_vec())?;
        self.after_root_callback();
        Ok(RootContext {
            id,
            vm_start_ok,
            configure_ok,
        })
    }

    /// `proxy_on_context_create(id, 0)`: the guest creates root context `id`.
    fn root_context_create(&mut self, id: u32) -> Result<(), HostError> {
        let f = self.exports.context_create.clone();
        self.invoke(Callback::ContextCreate, id, None, f, (id, 0))
            .map_err(vm_failed)?;
        Ok(())
    }

    /// `proxy_on_configure` with `configuration` as `PLUGIN_CONFIGURATION`: whether root `id`
    /// accepted it (a guest that returns nothing accepts).
    fn configure_root(&mut self, id: u32, configuration: Vec<u8>) -> Result<bool, HostError> {
        let len = configuration.len() as u32;
        let f = self.exports.configure.clone();
        Ok(self
            .invoke(Callback::Configure, id, buffer_data(configuration), f, (id, len))
            .map_err(vm_failed)?
            .is_none_or(|r| r != 0))
    }

    /// Opens an HTTP stream under `root` (`proxy_on_context_create(id, root)`).
    pub fn create_http_stream(&mut self, root: u32) -> Result<u32, HostError> {
        self.create_http_stream_with(root, StreamInfo::default())
    }

    /// Opens an HTTP stream with explicit connection facts (addresses, protocol, request id).
    pub fn create_http_stream_with(&mut self, root: u32, info: StreamInfo) -> Result<u32, HostError> {
        if !self.store.data().roots.contains_key(&root) {
            return Err(HostError::WrongContext(root, "a root context"));
        }
        if self.failed.is_some() && self.profile().after_trap() == AfterTrap::FreshInstance {
            self.start_fresh_instance()?;
        }
        // A root kept dormant from a trapped instance is created again before its stream.
        self.wake_root(root)?;
        let id = self.next_id();
        let mut state = match self.spare_stream.take() {
            Some(mut spare) => {
                spare.renew(root, info);
                spare
            }
            None => Box::new(StreamState::new(root, info)),
        };
        // Room for a whole ordinary lifecycle (headers, body, a callout's answer, the three end
        // callbacks, a response), so recording never reallocates.
        state.actions = self.spare_actions.take().unwrap_or_else(|| Vec::with_capacity(8));
        self.store.data_mut().insert_stream(id, state);
        if self.failed.is_some() {
            // A VM that stays failed (Envoy) still gets the stream; its first callback fails
            // it closed, or lets it pass under `fail_open` (`after_stream_callback`).
            return Ok(id);
        }
        let f = self.exports.context_create.clone();
        if self.invoke(Callback::ContextCreate, id, None, f, (id, root)).is_err() {
            self.fail_closed(id);
        }
        Ok(id)
    }

    // A `match`, not `ok_or`: the error is built only when there is no stream (`ok_or` built
    // and dropped one on every call).
    fn stream(&self, id: u32) -> Result<&StreamState, HostError> {
        match self.store.data().streams.get(&id) {
            Some(stream) => Ok(stream),
            None => Err(HostError::NoSuchContext(id)),
        }
    }

    fn stream_mut(&mut self, id: u32) -> Result<&mut StreamState, HostError> {
        match self.store.data_mut().streams.get_mut(&id) {
            Some(stream) => Ok(stream),
            None => Err(HostError::NoSuchContext(id)),
        }
    }

    // ---- Request and response events ------------------------------------------------------

    /// Request headers arrive. `end_of_stream` says whether a body follows; the guest sees what
    /// the profile's host passes (Kong: always false). `Ok(None)` when the host does not call
    /// the filter (stream already answered, or the callback is not exported).
    pub fn send_request_headers<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        stream: u32,
        headers: &[(K, V)],
        end_of_stream: bool,
    ) -> Result<Option<Action>, HostError> {
        let profile = self.profile();
        if self.stream(stream)?.ended() {
            return Ok(None);
        }
        let pairs = self.pairs_from(profile, headers);
        let count = u32::try_from(profile.headers_count(&pairs)).unwrap_or(u32::MAX);
        let st = self.stream_mut(stream)?;
        st.request.set_headers(pairs);
        if end_of_stream {
            st.request.complete = true;
        }
        let eos = profile.headers_end_of_stream(end_of_stream) as u32;
        let f = self.exports.request_headers.clone();
        let result = self.invoke(Callback::RequestHeaders, stream, None, f, (stream, count, eos));
        self.after_stream_callback(stream, Callback::RequestHeaders, result)
    }

    /// A chunk of request body arrives.
    pub fn send_request_body(
        &mut self,
        stream: u32,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Option<Action>, HostError> {
        self.send_body(stream, true, chunk, end_of_stream)
    }

    /// A chunk of body in one direction: queued while the filter holds that direction's headers
    /// (Envoy stops iteration: body data waits until the filter continues, ENVOY-1.40); a request
    /// body staged until its end on a host that delivers it whole (Kong); else delivered as it
    /// comes (both hosts deliver response chunks as they come).
    fn send_body(
        &mut self,
        stream: u32,
        request: bool,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Option<Action>, HostError> {
        let profile = self.profile();
        let st = self.stream_mut(stream)?;
        if st.closed(request) {
            return Ok(None);
        }
        let dir = st.direction_mut(request);
        if end_of_stream {
            dir.complete = true;
        }
        if dir.paused_in == Some(headers_callback(request)) {
            dir.queued.push_back(Queued::Body(chunk.to_vec(), end_of_stream));
            return Ok(None);
        }
        if request && profile.request_body_delivery() == BodyDelivery::WholeOnce {
            dir.staged_body.extend_from_slice(chunk);
            if !end_of_stream {
                return Ok(None);
            }
            return self.deliver_whole_request_body(stream);
        }
        self.deliver_body(stream, request, chunk, end_of_stream)
    }

    /// The end of a request body a whole-body host (Kong) staged: one call with all of it and
    /// end of stream, none for an empty body, and a body larger than the client body buffer is
    /// announced with its size but cannot be read ([`BodyDelivery::WholeOnce`]).
    fn deliver_whole_request_body(&mut self, stream: u32) -> Result<Option<Action>, HostError> {
        let (profile, buffer) = (self.profile(), self.client_body_buffer_bytes);
        let st = self.stream_mut(stream)?;
        let whole = std::mem::take(&mut st.request.staged_body);
        if whole.is_empty() {
            return Ok(None);
        }
        st.request.body_in_temp_file = !profile.request_body_readable(whole.len(), buffer);
        self.deliver_body(stream, true, &whole, true)
    }

    /// Request trailers arrive (ending the request).
    pub fn send_request_trailers<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        stream: u32,
        trailers: &[(K, V)],
    ) -> Result<Option<Action>, HostError> {
        let pairs = to_pairs(self.profile(), trailers);
        self.send_trailers(stream, true, pairs)
    }

    /// Trailers end one direction of a stream: queued while the filter holds that direction's
    /// headers (Envoy stops iteration), else delivered, after the request body a whole-body host
    /// still holds. Request trailers are not delivered on a host without that callback (Kong,
    /// [`crate::profile::HostBehaviour::delivers_request_trailers`]): they only end the body.
    fn send_trailers(&mut self, stream: u32, request: bool, pairs: Pairs) -> Result<Option<Action>, HostError> {
        let st = self.stream_mut(stream)?;
        if st.closed(request) {
            return Ok(None);
        }
        let dir = st.direction_mut(request);
        dir.complete = true;
        if dir.paused_in == Some(headers_callback(request)) {
            dir.queued.push_back(Queued::Trailers(pairs));
            return Ok(None);
        }
        if request {
            let profile = self.profile();
            let flushed = if profile.request_body_delivery() == BodyDelivery::WholeOnce {
                self.deliver_whole_request_body(stream)?
            } else {
                None
            };
            if self.stream(stream)?.ended() {
                return Ok(None);
            }
            if !profile.delivers_request_trailers() {
                // The trailers only end the request; the host keeps them (readable as a map)
                // and the action is the body's, if the body was delivered.
                self.stream_mut(stream)?.request.trailers = Some(pairs);
                return Ok(flushed);
            }
        }
        self.deliver_trailers(stream, request, pairs)
    }

    /// Response headers arrive from upstream.
    pub fn send_response_headers<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        stream: u32,
        headers: &[(K, V)],
        end_of_stream: bool,
    ) -> Result<Option<Action>, HostError> {
        if self.stream(stream)?.closed(false) {
            return Ok(None);
        }
        let profile = self.profile();
        let pairs = self.pairs_from(profile, headers);
        let count = u32::try_from(profile.headers_count(&pairs)).unwrap_or(u32::MAX);
        let st = self.stream_mut(stream)?;
        st.response.set_headers(pairs);
        if end_of_stream {
            st.response.complete = true;
        }
        let eos = profile.headers_end_of_stream(end_of_stream) as u32;
        let f = self.exports.response_headers.clone();
        let result = self.invoke(Callback::ResponseHeaders, stream, None, f, (stream, count, eos));
        self.after_stream_callback(stream, Callback::ResponseHeaders, result)
    }

    /// A chunk of response body arrives.
    pub fn send_response_body(
        &mut self,
        stream: u32,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Option<Action>, HostError> {
        self.send_body(stream, false, chunk, end_of_stream)
    }

    /// Response trailers arrive.
    pub fn send_response_trailers<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        stream: u32,
        trailers: &[(K, V)],
    ) -> Result<Option<Action>, HostError> {
        let pairs = to_pairs(self.profile(), trailers);
        self.send_trailers(stream, false, pairs)
    }

    fn deliver_body(
        &mut self,
        stream: u32,
        request: bool,
        chunk: &[u8],
        eos: bool,
    ) -> Result<Option<Action>, HostError> {
        let st = self.stream_mut(stream)?;
        let dir = st.direction_mut(request);
        // While paused in the body phase the host buffers and reports the cumulative size.
        dir.receive_body(chunk);
        dir.body_available = !dir.body_in_temp_file;
        let size = dir.body.len() as u32;
        let (callback, f) = if request {
            (Callback::RequestBody, self.exports.request_body.clone())
        } else {
            (Callback::ResponseBody, self.exports.response_body.clone())
        };
        let result = self.invoke(callback, stream, None, f, (stream, size, eos as u32));
        self.after_stream_callback(stream, callback, result)
    }

    fn deliver_trailers(&mut self, stream: u32, request: bool, pairs: Pairs) -> Result<Option<Action>, HostError> {
        let count = pairs.len() as u32;
        let st = self.stream_mut(stream)?;
        let dir = st.direction_mut(request);
        dir.set_trailers(pairs);
        let (callback, f) = if request {
            (Callback::RequestTrailers, self.exports.request_trailers.clone())
        } else {
            (Callback::ResponseTrailers, self.exports.response_trailers.clone())
        };
        let result = self.invoke(callback, stream, None, f, (stream, count));
        self.after_stream_callback(stream, callback, result)
    }

    /// Applies what a stream callback asked for: its action, a local response, a reset,
    /// `proxy_continue_stream`, then queued notifications and `proxy_done`.
    fn after_stream_callback(
        &mut self,
        stream: u32,
        callback: Callback,
        result: Result<Option<u32>, Trapped>,
    ) -> Result<Option<Action>, HostError> {
        let action = match result {
            Err(trapped) if self.passes_failed_streams() || self.response_passes_trap(callback) => {
                // `CHECK_FAIL_HTTP` under `fail_open`: the stream continues without the filter;
                // a trapping call itself returned 0, Continue (proxy-wasm-cpp-host
                // wasmtime.cc: a failed call returns `R{}`).
                if !trapped.before {
                    self.record(stream, callback, None);
                }
                self.settle_stream(stream, Some(callback), Some(Action::Continue));
                return Ok(None);
            }
            Err(_) => {
                self.record(stream, callback, None);
                self.fail_closed(stream);
                return Ok(None);
            }
            // Not exported: the host continues.
            Ok(None) => Some(Action::Continue),
            // Any non-zero value pauses, as Envoy treats unknown values as stop-iteration.
            Ok(Some(raw)) => Some(Action::from_raw(raw).unwrap_or(Action::Pause)),
        };
        self.record(stream, callback, action);
        self.settle_stream(stream, Some(callback), action);
        self.after_root_callback();
        Ok(action)
    }

    /// Whether a trap in `callback` lets the response go on without the filter (the profile's
    /// [`crate::profile::HostBehaviour::response_trap_fails_open`], response callbacks only).
    fn response_passes_trap(&self, callback: Callback) -> bool {
        matches!(
            callback,
            Callback::ResponseHeaders | Callback::ResponseBody | Callback::ResponseTrailers
        ) && self.profile().response_trap_fails_open()
    }

    /// Whether streams of a failed VM pass without the filter (Envoy `fail_open`).
    fn passes_failed_streams(&self) -> bool {
        self.options.fail_open && self.profile().after_trap() == AfterTrap::StayFailed && self.failed.is_some()
    }

    /// Replaces a trapped instance with a fresh one of the same module (Kong,
    /// [`AfterTrap::FreshInstance`]): host-side state carries over (clock, logs, context ids,
    /// shared state, properties, foreign functions), every root context is kept dormant, to be
    /// created and configured again without `proxy_on_vm_start` when it is next used
    /// ([`Vm::wake_root`]: the caller wakes the root whose stream starts the fresh instance),
    /// and the streams of the trapped instance become stale (no guest code runs for them; they
    /// fail closed).
    fn start_fresh_instance(&mut self) -> Result<(), HostError> {
        let mut options = self.options.clone();
        options.shared = Some(self.shared());
        let mut fresh = Vm::start(&self.module, options)?;
        let now = self.now_ns();
        {
            let old = self.store.data_mut();
            let new = fresh.store.data_mut();
            new.clock.set_ns(now);
            new.adopt(old);
            // The trapped instance's callouts are dropped with it; its streams stay so the
            // host can still answer and end them.
            new.adopt_streams(old);
            self.stale_streams.extend(new.streams.keys().copied());
        }
        let stale: Vec<u32> = self.stale_streams.iter().copied().collect();
        // Timers armed on the trapped instance that stay armed (profile
        // `tick_timers_outlive_instance`): one per root with a period, plus those it inherited.
        let keeps_timers = self.profile().tick_timers_outlive_instance();
        let roots: Vec<(u32, String, Vec<u8>, u32)> = (self.store.data().roots.iter())
            .map(|(id, r)| {
                let armed = (u32::from(r.tick_period_ms > 0) + r.inherited_tick_timers)
                    .min(crate::limits::MAX_INHERITED_TICK_TIMERS);
                let timers = if keeps_timers { armed } else { 0 };
                (*id, r.root_id.clone(), r.configuration.clone(), timers)
            })
            .collect();
        std::mem::swap(&mut self.store, &mut fresh.store);
        self.exports = fresh.exports.clone();
        let reason = self.failed.take().unwrap_or_default();
        for stream in stale {
            self.fail_closed(stream);
        }
        self.store.data_mut().push_log(
            LogLevel::Warn,
            format!("host-sim: a fresh instance replaces the one that trapped ({reason})"),
        );
        for (id, root_id, configuration, timers) in roots {
            self.store.data_mut().roots.insert(
                id,
                RootState {
                    root_id,
                    configuration,
                    inherited_tick_timers: timers,
                    dormant: true,
                    ..RootState::default()
                },
            );
        }
        Ok(())
    }

    /// Creates and configures, on the fresh instance, a root context kept from one that trapped
    /// ([`RootState::dormant`]); nothing for any other root. ngx_wasm_module re-creates a
    /// filter's root context on the new instance when that filter next runs, looked up by the
    /// filter's id (KONG-SRC ngx_proxy_wasm.c:1146-1249 `ngx_proxy_wasm_create_context`:
    /// `proxy_on_context_create`, no `proxy_on_vm_start`, `proxy_on_configure`), so every filter
    /// sharing the instance gets its root back on its own next request.
    fn wake_root(&mut self, id: u32) -> Result<(), HostError> {
        let configuration = match self.store.data_mut().roots.get_mut(&id) {
            Some(root) if root.dormant => {
                root.dormant = false;
                root.configuration.clone()
            }
            _ => return Ok(()),
        };
        self.root_context_create(id)?;
        let configured = self.configure_root(id, configuration)?;
        if let Some(root) = self.store.data_mut().roots.get_mut(&id) {
            // The inherited timers re-arm only while the root has a period again.
            if root.tick_period_ms == 0 {
                root.inherited_tick_timers = 0;
            }
        }
        if !configured {
            // ngx_wasm_module fails only the request with NGX_PROXY_WASM_ERR_CONFIGURE_FAILED and
            // leaves the root unstarted (`rexec->started` stays 0, KONG-SRC ngx_proxy_wasm.c:
            // 1243-1249), so the filter's next run creates and configures it again; the instance
            // and every other filter on it go on.
            if let Some(root) = self.store.data_mut().roots.get_mut(&id) {
                root.dormant = true;
            }
            return Err(HostError::RootConfigureFailed(id));
        }
        self.after_root_callback();
        Ok(())
    }

    fn settle_stream(&mut self, stream: u32, callback: Option<Callback>, action: Option<Action>) {
        let profile = self.profile();
        let Some(st) = self.store.data_mut().streams.get_mut(&stream) else {
            return;
        };
        if st.pending_local_response.is_none() {
            // The usual case: one lookup, and the resumption loop only when a direction asked.
            if st.closed(true) && st.closed(false) {
                return;
            }
            apply_action(st, callback, action);
            if !st.request.resume_requested && !st.response.resume_requested {
                return;
            }
        } else {
            self.settle_local_response(stream, callback, profile);
            let Some(st) = self.store.data_mut().streams.get_mut(&stream) else {
                return;
            };
            if st.closed(true) && st.closed(false) {
                return;
            }
            apply_action(st, callback, action);
        }
        for request in [true, false] {
            let Some(st) = self.store.data_mut().streams.get_mut(&stream) else {
                return;
            };
            if st.closed(request) {
                continue;
            }
            let dir = st.direction_mut(request);
            if std::mem::take(&mut dir.resume_requested) {
                if let Some(paused) = dir.paused_in.take() {
                    forward(dir, paused);
                    self.drain_queued(stream, request);
                }
            }
        }
    }

    /// A local response the guest asked for during the callback that just returned: sent, or
    /// a reset once the response has started ([`Vm::settle_stream`]).
    fn settle_local_response(&mut self, stream: u32, callback: Option<Callback>, profile: Profile) {
        let Some(st) = self.store.data_mut().streams.get_mut(&stream) else {
            return;
        };
        if let Some(local) = st.pending_local_response.take() {
            if st.response.headers_forwarded && !st.reset {
                // The client has the response headers already: a local reply can only reset the
                // stream (Envoy `sendLocalReply`: "Prior headers have already been sent"; Kong
                // refuses earlier, with a trap in the host function).
                st.reset = true;
            } else if st.local_reply_in_response {
                // A new reply while the filter's first one passes through its response
                // callbacks, before that one's headers went out: Envoy sends the new one
                // straight to the codec, without the filters (`sendDirectLocalReply`, envoy
                // source/common/http/filter_manager.cc). Kong never gets here: its second
                // `proxy_send_local_response` traps ("local response already stashed").
                st.local_reply_in_response = false;
                st.local_response = Some(local);
            } else if st.local_response.is_none() {
                st.local_response = Some(local);
                if callback == Some(Callback::HttpCallResponse) && profile.local_response_cancels_dispatches() {
                    self.store.data_mut().http_calls.retain(|_, c| c.context_id != stream);
                }
            }
        }
    }

    /// Delivers input that waited while a direction was paused in its headers phase, one item
    /// at a time, the way input arriving now is: nothing holds it any longer.
    fn drain_queued(&mut self, stream: u32, request: bool) {
        loop {
            let Some(st) = self.store.data_mut().streams.get_mut(&stream) else {
                return;
            };
            if st.closed(request) {
                return;
            }
            let dir = st.direction_mut(request);
            if dir.paused_in == Some(headers_callback(request)) {
                return;
            }
            let Some(item) = dir.queued.pop_front() else {
                return;
            };
            let _ = match item {
                Queued::Body(chunk, eos) => self.send_body(stream, request, &chunk, eos),
                Queued::Trailers(pairs) => self.send_trailers(stream, request, pairs),
            };
        }
    }

    fn record(&mut self, stream: u32, callback: Callback, action: Option<Action>) {
        // Every stream gets its list when it is created; nothing is recorded for a context
        // that is not a live stream.
        if let Some(st) =
            (self.store.data_mut().streams.get_mut(&stream)).filter(|st| st.actions.len() < MAX_ACTIONS_PER_STREAM)
        {
            st.actions.push(ActionRecord {
                callback: callback.transcript_name(),
                action: action.map(Action::as_str),
            });
        }
    }

    /// Ends a stream the way the profile's host does when its filter fails: a 5xx local reply,
    /// or a reset once the response headers have gone to the client.
    fn fail_closed(&mut self, stream: u32) {
        let profile = self.profile();
        self.store.data_mut().touch_stream(stream);
        if let Some(st) = self.store.data_mut().streams.get_mut(&stream) {
            st.pending_local_response = None;
            if st.response.headers_forwarded && st.local_response.is_none() {
                // Too late for a 5xx: the response has started, so the host resets the stream
                // (Envoy `failStream` -> `sendLocalReply` after headers; nginx closes).
                st.reset = true;
            } else if st.local_response.is_none() {
                let reply = profile.fail_closed_reply();
                st.local_reply_by_host = true;
                st.local_response = Some(LocalResponse {
                    status: reply.status,
                    details: "wasm_fail_stream".into(),
                    headers: reply.headers,
                    body: reply.body,
                    grpc_status: None,
                });
            }
        }
        self.store.data_mut().http_calls.retain(|_, c| c.context_id != stream);
    }

    /// Work that follows any callback: queue notifications for this VM's roots, and root
    /// contexts finalized through `proxy_done`.
    fn after_root_callback(&mut self) {
        for _ in 0..1024 {
            let key = self.store.data().vm_key();
            // Usually no VM has a notification pending: no lock and no hashing then.
            let ready = if self.store.data().shared.notifications_waiting() {
                let shared = &self.store.data().shared;
                let mut inner = shared.lock();
                let ready = inner.queue_ready.remove(&key).unwrap_or_default();
                shared.note_notifications(&inner);
                ready
            } else {
                Vec::new()
            };
            if ready.is_empty() && !self.store.data().has_done_roots() {
                return;
            }
            let done_roots = self.store.data_mut().take_done_roots();
            for (root, queue) in ready {
                if self.store.data().roots.contains_key(&root) && self.wake_root(root).is_ok() {
                    let f = self.exports.queue_ready.clone();
                    let _ = self.invoke(Callback::QueueReady, root, None, f, (root, queue));
                }
            }
            for root in done_roots {
                self.delete_root(root);
            }
        }
    }

    /// Calls one of the callbacks that end a context (`proxy_on_done`, `proxy_on_log`,
    /// `proxy_on_delete`). Whether it ran: a failed VM runs no guest code, as a host calls
    /// nothing on a VM that trapped (proxy-wasm-cpp-host `isFailed()` checks in `onDone`,
    /// `onLog`, `onDelete`; KONG-SRC ngx_proxy_wasm.c:694-700 skips the done step).
    fn end_callback(&mut self, callback: Callback, id: u32) -> Result<Option<u32>, Trapped> {
        let data = None;
        match callback {
            Callback::Done => {
                let f = self.exports.done.clone();
                self.invoke(Callback::Done, id, data, f, id)
            }
            Callback::Log => {
                let f = self.exports.log.clone();
                self.invoke(Callback::Log, id, data, f, id).map(|_| None)
            }
            _ => {
                let f = self.exports.delete.clone();
                self.invoke(Callback::Delete, id, data, f, id).map(|_| None)
            }
        }
    }

    /// Ends a stream: the profile's sequence of `proxy_on_log`, `proxy_on_done` and
    /// `proxy_on_delete` ([`crate::profile::HostBehaviour::stream_end_callbacks`]), each recorded in
    /// [`Vm::actions`] when the host calls it. `proxy_on_done` returning false holds nothing:
    /// neither host waits for `proxy_done` on a stream. Pending callouts of the stream are
    /// cancelled, as hosts cancel them when the stream is destroyed.
    pub fn finish_stream(&mut self, stream: u32) -> Result<(), HostError> {
        self.end_stream(stream, true)
    }

    /// Ends a stream without any of its end callbacks: a host that gives up a context without
    /// calling into it (ngx_wasm_module, for every filter of a chain one of whose filters
    /// failed). Its callouts are cancelled as [`Vm::finish_stream`]'s.
    pub fn discard_stream(&mut self, stream: u32) -> Result<(), HostError> {
        self.end_stream(stream, false)
    }

    /// Runs a stream's end callbacks that come before `proxy_on_delete` in the profile's
    /// sequence and leaves the stream, whose [`Vm::finish_stream`] then runs only the rest: for a
    /// host that ends a filter chain's streams step by step (ngx_wasm_module's log step calls
    /// every filter's `proxy_on_done` and `proxy_on_log`, its done step then every filter's
    /// `proxy_on_delete`: KONG-SRC ngx_proxy_wasm.c:1378-1427, 007-on_http_instance_isolation.t
    /// TEST 1). Once per stream; nothing on a failed VM or a stale stream.
    pub fn log_stream(&mut self, stream: u32) -> Result<(), HostError> {
        self.stream(stream)?;
        if !self.logged_streams.insert(stream) {
            return Ok(());
        }
        let callbacks = self.profile().stream_end_callbacks();
        let (before_delete, _) = split_at_delete(&callbacks);
        self.run_end_callbacks(stream, before_delete);
        self.after_root_callback();
        Ok(())
    }

    /// Calls `callbacks` on `stream` in order, each recorded, until the VM fails or the stream
    /// is stale (no guest code runs for either).
    fn run_end_callbacks(&mut self, stream: u32, callbacks: &[Callback]) {
        for &callback in callbacks {
            if self.failed.is_some() || self.stale_streams.contains(&stream) {
                break;
            }
            self.record(stream, callback, None);
            let _ = self.end_callback(callback, stream);
        }
    }

    fn end_stream(&mut self, stream: u32, with_callbacks: bool) -> Result<(), HostError> {
        self.stream(stream)?;
        let logged = !self.logged_streams.is_empty() && self.logged_streams.remove(&stream);
        let callbacks = self.profile().stream_end_callbacks();
        let left = match (with_callbacks, logged) {
            (false, _) => &[][..],
            // After `log_stream`, only what comes from `proxy_on_delete` on is left.
            (true, true) => split_at_delete(&callbacks).1,
            (true, false) => &callbacks[..],
        };
        self.run_end_callbacks(stream, left);
        if !self.stale_streams.is_empty() {
            self.stale_streams.remove(&stream);
        }
        let state = self.store.data_mut();
        let ended = state.streams.remove(&stream);
        // Usually the stream has no call left: no walk over empty maps then.
        if !state.http_calls.is_empty() {
            state.http_calls.retain(|_, c| c.context_id != stream);
        }
        if !state.grpc_calls.is_empty() {
            state.grpc_calls.retain(|_, c| c.context_id != stream);
        }
        if let Some(mut ended) = ended {
            for dir in [&mut ended.request, &mut ended.response] {
                if let Some(map) = dir.headers.take() {
                    self.keep_spare_map(map);
                }
                if let Some(map) = dir.trailers.take() {
                    self.keep_spare_map(map);
                }
            }
            if self.finished.len() >= FINISHED_ACTIONS_KEPT {
                if let Some((_, mut oldest)) = self.finished.pop_front() {
                    if oldest.capacity() <= SPARE_ACTIONS_CAPACITY {
                        oldest.clear();
                        self.spare_actions = Some(oldest);
                    }
                }
            }
            self.finished.push_back((stream, std::mem::take(&mut ended.actions)));
            // Emptied now (what it held is let go of and given back to the budget, as dropping
            // it would), its allocation kept for the next stream.
            ended.recycle();
            self.spare_stream = Some(ended);
        }
        self.after_root_callback();
        Ok(())
    }

    /// Keeps an ended stream's header map, emptied, for the next stream's headers to reuse; a
    /// map over [`SPARE_MAP_MAX_BYTES`] (or beyond [`SPARE_MAPS`] of them) is let go.
    fn keep_spare_map(&mut self, mut map: Pairs) {
        if self.spare_maps.len() >= SPARE_MAPS || map.capacity() > 256 {
            return;
        }
        // Emptied by lengths only: the pairs' own allocations stay for reuse.
        let mut held = 0;
        for (k, v) in map.iter_mut() {
            held += k.capacity() + v.capacity();
            k.clear();
            v.clear();
        }
        if held <= SPARE_MAP_MAX_BYTES {
            self.spare_maps.push(map);
        }
    }

    /// A header map as the host stores it ([`to_pair`]), built in a spare map's allocations
    /// when there is one.
    fn pairs_from<K: AsRef<[u8]>, V: AsRef<[u8]>>(&mut self, profile: Profile, headers: &[(K, V)]) -> Pairs {
        let Some(mut map) = self.spare_maps.pop() else {
            return to_pairs(profile, headers);
        };
        // The spare's pairs are empty (`keep_spare_map`); the extra ones are dropped.
        let reused = map.len().min(headers.len());
        map.truncate(reused);
        let behaviour: &dyn HostBehaviour = &*profile;
        for ((k, v), (name, value)) in map.iter_mut().zip(headers) {
            k.extend_from_slice(name.as_ref());
            behaviour.normalize_header_name(k);
            v.extend_from_slice(value.as_ref());
        }
        map.extend(headers[reused..].iter().map(|(k, v)| to_pair(profile, k, v)));
        map
    }

    /// Shuts a root context down: `proxy_on_done`, then, when it returns true or later when
    /// the guest calls `proxy_done`, `proxy_on_delete` (proxy-wasm-cpp-host wasm.cc
    /// `startShutdown`, `done`, `finishShutdown`), with `proxy_on_log` before it where the
    /// profile says so ([`crate::profile::HostBehaviour::root_shutdown_logs`]).
    pub fn finish_root(&mut self, root: u32) -> Result<(), HostError> {
        if !self.store.data().roots.contains_key(&root) {
            return Err(HostError::WrongContext(root, "a root context"));
        }
        match self.end_callback(Callback::Done, root) {
            Ok(Some(0)) => {
                if let Some(r) = self.store.data_mut().roots.get_mut(&root) {
                    r.awaiting_done = true;
                }
            }
            _ => self.delete_root(root),
        }
        Ok(())
    }

    /// Whether root context `root` still exists: not shut down yet, or shut down and still
    /// owing `proxy_done` ([`Vm::finish_root`]).
    pub fn root_exists(&self, root: u32) -> bool {
        self.store.data().roots.contains_key(&root)
    }

    /// Whether the host still has root context `root` to shut down or wait for: the VM is live,
    /// the profile's host shuts roots down when it stops ([`crate::profile::HostBehaviour::finishes_roots_at_shutdown`]),
    /// and the root is still there (not shut down yet, or owing `proxy_done`). A failed VM runs no
    /// callback, so it has nothing left to finish.
    pub fn root_shutdown_pending(&self, root: u32) -> bool {
        self.profile().finishes_roots_at_shutdown() && self.failure().is_none() && self.root_exists(root)
    }

    /// Gives up on a root context that owes `proxy_done` (or was never shut down): deletes it
    /// now, with `proxy_on_log` where the profile's shutdown has it and `proxy_on_delete`, and
    /// drops its pending calls. No host does this on its own: it is how an embedder with a
    /// deadline (`serve`'s drain time) stops a VM while letting the guest account for what it
    /// still holds. Does nothing for a root that does not exist.
    pub fn abandon_root(&mut self, root: u32) {
        if self.store.data().roots.contains_key(&root) {
            self.delete_root(root);
        }
    }

    fn delete_root(&mut self, root: u32) {
        if self.profile().root_shutdown_logs() {
            let _ = self.end_callback(Callback::Log, root);
        }
        let _ = self.end_callback(Callback::Delete, root);
        let state = self.store.data_mut();
        state.roots.remove(&root);
        state.http_calls.retain(|_, c| c.context_id != root);
        state.grpc_calls.retain(|_, c| c.context_id != root);
    }

    // ---- Callouts ---------------------------------------------------------------------------

    /// Pending HTTP callouts, oldest first.
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.store
            .data()
            .http_calls
            .values()
            .map(|c| c.to_owned_value())
            .collect()
    }

    /// Tokens of the pending callouts, oldest first (cheaper than [`Vm::http_calls`], which
    /// copies every call's headers and body).
    pub fn pending_http_call_tokens(&self) -> Vec<u32> {
        self.store.data().http_calls.keys().copied().collect()
    }

    /// The HTTP and gRPC calls dispatched since the last look, oldest first, each handed out
    /// once: a transport sends what this returns and never copies the calls it already has
    /// (their bodies included). Tokens are handed out in the order the guest makes calls, so
    /// the new ones are found by range, without looking at the calls already handed out.
    pub fn take_new_calls(&mut self) -> Vec<NewCall> {
        let now = self.now_ns();
        let state = self.store.data();
        let (seen, last) = (self.calls_seen_up_to, state.last_token());
        self.calls_seen_up_to = last;
        if seen == last {
            return Vec::new();
        }
        let mut new: Vec<NewCall> = Vec::new();
        for (from, to) in tokens_since(seen, last).into_iter().flatten() {
            let mut calls: Vec<(u32, NewCall)> = Vec::new();
            for (token, held) in state.http_calls.range(from..=to) {
                let call = held.to_owned_value();
                let time_left = call.deadline_ns.map(|d| Duration::from_nanos(d.saturating_sub(now)));
                calls.push((*token, NewCall::Http { call, time_left }));
            }
            for (token, held) in state.grpc_calls.range(from..=to) {
                let call = held.to_owned_value();
                let time_left = call.deadline_ns.map(|d| Duration::from_nanos(d.saturating_sub(now)));
                calls.push((*token, NewCall::Grpc { call, time_left }));
            }
            calls.sort_by_key(|(token, _)| *token);
            new.extend(calls.into_iter().map(|(_, call)| call));
        }
        new
    }

    /// The streams something may have changed on since the last call, oldest first: each stream
    /// a callback ran on, the guest made the effective context, or the host failed closed. A
    /// transport looks only at these after an event rather than at every stream it has (a
    /// stream not listed is as it was). Streams that ended meanwhile may be listed.
    pub fn take_touched_streams(&mut self) -> Vec<u32> {
        self.store.data_mut().take_touched_streams()
    }

    /// Answers a callout: `proxy_on_http_call_response` on the context that made it.
    pub fn respond_http_call(&mut self, token: u32, reply: HttpCallReply) -> Result<(), HostError> {
        let profile = self.profile();
        let call = self
            .store
            .data_mut()
            .http_calls
            .remove(&token)
            .ok_or(HostError::UnknownHttpCall(token))?;
        let (headers, body, trailers, counted, status) = match reply {
            HttpCallReply::Response {
                status,
                headers,
                body,
                trailers,
            } => {
                // `:status` first, then the reply's headers, straight into the host's pairs.
                let mut all: Pairs = Vec::with_capacity(headers.len() + 1);
                all.push((b":status".to_vec(), status.to_string().into_bytes()));
                all.extend(headers.iter().map(|(k, v)| to_pair(profile, k, v)));
                let n = all.len();
                let trailers = to_pairs(profile, &trailers);
                (Some(all), Some(body), Some(trailers), n, (status as u32, Vec::new()))
            }
            HttpCallReply::Failure(failure) => {
                let reply = profile.callout_failure_reply(failure);
                let status = (reply.status.0, reply.status.1.as_bytes().to_vec());
                match reply.headers {
                    Some(headers) => (
                        Some(to_pairs(profile, &headers)),
                        Some(reply.body),
                        Some(Vec::new()),
                        reply.num_headers,
                        status,
                    ),
                    None => (None, None, None, reply.num_headers, status),
                }
            }
        };
        let ctx = call.context_id;
        let params = (
            ctx,
            token,
            counted as u32,
            body.as_ref().map_or(0, Vec::len) as u32,
            trailers.as_ref().map_or(0, Vec::len) as u32,
        );
        let data = Some(Box::new(CallbackData {
            headers,
            trailers,
            status: Some(status),
            buffer: body,
        }));
        let f = self.exports.http_call_response.clone();
        let result = self.invoke(Callback::HttpCallResponse, ctx, data, f, params);
        if self.store.data().streams.contains_key(&ctx) {
            if result.is_err() {
                self.record(ctx, Callback::HttpCallResponse, None);
                self.fail_closed(ctx);
            } else {
                self.record(ctx, Callback::HttpCallResponse, None);
                self.settle_stream(ctx, Some(Callback::HttpCallResponse), None);
            }
        }
        self.after_root_callback();
        Ok(())
    }

    /// Open gRPC calls and streams.
    pub fn grpc_calls(&self) -> Vec<GrpcCall> {
        self.store
            .data()
            .grpc_calls
            .values()
            .map(|c| c.to_owned_value())
            .collect()
    }

    /// The messages the guest sent on a gRPC call or stream.
    pub fn grpc_messages(&self, token: u32) -> Option<Vec<Vec<u8>>> {
        self.store.data().grpc_calls.get(&token).map(|c| c.messages.clone())
    }

    /// What the guest did on gRPC call `token` beyond its first `from` messages, copying only
    /// the messages after those; `None` once the call is gone (answered, or its context ended).
    pub fn grpc_progress(&self, token: u32, from: usize) -> Option<GrpcProgress> {
        self.store.data().grpc_calls.get(&token).map(|call| GrpcProgress {
            messages: call.messages.iter().skip(from).cloned().collect(),
            end_stream_sent: call.end_stream_sent,
            ended_by_guest: call.ended_by_guest(),
        })
    }

    /// The gRPC calls still open (not answered, cancelled or dropped with their context).
    pub fn pending_grpc_call_tokens(&self) -> Vec<u32> {
        self.store.data().grpc_calls.keys().copied().collect()
    }

    /// Ends gRPC call `token` as the host does when it fails (`failure`) rather than being
    /// closed by its server: a stream gets empty trailing metadata then the close, a unary call
    /// only the close (ENVOY-SRC async_client_impl.cc `streamError` delivers both; the unary
    /// handler passes on only `onFailure`), with the profile's status
    /// ([`crate::profile::HostBehaviour::grpc_failure_status`]).
    pub fn fail_grpc_call(&mut self, token: u32, failure: CalloutFailure) -> Result<(), HostError> {
        let kind = (self.store.data().grpc_calls.get(&token))
            .map(|c| c.kind)
            .ok_or(HostError::UnknownGrpcCall(token))?;
        let (code, message) = self.profile().grpc_failure_status(failure);
        let reply = GrpcReply {
            trailing_metadata: (kind == GrpcKind::Stream).then(Vec::new),
            close: Some((code, message.to_string())),
            ..GrpcReply::default()
        };
        self.respond_grpc(token, reply)
    }

    /// Answers a gRPC call or stream: initial metadata, messages, trailing metadata and close,
    /// each through its callback. A call the guest ended gets no callbacks (Envoy drops them)
    /// but the answer is accepted; a stream the guest closed still gets them
    /// ([`crate::state::GrpcCall::ended_by_guest`]).
    pub fn respond_grpc(&mut self, token: u32, reply: GrpcReply) -> Result<(), HostError> {
        let profile = self.profile();
        let call = self
            .store
            .data()
            .grpc_calls
            .get(&token)
            .map(|c| c.to_owned_value())
            .ok_or(HostError::UnknownGrpcCall(token))?;
        if call.ended_by_guest() {
            self.store.data_mut().grpc_calls.remove(&token);
            return Ok(());
        }
        let ctx = call.context_id;
        let is_stream = self.store.data().streams.contains_key(&ctx);
        // Each callback runs even after an earlier one trapped: `invoke` refuses guest code on a
        // failed VM, so the rest are no-ops, exactly as a failed VM gets no more callbacks.
        let mut results: Vec<(Callback, bool)> = Vec::new();
        if let Some(md) = reply.initial_metadata {
            let data = Some(Box::new(CallbackData {
                headers: Some(to_pairs(profile, &md)),
                ..CallbackData::default()
            }));
            let f = self.exports.grpc_initial_metadata.clone();
            let params = (ctx, token, md.len() as u32);
            let r = self.invoke(Callback::GrpcReceiveInitialMetadata, ctx, data, f, params);
            results.push((Callback::GrpcReceiveInitialMetadata, r.is_err()));
        }
        for message in reply.messages {
            let len = message.len() as u32;
            let f = self.exports.grpc_receive.clone();
            let r = self.invoke(Callback::GrpcReceive, ctx, buffer_data(message), f, (ctx, token, len));
            results.push((Callback::GrpcReceive, r.is_err()));
        }
        if let Some(md) = reply.trailing_metadata {
            let data = Some(Box::new(CallbackData {
                headers: Some(to_pairs(profile, &md)),
                ..CallbackData::default()
            }));
            let f = self.exports.grpc_trailing_metadata.clone();
            let params = (ctx, token, md.len() as u32);
            let r = self.invoke(Callback::GrpcReceiveTrailingMetadata, ctx, data, f, params);
            results.push((Callback::GrpcReceiveTrailingMetadata, r.is_err()));
        }
        if let Some((code, message)) = reply.close {
            self.store.data_mut().grpc_calls.remove(&token);
            let data = Some(Box::new(CallbackData {
                status: Some((code, message.into_bytes())),
                ..CallbackData::default()
            }));
            let f = self.exports.grpc_close.clone();
            let r = self.invoke(Callback::GrpcClose, ctx, data, f, (ctx, token, code));
            results.push((Callback::GrpcClose, r.is_err()));
        }
        if is_stream && self.store.data().streams.contains_key(&ctx) {
            for (callback, _) in &results {
                self.record(ctx, *callback, None);
            }
            // A trap (or a VM that failed earlier) fails the stream that is waiting on the call,
            // as for HTTP callouts.
            if results.iter().any(|(_, trapped)| *trapped) {
                self.fail_closed(ctx);
            } else {
                self.settle_stream(ctx, None, None);
            }
        }
        self.after_root_callback();
        Ok(())
    }

    // ---- Time -------------------------------------------------------------------------------

    /// Moves the virtual clock forward by `by`, firing every tick and callout timeout that falls
    /// due, in time order.
    pub fn advance_time(&mut self, by: Duration) -> Result<(), HostError> {
        if !self.store.data().clock.is_virtual() {
            return Err(HostError::RealClock);
        }
        let target = self.now_ns().saturating_add(by.as_nanos() as u64);
        self.run_timers_until(target);
        self.store.data().clock.set_ns(target);
        Ok(())
    }

    /// Fires what is due now (for the real clock; [`Vm::run_due_work`] is the transport's way).
    pub fn fire_due_timers(&mut self) {
        let now = self.now_ns();
        self.run_timers_until(now);
    }

    /// When the next tick or callout timeout is due, in clock nanoseconds. A failed VM has no
    /// ticks ([`AfterTrap::StayFailed`]).
    pub fn next_timer_ns(&self) -> Option<u64> {
        let state = self.store.data();
        let ticking = self.failed.is_none();
        let ticks = state.roots.values().filter(|_| ticking).filter_map(|r| r.next_tick_ns);
        let expiring = self.options.callouts_time_out;
        let calls = state
            .http_calls
            .values()
            .filter(|_| expiring)
            .filter_map(|c| c.deadline_ns);
        let grpc_calls = state
            .grpc_calls
            .values()
            .filter(|_| expiring)
            .filter_map(|c| c.deadline_ns);
        ticks.chain(calls).chain(grpc_calls).min()
    }

    fn run_timers_until(&mut self, target: u64) {
        // Bounded so a 1 ms tick over a long advance cannot spin forever.
        for _ in 0..1_000_000 {
            let Some(next) = self.next_timer_ns().filter(|t| *t <= target) else {
                return;
            };
            self.store.data().clock.set_ns(next);
            let expired: Vec<u32> = self
                .store
                .data()
                .http_calls
                .values()
                .filter(|c| self.options.callouts_time_out && c.deadline_ns == Some(next))
                .map(|c| c.token)
                .collect();
            for token in expired {
                let _ = self.respond_http_call(token, HttpCallReply::Failure(CalloutFailure::Timeout));
            }
            let expired_grpc: Vec<u32> = (self.store.data().grpc_calls.values())
                .filter(|c| self.options.callouts_time_out && c.deadline_ns == Some(next))
                .map(|c| c.token)
                .collect();
            for token in expired_grpc {
                let _ = self.fail_grpc_call(token, CalloutFailure::Timeout);
            }
            let due: Vec<u32> = self
                .store
                .data()
                .roots
                .iter()
                .filter(|(_, r)| r.next_tick_ns == Some(next))
                .map(|(id, _)| *id)
                .collect();
            for root in due {
                let mut timers = 1;
                if let Some(r) = self.store.data_mut().roots.get_mut(&root) {
                    r.next_tick_ns = Some(next + r.tick_period_ms as u64 * 1_000_000);
                    timers += r.inherited_tick_timers;
                }
                // Each armed timer fires (timers inherited from trapped instances, Kong).
                for _ in 0..timers {
                    let f = self.exports.tick.clone();
                    self.ticks_fired += 1;
                    let _ = self.invoke(Callback::Tick, root, None, f, root);
                    self.after_root_callback();
                }
            }
        }
    }

    /// The host clock, in nanoseconds since the Unix epoch.
    pub fn now_ns(&self) -> u64 {
        self.store.data().now_ns()
    }

    // ---- Foreign functions and properties ---------------------------------------------------

    /// Registers a host function the guest can call with `proxy_call_foreign_function`.
    pub fn register_foreign_function(&mut self, name: &str, function: ForeignFunction) {
        self.store.data_mut().register_foreign_function(name, function);
    }

    /// Calls the guest's `proxy_on_foreign_function(root, function_id, args_size)`.
    pub fn call_foreign_callback(&mut self, root: u32, function_id: u32, args: &[u8]) -> Result<(), HostError> {
        if !self.store.data().roots.contains_key(&root) {
            return Err(HostError::WrongContext(root, "a root context"));
        }
        self.wake_root(root)?;
        let f = self.exports.foreign_function.clone();
        let len = args.len() as u32;
        self.invoke(
            Callback::ForeignFunction,
            root,
            buffer_data(args.to_vec()),
            f,
            (root, function_id, len),
        )
        .map_err(vm_failed)?;
        self.after_root_callback();
        Ok(())
    }

    /// Sets a VM-wide property (path segments joined by NUL, as the ABI encodes them).
    pub fn set_property(&mut self, path: &[&str], value: &[u8]) {
        let key = crate::abi::encode_property_path(path);
        self.store.data_mut().properties.set_by_host(key, value.to_vec());
    }

    // ---- Inspection -------------------------------------------------------------------------

    /// The profile this VM follows.
    pub fn profile(&self) -> Profile {
        self.store.data().profile
    }

    /// The module's sha256.
    pub fn module_sha256(&self) -> &str {
        &self.sha256
    }

    /// Every callback a stream saw, in order, with its action (the first
    /// [`MAX_ACTIONS_PER_STREAM`]; for a finished stream, while it is among the last
    /// [`FINISHED_ACTIONS_KEPT`] finished).
    pub fn actions(&self, stream: u32) -> &[ActionRecord] {
        let finished = || self.finished.iter().rev().find(|(id, _)| *id == stream).map(|(_, a)| a);
        let live = self.store.data().streams.get(&stream).map(|s| &s.actions);
        live.or_else(finished).map_or(&[], Vec::as_slice)
    }

    /// The local response a stream ended with, if any.
    pub fn local_response(&self, stream: u32) -> Option<&LocalResponse> {
        self.store
            .data()
            .streams
            .get(&stream)
            .and_then(|s| s.local_response.as_ref())
    }

    /// Opens the response direction of a stream the filter answered with
    /// `proxy_send_local_response`, so the host can pass that reply through the filter's
    /// response callbacks ([`crate::profile::HostBehaviour::local_reply_response`] says what the filter sees; the
    /// caller then sends it with [`Vm::send_response_headers`] and [`Vm::send_response_body`]).
    /// `false`, with nothing changed, when there is no such reply to pass: none yet, the host's
    /// own answer to a failed filter, a reset stream, or one already passed.
    pub fn open_response_for_local_reply(&mut self, stream: u32) -> bool {
        let Some(st) = self.store.data_mut().streams.get_mut(&stream) else {
            return false;
        };
        if st.local_response.is_none()
            || st.local_reply_by_host
            || st.local_reply_in_response
            || st.reset
            || st.response.headers.is_some()
        {
            return false;
        }
        st.local_reply_in_response = true;
        true
    }

    /// Passes the filter's own local reply through its response callbacks, shaped as the
    /// profile's host shapes it ([`crate::profile::HostBehaviour::local_reply_response`]): both hosts run a filter's
    /// local reply through the filter chain's response path. `None` when there is no such reply
    /// to pass ([`Vm::open_response_for_local_reply`]). What the client then gets is what the
    /// filter left (`response_headers`, `forwarded_response_body`), or after a trap there the
    /// profile's answer ([`crate::profile::HostBehaviour::response_trap_fails_open`]).
    pub fn pass_local_reply(&mut self, stream: u32) -> Option<PassedLocalReply> {
        if !self.open_response_for_local_reply(stream) {
            return None;
        }
        let local = self.local_response(stream)?.clone();
        let profile = self.profile();
        // The VM's clock, virtual under `run`, so a dated reply is reproducible there.
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(self.now_ns());
        let (headers, body) = profile.local_reply_response(&local, now);
        let failed_before = self.failure().is_some();
        let body_callback = profile.response_body_callback(&body);
        // A trap is recorded as the VM's failure, reported in `trapped`.
        let _ = self.send_response_headers(stream, &headers, !body_callback);
        if body_callback && self.stream_exists(stream) && self.failure().is_none() {
            let _ = self.send_response_body(stream, &body, true);
        }
        let trapped = !failed_before && self.failure().is_some();
        Some(PassedLocalReply { headers, body, trapped })
    }

    /// Whether the stream's local reply is being passed through the response callbacks
    /// ([`Vm::open_response_for_local_reply`]).
    pub fn local_reply_in_response(&self, stream: u32) -> bool {
        self.store
            .data()
            .streams
            .get(&stream)
            .is_some_and(|s| s.local_reply_in_response)
    }

    /// Whether the guest reset the stream (`proxy_close_stream`).
    pub fn stream_reset(&self, stream: u32) -> bool {
        self.store.data().streams.get(&stream).is_some_and(|s| s.reset)
    }

    /// Whether the stream still exists (not yet deleted).
    pub fn stream_exists(&self, stream: u32) -> bool {
        self.store.data().streams.contains_key(&stream)
    }

    /// The request headers as the filter left them.
    pub fn request_headers(&self, stream: u32) -> Option<Vec<(String, String)>> {
        self.direction(stream, true)
            .and_then(|d| d.headers.as_ref())
            .map(pairs_to_strings)
    }

    /// The response headers as the filter left them.
    pub fn response_headers(&self, stream: u32) -> Option<Vec<(String, String)>> {
        self.direction(stream, false)
            .and_then(|d| d.headers.as_ref())
            .map(pairs_to_strings)
    }

    /// The request trailers as the filter left them.
    pub fn request_trailers(&self, stream: u32) -> Option<Vec<(String, String)>> {
        self.direction(stream, true)
            .and_then(|d| d.trailers.as_ref())
            .map(pairs_to_strings)
    }

    /// The response trailers as the filter left them.
    pub fn response_trailers(&self, stream: u32) -> Option<Vec<(String, String)>> {
        self.direction(stream, false)
            .and_then(|d| d.trailers.as_ref())
            .map(pairs_to_strings)
    }

    /// Request body the filter let through to the upstream so far.
    pub fn forwarded_request_body(&self, stream: u32) -> Option<&[u8]> {
        self.direction(stream, true).map(|d| d.forwarded_body.as_slice())
    }

    /// Response body the filter let through to the client so far.
    pub fn forwarded_response_body(&self, stream: u32) -> Option<&[u8]> {
        self.direction(stream, false).map(|d| d.forwarded_body.as_slice())
    }

    /// Whether the request headers went upstream (the filter continued them).
    pub fn request_headers_forwarded(&self, stream: u32) -> bool {
        self.direction(stream, true).is_some_and(|d| d.headers_forwarded)
    }

    /// Whether the whole request went upstream: headers, body to end of stream, trailers.
    pub fn request_forwarded_complete(&self, stream: u32) -> bool {
        self.direction(stream, true).is_some_and(|d| {
            d.headers_forwarded && d.complete && d.paused_in.is_none() && d.queued.is_empty() && d.body.is_empty()
        })
    }

    /// Whether the response headers went to the client.
    pub fn response_headers_forwarded(&self, stream: u32) -> bool {
        self.direction(stream, false).is_some_and(|d| d.headers_forwarded)
    }

    /// Where the request is paused, if it is.
    pub fn request_paused_in(&self, stream: u32) -> Option<&'static str> {
        self.direction(stream, true)
            .and_then(|d| d.paused_in)
            .map(Callback::transcript_name)
    }

    /// Whether the whole response went to the client: headers, body to end of stream, trailers.
    pub fn response_forwarded_complete(&self, stream: u32) -> bool {
        self.direction(stream, false).is_some_and(|d| {
            d.headers_forwarded && d.complete && d.paused_in.is_none() && d.queued.is_empty() && d.body.is_empty()
        })
    }

    /// Where the response is paused, if it is.
    pub fn response_paused_in(&self, stream: u32) -> Option<&'static str> {
        self.direction(stream, false)
            .and_then(|d| d.paused_in)
            .map(Callback::transcript_name)
    }

    fn direction(&self, stream: u32, request: bool) -> Option<&Direction> {
        let st = self.store.data().streams.get(&stream)?;
        Some(if request { &st.request } else { &st.response })
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.store.data().logs.iter().cloned().collect()
    }

    /// Takes the log lines so far.
    pub fn take_logs(&mut self) -> Vec<LogEntry> {
        self.store.data_mut().logs.take_all()
    }

    /// Log lines dropped so far: the oldest, beyond [`Limits::max_log_entries`] or to make room
    /// in the host-memory budget, or a line that could not fit at all.
    pub fn logs_dropped(&self) -> u64 {
        self.store.data().logs.dropped()
    }

    /// Bytes the host holds on this guest's behalf now, as charged to its budget
    /// ([`Limits::max_host_bytes`]).
    pub fn host_bytes(&self) -> usize {
        self.store.data().budget_used()
    }

    /// Metrics of every VM sharing this one's state, by exported name.
    pub fn metrics(&self) -> BTreeMap<String, Metric> {
        self.store.data().shared.metrics()
    }

    /// The shared state (data, queues, metrics), to give to other VMs.
    pub fn shared(&self) -> Arc<Shared> {
        self.store.data().shared.clone()
    }

    /// Delivers `proxy_on_queue_ready` notifications enqueued by other VMs.
    pub fn poll_queues(&mut self) {
        self.after_root_callback();
    }

    /// What a real-time transport runs when it wakes: the timers due now
    /// ([`Vm::fire_due_timers`]) and the queue notifications other VMs left ([`Vm::poll_queues`]).
    /// Whether there was any (then the guest may have dispatched calls, logged, or moved a
    /// stream on); a VM with nothing due is not touched.
    pub fn run_due_work(&mut self) -> bool {
        let now = self.now_ns();
        let timers_due = self.next_timer_ns().is_some_and(|t| t <= now);
        let state = self.store.data();
        let notified = state.has_done_roots() || state.shared.lock().queue_ready.contains_key(&state.vm_key());
        if timers_due {
            self.run_timers_until(now);
        }
        if notified {
            self.after_root_callback();
        }
        timers_due || notified
    }

    /// Why the VM failed, if a callback trapped.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Remaining fuel, when fuel metering is on.
    pub fn fuel(&self) -> Option<u64> {
        self.store.get_fuel().ok()
    }

    /// Bytes of guest linear memory.
    pub fn memory_bytes(&mut self) -> usize {
        let memory = self.store.data().memory().clone();
        memory_size(memory, &mut self.store)
    }

    /// How many `proxy_on_tick` calls the clock has made so far, over every root context.
    pub fn ticks_fired(&self) -> u64 {
        self.ticks_fired
    }

    /// The tick period a root context asked for, in milliseconds.
    pub fn tick_period_ms(&self, root: u32) -> Option<u32> {
        self.store.data().roots.get(&root).map(|r| r.tick_period_ms)
    }
}

/// A profile's stream end sequence split before `proxy_on_delete`: what [`Vm::log_stream`] runs,
/// and what is left for the stream's end.
fn split_at_delete(callbacks: &[Callback]) -> (&[Callback], &[Callback]) {
    let at = (callbacks.iter())
        .position(|&c| c == Callback::Delete)
        .unwrap_or(callbacks.len());
    callbacks.split_at(at)
}

/// A callback's deadline in epoch ticks: `callback_deadline` rounded down to whole ticks, at least
/// one, plus one, as the tick in progress when the callback starts may be nearly over.
fn deadline_ticks(limits: &Limits) -> u64 {
    (limits.callback_deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}

/// The call tokens given after `seen` up to `last`, as inclusive ranges: one, or two when the
/// counter wrapped past `u32::MAX` (tokens start at 1: `HostState::allocate_token`). Empty when
/// `seen == last`.
fn tokens_since(seen: u32, last: u32) -> [Option<(u32, u32)>; 2] {
    if seen == last {
        [None, None]
    } else if seen < last {
        [Some((seen + 1, last)), None]
    } else {
        [seen.checked_add(1).map(|from| (from, u32::MAX)), Some((1, last))]
    }
}

fn memory_size(memory: GuestMemory, store: &mut Store<HostState>) -> usize {
    // Probe by the largest readable offset: GuestMemory keeps the handle private on purpose.
    let mut low = 0u64;
    let mut high = 1u64 << 32;
    while low + 1 < high {
        let mid = (low + high) / 2;
        if memory.with_slice(&mut *store, (mid - 1) as u32, 1, |_| ()).is_ok() {
            low = mid;
        } else {
            high = mid;
        }
    }
    low as usize
}

/// What a phase callback's action does to its direction: Continue forwards the phase, Pause
/// holds it ([`Vm::settle_stream`]).
fn apply_action(st: &mut StreamState, callback: Option<Callback>, action: Option<Action>) {
    let (Some(cb), Some(action)) = (callback, action) else {
        return;
    };
    let request = matches!(
        cb,
        Callback::RequestHeaders | Callback::RequestBody | Callback::RequestTrailers
    );
    let is_phase = request
        || matches!(
            cb,
            Callback::ResponseHeaders | Callback::ResponseBody | Callback::ResponseTrailers
        );
    if is_phase && !st.closed(request) {
        let dir = st.direction_mut(request);
        match action {
            Action::Continue => forward(dir, cb),
            Action::Pause => dir.paused_in = Some(cb),
        }
    }
}

/// Marks a direction's phase as let through.
fn forward(dir: &mut Direction, phase: Callback) {
    match phase {
        Callback::RequestHeaders | Callback::ResponseHeaders => dir.headers_forwarded = true,
        Callback::RequestBody | Callback::ResponseBody => {
            let body = dir.take_body();
            if dir.forwarded_body.is_empty() {
                // The usual single chunk moves rather than being copied.
                dir.forwarded_body = body;
            } else {
                dir.forwarded_body.extend_from_slice(&body);
            }
        }
        Callback::RequestTrailers | Callback::ResponseTrailers => dir.trailers_forwarded = true,
        _ => {}
    }
}

/// What a callback that reads a buffer (`PLUGIN_CONFIGURATION`, a gRPC message, ...) may read.
fn buffer_data(bytes: Vec<u8>) -> Option<Box<CallbackData>> {
    Some(Box::new(CallbackData {
        buffer: Some(bytes),
        ..CallbackData::default()
    }))
}

fn vm_failed(trapped: Trapped) -> HostError {
    HostError::VmFailed(trapped.reason)
}

fn trap_message(e: &wasmtime::Error) -> String {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        match trap {
            wasmtime::Trap::Interrupt => return "deadline exceeded (epoch interruption)".into(),
            wasmtime::Trap::OutOfFuel => return "fuel exhausted".into(),
            _ => {}
        }
    }
    // wasmtime wraps the cause in a context whose text is the wasm backtrace ("error while
    // executing at wasm backtrace: ..."); the reason is the root cause: the trap code, or the
    // message of the host function that refused to continue.
    let text = e.root_cause().to_string();
    text.lines().next().unwrap_or_default().to_string()
}

/// The headers callback of a direction, where a filter that stops iteration holds it.
fn headers_callback(request: bool) -> Callback {
    if request {
        Callback::RequestHeaders
    } else {
        Callback::ResponseHeaders
    }
}

fn to_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(profile: Profile, pairs: &[(K, V)]) -> Pairs {
    pairs.iter().map(|(k, v)| to_pair(profile, k, v)).collect()
}

/// One header as the host stores it ([`crate::profile::HostBehaviour::header_name`]).
fn to_pair(profile: Profile, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) -> (Vec<u8>, Vec<u8>) {
    (profile.header_name(k.as_ref().to_vec()), v.as_ref().to_vec())
}

fn pairs_to_strings(pairs: &Pairs) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::tokens_since;

    #[test]
    fn new_call_tokens_are_the_range_since_the_last_look_across_the_wrap() {
        assert_eq!(tokens_since(0, 0), [None, None]);
        assert_eq!(tokens_since(0, 3), [Some((1, 3)), None]);
        assert_eq!(tokens_since(7, 9), [Some((8, 9)), None]);
        // The counter wrapped (u32::MAX is followed by 1).
        assert_eq!(
            tokens_since(u32::MAX - 2, 2),
            [Some((u32::MAX - 1, u32::MAX)), Some((1, 2))]
        );
        assert_eq!(tokens_since(u32::MAX, 1), [None, Some((1, 1))]);
    }
}
