//! The gRPC client `serve` uses for the filter's `proxy_grpc_call` and `proxy_grpc_stream`:
//! HTTP/2 with prior knowledge (h2c; serve has no TLS client) to the upstream the call names,
//! looked up as HTTP callouts look theirs up ([`crate::profile::CalloutUpstream::target`]).
//!
//! A call runs as one task. What the server sends reaches the guest as it arrives, through the
//! worker (the `deliver` function given to [`GrpcCalls::start`] posts each piece as a
//! [`GrpcReply`] to the thread that owns the VM, which hands it to [`crate::Vm::respond_grpc`]):
//! a stream gets initial metadata, each message, trailing metadata and the close, each through
//! its callback; a unary call gets only its outcome, as Envoy's unary handler passes on (see
//! `unary_reply`). What the guest does on a stream later (`proxy_grpc_send`, half-close,
//! `proxy_grpc_cancel`, `proxy_grpc_close`) is forwarded by [`GrpcCalls::sync`], which the worker
//! runs after every guest callback.
//!
//! A unary call's timeout (the VM's deadline, as for HTTP callouts) ends it with the profile's
//! timeout status ([`crate::profile::HostBehaviour::grpc_failure_status`]); a connection that
//! cannot be made ends it with the profile's connection-failure status. A call whose context
//! ends (the request finished or the client went away), or that the guest cancels (or closes,
//! for a unary call), is reset on the wire at once, so no call outlives the request that made
//! it; a stream the guest closes is half-closed and delivers the rest of the server's answer.

use crate::limits::{MAX_GRPC_MESSAGE_BYTES, MAX_GRPC_METADATA_BYTES};
use crate::profile::{CalloutFailure, Profile};
use crate::state::{GrpcCall, GrpcKind};
use crate::vm::{GrpcReply, Vm};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// gRPC status codes used here (grpc/grpc doc/statuscodes.md).
const GRPC_OK: u32 = 0;
const GRPC_UNKNOWN: u32 = 2;
const GRPC_RESOURCE_EXHAUSTED: u32 = 8;
const GRPC_INTERNAL: u32 = 13;

/// A pooled HTTP/2-only client (h2c, prior knowledge): one connection per upstream carries
/// every call, as Envoy's HTTP/2 cluster pool does. Cheap to clone.
#[derive(Clone)]
pub struct GrpcClient {
    inner: hyper_util::client::legacy::Client<HttpConnector, RequestBody>,
}

impl Default for GrpcClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        GrpcClient {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .http2_only(true)
                .http2_max_header_list_size(MAX_GRPC_METADATA_BYTES)
                .build(connector),
        }
    }
}

/// The request body of a call: the guest's messages, each framed (gRPC's 5-byte prefix), as the
/// worker forwards them; the body ends (END_STREAM) when the sender is dropped.
pub struct RequestBody {
    messages: mpsc::UnboundedReceiver<Bytes>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.messages.poll_recv(cx).map(|m| m.map(|data| Ok(Frame::data(data))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// One message with gRPC's length prefix: uncompressed flag, then the length big-endian.
fn framed(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 5);
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}

/// Splits complete gRPC messages off the front of what the server sent so far.
#[derive(Default)]
struct Deframer {
    pending: BytesMut,
}

/// Why the server's bytes are not gRPC messages this client accepts.
#[derive(Debug, PartialEq, Eq)]
enum DeframeError {
    /// A compressed message (this client asks for none), or a flag byte gRPC does not define.
    Flags,
    /// A message longer than [`MAX_GRPC_MESSAGE_BYTES`].
    TooLarge(usize),
}

impl Deframer {
    fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, DeframeError> {
        self.pending.extend_from_slice(data);
        let mut messages = Vec::new();
        while self.pending.len() >= 5 {
            let flags = self.pending[0];
            let len = u32::from_be_bytes([self.pending[1], self.pending[2], self.pending[3], self.pending[4]]) as usize;
            if len > MAX_GRPC_MESSAGE_BYTES {
                return Err(DeframeError::TooLarge(len));
            }
            // Envoy's decoder refuses a non-empty frame with any flag set (ENVOY-SRC
            // async_client_impl.cc `AsyncStreamImpl::onData`: `streamError(Internal)`).
            if flags != 0 && len > 0 {
                return Err(DeframeError::Flags);
            }
            if self.pending.len() < 5 + len {
                break;
            }
            self.pending.advance(5);
            messages.push(self.pending.split_to(len).to_vec());
        }
        Ok(messages)
    }

    /// Whether a message was cut off by the end of the stream.
    fn is_partial(&self) -> bool {
        !self.pending.is_empty()
    }
}

fn metadata(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The close status a trailers map carries: `grpc-status` (UNKNOWN when absent or not a
/// number, ENVOY-SRC `AsyncStreamImpl::onTrailers`) and `grpc-message`.
fn close_status(trailers: &[(String, String)]) -> (u32, String) {
    let find = |name: &str| trailers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let code = find("grpc-status")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(GRPC_UNKNOWN);
    (code, find("grpc-message").unwrap_or_default())
}

/// What one call's task does: where to, what to send, and how to hand back what comes.
struct CallTask {
    client: GrpcClient,
    profile: Profile,
    target: Option<String>,
    call: GrpcCall,
    time_left: Option<Duration>,
    body: RequestBody,
    deliver: Box<dyn Fn(GrpcReply) + Send + Sync>,
}

impl CallTask {
    async fn run(self) {
        let CallTask {
            client,
            profile,
            target,
            call,
            time_left,
            body,
            deliver,
        } = self;
        let kind = call.kind;
        // A unary call collects the exchange and passes on only its outcome; a stream passes on
        // every piece as it comes.
        let mut collected = GrpcReply::default();
        let mut emit = |piece: GrpcReply| match kind {
            GrpcKind::Stream => deliver(piece),
            GrpcKind::Call => {
                collected.messages.extend(piece.messages);
                if let Some(close) = piece.close {
                    deliver(unary_reply(close, std::mem::take(&mut collected.messages)));
                }
            }
        };
        let exchange = exchange(&client, profile, target, &call, time_left, body, &mut emit);
        let outcome = match time_left {
            Some(limit) => tokio::time::timeout(limit, exchange).await,
            None => Ok(exchange.await),
        };
        let failure = match outcome {
            Ok(None) => return,
            Ok(Some(failure)) => failure,
            Err(_) => CalloutFailure::Timeout,
        };
        let (code, message) = profile.grpc_failure_status(failure);
        emit(GrpcReply {
            // A stream's error path delivers empty trailing metadata before the close (ENVOY-SRC
            // `AsyncStreamImpl::streamError`).
            trailing_metadata: Some(Vec::new()),
            close: Some((code, message.to_string())),
            ..GrpcReply::default()
        });
    }
}

/// Sends the call and passes what the server answers to `emit`, ending with a close. `Some` is
/// a failure of the host's own (no connection, reset) for the caller to close the call with.
async fn exchange(
    client: &GrpcClient,
    profile: Profile,
    target: Option<String>,
    call: &GrpcCall,
    time_left: Option<Duration>,
    body: RequestBody,
    emit: &mut impl FnMut(GrpcReply),
) -> Option<CalloutFailure> {
    let target = target?;
    let request = match build_request(&target, call, time_left, body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(upstream = %call.upstream, error = %e, "gRPC call cannot be sent");
            return Some(CalloutFailure::BrokenConnection);
        }
    };
    let started = std::time::Instant::now();
    let response = match client.inner.request(request).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(upstream = %call.upstream, error = %e, "gRPC call failed before its response");
            return Some(CalloutFailure::BrokenConnection);
        }
    };
    let http_status = response.status().as_u16();
    let mut headers = metadata(response.headers());
    // The router's own response header, there before the gRPC client sees the answer
    // (Envoy: `x-envoy-upstream-service-time`, observed in a stream's initial metadata).
    headers.extend(profile.upstream_response_header(started.elapsed()));
    // A close from the server, with the message as the profile's host passes it on.
    let from_server = |(code, message): (u32, String)| (code, profile.grpc_server_close_message(message));
    let trailers_only = headers.iter().any(|(k, _)| k == "grpc-status");
    if trailers_only || http_status != 200 {
        // A trailers-only answer: the initial metadata callback gets an empty map and the
        // headers are the trailers (ENVOY-SRC `AsyncStreamImpl::onHeaders`); a non-200 answer
        // without `grpc-status` closes with the profile's code for it.
        let close = if trailers_only {
            close_status(&headers)
        } else {
            (profile.grpc_status_for_http_status(http_status), String::new())
        };
        emit(GrpcReply {
            initial_metadata: Some(Vec::new()),
            trailing_metadata: Some(if trailers_only { headers } else { Vec::new() }),
            close: Some(from_server(close)),
            ..GrpcReply::default()
        });
        return None;
    }
    emit(GrpcReply {
        initial_metadata: Some(headers),
        ..GrpcReply::default()
    });
    let mut deframer = Deframer::default();
    let mut body = response.into_body();
    loop {
        let frame = match body.frame().await {
            None => {
                // The stream ended without trailers: UNKNOWN (ENVOY-SRC `AsyncStreamImpl::onData`
                // with `end_stream`).
                let code = if deframer.is_partial() {
                    GRPC_INTERNAL
                } else {
                    GRPC_UNKNOWN
                };
                emit(GrpcReply {
                    trailing_metadata: Some(Vec::new()),
                    close: Some(from_server((code, String::new()))),
                    ..GrpcReply::default()
                });
                return None;
            }
            Some(Err(e)) => {
                tracing::debug!(upstream = %call.upstream, error = %e, "gRPC stream reset");
                return Some(CalloutFailure::Reset);
            }
            Some(Ok(frame)) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                match deframer.push(&data) {
                    Ok(messages) => {
                        if !messages.is_empty() {
                            emit(GrpcReply {
                                messages,
                                ..GrpcReply::default()
                            });
                        }
                    }
                    Err(error) => {
                        let (code, message) = match error {
                            DeframeError::Flags => (GRPC_INTERNAL, String::new()),
                            DeframeError::TooLarge(len) => (
                                GRPC_RESOURCE_EXHAUSTED,
                                format!("gRPC message of {len} bytes exceeds host-sim's {MAX_GRPC_MESSAGE_BYTES}"),
                            ),
                        };
                        emit(GrpcReply {
                            trailing_metadata: Some(Vec::new()),
                            close: Some(from_server((code, message))),
                            ..GrpcReply::default()
                        });
                        return None;
                    }
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            let trailers = metadata(&trailers);
            let close = close_status(&trailers);
            emit(GrpcReply {
                trailing_metadata: Some(trailers),
                close: Some(from_server(close)),
                ..GrpcReply::default()
            });
            return None;
        }
    }
}

/// The request Envoy's gRPC client sends (ENVOY-SRC source/common/grpc/common.cc
/// `Common::prepareHeaders`): `POST /<service>/<method>`, `:authority` the cluster name,
/// `content-type: application/grpc`, `te: trailers`, `grpc-timeout` in milliseconds when the call
/// has a timeout; then the guest's initial metadata.
fn build_request(
    target: &str,
    call: &GrpcCall,
    time_left: Option<Duration>,
    body: RequestBody,
) -> anyhow::Result<hyper::Request<RequestBody>> {
    let uri: hyper::Uri = format!("http://{target}/{}/{}", call.service, call.method).parse()?;
    let mut builder = hyper::Request::builder()
        .method(hyper::Method::POST)
        .uri(uri)
        .version(hyper::Version::HTTP_2)
        .header(hyper::header::CONTENT_TYPE, "application/grpc")
        .header(hyper::header::TE, "trailers");
    if let Some(left) = time_left {
        builder = builder.header("grpc-timeout", format!("{}m", left.as_millis()));
    }
    for (k, v) in &call.initial_metadata {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let mut request = builder.body(body)?;
    // The URI's authority is the address; the call goes out named for its cluster.
    if let Ok(authority) = hyper::header::HeaderValue::from_str(&call.upstream) {
        request.headers_mut().insert(hyper::header::HOST, authority);
    }
    Ok(request)
}

/// What a unary call's handler passes on in Envoy: a close with a status other than OK is
/// `proxy_on_grpc_close` with it; OK with a message is `proxy_on_grpc_receive` with the last
/// message; OK without one is INTERNAL (ENVOY-SRC async_client_impl.cc
/// `AsyncRequestImpl::onRemoteClose`; context.cc `GrpcCallClientHandler` passes `onSuccessRaw`
/// as `onGrpcReceive` and `onFailure` as `onGrpcClose`, and no metadata).
fn unary_reply(close: (u32, String), mut messages: Vec<Vec<u8>>) -> GrpcReply {
    match (close, messages.pop()) {
        ((GRPC_OK, _), Some(message)) => GrpcReply {
            messages: vec![message],
            ..GrpcReply::default()
        },
        ((GRPC_OK, _), None) => GrpcReply {
            close: Some((GRPC_INTERNAL, String::new())),
            ..GrpcReply::default()
        },
        (close, _) => GrpcReply {
            close: Some(close),
            ..GrpcReply::default()
        },
    }
}

/// A call in flight: its task, and how much of the guest's side it has been given.
struct InFlight {
    task: tokio::task::JoinHandle<()>,
    /// `None` once the guest half-closed (the request body has ended).
    sender: Option<mpsc::UnboundedSender<Bytes>>,
    /// Messages forwarded so far.
    sent: usize,
}

/// The gRPC calls of one VM in flight. Dropping it resets them all.
#[derive(Default)]
pub struct GrpcCalls {
    calls: HashMap<u32, InFlight>,
}

impl Drop for GrpcCalls {
    fn drop(&mut self) {
        for (_, call) in self.calls.drain() {
            call.task.abort();
        }
    }
}

impl GrpcCalls {
    /// Starts `call` (just handed out by [`crate::Vm::take_new_calls`]); what the server sends
    /// goes to `deliver`, in order.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        runtime: &tokio::runtime::Handle,
        client: &GrpcClient,
        profile: Profile,
        upstreams: &BTreeMap<String, SocketAddr>,
        call: GrpcCall,
        time_left: Option<Duration>,
        deliver: Box<dyn Fn(GrpcReply) + Send + Sync>,
    ) {
        let (sender, messages) = mpsc::unbounded_channel();
        for message in &call.messages {
            let _ = sender.send(framed(message));
        }
        let token = call.token;
        let sent = call.messages.len();
        let sender = (!call.end_stream_sent).then_some(sender);
        let task = CallTask {
            client: client.clone(),
            profile,
            target: profile.callout_upstream().target(upstreams, &call.upstream),
            call,
            time_left,
            body: RequestBody { messages },
            deliver,
        };
        let task = runtime.spawn(task.run());
        self.calls.insert(token, InFlight { task, sender, sent });
    }

    /// Forwards what the guest did since the last look: new messages, the half-close (a stream
    /// the guest closed is half-closed and keeps receiving); a call the guest ended is reset
    /// and forgotten (no more callbacks for it, as in Envoy, whose `grpcCancel`, and
    /// `grpcClose` of a unary call, drop the call's handler:
    /// [`crate::state::GrpcCall::ended_by_guest`]); a call the VM no longer has (answered, or
    /// its context ended) is reset.
    pub fn sync(&mut self, vm: &mut Vm) {
        let tokens: Vec<u32> = self.calls.keys().copied().collect();
        for token in tokens {
            let Some(call) = self.calls.get_mut(&token) else {
                continue;
            };
            let progress = vm.grpc_progress(token, call.sent);
            let ended = match progress {
                None => true,
                Some(p) => {
                    call.sent += p.messages.len();
                    if let Some(sender) = &call.sender {
                        for message in &p.messages {
                            let _ = sender.send(framed(message));
                        }
                    }
                    if p.end_stream_sent {
                        call.sender = None;
                    }
                    if p.ended_by_guest {
                        // Forget it in the VM: no callbacks for a call the guest ended.
                        let _ = vm.respond_grpc(token, GrpcReply::default());
                    }
                    p.ended_by_guest
                }
            };
            if ended {
                if let Some(call) = self.calls.remove(&token) {
                    call.task.abort();
                }
            }
        }
    }

    /// Calls in flight.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deframer_splits_messages_across_pushes_and_refuses_flags_and_oversize() {
        let mut d = Deframer::default();
        let mut wire = framed(b"one").to_vec();
        wire.extend_from_slice(&framed(b""));
        wire.extend_from_slice(&framed(b"three"));
        let (first, rest) = wire.split_at(6);
        assert_eq!(d.push(first), Ok(vec![]));
        assert_eq!(d.push(rest), Ok(vec![b"one".to_vec(), Vec::new(), b"three".to_vec()]));
        assert!(!d.is_partial());
        assert_eq!(d.push(&[0, 0, 0]), Ok(vec![]));
        assert!(d.is_partial());

        let mut compressed = Deframer::default();
        assert_eq!(compressed.push(&[1, 0, 0, 0, 1, b'x']), Err(DeframeError::Flags));
        let mut huge = Deframer::default();
        let len = (MAX_GRPC_MESSAGE_BYTES as u32 + 1).to_be_bytes();
        assert_eq!(
            huge.push(&[0, len[0], len[1], len[2], len[3]]),
            Err(DeframeError::TooLarge(MAX_GRPC_MESSAGE_BYTES + 1))
        );
    }

    #[test]
    fn close_status_reads_grpc_status_and_message_or_unknown() {
        let t = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            close_status(&t(&[("grpc-status", "5"), ("grpc-message", "nope")])),
            (5, "nope".into())
        );
        assert_eq!(close_status(&t(&[("grpc-status", "x")])), (GRPC_UNKNOWN, String::new()));
        assert_eq!(close_status(&[]), (GRPC_UNKNOWN, String::new()));
    }

    #[test]
    fn a_unary_call_passes_on_its_last_message_or_its_failure() {
        let ok = unary_reply((0, String::new()), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(ok.messages, vec![b"b".to_vec()]);
        assert_eq!(ok.close, None);
        assert_eq!(
            unary_reply((0, String::new()), vec![]).close,
            Some((GRPC_INTERNAL, String::new()))
        );
        let failed = unary_reply((7, "denied".into()), vec![b"a".to_vec()]);
        assert_eq!((failed.messages.len(), failed.close), (0, Some((7, "denied".into()))));
        assert_eq!((failed.initial_metadata, failed.trailing_metadata), (None, None));
    }
}
