//! Driving the real `kafka_upstream.wasm` through host-sim: a gateway (VM + configured root
//! context) per profile, requests described once and sent the way each host delivers them, the
//! REST proxy calls the filter makes, canned REST proxy replies, and the client's answer.
//!
//! Shared by the `filter_*` and `fuzz` modules, synchronous and asynchronous (`producer_async`)
//! alike: the asynchronous gateway is the same gateway with the producer's settings, a virtual
//! clock to advance and the producer's own calls, made by the root context.

use base64::Engine as _;
use host_sim::{ActionRecord, CalloutFailure, HttpCall, HttpCallReply, LogLevel, Metric, Profile, Vm, VmOptions};
use kafka_upstream_tests::{dump_logs, load, options, start_with};
use serde_json::{json, Value};
use std::time::Duration;

/// The module under test.
pub const FILTER: &str = "kafka_upstream";
/// The plugin name the host knows the filter by (Kong puts it in metric names).
pub const PLUGIN: &str = "kafka_upstream";
/// The metric prefix when `metrics.prefix` is not configured.
pub const METRICS_PREFIX: &str = "kafka_upstream";
/// The Envoy cluster the REST proxy is reached through.
pub const ENVOY_CLUSTER: &str = "kafka_rest";
/// The `host:port` Kong dispatches to.
pub const KONG_UPSTREAM: &str = "rest-proxy:8082";
/// The `:authority` of every test request.
pub const AUTHORITY: &str = "gw.test";
/// The configured default topic.
pub const TOPIC: &str = "orders";

/// 200: every record acknowledged.
pub const SENT: &str = r#"{"message":"message sent"}"#;
/// 502 without details.
pub const BAD_GATEWAY: &str = r#"{"message":"Bad Gateway","error":"could not send message to topic"}"#;
/// 504 without details.
pub const GATEWAY_TIMEOUT: &str = r#"{"message":"Gateway Timeout","error":"timed out sending message to topic"}"#;
/// 400: a listed topic is not allowed (Kong's text).
pub const NOT_ALLOWED: &str =
    r#"{"message":"Bad Request","error":"one or more target topics are not in the allowed topics list"}"#;
/// 413: the body is over `max_body_size`.
pub const TOO_LARGE: &str = r#"{"message":"Payload Too Large","error":"request body is larger than max_body_size"}"#;
/// 500: the filter has no valid configuration.
pub const NOT_CONFIGURED: &str =
    r#"{"message":"Internal Server Error","error":"kafka-upstream has no valid configuration"}"#;
/// 503 (asynchronous mode): the message buffer is full.
pub const BUFFER_FULL: &str = r#"{"message":"Service Unavailable","error":"the message buffer is full"}"#;
/// 503 (asynchronous mode): the REST proxy is unhealthy.
pub const UNHEALTHY: &str = r#"{"message":"Service Unavailable","error":"the Kafka REST proxy is unhealthy"}"#;

/// Kong's schema error when every `forward_*` flag is false.
pub const FORWARD_FLAGS_MESSAGE: &str =
    "at least one of these attributes must be true: forward_method, forward_uri, forward_headers, forward_body";

/// A Confluent v2 acknowledgement of one record.
pub const V2_ACK: &str = r#"{"offsets":[{"partition":0,"offset":41,"error_code":null,"error":null}],"key_schema_id":null,"value_schema_id":null}"#;
/// A Confluent v3 acknowledgement of one record.
pub const V3_ACK: &str = r#"{"error_code":200,"cluster_id":"lkc-1","topic_name":"orders","partition_id":0,"offset":41,"timestamp":"2024-01-01T00:00:00.000Z","value":{"type":"BINARY","size":2}}"#;

/// The upstream each profile accepts for `proxy_http_call`.
pub fn upstream(profile: Profile) -> &'static str {
    match profile {
        Profile::Envoy => ENVOY_CLUSTER,
        Profile::Kong => KONG_UPSTREAM,
    }
}

/// `{"topic":"orders","rest_proxy":{"upstream":<profile's upstream>}}` with `patch` merged in
/// (objects merge recursively, a `null` removes the key).
pub fn config(profile: Profile, patch: Value) -> Value {
    let mut base = json!({"topic": TOPIC, "rest_proxy": {"upstream": upstream(profile)}});
    merge(&mut base, patch);
    base
}

/// [`config`] in asynchronous mode (`producer_async`, a 60 s REST proxy timeout so only the
/// tests that mean to see a timeout see one) with `patch` merged in.
pub fn async_config(profile: Profile, patch: Value) -> Value {
    let mut base = config(
        profile,
        json!({"rest_proxy": {"timeout": 60_000}, "producer_async": true}),
    );
    merge(&mut base, patch);
    base
}

/// The VM options every gateway of the filter starts with: the REST proxy's Envoy cluster
/// known, the filter's plugin name.
pub fn filter_options(profile: Profile) -> VmOptions {
    let mut o = options(profile);
    o.clusters = vec![ENVOY_CLUSTER.to_string()];
    o.plugin_name = PLUGIN.into();
    o
}

/// The name under which `profile`'s host exports the filter's metric `<prefix>.<name>`
/// (host-sim `HostBehaviour::metric_name`: Envoy `wasmcustom.`, Kong `pw.<plugin name>.`).
pub fn exported_metric(profile: Profile, prefix: &str, name: &str) -> String {
    match profile {
        Profile::Envoy => format!("wasmcustom.{prefix}.{name}"),
        Profile::Kong => format!("pw.{PLUGIN}.{prefix}.{name}"),
    }
}

/// Merges `patch` into `target` (RFC 7386 JSON merge patch).
pub fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = json!({});
            }
            let map = target.as_object_mut().expect("object");
            for (k, v) in patch {
                if v.is_null() {
                    map.remove(&k);
                } else {
                    merge(map.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other,
    }
}

/// One client request: headers, body chunks, optional trailers.
#[derive(Debug, Clone)]
pub struct Request {
    /// Header pairs, pseudo-headers included.
    pub headers: Vec<(String, String)>,
    /// Body chunks as they arrive (empty: no body, end of stream at the headers).
    pub chunks: Vec<Vec<u8>>,
    /// Trailers ending the request.
    pub trailers: Option<Vec<(String, String)>>,
    /// Override of the headers' end of stream (by default: no chunks and no trailers).
    pub headers_eos: Option<bool>,
}

impl Request {
    /// A bodiless request.
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            headers: vec![
                (":method".into(), method.into()),
                (":path".into(), path.into()),
                (":authority".into(), AUTHORITY.into()),
                (":scheme".into(), "http".into()),
            ],
            chunks: Vec::new(),
            trailers: None,
            headers_eos: None,
        }
    }

    /// `GET path` without a body.
    pub fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    /// `POST path` with `body` in one chunk, its `content-length`, and `content_type` if any.
    pub fn post(path: &str, content_type: Option<&str>, body: &[u8]) -> Request {
        let mut r = Request::new("POST", path);
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        r.header("content-length", &body.len().to_string()).chunk(body)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds a body chunk.
    pub fn chunk(mut self, bytes: &[u8]) -> Request {
        self.chunks.push(bytes.to_vec());
        self
    }

    /// Ends the request with trailers.
    pub fn trailers(mut self, pairs: &[(&str, &str)]) -> Request {
        self.trailers = Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        self
    }

    /// Forces the headers' end-of-stream flag.
    pub fn headers_eos(mut self, eos: bool) -> Request {
        self.headers_eos = Some(eos);
        self
    }
}

/// The action a callback returned, as [`Gateway::actions`] reports it.
pub const PAUSE: Option<&str> = Some("Pause");
/// See [`PAUSE`].
pub const CONTINUE: Option<&str> = Some("Continue");

/// `(callback, action)` pairs in the shape [`Gateway::actions`] returns.
pub fn actions(list: &[(&'static str, Option<&str>)]) -> Vec<(&'static str, Option<String>)> {
    list.iter().map(|(c, a)| (*c, a.map(str::to_string))).collect()
}

/// A VM running the filter with one configured root context.
pub struct Gateway {
    /// The VM.
    pub vm: Vm,
    /// The root context id.
    pub root: u32,
    /// The profile.
    pub profile: Profile,
    /// What `proxy_on_configure` returned.
    pub configure_ok: bool,
}

impl Gateway {
    /// A gateway whose configuration must be accepted.
    pub fn new(profile: Profile, config: &Value) -> Gateway {
        let gw = Gateway::with_config_bytes(profile, config.to_string().as_bytes());
        assert!(
            gw.configure_ok,
            "{profile}: configuration {config} rejected:\n{}",
            dump_logs(&gw.vm)
        );
        gw
    }

    /// A gateway whose configuration must be accepted, with nginx's client body buffer at
    /// `buffer` bytes (Kong profile: a larger request body reaches the filter unreadable; the
    /// default is Kong's 8k).
    pub fn with_client_body_buffer(profile: Profile, config: &Value, buffer: usize) -> Gateway {
        let gw = Gateway::start(profile, config.to_string().as_bytes(), buffer);
        assert!(
            gw.configure_ok,
            "{profile}: configuration {config} rejected:\n{}",
            dump_logs(&gw.vm)
        );
        gw
    }

    /// A gateway configured with exactly `bytes` (accepted or not).
    pub fn with_config_bytes(profile: Profile, bytes: &[u8]) -> Gateway {
        Gateway::start(profile, bytes, host_sim::profile::DEFAULT_CLIENT_BODY_BUFFER_BYTES)
    }

    /// A gateway in asynchronous mode, [`async_config`] with `patch`, which must be accepted.
    pub fn asynchronous(profile: Profile, patch: Value) -> Gateway {
        Gateway::new(profile, &async_config(profile, patch))
    }

    fn start(profile: Profile, bytes: &[u8], client_body_buffer_bytes: usize) -> Gateway {
        let mut o = filter_options(profile);
        o.client_body_buffer_bytes = client_body_buffer_bytes;
        let mut vm = start_with(&load(FILTER), o);
        let root = vm
            .create_root_context("", bytes)
            .unwrap_or_else(|e| panic!("{profile}: root context: {e}\n{}", dump_logs(&vm)));
        Gateway {
            vm,
            root: root.id,
            profile,
            configure_ok: root.configure_ok,
        }
    }

    /// Opens a stream and sends `req` the way the host delivers it; returns the stream id.
    pub fn send(&mut self, req: &Request) -> u32 {
        let stream = self.vm.create_http_stream(self.root).expect("stream");
        self.send_on(stream, req);
        stream
    }

    /// Sends `req` on an open stream.
    pub fn send_on(&mut self, stream: u32, req: &Request) {
        self.send_headers_on(stream, req);
        self.send_body_on(stream, req);
    }

    /// Opens a stream and sends only `req`'s headers (ending the stream only if `req` has
    /// nothing more); returns the stream id. [`Gateway::send_body_on`] sends the rest.
    pub fn send_headers(&mut self, req: &Request) -> u32 {
        let stream = self.vm.create_http_stream(self.root).expect("stream");
        self.send_headers_on(stream, req);
        stream
    }

    fn send_headers_on(&mut self, stream: u32, req: &Request) {
        let eos = req
            .headers_eos
            .unwrap_or(req.chunks.is_empty() && req.trailers.is_none());
        self.vm
            .send_request_headers(stream, &req.headers, eos)
            .expect("request headers");
        self.assert_not_failed();
    }

    /// Sends `req`'s body chunks and trailers on a stream that has had its headers.
    pub fn send_body_on(&mut self, stream: u32, req: &Request) {
        let n = req.chunks.len();
        for (i, chunk) in req.chunks.iter().enumerate() {
            let last = i + 1 == n && req.trailers.is_none();
            self.vm.send_request_body(stream, chunk, last).expect("request body");
        }
        if let Some(trailers) = &req.trailers {
            self.vm
                .send_request_trailers(stream, trailers)
                .expect("request trailers");
        }
        self.assert_not_failed();
    }

    /// Ends stream `stream` (the host's `proxy_on_log` and `proxy_on_done`).
    pub fn finish(&mut self, stream: u32) {
        self.vm.finish_stream(stream).expect("finish stream");
        self.assert_not_failed();
    }

    /// Panics, with the logs, when the VM has failed.
    pub fn assert_not_failed(&self) {
        assert!(
            self.vm.failure().is_none(),
            "{}: the VM failed:\n{}",
            self.profile,
            dump_logs(&self.vm)
        );
    }

    /// Moves the virtual clock by `ms` (ticks and call timeouts fire on the way).
    pub fn advance(&mut self, ms: u64) {
        self.vm.advance_time(Duration::from_millis(ms)).expect("virtual clock");
        self.assert_not_failed();
    }

    /// Pending REST proxy calls, oldest first.
    pub fn calls(&self) -> Vec<HttpCall> {
        self.vm.http_calls()
    }

    /// The pending calls, asserting there are `n` and that each was made by the root context
    /// (the asynchronous producer's calls belong to the root, never to a request).
    pub fn root_calls(&self, n: usize) -> Vec<HttpCall> {
        let calls = self.calls();
        assert_eq!(
            calls.len(),
            n,
            "{}: calls {calls:#?}\n{}",
            self.profile,
            dump_logs(&self.vm)
        );
        for call in &calls {
            assert_eq!(
                call.context_id, self.root,
                "{}: call made by {}",
                self.profile, call.context_id
            );
        }
        calls
    }

    /// The one pending call (panics unless there is exactly one).
    pub fn only_call(&self) -> HttpCall {
        let calls = self.calls();
        assert_eq!(
            calls.len(),
            1,
            "{}: expected one call: {calls:#?}\n{}",
            self.profile,
            dump_logs(&self.vm)
        );
        calls.into_iter().next().unwrap()
    }

    /// Answers call `token` with an HTTP response.
    pub fn reply(&mut self, token: u32, status: u16, body: &str) {
        self.reply_with(
            token,
            status,
            &[("content-type", "application/vnd.kafka.v2+json")],
            body.as_bytes(),
        );
    }

    /// Answers call `token` with an HTTP response with explicit headers.
    pub fn reply_with(&mut self, token: u32, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let reply = HttpCallReply::Response {
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.to_vec(),
            trailers: Vec::new(),
        };
        self.vm.respond_http_call(token, reply).expect("call reply");
        self.assert_not_failed();
    }

    /// Makes call `token` fail.
    pub fn fail(&mut self, token: u32, failure: CalloutFailure) {
        self.vm
            .respond_http_call(token, HttpCallReply::Failure(failure))
            .expect("call failure");
        self.assert_not_failed();
    }

    /// The client's answer: status and body text. Panics when there is none, or when it is not
    /// `content-type: application/json`.
    pub fn answer(&self, stream: u32) -> (u32, String) {
        let r = self.vm.local_response(stream).unwrap_or_else(|| {
            panic!(
                "{}: stream {stream} has no answer\n{}",
                self.profile,
                dump_logs(&self.vm)
            )
        });
        assert_eq!(
            r.headers,
            vec![("content-type".to_string(), "application/json".to_string())],
            "{}: answer headers",
            self.profile
        );
        assert!(
            !self.vm.request_forwarded_complete(stream),
            "{}: the filter answered but the request also went upstream",
            self.profile
        );
        (r.status, String::from_utf8(r.body.clone()).expect("answer is UTF-8"))
    }

    /// Whether the stream has been answered.
    pub fn answered(&self, stream: u32) -> bool {
        self.vm.local_response(stream).is_some()
    }

    /// The stream's callbacks and actions as `(callback, action)`.
    pub fn actions(&self, stream: u32) -> Vec<(&'static str, Option<String>)> {
        self.vm
            .actions(stream)
            .iter()
            .map(|ActionRecord { callback, action }| (*callback, action.map(str::to_string)))
            .collect()
    }

    /// Log messages at `level`.
    pub fn logs_at(&self, level: LogLevel) -> Vec<String> {
        self.vm
            .logs()
            .into_iter()
            .filter(|e| e.level == level)
            .map(|e| e.message)
            .collect()
    }

    /// The filter's metric `<prefix>.<name>` as this profile's host exports it.
    pub fn metric_with_prefix(&self, prefix: &str, name: &str) -> Metric {
        let full = exported_metric(self.profile, prefix, name);
        self.vm
            .metrics()
            .remove(&full)
            .unwrap_or_else(|| panic!("{}: no metric {full}: {:?}", self.profile, self.vm.metrics().keys()))
    }

    /// The filter's metric `<name>` under the default prefix.
    pub fn metric(&self, name: &str) -> Metric {
        self.metric_with_prefix(METRICS_PREFIX, name)
    }

    /// Log messages at warn level or above.
    pub fn problems(&self) -> Vec<String> {
        self.vm
            .logs()
            .into_iter()
            .filter(|e| e.level >= LogLevel::Warn)
            .map(|e| format!("[{}] {}", e.level, e.message))
            .collect()
    }

    /// Sends `req`, expects exactly one call, acknowledges it with `ack` and expects 200;
    /// returns the call.
    pub fn produce_with(&mut self, req: &Request, ack: &str) -> HttpCall {
        let stream = self.send(req);
        let call = self.only_call();
        self.reply(call.token, 200, ack);
        assert_eq!(self.answer(stream), (200, SENT.to_string()), "{}", self.profile);
        call
    }

    /// [`Gateway::produce_with`] with a v2 acknowledgement.
    pub fn produce(&mut self, req: &Request) -> HttpCall {
        self.produce_with(req, V2_ACK)
    }
}

/// Standard base64 of `bytes`.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of standard base64 `text` (panics when it is not base64).
pub fn unbase64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {text:?}"))
}

/// A Confluent v2 acknowledgement of `n` records (offsets `0..n`).
pub fn v2_ack_of(n: usize) -> String {
    let offsets: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"partition":0,"offset":{i},"error_code":null,"error":null}}"#))
        .collect();
    format!(
        r#"{{"offsets":[{}],"key_schema_id":null,"value_schema_id":null}}"#,
        offsets.join(",")
    )
}

/// The JSON values of a call body: one for v2 (`{"records":[…]}`) and for v3's one record, one
/// a record for v3's streaming mode (one object a line).
pub fn call_values(call: &HttpCall) -> Vec<Value> {
    serde_json::Deserializer::from_slice(&call.body)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("call body is not JSON ({e}): {}", String::from_utf8_lossy(&call.body)))
}

/// The call body as JSON.
pub fn call_json(call: &HttpCall) -> Value {
    serde_json::from_slice(&call.body)
        .unwrap_or_else(|e| panic!("call body is not JSON ({e}): {}", String::from_utf8_lossy(&call.body)))
}

/// The message bytes of a v2 binary call (`records[0].value`, base64-decoded), checking the
/// call carries exactly one record.
pub fn v2_message(call: &HttpCall) -> String {
    let v = call_json(call);
    let records = v["records"].as_array().expect("records");
    assert_eq!(records.len(), 1, "one record per call: {v}");
    let value = records[0]["value"].as_str().expect("binary value is a string");
    String::from_utf8(unbase64(value)).expect("message is UTF-8")
}
