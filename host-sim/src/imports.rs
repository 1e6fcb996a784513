//! The ABI glue: every `env.proxy_*` host function of proxy-wasm ABI v0.2.1, grouped in the
//! spec's order. Each one decodes its arguments from guest memory (a bad pointer is
//! `INVALID_MEMORY_ACCESS`), asks the host state or the profile, and encodes the result back.
//! No policy lives here: rules are in [`crate::state`], host differences in [`crate::profile`].
//!
//! A host function the profile's host does not implement still links (so the module
//! instantiates, as it does in Kong) but traps when called, as Kong's ngx_wasm_module does.

use crate::abi::{
    decode_pairs_with, encode_pairs, BufferType, LogLevel, MapType, MetricType, Pairs, Status, StreamType,
};
use crate::hostfn::HostFunction;
use crate::memory::{GuestMemory, MemoryError};
use crate::profile::{BudgetRefusal, Callback, CalloutUpstream, MapAccess, MetricOp, SecondLocalResponse};
use crate::state::{GrpcCall, GrpcKind, HostState, HttpCall, LocalResponse, OverBudget, Refused, SharedInner};
use wasmtime::format_err;
use wasmtime::{Caller, Linker};

/// How a host function ends when it does not return a status.
enum Fault {
    /// Return this status to the guest.
    Status(Status),
    /// Trap the guest (the host refuses to continue this call).
    Trap(wasmtime::Error),
    /// The host-memory budget cannot hold what the call asked to keep: the profile decides.
    OverBudget(OverBudget),
}

impl From<Refused> for Fault {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Status(s) => Fault::Status(s),
            Refused::OverBudget(e) => Fault::OverBudget(e),
        }
    }
}

impl From<MemoryError> for Fault {
    fn from(e: MemoryError) -> Self {
        match e {
            // The guest's own allocator trapped: propagate the trap rather than hide it.
            MemoryError::AllocatorTrapped(msg) => Fault::Trap(format_err!("guest allocator trapped: {msg}")),
            _ => Fault::Status(Status::InvalidMemoryAccess),
        }
    }
}

impl From<Status> for Fault {
    fn from(s: Status) -> Self {
        Fault::Status(s)
    }
}

type HostCaller<'a> = Caller<'a, HostState>;
type Outcome = Result<Status, Fault>;

/// The one wrapper every host function runs in: refuse what the profile's host lacks, then
/// turn the body's outcome into a status or a trap.
fn hostcall(
    caller: &mut HostCaller<'_>,
    function: HostFunction,
    body: impl FnOnce(&mut HostCaller<'_>, &GuestMemory) -> Outcome,
) -> wasmtime::Result<u32> {
    let profile = caller.data().profile;
    if !profile.implements(function) {
        return Err(format_err!(
            "{} is not implemented by the {profile} host (ngx_wasm_module traps on it)",
            function.name()
        ));
    }
    if caller.data().active.is_none() {
        // Called outside any callback (e.g. from a start function): there is no context.
        if !matches!(
            function,
            HostFunction::Log | HostFunction::GetCurrentTimeNanoseconds | HostFunction::GetLogLevel
        ) {
            return Ok(Status::BadArgument as u32);
        }
    }
    let memory = caller.data().memory.clone();
    match body(caller, &memory) {
        Ok(status) | Err(Fault::Status(status)) => Ok(status as u32),
        Err(Fault::Trap(e)) => Err(e),
        Err(Fault::OverBudget(refusal)) => match profile.over_budget(function, &refusal) {
            BudgetRefusal::Status(status) => Ok(status as u32),
            BudgetRefusal::Trap(message) => Err(format_err!("{message}")),
        },
    }
}

fn max_buf(caller: &HostCaller<'_>) -> usize {
    caller.data().limits.max_guest_buffer_bytes
}

fn read(caller: &mut HostCaller<'_>, mem: &GuestMemory, ptr: u32, len: u32) -> Result<Vec<u8>, Fault> {
    let max = max_buf(caller);
    Ok(mem.read(caller, ptr, len, max)?)
}

fn read_str(caller: &mut HostCaller<'_>, mem: &GuestMemory, ptr: u32, len: u32) -> Result<String, Fault> {
    let max = max_buf(caller);
    Ok(mem.read_string(caller, ptr, len, max)?)
}

fn read_pairs(caller: &mut HostCaller<'_>, mem: &GuestMemory, ptr: u32, len: u32) -> Result<Pairs, Fault> {
    read_pairs_with(caller, mem, ptr, len, |k, v| (k.to_vec(), v.to_vec()))
}

/// A serialized map from the guest as (lossy UTF-8) strings.
fn read_string_pairs(
    caller: &mut HostCaller<'_>,
    mem: &GuestMemory,
    ptr: u32,
    len: u32,
) -> Result<Vec<(String, String)>, Fault> {
    read_pairs_with(caller, mem, ptr, len, |k, v| (lossy(k), lossy(v)))
}

/// Decodes a serialized map in place in guest memory, each pair through `item`: the map is not
/// copied out first, and each key and value is copied once, into what `item` makes of it.
fn read_pairs_with<T>(
    caller: &mut HostCaller<'_>,
    mem: &GuestMemory,
    ptr: u32,
    len: u32,
    item: impl FnMut(&[u8], &[u8]) -> T,
) -> Result<Vec<T>, Fault> {
    let max = max_buf(caller);
    if len as usize > max {
        return Err(MemoryError::TooLarge(len).into());
    }
    let max_pairs = caller.data().limits.max_pairs;
    // A map the host cannot parse is the guest's bug: BAD_ARGUMENT, never a panic.
    mem.with_slice(caller, ptr, len, |bytes| decode_pairs_with(bytes, max_pairs, item))?
        .map_err(|_| Fault::Status(Status::BadArgument))
}

/// Guest bytes as text, invalid UTF-8 replaced. Valid text (nearly always) takes the standard
/// validator's fast path rather than the lossy decoder's chunk by chunk walk.
fn lossy(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Registers every host function and WASI preview 1.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p1::add_to_linker_sync(linker, |s: &mut HostState| &mut s.wasi)?;
    context_lifecycle(linker)?;
    logging_and_clocks(linker)?;
    buffers(linker)?;
    header_maps(linker)?;
    streams(linker)?;
    http_calls(linker)?;
    grpc(linker)?;
    shared_data_and_queues(linker)?;
    metrics(linker)?;
    properties_and_ffi(linker)?;
    Ok(())
}

// ---- Context lifecycle -------------------------------------------------------------------

fn context_lifecycle(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_done", |mut c: HostCaller<'_>| {
        hostcall(&mut c, HostFunction::Done, |c, _| {
            let state = c.data_mut();
            let id = state.effective().ok_or(Status::NotFound)?;
            // Only root contexts wait for `proxy_done` (no host holds a stream for it,
            // `HostBehaviour::stream_end_callbacks`). proxy-wasm-cpp-host `WasmBase::done` looks the
            // pending root up by the calling context's plugin, so a stream's call finalizes
            // its root when that root is pending.
            let root_id = state.streams.get(&id).map_or(id, |s| s.root_id);
            if let Some(root) = state.roots.get_mut(&root_id) {
                if root.awaiting_done {
                    root.awaiting_done = false;
                    state.done_roots.push(root_id);
                    return Ok(Status::Ok);
                }
            }
            // Spec: NOT_FOUND "when active context was not pending finalization".
            Ok(Status::NotFound)
        })
    })?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: HostCaller<'_>, id: u32| {
            hostcall(&mut c, HostFunction::SetEffectiveContext, |c, _| {
                let state = c.data_mut();
                if !state.profile.effective_context_switches() {
                    return Ok(Status::Ok);
                }
                if !state.roots.contains_key(&id) && !state.streams.contains_key(&id) {
                    return Ok(Status::BadArgument);
                }
                if let Some(active) = state.active.as_mut() {
                    active.effective_id = id;
                }
                Ok(Status::Ok)
            })
        },
    )?;
    Ok(())
}

// ---- Logging, clocks, timers ----------------------------------------------------------------

fn logging_and_clocks(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: HostCaller<'_>, level: u32, ptr: u32, len: u32| {
            hostcall(&mut c, HostFunction::Log, |c, mem| {
                let message = read_str(c, mem, ptr, len)?;
                let level = LogLevel::from_raw(level).ok_or(Status::BadArgument)?;
                let state = c.data_mut();
                if level >= state.log_level {
                    state.push_log(level, message);
                }
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap("env", "proxy_get_log_level", |mut c: HostCaller<'_>, ret: u32| {
        hostcall(&mut c, HostFunction::GetLogLevel, |c, mem| {
            let level = c.data().log_level as u32;
            mem.write_u32(c, ret, level)?;
            Ok(Status::Ok)
        })
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: HostCaller<'_>, ret: u32| {
            hostcall(&mut c, HostFunction::GetCurrentTimeNanoseconds, |c, mem| {
                let now = c.data().now_ns();
                mem.write_u64(c, ret, now)?;
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: HostCaller<'_>, period: u32| {
            hostcall(&mut c, HostFunction::SetTickPeriodMilliseconds, |c, _| {
                let state = c.data_mut();
                // A stream context's timer is its root's (Envoy applies it to the root context).
                let root = state.effective_root().ok_or(Status::BadArgument)?;
                let from_root = state.effective() == Some(root);
                let already_set = state.roots.get(&root).is_some_and(|r| r.tick_period_ms != 0);
                if let Some(reason) = state.profile.tick_period_refusal(from_root, already_set) {
                    return Err(Fault::Trap(format_err!("proxy_set_tick_period_milliseconds: {reason}")));
                }
                let now = state.now_ns();
                if let Some(r) = state.roots.get_mut(&root) {
                    r.tick_period_ms = period;
                    r.next_tick_ns = (period > 0).then(|| now + period as u64 * 1_000_000);
                }
                Ok(Status::Ok)
            })
        },
    )?;
    Ok(())
}

// ---- Buffers --------------------------------------------------------------------------------

/// The bytes of a buffer, if the current callback may see it.
fn buffer_view(state: &HostState, buffer: BufferType) -> Result<&[u8], Status> {
    let active = state.active.as_ref().ok_or(Status::NotFound)?;
    let callback_buffer = |allowed: &[Callback]| -> Result<&[u8], Status> {
        if allowed.contains(&active.callback) {
            active.data.buffer.as_deref().ok_or(Status::NotFound)
        } else {
            Err(Status::NotFound)
        }
    };
    match buffer {
        BufferType::HttpRequestBody | BufferType::HttpResponseBody => {
            let stream = state.streams.get(&active.effective_id).ok_or(Status::NotFound)?;
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
        BufferType::HttpCallResponseBody => callback_buffer(&[Callback::HttpCallResponse]),
        BufferType::GrpcCallMessage => callback_buffer(&[Callback::GrpcReceive]),
        BufferType::VmConfiguration => callback_buffer(&[Callback::VmStart]),
        BufferType::PluginConfiguration => callback_buffer(&[Callback::Configure]),
        BufferType::ForeignFunctionArguments => callback_buffer(&[Callback::ForeignFunction]),
        // TCP filters are not modelled: these buffers never exist on an HTTP stream.
        BufferType::DownstreamData | BufferType::UpstreamData => Err(Status::NotFound),
    }
}

/// The effective stream, when its request body is in a temp file the guest cannot read (Kong).
fn request_body_in_temp_file(state: &HostState) -> Option<u32> {
    let id = state.active.as_ref()?.effective_id;
    state
        .streams
        .get(&id)
        .filter(|s| s.request.body_in_temp_file)
        .map(|_| id)
}

fn buffers(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: HostCaller<'_>, buffer: u32, start: u32, max: u32, ret_ptr: u32, ret_len: u32| {
            hostcall(&mut c, HostFunction::GetBufferBytes, |c, mem| {
                let buffer = BufferType::from_raw(buffer).ok_or(Status::BadArgument)?;
                if buffer == BufferType::HttpRequestBody {
                    if let Some(stream) = request_body_in_temp_file(c.data()) {
                        // Kong logs the refusal and answers NOT_FOUND (ngx_proxy_wasm_host.c:77-83,
                        // 361-362).
                        let line = c.data().profile.spilled_request_body_log(stream);
                        c.data_mut().push_log(LogLevel::Error, line);
                        return Ok(Status::NotFound);
                    }
                }
                let (from, to) = {
                    let view = buffer_view(c.data(), buffer)?;
                    let start = start as usize;
                    if start > view.len() {
                        return Ok(Status::BadArgument);
                    }
                    (start, view.len().min(start.saturating_add(max as usize)))
                };
                // Copy out before allocating: the allocator runs guest code.
                let bytes = buffer_view(c.data(), buffer)?[from..to].to_vec();
                mem.return_bytes(c, &bytes, ret_ptr, ret_len)?;
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: HostCaller<'_>, buffer: u32, ret_len: u32, ret_flags: u32| {
            hostcall(&mut c, HostFunction::GetBufferStatus, |c, mem| {
                let buffer = BufferType::from_raw(buffer).ok_or(Status::BadArgument)?;
                let len = buffer_view(c.data(), buffer)?.len() as u32;
                mem.check_writable(&mut *c, ret_flags, 4)?;
                mem.write_u32(&mut *c, ret_len, len)?;
                mem.write_u32(c, ret_flags, 0)?;
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: HostCaller<'_>, buffer: u32, start: u32, size: u32, ptr: u32, len: u32| {
            hostcall(&mut c, HostFunction::SetBufferBytes, |c, mem| {
                let buffer = BufferType::from_raw(buffer).ok_or(Status::BadArgument)?;
                let value = read(c, mem, ptr, len)?;
                Ok(c.data_mut().set_body_bytes(buffer, start, size, value)?)
            })
        },
    )?;
    Ok(())
}

// ---- HTTP fields ----------------------------------------------------------------------------

fn header_maps(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: HostCaller<'_>, map: u32, ret: u32| {
            hostcall(&mut c, HostFunction::GetHeaderMapSize, |c, mem| {
                let map = MapType::from_raw(map).ok_or(Status::BadArgument)?;
                // The size is the serialized size (spec: `return_serialized_pairs_size`).
                let access = c.data().profile.map_size_access();
                let size = c
                    .data_mut()
                    .map_slot(map, access)?
                    .pairs
                    .as_ref()
                    .map_or(4, |p| encode_pairs(p).len());
                mem.write_u32(c, ret, size as u32)?;
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: HostCaller<'_>, map: u32, ret_ptr: u32, ret_len: u32| {
            hostcall(&mut c, HostFunction::GetHeaderMapPairs, |c, mem| {
                let map = MapType::from_raw(map).ok_or(Status::BadArgument)?;
                let profile = c.data().profile;
                let encoded = match c.data_mut().map_slot(map, MapAccess::Read).map(|slot| slot.pairs) {
                    Ok(Some(pairs)) => encode_pairs(pairs),
                    Ok(None) => encode_pairs::<&[u8], &[u8]>(&[]),
                    // Envoy serializes a map it does not have as empty, with OK (ENVOY-SRC).
                    Err(_) if profile.unavailable_map_pairs_are_empty() => Vec::new(),
                    Err(status) => return Ok(status),
                };
                mem.return_bytes(c, &encoded, ret_ptr, ret_len)?;
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: HostCaller<'_>, map: u32, ptr: u32, len: u32| {
            hostcall(&mut c, HostFunction::SetHeaderMapPairs, |c, mem| {
                let map = MapType::from_raw(map).ok_or(Status::BadArgument)?;
                let pairs = read_pairs(c, mem, ptr, len)?;
                let profile = c.data().profile;
                let pairs = pairs.into_iter().map(|(k, v)| (profile.header_name(k), v)).collect();
                c.data_mut().set_map_pairs(map, pairs)?;
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: HostCaller<'_>, map: u32, key_ptr: u32, key_len: u32, ret_ptr: u32, ret_len: u32| {
            hostcall(&mut c, HostFunction::GetHeaderMapValue, |c, mem| {
                let map = MapType::from_raw(map).ok_or(Status::BadArgument)?;
                let key = read(c, mem, key_ptr, key_len)?;
                // Lookups are case-insensitive on both hosts; the first value is returned.
                let value = c
                    .data_mut()
                    .map_slot(map, MapAccess::Read)?
                    .pairs
                    .as_ref()
                    .and_then(|p| p.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key)))
                    .map(|(_, v)| v.clone());
                match value {
                    Some(v) => {
                        mem.return_bytes(c, &v, ret_ptr, ret_len)?;
                        Ok(Status::Ok)
                    }
                    None => Ok(Status::NotFound),
                }
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: HostCaller<'_>, map: u32, key_ptr: u32, key_len: u32, val_ptr: u32, val_len: u32| {
            hostcall(&mut c, HostFunction::AddHeaderMapValue, |c, mem| {
                let map = MapType::from_raw(map).ok_or(Status::BadArgument)?;
                let key = read(c, mem, key_ptr, key_len)?;
                let value = read(c, mem, val_ptr, val_len)?;
                let key = c.data().profile.header_name(key);
                c.data_mut().add_map_value(map, key, value)?;
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: HostCaller<'_>, map: u32, key_ptr: u32, key_len: u32, val_ptr: u32, val_len: u32| {
            hostcall(&mut c, HostFunction::ReplaceHeaderMapValue, |c, mem| {
                let map = MapType::from_raw(map).ok_or(Status::BadArgument)?;
                let key = read(c, mem, key_ptr, key_len)?;
                let value = read(c, mem, val_ptr, val_len)?;
                let key = c.data().profile.header_name(key);
                c.data_mut().replace_map_value(map, key, value)?;
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: HostCaller<'_>, map: u32, key_ptr: u32, key_len: u32| {
            hostcall(&mut c, HostFunction::RemoveHeaderMapValue, |c, mem| {
                let map = MapType::from_raw(map).ok_or(Status::BadArgument)?;
                let key = read(c, mem, key_ptr, key_len)?;
                c.data_mut().remove_map_value(map, &key)?;
                // Spec: OK "including the case when requested key didn't exist".
                Ok(Status::Ok)
            })
        },
    )?;
    Ok(())
}

// ---- Common stream operations ---------------------------------------------------------------

fn streams(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: HostCaller<'_>, stream_type: u32| {
            hostcall(&mut c, HostFunction::ContinueStream, |c, _| {
                let stream_type = StreamType::from_raw(stream_type).ok_or(Status::BadArgument)?;
                let profile = c.data().profile;
                let stream = c.data_mut().effective_stream().ok_or(Status::BadArgument)?;
                match stream_type {
                    StreamType::HttpRequest => stream.request.resume_requested = true,
                    StreamType::HttpResponse => stream.response.resume_requested = true,
                    // An HTTP stream has no TCP stream to resume: what the host answers is its own.
                    StreamType::Downstream | StreamType::Upstream => {
                        return Ok(profile.tcp_stream_status(stream_type, false));
                    }
                }
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: HostCaller<'_>, stream_type: u32| {
            hostcall(&mut c, HostFunction::CloseStream, |c, _| {
                let stream_type = StreamType::from_raw(stream_type).ok_or(Status::BadArgument)?;
                let profile = c.data().profile;
                let stream = c.data_mut().effective_stream().ok_or(Status::BadArgument)?;
                match stream_type {
                    StreamType::HttpRequest | StreamType::HttpResponse => stream.reset = true,
                    // Spec: BAD_ARGUMENT only for an unknown type; closing an absent TCP stream is
                    // the host's no-op.
                    StreamType::Downstream | StreamType::Upstream => {
                        return Ok(profile.tcp_stream_status(stream_type, true));
                    }
                }
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: HostCaller<'_>, ret_code: u32, ret_ptr: u32, ret_len: u32| {
            hostcall(&mut c, HostFunction::GetStatus, |c, mem| {
                let (code, message) = c
                    .data()
                    .active
                    .as_ref()
                    .and_then(|a| a.data.status.clone())
                    .unwrap_or((0, Vec::new()));
                mem.check_writable(&mut *c, ret_code, 4)?;
                mem.return_bytes(&mut *c, &message, ret_ptr, ret_len)?;
                mem.write_u32(c, ret_code, code)?;
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: HostCaller<'_>,
         status: u32,
         details_ptr: u32,
         details_len: u32,
         body_ptr: u32,
         body_len: u32,
         headers_ptr: u32,
         headers_len: u32,
         grpc_status: i32| {
            hostcall(&mut c, HostFunction::SendLocalResponse, |c, mem| {
                let details = read_str(c, mem, details_ptr, details_len)?;
                let body = read(c, mem, body_ptr, body_len)?;
                let headers = read_string_pairs(c, mem, headers_ptr, headers_len)?;
                let state = c.data_mut();
                let profile = state.profile;
                let stream = state.effective_stream().ok_or(Status::BadArgument)?;
                if stream.response.headers_forwarded && profile.late_local_response_traps() {
                    return Err(Fault::Trap(format_err!(
                        "proxy_send_local_response: response already sent"
                    )));
                }
                // Envoy: a reply while the filter's first one passes through its response
                // callbacks (headers not sent yet) is sent instead of it (`sendDirectLocalReply`;
                // settled in `Vm::settle_stream`).
                let replaces_passing_reply = stream.local_reply_in_response
                    && !stream.response.headers_forwarded
                    && stream.pending_local_response.is_none()
                    && profile.second_local_response() == SecondLocalResponse::KeepFirst;
                if !replaces_passing_reply
                    && (stream.pending_local_response.is_some() || stream.local_response.is_some())
                {
                    match profile.second_local_response() {
                        SecondLocalResponse::Trap => {
                            return Err(Fault::Trap(format_err!(
                                "proxy_send_local_response: local response already stashed"
                            )));
                        }
                        SecondLocalResponse::KeepFirst => return Ok(Status::Ok),
                    }
                }
                stream.pending_local_response = Some(LocalResponse {
                    status,
                    details,
                    headers,
                    body,
                    grpc_status: (grpc_status >= 0).then_some(grpc_status),
                });
                Ok(Status::Ok)
            })
        },
    )?;
    Ok(())
}

// ---- HTTP calls -----------------------------------------------------------------------------

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

fn http_calls(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: HostCaller<'_>,
         up_ptr: u32,
         up_len: u32,
         headers_ptr: u32,
         headers_len: u32,
         body_ptr: u32,
         body_len: u32,
         trailers_ptr: u32,
         trailers_len: u32,
         timeout_ms: u32,
         ret_token: u32| {
            hostcall(&mut c, HostFunction::HttpCall, |c, mem| {
                let upstream = read_str(c, mem, up_ptr, up_len)?;
                let headers = read_string_pairs(c, mem, headers_ptr, headers_len)?;
                let body = read(c, mem, body_ptr, body_len)?;
                let trailers = read_string_pairs(c, mem, trailers_ptr, trailers_len)?;
                mem.check_writable(&mut *c, ret_token, 4)?;
                let state = c.data_mut();
                let profile = state.profile;
                let callback = state.callback().ok_or(Status::BadArgument)?;
                if !profile.dispatch_allowed(callback) {
                    return Err(Fault::Trap(format_err!(
                        "proxy_http_call: dispatch not allowed in {}",
                        callback.transcript_name()
                    )));
                }
                if !profile.call_timeout_valid(timeout_ms) {
                    return Ok(Status::BadArgument);
                }
                let known = match profile.callout_upstream() {
                    CalloutUpstream::Cluster => state.knows_cluster(&upstream),
                    CalloutUpstream::HostPort => valid_host_port(&upstream),
                };
                if !known {
                    state.push_log(
                        LogLevel::Error,
                        format!("proxy_http_call: unknown upstream {upstream:?}"),
                    );
                    return Ok(Status::BadArgument);
                }
                for required in profile.required_call_headers() {
                    if !headers.iter().any(|(k, v)| k == required && !v.is_empty()) {
                        state.push_log(LogLevel::Error, format!("proxy_http_call: missing {required} header"));
                        return Ok(Status::BadArgument);
                    }
                }
                let context_id = state.effective().ok_or(Status::BadArgument)?;
                let token = state.allocate_token();
                let deadline_ns = profile
                    .effective_call_timeout_ms(timeout_ms)
                    .map(|ms| state.now_ns() + ms * 1_000_000);
                state.add_http_call(HttpCall {
                    token,
                    context_id,
                    upstream,
                    headers,
                    body,
                    trailers,
                    timeout_ms,
                    deadline_ns,
                })?;
                mem.write_u32(c, ret_token, token)?;
                Ok(Status::Ok)
            })
        },
    )?;
    Ok(())
}

// ---- gRPC -----------------------------------------------------------------------------------

#[allow(clippy::too_many_arguments)]
fn open_grpc(
    c: &mut HostCaller<'_>,
    mem: &GuestMemory,
    kind: GrpcKind,
    (up_ptr, up_len): (u32, u32),
    (svc_ptr, svc_len): (u32, u32),
    (method_ptr, method_len): (u32, u32),
    (md_ptr, md_len): (u32, u32),
    message: Option<Vec<u8>>,
    timeout_ms: Option<u32>,
    ret_token: u32,
) -> Outcome {
    let upstream = read_str(c, mem, up_ptr, up_len)?;
    let service = read_str(c, mem, svc_ptr, svc_len)?;
    let method = read_str(c, mem, method_ptr, method_len)?;
    let metadata = read_string_pairs(c, mem, md_ptr, md_len)?;
    mem.check_writable(&mut *c, ret_token, 4)?;
    let state = c.data_mut();
    // Spec: PARSE_FAILURE for an unknown upstream (Envoy: a cluster it knows).
    if !state.knows_cluster(&upstream) {
        return Ok(Status::ParseFailure);
    }
    let context_id = state.effective().ok_or(Status::BadArgument)?;
    let token = state.allocate_token();
    state.add_grpc_call(GrpcCall {
        token,
        kind,
        context_id,
        upstream,
        service,
        method,
        initial_metadata: metadata,
        messages: message.into_iter().collect(),
        end_stream_sent: kind == GrpcKind::Call,
        cancelled: false,
        closed: false,
        timeout_ms,
    })?;
    mem.write_u32(c, ret_token, token)?;
    Ok(Status::Ok)
}

fn grpc(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: HostCaller<'_>,
         up_ptr: u32,
         up_len: u32,
         svc_ptr: u32,
         svc_len: u32,
         method_ptr: u32,
         method_len: u32,
         md_ptr: u32,
         md_len: u32,
         msg_ptr: u32,
         msg_len: u32,
         timeout_ms: u32,
         ret_token: u32| {
            hostcall(&mut c, HostFunction::GrpcCall, |c, mem| {
                let message = read(c, mem, msg_ptr, msg_len)?;
                open_grpc(
                    c,
                    mem,
                    GrpcKind::Call,
                    (up_ptr, up_len),
                    (svc_ptr, svc_len),
                    (method_ptr, method_len),
                    (md_ptr, md_len),
                    Some(message),
                    Some(timeout_ms),
                    ret_token,
                )
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut c: HostCaller<'_>,
         up_ptr: u32,
         up_len: u32,
         svc_ptr: u32,
         svc_len: u32,
         method_ptr: u32,
         method_len: u32,
         md_ptr: u32,
         md_len: u32,
         ret_token: u32| {
            hostcall(&mut c, HostFunction::GrpcStream, |c, mem| {
                open_grpc(
                    c,
                    mem,
                    GrpcKind::Stream,
                    (up_ptr, up_len),
                    (svc_ptr, svc_len),
                    (method_ptr, method_len),
                    (md_ptr, md_len),
                    None,
                    None,
                    ret_token,
                )
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |mut c: HostCaller<'_>, token: u32, msg_ptr: u32, msg_len: u32, end_stream: u32| {
            hostcall(&mut c, HostFunction::GrpcSend, |c, mem| {
                let message = read(c, mem, msg_ptr, msg_len)?;
                Ok(c.data_mut().grpc_send(token, message, end_stream != 0)?)
            })
        },
    )?;
    linker.func_wrap("env", "proxy_grpc_cancel", |mut c: HostCaller<'_>, token: u32| {
        hostcall(&mut c, HostFunction::GrpcCancel, |c, _| {
            Ok(c.data_mut().end_grpc(token, false))
        })
    })?;
    linker.func_wrap("env", "proxy_grpc_close", |mut c: HostCaller<'_>, token: u32| {
        hostcall(&mut c, HostFunction::GrpcClose, |c, _| {
            Ok(c.data_mut().end_grpc(token, true))
        })
    })?;
    Ok(())
}

// ---- Shared data and queues -----------------------------------------------------------------

fn shared_data_and_queues(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: HostCaller<'_>, key_ptr: u32, key_len: u32, ret_ptr: u32, ret_len: u32, ret_cas: u32| {
            hostcall(&mut c, HostFunction::GetSharedData, |c, mem| {
                let key = read(c, mem, key_ptr, key_len)?;
                let state = c.data();
                let found = state.shared.lock().get_data(&state.vm_id, &key);
                let Some((value, cas)) = found else {
                    return Ok(Status::NotFound);
                };
                mem.check_writable(&mut *c, ret_cas, 4)?;
                mem.return_bytes(&mut *c, &value, ret_ptr, ret_len)?;
                mem.write_u32(c, ret_cas, cas)?;
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: HostCaller<'_>, key_ptr: u32, key_len: u32, val_ptr: u32, val_len: u32, cas: u32| {
            hostcall(&mut c, HostFunction::SetSharedData, |c, mem| {
                let key = read(c, mem, key_ptr, key_len)?;
                let value = read(c, mem, val_ptr, val_len)?;
                Ok(c.data_mut().set_shared_data(key, value, cas)?)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: HostCaller<'_>, name_ptr: u32, name_len: u32, ret_id: u32| {
            hostcall(&mut c, HostFunction::RegisterSharedQueue, |c, mem| {
                let name = read_str(c, mem, name_ptr, name_len)?;
                mem.check_writable(&mut *c, ret_id, 4)?;
                let id = c.data_mut().register_queue(&name)?;
                mem.write_u32(c, ret_id, id)?;
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: HostCaller<'_>, vm_ptr: u32, vm_len: u32, name_ptr: u32, name_len: u32, ret_id: u32| {
            hostcall(&mut c, HostFunction::ResolveSharedQueue, |c, mem| {
                let vm_id = read_str(c, mem, vm_ptr, vm_len)?;
                let name = read_str(c, mem, name_ptr, name_len)?;
                let id = c.data().shared.lock().resolve_queue(&vm_id, &name);
                match id {
                    Some(id) => {
                        mem.write_u32(c, ret_id, id)?;
                        Ok(Status::Ok)
                    }
                    None => Ok(Status::NotFound),
                }
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: HostCaller<'_>, id: u32, val_ptr: u32, val_len: u32| {
            hostcall(&mut c, HostFunction::EnqueueSharedQueue, |c, mem| {
                let value = read(c, mem, val_ptr, val_len)?;
                Ok(c.data_mut().enqueue(id, value)?)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: HostCaller<'_>, id: u32, ret_ptr: u32, ret_len: u32| {
            hostcall(&mut c, HostFunction::DequeueSharedQueue, |c, mem| {
                mem.check_writable(&mut *c, ret_ptr, 4)?;
                mem.check_writable(&mut *c, ret_len, 4)?;
                let item = c.data().shared.lock().dequeue(id);
                match item {
                    Ok(value) => {
                        mem.return_bytes(c, &value, ret_ptr, ret_len)?;
                        Ok(Status::Ok)
                    }
                    Err(status) => Ok(status),
                }
            })
        },
    )?;
    Ok(())
}

// ---- Metrics --------------------------------------------------------------------------------

fn metrics(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: HostCaller<'_>, kind: u32, name_ptr: u32, name_len: u32, ret_id: u32| {
            hostcall(&mut c, HostFunction::DefineMetric, |c, mem| {
                let kind = MetricType::from_raw(kind).ok_or(Status::BadArgument)?;
                let name = read_str(c, mem, name_ptr, name_len)?;
                mem.check_writable(&mut *c, ret_id, 4)?;
                let id = c.data_mut().define_metric(kind, &name)?;
                mem.write_u32(c, ret_id, id)?;
                Ok(Status::Ok)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut c: HostCaller<'_>, id: u32, delta: i64| {
            hostcall(&mut c, HostFunction::IncrementMetric, |c, _| {
                let decrease = c.data().profile.counters_may_decrease();
                metric_call(c, MetricOp::Increment, id, |m| m.increment_metric(id, delta, decrease))
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut c: HostCaller<'_>, id: u32, value: u64| {
            hostcall(&mut c, HostFunction::RecordMetric, |c, _| {
                metric_call(c, MetricOp::Record, id, |m| m.record_metric(id, value))
            })
        },
    )?;
    linker.func_wrap("env", "proxy_get_metric", |mut c: HostCaller<'_>, id: u32, ret: u32| {
        hostcall(&mut c, HostFunction::GetMetric, |c, mem| {
            match metric_call(c, MetricOp::Get, id, |m| m.get_metric(id))? {
                Ok(v) => {
                    mem.write_u64(c, ret, v)?;
                    Ok(Status::Ok)
                }
                Err(status) => Ok(status),
            }
        })
    })?;
    Ok(())
}

/// A metric call on the VMs' shared metrics, after the trap the profile's host ends it in, if
/// any ([`crate::profile::HostBehaviour::metric_trap`]).
fn metric_call<T>(
    c: &HostCaller<'_>,
    op: MetricOp,
    id: u32,
    call: impl FnOnce(&mut SharedInner) -> T,
) -> Result<T, Fault> {
    let mut shared = c.data().shared.lock();
    if let Some(trap) = c.data().profile.metric_trap(op, id, shared.metric_kind(id)) {
        return Err(Fault::Trap(format_err!("{trap}")));
    }
    Ok(call(&mut shared))
}

// ---- Properties and foreign functions -------------------------------------------------------

fn properties_and_ffi(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: HostCaller<'_>, path_ptr: u32, path_len: u32, ret_ptr: u32, ret_len: u32| {
            hostcall(&mut c, HostFunction::GetProperty, |c, mem| {
                let path = read(c, mem, path_ptr, path_len)?;
                match crate::properties::lookup(c.data(), &path) {
                    Some(value) => {
                        mem.return_bytes(c, &value, ret_ptr, ret_len)?;
                        Ok(Status::Ok)
                    }
                    None => Ok(Status::NotFound),
                }
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: HostCaller<'_>, path_ptr: u32, path_len: u32, val_ptr: u32, val_len: u32| {
            hostcall(&mut c, HostFunction::SetProperty, |c, mem| {
                let path = read(c, mem, path_ptr, path_len)?;
                let value = read(c, mem, val_ptr, val_len)?;
                Ok(c.data_mut().set_property(path, value)?)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: HostCaller<'_>,
         name_ptr: u32,
         name_len: u32,
         args_ptr: u32,
         args_len: u32,
         ret_ptr: u32,
         ret_len: u32| {
            hostcall(&mut c, HostFunction::CallForeignFunction, |c, mem| {
                let name = read_str(c, mem, name_ptr, name_len)?;
                let args = read(c, mem, args_ptr, args_len)?;
                let Some(function) = c.data().foreign.get(&name).cloned() else {
                    return Ok(Status::NotFound);
                };
                match function(&args) {
                    Ok(result) => {
                        mem.return_bytes(c, &result, ret_ptr, ret_len)?;
                        Ok(Status::Ok)
                    }
                    Err(status) => Ok(status),
                }
            })
        },
    )?;
    Ok(())
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
