//! Envoy `bootstrap_extensions` WasmServices under `serve`: a VM with a root context and no
//! listener or stream. Its ticks fire on real time, its HTTP callouts and gRPC calls go to the deployment's
//! upstreams, its logs go out under the `guest` target like a route's, and it shares the
//! gateway's metrics and shared data. A singleton has one VM on its own thread (Envoy runs it on
//! the main thread); `singleton: false` has one VM per thread, as Envoy's thread-local slot gives
//! one to every worker thread and to the main thread (envoy
//! source/extensions/bootstrap/wasm/config.cc `WasmServiceExtension::createWasm`), so here
//! `workers + 1` VMs. At shutdown each root context gets `proxy_on_done` as the profile's host
//! does, and the VM stops once the root is done or the drain time is over.

use super::config::{Fallback, Route, WasmService};
use super::grpc::GrpcCalls;
use super::upstream;
use super::worker::{guest_log, vm_options};
use super::ServeError;
use crate::engine::Module;
use crate::profile::Profile;
use crate::state::Shared;
use crate::vm::{GrpcReply, HttpCallReply, NewCall, Vm};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a service thread reacts to.
pub(super) enum ServiceCommand {
    /// A callout's answer.
    CallDone { token: u32, reply: HttpCallReply },
    /// What a gRPC server sent on a call or stream ([`super::grpc`]).
    GrpcReceived { token: u32, reply: GrpcReply },
    /// Shut the root context down and stop, at the latest at `deadline`.
    Shutdown { deadline: Instant },
}

/// A running service VM.
pub(super) struct RunningService {
    pub commands: Sender<ServiceCommand>,
    pub thread: std::thread::JoinHandle<()>,
}

/// What every service VM shares with the gateway.
#[derive(Clone)]
pub(super) struct ServiceContext {
    pub profile: Profile,
    pub upstreams: Arc<BTreeMap<String, SocketAddr>>,
    pub client: upstream::Client,
    pub runtime: tokio::runtime::Handle,
    pub shared: Arc<Shared>,
}

/// How a service appears in logs and errors: `bootstrap_extensions[i] (name)`.
pub(super) fn label(index: usize, service: &WasmService) -> String {
    format!("bootstrap_extensions[{index}] ({})", service.name)
}

/// Starts the VMs of one service (one, or `workers + 1` when not a singleton). Each VM's start
/// (`proxy_on_vm_start`, then `proxy_on_configure`) happens before this returns, so a service
/// that refuses to start stops the gateway from starting, as a filter does.
pub(super) fn start(
    index: usize,
    service: &WasmService,
    module: &Module,
    workers: usize,
    context: &ServiceContext,
) -> Result<Vec<RunningService>, ServeError> {
    let copies = if service.singleton { 1 } else { workers.max(1) + 1 };
    let mut running = Vec::new();
    for copy in 0..copies {
        let name = label(index, service);
        let (vm, root) = start_vm(
            &name,
            service,
            module,
            context.profile,
            &context.upstreams,
            &context.shared,
        )?;
        let (tx, rx) = std::sync::mpsc::channel();
        let context = context.clone();
        let commands = tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("host-sim-service-{index}-{copy}"))
            .spawn(move || run(name, copy, vm, root, rx, commands, context))
            .map_err(|e| ServeError::FilterStart {
                route: label(index, service),
                reason: format!("cannot start its thread: {e}"),
            })?;
        running.push(RunningService { commands: tx, thread });
    }
    Ok(running)
}

fn start_vm(
    name: &str,
    service: &WasmService,
    module: &Module,
    profile: Profile,
    upstreams: &BTreeMap<String, SocketAddr>,
    shared: &Arc<Shared>,
) -> Result<(Vm, u32), ServeError> {
    // The service's ids and configuration in the shape the route VMs start from.
    let as_route = Route {
        name: name.to_string(),
        path_prefix: String::new(),
        filter: service.filter.clone(),
        plugin_name: service.name.clone(),
        root_id: service.root_id.clone(),
        vm_id: service.vm_id.clone(),
        config: service.config.clone(),
        vm_configuration: service.vm_configuration.clone(),
        fallback: Fallback::NotFound,
        fail_open: false,
        shared_filter: None,
        chained: Vec::new(),
    };
    let options = vm_options(profile, &as_route, upstreams, shared.clone());
    let failed = |reason: String| ServeError::FilterStart {
        route: name.to_string(),
        reason,
    };
    let mut vm = Vm::start(module, options).map_err(|e| failed(format!("the service failed to start: {e}")))?;
    let root = vm.create_root_context(&service.root_id, &service.config);
    for line in vm.take_logs() {
        guest_log(name, &0, &line);
    }
    match root {
        Ok(root) if !root.vm_start_ok => Err(failed("proxy_on_vm_start returned false".into())),
        Ok(root) if !root.configure_ok => Err(failed(
            "the service rejected its configuration (proxy_on_configure returned false)".into(),
        )),
        Ok(root) => Ok((vm, root.id)),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// The service's event loop: ticks on real time, callouts, and shutdown.
fn run(
    name: String,
    copy: usize,
    mut vm: Vm,
    root: u32,
    inbox: Receiver<ServiceCommand>,
    commands: Sender<ServiceCommand>,
    context: ServiceContext,
) {
    let mut calls_in_flight: HashSet<u32> = HashSet::new();
    let mut grpc = GrpcCalls::default();
    let mut shutdown: Option<Instant> = None;
    let mut reported_failure: Option<String> = None;
    loop {
        let wait = vm
            .next_timer_ns()
            .map(|t| Duration::from_nanos(t.saturating_sub(vm.now_ns())))
            .unwrap_or(Duration::from_millis(250))
            .clamp(Duration::from_millis(1), Duration::from_millis(250));
        match inbox.recv_timeout(wait) {
            Ok(ServiceCommand::CallDone { token, reply }) => {
                calls_in_flight.remove(&token);
                let _ = vm.respond_http_call(token, reply);
            }
            Ok(ServiceCommand::GrpcReceived { token, reply }) => {
                let _ = vm.respond_grpc(token, reply);
            }
            Ok(ServiceCommand::Shutdown { deadline }) => {
                if shutdown.is_none() && vm.root_shutdown_pending(root) {
                    let _ = vm.finish_root(root);
                }
                shutdown = Some(deadline);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        vm.run_due_work();
        for line in vm.take_logs() {
            guest_log(&name, &copy, &line);
        }
        for new in vm.take_new_calls() {
            match new {
                NewCall::Http { call, time_left } => {
                    calls_in_flight.insert(call.token);
                    dispatch(call, time_left, &commands, &context);
                }
                NewCall::Grpc { call, time_left } => {
                    let (commands, token) = (commands.clone(), call.token);
                    let deliver = Box::new(move |reply: GrpcReply| {
                        let _ = commands.send(ServiceCommand::GrpcReceived { token, reply });
                    });
                    let client = context.client.grpc();
                    let upstreams = &context.upstreams;
                    grpc.start(
                        &context.runtime,
                        client,
                        context.profile,
                        upstreams,
                        call,
                        time_left,
                        deliver,
                    );
                }
            }
        }
        grpc.sync(&mut vm);
        let failure = vm.failure().map(String::from);
        if failure.is_some() && failure != reported_failure {
            tracing::error!(service = %name, copy, reason = failure.as_deref().unwrap_or_default(), "the service's VM failed");
        }
        reported_failure = failure;
        if let Some(deadline) = shutdown {
            if !vm.root_shutdown_pending(root) {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(service = %name, copy, callouts_pending = calls_in_flight.len() + grpc.len(), "drain time over: the service had not called proxy_done; its root context is deleted and the VM stopped");
                // As for a route's filter: the root is deleted (`proxy_on_delete`), so the guest
                // can count and log what it still holds before the VM goes.
                vm.abandon_root(root);
                for line in vm.take_logs() {
                    guest_log(&name, &copy, &line);
                }
                return;
            }
        }
    }
}

/// Sends a callout to its upstream as a route's callouts go ([`upstream::Callout`]).
fn dispatch(
    call: crate::state::HttpCall,
    time_left: Option<Duration>,
    commands: &Sender<ServiceCommand>,
    context: &ServiceContext,
) {
    let token = call.token;
    let callout = upstream::Callout::new(context.profile, &context.upstreams, call, time_left);
    let client = context.client.clone();
    let commands = commands.clone();
    context.runtime.spawn(async move {
        let reply = callout.send(client).await;
        let _ = commands.send(ServiceCommand::CallDone { token, reply });
    });
}
