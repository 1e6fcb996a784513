//! Everything the filter asks of its host, in one interface: [`Host`], with the words it speaks
//! ([`Action`], [`Level`], [`HostKind`], [`DispatchError`]). Plain Rust: the request flow
//! ([`crate::exchange`]) and the asynchronous producer ([`crate::producer`]) are written against
//! it, the proxy-wasm glue (`filter`, wasm32 only) implements it over the host calls, and native
//! tests implement it with fakes.
//!
//! Layers, one way: the configuration, message and REST layers below know nothing of a host;
//! this interface sits above them (its metric updates are [`crate::metrics`]'); the exchange and
//! the producer above it; the glue on top.

use std::fmt;

use crate::metrics::MetricUpdate;

/// What the filter returns to the host from a request callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the request go on (`Action::Continue`).
    Continue,
    /// Hold the request (`Action::Pause`).
    Pause,
}

/// Log levels the filter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Normal operation worth a line (the REST proxy is healthy again).
    Info,
    /// Noteworthy but expected (a refused request).
    Warn,
    /// A record was not sent, or the host misbehaved.
    Error,
}

/// Which proxy runs the filter, where their request phase differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// Envoy: the real `end_of_stream` on request headers (and `Transfer-Encoding` stripped
    /// from chunked requests before the filter chain, so the flag is the only sign of a chunked
    /// or HTTP/2 body without a length).
    Envoy,
    /// Kong's ngx_wasm_module: `end_of_stream = false` on every request's headers, even without
    /// a body, and then no `on_request_body` for a request without a body
    /// (ngx_http_proxy_wasm.c:38-41 passes eof 0); the body comes whole, once, with
    /// `end_of_stream = true` (ngx_http_proxy_wasm.c:68-72), unless nginx buffered it to a file.
    Kong,
}

/// Why the host refused to start an HTTP call: the status `proxy_http_call` returned
/// (`BAD_ARGUMENT` and `INTERNAL_FAILURE` are the ones the spec names for it; any other is kept
/// by its code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchError {
    /// `BAD_ARGUMENT`.
    BadArgument,
    /// `INTERNAL_FAILURE`.
    InternalFailure,
    /// Any other status, by its ABI code.
    Other(u32),
}

/// `call rejected by the host: BadArgument`: the one wording of a refused call, in log lines and
/// in a [`crate::rest::Failure`]'s `dispatch_status`.
impl fmt::Display for DispatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("call rejected by the host: ")?;
        match self {
            DispatchError::BadArgument => f.write_str("BadArgument"),
            DispatchError::InternalFailure => f.write_str("InternalFailure"),
            DispatchError::Other(code) => write!(f, "status {code}"),
        }
    }
}

/// The host operations the filter needs: the request flow uses all of them, the asynchronous
/// producer only [`Host::dispatch`].
pub trait Host {
    /// Starts an HTTP call (`proxy_http_call`) with `headers`, a header map already in the
    /// ABI's serialized form ([`crate::wire`]); returns its token, or why the host refused it.
    fn dispatch(&mut self, upstream: &str, headers: &[u8], body: &[u8], timeout_ms: u32) -> Result<u32, DispatchError>;
    /// The first `size` bytes of the buffered request body; `None` when the host has none.
    fn request_body(&mut self, size: usize) -> Option<Vec<u8>>;
    /// Sends the local response (`proxy_send_local_response`); `headers` is serialized as for
    /// [`Host::dispatch`].
    fn respond(&mut self, status: u32, headers: &[u8], body: &[u8]);
    /// Writes a log line.
    fn log(&mut self, level: Level, message: &str);
    /// The host's clock in milliseconds since the Unix epoch
    /// (`proxy_get_current_time_nanoseconds`); times the asynchronous producer's flushes.
    fn now_ms(&mut self) -> u64;
    /// Which host runs the filter; asked once per request, at its headers.
    fn host_kind(&mut self) -> HostKind;
    /// Applies a metric update (a refused or undefined metric is skipped by the host side).
    fn metric(&mut self, update: MetricUpdate);
    /// The host's own id of the request, asked only on Kong, when a template uses `request_id`
    /// and the request has no `x-request-id` header: nginx's `$request_id` (16 random bytes in
    /// hex, nginx.org/en/docs/http/ngx_http_core_module.html#var_request_id), which
    /// ngx_wasm_module serves as the `ngx.request_id` property. Envoy's own id is the
    /// `x-request-id` header, which its connection manager adds when `generate_request_id` is on
    /// (the default; envoy-api `HttpConnectionManager.generate_request_id`).
    fn request_id(&mut self) -> Option<Vec<u8>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_call_reads_the_same_everywhere() {
        assert_eq!(
            DispatchError::BadArgument.to_string(),
            "call rejected by the host: BadArgument"
        );
        assert_eq!(
            DispatchError::InternalFailure.to_string(),
            "call rejected by the host: InternalFailure"
        );
        assert_eq!(
            DispatchError::Other(6).to_string(),
            "call rejected by the host: status 6"
        );
    }
}
