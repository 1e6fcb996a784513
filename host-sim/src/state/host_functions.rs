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
use crate::profile::{MapAccess, MetricOp, Profile, SecondLocalResponse};

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
        // `Profile::stream_end_callbacks`). proxy-wasm-cpp-host `WasmBase::done` looks the
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
                active.data.buffer.as_deref().ok_or(Status::NotFound)
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

    /// `proxy_get_buffer_bytes`: up to `max` bytes from `start` (BAD_ARGUMENT past the end).
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
            return Err(Status::BadArgument.into());
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
            .and_then(|a| a.data.status.clone())
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
        let known = match profile {
            Profile::Envoy => self.knows_cluster(&upstream),
            Profile::Kong => valid_host_port(&upstream),
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
    /// if any ([`Profile::metric_trap`]).
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

    #[test]
    fn kong_dispatch_targets() {
        for ok in ["127.0.0.1:8082", "kafka-rest:8082", "example.com", "[::1]:8082"] {
            assert!(valid_host_port(ok), "{ok}");
        }
        for bad in ["", ":8082", "host:0", "host:99999", "a b:1", "http://x:1"] {
            assert!(!valid_host_port(bad), "{bad}");
        }
    }
}
