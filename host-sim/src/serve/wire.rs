//! How a gateway response goes on the wire: with a length host-sim computes (its own answers), or
//! framed as the filter left its headers (what passed through the filter), as the real hosts do:
//! neither Envoy nor ngx_wasm_module recomputes `content-length` after a filter rewrote a body
//! ([`crate::profile::HostBehaviour::keeps_filter_content_length`]). A stale length then has the host's effect:
//! a shorter body leaves the client waiting for the rest (the connection stays open, bounded here
//! by [`STALE_LENGTH_HOLD`]); a longer one is cut at the declared length by hyper (Envoy writes
//! the excess bytes, which the client reads as the start of the next response: a documented
//! difference); no length means chunked.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// How long a response whose declared `content-length` exceeds its body keeps the connection
/// open before host-sim closes it. Envoy keeps such a connection until its idle timeout (the
/// HTTP connection manager's `common_http_protocol_options.idle_timeout`, 1 h by default);
/// host-sim bounds the wait so a filter bug cannot hold connections for an hour.
pub const STALE_LENGTH_HOLD: Duration = Duration::from_secs(60);

/// How the response's length reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// host-sim's own answer: hyper writes the body's length.
    Computed,
    /// What passed through the filter: the `content-length` header as the filter left it
    /// (even when it no longer matches the body), chunked when it removed it.
    AsFilterLeft,
}

/// A response body that either declares its exact length or leaves the framing to the headers.
#[derive(Debug)]
pub struct WireBody {
    data: Option<Bytes>,
    len: u64,
    exact: bool,
    /// Set when the headers promise more bytes than the body has: the body stays open until the
    /// timer fires, then ends with an error, which makes hyper close the connection.
    hold: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WireBody {
    /// A body whose length hyper writes (`content-length` from the body).
    pub fn exact(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        WireBody {
            len: data.len() as u64,
            data: Some(data),
            exact: true,
            hold: None,
        }
    }

    /// A body framed by `declared` (the `content-length` the response carries, if any): hyper
    /// then uses that header, or chunked encoding without one. Must run inside a tokio runtime
    /// when `declared` exceeds the body (it arms the hold timer).
    pub fn declared(data: impl Into<Bytes>, declared: Option<u64>) -> Self {
        let data: Bytes = data.into();
        let len = data.len() as u64;
        let hold = declared
            .is_some_and(|d| d > len)
            .then(|| Box::pin(tokio::time::sleep(STALE_LENGTH_HOLD)));
        WireBody {
            len,
            data: Some(data),
            exact: false,
            hold,
        }
    }

    /// The body's own length (what the access log counts as sent).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Body for WireBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        }
        if let Some(hold) = this.hold.as_mut() {
            if hold.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.hold = None;
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the response's content-length promised more bytes than its body has",
            ))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.as_ref().is_none_or(Bytes::is_empty) && self.hold.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.len)
        } else {
            SizeHint::default()
        }
    }
}

/// The `content-length` a response declares, when it declares exactly one valid length
/// (repeated equal values count as one). An unparsable or conflicting value is no length: hyper
/// would refuse the whole response, so host-sim sends it chunked instead.
pub fn declared_length(headers: &[(String, String)]) -> Option<u64> {
    let mut found: Option<u64> = None;
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let parsed: u64 = value.trim().parse().ok()?;
        if found.is_some_and(|f| f != parsed) {
            return None;
        }
        found = Some(parsed);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn declared_length_reads_one_valid_value() {
        assert_eq!(declared_length(&h(&[("Content-Length", "12")])), Some(12));
        assert_eq!(
            declared_length(&h(&[("content-length", "7"), ("content-length", "7")])),
            Some(7)
        );
        assert_eq!(declared_length(&h(&[("content-type", "text/plain")])), None);
    }

    #[test]
    fn an_unusable_declared_length_is_none() {
        assert_eq!(declared_length(&h(&[("content-length", "abc")])), None);
        assert_eq!(declared_length(&h(&[("content-length", "-1")])), None);
        assert_eq!(
            declared_length(&h(&[("content-length", "1"), ("content-length", "2")])),
            None
        );
    }

    #[test]
    fn only_a_computed_body_states_its_size() {
        assert_eq!(WireBody::exact(&b"abc"[..]).size_hint().exact(), Some(3));
        let body = WireBody::declared(&b"abc"[..], Some(3));
        assert_eq!(body.size_hint().exact(), None);
        assert_eq!(body.len(), 3);
    }

    #[tokio::test]
    async fn a_body_shorter_than_declared_stays_open() {
        let mut body = WireBody::declared(&b"ab"[..], Some(5));
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert_eq!(first.unwrap().unwrap().into_data().unwrap(), Bytes::from_static(b"ab"));
        assert!(!body.is_end_stream());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
    }

    #[tokio::test]
    async fn a_body_as_long_as_declared_ends() {
        let mut body = WireBody::declared(&b"ab"[..], Some(2));
        let _ = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(body.is_end_stream());
        let end = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(end.is_none());
    }
}
