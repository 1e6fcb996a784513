//! One request's life, independent of any host: when to wait for the body, when to refuse, when
//! to call the REST proxy, and what to answer once every call is back.
//!
//! The proxy-wasm glue forwards each callback here and performs the [`Host`] operations it asks
//! for; native tests drive the same code with a fake host. The flow, correct in both hosts:
//!
//! 1. Request headers: every header is read now (Envoy refuses header reads in the body phase).
//!    Topics outside the allowlist get 400, a `Content-Length` above `max_body_size` gets 413.
//!    A body follows only when `end_of_stream` is false **and** the request has a positive
//!    `Content-Length` or a `Transfer-Encoding`: Kong passes `end_of_stream = false` even for a
//!    bodiless request and then never calls the body callback. When a body follows, return
//!    `Continue`; otherwise dispatch now and `Pause`. Pausing here while a body follows would
//!    stall both hosts: Envoy stops delivering the body, and ngx_wasm_module yields the request in
//!    nginx's rewrite/access phase while it reads the body only later, in the content phase
//!    (ngx_wasm_ops.c:478-486; its test t/03-proxy_wasm/006-on_http_next_action.t TEST 1: a
//!    `Pause` from on_request_headers leaves the request hanging).
//! 2. Request body: `Pause` until end of stream (Envoy buffers, `body_size` is cumulative; Kong
//!    delivers the whole body once); 413 as soon as the size passes `max_body_size`; at the end
//!    (or at request trailers) read the whole body, dispatch, `Pause`. A body the host cannot
//!    hand over is a 500; on Kong that is a body nginx buffered to a temp file (larger than
//!    `client_body_buffer_size`), and the log line names the Kong setting to raise.
//! 3. Dispatch: one call per target topic. The record value is what `message.mode` makes of the
//!    request, the key the first of `key_query_arg`, `key_header` (both read at the headers) and
//!    `key_body_field` (read from the body) that gives one ([`crate::template`]); the body is
//!    read only when one of them needs it. A call the host refuses is a failure at once; the
//!    client is answered when no call is left in flight.
//! 4. Call responses: each is classified; when all are back the client gets one answer (200 only
//!    if every record was acknowledged). The answer is sent once, never twice (Kong traps on a
//!    second local response).
//!
//! Fail closed: a request still waiting for its body when a response comes back
//! ([`Exchange::on_response_headers`]) got past the filter without a record. On Kong this is the
//! shape of a chunked request whose body is empty: ngx_wasm_module calls no `on_request_body`
//! for an empty body (ngx_http_proxy_wasm.c:96-102, ngx_wasm_ops.c:526-529) and no
//! `on_request_trailers` at all (docs/PROXY_WASM.md: NYI), so the response callback is the first
//! one the filter gets back. It answers 500 there instead of letting the response through. A
//! stream that ends while its body is still awaited ([`Exchange::on_stream_end`]) is logged:
//! nothing was sent for it.
//!
//! In asynchronous mode (`producer_async`, [`Exchange::with_producer`]) steps 3 and 4 become: the
//! records (one per topic) go into the VM's [`Producer`] and the client gets 200 once they are
//! accepted, or 503 when the producer refuses them; the producer is asked already at the request
//! headers, so a refused client is answered without waiting for its body. The root context sends
//! the records later.

use std::cell::RefCell;
use std::rc::Rc;

use crate::args;
use crate::config::{Config, Format};
use crate::host::{Action, Host, HostKind, Level};
use crate::message::{self, RequestView};
use crate::metrics::{Metric, MetricUpdate};
use crate::producer::Producer;
use crate::rest::{self, ClientAnswer, Failure, Outcome, ReplyView};
use crate::template::{self, Facts, Shape};
use crate::topics::{self, Targets};
use crate::wire;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the request headers.
    Start,
    /// Headers seen, waiting for the rest of the body.
    AwaitingBody,
    /// Calls in flight.
    AwaitingReplies,
    /// The client has been answered (or the exchange gave up).
    Done,
}

/// Request headers, read in place from the buffer the host gave (its serialized map,
/// [`RequestHeaders::from_serialized`]).
///
/// A request keeps at most three buffers (the host's bytes, where values and UTF-8 names are
/// read, the names that had to be made text, and the line index) instead of a `String` and a
/// `Vec` per header line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHeaders {
    /// The buffer the values (and the names given in place) are read from.
    map: Vec<u8>,
    /// Names that are not in `map`: given from elsewhere, or not UTF-8 there (read lossily).
    names: String,
    lines: Vec<Line>,
}

/// Where one line's name and value are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line {
    /// The name's range: in `map` when `name_in_map` (checked UTF-8 when the line was added),
    /// otherwise in `names`.
    name: (u32, u32),
    name_in_map: bool,
    /// The value's range in `map`.
    value: (u32, u32),
}

impl RequestHeaders {
    /// Headers whose values are read in place from `store` (the host's serialized map, or any
    /// buffer holding the values), with no line yet: the lines are added through
    /// [`RequestHeaders::line_writer`] (as [`RequestHeaders::from_serialized`] does).
    pub fn in_place(store: Vec<u8>) -> Self {
        RequestHeaders {
            map: store,
            names: String::new(),
            lines: Vec::new(),
        }
    }

    /// The store, and a writer that adds lines whose values lie in it.
    pub fn line_writer(&mut self) -> (&[u8], LineWriter<'_>) {
        let writer = LineWriter {
            store: &self.map,
            names: &mut self.names,
            lines: &mut self.lines,
        };
        (&self.map, writer)
    }

    /// The request headers in the host's serialized map (`proxy_get_header_map_pairs`, the
    /// proxy-wasm pairs format, decoded by the workspace's one codec, `proxy-wasm-pairs`), names
    /// and values read in place. A name that is not UTF-8 is read lossily; a map that is
    /// malformed keeps the lines before the fault (none when its count or length table is).
    pub fn from_serialized(map: Vec<u8>) -> Self {
        let mut headers = RequestHeaders::in_place(map);
        let (map, mut lines) = headers.line_writer();
        // The host's count is checked against the map before anything is reserved; names are
        // read where they are (only a name that is not UTF-8 is copied).
        if let Ok(reader) = proxy_wasm_pairs::Reader::new(map, usize::MAX) {
            lines.reserve(reader.declared(), 0);
            for entry in reader.map_while(Result::ok) {
                lines.push_in_place(entry.key, entry.value);
            }
        }
        headers
    }

    /// The same headers from owned pairs (tests, and callers that already have them).
    pub fn from_pairs(pairs: &[(String, Vec<u8>)]) -> Self {
        let mut store = Vec::with_capacity(pairs.iter().map(|(_, v)| v.len()).sum());
        for (_, v) in pairs {
            store.extend_from_slice(v);
        }
        let mut headers = RequestHeaders::in_place(store);
        let (_, mut writer) = headers.line_writer();
        writer.reserve(pairs.len(), pairs.iter().map(|(k, _)| k.len()).sum());
        let mut at = 0;
        for (k, v) in pairs {
            writer.push(k.as_bytes(), at..at + v.len());
            at += v.len();
        }
        headers
    }

    /// How many header lines there are.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether there is no header line.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Line `i`: name and value.
    pub fn line(&self, i: usize) -> Option<(&str, &[u8])> {
        let line = self.lines.get(i)?;
        let (n0, n1) = (line.name.0 as usize, line.name.1 as usize);
        let name = if line.name_in_map {
            let bytes = &self.map[n0..n1];
            // SAFETY: `LineWriter::push_in_place` keeps a name in the map only after checking
            // that it is UTF-8, and the map is never changed once lines point into it (it is
            // private, and the writer only reads it).
            unsafe { std::str::from_utf8_unchecked(bytes) }
        } else {
            &self.names[n0..n1]
        };
        Some((name, &self.map[line.value.0 as usize..line.value.1 as usize]))
    }

    /// The lines in order, repeats included.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        (0..self.lines.len()).filter_map(|i| self.line(i))
    }
}

/// Adds lines to a [`RequestHeaders`] (see [`RequestHeaders::line_writer`]).
#[derive(Debug)]
pub struct LineWriter<'h> {
    store: &'h [u8],
    names: &'h mut String,
    lines: &'h mut Vec<Line>,
}

impl LineWriter<'_> {
    /// Makes room for `lines` more lines and `names` more bytes of names kept outside the store.
    pub fn reserve(&mut self, lines: usize, names: usize) {
        self.lines.reserve(lines);
        self.names.reserve(names);
    }

    /// Whether `range` lies in the store, and the store within 4 GiB.
    fn in_store(&self, range: &std::ops::Range<usize>) -> bool {
        range.start <= range.end && range.end <= self.store.len() && u32::try_from(self.store.len()).is_ok()
    }

    /// Adds a line: `name` (copied; read lossily when it is not UTF-8) and the value at `value`
    /// in the store. A range outside the store (or a store beyond 4 GiB) is no line: false then.
    pub fn push(&mut self, name: &[u8], value: std::ops::Range<usize>) -> bool {
        if !self.in_store(&value) {
            return false;
        }
        let from = self.names.len();
        match crate::json::as_utf8(name) {
            Some(name) => self.names.push_str(name),
            None => self.names.push_str(&String::from_utf8_lossy(name)),
        }
        self.lines.push(Line {
            name: (from as u32, self.names.len() as u32),
            name_in_map: false,
            value: (value.start as u32, value.end as u32),
        });
        true
    }

    /// Adds a line whose name is also in the store, at `name`: read there when it is UTF-8 (no
    /// copy), otherwise copied lossily as [`LineWriter::push`] does. False (no line) when either
    /// range is outside the store.
    pub fn push_in_place(&mut self, name: std::ops::Range<usize>, value: std::ops::Range<usize>) -> bool {
        if !self.in_store(&name) {
            return false;
        }
        if crate::json::as_utf8(&self.store[name.clone()]).is_none() {
            let store = self.store;
            return self.push(&store[name], value);
        }
        if !self.in_store(&value) {
            return false;
        }
        self.lines.push(Line {
            name: (name.start as u32, name.end as u32),
            name_in_map: true,
            value: (value.start as u32, value.end as u32),
        });
        true
    }
}

/// What was kept from the header phase: the headers, and where the pseudo-headers the message
/// needs are among them (positions rather than copies).
#[derive(Debug)]
struct Head {
    method: Option<usize>,
    path: Option<usize>,
    authority: Option<usize>,
    headers: RequestHeaders,
    targets: Targets,
    /// Host clock at the request headers (ms), for a template's `received_at`.
    received_at_ms: u64,
    /// The request id, read at the headers when a template uses it.
    request_id: Option<Vec<u8>>,
}

impl Head {
    fn value(&self, at: Option<usize>) -> Option<&[u8]> {
        at.and_then(|i| self.headers.line(i)).map(|(_, v)| v)
    }
}

#[derive(Debug)]
struct Call {
    topic: String,
    token: Option<u32>,
    outcome: Option<Outcome>,
    /// When it was dispatched (ms, host clock), for the latency histogram.
    sent_at: u64,
}

/// The state of one request.
#[derive(Debug)]
pub struct Exchange {
    config: Option<Rc<Config>>,
    /// The VM's producer in asynchronous mode.
    producer: Option<Rc<RefCell<Producer>>>,
    phase: Phase,
    head: Option<Head>,
    body_size: usize,
    calls: Vec<Call>,
    /// The host, as seen at the request headers.
    host_kind: Option<HostKind>,
    /// The VM's schema id resolver (`schema_registry.confluent`), owned by the root context.
    schema_registry: Option<Rc<RefCell<crate::schema_registry::Resolver>>>,
}

impl Exchange {
    /// A new exchange; `None` when the filter has no valid configuration (every request then
    /// gets 500).
    pub fn new(config: Option<Rc<Config>>) -> Self {
        Exchange {
            config,
            producer: None,
            phase: Phase::Start,
            head: None,
            body_size: 0,
            calls: Vec::new(),
            host_kind: None,
            schema_registry: None,
        }
    }

    /// Sends this exchange's records with the schema ids `resolver` gives (see
    /// [`crate::schema_registry`]); while it has none, the request is answered 503 naming why.
    pub fn with_schema_registry(mut self, resolver: Rc<RefCell<crate::schema_registry::Resolver>>) -> Self {
        self.schema_registry = Some(resolver);
        self
    }

    /// A new exchange in asynchronous mode: its records go into `producer` (shared with the
    /// root context, which sends them) and the client is answered as soon as they are accepted.
    pub fn with_producer(config: Option<Rc<Config>>, producer: Rc<RefCell<Producer>>) -> Self {
        Exchange {
            producer: Some(producer),
            ..Exchange::new(config)
        }
    }

    /// The host as seen at the request headers (`None` before them).
    pub fn host_kind(&self) -> Option<HostKind> {
        self.host_kind
    }

    /// Whether the client has been answered.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The request headers arrived (`headers` as the host gives them, pseudo-headers included).
    pub fn on_request_headers(
        &mut self,
        host: &mut dyn Host,
        headers: Vec<(String, Vec<u8>)>,
        end_of_stream: bool,
    ) -> Action {
        self.on_request_header_map(host, RequestHeaders::from_pairs(&headers), end_of_stream)
    }

    /// [`Exchange::on_request_headers`] with the headers as the host serialized them.
    pub fn on_request_header_map(
        &mut self,
        host: &mut dyn Host,
        headers: RequestHeaders,
        end_of_stream: bool,
    ) -> Action {
        if self.phase != Phase::Start {
            return Action::Pause;
        }
        let Some(cfg) = self.config.clone() else {
            host.log(Level::Error, "kafka-upstream: no valid configuration, answering 500");
            self.respond(host, ClientAnswer::not_configured());
            return Action::Pause;
        };

        // One pass finds the (first) lines the exchange looks at.
        let (mut method, mut path, mut authority) = (None, None, None);
        let (mut content_length, mut transfer_encoding) = (None, None);
        for (i, (name, value)) in headers.iter().enumerate() {
            match name {
                ":method" => _ = method.get_or_insert(i),
                ":path" => _ = path.get_or_insert(i),
                ":authority" => _ = authority.get_or_insert(i),
                _ if name.eq_ignore_ascii_case("content-length") => _ = content_length.get_or_insert(value),
                _ if name.eq_ignore_ascii_case("transfer-encoding") => _ = transfer_encoding.get_or_insert(value),
                _ => {}
            }
        }
        let path_bytes = path.and_then(|i| headers.line(i)).map_or(&[][..], |(_, v)| v);

        let mut targets = match topics::select(&cfg, args::query_of(path_bytes)) {
            Ok(t) => t,
            Err(refused) => {
                host.log(
                    Level::Warn,
                    &format!(
                        "kafka-upstream: sending message to the following topics is not allowed: ({})",
                        refused.topics.join(", ")
                    ),
                );
                self.respond(host, ClientAnswer::topic_not_allowed());
                return Action::Pause;
            }
        };

        // `key_query_arg` first, then `key_header`; `key_body_field` comes at the body.
        if let (None, Some(name)) = (&targets.key, &cfg.shaping.key_header) {
            targets.key = template::header_key(name, headers.iter());
        }

        let content_length = content_length
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if content_length.is_some_and(|n| n > cfg.max_body_size) {
            self.respond(host, ClientAnswer::payload_too_large());
            return Action::Pause;
        }
        if let Some(producer) = &self.producer {
            // Refuse at once rather than after the body: the buffer is full or the REST proxy
            // unhealthy now.
            let admitted = producer.borrow_mut().admit(targets.topics.len());
            if let Err(refusal) = admitted {
                self.respond(host, ClientAnswer::service_unavailable(refusal.reason()));
                return Action::Pause;
            }
        }
        // A body follows when the headers announce one; with no length header, only a host whose
        // end_of_stream is real can tell (Envoy: chunked and HTTP/2 bodies), while on Kong such a
        // request is complete at the headers.
        let kind = host.host_kind();
        self.host_kind = Some(kind);
        let body_follows = !end_of_stream
            && (content_length.is_some_and(|n| n > 0)
                || transfer_encoding.is_some()
                || (content_length.is_none() && kind == HostKind::Envoy));

        let received_at_ms = if cfg.shaping.needs_received_at() {
            host.now_ms()
        } else {
            0
        };
        let request_id = if cfg.shaping.needs_request_id() {
            template::header_key("x-request-id", headers.iter()).or_else(|| match kind {
                HostKind::Kong => host.request_id(),
                HostKind::Envoy => None,
            })
        } else {
            None
        };
        self.head = Some(Head {
            method,
            path,
            authority,
            headers,
            targets,
            received_at_ms,
            request_id,
        });
        if body_follows {
            self.phase = Phase::AwaitingBody;
            Action::Continue
        } else {
            self.dispatch(host, &cfg, &[]);
            Action::Pause
        }
    }

    /// A request body chunk arrived; `body_size` is the size buffered so far.
    pub fn on_request_body(&mut self, host: &mut dyn Host, body_size: usize, end_of_stream: bool) -> Action {
        if self.phase != Phase::AwaitingBody {
            return Action::Pause;
        }
        let Some(cfg) = self.config.clone() else {
            return Action::Pause;
        };
        self.body_size = body_size;
        if body_size as u64 > cfg.max_body_size {
            self.respond(host, ClientAnswer::payload_too_large());
            return Action::Pause;
        }
        if end_of_stream {
            self.finish_body(host, &cfg);
        }
        Action::Pause
    }

    /// Request trailers arrived: the body, if any, is complete.
    pub fn on_request_trailers(&mut self, host: &mut dyn Host) -> Action {
        if self.phase == Phase::AwaitingBody {
            if let Some(cfg) = self.config.clone() {
                self.finish_body(host, &cfg);
            }
        }
        Action::Pause
    }

    /// Response headers arrived: from the route's upstream, or the filter's own answer on its
    /// way out (both hosts pass local replies through the filter's response callbacks).
    ///
    /// A request still awaiting its body got past the filter unrecorded: the host gave the
    /// filter no body callback before the request went on (Kong: an empty chunked body), or the
    /// upstream answered before the body was complete. The client then gets 500 instead of the
    /// upstream's response: Envoy sends a local reply from the encoder path directly while the
    /// response headers have not gone downstream, and ngx_wasm_module replaces the status and
    /// body of the response (ngx_proxy_wasm_host.c:1087-1111, `resp_chunk_override`).
    pub fn on_response_headers(&mut self, host: &mut dyn Host) -> Action {
        if self.phase != Phase::AwaitingBody {
            return Action::Continue;
        }
        let why = match self.host_kind {
            Some(HostKind::Kong) => {
                "Kong gave the filter no body callback (a chunked body that is empty, or that ended with trailers only)"
            }
            _ => "the body never reached the filter",
        };
        host.log(
            Level::Error,
            &format!(
                "kafka-upstream: a response came back while the request's body was still awaited: {why}; nothing was sent, answering 500"
            ),
        );
        self.head = None;
        self.respond(host, ClientAnswer::body_unreadable());
        Action::Pause
    }

    /// The stream ended (`on_log`). A request still awaiting its body was abandoned (the client
    /// went away, or its body ended early): nothing was sent for it, and it is logged.
    pub fn on_stream_end(&mut self, host: &mut dyn Host) {
        if self.phase != Phase::AwaitingBody {
            return;
        }
        host.log(
            Level::Error,
            &format!(
                "kafka-upstream: the request ended before its body was complete ({} bytes seen); nothing was sent",
                self.body_size
            ),
        );
        self.head = None;
        self.phase = Phase::Done;
    }

    /// The reply to call `token` arrived.
    pub fn on_call_response(&mut self, host: &mut dyn Host, token: u32, reply: &ReplyView<'_>) {
        let Some(cfg) = self.config.clone() else {
            return;
        };
        let Some(call) = self
            .calls
            .iter_mut()
            .find(|c| c.token == Some(token) && c.outcome.is_none())
        else {
            host.log(
                Level::Error,
                &format!("kafka-upstream: reply to unknown call {token} ignored"),
            );
            return;
        };
        let outcome = rest::classify(&cfg.rest_proxy.api, reply);
        let latency = host.now_ms().saturating_sub(call.sent_at);
        host.metric(MetricUpdate::Add(
            Metric::for_reply(reply.status, reply.dispatch_status),
            1,
        ));
        host.metric(MetricUpdate::Record(Metric::RestCallLatency, latency));
        match &outcome {
            Outcome::Acknowledged => host.metric(MetricUpdate::Add(Metric::Sent, 1)),
            Outcome::Failed(f) | Outcome::TimedOut(f) => {
                host.metric(MetricUpdate::Add(Metric::Failed, 1));
                host.log(Level::Error, &failure_line(&call.topic, f));
            }
        }
        call.outcome = Some(outcome);
        self.finish_if_complete(host, &cfg);
    }

    fn finish_body(&mut self, host: &mut dyn Host, cfg: &Config) {
        let size = self.body_size;
        if !cfg.shaping.needs_body(&cfg.message) || size == 0 {
            self.dispatch(host, cfg, &[]);
            return;
        }
        match host.request_body(size) {
            Some(body) => self.dispatch(host, cfg, &body),
            None => {
                let line = match self.host_kind {
                    // ngx_wasm_module cannot hand a filter a body nginx buffered to a temp file
                    // (ngx_proxy_wasm_host.c:77-83, "cannot read request body buffered to
                    // file"); the body is spilled when it is larger than the client body buffer.
                    Some(HostKind::Kong) => format!(
                        "kafka-upstream: Kong gave no request body ({size} bytes announced): nginx buffered it to a temp file, which ngx_wasm_module cannot hand to a filter; raise nginx_http_client_body_buffer_size in kong.conf to at least max_body_size ({})",
                        cfg.max_body_size
                    ),
                    _ => format!("kafka-upstream: the host gave no request body ({size} bytes expected)"),
                };
                host.log(Level::Error, &line);
                self.respond(host, ClientAnswer::body_unreadable());
            }
        }
    }

    /// Builds the message and starts one call per topic.
    fn dispatch(&mut self, host: &mut dyn Host, cfg: &Config, body: &[u8]) {
        let Some(head) = self.head.take() else {
            host.log(Level::Error, "kafka-upstream: dispatch without request headers");
            self.respond(host, ClientAnswer::internal_error());
            return;
        };
        self.phase = Phase::AwaitingReplies;
        let method = String::from_utf8_lossy(head.value(head.method).unwrap_or_default());
        let lines: Vec<(&str, &[u8])> = head.headers.iter().collect();
        let view = RequestView {
            method: &method,
            path: head.value(head.path).unwrap_or_default(),
            authority: head.value(head.authority),
            headers: &lines,
            body,
        };
        let Some((msg, key)) = shape_record(cfg, &head, &view) else {
            host.log(
                Level::Warn,
                "kafka-upstream: message.mode is \"body\" with the json format, and the request body is not a JSON document; nothing was sent",
            );
            self.respond(host, ClientAnswer::body_not_json());
            return;
        };
        // Record headers (v3): encoded once, shared by every topic's record.
        let record_headers = cfg.record_headers.encode(&view);
        if let Some(producer) = self.producer.clone() {
            // A failed schema id lookup: the record could not be sent, so it is not accepted
            // (503 naming why); a pending one is accepted and waits in the buffer.
            let failed = self.schema_registry.as_ref().and_then(|r| {
                match r
                    .borrow()
                    .ids()
                    .and_then(|ids| crate::rest::schema::check_api(&cfg.rest_proxy.api, ids))
                {
                    Err(crate::schema_registry::Unresolved::Failed(why)) => Some(why),
                    _ => None,
                }
            });
            if let Some(why) = failed {
                host.log(Level::Error, &format!("kafka-upstream: {why}; nothing was accepted"));
                self.respond(host, ClientAnswer::service_unavailable(&why));
                return;
            }
            let now = host.now_ms();
            let accepted = producer.borrow_mut().enqueue_with_headers(
                now,
                &head.targets.topics,
                key.as_deref(),
                record_headers,
                msg,
            );
            let answer = match accepted {
                Ok(()) => ClientAnswer::sent(),
                Err(refusal) => ClientAnswer::service_unavailable(refusal.reason()),
            };
            self.respond(host, answer);
            return;
        }
        let rp = &cfg.rest_proxy;
        // Schema registry: nothing is sent without its schema ids.
        let schema_ids = match self.schema_registry.as_ref().map(|r| {
            r.borrow()
                .ids()
                .and_then(|ids| crate::rest::schema::check_api(&rp.api, ids))
        }) {
            None => None,
            Some(Ok(ids)) => Some(ids),
            Some(Err(unresolved)) => {
                let why = match unresolved {
                    crate::schema_registry::Unresolved::Pending => {
                        "schema registry: the schema id lookup has not been answered yet".to_string()
                    }
                    crate::schema_registry::Unresolved::Failed(why) => why,
                };
                host.log(Level::Error, &format!("kafka-upstream: {why}; nothing was sent"));
                self.respond(host, ClientAnswer::service_unavailable(&why));
                return;
            }
        };
        for topic in &head.targets.topics {
            let call = match &schema_ids {
                None => rest::build_produce_call(rp, topic, key.as_deref(), &record_headers, cfg.partition, &msg),
                Some(ids) => crate::rest::schema::build_produce_call(
                    rp,
                    ids,
                    topic,
                    cfg.partition,
                    [(key.as_deref(), record_headers.as_slice(), msg.as_slice())],
                ),
            };
            let sent_at = host.now_ms();
            match host.dispatch(&rp.upstream, &call.header_map(rp), &call.body, rp.timeout_ms) {
                Ok(token) => self.calls.push(Call {
                    topic: topic.clone(),
                    token: Some(token),
                    outcome: None,
                    sent_at,
                }),
                Err(refusal) => {
                    host.metric(MetricUpdate::Add(Metric::RestCallsNoReply, 1));
                    host.metric(MetricUpdate::Add(Metric::Failed, 1));
                    let failure = Failure::host_refusal(&refusal);
                    host.log(Level::Error, &failure_line(topic, &failure));
                    self.calls.push(Call {
                        topic: topic.clone(),
                        token: None,
                        outcome: Some(Outcome::Failed(failure)),
                        sent_at,
                    });
                    // Nothing more is sent once one topic failed.
                    break;
                }
            }
        }
        self.finish_if_complete(host, cfg);
    }

    fn finish_if_complete(&mut self, host: &mut dyn Host, cfg: &Config) {
        if self.phase != Phase::AwaitingReplies || self.calls.iter().any(|c| c.outcome.is_none()) {
            return;
        }
        let answer = ClientAnswer::from_outcomes(
            self.calls
                .iter()
                .filter_map(|c| Some((c.topic.as_str(), c.outcome.as_ref()?))),
            cfg.return_error_message,
        );
        self.respond(host, answer);
    }

    fn respond(&mut self, host: &mut dyn Host, answer: ClientAnswer) {
        if self.phase == Phase::Done {
            return;
        }
        self.phase = Phase::Done;
        host.metric(MetricUpdate::Add(Metric::for_answer(answer.status), 1));
        host.respond(answer.status, wire::JSON_CONTENT_TYPE, &answer.body);
    }
}

/// The record value (`message.mode`) and key (`key_query_arg`, then `key_header`, both found at
/// the headers, then `key_body_field`) of a request; `None` when the body must be JSON (`body`
/// mode, `json` format) and is not.
fn shape_record<H: message::HeaderLine>(
    cfg: &Config,
    head: &Head,
    view: &RequestView<'_, H>,
) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let json_value = matches!(cfg.shaping.shape, Shape::Body) && cfg.rest_proxy.format == Format::Json;
    let body_json = if json_value || cfg.shaping.needs_body_json() {
        template::body_json(view.body)
    } else {
        None
    };
    let mut key = head.targets.key.clone();
    if let (None, Some(pointer), Some(doc)) = (&key, &cfg.shaping.key_body_field, &body_json) {
        key = template::body_field_key(doc, pointer);
    }
    let value = match &cfg.shaping.shape {
        Shape::Kong => message::build_message(&cfg.message, view),
        Shape::Body => match cfg.rest_proxy.format {
            Format::Binary => view.body.to_vec(),
            Format::Json => body_json?.into_bytes(),
        },
        Shape::Template(plan) => {
            let facts = Facts {
                received_at_ms: head.received_at_ms,
                request_id: head.request_id.as_deref(),
                body_json: body_json.as_deref(),
                kong: &cfg.message,
            };
            template::render(plan, view, &facts)
        }
    };
    Some((value, key))
}

/// The log line of a record not sent to `topic`.
fn failure_line(topic: &str, f: &Failure) -> String {
    format!("kafka-upstream: could not send message to topic {topic}: {f}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned_headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    /// The serialized header map is read as the proxy-wasm SDK 0.2.5 read it, without its panics.
    #[test]
    fn request_headers_from_the_serialized_map() {
        let pairs = owned_headers(&[
            (":method", "GET"),
            ("x-empty", ""),
            ("x-multi", "a"),
            ("X-Multi", "b\u{e9}"),
        ]);
        let map = RequestHeaders::from_pairs(&pairs);
        assert_eq!(map.len(), 4);
        let lines: Vec<(&str, &[u8])> = map.iter().collect();
        let want: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        assert_eq!(lines, want);
        // The same pairs through the host's wire format.
        let decoded = RequestHeaders::from_serialized(proxy_wasm_pairs::encode(&pairs));
        assert_eq!(decoded.iter().collect::<Vec<_>>(), want);

        // The spec's example bytes, and a name that is not UTF-8.
        let mut spec = vec![2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
        spec.extend_from_slice(b"a\x001\x00\xff\x0022\x00");
        let map = RequestHeaders::from_serialized(spec.clone());
        let lines: Vec<(&str, &[u8])> = map.iter().collect();
        assert_eq!(lines, vec![("a", &b"1"[..]), ("\u{fffd}", &b"22"[..])]);

        // Empty and malformed maps: nothing, or the lines before the fault; never a panic.
        for bytes in [vec![], vec![0], vec![1, 0, 0, 0], vec![255, 255, 255, 255]] {
            assert!(RequestHeaders::from_serialized(bytes).is_empty());
        }
        for cut in 20..spec.len() {
            let map = RequestHeaders::from_serialized(spec[..cut].to_vec());
            assert_eq!(map.len(), usize::from(cut >= 24), "cut at {cut}");
        }
        // A value without its NUL ends the map there.
        let mut no_nul = spec.clone();
        no_nul[28] = b'x';
        assert_eq!(
            RequestHeaders::from_serialized(no_nul).iter().collect::<Vec<_>>(),
            vec![("a", &b"1"[..])]
        );
        // Names read in place from the store, or copied when they are not UTF-8; a range
        // outside the store is no line.
        let mut store = RequestHeaders::in_place(b"x-a1\xffb2".to_vec());
        let (_, mut writer) = store.line_writer();
        assert!(writer.push_in_place(0..3, 3..4));
        assert!(writer.push_in_place(4..5, 6..7));
        assert!(!writer.push_in_place(0..8, 3..4));
        assert!(!writer.push_in_place(0..3, 3..8));
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 3..2;
        assert!(!writer.push_in_place(backwards, 0..1));
        assert_eq!(
            store.iter().collect::<Vec<_>>(),
            vec![("x-a", &b"1"[..]), ("\u{fffd}", &b"2"[..])]
        );
        let mut huge = spec;
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(RequestHeaders::from_serialized(huge).len(), 1);
    }

    use crate::host::DispatchError;

    /// One recorded call: upstream, headers, body, timeout.
    type RecordedCall = (String, Vec<(String, String)>, Vec<u8>, u32);

    /// A host that records what the exchange asks for.
    #[derive(Default)]
    struct FakeHost {
        body: Option<Vec<u8>>,
        refuse: Vec<usize>,
        calls: Vec<RecordedCall>,
        responses: Vec<(u32, String)>,
        logs: Vec<(Level, String)>,
        now: u64,
        /// Envoy (true) or Kong (false, the default).
        envoy: bool,
        metrics: Vec<MetricUpdate>,
        /// What `request_id` answers (Kong's `$request_id`), and how often it was asked.
        request_id: Option<Vec<u8>>,
        request_id_asked: usize,
    }

    impl Host for FakeHost {
        fn dispatch(
            &mut self,
            upstream: &str,
            headers: &[u8],
            body: &[u8],
            timeout_ms: u32,
        ) -> Result<u32, DispatchError> {
            let n = self.calls.len();
            self.calls.push((
                upstream.to_string(),
                wire::decode_text(headers),
                body.to_vec(),
                timeout_ms,
            ));
            if self.refuse.contains(&n) {
                Err(DispatchError::BadArgument)
            } else {
                Ok(100 + n as u32)
            }
        }
        fn request_body(&mut self, size: usize) -> Option<Vec<u8>> {
            self.body.as_ref().map(|b| b[..size.min(b.len())].to_vec())
        }
        fn respond(&mut self, status: u32, headers: &[u8], body: &[u8]) {
            assert_eq!(
                wire::decode_text(headers),
                vec![("content-type".to_string(), "application/json".to_string())]
            );
            self.responses.push((status, String::from_utf8(body.to_vec()).unwrap()));
        }
        fn log(&mut self, level: Level, message: &str) {
            self.logs.push((level, message.to_string()));
        }
        fn now_ms(&mut self) -> u64 {
            self.now
        }
        fn host_kind(&mut self) -> HostKind {
            if self.envoy {
                HostKind::Envoy
            } else {
                HostKind::Kong
            }
        }
        fn metric(&mut self, update: MetricUpdate) {
            assert!(update.fits_its_metric(), "{update:?}");
            self.metrics.push(update);
        }
        fn request_id(&mut self) -> Option<Vec<u8>> {
            self.request_id_asked += 1;
            self.request_id.clone()
        }
    }

    impl FakeHost {
        /// The sum of the increments of counter `metric`.
        fn counted(&self, metric: Metric) -> u64 {
            self.metrics
                .iter()
                .map(|u| match u {
                    MetricUpdate::Add(m, n) if *m == metric => *n,
                    _ => 0,
                })
                .sum()
        }

        /// The samples of histogram `metric`.
        fn samples(&self, metric: Metric) -> Vec<u64> {
            self.metrics
                .iter()
                .filter_map(|u| match u {
                    MetricUpdate::Record(m, v) if *m == metric => Some(*v),
                    _ => None,
                })
                .collect()
        }
    }

    fn config(extra: &str) -> Option<Rc<Config>> {
        let text = format!(
            r#"{{"topic":"t","rest_proxy":{{"upstream":"kafka_rest","timeout":1500}},"max_body_size":10{extra}}}"#
        );
        Some(Rc::new(crate::config::parse(text.as_bytes()).unwrap()))
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn get(path: &str) -> Vec<(String, Vec<u8>)> {
        headers(&[(":method", "GET"), (":path", path), (":authority", "gw")])
    }

    fn post(len: usize) -> Vec<(String, Vec<u8>)> {
        let len = len.to_string();
        headers(&[
            (":method", "POST"),
            (":path", "/kafka"),
            (":authority", "gw"),
            ("content-type", "text/plain"),
            ("content-length", &len),
        ])
    }

    const ACK: &str = r#"{"offsets":[{"partition":0,"offset":1}]}"#;

    fn ok_reply(body: &str) -> ReplyView<'_> {
        ReplyView {
            status: Some(b"200"),
            dispatch_status: None,
            body: body.as_bytes(),
        }
    }

    // ---- message shaping and keys (crate::template) ----

    fn shaping_config(extra: &str) -> Option<Rc<Config>> {
        let text = format!(r#"{{"topic":"t","rest_proxy":{{"upstream":"kafka_rest"}}{extra}}}"#);
        Some(Rc::new(crate::config::parse(text.as_bytes()).unwrap()))
    }

    /// Sends a POST with `extra` headers and `body` through a new exchange; returns the host.
    fn shaped(cfg: &Option<Rc<Config>>, host: FakeHost, extra: &[(&str, &str)], body: &[u8]) -> FakeHost {
        let mut host = FakeHost {
            body: Some(body.to_vec()),
            ..host
        };
        let len = body.len().to_string();
        let mut hs = vec![
            (":method", "POST"),
            (":path", "/orders?k=q"),
            (":authority", "gw"),
            ("content-length", len.as_str()),
        ];
        hs.extend_from_slice(extra);
        let mut ex = Exchange::new(cfg.clone());
        if ex.on_request_headers(&mut host, headers(&hs), false) == Action::Continue {
            ex.on_request_body(&mut host, body.len(), true);
        }
        host
    }

    /// The one record's value (decoded when binary, as JSON text when json) and key.
    fn record(host: &FakeHost) -> (Vec<u8>, Option<String>) {
        assert_eq!(host.calls.len(), 1, "{:?}", host.responses);
        let v: serde_json::Value = serde_json::from_slice(&host.calls[0].2).unwrap();
        let r = &v["records"][0];
        let value = match &r["value"] {
            serde_json::Value::String(b64) => base64_decode(b64),
            other => other.to_string().into_bytes(),
        };
        (value, r["key"].as_str().map(str::to_string))
    }

    fn base64_decode(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in text.bytes().filter(|&c| c != b'=') {
            acc = acc << 6 | ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }

    /// The README's template example, with the time and request id the host gives.
    #[test]
    fn readme_template_example() {
        let cfg = shaping_config(
            r#","message":{"mode":"template","template":{"type":"order.created","tenant":"${header.x-tenant}","order":"${body_json/order}","qty":"${body_json/order/qty}","source":"${method} ${path}","received_at":"${received_at}","trace":"${request_id}"}},"key_body_field":"/order/id""#,
        );
        let host = FakeHost {
            now: 1_796_577_168_123,
            request_id: Some(b"0123abcd".to_vec()),
            ..FakeHost::default()
        };
        let host = shaped(
            &cfg,
            host,
            &[("x-tenant", "acme")],
            br#"{"order": {"id": "o-1", "qty": 3}}"#,
        );
        let (value, key) = record(&host);
        assert_eq!(
            String::from_utf8(value).unwrap(),
            r#"{"order":{"id":"o-1","qty":3},"qty":3,"received_at":"2026-12-06T17:12:48.123Z","source":"POST /orders","tenant":"acme","trace":"0123abcd","type":"order.created"}"#
        );
        assert_eq!(key.as_deref(), Some("by0x"));
        // Kong without x-request-id: asked once; with the header (Envoy adds one), never.
        assert_eq!(host.request_id_asked, 1);
        let host = shaped(
            &cfg,
            FakeHost::default(),
            &[("x-request-id", "from-header")],
            br#"{"order":{}}"#,
        );
        assert_eq!(host.request_id_asked, 0);
        assert!(String::from_utf8(record(&host).0)
            .unwrap()
            .contains(r#""trace":"from-header""#));
    }

    #[test]
    fn key_precedence_query_then_header_then_body() {
        let cfg = shaping_config(r#","key_query_arg":"k","key_header":"X-User","key_body_field":"/id""#);
        let body = br#"{"id":"from-body"}"#;
        let key = |host: &FakeHost| record(host).1.map(|k| String::from_utf8(base64_decode(&k)).unwrap());
        // `?k=q` is on every request of `shaped`: the query wins.
        assert_eq!(
            key(&shaped(&cfg, FakeHost::default(), &[("x-user", "h")], body)).as_deref(),
            Some("q")
        );
        let cfg = shaping_config(r#","key_query_arg":"other","key_header":"X-User","key_body_field":"/id""#);
        assert_eq!(
            key(&shaped(&cfg, FakeHost::default(), &[("x-user", "h")], body)).as_deref(),
            Some("h")
        );
        assert_eq!(
            key(&shaped(&cfg, FakeHost::default(), &[("x-user", "")], body)).as_deref(),
            Some("from-body")
        );
        assert_eq!(
            key(&shaped(&cfg, FakeHost::default(), &[], body)).as_deref(),
            Some("from-body")
        );
        assert_eq!(key(&shaped(&cfg, FakeHost::default(), &[], b"not json")), None);
        // The body is read for its key even when the message does not forward it.
        let cfg = shaping_config(r#","forward_body":false,"forward_method":true,"key_body_field":"/id""#);
        let host = shaped(&cfg, FakeHost::default(), &[], body);
        assert_eq!(key(&host).as_deref(), Some("from-body"));
        assert_eq!(record(&host).0, br#"{"method":"POST"}"#);
    }

    #[test]
    fn body_mode() {
        let raw = b"\x00\xff not json";
        let cfg = shaping_config(r#","message":{"mode":"body"}"#);
        assert_eq!(record(&shaped(&cfg, FakeHost::default(), &[], raw)).0, raw);

        let cfg =
            shaping_config(r#","rest_proxy":{"upstream":"kafka_rest","format":"json"},"message":{"mode":"body"}"#);
        let host = shaped(&cfg, FakeHost::default(), &[], br#" {"a": [1, 2.50]} "#);
        // Embedded as sent, compacted (numbers kept byte for byte).
        assert_eq!(host.calls[0].2, br#"{"records":[{"value":{"a":[1,2.50]}}]}"#);
        for bad in [&raw[..], b"", b"{\"a\":"] {
            let host = shaped(&cfg, FakeHost::default(), &[], bad);
            assert!(host.calls.is_empty());
            assert_eq!(
                host.responses,
                vec![(
                    400,
                    r#"{"message":"Bad Request","error":"the request body is not a JSON document"}"#.into()
                )]
            );
        }
    }

    /// Record headers (crate::record_headers) are built once from the request's headers and go
    /// into every topic's v3 record.
    #[test]
    fn v3_records_carry_the_record_headers_of_the_request() {
        let text = r#"{"topic":"t","rest_proxy":{"upstream":"kafka_rest","api":"v3","cluster_id":"c"},
            "topics_query_arg":"topics","allowed_topics":["u"],
            "headers":{"include_headers":["x-request-id"],"name_mappings":{"x-request-id":"trace-id"}}}"#;
        let cfg = Some(Rc::new(crate::config::parse(text.as_bytes()).unwrap()));
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(cfg);
        let mut request = get("/?topics=t,u");
        request.push(("X-Request-Id".into(), b"r-1".to_vec()));
        assert_eq!(ex.on_request_headers(&mut host, request, true), Action::Pause);
        assert_eq!(host.calls.len(), 2);
        for call in &host.calls {
            let v: serde_json::Value = serde_json::from_slice(&call.2).unwrap();
            assert_eq!(v["headers"], serde_json::json!([{"name": "trace-id", "value": "ci0x"}]));
        }
    }

    #[test]
    fn bodiless_request_dispatches_from_headers_kong_style() {
        // Kong: end_of_stream is false even without a body.
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(config(""));
        assert_eq!(ex.on_request_headers(&mut host, get("/kafka"), false), Action::Pause);
        assert_eq!(host.calls.len(), 1);
        let (upstream, hs, body, timeout) = &host.calls[0];
        assert_eq!(upstream, "kafka_rest");
        assert_eq!(*timeout, 1500);
        assert!(hs.contains(&(":path".to_string(), "/topics/t".to_string())));
        // {"body":"","body_args":{},"body_base64":true} in base64
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            r#"{"records":[{"value":"eyJib2R5IjoiIiwiYm9keV9hcmdzIjp7fSwiYm9keV9iYXNlNjQiOnRydWV9"}]}"#
        );
        assert!(host.responses.is_empty());
        ex.on_call_response(&mut host, 100, &ok_reply(ACK));
        assert_eq!(host.responses, vec![(200, r#"{"message":"message sent"}"#.into())]);
        assert!(ex.is_done());
    }

    #[test]
    fn envoy_style_get_with_end_of_stream() {
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(config(""));
        assert_eq!(ex.on_request_headers(&mut host, get("/kafka"), true), Action::Pause);
        assert_eq!(host.calls.len(), 1);
    }

    #[test]
    fn body_follows_then_dispatch_at_end_of_stream() {
        let mut host = FakeHost {
            body: Some(b"hello".to_vec()),
            ..FakeHost::default()
        };
        let mut ex = Exchange::new(config(""));
        assert_eq!(ex.on_request_headers(&mut host, post(5), false), Action::Continue);
        assert!(host.calls.is_empty());
        assert_eq!(ex.on_request_body(&mut host, 3, false), Action::Pause);
        assert!(host.calls.is_empty());
        assert_eq!(ex.on_request_body(&mut host, 5, true), Action::Pause);
        assert_eq!(host.calls.len(), 1);
        let v: serde_json::Value = serde_json::from_slice(&host.calls[0].2).unwrap();
        assert_eq!(v["records"][0]["value"], "eyJib2R5IjoiaGVsbG8iLCJib2R5X2FyZ3MiOnt9fQ==");
        ex.on_call_response(&mut host, 100, &ok_reply(ACK));
        assert_eq!(host.responses[0].0, 200);
    }

    #[test]
    fn a_body_without_length_headers_follows_only_where_end_of_stream_is_real() {
        // Envoy strips Transfer-Encoding from a chunked request: end_of_stream is the only sign.
        let mut envoy = FakeHost {
            body: Some(b"abc".to_vec()),
            envoy: true,
            ..FakeHost::default()
        };
        let mut ex = Exchange::new(config(""));
        let hs = headers(&[(":method", "POST"), (":path", "/")]);
        assert_eq!(ex.on_request_headers(&mut envoy, hs.clone(), false), Action::Continue);
        assert!(envoy.calls.is_empty());
        assert_eq!(ex.on_request_body(&mut envoy, 3, true), Action::Pause);
        assert_eq!(envoy.calls.len(), 1);
        // Kong passes end_of_stream=false for every request: no length header means no body.
        let mut kong = FakeHost::default();
        let mut ex = Exchange::new(config(""));
        assert_eq!(ex.on_request_headers(&mut kong, hs, false), Action::Pause);
        assert_eq!(kong.calls.len(), 1);
    }

    #[test]
    fn chunked_body_follows() {
        let mut host = FakeHost {
            body: Some(b"abc".to_vec()),
            ..FakeHost::default()
        };
        let mut ex = Exchange::new(config(""));
        let hs = headers(&[(":method", "POST"), (":path", "/"), ("transfer-encoding", "chunked")]);
        assert_eq!(ex.on_request_headers(&mut host, hs, false), Action::Continue);
        assert_eq!(ex.on_request_body(&mut host, 3, false), Action::Pause);
        // Trailers end the body.
        assert_eq!(ex.on_request_trailers(&mut host), Action::Pause);
        assert_eq!(host.calls.len(), 1);
    }

    #[test]
    fn zero_content_length_is_complete_at_headers() {
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(config(""));
        assert_eq!(ex.on_request_headers(&mut host, post(0), false), Action::Pause);
        assert_eq!(host.calls.len(), 1);
    }

    #[test]
    fn too_large_by_content_length_or_body_size() {
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(config(""));
        assert_eq!(ex.on_request_headers(&mut host, post(11), false), Action::Pause);
        assert_eq!(host.responses[0].0, 413);
        assert!(host.calls.is_empty());

        // Chunked: the limit is enforced on the buffered size.
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(config(""));
        let hs = headers(&[(":method", "POST"), (":path", "/"), ("transfer-encoding", "chunked")]);
        assert_eq!(ex.on_request_headers(&mut host, hs, false), Action::Continue);
        assert_eq!(ex.on_request_body(&mut host, 8, false), Action::Pause);
        assert_eq!(ex.on_request_body(&mut host, 11, false), Action::Pause);
        assert_eq!(
            host.responses,
            vec![(
                413,
                r#"{"message":"Payload Too Large","error":"request body is larger than max_body_size"}"#.into()
            )]
        );
        // Later callbacks neither dispatch nor answer again.
        assert_eq!(ex.on_request_body(&mut host, 12, true), Action::Pause);
        assert!(host.calls.is_empty());
        assert_eq!(host.responses.len(), 1);
    }

    #[test]
    fn disallowed_topic_gets_400_and_kong_log_line() {
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(config(
            r#","topics_query_arg":"topic-list","allowed_topics":["topic1"]"#,
        ));
        let action = ex.on_request_headers(&mut host, get("/kafka?topic-list=t,topic1,topic3"), false);
        assert_eq!(action, Action::Pause);
        assert!(host.calls.is_empty());
        assert_eq!(host.responses[0].0, 400);
        assert_eq!(
            host.logs,
            vec![(
                Level::Warn,
                "kafka-upstream: sending message to the following topics is not allowed: (topic3)".into()
            )]
        );
    }

    #[test]
    fn several_topics_answer_once_all_are_back() {
        let cfg = config(r#","topics_query_arg":"tl","allowed_topics":["a","b"],"key_query_arg":"k","partition":1"#);
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(cfg.clone());
        ex.on_request_headers(&mut host, get("/?tl=a,b&k=user"), true);
        assert_eq!(host.calls.len(), 2);
        let paths: Vec<&str> = host
            .calls
            .iter()
            .map(|c| c.1.iter().find(|(k, _)| k == ":path").unwrap().1.as_str())
            .collect();
        assert_eq!(paths, vec!["/topics/a", "/topics/b"]);
        let v: serde_json::Value = serde_json::from_slice(&host.calls[0].2).unwrap();
        assert_eq!(v["records"][0]["key"], "dXNlcg==");
        assert_eq!(v["records"][0]["partition"], 1);
        ex.on_call_response(&mut host, 101, &ok_reply(ACK));
        assert!(host.responses.is_empty());
        ex.on_call_response(&mut host, 100, &ok_reply(ACK));
        assert_eq!(host.responses, vec![(200, r#"{"message":"message sent"}"#.into())]);

        // One per-record error among two topics: 502.
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(cfg);
        ex.on_request_headers(&mut host, get("/?tl=a,b"), true);
        ex.on_call_response(&mut host, 100, &ok_reply(ACK));
        ex.on_call_response(
            &mut host,
            101,
            &ok_reply(r#"{"offsets":[{"error_code":50002,"error":"boom"}]}"#),
        );
        assert_eq!(host.responses[0].0, 502);
        assert_eq!(host.logs.len(), 1);
        assert!(host.logs[0]
            .1
            .contains("topic b: per-record error, status 200, error_code 50002"));
    }

    #[test]
    fn refused_call_fails_once_nothing_is_in_flight() {
        // Single topic: 502 at once.
        let mut host = FakeHost {
            refuse: vec![0],
            ..FakeHost::default()
        };
        let mut ex = Exchange::new(config(r#","error_handling":{"return_error_message":true}"#));
        assert_eq!(ex.on_request_headers(&mut host, get("/"), true), Action::Pause);
        assert_eq!(
            host.responses,
            vec![(502, r#"{"message":"Bad Gateway","error":"could not send message to topic","rest_proxy":{"topic":"t","dispatch_status":"call rejected by the host: BadArgument"}}"#.into())]
        );

        // Second of three topics refused: no third call; answer when the first is back.
        let mut host = FakeHost {
            refuse: vec![1],
            ..FakeHost::default()
        };
        let mut ex = Exchange::new(config(r#","topics_query_arg":"tl","allowed_topics":["a","b","c"]"#));
        ex.on_request_headers(&mut host, get("/?tl=a,b,c"), true);
        assert_eq!(host.calls.len(), 2);
        assert!(host.responses.is_empty());
        ex.on_call_response(&mut host, 100, &ok_reply(ACK));
        assert_eq!(host.responses[0].0, 502);
    }

    #[test]
    fn timeouts_and_failures_from_the_host() {
        for (reply, status) in [
            (
                ReplyView {
                    status: Some(b"504"),
                    dispatch_status: None,
                    body: b"upstream request timeout",
                },
                504,
            ),
            (
                ReplyView {
                    status: None,
                    dispatch_status: Some(b"timeout"),
                    body: b"",
                },
                504,
            ),
            (
                ReplyView {
                    status: None,
                    dispatch_status: Some(b"broken connection"),
                    body: b"",
                },
                502,
            ),
            (
                ReplyView {
                    status: None,
                    dispatch_status: None,
                    body: b"",
                },
                502,
            ),
            (
                ReplyView {
                    status: Some(b"500"),
                    dispatch_status: None,
                    body: b"",
                },
                502,
            ),
            (
                ReplyView {
                    status: Some(b"404"),
                    dispatch_status: None,
                    body: br#"{"error_code":40401,"message":"Topic not found."}"#,
                },
                502,
            ),
            (
                ReplyView {
                    status: Some(b"200"),
                    dispatch_status: None,
                    body: b"{",
                },
                502,
            ),
        ] {
            let mut host = FakeHost::default();
            let mut ex = Exchange::new(config(""));
            ex.on_request_headers(&mut host, get("/"), true);
            ex.on_call_response(&mut host, 100, &reply);
            assert_eq!(host.responses.len(), 1);
            assert_eq!(host.responses[0].0, status, "{reply:?}");
        }
    }

    #[test]
    fn unknown_or_repeated_tokens_are_ignored() {
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(config(""));
        ex.on_request_headers(&mut host, get("/"), true);
        ex.on_call_response(&mut host, 7, &ok_reply(ACK));
        assert!(host.responses.is_empty());
        ex.on_call_response(&mut host, 100, &ok_reply(ACK));
        ex.on_call_response(&mut host, 100, &ok_reply(ACK));
        assert_eq!(host.responses.len(), 1);
    }

    #[test]
    fn missing_body_is_an_error_not_an_empty_message() {
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(config(""));
        ex.on_request_headers(&mut host, post(5), false);
        ex.on_request_body(&mut host, 5, true);
        assert!(host.calls.is_empty());
        assert_eq!(host.responses[0].0, 500);
    }

    fn chunked_post() -> Vec<(String, Vec<u8>)> {
        headers(&[
            (":method", "POST"),
            (":path", "/kafka"),
            (":authority", "gw"),
            ("content-type", "text/plain"),
            ("transfer-encoding", "chunked"),
        ])
    }

    const BODY_UNREADABLE: &str = r#"{"message":"Internal Server Error","error":"could not read the request body"}"#;

    #[test]
    fn kong_empty_chunked_body_fails_closed_when_the_response_comes_back() {
        // ngx_wasm_module calls no on_request_body for an empty chunked body and no
        // on_request_trailers at all: the next callback is the response's headers.
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(config(""));
        assert_eq!(
            ex.on_request_headers(&mut host, chunked_post(), false),
            Action::Continue
        );
        assert_eq!(ex.on_response_headers(&mut host), Action::Pause);
        assert!(host.calls.is_empty());
        assert_eq!(host.responses, vec![(500, BODY_UNREADABLE.into())]);
        assert_eq!(host.logs.len(), 1);
        assert_eq!(host.logs[0].0, Level::Error);
        assert!(
            host.logs[0].1.contains("Kong gave the filter no body callback"),
            "{:?}",
            host.logs
        );
        // The filter's own answer passes through its response callback: let through, once.
        assert_eq!(ex.on_response_headers(&mut host), Action::Continue);
        ex.on_stream_end(&mut host);
        assert_eq!(host.responses.len(), 1);
        assert_eq!(host.logs.len(), 1);
        assert!(ex.is_done());
    }

    #[test]
    fn envoy_empty_chunked_body_and_trailers_only_produce_an_empty_record() {
        for trailers in [false, true] {
            let mut host = FakeHost {
                envoy: true,
                ..FakeHost::default()
            };
            let mut ex = Exchange::new(config(""));
            let hs = headers(&[(":method", "POST"), (":path", "/"), ("content-type", "text/plain")]);
            assert_eq!(ex.on_request_headers(&mut host, hs, false), Action::Continue);
            if trailers {
                assert_eq!(ex.on_request_trailers(&mut host), Action::Pause);
            } else {
                assert_eq!(ex.on_request_body(&mut host, 0, true), Action::Pause);
            }
            assert_eq!(host.calls.len(), 1, "trailers: {trailers}");
            let v: serde_json::Value = serde_json::from_slice(&host.calls[0].2).unwrap();
            // {"body":"","body_args":{}}
            assert_eq!(v["records"][0]["value"], "eyJib2R5IjoiIiwiYm9keV9hcmdzIjp7fX0=");
            // An upstream response cannot take over once the calls are out.
            assert_eq!(ex.on_response_headers(&mut host), Action::Continue);
            ex.on_call_response(&mut host, 100, &ok_reply(ACK));
            assert_eq!(host.responses, vec![(200, r#"{"message":"message sent"}"#.into())]);
        }
    }

    #[test]
    fn an_announced_body_that_never_comes_is_never_let_through() {
        for envoy in [false, true] {
            // The upstream answers first (the router raced the body): 500 instead.
            let mut host = FakeHost {
                envoy,
                ..FakeHost::default()
            };
            let mut ex = Exchange::new(config(""));
            assert_eq!(ex.on_request_headers(&mut host, post(5), false), Action::Continue);
            assert_eq!(ex.on_response_headers(&mut host), Action::Pause);
            assert_eq!(host.responses, vec![(500, BODY_UNREADABLE.into())], "envoy: {envoy}");
            assert!(host.logs[0].1.contains("still awaited"), "{:?}", host.logs);
            assert!(host.calls.is_empty());

            // The stream ends with part of the body (the client went away): logged, nothing sent.
            let mut host = FakeHost {
                envoy,
                ..FakeHost::default()
            };
            let mut ex = Exchange::new(config(""));
            assert_eq!(ex.on_request_headers(&mut host, post(9), false), Action::Continue);
            if envoy {
                assert_eq!(ex.on_request_body(&mut host, 3, false), Action::Pause);
            }
            ex.on_stream_end(&mut host);
            assert!(host.calls.is_empty());
            assert!(host.responses.is_empty());
            let expected = format!(
                "kafka-upstream: the request ended before its body was complete ({} bytes seen); nothing was sent",
                if envoy { 3 } else { 0 }
            );
            assert_eq!(host.logs, vec![(Level::Error, expected)]);
            // Nothing later revives it.
            assert_eq!(ex.on_request_body(&mut host, 9, true), Action::Pause);
            assert!(host.calls.is_empty());
        }
    }

    #[test]
    fn finished_exchanges_let_responses_through_and_end_quietly() {
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(config(""));
        ex.on_request_headers(&mut host, get("/"), false);
        assert_eq!(ex.on_response_headers(&mut host), Action::Continue);
        ex.on_call_response(&mut host, 100, &ok_reply(ACK));
        assert_eq!(ex.on_response_headers(&mut host), Action::Continue);
        ex.on_stream_end(&mut host);
        assert_eq!(host.responses.len(), 1);
        assert!(host.logs.is_empty(), "{:?}", host.logs);
    }

    #[test]
    fn kong_unreadable_body_names_the_buffer_setting() {
        // No body from the host: on Kong, nginx buffered it to a temp file.
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(config(""));
        ex.on_request_headers(&mut host, post(5), false);
        ex.on_request_body(&mut host, 5, true);
        assert_eq!(host.responses, vec![(500, BODY_UNREADABLE.into())]);
        assert_eq!(host.logs.len(), 1);
        assert!(
            host.logs[0]
                .1
                .contains("raise nginx_http_client_body_buffer_size in kong.conf to at least max_body_size (10)"),
            "{:?}",
            host.logs
        );
        // Envoy keeps the plain line.
        let mut host = FakeHost {
            envoy: true,
            ..FakeHost::default()
        };
        let mut ex = Exchange::new(config(""));
        ex.on_request_headers(&mut host, post(5), false);
        ex.on_request_body(&mut host, 5, true);
        assert_eq!(
            host.logs,
            vec![(
                Level::Error,
                "kafka-upstream: the host gave no request body (5 bytes expected)".into()
            )]
        );
    }

    #[test]
    fn the_host_is_asked_for_each_request() {
        // A Kong request, then an Envoy-looking one, then a Kong one again: each decides alone.
        let hs = headers(&[(":method", "POST"), (":path", "/")]);
        for envoy in [false, true, false] {
            let mut host = FakeHost {
                envoy,
                ..FakeHost::default()
            };
            let mut ex = Exchange::new(config(""));
            let expected = if envoy { Action::Continue } else { Action::Pause };
            assert_eq!(ex.on_request_headers(&mut host, hs.clone(), false), expected);
        }
    }

    #[test]
    fn body_not_read_when_not_forwarded() {
        let mut host = FakeHost::default(); // no body available: must not be asked
        let mut ex = Exchange::new(config(r#","forward_body":false,"forward_method":true"#));
        ex.on_request_headers(&mut host, post(5), false);
        ex.on_request_body(&mut host, 5, true);
        assert_eq!(host.calls.len(), 1);
        let v: serde_json::Value = serde_json::from_slice(&host.calls[0].2).unwrap();
        assert_eq!(v["records"][0]["value"], "eyJtZXRob2QiOiJQT1NUIn0="); // {"method":"POST"}
    }

    fn async_exchange(extra: &str) -> (Rc<RefCell<Producer>>, impl Fn() -> Exchange) {
        let cfg = config(&format!(r#","producer_async":true{extra}"#));
        let producer = Rc::new(RefCell::new(Producer::new(cfg.clone().unwrap())));
        let shared = producer.clone();
        (producer, move || Exchange::with_producer(cfg.clone(), shared.clone()))
    }

    #[test]
    fn async_mode_answers_once_accepted() {
        let (producer, new) = async_exchange(r#","topics_query_arg":"tl","allowed_topics":["a"],"key_query_arg":"k""#);
        // Bodiless: accepted at the headers, nothing dispatched by the HTTP context.
        let mut host = FakeHost {
            now: 5000,
            ..FakeHost::default()
        };
        let mut ex = new();
        assert_eq!(
            ex.on_request_headers(&mut host, get("/?tl=t,a&k=user"), true),
            Action::Pause
        );
        assert!(host.calls.is_empty());
        assert_eq!(host.responses, vec![(200, r#"{"message":"message sent"}"#.into())]);
        assert!(ex.is_done());
        assert_eq!(producer.borrow().depth(), 2);

        // With a body: accepted at the end of the body.
        let mut host = FakeHost {
            body: Some(b"hello".to_vec()),
            ..FakeHost::default()
        };
        let mut ex = new();
        assert_eq!(ex.on_request_headers(&mut host, post(5), false), Action::Continue);
        assert!(host.responses.is_empty());
        assert_eq!(ex.on_request_body(&mut host, 5, true), Action::Pause);
        assert_eq!(host.responses[0].0, 200);
        assert!(host.calls.is_empty());
        assert_eq!(producer.borrow().depth(), 3);
        assert_eq!(producer.borrow().stats().accepted, 3);
    }

    #[test]
    fn async_mode_refuses_with_503_at_the_headers() {
        let (producer, new) =
            async_exchange(r#","producer_async_buffering_limits_messages_in_memory":1,"topics_query_arg":"tl""#);
        let mut host = FakeHost::default();
        new().on_request_headers(&mut host, get("/"), true);
        assert_eq!(host.responses[0].0, 200);
        // Full: a request with a body is refused before its body arrives.
        let mut host = FakeHost::default();
        let mut ex = new();
        assert_eq!(ex.on_request_headers(&mut host, post(5), false), Action::Pause);
        assert_eq!(
            host.responses,
            vec![(
                503,
                r#"{"message":"Service Unavailable","error":"the message buffer is full"}"#.into()
            )]
        );
        assert_eq!(ex.on_request_body(&mut host, 5, true), Action::Pause);
        assert_eq!(host.responses.len(), 1);
        assert_eq!(producer.borrow().stats().rejected, 1);
        // A disallowed topic or a too large body still gets its own answer first.
        let mut host = FakeHost::default();
        new().on_request_headers(&mut host, get("/?tl=nope"), true);
        new().on_request_headers(&mut host, post(11), false);
        let statuses: Vec<u32> = host.responses.iter().map(|r| r.0).collect();
        assert_eq!(statuses, vec![400, 413]);
        assert_eq!(producer.borrow().stats().rejected, 1);
    }

    #[test]
    fn karapace_422_for_the_record_is_a_502_with_its_own_error() {
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(config(r#","error_handling":{"return_error_message":true}"#));
        host.now = 1000;
        ex.on_request_headers(&mut host, get("/"), true);
        host.now = 1042;
        ex.on_call_response(
            &mut host,
            100,
            &ReplyView {
                status: Some(b"422"),
                dispatch_status: None,
                body: br#"{"key_schema_id":null,"value_schema_id":null,"offsets":[{"partition":null,"offset":null,"error_code":2,"error":"UnknownTopicOrPartitionError"}]}"#,
            },
        );
        assert_eq!(
            host.responses,
            vec![(502, r#"{"message":"Bad Gateway","error":"could not send message to topic","rest_proxy":{"topic":"t","status":422,"error_code":2,"message":"UnknownTopicOrPartitionError"}}"#.into())]
        );
        assert_eq!(host.counted(Metric::Requests5xx), 1);
        assert_eq!(host.counted(Metric::Failed), 1);
        assert_eq!(host.counted(Metric::Sent), 0);
        assert_eq!(host.counted(Metric::RestCalls4xx), 1);
        assert_eq!(host.samples(Metric::RestCallLatency), vec![42]);
    }

    #[test]
    fn synchronous_metrics_count_answers_records_and_calls() {
        let cfg = config(r#","topics_query_arg":"tl","allowed_topics":["a","b","c"]"#);
        let mut host = FakeHost::default();
        // Two topics acknowledged: one 200, two records sent, two 2xx calls.
        let mut ex = Exchange::new(cfg.clone());
        ex.on_request_headers(&mut host, get("/?tl=a,b"), true);
        host.now = 5;
        ex.on_call_response(&mut host, 100, &ok_reply(ACK));
        host.now = 9;
        ex.on_call_response(&mut host, 101, &ok_reply(ACK));
        // A 400, a 413.
        Exchange::new(cfg.clone()).on_request_headers(&mut host, get("/?tl=nope"), true);
        Exchange::new(cfg.clone()).on_request_headers(&mut host, post(11), false);
        // A refused call and a timeout.
        let mut refusing = FakeHost {
            refuse: vec![0],
            ..FakeHost::default()
        };
        Exchange::new(cfg.clone()).on_request_headers(&mut refusing, get("/"), true);
        let mut ex = Exchange::new(cfg);
        ex.on_request_headers(&mut host, get("/"), true);
        ex.on_call_response(
            &mut host,
            102,
            &ReplyView {
                status: None,
                dispatch_status: Some(b"timeout"),
                body: b"",
            },
        );
        let statuses: Vec<u32> = host.responses.iter().map(|r| r.0).collect();
        assert_eq!(statuses, vec![200, 400, 413, 504]);
        let counts = |h: &FakeHost| {
            [
                Metric::Requests200,
                Metric::Requests400,
                Metric::Requests413,
                Metric::Requests5xx,
                Metric::Sent,
                Metric::Failed,
                Metric::RestCalls2xx,
                Metric::RestCallsTimeout,
                Metric::RestCallsNoReply,
            ]
            .map(|m| h.counted(m))
        };
        assert_eq!(counts(&host), [1, 1, 1, 1, 2, 1, 2, 1, 0]);
        assert_eq!(host.samples(Metric::RestCallLatency), vec![5, 9, 0]);
        assert_eq!(counts(&refusing), [0, 0, 0, 1, 0, 1, 0, 0, 1]);
        assert!(refusing.samples(Metric::RestCallLatency).is_empty());
    }

    #[test]
    fn asynchronous_answers_are_counted() {
        let (_producer, new) = async_exchange(r#","producer_async_buffering_limits_messages_in_memory":1"#);
        let mut host = FakeHost::default();
        new().on_request_headers(&mut host, get("/"), true);
        new().on_request_headers(&mut host, get("/"), true);
        assert_eq!(host.counted(Metric::Requests200), 1);
        assert_eq!(host.counted(Metric::Requests5xx), 1);
        assert!(host.calls.is_empty());
        assert_eq!(host.counted(Metric::Sent), 0, "the producer counts what it sends");
    }

    #[test]
    fn unconfigured_filter_answers_500() {
        let mut host = FakeHost::default();
        let mut ex = Exchange::new(None);
        assert_eq!(ex.on_request_headers(&mut host, get("/"), true), Action::Pause);
        assert_eq!(host.responses[0].0, 500);
        assert!(host.calls.is_empty());
    }

    // ---- schema registry (crate::schema_registry) ----

    /// A body-mode POST through an exchange that sends with `resolver`'s schema ids.
    fn with_registry(resolver: &Rc<RefCell<crate::schema_registry::Resolver>>, cfg: &Option<Rc<Config>>) -> FakeHost {
        let body = br#"{"a":1}"#;
        let mut host = FakeHost {
            body: Some(body.to_vec()),
            ..FakeHost::default()
        };
        let len = body.len().to_string();
        let hs = [
            (":method", "POST"),
            (":path", "/orders"),
            (":authority", "gw"),
            ("content-type", "application/json"),
            ("content-length", len.as_str()),
        ];
        let mut ex = Exchange::new(cfg.clone()).with_schema_registry(Rc::clone(resolver));
        if ex.on_request_headers(&mut host, headers(&hs), false) == Action::Continue {
            ex.on_request_body(&mut host, body.len(), true);
        }
        host
    }

    #[test]
    fn schema_registry_sends_with_the_ids_or_answers_503_naming_the_problem() {
        let cfg = Some(Rc::new(
            crate::config::parse(
                br#"{"topic":"t","rest_proxy":{"upstream":"kafka_rest","format":"json"},"message":{"mode":"body"},
                    "schema_registry":{"confluent":{"url":"http://sr:8081","value_schema":{"subject_name":"t-value"}}}}"#,
            )
            .unwrap(),
        ));
        let settings = cfg.as_ref().and_then(|c| c.schema_registry.clone()).unwrap();
        let resolver = Rc::new(RefCell::new(crate::schema_registry::Resolver::new(settings.clone())));
        // Not looked up yet: 503, nothing sent.
        let host = with_registry(&resolver, &cfg);
        assert!(host.calls.is_empty());
        assert_eq!(host.responses.len(), 1);
        assert_eq!(host.responses[0].0, 503);
        assert!(
            host.responses[0]
                .1
                .contains("schema id lookup has not been answered yet"),
            "{:?}",
            host.responses
        );
        // Resolved: sent with the id, in the schema's content type.
        assert_eq!(resolver.borrow_mut().calls_due(0).len(), 1);
        resolver
            .borrow_mut()
            .on_reply(crate::schema_registry::Part::Value, Ok((200, br#"{"id":5}"#)), 1);
        let host = with_registry(&resolver, &cfg);
        assert_eq!(host.calls.len(), 1, "{:?}", host.responses);
        let (upstream, call_headers, body, _) = &host.calls[0];
        assert_eq!(upstream, "kafka_rest");
        assert!(call_headers.contains(&(
            "content-type".to_string(),
            "application/vnd.kafka.avro.v2+json".to_string()
        )));
        assert_eq!(
            String::from_utf8_lossy(body),
            r#"{"value_schema_id":5,"records":[{"value":{"a":1}}]}"#
        );
        // The subject is missing: 503 with the registry's own answer, nothing sent.
        let failed = Rc::new(RefCell::new(crate::schema_registry::Resolver::new(settings)));
        failed.borrow_mut().calls_due(0);
        failed.borrow_mut().on_reply(
            crate::schema_registry::Part::Value,
            Ok((404, br#"{"error_code":40401,"message":"Subject 't-value' not found."}"#)),
            1,
        );
        let host = with_registry(&failed, &cfg);
        assert!(host.calls.is_empty());
        assert_eq!(host.responses[0].0, 503);
        assert!(host.responses[0].1.contains("error_code 40401"), "{:?}", host.responses);
    }
}
