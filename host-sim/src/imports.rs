//! The ABI glue: every `env.proxy_*` host function of proxy-wasm ABI v0.2.1, registered in the
//! spec's order from the [`HostFunction`] table (each import name is written once, in
//! `hostfn.rs`). Each function is decode → state method → encode: it reads its arguments from
//! guest memory (bounded; a bad pointer is `INVALID_MEMORY_ACCESS`), calls one method of
//! [`HostState`] (`state/host_functions.rs` and `state.rs` hold the rules, the profile the host
//! differences), and writes the result back. [`hostcall`] is the one place a [`Fault`] becomes
//! what the guest sees: a status, a trap, or what the profile's host does when the host-memory
//! budget is exhausted.
//!
//! A host function the profile's host does not implement still links (so the module
//! instantiates, as it does in Kong) but traps when called, as Kong's ngx_wasm_module does.

use crate::abi::{decode_pairs_with, BufferType, LogLevel, MapType, MetricType, Pairs, Status, StreamType};
use crate::hostfn::HostFunction;
use crate::memory::{GuestMemory, MemoryError};
use crate::profile::BudgetRefusal;
use crate::state::{Fault, GrpcKind, HostState};
use wasmtime::format_err;
use wasmtime::{Caller, Linker};

type HostCaller<'a> = Caller<'a, HostState>;

/// The one wrapper every host function runs in: refuse what may not run now, then turn the
/// body's fault, if any, into a status or a trap.
fn hostcall(
    caller: &mut HostCaller<'_>,
    function: HostFunction,
    body: impl FnOnce(&mut HostCaller<'_>, &GuestMemory) -> Result<(), Fault>,
) -> wasmtime::Result<u32> {
    let outcome = caller.data().admit_host_function(function).and_then(|()| {
        let memory = caller.data().memory().clone();
        body(caller, &memory)
    });
    match outcome {
        Ok(()) => Ok(Status::Ok as u32),
        Err(Fault::Status(status)) => Ok(status as u32),
        Err(Fault::Trap(message)) => Err(format_err!("{message}")),
        Err(Fault::OverBudget(refusal)) => match caller.data().profile().over_budget(function, &refusal) {
            BudgetRefusal::Status(status) => Ok(status as u32),
            BudgetRefusal::Trap(message) => Err(format_err!("{message}")),
        },
    }
}

/// Registers host functions from the [`HostFunction`] table: `Variant(args) => |caller, memory|
/// body` links `HostFunction::Variant.name()` in module `env` to `body` run in [`hostcall`].
macro_rules! link {
    ($linker:ident; $($function:ident($($arg:ident: $ty:ty),*) => |$c:ident, $mem:pat_param| $body:block)+) => {
        $(
            $linker.func_wrap(
                "env",
                HostFunction::$function.name(),
                |mut caller: HostCaller<'_>, $($arg: $ty),*| {
                    hostcall(&mut caller, HostFunction::$function, |$c, $mem| $body)
                },
            )?;
        )+
    };
}

fn max_buf(caller: &HostCaller<'_>) -> usize {
    caller.data().limits().max_guest_buffer_bytes
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
    let max_pairs = caller.data().limits().max_pairs;
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

/// An ABI enum argument; an unknown value is BAD_ARGUMENT.
fn decode<T>(value: Option<T>) -> Result<T, Fault> {
    value.ok_or(Fault::Status(Status::BadArgument))
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

fn context_lifecycle(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link! { linker;
        Done() => |c, _| { c.data_mut().done() }
        SetEffectiveContext(id: u32) => |c, _| { c.data_mut().set_effective_context(id) }
    }
    Ok(())
}

fn logging_and_clocks(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link! { linker;
        Log(level: u32, ptr: u32, len: u32) => |c, mem| {
            let message = read_str(c, mem, ptr, len)?;
            let level = decode(LogLevel::from_raw(level))?;
            c.data_mut().guest_log(level, message);
            Ok(())
        }
        GetLogLevel(ret: u32) => |c, mem| {
            let level = c.data().log_level() as u32;
            Ok(mem.write_u32(c, ret, level)?)
        }
        GetCurrentTimeNanoseconds(ret: u32) => |c, mem| {
            let now = c.data().now_ns();
            Ok(mem.write_u64(c, ret, now)?)
        }
        SetTickPeriodMilliseconds(period: u32) => |c, _| { c.data_mut().set_tick_period(period) }
    }
    Ok(())
}

fn buffers(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link! { linker;
        SetBufferBytes(buffer: u32, start: u32, size: u32, ptr: u32, len: u32) => |c, mem| {
            let buffer = decode(BufferType::from_raw(buffer))?;
            let value = read(c, mem, ptr, len)?;
            c.data_mut().set_body_bytes(buffer, start, size, value)
        }
        GetBufferBytes(buffer: u32, start: u32, max: u32, ret_ptr: u32, ret_len: u32) => |c, mem| {
            let buffer = decode(BufferType::from_raw(buffer))?;
            // Copied out before allocating: the allocator runs guest code.
            let bytes = c.data_mut().get_buffer(buffer, start, max)?;
            Ok(mem.return_bytes(c, &bytes, ret_ptr, ret_len)?)
        }
        GetBufferStatus(buffer: u32, ret_len: u32, ret_flags: u32) => |c, mem| {
            let buffer = decode(BufferType::from_raw(buffer))?;
            let len = c.data().buffer_len(buffer)? as u32;
            mem.check_writable(&mut *c, ret_flags, 4)?;
            mem.write_u32(&mut *c, ret_len, len)?;
            Ok(mem.write_u32(c, ret_flags, 0)?)
        }
    }
    Ok(())
}

fn header_maps(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link! { linker;
        GetHeaderMapSize(map: u32, ret: u32) => |c, mem| {
            let map = decode(MapType::from_raw(map))?;
            let size = c.data_mut().header_map_size(map)?;
            Ok(mem.write_u32(c, ret, size as u32)?)
        }
        GetHeaderMapPairs(map: u32, ret_ptr: u32, ret_len: u32) => |c, mem| {
            let map = decode(MapType::from_raw(map))?;
            let encoded = c.data_mut().header_map_pairs(map)?;
            Ok(mem.return_bytes(c, &encoded, ret_ptr, ret_len)?)
        }
        SetHeaderMapPairs(map: u32, ptr: u32, len: u32) => |c, mem| {
            let map = decode(MapType::from_raw(map))?;
            let pairs = read_pairs(c, mem, ptr, len)?;
            c.data_mut().set_header_map_pairs(map, pairs)
        }
        GetHeaderMapValue(map: u32, key_ptr: u32, key_len: u32, ret_ptr: u32, ret_len: u32) => |c, mem| {
            let map = decode(MapType::from_raw(map))?;
            let key = read(c, mem, key_ptr, key_len)?;
            let value = c.data_mut().header_map_value(map, &key)?;
            Ok(mem.return_bytes(c, &value, ret_ptr, ret_len)?)
        }
        AddHeaderMapValue(map: u32, key_ptr: u32, key_len: u32, val_ptr: u32, val_len: u32) => |c, mem| {
            let map = decode(MapType::from_raw(map))?;
            let key = read(c, mem, key_ptr, key_len)?;
            let value = read(c, mem, val_ptr, val_len)?;
            c.data_mut().add_header_map_value(map, key, value)
        }
        ReplaceHeaderMapValue(map: u32, key_ptr: u32, key_len: u32, val_ptr: u32, val_len: u32) => |c, mem| {
            let map = decode(MapType::from_raw(map))?;
            let key = read(c, mem, key_ptr, key_len)?;
            let value = read(c, mem, val_ptr, val_len)?;
            c.data_mut().replace_header_map_value(map, key, value)
        }
        RemoveHeaderMapValue(map: u32, key_ptr: u32, key_len: u32) => |c, mem| {
            let map = decode(MapType::from_raw(map))?;
            let key = read(c, mem, key_ptr, key_len)?;
            c.data_mut().remove_header_map_value(map, &key)
        }
    }
    Ok(())
}

fn streams(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link! { linker;
        ContinueStream(stream_type: u32) => |c, _| {
            let stream_type = decode(StreamType::from_raw(stream_type))?;
            c.data_mut().continue_or_close_stream(stream_type, false)
        }
        CloseStream(stream_type: u32) => |c, _| {
            let stream_type = decode(StreamType::from_raw(stream_type))?;
            c.data_mut().continue_or_close_stream(stream_type, true)
        }
        GetStatus(ret_code: u32, ret_ptr: u32, ret_len: u32) => |c, mem| {
            let (code, message) = c.data().call_status();
            mem.check_writable(&mut *c, ret_code, 4)?;
            mem.return_bytes(&mut *c, &message, ret_ptr, ret_len)?;
            Ok(mem.write_u32(c, ret_code, code)?)
        }
        SendLocalResponse(
            status: u32,
            details_ptr: u32,
            details_len: u32,
            body_ptr: u32,
            body_len: u32,
            headers_ptr: u32,
            headers_len: u32,
            grpc_status: i32
        ) => |c, mem| {
            let details = read_str(c, mem, details_ptr, details_len)?;
            let body = read(c, mem, body_ptr, body_len)?;
            let headers = read_string_pairs(c, mem, headers_ptr, headers_len)?;
            c.data_mut().send_local_response(status, details, body, headers, grpc_status)
        }
    }
    Ok(())
}

fn http_calls(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link! { linker;
        HttpCall(
            up_ptr: u32,
            up_len: u32,
            headers_ptr: u32,
            headers_len: u32,
            body_ptr: u32,
            body_len: u32,
            trailers_ptr: u32,
            trailers_len: u32,
            timeout_ms: u32,
            ret_token: u32
        ) => |c, mem| {
            let upstream = read_str(c, mem, up_ptr, up_len)?;
            let headers = read_string_pairs(c, mem, headers_ptr, headers_len)?;
            let body = read(c, mem, body_ptr, body_len)?;
            let trailers = read_string_pairs(c, mem, trailers_ptr, trailers_len)?;
            // Checked before the call is kept: a token the guest cannot receive is no call.
            mem.check_writable(&mut *c, ret_token, 4)?;
            let token = c.data_mut().admit_http_call(upstream, headers, body, trailers, timeout_ms)?;
            Ok(mem.write_u32(c, ret_token, token)?)
        }
    }
    Ok(())
}

/// `proxy_grpc_call` and `proxy_grpc_stream`: decode the target, open it, return the token.
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
) -> Result<(), Fault> {
    let upstream = read_str(c, mem, up_ptr, up_len)?;
    let service = read_str(c, mem, svc_ptr, svc_len)?;
    let method = read_str(c, mem, method_ptr, method_len)?;
    let metadata = read_string_pairs(c, mem, md_ptr, md_len)?;
    mem.check_writable(&mut *c, ret_token, 4)?;
    let token = c
        .data_mut()
        .open_grpc(kind, upstream, service, method, metadata, message, timeout_ms)?;
    Ok(mem.write_u32(c, ret_token, token)?)
}

fn grpc(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link! { linker;
        GrpcCall(
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
            ret_token: u32
        ) => |c, mem| {
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
        }
        GrpcStream(
            up_ptr: u32,
            up_len: u32,
            svc_ptr: u32,
            svc_len: u32,
            method_ptr: u32,
            method_len: u32,
            md_ptr: u32,
            md_len: u32,
            ret_token: u32
        ) => |c, mem| {
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
        }
        GrpcSend(token: u32, msg_ptr: u32, msg_len: u32, end_stream: u32) => |c, mem| {
            let message = read(c, mem, msg_ptr, msg_len)?;
            c.data_mut().grpc_send(token, message, end_stream != 0)
        }
        GrpcCancel(token: u32) => |c, _| { c.data_mut().end_grpc(token, false) }
        GrpcClose(token: u32) => |c, _| { c.data_mut().end_grpc(token, true) }
    }
    Ok(())
}

fn shared_data_and_queues(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link! { linker;
        SetSharedData(key_ptr: u32, key_len: u32, val_ptr: u32, val_len: u32, cas: u32) => |c, mem| {
            let key = read(c, mem, key_ptr, key_len)?;
            let value = read(c, mem, val_ptr, val_len)?;
            c.data_mut().set_shared_data(key, value, cas)
        }
        GetSharedData(key_ptr: u32, key_len: u32, ret_ptr: u32, ret_len: u32, ret_cas: u32) => |c, mem| {
            let key = read(c, mem, key_ptr, key_len)?;
            let (value, cas) = c.data().get_shared_data(&key)?;
            mem.check_writable(&mut *c, ret_cas, 4)?;
            mem.return_bytes(&mut *c, &value, ret_ptr, ret_len)?;
            Ok(mem.write_u32(c, ret_cas, cas)?)
        }
        RegisterSharedQueue(name_ptr: u32, name_len: u32, ret_id: u32) => |c, mem| {
            let name = read_str(c, mem, name_ptr, name_len)?;
            mem.check_writable(&mut *c, ret_id, 4)?;
            let id = c.data_mut().register_queue(&name)?;
            Ok(mem.write_u32(c, ret_id, id)?)
        }
        ResolveSharedQueue(vm_ptr: u32, vm_len: u32, name_ptr: u32, name_len: u32, ret_id: u32) => |c, mem| {
            let vm_id = read_str(c, mem, vm_ptr, vm_len)?;
            let name = read_str(c, mem, name_ptr, name_len)?;
            let id = c.data().resolve_queue(&vm_id, &name)?;
            Ok(mem.write_u32(c, ret_id, id)?)
        }
        EnqueueSharedQueue(id: u32, val_ptr: u32, val_len: u32) => |c, mem| {
            let value = read(c, mem, val_ptr, val_len)?;
            c.data_mut().enqueue(id, value)
        }
        DequeueSharedQueue(id: u32, ret_ptr: u32, ret_len: u32) => |c, mem| {
            // Checked before the item leaves the queue: an item the guest cannot receive stays.
            mem.check_writable(&mut *c, ret_ptr, 4)?;
            mem.check_writable(&mut *c, ret_len, 4)?;
            let value = c.data().dequeue(id)?;
            Ok(mem.return_bytes(c, &value, ret_ptr, ret_len)?)
        }
    }
    Ok(())
}

fn metrics(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link! { linker;
        DefineMetric(kind: u32, name_ptr: u32, name_len: u32, ret_id: u32) => |c, mem| {
            let kind = decode(MetricType::from_raw(kind))?;
            let name = read_str(c, mem, name_ptr, name_len)?;
            mem.check_writable(&mut *c, ret_id, 4)?;
            let id = c.data_mut().define_metric(kind, &name)?;
            Ok(mem.write_u32(c, ret_id, id)?)
        }
        RecordMetric(id: u32, value: u64) => |c, _| { c.data().record_metric(id, value) }
        IncrementMetric(id: u32, delta: i64) => |c, _| { c.data().increment_metric(id, delta) }
        GetMetric(id: u32, ret: u32) => |c, mem| {
            let value = c.data().get_metric(id)?;
            Ok(mem.write_u64(c, ret, value)?)
        }
    }
    Ok(())
}

fn properties_and_ffi(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link! { linker;
        GetProperty(path_ptr: u32, path_len: u32, ret_ptr: u32, ret_len: u32) => |c, mem| {
            let path = read(c, mem, path_ptr, path_len)?;
            let value = crate::properties::lookup(c.data_mut(), &path).ok_or(Status::NotFound)?;
            Ok(mem.return_bytes(c, &value, ret_ptr, ret_len)?)
        }
        SetProperty(path_ptr: u32, path_len: u32, val_ptr: u32, val_len: u32) => |c, mem| {
            let path = read(c, mem, path_ptr, path_len)?;
            let value = read(c, mem, val_ptr, val_len)?;
            c.data_mut().set_property(path, value)
        }
        CallForeignFunction(
            name_ptr: u32,
            name_len: u32,
            args_ptr: u32,
            args_len: u32,
            ret_ptr: u32,
            ret_len: u32
        ) => |c, mem| {
            let name = read_str(c, mem, name_ptr, name_len)?;
            let args = read(c, mem, args_ptr, args_len)?;
            let result = c.data().call_foreign_function(&name, &args)?;
            Ok(mem.return_bytes(c, &result, ret_ptr, ret_len)?)
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::add_to_linker;
    use crate::abi::LogLevel;
    use crate::hostfn::HostFunction;
    use crate::state::{HostState, Shared};
    use crate::wasi::WasiOptions;
    use crate::{Limits, Profile};
    use wasmtime::{Engine, Linker, Store};

    #[test]
    fn every_host_function_of_the_table_is_linked() {
        let engine = Engine::default();
        let mut linker = Linker::new(&engine);
        add_to_linker(&mut linker).unwrap();
        let state = HostState::new(
            Profile::Kong,
            LogLevel::Info,
            &Limits::default(),
            &WasiOptions::default(),
            Shared::new(),
        );
        let mut store = Store::new(&engine, state);
        assert!(linker.get(&mut store, "env", "not_a_host_function").is_err());
        for function in HostFunction::ALL {
            assert!(linker.get(&mut store, "env", function.name()).is_ok(), "{function:?}");
        }
    }
}
