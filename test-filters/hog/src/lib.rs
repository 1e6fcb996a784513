//! hog: a filter that makes the host hold memory for it, to test host-sim's host-memory budget
//! (`Limits::max_host_bytes`). Its plugin configuration names one vector; from one callback it
//! calls that host function again and again, each call asking the host to keep another
//! [`CHUNK`] bytes, until the host refuses (a non-OK status, or a trap that ends the callback)
//! or [`MAX_CALLS`] calls have been made (1 GiB in all: a host without a budget grows by that
//! much, and the test fails rather than hangs). Its own linear memory stays small: the same
//! chunk is sent every time.
//!
//! Vectors: `log` (`proxy_log`), `header` (`proxy_add_header_map_value` on the request headers),
//! `http_call` (`proxy_http_call` to `127.0.0.1:8082`, never answered), `property`
//! (`proxy_set_property`, a new path each time), `shared_data` (`proxy_set_shared_data`, a new key
//! each time), `queue` (`proxy_enqueue_shared_queue` on the queue `hog`) — all from
//! `on_http_request_headers` — and `body` (`proxy_set_buffer_bytes` appending to the request body,
//! from `on_http_request_body`).
//!
//! It ends with one info line: `hog <vector>: status <n> after <calls> calls`, or `hog <vector>:
//! never refused after <calls> calls`. The raw imports are used because the SDK wrappers panic on
//! the statuses the test needs to see.

#![allow(clashing_extern_declarations)]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::rc::Rc;

/// Bytes the host is asked to keep per call.
pub const CHUNK: usize = 64 * 1024;
/// Calls before giving up: `MAX_CALLS * CHUNK` is 1 GiB.
pub const MAX_CALLS: usize = 16 * 1024;

const OK: u32 = 0;
const INFO: u32 = 2;
const HTTP_REQUEST_HEADERS: u32 = 0;
const HTTP_REQUEST_BODY: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_set_buffer_bytes(buffer_type: u32, start: usize, size: usize, data: *const u8, data_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
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
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_register_shared_queue(name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_enqueue_shared_queue(queue_id: u32, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(HogRoot { vector: Rc::from("") }));
}}

/// The plugin context: remembers the vector its configuration names.
struct HogRoot {
    vector: Rc<str>,
}

impl Context for HogRoot {}

impl RootContext for HogRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let vector = String::from_utf8_lossy(&config).trim().to_string();
        let known = ["log", "header", "http_call", "property", "shared_data", "queue", "body"];
        self.vector = Rc::from(vector.as_str());
        known.contains(&vector.as_str())
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Hog {
            vector: self.vector.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The HTTP context that runs the vector.
struct Hog {
    vector: Rc<str>,
}

impl Context for Hog {}

impl HttpContext for Hog {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if &*self.vector != "body" {
            run(&self.vector);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        if &*self.vector == "body" {
            run(&self.vector);
        }
        Action::Continue
    }
}

fn log(message: &str) {
    // SAFETY: the pointer and length describe `message`, alive for the call.
    unsafe { proxy_log(INFO, message.as_ptr(), message.len()) };
}

/// Serializes a header map the way the ABI expects it.
fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        for part in [k, v] {
            out.extend_from_slice(part.as_bytes());
            out.push(0);
        }
    }
    out
}

/// Calls the vector's host function until the host refuses or `MAX_CALLS` is reached.
fn run(vector: &str) {
    let chunk = vec![b'h'; CHUNK];
    let headers = serialize(&[(":method", "POST"), (":path", "/hog"), (":authority", "hog")]);
    let upstream = "127.0.0.1:8082";
    let mut queue = 0u32;
    if vector == "queue" {
        let name = "hog";
        // SAFETY: pointers to live locals.
        let status = unsafe { proxy_register_shared_queue(name.as_ptr(), name.len(), &mut queue) };
        if status != OK {
            log(&format!("hog queue: register status {status}"));
            return;
        }
    }
    for call in 0..MAX_CALLS {
        let name = format!("hog-{call}");
        // SAFETY (every call below): each pointer/length pair describes a live local buffer,
        // and return slots point at live locals.
        let status = unsafe {
            match vector {
                "log" => proxy_log(INFO, chunk.as_ptr(), chunk.len()),
                "header" => {
                    let key = "x-hog";
                    proxy_add_header_map_value(HTTP_REQUEST_HEADERS, key.as_ptr(), key.len(), chunk.as_ptr(), CHUNK)
                }
                "http_call" => {
                    let mut token = 0u32;
                    proxy_http_call(
                        upstream.as_ptr(),
                        upstream.len(),
                        headers.as_ptr(),
                        headers.len(),
                        chunk.as_ptr(),
                        CHUNK,
                        std::ptr::null(),
                        0,
                        60_000,
                        &mut token,
                    )
                }
                "property" => proxy_set_property(name.as_ptr(), name.len(), chunk.as_ptr(), CHUNK),
                "shared_data" => proxy_set_shared_data(name.as_ptr(), name.len(), chunk.as_ptr(), CHUNK, 0),
                "queue" => proxy_enqueue_shared_queue(queue, chunk.as_ptr(), CHUNK),
                // Append: a start at or past the end of the body.
                _ => proxy_set_buffer_bytes(HTTP_REQUEST_BODY, usize::MAX, 0, chunk.as_ptr(), CHUNK),
            }
        };
        if status != OK {
            log(&format!("hog {vector}: status {status} after {call} calls"));
            return;
        }
    }
    log(&format!("hog {vector}: never refused after {MAX_CALLS} calls"));
}
