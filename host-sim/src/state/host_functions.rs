//! The rules of the proxy-wasm ABI v0.2.1 host functions, as methods of [`HostState`], in the
//! spec's order: which context a call acts on, which buffers and maps a callback may see, what a
//! second local response does, when a callout is admitted, ... Each method takes decoded values
//! and answers `Result<T, Fault>`; the glue in `imports.rs` only reads guest memory, calls one of
//! these and writes the result back. Host differences are asked of the [`Profile`].
//!
//! The methods that keep guest bytes (bodies, maps, callouts, shared data) charge the budget
//! first and live next to the data in `state.rs`; the ones here decide and delegate to them.

use super::{Fault, GrpcCall, GrpcKind, HostState, HttpCall, LocalResponse, SharedInner};
use crate::abi::{encode_pairs, BufferType, Callback, LogLevel, MapType, Pairs, Status, StreamType};
use crate::hostfn::HostFunction;
use crate::profile::{CalloutUpstream, MapAccess, MetricOp, SecondLocalResponse};

impl HostState {
    /// Whether `function` may run now: a function the profile's host lacks traps (as Kong's
    /// ngx_wasm_module does); outside any callback (e.g. from a start function) there is no
    /// context, so only logging and the clocks answer.
    pub(crate) fn admit_host_function(&self, function: HostFunction) -> Result<(), Fault> {
        let profile = self.profile;
        if !profile.implements(function) {
            return Err(Fault::Trap(format!(
                "{} is not implemented by the {profile} host (ngx_wasm_module traps on it)",
                function.name()
            )));
        }
        let context_free = matches!(
            function,
            HostFunction::Log | HostFunction::GetCurrentTimeNanoseconds | HostFunction::GetLogLevel
        );
        if self.active.is_none() && !context_free {
            return Err(Status::BadArgument.into());
        }
        Ok(())
    }

    // ---- Context lifecycle ---------------------------------------------------------------------

    /// `proxy_done`: finalizes the effective context's root if it is pending finalization.
    pub(crate) fn done(&mut self) -> Result<(), Fault> {
        let id = self.effective().ok_or(Status::NotFound)?;
        // Only root contexts wait for `proxy_done` (no host holds a stream for it,
        // `HostBehaviour::stream_end_callbacks`). proxy-wasm-cpp-host `WasmBase::done` looks the
        // pending root up by the calling context's plugin, so a stream's call finalizes its root
        // when that root is pending.
        let root_id = self.streams.get(&id).map_or(id, |s| s.root_id);
        match self.roots.get_mut(&root_id) {
            Some(root) if root.awaiting_done => {
                root.awaiting_done = false;
                self.done_roots.push(root_id);
                Ok(())
            }
            // Spec: NOT_FOUND "when active context was not pending finalization".
            _ => Err(Status::NotFound.into()),
        }
    }

    /// `proxy_set_effective_context`.
    pub(crate) fn set_effective_context(&mut self, id: u32) -> Result<(), Fault> {
        if !self.profile.effective_context_switches() {
            return Ok(());
        }
        if !self.roots.contains_key(&id) && !self.streams.contains_key(&id) {
            return Err(Status::BadArgument.into());
        }
        if let Some(active) = self.active.as_mut() {
            active.effective_id = id;
        }
        // Whatever the guest does now may change that stream.
        self.touch_stream(id);
        Ok(())
    }

    // ---- Logging, clocks, timers ---------------------------------------------------------------

    /// `proxy_log`: lines below the VM's log level are not kept.
    pub(crate) fn guest_log(&mut self, level: LogLevel, message: String) {
        if level >= self.log_level {
            self.push_log(level, message);
        }
    }

    /// `proxy_get_log_level`.
    pub(crate) fn log_level(&self) -> LogLevel {
        self.log_level
    }

    /// `proxy_set_tick_period_milliseconds`: a stream context's timer is its root's (Envoy
    /// applies it to the root context); the profile says when a host refuses the call.
    pub(crate) fn set_tick_period(&mut self, period_ms: u32) -> Result<(), Fault> {
        let root = self.effective_root().ok_or(Status::BadArgument)?;
        let from_root = self.effective() == Some(root);
        let already_set = self.roots.get(&root).is_some_and(|r| r.tick_period_ms != 0);
        if let Some(reason) = self.profile.tick_period_refusal(from_root, already_set) {
            return Err(Fault::Trap(format!(
                "{}: {reason}",
                HostFunction::SetTickPeriodMilliseconds.name()
            )));
        }
        let now = self.now_ns();
        if let Some(r) = self.roots.get_mut(&root) {
            r.tick_period_ms = period_ms;
            r.next_tick_ns = (period_ms > 0).then(|| now + period_ms as u64 * 1_000_000);
        }
        Ok(())
    }

    // ---- Buffers -------------------------------------------------------------------------------

    /// The bytes of a buffer, if the current callback may see it.
    fn buffer_view(&self, buffer: BufferType) -> Result<&[u8], Status> {
        let active = self.active.as_ref().ok_or(Status::NotFound)?;
        let callback_buffer = |only_in: Callback| -> Result<&[u8], Status> {
            if active.callback == only_in {
                let data = active.data.as_deref().ok_or(Status::NotFound)?;
                data.buffer.as_deref().ok_or(Status::NotFound)
            } else {
                Err(Status::NotFound)
            }
        };
        match buffer {
            BufferType::HttpRequestBody | BufferType::HttpResponseBody => {
                let stream = self.streams.get(&active.effective_id).ok_or(Status::NotFound)?;
                let dir = if buffer == BufferType::HttpRequestBody {
                    &stream.request
                } else {
                    &stream.response
                };
                if dir.body_available {
                    Ok(&dir.body)
                } else {
                    Err(Status::NotFound)
                }
            }
            BufferType::HttpCallResponseBody => callback_buffer(Callback::HttpCallResponse),
            BufferType::GrpcCallMessage => callback_buffer(Callback::GrpcReceive),
            BufferType::VmConfiguration => callback_buffer(Callback::VmStart),
            BufferType::PluginConfiguration => callback_buffer(Callback::Configure),
            BufferType::ForeignFunctionArguments => callback_buffer(Callback::ForeignFunction),
            // TCP filters are not modelled: these buffers never exist on an HTTP stream.
            BufferType::DownstreamData | BufferType::UpstreamData => Err(Status::NotFound),
        }
    }

    /// The effective stream, when its request body is in a temp file the guest cannot read (Kong).
    fn request_body_in_temp_file(&self) -> Option<u32> {
        let id = self.effective()?;
        self.streams
            .get(&id)
            .filter(|s| s.request.body_in_temp_file)
            .map(|_| id)
    }

    /// `proxy_get_buffer_bytes`: up to `max` bytes from `start` (past the end: BAD_ARGUMENT, or
    /// no bytes where the profile's host reads nothing there).
    pub(crate) fn get_buffer(&mut self, buffer: BufferType, start: u32, max: u32) -> Result<Vec<u8>, Fault> {
        if buffer == BufferType::HttpRequestBody {
            if let Some(stream) = self.request_body_in_temp_file() {
                // Kong logs the refusal and answers NOT_FOUND (ngx_proxy_wasm_host.c:77-83,
                // 361-362).
                let line = self.profile.spilled_request_body_log(stream);
                self.push_log(LogLevel::Error, line);
                return Err(Status::NotFound.into());
            }
        }
        let view = self.buffer_view(buffer)?;
        let start = start as usize;
        if start > view.len() {
            return match self.profile.buffer_read_past_end_is_empty() {
                true => Ok(Vec::new()),
                false => Err(Status::BadArgument.into()),
            };
        }
        let end = view.len().min(start.saturating_add(max as usize));
        Ok(view[start..end].to_vec())
    }

    /// `proxy_get_buffer_status`: the buffer's length (the flags are always 0).
    pub(crate) fn buffer_len(&self, buffer: BufferType) -> Result<usize, Fault> {
        Ok(self.buffer_view(buffer)?.len())
    }

    // ---- HTTP fields ---------------------------------------------------------------------------

    /// `proxy_get_header_map_size`: the serialized size (spec: `return_serialized_pairs_size`).
    pub(crate) fn header_map_size(&mut self, map: MapType) -> Result<usize, Fault> {
        let access = self.profile.map_size_access();
        let slot = self.map_slot(map, access)?;
        Ok(slot.pairs.as_ref().map_or(4, |p| encode_pairs(p).len()))
    }

    /// `proxy_get_header_map_pairs`, serialized.
    pub(crate) fn header_map_pairs(&mut self, map: MapType) -> Result<Vec<u8>, Fault> {
        let empty_when_unavailable = self.profile.unavailable_map_pairs_are_empty();
        match self.map_slot(map, MapAccess::Read).map(|slot| slot.pairs) {
            Ok(Some(pairs)) => Ok(encode_pairs(pairs)),
            Ok(None) => Ok(encode_pairs::<&[u8], &[u8]>(&[])),
            // Envoy serializes a map it does not have as empty, with OK (ENVOY-SRC).
            Err(_) if empty_when_unavailable => Ok(Vec::new()),
            Err(status) => Err(status.into()),
        }
    }

    /// `proxy_get_header_map_value`: lookups are case-insensitive on both hosts; the first
    /// value is returned.
    pub(crate) fn header_map_value(&mut self, map: MapType, key: &[u8]) -> Result<Vec<u8>, Fault> {
        let slot = self.map_slot(map, MapAccess::Read)?;
        let value = slot
            .pairs
            .as_ref()
            .and_then(|p| p.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)))
            .map(|(_, v)| v.clone());
        Ok(value.ok_or(Status::NotFound)?)
    }

    /// `proxy_set_header_map_pairs`, names as the profile's host keeps them.
    pub(crate) fn set_header_map_pairs(&mut self, map: MapType, pairs: Pairs) -> Result<(), Fault> {
        let profile = self.profile;
        let pairs = pairs.into_iter().map(|(k, v)| (profile.header_name(k), v)).collect();
        self.set_map_pairs(map, pairs)
    }

    /// `proxy_add_header_map_value`.
    pub(crate) fn add_header_map_value(&mut self, map: MapType, key: Vec<u8>, value: Vec<u8>) -> Result<(), Fault> {
        let key = self.profile.header_name(key);
        self.add_map_value(map, key, value)
    }

    /// `proxy_replace_header_map_value`.
    pub(crate) fn replace_header_map_value(&mut self, map: MapType, key: Vec<u8>, value: Vec<u8>) -> Result<(), Fault> {
        let key = self.profile.header_name(key);
        self.replace_map_value(map, key, value)
    }

    /// `proxy_remove_header_map_value`: OK "including the case when requested key didn't
    /// exist" (spec).
    pub(crate) fn remove_header_map_value(&mut self, map: MapType, key: &[u8]) -> Result<(), Fault> {
        self.remove_map_value(map, key)
    }

    // ---- Common stream operations --------------------------------------------------------------

    /// `proxy_continue_stream` (`close == false`) or `proxy_close_stream` on the effective stream.
    pub(crate) fn continue_or_close_stream(&mut self, stream_type: StreamType, close: bool) -> Result<(), Fault> {
        let profile = self.profile;
        let stream = self.effective_stream().ok_or(Status::BadArgument)?;
        match (stream_type, close) {
            (StreamType::HttpRequest, false) => stream.request.resume_requested = true,
            (StreamType::HttpResponse, false) => stream.response.resume_requested = true,
            (StreamType::HttpRequest | StreamType::HttpResponse, true) => stream.reset = true,
            // An HTTP stream has no TCP stream to resume or close: what the host answers is its
            // own (spec: BAD_ARGUMENT only for an unknown type).
            (StreamType::Downstream | StreamType::Upstream, _) => {
                return Fault::check(profile.tcp_stream_status(stream_type, close));
            }
        }
        Ok(())
    }

    /// `proxy_get_status`: the status of the call whose reply the guest is reading (0 and empty
    /// otherwise).
    pub(crate) fn call_status(&self) -> (u32, Vec<u8>) {
        self.active
            .as_ref()
            .and_then(|a| a.data.as_ref()?.status.clone())
            .unwrap_or((0, Vec::new()))
    }

    /// `proxy_send_local_response`: stashed on the effective stream, sent when the callback
    /// returns. A reply after the response went out, or a second reply, is the profile's call.
    pub(crate) fn send_local_response(
        &mut self,
        status: u32,
        details: String,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
        grpc_status: i32,
    ) -> Result<(), Fault> {
        let profile = self.profile;
        let name = HostFunction::SendLocalResponse.name();
        let stream = self.effective_stream().ok_or(Status::BadArgument)?;
        if stream.response.headers_forwarded && profile.late_local_response_traps() {
            return Err(Fault::Trap(format!("{name}: response already sent")));
        }
        // Envoy: a reply while the filter's first one passes through its response callbacks
        // (headers not sent yet) is sent instead of it (`sendDirectLocalReply`; settled in
        // `Vm::settle_stream`).
        let replaces_passing_reply = stream.local_reply_in_response
            && !stream.response.headers_forwarded
            && stream.pending_local_response.is_none()
            && profile.second_local_response() == SecondLocalResponse::KeepFirst;
        if !replaces_passing_reply && (stream.pending_local_response.is_some() || stream.local_response.is_some()) {
            return match profile.second_local_response() {
                SecondLocalResponse::Trap => Err(Fault::Trap(format!("{name}: local response already stashed"))),
                SecondLocalResponse::KeepFirst => Ok(()),
            };
        }
        stream.pending_local_response = Some(LocalResponse {
            status,
            details,
            headers,
            body,
            // Spec: a negative gRPC status means "none".
            grpc_status: (grpc_status >= 0).then_some(grpc_status),
        });
        Ok(())
    }

    // ---- HTTP calls ----------------------------------------------------------------------------

    /// `proxy_http_call`: admits the call (the callback may dispatch, the timeout is valid, the
    /// upstream is known, the required headers are there), keeps it under a new token with the
    /// deadline the profile's host gives it, and answers the token.
    pub(crate) fn admit_http_call(
        &mut self,
        upstream: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        trailers: Vec<(String, String)>,
        timeout_ms: u32,
    ) -> Result<u32, Fault> {
        let profile = self.profile;
        let name = HostFunction::HttpCall.name();
        let callback = self.callback().ok_or(Status::BadArgument)?;
        if !profile.dispatch_allowed(callback) {
            return Err(Fault::Trap(format!(
                "{name}: dispatch not allowed in {}",
                callback.transcript_name()
            )));
        }
        if !profile.call_timeout_valid(timeout_ms) {
            return Err(Status::BadArgument.into());
        }
        let known = match profile.callout_upstream() {
            CalloutUpstream::Cluster => self.knows_cluster(&upstream),
            CalloutUpstream::HostPort => valid_host_port(&upstream),
        };
        if !known {
            self.push_log(LogLevel::Error, format!("{name}: unknown upstream {upstream:?}"));
            return Err(Status::BadArgument.into());
        }
        for required in profile.required_call_headers() {
            if !headers.iter().any(|(k, v)| k == required && !v.is_empty()) {
                self.push_log(LogLevel::Error, format!("{name}: missing {required} header"));
                return Err(Status::BadArgument.into());
            }
        }
        let context_id = self.effective().ok_or(Status::BadArgument)?;
        let token = self.allocate_token();
        let deadline_ns = profile
            .effective_call_timeout_ms(timeout_ms)
            .map(|ms| self.now_ns() + ms * 1_000_000);
        self.add_http_call(HttpCall {
            token,
            context_id,
            upstream,
            headers,
            body,
            trailers,
            timeout_ms,
            deadline_ns,
        })?;
        Ok(token)
    }

    // ---- gRPC ----------------------------------------------------------------------------------

    /// `proxy_grpc_call` (with its one message and a timeout) or `proxy_grpc_stream`: answers the
    /// new token.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open_grpc(
        &mut self,
        kind: GrpcKind,
        upstream: String,
        service: String,
        method: String,
        initial_metadata: Vec<(String, String)>,
        message: Option<Vec<u8>>,
        timeout_ms: Option<u32>,
    ) -> Result<u32, Fault> {
        // Spec: PARSE_FAILURE for an unknown upstream (Envoy: a cluster it knows).
        if !self.knows_cluster(&upstream) {
            return Err(Status::ParseFailure.into());
        }
        let context_id = self.effective().ok_or(Status::BadArgument)?;
        let token = self.allocate_token();
        // A unary call's timeout is the async client's request timeout, 0 meaning none, as for
        // HTTP calls (ENVOY-SRC `Context::grpcCall` passes it to the async client's options).
        let deadline_ns = timeout_ms
            .and_then(|ms| self.profile.effective_call_timeout_ms(ms))
            .map(|ms| self.now_ns() + ms * 1_000_000);
        self.add_grpc_call(GrpcCall {
            token,
            kind,
            context_id,
            upstream,
            service,
            method,
            initial_metadata,
            messages: message.into_iter().collect(),
            end_stream_sent: kind == GrpcKind::Call,
            cancelled: false,
            closed: false,
            timeout_ms,
            deadline_ns,
        })?;
        Ok(token)
    }

    // ---- Shared data and queues ----------------------------------------------------------------

    /// `proxy_get_shared_data` in this VM's id: the value and its cas.
    pub(crate) fn get_shared_data(&self, key: &[u8]) -> Result<(Vec<u8>, u32), Fault> {
        Ok(self.shared.lock().get_data(&self.vm_id, key).ok_or(Status::NotFound)?)
    }

    /// `proxy_resolve_shared_queue`.
    pub(crate) fn resolve_queue(&self, vm_id: &str, name: &str) -> Result<u32, Fault> {
        Ok(self.shared.lock().resolve_queue(vm_id, name).ok_or(Status::NotFound)?)
    }

    /// `proxy_dequeue_shared_queue`.
    pub(crate) fn dequeue(&self, id: u32) -> Result<Vec<u8>, Fault> {
        Ok(self.shared.lock().dequeue(id)?)
    }

    // ---- Metrics -------------------------------------------------------------------------------

    /// A metric call on the VMs' shared metrics, after the trap the profile's host ends it in,
    /// if any ([`HostBehaviour::metric_trap`]).
    fn metric_call<T>(&self, op: MetricOp, id: u32, call: impl FnOnce(&mut SharedInner) -> T) -> Result<T, Fault> {
        let mut shared = self.shared.lock();
        if let Some(trap) = self.profile.metric_trap(op, id, shared.metric_kind(id)) {
            return Err(Fault::Trap(trap));
        }
        Ok(call(&mut shared))
    }

    /// `proxy_increment_metric`.
    pub(crate) fn increment_metric(&self, id: u32, delta: i64) -> Result<(), Fault> {
        let decrease = self.profile.counters_may_decrease();
        Fault::check(self.metric_call(MetricOp::Increment, id, |m| m.increment_metric(id, delta, decrease))?)
    }

    /// `proxy_record_metric`.
    pub(crate) fn record_metric(&self, id: u32, value: u64) -> Result<(), Fault> {
        Fault::check(self.metric_call(MetricOp::Record, id, |m| m.record_metric(id, value))?)
    }

    /// `proxy_get_metric`.
    pub(crate) fn get_metric(&self, id: u32) -> Result<u64, Fault> {
        Ok(self.metric_call(MetricOp::Get, id, |m| m.get_metric(id))??)
    }

    // ---- Foreign functions ---------------------------------------------------------------------

    /// `proxy_call_foreign_function`: NOT_FOUND for a name the embedder did not register.
    pub(crate) fn call_foreign_function(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, Fault> {
        let function = self.foreign.get(name).ok_or(Status::NotFound)?;
        Ok(function(args)?)
    }
}

/// Validates a Kong dispatch target: `host[:port]`, as ngx_wasm_module's resolver takes it.
fn valid_host_port(upstream: &str) -> bool {
    let (host, port) = match upstream.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, Some(p)),
        _ => (upstream, None),
    };
    !host.is_empty()
        && !host.chars().any(|c| c.is_whitespace() || c == '/')
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

#[cfg(test)]
mod tests {
    use super::valid_host_port;
    use crate::abi::{BufferType, Callback, LogLevel, MapType, MetricType, Status, StreamType};
    use crate::hostfn::HostFunction;
    use crate::state::{Active, CallbackData, Fault, GrpcKind, HostState, RootState, Shared, StreamInfo, StreamState};
    use crate::wasi::WasiOptions;
    use crate::{Limits, Profile};

    const ROOT: u32 = 1;
    const STREAM: u32 = 2;

    /// A host with root context 1 and its stream 2, the guest running `callback` in `context`.
    fn host(profile: Profile, callback: Callback, context: u32) -> HostState {
        let limits = Limits::default();
        let mut state = HostState::new(
            profile,
            LogLevel::Trace,
            &limits,
            &WasiOptions::default(),
            Shared::new(),
        );
        state.set_upstreams(vec!["kafka_rest".into()], false);
        state.roots.insert(ROOT, RootState::default());
        state
            .streams
            .insert(STREAM, Box::new(StreamState::new(ROOT, StreamInfo::default())));
        enter(&mut state, callback, context, CallbackData::default());
        state
    }

    fn enter(state: &mut HostState, callback: Callback, context: u32, data: CallbackData) {
        state.active = Some(Active {
            callback,
            effective_id: context,
            data: Some(Box::new(data)),
        });
    }

    fn status(status: Status) -> Fault {
        Fault::Status(status)
    }

    fn stream(state: &mut HostState) -> &mut StreamState {
        state.streams.get_mut(&STREAM).unwrap()
    }

    #[test]
    fn kong_dispatch_targets() {
        for ok in ["127.0.0.1:8082", "kafka-rest:8082", "example.com", "[::1]:8082"] {
            assert!(valid_host_port(ok), "{ok}");
        }
        for bad in ["", ":8082", "host:0", "host:99999", "a b:1", "http://x:1"] {
            assert!(!valid_host_port(bad), "{bad}");
        }
    }

    #[test]
    fn host_functions_outside_a_callback_and_missing_ones_are_refused() {
        let mut state = host(Profile::Kong, Callback::RequestHeaders, STREAM);
        assert_eq!(state.admit_host_function(HostFunction::HttpCall), Ok(()));
        // Kong lacks proxy_done: it traps, as ngx_wasm_module does.
        assert!(
            matches!(state.admit_host_function(HostFunction::Done), Err(Fault::Trap(m)) if m.contains(HostFunction::Done.name()))
        );
        state.active = None;
        assert_eq!(
            state.admit_host_function(HostFunction::HttpCall),
            Err(status(Status::BadArgument))
        );
        for context_free in [HostFunction::Log, HostFunction::GetCurrentTimeNanoseconds] {
            assert_eq!(state.admit_host_function(context_free), Ok(()));
        }
    }

    #[test]
    fn buffers_are_bounded_and_seen_only_where_they_exist() {
        let mut state = host(Profile::Envoy, Callback::RequestBody, STREAM);
        let request = &mut stream(&mut state).request;
        request.receive_body(b"0123456789");
        request.body_available = true;
        assert_eq!(state.get_buffer(BufferType::HttpRequestBody, 2, 3).unwrap(), b"234");
        assert_eq!(
            state.get_buffer(BufferType::HttpRequestBody, 8, u32::MAX).unwrap(),
            b"89"
        );
        assert_eq!(state.get_buffer(BufferType::HttpRequestBody, 10, 5).unwrap(), b"");
        // Past the end: Envoy reads nothing and answers Ok; the spec's default (and Kong) refuse.
        assert_eq!(state.get_buffer(BufferType::HttpRequestBody, 11, 5), Ok(Vec::new()));
        assert_eq!(state.buffer_len(BufferType::HttpRequestBody), Ok(10));
        let mut kong = host(Profile::Kong, Callback::RequestBody, STREAM);
        let request = &mut stream(&mut kong).request;
        request.receive_body(b"0123456789");
        request.body_available = true;
        assert_eq!(
            kong.get_buffer(BufferType::HttpRequestBody, 11, 5),
            Err(status(Status::BadArgument))
        );
        // No response body yet, and a callout's body only in its own callback.
        for absent in [
            BufferType::HttpResponseBody,
            BufferType::HttpCallResponseBody,
            BufferType::DownstreamData,
        ] {
            assert_eq!(state.buffer_len(absent), Err(status(Status::NotFound)), "{absent:?}");
        }
        // Writes: the body is spliced, the read-only buffers refuse.
        assert_eq!(
            state.set_body_bytes(BufferType::HttpRequestBody, 0, 10, b"new".to_vec()),
            Ok(())
        );
        assert_eq!(state.get_buffer(BufferType::HttpRequestBody, 0, 100).unwrap(), b"new");
        assert_eq!(
            state.set_body_bytes(BufferType::PluginConfiguration, 0, 0, b"x".to_vec()),
            Err(status(Status::BadArgument))
        );
        let data = CallbackData {
            buffer: Some(b"reply".to_vec()),
            ..CallbackData::default()
        };
        enter(&mut state, Callback::HttpCallResponse, STREAM, data);
        assert_eq!(
            state.get_buffer(BufferType::HttpCallResponseBody, 0, 100).unwrap(),
            b"reply"
        );
        assert_eq!(
            state.buffer_len(BufferType::GrpcCallMessage),
            Err(status(Status::NotFound))
        );
    }

    #[test]
    fn a_kong_request_body_in_a_temp_file_is_not_found_and_logged() {
        let mut state = host(Profile::Kong, Callback::RequestBody, STREAM);
        let request = &mut stream(&mut state).request;
        request.body_available = true;
        request.body_in_temp_file = true;
        assert_eq!(
            state.get_buffer(BufferType::HttpRequestBody, 0, 10),
            Err(status(Status::NotFound))
        );
        let last = state.logs.iter().last().unwrap();
        assert_eq!(last.level, LogLevel::Error);
    }

    #[test]
    fn header_maps_follow_the_spec_and_the_hosts_names() {
        let mut state = host(Profile::Envoy, Callback::RequestHeaders, STREAM);
        stream(&mut state).request.set_headers(vec![
            (b"host".to_vec(), b"h".to_vec()),
            (b"x-a".to_vec(), b"1".to_vec()),
        ]);
        let map = MapType::HttpRequestHeaders;
        // Lookups are case-insensitive; Envoy keeps names lowercase.
        assert_eq!(state.header_map_value(map, b"X-A").unwrap(), b"1");
        state.add_header_map_value(map, b"X-A".to_vec(), b"2".to_vec()).unwrap();
        assert_eq!(stream(&mut state).request.headers.as_ref().unwrap()[2].0, b"x-a");
        // Replace keeps the first occurrence, with the new value, and drops the others.
        state
            .replace_header_map_value(map, b"x-a".to_vec(), b"3".to_vec())
            .unwrap();
        let pairs = stream(&mut state).request.headers.clone().unwrap();
        assert_eq!(
            pairs,
            vec![(b"host".to_vec(), b"h".to_vec()), (b"x-a".to_vec(), b"3".to_vec())]
        );
        let serialized = state.header_map_pairs(map).unwrap();
        assert_eq!(state.header_map_size(map), Ok(serialized.len()));
        // Removing a key that is not there is OK.
        assert_eq!(state.remove_header_map_value(map, b"absent"), Ok(()));
        state.remove_header_map_value(map, b"X-A").unwrap();
        assert_eq!(state.header_map_value(map, b"x-a"), Err(status(Status::NotFound)));
        // Callout maps are read-only, and exist only in their callback.
        assert_eq!(
            state.add_header_map_value(MapType::HttpCallResponseHeaders, b"k".to_vec(), b"v".to_vec()),
            Err(status(Status::BadArgument))
        );
        // Envoy serializes a map it does not have as empty; Kong refuses.
        assert_eq!(state.header_map_pairs(MapType::HttpCallResponseHeaders), Ok(Vec::new()));
        let mut kong = host(Profile::Kong, Callback::RequestHeaders, STREAM);
        assert!(kong.header_map_pairs(MapType::HttpCallResponseHeaders).is_err());
        // Kong keeps the guest's spelling.
        kong.add_header_map_value(map, b"X-B".to_vec(), b"v".to_vec()).unwrap();
        assert_eq!(kong.header_map_value(map, b"x-b").unwrap(), b"v");
        assert_eq!(stream(&mut kong).request.headers.as_ref().unwrap()[0].0, b"X-B");
    }

    fn call_headers(authority: bool) -> Vec<(String, String)> {
        let mut headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".into(), "/".into()),
        ];
        if authority {
            headers.push((":authority".into(), "rest".into()));
        }
        headers
    }

    #[test]
    fn http_calls_are_admitted_only_when_every_rule_holds() {
        let mut state = host(Profile::Envoy, Callback::RequestHeaders, STREAM);
        let admit = |state: &mut HostState, upstream: &str, authority: bool, timeout: u32| {
            state.admit_http_call(upstream.into(), call_headers(authority), b"b".to_vec(), vec![], timeout)
        };
        assert_eq!(
            admit(&mut state, "unknown", true, 1000),
            Err(status(Status::BadArgument))
        );
        assert!(state.logs.iter().last().unwrap().message.contains("unknown upstream"));
        assert_eq!(
            admit(&mut state, "kafka_rest", false, 1000),
            Err(status(Status::BadArgument))
        );
        assert!(state.logs.iter().last().unwrap().message.contains(":authority"));
        // Envoy: a timeout that does not fit its signed milliseconds is refused.
        assert_eq!(
            admit(&mut state, "kafka_rest", true, u32::MAX),
            Err(status(Status::BadArgument))
        );
        assert!(state.http_calls.is_empty());
        let now = state.now_ns();
        let token = admit(&mut state, "kafka_rest", true, 1000).unwrap();
        let call = &state.http_calls[&token];
        assert_eq!(
            (call.context_id, call.timeout_ms, call.deadline_ns),
            (STREAM, 1000, Some(now + 1_000_000_000))
        );
        // Envoy: no timeout is no deadline; a second call gets a new token.
        let second = admit(&mut state, "kafka_rest", true, 0).unwrap();
        assert_ne!(second, token);
        assert_eq!(state.http_calls[&second].deadline_ns, None);

        // Kong: `host:port` targets, no :authority needed, a default timeout, and no dispatch
        // from the response path.
        let mut kong = host(Profile::Kong, Callback::RequestHeaders, STREAM);
        assert_eq!(
            admit(&mut kong, "http://x:1", false, 0),
            Err(status(Status::BadArgument))
        );
        let token = admit(&mut kong, "rest:8082", false, 0).unwrap();
        assert_eq!(
            kong.http_calls[&token].deadline_ns,
            Some(kong.now_ns() + 60_000_000_000)
        );
        enter(&mut kong, Callback::ResponseHeaders, STREAM, CallbackData::default());
        assert!(
            matches!(admit(&mut kong, "rest:8082", false, 0), Err(Fault::Trap(m)) if m.contains("on_response_headers"))
        );
    }

    fn reply(state: &mut HostState, code: u32, grpc_status: i32) -> Result<(), Fault> {
        state.send_local_response(code, "details".into(), b"body".to_vec(), vec![], grpc_status)
    }

    #[test]
    fn local_responses_are_stashed_once_per_the_hosts_rules() {
        let mut envoy = host(Profile::Envoy, Callback::RequestHeaders, STREAM);
        assert_eq!(reply(&mut envoy, 403, -1), Ok(()));
        // Envoy: a second reply is OK, and the first is the one kept.
        assert_eq!(reply(&mut envoy, 500, 3), Ok(()));
        let stashed = stream(&mut envoy).pending_local_response.clone().unwrap();
        assert_eq!((stashed.status, stashed.grpc_status), (403, None));
        // Kong traps on the second, and on any reply after the response headers went out.
        let mut kong = host(Profile::Kong, Callback::RequestHeaders, STREAM);
        assert_eq!(reply(&mut kong, 403, 2), Ok(()));
        assert_eq!(
            stream(&mut kong).pending_local_response.as_ref().unwrap().grpc_status,
            Some(2)
        );
        assert!(matches!(reply(&mut kong, 500, -1), Err(Fault::Trap(m)) if m.contains("already stashed")));
        let mut late = host(Profile::Kong, Callback::ResponseHeaders, STREAM);
        stream(&mut late).response.headers_forwarded = true;
        assert!(matches!(reply(&mut late, 500, -1), Err(Fault::Trap(m)) if m.contains("already sent")));
        // Only a stream can reply.
        let mut root = host(Profile::Envoy, Callback::Tick, ROOT);
        assert_eq!(reply(&mut root, 200, -1), Err(status(Status::BadArgument)));
    }

    #[test]
    fn done_finalizes_only_a_root_that_waits_for_it() {
        let mut state = host(Profile::Envoy, Callback::HttpCallResponse, STREAM);
        assert_eq!(state.done(), Err(status(Status::NotFound)));
        state.roots.get_mut(&ROOT).unwrap().awaiting_done = true;
        // Called from the root's stream, it finalizes the root, once.
        assert_eq!(state.done(), Ok(()));
        assert_eq!(state.take_done_roots(), vec![ROOT]);
        assert_eq!(state.done(), Err(status(Status::NotFound)));
    }

    #[test]
    fn switching_to_a_stream_lists_it_once_for_the_embedder_and_ended_streams_are_pruned() {
        let mut state = host(Profile::Envoy, Callback::Tick, ROOT);
        assert!(state.take_touched_streams().is_empty());
        // A switch to the root touches no stream; to the stream, once however often.
        assert_eq!(state.set_effective_context(ROOT), Ok(()));
        for _ in 0..3 {
            assert_eq!(state.set_effective_context(STREAM), Ok(()));
        }
        assert_eq!(state.take_touched_streams(), vec![STREAM]);
        assert!(state.take_touched_streams().is_empty());
        // Listed again after being taken.
        state.touch_stream(STREAM);
        assert_eq!(state.take_touched_streams(), vec![STREAM]);
        // Nobody taking the list: streams that ended are pruned, so it stays as long as the
        // live streams (plus a small slack), never one entry per stream ever touched.
        for id in 100..1100 {
            state
                .streams
                .insert(id, Box::new(StreamState::new(ROOT, StreamInfo::default())));
            state.touch_stream(id);
            state.streams.remove(&id);
        }
        state.touch_stream(STREAM);
        let left = state.take_touched_streams();
        assert!(left.len() <= 2 * state.streams.len() + 17, "{}", left.len());
        assert!(left.contains(&STREAM));
    }

    #[test]
    fn effective_context_tick_and_stream_controls() {
        let mut state = host(Profile::Envoy, Callback::HttpCallResponse, ROOT);
        assert_eq!(state.set_effective_context(99), Err(status(Status::BadArgument)));
        assert_eq!(state.set_effective_context(STREAM), Ok(()));
        assert_eq!(state.effective(), Some(STREAM));
        // A stream's timer is its root's.
        assert_eq!(state.set_tick_period(500), Ok(()));
        assert_eq!(state.roots[&ROOT].next_tick_ns, Some(state.now_ns() + 500_000_000));
        assert_eq!(state.continue_or_close_stream(StreamType::HttpRequest, false), Ok(()));
        assert!(stream(&mut state).request.resume_requested);
        assert_eq!(state.continue_or_close_stream(StreamType::HttpResponse, true), Ok(()));
        assert!(stream(&mut state).reset);
        // Kong: only a root sets its tick period, once.
        let mut kong = host(Profile::Kong, Callback::RequestHeaders, STREAM);
        assert!(matches!(kong.set_tick_period(500), Err(Fault::Trap(m)) if m.contains("root context")));
        enter(&mut kong, Callback::Configure, ROOT, CallbackData::default());
        assert_eq!(kong.set_tick_period(500), Ok(()));
        assert!(matches!(kong.set_tick_period(100), Err(Fault::Trap(m)) if m.contains("already set")));
    }

    #[test]
    fn logs_below_the_level_and_unknown_foreign_functions() {
        let mut state = host(Profile::Envoy, Callback::Tick, ROOT);
        state.log_level = LogLevel::Warn;
        state.guest_log(LogLevel::Info, "dropped".into());
        state.guest_log(LogLevel::Error, "kept".into());
        let lines: Vec<_> = state.logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(lines, ["kept"]);
        assert_eq!(state.call_foreign_function("nope", b""), Err(status(Status::NotFound)));
        state.register_foreign_function("echo", std::sync::Arc::new(|args: &[u8]| Ok(args.to_vec())));
        assert_eq!(state.call_foreign_function("echo", b"hi"), Ok(b"hi".to_vec()));
    }

    #[test]
    fn grpc_calls_open_send_and_end_by_token() {
        let mut state = host(Profile::Envoy, Callback::RequestHeaders, STREAM);
        let open = |state: &mut HostState, kind, upstream: &str| {
            state.open_grpc(kind, upstream.into(), "svc".into(), "m".into(), vec![], None, None)
        };
        // Spec: PARSE_FAILURE for an upstream the host does not know.
        assert_eq!(
            open(&mut state, GrpcKind::Stream, "nowhere"),
            Err(status(Status::ParseFailure))
        );
        let stream_token = open(&mut state, GrpcKind::Stream, "kafka_rest").unwrap();
        let call_token = open(&mut state, GrpcKind::Call, "kafka_rest").unwrap();
        assert_eq!(state.grpc_send(stream_token, b"a".to_vec(), true), Ok(()));
        // A half-closed stream takes no more messages (Envoy answers OK; the spec's default is
        // BAD_ARGUMENT), nor does a unary call.
        assert_eq!(state.grpc_send(stream_token, b"b".to_vec(), false), Ok(()));
        assert_eq!(
            state.grpc_send(call_token, b"b".to_vec(), false),
            Err(status(Status::BadArgument))
        );
        assert_eq!(state.grpc_calls[&stream_token].messages, vec![b"a".to_vec()]);
        assert_eq!(state.end_grpc(call_token, false), Ok(()));
        assert!(state.grpc_calls[&call_token].cancelled);
        assert_eq!(state.end_grpc(999, true), Err(status(Status::NotFound)));
    }

    #[test]
    fn shared_data_queues_properties_and_metrics_through_the_state() {
        let mut state = host(Profile::Envoy, Callback::Tick, ROOT);
        assert_eq!(state.get_shared_data(b"k"), Err(status(Status::NotFound)));
        state.set_shared_data(b"k".to_vec(), b"v".to_vec(), 0).unwrap();
        let (value, cas) = state.get_shared_data(b"k").unwrap();
        assert_eq!(value, b"v");
        assert_eq!(
            state.set_shared_data(b"k".to_vec(), b"w".to_vec(), cas + 1),
            Err(status(Status::CasMismatch))
        );
        let queue = state.register_queue("q").unwrap();
        assert_eq!(state.resolve_queue("", "q"), Ok(queue));
        assert_eq!(state.resolve_queue("", "other"), Err(status(Status::NotFound)));
        assert_eq!(state.dequeue(queue), Err(status(Status::Empty)));
        state.enqueue(queue, b"item".to_vec()).unwrap();
        assert_eq!(state.dequeue(queue), Ok(b"item".to_vec()));
        // Envoy keeps guest properties with a stream: a root has nowhere to put them.
        assert_eq!(
            state.set_property(b"p".to_vec(), b"v".to_vec()),
            Err(status(Status::NotFound))
        );
        let counter = state.define_metric(MetricType::Counter, "c").unwrap();
        assert_eq!(state.increment_metric(counter, 5), Ok(()));
        assert_eq!(state.increment_metric(counter, -1), Err(status(Status::BadArgument)));
        assert_eq!(state.get_metric(counter), Ok(5));
        assert_eq!(state.get_metric(counter + 100), Err(status(Status::NotFound)));
        // Kong traps where Envoy answers a status; its counters may go down.
        let mut kong = host(Profile::Kong, Callback::Tick, ROOT);
        let counter = kong.define_metric(MetricType::Counter, "c").unwrap();
        assert_eq!(kong.increment_metric(counter, -1), Ok(()));
        assert!(matches!(kong.record_metric(counter, 1), Err(Fault::Trap(m)) if m.contains("counter")));
        assert!(matches!(kong.get_metric(counter + 100), Err(Fault::Trap(m)) if m.contains("not found")));
        assert_eq!(kong.set_property(b"p".to_vec(), b"v".to_vec()), Ok(()));
    }
}
