//! Seeded fuzzing (issue #13, item 3), in both profiles, reproducible from a seed.
//!
//! - [`chaos_guest`]: `test-filters/chaos` (a guest that calls all 39 host functions with chaotic
//!   pointers, lengths, enums and maps from every callback) driven through host-sim with random
//!   streams, callout replies, gRPC replies, ticks and queue notifications. Checks: host-sim never
//!   panics; a host function either returns or ends the callback with a clean trap (a failed VM
//!   names its reason); the host's bookkeeping (logs, pending calls, shared data, guest memory)
//!   stays within bounds; and the host still works afterwards: a fresh root context and stream
//!   on the same VM (when it has not failed) and on a new VM.
//! - [`filter_inputs`]: the real `kafka_upstream.wasm` with random configurations (valid and
//!   invalid, built from the configuration field table, message templates and record keys
//!   from a header or a body field included) and random requests (methods, odd paths
//!   and query strings, content types including broken multipart, invalid JSON, binary, chunked,
//!   trailers), answered by random REST proxy replies (acks, per-record errors, 4xx/5xx, garbage,
//!   failures, timeouts). Checks: no host panic, no filter trap, every request answered (or let
//!   through only where the filter passes requests on), never 200 before every record is
//!   acknowledged (sync), the message's `body` is the request body, and in async mode every
//!   record the client got 200 for is acknowledged by the REST proxy or counted as dropped.
//!
//! Bounded by case count in `make test` (`FUZZ_CASES` raises it); `FUZZ_SECONDS=N` runs new
//! seeds until N seconds have passed (`make fuzz SECONDS=N`). Every failure prints its seed and
//! the command that reruns exactly that case (`FUZZ_SEED=<seed>`). Failures found are kept as
//! regression tests at the end of this file.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::filter_common::{upstream, Gateway, Request};
use base64::Engine as _;
use host_sim::{Action, CalloutFailure, GrpcReply, HostError, HttpCall, HttpCallReply, Module, Profile, Vm, VmOptions};
use kafka_upstream_tests::{load, options, PROFILES};
use serde_json::{json, Value};

/// splitmix64: small, seedable, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `1/n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, choices: &'a [T]) -> &'a T {
        &choices[self.below(choices.len() as u64) as usize]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Fewer than `max` random bytes.
    fn bytes_upto(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max) as usize;
        self.bytes(n)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
    )
}

/// Runs `case` for each seed: `FUZZ_SEED` alone when set; else seeds `0..default_cases`
/// (`FUZZ_CASES` overrides the count); with `FUZZ_SECONDS`, consecutive seeds from a start
/// taken from the clock until that many seconds have passed. Each case runs under
/// `catch_unwind`, so a host panic is reported with its seed like any other failure.
fn run_seeds(test: &str, default_cases: u64, case: impl Fn(u64) -> Result<(), String>) {
    let rerun = |seed: u64| {
        format!(
            "FUZZ_SEED={seed} cargo test --release -p kafka-upstream-tests --test integration -- fuzz::{test} --exact"
        )
    };
    let run = |seed: u64| -> Result<(), String> {
        match catch_unwind(AssertUnwindSafe(|| case(seed))) {
            Ok(result) => result,
            Err(panic) => Err(format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            )),
        }
    };
    let fail = |seed: u64, why: String| panic!("{test}: seed {seed} failed: {why}\nrerun: {}", rerun(seed));
    if let Some(seed) = env_u64("FUZZ_SEED") {
        if let Err(why) = run(seed) {
            fail(seed, why);
        }
        return;
    }
    if let Some(seconds) = env_u64("FUZZ_SECONDS") {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() << 20);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut seed = start;
        while Instant::now() < deadline {
            if let Err(why) = run(seed) {
                fail(seed, why);
            }
            seed += 1;
        }
        eprintln!("{test}: seeds {start}..{seed} passed ({} cases)", seed - start);
        return;
    }
    let cases = env_u64("FUZZ_CASES").unwrap_or(default_cases);
    for seed in 0..cases {
        if let Err(why) = run(seed) {
            fail(seed, why);
        }
    }
}

// ---- Chaos guest against host-sim -------------------------------------------------------------

/// The Envoy cluster the chaos guest may name (it also tries Kong's `127.0.0.1:1`).
const CHAOS_CLUSTER: &str = "chaos";
/// Host calls per callback: at most this many.
const CHAOS_MAX_CALLS: u64 = 24;
/// The most host-side bytes one chaos case may leave behind (logs, pending calls, shared data).
const CHAOS_BOOKKEEPING_BUDGET: usize = 32 << 20;

fn chaos_options(profile: Profile) -> VmOptions {
    let mut o = options(profile);
    o.clusters = vec![CHAOS_CLUSTER.into()];
    // Tighter than the defaults so a case stays small and a stuck guest traps soon.
    o.limits.max_log_entries = 256;
    o.limits.max_guest_buffer_bytes = 256 << 10;
    o.limits.max_memory_bytes = 64 << 20;
    o.limits.callback_deadline = Duration::from_secs(2);
    o
}

/// Errors a chaotic guest may legitimately cause: it trapped, or it closed a context itself.
fn tolerated(result: Result<Option<Action>, HostError>) -> Result<(), String> {
    match result {
        Ok(_) | Err(HostError::VmFailed(_)) | Err(HostError::NoSuchContext(_)) => Ok(()),
        Err(e) => Err(format!("unexpected host error: {e}")),
    }
}

fn random_pairs(rng: &mut Rng) -> Vec<(String, String)> {
    (0..rng.below(4))
        .map(|i| {
            let value = String::from_utf8_lossy(&rng.bytes_upto(16)).into_owned();
            (format!("x-h{i}"), value)
        })
        .collect()
}

/// One HTTP stream through the chaos guest, as far as it goes.
fn chaos_stream(vm: &mut Vm, root: u32, rng: &mut Rng) -> Result<(), String> {
    let stream = match vm.create_http_stream(root) {
        Ok(id) => id,
        Err(HostError::VmFailed(_)) => return Ok(()),
        Err(e) => return Err(format!("create_http_stream: {e}")),
    };
    let mut headers = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), "/".to_string()),
        (":authority".to_string(), "chaos".to_string()),
    ];
    headers.extend(random_pairs(rng));
    let with_body = rng.one_in(2);
    tolerated(vm.send_request_headers(stream, &headers, !with_body))?;
    if with_body {
        for last in [false, true] {
            let chunk = rng.bytes_upto(2048);
            tolerated(vm.send_request_body(stream, &chunk, last && !rng.one_in(3)))?;
        }
        if rng.one_in(3) {
            tolerated(vm.send_request_trailers(stream, &random_pairs(rng)))?;
        }
    }
    if rng.one_in(4) {
        chaos_replies(vm, rng)?;
    }
    tolerated(vm.send_response_headers(stream, &[(":status", "200")], false))?;
    tolerated(vm.send_response_body(stream, &rng.bytes_upto(512), rng.one_in(2)))?;
    if rng.one_in(2) {
        tolerated(vm.send_response_trailers(stream, &random_pairs(rng)))?;
    }
    if !rng.one_in(5) {
        match vm.finish_stream(stream) {
            Ok(()) | Err(HostError::NoSuchContext(_)) | Err(HostError::VmFailed(_)) => {}
            Err(e) => return Err(format!("finish_stream: {e}")),
        }
    }
    Ok(())
}

/// Answers every pending HTTP callout and gRPC call with something random.
fn chaos_replies(vm: &mut Vm, rng: &mut Rng) -> Result<(), String> {
    for token in vm.pending_http_call_tokens() {
        let reply = match rng.below(4) {
            0 => HttpCallReply::Failure(*rng.pick(&[
                CalloutFailure::Timeout,
                CalloutFailure::BrokenConnection,
                CalloutFailure::Reset,
            ])),
            _ => HttpCallReply::Response {
                status: *rng.pick(&[200, 404, 500, 999]),
                headers: random_pairs(rng),
                body: rng.bytes_upto(1024),
                trailers: random_pairs(rng),
            },
        };
        match vm.respond_http_call(token, reply) {
            // The guest may have closed the context that made the call meanwhile.
            Ok(()) | Err(HostError::UnknownHttpCall(_)) => {}
            Err(e) => return Err(format!("respond_http_call: {e}")),
        }
    }
    for call in vm.grpc_calls() {
        let reply = GrpcReply {
            initial_metadata: rng.one_in(2).then(|| random_pairs(rng)),
            messages: (0..rng.below(3)).map(|_| rng.bytes_upto(64)).collect(),
            trailing_metadata: rng.one_in(2).then(|| random_pairs(rng)),
            close: rng.one_in(2).then(|| (rng.below(17) as u32, "chaos".to_string())),
        };
        match vm.respond_grpc(call.token, reply) {
            Ok(()) | Err(HostError::UnknownGrpcCall(_)) => {}
            Err(e) => return Err(format!("respond_grpc: {e}")),
        }
    }
    Ok(())
}

/// What host-sim holds for the VM, in bytes (every list the guest can grow that the API shows).
fn chaos_bookkeeping(vm: &mut Vm, o: &VmOptions) -> Result<(), String> {
    let logs = vm.logs();
    if logs.len() > o.limits.max_log_entries {
        return Err(format!(
            "{} log entries kept, limit {}",
            logs.len(),
            o.limits.max_log_entries
        ));
    }
    let mut bytes: usize = logs.iter().map(|e| e.message.len()).sum();
    for call in vm.http_calls() {
        let size = call.body.len() + call.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if call.body.len() > o.limits.max_guest_buffer_bytes {
            return Err(format!("a pending call keeps {} body bytes", call.body.len()));
        }
        bytes += size;
    }
    for call in vm.grpc_calls() {
        bytes += call.messages.iter().map(Vec::len).sum::<usize>();
    }
    let shared = vm.shared();
    for key in ["q", "k", "x-chaos", "chaos", ":method", ":path", "", "plugin_root_id"] {
        if let Some((value, _)) = shared.shared_data(&o.vm_id, key.as_bytes()) {
            bytes += value.len();
        }
        if let Some(items) = shared.queue_items(&o.vm_id, key) {
            bytes += items.iter().map(Vec::len).sum::<usize>();
        }
    }
    if bytes > CHAOS_BOOKKEEPING_BUDGET {
        return Err(format!(
            "host keeps {bytes} bytes for the VM, budget {CHAOS_BOOKKEEPING_BUDGET}"
        ));
    }
    let memory = vm.memory_bytes();
    if memory > o.limits.max_memory_bytes {
        return Err(format!(
            "guest memory {memory} over the limit {}",
            o.limits.max_memory_bytes
        ));
    }
    Ok(())
}

/// A root context configured to make no host calls, and a stream through it: both must work.
fn chaos_vm_usable(vm: &mut Vm, what: &str) -> Result<(), String> {
    let root = vm
        .create_root_context("", b"0 0")
        .map_err(|e| format!("{what}: a fresh root context failed: {e}"))?;
    if !root.configure_ok {
        return Err(format!("{what}: a fresh root context was not configured"));
    }
    let stream = vm
        .create_http_stream(root.id)
        .map_err(|e| format!("{what}: a fresh stream failed: {e}"))?;
    let headers = [(":method", "GET"), (":path", "/"), (":authority", "chaos")];
    let action = vm
        .send_request_headers(stream, &headers, true)
        .map_err(|e| format!("{what}: request headers failed: {e}"))?;
    if action != Some(Action::Continue) {
        return Err(format!("{what}: request headers answered {action:?}, not Continue"));
    }
    let action = vm
        .send_response_headers(stream, &[(":status", "204")], true)
        .map_err(|e| format!("{what}: response headers failed: {e}"))?;
    if action != Some(Action::Continue) {
        return Err(format!("{what}: response headers answered {action:?}, not Continue"));
    }
    vm.finish_stream(stream)
        .map_err(|e| format!("{what}: finishing the stream failed: {e}"))?;
    match vm.failure() {
        Some(why) => Err(format!("{what}: the VM failed on a quiet stream: {why}")),
        None => Ok(()),
    }
}

/// The host functions that end a Kong guest at once whatever the arguments (not implemented, a
/// second tick period, a metric id that does not exist): most cases leave them out so the chaos
/// reaches past `proxy_on_configure`; one in four keeps them.
fn quiet_skip_mask(profile: Profile) -> u64 {
    host_sim::HostFunction::ALL
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            use host_sim::HostFunction::*;
            !profile.implements(**f)
                || (profile == Profile::Kong
                    && matches!(
                        f,
                        SetTickPeriodMilliseconds | RecordMetric | IncrementMetric | GetMetric
                    ))
        })
        .fold(0, |mask, (i, _)| mask | 1 << i)
}

fn chaos_case(module: &Module, profile: Profile, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed ^ (profile as u64).wrapping_mul(0xA076_1D64_78BD_642F));
    let calls = 1 + rng.below(CHAOS_MAX_CALLS);
    let skip = if rng.one_in(4) { 0 } else { quiet_skip_mask(profile) };
    let chaos_config = format!("{seed} {calls} {skip}");
    let mut o = chaos_options(profile);
    o.vm_configuration = chaos_config.clone().into_bytes();
    let mut vm = Vm::start(module, o.clone()).map_err(|e| format!("starting the VM: {e}"))?;
    let root = match vm.create_root_context("", chaos_config.as_bytes()) {
        Ok(root) => Some(root.id),
        Err(HostError::VmFailed(_)) => None,
        Err(e) => return Err(format!("create_root_context: {e}")),
    };
    if let Some(root) = root {
        for _ in 0..4 + rng.below(12) {
            if vm.failure().is_some() {
                break;
            }
            match rng.below(6) {
                0 | 1 => chaos_stream(&mut vm, root, &mut rng)?,
                2 | 3 => chaos_replies(&mut vm, &mut rng)?,
                4 => vm
                    .advance_time(Duration::from_millis(rng.below(40)))
                    .map_err(|e| format!("advance_time: {e}"))?,
                _ => vm.poll_queues(),
            }
        }
        match vm.finish_root(root) {
            Ok(()) | Err(HostError::WrongContext(..)) => {}
            Err(e) => return Err(format!("finish_root: {e}")),
        }
    }
    if let Some(why) = vm.failure() {
        // A trap is allowed; it must say what happened, in one line, and not be a host panic.
        if why.trim().is_empty() || why.contains("panicked") {
            return Err(format!("unclear VM failure: {why:?}"));
        }
    }
    chaos_bookkeeping(&mut vm, &o)?;
    if std::env::var_os("FUZZ_VERBOSE").is_some() {
        eprintln!(
            "chaos {profile} seed {seed}: calls {calls}, skip {skip:#x}, failure {:?}, {} log entries, {} pending calls",
            vm.failure(),
            vm.logs().len(),
            vm.http_calls().len()
        );
    }
    if vm.failure().is_none() {
        chaos_vm_usable(&mut vm, "the same VM")?;
    }
    let mut fresh = Vm::start(module, chaos_options(profile)).map_err(|e| format!("starting a fresh VM: {e}"))?;
    chaos_vm_usable(&mut fresh, "a fresh VM")
}

#[test]
fn chaos_guest() {
    let module = load("chaos");
    run_seeds("chaos_guest", 5000, |seed| {
        for profile in PROFILES {
            chaos_case(&module, profile, seed).map_err(|e| format!("{profile}: {e}"))?;
        }
        Ok(())
    });
}

// ---- The filter's inputs ----------------------------------------------------------------------

/// Topics a request or a configuration may name.
const TOPICS: [&str; 4] = ["orders", "t1", "t2", "t3"];

/// A configuration and what the test must know about it.
struct FuzzConfig {
    bytes: Vec<u8>,
    /// The JSON (when the bytes are JSON), for the facts below.
    json: Option<Value>,
}

impl FuzzConfig {
    fn get(&self, pointer: &str) -> Option<&Value> {
        self.json.as_ref()?.pointer(pointer)
    }

    fn is_async(&self) -> bool {
        self.get("/producer_async") == Some(&Value::Bool(true))
    }

    fn v3(&self) -> bool {
        self.get("/rest_proxy/api") == Some(&json!("v3"))
    }

    /// Whether every message carries the request body: Kong's message with `forward_body`, or
    /// the fuzz template, whose `body` member is the body (see [`shaping_fields`]).
    fn forward_body(&self) -> bool {
        self.get("/message/mode") == Some(&json!("template")) || self.get("/forward_body") != Some(&Value::Bool(false))
    }

    fn topics_arg(&self) -> Option<&str> {
        self.get("/topics_query_arg").and_then(Value::as_str)
    }

    fn default_topic(&self) -> &str {
        self.get("/topic").and_then(Value::as_str).unwrap_or("orders")
    }
}

/// A valid value, or (one time in `invalid_odds`) an invalid one, for each configuration field
/// (the table in filter/src/config.rs, also filter/kafka_upstream.meta.json).
fn field_value(rng: &mut Rng, field: &str, invalid_odds: u64, is_async: bool) -> Value {
    let invalid = rng.one_in(invalid_odds);
    let long = "x".repeat(300);
    match (field, invalid) {
        ("forward_method" | "forward_uri" | "forward_headers" | "forward_body", false) => json!(rng.one_in(2)),
        ("forward_method" | "forward_uri" | "forward_headers" | "forward_body", true) => {
            rng.pick(&[json!("yes"), json!(1), json!(null)]).clone()
        }
        ("key_query_arg", false) => rng.pick(&[json!("key"), json!("k")]).clone(),
        ("key_query_arg", true) => rng.pick(&[json!(5), json!(""), json!(long)]).clone(),
        ("topics_query_arg", false) => json!("topics"),
        ("topics_query_arg", true) => rng.pick(&[json!([]), json!(""), json!(long)]).clone(),
        ("allowed_topics", false) => rng
            .pick(&[json!(["t1", "t2"]), json!(["t3"]), json!([]), json!({})])
            .clone(),
        ("allowed_topics", true) => rng.pick(&[json!("t1"), json!([""]), json!([long]), json!([1])]).clone(),
        ("max_body_size", false) => json!(*rng.pick(&[0, 16, 1000, 1_048_576])),
        ("max_body_size", true) => rng
            .pick(&[json!(-1), json!(67_108_865), json!("1k"), json!(1.5)])
            .clone(),
        ("partition", false) => json!(*rng.pick(&[0, 3])),
        ("partition", true) => rng.pick(&[json!(-1), json!("0")]).clone(),
        ("error_handling", false) => json!({"return_error_message": rng.one_in(2)}),
        ("error_handling", true) => rng.pick(&[json!({"x": 1}), json!(true)]).clone(),
        ("producer_async", false) => json!(is_async),
        ("producer_async", true) => json!("true"),
        // Asynchronous settings stay small so a case drains in a few hundred ticks.
        ("producer_async_buffering_limits_messages_in_memory", false) => json!(1 + rng.below(8)),
        ("producer_async_flush_timeout", false) => json!(1 + rng.below(200)),
        ("producer_async_health_failure_threshold", false) => json!(1 + rng.below(4)),
        ("producer_async_health_probe_interval", false) => json!(1 + rng.below(300)),
        ("producer_async_health_recovery_threshold", false) => json!(1 + rng.below(3)),
        ("producer_request_limits_bytes_per_request", false) => json!(*rng.pick(&[1, 200, 1_048_576])),
        ("producer_request_limits_messages_per_request", false) => json!(1 + rng.below(5)),
        ("producer_request_retries_backoff_timeout", false) => json!(rng.below(100)),
        ("producer_request_retries_max_attempts", false) => json!(1 + rng.below(4)),
        (_, true) => rng
            .pick(&[json!(0), json!(-5), json!(99_999_999_999u64), json!("7"), json!(null)])
            .clone(),
        (other, false) => panic!("no generator for {other}"),
    }
}

const FIELDS: [&str; 19] = [
    "forward_method",
    "forward_uri",
    "forward_headers",
    "forward_body",
    "key_query_arg",
    "topics_query_arg",
    "allowed_topics",
    "max_body_size",
    "partition",
    "error_handling",
    "producer_async",
    "producer_async_buffering_limits_messages_in_memory",
    "producer_async_flush_timeout",
    "producer_async_health_failure_threshold",
    "producer_async_health_probe_interval",
    "producer_async_health_recovery_threshold",
    "producer_request_limits_bytes_per_request",
    "producer_request_limits_messages_per_request",
    "producer_request_retries_backoff_timeout",
];

/// The message template of the fuzz configurations: Kong's `body` / `body_base64` members (so
/// the body check reads it like Kong's message) beside slots of every kind, interpolated ones
/// included.
fn fuzz_template() -> Value {
    json!({
        "body": "${body_base64}",
        "body_base64": true,
        "method": "${method}",
        "kong": "${kong}",
        "text": "${method} ${uri} q=${query.key} ct=${header.content-type} a0=${body_json/a/0} all=${body_json}",
        "fields": ["${body_json/a}", "${body_json/a/1/b}", "${query}", "${headers}", "${body}"],
        "at": "${received_at}",
        "at_ms": "${received_at_ms}",
        "id": "${request_id}"
    })
}

/// Message shaping and key fields (`message`, `key_header`, `key_body_field`), drawn from their
/// own generator seeded from `rng`'s state, so the draws of every other field (and every seed's
/// earlier cases) stay what they were.
fn shaping_fields(rng: &Rng, config: &mut Value) {
    let mut side = Rng::new(rng.0 ^ 0x5348_4150_494E_4721);
    let invalid = |side: &mut Rng| side.one_in(40);
    if side.one_in(4) {
        config["message"] = if invalid(&mut side) {
            side.pick(&[
                json!({"mode": "template"}),
                json!({"mode": "template", "template": "${nope}"}),
                json!({"mode": "template", "template": {"a": "x ${body_json/~2}"}}),
                json!({"mode": "kong", "template": {}}),
                json!({"mode": "lua"}),
                json!("body"),
            ])
            .clone()
        } else {
            json!({"mode": "template", "template": fuzz_template()})
        };
    }
    if side.one_in(4) {
        config["key_header"] = if invalid(&mut side) {
            side.pick(&[json!(":path"), json!(""), json!(7)]).clone()
        } else {
            side.pick(&[json!("content-type"), json!("x-key")]).clone()
        };
    }
    if side.one_in(4) {
        config["key_body_field"] = if invalid(&mut side) {
            side.pick(&[json!("a/b"), json!("/~2"), json!("")]).clone()
        } else {
            side.pick(&[json!("/a/0"), json!("/a"), json!("/n")]).clone()
        };
    }
}

/// Record headers (`headers`, Kong 3.15+ field names plus `static_headers`), drawn from their own
/// generator seeded from `rng`'s state like [`shaping_fields`], so earlier draws stay as they
/// were. A v2 configuration that would send record headers is rejected, which the fuzzer also
/// exercises.
fn record_header_fields(rng: &Rng, config: &mut Value) {
    let mut side = Rng::new(rng.0 ^ 0x4845_4144_4552_5321);
    if !side.one_in(4) {
        return;
    }
    if side.one_in(40) {
        config["headers"] = side
            .pick(&[
                json!({"repeated_headers_behavior": "merge"}),
                json!({"include_headers": "x-a"}),
                json!({"static_headers": {"env": 1}}),
                json!({"name_mappings": {"x-a": ""}}),
                json!({"forward_all_by_default": "yes"}),
                json!("all"),
            ])
            .clone();
        return;
    }
    let mut headers = json!({});
    if side.one_in(2) {
        headers["forward_http_headers_as_record_headers"] = json!(!side.one_in(4));
    }
    if side.one_in(2) {
        headers["forward_all_by_default"] = json!(side.one_in(2));
    }
    if side.one_in(2) {
        headers["include_headers"] = side
            .pick(&[json!(["x-a", "content-type"]), json!([]), json!(["X-B"])])
            .clone();
    }
    if side.one_in(2) {
        headers["exclude_headers"] = side.pick(&[json!(["user-agent"]), json!([])]).clone();
    }
    if side.one_in(3) {
        headers["name_mappings"] = json!({"x-a": "trace-id", "content-type": "ct"});
    }
    if side.one_in(3) {
        headers["repeated_headers_behavior"] =
            json!(*side.pick(&["retain_duplicates", "take_first", "concatenate_by_comma"]));
    }
    if side.one_in(3) {
        headers["static_headers"] = side.pick(&[json!({"env": "prod", "ct": "x"}), json!({})]).clone();
    }
    config["headers"] = headers;
}

fn random_config(rng: &mut Rng, profile: Profile) -> FuzzConfig {
    // Mostly valid: an invalid field one time in 40, a mutated document one time in 12.
    let is_async = rng.one_in(2);
    let mut rest = json!({"upstream": if rng.one_in(25) { "nowhere" } else { upstream(profile) }});
    if rng.one_in(3) {
        rest["api"] = json!("v3");
        rest["cluster_id"] = json!(*rng.pick(&["c1", "lkc-a/b"]));
    }
    if rng.one_in(3) {
        rest["format"] = json!(*rng.pick(&["binary", "json"]));
    }
    if rng.one_in(3) {
        rest["path_prefix"] = json!(*rng.pick(&["", "/kafka", "/p%20x"]));
    }
    if rng.one_in(4) {
        rest["headers"] = json!({"x-api-key": "secret"});
    }
    if rng.one_in(4) {
        rest["timeout"] = json!(*rng.pick(&[1, 100, 10_000]));
    }
    if rng.one_in(40) {
        rest[*rng.pick(&["api", "format", "scheme", "timeout", "upstream"])] = json!(*rng.pick(&["v4", "", "avro"]));
    }
    let mut config = json!({"topic": *rng.pick(&TOPICS), "rest_proxy": rest, "producer_async": is_async});
    for field in FIELDS {
        if rng.one_in(3) {
            config[field] = field_value(rng, field, 40, is_async);
        }
    }
    shaping_fields(rng, &mut config);
    record_header_fields(rng, &mut config);
    if rng.one_in(12) {
        let text = config.to_string();
        let bytes = match rng.below(5) {
            0 => text.as_bytes()[..rng.below(text.len() as u64) as usize].to_vec(),
            1 => b"null".to_vec(),
            2 => rng.bytes_upto(64),
            3 => {
                config
                    .as_object_mut()
                    .expect("object")
                    .remove(*rng.pick(&["topic", "rest_proxy"]));
                config.to_string().into_bytes()
            }
            _ => {
                config["no_such_field"] = json!(1);
                config.to_string().into_bytes()
            }
        };
        let json = serde_json::from_slice(&bytes).ok();
        return FuzzConfig { bytes, json };
    }
    FuzzConfig {
        bytes: config.to_string().into_bytes(),
        json: Some(config),
    }
}

/// A query argument with an odd encoding.
fn odd_arg(rng: &mut Rng) -> String {
    rng.pick(&[
        "a=%",
        "b=%zz",
        "c=%2",
        "d=a%00b",
        "e=%E2%82",
        "f=+x+",
        "g=a=b=c",
        "",
        "h",
        "i=",
        "key=k1",
        "key",
        "key=",
        "j=%2C",
        "k=%F0%9F%98%80",
        "l[]=1",
        "m=%25",
    ])
    .to_string()
}

/// The `topics` argument: plain values (the test predicts the targets from them).
fn topics_arg(rng: &mut Rng) -> String {
    rng.pick(&[
        "topics=t1",
        "topics=t1,t2",
        "topics=t2&topics=t1",
        "topics",
        "topics=",
        "topics=%20t1%20",
        "topics= t1 ,,t2",
        "topics=t3",
        "topics=orders,t1,t1",
        "topics=nope",
    ])
    .to_string()
}

/// A multipart body: well-formed for `boundary`, or broken.
fn multipart(rng: &mut Rng, boundary: &str) -> Vec<u8> {
    let good = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"a\"\r\n\r\n1\r\n--{boundary}\r\n\
         content-disposition: form-data; name=\"f\"; filename=\"x.bin\"\r\ncontent-type: application/octet-stream\r\n\r\n\x00\x01\r\n--{boundary}--\r\n"
    );
    match rng.below(4) {
        0 => good.into_bytes(),
        1 => good.as_bytes()[..rng.below(good.len() as u64) as usize].to_vec(),
        2 => good.replace(boundary, "other").into_bytes(),
        _ => format!("--{boundary}\r\nno headers here--{boundary}").into_bytes(),
    }
}

fn random_request(rng: &mut Rng) -> Request {
    let method = *rng.pick(&[
        "POST", "POST", "PUT", "GET", "DELETE", "PATCH", "HEAD", "OPTIONS", "M-SEARCH",
    ]);
    let mut path = rng
        .pick(&["/", "/kafka", "/a%2Fb", "/%", "/x/../y", "/é", "//"])
        .to_string();
    let args: Vec<String> = (0..rng.below(4))
        .map(|_| if rng.one_in(3) { topics_arg(rng) } else { odd_arg(rng) })
        .collect();
    if !args.is_empty() || rng.one_in(4) {
        path = format!("{path}?{}", args.join(*rng.pick(&["&", "&&", ";"])));
    }
    let mut req = Request::new(method, &path);
    let boundary = "XyZ";
    let content_type = *rng.pick(&[
        None,
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("APPLICATION/JSON"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=XyZ"),
        Some("multipart/form-data"),
        Some("multipart/form-data; boundary=\"\""),
        Some("text/plain"),
        Some("application/octet-stream"),
        Some("text/plain; charset=latin1"),
    ]);
    let body: Vec<u8> = match rng.below(9) {
        0 => Vec::new(),
        1 => br#"{"n":1,"s":"x y","a":[1,2,{"b":null}]}"#.to_vec(),
        2 => br#"{"n":1,"#.to_vec(),
        3 => b"[1, 2 , 3]".to_vec(),
        4 => b"a=1&b=%zz&c&a=2&=x".to_vec(),
        5 => multipart(rng, boundary),
        6 => rng.bytes_upto(300),
        7 => "é\u{0}\"\\\n".repeat(1 + rng.below(20) as usize).into_bytes(),
        _ => vec![b'z'; 1000 + rng.below(1200) as usize],
    };
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
        if rng.one_in(8) {
            req = req.header("content-type", "text/plain");
        }
    }
    for _ in 0..rng.below(3) {
        let name = *rng.pick(&["x-a", "x-a", "accept", "user-agent"]);
        let value = *rng.pick(&["1", "", "é", "a, b"]);
        req = req.header(name, value);
    }
    // Framing as an HTTP codec delivers it: a body comes with a Content-Length or chunked
    // transfer encoding; without either there is no body. (A body without either, as HTTP/2
    // allows, is not generated here, since Kong's nginx reads none; filter_request_shapes.rs's
    // `a_body_without_a_length_header_is_produced_on_envoy` covers it on Envoy.)
    // A chunked body always ends with its last chunk, a (possibly empty) body event.
    match rng.below(4) {
        0 | 1 => {
            req = req.header("content-length", &body.len().to_string());
            if body.is_empty() && rng.one_in(2) {
                return req;
            }
        }
        2 => req = req.header("transfer-encoding", "chunked"),
        _ => return req,
    }
    let chunks = 1 + rng.below(3) as usize;
    let size = body.len().div_ceil(chunks).max(1);
    for chunk in body.chunks(size) {
        req = req.chunk(chunk);
    }
    if body.is_empty() {
        req = req.chunk(&[]);
    }
    // Trailers only after a non-empty body: in host-sim's Kong profile an empty chunked body
    // followed by trailers reaches the filter as `on_request_trailers` without any body
    // callback, where Kong forbids dispatching, so the filter traps (seed 457; reported, not
    // fixed here: real Kong gives an empty chunked body no `on_request_body` at all, research
    // third-party-behaviour-2026-12.md, and what it does with trailers then is not recorded).
    if !body.is_empty() && rng.one_in(6) {
        req = req.trailers(&[("x-t", "1")]);
    }
    req
}

fn request_body(req: &Request) -> Vec<u8> {
    req.chunks.concat()
}

fn request_path(req: &Request) -> &str {
    req.headers
        .iter()
        .find(|(k, _)| k == ":path")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/")
}

/// The topics a request targets, when the query's `topics` argument uses only plain values (as
/// [`topics_arg`] writes them): split on `,`, trimmed, empty dropped, repeats once, across every
/// occurrence of the argument; none means the configured topic. (README "Targets".)
fn expected_topics(config: &FuzzConfig, req: &Request) -> Vec<String> {
    let mut topics: Vec<String> = Vec::new();
    if let Some(arg) = config.topics_arg() {
        let query = request_path(req).split_once('?').map_or("", |(_, q)| q);
        for part in query.split('&') {
            let Some(value) = part.strip_prefix(&format!("{arg}=")) else {
                continue;
            };
            for item in value.replace("%20", " ").split(',') {
                let item = item.trim();
                if !item.is_empty() && !topics.iter().any(|t| t == item) {
                    topics.push(item.to_string());
                }
            }
        }
    }
    if topics.is_empty() {
        topics.push(config.default_topic().to_string());
    }
    topics
}

fn unbase64(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("not base64 ({e}): {text:?}"))
}

/// The Kafka messages a REST call carries, in order (v2 `records`, or v3 one object per line;
/// binary values base64, JSON values embedded).
fn call_messages(call: &HttpCall) -> Result<Vec<Value>, String> {
    let values: Vec<Value> = serde_json::Deserializer::from_slice(&call.body)
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("call body is not JSON ({e}): {}", String::from_utf8_lossy(&call.body)))?;
    let records = match values.first().and_then(|v| v.get("records")) {
        Some(Value::Array(records)) => records.clone(),
        _ => values,
    };
    records
        .iter()
        .map(|r| {
            let value = &r["value"];
            match (value, value.get("type").and_then(Value::as_str)) {
                (Value::String(encoded), _) => decode_message(encoded),
                (_, Some("BINARY")) => decode_message(value["data"].as_str().unwrap_or_default()),
                (_, Some("JSON")) => Ok(value["data"].clone()),
                (Value::Object(_), None) => Ok(value.clone()),
                _ => Err(format!("record without a value: {r}")),
            }
        })
        .collect()
}

fn decode_message(encoded: &str) -> Result<Value, String> {
    let bytes = unbase64(encoded)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("message is not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// The request body a message carries (`body`, base64 when `body_base64`), if any.
fn message_body(message: &Value) -> Result<Option<Vec<u8>>, String> {
    let Some(body) = message.get("body") else {
        return Ok(None);
    };
    let text = body
        .as_str()
        .ok_or_else(|| format!("body is not a string: {message}"))?;
    if message.get("body_base64") == Some(&Value::Bool(true)) {
        unbase64(text).map(Some)
    } else {
        Ok(Some(text.as_bytes().to_vec()))
    }
}

/// The topic a produce call targets (`…/topics/{topic}` or `…/topics/{topic}/records`).
fn call_topic(call: &HttpCall) -> Option<String> {
    let path = call.header(":path")?;
    let mut segments = path.split('/');
    segments.find(|s| *s == "topics")?;
    segments.next().map(|s| s.replace("%20", " "))
}

fn ack_v2(i: usize) -> String {
    format!(r#"{{"partition":0,"offset":{i},"error_code":null,"error":null}}"#)
}

fn ack_v3(i: usize) -> String {
    format!(r#"{{"error_code":200,"cluster_id":"c1","topic_name":"t","partition_id":0,"offset":{i}}}"#)
}

fn json_reply(status: u16, body: String) -> HttpCallReply {
    HttpCallReply::Response {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.into_bytes(),
        trailers: Vec::new(),
    }
}

/// A 200 acknowledging every one of `records` records.
fn full_ack(v3: bool, records: usize) -> HttpCallReply {
    let body = if v3 {
        (0..records).map(ack_v3).collect::<Vec<_>>().join("\n")
    } else {
        format!(
            r#"{{"offsets":[{}]}}"#,
            (0..records).map(ack_v2).collect::<Vec<_>>().join(",")
        )
    };
    json_reply(200, body)
}

/// A random REST proxy reply for a call carrying `records` records; returns the reply and which
/// records it acknowledges (README "Answers": a 2xx whose v2 `offsets[i]` has no `error_code`,
/// or whose v3 result `i` has `error_code` 200).
fn random_reply(rng: &mut Rng, v3: bool, records: usize) -> (HttpCallReply, Vec<bool>) {
    let err_v2 = r#"{"partition":null,"offset":null,"error_code":50002,"error":"broker down"}"#;
    let err_v3 = r#"{"error_code":40403,"message":"no such partition"}"#;
    let response = json_reply;
    let none = vec![false; records];
    match rng.below(10) {
        // Every record acknowledged.
        0..=3 => (full_ack(v3, records), vec![true; records]),
        // Some records acknowledged, others with a per-record error.
        4 => {
            let acked: Vec<bool> = (0..records).map(|_| rng.one_in(2)).collect();
            let body = if v3 {
                let lines: Vec<String> = acked
                    .iter()
                    .enumerate()
                    .map(|(i, ok)| if *ok { ack_v3(i) } else { err_v3.to_string() })
                    .collect();
                lines.join("\n")
            } else {
                let offsets: Vec<String> = acked
                    .iter()
                    .enumerate()
                    .map(|(i, ok)| if *ok { ack_v2(i) } else { err_v2.to_string() })
                    .collect();
                format!(r#"{{"offsets":[{}]}}"#, offsets.join(","))
            };
            (response(200, body), acked)
        }
        // An error envelope.
        5 => {
            let (status, code) = *rng.pick(&[(404, 40401), (422, 42201), (500, 50001), (503, 50301)]);
            (
                response(status, format!(r#"{{"error_code":{code},"message":"no"}}"#)),
                none,
            )
        }
        // Garbage, or nothing, with a 200.
        6 => {
            let body = match rng.below(3) {
                0 => String::new(),
                1 => String::from_utf8_lossy(&rng.bytes_upto(40)).into_owned(),
                _ => r#"{"offsets":[]}"#.to_string(),
            };
            (response(200, body), none)
        }
        // The call fails at the host.
        _ => (
            HttpCallReply::Failure(*rng.pick(&[
                CalloutFailure::Timeout,
                CalloutFailure::BrokenConnection,
                CalloutFailure::Reset,
            ])),
            none,
        ),
    }
}

/// Statuses the filter answers with (README "Answers" and "Asynchronous mode").
const SYNC_STATUSES: [u32; 6] = [200, 400, 413, 500, 502, 504];
const ASYNC_STATUSES: [u32; 5] = [200, 400, 413, 500, 503];

/// Checks the body of every message in `call` is the body of `req`.
fn check_bodies(call: &HttpCall, req: &Request, config: &FuzzConfig) -> Result<(), String> {
    for message in call_messages(call)? {
        let body = message_body(&message)?;
        match (config.forward_body(), body) {
            (true, Some(body)) if body == request_body(req) => {}
            (true, body) => {
                return Err(format!(
                    "message body {:?} is not the request body {:?}",
                    body.map(|b| String::from_utf8_lossy(&b).into_owned()),
                    String::from_utf8_lossy(&request_body(req))
                ))
            }
            (false, None) => {}
            (false, Some(_)) => return Err("forward_body is false but the message has a body".into()),
        }
    }
    Ok(())
}

/// Sends `req` on a new stream; a filter trap is an error naming the request and the reason.
/// Kong's one shape the filter cannot stop at the request: a chunked request whose body is
/// empty gets no `on_request_body` (ngx_wasm_module calls none for an empty body), so the
/// request reaches the route's upstream; the filter fails closed at the response, replacing the
/// upstream's answer with its 500 and producing nothing. Returns true (after checking exactly
/// that) when `req` is that shape on Kong, so the caller skips its usual checks.
fn kong_empty_chunked_body_fails_closed(gw: &mut Gateway, stream: u32, req: &Request) -> Result<bool, String> {
    let chunked = req.headers.iter().any(|(k, _)| k == "transfer-encoding");
    let empty = !req.chunks.is_empty() && req.chunks.iter().all(|c| c.is_empty());
    if gw.profile != Profile::Kong || !chunked || !empty || gw.answered(stream) {
        return Ok(false);
    }
    if gw.vm.http_calls().iter().any(|c| c.context_id == stream) {
        return Err(format!(
            "request {req:?}: a call was made although no body was delivered"
        ));
    }
    let _ = gw.vm.send_response_headers(stream, &[(":status", "404")], false);
    let answer = gw
        .vm
        .local_response(stream)
        .ok_or_else(|| format!("request {req:?}: the upstream's answer was not replaced (fail-open)"))?;
    if answer.status != 500 || !String::from_utf8_lossy(&answer.body).contains("could not read the request body") {
        return Err(format!("request {req:?}: answer {} {:?}", answer.status, answer.body));
    }
    gw.vm.finish_stream(stream).map_err(|e| format!("finish_stream: {e}"))?;
    Ok(true)
}

fn send_checked(gw: &mut Gateway, req: &Request) -> Result<u32, String> {
    let stream = gw.vm.create_http_stream(gw.root).map_err(|e| format!("stream: {e}"))?;
    let eos = req.chunks.is_empty() && req.trailers.is_none();
    let trapped = |gw: &Gateway| {
        gw.vm
            .failure()
            .map(|why| format!("the filter trapped on {req:?}: {why}"))
    };
    let _ = gw.vm.send_request_headers(stream, &req.headers, eos);
    for (i, chunk) in req.chunks.iter().enumerate() {
        let last = i + 1 == req.chunks.len() && req.trailers.is_none();
        let _ = gw.vm.send_request_body(stream, chunk, last);
    }
    if let Some(trailers) = &req.trailers {
        let _ = gw.vm.send_request_trailers(stream, trailers);
    }
    match trapped(gw) {
        Some(e) => Err(e),
        None => Ok(stream),
    }
}

/// The client's answer (`content-type: application/json`), which must not be followed by the
/// request going upstream too. Gone upstream means host-sim saw the whole request through *and*
/// the filter's last request callback continued: `Vm::request_forwarded_complete` alone also
/// says true for a request whose last body chunk was empty, paused, and answered locally (the
/// stream ends before the pause is recorded, and an empty held body looks forwarded; found by
/// seed 6 of `filter_inputs`, see `empty_final_chunk_answered_locally_is_not_forwarded`).
fn checked_answer(gw: &Gateway, stream: u32, req: &Request) -> Result<(u32, String), String> {
    let last_request_action = gw
        .vm
        .actions(stream)
        .iter()
        .rev()
        .find(|a| a.callback.starts_with("on_request"))
        .and_then(|a| a.action);
    if gw.vm.request_forwarded_complete(stream) && last_request_action == Some("Continue") {
        return Err(format!(
            "request {req:?} was answered and also forwarded upstream; actions {:?}",
            gw.actions(stream)
        ));
    }
    let answer = gw
        .vm
        .local_response(stream)
        .ok_or_else(|| format!("request {req:?} has no answer"))?;
    if answer.headers != [("content-type".to_string(), "application/json".to_string())] {
        return Err(format!("answer headers {:?} to {req:?}", answer.headers));
    }
    let body = String::from_utf8(answer.body.clone()).map_err(|_| format!("answer to {req:?} is not UTF-8"))?;
    Ok((answer.status, body))
}

/// Synchronous mode: each request's calls answered at random; 200 exactly when every record was
/// acknowledged, and every message's body is the request body.
fn sync_case(gw: &mut Gateway, config: &FuzzConfig, rng: &mut Rng) -> Result<(), String> {
    for _ in 0..1 + rng.below(4) {
        let req = random_request(rng);
        let stream = send_checked(gw, &req)?;
        if kong_empty_chunked_body_fails_closed(gw, stream, &req)? {
            continue;
        }
        let mut all_acked = true;
        let mut calls_made = 0;
        // Each round answers the stream's pending calls (a call may be left to time out).
        for _ in 0..4 {
            let calls: Vec<HttpCall> = gw.calls().into_iter().filter(|c| c.context_id == stream).collect();
            if calls.is_empty() {
                break;
            }
            let mut time_out = false;
            for call in calls {
                calls_made += 1;
                check_bodies(&call, &req, config).map_err(|e| format!("request {req:?}: {e}"))?;
                if rng.one_in(8) {
                    // No reply: the host times the call out once the others are answered.
                    all_acked = false;
                    time_out = true;
                    continue;
                }
                let (reply, acked) = random_reply(rng, config.v3(), call_messages(&call)?.len());
                all_acked &= acked.iter().all(|a| *a);
                match reply {
                    HttpCallReply::Response {
                        status, headers, body, ..
                    } => {
                        let headers: Vec<(&str, &str)> =
                            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                        gw.reply_with(call.token, status, &headers, &body);
                    }
                    HttpCallReply::Failure(f) => gw.fail(call.token, f),
                }
            }
            if time_out {
                // Past every configured REST proxy timeout (at most 10 s here).
                gw.vm
                    .advance_time(Duration::from_millis(10_001))
                    .map_err(|e| format!("advance_time: {e}"))?;
            }
        }
        if !gw.answered(stream) {
            return Err(format!(
                "request {req:?} was not answered\n{}",
                gw.problems().join("\n")
            ));
        }
        let (status, body) = checked_answer(gw, stream, &req)?;
        if !SYNC_STATUSES.contains(&status) {
            return Err(format!("answer {status} {body} to {req:?}"));
        }
        let acked = calls_made > 0 && all_acked;
        if (status == 200) != acked {
            return Err(format!(
                "answer {status} {body} to {req:?}, but {calls_made} call(s) made, all acknowledged: {all_acked}"
            ));
        }
        gw.vm.finish_stream(stream).map_err(|e| format!("finish_stream: {e}"))?;
    }
    Ok(())
}

/// What the REST proxy saw in asynchronous mode, per (topic, body): records the clients got 200
/// for, and records acknowledged.
#[derive(Default)]
struct Ledger {
    accepted: BTreeMap<(String, Option<Vec<u8>>), u64>,
    acknowledged: BTreeMap<(String, Option<Vec<u8>>), u64>,
}

impl Ledger {
    /// Answers every pending call: at random, or (`drain`) acknowledging everything.
    fn answer_calls(
        &mut self,
        gw: &mut Gateway,
        config: &FuzzConfig,
        rng: &mut Rng,
        drain: bool,
    ) -> Result<(), String> {
        for call in gw.calls() {
            if call.context_id != gw.root {
                return Err(format!("a request context made a call: {call:?}"));
            }
            if call.header(":method") == Some("GET") {
                // A health probe.
                if drain || rng.one_in(2) {
                    gw.reply(call.token, 200, "[]");
                } else {
                    gw.fail(call.token, CalloutFailure::BrokenConnection);
                }
                continue;
            }
            let messages = call_messages(&call)?;
            let topic = call_topic(&call).ok_or_else(|| format!("no topic in {:?}", call.header(":path")))?;
            if !drain && rng.one_in(10) {
                continue; // Left to time out.
            }
            let (reply, acked) = if drain {
                (full_ack(config.v3(), messages.len()), vec![true; messages.len()])
            } else {
                random_reply(rng, config.v3(), messages.len())
            };
            for (message, acked) in messages.iter().zip(&acked) {
                if *acked {
                    let body = if config.forward_body() {
                        message_body(message)?
                    } else {
                        None
                    };
                    *self.acknowledged.entry((topic.clone(), body)).or_default() += 1;
                }
            }
            match reply {
                HttpCallReply::Response { status, body, .. } => {
                    gw.reply_with(call.token, status, &[("content-type", "application/json")], &body);
                }
                HttpCallReply::Failure(f) => gw.fail(call.token, f),
            }
        }
        Ok(())
    }
}

fn metric(gw: &Gateway, name: &str) -> u64 {
    let full = match gw.profile {
        Profile::Envoy => format!("wasmcustom.kafka_upstream.{name}"),
        Profile::Kong => format!("pw.kafka_upstream.kafka_upstream.{name}"),
    };
    gw.vm.metrics().get(&full).map_or(0, |m| m.value)
}

/// Asynchronous mode: requests answered at once, batches answered at random, then everything
/// acknowledged until the buffer is empty; every record a client got 200 for is acknowledged
/// once or counted as dropped, and nothing else is acknowledged.
fn async_case(gw: &mut Gateway, config: &FuzzConfig, rng: &mut Rng) -> Result<(), String> {
    let mut ledger = Ledger::default();
    let mut sent = Vec::new();
    let result = async_requests(gw, config, rng, &mut ledger, &mut sent);
    result.map_err(|e| format!("{e}\nrequests:\n{}", sent.join("\n")))
}

fn async_requests(
    gw: &mut Gateway,
    config: &FuzzConfig,
    rng: &mut Rng,
    ledger: &mut Ledger,
    sent: &mut Vec<String>,
) -> Result<(), String> {
    for _ in 0..1 + rng.below(8) {
        let req = random_request(rng);
        let stream = send_checked(gw, &req)?;
        if kong_empty_chunked_body_fails_closed(gw, stream, &req)? {
            sent.push(format!("500 at the response for {req:?}"));
            continue;
        }
        if !gw.answered(stream) {
            return Err(format!("request {req:?} was not answered at once"));
        }
        let (status, body) = checked_answer(gw, stream, &req)?;
        if !ASYNC_STATUSES.contains(&status) {
            return Err(format!("answer {status} {body} to {req:?}"));
        }
        sent.push(format!("{status} for {req:?}"));
        if status == 200 {
            let body = config.forward_body().then(|| request_body(&req));
            for topic in expected_topics(config, &req) {
                *ledger.accepted.entry((topic, body.clone())).or_default() += 1;
            }
        }
        gw.vm.finish_stream(stream).map_err(|e| format!("finish_stream: {e}"))?;
        gw.vm
            .advance_time(Duration::from_millis(rng.below(60)))
            .map_err(|e| format!("advance_time: {e}"))?;
        ledger.answer_calls(gw, config, rng, false)?;
    }
    // Drain: acknowledge everything until nothing is held (bounded).
    // Calls are answered before the clock moves to the next timer (a tick or a call's timeout),
    // so even a 1 ms REST proxy timeout does not expire them.
    // Bounded in virtual time (two minutes: past every probe interval and backoff generated
    // here) and in steps (a 1 ms tick takes 120 000).
    let drain_until = gw.vm.now_ns() + 120_000_000_000;
    for _ in 0..200_000 {
        if gw.vm.now_ns() > drain_until {
            break;
        }
        ledger.answer_calls(gw, config, rng, true)?;
        if metric(gw, "buffer_depth") == 0 {
            break;
        }
        let wait = gw
            .vm
            .next_timer_ns()
            .map_or(20_000_000, |t| t.saturating_sub(gw.vm.now_ns()));
        gw.vm
            .advance_time(Duration::from_nanos(wait.max(1)))
            .map_err(|e| format!("advance_time: {e}"))?;
    }
    let depth = metric(gw, "buffer_depth");
    let reachable = config.get("/rest_proxy/upstream").and_then(Value::as_str) == Some(upstream(gw.profile));
    if reachable && (depth != 0 || !gw.calls().is_empty()) {
        return Err(format!(
            "not drained: buffer_depth {depth}, {} call(s) pending",
            gw.calls().len()
        ));
    }
    if depth != 0 {
        // An upstream the host does not know never takes a record: at shutdown the filter
        // drops (and counts) what it holds. On Kong at proxy_on_done; on Envoy proxy_on_done
        // starts a drain that cannot finish, so the root is then given up on (as serve does at
        // the end of its drain time) and the filter counts what it held as it is deleted.
        gw.vm.finish_root(gw.root).map_err(|e| format!("finish_root: {e}"))?;
        gw.vm.abandon_root(gw.root);
    }
    for (key, n) in &ledger.acknowledged {
        let accepted = ledger.accepted.get(key).copied().unwrap_or(0);
        if *n > accepted {
            return Err(format!(
                "record {key:?} acknowledged {n} time(s), accepted {accepted} time(s)"
            ));
        }
    }
    let accepted: u64 = ledger.accepted.values().sum();
    let acknowledged: u64 = ledger.acknowledged.values().sum();
    let dropped = metric(gw, "messages_dropped");
    let sent = metric(gw, "messages_sent");
    if accepted != acknowledged + dropped || sent != acknowledged {
        return Err(format!(
            "accepted {accepted} record(s), acknowledged {acknowledged}, dropped {dropped}, messages_sent {sent}"
        ));
    }
    Ok(())
}

fn filter_case(profile: Profile, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed ^ (profile as u64).wrapping_mul(0xE703_7ED1_A0B4_28DB));
    let config = random_config(&mut rng, profile);
    let mut gw = Gateway::with_config_bytes(profile, &config.bytes);
    let context = format!("configuration {}", String::from_utf8_lossy(&config.bytes));
    let result = if gw.configure_ok && config.is_async() {
        async_case(&mut gw, &config, &mut rng)
    } else {
        sync_case(&mut gw, &config, &mut rng)
    };
    result.map_err(|e| format!("{context}: {e}\nlogs:\n{}", kafka_upstream_tests::dump_logs(&gw.vm)))?;
    if let Some(why) = gw.vm.failure() {
        return Err(format!("{context}: the filter trapped: {why}"));
    }
    if std::env::var_os("FUZZ_VERBOSE").is_some() {
        let statuses: Vec<u32> = (1..=40)
            .filter_map(|id| gw.vm.local_response(id).map(|r| r.status))
            .collect();
        eprintln!(
            "filter {profile} seed {seed}: configured {}, async {}, answers {statuses:?}, sent {}, dropped {}",
            gw.configure_ok,
            config.is_async(),
            metric(&gw, "messages_sent"),
            metric(&gw, "messages_dropped")
        );
    }
    Ok(())
}

#[test]
fn filter_inputs() {
    run_seeds("filter_inputs", 6000, |seed| {
        for profile in PROFILES {
            filter_case(profile, seed).map_err(|e| format!("{profile}: {e}"))?;
        }
        Ok(())
    });
}

// ---- Regressions: every seed that failed, with what was wrong ---------------------------------

/// Seeds that failed while the fuzzers were written, rerun on every `make test` whatever
/// `FUZZ_CASES` says. (A seed names a case of the generators as they are now; the comment says
/// what the case found when it failed.)
#[test]
fn regression_seeds() {
    let module = load("chaos");
    // 46: the quiet root created after the chaos on the same VM ran `proxy_on_vm_start` with the
    //     chaos still configured (the guest's call count is VM-wide) and trapped in Kong: the
    //     chaos guest now takes its VM-start chaos from the VM configuration, first root only.
    for seed in [46] {
        for profile in PROFILES {
            chaos_case(&module, profile, seed).unwrap_or_else(|e| panic!("chaos seed {seed}, {profile}: {e}"));
        }
    }
    // 3: a body without Content-Length or chunked encoding (HTTP/2 style) was once not waited
    //    for (the message's body empty while the client got 200). Such requests are no longer
    //    generated; filter_request_shapes.rs pins that Envoy's no-length body is produced.
    // 6: an empty last chunk, paused and answered locally, looked forwarded upstream to
    //    `Vm::request_forwarded_complete` (see `checked_answer`).
    // 14: a chunked request without any body event never got an answer in Kong (a codec always
    //    delivers the last chunk; the generator now does too), and with a 1 ms REST proxy
    //    timeout the drain let every probe time out (calls are now answered before the clock
    //    moves).
    // 150: an upstream the host does not know never takes a record; the buffer is dropped and
    //    counted at shutdown instead of waiting to drain (on Envoy, once the drain is given up).
    // 457: an empty chunked body followed by trailers made the filter dispatch from
    //    `on_request_trailers` in Kong, where the host forbids it (reported; not generated).
    // 2499: a call left to time out expired its stream's other calls before they were answered.
    // 4556: a 1 ms tick with a 5 s probe interval needed more drain steps than allowed; the
    //    drain is now bounded in virtual time.
    for seed in [3, 6, 14, 150, 457, 2499, 4556] {
        for profile in PROFILES {
            filter_case(profile, seed).unwrap_or_else(|e| panic!("filter seed {seed}, {profile}: {e}"));
        }
    }
}

/// Seed 6 of `filter_inputs`, by hand: a chunked request whose only body event is an empty last
/// chunk. In asynchronous mode the filter answers 200 from the body callback and holds the
/// request (its last action is `Pause`); nothing of the body goes upstream. Envoy only: Kong
/// calls no body callback for an empty body, and the filter fails closed at the response
/// instead (`kong_empty_chunked_body_fails_closed`, run by `filter_inputs` and this seed).
#[test]
fn empty_final_chunk_answered_locally_is_not_forwarded() {
    let profile = Profile::Envoy;
    {
        let config = json!({
            "topic": "t1",
            "producer_async": true,
            "rest_proxy": {"upstream": upstream(profile), "api": "v3", "cluster_id": "c1"},
        });
        let mut gw = Gateway::new(profile, &config);
        let req = Request::new("DELETE", "/a%2Fb?i=&c=%2")
            .header("transfer-encoding", "chunked")
            .chunk(&[]);
        let stream = send_checked(&mut gw, &req).unwrap_or_else(|e| panic!("{profile}: {e}"));
        let (status, _) = checked_answer(&gw, stream, &req).unwrap_or_else(|e| panic!("{profile}: {e}"));
        assert_eq!(status, 200, "{profile}");
        let last = gw.vm.actions(stream).last().cloned().expect("callbacks");
        assert_eq!(
            (last.callback, last.action),
            ("on_request_body", Some("Pause")),
            "{profile}"
        );
        assert_eq!(gw.vm.forwarded_request_body(stream), Some(&[][..]), "{profile}");
    }
}
