//! One request through a filter, start to finish: the driver behind `host-sim run`, callable
//! from tests as well.
//!
//! [`run_scenario`] starts a VM, creates the root context with the plugin configuration, opens
//! one HTTP stream, sends the request (headers, body whole or in chunks, trailers), answers the
//! filter's HTTP calls with the given responses, finishes the stream and returns the
//! [`Transcript`]. [`check_configuration`] stops after the root context: what the filter made
//! of its configuration (`host-sim check`). Everything goes through the public [`Vm`] API.

use crate::engine::Module;
use crate::error::HostError;
use crate::profile::Profile;
use crate::state::{HttpCall, LogEntry};
use crate::transcript::{
    encode_body, CallOutcome, CallResponseFile, RequestFile, Transcript, TranscriptAction, TranscriptHttpCall,
    TranscriptLocalResponse, TranscriptLog, UpstreamRequest,
};
use crate::vm::{Vm, VmOptions};
use std::collections::BTreeSet;

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

/// Runs one request through the filter and reports what happened.
///
/// Order: VM start; root context (`proxy_on_vm_start`, `proxy_on_configure`; if either fails or
/// traps, the transcript says so and stops there); stream; request headers (`end_of_stream` when
/// there is neither body nor trailers); each body chunk (the last one ends the stream unless
/// trailers follow); trailers. Then the pending HTTP calls are answered oldest first, each with
/// the next of `responses`; calls made while answering get the following responses. A call
/// left without a response stays unanswered (outcome `unanswered`) and is cancelled when the
/// stream finishes, as Envoy cancels a destroyed stream's callouts; no timeout fires, since
/// the virtual clock does not move. Finally the stream finishes (Envoy: `on_log`, `on_done`,
/// `on_delete`; Kong: `on_done`, `on_log`, `on_delete`).
///
/// With [`Clusters::Any`] and the Envoy profile, every upstream name the filter uses (HTTP or
/// gRPC) is accepted as a configured cluster ([`crate::VmOptions::any_cluster`]).
///
/// Errors are host failures (the module cannot start, ...); a filter that traps or refuses its
/// configuration is a transcript, not an error.
pub fn run_scenario(
    module: &Module,
    options: &ScenarioOptions,
    request: &RequestFile,
    responses: &[CallResponseFile],
) -> Result<Transcript, HostError> {
    let mut vm_options = options.vm.clone();
    match &options.clusters {
        Clusters::Only(names) => vm_options.clusters = names.clone(),
        Clusters::Any => vm_options.any_cluster = true,
    }
    run_once(module, vm_options, options, request, responses)
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

/// The calls seen so far, in the order made, and what answered them.
#[derive(Default)]
struct CallBook {
    calls: Vec<(HttpCall, Option<usize>)>,
    seen: BTreeSet<u32>,
}

impl CallBook {
    /// Notes calls made since the last look.
    fn observe(&mut self, vm: &Vm) {
        for call in vm.http_calls() {
            if self.seen.insert(call.token) {
                self.calls.push((call, None));
            }
        }
    }

    fn answered(&mut self, token: u32, response: usize) {
        if let Some((_, r)) = self.calls.iter_mut().find(|(c, _)| c.token == token) {
            *r = Some(response);
        }
    }
}

fn run_once(
    module: &Module,
    vm_options: VmOptions,
    options: &ScenarioOptions,
    request: &RequestFile,
    responses: &[CallResponseFile],
) -> Result<Transcript, HostError> {
    let profile = vm_options.profile;
    let restricted = matches!(options.clusters, Clusters::Only(_)) && profile == Profile::Envoy;
    let clusters = restricted.then(|| vm_options.clusters.clone());
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
        unused_http_call_responses: responses.len(),
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

    let stream = vm.create_http_stream(root.id)?;
    let mut book = CallBook::default();
    send_request(&mut vm, stream, request, &mut book)?;

    let mut next = 0;
    while next < responses.len() && vm.failure().is_none() {
        let Some(call) = vm.http_calls().into_iter().next() else {
            break;
        };
        vm.respond_http_call(call.token, responses[next].reply.clone())?;
        book.answered(call.token, next);
        next += 1;
        book.observe(&vm);
    }
    transcript.unused_http_call_responses = responses.len() - next;

    // Read the stream before it finishes: on_delete removes it.
    let pending: BTreeSet<u32> = vm.http_calls().iter().map(|c| c.token).collect();
    transcript.http_calls = book
        .calls
        .into_iter()
        .map(|(call, response)| {
            let outcome = match response {
                Some(_) => CallOutcome::Answered,
                None if pending.contains(&call.token) => CallOutcome::Unanswered,
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
        })
        .collect();
    transcript.local_response = vm.local_response(stream).map(|l| {
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
    transcript.forwarded_upstream = transcript.local_response.is_none() && vm.request_forwarded_complete(stream);
    if vm.request_headers_forwarded(stream) {
        let (body, body_base64) = encode_body(vm.forwarded_request_body(stream).unwrap_or_default());
        transcript.upstream_request = Some(UpstreamRequest {
            headers: vm.request_headers(stream).unwrap_or_default(),
            body,
            body_base64,
            trailers: vm.request_trailers(stream).unwrap_or_default(),
        });
    }
    if transcript.local_response.is_none() {
        transcript.paused_in = vm.request_paused_in(stream).map(String::from);
    }

    if vm.stream_exists(stream) {
        vm.finish_stream(stream)?;
    }
    transcript.actions = vm
        .actions(stream)
        .iter()
        .map(|a| TranscriptAction {
            callback: a.callback.to_string(),
            action: a.action.map(str::to_string),
        })
        .collect();
    Ok(finish_transcript(transcript, &vm))
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
    transcript.logs = vm
        .logs()
        .into_iter()
        .map(|l| TranscriptLog {
            level: l.level.to_string(),
            message: l.message,
            context_id: l.context_id,
        })
        .collect();
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
        let t = run_scenario(&module, &options, &request(), &[ok(), ok()]).unwrap();
        assert_eq!(
            names(&t),
            vec![
                ("on_request_headers", Some("Continue")),
                ("on_request_body", Some("Continue")),
                ("on_request_body", Some("Continue")),
                ("on_request_trailers", Some("Continue")),
                ("on_http_call_response", None),
                ("on_http_call_response", None),
                // Envoy's end of a stream (Profile::stream_end_callbacks).
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
        let t = run_scenario(&module, &options, &request(), &[ok()]).unwrap();
        assert_eq!(t.http_calls[1].outcome, CallOutcome::Unanswered);
        assert_eq!(t.http_calls[1].response, None);
        assert!(t.local_response.is_none());
        assert!(t.forwarded_upstream);
        assert_eq!(t.unused_http_call_responses, 0);
    }

    #[test]
    fn a_cluster_list_is_enforced() {
        let module = module();
        let mut options = ScenarioOptions::new(Profile::Envoy);
        options.clusters = Clusters::Only(vec!["b".into()]);
        let t = run_scenario(&module, &options, &request(), &[ok()]).unwrap();
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
        let t = run_scenario(&module, &options, &req, &[ok(), ok()]).unwrap();
        let bodies = t.actions.iter().filter(|a| a.callback == "on_request_body").count();
        assert_eq!(bodies, 1);
        assert_eq!(t.profile, "kong");
        assert_eq!(t.http_calls.len(), 2);
    }
}
