//! Raw proxy-wasm ABI v0.2.1 imports, declared here rather than taken from the SDK.
//!
//! The SDK 0.2.5 wrappers `panic!("unexpected status")` on most non-OK statuses and have no
//! wrapper at all for `proxy_get_buffer_status` and `proxy_get_header_map_size`, so the probe
//! calls the host directly wherever it needs to observe the exact status (or pass pointers a
//! well-behaved guest never would). Every parameter is a plain integer, as it is on the wire;
//! the SDK declares some of the same imports with enums and `bool`, which lower to the same wasm
//! types, hence the `clashing_extern_declarations` allowance.

#![allow(clashing_extern_declarations)]

use std::ptr::null_mut;

#[link(wasm_import_module = "env")]
extern "C" {
    pub fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    pub fn proxy_get_log_level(return_level: *mut u32) -> u32;
    pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    pub fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    pub fn proxy_get_buffer_status(buffer_type: u32, return_size: *mut usize, return_flags: *mut u32) -> u32;
    pub fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
    pub fn proxy_get_header_map_size(map_type: u32, return_size: *mut usize) -> u32;
    pub fn proxy_get_header_map_pairs(map_type: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    pub fn proxy_set_header_map_pairs(map_type: u32, data: *const u8, size: usize) -> u32;
    pub fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    pub fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    pub fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    pub fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    pub fn proxy_continue_stream(stream_type: u32) -> u32;
    pub fn proxy_close_stream(stream_type: u32) -> u32;
    pub fn proxy_get_status(return_code: *mut u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    #[allow(clippy::too_many_arguments)]
    pub fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    pub fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout: u32,
        return_token: *mut u32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    pub fn proxy_grpc_call(
        upstream_data: *const u8,
        upstream_size: usize,
        service_data: *const u8,
        service_size: usize,
        method_data: *const u8,
        method_size: usize,
        metadata_data: *const u8,
        metadata_size: usize,
        message_data: *const u8,
        message_size: usize,
        timeout: u32,
        return_token: *mut u32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    pub fn proxy_grpc_stream(
        upstream_data: *const u8,
        upstream_size: usize,
        service_data: *const u8,
        service_size: usize,
        method_data: *const u8,
        method_size: usize,
        metadata_data: *const u8,
        metadata_size: usize,
        return_token: *mut u32,
    ) -> u32;
    pub fn proxy_grpc_send(token: u32, message_data: *const u8, message_size: usize, end_stream: u32) -> u32;
    pub fn proxy_grpc_cancel(token: u32) -> u32;
    pub fn proxy_grpc_close(token: u32) -> u32;
    pub fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    pub fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    pub fn proxy_register_shared_queue(name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    pub fn proxy_resolve_shared_queue(
        vm_id_data: *const u8,
        vm_id_size: usize,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    pub fn proxy_enqueue_shared_queue(queue_id: u32, value_data: *const u8, value_size: usize) -> u32;
    pub fn proxy_dequeue_shared_queue(queue_id: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    pub fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    pub fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    pub fn proxy_increment_metric(metric_id: u32, delta: i64) -> u32;
    pub fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
    pub fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    pub fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
    pub fn proxy_call_foreign_function(
        name_data: *const u8,
        name_size: usize,
        args_data: *const u8,
        args_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    pub fn proxy_done() -> u32;
    pub fn proxy_set_effective_context(context_id: u32) -> u32;
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    /// WASI `random_get(buf, len) -> errno`.
    pub fn random_get(buf: *mut u8, len: usize) -> u32;
    /// WASI `clock_time_get(id, precision, *time) -> errno`.
    pub fn clock_time_get(clock_id: u32, precision: u64, time: *mut u64) -> u32;
}

/// `proxy_buffer_type_t` values used by the probe.
pub mod buffer {
    pub const HTTP_REQUEST_BODY: u32 = 0;
    pub const HTTP_RESPONSE_BODY: u32 = 1;
    pub const HTTP_CALL_RESPONSE_BODY: u32 = 4;
    pub const VM_CONFIGURATION: u32 = 6;
    pub const PLUGIN_CONFIGURATION: u32 = 7;
}

/// `proxy_map_type_t` values used by the probe.
pub mod map {
    pub const HTTP_REQUEST_HEADERS: u32 = 0;
    pub const HTTP_REQUEST_TRAILERS: u32 = 1;
    pub const HTTP_RESPONSE_HEADERS: u32 = 2;
    pub const HTTP_RESPONSE_TRAILERS: u32 = 3;
}

/// A status and the bytes the host returned (owned: the host allocated them in our memory
/// through `proxy_on_memory_allocate`, exactly as the SDK takes them).
pub struct Returned {
    pub status: u32,
    pub bytes: Option<Vec<u8>>,
}

/// Takes ownership of a host-returned buffer.
///
/// # Safety
/// `data`/`size` must have been written by the host as a return value of a successful call.
unsafe fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    (!data.is_null()).then(|| Vec::from_raw_parts(data, size, size))
}

/// Calls a host function that returns a buffer through `(return_data, return_size)`.
pub fn returning(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Returned {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let status = call(&mut data, &mut size);
    let bytes = if status == 0 { unsafe { take(data, size) } } else { None };
    Returned { status, bytes }
}

/// `proxy_get_buffer_bytes`.
pub fn get_buffer(buffer_type: u32, start: usize, max: usize) -> Returned {
    returning(|d, s| unsafe { proxy_get_buffer_bytes(buffer_type, start, max, d, s) })
}

/// `proxy_get_buffer_status`: `(status, size, flags)`.
pub fn buffer_status(buffer_type: u32) -> (u32, usize, u32) {
    let mut size = usize::MAX;
    let mut flags = u32::MAX;
    let status = unsafe { proxy_get_buffer_status(buffer_type, &mut size, &mut flags) };
    (status, size, flags)
}

/// `proxy_get_header_map_size`: `(status, serialized size)`.
pub fn header_map_size(map_type: u32) -> (u32, usize) {
    let mut size = usize::MAX;
    let status = unsafe { proxy_get_header_map_size(map_type, &mut size) };
    (status, size)
}

/// `proxy_get_header_map_pairs` (serialized bytes).
pub fn header_map_pairs(map_type: u32) -> Returned {
    returning(|d, s| unsafe { proxy_get_header_map_pairs(map_type, d, s) })
}

/// `proxy_get_header_map_value`.
pub fn header_value(map_type: u32, key: &str) -> Returned {
    returning(|d, s| unsafe { proxy_get_header_map_value(map_type, key.as_ptr(), key.len(), d, s) })
}

/// `proxy_get_property` with a path of segments.
pub fn get_property(path: &[&str]) -> Returned {
    let serialized = path.join("\0");
    returning(|d, s| unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), d, s) })
}

/// `proxy_set_property`.
pub fn set_property(path: &[&str], value: &[u8]) -> u32 {
    let serialized = path.join("\0");
    unsafe { proxy_set_property(serialized.as_ptr(), serialized.len(), value.as_ptr(), value.len()) }
}

/// `proxy_get_status`: `(status, code, message)`.
pub fn get_status() -> (u32, u32, Option<Vec<u8>>) {
    let mut code = u32::MAX;
    let r = returning(|d, s| unsafe { proxy_get_status(&mut code, d, s) });
    (r.status, code, r.bytes)
}

/// `proxy_call_foreign_function`.
pub fn call_foreign(name: &str, args: &[u8]) -> Returned {
    returning(|d, s| unsafe { proxy_call_foreign_function(name.as_ptr(), name.len(), args.as_ptr(), args.len(), d, s) })
}

/// `proxy_resolve_shared_queue`: `(status, id)`.
pub fn resolve_queue(vm_id: &str, name: &str) -> (u32, u32) {
    let mut id = 0;
    let status = unsafe { proxy_resolve_shared_queue(vm_id.as_ptr(), vm_id.len(), name.as_ptr(), name.len(), &mut id) };
    (status, id)
}

/// `proxy_dequeue_shared_queue`.
pub fn dequeue(queue_id: u32) -> Returned {
    returning(|d, s| unsafe { proxy_dequeue_shared_queue(queue_id, d, s) })
}

/// `proxy_get_shared_data`: `(status, value, cas)`.
pub fn get_shared(key: &str) -> (u32, Option<Vec<u8>>, u32) {
    let mut cas = 0;
    let r = returning(|d, s| unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), d, s, &mut cas) });
    (r.status, r.bytes, cas)
}

/// `proxy_set_shared_data`.
pub fn set_shared(key: &str, value: &[u8], cas: u32) -> u32 {
    unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) }
}

/// `proxy_define_metric`: `(status, id)`.
pub fn define_metric(metric_type: u32, name: &str) -> (u32, u32) {
    let mut id = 0;
    let status = unsafe { proxy_define_metric(metric_type, name.as_ptr(), name.len(), &mut id) };
    (status, id)
}

/// `proxy_get_metric`: `(status, value)`.
pub fn get_metric(id: u32) -> (u32, u64) {
    let mut value = 0;
    let status = unsafe { proxy_get_metric(id, &mut value) };
    (status, value)
}

/// `proxy_http_call` with pre-serialized maps: `(status, token)`.
pub fn http_call(upstream: &str, headers: &[u8], body: &[u8], trailers: &[u8], timeout_ms: u32) -> (u32, u32) {
    let mut token = 0;
    let status = unsafe {
        proxy_http_call(
            upstream.as_ptr(),
            upstream.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    };
    (status, token)
}

/// `proxy_send_local_response` with pre-serialized headers.
pub fn send_local_response(status_code: u32, details: &str, body: &[u8], headers: &[u8], grpc_status: i32) -> u32 {
    unsafe {
        proxy_send_local_response(
            status_code,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            grpc_status,
        )
    }
}
