//! One request through a filter, start to finish: the driver behind `host-sim run`, callable
//! from tests as well.
//!
//! [`run_scenario`] starts a VM, creates the root context with the plugin configuration, opens
//! one HTTP stream, sends the request (headers, body whole or in chunks, trailers), answers the
//! filter's HTTP and gRPC calls with the given responses, sends the upstream's response through
//! the filter once the request went upstream, moves the virtual clock in the given steps,
//! finishes the stream and returns the [`Transcript`]. [`check_configuration`] stops after the
//! root context: what the filter made of its configuration (`host-sim check`). Everything goes
//! through the public [`Vm`] API.

use crate::engine::Module;
use crate::error::HostError;
use crate::profile::{CalloutUpstream, Profile};
use crate::state::{GrpcCall, GrpcKind, HttpCall, LogEntry};
use crate::transcript::{
    encode_body, encode_messages, CallOutcome, CallResponseFile, ClientResponse, GrpcResponseFile, RequestFile,
    ResponseSource, TimeStep, Transcript, TranscriptAction, TranscriptGrpcCall, TranscriptHttpCall,
    TranscriptLocalResponse, TranscriptLog, UpstreamRequest, UpstreamResponseFile, UpstreamResponseUse,
};
use crate::vm::{GrpcReply, NewCall, PassedLocalReply, Vm, VmOptions};
use std::collections::BTreeSet;
use std::time::Duration;

/// Which upstream names an Envoy-profile `proxy_http_call` may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clusters {
    /// Every name the filter uses is a configured cluster: what a user running one filter
    /// expects when they have not written an Envoy cluster list.
    Any,
    /// Only these names (like an Envoy bootstrap's clusters); others get BAD_ARGUMENT.
    Only(Vec<String>),
}

/// How to run a scenario.
#[derive(Clone)]
pub struct ScenarioOptions {
    /// How to start the VM (profile, plugin name, limits, WASI). Its `clusters` is replaced
    /// according to [`ScenarioOptions::clusters`].
    pub vm: VmOptions,
    /// The plugin configuration given to `proxy_on_configure`, verbatim.
    pub configuration: Vec<u8>,
    /// The root id of the root context (Envoy `root_id`).
    pub root_id: String,
    /// Envoy clusters; ignored by the Kong profile, whose calls take `host:port`.
    pub clusters: Clusters,
}

impl ScenarioOptions {
    /// Defaults for a profile: empty configuration and root id, any cluster name accepted.
    pub fn new(profile: Profile) -> ScenarioOptions {
        ScenarioOptions {
            vm: VmOptions::new(profile),
            configuration: Vec::new(),
            root_id: String::new(),
            clusters: Clusters::Any,
        }
    }
}

/// What happens to the filter in one run: the request, and what the outside world answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScenarioInput {
    /// The request the client sends.
    pub request: RequestFile,
    /// Answers to the filter's HTTP calls, in the order the calls are made.
    pub http_call_responses: Vec<CallResponseFile>,
    /// Answers to the filter's gRPC calls and streams, in the order they are opened.
    pub grpc_call_responses: Vec<GrpcResponseFile>,
    /// The upstream's response, sent through the filter once the whole request went upstream.
    pub upstream_response: Option<UpstreamResponseFile>,
    /// Steps of the virtual clock, in milliseconds, taken in order after the request.
    pub advance_ms: Vec<u64>,
}

/// At most this many timer instants (ticks, timeouts) are stepped through one by one in a
/// single `--advance-ms` step; the rest of the step is advanced in one go (its timers still
/// fire, but calls made and ended within that rest are not listed). A 1 ms tick over 100 s.
const MAX_INSTANTS_PER_STEP: usize = 100_000;

/// Runs one request through the filter and reports what happened.
///
/// Order: VM start; root context (`proxy_on_vm_start`, `proxy_on_configure`; if either fails or
/// traps, the transcript says so and stops there); stream; request headers (`end_of_stream` when
/// there is neither body nor trailers); each body chunk (the last one ends the stream unless
/// trailers follow); trailers. Then the stream *settles*:
/// 1. pending calls are answered oldest first (HTTP and gRPC calls in the order they were
///    made), each with the next unused response of its kind, while responses of that kind are
///    left; calls made while answering take the following ones;
/// 2. once the whole request went upstream and no local response was sent, the upstream
///    response (if given) goes through `on_http_response_headers`, `..._body` (per chunk) and
///    `..._trailers`, and the stream settles again from 1;
/// 3. once the client has its whole response (a local response, the upstream response through
///    the filter to its end, or a reset), the stream finishes (Envoy: `on_log`, `on_done`,
///    `on_delete`; Kong: `on_done`, `on_log`, `on_delete`).
///
/// Then each `advance_ms` step moves the virtual clock, firing ticks and HTTP call timeouts in
/// time order (a timed-out call gets the profile's timeout failure), and the stream settles
/// again: calls made during a step, or left pending before it, take the next unused responses
/// at the end of the step. A call pending when its kind's responses ran out stays unanswered
/// (and times out if a step passes its deadline). At the end a stream that has not finished
/// finishes (its pending calls are cancelled, as Envoy cancels a destroyed stream's callouts).
///
/// With [`Clusters::Any`] and the Envoy profile, every upstream name the filter uses (HTTP or
/// gRPC) is accepted as a configured cluster ([`crate::VmOptions::any_cluster`]).
///
/// Errors are host failures (the module cannot start, `advance_ms` with a real clock, ...); a
/// filter that traps or refuses its configuration is a transcript, not an error.
pub fn run_scenario(
    module: &Module,
    options: &ScenarioOptions,
    input: &ScenarioInput,
) -> Result<Transcript, HostError> {
    let mut vm_options = options.vm.clone();
    match &options.clusters {
        Clusters::Only(names) => vm_options.clusters = names.clone(),
        Clusters::Any => vm_options.any_cluster = true,
    }
    run_once(module, vm_options, options, input)
}

/// What a filter made of its configuration: [`check_configuration`]'s report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigurationCheck {
    /// What `proxy_on_vm_start` returned (true when not exported).
    pub vm_start_ok: bool,
    /// What `proxy_on_configure` returned (true when not exported); false when the VM did not
    /// start or the filter trapped.
    pub configure_ok: bool,
    /// Every log line of the VM start and the configuration, guest and host, in order.
    pub logs: Vec<LogEntry>,
    /// Why the VM failed, when a callback trapped.
    pub trap: Option<String>,
}

impl ConfigurationCheck {
    /// Whether the filter took the configuration: it started, configured and did not trap.
    pub fn accepted(&self) -> bool {
        self.vm_start_ok && self.configure_ok && self.trap.is_none()
    }
}

/// Starts a VM and creates the root context with the plugin configuration, as a gateway does
/// when it loads a filter (`proxy_on_vm_start`, then `proxy_on_configure`), and reports what the
/// filter said. No stream is opened. A trap is a report, not an error; errors are host failures.
pub fn check_configuration(module: &Module, options: &ScenarioOptions) -> Result<ConfigurationCheck, HostError> {
    let mut vm_options = options.vm.clone();
    match &options.clusters {
        Clusters::Only(names) => vm_options.clusters = names.clone(),
        Clusters::Any => vm_options.any_cluster = true,
    }
    let mut vm = Vm::start(module, vm_options)?;
    let (vm_start_ok, configure_ok, trap) = match vm.create_root_context(&options.root_id, &options.configuration) {
        Ok(root) => (root.vm_start_ok, root.configure_ok, None),
        Err(HostError::VmFailed(reason)) => (false, false, Some(reason)),
        Err(e) => return Err(e),
    };
    Ok(ConfigurationCheck {
        vm_start_ok,
        configure_ok,
        logs: vm.logs(),
        trap: vm.failure().map(String::from).or(trap),
    })
}

/// What the book knows of one HTTP call.
struct HttpEntry {
    call: HttpCall,
    response: Option<usize>,
    timed_out: bool,
}

/// What the book knows of one gRPC call or stream.
struct GrpcEntry {
    call: GrpcCall,
    response: Option<usize>,
    timed_out: bool,
}

/// The calls seen so far, in the order made, and what answered them.
#[derive(Default)]
struct CallBook {
    http: Vec<HttpEntry>,
    grpc: Vec<GrpcEntry>,
}

impl CallBook {
    /// Notes calls made since the last look (each handed out once, [`Vm::take_new_calls`]), and
    /// what changed since on open gRPC streams (messages sent, half-close, cancel).
    fn observe(&mut self, vm: &mut Vm) {
        for new in vm.take_new_calls() {
            match new {
                NewCall::Http { call, .. } => self.http.push(HttpEntry {
                    call,
                    response: None,
                    timed_out: false,
                }),
                NewCall::Grpc { call, .. } => self.grpc.push(GrpcEntry {
                    call,
                    response: None,
                    timed_out: false,
                }),
            }
        }
        for call in vm.grpc_calls() {
            if let Some(entry) = self.grpc.iter_mut().find(|e| e.call.token == call.token) {
                entry.call = call;
            }
        }
    }

    fn http_entry(&mut self, token: u32) -> Option<&mut HttpEntry> {
        self.http.iter_mut().find(|e| e.call.token == token)
    }
}

/// Whether the upstream response has gone through the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// None was given.
    NotGiven,
    /// Given, waiting for the whole request to go upstream.
    Waiting,
    /// Sent through the filter.
    Delivered,
}

/// What is read from the stream right before it finishes (`on_delete` removes it).
#[derive(Default)]
struct StreamSnapshot {
    local_response: Option<TranscriptLocalResponse>,
    forwarded_upstream: bool,
    upstream_request: Option<UpstreamRequest>,
    paused_in: Option<String>,
    client_response: Option<ClientResponse>,
    upstream_why_not: Option<String>,
    /// HTTP calls still waiting for an answer when the stream finished.
    pending_http: BTreeSet<u32>,
}

/// The run in progress: the VM, the one stream, the calls seen and the responses left.
struct Driver<'a> {
    vm: Vm,
    stream: u32,
    input: &'a ScenarioInput,
    book: CallBook,
    next_http: usize,
    next_grpc: usize,
    upstream: Upstream,
    /// Set when the stream finished (and was read just before).
    snapshot: Option<StreamSnapshot>,
    callouts_time_out: bool,
    /// The filter's local reply as the host handed it to the filter's response callbacks.
    local_reply_passed: Option<PassedLocalReply>,
}

impl Driver<'_> {
    /// Answers pending calls, sends the upstream response once it is due, and finishes the
    /// stream once the client has its whole response (see [`run_scenario`]).
    fn settle(&mut self) -> Result<(), HostError> {
        self.answer_calls()?;
        if self.upstream == Upstream::Waiting
            && self.snapshot.is_none()
            && self.vm.stream_exists(self.stream)
            && self.vm.local_response(self.stream).is_none()
            && !self.vm.stream_reset(self.stream)
            && self.vm.request_forwarded_complete(self.stream)
        {
            self.upstream = Upstream::Delivered;
            self.send_upstream_response()?;
            self.answer_calls()?;
        }
        // A local reply goes through the filter's response callbacks, as in `serve`.
        if self.snapshot.is_none() && self.vm.stream_exists(self.stream) {
            if let Some(passed) = self.vm.pass_local_reply(self.stream) {
                self.book.observe(&mut self.vm);
                self.local_reply_passed = Some(passed);
            }
        }
        if self.snapshot.is_none() && self.vm.stream_exists(self.stream) {
            let answered = self.vm.local_response(self.stream).is_some()
                || self.vm.stream_reset(self.stream)
                || (self.upstream == Upstream::Delivered && self.vm.response_forwarded_complete(self.stream));
            if answered {
                self.finish()?;
            }
        }
        Ok(())
    }

    /// Answers the oldest pending call that has a response of its kind left, until none has.
    fn answer_calls(&mut self) -> Result<(), HostError> {
        let (http_responses, grpc_responses) = (&self.input.http_call_responses, &self.input.grpc_call_responses);
        // Each round uses one response, so this ends.
        while self.vm.failure().is_none() {
            let http = (self.next_http < http_responses.len())
                .then(|| self.vm.pending_http_call_tokens().first().copied())
                .flatten();
            let grpc = (self.next_grpc < grpc_responses.len())
                .then(|| {
                    let open = self.vm.grpc_calls();
                    let answered: BTreeSet<u32> = (self.book.grpc.iter())
                        .filter(|e| e.response.is_some())
                        .map(|e| e.call.token)
                        .collect();
                    open.into_iter()
                        .filter(|c| !c.ended_by_guest() && !answered.contains(&c.token))
                        .map(|c| c.token)
                        .min()
                })
                .flatten();
            match (http, grpc) {
                (Some(h), g) if g.is_none_or(|g| h < g) => {
                    let index = self.next_http;
                    self.next_http += 1;
                    self.vm.respond_http_call(h, http_responses[index].reply.clone())?;
                    if let Some(entry) = self.book.http_entry(h) {
                        entry.response = Some(index);
                    }
                }
                (_, Some(g)) => {
                    let index = self.next_grpc;
                    self.next_grpc += 1;
                    // The messages sent so far, before the answer may close the call.
                    self.book.observe(&mut self.vm);
                    if let Some(entry) = self.book.grpc.iter_mut().find(|e| e.call.token == g) {
                        entry.response = Some(index);
                    }
                    let mut reply = grpc_responses[index].reply.clone();
                    // The file is what the server sent; the filter sees its close message as the
                    // profile's host passes it on (Envoy appends `{via_upstream}`), as in `serve`.
                    let profile = self.vm.profile();
                    reply.close = (reply.close).map(|(code, m)| (code, profile.grpc_server_close_message(m)));
                    let unary = self
                        .book
                        .grpc
                        .iter()
                        .any(|e| e.call.token == g && e.call.kind == GrpcKind::Call);
                    self.vm
                        .respond_grpc(g, if unary { unary_outcome(reply) } else { reply })?;
                }
                _ => break,
            }
            self.book.observe(&mut self.vm);
        }
        Ok(())
    }

    /// Sends the upstream response through the filter's response callbacks.
    fn send_upstream_response(&mut self) -> Result<(), HostError> {
        let Some(response) = &self.input.upstream_response else {
            return Ok(());
        };
        let stream = self.stream;
        let has_trailers = !response.trailers.is_empty();
        let mut headers = vec![(":status".to_string(), response.status.to_string())];
        headers.extend(response.headers.iter().cloned());
        // The file is what the upstream sent; the filter sees it as the host's map presents it
        // (`HostBehaviour::upstream_response_headers`, as in `serve`), dated by the VM's clock.
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(self.vm.now_ns());
        let headers = self.vm.profile().upstream_response_headers(headers, now);
        let headers_end = response.body_chunks.is_empty() && !has_trailers;
        self.vm.send_response_headers(stream, &headers, headers_end)?;
        self.book.observe(&mut self.vm);
        let last = response.body_chunks.len().saturating_sub(1);
        for (i, chunk) in response.body_chunks.iter().enumerate() {
            if !self.vm.stream_exists(stream) {
                return Ok(());
            }
            self.vm.send_response_body(stream, chunk, i == last && !has_trailers)?;
            self.book.observe(&mut self.vm);
        }
        if has_trailers && self.vm.stream_exists(stream) {
            self.vm.send_response_trailers(stream, &response.trailers)?;
            self.book.observe(&mut self.vm);
        }
        Ok(())
    }

    /// Reads the stream, then ends it.
    fn finish(&mut self) -> Result<(), HostError> {
        let snapshot = self.read_stream();
        self.snapshot = Some(snapshot);
        if self.vm.stream_exists(self.stream) {
            self.vm.finish_stream(self.stream)?;
        }
        Ok(())
    }

    /// What the client gets of a local reply passed through the response callbacks: what the
    /// filter left of it, or after a trap there what the profile's host sends.
    fn passed_local_reply(&self, passed: &PassedLocalReply) -> ClientResponse {
        let (vm, stream) = (&self.vm, self.stream);
        let profile = vm.profile();
        let status_of = |headers: &[(String, String)]| {
            headers
                .iter()
                .find(|(k, _)| k == ":status")
                .and_then(|(_, v)| v.trim().parse().ok())
        };
        let (status, headers, body) = if passed.trapped {
            if profile.response_trap_fails_open() {
                (status_of(&passed.headers), passed.headers.clone(), passed.body.clone())
            } else {
                (Some(profile.fail_closed_status()), Vec::new(), Vec::new())
            }
        } else {
            let headers = vm.response_headers(stream).unwrap_or_else(|| passed.headers.clone());
            let body = vm.forwarded_response_body(stream).unwrap_or_default().to_vec();
            (status_of(&headers), headers, body)
        };
        let (body, body_base64) = encode_body(&body);
        ClientResponse {
            source: ResponseSource::Local,
            status,
            headers: headers.into_iter().filter(|(k, _)| k != ":status").collect(),
            body,
            body_base64,
            trailers: Vec::new(),
            complete: passed.trapped || vm.response_forwarded_complete(stream),
            paused_in: if passed.trapped {
                None
            } else {
                vm.response_paused_in(stream).map(String::from)
            },
            reset: false,
        }
    }

    fn read_stream(&self) -> StreamSnapshot {
        let (vm, stream) = (&self.vm, self.stream);
        let local_response = vm.local_response(stream).map(|l| {
            let (body, body_base64) = encode_body(&l.body);
            TranscriptLocalResponse {
                status: l.status,
                headers: l.headers.clone(),
                body,
                body_base64,
                details: l.details.clone(),
                grpc_status: l.grpc_status,
            }
        });
        let forwarded_upstream = local_response.is_none() && vm.request_forwarded_complete(stream);
        let upstream_request = vm.request_headers_forwarded(stream).then(|| {
            let (body, body_base64) = encode_body(vm.forwarded_request_body(stream).unwrap_or_default());
            UpstreamRequest {
                headers: vm.request_headers(stream).unwrap_or_default(),
                body,
                body_base64,
                trailers: vm.request_trailers(stream).unwrap_or_default(),
            }
        });
        let paused_in = if local_response.is_none() {
            vm.request_paused_in(stream).map(String::from)
        } else {
            None
        };
        let reset = vm.stream_reset(stream);
        let client_response = if let (Some(_), Some(passed)) = (&local_response, &self.local_reply_passed) {
            Some(self.passed_local_reply(passed))
        } else if let Some(local) = &local_response {
            Some(ClientResponse {
                source: ResponseSource::Local,
                status: Some(local.status),
                headers: local.headers.clone(),
                body: local.body.clone(),
                body_base64: local.body_base64,
                trailers: Vec::new(),
                complete: true,
                paused_in: None,
                reset: false,
            })
        } else if self.upstream == Upstream::Delivered {
            let headers_forwarded = vm.response_headers_forwarded(stream);
            let all = if headers_forwarded {
                vm.response_headers(stream).unwrap_or_default()
            } else {
                Vec::new()
            };
            let status = all
                .iter()
                .find(|(k, _)| k == ":status")
                .and_then(|(_, v)| v.trim().parse().ok());
            let complete = !reset && vm.response_forwarded_complete(stream);
            let (body, body_base64) = encode_body(vm.forwarded_response_body(stream).unwrap_or_default());
            Some(ClientResponse {
                source: ResponseSource::Upstream,
                status,
                headers: all.into_iter().filter(|(k, _)| k != ":status").collect(),
                body,
                body_base64,
                trailers: if complete {
                    vm.response_trailers(stream).unwrap_or_default()
                } else {
                    Vec::new()
                },
                complete,
                paused_in: vm.response_paused_in(stream).map(String::from),
                reset,
            })
        } else if reset {
            Some(ClientResponse {
                source: ResponseSource::Reset,
                status: None,
                headers: Vec::new(),
                body: String::new(),
                body_base64: false,
                trailers: Vec::new(),
                complete: false,
                paused_in: None,
                reset: true,
            })
        } else {
            None
        };
        let upstream_why_not = match self.upstream {
            Upstream::Waiting if local_response.is_some() => {
                Some("the filter answered locally (see local_response)".into())
            }
            Upstream::Waiting if reset => Some("the stream was reset before the request went upstream".into()),
            Upstream::Waiting => Some(match &paused_in {
                Some(callback) => format!("the request never went upstream whole: the filter held it in {callback}"),
                None => "the request never went upstream whole".into(),
            }),
            _ => None,
        };
        StreamSnapshot {
            local_response,
            forwarded_upstream,
            upstream_request,
            paused_in,
            client_response,
            upstream_why_not,
            pending_http: vm.pending_http_call_tokens().into_iter().collect(),
        }
    }

    /// One `--advance-ms` step: the clock moves timer by timer (so calls made and timed out
    /// within the step are seen), then the stream settles.
    fn step(&mut self, advance_ms: u64, start_ns: u64) -> Result<TimeStep, HostError> {
        let actions_before = self.vm.actions(self.stream).len();
        let logs_before = self.vm.logs().len() as u64 + self.vm.logs_dropped();
        let (http_before, grpc_before) = (self.book.http.len(), self.book.grpc.len());
        let ticks_before = self.vm.ticks_fired();
        let (answered_http_before, answered_grpc_before) = (self.next_http, self.next_grpc);
        let local_before = self.has_local_response();
        let target = self.vm.now_ns().saturating_add(advance_ms.saturating_mul(1_000_000));
        let (mut timeouts, mut grpc_timeouts) = (Vec::new(), Vec::new());
        for _ in 0..MAX_INSTANTS_PER_STEP {
            let Some(next) = self.vm.next_timer_ns().filter(|t| *t <= target) else {
                break;
            };
            if self.callouts_time_out {
                let pending: BTreeSet<u32> = self.vm.pending_http_call_tokens().into_iter().collect();
                for (index, entry) in self.book.http.iter_mut().enumerate() {
                    if entry.call.deadline_ns == Some(next) && pending.contains(&entry.call.token) {
                        entry.timed_out = true;
                        timeouts.push(index);
                    }
                }
                let pending: BTreeSet<u32> = self.vm.pending_grpc_call_tokens().into_iter().collect();
                for (index, entry) in self.book.grpc.iter_mut().enumerate() {
                    if entry.call.deadline_ns == Some(next) && pending.contains(&entry.call.token) {
                        entry.timed_out = true;
                        grpc_timeouts.push(index);
                    }
                }
            }
            self.vm
                .advance_time(Duration::from_nanos(next.saturating_sub(self.vm.now_ns())))?;
            self.book.observe(&mut self.vm);
            if self.vm.next_timer_ns() == Some(next) {
                // Nothing moved the timer (it cannot fire): do not spin on it.
                break;
            }
        }
        let rest = target.saturating_sub(self.vm.now_ns());
        self.vm.advance_time(Duration::from_nanos(rest))?;
        self.book.observe(&mut self.vm);
        self.settle()?;

        let logs = self.vm.logs();
        let new_logs = (logs.len() as u64 + self.vm.logs_dropped()).saturating_sub(logs_before);
        let skip = logs.len().saturating_sub(new_logs as usize);
        Ok(TimeStep {
            advance_ms,
            at_ms: self.vm.now_ns().saturating_sub(start_ns) / 1_000_000,
            ticks: self.vm.ticks_fired() - ticks_before,
            timeouts,
            grpc_timeouts,
            http_calls: (http_before..self.book.http.len()).collect(),
            grpc_calls: (grpc_before..self.book.grpc.len()).collect(),
            http_calls_answered: answered_since(self.book.http.iter().map(|e| e.response), answered_http_before),
            grpc_calls_answered: answered_since(self.book.grpc.iter().map(|e| e.response), answered_grpc_before),
            actions: transcript_actions(&self.vm.actions(self.stream)[actions_before..]),
            logs: logs.into_iter().skip(skip).map(transcript_log).collect(),
            local_response: !local_before && self.has_local_response(),
            trap: self.vm.failure().map(String::from),
        })
    }

    fn has_local_response(&self) -> bool {
        match &self.snapshot {
            Some(s) => s.local_response.is_some(),
            None => self.vm.local_response(self.stream).is_some(),
        }
    }
}

fn run_once(
    module: &Module,
    vm_options: VmOptions,
    options: &ScenarioOptions,
    input: &ScenarioInput,
) -> Result<Transcript, HostError> {
    let profile = vm_options.profile;
    let restricted =
        matches!(options.clusters, Clusters::Only(_)) && profile.callout_upstream() == CalloutUpstream::Cluster;
    let clusters = restricted.then(|| vm_options.clusters.clone());
    let callouts_time_out = vm_options.callouts_time_out;
    let mut vm = Vm::start(module, vm_options)?;
    let mut transcript = Transcript {
        module_sha256: module.sha256().to_string(),
        profile: profile.to_string(),
        clusters,
        vm_start_ok: false,
        configure_ok: false,
        actions: Vec::new(),
        http_calls: Vec::new(),
        local_response: None,
        forwarded_upstream: false,
        upstream_request: None,
        paused_in: None,
        unused_http_call_responses: input.http_call_responses.len(),
        grpc_calls: Vec::new(),
        unused_grpc_call_responses: input.grpc_call_responses.len(),
        upstream_response: input.upstream_response.as_ref().map(|_| UpstreamResponseUse {
            used: false,
            why_not: Some("the filter did not take its configuration: no request was sent".into()),
        }),
        client_response: None,
        time_steps: Vec::new(),
        logs: Vec::new(),
        trap: None,
    };

    let root = match vm.create_root_context(&options.root_id, &options.configuration) {
        Ok(root) => root,
        Err(HostError::VmFailed(_)) => return Ok(finish_transcript(transcript, &vm)),
        Err(e) => return Err(e),
    };
    transcript.vm_start_ok = root.vm_start_ok;
    transcript.configure_ok = root.configure_ok;
    if !root.vm_start_ok || !root.configure_ok {
        return Ok(finish_transcript(transcript, &vm));
    }

    let start_ns = vm.now_ns();
    let stream = vm.create_http_stream(root.id)?;
    let mut driver = Driver {
        vm,
        stream,
        input,
        book: CallBook::default(),
        next_http: 0,
        next_grpc: 0,
        upstream: match input.upstream_response {
            Some(_) => Upstream::Waiting,
            None => Upstream::NotGiven,
        },
        snapshot: None,
        callouts_time_out,
        local_reply_passed: None,
    };
    send_request(&mut driver.vm, stream, &input.request, &mut driver.book)?;
    driver.settle()?;
    for advance_ms in &input.advance_ms {
        let step = driver.step(*advance_ms, start_ns)?;
        transcript.time_steps.push(step);
    }
    if driver.snapshot.is_none() {
        driver.finish()?;
    }

    let Driver {
        vm,
        book,
        next_http,
        next_grpc,
        upstream,
        snapshot,
        ..
    } = driver;
    let snapshot = snapshot.unwrap_or_default();
    transcript.unused_http_call_responses = input.http_call_responses.len() - next_http;
    transcript.unused_grpc_call_responses = input.grpc_call_responses.len() - next_grpc;
    // Left without an answer: pending when the stream finished (which cancelled them), or, for
    // a root context's calls, still pending at the end.
    let mut pending_http = snapshot.pending_http.clone();
    pending_http.extend(vm.pending_http_call_tokens());
    transcript.http_calls = book
        .http
        .into_iter()
        .map(
            |HttpEntry {
                 call,
                 response,
                 timed_out,
             }| {
                let outcome = match response {
                    Some(_) => CallOutcome::Answered,
                    None if timed_out => CallOutcome::TimedOut,
                    None if pending_http.contains(&call.token) => CallOutcome::Unanswered,
                    None => CallOutcome::Cancelled,
                };
                let (body, body_base64) = encode_body(&call.body);
                TranscriptHttpCall {
                    upstream: call.upstream,
                    headers: call.headers,
                    body,
                    body_base64,
                    trailers: call.trailers,
                    timeout_ms: call.timeout_ms,
                    outcome,
                    response,
                }
            },
        )
        .collect();
    transcript.grpc_calls = book.grpc.into_iter().map(transcript_grpc_call).collect();
    transcript.local_response = snapshot.local_response;
    transcript.forwarded_upstream = snapshot.forwarded_upstream;
    transcript.upstream_request = snapshot.upstream_request;
    transcript.paused_in = snapshot.paused_in;
    transcript.client_response = snapshot.client_response;
    transcript.upstream_response = match upstream {
        Upstream::NotGiven => None,
        Upstream::Delivered => Some(UpstreamResponseUse {
            used: true,
            why_not: None,
        }),
        Upstream::Waiting => Some(UpstreamResponseUse {
            used: false,
            why_not: snapshot.upstream_why_not,
        }),
    };
    transcript.actions = transcript_actions(vm.actions(stream));
    Ok(finish_transcript(transcript, &vm))
}

fn transcript_grpc_call(entry: GrpcEntry) -> TranscriptGrpcCall {
    let GrpcEntry {
        call,
        response,
        timed_out,
    } = entry;
    let (messages, messages_base64) = encode_messages(&call.messages);
    let outcome = if call.ended_by_guest() {
        CallOutcome::Cancelled
    } else if timed_out {
        CallOutcome::TimedOut
    } else if response.is_some() {
        CallOutcome::Answered
    } else {
        CallOutcome::Unanswered
    };
    TranscriptGrpcCall {
        kind: match call.kind {
            GrpcKind::Call => "call".into(),
            GrpcKind::Stream => "stream".into(),
        },
        upstream: call.upstream,
        service: call.service,
        method: call.method,
        initial_metadata: call.initial_metadata,
        messages,
        messages_base64,
        timeout_ms: call.timeout_ms,
        outcome,
        response,
    }
}

/// What a unary gRPC call's handler passes on in Envoy: only the outcome. A success (status
/// OK, or none given) is `proxy_on_grpc_receive` with the last response message (Envoy's unary
/// request keeps the last it received, ENVOY-SRC async_client_impl.cc `AsyncRequestImpl`), or
/// an empty one when the file gives none (a file cannot express a server that sent no message,
/// which `serve` closes with 13); a failure is `proxy_on_grpc_close` with the status and
/// message. Metadata are not delivered for unary
/// calls (ENVOY-SRC context.cc: `GrpcCallClientHandler` implements only
/// `onCreateInitialMetadata`, `onSuccessRaw` -> `onGrpcReceive`, `onFailure` -> `onGrpcClose`;
/// the metadata callbacks exist on `GrpcStreamClientHandler` only). Streams take the file as is.
fn unary_outcome(reply: GrpcReply) -> GrpcReply {
    match reply.close {
        Some((code, message)) if code != 0 => GrpcReply {
            close: Some((code, message)),
            ..GrpcReply::default()
        },
        _ => GrpcReply {
            messages: vec![reply.messages.into_iter().last().unwrap_or_default()],
            ..GrpcReply::default()
        },
    }
}

/// Indexes of the calls answered by response file `first` or a later one (files are used in
/// order, so those are the ones answered since `first` was the next unused).
fn answered_since(responses: impl Iterator<Item = Option<usize>>, first: usize) -> Vec<usize> {
    responses
        .enumerate()
        .filter(|(_, r)| r.is_some_and(|r| r >= first))
        .map(|(i, _)| i)
        .collect()
}

fn transcript_actions(actions: &[crate::vm::ActionRecord]) -> Vec<TranscriptAction> {
    actions
        .iter()
        .map(|a| TranscriptAction {
            callback: a.callback.to_string(),
            action: a.action.map(str::to_string),
        })
        .collect()
}

fn transcript_log(l: LogEntry) -> TranscriptLog {
    TranscriptLog {
        level: l.level.to_string(),
        message: l.message,
        context_id: l.context_id,
    }
}

/// Sends the request's headers, body chunks and trailers, noting the calls each step makes.
fn send_request(vm: &mut Vm, stream: u32, request: &RequestFile, book: &mut CallBook) -> Result<(), HostError> {
    let has_trailers = !request.trailers.is_empty();
    let headers_end = !request.has_body() && !has_trailers;
    vm.send_request_headers(stream, &request.headers, headers_end)?;
    book.observe(vm);
    let last = request.body_chunks.len().saturating_sub(1);
    for (i, chunk) in request.body_chunks.iter().enumerate() {
        if !vm.stream_exists(stream) {
            return Ok(());
        }
        vm.send_request_body(stream, chunk, i == last && !has_trailers)?;
        book.observe(vm);
    }
    if has_trailers && vm.stream_exists(stream) {
        vm.send_request_trailers(stream, &request.trailers)?;
        book.observe(vm);
    }
    Ok(())
}

/// Adds what is read at the very end: the logs and the trap.
fn finish_transcript(mut transcript: Transcript, vm: &Vm) -> Transcript {
    transcript.logs = vm.logs().into_iter().map(transcript_log).collect();
    transcript.trap = vm.failure().map(String::from);
    transcript
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::encode_pairs;
    use crate::engine::{Engine, EngineConfig};
    use crate::vm::HttpCallReply;

    fn wat_bytes(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("\\{b:02x}")).collect()
    }

    /// Continues every request phase. In `on_request_headers` it calls upstream `a`; the answer
    /// to that call makes a second call to `b`, and the answer to the second sends a local 201.
    fn module() -> Module {
        let headers = encode_pairs(&[(":method", "GET"), (":path", "/"), (":authority", "x")]);
        let wat = format!(
            r#"(module
  (import "env" "proxy_http_call"
    (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $send (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (global $answers (mut i32) (i32.const 0))
  (data (i32.const 100) "ab")
  (data (i32.const 300) "{headers}")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $call (i32.const 100) (i32.const 1) (i32.const 300) (i32.const {len})
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 2000)))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_request_trailers") (param i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (global.set $answers (i32.add (global.get $answers) (i32.const 1)))
    (if (i32.eq (global.get $answers) (i32.const 1))
      (then
        (drop (call $call (i32.const 101) (i32.const 1) (i32.const 300) (i32.const {len})
          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 2000) (i32.const 2000))))
      (else
        (drop (call $send (i32.const 201) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
          (i32.const 0) (i32.const 0) (i32.const -1))))))
)"#,
            headers = wat_bytes(&headers),
            len = headers.len(),
        );
        let engine = Engine::new(EngineConfig {
            cache_dir: None,
            fuel: false,
        })
        .unwrap();
        engine.load_bytes(wat.as_bytes()).unwrap()
    }

    fn request() -> RequestFile {
        RequestFile {
            headers: vec![
                (":method".into(), "POST".into()),
                (":path".into(), "/".into()),
                (":authority".into(), "h".into()),
            ],
            body_chunks: vec![b"ab".to_vec(), vec![0xff]],
            trailers: vec![("t".into(), "1".into())],
        }
    }

    fn input(request: &RequestFile, responses: &[CallResponseFile]) -> ScenarioInput {
        ScenarioInput {
            request: request.clone(),
            http_call_responses: responses.to_vec(),
            ..ScenarioInput::default()
        }
    }

    fn ok() -> CallResponseFile {
        CallResponseFile {
            reply: HttpCallReply::Response {
                status: 200,
                headers: vec![],
                body: b"{}".to_vec(),
                trailers: vec![],
            },
        }
    }

    fn names(t: &Transcript) -> Vec<(&str, Option<&str>)> {
        t.actions
            .iter()
            .map(|a| (a.callback.as_str(), a.action.as_deref()))
            .collect()
    }

    #[test]
    fn sends_chunks_and_trailers_then_answers_calls_in_order() {
        let module = module();
        let options = ScenarioOptions::new(Profile::Envoy);
        let t = run_scenario(&module, &options, &input(&request(), &[ok(), ok()])).unwrap();
        assert_eq!(
            names(&t),
            vec![
                ("on_request_headers", Some("Continue")),
                ("on_request_body", Some("Continue")),
                ("on_request_body", Some("Continue")),
                ("on_request_trailers", Some("Continue")),
                ("on_http_call_response", None),
                ("on_http_call_response", None),
                // The filter's local reply (no body) passes through its response callbacks.
                ("on_response_headers", Some("Continue")),
                // Envoy's end of a stream (HostBehaviour::stream_end_callbacks).
                ("on_log", None),
                ("on_done", None),
                ("on_delete", None),
            ]
        );
        // The call made while answering the first got the second response.
        let calls: Vec<_> = t
            .http_calls
            .iter()
            .map(|c| (c.upstream.as_str(), c.outcome, c.response))
            .collect();
        assert_eq!(
            calls,
            vec![
                ("a", CallOutcome::Answered, Some(0)),
                ("b", CallOutcome::Answered, Some(1))
            ]
        );
        assert_eq!(t.local_response.as_ref().unwrap().status, 201);
        let upstream = t.upstream_request.as_ref().unwrap();
        // Not UTF-8 (0xff), so base64 of "ab\xff".
        assert_eq!((upstream.body.as_str(), upstream.body_base64), ("YWL/", true));
        assert_eq!(upstream.trailers, vec![("t".to_string(), "1".to_string())]);
        assert!(t.clusters.is_none());
        assert!(t.trap.is_none());
    }

    #[test]
    fn a_call_without_a_response_stays_unanswered() {
        let module = module();
        let options = ScenarioOptions::new(Profile::Envoy);
        let t = run_scenario(&module, &options, &input(&request(), &[ok()])).unwrap();
        assert_eq!(t.http_calls[1].outcome, CallOutcome::Unanswered);
        assert_eq!(t.http_calls[1].response, None);
        assert!(t.local_response.is_none());
        assert!(t.forwarded_upstream);
        assert_eq!(t.unused_http_call_responses, 0);
    }

    #[test]
    fn a_unary_call_gets_only_its_outcome() {
        let full = GrpcReply {
            initial_metadata: Some(vec![("a".into(), "1".into())]),
            messages: vec![b"one".to_vec(), b"two".to_vec()],
            trailing_metadata: Some(vec![("t".into(), "2".into())]),
            close: Some((0, String::new())),
        };
        // The last message, as Envoy keeps it.
        let ok = GrpcReply {
            messages: vec![b"two".to_vec()],
            ..GrpcReply::default()
        };
        assert_eq!(unary_outcome(full.clone()), ok);
        assert_eq!(
            unary_outcome(GrpcReply {
                close: None,
                ..full.clone()
            }),
            ok
        );
        // No message and no status: an empty response message, still a success.
        assert_eq!(
            unary_outcome(GrpcReply::default()),
            GrpcReply {
                messages: vec![Vec::new()],
                ..GrpcReply::default()
            }
        );
        assert_eq!(
            unary_outcome(GrpcReply {
                close: Some((14, "down".into())),
                ..full
            }),
            GrpcReply {
                close: Some((14, "down".into())),
                ..GrpcReply::default()
            }
        );
    }

    #[test]
    fn answered_since_picks_the_calls_of_later_files() {
        let responses = [Some(0), None, Some(2), Some(1), None];
        assert_eq!(answered_since(responses.into_iter(), 1), vec![2, 3]);
        assert_eq!(answered_since(responses.into_iter(), 3), Vec::<usize>::new());
        assert_eq!(answered_since(responses.into_iter(), 0), vec![0, 2, 3]);
    }

    #[test]
    fn a_cluster_list_is_enforced() {
        let module = module();
        let mut options = ScenarioOptions::new(Profile::Envoy);
        options.clusters = Clusters::Only(vec!["b".into()]);
        let t = run_scenario(&module, &options, &input(&request(), &[ok()])).unwrap();
        assert!(t.http_calls.is_empty());
        assert_eq!(t.unused_http_call_responses, 1);
        assert_eq!(t.clusters, Some(vec!["b".to_string()]));
        assert!(t
            .logs
            .iter()
            .any(|l| l.message.starts_with("proxy_http_call: unknown upstream")));
    }

    #[test]
    fn kong_delivers_the_body_once() {
        let module = module();
        let options = ScenarioOptions::new(Profile::Kong);
        let mut req = request();
        req.trailers.clear();
        let t = run_scenario(&module, &options, &input(&req, &[ok(), ok()])).unwrap();
        let bodies = t.actions.iter().filter(|a| a.callback == "on_request_body").count();
        assert_eq!(bodies, 1);
        assert_eq!(t.profile, "kong");
        assert_eq!(t.http_calls.len(), 2);
    }
}
