//! The proxy-wasm 0.2.5 glue (wasm32 only): a root context that parses the configuration and one
//! HTTP context per request that forwards every callback to [`Exchange`] and performs the host
//! operations it asks for. No policy lives here.
//!
//! Host errors never panic here: every `Result` is handled. Two reads go through raw imports
//! because the SDK would panic on a status the hosts legitimately return:
//! - a call-response header when the call got no reply: Envoy answers `BAD_ARGUMENT` (there is no
//!   response map), Kong answers with its `:dispatch_status` pseudo-header;
//! - the panic hook's log line (a failing log call must not panic inside the hook).

use std::ptr::null_mut;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action as PwAction, BufferType, ContextType, LogLevel, MapType};

use crate::config::{self, Config};
use crate::exchange::{Action, Exchange, Host, Level};
use crate::rest::ReplyView;

/// Called from `_initialize`: log level, panic hook, root context factory.
pub(crate) fn start() {
    proxy_wasm::set_log_level(LogLevel::Info);
    // Replaces the SDK's hook, which unwraps the log call's result.
    std::panic::set_hook(Box::new(|info| {
        raw::log(
            LogLevel::Critical,
            &format!("kafka-upstream: panic: {info}"),
        );
    }));
    proxy_wasm::set_root_context(|_| Box::new(Root { config: None }));
}

/// The plugin-wide context: owns the parsed configuration.
struct Root {
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("kafka-upstream: cannot read the configuration: {status:?}"),
                );
                self.config = None;
                return false;
            }
        };
        match config::parse(&bytes) {
            Ok(cfg) => {
                self.config = Some(Rc::new(cfg));
                true
            }
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("kafka-upstream: invalid configuration: {e}"),
                );
                self.config = None;
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            exchange: Exchange::new(self.config.clone()),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request.
struct Request {
    exchange: Exchange,
}

impl Context for Request {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        // A call without a reply has no header map in Envoy (reading it is BAD_ARGUMENT); Kong
        // still exposes :dispatch_status. Both report num_headers == 0.
        let (status, dispatch_status) = if num_headers > 0 {
            (
                raw::header_value(MapType::HttpCallResponseHeaders, ":status"),
                None,
            )
        } else {
            (
                None,
                raw::header_value(MapType::HttpCallResponseHeaders, ":dispatch_status"),
            )
        };
        let body = if body_size > 0 {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let reply = ReplyView {
            status: status.as_deref(),
            dispatch_status: dispatch_status.as_deref(),
            body: &body,
        };
        self.exchange.on_call_response(&mut Glue, token_id, &reply);
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> PwAction {
        let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
        to_pw(
            self.exchange
                .on_request_headers(&mut Glue, headers, end_of_stream),
        )
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> PwAction {
        to_pw(
            self.exchange
                .on_request_body(&mut Glue, body_size, end_of_stream),
        )
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> PwAction {
        to_pw(self.exchange.on_request_trailers(&mut Glue))
    }
}

fn to_pw(action: Action) -> PwAction {
    match action {
        Action::Continue => PwAction::Continue,
        Action::Pause => PwAction::Pause,
    }
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// [`Host`] over the proxy-wasm host calls of the current context.
struct Glue;

impl Host for Glue {
    fn dispatch(
        &mut self,
        upstream: &str,
        headers: Vec<(&str, &str)>,
        body: &[u8],
        timeout_ms: u32,
    ) -> Result<u32, String> {
        hostcalls::dispatch_http_call(
            upstream,
            headers,
            Some(body),
            Vec::new(),
            Duration::from_millis(u64::from(timeout_ms)),
        )
        .map_err(|status| format!("{status:?}"))
    }

    fn request_body(&mut self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
            .ok()
            .flatten()
    }

    fn respond(&mut self, status: u32, headers: Vec<(&str, &str)>, body: &[u8]) {
        if let Err(e) = hostcalls::send_http_response(status, headers, Some(body)) {
            log(
                LogLevel::Error,
                &format!("kafka-upstream: cannot send the {status} answer: {e:?}"),
            );
        }
    }

    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        log(level, message);
    }
}

/// Host calls whose every status is handled here rather than by the SDK.
mod raw {
    use super::*;

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    }

    /// The value of header `key` in `map`, or `None` for any non-OK status (not found, or no such
    /// map right now).
    pub(super) fn header_value(map: MapType, key: &str) -> Option<Vec<u8>> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: key pointer/length describe a live &str; the out-pointers are valid locals.
        let status = unsafe {
            proxy_get_header_map_value(map as u32, key.as_ptr(), key.len(), &mut data, &mut size)
        };
        if status != 0 {
            return None;
        }
        if data.is_null() {
            return Some(Vec::new());
        }
        // SAFETY: on OK the host wrote `size` bytes into memory it obtained from this module's
        // `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes); ownership passes to
        // the caller, exactly as in the SDK's `get_map_value_bytes`.
        Some(unsafe { Vec::from_raw_parts(data, size, size) })
    }

    /// Logs without ever panicking.
    pub(super) fn log(level: LogLevel, message: &str) {
        // SAFETY: pointer/length describe a live &str.
        unsafe {
            proxy_log(level as u32, message.as_ptr(), message.len());
        }
    }
}
